//! Shared state handed to every request handler.

use std::time::Duration;

use crate::cache::Cache;
use crate::db::Db;

/// Everything a handler needs: the database handle and a few settings.
///
/// Built once by [`crate::serve`] (or by a test) and cloned cheaply into each
/// request (the pools inside are reference-counted). Later additions such as a cache
/// client or an idempotency store belong here.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database (both the write path and the read path go through it).
    pub db: Db,
    /// How long `/readyz` waits for the database before answering 503.
    pub ready_timeout: Duration,
    /// The Redis read cache of `/summary` and `/customers/{id}` (a pass-through
    /// when no Redis is configured).
    pub cache: Cache,
    /// How long an `Idempotency-Key` is remembered; an older claim is expired and
    /// the key may store a new event.
    pub idempotency_key_ttl: Duration,
    /// How long a request body may take to arrive in full (then 408).
    pub body_read_timeout: Duration,
    /// The longest an API request may take (then 503).
    pub request_timeout: Duration,
}

impl AppState {
    /// Creates the state from an open database and the readiness timeout, without
    /// a read cache. Runs once at start-up (or per test).
    pub fn new(db: Db, ready_timeout: Duration) -> Self {
        let defaults = crate::config::Config::default();
        Self {
            db,
            ready_timeout,
            cache: Cache::disabled(),
            idempotency_key_ttl: crate::config::DEFAULT_IDEMPOTENCY_KEY_TTL,
            body_read_timeout: Duration::from_millis(defaults.header_read_timeout_ms),
            request_timeout: Duration::from_millis(defaults.request_timeout_ms),
        }
    }

    /// Returns the state with `timeout` as the longest an API request may take.
    /// Runs once at start-up.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Returns the state with `timeout` as the time allowed for a request body.
    /// Runs once at start-up.
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Returns the state with `ttl` as the idempotency key lifetime. Runs once at
    /// start-up.
    pub fn with_idempotency_key_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_key_ttl = ttl;
        self
    }

    /// The expiry cutoff of idempotency keys now: claims made before it are
    /// expired. Runs once per keyed `POST /events`.
    pub fn idempotency_cutoff(&self) -> chrono::DateTime<chrono::Utc> {
        expiry_cutoff(self.idempotency_key_ttl)
    }

    /// Returns the state with `cache` as its read cache. Runs once at start-up.
    pub fn with_cache(mut self, cache: Cache) -> Self {
        self.cache = cache;
        self
    }
}

/// `now - ttl` (the Unix epoch if that is out of range). Runs once per keyed
/// `POST /events` and per expiry sweep.
pub fn expiry_cutoff(ttl: Duration) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_sub_signed(ttl))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
}
