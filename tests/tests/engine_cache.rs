//! End-to-end tests of the Revenue Engine's Redis read cache (`GET /summary`,
//! `GET /customers/{id}`): misses then hits with identical bodies, versioned
//! invalidation by writes (but not by idempotent replays or other customers'
//! writes), bypass while Redis is down and recovery without restarting the engine,
//! and the Prometheus counters of `GET /metrics`. Real `engine` and `redis-server`
//! processes; SQLite (a temporary file) plus one Postgres case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::engine::{sqlite_url, EngineProcess};
use e2e::pg::PgCluster;
use e2e::redis::RedisServer;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// One engine with a Redis cache (fields drop in order: the engine stops before
/// its SQLite directory is removed).
struct Ctx {
    engine: EngineProcess,
    redis: RedisServer,
    http: Client,
    _dir: Option<tempfile::TempDir>,
}

/// A GET answer: status, `X-Engine-Cache` and the exact body bytes.
struct Got {
    status: StatusCode,
    cache: String,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

impl Ctx {
    fn start_sqlite() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("e2e-engine-cache-")
            .tempdir()
            .unwrap();
        let url = sqlite_url(&dir.path().join("engine.sqlite"));
        Self::start(&url, Some(dir))
    }

    fn start_postgres(name: &str) -> Self {
        let url = PgCluster::shared().create_database(name);
        Self::start(&url, None)
    }

    fn start(database_url: &str, dir: Option<tempfile::TempDir>) -> Self {
        let redis = RedisServer::start();
        let redis_url = format!("redis://{}/0", redis.addr());
        let engine = EngineProcess::start_with(
            database_url,
            &[
                ("ENGINE_REDIS_URL", redis_url.as_str()),
                ("ENGINE_SUMMARY_TTL_SECS", "300"),
            ],
        );
        Ctx {
            engine,
            redis,
            http: Client::new(),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Got {
        let url = if path == "/metrics" {
            format!("{}/metrics", self.engine.base_url())
        } else {
            self.engine.api_url(path)
        };
        let resp = self.http.get(url).send().await.unwrap();
        let status = resp.status();
        let cache = resp
            .headers()
            .get("x-engine-cache")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.text().await.unwrap();
        Got {
            status,
            cache,
            body,
        }
    }

    /// Posts an event (with an optional `Idempotency-Key`); returns status and
    /// the `Idempotent-Replayed` header.
    async fn post(&self, customer: &str, amount: i64, key: Option<&str>) -> (StatusCode, bool) {
        let body = json!({"customer_id": customer, "product": "pro", "kind": "charge",
                          "amount": amount, "currency": "EUR",
                          "occurred_at": "2026-03-01T10:00:00Z"});
        let mut req = self
            .http
            .post(self.engine.api_url("/events"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.unwrap();
        let replayed = resp.headers().contains_key("idempotent-replayed");
        (resp.status(), replayed)
    }

    async fn record(&self, customer: &str, amount: i64) {
        let (status, _) = self.post(customer, amount, None).await;
        assert_eq!(status, StatusCode::CREATED);
    }

    /// The value of one metric line of `GET /metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let got = self.get("/metrics").await;
        assert_eq!(got.status, StatusCode::OK);
        got.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {}", got.body))
            .parse()
            .unwrap()
    }
}

/// The net of the only summary row (all test events share day and currency).
fn net(got: &Got) -> i64 {
    got.json()["data"][0]["net"].as_i64().unwrap()
}

#[tokio::test]
async fn summary_miss_then_hit_with_the_same_bytes_and_invalidated_by_a_write() {
    let ctx = Ctx::start_sqlite();
    ctx.record("cus_a", 1000).await;

    let path = "/summary?interval=day&currency=EUR";
    let first = ctx.get(path).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.cache, "miss");
    let second = ctx.get(path).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.cache, "hit");
    assert_eq!(second.body, first.body, "a hit answers the exact bytes");
    assert_eq!(net(&second), 1000);

    // Another spelling of the same query shares the entry (normalised key).
    let same = ctx.get("/summary?currency=EUR").await;
    assert_eq!(same.cache, "hit");
    assert_eq!(same.body, first.body);
    // A different query is a different entry.
    assert_eq!(ctx.get("/summary?interval=month").await.cache, "miss");

    ctx.record("cus_b", 250).await;
    let after = ctx.get(path).await;
    assert_eq!(after.cache, "miss", "a write invalidates every summary");
    assert_eq!(net(&after), 1250, "the new event is counted");
    assert_eq!(ctx.get(path).await.cache, "hit");

    assert!(!ctx.redis.keys("engine:summary:*").is_empty());
    assert_eq!(
        ctx.redis.command(&["GET", "engine:v:events"]).unwrap(),
        "$1\r\n2\r\n"
    );
}

#[tokio::test]
async fn customer_is_invalidated_only_by_its_own_writes() {
    let ctx = Ctx::start_sqlite();
    ctx.record("cus_a", 1000).await;
    ctx.record("cus_b", 500).await;

    let first = ctx.get("/customers/cus_a").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.cache, "miss");
    let hit = ctx.get("/customers/cus_a").await;
    assert_eq!(hit.cache, "hit");
    assert_eq!(hit.body, first.body);

