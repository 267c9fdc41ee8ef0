//! Redis cache-aside for the read endpoints `GET /summary` and
//! `GET /customers/{id}`, with version-based invalidation and metrics.
//!
//! Keys are versioned instead of deleted:
//! - every stored event, and every idempotent replay (a retry, whose first
//!   attempt's invalidation may have been lost), moves the versions `engine:v:events` and
//!   `engine:v:customer:{customer_id}` forward (see [`Cache::invalidate_event`]):
//!   with Postgres to the write's position in the primary's WAL (an [`Lsn`] as a
//!   number), with SQLite to the next number of the sequence `engine:v:seq`. Every
//!   move sets a value above every version handed out before it, and a version
//!   only ever grows;
//! - a bulk invalidation (every [`Cache::connect`], and pending invalidations of
//!   too many customers to list) moves `engine:v:events` and
//!   `engine:v:customers`, which every customer entry depends on too;
//! - a summary is cached under `engine:summary:{events version}:{sha256}` and a
//!   customer under `engine:customer:{version}:{sha256}`, where the version is the
//!   larger of the customer's and `engine:v:customers` (so moving either one moves
//!   it), and the hash is of the normalised query (the validated parameters, not
//!   the raw query string).
//!
//! A read is one round trip (a small Lua script reads the versions and then the
//! value under the key of that version); a miss computes the body from the
//! database and stores it with `SET ... EX ttl` under the version read before the
//! computation, so a write in between leaves the entry under an old version that no
//! one reads again. The cached value is the exact JSON body; a hit answers the same
//! bytes with `200`.
//!
//! With read replicas, a miss reads from a server that has replayed the version
//! (the version is a WAL position), so a lagging replica never fills the cache
//! with an answer older than its key says. A read carrying a consistency token
//! past the current version (its write's invalidation failed) bypasses the cache.
//!
//! When the write position after a write cannot be read (the primary went away
//! between the commit and the question), or the write failed after the database
//! may have committed it (see [`Cache::write_guard`]), the invalidation is kept
//! pending without a position and is applied with the primary's position at the
//! time it is applied, which is past that write. A Redis restarted from a
//! snapshot, failed over to a replica or flushed brings back older versions and
//! entries, or none: each connection reads the marker [`SERVER_MARKER_KEY`]
//! (`{run_id}:{nonce}`) and, unless it names this server, invalidates every entry
//! (at the primary's current position) and records a new marker before the cache
//! is used (see `Link::establish`). Every lookup checks the marker too, and a
//! version key found absent is started above every version handed out first.
//!
//! Redis is optional and never required for an answer: one multiplexed connection
//! is shared, every command is bounded by [`COMMAND_TIMEOUT`], and after a failure
//! the link is marked down, requests bypass the cache at once, and one background
//! task reconnects with back-off. If moving the versions after a write fails
//! (Redis down or hanging), the invalidation is kept in memory as pending: until it
//! has been applied, this engine's cached reads bypass the cache, and it is applied
//! before the link counts as up again, so no entry older than the write is ever
//! served by this engine. (Another engine sharing the Redis that never lost it may
//! serve such an entry until its TTL; the TTL bounds staleness there.)

mod link;
mod scripts;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::db::{Db, Lsn};
use crate::error::AppError;
use crate::model::SummaryQuery;
use link::{Link, LinkState};

/// How long one Redis command (or connection attempt) may take before the cache
/// is bypassed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(200);
/// The response header telling whether the answer came from the cache.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-engine-cache");
/// The version key bumped by every stored event (part of every summary key).
pub const EVENTS_VERSION_KEY: &str = "engine:v:events";
/// The version key every customer entry depends on besides its own: moved by
/// bulk invalidations, which cannot list the customers.
pub const CUSTOMERS_VERSION_KEY: &str = "engine:v:customers";
/// `{run_id}:{nonce}` of the Redis data the versions are recorded in (see
/// `Link::establish`): a connection that finds none of its server
/// invalidates everything and records a new one.
pub const SERVER_MARKER_KEY: &str = "engine:v:server";

