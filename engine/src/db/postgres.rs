//! Postgres backend: pool options, migrations (`migrations/postgres`) and SQL.
//!
//! Timestamps are `TIMESTAMPTZ`; buckets are computed from `occurred_at AT TIME
//! ZONE 'UTC'` so they match SQLite's. `SUM(bigint)` yields an exact `NUMERIC`,
//! which summaries read as text and parse into `i128`, so totals never overflow.
//!
//! Summaries read the whole UTC days of their range from `revenue_daily` (one row
//! per day, currency and product with exact `NUMERIC` totals) and only the partial
//! days at the range's edges from `revenue_events` (see `summary_plan`). The
//! rollup is kept exact by statement-level triggers on `revenue_events` (migration
//! `20261203000200_revenue_daily.sql`), in the transaction of every write, batch or
//! single, and also of SQL run by hand. Concurrent writers of the same day,
//! currency and product serialise on that rollup row until they commit.
//!
//! Writes, transactions and reads that must see the latest commit use the
//! primary's pool; every other read goes through [`ReplicaSet::read`], which picks
//! a replica or the primary (see [`super::replicas`]).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, QueryBuilder, Row};

use super::lsn::Lsn;
use super::replicas::ReplicaSet;
use super::session::Session;
use super::{parse_kind, parse_metadata, DbError, StoredRequest};
use crate::model::{
    CustomerTotals, Event, EventFilter, GroupBy, Interval, SummaryQuery, SummaryRow,
};

const EVENT_COLUMNS: &str = "id, customer_id, product, kind, amount, currency, occurred_at, \
     created_at, metadata::text AS metadata";

/// The Postgres primary's pool (`writer`: writes, transactions and reads that must
/// see the latest commit) and the read splitting over the replicas (`reads`).
#[derive(Clone, Debug)]
pub struct PgDb {
    session: Session,
    writer: PgPool,
    reads: Arc<ReplicaSet>,
}

/// The `application_name` the engine's connections carry unless the URL sets one
/// (it shows in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "revenue-engine";

/// The `application_name` of the connection that runs migrations over
/// `database.migrations_url`, unless that URL names one.
pub const MIGRATIONS_APPLICATION_NAME: &str = "revenue-engine-migrations";

