//! The load harness: `cargo run --release -p benches --bin load -- rate-limit`.
//!
//! `rate-limit` starts a release gateway, a throwaway redis-server and an echo
//! upstream, then drives two routes that differ only in the rate-limiting policy
//! (`local` and `redis`), interleaving rounds so both see the same machine load.
//! It prints each policy's throughput, their ratio, and Redis commands per request
//! from `INFO commandstats`.
//!
//! `cache` starts the engine (SQLite, a few hundred events), and a release gateway
//! with proxy-cache in front of it, then compares cache-hit throughput through the
//! gateway with direct-to-engine throughput for the same summary query, in
//! interleaved rounds. It then floods a second gateway (8 MiB cache) with distinct
//! keys and reports how its resident memory grew.
//!
//! `proxy` compares the gateway with nginx and HAProxy as plain reverse proxies
//! (no plugins) in front of one echo upstream, each with one worker thread and
//! keep-alive upstream connections, over HTTP and over HTTPS (the same
//! certificate for all three), in interleaved rounds; it prints each proxy's
//! throughput and latency, the gateway's ratios to the other two, and resident
//! memory after the run. nginx and HAProxy are installed first if missing (as
//! root; otherwise the command to run is printed).
//!
//! Options (environment): `LOAD_CONCURRENCY` (default 32), `LOAD_SECONDS` per round
//! (default 5), `LOAD_ROUNDS` (default 3).

use std::time::Duration;

use benches::load::{client, drive, drive_with, median, Round};
use benches::peers::{self, Peer, Tls};
use e2e::engine::EngineProcess;
use e2e::gateway::GatewayProcess;
use e2e::redis::RedisServer;
use e2e::upstream::Upstream;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rate_limit_config(up: &Upstream, redis: &RedisServer) -> String {
    // Limits far above what the run can send: this measures the cost of counting,
    // not of refusing.
    format!(
        r#"_format_version: "3.0"
services:
  - name: echo
    url: http://{up}
    routes:
      - name: none
        paths: [/none]
      - name: local
        paths: [/local]
        plugins:
          - name: rate-limiting
            config: {{ minute: 1000000000, limit_by: ip, policy: local }}
      - name: redis
        paths: [/redis]
        plugins:
          - name: rate-limiting
            config:
              minute: 1000000000
              limit_by: ip
              policy: redis
              redis: {{ host: 127.0.0.1, port: {port} }}
"#,
        up = up.addr,
        port = redis.port
    )
}

async fn rate_limit() {
    let concurrency = env_or("LOAD_CONCURRENCY", 32) as usize;
    let seconds = Duration::from_secs(env_or("LOAD_SECONDS", 5));
    let rounds = env_or("LOAD_ROUNDS", 3);
    let redis = RedisServer::start();
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&rate_limit_config(&up, &redis));
    let base = gw.http_url();
    println!(
        "rate-limit: gateway {}, {concurrency} connections, {rounds} rounds of {}s per route, interleaved",
        e2e::bin::path("gateway").display(),
        seconds.as_secs()
    );
    // Warm up both routes (and the Redis link).
    for path in ["none", "local", "redis"] {
        drive(
            &format!("{base}/{path}"),
            concurrency,
            Duration::from_secs(1),
        )
        .await;
    }
    let mut rps = [Vec::new(), Vec::new(), Vec::new()];
    let mut redis_requests = 0u64;
    redis.command(&["CONFIG", "RESETSTAT"]).ok();
    for round in 0..rounds {
        for (i, path) in ["none", "local", "redis"].iter().enumerate() {
            let r = drive(&format!("{base}/{path}"), concurrency, seconds).await;
            println!(
                "  round {} {path:>5}: {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  non-2xx {} errors {}",
                round + 1,
                r.rps(),
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.non_2xx,
                r.errors
            );
            if *path == "redis" {
                redis_requests += r.requests + r.errors;
            }
            rps[i].push(r.rps());
        }
    }
    let calls = redis.command_calls();
    let n = |k: &str| calls.get(k).copied().unwrap_or(0) as f64;
    let per = |v: f64| v / (redis_requests.max(1) as f64);
    let client_commands: f64 = calls
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "incr" | "decr" | "expire" | "get" | "info" | "config|resetstat"
            )
        })
        .map(|(_, v)| *v as f64)
        .sum();
    let [none, local, redis_rps] = rps.map(|mut v| median(&mut v));
    println!("median req/s: no plugin {none:.0}, local {local:.0}, redis {redis_rps:.0}");
    println!(
        "ratio redis/local: {:.3} (target >= 0.85); local/no plugin: {:.3}",
        redis_rps / local.max(1e-9),
        local / none.max(1e-9)
    );
    println!(
        "redis commands per request: {:.3} sent by the gateway (evalsha {:.3}); inside the script: incr {:.3}, expire {:.5}",
        per(client_commands),
        per(n("evalsha")),
        per(n("incr")),
        per(n("expire")),
    );
}

