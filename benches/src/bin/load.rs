//! The load harness: `cargo run --release -p benches --bin load -- rate-limit`.
//!
//! `rate-limit` starts a release gateway, a throwaway redis-server and an echo
//! upstream, then drives two routes that differ only in the rate-limiting policy
//! (`local` and `redis`), interleaving rounds so both see the same machine load.
//! It prints each policy's throughput, their ratio, and Redis commands per request
//! from `INFO commandstats`.
//!
//! Options (environment): `LOAD_CONCURRENCY` (default 32), `LOAD_SECONDS` per round
//! (default 5), `LOAD_ROUNDS` (default 3).

use std::time::Duration;

use benches::load::{drive, median};
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

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("rate-limit") => rate_limit().await,
        _ => {
            eprintln!("usage: load rate-limit");
            std::process::exit(2);
        }
    }
}
