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
//! - a bulk invalidation ([`Cache::invalidate_all`], and pending invalidations of
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

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use sha2::{Digest, Sha256};

use crate::db::{Db, Lsn};
use crate::error::AppError;
use crate::model::SummaryQuery;

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
/// The sequence SQLite's versions are taken from (no WAL position there).
const SEQUENCE_KEY: &str = "engine:v:seq";
/// `{run_id}:{nonce}` of the Redis data the versions are recorded in (see
/// `Link::establish`): a connection that finds none of its server
/// invalidates everything and records a new one.
pub const SERVER_MARKER_KEY: &str = "engine:v:server";

/// Lua helpers of every script: versions are compared as decimal strings (by
/// length, then by digits), never as Lua numbers, which are doubles and would
/// take two WAL positions above 2^53 for one. Anything that is not digits
/// (absent, false, garbage) counts as `0`.
const DIGITS_LUA: &str = r"
local function digits(s)
  if s and string.match(s, '^%d+$') then return s end
  return '0'
end
local function above(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
";

/// Lua shared by [`LOOKUP_SCRIPT`] and [`STORE_SCRIPT`] (after [`DIGITS_LUA`]):
/// reads the server marker (`KEYS[1]`) and the version, the largest of the
/// version keys `KEYS[2..]` (0 when all are absent), kept as stored, and lists
/// the version keys that are absent in `missing`.
const READ_VERSION_LUA: &str = r"
local marker = redis.call('GET', KEYS[1]) or ''
local v = '0'
local missing = {}
for i = 2, #KEYS do
  local raw = redis.call('GET', KEYS[i])
  if not raw then table.insert(missing, KEYS[i]) end
  local s = digits(raw)
  if above(s, v) then v = s end
end
";

/// After [`READ_VERSION_LUA`], reads the value stored under that version in the
/// same round trip. `ARGV[1]` is the value key's prefix, `ARGV[2]` the query
/// hash. Returns `{version, value or false, marker, missing version keys}`.
const LOOKUP_SCRIPT: &str = r"
local value = redis.call('GET', ARGV[1] .. ':' .. v .. ':' .. ARGV[2])
return {v, value, marker, missing}
";

/// After [`READ_VERSION_LUA`], stores a computed answer only if the version and
/// the server marker are still those it was computed under (a write, a bulk
/// invalidation or a `FLUSHALL` meanwhile makes it worthless). `ARGV`: entry key,
/// value, TTL seconds, expected version, expected marker. Returns 1 if stored.
const STORE_SCRIPT: &str = r"
if v ~= ARGV[4] or marker ~= ARGV[5] then return 0 end
redis.call('SET', ARGV[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// Moves every version key in `KEYS` forward after a write (after
/// [`DIGITS_LUA`]). `ARGV[1]` is the write's WAL position as a decimal number:
/// a key below it is set to it (concurrent writes leave the highest). An empty
/// `ARGV[1]` (no position: SQLite) takes the next number of the sequence
/// `ARGV[2]`, above every key it moves, and sets every key to it; so any move of
/// any key gives a number no version had before.
const BUMP_SCRIPT: &str = r"
local target = ARGV[1]
if target == '' then
  local n = digits(redis.call('GET', ARGV[2]))
  for _, key in ipairs(KEYS) do
    local current = digits(redis.call('GET', key))
    if above(current, n) then n = current end
  end
  target = string.format('%d', tonumber(n) + 1)
  redis.call('SET', ARGV[2], target)
end
for _, key in ipairs(KEYS) do
  if above(target, digits(redis.call('GET', key))) then
    redis.call('SET', key, target)
  end
end
return 0
";

/// Most customers a pending invalidation lists one by one; past that,
/// [`CUSTOMERS_VERSION_KEY`] is moved instead.
const MAX_PENDING_CUSTOMERS: usize = 10_000;
/// Most version keys moved by one script call.
const KEYS_PER_BUMP: usize = 500;

/// The version key of one customer's entries.
pub fn customer_version_key(customer_id: &str) -> String {
    format!("engine:v:customer:{customer_id}")
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

    /// An invocation of `script` ([`LOOKUP_SCRIPT`] or [`STORE_SCRIPT`]) with
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

/// State of the shared connection.
enum LinkState {
    /// Connected.
    Up(MultiplexedConnection),
    /// Not connected; a background task is (or will be) reconnecting.
    Down,
}

/// Invalidations that could not be applied (Redis was down or hanging).
#[derive(Default)]
struct Pending {
    /// Whether anything is pending at all (the events version then is).
    any: bool,
    /// The latest write position among them (`None` with SQLite).
    position: Option<Lsn>,
    /// Customers whose version must move.
    customers: HashSet<String>,
    /// Too many customers to list: move every customer version.
    all_customers: bool,
    /// A write's position could not be read: apply at the primary's position
    /// read at that time (which is past the write).
    needs_position: bool,
    /// Once applied, record this marker in [`SERVER_MARKER_KEY`].
    server_marker: Option<String>,
}

/// The Redis side of an enabled cache.
struct Link {
    client: redis::Client,
    /// `host:port/db`, never with credentials; for logs.
    describe: String,
    ttl_secs: u64,
    state: Mutex<LinkState>,
    reconnecting: AtomicBool,
    /// Whether a [`Link::spawn_apply`] task runs.
    retrying: AtomicBool,
    lookup: redis::Script,
    store: redis::Script,
    bump: redis::Script,
    /// The marker of the data this link established itself on (see
    /// [`Link::establish`]); a lookup that finds another (a `FLUSHALL`, another
    /// dataset) reconnects.
    marker: Mutex<Option<String>>,
    /// Held while pending invalidations are applied, so a concurrent read never
    /// sees them taken out and half applied.
    applying: tokio::sync::Mutex<()>,
    /// Invalidations not applied yet; reads bypass the cache while any is.
    pending: Mutex<Pending>,
    /// Mirrors `pending.any`, read on every lookup without the lock.
    has_pending: AtomicBool,
    /// Where the primary's current write position is read from, for
    /// invalidations whose own position is not known.
    db: Db,
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
        let info = client.get_connection_info();
        let describe = format!("{}/{}", info.addr, info.redis.db);
        let link = Arc::new(Link {
            client,
            describe,
            ttl_secs: ttl_secs.max(1),
            state: Mutex::new(LinkState::Down),
            reconnecting: AtomicBool::new(false),
            retrying: AtomicBool::new(false),
            lookup: redis::Script::new(&format!("{DIGITS_LUA}{READ_VERSION_LUA}{LOOKUP_SCRIPT}")),
            store: redis::Script::new(&format!("{DIGITS_LUA}{READ_VERSION_LUA}{STORE_SCRIPT}")),
            bump: redis::Script::new(&format!("{DIGITS_LUA}{BUMP_SCRIPT}")),
            marker: Mutex::new(None),
            applying: tokio::sync::Mutex::new(()),
            pending: Mutex::default(),
            has_pending: AtomicBool::new(false),
            db,
        });
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
                let mut invocation = key.invocation(&link.lookup);
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
            // A version key that is absent (a customer never written, or a key
            // deleted by hand) would let entries under lower versions answer:
            // start it above every version handed out, and answer this once
            // from the database.
            link.initialize_versions(&missing).await;
            return bypass(compute).await;
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
                let mut invocation = key.invocation(&link.store);
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

    /// Invalidates every cached answer: moves the events version and every
    /// customer version forward (Postgres: to the primary's position; SQLite: to
    /// the next number of the sequence).
    ///
    /// The position is the primary's current one, read when it is applied.
    ///
    /// Runs after a bulk load that bypassed the write path (`engine seed`).
    /// Returns an error (without credentials) if Redis or the database could not
    /// be reached or did not finish in time; nothing is invalidated then, and
    /// cached answers stay until their TTL. A disabled cache returns `Ok`.
    pub async fn invalidate_all(&self) -> Result<(), String> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        link.add_pending_all();
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

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `marker`, as a lookup found it, is the one this link established
    /// itself on.
    fn is_established_marker(&self, marker: &str) -> bool {
        self.marker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_deref()
            .is_none_or(|id| id == marker)
    }

    /// Records an invalidation that could not be applied: `customer_id`'s, at
    /// `position`, or at the primary's position when applied (`needs_position`).
    fn add_pending(&self, customer_id: &str, position: Option<Lsn>, needs_position: bool) {
        let mut pending = self.lock_pending();
        pending.any = true;
        pending.position = pending.position.max(position);
        pending.needs_position |= needs_position;
        if !pending.all_customers {
            pending.customers.insert(customer_id.to_owned());
            if pending.customers.len() > MAX_PENDING_CUSTOMERS {
                pending.customers = HashSet::new();
                pending.all_customers = true;
            }
        }
        self.has_pending.store(true, Ordering::Release);
    }

    /// Records an invalidation of every entry (all customers), to be applied
    /// at the primary's position read then.
    fn add_pending_all(&self) {
        let mut pending = self.lock_pending();
        pending.any = true;
        pending.needs_position = true;
        pending.customers = HashSet::new();
        pending.all_customers = true;
        self.has_pending.store(true, Ordering::Release);
    }

    /// The shared connection, or (starting the reconnect loop) an error while the
    /// link is down.
    fn connection(self: &Arc<Self>) -> Result<MultiplexedConnection, String> {
        let conn = match &*self.lock() {
            LinkState::Up(conn) => Some(conn.clone()),
            LinkState::Down => None,
        };
        conn.ok_or_else(|| {
            self.spawn_reconnect();
            format!("redis {} is down (reconnecting)", self.describe)
        })
    }

    /// Applies the pending invalidations, if any, on the shared connection.
    ///
    /// Runs before a cached read while some are pending (and in the background
    /// after a write whose invalidation could not be made). Returns `Ok` once
    /// nothing is pending; on failure they stay pending, and a Redis failure
    /// marks the link down so that the reconnect loop applies them. While
    /// another task applies them, returns an error at once (the caller bypasses
    /// the cache).
    async fn apply_pending(self: &Arc<Self>) -> Result<(), String> {
        let conn = self.connection()?;
        let Ok(_applying) = self.applying.try_lock() else {
            return Err("pending invalidations are being applied".to_owned());
        };
        match self.apply_pending_locked(conn).await {
            Ok(()) => Ok(()),
            Err(ApplyFailure::Redis(e)) => {
                self.mark_down(&e);
                Err(e)
            }
            Err(ApplyFailure::Position(e)) => Err(e),
        }
    }

    /// An invocation of [`BUMP_SCRIPT`] moving `keys` to `position` (Postgres)
    /// or to the next number of the sequence (`None`, SQLite).
    fn bump_invocation(
        &self,
        keys: &[String],
        position: Option<Lsn>,
    ) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.bump.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .arg(position.map_or_else(String::new, |p| p.as_u64().to_string()))
            .arg(SEQUENCE_KEY);
        invocation
    }

    /// Sets the absent version keys `keys` above every version handed out: to
    /// the primary's current position (Postgres) or the next number of the
    /// sequence (SQLite). Best effort: on failure they stay absent and the next
    /// read tries again.
    ///
    /// Runs on a lookup that found version keys absent.
    async fn initialize_versions(self: &Arc<Self>, keys: &[String]) {
        let position = match self.db.write_position().await {
            Ok(position) => position,
            Err(e) => {
                tracing::debug!("cannot start a cache version: {e}");
                return;
            }
        };
        let result = self
            .run(|mut conn| {
                let invocation = self.bump_invocation(keys, position);
                async move { invocation.invoke_async::<()>(&mut conn).await }
            })
            .await;
        if let Err(e) = result {
            tracing::debug!("cannot start a cache version: {e}");
        }
    }

    /// Keeps applying the pending invalidations in the background (when called
    /// inside a Tokio runtime), with back-off from 100 ms to 2 s, until none is
    /// pending: so other engines sharing the Redis see an invalidation as soon
    /// as Redis takes it (after an OOM, say), without waiting for this engine's
    /// next cached read. One such task at a time.
    fn spawn_apply(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err()
            || self.retrying.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                while link.has_pending.load(Ordering::Acquire) {
                    if let Err(e) = link.apply_pending().await {
                        tracing::debug!("pending invalidations not applied yet: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                link.retrying.store(false, Ordering::Release);
                // Something pending added just now found the flag still set.
                if !link.has_pending.load(Ordering::Acquire)
                    || link.retrying.swap(true, Ordering::AcqRel)
                {
                    break;
                }
            }
        });
    }

    /// [`Link::apply_pending`] on a given connection, with [`Link::applying`]
    /// held by the caller. Takes the pending set out, and puts it back (merged
    /// with newer ones) if applying fails.
    async fn apply_pending_locked(
        &self,
        mut conn: MultiplexedConnection,
    ) -> Result<(), ApplyFailure> {
        let mut taken = {
            let mut pending = self.lock_pending();
            if !pending.any {
                self.has_pending.store(false, Ordering::Release);
                return Ok(());
            }
            std::mem::take(&mut *pending)
        };
        let work = async {
            if taken.needs_position {
                let now = self.db.write_position().await.map_err(|e| {
                    ApplyError::Position(format!("cannot read the write position: {e}"))
                })?;
                taken.position = taken.position.max(now);
            }
            let mut keys = vec![EVENTS_VERSION_KEY.to_owned()];
            if taken.all_customers {
                keys.push(CUSTOMERS_VERSION_KEY.to_owned());
            } else {
                keys.extend(taken.customers.iter().map(|c| customer_version_key(c)));
            }
            for chunk in keys.chunks(KEYS_PER_BUMP) {
                self.bump_invocation(chunk, taken.position)
                    .invoke_async::<()>(&mut conn)
                    .await?;
            }
            if let Some(run_id) = &taken.server_marker {
                redis::cmd("SET")
                    .arg(SERVER_MARKER_KEY)
                    .arg(run_id)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
            Ok::<_, ApplyError>(())
        };
        let result = match tokio::time::timeout(COMMAND_TIMEOUT * 10, work).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ApplyError::Redis(e))) => Err(ApplyFailure::Redis(redact(&e))),
            Ok(Err(ApplyError::Position(e))) => Err(ApplyFailure::Position(e)),
            Err(_) => Err(ApplyFailure::Redis(
                "applying pending invalidations timed out".to_owned(),
            )),
        };
        let mut pending = self.lock_pending();
        match result {
            Ok(()) => {
                if !pending.any {
                    self.has_pending.store(false, Ordering::Release);
                }
                tracing::info!("pending read cache invalidations applied");
                Ok(())
            }
            Err(e) => {
                pending.any = true;
                pending.position = pending.position.max(taken.position);
                pending.needs_position |= taken.needs_position;
                pending.server_marker = pending.server_marker.take().or(taken.server_marker);
                pending.all_customers |= taken.all_customers;
                if pending.all_customers {
                    pending.customers.clear();
                } else {
                    pending.customers.extend(taken.customers);
                }
                Err(e)
            }
        }
    }

    /// Opens a connection and makes it safe to use: unless [`SERVER_MARKER_KEY`]
    /// holds a marker of this server (`{run_id}:{nonce}`), the data is not the
    /// one the versions were recorded in (a new server, one restarted from a
    /// snapshot, a failover, a `FLUSHALL`), so it invalidates everything at the
    /// primary's current position and records a new marker with a fresh nonce;
    /// then applies every pending invalidation. Returns the connection only once
    /// that is done, and remembers the marker that lookups must find.
    ///
    /// Runs at start-up and on every reconnect.
    async fn establish(&self) -> Result<MultiplexedConnection, String> {
        let mut conn = self.open().await?;
        let _applying = self.applying.lock().await;
        let marker = async {
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await?;
            let recorded: Option<String> = redis::cmd("GET")
                .arg(SERVER_MARKER_KEY)
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>((info, recorded))
        };
        let (info, recorded) = match tokio::time::timeout(COMMAND_TIMEOUT, marker).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return Err(redact(&e)),
            Err(_) => return Err("reading the server's run_id timed out".to_owned()),
        };
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map_or("", str::trim);
        let this_server = format!("{run_id}:");
        let marker = match recorded {
            Some(marker) if marker.starts_with(&this_server) => marker,
            recorded => {
                if recorded.is_some() {
                    tracing::warn!(
                        redis = %self.describe,
                        "redis is another server than the one the cache versions were recorded \
                         on (restarted from a snapshot, or failed over): invalidating every \
                         cached answer"
                    );
                }
                let fresh = format!("{this_server}{}", uuid::Uuid::new_v4().simple());
                self.add_pending_all();
                self.lock_pending().server_marker = Some(fresh.clone());
                fresh
            }
        };
        self.apply_pending_locked(conn.clone())
            .await
            .map_err(ApplyFailure::into_message)?;
        *self
            .marker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(marker);
        Ok(conn)
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
                // Invalidations missed while Redis was away go first, so no
                // read sees an entry older than a write made meanwhile.
                match link.establish().await {
                    Ok(conn) => {
                        *link.lock() = LinkState::Up(conn);
                        tracing::info!(redis = %link.describe, "read cache reconnected to redis");
                        break;
                    }
                    Err(e) => tracing::debug!("read cache not reconnected yet: {e}"),
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
        let conn = self.connection()?;
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

/// Why [`Link::apply_pending_locked`] failed, as text without secrets.
enum ApplyFailure {
    /// Redis failed or timed out: the link should reconnect.
    Redis(String),
    /// The primary's write position could not be read.
    Position(String),
}

impl ApplyFailure {
    fn into_message(self) -> String {
        match self {
            ApplyFailure::Redis(e) | ApplyFailure::Position(e) => e,
        }
    }
}

/// Why one step of applying pending invalidations failed.
enum ApplyError {
    Redis(redis::RedisError),
    /// The primary's write position could not be read (text without secrets).
    Position(String),
}

impl From<redis::RedisError> for ApplyError {
    fn from(e: redis::RedisError) -> Self {
        ApplyError::Redis(e)
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
