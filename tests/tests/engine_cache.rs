//! End-to-end tests of the Revenue Engine's Redis read cache (`GET /summary`,
//! `GET /customers/{id}`): misses then hits with identical bodies, versioned
//! invalidation by writes (but not by idempotent replays or other customers'
//! writes), bypass while Redis is down and recovery without restarting the engine,
//! `engine seed` invalidating what a running engine cached, and the Prometheus
//! counters of `GET /metrics`. Real `engine` and `redis-server` processes; SQLite
//! (a temporary file) plus Postgres cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Deref;
use std::time::{Duration, Instant};

use e2e::engine::{engine_binary, Backend, EngineCtx, EngineProcess, Reply};
use e2e::redis::RedisServer;
use reqwest::StatusCode;
use serde_json::json;

/// One engine with a Redis cache (fields drop in order: the engine stops before
/// Redis).
struct Ctx {
    api: EngineCtx,
    redis: RedisServer,
}

impl Deref for Ctx {
    type Target = EngineCtx;
    fn deref(&self) -> &EngineCtx {
        &self.api
    }
}

impl Ctx {
    fn start_sqlite() -> Self {
        Self::start(Backend::Sqlite, "engine_cache")
    }

    fn start(backend: Backend, name: &str) -> Self {
        let redis = RedisServer::start();
        let redis_url = format!("redis://{}/0", redis.addr());
        let api = EngineCtx::start_with(backend, name, &cache_env(&redis_url));
        Ctx { api, redis }
    }

    /// Starts another engine on this context's database and Redis, set up as
    /// the first (e.g. a second instance, or the first one restarted).
    fn start_engine(&self) -> EngineProcess {
        let redis_url = format!("redis://{}/0", self.redis.addr());
        EngineProcess::start_with(&self.database_url(), &cache_env(&redis_url))
    }

    /// Posts a EUR charge of `amount` for `customer` (with an optional
    /// `Idempotency-Key`); returns the status and whether it was a replay.
    async fn charge(&self, customer: &str, amount: i64, key: Option<&str>) -> (StatusCode, bool) {
        let body = json!({"customer_id": customer, "product": "pro", "kind": "charge",
                          "amount": amount, "currency": "EUR",
                          "occurred_at": "2026-03-01T10:00:00Z"})
        .to_string();
        let keys: Vec<&[u8]> = key.iter().map(|k| k.as_bytes()).collect();
        let reply = self.post_with_keys(&body, &keys).await;
        (reply.status, reply.replayed().is_some())
    }

    /// Posts a EUR charge that must succeed.
    async fn charged(&self, customer: &str, amount: i64) {
        let (status, _) = self.charge(customer, amount, None).await;
        assert_eq!(status, StatusCode::CREATED);
    }

    /// `GET /metrics`.
    async fn metrics(&self) -> Reply {
        let url = format!("{}/metrics", self.engine.base_url());
        Reply::read(self.http.get(url).send().await.unwrap()).await
    }

    /// The value of one metric line of `GET /metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let got = self.metrics().await;
        assert_eq!(got.status, StatusCode::OK);
        got.text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {}", got.text))
            .parse()
            .unwrap()
    }
}

/// The read-cache settings of every engine here: Redis at `redis_url`, entries
/// living 300 s.
fn cache_env(redis_url: &str) -> [(&'static str, &str); 2] {
    [
        ("ENGINE_REDIS_URL", redis_url),
        ("ENGINE_SUMMARY_TTL_SECS", "300"),
    ]
}

/// The net of the only summary row (all test events share day and currency).
fn net(got: &Reply) -> i64 {
    got.body["data"][0]["net"].as_i64().unwrap()
}

#[tokio::test]
async fn summary_miss_then_hit_with_the_same_bytes_and_invalidated_by_a_write() {
    let ctx = Ctx::start_sqlite();
    ctx.charged("cus_a", 1000).await;

    let path = "/summary?interval=day&currency=EUR";
    let first = ctx.fetch(path).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.cache(), "miss");
    let second = ctx.fetch(path).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.cache(), "hit");
    assert_eq!(second.text, first.text, "a hit answers the exact bytes");
    assert_eq!(net(&second), 1000);

    // Another spelling of the same query shares the entry (normalised key).
    let same = ctx.fetch("/summary?currency=EUR").await;
    assert_eq!(same.cache(), "hit");
    assert_eq!(same.text, first.text);
    // A different query is a different entry.
    assert_eq!(ctx.fetch("/summary?interval=month").await.cache(), "miss");

    let version = || resp_number(&ctx.redis.command(&["GET", "engine:v:events"]).unwrap());
    let before_write = version();
    ctx.charged("cus_b", 250).await;
    let after = ctx.fetch(path).await;
    assert_eq!(after.cache(), "miss", "a write invalidates every summary");
    assert_eq!(net(&after), 1250, "the new event is counted");
    assert_eq!(ctx.fetch(path).await.cache(), "hit");

    assert!(!ctx.redis.keys("engine:summary:*").is_empty());
    assert!(
        version() > before_write,
        "the write moved the events version"
    );
}

