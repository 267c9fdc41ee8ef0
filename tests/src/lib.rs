//! End-to-end harness: starts real gateway, engine, Postgres and Redis processes on
//! free loopback ports, and gives tests HTTP clients that trust the development CA.

// A test harness reports failure by panicking with a message, so `expect` is the
// right tool here; the lint stays on for the product crates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bin;
pub mod engine;
pub mod gateway;
pub mod pg;
pub mod pgbouncer;
pub mod pki;
pub mod redis;
pub mod upstream;

/// Returns a TCP port on 127.0.0.1 that was free when asked.
///
/// Runs at test set-up; the port is released before it is returned, so a race with
/// another process is possible but rare on a test machine.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a free port: {e}"))
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`); 0
/// when it cannot be read (the process is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Writes raw bytes to `port` on 127.0.0.1 and returns everything the server sends
/// back until it closes the connection (or 10 seconds pass).
pub async fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buf),
    )
    .await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Sends one raw HTTP/1.1 request and returns the status code and the body.
///
/// For tests that need a request target exactly as written (`/a/../b`,
/// `%2e%2e`): HTTP client libraries normalise such paths before sending them.
pub async fn raw_request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let text = raw_exchange(port, req.as_bytes()).await;
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
