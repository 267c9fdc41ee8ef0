//! Throwaway PgBouncer instances in front of a [`PgCluster`], for tests of the
//! engine behind a connection pooler.
//!
//! [`PgBouncer::start`] writes a `pgbouncer.ini` into a temporary directory and
//! runs the real `pgbouncer` binary in the foreground on a free loopback port (never
//! the packaged service's 6432, never `/etc/pgbouncer`). Every database name maps to
//! the same database on the cluster (`* = host=127.0.0.1 port=…`), so
//! [`PgBouncer::url_for`] works for any database made with
//! [`PgCluster::create_database`]. The defaults are what a production setup that
//! the engine must survive looks like: `pool_mode = transaction` and a small
//! `default_pool_size` (3), so more clients than server connections share them and
//! any session state (named prepared statements, session advisory locks, `SET`) is
//! seen by other clients or lost between transactions.
//!
//! Authentication is `trust` with an `auth_file` naming `postgres` (the cluster
//! trusts loopback too), so URLs carry no password. `postgres` is an admin and
//! stats user: [`PgBouncer::admin`] runs `SHOW POOLS`, `SHOW STATS` and friends on
//! the special `pgbouncer` database with `psql`.
//!
//! PgBouncer refuses to run as root; when the tests run as root the process runs as
//! the `postgres` user (set-uid in the child, so the child is pgbouncer itself and
//! can be killed directly). [`PgBouncer::stop`] (or `Drop`) kills it and removes the
//! directory; a small reaper shell does the same if the test process exits without
//! dropping it.
//!
//! The binary is `$PGBOUNCER_BIN`, else `/usr/sbin/pgbouncer` (the Debian package),
//! else `pgbouncer` on `PATH`.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::pg::{run, tail, PgCluster, RunAs};

/// How long [`PgBouncer::start`] waits for the admin console to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The port of the packaged (system) PgBouncer; never used by the harness.
const SYSTEM_PORT: u16 = 6432;

/// The settings of a [`PgBouncer`] that tests may want to vary.
#[derive(Debug, Clone)]
pub struct PgBouncerSettings {
    /// `pool_mode`: `transaction` (default), `session` or `statement`.
    pub pool_mode: String,
    /// `default_pool_size`: server connections per (database, user) pair. Also
    /// used as `max_db_connections`, so it is a hard cap per database.
    pub default_pool_size: u32,
    /// `max_client_conn`: client connections PgBouncer accepts in total.
    pub max_client_conn: u32,
}

impl Default for PgBouncerSettings {
    /// Transaction pooling, 3 server connections per database, 500 clients.
    fn default() -> Self {
        Self {
            pool_mode: "transaction".to_owned(),
            default_pool_size: 3,
            max_client_conn: 500,
        }
    }
}

/// One row of an admin-console answer (`SHOW POOLS`, …): column name → value.
pub type AdminRow = BTreeMap<String, String>;

/// A running `pgbouncer` on 127.0.0.1 in front of one [`PgCluster`]; killed on drop.
#[derive(Debug)]
pub struct PgBouncer {
    child: Option<Child>,
    reaper: Option<Child>,
    /// Holds `pgbouncer.ini`, `userlist.txt`, `pgbouncer.log` and `sock/`.
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    port: u16,
    psql: PathBuf,
    settings: PgBouncerSettings,
}

impl PgBouncer {
    /// Starts PgBouncer in front of `cluster` with [`PgBouncerSettings::default`]
    /// (transaction pooling, pool size 3) and waits until it accepts connections.
    ///
    /// Takes well under a second. Panics with the reason (and the PgBouncer log, if
    /// any) when the binary is missing or does not start.
    pub fn start(cluster: &PgCluster) -> Self {
        Self::start_with(cluster, PgBouncerSettings::default())
    }

    /// Like [`PgBouncer::start`] with the given settings.
    pub fn start_with(cluster: &PgCluster, settings: PgBouncerSettings) -> Self {
        Self::try_start_with(cluster, settings)
            .unwrap_or_else(|e| panic!("cannot start PgBouncer: {e:#}"))
    }