#[tokio::test]
async fn customer_is_invalidated_only_by_its_own_writes() {
    let ctx = Ctx::start_sqlite();
    ctx.charged("cus_a", 1000).await;
    ctx.charged("cus_b", 500).await;

    let first = ctx.fetch("/customers/cus_a").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.cache(), "miss");
    let hit = ctx.fetch("/customers/cus_a").await;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(hit.text, first.text);

    // Another customer's write leaves cus_a cached (but invalidates summaries).
    ctx.charged("cus_b", 700).await;
    let still = ctx.fetch("/customers/cus_a").await;
    assert_eq!(still.cache(), "hit");
    assert_eq!(still.text, first.text);

    // cus_a's own write invalidates it.
    ctx.charged("cus_a", 1).await;
    let fresh = ctx.fetch("/customers/cus_a").await;
    assert_eq!(fresh.cache(), "miss");
    assert_eq!(fresh.body["data"][0]["lifetime_value"], 1001);

    // A 404 is not cached and carries no cache header.
    let missing = ctx.fetch("/customers/cus_nobody").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(ctx.fetch("/customers/cus_nobody").await.cache(), "");
}

/// A replay stores nothing but invalidates again: a retry usually means the
/// first answer was lost, and with it perhaps the first attempt's invalidation.
#[tokio::test]
async fn an_idempotent_replay_stores_nothing_and_invalidates_again() {
    let ctx = Ctx::start_sqlite();
    let (status, replayed) = ctx.charge("cus_a", 300, Some("key-1")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));

    let path = "/summary";
    assert_eq!(
        ctx.fetch(path).await.cache(),
        "miss",
        "first insert invalidated"
    );
    assert_eq!(ctx.fetch(path).await.cache(), "hit");
    assert_eq!(ctx.fetch("/customers/cus_a").await.cache(), "miss");
    let version = || resp_number(&ctx.redis.command(&["GET", "engine:v:events"]).unwrap());
    let before_replay = version();

    let (status, replayed) = ctx.charge("cus_a", 300, Some("key-1")).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert!(version() > before_replay, "a replay moves the versions");
    let after = ctx.fetch(path).await;
    assert_eq!(
        (after.cache(), net(&after)),
        ("miss", 300),
        "nothing stored twice"
    );
    let customer = ctx.fetch("/customers/cus_a").await;
    assert_eq!((customer.cache(), lifetime_value(&customer)), ("miss", 300));
}

#[tokio::test]
async fn redis_down_bypasses_and_recovers_without_restarting_the_engine() {
    let mut ctx = Ctx::start_sqlite();
    ctx.charged("cus_a", 1000).await;
    assert_eq!(ctx.fetch("/summary").await.cache(), "miss");
    assert_eq!(ctx.fetch("/summary").await.cache(), "hit");

    ctx.redis.stop();
    for _ in 0..3 {
        let got = ctx.fetch("/summary").await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        assert_eq!(got.cache(), "bypass");
        let got = ctx.fetch("/customers/cus_a").await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        assert_eq!(got.cache(), "bypass");
    }
    // Writes still succeed (the version bump is best effort) and reads see them.
    ctx.charged("cus_a", 5).await;
    assert_eq!(net(&ctx.fetch("/summary").await), 1005);
    assert!(ctx.metric("engine_cache_errors_total").await >= 1.0);

    ctx.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = ctx.fetch("/summary").await;
        assert_eq!(got.status, StatusCode::OK);
        if got.cache() == "hit" {
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
    ctx.charged("cus_a", 1000).await;
    let got = ctx.metrics().await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(ctx.metric("engine_cache_hit_ratio").await, 0.0);

    ctx.fetch("/summary").await;
    ctx.fetch("/summary").await;
    ctx.fetch("/summary").await;
    ctx.fetch("/customers/cus_a").await;

    assert_eq!(ctx.metric("engine_cache_hits_total").await, 2.0);
    assert_eq!(ctx.metric("engine_cache_misses_total").await, 2.0);
    assert_eq!(ctx.metric("engine_cache_errors_total").await, 0.0);
    assert_eq!(ctx.metric("engine_cache_hit_ratio").await, 0.5);

    let got = ctx.metrics().await;
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = got.text;
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
    let ctx = EngineCtx::start(Backend::Sqlite, "no_redis");
    let got = ctx.fetch("/summary").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.cache(), "bypass");
}

