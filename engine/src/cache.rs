//! Redis cache-aside for the read endpoints `GET /summary` and
//! `GET /customers/{id}`, with version-based invalidation and metrics.
//!
//! Keys are versioned instead of deleted:
//! - every stored event (a new one, or the first insert under an idempotency key;
//!   never a replay) runs `INCR engine:v:events` and
//!   `INCR engine:v:customer:{customer_id}` (see [`Cache::invalidate_event`]);
//! - a summary is cached under `engine:summary:{events version}:{sha256}` and a
//!   customer under `engine:customer:{customer version}:{sha256}`, where the hash
//!   is of the normalised query (the validated parameters, not the raw query
//!   string).
//!
//! A read is one round trip (a small Lua script reads the version and then the
//! value under the key of that version); a miss computes the body from the
//! database and stores it with `SET ... EX ttl` under the version read before the
//! computation, so a write in between leaves the entry under an old version that no
//! one reads again. The cached value is the exact JSON body; a hit answers the same
//! bytes with `200`.
//!
//! Redis is optional and never required for an answer: one multiplexed connection
//! is shared, every command is bounded by [`COMMAND_TIMEOUT`], and after a failure
//! the link is marked down, requests bypass the cache at once, and one background
//! task reconnects with back-off. If the version `INCR` after a write fails, the
//! entries of the old version stay readable until their TTL expires, so the TTL
//! bounds staleness in that case.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::model::SummaryQuery;

/// How long one Redis command (or connection attempt) may take before the cache
/// is bypassed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(200);
/// The response header telling whether the answer came from the cache.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-engine-cache");
/// The version key bumped by every stored event (part of every summary key).
pub const EVENTS_VERSION_KEY: &str = "engine:v:events";

/// Reads the version (0 when absent) and the value stored under that version in
/// one round trip. `KEYS[1]` is the version key, `ARGV[1]` the value key's prefix,
/// `ARGV[2]` the query hash. Returns `{version, value or false}`.
const LOOKUP_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1]) or '0'
local value = redis.call('GET', ARGV[1] .. ':' .. v .. ':' .. ARGV[2])
return {v, value}
";

/// The version key of one customer's entries.
pub fn customer_version_key(customer_id: &str) -> String {
    format!("engine:v:customer:{customer_id}")
}

/// Which cache entry a read endpoint wants: its version key, its key prefix and
/// the hash of its normalised query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    version_key: String,
    prefix: &'static str,
    hash: String,
}

impl CacheKey {
    /// The entry of a validated summary query. Runs once per `GET /summary`;
    /// returns a key whose hash covers every parameter that shapes the body, so two
    /// query strings that validate to the same query share one entry.
    pub fn summary(query: &SummaryQuery) -> Self {
        let normalised = serde_json::json!({
            "interval": query.interval,
            "from": query.from,
            "to": query.to,
            "currency": query.currency,
            "group_by": query.group_by,
        });
        Self {
            version_key: EVENTS_VERSION_KEY.to_owned(),
            prefix: "engine:summary",
            hash: sha256_hex(normalised.to_string().as_bytes()),
        }
    }

    /// The entry of one customer's totals. Runs once per `GET /customers/{id}`;
    /// returns a key versioned by that customer's writes only.
    pub fn customer(customer_id: &str) -> Self {
        Self {
            version_key: customer_version_key(customer_id),
            prefix: "engine:customer",
            hash: sha256_hex(customer_id.as_bytes()),
        }
    }

