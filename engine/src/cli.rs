//! Process entry point: parses the command line, sets up logging, builds the Tokio
//! runtime and runs [`crate::serve`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Runs the engine as a process: parse arguments (exits with usage on bad ones),
/// initialise `tracing` from `RUST_LOG` (default `info`), and serve until shutdown.
///
/// Called by `main`. Returns [`ExitCode::SUCCESS`] after a graceful shutdown and
/// [`ExitCode::FAILURE`] if start-up or serving failed (the cause is logged).
pub fn main() -> ExitCode {
    let config = Config::parse();
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

/// Installs the global `tracing` subscriber (human-readable lines on stdout).
///
/// The filter comes from `RUST_LOG`, defaulting to `info`. Calling it twice is
/// harmless: the second call is ignored.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}
