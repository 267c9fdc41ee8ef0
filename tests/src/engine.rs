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
//!
//! For API tests, [`EngineCtx`] pairs an engine on a fresh database of either
//! [`Backend`] with an HTTP client and request helpers, [`assert_error`] checks the
//! engine's JSON error body, and [`on_both_backends!`](crate::on_both_backends)
//! runs one async test body on SQLite and on Postgres.

use std::borrow::Borrow;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::pg::{tail, PgCluster};

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

/// The largest `amount` the engine accepts (10^12 - 1 minor units).
pub const MAX_AMOUNT: i64 = 999_999_999_999;

/// The database an [`EngineCtx`] runs its engine on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database of the shared Postgres cluster ([`PgCluster::shared`]).
    Postgres,
}

/// Runs an async test body `async fn NAME(backend: Backend)` on both backends, as
/// the tests `NAME::sqlite` and `NAME::postgres`.
///
/// Expands at compile time in the test file, next to the bodies it names; each
/// generated test calls `super::NAME` with [`Backend::Sqlite`] or
/// [`Backend::Postgres`] on a `#[tokio::test]` runtime.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::engine::Backend::Sqlite).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$name($crate::engine::Backend::Postgres).await;
            }
        }
    )*};
}

/// The database behind an [`EngineCtx`], for tests that read or write it directly.
#[derive(Debug)]
enum Database {
    /// A SQLite file (in a temporary directory removed on drop).
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    /// A database of the shared Postgres cluster.
    Postgres { url: String },
}

/// One engine on a fresh database plus an HTTP client, with request helpers for
/// the `/api/v1/revenue` API. Fields drop in order: the engine stops before its
/// SQLite directory is removed.
#[derive(Debug)]
pub struct EngineCtx {
    /// The running engine.
    pub engine: EngineProcess,
    /// A plain HTTP client (no timeouts of its own).
    pub http: Client,
    db: Database,
}

/// A response read in full: status, headers, the exact body text and the body
/// parsed as JSON (`Null` if it is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body exactly as sent.
    pub text: String,
    /// The body as JSON, `Null` if it does not parse.
    pub body: Value,
}

impl Reply {
    /// Reads `resp` to the end; runs once per request and returns the whole
    /// answer (panics if the body cannot be read).
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("read the response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    /// The value of header `name` as text, `None` if absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `Idempotent-Replayed` header (`Some("true")` on a replay).
    pub fn replayed(&self) -> Option<&str> {
        self.header("idempotent-replayed")
    }

    /// The `X-Engine-Cache` header (`hit`, `miss`, `bypass`), `""` if absent.
    pub fn cache(&self) -> &str {
        self.header("x-engine-cache").unwrap_or_default()
    }

    /// The `id` of the event in the body (panics if there is none).
    pub fn id(&self) -> &str {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", self.text))
    }

    /// Status and body, the shape [`assert_error`] takes.
    pub fn pair(&self) -> (StatusCode, &Value) {
        (self.status, &self.body)
    }
}

impl EngineCtx {
    /// Starts an engine on a fresh database of `backend` and waits until it is
    /// healthy. `name` names the Postgres database (made unique by the cluster).
    ///
    /// Runs at the start of a test; panics if the engine does not come up.
    pub fn start(backend: Backend, name: &str) -> Self {
        Self::start_with(backend, name, &[])
    }