    /// Like [`PgBouncer::start_with`] but returns the error.
    pub fn try_start_with(
        cluster: &PgCluster,
        settings: PgBouncerSettings,
    ) -> anyhow::Result<Self> {
        let binary = locate()?;
        let run_as = RunAs::detect()?;
        let root = tempfile::Builder::new()
            .prefix("e2e-pgbouncer-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let root_path = root.path().to_path_buf();
        let sock_dir = root_path.join("sock");
        fs::create_dir_all(&sock_dir).context("cannot create the socket directory")?;
        run_as.own(&root_path)?;
        run_as.own(&sock_dir)?;
        let userlist = root_path.join("userlist.txt");
        fs::write(&userlist, "\"postgres\" \"\"\n")
            .with_context(|| format!("cannot write {}", userlist.display()))?;
        run_as.own(&userlist)?;

        let psql = psql_binary(cluster);
        let mut bouncer = PgBouncer {
            child: None,
            reaper: None,
            root: Some(root),
            root_path,
            port: 0,
            psql,
            settings,
        };
        let mut last_err = None;
        for _ in 0..3 {
            let port = loop {
                let port = crate::free_port();
                if port != SYSTEM_PORT {
                    break port;
                }
            };
            bouncer.write_config(cluster.port(), port, &run_as)?;
            match bouncer.launch(&binary, &run_as, port) {
                Ok(()) => return Ok(bouncer),
                Err(e) => {
                    // Another process may have taken the port since free_port().
                    let clash = bouncer.log_tail(20).contains("Address already in use");
                    last_err = Some(e);
                    if !clash {
                        break;
                    }
                }
            }
        }
        let tail = bouncer.log_tail(40);
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("pgbouncer did not start"))
            .context(format!("pgbouncer log tail:\n{tail}")))
    }

    /// Writes `pgbouncer.ini` for a server on `pg_port`, listening on `port`.
    fn write_config(&self, pg_port: u16, port: u16, run_as: &RunAs) -> anyhow::Result<()> {
        let dir = &self.root_path;
        let s = &self.settings;
        let ini = format!(
            "\
;; e2e harness: see tests/src/pgbouncer.rs
[databases]
* = host=127.0.0.1 port={pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {sock}
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
auth_type = trust
auth_file = {dir}/userlist.txt
admin_users = postgres
stats_users = postgres
pool_mode = {mode}
default_pool_size = {size}
max_db_connections = {size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {clients}
ignore_startup_parameters = extra_float_digits
stats_period = 1
",
            sock = dir.join("sock").display(),
            dir = dir.display(),
            mode = s.pool_mode,
            size = s.default_pool_size,
            clients = s.max_client_conn,
        );
        let path = dir.join("pgbouncer.ini");
        fs::write(&path, ini).with_context(|| format!("cannot write {}", path.display()))?;
        run_as.own(&path)
    }

    /// Spawns pgbouncer in the foreground on `port`, waits until its admin console
    /// answers and arms the reaper.
    fn launch(&mut self, binary: &Path, run_as: &RunAs, port: u16) -> anyhow::Result<()> {
        let mut cmd = Command::new(binary);
        cmd.arg(self.root_path.join("pgbouncer.ini"))
            .current_dir(&self.root_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let RunAs::Postgres { uid, gid } = run_as {
            // Set-uid in the child (not `runuser`, which would stay in between as
            // the parent): the child we hold is pgbouncer itself.
            cmd.uid(*uid).gid(*gid);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot spawn {}", binary.display()))?;
        self.port = port;

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("pgbouncer exited during start-up ({status})");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.try_admin("SHOW VERSION").is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("pgbouncer did not answer on port {port} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.reaper = Some(self.spawn_reaper(child.id())?);
        self.child = Some(child);
        Ok(())
    }

    /// A background shell that waits for this test process to exit, then kills
    /// pgbouncer (`pid`) and removes the directory.
    fn spawn_reaper(&self, pid: u32) -> anyhow::Result<Child> {
        let script = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
            kill -TERM "$2" 2>/dev/null
            sleep 0.5
            kill -KILL "$2" 2>/dev/null
            rm -rf "$3"
        "#;
        let pid = pid.to_string();
        crate::pg::spawn_reaper(
            "pgbouncer-reaper",
            script,
            &[pid.as_ref(), self.root_path.as_os_str()],
        )
    }

    /// URL of database `db` through this PgBouncer:
    /// `postgres://postgres@127.0.0.1:PORT/db`. The database must exist on the
    /// cluster.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Like [`PgBouncer::url_for`] for the database a cluster URL (e.g. from
    /// [`PgCluster::create_database`]) points at.
    pub fn url_for_cluster_url(&self, cluster_url: &str) -> String {
        self.url_for(database_of(cluster_url))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &PgBouncerSettings {
        &self.settings
    }

    /// The last `lines` lines of PgBouncer's log (empty if there is none yet).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.root_path.join("pgbouncer.log"), lines)
    }

    /// Runs `command` (e.g. `SHOW POOLS`) on the admin console and returns one map
    /// per row, column name → value as text. Blocking (runs `psql`); panics with
    /// psql's output if the command fails.
    pub fn admin(&self, command: &str) -> Vec<AdminRow> {
        self.try_admin(command)
            .unwrap_or_else(|e| panic!("pgbouncer admin command {command:?} failed: {e:#}"))
    }

    /// Like [`PgBouncer::admin`] but returns the error.
    pub fn try_admin(&self, command: &str) -> anyhow::Result<Vec<AdminRow>> {
        const SEP: &str = "\u{1f}";
        let mut psql = Command::new(&self.psql);
        psql.args([
            "-X",
            "-q",
            "-A",
            "-P",
            "footer=off",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .arg("-F")
        .arg(SEP)
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "pgbouncer", "-p"])
        .arg(self.port.to_string())
        .arg("-c")
        .arg(command)
        .env("PGCONNECT_TIMEOUT", "5");
        let out = run(&mut psql, &format!("psql -c {command:?}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return Ok(Vec::new());
        };
        let columns: Vec<&str> = header.split(SEP).collect();
        Ok(lines
            .map(|line| {
                columns
                    .iter()
                    .map(|c| c.to_string())
                    .zip(line.split(SEP).map(str::to_owned))
                    .collect()
            })
            .collect())
    }

    /// The row of `command`'s answer (`SHOW POOLS`, `SHOW STATS`, …) whose
    /// `database` column is `db`, if any. Panics like [`PgBouncer::admin`].
    pub fn admin_row(&self, command: &str, db: &str) -> Option<AdminRow> {
        self.admin(command)
            .into_iter()
            .find(|row| row.get("database").map(String::as_str) == Some(db))
    }

    /// The server connections PgBouncer holds for database `db` right now (all
    /// states: active, idle, used, tested, logging in), from `SHOW POOLS`.
    pub fn server_connections(&self, db: &str) -> u64 {
        self.admin("SHOW POOLS")
            .iter()
            .filter(|row| row.get("database").map(String::as_str) == Some(db))
            .map(|row| {
                ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
                    .iter()
                    .map(|c| number(row, c))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Kills PgBouncer and removes its directory. Idempotent.
    pub fn stop(&mut self) {
        crate::pg::kill(self.child.take());
        crate::pg::kill(self.reaper.take());
        if let Some(root) = self.root.take() {
            let _ = root.close();
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The number in column `column` of an admin row (0 if absent or not a number).
pub fn number(row: &AdminRow, column: &str) -> u64 {
    row.get(column)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The database name at the end of a `postgres://…/DB[?…]` URL.
fn database_of(url: &str) -> &str {
    let path = url.rsplit('/').next().unwrap_or(url);
    path.split('?').next().unwrap_or(path)
}

/// The pgbouncer binary: `$PGBOUNCER_BIN`, `/usr/sbin/pgbouncer`, or `PATH`.
fn locate() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PGBOUNCER_BIN").map(PathBuf::from) {
        if bin.is_file() {
            return Ok(bin);
        }
        bail!("PGBOUNCER_BIN={} is not a file", bin.display());
    }
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    if debian.is_file() {
        return Ok(debian);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.is_file())
        .context("no pgbouncer binary (looked at $PGBOUNCER_BIN, /usr/sbin and PATH); install the pgbouncer package")
}

/// `psql` of the cluster's installation, else `psql` on `PATH`.
fn psql_binary(cluster: &PgCluster) -> PathBuf {
    let tool = cluster.binaries().tool("psql");
    if tool.is_file() {
        tool
    } else {
        PathBuf::from("psql")
    }
}

#[cfg(test)]
mod tests {
    use super::database_of;

    #[test]
    fn database_of_url() {
        assert_eq!(database_of("postgres://postgres@127.0.0.1:5/db_1"), "db_1");
        assert_eq!(database_of("postgres://u@h:5/db?sslmode=disable"), "db");
    }
}
