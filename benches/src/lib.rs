//! Shared helpers for the benchmarks: the closed-loop load generator the load
//! harness (`cargo run --release -p benches --bin load`) drives the gateway with,
//! the nginx and HAProxy it is compared with, and the pieces of the engine
//! database benchmark (`--bin engine_db`).

pub mod engine_db;
pub mod load;
pub mod peers;
