//! End-to-end harness: starts real gateway, engine, Postgres and Redis processes on
//! free loopback ports, and gives tests HTTP clients that trust the development CA.

pub mod engine;
pub mod pg;

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