    // Another customer's write leaves cus_a cached (but invalidates summaries).
    ctx.record("cus_b", 700).await;
    let still = ctx.get("/customers/cus_a").await;
    assert_eq!(still.cache, "hit");
    assert_eq!(still.body, first.body);

    // cus_a's own write invalidates it.
    ctx.record("cus_a", 1).await;
    let fresh = ctx.get("/customers/cus_a").await;
    assert_eq!(fresh.cache, "miss");
    assert_eq!(fresh.json()["data"][0]["lifetime_value"], 1001);

    // A 404 is not cached and carries no cache header.
    let missing = ctx.get("/customers/cus_nobody").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(ctx.get("/customers/cus_nobody").await.cache, "");
}

#[tokio::test]
async fn an_idempotent_replay_does_not_invalidate() {
    let ctx = Ctx::start_sqlite();
    let (status, replayed) = ctx.post("cus_a", 300, Some("key-1")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));

    let path = "/summary";
    assert_eq!(
        ctx.get(path).await.cache,
        "miss",
        "first insert invalidated"
    );
    assert_eq!(ctx.get(path).await.cache, "hit");
    assert_eq!(ctx.get("/customers/cus_a").await.cache, "miss");

    let (status, replayed) = ctx.post("cus_a", 300, Some("key-1")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(ctx.get(path).await.cache, "hit", "a replay stores nothing");
    assert_eq!(ctx.get("/customers/cus_a").await.cache, "hit");
    assert_eq!(
        ctx.redis.command(&["GET", "engine:v:events"]).unwrap(),
        "$1\r\n1\r\n"
    );
}

#[tokio::test]
async fn redis_down_bypasses_and_recovers_without_restarting_the_engine() {
    let mut ctx = Ctx::start_sqlite();
    ctx.record("cus_a", 1000).await;
    assert_eq!(ctx.get("/summary").await.cache, "miss");
    assert_eq!(ctx.get("/summary").await.cache, "hit");

    ctx.redis.stop();
    for _ in 0..3 {
        let got = ctx.get("/summary").await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        assert_eq!(got.cache, "bypass");
        let got = ctx.get("/customers/cus_a").await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        assert_eq!(got.cache, "bypass");
    }
    // Writes still succeed (the version bump is best effort) and reads see them.
    ctx.record("cus_a", 5).await;
    assert_eq!(net(&ctx.get("/summary").await), 1005);
    assert!(ctx.metric("engine_cache_errors_total").await >= 1.0);

    ctx.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = ctx.get("/summary").await;
        assert_eq!(got.status, StatusCode::OK);
        if got.cache == "hit" {
            assert_eq!(net(&got), 1005);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no cache hit after redis came back: {}",
            ctx.engine.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_hits_misses_and_ratio() {
    let ctx = Ctx::start_sqlite();
    ctx.record("cus_a", 1000).await;
    let got = ctx.get("/metrics").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(ctx.metric("engine_cache_hit_ratio").await, 0.0);

    ctx.get("/summary").await;
    ctx.get("/summary").await;
    ctx.get("/summary").await;
    ctx.get("/customers/cus_a").await;

    assert_eq!(ctx.metric("engine_cache_hits_total").await, 2.0);
    assert_eq!(ctx.metric("engine_cache_misses_total").await, 2.0);
    assert_eq!(ctx.metric("engine_cache_errors_total").await, 0.0);
    assert_eq!(ctx.metric("engine_cache_hit_ratio").await, 0.5);

    let resp = ctx
        .http
        .get(format!("{}/metrics", ctx.engine.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4"
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("# TYPE engine_cache_hits_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE engine_cache_hit_ratio gauge"),
        "{text}"
    );
}

#[tokio::test]
async fn without_redis_every_read_is_a_bypass() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineProcess::start(&sqlite_url(&dir.path().join("engine.sqlite")));
    let resp = Client::new()
        .get(engine.api_url("/summary"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-engine-cache"], "bypass");
}

#[tokio::test]
async fn postgres_summary_is_cached_and_invalidated() {
    let ctx = Ctx::start_postgres("engine_cache");
    ctx.record("cus_a", 40).await;
    let first = ctx.get("/summary").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.cache, "miss");
    let hit = ctx.get("/summary").await;
    assert_eq!(hit.cache, "hit");
    assert_eq!(hit.body, first.body);
    ctx.record("cus_a", 2).await;
    let after = ctx.get("/summary").await;
    assert_eq!(after.cache, "miss");
    assert_eq!(net(&after), 42);
}
