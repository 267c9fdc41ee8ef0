//! Plugins: the registry of names the config may use, their decoded configs, and the
//! per-route chains the proxy runs.
//!
//! Each plugin is a module that decodes its own `config` map at load time and
//! implements [`Plugin`]. A route's chain is ordered once, when the config is
//! compiled, by Kong's priorities (higher first, ties by name), so the request path
//! only walks a slice.

pub mod acl;
pub mod auth;
pub mod body_args;
pub mod chain;
pub mod correlation_id;
pub mod jwt;
pub mod key_auth;
pub mod proxy_cache;
pub mod rate_limiting;
pub mod redis_link;
pub mod request_termination;

use async_trait::async_trait;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::config::fields::Errors;
use crate::config::yaml::Node;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;

/// A plugin's decoded, validated config.
#[derive(Debug, Clone)]
pub enum PluginConfig {
    /// `correlation-id`.
    CorrelationId(correlation_id::Config),
    /// `key-auth`.
    KeyAuth(key_auth::Config),
    /// `jwt`.
    Jwt(jwt::Config),
    /// `acl`.
    Acl(acl::Config),
    /// `request-termination`.
    RequestTermination(request_termination::Config),
    /// `rate-limiting`.
    RateLimiting(rate_limiting::Config),
    /// `proxy-cache`.
    ProxyCache(proxy_cache::Config),
}

impl PluginConfig {
    /// The Redis server this plugin instance talks to, if any.
    pub fn redis(&self) -> Option<&rate_limiting::config::RedisSettings> {
        match self {
            PluginConfig::RateLimiting(c) => match &c.policy {
                rate_limiting::config::Policy::Redis(s) => Some(s),
                rate_limiting::config::Policy::Local => None,
            },
            PluginConfig::ProxyCache(c) => match &c.strategy {
                proxy_cache::config::Strategy::Redis(s) => Some(s),
                proxy_cache::config::Strategy::Memory => None,
            },
            _ => None,
        }
    }

    /// The consumer an authentication plugin falls back to, if configured; checked
    /// against the config's consumers when the file is loaded.
    pub fn anonymous(&self) -> Option<&str> {
        match self {
            PluginConfig::KeyAuth(c) => c.auth.anonymous.as_deref(),
            PluginConfig::Jwt(c) => c.auth.anonymous.as_deref(),
            _ => None,
        }
    }

    /// Whether the plugin may be scoped to a consumer (authentication plugins may
    /// not: they are what identifies the consumer).
    pub fn allows_consumer_scope(&self) -> bool {
        !matches!(self, PluginConfig::KeyAuth(_) | PluginConfig::Jwt(_))
    }
}

/// What the access phase of a plugin decided.
#[derive(Debug)]
pub enum Flow {
    /// Go on to the next plugin and then the upstream.
    Continue,
    /// Answer with this response (a cache hit); no later plugin runs and nothing
    /// goes upstream. The proxy adds Kong's headers and the plugins' response
    /// headers, as for a proxied response.
    Respond(Box<ResponseHeader>, bytes::Bytes),
}

/// A plugin instance, as run by the proxy.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// Kong's plugin name.
    fn name(&self) -> &'static str;

    /// Kong's priority: higher runs first.
    fn priority(&self) -> i32;

    /// Runs after the route is matched and before the upstream is chosen.
    ///
    /// Returns [`Flow::Continue`] to go on, or an error that becomes the response.
    async fn access(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        Ok(Flow::Continue)
    }

    /// Runs on the request header just before it is sent upstream.
    fn upstream_request(&self, _ctx: &RequestCtx, _req: &mut RequestHeader) {}

    /// Runs on every response header sent to the client from this route.
    fn response(&self, _ctx: &RequestCtx, _resp: &mut ResponseHeader) {}
}

/// The plugins this gateway runs, for error messages.
const AVAILABLE: &[&str] = &[
    acl::NAME,
    correlation_id::NAME,
    jwt::NAME,
    key_auth::NAME,
    proxy_cache::NAME,
    rate_limiting::NAME,
    request_termination::NAME,
];

/// Plugins Kong bundles that this gateway does not provide yet. Naming one is an
/// error that says so, rather than a silent no-op that could leave a route open.
const NOT_YET_AVAILABLE: &[&str] = &[
    "acme",
    "ai-proxy",
    "aws-lambda",
    "azure-functions",
    "basic-auth",
    "bot-detection",
    "cors",
    "datadog",
    "file-log",
    "grpc-gateway",
    "grpc-web",
    "hmac-auth",
    "http-log",
    "ip-restriction",
    "ldap-auth",
    "loggly",
    "oauth2",
    "opentelemetry",
    "post-function",
    "pre-function",
    "prometheus",
    "redirect",
    "request-size-limiting",
    "request-transformer",
    "response-ratelimiting",
    "response-transformer",
    "session",
    "statsd",
    "syslog",
    "tcp-log",
    "udp-log",
    "zipkin",
];

