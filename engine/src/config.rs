//! Command line and environment configuration, parsed with `clap`.

use std::net::SocketAddr;

use clap::Parser;

/// The default database: a SQLite file under `data/` relative to the working
/// directory, created (with its directory) on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/engine.sqlite?mode=rwc";

impl std::fmt::Debug for Config {
    /// Prints every option except the Redis URL, which may hold a password (only
    /// whether it is set is shown).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("db_max_connections", &self.db_max_connections)
            .field("ready_timeout_ms", &self.ready_timeout_ms)
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("summary_ttl_secs", &self.summary_ttl_secs)
            .finish_non_exhaustive()
    }
}

/// Options of the `engine` process.
///
/// Parsed once at start-up by [`crate::cli::main`]; every option can also come from
/// the environment variable named in its help.
#[derive(Clone, Parser)]
#[command(
    name = "engine",
    version,
    about = "Revenue Engine: records charges and refunds and answers revenue analytics"
)]
pub struct Config {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, env = "ENGINE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Database URL: `sqlite://PATH?mode=rwc` or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Maximum number of pooled database connections.
    #[arg(long, env = "ENGINE_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// How long `/readyz` waits for `SELECT 1` before answering 503, in milliseconds.
    #[arg(long, env = "ENGINE_READY_TIMEOUT_MS", default_value_t = 2000)]
    pub ready_timeout_ms: u64,

    /// How long a client has to send a request's complete headers, counted from the
    /// first byte of the request (or from the accept, for a connection's first
    /// request), in milliseconds. A connection that misses it is closed.
    #[arg(
        long,
        env = "ENGINE_HEADER_READ_TIMEOUT_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub header_read_timeout_ms: u64,

    /// How long a kept-alive connection may stay silent between requests (nothing
    /// received or sent, no request in progress) before it is closed, in
    /// milliseconds. Keep it above the idle timeout of clients' connection pools
    /// (the gateway's is 60 s).
    #[arg(
        long,
        env = "ENGINE_IDLE_TIMEOUT_MS",
        default_value_t = 75_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub idle_timeout_ms: u64,

    /// Redis URL of the read cache (`redis://[:PASSWORD@]HOST:PORT[/DB]`); absent
    /// means no cache. The URL (and any password in it) is never logged.
    #[arg(long, env = "ENGINE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// How long a cached `GET /summary` or `GET /customers/{id}` answer lives in
    /// Redis, in seconds. Also bounds staleness if a cache invalidation fails.
    #[arg(
        long,
        env = "ENGINE_SUMMARY_TTL_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub summary_ttl_secs: u64,
}
