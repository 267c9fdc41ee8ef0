//! One multiplexed Redis connection per distinct Redis settings, shared by every
//! plugin that uses Redis (rate-limiting counters, the proxy-cache's second tier),
//! with reconnect.
//!
//! The first request waits for the first connection. After that, a failed command
//! marks the link down and starts one background task that reconnects with
//! back-off; while the link is down, requests fail over at once (no waiting on a
//! dead server) and the caller counts them locally.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisConnectionInfo};

use std::future::Future;

use super::rate_limiting::config::RedisSettings;

/// Why a Redis check did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The link is down and reconnecting.
    #[error("redis {0} is unreachable (reconnecting)")]
    Down(String),
    /// The command failed or timed out.
    #[error("redis {server}: {message}")]
    Command {
        /// `host:port/db`.
        server: String,
        /// What failed (never includes credentials).
        message: String,
    },
}

enum State {
    /// Never connected: the next request connects and others wait for it.
    Fresh,
    /// Connected.
    Up(MultiplexedConnection),
    /// Failed; a background task is reconnecting.
    Down,
}

/// A shared connection to one Redis server.
pub struct RedisLink {
    settings: RedisSettings,
    scripts: Vec<redis::Script>,
    state: Mutex<State>,
    first_connect: tokio::sync::Mutex<()>,
    reconnecting: AtomicBool,
    closed: AtomicBool,
}

impl RedisLink {
    /// A link that connects on first use and loads `scripts` on every connection.
    pub fn new(settings: RedisSettings, scripts: Vec<redis::Script>) -> RedisLink {
        RedisLink {
            settings,
            scripts,
            state: Mutex::new(State::Fresh),
            first_connect: tokio::sync::Mutex::new(()),
            reconnecting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// The settings this link connects with.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// `fresh`, `up` or `down`, for `/status`.
    pub fn state_name(&self) -> &'static str {
        match &*self.lock() {
            State::Fresh => "fresh",
            State::Up(_) => "up",
            State::Down => "down",
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms)
    }

    fn connection_info(&self) -> ConnectionInfo {
        let s = &self.settings;
        let addr = if s.ssl {
            ConnectionAddr::TcpTls {
                host: s.host.clone(),
                port: s.port,
                insecure: !s.ssl_verify,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(s.host.clone(), s.port)
        };
        ConnectionInfo {
            addr,
            redis: RedisConnectionInfo {
                db: s.database,
                username: s.username.clone(),
                password: s.password.clone(),
                ..Default::default()
            },
        }
    }

    /// Opens a connection (AUTH and SELECT included), bounded by the timeout.
    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let client = redis::Client::open(self.connection_info()).map_err(|e| e.to_string())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout())
            .set_response_timeout(self.timeout());
        match tokio::time::timeout(
            self.timeout(),
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(mut conn)) => {
                // Loaded once per connection, so a script call is one EVALSHA.
                for script in &self.scripts {
                    let load = script.load_async(&mut conn);
                    match tokio::time::timeout(self.timeout(), load).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => return Err("script load timed out".to_string()),
                    }
                }
                Ok(conn)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connect timed out".to_string()),
        }
    }

    /// The connection to use now; connects on first use.
    async fn connection(self: &Arc<Self>) -> Result<MultiplexedConnection, LinkError> {
        match &*self.lock() {
            State::Up(c) => return Ok(c.clone()),
            State::Down => {
                self.spawn_reconnect();
                return Err(LinkError::Down(self.settings.describe()));
            }
            State::Fresh => {}
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(LinkError::Down(self.settings.describe()));
        }
        let _first = self.first_connect.lock().await;
        if let State::Up(c) = &*self.lock() {
            return Ok(c.clone());
        }
        if matches!(&*self.lock(), State::Down) {
            return Err(LinkError::Down(self.settings.describe()));
        }
        match self.connect().await {
            Ok(conn) => {
                *self.lock() = State::Up(conn.clone());
                tracing::info!(redis = %self.settings.describe(), "connected to redis");
                Ok(conn)
            }
            Err(message) => {
                self.mark_down(&message);
                Err(LinkError::Command {
                    server: self.settings.describe(),
                    message,
                })
            }
        }
    }

    fn mark_down(self: &Arc<Self>, why: &str) {
        let was_up = {
            let mut state = self.lock();
            let was_up = !matches!(*state, State::Down);
            *state = State::Down;
            was_up
        };
        if was_up {
            tracing::warn!(
                redis = %self.settings.describe(),
                "redis failed ({why}); rate limits count locally and the cache uses memory only in this instance until it is back"
            );
        }
        self.spawn_reconnect();
    }

    /// Starts the reconnect loop unless one is running.
    /// Closes the link for good (its settings left the config): drops the
    /// connection and stops reconnecting. Requests of an older config that still
    /// hold it fail over at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        *self.lock() = State::Down;
    }

    fn spawn_reconnect(self: &Arc<Self>) {
        if self.closed.load(Ordering::Acquire) || self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                tokio::time::sleep(backoff).await;
                if link.closed.load(Ordering::Acquire) {
                    break;
                }
                if let Ok(conn) = link.connect().await {
                    if link.closed.load(Ordering::Acquire) {
                        break;
                    }
                    *link.lock() = State::Up(conn);
                    tracing::info!(
                        redis = %link.settings.describe(),
                        "redis is reachable again; rate limits count in redis again"
                    );
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            link.reconnecting.store(false, Ordering::Release);
        });
    }

    /// Runs one operation on the shared connection, bounded by the timeout.
    ///
    /// Runs on the request path. A connection-level failure marks the link down (the
    /// next calls fail at once while it reconnects in the background); the error
    /// never carries credentials.
    pub async fn run<T, F, Fut>(self: &Arc<Self>, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout(), op(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // One log line per error, whatever the server sent.
                let message = e.to_string().replace(['\r', '\n'], " ");
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                {
                    self.mark_down(&message);
                }
                Err(LinkError::Command {
                    server: self.settings.describe(),
                    message,
                })
            }
            Err(_) => {
                self.mark_down("command timed out");
                Err(LinkError::Command {
                    server: self.settings.describe(),
                    message: "command timed out".to_string(),
                })
            }
        }
    }
}

