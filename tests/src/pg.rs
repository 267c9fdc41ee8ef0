//! Throwaway PostgreSQL clusters for tests.
//!
//! [`PgCluster::start`] runs `initdb` into a temporary directory (trust auth,
//! superuser `postgres`, `--no-sync`), starts the server with `pg_ctl` on a free
//! loopback port (Unix socket inside the temporary directory, `fsync=off`), waits
//! until it accepts connections and creates a database. [`PgCluster::stop`] (or
//! `Drop`) stops it with `pg_ctl stop -m immediate` and removes the directory.
//!
//! [`PgCluster::shared`] gives one cluster per test process; tests isolate
//! themselves with [`PgCluster::create_database`]. Because statics are never
//! dropped, every cluster also has a small reaper process that shuts the server down
//! and removes the directory once the test process has exited.
//!
//! When the tests run as root (initdb and postgres refuse to), the directory is
//! handed to the `postgres` user and the server tools run through `runuser`.
//!
//! Binaries are looked up in `$PG_BIN_DIR`, then next to the `initdb` found on
//! `PATH` (symlinks resolved), then in the highest `/usr/lib/postgresql/*/bin`.
//!
//! [`PgCluster::start_replica`] adds a streaming replica of a running cluster
//! (`pg_basebackup -R` into a second temporary directory, then started on its own
//! free port). [`PgCluster::halt`] and [`PgCluster::resume`] stop and restart a
//! server on the same port, keeping its data, to test a server that goes away
//! and comes back. [`PgCluster::sql`] runs one statement through `psql`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Context};

/// The PostgreSQL server tools of one installation.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Finds a directory holding `initdb`, `pg_ctl` and `postgres` (see the module
    /// docs for the search order). Runs once per cluster start; errors if none.
    pub fn locate() -> anyhow::Result<Self> {
        let complete = |dir: &Path| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| dir.join(b).is_file())
        };
        if let Some(dir) = std::env::var_os("PG_BIN_DIR").map(PathBuf::from) {
            if complete(&dir) {
                return Ok(Self { dir });
            }
            bail!("PG_BIN_DIR={} lacks initdb/pg_ctl/postgres", dir.display());
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let initdb = dir.join("initdb");
                if let Ok(real) = fs::canonicalize(&initdb) {
                    if let Some(real_dir) = real.parent().filter(|d| complete(d)) {
                        return Ok(Self {
                            dir: real_dir.to_path_buf(),
                        });
                    }
                    if complete(&dir) {
                        return Ok(Self { dir });
                    }
                }
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                complete(&bin).then_some((version, bin))
            })
            .collect();
        versions.sort();
        match versions.pop() {
            Some((_, dir)) => Ok(Self { dir }),
            None => bail!(
                "no PostgreSQL server binaries found (looked at $PG_BIN_DIR, PATH and \
                 /usr/lib/postgresql/*/bin); install the postgresql package"
            ),
        }
    }

    /// Path of the tool `name` (e.g. `pg_basebackup`) in this installation.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory holding the tools.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Who runs the server tools: the current user, or `postgres` via `runuser` when
/// the current user is root.
#[derive(Debug, Clone)]
pub(crate) enum RunAs {
    CurrentUser,
    Postgres { uid: u32, gid: u32 },
}

impl RunAs {
    /// Decides who runs server tools in this process (root → `postgres`).
    pub(crate) fn detect() -> anyhow::Result<Self> {
        let is_root = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        if !is_root {
            return Ok(RunAs::CurrentUser);
        }
        let id = |flag: &str| -> anyhow::Result<u32> {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .context("cannot run `id`")?;
            if !out.status.success() {
                bail!(
                    "running as root, but there is no `postgres` user to run the server as \
                     (initdb and postgres refuse to run as root)"
                );
            }
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .context("cannot parse `id` output")
        };
        Ok(RunAs::Postgres {
            uid: id("-u")?,
            gid: id("-g")?,
        })
    }

    /// A command running `program` as the right user.
    pub(crate) fn command(&self, program: &Path) -> Command {
        match self {
            RunAs::CurrentUser => Command::new(program),
            RunAs::Postgres { .. } => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
        }
    }

    /// Gives `path` to the server user.
    pub(crate) fn own(&self, path: &Path) -> anyhow::Result<()> {
        if let RunAs::Postgres { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .with_context(|| format!("cannot chown {} to postgres", path.display()))?;
        }
        Ok(())
    }
}

/// A running throwaway PostgreSQL server (one data directory, one port).
#[derive(Debug)]
pub struct PgCluster {
    bins: PgBinaries,
    run_as: RunAs,
    /// Holds `data/`, `sock/` and `postgres.log`; removed on stop.
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    data_dir: PathBuf,
    port: u16,
    database: String,
    reaper: Option<Child>,
    running: bool,
    /// Whether [`PgCluster::freeze`] stopped its processes.
    frozen: bool,
}

