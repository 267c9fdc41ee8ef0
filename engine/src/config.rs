//! The engine's settings: the command line and environment ([`Args`], parsed with
//! `clap`), the optional YAML file ([`crate::config_file`]), and the resolved
//! [`Config`].
//!
//! Precedence, lowest first: built-in defaults, the config file, environment
//! variables, command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config_file::{self, FileConfig};
use crate::url_check::{self, is_postgres};

/// The default database: a SQLite file under `data/` relative to the working
/// directory, created (with its directory) on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/engine.sqlite?mode=rwc";

/// How long an `Idempotency-Key` is remembered by default (as Stripe does).
pub const DEFAULT_IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The resolved settings of the `engine` process.
///
/// Built once at start-up by [`Config::resolve`] (or [`Config::default`] in
/// tests) and handed to [`crate::serve`].
#[derive(Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Database URL of the primary: writes, transactions, and reads when no
    /// replica fits.
    pub database_url: String,
    /// URLs of Postgres streaming replicas that serve reads.
    pub replica_urls: Vec<String>,
    /// Maximum number of pooled database connections.
    pub db_max_connections: u32,
    /// How long a pooled database connection may sit unused before it is closed.
    pub db_idle_timeout: Duration,
    /// How long a query waits for a pooled connection before failing (503).
    pub db_acquire_timeout: Duration,
    /// A replica further behind than this serves no reads.
    pub max_replica_lag: Duration,
    /// How often each replica's health and lag are checked.
    pub replica_check_interval: Duration,
    /// Postgres is reached through PgBouncer in transaction pooling mode.
    pub db_pgbouncer: bool,
    /// A direct URL of the primary for the migrations (required with
    /// `db_pgbouncer`).
    pub db_migrations_url: Option<String>,
    /// How long `/readyz` waits for `SELECT 1`, in milliseconds.
    pub ready_timeout_ms: u64,
    /// How long a client has to send a request's headers, in milliseconds.
    pub header_read_timeout_ms: u64,
    /// How long a kept-alive HTTP connection may stay silent, in milliseconds.
    pub idle_timeout_ms: u64,
    /// The longest an API request may take before it is answered 503, in
    /// milliseconds.
    pub request_timeout_ms: u64,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_key_ttl: Duration,
    /// Redis URL of the read cache; `None` means no cache. Never logged.
    pub redis_url: Option<String>,
    /// Lifetime of cached read answers, in seconds.
    pub summary_ttl_secs: u64,
}

impl Default for Config {
    /// The built-in defaults: what the engine runs with given no file, no
    /// environment and no flags.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            replica_urls: Vec::new(),
            db_max_connections: 10,
            db_idle_timeout: Duration::from_secs(600),
            db_acquire_timeout: Duration::from_secs(5),
            max_replica_lag: Duration::from_secs(2),
            replica_check_interval: Duration::from_secs(1),
            db_pgbouncer: false,
            db_migrations_url: None,
            ready_timeout_ms: 2000,
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: 75_000,
            request_timeout_ms: 30_000,
            idempotency_key_ttl: DEFAULT_IDEMPOTENCY_KEY_TTL,
            redis_url: None,
            summary_ttl_secs: 60,
        }
    }
}

impl std::fmt::Debug for Config {
    /// Prints every option with passwords removed from the database URLs and without
    /// the Redis URL (only whether it is set is shown).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let replicas: Vec<String> = self.replica_urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("replica_urls", &replicas)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_idle_timeout", &self.db_idle_timeout)
            .field("db_acquire_timeout", &self.db_acquire_timeout)
            .field("max_replica_lag", &self.max_replica_lag)
            .field("replica_check_interval", &self.replica_check_interval)
            .field("db_pgbouncer", &self.db_pgbouncer)
            .field(
                "db_migrations_url",
                &self.db_migrations_url.as_deref().map(redact_url),
            )
            .field("ready_timeout_ms", &self.ready_timeout_ms)
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("idempotency_key_ttl", &self.idempotency_key_ttl)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("summary_ttl_secs", &self.summary_ttl_secs)
            .finish()
    }
}

