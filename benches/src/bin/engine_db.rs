//! The engine database benchmark:
//! `cargo run --release -p benches --bin engine_db -- [--events 1000000] [--requests 200]`.
//!
//! Starts a throwaway Postgres (`e2e::pg::PgCluster`), seeds it with `engine seed`
//! (the release engine binary), runs `VACUUM ANALYZE`, prints the server settings
//! and `EXPLAIN (ANALYZE, BUFFERS)` of the engine's summary, list and customer
//! queries, then starts the release engine twice: without Redis ("uncached": every
//! request reaches Postgres) and with a throwaway redis-server ("cached": the
//! summary and customer answers are Redis hits after the first request). Postgres is
//! restarted before each engine start, so its shared buffers start empty; the
//! "first" column is the first request to the endpoint after that (the operating
//! system's page cache is not dropped).
//!
//! Each endpoint is measured by one client, sequentially, after a short warm-up
//! (p50/p95/p99), then driven by 8 connections for a few seconds (requests/s). A
//! markdown table with the targets (p95 ≤ 50 ms uncached, ≤ 2 ms cached) and
//! pass/fail per row is printed at the end.
//!
//! Summaries read whole UTC days from the `revenue_daily` rollup and only the
//! partial days at a window's edges from `revenue_events`; endpoint (a'') moves the
//! month window to noon to measure those edges. By default the schema is measured
//! as migrated. Indexes can be compared (`--compare-index NAME`, repeatable): the
//! run then measures once with them dropped ("before") and once with them
//! re-created ("after"). `--no-compare` drops earlier `--compare-index` options.
//!
//! Options: `--events N` (1000000), `--seed S` (1), `--requests N` per endpoint
//! (200), `--warmup N` (10), `--budget-secs S` cap on one endpoint's sequential
//! sampling (15), `--rps-secs S` of the concurrency-8 round (3), `--deep-pages N`
//! walked with limit=500 to get the deep cursor (100), `--shared-buffers SIZE`
//! and `--work-mem SIZE` (set with ALTER SYSTEM; default: the harness' 32MB and
//! Postgres' 4MB), `--keep` (print the URL and wait for Ctrl-C at the end).

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use benches::engine_db::{
    customer_sql, list_sql, markdown, measure, restart_postgres, shift, summary_sql, Psql, Row,
    Windows,
};
use benches::load::drive;
use e2e::engine::{engine_binary, EngineProcess};
use e2e::pg::PgCluster;
use e2e::redis::RedisServer;

/// p95 target of a request that reaches Postgres, in milliseconds.
const UNCACHED_TARGET_MS: f64 = 50.0;
/// p95 target of a Redis hit, in milliseconds.
const CACHED_TARGET_MS: f64 = 2.0;
/// The customer with the most events (seeded activity is skewed to low numbers).
const HEAVY_CUSTOMER: &str = "cus_000000";

/// A customer with a typical number of events (about 20): the one a quarter of
/// the way through the seeded customers (`engine seed` makes one per 20 events).
fn typical_customer(events: u64) -> String {
    format!("cus_{:06}", (events / 20).max(10) / 4)
}

#[derive(Debug, Clone)]
struct Options {
    events: u64,
    seed: u64,
    requests: usize,
    warmup: usize,
    budget: Duration,
    rps_time: Duration,
    deep_pages: usize,
    shared_buffers: Option<String>,
    work_mem: Option<String>,
    compare: Vec<String>,
    keep: bool,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        events: 1_000_000,
        seed: 1,
        requests: 200,
        warmup: 10,
        budget: Duration::from_secs(15),
        rps_time: Duration::from_secs(3),
        deep_pages: 100,
        shared_buffers: None,
        work_mem: None,
        compare: Vec::new(),
        keep: false,
    };
    let mut no_compare = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => o.events = value()?.parse()?,
            "--seed" => o.seed = value()?.parse()?,
            "--requests" => o.requests = value()?.parse()?,
            "--warmup" => o.warmup = value()?.parse()?,
            "--budget-secs" => o.budget = Duration::from_secs(value()?.parse()?),
            "--rps-secs" => o.rps_time = Duration::from_secs(value()?.parse()?),
            "--deep-pages" => o.deep_pages = value()?.parse()?,
            "--shared-buffers" => o.shared_buffers = Some(value()?),
            "--work-mem" => o.work_mem = Some(value()?),
            "--compare-index" => o.compare.push(value()?),
            "--no-compare" => no_compare = true,
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                println!(
                    "usage: engine_db [--events N] [--seed S] [--requests N] [--warmup N] \
                     [--budget-secs S] [--rps-secs S] [--deep-pages N] [--shared-buffers SIZE] \
                     [--work-mem SIZE] [--compare-index NAME]... [--no-compare] [--keep]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other} (try --help)"),
        }
    }
    if no_compare {
        o.compare.clear();
    }
    Ok(o)
}