/// Database created by [`PgCluster::start`], the one [`PgCluster::url`] points at.
pub const DEFAULT_DATABASE: &str = "e2e";

impl PgCluster {
    /// Creates and starts a new cluster with database [`DEFAULT_DATABASE`].
    ///
    /// Takes about a second. Panics with the reason (and the server log, if any)
    /// when PostgreSQL is missing or does not start.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("cannot start a PostgreSQL cluster: {e:#}"))
    }

    /// Like [`PgCluster::start`] but returns the error.
    pub fn try_start() -> anyhow::Result<Self> {
        let bins = PgBinaries::locate()?;
        let run_as = RunAs::detect()?;
        let root = tempfile::Builder::new()
            .prefix("e2e-pg-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let root_path = root.path().to_path_buf();
        run_as.own(&root_path)?;
        let data_dir = root_path.join("data");

        let mut initdb = run_as.command(&bins.tool("initdb"));
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .current_dir(&root_path);
        run(&mut initdb, "initdb")?;
        append_conf(
            &data_dir,
            &[
                "listen_addresses = '127.0.0.1'",
                "fsync = off",
                "synchronous_commit = off",
                "full_page_writes = off",
                "max_connections = 200",
                "shared_buffers = 32MB",
                "log_min_messages = warning",
            ],
        )?;

        let mut cluster = PgCluster {
            bins,
            run_as,
            root: Some(root),
            root_path,
            data_dir,
            port: 0,
            database: DEFAULT_DATABASE.to_owned(),
            reaper: None,
            running: false,
            frozen: false,
        };
        cluster.launch()?;
        cluster.create_database_named(DEFAULT_DATABASE)?;
        Ok(cluster)
    }

    /// The cluster shared by all tests of this process, started on first use.
    ///
    /// Never dropped: its reaper stops it after the process exits. Isolate tests
    /// with [`PgCluster::create_database`].
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(PgCluster::start)
    }

    /// Creates and starts a streaming replica of this (running) cluster: a base
    /// backup with `pg_basebackup -R -X stream` (which writes the standby settings)
    /// into a new temporary directory, started on its own free port. It has the
    /// primary's databases; [`PgCluster::url_for`] on it names one.
    ///
    /// Takes about a second; returns when the replica accepts connections (it
    /// may still be catching up). Errors with the tool's output or the log.
    pub fn start_replica(&self) -> anyhow::Result<PgCluster> {
        let root = tempfile::Builder::new()
            .prefix("e2e-pg-replica-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let root_path = root.path().to_path_buf();
        self.run_as.own(&root_path)?;
        let data_dir = root_path.join("data");
        let mut basebackup = self.run_as.command(&self.bins.tool("pg_basebackup"));
        basebackup
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg("-D")
            .arg(&data_dir)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .current_dir(&root_path);
        run(&mut basebackup, "pg_basebackup")?;
        let mut replica = PgCluster {
            bins: self.bins.clone(),
            run_as: self.run_as.clone(),
            root: Some(root),
            root_path,
            data_dir,
            port: 0,
            database: self.database.clone(),
            reaper: None,
            running: false,
            frozen: false,
        };
        replica.launch()?;
        Ok(replica)
    }

    /// Freezes the server (SIGSTOP to the postmaster and every backend), as a
    /// host that hangs: connections stay open and nothing is answered until
    /// [`PgCluster::thaw`]. Halting or dropping the cluster thaws it first.
    pub fn freeze(&mut self) -> anyhow::Result<()> {
        self.signal_all("-STOP")?;
        self.frozen = true;
        Ok(())
    }

    /// Lets a [`PgCluster::freeze`]d server run again (SIGCONT).
    pub fn thaw(&mut self) -> anyhow::Result<()> {
        if self.frozen {
            self.signal_all("-CONT")?;
            self.frozen = false;
        }
        Ok(())
    }

    /// Sends `signal` to the postmaster (from `postmaster.pid`) and its children
    /// (found by their parent pid in `/proc`).
    fn signal_all(&self, signal: &str) -> anyhow::Result<()> {
        let pid_file = std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .context("cannot read postmaster.pid")?;
        let postmaster: u32 = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid has no pid")?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`; comm may hold spaces, so split after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        let mut kill = Command::new("kill");
        kill.arg(signal).args(pids.iter().map(u32::to_string));
        run(&mut kill, "kill").map(|_| ())
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`, like a crash) but
    /// keeps its data and port for [`PgCluster::resume`]. Errors if `pg_ctl`
    /// fails; does nothing when it is not running.
    pub fn halt(&mut self) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        self.thaw()?;
        let mut pg_ctl = self.run_as.command(&self.bins.tool("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(&self.root_path);
        run(&mut pg_ctl, "pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// Starts a [`PgCluster::halt`]ed server again on the same port and waits
    /// until it accepts connections. Errors (with the log) if it does not start,
    /// e.g. because another process took the port meanwhile.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if self.running {
            return Ok(());
        }
        self.start_on(self.port)
            .with_context(|| format!("server log tail:\n{}", self.log_tail(40)))
    }

    /// Runs one SQL statement on database `db` with `psql` and returns its output
    /// (unaligned, tuples only: one line per row, columns separated by `|`),
    /// trimmed. Errors with psql's message.
    pub fn sql(&self, db: &str, statement: &str) -> anyhow::Result<String> {
        let mut psql = Command::new(self.bins.tool("psql"));
        psql.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(["-d", db, "-c", statement]);
        let out = run(&mut psql, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Starts the server on a free port (retrying on a port clash), waits until it
    /// accepts connections and arms the reaper. Used by [`PgCluster::try_start`]
    /// and [`PgCluster::start_replica`].
    pub fn launch(&mut self) -> anyhow::Result<()> {
        let mut last_err = None;
        for _ in 0..3 {
            match self.start_on(crate::free_port()) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
        }
        let tail = self.log_tail(40);
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed"))
            .context(format!("server log tail:\n{tail}")))
    }

    /// `pg_ctl start` on `port`, waiting until the server accepts connections;
    /// arms the reaper the first time.
    fn start_on(&mut self, port: u16) -> anyhow::Result<()> {
        let sock_dir = self.root_path.join("sock");
        fs::create_dir_all(&sock_dir).context("cannot create the socket directory")?;
        self.run_as.own(&sock_dir)?;
        let log = self.root_path.join("postgres.log");
        let mut pg_ctl = self.run_as.command(&self.bins.tool("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {port} -k {}", sock_dir.display()))
            .arg("start")
            .current_dir(&self.root_path);
        run(&mut pg_ctl, "pg_ctl start")?;
        self.port = port;
        self.running = true;
        if self.reaper.is_none() {
            self.reaper = Some(self.spawn_reaper()?);
        }
        Ok(())
    }

    /// A background shell that waits for this test process to exit, then stops the
    /// server (SIGQUIT = immediate shutdown) and removes the directory.
    fn spawn_reaper(&self) -> anyhow::Result<Child> {
        let script = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
            if [ -f "$2/postmaster.pid" ]; then
                kill -QUIT "$(head -n 1 "$2/postmaster.pid")" 2>/dev/null
                sleep 1
            fi
            rm -rf "$3"
        "#;
        spawn_reaper(
            "pg-reaper",
            script,
            &[self.data_dir.as_os_str(), self.root_path.as_os_str()],
        )
    }

    /// Creates a fresh database named after `prefix` (made unique) and returns its
    /// URL. Call once per test to isolate tests sharing a cluster. Panics on error.
    pub fn create_database(&self, prefix: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("{clean}_{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        self.create_database_named(&name)
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e:#}"));
        self.url_for(&name)
    }

    /// Creates database `name` exactly (errors if it exists or createdb fails).
    pub fn create_database_named(&self, name: &str) -> anyhow::Result<()> {
        let mut createdb = Command::new(self.bins.tool("createdb"));
        createdb
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(name);
        run(&mut createdb, "createdb").map(|_| ())
    }

    /// URL of the database created at start: `postgres://postgres@127.0.0.1:PORT/e2e`.
    pub fn url(&self) -> String {
        self.url_for(&self.database)
    }

    /// URL of database `db` on this cluster.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (for `pg_basebackup` or inspection).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server tools used by this cluster.
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// The last `lines` lines of the server log (empty if there is none yet).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.root_path.join("postgres.log"), lines)
    }

    /// Stops the server immediately and removes its directory. Idempotent.
    pub fn stop(&mut self) {
        if let Err(e) = self.halt() {
            eprintln!("warning: {e:#}");
            self.running = false;
        }
        kill(self.reaper.take());
        if let Some(root) = self.root.take() {
            let _ = root.close();
        }
    }
}

/// Starts `sh -c script` in the background as `name`, with this test process's
/// pid as `$1` and `args` as `$2`…: a reaper that waits for the test process to
/// exit, then cleans up after a server it started (statics are never dropped).
pub(crate) fn spawn_reaper(
    name: &str,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(name)
        .arg(std::process::id().to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot spawn the reaper shell")
}

/// Kills and waits for `process`, if any (errors ignored: it may be gone).
pub(crate) fn kill(process: Option<Child>) {
    if let Some(mut child) = process {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` to completion; an error carries its stdout and stderr.
pub(crate) fn run(cmd: &mut Command, what: &str) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what} ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn append_conf(data_dir: &Path, lines: &[&str]) -> anyhow::Result<()> {
    use std::io::Write;
    let path = data_dir.join("postgresql.conf");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "\n# e2e harness")?;
    for line in lines {
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// The last `lines` lines of a text file, or an empty string.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