impl Config {
    /// Resolves the settings from `args`: built-in defaults, overridden by the
    /// config file (`--config` / `ENGINE_CONFIG`) if one is named, overridden by
    /// environment variables and flags (which `clap` already merged in `args`).
    ///
    /// Runs once at start-up, before anything is opened or bound. Returns an error
    /// naming the file and the key if the file cannot be read or is invalid.
    /// Also errors when replicas, PgBouncer mode or a migrations URL are set for
    /// a SQLite primary, and for a database or Redis URL that cannot be used
    /// (see [`url_check`]).
    pub fn resolve(args: &Args) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => config_file::load(path)?,
            None => FileConfig::default(),
        };
        let config = Self::merge(file, args);
        // A URL error names where the value came from: the file's key, or the
        // environment variable / flag that overrode it.
        let file_name = args.config.as_ref().map_or_else(String::new, |path| {
            path.file_name()
                .map_or_else(String::new, |n| format!("{}: ", n.to_string_lossy()))
        });
        let origin = |key: &str, overridden: bool, env: &str, flag: &str| {
            if overridden {
                format!("{key} (set by {env} or {flag})")
            } else {
                format!("{file_name}{key}")
            }
        };
        url_check::check_database_url(
            &origin(
                "database.primary",
                args.database_url.is_some(),
                "DATABASE_URL",
                "--database-url",
            ),
            &config.database_url,
        )?;
        if !is_postgres(&config.database_url) {
            // Settings that only mean something for Postgres are refused rather
            // than silently ignored on SQLite.
            let postgres_only = [
                (
                    !config.replica_urls.is_empty(),
                    "database.replicas: read replicas need",
                ),
                (
                    config.db_pgbouncer,
                    "database.pgbouncer: PgBouncer mode needs",
                ),
                (
                    config.db_migrations_url.is_some(),
                    "database.migrations_url: a migrations URL needs",
                ),
            ];
            if let Some((_, what)) = postgres_only.iter().find(|(set, _)| *set) {
                anyhow::bail!("{what} a postgres:// primary (database.primary is SQLite)");
            }
        }
        if config.db_pgbouncer && config.db_migrations_url.is_none() {
            anyhow::bail!(
                "database.migrations_url: required with database.pgbouncer: true \
                 (migrations need a direct or session-mode connection to the primary)"
            );
        }
        if let Some(url) = &config.db_migrations_url {
            url_check::check_postgres_url(
                &origin(
                    "database.migrations_url",
                    args.db_migrations_url.is_some(),
                    "ENGINE_DB_MIGRATIONS_URL",
                    "--db-migrations-url",
                ),
                url,
            )?;
        }
        for (i, url) in config.replica_urls.iter().enumerate() {
            url_check::check_postgres_url(
                &origin(
                    &format!("database.replicas[{i}]"),
                    args.db_replicas.is_some(),
                    "ENGINE_DB_REPLICAS",
                    "--db-replicas",
                ),
                url,
            )?;
        }
        if let Some(url) = &config.redis_url {
            url_check::check_redis_url(
                &origin(
                    "redis",
                    args.redis_url.is_some(),
                    "ENGINE_REDIS_URL",
                    "--redis-url",
                ),
                url,
            )?;
        }
        Ok(config)
    }

    /// The pool settings of every database pool. Used at start-up.
    pub fn pool_settings(&self) -> crate::db::PoolSettings {
        crate::db::PoolSettings {
            max_connections: self.db_max_connections,
            idle_timeout: self.db_idle_timeout,
            acquire_timeout: self.db_acquire_timeout,
            pgbouncer: self.db_pgbouncer,
        }
    }

    /// The read replicas and how they are judged. Used at start-up.
    pub fn replica_settings(&self) -> crate::db::ReplicaSettings {
        crate::db::ReplicaSettings {
            urls: self.replica_urls.clone(),
            max_lag: self.max_replica_lag,
            check_interval: self.replica_check_interval,
            // A third of the request's budget (at most 10 s), so a read that
            // gives up on a hung replica still has time on the primary.
            read_timeout: Duration::from_millis(self.request_timeout_ms / 3)
                .clamp(Duration::from_millis(100), Duration::from_secs(10)),
            migrations_url: self.db_migrations_url.clone(),
        }
    }

    /// Layers `file` over the defaults and `args` over both.
    fn merge(file: FileConfig, args: &Args) -> Self {
        let d = Self::default();
        Self {
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            database_url: args
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or(d.database_url),
            replica_urls: args
                .db_replicas
                .clone()
                .map(|urls| urls.into_iter().filter(|u| !u.is_empty()).collect())
                .or(file.replica_urls)
                .unwrap_or(d.replica_urls),
            db_max_connections: layered(
                args.db_max_connections,
                file.db_max_connections,
                d.db_max_connections,
            ),
            db_idle_timeout: layered(
                args.db_idle_timeout,
                file.db_idle_timeout,
                d.db_idle_timeout,
            ),
            db_acquire_timeout: layered(
                args.db_acquire_timeout,
                file.db_acquire_timeout,
                d.db_acquire_timeout,
            ),
            max_replica_lag: layered(
                args.db_max_replica_lag,
                file.max_replica_lag,
                d.max_replica_lag,
            ),
            replica_check_interval: layered(
                args.db_replica_check_interval,
                file.replica_check_interval,
                d.replica_check_interval,
            ),
            db_pgbouncer: layered(args.db_pgbouncer, file.db_pgbouncer, d.db_pgbouncer),
            db_migrations_url: args
                .db_migrations_url
                .clone()
                .or(file.db_migrations_url)
                .or(d.db_migrations_url),
            ready_timeout_ms: layered(
                args.ready_timeout_ms,
                file.ready_timeout.map(millis),
                d.ready_timeout_ms,
            ),
            header_read_timeout_ms: layered(
                args.header_read_timeout_ms,
                file.header_read_timeout.map(millis),
                d.header_read_timeout_ms,
            ),
            idle_timeout_ms: layered(
                args.idle_timeout_ms,
                file.idle_timeout.map(millis),
                d.idle_timeout_ms,
            ),
            request_timeout_ms: layered(
                args.request_timeout_ms,
                file.request_timeout.map(millis),
                d.request_timeout_ms,
            ),
            idempotency_key_ttl: layered(
                args.idempotency_key_ttl,
                file.idempotency_key_ttl,
                d.idempotency_key_ttl,
            ),
            redis_url: args.redis_url.clone().or(file.redis_url).or(d.redis_url),
            summary_ttl_secs: layered(
                args.summary_ttl_secs,
                file.summary_ttl_secs,
                d.summary_ttl_secs,
            ),
        }
    }
}