#[tokio::test]
async fn postgres_summary_is_cached_and_invalidated() {
    let ctx = Ctx::start(Backend::Postgres, "engine_cache");
    ctx.charged("cus_a", 40).await;
    let first = ctx.fetch("/summary").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.cache(), "miss");
    let hit = ctx.fetch("/summary").await;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(hit.text, first.text);
    ctx.charged("cus_a", 2).await;
    let after = ctx.fetch("/summary").await;
    assert_eq!(after.cache(), "miss");
    assert_eq!(net(&after), 42);
}

/// Runs `request` and panics if it takes longer than `bound` (a hung Redis would
/// hold a request for the client's own timeout, 30 s and more); returns its
/// result and how long it took.
async fn within<T>(
    what: &str,
    bound: Duration,
    request: impl std::future::Future<Output = T>,
) -> (T, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(bound, request).await {
        Ok(v) => (v, started.elapsed()),
        Err(_) => panic!("{what} took longer than {bound:?} while redis hangs"),
    }
}

/// Polls `path` until its answer is no longer a bypass (Redis is back), at most
/// `limit`; returns that answer.
async fn until_cached(ctx: &Ctx, path: &str, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let got = ctx.fetch(path).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text);
        if got.cache() != "bypass" {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: still bypassing {limit:?} after redis resumed: {}",
            ctx.engine.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lifetime value of the only currency of a customer answer.
fn lifetime_value(got: &Reply) -> i64 {
    got.body["data"][0]["lifetime_value"].as_i64().unwrap()
}

/// A Redis that hangs (SIGSTOP: connections accepted, nothing answered) is not an
/// outage the engine waits out: each read answers a bypass and a write succeeds,
/// each well within a second (one command timeout, 200 ms, then the link is down).
/// After SIGCONT the cache is used again within seconds.
#[tokio::test]
async fn redis_that_hangs_is_bypassed_quickly_and_recovers() {
    let mut ctx = Ctx::start_sqlite();
    ctx.charged("cus_a", 1000).await;
    assert_eq!(ctx.fetch("/summary").await.cache(), "miss");
    assert_eq!(ctx.fetch("/summary").await.cache(), "hit");
    assert_eq!(ctx.fetch("/customers/cus_a").await.cache(), "miss");
    assert_eq!(ctx.fetch("/customers/cus_a").await.cache(), "hit");

    ctx.redis.pause();
    let bound = Duration::from_millis(1500);
    let mut took = Vec::new();
    for round in 0..3 {
        let (got, t) = within("GET /summary", bound, ctx.fetch("/summary")).await;
        took.push(("summary", t));
        assert_eq!(got.status, StatusCode::OK, "{}", got.text);
        assert_eq!(got.cache(), "bypass", "round {round}");
        assert_eq!(net(&got), 1000);
        let (got, t) = within("GET /customers", bound, ctx.fetch("/customers/cus_a")).await;
        took.push(("customer", t));
        assert_eq!(got.status, StatusCode::OK, "{}", got.text);
        assert_eq!(got.cache(), "bypass", "round {round}");
        assert_eq!(lifetime_value(&got), 1000);
    }
    let ((status, _), t) = within("POST /events", bound, ctx.charge("cus_b", 7, None)).await;
    took.push(("post", t));
    assert_eq!(status, StatusCode::CREATED);
    let (got, _) = within("GET /summary", bound, ctx.fetch("/summary")).await;
    assert_eq!((got.cache(), net(&got)), ("bypass", 1007));
    eprintln!("while redis hangs: {took:?}");
    assert!(ctx.metric("engine_cache_errors_total").await >= 1.0);

    ctx.redis.resume();
    let resumed = Instant::now();
    let got = until_cached(&ctx, "/customers/cus_a", Duration::from_secs(5)).await;
    eprintln!(
        "cache in use again {:?} after SIGCONT ({})",
        resumed.elapsed(),
        got.cache()
    );
    assert_eq!(lifetime_value(&got), 1000);
    // The cache works normally again: a write invalidates, the next read hits.
    ctx.charged("cus_a", 1).await;
    let got = ctx.fetch("/customers/cus_a").await;
    assert_eq!((got.cache(), lifetime_value(&got)), ("miss", 1001));
    assert_eq!(ctx.fetch("/customers/cus_a").await.cache(), "hit");
}

/// A write made while Redis hangs must not leave a stale cached read behind once
/// Redis answers again: the summary cached before the hang does not count the
/// event posted during it, so serving it after SIGCONT would be stale.
#[tokio::test]
async fn a_write_while_redis_hangs_leaves_no_stale_summary() {
    let mut ctx = Ctx::start_sqlite();
    ctx.charged("cus_a", 1000).await;
    assert_eq!(ctx.fetch("/summary").await.cache(), "miss");
    assert_eq!(ctx.fetch("/summary").await.cache(), "hit");
    let version_before = ctx.redis.command(&["GET", "engine:v:events"]).unwrap();

    ctx.redis.pause();
    // A read first: it times out, the link goes down, then the write follows.
    let got = ctx.fetch("/summary").await;
    assert_eq!((got.cache(), net(&got)), ("bypass", 1000));
    ctx.charged("cus_b", 7).await;
    ctx.redis.resume();

    let got = until_cached(&ctx, "/summary", Duration::from_secs(5)).await;
    let version_after = ctx.redis.command(&["GET", "engine:v:events"]).unwrap();
    assert_eq!(
        net(&got),
        1007,
        "stale summary after redis resumed: X-Engine-Cache: {}, body {}; \
         engine:v:events {version_before:?} before the hang, {version_after:?} after; \
         engine log:\n{}",
        got.cache(),
        got.text,
        ctx.engine.log_tail(10)
    );
}

/// Runs `engine seed` on the engine's database with `redis_url` as the read
/// cache; returns its stderr (panicking if it fails).
fn seed_with_cache(ctx: &Ctx, events: u64, seed: u64, redis_url: &str) -> String {
    let out = std::process::Command::new(engine_binary())
        .args(["seed", "--events", &events.to_string(), "--seed"])
        .arg(seed.to_string())
        .env("DATABASE_URL", ctx.database_url())
        .env("ENGINE_REDIS_URL", redis_url)
        .env_remove("ENGINE_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "engine seed failed:\n{stderr}");
    stderr
}

/// `engine seed` writes past the API, so it must invalidate what a running
/// engine cached: summaries, and customers that had never been written through
/// the API (no version key of their own) as well as those that had.
async fn seeding_invalidates_cached_answers(backend: Backend) {
    let ctx = Ctx::start(backend, "engine_cache_seed");
    // cus_000001 is among the seeded customers (ids from cus_000000 up).
    ctx.charged("cus_000001", 500).await;
    let summary = "/summary?interval=month";
    let before = ctx.fetch(summary).await;
    assert_eq!(before.cache(), "miss");
    assert_eq!(ctx.fetch(summary).await.cache(), "hit");
    let written = ctx.fetch("/customers/cus_000001").await;
    assert_eq!((written.status, written.cache()), (StatusCode::OK, "miss"));
    assert_eq!(ctx.fetch("/customers/cus_000001").await.cache(), "hit");
    // cus_000002 has no events yet (a 404 is never cached): the first seed gives
    // it some, then it is cached although the API never wrote it (its first
    // read starts its version key, answered from the database).
    let stderr = seed_with_cache(&ctx, 200, 11, &format!("redis://{}/0", ctx.redis.addr()));
    assert!(stderr.contains("read cache invalidated"), "{stderr}");
    let unwritten = ctx.fetch("/customers/cus_000002").await;
    assert_eq!(
        (unwritten.status, unwritten.cache()),
        (StatusCode::OK, "bypass")
    );
    assert_eq!(ctx.fetch("/customers/cus_000002").await.cache(), "miss");
    assert_eq!(ctx.fetch("/customers/cus_000002").await.cache(), "hit");
    let written = ctx.fetch("/customers/cus_000001").await;
    assert_eq!(written.cache(), "miss", "the first seed invalidated it");
    let after_first = ctx.fetch(summary).await;
    assert_eq!(after_first.cache(), "miss", "the first seed invalidated it");
    assert_ne!(after_first.text, before.text);
    assert_eq!(ctx.fetch(summary).await.cache(), "hit");

    seed_with_cache(&ctx, 200, 12, &format!("redis://{}/0", ctx.redis.addr()));
    let count = |r: &Reply| -> i64 {
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["count"].as_i64().unwrap())
            .sum()
    };
    let after_second = ctx.fetch(summary).await;
    assert_eq!(after_second.cache(), "miss");
    assert_eq!(count(&after_second), count(&after_first) + 200);
    for customer in ["cus_000001", "cus_000002"] {
        let got = ctx.fetch(&format!("/customers/{customer}")).await;
        assert_eq!(got.cache(), "miss", "{customer} after the second seed");
        let fresh = ctx
            .api
            .sql(&format!(
                "SELECT count(*) FROM revenue_events WHERE customer_id = '{customer}'"
            ))
            .parse::<i64>()
            .unwrap();
        let counted: i64 = got.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["count"].as_i64().unwrap())
            .sum();
        assert_eq!(counted, fresh, "{customer}: {}", got.text);
    }
}

