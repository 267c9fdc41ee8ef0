//! The optional YAML config file of the engine (`--config FILE`, `ENGINE_CONFIG`).
//!
//! Every key is optional; see `conf/engine.yaml` for the documented shape. Unknown
//! keys and values of the wrong type are errors naming the key's path, e.g.
//! `engine.yaml: database.connection_pool.idle_timeout: expected a duration like 30s`.
//! Error messages never quote a URL, since URLs may hold passwords.
//!
//! Durations are written `30s`, `250ms`, `2m`, or as a plain integer of seconds.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use yaml_rust2::{Yaml, YamlLoader};

/// The values a config file sets; `None` for every key it leaves out.
#[derive(Clone, Default, PartialEq)]
pub struct FileConfig {
    /// `listen`.
    pub listen: Option<SocketAddr>,
    /// `database.primary`.
    pub database_url: Option<String>,
    /// `database.replicas`.
    pub replica_urls: Option<Vec<String>>,
    /// `database.connection_pool.max_connections`.
    pub db_max_connections: Option<u32>,
    /// `database.connection_pool.idle_timeout`.
    pub db_idle_timeout: Option<Duration>,
    /// `database.connection_pool.acquire_timeout`.
    pub db_acquire_timeout: Option<Duration>,
    /// `database.max_replica_lag`.
    pub max_replica_lag: Option<Duration>,
    /// `database.replica_check_interval`.
    pub replica_check_interval: Option<Duration>,
    /// `database.pgbouncer`.
    pub db_pgbouncer: Option<bool>,
    /// `database.migrations_url`.
    pub db_migrations_url: Option<String>,
    /// `http.ready_timeout`.
    pub ready_timeout: Option<Duration>,
    /// `http.header_read_timeout`.
    pub header_read_timeout: Option<Duration>,
    /// `http.idle_timeout`.
    pub idle_timeout: Option<Duration>,
    /// `http.request_timeout`.
    pub request_timeout: Option<Duration>,
    /// `idempotency.key_ttl`.
    pub idempotency_key_ttl: Option<Duration>,
    /// `redis`.
    pub redis_url: Option<String>,
    /// `cache.summary_ttl`, in whole seconds.
    pub summary_ttl_secs: Option<u64>,
}

impl std::fmt::Debug for FileConfig {
    /// Shows which keys are set without printing any URL (they may hold passwords).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConfig")
            .field("listen", &self.listen)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("replica_urls", &self.replica_urls.as_ref().map(Vec::len))
            .field("db_max_connections", &self.db_max_connections)
            .field("db_idle_timeout", &self.db_idle_timeout)
            .field("db_acquire_timeout", &self.db_acquire_timeout)
            .field("max_replica_lag", &self.max_replica_lag)
            .field("replica_check_interval", &self.replica_check_interval)
            .field("db_pgbouncer", &self.db_pgbouncer)
            .field(
                "db_migrations_url",
                &self.db_migrations_url.as_ref().map(|_| "<set>"),
            )
            .field("ready_timeout", &self.ready_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("idempotency_key_ttl", &self.idempotency_key_ttl)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("summary_ttl_secs", &self.summary_ttl_secs)
            .finish()
    }
}

/// Reads and parses the config file at `path`.
///
/// Runs once at start-up (and for `engine check`), before anything is bound.
/// Returns the values set, or an error that starts with the file name and names
/// the offending key (or says the file cannot be read or is not valid YAML).
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    parse(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

/// Parses the YAML text of a config file.
///
/// Returns the values set, or a message `PATH: problem` (e.g.
/// `database.connection_pool.idle_timeout: expected a duration like 30s`). An empty
/// file sets nothing.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let mut out = FileConfig::default();
    let root = match docs.as_slice() {
        [] => return Ok(out),
        [doc] => doc,
        _ => return Err("expected a single YAML document".into()),
    };
    if root.is_null() {
        return Ok(out);
    }
    for (key, value) in entries(root, "")? {
        match key.as_str() {
            "listen" => {
                out.listen = Some(
                    string(value, "listen")?
                        .parse()
                        .map_err(|_| "listen: expected an address like 127.0.0.1:8080")?,
                );
            }
            "database" => parse_database(value, &mut out)?,
            "http" => {
                for (key, value) in entries(value, "http")? {
                    let path = format!("http.{key}");
                    let slot = match key.as_str() {
                        "ready_timeout" => &mut out.ready_timeout,
                        "header_read_timeout" => &mut out.header_read_timeout,
                        "idle_timeout" => &mut out.idle_timeout,
                        "request_timeout" => &mut out.request_timeout,
                        other => return Err(unknown("http.", other)),
                    };
                    *slot = Some(positive_duration(value, &path)?);
                }
            }
            "redis" => out.redis_url = Some(url(value, "redis", &["redis://", "rediss://"])?),
            "idempotency" => {
                for (key, value) in entries(value, "idempotency")? {
                    match key.as_str() {
                        "key_ttl" => {
                            out.idempotency_key_ttl =
                                Some(positive_duration(value, "idempotency.key_ttl")?);
                        }
                        other => return Err(unknown("idempotency.", other)),
                    }
                }
            }
            "cache" => {
                for (key, value) in entries(value, "cache")? {
                    match key.as_str() {
                        "summary_ttl" => {
                            let path = "cache.summary_ttl";
                            let ttl = duration(value, path)?;
                            if ttl.subsec_nanos() != 0 || ttl.as_secs() == 0 {
                                return Err(format!(
                                    "{path}: expected a whole number of seconds, at least 1s"
                                ));
                            }
                            out.summary_ttl_secs = Some(ttl.as_secs());
                        }
                        other => return Err(unknown("cache.", other)),
                    }
                }
            }
            other => return Err(unknown("", other)),
        }
    }
    Ok(out)
}

