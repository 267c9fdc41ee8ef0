//! Shared helpers for the benchmarks: the closed-loop load generator the load
//! harness (`cargo run --release -p benches --bin load`) drives the gateway with.

pub mod load;
