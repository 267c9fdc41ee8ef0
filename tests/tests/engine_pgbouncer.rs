//! End-to-end test of the Revenue Engine behind a real PgBouncer in transaction
//! pooling mode (`database.pgbouncer: true`, here as `ENGINE_DB_PGBOUNCER=true`).
//!
//! One throwaway Postgres cluster, one PgBouncer in front of it with 3 server
//! connections per database, and the `engine` binary whose `DATABASE_URL` points
//! at PgBouncer with a larger pool of its own, so every request's transaction may
//! land on any server connection. Covers: migrations at start-up over the direct
//! URL (`ENGINE_DB_MIGRATIONS_URL`),
//! 200 concurrent writes (with and without `Idempotency-Key`), 20 concurrent
//! retries of one key, paging through every event, exact summary and customer
//! totals, and a restart against the migrated database (no advisory lock left
//! behind). PgBouncer's `SHOW POOLS`/`SHOW STATS` and Postgres' `pg_stat_activity`
//! prove the traffic went through PgBouncer and never used more than the pool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::engine::EngineProcess;
use e2e::pg::PgCluster;
use e2e::pgbouncer::{number, PgBouncer, PgBouncerSettings};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// PgBouncer's `default_pool_size`: server connections per database.
const POOL_SIZE: u32 = 3;
/// The engine's own pool: more client connections than PgBouncer has servers.
const ENGINE_POOL: &str = "12";
/// Events written concurrently.
const EVENTS: usize = 200;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;
/// Concurrent retries of one idempotency key.
const RETRIES: usize = 20;

/// The engine's settings for this deployment.
fn engine_env(direct_url: &str) -> [(&'static str, &str); 3] {
    [
        ("ENGINE_DB_PGBOUNCER", "true"),
        ("ENGINE_DB_MAX_CONNECTIONS", ENGINE_POOL),
        ("ENGINE_DB_MIGRATIONS_URL", direct_url),
    ]
}

/// Event number `i` of the load: 10 customers, 2 products, 2 currencies, every
/// fifth event a refund, spread over January and February 2026.
fn event(i: usize) -> Value {
    json!({
        "customer_id": format!("cus_{}", i % 10),
        "product": if i % 2 == 0 { "basic" } else { "pro" },
        "kind": if i % 5 == 4 { "refund" } else { "charge" },
        "amount": 100 + i as i64,
        "currency": if i % 3 == 0 { "EUR" } else { "USD" },
        "occurred_at": format!("2026-{:02}-{:02}T{:02}:00:00Z", 1 + i % 2, 1 + i % 28, i % 24),
    })
}

/// Gross, refunds and count of `events`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Totals {
    gross: i64,
    refunds: i64,
    count: i64,
}

impl Totals {
    fn add(&mut self, e: &Value) {
        let amount = e["amount"].as_i64().unwrap();
        if e["kind"] == "refund" {
            self.refunds += amount;
        } else {
            self.gross += amount;
        }
        self.count += 1;
    }
}