/// The URL schemes the engine can open.
const DATABASE_SCHEMES: &[&str] = &["sqlite:", "postgres://", "postgresql://"];
/// The URL schemes of read replicas (SQLite has none).
const POSTGRES_SCHEMES: &[&str] = &["postgres://", "postgresql://"];

/// Parses the `database` section into `out`.
fn parse_database(section: &Yaml, out: &mut FileConfig) -> Result<(), String> {
    for (key, value) in entries(section, "database")? {
        match key.as_str() {
            "primary" => {
                out.database_url = Some(url(value, "database.primary", DATABASE_SCHEMES)?);
            }
            "replicas" => {
                let path = "database.replicas";
                let items = match value {
                    Yaml::Array(items) => items,
                    Yaml::Null => &Vec::new(),
                    _ => return Err(format!("{path}: expected a list of database URLs")),
                };
                let urls = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| url(item, &format!("{path}[{i}]"), POSTGRES_SCHEMES))
                    .collect::<Result<Vec<_>, _>>()?;
                out.replica_urls = Some(urls);
            }
            "connection_pool" => {
                for (key, value) in entries(value, "database.connection_pool")? {
                    let path = format!("database.connection_pool.{key}");
                    match key.as_str() {
                        "max_connections" => {
                            let n = value
                                .as_i64()
                                .and_then(|n| u32::try_from(n).ok())
                                .filter(|n| *n >= 1)
                                .ok_or_else(|| {
                                    format!("{path}: expected a positive integer, e.g. 200")
                                })?;
                            out.db_max_connections = Some(n);
                        }
                        "idle_timeout" => out.db_idle_timeout = Some(duration(value, &path)?),
                        "acquire_timeout" => {
                            out.db_acquire_timeout = Some(positive_duration(value, &path)?);
                        }
                        other => return Err(unknown("database.connection_pool.", other)),
                    }
                }
            }
            "max_replica_lag" => {
                out.max_replica_lag = Some(duration(value, "database.max_replica_lag")?);
            }
            "replica_check_interval" => {
                out.replica_check_interval =
                    Some(positive_duration(value, "database.replica_check_interval")?);
            }
            "migrations_url" => {
                out.db_migrations_url =
                    Some(url(value, "database.migrations_url", POSTGRES_SCHEMES)?);
            }
            "pgbouncer" => {
                out.db_pgbouncer = Some(
                    value
                        .as_bool()
                        .ok_or("database.pgbouncer: expected true or false")?,
                );
            }
            other => return Err(unknown("database.", other)),
        }
    }
    Ok(())
}

/// The `(key, value)` pairs of a mapping at `path` (empty for `null`); an error if
/// it is not a mapping or a key is not a string.
fn entries<'a>(value: &'a Yaml, path: &str) -> Result<Vec<(String, &'a Yaml)>, String> {
    let what = if path.is_empty() {
        "the file".to_owned()
    } else {
        path.to_owned()
    };
    match value {
        Yaml::Null => Ok(Vec::new()),
        Yaml::Hash(map) => map
            .iter()
            .map(|(k, v)| match k {
                Yaml::String(k) => Ok((k.clone(), v)),
                _ => Err(format!("{what}: keys must be strings")),
            })
            .collect(),
        _ => Err(format!("{what}: expected a mapping of keys to values")),
    }
}

/// The error for an unknown key `key` under `prefix`.
fn unknown(prefix: &str, key: &str) -> String {
    format!("{prefix}{key}: unknown key")
}

/// A string scalar at `path`.
fn string<'a>(value: &'a Yaml, path: &str) -> Result<&'a str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("{path}: expected a string"))
}