    /// Like [`EngineCtx::start`], with extra environment variables for the engine
    /// (e.g. `ENGINE_REDIS_URL`).
    pub fn start_with(backend: Backend, name: &str, envs: &[(&str, &str)]) -> Self {
        let (engine, db) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("e2e-engine-db-")
                    .tempdir()
                    .expect("create a temporary directory");
                let path = dir.path().join("engine.sqlite");
                let engine = EngineProcess::start_with(&sqlite_url(&path), envs);
                (engine, Database::Sqlite { path, _dir: dir })
            }
            Backend::Postgres => {
                let url = PgCluster::shared().create_database(name);
                (
                    EngineProcess::start_with(&url, envs),
                    Database::Postgres { url },
                )
            }
        };
        EngineCtx {
            engine,
            http: Client::new(),
            db,
        }
    }

    /// The engine's database URL, e.g. for running `engine seed` on it.
    pub fn database_url(&self) -> String {
        match &self.db {
            Database::Sqlite { path, .. } => sqlite_url(path),
            Database::Postgres { url } => url.clone(),
        }
    }

    /// Runs SQL on the engine's database behind its back (with the `sqlite3` or
    /// `psql` client), e.g. to plant rows the API no longer accepts; returns what
    /// it printed (unaligned, tuples only), trimmed. Panics if the SQL fails.
    pub fn sql(&self, sql: &str) -> String {
        let out = match &self.db {
            Database::Sqlite { path, .. } => Command::new("sqlite3")
                .args(["-bail", "-cmd", ".timeout 5000"])
                .arg(path)
                .arg(sql)
                .output(),
            Database::Postgres { url } => Command::new(PgCluster::shared().binaries().tool("psql"))
                .args(["-q", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .arg(url)
                .output(),
        }
        .unwrap_or_else(|e| panic!("cannot run the SQL client (sqlite3 / psql): {e}"));
        assert!(
            out.status.success(),
            "{sql}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The full URL of API path `path` (`/events`, `/summary?...`).
    pub fn url(&self, path: &str) -> String {
        self.engine.api_url(path)
    }

    /// GETs API path `path`; returns the status and the JSON body (`Null` if not
    /// JSON).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let reply = self.fetch(path).await;
        (reply.status, reply.body)
    }

    /// GETs API path `path`; returns the status and the body text (for numbers a
    /// `Value` cannot hold exactly).
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let reply = self.fetch(path).await;
        (reply.status, reply.text)
    }

    /// GETs API path `path`; returns the whole [`Reply`] (headers included).
    pub async fn fetch(&self, path: &str) -> Reply {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        Reply::read(resp).await
    }

    /// POSTs `body` to `/events` with the given `Content-Type` (none if `None`);
    /// returns the status and the JSON body.
    pub async fn post_raw(&self, body: &str, content_type: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url("/events")).body(body.to_owned());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let reply = Reply::read(req.send().await.unwrap()).await;
        (reply.status, reply.body)
    }

    /// POSTs the JSON `body` to `/events`; returns the status and the JSON body.
    pub async fn post(&self, body: &Value) -> (StatusCode, Value) {
        self.post_raw(&body.to_string(), Some("application/json"))
            .await
    }

    /// POSTs the JSON text `body` to `/events` with the given `Idempotency-Key`
    /// values (none, one, or several headers); returns the whole [`Reply`].
    pub async fn post_with_keys(&self, body: &str, keys: &[&[u8]]) -> Reply {
        post_event(&self.http, &self.url("/events"), body, keys).await
    }

    /// POSTs the JSON `body` to `/events` with one `Idempotency-Key`.
    pub async fn post_keyed(&self, body: &Value, key: &str) -> Reply {
        self.post_with_keys(&body.to_string(), &[key.as_bytes()])
            .await
    }

    /// Posts an event (no idempotency key) that must succeed; returns the stored
    /// event (panics on any status but 201).
    pub async fn record(
        &self,
        customer: &str,
        product: &str,
        kind: &str,
        amount: i64,
        currency: &str,
        at: &str,
    ) -> Value {
        let (status, body) = self
            .post(
                &json!({"customer_id": customer, "product": product, "kind": kind,
                          "amount": amount, "currency": currency, "occurred_at": at}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Follows `next_cursor` through all pages of `GET /events?{query}`; returns
    /// the events in order and the number of pages (panics past 100 pages).
    pub async fn list_all(&self, query: &str) -> (Vec<Value>, usize) {
        let mut events = Vec::new();
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        loop {
            let sep = if query.is_empty() { "" } else { "&" };
            let path = match &cursor {
                Some(c) => format!("/events?{query}{sep}cursor={c}"),
                None => format!("/events?{query}"),
            };
            let (status, body) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            pages += 1;
            events.extend(body["data"].as_array().unwrap().iter().cloned());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return (events, pages),
            }
            assert!(pages < 100, "pagination does not end");
        }
    }

    /// Every stored event, from one page of 500 (panics if there are more).
    pub async fn all_events(&self) -> Vec<Value> {
        let (status, body) = self.get("/events?limit=500").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["next_cursor"], Value::Null, "more than 500 events");
        body["data"].as_array().unwrap().clone()
    }
}

/// POSTs the JSON text `body` to `url` with the given `Idempotency-Key` values,
/// on any client (for requests sent from spawned tasks); returns the [`Reply`].
pub async fn post_event(http: &Client, url: &str, body: &str, keys: &[&[u8]]) -> Reply {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for key in keys {
        req = req.header("Idempotency-Key", HeaderValue::from_bytes(key).unwrap());
    }
    Reply::read(req.send().await.unwrap()).await
}

/// Asserts an engine error answer: the status, `error.code`, a non-empty
/// `error.message`, and `error.field` (absent when `field` is `None`).
///
/// Takes `&(status, body)` with the body owned or borrowed, as returned by
/// [`EngineCtx::get`] or [`Reply::pair`]; panics with the body on a mismatch.
#[track_caller]
pub fn assert_error<B: Borrow<Value>>(
    got: &(StatusCode, B),
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) {
    let (s, body) = (got.0, got.1.borrow());
    assert_eq!(s, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    match field {
        Some(f) => assert_eq!(body["error"]["field"], f, "{body}"),
        None => assert!(body["error"].get("field").is_none(), "{body}"),
    }
}
