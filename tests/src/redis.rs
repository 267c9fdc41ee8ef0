//! A throwaway `redis-server` per test, on a free port, that a test can stop and
//! start again on the same port to play a Redis outage, or pause (SIGSTOP) and
//! resume (SIGCONT) to play a Redis that hangs: it still accepts connections (the
//! kernel does) but never answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A running (or stopped) redis-server owned by one test; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Whether the process is stopped by [`RedisServer::pause`].
    paused: bool,
    dir: tempfile::TempDir,
    /// The port it listens on, kept across restarts.
    pub port: u16,
}

impl RedisServer {
    /// Starts a redis-server that keeps nothing on disk; panics if none is installed
    /// (scripts/test installs it).
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            paused: false,
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
        };
        server.restart();
        server
    }

    fn binary() -> PathBuf {
        std::env::var_os("REDIS_SERVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"))
    }

    /// Starts the server again on the same port (after [`RedisServer::stop`]).
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log");
        let child = Command::new(Self::binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it: apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients), as a crash would; a
    /// paused server is resumed first so that nothing is left stopped.
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP, as a hung Redis: connections are still
    /// accepted and commands still sent, but nothing is answered until
    /// [`RedisServer::resume`]. Runs in a test's outage phase; panics if the server
    /// is not running or the signal cannot be sent. Dropping the server resumes
    /// and kills it, so a failing test never leaves a stopped process behind.
    pub fn pause(&mut self) {
        let pid = self
            .child
            .as_ref()
            .expect("redis-server is not running")
            .id();
        self.paused = true;
        assert!(signal(pid, "-STOP"), "cannot SIGSTOP redis-server {pid}");
    }

    /// Lets a server frozen by [`RedisServer::pause`] run again (SIGCONT); it then
    /// answers the commands queued meanwhile. Does nothing if it is not paused.
    pub fn resume(&mut self) {
        if !self.paused {
            return;
        }
        if let Some(child) = &self.child {
            // Never panics: this also runs from Drop while a test unwinds.
            let _ = signal(child.id(), "-CONT");
        }
        self.paused = false;
    }

    /// Whether the server is frozen by [`RedisServer::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// `host:port` for configs.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends one command and returns the raw RESP reply.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = resp(args);
        req.push_str(&resp(&["QUIT"]));
        s.write_all(req.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out.trim_end_matches("+OK\r\n").to_string())
    }

    /// `CLIENT PAUSE ms ALL`: every client, this harness' too, waits until the
    /// pause ends. Returns at once (on its `+OK`, without the `QUIT` that
    /// [`RedisServer::command`] sends, which the pause would hold back).
    pub fn pause_all(&self, ms: u32) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        s.write_all(resp(&["CLIENT", "PAUSE", &ms.to_string(), "ALL"]).as_bytes())
            .expect("send CLIENT PAUSE");
        let mut ok = [0u8; 5];
        s.read_exact(&mut ok).expect("CLIENT PAUSE reply");
        assert_eq!(&ok, b"+OK\r\n", "CLIENT PAUSE refused");
    }

    /// Calls of each command since start or the last reset, from `INFO commandstats`.
    pub fn command_calls(&self) -> std::collections::HashMap<String, u64> {
        let info = self.command(&["INFO", "commandstats"]).unwrap_or_default();
        info.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect()
    }

    /// Number of keys matching a pattern.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self.command(&["KEYS", pattern]).unwrap_or_default();
        reply
            .lines()
            .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `sig` (`-STOP`, `-CONT`) to `pid` with kill(1); returns whether it was
/// delivered.
fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// One command in RESP, the Redis wire format.
fn resp(args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    req
}
