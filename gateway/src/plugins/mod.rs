//! Plugins: the registry of names the config may use, their decoded configs, and the
//! per-route chains the proxy runs.
//!
//! Each plugin is a module that decodes its own `config` map at load time and
//! implements [`Plugin`]. A route's chain is ordered once, when the config is
//! compiled, by Kong's priorities (higher first, ties by name), so the request path
//! only walks a slice.

pub mod chain;
pub mod correlation_id;

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
}

/// What the access phase of a plugin decided.
#[derive(Debug)]
pub enum Flow {
    /// Go on to the next plugin and then the upstream.
    Continue,
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

/// Plugins Kong bundles that this gateway does not provide yet. Naming one is an
/// error that says so, rather than a silent no-op that could leave a route open.
const NOT_YET_AVAILABLE: &[&str] = &[
    "acl",
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
    "jwt",
    "key-auth",
    "ldap-auth",
    "loggly",
    "oauth2",
    "opentelemetry",
    "post-function",
    "pre-function",
    "prometheus",
    "proxy-cache",
    "rate-limiting",
    "redirect",
    "request-size-limiting",
    "request-termination",
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
    match name {
        correlation_id::NAME => {
            correlation_id::decode(config, config_path, errs).map(PluginConfig::CorrelationId)
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
                    "plugin '{other}' not enabled; add it to the 'plugins' configuration property"
                ),
            );
            None
        }
    }
}

/// Builds the runtime plugin for a decoded config.
///
/// Runs when a config is compiled; the result is shared by every request.
pub fn build(config: &PluginConfig) -> std::sync::Arc<dyn Plugin> {
    match config {
        PluginConfig::CorrelationId(c) => {
            std::sync::Arc::new(correlation_id::CorrelationId::new(c.clone()))
        }
    }
}
