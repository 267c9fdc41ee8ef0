//! Pieces of the engine database benchmark (`cargo run --release -p benches --bin
//! engine_db`): sequential latency sampling with percentiles, a `psql` runner for
//! settings and `EXPLAIN (ANALYZE, BUFFERS)`, a Postgres restart (to empty the
//! server's buffer cache), the request windows derived from the day of the run,
//! copies of the engine's Postgres SQL for the plans, and the markdown table.
//!
//! Latencies are measured end to end by a single keep-alive HTTP/1.1 client, one
//! request at a time, so they include the engine's HTTP stack and JSON encoding,
//! not only the query.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, SecondsFormat, TimeDelta, Utc};

/// What one endpoint measured with one client sending requests back to back.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Latency of the very first request (before any warm-up).
    pub first: Duration,
    /// Latencies of the measured requests, sorted ascending.
    pub latencies: Vec<Duration>,
    /// Measured answers that were not 2xx.
    pub non_2xx: u64,
    /// Measured answers carrying `X-Engine-Cache: hit`.
    pub hits: u64,
    /// Status and start of the body of the first non-2xx answer, if any.
    pub first_error: Option<String>,
}

impl Sample {
    /// The `q` quantile (0..=1) of the measured latencies, in milliseconds (0 when
    /// nothing was measured). Nearest-rank on the sorted sample.
    pub fn ms(&self, q: f64) -> f64 {
        let n = self.latencies.len();
        if n == 0 {
            return 0.0;
        }
        let rank = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        self.latencies[rank].as_secs_f64() * 1e3
    }
}

/// Sends GET `url` once untimed-for-the-sample (reported as [`Sample::first`]),
/// `warmup` more times unrecorded, then up to `requests` times recorded, stopping
/// early (after at least 20 recorded) once `budget` has passed.
///
/// Runs once per endpoint and mode. Returns the sample; errors only when the
/// server cannot be reached.
pub async fn measure(
    client: &reqwest::Client,
    url: &str,
    warmup: usize,
    requests: usize,
    budget: Duration,
) -> anyhow::Result<Sample> {
    let mut sample = Sample::default();
    let (first, _, _) = timed_get(client, url, &mut sample.first_error).await?;
    sample.first = first;
    for _ in 0..warmup {
        timed_get(client, url, &mut sample.first_error).await?;
    }
    sample.first_error = None;
    let measured = Instant::now();
    for i in 0..requests {
        if i >= 20 && measured.elapsed() > budget {
            break;
        }
        let (lat, ok, hit) = timed_get(client, url, &mut sample.first_error).await?;
        sample.latencies.push(lat);
        sample.non_2xx += u64::from(!ok);
        sample.hits += u64::from(hit);
    }
    sample.latencies.sort_unstable();
    Ok(sample)
}