/// What every customer's version key starts with.
pub const CUSTOMER_VERSION_PREFIX: &str = "engine:v:customer:";

/// The version key of one customer's entries.
pub fn customer_version_key(customer_id: &str) -> String {
    format!("{CUSTOMER_VERSION_PREFIX}{customer_id}")
}

/// Which cache entry a read endpoint wants: its version keys (the entry's
/// version is the largest), its key prefix and the hash of its normalised query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    version_keys: Vec<String>,
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
            version_keys: vec![EVENTS_VERSION_KEY.to_owned()],
            prefix: "engine:summary",
            hash: sha256_hex(normalised.to_string().as_bytes()),
        }
    }

    /// The entry of one customer's totals. Runs once per `GET /customers/{id}`;
    /// returns a key versioned by that customer's writes and bulk invalidations
    /// only.
    pub fn customer(customer_id: &str) -> Self {
        Self {
            version_keys: vec![
                customer_version_key(customer_id),
                CUSTOMERS_VERSION_KEY.to_owned(),
            ],
            prefix: "engine:customer",
            hash: sha256_hex(customer_id.as_bytes()),
        }
    }

    /// An invocation of `script` (the lookup or the store script) with
    /// this entry's keys: the server marker, then its version keys.
    fn invocation<'a>(&self, script: &'a redis::Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation.key(SERVER_MARKER_KEY);
        for version_key in &self.version_keys {
            invocation.key(version_key);
        }
        invocation
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

/// See [`Cache::write_guard`].
#[must_use = "a dropped guard invalidates as if the write may have been lost"]
pub struct WriteGuard {
    cache: Cache,
    customer_id: String,
    armed: bool,
}

