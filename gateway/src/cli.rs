//! The `gateway` command line: `run` and `check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::server::{self, Settings};

/// Kong-compatible edge gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic with a config file.
    Run(RunArgs),
    /// Validate a config file and exit: 0 when valid, 1 with every error on stderr.
    Check {
        /// The Kong-format YAML file.
        #[arg(long, env = "GATEWAY_CONF")]
        conf: PathBuf,
    },
}

/// Flags of `gateway run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The Kong-format YAML file.
    #[arg(long, env = "GATEWAY_CONF", default_value = "conf/gateway.yaml")]
    pub conf: PathBuf,
    /// Plain HTTP listener.
    #[arg(long, env = "GATEWAY_HTTP_LISTEN", default_value = "0.0.0.0:8000")]
    pub http_listen: SocketAddr,
    /// HTTPS listener (HTTP/2 and HTTP/1.1 by ALPN).
    #[arg(long, env = "GATEWAY_HTTPS_LISTEN", default_value = "0.0.0.0:8443")]
    pub https_listen: SocketAddr,
    /// Admin listener.
    #[arg(long, env = "GATEWAY_ADMIN_LISTEN", default_value = "127.0.0.1:8001")]
    pub admin_listen: SocketAddr,
    /// Default certificate chain (PEM). Without it, a development certificate is
    /// generated in --certs-dir.
    #[arg(long, env = "GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key for --tls-cert (PEM).
    #[arg(long, env = "GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Directory of the development CA and localhost certificate.
    #[arg(long, env = "GATEWAY_CERTS_DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
    /// Worker threads per listener (default: the number of CPUs).
    #[arg(long, env = "GATEWAY_THREADS")]
    pub threads: Option<usize>,
    /// Size of the proxy-cache's in-memory tier, in MiB (shared by every
    /// proxy-cache plugin; least valuable entries are evicted past it).
    #[arg(long, env = "GATEWAY_PROXY_CACHE_MEMORY_MB", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub proxy_cache_memory_mb: u64,
}

/// Sets up logging: `RUST_LOG` filters, `info` by default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Entry point of the binary: parses arguments and runs the command.
///
/// Returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { conf } => match crate::config::load(&conf) {
            Ok(c) => {
                println!(
                    "{}: ok ({} services, {} routes, {} plugins, {} consumers, {} certificates)",
                    conf.display(),
                    c.services.len(),
                    c.routes.len(),
                    c.plugins.len(),
                    c.consumers.len(),
                    c.certificates.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            init_logging();
            let settings = Settings {
                conf: args.conf,
                http_listen: args.http_listen,
                https_listen: args.https_listen,
                admin_listen: args.admin_listen,
                tls_cert: args.tls_cert,
                tls_key: args.tls_key,
                certs_dir: args.certs_dir,
                threads: args
                    .threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                proxy_cache_memory: (args.proxy_cache_memory_mb as usize) << 20,
            };
            match server::run(&settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
