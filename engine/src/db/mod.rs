//! Database access: opening the pool for SQLite or Postgres, running the embedded
//! migrations, and the queries the API needs.
//!
//! [`Db`] is an enum with one variant per backend; each backend module holds its own
//! SQL (the dialects differ in placeholders, timestamp types and bucketing). Both
//! store `occurred_at` in UTC with microsecond precision: Postgres as `TIMESTAMPTZ`,
//! SQLite as fixed-width TEXT `YYYY-MM-DDTHH:MM:SS.ffffffZ`, which sorts
//! chronologically. Summary buckets are computed in SQL from that UTC value, so both
//! backends agree.
//!
//! Writes go to the primary. With Postgres, reads go to healthy read replicas
//! when configured (see [`replicas`]); every read takes an `after` position (a
//! [`Lsn`]) and is served only by a server that has replayed it, which gives
//! read-your-writes: [`Db::write_position`] after a write is the position to pass.
//! SQLite has no replicas and ignores positions. Reads that must see a write just
//! made elsewhere (the winner of an idempotency race) use the primary.
//!
//! Idempotent inserts ([`Db::insert_event_idempotent`]) claim the key in the table
//! `idempotency_keys` with `INSERT ... ON CONFLICT DO UPDATE ... WHERE` (only an
//! expired claim is taken over) and store the event
//! in the same transaction; the primary key on the key, not a prior lookup, decides
//! which of several concurrent requests wins.

pub mod lsn;
pub mod postgres;
pub mod replicas;
pub mod session;
pub mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};
pub use lsn::Lsn;

use crate::idempotency::IdempotencyKey;
use crate::model::{
    Cursor, CustomerTotals, Event, EventFilter, EventPage, SummaryQuery, SummaryRow,
};

/// How many times [`Db::insert_event_idempotent`] tries to either claim a key or
/// read its winner before giving up (a second try is needed only if a winning
/// record was deleted in between; records are never deleted by the engine).
const IDEMPOTENT_ATTEMPTS: usize = 3;

/// Most rows in one multi-row `INSERT` of [`Db::insert_events`]: 500 rows of 9
/// columns are 4 500 bound parameters, within both SQLite's (32 766) and
/// Postgres' (65 535) limits.
pub const BATCH_ROWS: usize = 500;

/// Most expired idempotency keys one `DELETE` of [`Db::delete_expired_keys`]
/// removes.
pub const EXPIRY_BATCH: i64 = 5_000;

/// What [`Db::insert_event_idempotent`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotentInsert {
    /// The key was new: the event was stored, together with the key.
    Inserted(Event),
    /// The key was already used for the same request: nothing was stored; this is
    /// the event stored by that first request.
    Replayed(Event),
    /// The key was already used for a different request: nothing was stored.
    KeyReused,
}

/// An idempotency record as read back: the fingerprint of the request that
/// claimed the key and the event it stored.
#[derive(Debug, Clone, PartialEq)]
struct StoredRequest {
    request_hash: String,
    event: Event,
}

/// An open database: SQLite or Postgres.
///
/// Created once at start-up by [`Db::connect`] and cloned into the request state
/// (cloning shares the pools).
#[derive(Clone, Debug)]
pub enum Db {
    /// A SQLite file (or in-memory database).
    Sqlite(sqlite::SqliteDb),
    /// A Postgres server.
    Postgres(postgres::PgDb),
}

/// Sizing and timeouts of a connection pool, the same for both backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Maximum number of connections (at least 1 is used).
    pub max_connections: u32,
    /// How long a connection may sit unused in the pool before it is closed
    /// (an in-memory SQLite connection is never closed).
    pub idle_timeout: Duration,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// Postgres is reached through PgBouncer in transaction pooling mode: every
    /// query in its own transaction with unnamed statements (see
    /// [`session::Session`]), migrations over a direct URL (see
    /// [`postgres::PgDb::connect`]). Ignored by SQLite.
    pub pgbouncer: bool,
}

