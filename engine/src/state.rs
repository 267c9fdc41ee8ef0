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
}

impl AppState {
    /// Creates the state from an open database and the readiness timeout, without
    /// a read cache. Runs once at start-up (or per test).
    pub fn new(db: Db, ready_timeout: Duration) -> Self {
        Self {
            db,
            ready_timeout,
            cache: Cache::disabled(),
        }
    }

    /// Returns the state with `cache` as its read cache. Runs once at start-up.
    pub fn with_cache(mut self, cache: Cache) -> Self {
        self.cache = cache;
        self
    }
}