impl PgDb {
    /// Connects to the Postgres primary at `url`, runs the migrations there, and
    /// sets up lazily connecting pools for the replicas of `replicas`, checking
    /// each once before returning and then every `check_interval` in the
    /// background. Runs once at start-up.
    ///
    /// Pools get the size and timeouts of `pool`. With `pool.pgbouncer`,
    /// statements run as [`Session`] describes (a transaction-pooling PgBouncer
    /// hands each transaction to any server connection). The migrations run over
    /// `replicas.migrations_url` when set (required behind PgBouncer: sqlx's
    /// migrator needs one session for its advisory lock and its statements), else
    /// over `url`. Returns an error if the primary is unreachable, a URL is
    /// invalid or a migration fails; an unreachable replica is only logged.
    pub async fn connect(
        url: &str,
        pool: super::PoolSettings,
        replicas: &super::ReplicaSettings,
    ) -> anyhow::Result<Self> {
        let session = Session::new(pool.pgbouncer);
        let writer = pool_options(pool)
            .connect_with(connect_options(url, pool).context("invalid database URL")?)
            .await
            .context("cannot connect to Postgres")?;
        match &replicas.migrations_url {
            Some(direct) => {
                let direct_settings = super::PoolSettings {
                    max_connections: 1,
                    pgbouncer: false,
                    ..pool
                };
                let options = connect_options(direct, direct_settings)
                    .context("invalid URL of database.migrations_url")?;
                let options = if direct.contains("application_name=") {
                    options
                } else {
                    options.application_name(MIGRATIONS_APPLICATION_NAME)
                };
                let migrations = pool_options(direct_settings)
                    .connect_with(options)
                    .await
                    .context("cannot connect to Postgres for the migrations")?;
                let result = sqlx::migrate!("./migrations/postgres")
                    .run(&migrations)
                    .await;
                migrations.close().await;
                result.context("Postgres migrations failed")?;
            }
            None if pool.pgbouncer => anyhow::bail!(
                "database.migrations_url: required with database.pgbouncer: true \
                 (migrations need a direct or session-mode connection)"
            ),
            None => sqlx::migrate!("./migrations/postgres")
                .run(&writer)
                .await
                .context("Postgres migrations failed")?,
        }
        let replica_pools = replicas
            .urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                connect_options(url, pool)
                    .map(|options| {
                        // A replica whose connections are all busy (or that
                        // refuses new ones) sends the read to the primary soon
                        // rather than at the pool's acquire timeout.
                        pool_options(pool)
                            .acquire_timeout(pool.acquire_timeout.min(REPLICA_ACQUIRE_TIMEOUT))
                            .connect_lazy_with(options)
                    })
                    .with_context(|| format!("invalid URL of database.replicas[{i}]"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let reads = Arc::new(ReplicaSet::new(
            session,
            writer.clone(),
            replica_pools,
            replicas.max_lag,
            replicas.read_timeout,
        ));
        reads.check_all().await;
        reads.spawn_checks(replicas.check_interval);
        Ok(Self {
            session,
            writer,
            reads,
        })
    }

    /// The read splitting (replica states and metrics).
    pub fn replica_set(&self) -> &ReplicaSet {
        &self.reads
    }

    pub(super) async fn ping(&self) -> Result<(), DbError> {
        let read_only: String = self
            .session
            .run(&self.writer, |mut conn| async move {
                let setting = sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
                    .persistent(conn.persistent())
                    .fetch_one(&mut *conn)
                    .await;
                (conn, setting)
            })
            .await?;
        if read_only == "on" {
            // A standby or a demoted primary answers but cannot take writes.
            return Err(DbError::Unavailable(sqlx::Error::Protocol(
                "the primary is read-only (a standby, or default_transaction_read_only)".into(),
            )));
        }
        Ok(())
    }

    /// The primary's WAL insert position now: at or past the commit of every
    /// transaction that has committed, so a replica that has replayed it shows
    /// them all.
    pub(super) async fn write_position(&self) -> Result<Lsn, DbError> {
        let text: String = self
            .session
            .run(&self.writer, |mut conn| async move {
                let text = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
                    .persistent(conn.persistent())
                    .fetch_one(&mut *conn)
                    .await;
                (conn, text)
            })
            .await?;
        Lsn::parse(&text).ok_or_else(|| {
            DbError::Other(sqlx::Error::Decode(
                format!("unexpected pg_lsn text {text:?}").into(),
            ))
        })
    }

    pub(super) async fn insert_event(&self, e: &Event) -> Result<(), DbError> {
        self.session
            .run(&self.writer, |mut conn| async move {
                let done = insert_event_query(e)
                    .persistent(conn.persistent())
                    .execute(&mut *conn)
                    .await;
                (conn, done)
            })
            .await?;
        Ok(())
    }

    /// Claims `key` and stores `e` in one transaction; `false` (nothing stored) if
    /// the key was already claimed, unless that claim was made before
    /// `expired_before` (expired): then it is taken over. While another
    /// transaction holds an uncommitted claim on the same key, the `INSERT` waits
    /// for it: if it commits, this one conflicts; if it rolls back, this one
    /// claims the key.
    pub(super) async fn insert_event_with_key(
        &self,
        e: &Event,
        key: &str,
        request_hash: &str,
        expired_before: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let mut tx = self.writer.begin().await?;
        let claimed = sqlx::query(CLAIM_KEY_SQL)
            .bind(key)
            .bind(request_hash)
            .bind(&e.id)
            .bind(e.created_at)
            .bind(expired_before)
            .persistent(self.session.persistent())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !claimed {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_event_query(e)
            .persistent(self.session.persistent())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The record of `key` and the event it stored, read on the writer pool in its
    /// own statement (so it sees the winner's commit whatever the isolation level).
    pub(super) async fn stored_request(&self, key: &str) -> Result<Option<StoredRequest>, DbError> {
        let sql = format!(
            "SELECT k.request_hash, {} FROM idempotency_keys k \
             JOIN revenue_events e ON e.id = k.event_id WHERE k.idempotency_key = $1",
            prefixed_event_columns("e")
        );
        let sql = sql.as_str();
        let row = self
            .session
            .run(&self.writer, |mut conn| async move {
                let row = sqlx::query(sql)
                    .bind(key)
                    .persistent(conn.persistent())
                    .fetch_optional(&mut *conn)
                    .await;
                (conn, row)
            })
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
            qb.build()
                .persistent(self.session.persistent())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn get_event(
        &self,
        id: &str,
        after: Option<Lsn>,
    ) -> Result<Option<Event>, DbError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM revenue_events WHERE id = $1");
        let sql = sql.as_str();
        self.reads
            .read(after, |mut conn| async move {
                let row = sqlx::query(sql)
                    .bind(id)
                    .persistent(conn.persistent())
                    .fetch_optional(&mut *conn)
                    .await;
                let event = row.and_then(|row| row.map(|r| event_from_row(&r)).transpose());
                (conn, event)
            })
            .await
    }

    pub(super) async fn list_events(
        &self,
        f: &EventFilter,
        fetch: i64,
        after: Option<Lsn>,
    ) -> Result<Vec<Event>, DbError> {
        self.reads
            .read(after, |mut conn| async move {
                let rows = list_query(f, fetch)
                    .build()
                    .persistent(conn.persistent())
                    .fetch_all(&mut *conn)
                    .await;
                let events = rows.and_then(|rows| rows.iter().map(event_from_row).collect());
                (conn, events)
            })
            .await
    }

    pub(super) async fn summary(
        &self,
        q: &SummaryQuery,
        after: Option<Lsn>,
    ) -> Result<Vec<SummaryRow>, DbError> {
        let by_product = q.group_by == Some(GroupBy::Product);
        let rows = self
            .reads
            .read(after, |mut conn| async move {
                let rows = summary_query(q)
                    .build()
                    .persistent(conn.persistent())
                    .fetch_all(&mut *conn)
                    .await;
                (conn, rows)
            })
            .await?;
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
        after: Option<Lsn>,
    ) -> Result<Vec<CustomerTotals>, DbError> {
        let sql = format!(
            "SELECT currency, {SUM_COLUMNS}, COUNT(*) AS count, \
             MIN(occurred_at) AS first_occurred_at, MAX(occurred_at) AS last_occurred_at \
             FROM revenue_events WHERE customer_id = $1 GROUP BY currency ORDER BY currency"
        );
        let sql = sql.as_str();
        let rows = self
            .reads
            .read(after, |mut conn| async move {
                let rows = sqlx::query(sql)
                    .bind(customer_id)
                    .persistent(conn.persistent())
                    .fetch_all(&mut *conn)
                    .await;
                (conn, rows)
            })
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

    /// Deletes up to `limit` idempotency keys claimed before `before`; returns
    /// how many.
    pub(super) async fn delete_expired_keys(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, DbError> {
        let done = self
            .session
            .run(&self.writer, |mut conn| async move {
                let done = sqlx::query(
                    "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM \
                     idempotency_keys WHERE created_at < $1 LIMIT $2)",
                )
                .bind(before)
                .bind(limit)
                .persistent(conn.persistent())
                .execute(&mut *conn)
                .await;
                (conn, done)
            })
            .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn close(&self) {
        self.writer.close().await;
        self.reads.close().await;
    }
}

/// Claims an idempotency key: inserts it, or takes over a row claimed before `$5`
/// (expired). A live claim is left alone (0 rows affected). Concurrent takeovers
/// of one expired key serialise on its row lock; the loser sees the winner's
/// fresh `created_at` and does not update.
const CLAIM_KEY_SQL: &str =
    "INSERT INTO idempotency_keys (idempotency_key, request_hash, event_id, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO UPDATE \
     SET request_hash = EXCLUDED.request_hash, event_id = EXCLUDED.event_id, \
         created_at = EXCLUDED.created_at \
     WHERE idempotency_keys.created_at < $5";

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

/// A time range `[start, end)`, either end open.
type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// How [`PgDb::summary`] reads `[from, to)`: the whole UTC days `[days.0, days.1)`
/// (either end `None`: unbounded) from `revenue_daily`, and the partial days at the
/// edges (`events`, each `[start, end)`) from `revenue_events`. The pieces do not
/// overlap and together cover exactly `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SummaryPlan {
    /// The whole days read from the rollup, if any.
    days: Option<(Option<NaiveDate>, Option<NaiveDate>)>,
    /// The ranges read from the events (at most two; bounds as given).
    events: Vec<Range>,
}

/// Splits `[from, to)` into whole UTC days and edge pieces (see [`SummaryPlan`]).
fn summary_plan(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> SummaryPlan {
    let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc();
    // The first whole day at or after `from`, and the day `to` falls in (a day
    // before it is whole). `None` in `Some(None)`: past chrono's last day.
    let first_day = from.map(|f| {
        if f.time() == NaiveTime::MIN {
            Some(f.date_naive())
        } else {
            f.date_naive().succ_opt()
        }
    });
    let end_day = to.map(|t| t.date_naive());
    let whole_days = match (first_day, end_day) {
        (Some(None), _) => None,
        (Some(Some(d0)), Some(d1)) if d0 >= d1 => None,
        (d0, d1) => Some((d0.flatten(), d1)),
    };
    let Some((d0, d1)) = whole_days else {
        return SummaryPlan {
            days: None,
            events: vec![(from, to)],
        };
    };
    let mut events = Vec::new();
    if let (Some(f), Some(d0)) = (from, d0) {
        if midnight(d0) != f {
            events.push((Some(f), Some(midnight(d0))));
        }
    }
    if let (Some(t), Some(d1)) = (to, d1) {
        if midnight(d1) != t {
            events.push((Some(midnight(d1)), Some(t)));
        }
    }
    SummaryPlan {
        days: Some((d0, d1)),
        events,
    }
}

/// The `SELECT` of [`PgDb::summary`]: one row per bucket, currency (and product
/// with `group_by=product`), in that order. Totals of the whole days come from
/// `revenue_daily`, those of partial days from `revenue_events`, added up per
/// bucket; the same rows and values as aggregating every event of the range.
fn summary_query(q: &SummaryQuery) -> QueryBuilder<'_, Postgres> {
    // Totals are added up per day or month (a cheap key), then the few result
    // rows are formatted.
    let (key, format) = match q.interval {
        Interval::Day => ("day::timestamp", "YYYY-MM-DD"),
        Interval::Month => ("date_trunc('month', day::timestamp)", "YYYY-MM"),
    };
    let by_product = q.group_by == Some(GroupBy::Product);
    let (product, group, order) = if by_product {
        (
            "product, ",
            "GROUP BY 1, 2, 3",
            "ORDER BY bucket, currency, product",
        )
    } else {
        ("", "GROUP BY 1, 2", "ORDER BY bucket, currency")
    };
    let plan = summary_plan(q.from, q.to);
    let mut qb = QueryBuilder::<Postgres>::new(format!(
        "SELECT to_char(k, '{format}') AS bucket, currency, {product}\
         CAST(gross AS TEXT) AS gross, CAST(refunds AS TEXT) AS refunds, count \
         FROM (SELECT {key} AS k, currency, {product}SUM(gross) AS gross, \
         SUM(refunds) AS refunds, CAST(SUM(count) AS BIGINT) AS count FROM ("
    ));
    let mut first = true;
    let mut union = |qb: &mut QueryBuilder<'_, Postgres>| {
        if !std::mem::take(&mut first) {
            qb.push(" UNION ALL ");
        }
    };
    if let Some((d0, d1)) = plan.days {
        union(&mut qb);
        qb.push(
            "SELECT day, currency, product, gross, refunds, count FROM revenue_daily WHERE TRUE",
        );
        if let Some(v) = q.currency {
            qb.push(" AND currency = ").push_bind(v);
        }
        if let Some(d0) = d0 {
            qb.push(" AND day >= ").push_bind(d0);
        }
        if let Some(d1) = d1 {
            qb.push(" AND day < ").push_bind(d1);
        }
    }
    for (from, to) in plan.events {
        union(&mut qb);
        qb.push(
            "SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, currency, product, \
             CAST(CASE WHEN kind = 'charge' THEN amount ELSE 0 END AS NUMERIC) AS gross, \
             CAST(CASE WHEN kind = 'refund' THEN amount ELSE 0 END AS NUMERIC) AS refunds, \
             CAST(1 AS BIGINT) AS count FROM revenue_events WHERE TRUE",
        );
        if let Some(v) = q.currency {
            qb.push(" AND currency = ").push_bind(v);
        }
        push_range(&mut qb, from, to);
    }
    qb.push(format!(") pieces {group}) totals {order}"));
    qb
}

/// The `SELECT` of one page of [`PgDb::list_events`]: filters, the keyset
/// condition after the cursor, newest first, `fetch` rows.
fn list_query(f: &EventFilter, fetch: i64) -> QueryBuilder<'_, Postgres> {
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
    qb
}

/// The longest a read waits for a connection of a replica's pool before it
/// goes to the primary.
const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The pool of one server: size and timeouts from `pool`.
fn pool_options(pool: super::PoolSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(pool.max_connections.max(1))
        .idle_timeout(pool.idle_timeout)
        .acquire_timeout(pool.acquire_timeout)
}

/// The connection options of `url`: [`APPLICATION_NAME`] unless the URL names
/// one, and no prepared-statement cache behind PgBouncer (see [`Session`]).
fn connect_options(url: &str, pool: super::PoolSettings) -> Result<PgConnectOptions, sqlx::Error> {
    let mut options = PgConnectOptions::from_str(url)?;
    if !url.contains("application_name=") {
        options = options.application_name(APPLICATION_NAME);
    }
    if pool.pgbouncer {
        options = options.statement_cache_capacity(0);
    }
    Ok(options)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn summary_plan_splits_whole_days_from_partial_edges() {
        let plan = summary_plan(
            Some(at("2026-11-01T00:00:00Z")),
            Some(at("2026-12-01T00:00:00Z")),
        );
        assert_eq!(
            plan.days,
            Some((Some(day("2026-11-01")), Some(day("2026-12-01"))))
        );
        assert!(plan.events.is_empty());

        let (from, to) = (at("2026-11-01T12:00:00Z"), at("2026-12-01T06:30:00Z"));
        let plan = summary_plan(Some(from), Some(to));
        assert_eq!(
            plan.days,
            Some((Some(day("2026-11-02")), Some(day("2026-12-01"))))
        );
        assert_eq!(
            plan.events,
            vec![
                (Some(from), Some(at("2026-11-02T00:00:00Z"))),
                (Some(at("2026-12-01T00:00:00Z")), Some(to)),
            ]
        );

        let plan = summary_plan(None, None);
        assert_eq!(plan.days, Some((None, None)));
        assert!(plan.events.is_empty());

        let plan = summary_plan(None, Some(to));
        assert_eq!(plan.days, Some((None, Some(day("2026-12-01")))));
        assert_eq!(
            plan.events,
            vec![(Some(at("2026-12-01T00:00:00Z")), Some(to))]
        );

        let plan = summary_plan(Some(from), None);
        assert_eq!(plan.days, Some((Some(day("2026-11-02")), None)));
        assert_eq!(
            plan.events,
            vec![(Some(from), Some(at("2026-11-02T00:00:00Z")))]
        );
    }

    #[test]
    fn summary_plan_reads_ranges_without_a_whole_day_from_the_events() {
        for (from, to) in [
            ("2026-11-01T10:00:00Z", "2026-11-01T15:00:00Z"),
            ("2026-11-01T10:00:00Z", "2026-11-02T00:00:00Z"),
            ("2026-11-01T10:00:00Z", "2026-11-02T09:00:00Z"),
            ("2026-11-03T00:00:00Z", "2026-11-01T00:00:00Z"),
            ("2026-11-01T00:00:00Z", "2026-11-01T00:00:00Z"),
        ] {
            let (from, to) = (Some(at(from)), Some(at(to)));
            let plan = summary_plan(from, to);
            assert_eq!(plan.days, None);
            assert_eq!(plan.events, vec![(from, to)]);
        }
        let last = NaiveDate::MAX.and_hms_opt(12, 0, 0).unwrap().and_utc();
        let plan = summary_plan(Some(last), None);
        assert_eq!(plan.days, None);
        assert_eq!(plan.events, vec![(Some(last), None)]);
    }
}
