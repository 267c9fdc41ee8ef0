//! Read/write splitting for Postgres: the read replicas, their health checks, and
//! the choice of the pool each read runs on.
//!
//! Writes and transactions never come here: they use the primary's pool. A read
//! goes to the next healthy replica (round robin) that has replayed at least the
//! position the read asks for (a client's consistency token, or the read cache's
//! version); with no such replica it goes to the primary.
//!
//! A background task checks every replica each `check_interval`, over a
//! connection of its own (so a busy replica is not taken for a dead one):
//! - unreachable, or the check fails or takes longer than [`CHECK_TIMEOUT`], or the
//!   database has no `revenue_events` table or another name than the primary's
//!   (a wrong database name): down;
//! - not in recovery (promoted, or not a standby at all): not used, since its data
//!   may have diverged from the primary's;
//! - a standby of another cluster (its `pg_control_system()` identifier differs
//!   from the primary's, when that function may be read): not used;
//! - caught up (its replayed position is at or past the primary's position read
//!   just before, or the last one read while the primary is unreachable): healthy
//!   with lag 0;
//! - otherwise its lag is `now() - pg_last_xact_replay_timestamp()`, and it is
//!   healthy only while that is at most `max_replica_lag`.
//!
//! After a long idle period the first write makes a replica look far behind until
//! it replays that write (its last replayed transaction is old); it is then
//! skipped for one check, which only sends reads to the primary.
//!
//! A read that fails on a replica because the replica is unreachable (refuses
//! connections: no connection of its pool came within 1 s and none is open),
//! hangs past the replica read timeout (a third of `http.request_timeout`, at most
//! 10 s) or is the wrong database (or its query was cancelled by recovery, or its
//! pool was saturated) is run again on the primary at once;
//! an unreachable, hung or wrong replica is also marked down until a check finds
//! it healthy again, so stopping a replica costs no failed request.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use super::lsn::Lsn;
use super::session::{Conn, Session};
use super::DbError;

/// The longest a health check of one server may take before it counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the last health check found out about a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: not used.
    Unknown,
    /// Serving reads.
    Healthy,
    /// Reachable but further behind than `max_replica_lag`: not used.
    Lagging,
    /// Unreachable, or the check failed: not used.
    Down,
    /// Reachable but not a standby (not in recovery): not used.
    NotStandby,
    /// A standby, but of another cluster (its system identifier differs from
    /// the primary's): not used, its data is not the primary's.
    OtherCluster,
}

impl Health {
    /// The lower-case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Lagging => "lagging",
            Health::Down => "down",
            Health::NotStandby => "not_standby",
            Health::OtherCluster => "other_cluster",
        }
    }

    const ALL: [Health; 6] = [
        Health::Unknown,
        Health::Healthy,
        Health::Lagging,
        Health::Down,
        Health::NotStandby,
        Health::OtherCluster,
    ];
}

/// A replica's state as of its last check (or failed read).
#[derive(Clone, Copy, Debug)]
struct ReplicaState {
    health: Health,
    /// The WAL position it had replayed, when known.
    replayed: Option<Lsn>,
    /// How far behind it was (0 when caught up), when known.
    lag: Option<Duration>,
}

/// One read replica: its pool, its state and its read counter.
#[derive(Debug)]
struct Replica {
    /// `replica-0`, `replica-1`, … in configuration order (logs and metrics).
    name: String,
    pool: PgPool,
    /// One connection of its own for health checks, so a replica whose read
    /// pool is saturated is not mistaken for a dead one.
    check_pool: PgPool,
    state: Mutex<ReplicaState>,
    reads: AtomicU64,
}

impl Replica {
    fn state(&self) -> MutexGuard<'_, ReplicaState> {
        crate::sync::lock(&self.state)
    }

    /// Stores a new state, logging a change of health.
    fn set(&self, next: ReplicaState, why: &str) {
        let previous = std::mem::replace(&mut *self.state(), next).health;
        if previous == next.health {
            return;
        }
        match next.health {
            Health::Healthy => tracing::info!(
                replica = self.name,
                lag = ?next.lag,
                "replica healthy: serving reads"
            ),
            health => tracing::warn!(
                replica = self.name,
                state = health.as_str(),
                why,
                "replica not used for reads"
            ),
        }
    }
}

