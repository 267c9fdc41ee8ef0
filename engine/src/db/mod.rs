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
//! Writes go through a backend's writer pool and reads through its reader pool
//! (today the same pool), so read replicas can be added without touching callers.

pub mod postgres;
pub mod sqlite;

use crate::model::{Cursor, Event, EventFilter, EventPage, SummaryQuery, SummaryRow};

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

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                DbError::Unavailable(e)
            }
            _ => DbError::Other(e),
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
        if url.starts_with("sqlite:") {
            Ok(Db::Sqlite(
                sqlite::SqliteDb::connect(url, max_connections).await?,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Db::Postgres(
                postgres::PgDb::connect(url, max_connections).await?,
            ))
        } else {
            anyhow::bail!("unsupported database URL (expected sqlite:... or postgres://...)")
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Runs `SELECT 1` on the read path. Used by `/readyz`.
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

    /// Fetches one event by id; `None` if there is none.
    pub async fn get_event(&self, id: &str) -> Result<Option<Event>, DbError> {
        match self {
            Db::Sqlite(db) => db.get_event(id).await,
            Db::Postgres(db) => db.get_event(id).await,
        }
    }

    /// Returns one page of events matching `filter`, newest first, with the cursor
    /// of the next page if there is one.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<EventPage, DbError> {
        // Fetch one extra row to learn whether another page exists.
        let fetch = i64::from(filter.limit) + 1;
        let mut data = match self {
            Db::Sqlite(db) => db.list_events(filter, fetch).await?,
            Db::Postgres(db) => db.list_events(filter, fetch).await?,
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

    /// Computes gross, refunds, net and count per bucket and currency, ordered by
    /// bucket then currency. Buckets without events are omitted.
    ///
    /// The sums are exact and cannot overflow, whatever the amounts and however many
    /// events a bucket holds: they are computed without a 64-bit intermediate (see
    /// each backend) and returned as `i128`.
    pub async fn summary(&self, query: &SummaryQuery) -> Result<Vec<SummaryRow>, DbError> {
        match self {
            Db::Sqlite(db) => db.summary(query).await,
            Db::Postgres(db) => db.summary(query).await,
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