/// One endpoint under test.
struct Endpoint {
    label: &'static str,
    path: String,
    cacheable: bool,
}

fn endpoints(w: &Windows, deep_cursor: &str, events: u64) -> Vec<Endpoint> {
    let e = |label, path: String, cacheable| Endpoint {
        label,
        path,
        cacheable,
    };
    vec![
        e(
            "(a) summary month, interval=day",
            format!(
                "/summary?from={}&to={}&interval=day",
                w.month_from, w.month_to
            ),
            true,
        ),
        e(
            "(b) summary month, group_by=product",
            format!(
                "/summary?from={}&to={}&interval=day&group_by=product",
                w.month_from, w.month_to
            ),
            true,
        ),
        e(
            "(a'') summary month at noon, interval=day",
            format!(
                "/summary?from={}&to={}&interval=day",
                shift(&w.month_from, 12),
                shift(&w.month_to, 12)
            ),
            true,
        ),
        e(
            "(c) summary year, interval=month",
            format!(
                "/summary?from={}&to={}&interval=month",
                w.year_from, w.year_to
            ),
            true,
        ),
        e("(d) list first page", "/events?limit=50".to_owned(), false),
        e(
            "(e) list deep page (cursor)",
            format!("/events?limit=50&cursor={deep_cursor}"),
            false,
        ),
        e(
            "(f) list by customer (heaviest)",
            format!("/events?limit=50&customer_id={HEAVY_CUSTOMER}"),
            false,
        ),
        e(
            "(g) customer (heaviest)",
            format!("/customers/{HEAVY_CUSTOMER}"),
            true,
        ),
        e(
            "(g') customer (typical)",
            format!("/customers/{}", typical_customer(events)),
            true,
        ),
    ]
}

fn seed(url: &str, o: &Options) -> anyhow::Result<()> {
    let dir = std::env::temp_dir();
    let out = Command::new(engine_binary())
        .args(["seed", "--events", &o.events.to_string()])
        .args(["--seed", &o.seed.to_string()])
        .args(["--database-url", url])
        .env_remove("ENGINE_CONFIG")
        .env_remove("DATABASE_URL")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run engine seed")?;
    if !out.status.success() {
        bail!("engine seed failed ({})", out.status);
    }
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    Ok(())
}