/// A setting's value: the flag (or its environment variable) if given, else
/// the config file's, else the built-in default.
fn layered<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

/// Whole milliseconds of `d`, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `url` with any password replaced by `***`, in the user part
/// (`scheme://user:***@host/...`) and in every query parameter whose name
/// contains `pass` (`password=`, `sslpassword=`, any case), for
/// logs and `engine check`. URLs without a password are returned unchanged.
pub fn redact_url(url: &str) -> String {
    let url = redact_userinfo(url);
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().contains("pass") => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// The user-part half of [`redact_url`].
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or_default();
    if user.len() == userinfo.len() {
        return url.to_owned();
    }
    format!("{}{user}:***{}", &url[..scheme_end], &rest[at..])
}

/// Parses a duration flag (`30s`, `250ms`, `2m` or seconds) for `clap`.
fn duration_arg(text: &str) -> Result<Duration, String> {
    config_file::parse_duration(text)
}

/// Parses a non-zero duration flag for `clap`.
fn positive_duration_arg(text: &str) -> Result<Duration, String> {
    duration_arg(text).and_then(|d| {
        if d.is_zero() {
            Err("must be more than 0s".to_owned())
        } else {
            Ok(d)
        }
    })
}

/// The command line of the `engine` process.
///
/// Parsed once at start-up by [`crate::cli::main`]. Every option can also come from
/// the environment variable named in its help (a flag wins over the variable); an
/// option given neither way is `None` and falls back to the config file, then to
/// the built-in default shown in its help.
#[derive(Clone, Parser)]
#[command(
    name = "engine",
    version,
    about = "Revenue Engine: records charges and refunds and answers revenue analytics",
    long_about = None
)]
pub struct Args {
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// YAML config file (see conf/engine.yaml). Environment variables and flags
    /// override its values.
    #[arg(long, env = "ENGINE_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "ENGINE_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,

    /// Database URL: `sqlite://PATH?mode=rwc` or `postgres://USER@HOST:PORT/DB`
    /// [default: sqlite://data/engine.sqlite?mode=rwc].
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Maximum number of pooled database connections [default: 10].
    #[arg(long, env = "ENGINE_DB_MAX_CONNECTIONS", global = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: Option<u32>,

    /// How long a pooled database connection may sit unused before it is closed,
    /// e.g. 30s [default: 10m].
    #[arg(long, env = "ENGINE_DB_IDLE_TIMEOUT", global = true, value_parser = duration_arg)]
    pub db_idle_timeout: Option<Duration>,

