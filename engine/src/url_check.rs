//! Start-up checks of the database and Redis URLs: each is parsed the way it
//! will be used, so `engine check` and start-up refuse a URL the engine could not
//! open, before anything is opened, with the key at fault and never the URL
//! itself (it may hold a password).

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// The connection parameters sqlx's Postgres driver understands. Any other is
/// refused: sqlx would ignore it and log its value, which may be a secret
/// (libpq's `sslpassword`, say).
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Whether `url` names a Postgres server (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Checks a database URL (`key` names it in the error): a Postgres URL must parse
/// and use only the parameters in `POSTGRES_PARAMETERS`, anything else must be a SQLite URL.
///
/// Runs once per configured URL while the settings are resolved. Returns an
/// error naming `key` and what is wrong, without the URL.
pub fn check_database_url(key: &str, url: &str) -> anyhow::Result<()> {
    if !is_postgres(url) {
        if !url.starts_with("sqlite:") {
            anyhow::bail!("{key}: expected a URL starting with postgres:// or sqlite:");
        }
        return SqliteConnectOptions::from_str(url)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{key}: invalid SQLite URL: {e}"));
    }
    check_postgres_url(key, url)
}

/// Checks a URL that must name a Postgres server (replicas, migrations); see
/// [`check_database_url`].
pub fn check_postgres_url(key: &str, url: &str) -> anyhow::Result<()> {
    if !is_postgres(url) {
        anyhow::bail!("{key}: expected a URL starting with postgres://");
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            // `options[NAME]` (sqlx's per-setting form), also percent-encoded.
            let known = POSTGRES_PARAMETERS.contains(&name)
                || name.starts_with("options%5B")
                || (name.starts_with("options[") && name.ends_with(']'));
            if !known {
                let shown: String = name.chars().take(64).collect();
                anyhow::bail!(
                    "{key}: unsupported connection parameter {shown:?} (supported: {})",
                    POSTGRES_PARAMETERS.join(", ")
                );
            }
        }
    }
    PgConnectOptions::from_str(url)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{key}: invalid Postgres URL: {}", describe(&e)))
}

/// Checks the Redis URL of the read cache, set at `key` (`redis`). Runs at
/// start-up; the error names `key`, never the URL.
pub fn check_redis_url(key: &str, url: &str) -> anyhow::Result<()> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{key}: invalid Redis URL ({})", e.category()))
}

/// An sqlx configuration error as text. Such errors come from the URL parser
/// and number parsers, which never quote the password.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls_pass() {
        for url in [
            "postgres://revenue@127.0.0.1:5432/revenue_engine",
            "postgresql://u:p@h/db?sslmode=require&application_name=x",
            "postgres://u@h/db?options[statement_timeout]=5s",
            "postgres://u@h/db?options=-c%20statement_timeout%3D2",
        ] {
            assert!(check_database_url("database.primary", url).is_ok(), "{url}");
        }
        assert!(check_database_url("database.primary", "sqlite://data/e.sqlite?mode=rwc").is_ok());
        assert!(check_database_url("database.primary", "sqlite::memory:").is_ok());
        assert!(check_redis_url("redis", "redis://:pw@127.0.0.1:6379/0").is_ok());
    }

    #[test]
    fn bad_urls_name_the_key_and_hide_the_secret() {
        let cases = [
            ("postgres://u:Hunter2@h:bad/db", "invalid Postgres URL"),
            (
                "postgres://u:Hunter2@h/db?sslmode=bogus",
                "invalid Postgres URL",
            ),
            (
                "postgres://u:Hunter2@h/db?sslpassword=Hunter2",
                "unsupported connection parameter \"sslpassword\"",
            ),
            (
                "postgres://u@h/db?PassWord=Hunter2",
                "unsupported connection parameter \"PassWord\"",
            ),
            ("mysql://u:Hunter2@h/db", "expected a URL starting with"),
        ];
        for (url, want) in cases {
            let e = check_database_url("database.primary", url)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("database.primary: "), "{url}: {e}");
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("Hunter2"), "{url}: {e}");
        }
        let e = check_postgres_url("database.replicas[0]", "sqlite::memory:").unwrap_err();
        assert!(e.to_string().contains("database.replicas[0]"), "{e}");
        let e = check_redis_url("redis", "redis://:Hunter2@[::1")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("redis: ") && !e.contains("Hunter2"), "{e}");
    }
}