/// One GET, timed until the whole body has arrived: (latency, 2xx, cache hit).
async fn timed_get(
    client: &reqwest::Client,
    url: &str,
    first_error: &mut Option<String>,
) -> anyhow::Result<(Duration, bool, bool)> {
    let t = Instant::now();
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let hit = resp
        .headers()
        .get("x-engine-cache")
        .is_some_and(|v| v.as_bytes() == b"hit");
    let body = resp.bytes().await.with_context(|| format!("GET {url}"))?;
    let lat = t.elapsed();
    if !status.is_success() && first_error.is_none() {
        let text = String::from_utf8_lossy(&body);
        *first_error = Some(format!(
            "{status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    Ok((lat, status.is_success(), hit))
}

/// Runs SQL on a database with the `psql` client (found on `PATH`).
#[derive(Debug, Clone)]
pub struct Psql {
    url: String,
}

impl Psql {
    /// A runner for the database at `url` (`postgres://...`).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
        }
    }

    /// Runs `sql` (one or more statements) and returns the output in unaligned,
    /// tuples-only form (`|`-separated columns, one row a line). Errors with
    /// psql's stderr when a statement fails.
    pub fn run(&self, sql: &str) -> anyhow::Result<String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&self.url)
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .context("cannot run psql (install postgresql-client)")?;
        if !out.status.success() {
            bail!(
                "psql failed on {:?}: {}",
                sql.chars().take(120).collect::<String>(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// `EXPLAIN (ANALYZE, BUFFERS)` of `sql`, run twice; returns the plan of the
    /// second run (the first warms the buffers the way the benchmark's warm-up
    /// does).
    pub fn explain(&self, sql: &str) -> anyhow::Result<String> {
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS) {sql}");
        self.run(&explain)?;
        self.run(&explain)
    }

    /// Polls `SELECT 1` until it succeeds or `timeout` passes.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.run("SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// Restarts the Postgres server of `data_dir` (`pg_ctl restart -m fast`, same port
/// and options, log appended to `postgres.log` next to the data directory), so its
/// shared buffers start empty. The operating system's page cache is not dropped.
///
/// Runs before each engine start. `pg_ctl` is the tool of the cluster's
/// installation; the server runs as `postgres` (through `runuser`) when this
/// process is root, as the cluster harness does.
pub fn restart_postgres(pg_ctl: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let log = data_dir
        .parent()
        .context("the data directory has no parent")?
        .join("postgres.log");
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mut cmd = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_ctl);
        c
    } else {
        Command::new(pg_ctl)
    };
    cmd.arg("-D")
        .arg(data_dir)
        .arg("-l")
        .arg(&log)
        .args(["-m", "fast", "-w", "-t", "60", "restart"])
        .current_dir(data_dir.parent().unwrap_or(data_dir));
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .context("cannot run pg_ctl restart")?;
    if !out.status.success() {
        bail!(
            "pg_ctl restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The request windows of a run on `today` (UTC): `engine seed` spreads events
/// over the 365 days before today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    /// Start of the last complete calendar month (RFC 3339, inclusive).
    pub month_from: String,
    /// End of that month (exclusive).
    pub month_to: String,
    /// Start of the calendar month holding the oldest seeded event.
    pub year_from: String,
    /// Start of the month after today (exclusive): the year window covers every
    /// seeded event.
    pub year_to: String,
}

impl Windows {
    /// The windows for a run on `today`. Runs once per benchmark.
    pub fn for_day(today: NaiveDate) -> Self {
        let first = |d: NaiveDate| d.with_day(1).unwrap_or(d);
        let this_month = first(today);
        let last_month = this_month
            .checked_sub_months(Months::new(1))
            .unwrap_or(this_month);
        let oldest = today - chrono::TimeDelta::days(365);
        let next_month = this_month
            .checked_add_months(Months::new(1))
            .unwrap_or(this_month);
        let ts = |d: NaiveDate| format!("{}T00:00:00Z", d.format("%Y-%m-%d"));
        Self {
            month_from: ts(last_month),
            month_to: ts(this_month),
            year_from: ts(first(oldest)),
            year_to: ts(next_month),
        }
    }
}

/// The select-list totals of the engine's customer query (a copy of
/// `SUM_COLUMNS` in engine/src/db/postgres.rs).
const SUM_COLUMNS: &str = "CAST(SUM(CASE WHEN kind = 'charge' THEN amount ELSE 0 END) AS TEXT) \
     AS gross, CAST(SUM(CASE WHEN kind = 'refund' THEN amount ELSE 0 END) AS TEXT) AS refunds";

/// The columns the engine's event queries select (a copy of `EVENT_COLUMNS`).
const EVENT_COLUMNS: &str = "id, customer_id, product, kind, amount, currency, occurred_at, \
     created_at, metadata::text AS metadata";

/// The engine's summary SQL for `[from, to)` (RFC 3339) with bucket format
/// `format` (`YYYY-MM-DD` or `YYYY-MM`), grouped by product too when `by_product`,
/// with the bound parameters written as literals. A copy of `summary_query` in
/// engine/src/db/postgres.rs: whole UTC days from the `revenue_daily` rollup, the
/// partial days at the edges from `revenue_events`. Used for `EXPLAIN`.
pub fn summary_sql(format: &str, by_product: bool, from: &str, to: &str) -> anyhow::Result<String> {
    let parse = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .with_context(|| format!("bad timestamp {s:?}"))
    };
    let (from, to) = (parse(from)?, parse(to)?);
    let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc();
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let d0 = if from.time() == NaiveTime::MIN {
        from.date_naive()
    } else {
        from.date_naive() + TimeDelta::days(1)
    };
    let d1 = to.date_naive();
    let event_piece = |a: DateTime<Utc>, b: DateTime<Utc>| {
        format!(
            "SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, currency, product, \
             CAST(CASE WHEN kind = 'charge' THEN amount ELSE 0 END AS NUMERIC) AS gross, \
             CAST(CASE WHEN kind = 'refund' THEN amount ELSE 0 END AS NUMERIC) AS refunds, \
             CAST(1 AS BIGINT) AS count FROM revenue_events WHERE TRUE \
             AND occurred_at >= '{}' AND occurred_at < '{}'",
            ts(a),
            ts(b)
        )
    };
    let mut pieces = Vec::new();
    if d0 >= d1 {
        pieces.push(event_piece(from, to));
    } else {
        pieces.push(format!(
            "SELECT day, currency, product, gross, refunds, count FROM revenue_daily WHERE TRUE \
             AND day >= '{d0}' AND day < '{d1}'"
        ));
        if midnight(d0) != from {
            pieces.push(event_piece(from, midnight(d0)));
        }
        if midnight(d1) != to {
            pieces.push(event_piece(midnight(d1), to));
        }
    }
    let key = if format == "YYYY-MM" {
        "date_trunc('month', day::timestamp)"
    } else {
        "day::timestamp"
    };
    let (product, group, order) = if by_product {
        (
            "product, ",
            "GROUP BY 1, 2, 3",
            "ORDER BY bucket, currency, product",
        )
    } else {
        ("", "GROUP BY 1, 2", "ORDER BY bucket, currency")
    };
    Ok(format!(
        "SELECT to_char(k, '{format}') AS bucket, currency, {product}\
         CAST(gross AS TEXT) AS gross, CAST(refunds AS TEXT) AS refunds, count \
         FROM (SELECT {key} AS k, currency, {product}SUM(gross) AS gross, \
         SUM(refunds) AS refunds, CAST(SUM(count) AS BIGINT) AS count FROM ({}) pieces \
         {group}) totals {order}",
        pieces.join(" UNION ALL ")
    ))
}

/// A window moved by `hours` (e.g. 12: from and to at noon, so the summary reads
/// two partial days from the events).
pub fn shift(ts: &str, hours: i64) -> String {
    match DateTime::parse_from_rfc3339(ts) {
        Ok(t) => (t.with_timezone(&Utc) + TimeDelta::hours(hours))
            .to_rfc3339_opts(SecondsFormat::Secs, true),
        Err(_) => ts.to_owned(),
    }
}

/// The engine's event-list SQL (newest first, `limit + 1` rows fetched), filtered
/// by customer and/or started after a keyset cursor `(occurred_at, id)`. Used for
/// `EXPLAIN`.
pub fn list_sql(customer: Option<&str>, cursor: Option<(&str, &str)>, limit: u32) -> String {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM revenue_events WHERE TRUE");
    if let Some(c) = customer {
        sql.push_str(&format!(" AND customer_id = '{c}'"));
    }
    if let Some((at, id)) = cursor {
        sql.push_str(&format!(" AND (occurred_at, id) < ('{at}', '{id}')"));
    }
    sql.push_str(&format!(
        " ORDER BY occurred_at DESC, id DESC LIMIT {}",
        limit + 1
    ));
    sql
}

/// The engine's customer-totals SQL for `customer`. Used for `EXPLAIN`.
pub fn customer_sql(customer: &str) -> String {
    format!(
        "SELECT currency, {SUM_COLUMNS}, COUNT(*) AS count, \
         MIN(occurred_at) AS first_occurred_at, MAX(occurred_at) AS last_occurred_at \
         FROM revenue_events WHERE customer_id = '{customer}' GROUP BY currency ORDER BY currency"
    )
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Index set the row was measured with (e.g. "before", "after").
    pub phase: String,
    /// "uncached" or "cached".
    pub mode: String,
    /// The endpoint's label.
    pub endpoint: String,
    /// The sequential sample.
    pub sample: Sample,
    /// Requests per second at concurrency 8.
    pub rps8: f64,
    /// The p95 target in milliseconds.
    pub target_p95_ms: f64,
    /// Whether the engine caches this endpoint (hits are expected in cached mode).
    pub cacheable: bool,
}

/// Renders `rows` as a markdown table with a pass/fail column (p95 against the
/// row's target). Runs once at the end of the benchmark.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| index set | mode | endpoint | first ms | p50 ms | p95 ms | p99 ms | n | cache hits \
         | req/s @8 | p95 target | result |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let s = &r.sample;
        let n = s.latencies.len();
        let hits = if r.cacheable {
            format!("{}/{n}", s.hits)
        } else {
            "not cached".to_owned()
        };
        let pass = s.ms(0.95) <= r.target_p95_ms && s.non_2xx == 0;
        let errors = if s.non_2xx > 0 {
            format!(" ({} non-2xx)", s.non_2xx)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {n} | {hits} | {:.0} | ≤ {} ms | {}{errors} |\n",
            r.phase,
            r.mode,
            r.endpoint,
            s.first.as_secs_f64() * 1e3,
            s.ms(0.50),
            s.ms(0.95),
            s.ms(0.99),
            r.rps8,
            r.target_p95_ms,
            if pass { "pass" } else { "FAIL" },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_last_month_and_the_seeded_year() {
        let w = Windows::for_day(NaiveDate::from_ymd_opt(2026, 12, 3).unwrap());
        assert_eq!(w.month_from, "2026-11-01T00:00:00Z");
        assert_eq!(w.month_to, "2026-12-01T00:00:00Z");
        assert_eq!(w.year_from, "2025-12-01T00:00:00Z");
        assert_eq!(w.year_to, "2027-01-01T00:00:00Z");
        let w = Windows::for_day(NaiveDate::from_ymd_opt(2026, 1, 31).unwrap());
        assert_eq!(w.month_from, "2025-12-01T00:00:00Z");
        assert_eq!(w.year_from, "2025-01-01T00:00:00Z");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Sample {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..Sample::default()
        };
        assert_eq!(s.ms(0.5), 50.0);
        assert_eq!(s.ms(0.95), 95.0);
        assert_eq!(s.ms(0.99), 99.0);
        assert_eq!(Sample::default().ms(0.5), 0.0);
    }
}
