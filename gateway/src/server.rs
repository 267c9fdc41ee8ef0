//! Wiring: builds the Pingora server with the HTTP, HTTPS and admin listeners and the
//! reload task, from [`Settings`]. `main` and the tests both start the gateway here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::Stream;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;

use crate::admin::AdminApp;
use crate::certs;
use crate::proxy::GatewayProxy;
use crate::state::{Gateway, Stats};
use crate::tls::certified_key;

/// Everything `gateway run` needs, from flags and environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Kong-format YAML file.
    pub conf: PathBuf,
    /// Plain HTTP listener.
    pub http_listen: SocketAddr,
    /// HTTPS listener.
    pub https_listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Default certificate chain (PEM); `None` uses the development certificate.
    pub tls_cert: Option<PathBuf>,
    /// Key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Where the development CA and certificate live.
    pub certs_dir: PathBuf,
    /// Worker threads per listener service.
    pub threads: usize,
    /// Bytes the proxy-cache's memory tier may hold.
    pub proxy_cache_memory: usize,
}

/// Counts client connections around the proxy application.
///
/// Pingora hands a keep-alive connection back to the accept loop after each request;
/// this wrapper keeps serving it until it closes, so one call is one connection.
struct Counted<A> {
    inner: Arc<A>,
    stats: Arc<Stats>,
}

struct ConnGuard(Arc<Stats>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.stats
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let _guard = ConnGuard(self.stats.clone());
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            if *shutdown.borrow() {
                return None;
            }
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Re-reads the config on SIGHUP.
struct Reloader {
    gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot listen for SIGHUP; reload by signal is off");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    // Reading and compiling a config is blocking work; a panic in it
                    // (a bug) must not take the reload task down with it.
                    let gateway = self.gateway.clone();
                    match tokio::task::spawn_blocking(move || gateway.reload()).await {
                        Ok(Ok(hash)) => tracing::info!(%hash, "configuration reloaded"),
                        Ok(Err(e)) => tracing::error!(
                            "configuration refused, the previous one keeps serving:\n{e}"
                        ),
                        Err(e) => tracing::error!(
                            "configuration reload failed ({e}); the previous one keeps serving"
                        ),
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Loads the config and builds the server with all its services.
///
/// Runs once at start-up. Returns the server (not yet running) and the shared state,
/// or an error that names the bad config fields or the unusable certificate.
pub fn build(settings: &Settings) -> anyhow::Result<(Server, Arc<Gateway>)> {
    let config = crate::config::load(&settings.conf)?;
    // Pingora binds inside its service threads and, when an address is taken, retries
    // and then carries on without that listener. Bind once here so a taken port is a
    // clear start-up error instead.
    for (flag, addr) in [
        ("--http-listen", settings.http_listen),
        ("--https-listen", settings.https_listen),
        ("--admin-listen", settings.admin_listen),
    ] {
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr} ({flag})"))?;
    }
    let (cert_path, key_path) = match (&settings.tls_cert, &settings.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            let pki = certs::ensure_dev_pki(&settings.certs_dir).with_context(|| {
                format!(
                    "cannot create the development certificate in {}",
                    settings.certs_dir.display()
                )
            })?;
            (pki.cert, pki.key)
        }
        _ => anyhow::bail!("--tls-cert and --tls-key must be given together"),
    };
    let cert_pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("cannot read {}", cert_path.display()))?;
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read {}", key_path.display()))?;
    let default_cert = certified_key(&cert_pem, &key_pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert_path.display()))?;

    let gateway = Arc::new(Gateway::new(
        config,
        settings.conf.clone(),
        Some(default_cert),
        crate::plugins::Shared::new(settings.proxy_cache_memory),
    ));

    let mut conf = ServerConf::new().context("cannot build the server configuration")?;
    conf.threads = settings.threads.max(1);
    conf.grace_period_seconds = Some(1);
    conf.graceful_shutdown_timeout_seconds = Some(10);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = server.configuration.clone();

    let proxy = |tls: bool| Counted {
        inner: Arc::new(pingora_proxy::http_proxy(
            &conf,
            GatewayProxy {
                gateway: gateway.clone(),
                tls,
            },
        )),
        stats: gateway.stats.clone(),
    };
    let mut http = Service::new("proxy http".to_string(), proxy(false));
    http.add_tcp(&settings.http_listen.to_string());
    let mut https = Service::new("proxy https".to_string(), proxy(true));
    let mut tls = TlsSettings::with_callbacks(Box::new(NoCallbacks))?;
    tls.set_cert_resolver(gateway.certs.clone());
    tls.enable_h2();
    https.add_tls_with_settings(&settings.https_listen.to_string(), None, tls);

    let mut admin = Service::new(
        "admin".to_string(),
        HttpServer::new_app(AdminApp {
            gateway: gateway.clone(),
        }),
    );
    admin.add_tcp(&settings.admin_listen.to_string());

    server.add_service(http);
    server.add_service(https);
    server.add_service(admin);
    server.add_service(background_service(
        "config reload",
        Reloader {
            gateway: gateway.clone(),
        },
    ));
    Ok((server, gateway))
}

struct NoCallbacks;

#[async_trait]
impl pingora_core::listeners::TlsAccept for NoCallbacks {}

/// Builds and runs the gateway until SIGTERM/SIGINT.
///
/// Runs from `gateway run`. Returns after a graceful shutdown, or an error if the
/// gateway could not start.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let (server, gateway) = build(settings)?;
    tracing::info!(
        http = %settings.http_listen,
        https = %settings.https_listen,
        admin = %settings.admin_listen,
        config = %settings.conf.display(),
        hash = %gateway.runtime.load().config.hash,
        "gateway starting"
    );
    server.run(RunArgs::default());
    Ok(())
}