impl WriteGuard {
    /// The write's outcome is settled (its invalidation was made, or nothing
    /// was written): dropping the guard does nothing more.
    pub fn done(mut self) {
        self.armed = false;
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if self.armed {
            self.cache
                .invalidate_event_at_unknown_position(&self.customer_id);
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

    /// Builds the cache for `redis_url` with entries living `ttl_secs`, reading
    /// write positions from `db` when an invalidation needs one.
    ///
    /// Runs once at start-up. Tries to connect once (bounded by
    /// [`COMMAND_TIMEOUT`]); if Redis is not reachable it logs a warning and keeps
    /// reconnecting in the background, so the engine starts either way. Returns an
    /// error only for a URL that cannot be parsed (the message never contains the
    /// URL, which may hold a password).
    pub async fn connect(redis_url: &str, ttl_secs: u64, db: Db) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url)
            .map_err(|e| anyhow::anyhow!("invalid redis URL ({})", e.category()))?;
        let link = Arc::new(Link::new(client, ttl_secs, db));
        // An engine that stopped (or crashed) with invalidations Redis had not
        // taken leaves entries older than its writes: every start invalidates
        // everything (at the primary's current position) before the cache is
        // used, so no restart brings them back.
        link.add_pending_all();
        match link.establish().await {
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
    /// the JSON body) with the position the database read must have replayed (the
    /// later of `token`, the client's consistency token, and the entry's
    /// version), stores its body with the TTL (best effort) and answers it. A
    /// `token` past the version bypasses the cache. Every answer carries
    /// [`CACHE_HEADER`]. Errors of `compute` (e.g. a 404) are returned as they are
    /// and nothing is stored; Redis failures are never errors, they turn the read
    /// into a bypass.
    pub async fn get_or_compute<F, Fut>(
        &self,
        key: &CacheKey,
        token: Option<Lsn>,
        compute: F,
    ) -> Result<Response, AppError>
    where
        F: FnOnce(Option<Lsn>) -> Fut,
        Fut: Future<Output = Result<Vec<u8>, AppError>>,
    {
        let bypass = |compute: F| async move {
            Ok(json_response(compute(token).await?, CacheOutcome::Bypass))
        };
        let Some(link) = &self.link else {
            return bypass(compute).await;
        };
        if link.has_pending.load(Ordering::Acquire) {
            if let Err(e) = link.apply_pending().await {
                // Not counted as an error: no command may have been sent.
                tracing::debug!("read cache bypassed: invalidations still pending ({e})");
                return bypass(compute).await;
            }
        }
        let lookup = link
            .run(|mut conn| {
                let mut invocation = key.invocation(&link.scripts.lookup);
                invocation.arg(key.prefix).arg(&key.hash);
                async move {
                    invocation
                        .invoke_async::<(String, Option<Vec<u8>>, String, Vec<String>)>(&mut conn)
                        .await
                }
            })
            .await;
        let (version, cached, marker, missing) = match lookup {
            Ok(found) => found,
            Err(e) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("read cache bypassed: {e}");
                return bypass(compute).await;
            }
        };
        if !link.is_established_marker(&marker) {
            // The dataset changed under the link (FLUSHALL, a reload): reconnect,
            // which invalidates everything before the cache is used again.
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            link.mark_down("the server marker changed (FLUSHALL, or another dataset)");
            return bypass(compute).await;
        }
        if !missing.is_empty() {
            // A version key that is absent (a customer never written, one whose
            // key expired, or a key deleted by hand) would let entries under
            // lower versions answer: answer this once from the database, then
            // start the key above every version handed out. Not for an answer
            // that is an error (a 404): unknown ids leave nothing in Redis.
            let answer = bypass(compute).await;
            if answer.is_ok() {
                link.initialize_versions(&missing).await;
            }
            return answer;
        }
        let Some(position) = version.parse::<u64>().ok().map(Lsn::from_u64) else {
            tracing::warn!(
                keys = ?key.version_keys,
                "read cache version is not a number; bypassing"
            );
            return bypass(compute).await;
        };
        if token.is_some_and(|t| t > position) {
            return bypass(compute).await;
        }
        if let Some(bytes) = cached {
            self.metrics.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(json_response(bytes, CacheOutcome::Hit));
        }
        self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        let body = compute(Some(position)).await?;
        let entry = key.entry_key(&version);
        let value = body.clone();
        let stored = link
            .run(|mut conn| {
                let mut invocation = key.invocation(&link.scripts.store);
                invocation
                    .arg(&entry)
                    .arg(value)
                    .arg(link.ttl_secs)
                    .arg(&version)
                    .arg(&marker);
                async move { invocation.invoke_async::<u8>(&mut conn).await }
            })
            .await;
        if let Err(e) = stored {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("read cache could not store an entry: {e}");
        }
        Ok(json_response(body, CacheOutcome::Miss))
    }

    /// Invalidates everything a newly stored event affects: moves the events
    /// version (all summaries) and the version of `customer_id` forward, to
    /// `position` (the write's WAL position, Postgres) or to the next number of
    /// the sequence (`None`, SQLite).
    ///
    /// Runs after every successful event insert and idempotent replay,
    /// before the response is sent, in one round trip. Never fails the write: if
    /// Redis cannot be reached the invalidation is kept as pending (logged and
    /// counted), reads bypass the cache until it has been applied, and it is
    /// applied once Redis answers again.
    pub async fn invalidate_event(&self, customer_id: &str, position: Option<Lsn>) {
        let Some(link) = &self.link else {
            return;
        };
        if link.has_pending.load(Ordering::Acquire) {
            // Keep the order of invalidations: queue behind the pending ones.
            link.add_pending(customer_id, position, false);
            link.spawn_apply();
            return;
        }
        let keys = [
            EVENTS_VERSION_KEY.to_owned(),
            customer_version_key(customer_id),
        ];
        let result = link
            .run(|mut conn| {
                let invocation = link.bump_invocation(&keys, position);
                async move { invocation.invoke_async::<()>(&mut conn).await }
            })
            .await;
        if let Err(e) = result {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            link.add_pending(customer_id, position, false);
            link.spawn_apply();
            tracing::warn!(
                "cannot invalidate the read cache after a write ({e}); \
                 reads bypass the cache until the invalidation is applied"
            );
        }
    }

    /// Arms a guard for a write of `customer_id` about to be made: if the guard
    /// is dropped before [`WriteGuard::done`] (the write failed in a way that
    /// may have committed, e.g. the connection broke during `COMMIT`, or its
    /// task was dropped), the invalidation is queued at an unknown position
    /// (see [`Cache::invalidate_event_at_unknown_position`]).
    ///
    /// Runs once per valid `POST /events`, before the database is touched.
    pub fn write_guard(&self, customer_id: &str) -> WriteGuard {
        WriteGuard {
            cache: self.clone(),
            customer_id: customer_id.to_owned(),
            armed: true,
        }
    }

    /// Like [`Cache::invalidate_event`] for a write whose position could not be
    /// read (Postgres): kept pending, so this engine's cached reads bypass the
    /// cache until it has been applied at the primary's position read then.
    ///
    /// Runs after such a write, before its answer is sent; never fails.
    pub fn invalidate_event_at_unknown_position(&self, customer_id: &str) {
        let Some(link) = &self.link else {
            return;
        };
        link.add_pending(customer_id, None, true);
        link.spawn_apply();
    }

    /// Tries to apply the invalidations still pending, for at most `limit`.
    ///
    /// Runs once at shutdown, after the last request. Logs whether they were
    /// applied; if not, other engines sharing the Redis may serve answers older
    /// than this engine's last writes until the entries' TTL or the next engine
    /// start (which invalidates everything).
    pub async fn flush_pending(&self, limit: Duration) {
        let Some(link) = &self.link else {
            return;
        };
        let deadline = tokio::time::Instant::now() + limit;
        while link.has_pending.load(Ordering::Acquire) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    "read cache invalidations not applied before exit: other engines may serve \
                     older cached answers until their TTL or the next engine start"
                );
                return;
            }
            // Down: connect now (the reconnect loop may be backing off for
            // seconds), which applies them; up: apply them here.
            let applied = if link.is_up() {
                link.apply_pending().await
            } else {
                link.reconnect_now().await
            };
            if applied.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Makes sure every cached answer from before [`Cache::connect`] is
    /// invalidated: `connect` queues that invalidation (the events version and
    /// every customer version move to the primary's position, SQLite: to the
    /// next number of the sequence) and applies it if Redis answers; this tries
    /// once more if it did not.
    ///
    /// Runs after a bulk load that bypassed the write path (`engine seed`, which
    /// connects once it has stored its events). Returns an error (without
    /// credentials) if Redis or the database could not be reached or did not
    /// finish in time; nothing is invalidated then, and cached answers stay until
    /// their TTL. A disabled cache returns `Ok`.
    pub async fn invalidated_since_connect(&self) -> Result<(), String> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        link.apply_pending().await
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
        assert_eq!(a.version_keys, [EVENTS_VERSION_KEY]);
        assert!(a.entry_key("7").starts_with("engine:summary:7:"));
    }

    #[test]
    fn customer_keys_use_the_customer_and_the_bulk_versions() {
        let k = CacheKey::customer("cus_1");
        assert_eq!(
            k.version_keys,
            ["engine:v:customer:cus_1", CUSTOMERS_VERSION_KEY]
        );
        assert_ne!(k, CacheKey::customer("cus_2"));
    }

    #[test]
    fn metrics_start_at_zero() {
        let text = Cache::disabled().render_metrics();
        assert!(text.contains("engine_cache_hits_total 0\n"));
        assert!(text.contains("engine_cache_hit_ratio 0\n"));
    }
}