e2e::on_both_backends!(seeding_invalidates_cached_answers);

#[tokio::test]
async fn seeding_with_redis_down_warns_and_still_stores() {
    let mut ctx = Ctx::start_sqlite();
    ctx.redis.stop();
    let stderr = seed_with_cache(&ctx, 100, 3, &format!("redis://{}/0", ctx.redis.addr()));
    assert!(
        stderr.contains("warning: the read cache could not be invalidated"),
        "{stderr}"
    );
    assert_eq!(ctx.api.sql("SELECT count(*) FROM revenue_events"), "100");
}

/// The number in a RESP bulk-string reply such as `$3\r\n123\r\n` (0 for nil).
fn resp_number(reply: &str) -> u64 {
    reply
        .lines()
        .find(|l| !l.starts_with('$'))
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// Redis restarted from an older snapshot brings back older versions together
/// with the entries cached under them; the engine notices the new server and
/// invalidates everything before it uses the cache again.
#[tokio::test]
async fn redis_restored_from_an_older_snapshot_serves_nothing_stale() {
    let mut ctx = Ctx::start_sqlite();
    ctx.charged("cus_a", 1000).await;
    for path in ["/summary", "/customers/cus_a"] {
        assert_eq!(ctx.fetch(path).await.cache(), "miss", "{path}");
        assert_eq!(ctx.fetch(path).await.cache(), "hit", "{path}");
    }
    ctx.redis.command(&["SAVE"]).unwrap();
    ctx.charged("cus_a", 5).await;
    assert_eq!(net(&ctx.fetch("/summary").await), 1005);
    assert_eq!(lifetime_value(&ctx.fetch("/customers/cus_a").await), 1005);

    // A crash, and a restart that loads the snapshot taken before the write.
    ctx.redis.stop();
    ctx.redis.restart();
    let summary = until_cached(&ctx, "/summary", Duration::from_secs(10)).await;
    assert_eq!(
        (summary.cache(), net(&summary)),
        ("miss", 1005),
        "{}",
        ctx.engine.log_tail(10)
    );
    let customer = until_cached(&ctx, "/customers/cus_a", Duration::from_secs(5)).await;
    assert_eq!(
        (customer.cache(), lifetime_value(&customer)),
        ("miss", 1005)
    );
    assert!(
        ctx.engine.log().contains("another server than the one"),
        "{}",
        ctx.engine.log_tail(10)
    );
    // A reconnect to the same server (a hang, not a restart) keeps the cache.
    assert_eq!(ctx.fetch("/summary").await.cache(), "hit");
}

/// When the write position cannot be read after a write (here: the role may not
/// call `pg_current_wal_insert_lsn()`), the invalidation waits for a real
/// position: reads bypass the cache meanwhile, and once positions can be read
/// again the versions move to the primary's position (not a guessed number a
/// lagging replica could satisfy) and the cache answers fresh totals.
#[tokio::test]
async fn a_write_whose_position_cannot_be_read_leaves_nothing_stale() {
    let cluster = e2e::pg::PgCluster::start();
    cluster.sql("postgres", "CREATE ROLE app LOGIN").unwrap();
    cluster
        .sql("postgres", "CREATE DATABASE app OWNER app")
        .unwrap();
    let redis = RedisServer::start();
    let redis_url = format!("redis://{}/0", redis.addr());
    let url = format!("postgres://app@127.0.0.1:{}/app", cluster.port());
    let engine = e2e::engine::EngineProcess::start_with(&url, &cache_env(&redis_url));
    let http = reqwest::Client::new();
    let charge = json!({"customer_id": "cus_p", "product": "pro", "kind": "charge",
                        "amount": 100, "currency": "EUR",
                        "occurred_at": "2026-03-01T10:00:00Z"})
    .to_string();
    let events = engine.api_url("/events");
    let customer = engine.api_url("/customers/cus_p");
    let fetch = || async { Reply::read(http.get(&customer).send().await.unwrap()).await };
    assert_eq!(
        e2e::engine::post_event(&http, &events, &charge, &[])
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(fetch().await.cache(), "miss");
    assert_eq!(fetch().await.cache(), "hit");

    let function = "FUNCTION pg_current_wal_insert_lsn()";
    cluster
        .sql("app", &format!("REVOKE EXECUTE ON {function} FROM PUBLIC"))
        .unwrap();
    let second = e2e::engine::post_event(&http, &events, &charge, &[]).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert!(second.header("consistency-token").is_none());
    let got = fetch().await;
    assert_eq!(
        (got.cache(), lifetime_value(&got)),
        ("bypass", 200),
        "{}",
        engine.log_tail(10)
    );
    let position_before_grant = cluster
        .sql("app", "SELECT pg_current_wal_insert_lsn() - '0/0'")
        .unwrap()
        .parse::<u64>()
        .unwrap();

    cluster
        .sql("app", &format!("GRANT EXECUTE ON {function} TO PUBLIC"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        let got = fetch().await;
        if got.cache() != "bypass" {
            break got;
        }
        assert!(Instant::now() < deadline, "{}", engine.log_tail(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((got.cache(), lifetime_value(&got)), ("miss", 200));
    assert_eq!(fetch().await.cache(), "hit");
    let version = resp_number(&redis.command(&["GET", "engine:v:customer:cus_p"]).unwrap());
    assert!(
        version >= position_before_grant,
        "the customer version {version} is not a WAL position past the write \
         ({position_before_grant})"
    );
}

/// `FLUSHALL` (an operator clearing the cache) removes the versions with the
/// entries: the engine notices the missing server marker, reconnects and
/// invalidates past every version it handed out, so no entry computed before
/// the flush (an in-flight miss) or under a reused version is served.
#[tokio::test]
async fn flushall_leaves_nothing_stale() {
    let ctx = Ctx::start_sqlite();
    for i in 0..3 {
        ctx.charged("cus_a", 100 + i).await;
    }
    assert_eq!(ctx.fetch("/summary").await.cache(), "miss");
    assert_eq!(ctx.fetch("/summary").await.cache(), "hit");
    ctx.redis.command(&["FLUSHALL"]).unwrap();
    let got = ctx.fetch("/summary").await;
    assert_eq!((got.cache(), net(&got)), ("bypass", 303));
    for i in 0..3 {
        ctx.charged("cus_b", 1000 + i).await;
        let got = until_cached(&ctx, "/summary", Duration::from_secs(5)).await;
        assert_eq!(
            net(&got),
            303 + (1000..=1000 + i).sum::<i64>(),
            "{}",
            got.text
        );
    }
    let got = ctx.fetch("/summary").await;
    assert_eq!((got.cache(), net(&got)), ("hit", 3306));
}

/// A pending invalidation while the link still counts as up, then Redis
/// restarted: the failed apply marks the link down, the reconnect applies it,
/// and the cache is used again (it once stayed bypassed until a restart).
#[tokio::test]
async fn a_pending_invalidation_survives_a_redis_restart_and_the_cache_resumes() {
    let mut ctx = Ctx::start_sqlite();
    ctx.charged("cus_a", 1000).await;
    assert_eq!(ctx.fetch("/summary").await.cache(), "miss");
    // Redis refuses writes: the invalidation after the next write fails.
    ctx.redis
        .command(&["CONFIG", "SET", "maxmemory", "1"])
        .unwrap();
    ctx.charged("cus_a", 5).await;
    ctx.redis.stop();
    ctx.redis.restart();
    let got = until_cached(&ctx, "/summary", Duration::from_secs(10)).await;
    assert_eq!(net(&got), 1005, "{}", got.text);
    assert_eq!(ctx.fetch("/summary").await.cache(), "hit");
}

/// A write whose `COMMIT` hangs (a synchronous standby that is not there)
/// outlives its request: the request times out with 503, the write goes on in
/// its own task, and once it commits it invalidates the cache, so no cached
/// answer from before it is served afterwards, retried or not.
#[tokio::test]
async fn a_write_that_outlives_its_request_still_invalidates() {
    let cluster = e2e::pg::PgCluster::start();
    let redis = RedisServer::start();
    let redis_url = format!("redis://{}/0", redis.addr());
    let env = [
        &cache_env(&redis_url)[..],
        &[("ENGINE_REQUEST_TIMEOUT_MS", "1000")],
    ]
    .concat();
    let engine = e2e::engine::EngineProcess::start_with(&cluster.url(), &env);
    let http = reqwest::Client::new();
    let charge = |amount: i64| {
        json!({"customer_id": "cus_s", "product": "pro", "kind": "charge",
               "amount": amount, "currency": "EUR",
               "occurred_at": "2026-03-01T10:00:00Z"})
        .to_string()
    };
    let events = engine.api_url("/events");
    let summary = engine.api_url("/summary");
    let fetch = || async { Reply::read(http.get(&summary).send().await.unwrap()).await };
    let post = |body: String, key: &'static str| {
        let (http, events) = (&http, &events);
        async move { e2e::engine::post_event(http, events, &body, &[key.as_bytes()]).await }
    };
    assert_eq!(post(charge(100), "k-1").await.status, StatusCode::CREATED);
    assert_eq!(fetch().await.cache(), "miss");
    assert_eq!(fetch().await.cache(), "hit");

    // The harness runs with synchronous_commit off; a commit waits for a
    // synchronous standby only with it on.
    let sync = |names: &str| {
        for setting in [
            "synchronous_commit = on".to_owned(),
            format!("synchronous_standby_names = '{names}'"),
        ] {
            cluster
                .sql("postgres", &format!("ALTER SYSTEM SET {setting}"))
                .unwrap();
        }
        cluster.sql("postgres", "SELECT pg_reload_conf()").unwrap();
    };
    sync("nosuch");
    std::thread::sleep(Duration::from_millis(300));
    let timed_out = post(charge(5000), "k-2").await;
    assert_eq!(
        timed_out.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        timed_out.text
    );
    sync("");

    // The commit completes and its own task invalidates: within seconds the
    // summary counts it, and never again answers the old total.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = fetch().await;
        if net(&got) == 5100 {
            break;
        }
        assert_eq!(net(&got), 100, "{}", got.text);
        assert!(Instant::now() < deadline, "{}", engine.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replay = post(charge(5000), "k-2").await;
    assert_eq!(replay.replayed(), Some("true"));
    let got = fetch().await;
    assert_eq!(net(&got), 5100, "{}", got.text);
    assert_eq!(fetch().await.cache(), "hit");
}

/// A version key deleted by hand (or never written: a customer only seeded)
/// is started above every version handed out on its next read, so entries
/// cached under lower versions never answer again.
#[tokio::test]
async fn a_deleted_version_key_brings_back_no_old_entry() {
    let ctx = Ctx::start_sqlite();
    ctx.charged("cus_d", 100).await;
    let first = until_cached(&ctx, "/customers/cus_d", Duration::from_secs(5)).await;
    assert_eq!(lifetime_value(&first), 100);
    assert_eq!(ctx.fetch("/customers/cus_d").await.cache(), "hit");
    ctx.charged("cus_d", 5).await;
    assert_eq!(lifetime_value(&ctx.fetch("/customers/cus_d").await), 105);
    ctx.redis
        .command(&["DEL", "engine:v:customer:cus_d"])
        .unwrap();
    for _ in 0..3 {
        let got = ctx.fetch("/customers/cus_d").await;
        assert_eq!(lifetime_value(&got), 105, "{}: {}", got.cache(), got.text);
    }
    assert_eq!(ctx.fetch("/customers/cus_d").await.cache(), "hit");
}

/// Redis refusing writes (OOM) when a write's invalidation is due: once it takes
/// writes again, the invalidation reaches it in the background, so another
/// engine sharing the Redis stops serving the old answer without this engine
/// serving a read.
#[tokio::test]
async fn an_invalidation_refused_by_redis_reaches_it_once_redis_recovers() {
    let ctx = Ctx::start_sqlite();
    ctx.charged("cus_o", 100).await;
    assert_eq!(
        lifetime_value(&until_cached(&ctx, "/customers/cus_o", Duration::from_secs(5)).await),
        100
    );
    assert_eq!(ctx.fetch("/customers/cus_o").await.cache(), "hit");
    let version = || {
        resp_number(
            &ctx.redis
                .command(&["GET", "engine:v:customer:cus_o"])
                .unwrap(),
        )
    };
    let before = version();
    ctx.redis
        .command(&["CONFIG", "SET", "maxmemory", "1"])
        .unwrap();
    ctx.charged("cus_o", 5).await;
    assert_eq!(version(), before, "redis refused the invalidation");
    ctx.redis
        .command(&["CONFIG", "SET", "maxmemory", "0"])
        .unwrap();
    // No request reaches the engine: the version must move by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while version() == before {
        assert!(Instant::now() < deadline, "{}", ctx.engine.log_tail(10));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A write acknowledged while Redis takes no writes leaves its invalidation
/// pending; the engine is then restarted before Redis recovers (the pending
/// invalidation dies with the process). The new engine invalidates everything
/// at start, so the answer cached before the write never comes back.
#[tokio::test]
async fn a_restart_with_a_pending_invalidation_leaves_nothing_stale() {
    let mut ctx = Ctx::start_sqlite();
    ctx.charged("cus_r", 100).await;
    let first = until_cached(&ctx, "/customers/cus_r", Duration::from_secs(5)).await;
    assert_eq!(lifetime_value(&first), 100);
    assert_eq!(ctx.fetch("/customers/cus_r").await.cache(), "hit");
    ctx.redis
        .command(&["CLIENT", "PAUSE", "20000", "WRITE"])
        .unwrap();
    ctx.charged("cus_r", 5).await;
    assert_eq!(
        lifetime_value(&ctx.fetch("/customers/cus_r").await),
        105,
        "a pending invalidation bypasses the cache"
    );
    // SIGTERM: the engine tries to apply it (Redis still paused), gives up
    // after 5 s and says so.
    let status = ctx.api.engine.terminate();
    assert!(status.success(), "{status}");
    assert!(
        ctx.engine
            .log()
            .contains("read cache invalidations not applied before exit"),
        "{}",
        ctx.engine.log_tail(20)
    );
    ctx.redis.command(&["CLIENT", "UNPAUSE"]).unwrap();
    ctx.api.engine = ctx.start_engine();
    for _ in 0..3 {
        let got = ctx.fetch("/customers/cus_r").await;
        assert_eq!(lifetime_value(&got), 105, "{}: {}", got.cache(), got.text);
    }
    assert_eq!(ctx.fetch("/customers/cus_r").await.cache(), "hit");
}

/// Reads of customers that do not exist (404s) leave nothing in Redis, and the
/// version keys of real customers expire (an hour after their entries could),
/// so ids chosen by clients cannot fill Redis with keys that never go.
#[tokio::test]
async fn unknown_customers_leave_no_keys_and_customer_versions_expire() {
    let ctx = Ctx::start_sqlite();
    ctx.charged("cus_k", 100).await;
    until_cached(&ctx, "/customers/cus_k", Duration::from_secs(5)).await;
    let before = ctx.redis.keys("engine:*").len();
    for i in 0..50 {
        let got = ctx.fetch(&format!("/customers/nobody_{i:0>100}")).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(ctx.redis.keys("engine:*").len(), before);
    let ttl = |key: &str| ctx.redis.command(&["TTL", key]).unwrap().trim().to_owned();
    let customer_ttl: i64 = ttl("engine:v:customer:cus_k")
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(
        (3600..=300 + 3600).contains(&customer_ttl),
        "TTL {customer_ttl}"
    );
    // The shared versions stay.
    for key in ["engine:v:events", "engine:v:customers"] {
        assert_eq!(ttl(key), ":-1", "{key}");
    }
    // A version key that expired (deleted here) is started again above every
    // version: the customer is still answered correctly, then cached.
    ctx.redis
        .command(&["DEL", "engine:v:customer:cus_k"])
        .unwrap();
    ctx.charged("cus_k", 1).await;
    let got = until_cached(&ctx, "/customers/cus_k", Duration::from_secs(5)).await;
    assert_eq!(lifetime_value(&got), 101);
}

/// Redis stops answering just as a write's invalidation is due, and the engine
/// that wrote is stopped (SIGTERM) right after; Redis comes back before that
/// engine's 5 s shutdown budget runs out, though after the last attempt its
/// reconnect loop would make in that time. The engine connects at once and applies it, so a second
/// engine sharing the Redis stops serving the answer cached before the write.
#[tokio::test]
async fn shutdown_applies_a_pending_invalidation_once_redis_is_back() {
    let mut ctx = Ctx::start_sqlite();
    let other = ctx.start_engine();
    let (http, url) = (ctx.http.clone(), other.api_url("/customers/cus_s"));
    let other_customer =
        || async { Reply::read(http.get(url.as_str()).send().await.unwrap()).await };
    ctx.charged("cus_s", 100).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while other_customer().await.cache() != "hit" {
        assert!(
            Instant::now() < deadline,
            "never cached by the other engine"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 4.6 s: past the reconnect loop's attempt at about 4.1 s (back-off 0.1,
    // 0.2, 0.4, 0.8, 1.6 s plus 200 ms timeouts) and before its next, at about
    // 6.3 s, which is after the shutdown budget.
    ctx.redis.pause_all(4600);
    ctx.charged("cus_s", 5).await;
    let status = ctx.api.engine.terminate();
    assert!(status.success(), "{status}");
    let log = ctx.engine.log();
    assert!(
        log.contains("pending read cache invalidations applied")
            && !log.contains("not applied before exit"),
        "{}",
        ctx.engine.log_tail(20)
    );
    for _ in 0..5 {
        let got = other_customer().await;
        assert_eq!(lifetime_value(&got), 105, "{}: {}", got.cache(), got.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
