//! SQLite backend: pool options, migrations (`migrations/sqlite`) and SQL.
//!
//! Timestamps are TEXT in the fixed-width form `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so
//! string order is time order and `substr` yields day and month buckets.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{parse_kind, parse_metadata, DbError, StoredRequest};
use crate::model::{
    CustomerTotals, Event, EventFilter, GroupBy, Interval, SummaryQuery, SummaryRow,
};

const EVENT_COLUMNS: &str =
    "id, customer_id, product, kind, amount, currency, occurred_at, created_at, metadata";

/// SQLite pools. SQLite has no replicas, so reads and writes share one pool.
#[derive(Clone, Debug)]
pub struct SqliteDb {
    pool: SqlitePool,
}

/// Formats a timestamp the way SQLite stores it.
pub fn to_text(ts: &DateTime<Utc>) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn from_text(s: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl SqliteDb {
    /// Opens (creating if missing, with its directory) the SQLite database at `url`
    /// in WAL mode and runs the migrations. Runs once at start-up.
    ///
    /// The pool's size and timeouts come from `pool`.
    pub async fn connect(url: &str, pool: super::PoolSettings) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .context("invalid SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);

        let filename = options.get_filename().to_path_buf();
        let in_memory = filename.as_os_str() == ":memory:" || url.contains("mode=memory");
        if !in_memory {
            if let Some(dir) = filename.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create directory {}", dir.display()))?;
            }
        }

        // Every connection to `:memory:` is a separate database: keep exactly one.
        let pool_options = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new()
                .max_connections(pool.max_connections.max(1))
                .idle_timeout(pool.idle_timeout)
        };
        let pool = pool_options
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open SQLite database {}", filename.display()))?;

        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .context("SQLite migrations failed")?;
        Ok(Self { pool })
    }

    /// Pool used for reads.
    fn reader(&self) -> &SqlitePool {
        &self.pool
    }

    /// Pool used for writes.
    fn writer(&self) -> &SqlitePool {
        &self.pool
    }

    pub(super) async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(self.reader()).await?;
        Ok(())
    }

    pub(super) async fn insert_event(&self, e: &Event) -> Result<(), DbError> {
        insert_event_query(e).execute(self.writer()).await?;
        Ok(())
    }

    /// Claims `key` and stores `e` in one transaction; `false` (nothing stored) if
    /// the key was already claimed. `BEGIN IMMEDIATE` takes the write lock first
    /// (waiting up to the busy timeout), so concurrent claims run one after the
    /// other and a loser sees the winner's committed row as the conflict.
    pub(super) async fn insert_event_with_key(
        &self,
        e: &Event,
        key: &str,
        request_hash: &str,
        expired_before: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        // Insert the key, or take over a claim made before `expired_before`.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (idempotency_key, request_hash, event_id, created_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (idempotency_key) DO UPDATE \
             SET request_hash = excluded.request_hash, event_id = excluded.event_id, \
                 created_at = excluded.created_at \
             WHERE idempotency_keys.created_at < ?",
        )
        .bind(key)
        .bind(request_hash)
        .bind(&e.id)
        .bind(to_text(&e.created_at))
        .bind(to_text(&expired_before))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_event_query(e).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes up to `limit` idempotency keys claimed before `before`; returns
    /// how many.
    pub(super) async fn delete_expired_keys(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, DbError> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM \
             idempotency_keys WHERE created_at < ? LIMIT ?)",
        )
        .bind(to_text(&before))
        .bind(limit)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// The record of `key` and the event it stored, read on the writer pool.
    pub(super) async fn stored_request(&self, key: &str) -> Result<Option<StoredRequest>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT k.request_hash, {} FROM idempotency_keys k \
             JOIN revenue_events e ON e.id = k.event_id WHERE k.idempotency_key = ?",
            prefixed_event_columns("e")
        ))
        .bind(key)
        .fetch_optional(self.writer())
        .await?;
        row.map(|r| {
            Ok(StoredRequest {
                request_hash: r.try_get("request_hash")?,
                event: event_from_row(&r)?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| DbError::from(e))
    }

    /// Stores `events` in one transaction, as multi-row `INSERT`s of at most
    /// [`super::BATCH_ROWS`] rows (9 parameters each, far below SQLite's limit of
    /// 32 766 bound parameters).
    pub(super) async fn insert_events(&self, events: &[Event]) -> Result<(), DbError> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        for chunk in events.chunks(super::BATCH_ROWS) {
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO revenue_events ({EVENT_COLUMNS}) "
            ));
            qb.push_values(chunk, |mut row, e| {
                row.push_bind(e.id.clone())
                    .push_bind(e.customer_id.clone())
                    .push_bind(e.product.clone())
                    .push_bind(e.kind.as_str())
                    .push_bind(e.amount)
                    .push_bind(e.currency.clone())
                    .push_bind(to_text(&e.occurred_at))
                    .push_bind(to_text(&e.created_at))
                    .push_bind(e.metadata.as_ref().map(|m| m.to_string()));
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn get_event(&self, id: &str) -> Result<Option<Event>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM revenue_events WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(|r| event_from_row(&r)).transpose()?)
    }

    pub(super) async fn list_events(
        &self,
        f: &EventFilter,
        fetch: i64,
    ) -> Result<Vec<Event>, DbError> {
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {EVENT_COLUMNS} FROM revenue_events WHERE 1 = 1"
        ));
        if let Some(v) = &f.customer_id {
            qb.push(" AND customer_id = ").push_bind(v.clone());
        }
        if let Some(v) = &f.product {
            qb.push(" AND product = ").push_bind(v.clone());
        }
        if let Some(v) = f.kind {
            qb.push(" AND kind = ").push_bind(v.as_str());
        }
        if let Some(v) = f.currency {
            qb.push(" AND currency = ").push_bind(v);
        }
        push_range(&mut qb, f.from.as_ref(), f.to.as_ref());
        if let Some(c) = &f.cursor {
            qb.push(" AND (occurred_at, id) < (")
                .push_bind(to_text(&c.occurred_at))
                .push(", ")
                .push_bind(c.id.clone())
                .push(")");
        }
        qb.push(" ORDER BY occurred_at DESC, id DESC LIMIT ")
            .push_bind(fetch);
        let rows = qb.build().fetch_all(self.reader()).await?;
        Ok(rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    pub(super) async fn summary(&self, q: &SummaryQuery) -> Result<Vec<SummaryRow>, DbError> {
        let bucket_len = match q.interval {
            Interval::Day => 10,  // YYYY-MM-DD
            Interval::Month => 7, // YYYY-MM
        };
        let by_product = q.group_by == Some(GroupBy::Product);
        let product = if by_product { "product, " } else { "" };
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "SELECT substr(occurred_at, 1, {bucket_len}) AS bucket, currency, {product}{} \
             COUNT(*) AS count FROM revenue_events WHERE 1 = 1",
            sum_columns()
        ));
        if let Some(v) = q.currency {
            qb.push(" AND currency = ").push_bind(v);
        }
        push_range(&mut qb, q.from.as_ref(), q.to.as_ref());
        if by_product {
            qb.push(" GROUP BY bucket, currency, product ORDER BY bucket, currency, product");
        } else {
            qb.push(" GROUP BY bucket, currency ORDER BY bucket, currency");
        }
        let rows = qb.build().fetch_all(self.reader()).await?;
        rows.iter()
            .map(|r| {
                let gross = exact_sum(r, "gross")?;
                let refunds = exact_sum(r, "refunds")?;
                Ok(SummaryRow {
                    bucket: r.try_get("bucket")?,
                    currency: r.try_get("currency")?,
                    product: if by_product {
                        Some(r.try_get("product")?)
                    } else {
                        None
                    },
                    gross,
                    refunds,
                    net: gross - refunds,
                    count: r.try_get("count")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(DbError::from)
    }

    pub(super) async fn customer_totals(
        &self,
        customer_id: &str,
    ) -> Result<Vec<CustomerTotals>, DbError> {
        let rows = sqlx::query(&customer_totals_sql())
            .bind(customer_id)
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|r| {
                let gross = exact_sum(r, "gross")?;
                let refunds = exact_sum(r, "refunds")?;
                Ok(CustomerTotals {
                    currency: r.try_get("currency")?,
                    lifetime_value: gross - refunds,
                    gross,
                    refunds,
                    count: r.try_get("count")?,
                    first_occurred_at: from_text(r.try_get("first_occurred_at")?)?,
                    last_occurred_at: from_text(r.try_get("last_occurred_at")?)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(DbError::from)
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// SQLite's `SUM` of integers is a 64-bit integer and fails on overflow, so each
/// amount is summed in three parts, each with its column suffix, SQL expression
/// and weight: `amount / 10^12` (at most 9 223 372, even for `i64::MAX`), then
/// `amount / 10^6 % 10^6` and `amount % 10^6` (each below 10^6). No part's sum can
/// overflow before a bucket holds 10^12 events; [`exact_sum`] recombines them in
/// `i128`. (Amounts are positive, so `/` and `%` need no sign care.)
const SUM_PARTS: [(&str, &str); 3] = [
    ("hi", "amount / 1000000000000"),
    ("mid", "amount / 1000000 % 1000000"),
    ("lo", "amount % 1000000"),
];

/// The select-list columns of the exact `gross` and `refunds` totals, in
/// [`SUM_PARTS`] (each followed by a comma and a space).
fn sum_columns() -> String {
    let mut sql = String::new();
    for (kind, name) in [("charge", "gross"), ("refund", "refunds")] {
        for (part, expr) in SUM_PARTS {
            sql.push_str(&format!(
                "SUM(CASE WHEN kind = '{kind}' THEN {expr} ELSE 0 END) AS {name}_{part}, "
            ));
        }
    }
    sql
}

/// The query of [`SqliteDb::customer_totals`] (one placeholder: the customer). The
/// equality on `customer_id` is answered by the `(customer_id, occurred_at, id)`
/// index.
fn customer_totals_sql() -> String {
    format!(
        "SELECT currency, {}COUNT(*) AS count, MIN(occurred_at) AS first_occurred_at, \
         MAX(occurred_at) AS last_occurred_at FROM revenue_events WHERE customer_id = ? \
         GROUP BY currency ORDER BY currency",
        sum_columns()
    )
}

/// [`EVENT_COLUMNS`] qualified with a table alias, for joins.
fn prefixed_event_columns(alias: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `INSERT` of one event, to run on the pool or inside a transaction.
fn insert_event_query(e: &Event) -> Query<'_, Sqlite, SqliteArguments<'_>> {
    let metadata = e.metadata.as_ref().map(|m| m.to_string());
    sqlx::query(
        "INSERT INTO revenue_events \
         (id, customer_id, product, kind, amount, currency, occurred_at, created_at, metadata) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.id)
    .bind(&e.customer_id)
    .bind(&e.product)
    .bind(e.kind.as_str())
    .bind(e.amount)
    .bind(&e.currency)
    .bind(to_text(&e.occurred_at))
    .bind(to_text(&e.created_at))
    .bind(metadata)
}

/// The exact total `name` (`gross` or `refunds`) of a summary row, from its
/// [`SUM_PARTS`] columns.
fn exact_sum(r: &SqliteRow, name: &str) -> Result<i128, sqlx::Error> {
    let part = |suffix: &str| -> Result<i128, sqlx::Error> {
        r.try_get::<i64, _>(format!("{name}_{suffix}").as_str())
            .map(i128::from)
    };
    Ok(part("hi")? * 1_000_000_000_000 + part("mid")? * 1_000_000 + part("lo")?)
}

fn push_range(
    qb: &mut QueryBuilder<'_, Sqlite>,
    from: Option<&DateTime<Utc>>,
    to: Option<&DateTime<Utc>>,
) {
    if let Some(v) = from {
        qb.push(" AND occurred_at >= ").push_bind(to_text(v));
    }
    if let Some(v) = to {
        qb.push(" AND occurred_at < ").push_bind(to_text(v));
    }
}

fn event_from_row(r: &SqliteRow) -> Result<Event, sqlx::Error> {
    Ok(Event {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        product: r.try_get("product")?,
        kind: parse_kind(r.try_get("kind")?)?,
        amount: r.try_get("amount")?,
        currency: r.try_get("currency")?,
        occurred_at: from_text(r.try_get("occurred_at")?)?,
        created_at: from_text(r.try_get("created_at")?)?,
        metadata: parse_metadata(r.try_get("metadata")?)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The customer query reads through the `(customer_id, occurred_at, id)` index,
    /// not a full scan.
    #[tokio::test]
    async fn customer_totals_use_the_customer_index() {
        let db = SqliteDb::connect("sqlite::memory:", super::super::PoolSettings::new(1))
            .await
            .unwrap();
        let plan: Vec<String> =
            sqlx::query(&format!("EXPLAIN QUERY PLAN {}", customer_totals_sql()))
                .bind("cus")
                .fetch_all(db.reader())
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect();
        assert!(
            plan.iter()
                .any(|d| d.contains("USING INDEX revenue_events_customer_occurred_at")),
            "{plan:?}"
        );
    }
}
