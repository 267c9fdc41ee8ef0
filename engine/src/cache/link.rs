//! The read cache's Redis side: one shared multiplexed connection, marked down
//! on failure and re-established in the background, and the invalidations that
//! could not be applied yet (kept pending until Redis takes them).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::scripts::Scripts;
use super::{
    customer_version_key, COMMAND_TIMEOUT, CUSTOMERS_VERSION_KEY, CUSTOMER_VERSION_PREFIX,
    EVENTS_VERSION_KEY, SERVER_MARKER_KEY,
};
use crate::db::{Db, Lsn};

/// The sequence SQLite's versions are taken from (no WAL position there).
const SEQUENCE_KEY: &str = "engine:v:seq";
/// A customer's version key lives this much longer than the entries stored
/// under it (from its last move): long enough that a customer read often keeps
/// hitting, short enough that ids read or written once leave Redis.
const CUSTOMER_VERSION_EXTRA_TTL_SECS: u64 = 3600;
/// Most customers a pending invalidation lists one by one; past that,
/// [`CUSTOMERS_VERSION_KEY`] is moved instead.
const MAX_PENDING_CUSTOMERS: usize = 10_000;
/// Most version keys moved by one script call.
const KEYS_PER_BUMP: usize = 500;

/// State of the shared connection.
pub(super) enum LinkState {
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
pub(super) struct Link {
    client: redis::Client,
    /// `host:port/db`, never with credentials; for logs.
    pub(super) describe: String,
    /// Lifetime of a stored entry.
    pub(super) ttl_secs: u64,
    state: Mutex<LinkState>,
    reconnecting: AtomicBool,
    /// Whether a [`Link::spawn_apply`] task runs.
    retrying: AtomicBool,
    pub(super) scripts: Scripts,
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
    pub(super) has_pending: AtomicBool,
    /// Where the primary's current write position is read from, for
    /// invalidations whose own position is not known.
    db: Db,
}

impl Link {
    /// A link to `client`'s server (not connected yet: see [`Link::establish`]),
    /// storing entries for `ttl_secs` and reading write positions from `db`.
    pub(super) fn new(client: redis::Client, ttl_secs: u64, db: Db) -> Self {
        let info = client.get_connection_info();
        let describe = format!("{}/{}", info.addr, info.redis.db);
        Self {
            client,
            describe,
            ttl_secs: ttl_secs.max(1),
            state: Mutex::new(LinkState::Down),
            reconnecting: AtomicBool::new(false),
            retrying: AtomicBool::new(false),
            scripts: Scripts::new(),
            marker: Mutex::new(None),
            applying: tokio::sync::Mutex::new(()),
            pending: Mutex::default(),
            has_pending: AtomicBool::new(false),
            db,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, LinkState> {
        crate::sync::lock(&self.state)
    }

    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        crate::sync::lock(&self.pending)
    }

    /// Whether `marker`, as a lookup found it, is the one this link established
    /// itself on.
    pub(super) fn is_established_marker(&self, marker: &str) -> bool {
        crate::sync::lock(&self.marker)
            .as_deref()
            .is_none_or(|id| id == marker)
    }

    /// Records an invalidation that could not be applied: `customer_id`'s, at
    /// `position`, or at the primary's position when applied (`needs_position`).
    pub(super) fn add_pending(
        &self,
        customer_id: &str,
        position: Option<Lsn>,
        needs_position: bool,
    ) {
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
    pub(super) fn add_pending_all(&self) {
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
    pub(super) async fn apply_pending(self: &Arc<Self>) -> Result<(), String> {
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

    /// An invocation of the bump script moving `keys` to `position` (Postgres)
    /// or to the next number of the sequence (`None`, SQLite).
    pub(super) fn bump_invocation(
        &self,
        keys: &[String],
        position: Option<Lsn>,
    ) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.scripts.bump.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .arg(position.map_or_else(String::new, |p| p.as_u64().to_string()))
            .arg(SEQUENCE_KEY)
            .arg(
                self.ttl_secs
                    .saturating_add(CUSTOMER_VERSION_EXTRA_TTL_SECS),
            )
            .arg(CUSTOMER_VERSION_PREFIX);
        invocation
    }

    /// Sets the absent version keys `keys` above every version handed out: to
    /// the primary's current position (Postgres) or the next number of the
    /// sequence (SQLite). Best effort: on failure they stay absent and the next
    /// read tries again.
    ///
    /// Runs on a lookup that found version keys absent.
    pub(super) async fn initialize_versions(self: &Arc<Self>, keys: &[String]) {
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
    pub(super) fn spawn_apply(self: &Arc<Self>) {
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
        let position = async {
            if taken.needs_position {
                let now = tokio::time::timeout(COMMAND_TIMEOUT * 10, self.db.write_position())
                    .await
                    .map_err(|_| "reading the write position timed out".to_owned())?
                    .map_err(|e| format!("cannot read the write position: {e}"))?;
                taken.position = taken.position.max(now);
            }
            Ok::<_, String>(())
        };
        // The database's failure is not Redis': it must not mark the link down.
        if let Err(e) = position.await {
            self.restore_pending(taken);
            return Err(ApplyFailure::Position(e));
        }
        let work = async {
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
            Ok::<_, redis::RedisError>(())
        };
        let result = match tokio::time::timeout(COMMAND_TIMEOUT * 10, work).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApplyFailure::Redis(redact(&e))),
            Err(_) => Err(ApplyFailure::Redis(
                "applying pending invalidations timed out".to_owned(),
            )),
        };
        match result {
            Ok(()) => {
                if !self.lock_pending().any {
                    self.has_pending.store(false, Ordering::Release);
                }
                tracing::info!("pending read cache invalidations applied");
                Ok(())
            }
            Err(e) => {
                self.restore_pending(taken);
                Err(e)
            }
        }
    }

    /// Puts invalidations taken out by [`Link::apply_pending_locked`] back,
    /// merged with any added meanwhile, after applying them failed.
    fn restore_pending(&self, taken: Pending) {
        let mut pending = self.lock_pending();
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
        self.has_pending.store(true, Ordering::Release);
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
    pub(super) async fn establish(&self) -> Result<MultiplexedConnection, String> {
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
        *crate::sync::lock(&self.marker) = Some(marker);
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

    /// Whether the shared connection is up.
    pub(super) fn is_up(&self) -> bool {
        matches!(*self.lock(), LinkState::Up(_))
    }

    /// Connects (and applies what is pending) at once rather than at the
    /// reconnect loop's next attempt, which may be 2 s away.
    ///
    /// Runs at shutdown while invalidations are pending and the link is down.
    pub(super) async fn reconnect_now(&self) -> Result<(), String> {
        let conn = self.establish().await?;
        *self.lock() = LinkState::Up(conn);
        Ok(())
    }

    /// Marks the link down (logging once per outage) and starts reconnecting.
    pub(super) fn mark_down(self: &Arc<Self>, why: &str) {
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
    pub(super) fn spawn_reconnect(self: &Arc<Self>) {
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
    pub(super) async fn run<T, F, Fut>(self: &Arc<Self>, op: F) -> Result<T, String>
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

/// A Redis error as text without anything that could hold credentials.
fn redact(e: &redis::RedisError) -> String {
    match e.code() {
        Some(code) => format!("{} ({code})", e.category()),
        None => e.category().to_owned(),
    }
}