/// The primary's pool and the replicas, shared by clones of the database handle.
#[derive(Debug)]
pub struct ReplicaSet {
    session: Session,
    primary: PgPool,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    max_lag: Duration,
    /// The longest one read may take on a replica before the replica is
    /// dropped and the read is run on the primary (a replica that hangs
    /// instead of dying).
    read_timeout: Duration,
    /// The primary's WAL position at the last check that reached it: replicas
    /// are compared with it while the primary is unreachable.
    last_primary_position: Mutex<Option<Lsn>>,
    /// The name of the primary's database, as the server calls it (through
    /// PgBouncer too): a replica URL naming another database of the same
    /// cluster is not used. `None` until the primary has answered a check.
    primary_database: Mutex<Option<String>>,
    /// The primary's system identifier: read once (needs `pg_control_system()`,
    /// which may not be granted: then replicas are not compared by it).
    primary_system_id: Mutex<SystemId>,
    primary_reads: AtomicU64,
    fallbacks: AtomicU64,
}

impl ReplicaSet {
    /// Wraps the primary's pool and one lazily connecting pool per replica
    /// (`replica-0`, … in order), all used through `session`. Every replica
    /// starts [`Health::Unknown`]; call [`ReplicaSet::check_all`] once, then
    /// [`ReplicaSet::spawn_checks`].
    pub fn new(
        session: Session,
        primary: PgPool,
        replicas: Vec<PgPool>,
        max_lag: Duration,
        read_timeout: Duration,
    ) -> Self {
        let replicas = replicas
            .into_iter()
            .enumerate()
            .map(|(i, pool)| Replica {
                name: format!("replica-{i}"),
                check_pool: PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(CHECK_TIMEOUT)
                    .connect_lazy_with((*pool.connect_options()).clone()),
                pool,
                state: Mutex::new(ReplicaState {
                    health: Health::Unknown,
                    replayed: None,
                    lag: None,
                }),
                reads: AtomicU64::new(0),
            })
            .collect();
        Self {
            session,
            primary,
            replicas,
            next: AtomicUsize::new(0),
            max_lag,
            read_timeout,
            last_primary_position: Mutex::new(None),
            primary_database: Mutex::new(None),
            primary_system_id: Mutex::new(SystemId::Unknown),
            primary_reads: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// Whether any replica is configured.
    pub fn has_replicas(&self) -> bool {
        !self.replicas.is_empty()
    }

    /// The next healthy replica, round robin, that has replayed `after` (any
    /// healthy one when `after` is `None`); `None` when there is none.
    fn pick(&self, after: Option<Lsn>) -> Option<&Replica> {
        let n = self.replicas.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| &self.replicas[(start + i) % n]).find(|r| {
            let s = *r.state();
            s.health == Health::Healthy
                && after.is_none_or(|want| s.replayed.is_some_and(|have| have >= want))
        })
    }

    /// Runs the read `op` on a replica chosen by `ReplicaSet::pick`, or on the
    /// primary when none fits.
    ///
    /// Runs once per database read. `op` gets a connection (see
    /// [`Session::run`]), hands it back with its result, and may be called twice:
    /// if it fails on a replica with a connection-level error (or a query
    /// cancelled by recovery), the replica is marked down (not for a
    /// cancellation) and `op` runs again on the primary. Returns `op`'s result;
    /// other errors are returned as they are.
    pub async fn read<T, F, Fut>(&self, after: Option<Lsn>, op: F) -> Result<T, DbError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, sqlx::Error>)>,
    {
        if let Some(replica) = self.pick(after) {
            let attempt =
                tokio::time::timeout(self.read_timeout, self.session.run(&replica.pool, &op));
            let result = attempt.await.unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "replica read timed out",
                )))
            });
            match result {
                Ok(value) => {
                    replica.reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) => match replica_failure(&e, &replica.pool) {
                    Some(kind) => {
                        self.fallbacks.fetch_add(1, Ordering::Relaxed);
                        // A saturated pool (Busy) is not a dead replica.
                        if kind == Failure::Unreachable {
                            let mut state = *replica.state();
                            state.health = Health::Down;
                            replica.set(state, "a read on it failed; retried on the primary");
                        } else {
                            tracing::debug!(
                                replica = replica.name,
                                "read cancelled by recovery on the replica; retrying on the primary"
                            );
                        }
                    }
                    None => return Err(e.into()),
                },
            }
        }
        self.primary_reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.session.run(&self.primary, &op).await?)
    }

    /// Checks every replica once (concurrently) and updates its state.
    ///
    /// Runs at start-up and then every `check_interval` from the task of
    /// [`ReplicaSet::spawn_checks`]. Reads the primary's WAL position first, so a
    /// replica that has replayed it counts as caught up. Never fails: an
    /// unreachable server is a state, not an error.
    pub async fn check_all(&self) {
        if self.replicas.is_empty() {
            return;
        }
        let position = self.session.run(&self.primary, |mut conn| async move {
            let row = sqlx::query_as::<_, (String, String)>(
                "SELECT pg_current_wal_lsn()::text, current_database()::text",
            )
            .persistent(conn.persistent())
            .fetch_one(&mut *conn)
            .await;
            (conn, row)
        });
        let primary_position = match tokio::time::timeout(CHECK_TIMEOUT, position).await {
            Ok(Ok((text, database))) => {
                *crate::sync::lock(&self.primary_database) = Some(database);
                Lsn::parse(&text)
            }
            _ => None,
        };
        let primary_position = {
            let mut last = crate::sync::lock(&self.last_primary_position);
            if primary_position.is_some() {
                *last = primary_position;
            }
            *last
        };
        let unknown = matches!(*self.lock_system_id(), SystemId::Unknown);
        if unknown {
            // Stays Unknown (asked again next check) only if the primary failed.
            let id = system_identifier(self.session, &self.primary).await;
            *self.lock_system_id() = id;
        }
        let checks = self
            .replicas
            .iter()
            .map(|replica| self.check(replica, primary_position));
        for (replica, (state, why)) in self
            .replicas
            .iter()
            .zip(futures_util::future::join_all(checks).await)
        {
            replica.set(state, &why);
        }
    }

    fn lock_system_id(&self) -> MutexGuard<'_, SystemId> {
        crate::sync::lock(&self.primary_system_id)
    }

    /// The primary's system identifier, if it has been read.
    fn system_id(&self) -> Option<String> {
        match &*self.lock_system_id() {
            SystemId::Known(id) => Some(id.clone()),
            SystemId::Unknown | SystemId::NotGranted => None,
        }
    }

    /// One replica's check: its new state and, when not healthy, why.
    ///
    /// `primary` is the primary's WAL position now, or at the last check that
    /// reached it.
    async fn check(&self, replica: &Replica, primary: Option<Lsn>) -> (ReplicaState, String) {
        let query = self
            .session
            .run(&replica.check_pool, |mut conn| async move {
                let row = sqlx::query(
                    "SELECT pg_is_in_recovery() AS in_recovery, \
                        pg_last_wal_replay_lsn()::text AS replayed, \
                        to_regclass('revenue_events') IS NOT NULL AS has_schema, \
                        current_database()::text AS database, \
                        CAST(EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp())) \
                             AS DOUBLE PRECISION) AS behind_secs",
                )
                .persistent(conn.persistent())
                .fetch_one(&mut *conn)
                .await;
                (conn, row)
            });
        let down = |why: String| {
            (
                ReplicaState {
                    health: Health::Down,
                    replayed: None,
                    lag: None,
                },
                why,
            )
        };
        let row = match tokio::time::timeout(CHECK_TIMEOUT, query).await {
            Err(_) => return down(format!("health check took longer than {CHECK_TIMEOUT:?}")),
            Ok(Err(sqlx::Error::PoolTimedOut)) => {
                // sqlx retries a refused connection until the acquire timeout.
                return down(format!(
                    "unreachable: no connection within {CHECK_TIMEOUT:?} (down, refusing \
                     connections, or too slow)"
                ));
            }
            Ok(Err(e)) => return down(format!("health check failed: {e}")),
            Ok(Ok(row)) => row,
        };
        let read = || -> Result<_, sqlx::Error> {
            Ok((
                row.try_get::<bool, _>("in_recovery")?,
                row.try_get::<Option<String>, _>("replayed")?,
                row.try_get::<bool, _>("has_schema")?,
                row.try_get::<String, _>("database")?,
                row.try_get::<Option<f64>, _>("behind_secs")?,
            ))
        };
        let (in_recovery, replayed, has_schema, database, behind_secs) = match read() {
            Ok(values) => values,
            Err(e) => return down(format!("unexpected health check answer: {e}")),
        };
        if !in_recovery {
            return (
                ReplicaState {
                    health: Health::NotStandby,
                    replayed: None,
                    lag: None,
                },
                "the server is not in recovery (not a standby, or promoted)".into(),
            );
        }
        if !has_schema {
            return down("the database has no revenue_events table (wrong database?)".into());
        }
        let primary_database = crate::sync::lock(&self.primary_database).clone();
        if primary_database.is_some_and(|primary| primary != database) {
            return down(format!(
                "the replica URL names database {database:?}, not the primary's (wrong database)"
            ));
        }
        if let Some(primary_id) = self.system_id() {
            let id = system_identifier(self.session, &replica.check_pool).await;
            if matches!(id, SystemId::Known(id) if id != primary_id) {
                return (
                    ReplicaState {
                        health: Health::OtherCluster,
                        replayed: None,
                        lag: None,
                    },
                    "a standby of another cluster (system identifiers differ)".into(),
                );
            }
        }
        let replayed = replayed.as_deref().and_then(Lsn::parse);
        let caught_up =
            matches!((replayed, primary), (Some(have), Some(primary)) if have >= primary);
        let lag = if caught_up {
            Some(Duration::ZERO)
        } else {
            behind_secs
                .filter(|s| s.is_finite())
                .map(|s| Duration::from_secs_f64(s.max(0.0)))
        };
        let (health, why) = match lag {
            Some(lag) if lag <= self.max_lag => (Health::Healthy, String::new()),
            Some(lag) => (
                Health::Lagging,
                format!(
                    "replication lag {lag:.1?} exceeds max_replica_lag {:?}",
                    self.max_lag
                ),
            ),
            None => (
                Health::Lagging,
                "behind the primary and no transaction replayed yet".into(),
            ),
        };
        (
            ReplicaState {
                health,
                replayed,
                lag,
            },
            why,
        )
    }

    /// Starts the background task that runs [`ReplicaSet::check_all`] every
    /// `interval`. It ends by itself once the primary's pool is closed (shutdown)
    /// or the last handle is dropped. Does nothing without replicas.
    pub fn spawn_checks(self: &Arc<Self>, interval: Duration) {
        if self.replicas.is_empty() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(set) = weak.upgrade() else { break };
                if set.primary.is_closed() {
                    break;
                }
                set.check_all().await;
            }
        });
    }

    /// The read-splitting metrics in the Prometheus text format: reads per
    /// target, reads retried on the primary, and each replica's state and lag.
    ///
    /// Runs once per `GET /metrics`; never touches a database.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::from(
            "# HELP engine_db_reads_total Database reads by the server that answered them.\n\
             # TYPE engine_db_reads_total counter\n",
        );
        let _ = writeln!(
            out,
            "engine_db_reads_total{{target=\"primary\"}} {}",
            self.primary_reads.load(Ordering::Relaxed)
        );
        for r in &self.replicas {
            let _ = writeln!(
                out,
                "engine_db_reads_total{{target=\"{}\"}} {}",
                r.name,
                r.reads.load(Ordering::Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP engine_db_replica_fallbacks_total Reads that failed on a replica and were retried on the primary.\n\
             # TYPE engine_db_replica_fallbacks_total counter\n\
             engine_db_replica_fallbacks_total {}\n",
            self.fallbacks.load(Ordering::Relaxed)
        );
        if self.replicas.is_empty() {
            return out;
        }
        out.push_str(
            "# HELP engine_db_replica_state The state of each replica as of its last check (1 for the current state).\n\
             # TYPE engine_db_replica_state gauge\n",
        );
        let states: Vec<ReplicaState> = self.replicas.iter().map(|r| *r.state()).collect();
        for (r, s) in self.replicas.iter().zip(&states) {
            for health in Health::ALL {
                let _ = writeln!(
                    out,
                    "engine_db_replica_state{{replica=\"{}\",state=\"{}\"}} {}",
                    r.name,
                    health.as_str(),
                    u8::from(s.health == health)
                );
            }
        }
        out.push_str(
            "# HELP engine_db_replica_lag_seconds Replication lag of each replica at its last check (absent when unknown).\n\
             # TYPE engine_db_replica_lag_seconds gauge\n",
        );
        for (r, s) in self.replicas.iter().zip(&states) {
            if let Some(lag) = s.lag {
                let _ = writeln!(
                    out,
                    "engine_db_replica_lag_seconds{{replica=\"{}\"}} {}",
                    r.name,
                    lag.as_secs_f64()
                );
            }
        }
        out
    }

    /// Closes every replica pool (the primary's is closed by its owner).
    pub async fn close(&self) {
        for r in &self.replicas {
            r.pool.close().await;
            r.check_pool.close().await;
        }
    }
}

