//! A closed-loop HTTP/1.1 load generator: `concurrency` keep-alive connections, each
//! sending its next request when the previous answer arrives, for a fixed time.
//!
//! Machines here are shared and noisy, so callers compare setups in the same run,
//! interleaving rounds, and report ratios rather than absolute figures.

use std::time::{Duration, Instant};

/// What one round measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Round {
    /// Requests answered.
    pub requests: u64,
    /// Answers that were not 2xx.
    pub non_2xx: u64,
    /// Transport errors.
    pub errors: u64,
    /// Wall time of the round.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Round {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// An HTTP/1.1 client keeping up to `concurrency` connections alive, trusting
/// `ca_pem` (a PEM CA certificate) for HTTPS when given, and resolving
/// `localhost` to 127.0.0.1 only (the servers under test listen there).
///
/// Runs once per setup; panics if the CA cannot be parsed.
pub fn client(concurrency: usize, ca_pem: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(10))
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    if let Some(pem) = ca_pem {
        let ca = reqwest::Certificate::from_pem(pem.as_bytes())
            .unwrap_or_else(|e| panic!("CA certificate: {e}"));
        builder = builder.add_root_certificate(ca);
    }
    builder
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

/// Sends GET `url` from `concurrency` connections for `duration`; returns the tally.
pub async fn drive(url: &str, concurrency: usize, duration: Duration) -> Round {
    drive_with(&client(concurrency, None), url, concurrency, duration).await
}

/// Like [`drive`], with a given `client` (e.g. one trusting a test CA).
pub async fn drive_with(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    duration: Duration,
) -> Round {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let (mut non_2xx, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match client.get(&url).send().await {
                        Ok(resp) => {
                            if !resp.status().is_success() {
                                non_2xx += 1;
                            }
                            let _ = resp.bytes().await;
                            lat.push(t.elapsed());
                        }
                        Err(_) => errors += 1,
                    }
                }
                (lat, non_2xx, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut round = Round::default();
    for t in tasks {
        if let Ok((lat, n, e)) = t.await {
            all.extend(lat);
            round.non_2xx += n;
            round.errors += e;
        }
    }
    round.elapsed = started.elapsed();
    round.requests = all.len() as u64;
    all.sort_unstable();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    round.p50 = pick(0.50);
    round.p99 = pick(0.99);
    round
}

/// The median of some values (0 for none).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
