//! proxy-cache through the real gateway against a real upstream that counts what it
//! receives: Kong's X-Cache-Status flow (§6), the safety rules, coalescing, purge,
//! stale-if-error, and the Redis tier shared by two gateways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::gateway::GatewayProcess;
use e2e::redis::RedisServer;
use e2e::upstream::Upstream;

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn status_of(resp: &reqwest::Response) -> String {
    header(resp, "x-cache-status").unwrap_or_else(|| "-".into())
}

fn config(up: &Upstream, flaky: &Upstream) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials: [{{ key: alice-key }}]
  - username: bob
    keyauth_credentials: [{{ key: bob-key }}]
services:
  - name: echo
    url: http://{a}
    routes:
      - name: cached
        paths: [/cached]
        plugins:
          - name: proxy-cache
            config: {{ strategy: memory, cache_ttl: 300 }}
      - name: charset
        paths: [/charset]
        plugins:
          - name: proxy-cache
            config: {{ strategy: memory, content_type_parameters: ignore }}
      - name: cc
        paths: [/cc]
        plugins:
          - name: proxy-cache
            config: {{ strategy: memory, cache_control: true }}
      - name: refresh
        paths: [/refresh]
        plugins:
          - name: proxy-cache
            config: {{ strategy: memory, cache_ttl: 1, storage_ttl: 60 }}
      - name: stale5xx
        paths: [/stale5xx]
        plugins:
          - name: proxy-cache
            config: {{ strategy: memory, cache_ttl: 1, stale_if_error: 60, vary_query_params: [v] }}
      - name: authed
        paths: [/authed]
        plugins:
          - name: key-auth
          - name: proxy-cache
            config: {{ strategy: memory }}
  - name: flaky
    url: http://{f}
    routes:
      - name: stale
        paths: [/stale]
        plugins:
          - name: proxy-cache
            config: {{ strategy: memory, cache_ttl: 1, stale_if_error: 60 }}
