//! Postgres backend: pool options, migrations (`migrations/postgres`) and SQL.
//!
//! Timestamps are `TIMESTAMPTZ`; buckets are computed from `occurred_at AT TIME
//! ZONE 'UTC'` so they match SQLite's. `SUM(bigint)` yields an exact `NUMERIC`,
//! which summaries read as text and parse into `i128`, so totals never overflow.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, QueryBuilder, Row};

use super::{parse_kind, parse_metadata, DbError, StoredRequest};
use crate::model::{
    CustomerTotals, Event, EventFilter, GroupBy, Interval, SummaryQuery, SummaryRow,
};

const EVENT_COLUMNS: &str = "id, customer_id, product, kind, amount, currency, occurred_at, \
     created_at, metadata::text AS metadata";

/// Postgres pools: `writer` for inserts, `reader` for queries. Today both are the
/// same pool; a read replica can be plugged in as `reader` later.
#[derive(Clone, Debug)]
pub struct PgDb {
    writer: PgPool,
    reader: PgPool,
}

impl PgDb {
    /// Connects to the Postgres server at `url` and runs the migrations (under
    /// Postgres' advisory lock, so concurrent starts are safe). Runs once at
    /// start-up.
    ///
    /// The pool's size and timeouts come from `pool`.
    pub async fn connect(url: &str, pool: super::PoolSettings) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections.max(1))
            .idle_timeout(pool.idle_timeout)
            .acquire_timeout(pool.acquire_timeout)
            .connect(url)
            .await
            .context("cannot connect to Postgres")?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("Postgres migrations failed")?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
        })
    }

    pub(super) async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    pub(super) async fn insert_event(&self, e: &Event) -> Result<(), DbError> {
        insert_event_query(e).execute(&self.writer).await?;
        Ok(())
    }

    /// Claims `key` and stores `e` in one transaction; `false` (nothing stored) if
    /// the key was already claimed. While another transaction holds an uncommitted
    /// claim on the same key, the `INSERT` waits for it: if it commits, this one
    /// conflicts; if it rolls back, this one claims the key.
    pub(super) async fn insert_event_with_key(
        &self,
        e: &Event,
        key: &str,
        request_hash: &str,
    ) -> Result<bool, DbError> {
        let mut tx = self.writer.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (idempotency_key, request_hash, event_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key)
        .bind(request_hash)
        .bind(&e.id)
        .bind(e.created_at)
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

    /// The record of `key` and the event it stored, read on the writer pool in its
    /// own statement (so it sees the winner's commit whatever the isolation level).
    pub(super) async fn stored_request(&self, key: &str) -> Result<Option<StoredRequest>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT k.request_hash, {} FROM idempotency_keys k \
             JOIN revenue_events e ON e.id = k.event_id WHERE k.idempotency_key = $1",
            prefixed_event_columns("e")
        ))
        .bind(key)
        .fetch_optional(&self.writer)
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
    /// [`super::BATCH_ROWS`] rows (9 parameters each, far below Postgres' limit of
    /// 65 535 bound parameters).
    pub(super) async fn insert_events(&self, events: &[Event]) -> Result<(), DbError> {
        let mut tx = self.writer.begin().await?;
        for chunk in events.chunks(super::BATCH_ROWS) {
            let mut qb = QueryBuilder::<Postgres>::new(
                "INSERT INTO revenue_events \
                 (id, customer_id, product, kind, amount, currency, occurred_at, created_at, \
                 metadata) ",
            );
            qb.push_values(chunk, |mut row, e| {
                row.push_bind(e.id.clone())
                    .push_bind(e.customer_id.clone())
                    .push_bind(e.product.clone())
                    .push_bind(e.kind.as_str())
                    .push_bind(e.amount)
                    .push_bind(e.currency.clone())
                    .push_bind(e.occurred_at)
                    .push_bind(e.created_at)
                    .push_unseparated(", CAST(")
                    .push_bind_unseparated(e.metadata.as_ref().map(|m| m.to_string()))
                    .push_unseparated(" AS JSONB)");
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn get_event(&self, id: &str) -> Result<Option<Event>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM revenue_events WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| event_from_row(&r)).transpose()?)
    }

    pub(super) async fn list_events(
        &self,
        f: &EventFilter,
        fetch: i64,
    ) -> Result<Vec<Event>, DbError> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {EVENT_COLUMNS} FROM revenue_events WHERE TRUE"
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
        push_range(&mut qb, f.from, f.to);
        if let Some(c) = &f.cursor {
            qb.push(" AND (occurred_at, id) < (")
                .push_bind(c.occurred_at)
                .push(", ")
                .push_bind(c.id.clone())
                .push(")");
        }
        qb.push(" ORDER BY occurred_at DESC, id DESC LIMIT ")
            .push_bind(fetch);
        let rows = qb.build().fetch_all(&self.reader).await?;
        Ok(rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    pub(super) async fn summary(&self, q: &SummaryQuery) -> Result<Vec<SummaryRow>, DbError> {
        let format = match q.interval {
            Interval::Day => "YYYY-MM-DD",
            Interval::Month => "YYYY-MM",
        };
        let by_product = q.group_by == Some(GroupBy::Product);
        let product = if by_product { "product, " } else { "" };
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT to_char(occurred_at AT TIME ZONE 'UTC', '{format}') AS bucket, currency, \
             {product}{SUM_COLUMNS}, COUNT(*) AS count FROM revenue_events WHERE TRUE"
        ));
        if let Some(v) = q.currency {
            qb.push(" AND currency = ").push_bind(v);
        }
        push_range(&mut qb, q.from, q.to);
        if by_product {
            qb.push(" GROUP BY 1, 2, 3 ORDER BY bucket, currency, product");
        } else {
            qb.push(" GROUP BY 1, 2 ORDER BY bucket, currency");
        }
        let rows = qb.build().fetch_all(&self.reader).await?;
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
        let rows = sqlx::query(&format!(
            "SELECT currency, {SUM_COLUMNS}, COUNT(*) AS count, \
             MIN(occurred_at) AS first_occurred_at, MAX(occurred_at) AS last_occurred_at \
             FROM revenue_events WHERE customer_id = $1 GROUP BY currency ORDER BY currency"
        ))
        .bind(customer_id)
        .fetch_all(&self.reader)
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
                    first_occurred_at: r.try_get("first_occurred_at")?,
                    last_occurred_at: r.try_get("last_occurred_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(DbError::from)
    }

    pub(super) async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// The select-list columns of the exact `gross` and `refunds` totals, as text
/// (see [`exact_sum`]).
const SUM_COLUMNS: &str = "CAST(SUM(CASE WHEN kind = 'charge' THEN amount ELSE 0 END) AS TEXT) \
     AS gross, CAST(SUM(CASE WHEN kind = 'refund' THEN amount ELSE 0 END) AS TEXT) AS refunds";

/// [`EVENT_COLUMNS`] qualified with a table alias, for joins.
fn prefixed_event_columns(alias: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `INSERT` of one event, to run on the pool or inside a transaction.
fn insert_event_query(e: &Event) -> Query<'_, Postgres, PgArguments> {
    let metadata = e.metadata.as_ref().map(|m| m.to_string());
    sqlx::query(
        "INSERT INTO revenue_events \
         (id, customer_id, product, kind, amount, currency, occurred_at, created_at, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CAST($9 AS JSONB))",
    )
    .bind(&e.id)
    .bind(&e.customer_id)
    .bind(&e.product)
    .bind(e.kind.as_str())
    .bind(e.amount)
    .bind(&e.currency)
    .bind(e.occurred_at)
    .bind(e.created_at)
    .bind(metadata)
}

/// The exact total in column `name` of a summary row. `SUM(bigint)` is an exact
/// `NUMERIC` (it cannot overflow); it is read as text and parsed into `i128`.
fn exact_sum(r: &PgRow, name: &str) -> Result<i128, sqlx::Error> {
    let text: String = r.try_get(name)?;
    text.parse::<i128>().map_err(|e| {
        sqlx::Error::Decode(format!("{name} total {text:?} is not an integer: {e}").into())
    })
}

fn push_range(
    qb: &mut QueryBuilder<'_, Postgres>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) {
    if let Some(v) = from {
        qb.push(" AND occurred_at >= ").push_bind(v);
    }
    if let Some(v) = to {
        qb.push(" AND occurred_at < ").push_bind(v);
    }
}

fn event_from_row(r: &PgRow) -> Result<Event, sqlx::Error> {
    Ok(Event {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        product: r.try_get("product")?,
        kind: parse_kind(r.try_get("kind")?)?,
        amount: r.try_get("amount")?,
        currency: r.try_get("currency")?,
        occurred_at: r.try_get("occurred_at")?,
        created_at: r.try_get("created_at")?,
        metadata: parse_metadata(r.try_get("metadata")?)?,
    })
}
