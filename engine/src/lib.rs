//! Revenue Engine: an HTTP service that records charges and refunds and answers
//! revenue analytics (gross, refunds and net per day or month and currency).
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]. Tests and other crates can
//! build the router with [`app`] around their own [`AppState`], or run the whole
//! service with [`serve`].
//!
//! Module map:
//! - [`config`]: command line and environment options, and the resolved settings.
//! - [`config_file`]: the optional YAML config file.
//! - [`state`]: the shared state handed to every request handler.
//! - [`url_check`]: start-up checks of the database and Redis URLs.
//! - [`error`]: [`AppError`], the one place errors become HTTP responses.
//! - [`cache`]: the optional Redis cache-aside of the read endpoints, and metrics.
//! - [`db`]: connection pools for SQLite or Postgres (primary and read replicas),
//!   migrations and queries.
//! - [`consistency`]: the `Consistency-Token` header of read-your-writes.
//! - [`model`]: the domain types (events, filters, cursors, summaries).
//! - [`validation`]: turns untrusted JSON bodies and query strings into [`model`] types.
//! - [`idempotency`]: the `Idempotency-Key` header and request fingerprints of
//!   idempotent `POST /events`.
//! - [`routes`]: the HTTP handlers and the router.
//! - [`seed`]: `engine seed`, realistic reproducible test data.
//! - [`server`]: the accept loop with connection timeouts and graceful shutdown.

pub mod cache;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod consistency;
pub mod db;
pub mod error;
pub mod idempotency;
pub mod model;
pub mod routes;
pub mod seed;
pub mod server;
pub mod state;
pub mod sync;
pub mod unique_keys;
pub mod url_check;
pub mod validation;

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

pub use config::Config;
pub use error::AppError;
pub use state::AppState;

/// Builds the complete HTTP router (all routes, fallbacks, body limit and request
/// logging) around `state`.
///
/// Runs once at start-up (or once per test); returns a [`Router`] ready for
/// [`server::serve`] (or [`axum::serve()`]).
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// Runs the service described by `config` until SIGTERM or Ctrl-C.
///
/// Connects to the database (creating a SQLite file and its directory if needed),
/// runs the embedded migrations, sets up the Redis read cache if configured
/// (an unreachable Redis is not an error), binds the listen address, logs it, and serves
/// requests with the configured connection timeouts (see [`server`]). On a
/// shutdown signal it stops accepting connections, lets in-flight requests finish,
/// then closes the pool. Returns an error if the database cannot be
/// opened or migrated, or the address cannot be bound.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let pool = config.pool_settings();
    let replicas = config.replica_settings();
    let db = db::Db::open(&config.database_url, pool, &replicas)
        .await
        .context("cannot open the database")?;
    tracing::info!(
        backend = db.backend_name(),
        database = config::redact_url(&config.database_url),
        max_connections = pool.max_connections,
        idle_timeout = ?pool.idle_timeout,
        acquire_timeout = ?pool.acquire_timeout,
        pgbouncer = pool.pgbouncer,
        replicas = replicas.urls.len(),
        max_replica_lag = ?replicas.max_lag,
        "database ready, migrations applied"
    );

    let cache = match &config.redis_url {
        Some(url) => cache::Cache::connect(url, config.summary_ttl_secs, db.clone())
            .await
            .context("cannot set up the read cache")?,
        None => {
            tracing::info!("no ENGINE_REDIS_URL: the read cache is off");
            cache::Cache::disabled()
        }
    };
    let state = AppState::new(db.clone(), Duration::from_millis(config.ready_timeout_ms))
        .with_cache(cache.clone())
        .with_idempotency_key_ttl(config.idempotency_key_ttl)
        .with_body_read_timeout(Duration::from_millis(config.header_read_timeout_ms))
        .with_request_timeout(Duration::from_millis(config.request_timeout_ms));
    let sweep = tokio::spawn(sweep_expired_keys(db.clone(), config.idempotency_key_ttl));
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let timeouts = server::Timeouts {
        header_read: Duration::from_millis(config.header_read_timeout_ms),
        idle: Duration::from_millis(config.idle_timeout_ms),
    };
    tracing::info!(
        header_read_timeout = ?timeouts.header_read,
        idle_timeout = ?timeouts.idle,
        "engine listening on http://{addr}"
    );

    server::serve(listener, app(state), timeouts, shutdown_signal()).await;

    sweep.abort();
    cache.flush_pending(Duration::from_secs(5)).await;
    tracing::info!("shutting down: closing database connections");
    // Bounded: a connection stuck on a hung server must not keep the process up.
    if tokio::time::timeout(Duration::from_secs(10), db.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections did not close within 10s; exiting anyway");
    }
    Ok(())
}

/// Deletes expired idempotency keys forever: every quarter of `ttl` (at least
/// 1 s, at most 10 min), keys claimed more than `ttl` ago. Spawned once by
/// [`serve`] and aborted at shutdown. Failures are logged and retried at the next
/// round; claims never depend on the sweep (an expired claim is taken over).
async fn sweep_expired_keys(db: db::Db, ttl: Duration) {
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::time::sleep(every).await;
        match db.delete_expired_keys(state::expiry_cutoff(ttl)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!("cannot delete expired idempotency keys: {e}"),
        }
    }
}

/// Resolves when the process receives SIGTERM or Ctrl-C (SIGINT).
///
/// Used by [`serve`] for graceful shutdown. If a signal handler cannot be installed
/// the error is logged and that signal is simply not awaited.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
