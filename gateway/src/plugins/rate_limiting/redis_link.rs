//! One multiplexed Redis connection per distinct Redis settings, with reconnect,
//! and the script that checks and counts a request in one round trip.
//!
//! The first request waits for the first connection. After that, a failed command
//! marks the link down and starts one background task that reconnects with
//! back-off; while the link is down, requests fail over at once (no waiting on a
//! dead server) and the caller counts them locally.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisConnectionInfo};

use super::config::RedisSettings;
use super::store::{Outcome, PeriodCheck, Usage};

/// Counts the request in every period, and takes the counts back if any period was
/// already full, so refused requests are not counted. Keys: per period the current
/// and the previous window's counter. Args: per period the limit, the time to live
/// and the previous window's weight. Returns the admission flag, then per period the
/// current and previous counts before this request. The expiry is set by the same
/// atomic script call as the first increment.
const CHECK_AND_COUNT: &str = r#"
local n = #KEYS / 2
local out = {1}
for i = 1, n do
  local cur = redis.call('INCR', KEYS[2*i-1])
  if cur == 1 then redis.call('EXPIRE', KEYS[2*i-1], ARGV[3*i-1]) end
  cur = cur - 1
  local w = tonumber(ARGV[3*i])
  local prev = 0
  if w > 0 then prev = tonumber(redis.call('GET', KEYS[2*i]) or '0') end
  if cur + math.floor(prev * w) >= tonumber(ARGV[3*i-2]) then out[1] = 0 end
  out[2*i] = cur
  out[2*i+1] = prev
end
if out[1] == 0 then
  for i = 1, n do redis.call('DECR', KEYS[2*i-1]) end
end
return out
"#;

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
    script: redis::Script,
    state: Mutex<State>,
    first_connect: tokio::sync::Mutex<()>,
    reconnecting: AtomicBool,
}

impl RedisLink {
    /// A link that connects on first use.
    pub fn new(settings: RedisSettings) -> RedisLink {
        RedisLink {
            settings,
            script: redis::Script::new(CHECK_AND_COUNT),
            state: Mutex::new(State::Fresh),
            first_connect: tokio::sync::Mutex::new(()),
            reconnecting: AtomicBool::new(false),
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
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
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
                // Loaded once per connection, so every request is one EVALSHA.
                let load = self.script.load_async(&mut conn);
                match tokio::time::timeout(self.timeout(), load).await {
                    Ok(Ok(_)) => Ok(conn),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("script load timed out".to_string()),
                }
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
                tracing::info!(redis = %self.settings.describe(), "rate-limiting: connected to redis");
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
                "rate-limiting: redis failed ({why}); counting locally in this instance until it is back"
            );
        }
        self.spawn_reconnect();
    }

    /// Starts the reconnect loop unless one is running.
    fn spawn_reconnect(self: &Arc<Self>) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                tokio::time::sleep(backoff).await;
                if let Ok(conn) = link.connect().await {
                    *link.lock() = State::Up(conn);
                    tracing::info!(
                        redis = %link.settings.describe(),
                        "rate-limiting: redis is reachable again; counting in redis"
                    );
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            link.reconnecting.store(false, Ordering::Release);
        });
    }

    /// Checks and counts one request in one round trip (`EVALSHA`, or `EVAL` once
    /// after Redis lost its script cache).
    ///
    /// Runs in the access phase. An error means the request was not counted in Redis.
    pub async fn check(self: &Arc<Self>, checks: &[PeriodCheck]) -> Result<Outcome, LinkError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.script.prepare_invoke();
        for c in checks {
            invocation.key(&c.key);
            invocation.key(c.previous_key.as_deref().unwrap_or(&c.key));
        }
        for c in checks {
            invocation.arg(c.limit);
            invocation.arg(c.ttl_seconds);
            invocation.arg(format!("{:.6}", c.previous_weight));
        }
        let reply = tokio::time::timeout(
            self.timeout(),
            invocation.invoke_async::<Vec<i64>>(&mut conn),
        )
        .await;
        let values = match reply {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let message = e.to_string();
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                {
                    self.mark_down(&message);
                }
                return Err(LinkError::Command {
                    server: self.settings.describe(),
                    message,
                });
            }
            Err(_) => {
                self.mark_down("command timed out");
                return Err(LinkError::Command {
                    server: self.settings.describe(),
                    message: "command timed out".to_string(),
                });
            }
        };
        if values.len() != 1 + 2 * checks.len() {
            return Err(LinkError::Command {
                server: self.settings.describe(),
                message: format!("unexpected script reply of {} values", values.len()),
            });
        }
        let usage = values[1..]
            .chunks(2)
            .map(|p| Usage {
                current: p[0].max(0) as u64,
                previous: p[1].max(0) as u64,
            })
            .collect();
        Ok(Outcome {
            admitted: values[0] == 1,
            usage,
        })
    }
}
