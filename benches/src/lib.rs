//! Shared helpers for the benchmarks (the load harness lands with the benchmark issues).