/// Why a read failed on a replica, when retrying it on the primary makes sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The replica is unreachable, shutting down or refusing connections, or
    /// not what it should be (no such table, no permission: a wrong database).
    Unreachable,
    /// Its pool had no free connection in time, or the query hit a statement
    /// timeout: retried on the primary, the replica stays in use.
    Busy,
    /// The query was cancelled because of a conflict with WAL replay.
    RecoveryConflict,
}

/// Classifies a replica read error (`pool` is the replica's, to tell a busy pool
/// from a dead server); `None` for errors the primary would give too (bad data,
/// bugs), which are returned to the caller.
fn replica_failure(e: &sqlx::Error, pool: &PgPool) -> Option<Failure> {
    match e {
        // No connection came in time. With none open at all, the replica
        // refuses new ones (it went away); otherwise they are all busy.
        sqlx::Error::PoolTimedOut if pool.size() == 0 => Some(Failure::Unreachable),
        sqlx::Error::PoolTimedOut => Some(Failure::Busy),
        // A statement timeout (or cancellation) on the replica: it is alive.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => Some(Failure::Busy),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(Failure::Unreachable),
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            if code == "40001" {
                Some(Failure::RecoveryConflict)
            } else if code.starts_with("08")
                || code.starts_with("57P")
                || ["53300", "42P01", "42501", "3D000"].contains(&code)
            {
                // Connection exceptions, operator intervention (shutdown, "the
                // database system is starting up"), too many connections, and a
                // replica that is the wrong database (no such table or database,
                // no permission).
                Some(Failure::Unreachable)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// What is known of a server's `pg_control_system()` system identifier, which
/// streaming replicas share with their primary.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SystemId {
    /// Not read yet, or the server could not be asked.
    Unknown,
    /// The identifier.
    Known(String),
    /// The role may not call `pg_control_system()` (asking again is useless).
    NotGranted,
}

/// Reads the server's system identifier (see [`SystemId`]), bounded by
/// [`CHECK_TIMEOUT`].
async fn system_identifier(session: Session, pool: &PgPool) -> SystemId {
    let query = session.run(pool, |mut conn| async move {
        let id = sqlx::query_scalar::<_, String>(
            "SELECT system_identifier::text FROM pg_control_system()",
        )
        .persistent(conn.persistent())
        .fetch_one(&mut *conn)
        .await;
        (conn, id)
    });
    match tokio::time::timeout(CHECK_TIMEOUT, query).await {
        Ok(Ok(id)) => SystemId::Known(id),
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("42501") => {
            SystemId::NotGranted
        }
        _ => SystemId::Unknown,
    }
}
