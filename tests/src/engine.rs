//! Runs the real `engine` binary for end-to-end tests.
//!
//! [`EngineProcess::start`] spawns the binary on a free loopback port with its
//! output captured to a log file in a temporary directory, waits until `/healthz`
//! answers, and kills the process on `Drop`.
//!
//! The binary is `target/<profile>/engine`, found from the test executable's path
//! (`target/<profile>/deps/<test>`). The first start in a process runs
//! `cargo build -p engine --bin engine` for that profile (a no-op when up to date),
//! so tests never run a stale binary; set `ENGINE_BIN` to use a given binary and skip
//! the build.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::pg::tail;

/// How long [`EngineProcess::start`] waits for `/healthz`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `engine` process on 127.0.0.1; killed on drop.
#[derive(Debug)]
pub struct EngineProcess {
    child: Child,
    port: u16,
    log_path: PathBuf,
    /// Working directory holding the log (and the SQLite file of `start_sqlite`).
    _dir: tempfile::TempDir,
}

impl EngineProcess {
    /// Starts the engine against `database_url` and waits until it is healthy.
    ///
    /// Panics (with the tail of the engine's log) if it exits or does not answer
    /// `/healthz` within [`START_TIMEOUT`].
    pub fn start(database_url: &str) -> Self {
        Self::start_with(database_url, &[])
    }

    /// Like [`EngineProcess::start`], with extra environment variables (e.g.
    /// `RUST_LOG`).
    pub fn start_with(database_url: &str, envs: &[(&str, &str)]) -> Self {
        Self::spawn(temp_dir(), database_url, envs)
    }

    /// Starts the engine on a fresh SQLite file inside its own temporary directory
    /// (removed with the process).
    pub fn start_sqlite() -> Self {
        let dir = temp_dir();
        let url = sqlite_url(&dir.path().join("engine.sqlite"));
        Self::spawn(dir, &url, &[])
    }

    fn spawn(dir: tempfile::TempDir, database_url: &str, envs: &[(&str, &str)]) -> Self {
        let log_path = dir.path().join("engine.log");
        let binary = engine_binary();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log = File::create(&log_path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
            let log_err = log
                .try_clone()
                .unwrap_or_else(|e| panic!("cannot clone the log file handle: {e}"));
            let port = crate::free_port();
            let mut child = Command::new(&binary)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--database-url")
                .arg(database_url)
                .env("RUST_LOG", "info")
                .env_remove("ENGINE_LISTEN")
                .env_remove("DATABASE_URL")
                .envs(envs.iter().copied())
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));

            match wait_healthy(&mut child, port) {
                Ok(()) => {
                    return EngineProcess {
                        child,
                        port,
                        log_path,
                        _dir: dir,
                    }
                }
                Err(problem) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log_tail = tail(&log_path, 40);
                    // Another process may have taken the port since free_port().
                    if attempt < 3 && log_tail.contains("Address already in use") {
                        continue;
                    }
                    panic!("{problem}; engine log tail:\n{log_tail}");
                }
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/api/v1/revenue` followed by `path`.
    pub fn api_url(&self, path: &str) -> String {
        format!("{}/api/v1/revenue{path}", self.base_url())
    }

    /// The port the engine listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the engine logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `lines` lines of the engine's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }

    /// Sends SIGTERM and waits up to 10 s for a graceful exit; returns the exit
    /// status (panics if the process does not exit in time).
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "engine did not exit within 10 s of SIGTERM; log tail:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("e2e-engine-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

/// `sqlite://PATH?mode=rwc` for a database file at `path`.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Polls `GET /healthz` until it answers 200 (Ok), the child exits, or
/// [`START_TIMEOUT`] passes (Err with the reason).
fn wait_healthy(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("engine exited during start-up ({status})"));
        }
        if http_get_status(port, "/healthz") == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "engine did not answer GET /healthz on port {port} within {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Minimal blocking `GET` over a fresh TCP connection; returns the status code, or
/// `None` if the connection or response failed. Used for readiness polling so the
/// harness needs no async runtime.
fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Path of the `engine` binary, built once per process (see [`crate::bin::path`]).
pub fn engine_binary() -> PathBuf {
    crate::bin::path("engine")
}