    /// The full key of the entry under `version`.
    fn entry_key(&self, version: &str) -> String {
        format!("{}:{version}:{}", self.prefix, self.hash)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where an answer came from, as sent in [`CACHE_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from Redis.
    Hit,
    /// Computed from the database and stored in Redis.
    Miss,
    /// Computed from the database without Redis (not configured or unreachable).
    Bypass,
}

impl CacheOutcome {
    /// The header value: `hit`, `miss` or `bypass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// Counters behind `GET /metrics`.
#[derive(Debug, Default)]
struct Metrics {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

/// State of the shared connection.
enum LinkState {
    /// Connected.
    Up(MultiplexedConnection),
    /// Not connected; a background task is (or will be) reconnecting.
    Down,
}

/// The Redis side of an enabled cache.
struct Link {
    client: redis::Client,
    /// `host:port/db`, never with credentials; for logs.
    describe: String,
    ttl_secs: u64,
    state: Mutex<LinkState>,
    reconnecting: AtomicBool,
    lookup: redis::Script,
}

/// The read cache: Redis-backed when configured, otherwise a pass-through that
/// answers every read with [`CacheOutcome::Bypass`]. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Cache {
    link: Option<Arc<Link>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("redis", &self.link.as_ref().map(|l| l.describe.as_str()))
            .finish()
    }
}

impl Cache {
    /// A cache that never uses Redis (every read is a bypass).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Builds the cache for `redis_url` with entries living `ttl_secs`.
    ///
    /// Runs once at start-up. Tries to connect once (bounded by
    /// [`COMMAND_TIMEOUT`]); if Redis is not reachable it logs a warning and keeps
    /// reconnecting in the background, so the engine starts either way. Returns an
    /// error only for a URL that cannot be parsed (the message never contains the
    /// URL, which may hold a password).
    pub async fn connect(redis_url: &str, ttl_secs: u64) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url)
            .map_err(|e| anyhow::anyhow!("invalid redis URL ({})", e.category()))?;
        let info = client.get_connection_info();
        let describe = format!("{}/{}", info.addr, info.redis.db);
        let link = Arc::new(Link {
            client,
            describe,
            ttl_secs: ttl_secs.max(1),
            state: Mutex::new(LinkState::Down),
            reconnecting: AtomicBool::new(false),
            lookup: redis::Script::new(LOOKUP_SCRIPT),
        });
        match link.open().await {
            Ok(conn) => {
                *link.lock() = LinkState::Up(conn);
                tracing::info!(redis = %link.describe, ttl_secs, "read cache connected to redis");
            }
            Err(e) => {
                tracing::warn!(
                    redis = %link.describe,
                    "read cache cannot reach redis ({e}); reads bypass the cache until it is back"
                );
                link.spawn_reconnect();
            }
        }
        Ok(Self {
            link: Some(link),
            metrics: Arc::default(),
        })
    }

    /// Cache-aside read of one entry.
    ///
    /// Runs once per cached `GET`. Looks `key` up in Redis; on a hit answers `200`
    /// with the stored bytes. Otherwise runs `compute` (the database query, giving
    /// the JSON body), stores its body with the TTL (best effort) and answers it.
    /// Every answer carries [`CACHE_HEADER`]. Errors of `compute` (e.g. a 404) are
    /// returned as they are and nothing is stored; Redis failures are never
    /// errors, they turn the read into a bypass.
    pub async fn get_or_compute<F, Fut>(
        &self,
        key: &CacheKey,
        compute: F,
    ) -> Result<Response, AppError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, AppError>>,
    {
        let Some(link) = &self.link else {
            return Ok(json_response(compute().await?, CacheOutcome::Bypass));
        };
        let lookup = link
            .run(|mut conn| {
                let mut invocation = link.lookup.key(&key.version_key);
                invocation.arg(key.prefix).arg(&key.hash);
                async move {
                    invocation
                        .invoke_async::<(String, Option<Vec<u8>>)>(&mut conn)
                        .await
                }
            })
            .await;
        let version = match lookup {
            Ok((_, Some(bytes))) => {
                self.metrics.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(json_response(bytes, CacheOutcome::Hit));
            }
            Ok((version, None)) => version,
            Err(e) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("read cache bypassed: {e}");
                return Ok(json_response(compute().await?, CacheOutcome::Bypass));
            }
        };
        self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        let body = compute().await?;
        let entry = key.entry_key(&version);
        let ttl = link.ttl_secs;
        let value = body.clone();
        let stored = link
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(&entry)
                    .arg(value)
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        if let Err(e) = stored {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("read cache could not store an entry: {e}");
        }
        Ok(json_response(body, CacheOutcome::Miss))
    }

    /// Invalidates everything a newly stored event affects: bumps the events
    /// version (all summaries) and the version of `customer_id`.
    ///
    /// Runs after every successful event insert (not after an idempotent replay),
    /// before the response is sent, in one round trip. Best effort: a failure is
    /// logged as a warning and counted; the old entries then live until their TTL.
    pub async fn invalidate_event(&self, customer_id: &str) {
        let Some(link) = &self.link else {
            return;
        };
        let customer_key = customer_version_key(customer_id);
        let result = link
            .run(|mut conn| async move {
                redis::pipe()
                    .atomic()
                    .incr(EVENTS_VERSION_KEY, 1)
                    .ignore()
                    .incr(customer_key, 1)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        if let Err(e) = result {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "cannot invalidate the read cache after a write ({e}); \
                 cached reads may be stale until their TTL expires"
            );
        }
    }

    /// The cache metrics in the Prometheus text format (version 0.0.4).
    ///
    /// Runs once per `GET /metrics`; returns the counters
    /// `engine_cache_hits_total`, `engine_cache_misses_total`,
    /// `engine_cache_errors_total` and the gauge `engine_cache_hit_ratio`
    /// (hits / (hits + misses), 0 before any lookup).
    pub fn render_metrics(&self) -> String {
        let hits = self.metrics.hits.load(Ordering::Relaxed);
        let misses = self.metrics.misses.load(Ordering::Relaxed);
        let errors = self.metrics.errors.load(Ordering::Relaxed);
        let lookups = hits + misses;
        #[allow(clippy::cast_precision_loss)]
        let ratio = if lookups == 0 {
            0.0
        } else {
            hits as f64 / lookups as f64
        };
        format!(
            "# HELP engine_cache_hits_total Reads answered from the Redis cache.\n\
             # TYPE engine_cache_hits_total counter\n\
             engine_cache_hits_total {hits}\n\
             # HELP engine_cache_misses_total Reads computed from the database and stored in the cache.\n\
             # TYPE engine_cache_misses_total counter\n\
             engine_cache_misses_total {misses}\n\
             # HELP engine_cache_errors_total Redis commands that failed or timed out (the cache was bypassed).\n\
             # TYPE engine_cache_errors_total counter\n\
             engine_cache_errors_total {errors}\n\
             # HELP engine_cache_hit_ratio Hits divided by hits plus misses since start.\n\
             # TYPE engine_cache_hit_ratio gauge\n\
             engine_cache_hit_ratio {ratio}\n"
        )
    }
}