/// Walks `pages` pages of 500 events; returns the cursor after them and the last
/// event's (occurred_at, id).
async fn deep_cursor(
    client: &reqwest::Client,
    engine: &EngineProcess,
    pages: usize,
) -> anyhow::Result<(String, String, String)> {
    let mut cursor: Option<String> = None;
    let mut last = (String::new(), String::new());
    for _ in 0..pages {
        let url = match &cursor {
            Some(c) => engine.api_url(&format!("/events?limit=500&cursor={c}")),
            None => engine.api_url("/events?limit=500"),
        };
        let page: serde_json::Value = client.get(url).send().await?.json().await?;
        if let Some(e) = page["data"].as_array().and_then(|d| d.last()) {
            last = (
                e["occurred_at"].as_str().unwrap_or_default().to_owned(),
                e["id"].as_str().unwrap_or_default().to_owned(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let cursor = cursor.context("the event list has no second page")?;
    Ok((cursor, last.0, last.1))
}

fn explain_all(psql: &Psql, w: &Windows, deep: &(String, String, String)) -> anyhow::Result<()> {
    let noon = (shift(&w.month_from, 12), shift(&w.month_to, 12));
    let plans = [
        (
            "(a) summary month, interval=day",
            summary_sql("YYYY-MM-DD", false, &w.month_from, &w.month_to)?,
        ),
        (
            "(a'') summary month at noon, interval=day",
            summary_sql("YYYY-MM-DD", false, &noon.0, &noon.1)?,
        ),
        (
            "(b) summary month, group_by=product",
            summary_sql("YYYY-MM-DD", true, &w.month_from, &w.month_to)?,
        ),
        (
            "(c) summary year, interval=month",
            summary_sql("YYYY-MM", false, &w.year_from, &w.year_to)?,
        ),
        ("(d) list first page", list_sql(None, None, 50)),
        (
            "(e) list deep page",
            list_sql(None, Some((&deep.1, &deep.2)), 50),
        ),
        (
            "(f) list by customer",
            list_sql(Some(HEAVY_CUSTOMER), None, 50),
        ),
        ("(g) customer", customer_sql(HEAVY_CUSTOMER)),
    ];
    for (label, sql) in plans {
        println!("\n#### {label}\n```\n{sql}\n\n{}\n```", psql.explain(&sql)?);
    }
    Ok(())
}

/// What every measured mode shares.
struct Ctx<'a> {
    o: &'a Options,
    cluster: &'a PgCluster,
    url: &'a str,
    windows: &'a Windows,
    /// The cursor of the deep page.
    cursor: &'a str,
}

/// Restarts Postgres, starts the engine (with Redis when `redis` is given) and
/// measures every endpoint; appends one row per endpoint to `rows`.
async fn run_mode(
    ctx: &Ctx<'_>,
    phase: &str,
    redis: Option<&RedisServer>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let (o, w) = (ctx.o, ctx.windows);
    let psql = Psql::new(ctx.url);
    restart_postgres(
        &ctx.cluster.binaries().tool("pg_ctl"),
        ctx.cluster.data_dir(),
    )?;
    psql.wait_ready(Duration::from_secs(30))?;
    let redis_url = redis.map(|r| format!("redis://{}", r.addr()));
    let mut envs = vec![("RUST_LOG", "warn")];
    if let Some(u) = &redis_url {
        envs.push(("ENGINE_REDIS_URL", u.as_str()));
    }
    let engine = EngineProcess::start_with(ctx.url, &envs);
    let mode = if redis.is_some() {
        "cached"
    } else {
        "uncached"
    };
    let client = reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()?;
    println!("\n### {phase}, {mode}");
    for ep in endpoints(w, ctx.cursor, o.events) {
        let target = if redis.is_some() && ep.cacheable {
            CACHED_TARGET_MS
        } else {
            UNCACHED_TARGET_MS
        };
        let url = engine.api_url(&ep.path);
        let sample = measure(&client, &url, o.warmup, o.requests, o.budget).await?;
        let round = drive(&url, 8, o.rps_time).await;
        println!(
            "  {:<38} first {:>8.1} ms  p50 {:>7.2}  p95 {:>7.2}  p99 {:>7.2} ms  n {:>4}  hits {:>4}  {:>6.0} req/s @8{}",
            ep.label,
            sample.first.as_secs_f64() * 1e3,
            sample.ms(0.5),
            sample.ms(0.95),
            sample.ms(0.99),
            sample.latencies.len(),
            sample.hits,
            round.rps(),
            sample
                .first_error
                .as_ref()
                .map(|e| format!("  first error: {e}"))
                .unwrap_or_default()
        );
        rows.push(Row {
            phase: phase.to_owned(),
            mode: mode.to_owned(),
            endpoint: ep.label.to_owned(),
            sample,
            rps8: round.rps(),
            target_p95_ms: target,
            cacheable: ep.cacheable,
        });
    }
    Ok(())
}

async fn run(o: Options) -> anyhow::Result<()> {
    let cluster = PgCluster::try_start()?;
    let url = cluster.url();
    let psql = Psql::new(&url);
    let mut settings = Vec::new();
    if let Some(v) = &o.shared_buffers {
        settings.push(format!("ALTER SYSTEM SET shared_buffers = '{v}'"));
    }
    if let Some(v) = &o.work_mem {
        settings.push(format!("ALTER SYSTEM SET work_mem = '{v}'"));
    }
    for s in &settings {
        psql.run(s)?;
    }
    println!(
        "engine {}; Postgres {} at {url}",
        engine_binary().display(),
        psql.run("SHOW server_version")?
    );
    println!("seeding {} events (seed {}) ...", o.events, o.seed);
    seed(&url, &o)?;
    psql.run("VACUUM ANALYZE revenue_events, revenue_daily")?;
    // Restart once so ALTER SYSTEM settings (shared_buffers) apply.
    restart_postgres(&cluster.binaries().tool("pg_ctl"), cluster.data_dir())?;
    psql.wait_ready(Duration::from_secs(30))?;
    println!(
        "settings: {}",
        psql.run(
            "SELECT string_agg(name || '=' || setting || COALESCE(unit, ''), ', ' ORDER BY name) \
             FROM pg_settings WHERE name IN ('shared_buffers', 'work_mem', 'effective_cache_size', \
             'random_page_cost', 'max_parallel_workers_per_gather', 'fsync', 'jit', \
             'synchronous_commit', 'server_version')"
        )?
    );
    println!(
        "table {} (rollup revenue_daily: {} rows, {}), indexes: {}",
        psql.run("SELECT pg_size_pretty(pg_table_size('revenue_events'))")?,
        psql.run("SELECT count(*) FROM revenue_daily")?,
        psql.run("SELECT pg_size_pretty(pg_total_relation_size('revenue_daily'))")?,
        psql.run(
            "SELECT string_agg(indexrelname || ' ' || pg_size_pretty(pg_relation_size(indexrelid)), \
             ', ' ORDER BY indexrelname) FROM pg_stat_user_indexes WHERE relname = 'revenue_events'"
        )?
    );
    let today = chrono::Utc::now().date_naive();
    let w = Windows::for_day(today);
    println!(
        "windows: month [{}, {}), year [{}, {})",
        w.month_from, w.month_to, w.year_from, w.year_to
    );

    // The definitions of the compared indexes, to drop and re-create them.
    let mut defs = Vec::new();
    for name in &o.compare {
        let def = psql.run(&format!(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_stat_user_indexes WHERE indexrelname = '{name}'"
        ))?;
        if def.is_empty() {
            bail!("index {name} does not exist (is the migration in the engine binary?)");
        }
        defs.push((name.clone(), def));
    }
    let phases: Vec<&str> = if defs.is_empty() {
        vec!["as migrated"]
    } else {
        vec!["before", "after"]
    };

    // The deep page: walk the list once, with an engine started only for that.
    let deep = {
        let engine = EngineProcess::start_with(&url, &[("RUST_LOG", "warn")]);
        let client = reqwest::Client::new();
        deep_cursor(&client, &engine, o.deep_pages).await?
    };
    println!(
        "deep page: after {} events, cursor at occurred_at {} id {}",
        o.deep_pages * 500,
        deep.1,
        deep.2
    );
    let ctx = Ctx {
        o: &o,
        cluster: &cluster,
        url: &url,
        windows: &w,
        cursor: &deep.0,
    };
    let mut rows = Vec::new();
    let redis = RedisServer::start();
    for phase in phases {
        if phase == "before" {
            for (name, _) in &defs {
                psql.run(&format!("DROP INDEX {name}"))?;
            }
            psql.run("ANALYZE revenue_events")?;
        } else if phase == "after" {
            for (_, def) in &defs {
                psql.run(def)?;
            }
            psql.run("VACUUM ANALYZE revenue_events, revenue_daily")?;
        }
        let indexes = psql.run(
            "SELECT string_agg(indexrelname, ', ' ORDER BY indexrelname) FROM pg_stat_user_indexes \
             WHERE relname = 'revenue_events'",
        )?;
        println!("\n## Index set \"{phase}\": {indexes}");
        run_mode(&ctx, phase, None, &mut rows).await?;
        println!("\n### EXPLAIN (ANALYZE, BUFFERS), index set \"{phase}\" (second run of each)");
        explain_all(&psql, &w, &deep)?;
        redis.command(&["FLUSHALL"])?;
        run_mode(&ctx, phase, Some(&redis), &mut rows).await?;
    }
    println!(
        "\n## Results: {} events, single client sequential (p50/p95/p99), 8 connections for {} s (req/s)\n",
        o.events,
        o.rps_time.as_secs()
    );
    println!("{}", markdown(&rows));
    if o.keep {
        println!("--keep: Postgres stays up at {url}; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    // The engine must not pick up a cache or config from the caller's environment.
    for var in ["ENGINE_REDIS_URL", "ENGINE_CONFIG", "DATABASE_URL"] {
        std::env::remove_var(var);
    }
    tokio::runtime::Runtime::new()?.block_on(run(o))
}
