//! End-to-end tests of the engine's settings: the YAML config file
//! (`--config` / `ENGINE_CONFIG`), its precedence under environment variables and
//! flags, its errors, and `engine check` on the shipped `conf/engine.yaml`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::engine::{engine_binary, sqlite_url};
use e2e::free_port;

/// Every variable the engine reads, removed so the machine's environment cannot
/// leak into a test.
const ENGINE_VARS: &[&str] = &[
    "ENGINE_CONFIG",
    "ENGINE_LISTEN",
    "DATABASE_URL",
    "ENGINE_DB_MAX_CONNECTIONS",
    "ENGINE_DB_IDLE_TIMEOUT",
    "ENGINE_DB_ACQUIRE_TIMEOUT",
    "ENGINE_READY_TIMEOUT_MS",
    "ENGINE_HEADER_READ_TIMEOUT_MS",
    "ENGINE_IDLE_TIMEOUT_MS",
    "ENGINE_REDIS_URL",
    "ENGINE_SUMMARY_TTL_SECS",
];

/// The engine binary in `dir`, with a clean environment plus `envs`.
fn engine(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(engine_binary());
    for var in ENGINE_VARS {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// A running engine; killed on drop.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    /// Spawns `engine ARGS` in `dir` and waits until `GET /healthz` answers 200
    /// on `port` (panicking with the log if it exits or takes over 30 s).
    fn start(dir: &Path, port: u16, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let log = dir.join("engine.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = engine(dir, args, envs)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut running = Running { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("engine exited ({status}):\n{}", running.log());
            }
            if healthz(port) {
                return running;
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz on port {port}:\n{}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /healthz` on 127.0.0.1:`port` answers 200.
fn healthz(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

/// Writes `text` to `dir/engine.yaml` and returns its path as a string.
fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("engine.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("e2e-engine-config-")
        .tempdir()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_file_selects_database_and_listen_address() {
    let dir = tempdir();
    let port = free_port();
    let db = dir.path().join("from-file").join("engine.sqlite");
    let config = write_config(
        dir.path(),
        &format!(
            "listen: 127.0.0.1:{port}\n\
             database:\n  primary: {}\n  replicas: []\n  \
             connection_pool: {{ max_connections: 3, idle_timeout: 30s, acquire_timeout: 2s }}\n\
             redis: redis://:hunter2@127.0.0.1:1\n\
             cache: {{ summary_ttl: 5s }}\n",
            sqlite_url(&db)
        ),
    );
    let engine = Running::start(dir.path(), port, &["--config", &config], &[]);
    assert!(db.exists(), "the file's database was not created");
    // The default database (relative to the working directory) was not used.
    assert!(!dir.path().join("data").exists());
    let log = engine.log();
    assert!(log.contains("max_connections=3"), "{log}");
    assert!(log.contains("idle_timeout=30s"), "{log}");
    assert!(log.contains("acquire_timeout=2s"), "{log}");
    assert!(!log.contains("hunter2"), "a password was logged:\n{log}");
}

#[test]
fn config_file_from_env_keeps_the_default_database() {
    let dir = tempdir();
    let port = free_port();
    let config = write_config(dir.path(), &format!("listen: 127.0.0.1:{port}\n"));
    let engine = Running::start(dir.path(), port, &[], &[("ENGINE_CONFIG", &config)]);
    // No database in the file: the built-in SQLite default under the working dir.
    assert!(dir.path().join("data").join("engine.sqlite").exists());
    let log = engine.log();
    assert!(log.contains("sqlite://data/engine.sqlite"), "{log}");
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempdir();
    let (file_port, env_port) = (free_port(), free_port());
    let file_db = dir.path().join("file.sqlite");
    let env_db = dir.path().join("env.sqlite");
    let config = write_config(
        dir.path(),
        &format!(
            "listen: 127.0.0.1:{file_port}\ndatabase: {{ primary: {} }}\n",
            sqlite_url(&file_db)
        ),
    );
    let listen = format!("127.0.0.1:{env_port}");
    let env_url = sqlite_url(&env_db);
    let _engine = Running::start(
        dir.path(),
        env_port,
        &["--config", &config],
        &[("ENGINE_LISTEN", &listen), ("DATABASE_URL", &env_url)],
    );
    assert!(env_db.exists());
    assert!(!file_db.exists());
    assert!(!healthz(file_port));
}

#[test]
fn a_flag_overrides_the_environment() {
    let dir = tempdir();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let config = write_config(dir.path(), &format!("listen: 127.0.0.1:{file_port}\n"));
    let env_listen = format!("127.0.0.1:{env_port}");
    let flag_listen = format!("127.0.0.1:{flag_port}");
    let _engine = Running::start(
        dir.path(),
        flag_port,
        &["--config", &config, "--listen", &flag_listen],
        &[("ENGINE_LISTEN", &env_listen)],
    );
    assert!(!healthz(env_port));
    assert!(!healthz(file_port));
}

#[test]
fn a_bad_file_exits_non_zero_naming_the_field() {
    let dir = tempdir();
    let port = free_port();
    for (text, expected) in [
        (
            format!(
                "listen: 127.0.0.1:{port}\ndatabase:\n  connection_pool:\n    idle_timeout: soon\n"
            ),
            "engine.yaml: database.connection_pool.idle_timeout: expected a duration like 30s",
        ),
        (
            format!("listen: 127.0.0.1:{port}\ndatabase: {{ primary: 'mysql://u:s3cret@h/db' }}\n"),
            "engine.yaml: database.primary: expected a URL",
        ),
        (
            format!("listen: 127.0.0.1:{port}\ncache: {{ ttl: 5s }}\n"),
            "engine.yaml: cache.ttl: unknown key",
        ),
        (
            format!(
                "listen: 127.0.0.1:{port}\ndatabase: {{ primary: 'postgres://u:s3cret@h:99999/db' }}\n"
            ),
            "engine.yaml: database.primary: invalid Postgres URL: invalid port number",
        ),
    ] {
        let config = write_config(dir.path(), &text);
        for args in [
            vec!["--config", &config],
            vec!["check", "--config", &config],
        ] {
            let out = engine(dir.path(), &args, &[]).output().unwrap();
            let err = stderr(&out);
            assert!(!out.status.success(), "{args:?} succeeded on {text:?}");
            assert!(err.contains(expected), "{args:?}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
            assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
        }
        // Nothing was created: the engine stopped before opening the database.
        assert!(!dir.path().join("data").exists());
    }
    // A bad URL from the environment names the variable that set it, not the
    // file's key alone.
    let config = write_config(dir.path(), &format!("listen: 127.0.0.1:{port}\n"));
    for (env, expected) in [
        (
            ("DATABASE_URL", "postgres://u:s3cret@h:99999/db"),
            "database.primary (set by DATABASE_URL or --database-url): invalid Postgres URL",
        ),
        (
            ("ENGINE_REDIS_URL", "http://:s3cret@h:1"),
            "redis (set by ENGINE_REDIS_URL or --redis-url): invalid Redis URL",
        ),
    ] {
        let out = engine(dir.path(), &["check", "--config", &config], &[env])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains(expected), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
    let out = engine(dir.path(), &["--config", "missing.yaml"], &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.yaml"), "{}", stderr(&out));
}

#[test]
fn the_shipped_config_passes_check() {
    let dir = tempdir();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/engine.yaml");
    let shipped = shipped.to_str().unwrap();
    let out = engine(dir.path(), &["check", "--config", shipped], &[])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    // `check` opens nothing.
    assert!(!dir.path().join("data").exists());
}
