//! Process entry point: parses the command line, resolves the settings (config
//! file, environment, flags), sets up logging, builds the Tokio runtime and runs
//! [`crate::serve`]; or, for `engine check`, only validates the settings; or, for
//! `engine seed`, stores generated test data ([`crate::seed`]).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{Args, Command, Config};

/// Runs the engine as a process: parse arguments (exits with usage on bad ones),
/// resolve the settings, initialise `tracing` from `RUST_LOG` (default `info`), and
/// serve until shutdown.
///
/// Called by `main`. An invalid config file is reported on stderr (`engine: ...`,
/// naming the key) before anything is opened or bound. `engine check` stops after
/// resolving and prints `ok`. Returns [`ExitCode::SUCCESS`] after a graceful
/// shutdown or a passed check, and [`ExitCode::FAILURE`] if the settings are
/// invalid or start-up or serving failed (the cause is logged).
pub fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::resolve(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("engine: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Some(Command::Check) => {
            println!("ok");
            return ExitCode::SUCCESS;
        }
        Some(Command::Seed { events, seed }) => {
            return run_seed(&config, crate::seed::SeedOptions { events, seed });
        }
        None => {}
    }
    init_tracing();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    match runtime.block_on(crate::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("engine failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `engine seed`: opens the configured database (running the migrations),
/// stores the generated events and prints the summary line on stdout.
///
/// Progress goes to stderr every [`crate::seed::PROGRESS_EVERY`] events. Returns
/// [`ExitCode::SUCCESS`] once everything is stored, [`ExitCode::FAILURE`] (with the
/// cause on stderr) if the runtime, the database or an insert fails.
fn run_seed(config: &Config, opts: crate::seed::SeedOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("engine: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // No replicas for seeding, but the migrations URL (PgBouncer) applies.
        let servers = crate::db::ReplicaSettings {
            urls: Vec::new(),
            ..config.replica_settings()
        };
        let db = crate::db::Db::open(&config.database_url, config.pool_settings(), &servers)
            .await
            .context("cannot open the database")?;
        eprintln!(
            "engine: seeding {} events (seed {}) into {}",
            opts.events,
            opts.seed,
            crate::config::redact_url(&config.database_url)
        );
        let report = crate::seed::seed(&db, opts, |n| {
            eprintln!("engine: {n} / {} events stored", opts.events);
        })
        .await;
        if report.is_ok() {
            invalidate_cache(config, &db).await;
        }
        db.close().await;
        report
    });
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("engine: seed failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// After `engine seed` stored its events: when a read cache is configured, moves
/// every cache version past them, so running engines stop answering summaries
/// and customers cached before the seed. Only warns (on stderr) when Redis cannot
/// be reached: the events are stored either way, and cached answers then expire
/// with their TTL.
async fn invalidate_cache(config: &Config, db: &crate::db::Db) {
    let Some(url) = &config.redis_url else {
        return;
    };
    let result = async {
        let cache = crate::cache::Cache::connect(url, config.summary_ttl_secs, db.clone())
            .await
            .map_err(|e| e.to_string())?;
        // Connecting invalidates everything cached before (the seed is done).
        cache.invalidated_since_connect().await
    }
    .await;
    match result {
        Ok(()) => eprintln!("engine: read cache invalidated"),
        Err(e) => eprintln!(
            "engine: warning: the read cache could not be invalidated ({e}); \
             cached answers may be stale for up to {}s",
            config.summary_ttl_secs
        ),
    }
}

/// Installs the global `tracing` subscriber (human-readable lines on stdout).
///
/// The filter comes from `RUST_LOG`, defaulting to `info` (Postgres notices from
/// `warn`). Calling it twice is
/// harmless: the second call is ignored.
fn init_tracing() {
    // Postgres NOTICEs (`relation "_sqlx_migrations" already exists, skipping`
    // at every start) are noise at info; warnings from the server still show.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}