/// Runs SQL directly on the cluster (not through PgBouncer), on the database
/// named at the end of `url`, and returns what psql printed (unaligned, tuples
/// only).
fn sql(cluster: &PgCluster, url: &str, sql: &str) -> String {
    let db = url.rsplit('/').next().unwrap_or_default();
    cluster
        .sql(db, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
}

/// POSTs `body` to `/events` (with `key` as `Idempotency-Key` if given); returns
/// status, `Idempotent-Replayed` header and body.
async fn post(
    http: &Client,
    url: &str,
    body: &Value,
    key: Option<&str>,
) -> (StatusCode, bool, Value) {
    let mut req = http.post(url).json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    (status, replayed, resp.json().await.unwrap_or(Value::Null))
}

async fn get(http: &Client, url: &str) -> Value {
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
    body
}

/// Largest number of server connections PgBouncer held for the database (from
/// `SHOW POOLS`) and of backends Postgres had for it (from `pg_stat_activity`),
/// sampled in a background thread until stopped.
struct PoolWatch {
    stop: Arc<AtomicBool>,
    max_pgbouncer: Arc<AtomicU64>,
    max_postgres: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PoolWatch {
    fn start(
        cluster: &'static PgCluster,
        bouncer: Arc<PgBouncer>,
        db: String,
        direct: String,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max_pgbouncer = Arc::new(AtomicU64::new(0));
        let max_postgres = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, max_pgbouncer, max_postgres, samples) = (
                Arc::clone(&stop),
                Arc::clone(&max_pgbouncer),
                Arc::clone(&max_postgres),
                Arc::clone(&samples),
            );
            std::thread::spawn(move || {
                let count = format!(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{db}' \
                     AND application_name NOT IN ('psql', 'revenue-engine-migrations')"
                );
                while !stop.load(Ordering::Relaxed) {
                    max_pgbouncer.fetch_max(bouncer.server_connections(&db), Ordering::Relaxed);
                    let backends = sql(cluster, &direct, &count).parse().unwrap();
                    max_postgres.fetch_max(backends, Ordering::Relaxed);
                    samples.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        PoolWatch {
            stop,
            max_pgbouncer,
            max_postgres,
            samples,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns (max via PgBouncer, max via Postgres, samples).
    fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("pool watch thread panicked");
        }
        (
            self.max_pgbouncer.load(Ordering::Relaxed),
            self.max_postgres.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_works_behind_pgbouncer_in_transaction_mode() {
    let started = Instant::now();
    let cluster = PgCluster::shared();
    let bouncer = Arc::new(PgBouncer::start_with(
        cluster,
        PgBouncerSettings {
            default_pool_size: POOL_SIZE,
            ..PgBouncerSettings::default()
        },
    ));
    let direct = cluster.create_database("behind_pgbouncer");
    let db = direct.rsplit('/').next().unwrap().to_owned();
    let url = bouncer.url_for(&db);

    // The watch also counts the engine's start-up (migrations) connections.
    let watch = PoolWatch::start(cluster, Arc::clone(&bouncer), db.clone(), direct.clone());

    // Start-up: migrations run over the direct URL (with sqlx's advisory lock),
    // everything else through PgBouncer.
    let mut engine = EngineProcess::start_with(&url, &engine_env(&direct));
    let migrations = sql(
        cluster,
        &direct,
        "SELECT COUNT(*) || '/' || COUNT(*) FILTER (WHERE success) FROM _sqlx_migrations",
    );
    assert_ne!(migrations, "0/0", "no migration recorded");
    let http = Client::new();
    let events_url = engine.api_url("/events");

    // 200 concurrent writes, half of them keyed, through 3 server connections.
    let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let tasks: Vec<_> = (0..EVENTS)
        .map(|i| {
            let (http, url, semaphore) = (http.clone(), events_url.clone(), Arc::clone(&semaphore));
            tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await.unwrap();
                let key = (i % 2 == 0).then(|| format!("load-{i}"));
                let (status, replayed, body) = post(&http, &url, &event(i), key.as_deref()).await;
                (i, status, replayed, body)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut ids = BTreeSet::new();
    for task in tasks {
        let (i, status, replayed, body) = task.await.unwrap();
        if status != StatusCode::CREATED || replayed {
            failures.push(format!("event {i}: {status} replayed={replayed} {body}"));
        } else {
            ids.insert(body["id"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {EVENTS} writes failed, e.g. {:?}; engine log tail:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        engine.log_tail(20)
    );
    assert_eq!(ids.len(), EVENTS);

    // The engine opened more client connections than PgBouncer has servers, so
    // they really shared them.
    let pools = bouncer
        .admin_row("SHOW POOLS", &db)
        .expect("no PgBouncer pool for the database");
    let clients = number(&pools, "cl_active") + number(&pools, "cl_waiting");
    assert!(
        clients > u64::from(POOL_SIZE),
        "only {clients} client connections: the test did not make them share servers"
    );

    // 20 concurrent retries of one key: one event, one original, 19 replays.
    let retry_body = json!({"customer_id": "cus_retry", "product": "pro", "kind": "charge",
                            "amount": 4242, "currency": "USD",
                            "occurred_at": "2026-03-01T00:00:00Z"});
    let barrier = Arc::new(tokio::sync::Barrier::new(RETRIES));
    let tasks: Vec<_> = (0..RETRIES)
        .map(|_| {
            let (http, url, body, barrier) = (
                http.clone(),
                events_url.clone(),
                retry_body.clone(),
                Arc::clone(&barrier),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                post(&http, &url, &body, Some("one-key-for-all")).await
            })
        })
        .collect();
    let mut retry_ids = BTreeSet::new();
    let mut originals = 0;
    for task in tasks {
        let (status, replayed, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        retry_ids.insert(body["id"].as_str().unwrap().to_owned());
        originals += usize::from(!replayed);
    }
    assert_eq!(retry_ids.len(), 1, "{retry_ids:?}");
    assert_eq!(originals, 1);
    ids.extend(retry_ids);
    let total = EVENTS + 1;
    assert_eq!(
        sql(cluster, &direct, "SELECT COUNT(*) FROM revenue_events"),
        total.to_string()
    );

    // Paging through everything: every event exactly once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut req = http.get(&events_url).query(&[("limit", "17")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c.as_str())]);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let page: Value = resp.json().await.unwrap();
        pages += 1;
        for e in page["data"].as_array().unwrap() {
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages <= total, "pagination does not end");
    }
    assert_eq!(pages, total.div_ceil(17));
    assert_eq!(seen.len(), total, "duplicates or gaps while paging");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), ids);

    // Exact totals, computed from the same events.
    let mut months: BTreeMap<(String, String), Totals> = BTreeMap::new();
    let mut customer_3: BTreeMap<String, Totals> = BTreeMap::new();
    for i in 0..EVENTS {
        let e = event(i);
        let month = e["occurred_at"].as_str().unwrap()[..7].to_owned();
        let currency = e["currency"].as_str().unwrap().to_owned();
        months.entry((month, currency.clone())).or_default().add(&e);
        if e["customer_id"] == "cus_3" {
            customer_3.entry(currency).or_default().add(&e);
        }
    }
    months
        .entry(("2026-03".to_owned(), "USD".to_owned()))
        .or_default()
        .add(&retry_body);
    let expected_summary: Vec<Value> = months
        .iter()
        .map(|((bucket, currency), t)| {
            json!({"bucket": bucket, "currency": currency, "gross": t.gross,
                   "refunds": t.refunds, "net": t.gross - t.refunds, "count": t.count})
        })
        .collect();
    let summary = get(&http, &engine.api_url("/summary?interval=month")).await;
    assert_eq!(summary["data"], json!(expected_summary));
    // A spot check of the arithmetic above: January USD is the 66 even numbers
    // below 200 not divisible by 3.
    assert_eq!(summary["data"][1]["bucket"], "2026-01");
    assert_eq!(summary["data"][1]["currency"], "USD");
    assert_eq!(summary["data"][1]["count"], 66);

    let customer = get(&http, &engine.api_url("/customers/cus_3")).await;
    let rows = customer["data"].as_array().unwrap();
    assert_eq!(rows.len(), customer_3.len(), "{customer}");
    for (row, (currency, t)) in rows.iter().zip(&customer_3) {
        assert_eq!(row["currency"], currency.as_str(), "{customer}");
        assert_eq!(row["gross"], t.gross, "{customer}");
        assert_eq!(row["refunds"], t.refunds, "{customer}");
        assert_eq!(row["lifetime_value"], t.gross - t.refunds, "{customer}");
        assert_eq!(row["count"], t.count, "{customer}");
    }

    // No session advisory lock (sqlx's migration lock) is held on any backend.
    assert_eq!(
        sql(
            cluster,
            &direct,
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'"
        ),
        "0"
    );

    // Restart against the migrated database: start-up must not wait for a lock,
    // and no prepared statement left on PgBouncer's server connections by the
    // first engine may clash with the second's.
    let status = engine.terminate();
    assert!(status.success(), "engine exited with {status}");
    let restart = Instant::now();
    let engine = EngineProcess::start_with(&url, &engine_env(&direct));
    assert!(
        restart.elapsed() < Duration::from_secs(10),
        "restart took {:?}",
        restart.elapsed()
    );
    assert_eq!(
        sql(
            cluster,
            &direct,
            "SELECT COUNT(*) || '/' || COUNT(*) FILTER (WHERE success) FROM _sqlx_migrations"
        ),
        migrations,
        "migrations re-applied or changed on restart"
    );
    let summary_again = get(&http, &engine.api_url("/summary?interval=month")).await;
    assert_eq!(summary_again["data"], summary["data"]);
    let (status, _, body) = post(&http, &engine.api_url("/events"), &event(0), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // PgBouncer saw the traffic and never held more than POOL_SIZE servers.
    let (max_pgbouncer, max_postgres, samples) = watch.finish();
    assert!(samples > 0);
    assert!(
        (1..=u64::from(POOL_SIZE)).contains(&max_pgbouncer),
        "PgBouncer held {max_pgbouncer} server connections (pool size {POOL_SIZE})"
    );
    assert!(
        max_postgres <= u64::from(POOL_SIZE),
        "Postgres saw {max_postgres} backends for {db} (pool size {POOL_SIZE})"
    );
    let pools = bouncer
        .admin_row("SHOW POOLS", &db)
        .expect("no PgBouncer pool for the database");
    assert_eq!(pools["pool_mode"], "transaction");
    // Statistics are refreshed every second (stats_period = 1).
    let deadline = Instant::now() + Duration::from_secs(5);
    let min_xacts = (EVENTS + RETRIES + pages) as u64;
    let xacts = loop {
        let stats = bouncer.admin_row("SHOW STATS", &db).unwrap_or_default();
        let xacts = number(&stats, "total_xact_count");
        if xacts >= min_xacts || Instant::now() > deadline {
            break xacts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        xacts >= min_xacts,
        "SHOW STATS counts {xacts} transactions for {db}, expected at least {min_xacts}"
    );
    eprintln!(
        "pgbouncer test: {xacts} transactions through PgBouncer, at most {max_pgbouncer} \
         server connections ({max_postgres} seen by Postgres, {samples} samples), \
         {clients} client connections, {:?} in total",
        started.elapsed()
    );
}
