//! Starting the real `gateway` binary for a test, on free ports, with its own config
//! and development certificate in a temporary directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, free_port};

/// A running gateway process; killed when dropped.
pub struct GatewayProcess {
    child: Child,
    dir: tempfile::TempDir,
    /// Plain HTTP listener port.
    pub http_port: u16,
    /// HTTPS listener port.
    pub https_port: u16,
    /// Admin listener port.
    pub admin_port: u16,
}

impl GatewayProcess {
    /// Writes `config` to a file and starts `gateway run` with it.
    ///
    /// Waits until the admin `/status` answers and the proxy ports accept
    /// connections; panics with the gateway's log if it does not start in time.
    pub fn start(config: &str) -> GatewayProcess {
        Self::start_with_args(config, &[])
    }

    /// Like [`GatewayProcess::start`], with extra `gateway run` flags.
    pub fn start_with_args(config: &str, extra: &[&str]) -> GatewayProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("gateway.yaml");
        std::fs::write(&conf, config).expect("write config");
        let (http_port, https_port, admin_port) = (free_port(), free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
        let child = Command::new(bin::path("gateway"))
            .arg("run")
            .arg("--conf")
            .arg(&conf)
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(["--https-listen", &format!("127.0.0.1:{https_port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--certs-dir")
            .arg(dir.path().join("certs"))
            .args(["--threads", "1"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gateway");
        let mut gw = GatewayProcess {
            child,
            dir,
            http_port,
            https_port,
            admin_port,
        };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited early ({status}):\n{}", self.log());
            }
            // A bare TCP probe of the HTTPS port logs a handshake error in the
            // gateway's log; that is the price of knowing the listener is up.
            let up = [self.admin_port, self.http_port, self.https_port]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                return;
            }
            if Instant::now() > deadline {
                panic!("gateway did not start in 30s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("gateway.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process in KiB (from /proc), 0 if unknown.
    pub fn rss_kib(&self) -> u64 {
        crate::rss_kib(self.child.id())
    }

    /// The directory holding the config, the log and the development certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the config file (rewrite it, then [`Self::reload`]).
    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// The development CA the gateway generated, PEM.
    pub fn dev_ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("certs/dev-ca.pem")).expect("dev CA")
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `https://localhost:<port>`.
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.https_port)
    }

    /// `http://127.0.0.1:<admin port>`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Sends SIGHUP, asking the gateway to reload its config file.
    pub fn reload(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }

    /// A client that trusts the gateway's development CA (and `extra_ca`, if any).
    pub fn client(&self, extra_ca: Option<&str>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.dev_ca_pem().as_bytes()).expect("ca"),
            )
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        if let Some(ca) = extra_ca {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"));
        }
        builder.build().expect("client")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