/// Decodes the `config` of plugin `name`.
///
/// Runs at config load. Returns the decoded config, or `None` after recording
/// located errors (unknown plugin, plugin not available, bad config fields).
pub fn decode(
    name: &str,
    config: Option<&Node>,
    name_path: &str,
    name_line: usize,
    config_path: &str,
    errs: &mut Errors,
) -> Option<PluginConfig> {
    let before = errs.list.len();
    let decoded = decode_named(name, config, name_path, name_line, config_path, errs);
    // Plugins that report an error about a missing `config` do not know its line.
    for e in &mut errs.list[before..] {
        if e.line == 0 {
            e.line = name_line;
        }
    }
    decoded
}

fn decode_named(
    name: &str,
    config: Option<&Node>,
    name_path: &str,
    name_line: usize,
    config_path: &str,
    errs: &mut Errors,
) -> Option<PluginConfig> {
    match name {
        correlation_id::NAME => {
            correlation_id::decode(config, config_path, errs).map(PluginConfig::CorrelationId)
        }
        key_auth::NAME => key_auth::decode(config, config_path, errs).map(PluginConfig::KeyAuth),
        jwt::NAME => jwt::decode(config, config_path, errs).map(PluginConfig::Jwt),
        acl::NAME => acl::decode(config, config_path, errs).map(PluginConfig::Acl),
        request_termination::NAME => request_termination::decode(config, config_path, errs)
            .map(PluginConfig::RequestTermination),
        proxy_cache::NAME => {
            proxy_cache::decode(config, config_path, errs).map(PluginConfig::ProxyCache)
        }
        rate_limiting::NAME => {
            rate_limiting::decode(config, config_path, errs).map(PluginConfig::RateLimiting)
        }
        other if NOT_YET_AVAILABLE.contains(&other) => {
            errs.push(
                name_path,
                name_line,
                format!("plugin '{other}' is not available in this gateway yet"),
            );
            None
        }
        other => {
            errs.push(
                name_path,
                name_line,
                format!(
                    "plugin '{other}' not enabled; add it to the 'plugins' configuration property \
                     (this gateway runs: {})",
                    AVAILABLE.join(", ")
                ),
            );
            None
        }
    }
}

/// State plugins keep across config reloads: rate-limit counters and Redis links.
pub struct Shared {
    /// Rate-limiting counter stores.
    pub rate_limits: std::sync::Arc<rate_limiting::store::Stores>,
    /// One Redis connection per distinct server, for every plugin.
    pub redis: redis_link::RedisLinks,
    /// The proxy-cache's memory tier and miss coalescing.
    pub cache: std::sync::Arc<proxy_cache::store::CacheStore>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new(proxy_cache::store::DEFAULT_MEMORY_BYTES)
    }
}

impl Shared {
    /// Fresh state, with a proxy-cache memory tier of `cache_bytes`; made once per
    /// process, before the first config is compiled.
    pub fn new(cache_bytes: usize) -> Self {
        Shared {
            rate_limits: Default::default(),
            redis: redis_link::RedisLinks::new(vec![rate_limiting::redis_check::script().clone()]),
            cache: std::sync::Arc::new(proxy_cache::store::CacheStore::new(cache_bytes)),
        }
    }

    /// Rate-limiting counters and every Redis link's state, for `/status`.
    pub fn rate_limiting_status(&self) -> serde_json::Value {
        let mut v = self.rate_limits.stats_json();
        v["redis"] = serde_json::Value::Array(self.redis.status());
        v
    }
}

/// Builds the runtime plugin for a configured instance of `config`.
///
/// Runs when a config is compiled; the result is shared by every request.
pub fn build(
    instance: &crate::config::model::PluginInstance,
    config: &crate::config::Config,
    shared: &Shared,
) -> std::sync::Arc<dyn Plugin> {
    match &instance.config {
        PluginConfig::ProxyCache(c) => std::sync::Arc::new(proxy_cache::ProxyCache::new(
            c.clone(),
            instance
                .scope
                .route
                .and_then(|r| config.routes.get(r))
                .map(|r| r.id),
            shared.cache.clone(),
            &shared.redis,
        )),
        PluginConfig::RateLimiting(c) => {
            let scope = rate_limiting::InstanceScope {
                route: instance
                    .scope
                    .route
                    .and_then(|r| config.routes.get(r))
                    .map(|r| r.id),
                service: instance
                    .scope
                    .service
                    .and_then(|s| config.services.get(s))
                    .map(|s| s.id),
                consumer: instance
                    .scope
                    .consumer
                    .and_then(|c| config.consumers.get(c))
                    .map(|c| c.id),
            };
            std::sync::Arc::new(rate_limiting::RateLimiting::new(
                c.clone(),
                scope,
                shared.rate_limits.clone(),
                &shared.redis,
            ))
        }
        PluginConfig::CorrelationId(c) => {
            std::sync::Arc::new(correlation_id::CorrelationId::new(c.clone()))
        }
        PluginConfig::KeyAuth(c) => std::sync::Arc::new(key_auth::KeyAuth::new(c.clone())),
        PluginConfig::Jwt(c) => std::sync::Arc::new(jwt::Jwt::new(c.clone())),
        PluginConfig::Acl(c) => std::sync::Arc::new(acl::Acl::new(c.clone())),
        PluginConfig::RequestTermination(c) => {
            std::sync::Arc::new(request_termination::RequestTermination::new(c.clone()))
        }
    }
}