fn cache_config(engine: &EngineProcess, echo: &Upstream) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: engine
    url: http://127.0.0.1:{port}
    routes:
      - name: revenue
        paths: [/api/v1/revenue]
        strip_path: false
        plugins:
          - name: proxy-cache
            config:
              strategy: memory
              cache_ttl: 3600
              content_type: [application/json]
              content_type_parameters: ignore
              # The engine's reads answer `Vary: Consistency-Token`; without
              # the header in the key they are (rightly) never stored.
              vary_headers: [consistency-token]
  - name: echo
    url: http://{echo}
    routes:
      - name: flood
        paths: [/flood]
        plugins:
          - name: proxy-cache
            config: {{ strategy: memory, cache_ttl: 3600 }}
"#,
        port = engine.port(),
        echo = echo.addr
    )
}

async fn cache() {
    let concurrency = env_or("LOAD_CONCURRENCY", 32) as usize;
    let seconds = Duration::from_secs(env_or("LOAD_SECONDS", 5));
    let rounds = env_or("LOAD_ROUNDS", 3);
    let engine = EngineProcess::start_sqlite();
    let client = reqwest::Client::new();
    for i in 0..300u32 {
        let event = serde_json::json!({
            "customer_id": format!("cus_{}", i % 37),
            "product": "robot-pro-monthly",
            "kind": if i % 10 == 0 { "refund" } else { "charge" },
            "amount": 1000 + i,
            "currency": "USD",
            "occurred_at": format!("2026-01-{:02}T12:00:00Z", 1 + i % 28),
        });
        let resp = client
            .post(engine.api_url("/events"))
            .json(&event)
            .send()
            .await
            .unwrap_or_else(|e| panic!("seeding the engine: {e}"));
        assert!(resp.status().is_success(), "seeding: {}", resp.status());
    }
    let echo = Upstream::echo().await;
    let gw = GatewayProcess::start(&cache_config(&engine, &echo));
    let query =
        "/summary?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&interval=day&currency=USD";
    let direct = engine.api_url(query);
    let cached = format!("{}/api/v1/revenue{query}", gw.http_url());
    println!(
        "cache: gateway {}, {concurrency} connections, {rounds} rounds of {}s each, interleaved",
        e2e::bin::path("gateway").display(),
        seconds.as_secs()
    );
    drive(&direct, concurrency, Duration::from_secs(1)).await;
    drive(&cached, concurrency, Duration::from_secs(1)).await;
    let mut rps = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, (name, url)) in [("engine direct", &direct), ("gateway hit", &cached)]
            .iter()
            .enumerate()
        {
            let r = drive(url, concurrency, seconds).await;
            println!(
                "  round {} {name:>13}: {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  non-2xx {} errors {}",
                round + 1,
                r.rps(),
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.non_2xx,
                r.errors
            );
            rps[i].push(r.rps());
        }
    }
    let [d, h] = rps.map(|mut v| median(&mut v));
    println!(
        "median req/s: engine direct {d:.0}, gateway cache hit {h:.0}; ratio hit/direct {:.2} (target >= 1.5)",
        h / d.max(1e-9)
    );
    let status: serde_json::Value = client
        .get(format!("{}/status", gw.admin_url()))
        .send()
        .await
        .map(|r| r.json())
        .unwrap_or_else(|e| panic!("status: {e}"))
        .await
        .unwrap_or_default();
    println!("proxy_cache counters: {}", status["proxy_cache"]);
    if status["proxy_cache"]["hits"].as_u64().unwrap_or(0) == 0 {
        eprintln!("load cache: the gateway served no cache hits, so the comparison above is void");
        std::process::exit(1);
    }
    drop(gw);

    // Memory bound: 8 MiB of cache, a flood of distinct ~2.5 KiB responses.
    let small = GatewayProcess::start_with_args(
        &cache_config(&engine, &echo),
        &["--proxy-cache-memory-mb", "8"],
    );
    let pad = "p".repeat(2000);
    drive(
        &format!("{}/flood/warm?pad={pad}", small.http_url()),
        4,
        Duration::from_secs(1),
    )
    .await;
    let before = small.rss_kib();
    let n = 40_000u32;
    let base = small.http_url();
    let tasks: Vec<_> = (0..concurrency as u32)
        .map(|t| {
            let (client, base, pad) = (client.clone(), base.clone(), pad.clone());
            tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    let _ = client
                        .get(format!("{base}/flood/k{i}?pad={pad}"))
                        .send()
                        .await
                        .map(|r| r.bytes());
                    i += concurrency as u32;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let after = small.rss_kib();
    println!(
        "memory bound: {n} distinct keys (~{} MiB of responses) into an 8 MiB cache: RSS {} MiB -> {} MiB (+{} MiB)",
        (n as u64 * 2600) >> 20,
        before >> 10,
        after >> 10,
        after.saturating_sub(before) >> 10
    );
}

/// One proxy under comparison, over one protocol.
struct Target {
    proxy: &'static str,
    scheme: &'static str,
    url: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn proxy() -> anyhow::Result<()> {
    let concurrency = env_or("LOAD_CONCURRENCY", 32) as usize;
    let seconds = Duration::from_secs(env_or("LOAD_SECONDS", 5));
    let rounds = env_or("LOAD_ROUNDS", 3);
    peers::ensure_installed()?;
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&peers::gateway_config(&up.addr.to_string()));
    let (ca, cert, key) = peers::gateway_certs(gw.dir());
    let tls = Tls {
        cert: &cert,
        key: &key,
    };
    let upstream = up.addr.to_string();
    let nginx = Peer::nginx(&upstream, &tls)?;
    let haproxy = Peer::haproxy(&upstream, &tls)?;
    let ca_pem = std::fs::read_to_string(&ca)?;
    let plain = client(concurrency, None);
    let secure = client(concurrency, Some(&ca_pem));
    let path = "/bench/item?id=42";
    let mut targets = vec![Target {
        proxy: "upstream",
        scheme: "http",
        url: format!("http://{upstream}{path}"),
    }];
    for (proxy, http, https) in [
        ("gateway", gw.http_url(), gw.https_url()),
        ("nginx", nginx.http_url(), nginx.https_url()),
        ("haproxy", haproxy.http_url(), haproxy.https_url()),
    ] {
        targets.push(Target {
            proxy,
            scheme: "http",
            url: format!("{http}{path}"),
        });
        targets.push(Target {
            proxy,
            scheme: "https",
            url: format!("{https}{path}"),
        });
    }
    let client_for = |t: &Target| if t.scheme == "https" { &secure } else { &plain };

    // Every target must really proxy: a 200 that reached the upstream.
    for t in &targets {
        let before = up.hits();
        let resp = client_for(t).get(&t.url).send().await?;
        if !resp.status().is_success() || up.hits() != before + 1 {
            anyhow::bail!(
                "{} over {} answered {} without reaching the upstream once",
                t.proxy,
                t.scheme,
                resp.status()
            );
        }
    }
    println!(
        "proxy: gateway {} vs {} vs {}, one worker each, {concurrency} connections, \
         {rounds} rounds of {}s per target, interleaved",
        e2e::bin::path("gateway").display(),
        version("/usr/sbin/nginx", "-v"),
        version("/usr/sbin/haproxy", "-v"),
        seconds.as_secs()
    );
    for t in &targets {
        drive_with(client_for(t), &t.url, concurrency, Duration::from_secs(1)).await;
    }
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            let opened = up.connections();
            let r = drive_with(client_for(t), &t.url, concurrency, seconds).await;
            println!(
                "  round {} {:>8} {:>5}: {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  non-2xx {} errors {}  new upstream connections {}",
                round + 1,
                t.proxy,
                t.scheme,
                r.rps(),
                ms(r.p50),
                ms(r.p99),
                r.non_2xx,
                r.errors,
                up.connections() - opened
            );
            results[i].push(r);
        }
    }
    let summary: Vec<(f64, f64, f64)> = results
        .iter()
        .map(|rs| {
            let pick = |f: fn(&Round) -> f64| median(&mut rs.iter().map(f).collect::<Vec<_>>());
            (pick(Round::rps), pick(|r| ms(r.p50)), pick(|r| ms(r.p99)))
        })
        .collect();
    let memory = [
        ("gateway", gw.rss_kib()),
        ("nginx", peers::rss_kib_with_children(nginx.pid())),
        ("haproxy", peers::rss_kib_with_children(haproxy.pid())),
    ];
    println!();
    println!("| proxy | scheme | req/s (median) | p50 ms | p99 ms | RSS after run |");
    println!("|---|---|---:|---:|---:|---:|");
    for (t, (rps, p50, p99)) in targets.iter().zip(&summary) {
        let rss = memory
            .iter()
            .find(|(name, _)| *name == t.proxy)
            .map_or_else(|| "-".to_owned(), |(_, kib)| format!("{} MiB", kib >> 10));
        println!(
            "| {} | {} | {rps:.0} | {p50:.2} | {p99:.2} | {rss} |",
            t.proxy, t.scheme
        );
    }
    let rps_of = |proxy: &str, scheme: &str| {
        targets
            .iter()
            .zip(&summary)
            .find(|(t, _)| t.proxy == proxy && t.scheme == scheme)
            .map_or(0.0, |(_, s)| s.0)
    };
    for scheme in ["http", "https"] {
        let gateway = rps_of("gateway", scheme);
        println!(
            "{scheme}: gateway/nginx {:.3}, gateway/haproxy {:.3}",
            gateway / rps_of("nginx", scheme).max(1e-9),
            gateway / rps_of("haproxy", scheme).max(1e-9)
        );
    }
    Ok(())
}

/// The first line a binary prints of its version (nginx prints it on stderr).
fn version(bin: &str, flag: &str) -> String {
    std::process::Command::new(bin)
        .arg(flag)
        .output()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            let line = text.lines().next().unwrap_or_default();
            // "nginx version: nginx/1.22.1", "HAProxy version 2.6.12-1 2023/..."
            let line = line.strip_prefix("nginx version: ").unwrap_or(line);
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("rate-limit") => rate_limit().await,
        Some("cache") => cache().await,
        Some("proxy") => {
            if let Err(e) = proxy().await {
                eprintln!("load proxy: {e:#}");
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("usage: load rate-limit|cache|proxy");
            std::process::exit(2);
        }
    }
}