"#,
        a = up.addr,
        f = flaky.addr
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kong_flow_safety_rules_and_purge() {
    let up = Upstream::echo().await;
    let flaky = Upstream::echo().await;
    let gw = GatewayProcess::start(&config(&up, &flaky));
    let c = gw.client(None);
    let base = gw.http_url();
    let get = |path: &str| c.get(format!("{base}{path}")).send();

    // Miss, then Hit with Age; the upstream saw one request.
    let first = get("/cached/a?x=1&y=2").await.unwrap();
    assert_eq!(status_of(&first), "Miss");
    let key = header(&first, "x-cache-key").unwrap();
    assert_eq!(key.len(), 64);
    let first_body = first.text().await.unwrap();
    let hit = get("/cached/a?y=2&x=1").await.unwrap();
    assert_eq!(status_of(&hit), "Hit", "query order does not matter");
    assert_eq!(header(&hit, "x-cache-key").unwrap(), key);
    assert!(header(&hit, "age").is_some());
    assert!(header(&hit, "x-kong-proxy-latency").is_some());
    assert_eq!(hit.text().await.unwrap(), first_body);
    assert_eq!(up.hits(), 1);

    // HEAD is answered from the GET entry, without a body.
    let head = c
        .head(format!("{base}/cached/a?x=1&y=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(&head), "Hit");
    assert_eq!(head.text().await.unwrap(), "");
    // A HEAD miss is not stored, so a GET is never answered from a HEAD.
    let head = c.head(format!("{base}/cached/h")).send().await.unwrap();
    assert_eq!(status_of(&head), "Miss");
    let after = get("/cached/h").await.unwrap();
    assert_eq!(status_of(&after), "Miss");
    assert!(!after.text().await.unwrap().is_empty());

    // Methods not listed bypass.
    let post = c.post(format!("{base}/cached/a")).send().await.unwrap();
    assert_eq!(status_of(&post), "Bypass");

    // Never stored, whatever the config: Set-Cookie, private, no-store, 5xx.
    for path in [
        "/cached/s?h_set-cookie=session%3Dabc",
        "/cached/p?h_cache-control=private",
        "/cached/n?h_cache-control=no-store",
        "/cached/status/500",
        "/cached/status/503",
    ] {
        let before = up.hits();
        for _ in 0..2 {
            let resp = get(path).await.unwrap();
            assert_eq!(status_of(&resp), "Bypass", "{path}");
        }
        assert_eq!(up.hits(), before + 2, "{path}");
    }

    // Kong matches content types exactly: `application/json; charset=utf-8` is not
    // `application/json`... unless the operator asked to ignore parameters.
    let ct = "?h_content-type=application/json%3B%20charset%3Dutf-8";
    for _ in 0..2 {
        let resp = get(&format!("/cached/ct{ct}")).await.unwrap();
        assert_eq!(status_of(&resp), "Bypass");
    }
    get(&format!("/charset/ct{ct}")).await.unwrap();
    let resp = get(&format!("/charset/ct{ct}")).await.unwrap();
    assert_eq!(status_of(&resp), "Hit");

    // cache_control: max-age sets the TTL, no-cache from the client bypasses.
    get("/cc/m?h_cache-control=max-age%3D1").await.unwrap();
    let resp = get("/cc/m?h_cache-control=max-age%3D1").await.unwrap();
    assert_eq!(status_of(&resp), "Hit");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = get("/cc/m?h_cache-control=max-age%3D1").await.unwrap();
    assert_ne!(status_of(&resp), "Hit");
    let resp = c
        .get(format!("{base}/cc/m?h_cache-control=max-age%3D1"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(&resp), "Bypass");

    // only-if-cached with nothing cached: 504, empty body.
    let resp = c
        .get(format!("{base}/cached/never"))
        .header("cache-control", "only-if-cached")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.text().await.unwrap(), "");

    // One consumer's response is never served to another.
    let as_user = |k: &'static str| {
        c.get(format!("{base}/authed/me"))
            .header("apikey", k)
            .send()
    };
    assert_eq!(status_of(&as_user("alice-key").await.unwrap()), "Miss");
    assert_eq!(status_of(&as_user("alice-key").await.unwrap()), "Hit");
    let bob = as_user("bob-key").await.unwrap();
    assert_eq!(status_of(&bob), "Miss");
    let bob: serde_json::Value = bob.json().await.unwrap();
    assert_eq!(bob["headers"]["x-consumer-username"], "bob");
    let nobody = c.get(format!("{base}/authed/me")).send().await.unwrap();
    assert_eq!(nobody.status(), 401);
    assert!(header(&nobody, "x-cache-status").is_none());

    // Purge one key, then everything, on the admin listener.
    let admin = gw.admin_url();
    let resp = c
        .get(format!("{admin}/proxy-cache/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .delete(format!("{admin}/proxy-cache/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = c
        .delete(format!("{admin}/proxy-cache/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(status_of(&get("/cached/a?x=1&y=2").await.unwrap()), "Miss");
    assert_eq!(status_of(&get("/cached/a?x=1&y=2").await.unwrap()), "Hit");
    let resp = c
        .delete(format!("{admin}/proxy-cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(status_of(&get("/cached/a?x=1&y=2").await.unwrap()), "Miss");

    // Kong's Refresh (storage_ttl longer than cache_ttl): Miss, Hit, past the TTL
    // Refresh, then Hit again. Stale-if-error: past its TTL, a failing upstream is
    // answered from the cache.
    assert_eq!(status_of(&get("/refresh/r").await.unwrap()), "Miss");
    assert_eq!(status_of(&get("/refresh/r").await.unwrap()), "Hit");
    assert_eq!(status_of(&get("/stale/x").await.unwrap()), "Miss");
    let fresh = get("/stale5xx/x?v=1").await.unwrap();
    assert_eq!(status_of(&fresh), "Miss");
    let fresh_body = fresh.text().await.unwrap();
    let strict = get("/stale5xx/m?v=2&h_cache-control=must-revalidate")
        .await
        .unwrap();
    assert_eq!(status_of(&strict), "Miss");
    drop(flaky);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(status_of(&get("/refresh/r").await.unwrap()), "Refresh");
    assert_eq!(status_of(&get("/refresh/r").await.unwrap()), "Hit");
    let resp = get("/stale/x").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(status_of(&resp), "Stale");
    // ... and so is an upstream 5xx (same key: `status` is not a vary'd argument),
    // whole, with its own length.
    let before = up.hits();
    let resp = get("/stale5xx/x?v=1&status=503").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(status_of(&resp), "Stale");
    assert_eq!(resp.text().await.unwrap(), fresh_body);
    assert_eq!(up.hits(), before + 1, "the 503 is not retried");
    // An entry stored with must-revalidate is never served stale.
    let resp = get("/stale5xx/m?v=2&status=503").await.unwrap();
    assert_eq!(resp.status(), 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_misses_reach_the_upstream_once() {
    let up = Upstream::echo().await;
    let flaky = Upstream::echo().await;
    let gw = GatewayProcess::start(&config(&up, &flaky));
    let c = gw.client(None);
    let url = format!("{}/cached/slow/300", gw.http_url());
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let resp = c.get(url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                status_of(&resp)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(up.hits(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "Miss").count(), 1);
    assert_eq!(statuses.iter().filter(|s| *s == "Hit").count(), 99);
}

fn redis_config(up: &Upstream, redis: &RedisServer) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: echo
    url: http://{a}
    routes:
      - name: shared
        paths: [/shared]
        plugins:
          - name: proxy-cache
            config:
              strategy: redis
              redis: {{ host: 127.0.0.1, port: {port}, timeout: 300 }}
"#,
        a = up.addr,
        port = redis.port
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redis_tier_is_shared_and_its_outage_is_not_an_error() {
    let mut redis = RedisServer::start();
    let up = Upstream::echo().await;
    let a = GatewayProcess::start(&redis_config(&up, &redis));
    let b = GatewayProcess::start(&redis_config(&up, &redis));
    let c = a.client(None);
    // Both instances sit behind one name, as behind a load balancer.
    let get = |url: String| c.get(url).header("host", "api.test").send();

    let resp = get(format!("{}/shared/x", a.http_url())).await.unwrap();
    assert_eq!(status_of(&resp), "Miss");
    // The Redis write is in the background: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while redis.keys("proxy-cache:*").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing stored in redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = get(format!("{}/shared/x", b.http_url())).await.unwrap();
    assert_eq!(status_of(&resp), "Hit", "gateway b reads gateway a's entry");
    assert_eq!(up.hits(), 1);

    // Redis gone: memory only, never an error.
    redis.stop();
    for path in ["/shared/x", "/shared/y", "/shared/y"] {
        let resp = get(format!("{}{path}", b.http_url())).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = get(format!("{}/shared/y", b.http_url())).await.unwrap();
    assert_eq!(status_of(&resp), "Hit");

    // Purging reaches Redis too.
    redis.restart();
    let resp = get(format!("{}/shared/z", a.http_url())).await.unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while redis.keys("proxy-cache:*").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis tier did not resume"
        );
        get(format!("{}/shared/w{}", a.http_url(), up.hits()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = c
        .delete(format!("{}/proxy-cache", a.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(redis.keys("proxy-cache:*").is_empty());
}
