//! The proxies the gateway is compared with in the load harness: nginx and
//! HAProxy, each started from a generated config in a temporary directory on free
//! loopback ports, in the foreground, and killed when dropped.
//!
//! Both are configured as a production reverse proxy would be for a like-for-like
//! comparison with the gateway: one worker (the harness runs the gateway with
//! `--threads 1`), keep-alive connections to the upstream, `X-Forwarded-*`
//! headers, no access log, and TLS on a second port with the gateway's own
//! development certificate.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Where Debian installs the two binaries, and the packages that hold them.
const PEERS: [(&str, &str); 2] = [
    ("/usr/sbin/nginx", "nginx-light"),
    ("/usr/sbin/haproxy", "haproxy"),
];

/// Makes sure nginx and HAProxy are installed.
///
/// Runs once before a comparison. When one is missing it installs the Debian
/// packages as root (with `RUNLEVEL=1`, so their system services are not
/// started), or, as another user, returns an error with the exact command to run.
pub fn ensure_installed() -> anyhow::Result<()> {
    let missing: Vec<&str> = PEERS
        .iter()
        .filter(|(bin, _)| !Path::new(bin).is_file())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        bail!(
            "nginx and HAProxy are needed for the comparison; install them with:\n  \
             sudo apt-get update && sudo RUNLEVEL=1 apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        );
    }
    eprintln!("==> installing {}", missing.join(" "));
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("RUNLEVEL", "1")
            .stdout(Stdio::null())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&missing);
    apt(&install)
}

/// A running peer proxy (nginx or HAProxy); killed when dropped.
pub struct Peer {
    /// `nginx` or `haproxy`.
    pub name: &'static str,
    child: Child,
    dir: tempfile::TempDir,
    /// Plain HTTP listener port.
    pub http_port: u16,
    /// HTTPS listener port.
    pub https_port: u16,
}

/// The certificate both peers serve: the gateway's development `localhost`
/// chain and key, so every proxy does the same TLS work.
pub struct Tls<'a> {
    /// PEM chain (`localhost.pem`).
    pub cert: &'a Path,
    /// PEM private key (`localhost-key.pem`).
    pub key: &'a Path,
}

impl Peer {
    /// Starts nginx in front of `upstream` (`host:port`).
    ///
    /// Runs once per comparison; returns when both ports accept connections, or
    /// an error with nginx's log if it does not start within 10 s.
    pub fn nginx(upstream: &str, tls: &Tls<'_>) -> anyhow::Result<Peer> {
        let dir = tempfile::tempdir()?;
        let (http_port, https_port) = (e2e::free_port(), e2e::free_port());
        let prefix = dir.path();
        let conf = format!(
            r#"worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000;
    upstream backend {{
        server {upstream};
        keepalive 128;
        keepalive_requests 100000;
    }}
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"#,
            prefix = prefix.display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
        );
        let path = prefix.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("stderr.log"))?)
            .spawn()
            .context("starting nginx")?;
        Peer {
            name: "nginx",
            child,
            dir,
            http_port,
            https_port,
        }
        .ready()
    }

    /// Starts HAProxy in front of `upstream` (`host:port`).
    ///
    /// Runs once per comparison; returns when both ports accept connections, or
    /// an error with HAProxy's output if it does not start within 10 s.
    pub fn haproxy(upstream: &str, tls: &Tls<'_>) -> anyhow::Result<Peer> {
        let dir = tempfile::tempdir()?;
        let (http_port, https_port) = (e2e::free_port(), e2e::free_port());
        // HAProxy takes the chain and the key in one file.
        let bundle = dir.path().join("localhost.pem");
        let mut pem = std::fs::read_to_string(tls.cert)?;
        pem.push_str(&std::fs::read_to_string(tls.key)?);
        std::fs::write(&bundle, pem)?;
        let conf = format!(
            r#"global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option forwardfor
    http-reuse safe
frontend front
    bind 127.0.0.1:{http_port}
    bind 127.0.0.1:{https_port} ssl crt {bundle} alpn http/1.1
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    default_backend back
backend back
    server upstream {upstream}
"#,
            bundle = bundle.display(),
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, conf)?;
        let child = Command::new("/usr/sbin/haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::fs::File::create(dir.path().join("stdout.log"))?)
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .context("starting haproxy")?;
        Peer {
            name: "haproxy",
            child,
            dir,
            http_port,
            https_port,
        }
        .ready()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `https://localhost:PORT` (the certificate is for `localhost`).
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.https_port)
    }

    /// The process id (for its resident memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to its logs so far.
    pub fn log(&self) -> String {
        ["error.log", "stderr.log", "stdout.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn ready(mut self) -> anyhow::Result<Peer> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited at start ({status}):\n{}", self.name, self.log());
            }
            let up = [self.http_port, self.https_port]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                return Ok(self);
            }
            if Instant::now() > deadline {
                bail!("{} did not start in 10 s:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // nginx's master stops its workers on SIGTERM; a SIGKILL would leave them.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` and its children (nginx's workers), in KiB,
/// from `/proc`; 0 when it cannot be read.
pub fn rss_kib_with_children(pid: u32) -> u64 {
    let children: u64 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .map(e2e::rss_kib)
        .sum();
    e2e::rss_kib(pid) + children
}

/// The gateway's side of the comparison: a config with one route for every
/// path to `upstream` (`host:port`) and no plugins.
pub fn gateway_config(upstream: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: echo
    url: http://{upstream}
    routes:
      - name: all
        paths: [/]
"#
    )
}

/// The development CA, `localhost` chain and key a test gateway generated under
/// `gateway_dir` (`GatewayProcess::dir`), for the peers to serve the same ones.
pub fn gateway_certs(gateway_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let certs = gateway_dir.join("certs");
    (
        certs.join("dev-ca.pem"),
        certs.join("localhost.pem"),
        certs.join("localhost-key.pem"),
    )
}
