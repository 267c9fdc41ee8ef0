//! Shared gateway state: the live config snapshot (swapped atomically on reload),
//! the TLS certificate table, a small DNS cache and the counters `/status` reports.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use crate::config::{self, Config, LoadError};
use crate::consumers::CredentialIndex;
use crate::plugins::{self, Plugin};
use crate::router::Router;
use crate::tls::{CertTable, SniResolver};

/// A compiled config: the model, its router, each route's plugin chain and the
/// credential indexes.
pub struct Runtime {
    /// The validated config.
    pub config: Config,
    /// Routes compiled for matching.
    pub router: Router,
    /// The plugins of each route, in run order (indexed like `config.routes`).
    pub chains: Vec<Vec<Arc<dyn Plugin>>>,
    /// The chain of a (route, consumer) pair that has consumer-scoped plugins; it
    /// replaces the route's chain once authentication identifies that consumer.
    pub consumer_chains: HashMap<(usize, usize), Vec<Arc<dyn Plugin>>>,
    /// API keys, jwt keys and consumer names for the authentication plugins.
    pub credentials: CredentialIndex,
    /// Every jwt secret's verification key, parsed once per config.
    pub jwt_keys: plugins::jwt::SecretKeys,
}

impl Runtime {
    /// Compiles a validated config. Runs at start-up and on every reload.
    ///
    /// Plugins keep their cross-reload state (counters, Redis links) in `shared`.
    pub fn new(config: Config, shared: &plugins::Shared) -> Runtime {
        let router = Router::build(&config);
        let built: Vec<Arc<dyn Plugin>> = config
            .plugins
            .iter()
            .map(|p| plugins::build(p, &config, shared))
            .collect();
        let chains = (0..config.routes.len())
            .map(|i| plugins::chain::for_route(&config, i, None, &built))
            .collect();
        let mut scoped: Vec<usize> = config
            .plugins
            .iter()
            .filter_map(|p| p.scope.consumer)
            .collect();
        scoped.sort_unstable();
        scoped.dedup();
        let mut consumer_chains = HashMap::new();
        for route in 0..config.routes.len() {
            for &consumer in &scoped {
                let chain = plugins::chain::for_route(&config, route, Some(consumer), &built);
                consumer_chains.insert((route, consumer), chain);
            }
        }
        let credentials = CredentialIndex::build(&config);
        let jwt_keys = plugins::jwt::SecretKeys::build(&config);
        Runtime {
            config,
            router,
            chains,
            consumer_chains,
            credentials,
            jwt_keys,
        }
    }
}

/// Counters for the admin `/status` endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections open now.
    pub connections_active: AtomicI64,
    /// Client connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Requests being served now.
    pub requests_active: AtomicI64,
    /// Requests received since start.
    pub requests_total: AtomicU64,
}

/// Decrements `requests_active` when the request's context is dropped.
pub struct InflightGuard(Arc<Stats>);

impl Stats {
    /// Counts a new request; the guard un-counts it when dropped.
    pub fn inflight(self: &Arc<Self>) -> InflightGuard {
        self.requests_active.fetch_add(1, Ordering::Relaxed);
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.requests_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything the proxy, the admin listener and the reloader share.
pub struct Gateway {
    /// The live config; requests take a snapshot at routing time.
    pub runtime: ArcSwap<Runtime>,
    /// Certificates for the HTTPS listener.
    pub certs: Arc<SniResolver>,
    /// The listener's default certificate, kept to rebuild the table on reload.
    pub default_cert: Option<Arc<CertifiedKey>>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Process start time.
    pub started: Instant,
    /// The config file, re-read on reload.
    pub conf_path: PathBuf,
    /// Plugin state that outlives a config (rate-limit counters, Redis links).
    pub shared: plugins::Shared,
    dns: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
}

/// How long a resolved service host is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

impl Gateway {
    /// Creates the shared state around a first, already validated config.
    pub fn new(
        config: Config,
        conf_path: PathBuf,
        default_cert: Option<Arc<CertifiedKey>>,
        shared: plugins::Shared,
    ) -> Gateway {
        let certs = Arc::new(SniResolver::new(CertTable::build(
            &config.certificates,
            default_cert.clone(),
        )));
        Gateway {
            runtime: ArcSwap::from_pointee(Runtime::new(config, &shared)),
            shared,
            certs,
            default_cert,
            stats: Arc::new(Stats::default()),
            started: Instant::now(),
            conf_path,
            dns: Mutex::new(HashMap::new()),
        }
    }

    /// Re-reads the config file and swaps it in.
    ///
    /// Runs on SIGHUP. Requests in flight finish with the config they started with;
    /// new requests see the new one. On error the old config keeps serving and the
    /// error is returned (it names every field at fault). Returns the new config hash.
    pub fn reload(&self) -> Result<String, LoadError> {
        let config = config::load(&self.conf_path)?;
        let hash = config.hash.clone();
        self.certs.replace(CertTable::build(
            &config.certificates,
            self.default_cert.clone(),
        ));
        let runtime = Arc::new(Runtime::new(config, &self.shared));
        let used: Vec<_> = runtime
            .config
            .plugins
            .iter()
            .filter_map(|p| p.config.redis().cloned())
            .collect();
        self.runtime.store(runtime);
        self.shared.redis.retain(&used);
        Ok(hash)
    }

    /// Resolves a service host to an address, through a small TTL cache.
    ///
    /// Runs when an upstream is chosen. IP literals are returned as they are. Returns
    /// `None` when the name does not resolve (the proxy answers 503).
    pub async fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, port));
        }
        if let Ok(cache) = self.dns.lock() {
            if let Some((ips, at)) = cache.get(host) {
                if at.elapsed() < DNS_TTL {
                    if let Some(ip) = ips.first() {
                        return Some(SocketAddr::new(*ip, port));
                    }
                }
            }
        }
        let ips: Vec<IpAddr> = tokio::net::lookup_host((host, port))
            .await
            .ok()?
            .map(|a| a.ip())
            .collect();
        let first = *ips.first()?;
        if let Ok(mut cache) = self.dns.lock() {
            cache.insert(host.to_string(), (ips, Instant::now()));
        }
        Some(SocketAddr::new(first, port))
    }
}
