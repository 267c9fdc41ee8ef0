//! End-to-end tests of the engine's read/write splitting over a real Postgres
//! streaming replica (`initdb` primary, `pg_basebackup -R` replica, both on free
//! ports): reads land on the replica (seen in its `pg_stat_activity` and in the
//! data it serves while its replay is paused), `Consistency-Token` gives
//! read-your-writes, a replica lagging past `max_replica_lag` is skipped, a
//! replica that stops costs no failed request and is used again once it is back,
//! and the Redis cache is never filled from a replica behind its version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::engine::EngineProcess;
use e2e::pg::PgCluster;
use e2e::redis::RedisServer;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// A primary, its replica, one database on both, and an engine using them.
/// Fields drop in order: the engine stops before the servers.
struct Ctx {
    engine: EngineProcess,
    http: Client,
    db: String,
    replica: PgCluster,
    _primary: PgCluster,
    _redis: Option<RedisServer>,
}

impl Ctx {
    /// Starts everything; `max_lag` is the engine's `max_replica_lag`. Returns once
    /// the engine serves and the replica is healthy.
    async fn start(name: &str, max_lag: &str, redis: bool) -> Self {
        Self::start_with(name, max_lag, redis, &[]).await
    }

    /// Like [`Ctx::start`], with more environment variables for the engine.
    async fn start_with(name: &str, max_lag: &str, redis: bool, extra: &[(&str, &str)]) -> Self {
        let primary = PgCluster::start();
        let url = primary.create_database(name);
        let db = url.rsplit('/').next().unwrap().to_owned();
        let replica = primary.start_replica().expect("replica");
        let redis = redis.then(RedisServer::start);
        let replica_url = replica.url_for(&db);
        let redis_url = redis.as_ref().map(|r| format!("redis://{}/0", r.addr()));
        let mut envs = vec![
            ("ENGINE_DB_REPLICAS", replica_url.as_str()),
            ("ENGINE_DB_MAX_REPLICA_LAG", max_lag),
            ("ENGINE_DB_REPLICA_CHECK_INTERVAL", "200ms"),
            ("ENGINE_DB_ACQUIRE_TIMEOUT", "2s"),
        ];
        if let Some(url) = &redis_url {
            envs.push(("ENGINE_REDIS_URL", url.as_str()));
            envs.push(("ENGINE_SUMMARY_TTL_SECS", "300"));
        }
        envs.extend_from_slice(extra);
        let engine = EngineProcess::start_with(&url, &envs);
        let ctx = Ctx {
            engine,
            http: Client::new(),
            db,
            replica,
            _primary: primary,
            _redis: redis,
        };
        ctx.wait_for_state("healthy").await;
        ctx
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(self.engine.api_url(path));
        if let Some(t) = token {
            req = req.header("Consistency-Token", t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Posts a charge; returns the stored event and the consistency token.
    async fn charge(&self, customer: &str, amount: i64) -> (Value, String) {
        let body = json!({"customer_id": customer, "product": "pro", "kind": "charge",
                          "amount": amount, "currency": "EUR",
                          "occurred_at": "2026-03-01T10:00:00Z"});
        let resp = self
            .http
            .post(self.engine.api_url("/events"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let token = resp
            .headers()
            .get("consistency-token")
            .expect("a write answers a Consistency-Token")
            .to_str()
            .unwrap()
            .to_owned();
        (resp.json().await.unwrap(), token)
    }

    /// The ids of the first page of `GET /events` (served wherever the engine
    /// chooses, or where `token` allows).
    async fn event_ids(&self, token: Option<&str>) -> Vec<String> {
        let (status, page) = self.get("/events?limit=500", token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The engine's metrics, `name{labels}` → value.
    async fn metrics(&self) -> HashMap<String, f64> {
        metrics_text(&self.http, &self.engine)
            .await
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    async fn reads(&self, target: &str) -> f64 {
        self.metrics()
            .await
            .get(&format!("engine_db_reads_total{{target=\"{target}\"}}"))
            .copied()
            .unwrap_or(-1.0)
    }

    /// Waits (up to 15 s) until the engine reports `replica-0` in `state`.
    async fn wait_for_state(&self, state: &str) {
        let key = format!("engine_db_replica_state{{replica=\"replica-0\",state=\"{state}\"}}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let metrics = self.metrics().await;
            if metrics.get(&key) == Some(&1.0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica-0 never became {state}; metrics: {metrics:?}\nengine log:\n{}",
                self.engine.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 15 s) until the replica holds `n` events.
    async fn wait_replayed(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // Until the replica has replayed the migrations there is no table.
            let count = self
                .replica
                .sql(&self.db, "SELECT count(*) FROM revenue_events")
                .unwrap_or_else(|e| e.to_string());
            if count == n.to_string() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica has {count} events, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many connections the engine has open on `server`
    /// (`pg_stat_activity`, by application name).
    fn engine_connections(&self, server: &PgCluster) -> usize {
        let sql = "SELECT count(*) FROM pg_stat_activity \
                   WHERE application_name = 'revenue-engine'";
        server.sql("postgres", sql).unwrap().parse().unwrap()
    }

    /// How many scans of `revenue_events` `server` has counted (its own
    /// statistics: a standby counts the reads it serves).
    fn event_scans(&self, server: &PgCluster) -> i64 {
        let sql = "SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables \
                   WHERE relname = 'revenue_events'";
        server.sql(&self.db, sql).unwrap().parse().unwrap()
    }

    /// Waits (up to 15 s: an idle backend flushes its statistics within 10 s) until
    /// `server` has counted more than `before` scans of `revenue_events`.
    async fn wait_for_scans(&self, server: &PgCluster, before: i64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.event_scans(server) <= before {
            assert!(Instant::now() < deadline, "no scan counted on the server");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The text of the engine's `GET /metrics`.
async fn metrics_text(http: &Client, engine: &EngineProcess) -> String {
    let url = format!("{}/metrics", engine.base_url());
    http.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn reads_land_on_the_replica_and_tokens_read_your_writes() {
    let ctx = Ctx::start("rw_split", "60s", false).await;
    let (first, _) = ctx.charge("cus_a", 100).await;
    ctx.wait_replayed(1).await;

    // A read without a token is served by the replica: the engine's counters
    // show it, the engine has connections on the replica (pg_stat_activity), and
    // the replica's own statistics count a scan of the events table. (The paused
    // replay below shows it by the data served too.)
    let (replica_before, primary_before) =
        (ctx.reads("replica-0").await, ctx.reads("primary").await);
    let replica_scans = ctx.event_scans(&ctx.replica);
    assert_eq!(
        ctx.event_ids(None).await,
        vec![first["id"].as_str().unwrap()]
    );
    assert_eq!(ctx.reads("replica-0").await, replica_before + 1.0);
    assert_eq!(ctx.reads("primary").await, primary_before);
    assert!(ctx.engine_connections(&ctx.replica) >= 1);
    ctx.wait_for_scans(&ctx.replica, replica_scans).await;

    // With the replica's replay paused, a new write is on the primary only.
    ctx.replica
        .sql("postgres", "SELECT pg_wal_replay_pause()")
        .unwrap();
    let (second, token) = ctx.charge("cus_b", 250).await;
    let second_id = second["id"].as_str().unwrap();

    // Without the token the (lagging, but within 60 s) replica answers: the new
    // event is not there yet. With it, the primary answers and it is.
    assert!(!ctx.event_ids(None).await.iter().any(|id| id == second_id));
    assert!(ctx
        .event_ids(Some(&token))
        .await
        .iter()
        .any(|id| id == second_id));
    let (status, _) = ctx.get(&format!("/events/{second_id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, event) = ctx.get(&format!("/events/{second_id}"), Some(&token)).await;
    assert_eq!(
        (status, event["amount"].as_i64()),
        (StatusCode::OK, Some(250))
    );
    let (status, _) = ctx.get("/customers/cus_b", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, customer) = ctx.get("/customers/cus_b", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(customer["data"][0]["lifetime_value"], json!(250));
    let (_, summary) = ctx.get("/summary?interval=month", Some(&token)).await;
    assert_eq!(summary["data"][0]["count"], json!(2), "{summary}");
    let (_, summary) = ctx.get("/summary?interval=month", None).await;
    assert_eq!(summary["data"][0]["count"], json!(1), "{summary}");

    // An older token is satisfied by the replica again.
    let (_, old_token) = ctx.charge("cus_c", 1).await;
    ctx.replica
        .sql("postgres", "SELECT pg_wal_replay_resume()")
        .unwrap();
    ctx.wait_replayed(3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = ctx.reads("replica-0").await;
        let ids = ctx.event_ids(Some(&old_token)).await;
        assert_eq!(ids.len(), 3);
        if ctx.reads("replica-0").await > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "token reads never returned to the replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Reads tell shared caches that the token changes the answer.
    let resp = ctx
        .http
        .get(ctx.engine.api_url("/summary"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["vary"], "Consistency-Token");

    // Tokens that are not LSNs are refused, naming the header.
    for bad in ["nope", "0/", "1/2/3", "-1/0", "0/16B3748 x"] {
        let resp = ctx
            .http
            .get(ctx.engine.api_url("/events"))
            .header("Consistency-Token", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["field"], json!("Consistency-Token"), "{body}");
    }
}

#[tokio::test]
async fn a_replica_lagging_past_the_limit_is_skipped() {
    let ctx = Ctx::start("rw_lag", "1s", false).await;
    ctx.charge("cus_a", 100).await;
    ctx.wait_replayed(1).await;

    ctx.replica
        .sql("postgres", "SELECT pg_wal_replay_pause()")
        .unwrap();
    let (second, _) = ctx.charge("cus_b", 250).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    ctx.wait_for_state("lagging").await;
    let lag = ctx.metrics().await["engine_db_replica_lag_seconds{replica=\"replica-0\"}"];
    assert!(lag > 1.0, "lag {lag}");

    // Every read now goes to the primary and sees the new event, token or not.
    let before = ctx.reads("primary").await;
    for _ in 0..5 {
        assert!(ctx.event_ids(None).await.contains(&second_id));
    }
    assert_eq!(ctx.reads("primary").await, before + 5.0);

    // Caught up again, it serves reads again.
    ctx.replica
        .sql("postgres", "SELECT pg_wal_replay_resume()")
        .unwrap();
    ctx.wait_for_state("healthy").await;
    let before = ctx.reads("replica-0").await;
    assert!(ctx.event_ids(None).await.contains(&second_id));
    assert_eq!(ctx.reads("replica-0").await, before + 1.0);
}

#[tokio::test]
async fn a_stopped_replica_costs_no_failed_request() {
    // A request budget of 3 s: a read that waited for the dead (or hung)
    // replica must still fit its retry on the primary inside it (the replica
    // read timeout is a third of it, and a refused connection gives up sooner).
    let mut ctx = Ctx::start_with(
        "rw_down",
        "60s",
        false,
        &[("ENGINE_REQUEST_TIMEOUT_MS", "3000")],
    )
    .await;
    for i in 0..3 {
        ctx.charge(&format!("cus_{i}"), 10).await;
    }
    ctx.wait_replayed(3).await;

    // Reads keep flowing from several clients while the replica is killed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let http = ctx.http.clone();
            let path = if i % 2 == 0 {
                "/events?limit=10"
            } else {
                "/summary?interval=month"
            };
            let url = ctx.engine.api_url(path);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = http.get(&url).send().await.map(|r| r.status());
                    statuses.push(status.map_err(|e| e.to_string()));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctx.replica.halt().unwrap();
    ctx.wait_for_state("down").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While it is down, every read (the readers' too) goes to the primary.
    let (primary_before, replica_before) =
        (ctx.reads("primary").await, ctx.reads("replica-0").await);
    assert_eq!(ctx.event_ids(None).await.len(), 3);
    assert!(ctx.reads("primary").await > primary_before);
    assert_eq!(ctx.reads("replica-0").await, replica_before);

    // Back on the same port, it is found healthy and used again.
    ctx.replica.resume().unwrap();
    ctx.wait_for_state("healthy").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Hung instead of dead (SIGSTOP): reads give up on it within the replica
    // read timeout and go to the primary; thawed, it is used again.
    ctx.replica.freeze().unwrap();
    ctx.wait_for_state("down").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.replica.thaw().unwrap();
    ctx.wait_for_state("healthy").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for reader in readers {
        let statuses = reader.await.unwrap();
        total += statuses.len();
        let failed: Vec<_> = statuses
            .iter()
            .filter(|s| !matches!(s, Ok(StatusCode::OK)))
            .collect();
        assert!(failed.is_empty(), "failed reads: {failed:?}");
    }
    assert!(total > 40, "only {total} reads were made");
    let before = ctx.reads("replica-0").await;
    assert_eq!(ctx.event_ids(None).await.len(), 3);
    assert_eq!(ctx.reads("replica-0").await, before + 1.0);
}

#[tokio::test]
async fn an_engine_starts_with_its_replica_down_and_reads_from_the_primary() {
    let primary = PgCluster::start();
    let url = primary.create_database("rw_start_down");
    let db = url.rsplit('/').next().unwrap().to_owned();
    let mut replica = primary.start_replica().unwrap();
    let replica_url = replica.url_for(&db);
    replica.halt().unwrap();
    let engine = EngineProcess::start_with(
        &url,
        &[
            ("ENGINE_DB_REPLICAS", replica_url.as_str()),
            ("ENGINE_DB_REPLICA_CHECK_INTERVAL", "200ms"),
        ],
    );
    let http = Client::new();
    let resp = http.get(engine.api_url("/events")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let metrics = metrics_text(&http, &engine).await;
    assert!(
        metrics.contains("engine_db_replica_state{replica=\"replica-0\",state=\"down\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("engine_db_reads_total{target=\"primary\"} 1"),
        "{metrics}"
    );
    // The log says why, without the URL's password or the URL itself.
    assert!(
        engine.log().contains("replica not used for reads"),
        "{}",
        engine.log_tail(20)
    );
}

#[tokio::test]
async fn the_cache_is_never_filled_from_a_replica_behind_its_version() {
    let ctx = Ctx::start("rw_cache", "60s", true).await;
    ctx.charge("cus_a", 100).await;
    ctx.wait_replayed(1).await;
    let summary = |ctx: &Ctx| {
        let url = ctx.engine.api_url("/summary?interval=month");
        let http = ctx.http.clone();
        async move {
            let resp = http.get(url).send().await.unwrap();
            let cache = resp.headers()["x-engine-cache"]
                .to_str()
                .unwrap()
                .to_owned();
            let body: Value = resp.json().await.unwrap();
            (cache, body["data"][0]["count"].as_i64().unwrap())
        }
    };
    assert_eq!(summary(&ctx).await, ("miss".to_owned(), 1));
    assert_eq!(summary(&ctx).await, ("hit".to_owned(), 1));

    // The replica stops replaying; a write moves the cache version to its WAL
    // position, which the replica has not reached: the miss is read from the
    // primary, so the new entry (and every hit after it) includes the write.
    ctx.replica
        .sql("postgres", "SELECT pg_wal_replay_pause()")
        .unwrap();
    ctx.charge("cus_b", 5).await;
    assert_eq!(summary(&ctx).await, ("miss".to_owned(), 2));
    assert_eq!(summary(&ctx).await, ("hit".to_owned(), 2));
    // Plain reads that are not cached still come from the replica.
    assert_eq!(ctx.event_ids(None).await.len(), 1);
    ctx.replica
        .sql("postgres", "SELECT pg_wal_replay_resume()")
        .unwrap();
}

#[tokio::test]
async fn a_standby_of_another_cluster_or_a_wrong_database_is_never_used() {
    let primary = PgCluster::start();
    let url = primary.create_database("rw_foreign");
    let db = url.rsplit('/').next().unwrap().to_owned();
    // Another cluster with a database of the same name and an events table,
    // and a streaming standby of it: a replica URL pointing there by mistake.
    let other = PgCluster::start();
    other.create_database_named(&db).unwrap();
    other
        .sql(&db, "CREATE TABLE revenue_events (id TEXT)")
        .unwrap();
    let foreign = other.start_replica().unwrap();
    // Another database of the primary's cluster with the schema (staging data).
    let staging_url = primary.create_database("rw_staging");
    let staging = staging_url.rsplit('/').next().unwrap().to_owned();
    primary
        .sql(&staging, "CREATE TABLE revenue_events (id TEXT)")
        .unwrap();
    // A real replica of the primary, but wrong database names: one without the
    // schema, one with it.
    let replica = primary.start_replica().unwrap();
    let replicas = format!(
        "{},{},{}",
        foreign.url_for(&db),
        replica.url_for("postgres"),
        replica.url_for(&staging)
    );
    let engine = EngineProcess::start_with(
        &url,
        &[
            ("ENGINE_DB_REPLICAS", replicas.as_str()),
            ("ENGINE_DB_REPLICA_CHECK_INTERVAL", "200ms"),
        ],
    );
    let http = Client::new();
    let resp = http
        .post(engine.api_url("/events"))
        .json(
            &json!({"customer_id": "c", "product": "p", "kind": "charge", "amount": 1,
                      "currency": "EUR", "occurred_at": "2026-03-01T10:00:00Z"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    for _ in 0..4 {
        let resp = http.get(engine.api_url("/events")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let page: Value = resp.json().await.unwrap();
        assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    }
    let metrics = metrics_text(&http, &engine).await;
    for line in [
        "engine_db_replica_state{replica=\"replica-0\",state=\"other_cluster\"} 1",
        "engine_db_replica_state{replica=\"replica-1\",state=\"down\"} 1",
        "engine_db_replica_state{replica=\"replica-2\",state=\"down\"} 1",
        "engine_db_reads_total{target=\"primary\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    for why in [
        "no revenue_events table",
        "not the primary's (wrong database)",
    ] {
        assert!(engine.log().contains(why), "{why}: {}", engine.log_tail(20));
    }
}

#[test]
fn postgres_only_settings_on_a_sqlite_primary_are_refused() {
    let cases: &[((&str, &str), &str)] = &[
        (
            ("ENGINE_DB_REPLICAS", "postgres://u:hunter2@127.0.0.1:1/db"),
            "database.replicas: read replicas need a postgres:// primary",
        ),
        (
            ("ENGINE_DB_PGBOUNCER", "true"),
            "database.pgbouncer: PgBouncer mode needs a postgres:// primary",
        ),
        (
            (
                "ENGINE_DB_MIGRATIONS_URL",
                "postgres://u:hunter2@127.0.0.1:1/db",
            ),
            "database.migrations_url: a migrations URL needs a postgres:// primary",
        ),
    ];
    for ((name, value), message) in cases {
        let out = std::process::Command::new(e2e::engine::engine_binary())
            .arg("check")
            .env("DATABASE_URL", "sqlite::memory:")
            .env(name, value)
            .env_remove("ENGINE_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}