impl PoolSettings {
    /// `max_connections` with the default timeouts: idle 10 minutes (sqlx's
    /// default), acquire 5 s; direct connections (no PgBouncer).
    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            idle_timeout: Duration::from_secs(600),
            acquire_timeout: Duration::from_secs(5),
            pgbouncer: false,
        }
    }
}

/// The Postgres servers besides the primary's pooled URL: the read replicas, how
/// they are judged, and where migrations run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// `postgres://` URLs of streaming replicas of the primary; empty for none.
    pub urls: Vec<String>,
    /// A replica further behind than this is not used for reads.
    pub max_lag: Duration,
    /// How often each replica's health and lag are checked.
    pub check_interval: Duration,
    /// The longest one read may take on a replica (waiting for a connection
    /// included) before it is run on the primary instead; keep it well inside
    /// the request timeout so the retry fits.
    pub read_timeout: Duration,
    /// A direct (or session-mode) URL of the primary for the migrations, when
    /// the primary's URL goes through a transaction-pooling PgBouncer.
    pub migrations_url: Option<String>,
}

impl Default for ReplicaSettings {
    /// No replicas; a lag limit of 2 s, a check every second and replica reads
    /// bounded to 10 s; migrations over the primary's URL.
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            max_lag: Duration::from_secs(2),
            check_interval: Duration::from_secs(1),
            read_timeout: Duration::from_secs(10),
            migrations_url: None,
        }
    }
}

/// Why a query failed, as far as the HTTP layer cares.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time, or the connection broke.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// Anything else (a bug or a corrupted row).
    #[error("database error: {0}")]
    Other(sqlx::Error),
}

impl DbError {
    /// Whether a unique constraint refused the statement (a duplicate id).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Unavailable(sqlx::Error::Database(db))
            | DbError::Other(sqlx::Error::Database(db)) => db.is_unique_violation(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
            // Connection exceptions, the server shutting down or starting up
            // (e.g. a restart), too many connections, a statement timeout or
            // cancellation, a read-only server (a demoted primary), a
            // serialization failure or deadlock: retryable, so 503.
            // SQLite: the file stayed locked past busy_timeout (SQLITE_BUSY or
            // SQLITE_LOCKED, in any extended form).
            sqlx::Error::Database(db)
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
            {
                db.code()
                    .and_then(|code| code.parse::<u32>().ok())
                    .is_some_and(|code| matches!(code & 0xff, 5 | 6))
            }
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || ["53300", "57014", "25006", "40001", "40P01"].contains(&code.as_ref())
            }),
            _ => false,
        };
        if unavailable {
            DbError::Unavailable(e)
        } else {
            DbError::Other(e)
        }
    }
}