/// A `200` JSON answer with the cache header.
fn json_response(body: Vec<u8>, outcome: CacheOutcome) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (CACHE_HEADER, HeaderValue::from_static(outcome.as_str())),
        ],
        body,
    )
        .into_response()
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Opens one multiplexed connection, bounded by [`COMMAND_TIMEOUT`].
    async fn open(&self) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT);
        match tokio::time::timeout(
            COMMAND_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(redact(&e)),
            Err(_) => Err("connect timed out".to_owned()),
        }
    }

    /// Marks the link down (logging once per outage) and starts reconnecting.
    fn mark_down(self: &Arc<Self>, why: &str) {
        let was_up = {
            let mut state = self.lock();
            let was_up = matches!(*state, LinkState::Up(_));
            *state = LinkState::Down;
            was_up
        };
        if was_up {
            tracing::warn!(
                redis = %self.describe,
                "read cache lost redis ({why}); reads bypass the cache until it is back"
            );
        }
        self.spawn_reconnect();
    }

    /// Starts the reconnect loop (back-off 100 ms doubling to 2 s) unless one runs.
    fn spawn_reconnect(self: &Arc<Self>) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                tokio::time::sleep(backoff).await;
                if let Ok(conn) = link.open().await {
                    *link.lock() = LinkState::Up(conn);
                    tracing::info!(redis = %link.describe, "read cache reconnected to redis");
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            link.reconnecting.store(false, Ordering::Release);
        });
    }

    /// Runs one operation on the shared connection, bounded by
    /// [`COMMAND_TIMEOUT`]. Fails at once while the link is down; a timeout or a
    /// connection-level error marks it down. Errors never carry credentials.
    async fn run<T, F, Fut>(self: &Arc<Self>, op: F) -> Result<T, String>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = match &*self.lock() {
            LinkState::Up(conn) => Some(conn.clone()),
            LinkState::Down => None,
        };
        let Some(conn) = conn else {
            self.spawn_reconnect();
            return Err(format!("redis {} is down (reconnecting)", self.describe));
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, op(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let message = redact(&e);
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                {
                    self.mark_down(&message);
                }
                Err(message)
            }
            Err(_) => {
                self.mark_down("command timed out");
                Err("command timed out".to_owned())
            }
        }
    }
}

/// A Redis error as text without anything that could hold credentials.
fn redact(e: &redis::RedisError) -> String {
    match e.code() {
        Some(code) => format!("{} ({code})", e.category()),
        None => e.category().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GroupBy, Interval};

    fn query(currency: Option<&'static str>) -> SummaryQuery {
        SummaryQuery {
            from: None,
            to: None,
            interval: Interval::Day,
            currency,
            group_by: None,
        }
    }

    #[test]
    fn summary_keys_differ_by_every_parameter_and_share_the_events_version() {
        let a = CacheKey::summary(&query(None));
        assert_eq!(a, CacheKey::summary(&query(None)));
        assert_ne!(a, CacheKey::summary(&query(Some("EUR"))));
        let mut grouped = query(None);
        grouped.group_by = Some(GroupBy::Product);
        assert_ne!(a, CacheKey::summary(&grouped));
        assert_eq!(a.version_key, EVENTS_VERSION_KEY);
        assert!(a.entry_key("7").starts_with("engine:summary:7:"));
    }

    #[test]
    fn customer_keys_use_the_customer_version() {
        let k = CacheKey::customer("cus_1");
        assert_eq!(k.version_key, "engine:v:customer:cus_1");
        assert_ne!(k, CacheKey::customer("cus_2"));
    }

    #[test]
    fn metrics_start_at_zero() {
        let text = Cache::disabled().render_metrics();
        assert!(text.contains("engine_cache_hits_total 0\n"));
        assert!(text.contains("engine_cache_hit_ratio 0\n"));
    }
}
