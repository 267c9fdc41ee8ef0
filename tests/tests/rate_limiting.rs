//! rate-limiting through the real gateway: Kong's headers and refusals (§5.4),
//! exact counting across two gateway processes sharing one real redis-server, and
//! a Redis outage played by killing and restarting that server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::gateway::GatewayProcess;
use e2e::redis::RedisServer;
use e2e::upstream::Upstream;
use serde_json::Value;

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Waits until at least `secs` seconds are left in the current UTC minute, so a
/// test that counts within one minute window does not straddle two.
async fn wait_for_minute_room(secs: u64) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if 60 - now % 60 >= secs {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn local_config(up: &Upstream) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: echo
    url: http://{a}
    routes:
      - name: six
        paths: [/six]
        plugins:
          - name: rate-limiting
            config: {{ minute: 6 }}
      - name: other
        paths: [/other]
        plugins:
          - name: rate-limiting
            config: {{ minute: 2 }}
      - name: hidden
        paths: [/hidden]
        plugins:
          - name: rate-limiting
            config: {{ minute: 1, hide_client_headers: true, error_code: 503, error_message: "slow down" }}
      - name: by-header
        paths: [/by-header]
        plugins:
          - name: rate-limiting
            config: {{ hour: 1, limit_by: header, header_name: X-Tenant }}
      - name: two-periods
        paths: [/two-periods]
        plugins:
          - name: rate-limiting
            config: {{ minute: 3, hour: 4 }}
      - name: sliding
        paths: [/sliding]
        plugins:
          - name: rate-limiting
            config: {{ minute: 4, window_type: sliding }}
"#,
        a = up.addr
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn local_policy_headers_and_refusals_follow_kong() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&local_config(&up));
    let c = gw.client(None);
    let base = gw.http_url();
    wait_for_minute_room(20).await;

    // Kong's test expectation for minute=6 (§5.4).
    let mut statuses = Vec::new();
    let mut remaining = Vec::new();
    for _ in 0..7 {
        let resp = c.get(format!("{base}/six")).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        remaining.push(header(&resp, "x-ratelimit-remaining-minute").unwrap());
        assert_eq!(header(&resp, "x-ratelimit-limit-minute").unwrap(), "6");
        assert_eq!(header(&resp, "ratelimit-limit").unwrap(), "6");
        let reset: u64 = header(&resp, "ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "{reset}");
        if resp.status() == 429 {
            let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
            assert_eq!(retry, reset);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["message"], "API rate limit exceeded");
            assert!(body["request_id"].is_string());
        } else {
            assert!(header(&resp, "retry-after").is_none());
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429]);
    assert_eq!(remaining, ["5", "4", "3", "2", "1", "0", "0"]);
    assert_eq!(
        up.hits(),
        6,
        "the refused request never reached the upstream"
    );

    // Another route has its own counter and its own limit.
    let resp = c.get(format!("{base}/other")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-remaining-minute").unwrap(), "1");

    // hide_client_headers, error_code and error_message.
    let resp = c.get(format!("{base}/hidden")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "x-ratelimit-limit-minute").is_none());
    assert!(header(&resp, "ratelimit-limit").is_none());
    let resp = c.get(format!("{base}/hidden")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(header(&resp, "retry-after").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "slow down");

    // limit_by header: each tenant has its own budget; without the header, the IP.
    for tenant in ["a", "b"] {
        let resp = c
            .get(format!("{base}/by-header"))
            .header("x-tenant", tenant)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{tenant}");
    }
    let resp = c
        .get(format!("{base}/by-header"))
        .header("x-tenant", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-limit-hour").unwrap(), "1");
    let resp = c.get(format!("{base}/by-header")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Two periods: RateLimit-* follow the period with the least room; a refused
    // request is not counted in the other period.
    let mut last = None;
    for _ in 0..4 {
        last = Some(c.get(format!("{base}/two-periods")).send().await.unwrap());
    }
    let resp = last.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-remaining-minute").unwrap(), "0");
    assert_eq!(header(&resp, "x-ratelimit-remaining-hour").unwrap(), "1");
    assert_eq!(header(&resp, "ratelimit-limit").unwrap(), "3");
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!(
        retry <= 60,
        "minute blocks, so the wait is within the minute: {retry}"
    );

    // Sliding windows admit exactly the limit inside a window, too.
    let mut ok = 0;
    for _ in 0..6 {
        if c.get(format!("{base}/sliding"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 4);

    // A reload keeps the counters: the budget is not handed out again.
    gw.reload();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = c.get(format!("{base}/six")).send().await.unwrap();
    assert_eq!(resp.status(), 429);

    let status: Value = c
        .get(format!("{}/status", gw.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status["rate_limiting"]["rejected"].as_u64().unwrap() >= 5);
}

fn redis_config(up: &Upstream, redis: &RedisServer, limit: u64) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: echo
    url: http://{a}
    routes:
      - name: shared
        paths: [/shared]
        plugins:
          - name: rate-limiting
            config:
              minute: {limit}
              limit_by: ip
              policy: redis
              redis: {{ host: 127.0.0.1, port: {port}, timeout: 500 }}
      - name: strict
        paths: [/strict]
        plugins:
          - name: rate-limiting
            config:
              minute: 100000
              policy: redis
              fault_tolerant: false
              redis_host: 127.0.0.1
              redis_port: {port}
              redis_timeout: 500
"#,
        a = up.addr,
        port = redis.port
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_sharing_redis_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    let up = Upstream::echo().await;
    let config = redis_config(&up, &redis, 1000);
    let gateways = [
        GatewayProcess::start(&config),
        GatewayProcess::start(&config),
    ];
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| format!("{}/shared", g.http_url()))
        .collect();
    let client = gateways[0].client(None);
    wait_for_minute_room(40).await;
    // Connect both gateways to Redis first (these two requests are counted too).
    for url in &urls {
        assert_eq!(client.get(url).send().await.unwrap().status(), 200);
    }
    redis.command(&["CONFIG", "RESETSTAT"]).unwrap();

    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let total = 1500;
    admitted.fetch_add(2, Ordering::SeqCst);
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (client, url) = (client.clone(), urls[i % 2].clone());
            let (admitted, refused, sent) = (admitted.clone(), refused.clone(), sent.clone());
            tokio::spawn(async move {
                while sent.fetch_add(1, Ordering::SeqCst) < total {
                    let resp = client.get(&url).send().await.unwrap();
                    match resp.status().as_u16() {
                        200 => admitted.fetch_add(1, Ordering::SeqCst),
                        429 => refused.fetch_add(1, Ordering::SeqCst),
                        s => panic!("unexpected status {s}"),
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");
    assert_eq!(admitted.load(Ordering::SeqCst), 1000);
    assert_eq!(refused.load(Ordering::SeqCst), 502);
    assert_eq!(up.hits(), 1000);

    // One round trip per request: one EVALSHA each, and no other client command
    // (the script was loaded when each gateway connected, before the reset). Inside
    // the script: one INCR per request, one DECR per refusal, one EXPIRE per window.
    let calls = redis.command_calls();
    let n = |k: &str| calls.get(k).copied().unwrap_or(0);
    assert_eq!(n("evalsha"), 1500, "{calls:?}");
    assert_eq!(n("eval") + n("script|load"), 0, "{calls:?}");
    assert_eq!(
        (n("incr"), n("decr"), n("expire")),
        (1500, 502, 0),
        "{calls:?}"
    );
    // Counters carry an expiry from their first increment.
    let keys = redis.keys("ratelimit:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl = redis.command(&["TTL", &keys[0]]).unwrap();
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_falls_back_to_local_counting_and_recovers() {
    let mut redis = RedisServer::start();
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&redis_config(&up, &redis, 100_000));
    let c = gw.client(None);
    let base = gw.http_url();
    let status = || async {
        c.get(format!("{}/status", gw.admin_url()))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };

    for path in ["shared", "strict"] {
        let resp = c.get(format!("{base}/{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    assert_eq!(status().await["rate_limiting"]["redis_checks"], 2);

    redis.stop();
    // fault_tolerant (the default): requests keep flowing, counted locally, with
    // their headers.
    for _ in 0..20 {
        let resp = c.get(format!("{base}/shared")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(header(&resp, "x-ratelimit-remaining-minute").is_some());
    }
    // fault_tolerant false: Kong's 500.
    let resp = c.get(format!("{base}/strict")).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "An unexpected error occurred");
    let s = status().await;
    assert!(
        s["rate_limiting"]["redis_fallbacks"].as_u64().unwrap() >= 20,
        "{s}"
    );
    assert!(
        s["rate_limiting"]["redis_failures"].as_u64().unwrap() >= 1,
        "{s}"
    );
    assert!(
        gw.log().contains("counting locally"),
        "no fallback log line:\n{}",
        gw.log()
    );

    // Redis comes back: counting in Redis resumes without a restart.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = c.get(format!("{base}/strict")).send().await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "redis counting did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = status().await["rate_limiting"]["redis_checks"]
        .as_u64()
        .unwrap();
    for _ in 0..5 {
        let resp = c.get(format!("{base}/shared")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let after = status().await["rate_limiting"]["redis_checks"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, 5);
    assert!(!redis.keys("ratelimit:*").is_empty());
    assert!(gw.log().contains("reachable again"), "{}", gw.log());

    // A reload that no longer names this Redis closes the connection to it.
    let clients = || {
        redis
            .command(&["CLIENT", "LIST"])
            .unwrap()
            .lines()
            .filter(|l| l.contains("addr="))
            .count()
    };
    assert!(clients() >= 2, "the gateway's connection and ours");
    std::fs::write(gw.conf_path(), local_config(&up)).unwrap();
    gw.reload();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status().await;
        if s["rate_limiting"]["redis"].as_array().unwrap().is_empty() && clients() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "redis link not closed: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