impl Db {
    /// Opens the database named by `url` and brings its schema up to date.
    ///
    /// `sqlite:` URLs open (creating if needed, with the parent directory) a SQLite
    /// file; `postgres://` or `postgresql://` URLs connect to Postgres. Runs once at
    /// start-up; returns an error for an unknown scheme, an unreachable server or a
    /// failed migration.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Self::connect_with(url, PoolSettings::new(max_connections)).await
    }

    /// Like [`Db::connect`], with the pool's size and timeouts given by `pool`.
    ///
    /// Runs once at start-up (`engine seed`, tests); returns the open database or
    /// an error for an unknown scheme, an unreachable server or a failed migration.
    pub async fn connect_with(url: &str, pool: PoolSettings) -> anyhow::Result<Self> {
        Self::open(url, pool, &ReplicaSettings::default()).await
    }

    /// Like [`Db::connect_with`], with read replicas (Postgres only).
    ///
    /// Runs once at start-up ([`crate::serve`]). Replica pools connect lazily and
    /// are checked once before this returns: an unreachable replica is not an
    /// error (reads go elsewhere until it is healthy). Returns an error for an
    /// unknown scheme, replicas of a SQLite primary, an unreachable primary or a
    /// failed migration.
    pub async fn open(
        url: &str,
        pool: PoolSettings,
        replicas: &ReplicaSettings,
    ) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            if !replicas.urls.is_empty() {
                anyhow::bail!("database.replicas: read replicas need a postgres:// primary");
            }
            Ok(Db::Sqlite(sqlite::SqliteDb::connect(url, pool).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Db::Postgres(
                postgres::PgDb::connect(url, pool, replicas).await?,
            ))
        } else {
            anyhow::bail!("unsupported database URL (expected sqlite:... or postgres://...)")
        }
    }

    /// The primary's write position now ([`Lsn`]), after a write has committed:
    /// the consistency token of read-your-writes. `None` for SQLite.
    ///
    /// Runs once per stored event (one `SELECT` on the primary). Errors if the
    /// primary cannot be asked.
    pub async fn write_position(&self) -> Result<Option<Lsn>, DbError> {
        match self {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(db) => db.write_position().await.map(Some),
        }
    }

    /// The read-splitting metrics (Prometheus text; see
    /// [`replicas::ReplicaSet::render_metrics`]); empty for SQLite.
    ///
    /// Runs once per `GET /metrics`; never touches a database.
    pub fn render_metrics(&self) -> String {
        match self {
            Db::Sqlite(_) => String::new(),
            Db::Postgres(db) => db.replica_set().render_metrics(),
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Checks that the primary answers and takes writes (Postgres: not read-only).
    /// Used by `/readyz`; an error means not ready.
    pub async fn ping(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(db) => db.ping().await,
            Db::Postgres(db) => db.ping().await,
        }
    }

    /// Stores a new event (id and `created_at` already assigned) and returns it.
    pub async fn insert_event(&self, event: Event) -> Result<Event, DbError> {
        match self {
            Db::Sqlite(db) => db.insert_event(&event).await?,
            Db::Postgres(db) => db.insert_event(&event).await?,
        }
        Ok(event)
    }

    /// Stores a new event under an idempotency key, exactly once per key.
    ///
    /// Runs once per `POST /events` with an `Idempotency-Key`. In one transaction it
    /// inserts the key row (`request_hash`, the event id), or takes over a row
    /// claimed before `expired_before` (an expired key), and, if that wrote a
    /// row, the event. If the key was taken (by an
    /// earlier request, or a concurrent one that committed first: the insert waits
    /// for it), the transaction is rolled back and the winner's record is read from
    /// the writer pool: [`IdempotentInsert::Replayed`] with the stored event when
    /// `request_hash` matches, [`IdempotentInsert::KeyReused`] otherwise.
    pub async fn insert_event_idempotent(
        &self,
        event: Event,
        key: &IdempotencyKey,
        request_hash: &str,
        expired_before: DateTime<Utc>,
    ) -> Result<IdempotentInsert, DbError> {
        for _ in 0..IDEMPOTENT_ATTEMPTS {
            let (k, h) = (key.as_str(), request_hash);
            let inserted = match self {
                Db::Sqlite(db) => {
                    db.insert_event_with_key(&event, k, h, expired_before)
                        .await?
                }
                Db::Postgres(db) => {
                    db.insert_event_with_key(&event, k, h, expired_before)
                        .await?
                }
            };
            if inserted {
                return Ok(IdempotentInsert::Inserted(event));
            }
            let stored = match self {
                Db::Sqlite(db) => db.stored_request(key.as_str()).await?,
                Db::Postgres(db) => db.stored_request(key.as_str()).await?,
            };
            if let Some(stored) = stored {
                return Ok(if stored.request_hash == request_hash {
                    IdempotentInsert::Replayed(stored.event)
                } else {
                    IdempotentInsert::KeyReused
                });
            }
            tracing::warn!("idempotency record vanished after a conflict; retrying");
        }
        Err(DbError::Other(sqlx::Error::RowNotFound))
    }

    /// Deletes idempotency keys claimed before `before` (expired), in batches of
    /// [`EXPIRY_BATCH`] rows so no statement holds locks for long; returns how many
    /// were deleted.
    ///
    /// Runs from the expiry sweep of [`crate::serve`]. Errors if the database
    /// fails (the sweep logs it and tries again later).
    pub async fn delete_expired_keys(&self, before: DateTime<Utc>) -> Result<u64, DbError> {
        let mut total = 0;
        loop {
            let deleted = match self {
                Db::Sqlite(db) => db.delete_expired_keys(before, EXPIRY_BATCH).await?,
                Db::Postgres(db) => db.delete_expired_keys(before, EXPIRY_BATCH).await?,
            };
            total += deleted;
            if deleted < EXPIRY_BATCH.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    /// Stores many new events (ids and `created_at` already assigned) in one
    /// transaction, as multi-row `INSERT`s of at most [`BATCH_ROWS`] rows.
    ///
    /// Used by `engine seed`, once per batch. The schema's constraints apply as for
    /// single inserts; on any error (e.g. a duplicate id) nothing of the batch is
    /// stored. Returns `Ok(())` once the transaction is committed.
    pub async fn insert_events(&self, events: &[Event]) -> Result<(), DbError> {
        match self {
            Db::Sqlite(db) => db.insert_events(events).await,
            Db::Postgres(db) => db.insert_events(events).await,
        }
    }

    /// Fetches one event by id, from a server that has replayed `after`; `None`
    /// if there is none.
    pub async fn get_event(&self, id: &str, after: Option<Lsn>) -> Result<Option<Event>, DbError> {
        match self {
            Db::Sqlite(db) => db.get_event(id).await,
            Db::Postgres(db) => db.get_event(id, after).await,
        }
    }

    /// Returns one page of events matching `filter`, newest first, with the cursor
    /// of the next page if there is one, from a server that has replayed `after`.
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<Lsn>,
    ) -> Result<EventPage, DbError> {
        // Fetch one extra row to learn whether another page exists.
        let fetch = i64::from(filter.limit) + 1;
        let mut data = match self {
            Db::Sqlite(db) => db.list_events(filter, fetch).await?,
            Db::Postgres(db) => db.list_events(filter, fetch, after).await?,
        };
        let limit = usize::try_from(filter.limit).unwrap_or(usize::MAX);
        let next_cursor = if data.len() > limit {
            data.truncate(limit);
            data.last().map(|e| Cursor::after(e).encode())
        } else {
            None
        };
        Ok(EventPage { data, next_cursor })
    }

    /// Computes gross, refunds, net and count per bucket and currency (and product,
    /// with `group_by=product`), ordered by bucket, currency, product. Buckets
    /// without events are omitted.
    ///
    /// The sums are exact and cannot overflow, whatever the amounts and however many
    /// events a bucket holds: they are computed without a 64-bit intermediate (see
    /// each backend) and returned as `i128`. Read from a server that has
    /// replayed `after`.
    pub async fn summary(
        &self,
        query: &SummaryQuery,
        after: Option<Lsn>,
    ) -> Result<Vec<SummaryRow>, DbError> {
        match self {
            Db::Sqlite(db) => db.summary(query).await,
            Db::Postgres(db) => db.summary(query, after).await,
        }
    }

    /// Lifetime totals of one customer, one entry per currency (ordered by
    /// currency): gross, refunds, lifetime value, count, first and last
    /// `occurred_at`. Runs once per `GET /customers/{id}`; an empty list when the
    /// customer has no events.
    ///
    /// Reads only that customer's rows through the `(customer_id, occurred_at, id)`
    /// index; the sums are exact `i128`, as in [`Db::summary`]. Read from a
    /// server that has replayed `after`.
    pub async fn customer_totals(
        &self,
        customer_id: &str,
        after: Option<Lsn>,
    ) -> Result<Vec<CustomerTotals>, DbError> {
        match self {
            Db::Sqlite(db) => db.customer_totals(customer_id).await,
            Db::Postgres(db) => db.customer_totals(customer_id, after).await,
        }
    }

    /// Closes all pools, waiting for checked-out connections. Called at shutdown.
    pub async fn close(&self) {
        match self {
            Db::Sqlite(db) => db.close().await,
            Db::Postgres(db) => db.close().await,
        }
    }
}

/// Parses a stored metadata JSON text; used by both backends when reading rows.
fn parse_metadata(text: Option<String>) -> Result<Option<serde_json::Value>, sqlx::Error> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

/// Parses a stored kind; used by both backends when reading rows.
fn parse_kind(text: &str) -> Result<crate::model::Kind, sqlx::Error> {
    crate::model::Kind::parse(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown kind {text:?} in database").into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::idempotency::{request_hash, IdempotencyKey};
    use crate::model::{GroupBy, Interval, Kind, NewEvent};

    fn new_event(customer: &str, product: &str, kind: Kind, amount: i64, at: &str) -> NewEvent {
        NewEvent {
            customer_id: customer.into(),
            product: product.into(),
            kind,
            amount,
            currency: "USD",
            occurred_at: at.parse::<DateTime<Utc>>().unwrap(),
            metadata: None,
        }
    }

    /// An expiry cutoff no key is older than.
    fn never() -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH
    }

    async fn file_db(dir: &tempfile::TempDir) -> Db {
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("t.sqlite").display()
        );
        Db::connect(&url, 8).await.unwrap()
    }

    async fn count_events(db: &Db) -> usize {
        let filter = EventFilter {
            limit: 500,
            ..EventFilter::default()
        };
        db.list_events(&filter, None).await.unwrap().data.len()
    }

    #[tokio::test]
    async fn idempotent_insert_stores_once_and_detects_reuse() {
        let db = Db::connect("sqlite::memory:", 1).await.unwrap();
        let key = IdempotencyKey::parse(b"key-1").unwrap();
        let new = new_event("c", "p", Kind::Charge, 100, "2026-01-07T12:00:00Z");
        let hash = request_hash(&new);

        let first = db
            .insert_event_idempotent(Event::from_new(new.clone()), &key, &hash, never())
            .await
            .unwrap();
        let IdempotentInsert::Inserted(stored) = first else {
            panic!("{first:?}");
        };
        // A retry carries a fresh id and created_at; the stored event comes back.
        let retry = db
            .insert_event_idempotent(Event::from_new(new.clone()), &key, &hash, never())
            .await
            .unwrap();
        assert_eq!(retry, IdempotentInsert::Replayed(stored.clone()));

        let other = new_event("c", "p", Kind::Charge, 101, "2026-01-07T12:00:00Z");
        let reused = db
            .insert_event_idempotent(
                Event::from_new(other.clone()),
                &key,
                &request_hash(&other),
                never(),
            )
            .await
            .unwrap();
        assert_eq!(reused, IdempotentInsert::KeyReused);
        assert_eq!(count_events(&db).await, 1);

        // Another key is another event; plain inserts are unaffected.
        let key2 = IdempotencyKey::parse(b"key-2").unwrap();
        let second = db
            .insert_event_idempotent(Event::from_new(new.clone()), &key2, &hash, never())
            .await
            .unwrap();
        assert!(matches!(second, IdempotentInsert::Inserted(e) if e.id != stored.id));
        db.insert_event(Event::from_new(new)).await.unwrap();
        assert_eq!(count_events(&db).await, 3);
    }

    #[tokio::test]
    async fn concurrent_claims_of_one_key_store_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir).await;
        let new = new_event("c", "p", Kind::Charge, 100, "2026-01-07T12:00:00Z");
        let hash = request_hash(&new);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (db, new, hash) = (db.clone(), new.clone(), hash.clone());
                tokio::spawn(async move {
                    let key = IdempotencyKey::parse(b"same").unwrap();
                    db.insert_event_idempotent(Event::from_new(new), &key, &hash, never())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut inserted = Vec::new();
        let mut replayed = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                IdempotentInsert::Inserted(e) => inserted.push(e),
                IdempotentInsert::Replayed(e) => replayed.push(e),
                IdempotentInsert::KeyReused => panic!("same request reported as reuse"),
            }
        }
        assert_eq!(inserted.len(), 1);
        assert_eq!(replayed.len(), 19);
        assert!(replayed.iter().all(|e| e == &inserted[0]));
        assert_eq!(count_events(&db).await, 1);
    }

    #[tokio::test]
    async fn customer_totals_are_exact_per_currency() {
        let db = Db::connect("sqlite::memory:", 1).await.unwrap();
        assert!(db.customer_totals("nobody", None).await.unwrap().is_empty());
        let max = crate::model::MAX_AMOUNT;
        for (kind, amount, currency, at) in [
            (Kind::Charge, max, "USD", "2026-01-02T00:00:00Z"),
            (Kind::Charge, max, "USD", "2026-01-01T00:00:00.5Z"),
            (Kind::Refund, 7, "USD", "2026-03-01T00:00:00Z"),
            (Kind::Refund, 50, "EUR", "2026-02-01T00:00:00Z"),
            (Kind::Charge, 20, "EUR", "2026-02-02T00:00:00Z"),
        ] {
            let mut new = new_event("cus", "p", kind, amount, at);
            new.currency = currency;
            db.insert_event(Event::from_new(new)).await.unwrap();
        }
        db.insert_event(Event::from_new(new_event(
            "other",
            "p",
            Kind::Charge,
            1,
            "2025-01-01T00:00:00Z",
        )))
        .await
        .unwrap();
        let totals = db.customer_totals("cus", None).await.unwrap();
        let ts = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            totals,
            vec![
                CustomerTotals {
                    currency: "EUR".into(),
                    lifetime_value: -30,
                    gross: 20,
                    refunds: 50,
                    count: 2,
                    first_occurred_at: ts("2026-02-01T00:00:00Z"),
                    last_occurred_at: ts("2026-02-02T00:00:00Z"),
                },
                CustomerTotals {
                    currency: "USD".into(),
                    lifetime_value: 2 * i128::from(max) - 7,
                    gross: 2 * i128::from(max),
                    refunds: 7,
                    count: 3,
                    first_occurred_at: ts("2026-01-01T00:00:00.5Z"),
                    last_occurred_at: ts("2026-03-01T00:00:00Z"),
                },
            ]
        );
    }

    #[tokio::test]
    async fn summary_groups_by_product_on_request() {
        let db = Db::connect("sqlite::memory:", 1).await.unwrap();
        for (product, kind, amount) in [
            ("pro", Kind::Charge, 10),
            ("basic", Kind::Charge, 5),
            ("pro", Kind::Refund, 3),
        ] {
            let new = new_event("c", product, kind, amount, "2026-01-07T12:00:00Z");
            db.insert_event(Event::from_new(new)).await.unwrap();
        }
        let mut query = SummaryQuery {
            from: None,
            to: None,
            interval: Interval::Day,
            currency: None,
            group_by: None,
        };
        let rows = db.summary(&query, None).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].product.clone(), rows[0].net), (None, 12));
        query.group_by = Some(GroupBy::Product);
        let rows: Vec<_> = db
            .summary(&query, None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.product, r.gross, r.refunds, r.net, r.count))
            .collect();
        assert_eq!(
            rows,
            vec![
                (Some("basic".to_owned()), 5, 0, 5, 1),
                (Some("pro".to_owned()), 10, 3, 7, 2),
            ]
        );
    }
}