/// The links of one gateway process, one per distinct settings; kept across config
/// reloads so a reload never reconnects.
pub struct RedisLinks {
    links: Mutex<HashMap<RedisSettings, Arc<RedisLink>>>,
    scripts: Vec<redis::Script>,
}

impl RedisLinks {
    /// An empty registry whose links load `scripts` when they connect.
    pub fn new(scripts: Vec<redis::Script>) -> RedisLinks {
        RedisLinks {
            links: Mutex::new(HashMap::new()),
            scripts,
        }
    }

    /// The link for `settings`, created on first use (it connects on first use too).
    ///
    /// Runs when a config is compiled.
    pub fn get(&self, settings: &RedisSettings) -> Arc<RedisLink> {
        let mut links = crate::sync::lock(&self.links);
        links
            .entry(settings.clone())
            .or_insert_with(|| Arc::new(RedisLink::new(settings.clone(), self.scripts.clone())))
            .clone()
    }

    /// Closes and forgets the links whose settings are not in `used`; runs after a
    /// config reload, so a changed password or a removed server stops being tried.
    pub fn retain(&self, used: &[RedisSettings]) {
        let mut links = crate::sync::lock(&self.links);
        links.retain(|settings, link| {
            let keep = used.contains(settings);
            if !keep {
                link.close();
            }
            keep
        });
    }

    /// Every link's server and state, for `/status`.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let links = crate::sync::lock(&self.links);
        links
            .values()
            .map(|l| {
                serde_json::json!({
                    "server": l.settings().describe(),
                    "state": l.state_name(),
                })
            })
            .collect()
    }
}