/// A URL at `path` starting with one of `schemes`. The error never quotes the
/// value, which may hold a password.
fn url(value: &Yaml, path: &str, schemes: &[&str]) -> Result<String, String> {
    let text = string(value, path)?;
    let has_host_part = |scheme: &str| {
        text.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
    };
    if schemes.iter().any(|s| has_host_part(s)) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{path}: expected a URL starting with {}",
            schemes.join(" or ")
        ))
    }
}

/// A duration at `path`: `30s`, `250ms`, `2m`, or an integer of seconds.
fn duration(value: &Yaml, path: &str) -> Result<Duration, String> {
    let parsed = match value {
        Yaml::Integer(n) => u64::try_from(*n).ok().map(Duration::from_secs),
        Yaml::String(s) => parse_duration(s).ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("{path}: expected a duration like 30s"))
}

/// A duration at `path` that must be more than zero.
fn positive_duration(value: &Yaml, path: &str) -> Result<Duration, String> {
    let d = duration(value, path)?;
    if d.is_zero() {
        return Err(format!("{path}: must be more than 0s"));
    }
    Ok(d)
}

/// Parses a duration written `Nms`, `Ns`, `Nm`, `Nh` or `N` (seconds), `N` a
/// non-negative integer.
///
/// Used for config-file values and the duration flags. Returns a message on any
/// other form.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (text, 1000)
    };
    let bad = || format!("expected a duration like 30s, 250ms or 2m, not {text:?}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "-1s", "1.5s", "1d", "ten", "99999999999999999999m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn full_file() {
        let c = parse(
            "listen: 127.0.0.1:9000\n\
             database:\n  primary: postgres://u:pw@h:5432/db\n  replicas: [postgres://r1/db]\n\
             \x20 connection_pool: { max_connections: 200, idle_timeout: 30s, acquire_timeout: 500ms }\n\
             \x20 max_replica_lag: 2\n  replica_check_interval: 250ms\n  pgbouncer: true\n\
             http: { ready_timeout: 1s, header_read_timeout: 10s, idle_timeout: 2m }\n\
             redis: redis://127.0.0.1:6379\ncache: { summary_ttl: 2m }\n",
        )
        .unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(c.database_url.as_deref(), Some("postgres://u:pw@h:5432/db"));
        assert_eq!(c.replica_urls, Some(vec!["postgres://r1/db".to_owned()]));
        assert_eq!(c.db_max_connections, Some(200));
        assert_eq!(c.db_idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.db_acquire_timeout, Some(Duration::from_millis(500)));
        assert_eq!(c.max_replica_lag, Some(Duration::from_secs(2)));
        assert_eq!(c.replica_check_interval, Some(Duration::from_millis(250)));
        assert_eq!(c.db_pgbouncer, Some(true));
        assert_eq!(c.ready_timeout, Some(Duration::from_secs(1)));
        assert_eq!(c.header_read_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(c.summary_ttl_secs, Some(120));
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn empty_file_sets_nothing() {
        assert_eq!(parse("").unwrap(), FileConfig::default());
        assert_eq!(parse("# only a comment\n").unwrap(), FileConfig::default());
    }

    #[test]
    fn errors_name_the_field() {
        for (text, expected) in [
            (
                "database:\n  connection_pool:\n    idle_timeout: soon\n",
                "database.connection_pool.idle_timeout: expected a duration like 30s",
            ),
            ("listen: nowhere\n", "listen: expected an address"),
            ("colour: blue\n", "colour: unknown key"),
            ("database: { primry: x }\n", "database.primry: unknown key"),
            (
                "database: { connection_pool: { max_connections: 0 } }\n",
                "database.connection_pool.max_connections: expected a positive integer",
            ),
            (
                "database: { replicas: [postgres://a/b, 'mysql://u:secret@h/db'] }\n",
                "database.replicas[1]: expected a URL",
            ),
            (
                "database: { replicas: ['sqlite://r.db'] }\n",
                "database.replicas[0]: expected a URL starting with postgres://",
            ),
            (
                "database: { pgbouncer: yes please }\n",
                "database.pgbouncer: expected true or false",
            ),
            (
                "http: { idle_timeout: 0s }\n",
                "http.idle_timeout: must be more than 0s",
            ),
            ("http: { keepalive: 1s }\n", "http.keepalive: unknown key"),
            (
                "idempotency: { key_ttl: 0 }\n",
                "idempotency.key_ttl: must be more than 0s",
            ),
            (
                "cache: { summary_ttl: 1500ms }\n",
                "cache.summary_ttl: expected a whole",
            ),
            ("redis: 5\n", "redis: expected a string"),
            ("- a\n", "the file: expected a mapping"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