    /// How long a query waits for a free pooled connection before it fails with
    /// 503, e.g. 5s [default: 5s].
    #[arg(long, env = "ENGINE_DB_ACQUIRE_TIMEOUT", global = true,
          value_parser = positive_duration_arg)]
    pub db_acquire_timeout: Option<Duration>,

    /// Postgres URLs of streaming replicas that serve reads, comma-separated
    /// [default: none].
    #[arg(
        long,
        env = "ENGINE_DB_REPLICAS",
        global = true,
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub db_replicas: Option<Vec<String>>,

    /// A replica further behind the primary than this serves no reads, e.g. 2s
    /// [default: 2s].
    #[arg(long, env = "ENGINE_DB_MAX_REPLICA_LAG", global = true, value_parser = duration_arg)]
    pub db_max_replica_lag: Option<Duration>,

    /// How often each replica's health and lag are checked, e.g. 1s [default: 1s].
    #[arg(long, env = "ENGINE_DB_REPLICA_CHECK_INTERVAL", global = true,
          value_parser = positive_duration_arg)]
    pub db_replica_check_interval: Option<Duration>,

    /// Postgres is reached through PgBouncer in transaction pooling mode: each
    /// query in its own transaction with unnamed statements; needs
    /// --db-migrations-url. `--db-pgbouncer` alone means true; a value needs `=`
    /// (`--db-pgbouncer=false`) [default: false].
    #[arg(long, env = "ENGINE_DB_PGBOUNCER", global = true, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub db_pgbouncer: Option<bool>,

    /// A direct (or session-mode) URL of the primary for the migrations; required
    /// with --db-pgbouncer [default: the database URL].
    #[arg(
        long,
        env = "ENGINE_DB_MIGRATIONS_URL",
        global = true,
        hide_env_values = true
    )]
    pub db_migrations_url: Option<String>,

    /// The longest an API request may take (a hung database, say) before it is
    /// answered 503 and its queries are dropped, in milliseconds [default: 30000].
    #[arg(long, env = "ENGINE_REQUEST_TIMEOUT_MS", global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: Option<u64>,

    /// How long `/readyz` waits for `SELECT 1` before answering 503, in milliseconds
    /// [default: 2000].
    #[arg(long, env = "ENGINE_READY_TIMEOUT_MS", global = true)]
    pub ready_timeout_ms: Option<u64>,

    /// How long a client has to send a request's complete headers, counted from the
    /// first byte of the request (or from the accept, for a connection's first
    /// request), in milliseconds. A connection that misses it is closed
    /// [default: 30000].
    #[arg(long, env = "ENGINE_HEADER_READ_TIMEOUT_MS", global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: Option<u64>,

    /// How long a kept-alive connection may stay silent between requests (nothing
    /// received or sent, no request in progress) before it is closed, in
    /// milliseconds. Keep it above the idle timeout of clients' connection pools
    /// (the gateway's is 60 s) [default: 75000].
    #[arg(long, env = "ENGINE_IDLE_TIMEOUT_MS", global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: Option<u64>,

    /// How long an `Idempotency-Key` is remembered, e.g. 24h; a retry after that
    /// stores a new event [default: 24h].
    #[arg(long, env = "ENGINE_IDEMPOTENCY_KEY_TTL", global = true,
          value_parser = positive_duration_arg)]
    pub idempotency_key_ttl: Option<Duration>,

    /// Redis URL of the read cache (`redis://[:PASSWORD@]HOST:PORT[/DB]`); absent
    /// means no cache. Only its `host:port/db` is logged, never a password.
    #[arg(long, env = "ENGINE_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// How long a cached `GET /summary` or `GET /customers/{id}` answer lives in
    /// Redis, in seconds. Also bounds staleness if a cache invalidation fails
    /// [default: 60].
    #[arg(long, env = "ENGINE_SUMMARY_TTL_SECS", global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub summary_ttl_secs: Option<u64>,
}

/// Subcommands of `engine`.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Resolve the settings (config file, environment, flags) and exit: 0 and `ok`
    /// on stdout when valid, 1 with the error on stderr otherwise. Opens nothing.
    Check,
    /// Generate realistic test events and store them in the configured database
    /// (same selection as serving: config file, environment, flags), then print a
    /// one-line summary. The same `--seed` gives the same data.
    Seed {
        /// Number of events to generate.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// Seed of the pseudo-random generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn args(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("engine").chain(argv.iter().copied())).unwrap()
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = config_file::parse(
            "listen: 127.0.0.1:9000\ndatabase:\n  primary: postgres://u@h/db\n  \
             connection_pool: { idle_timeout: 30s }\n",
        )
        .unwrap();
        let c = Config::merge(file.clone(), &args(&[]));
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.database_url, "postgres://u@h/db");
        assert_eq!(c.db_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.db_acquire_timeout, Duration::from_secs(5));
        let c = Config::merge(
            file,
            &args(&["--listen", "127.0.0.1:1", "--db-idle-timeout", "1m"]),
        );
        assert_eq!(c.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.db_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.database_url, "postgres://u@h/db");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://revenue:s3cret@db:5432/x?sslmode=require"),
            "postgres://revenue:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("postgres://revenue@db/x"),
            "postgres://revenue@db/x"
        );
        assert_eq!(
            redact_url("postgres://revenue@db/x?sslmode=require&password=s3cret"),
            "postgres://revenue@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgres://revenue@db/x?sslpassword=k&PassWord=s"),
            "postgres://revenue@db/x?sslpassword=***&PassWord=***"
        );
        assert_eq!(
            redact_url("sqlite://data/engine.sqlite?mode=rwc"),
            "sqlite://data/engine.sqlite?mode=rwc"
        );
        let c = Config {
            database_url: "postgres://u:topsecret@h/db".into(),
            replica_urls: vec!["postgres://u:alsosecret@r/db".into()],
            redis_url: Some("redis://:redissecret@h".into()),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
