//! Per-request state carried through Pingora's phases.

use std::sync::Arc;
use std::time::Instant;

use crate::error::GatewayError;
use crate::state::Runtime;

/// State of one request, created by `new_ctx` and dropped after `logging`.
pub struct RequestCtx {
    /// 32 lower-case hex characters; sent upstream and to the client.
    pub request_id: String,
    /// When the gateway started on the request.
    pub started: Instant,
    /// The config snapshot this request is served with, from routing to logging, so a
    /// reload in the middle of a request cannot mix two configs.
    pub runtime: Option<Arc<Runtime>>,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// Path and query to send upstream.
    pub upstream_uri: Option<String>,
    /// The prefix removed by `strip_path`, sent as `X-Forwarded-Prefix`.
    pub stripped_prefix: Option<String>,
    /// The raw request path without the query, sent as `X-Forwarded-Path`.
    pub raw_path: String,
    /// The normalised request path the route was matched on.
    pub normalized_path: String,
    /// Upstream connection attempts so far.
    pub tries: u32,
    /// When the first upstream connection attempt began.
    pub proxy_started: Option<Instant>,
    /// When the request was handed to the upstream connection.
    pub upstream_sent: Option<Instant>,
    /// Milliseconds from sending upstream to the first response byte.
    pub upstream_latency_ms: Option<u128>,
    /// An error decided before Pingora's own error path, rendered by `fail_to_proxy`.
    pub failure: Option<GatewayError>,
    /// Set by the correlation-id plugin.
    pub correlation_id: Option<String>,
    /// The consumer an authentication plugin identified.
    pub auth: Option<crate::consumers::Authenticated>,
    /// Groups the acl plugin sends upstream (`X-Consumer-Groups`).
    pub consumer_groups: Option<String>,
    /// Credential headers an authentication plugin removes before the request goes
    /// upstream (`hide_credentials`).
    pub hidden_headers: Vec<String>,
    /// Headers the rate-limiting plugin adds to the response.
    pub rate_limit_headers: Vec<(String, String)>,
    /// The proxy-cache's view of this request.
    pub cache: Option<Box<crate::plugins::proxy_cache::CacheState>>,
    /// The request body, once a plugin has read it.
    pub request_body: super::request_body::BodyState,
    /// A body to send upstream instead of the one the client sent (a plugin removed a
    /// credential from it).
    pub body_replacement: Option<bytes::Bytes>,
    /// The plugins this request runs, in order: the route's chain, switched to the
    /// consumer's once authentication identifies one.
    pub chain: Vec<std::sync::Arc<dyn crate::plugins::Plugin>>,
    /// Guard that keeps the in-flight request count right.
    pub(crate) _inflight: Option<crate::state::InflightGuard>,
}

impl RequestCtx {
    /// A fresh context with a new request id; runs at the start of every request.
    pub fn new() -> Self {
        RequestCtx {
            request_id: new_request_id(),
            started: Instant::now(),
            runtime: None,
            route: None,
            upstream_uri: None,
            stripped_prefix: None,
            raw_path: String::new(),
            normalized_path: String::new(),
            tries: 0,
            proxy_started: None,
            upstream_sent: None,
            upstream_latency_ms: None,
            failure: None,
            correlation_id: None,
            auth: None,
            consumer_groups: None,
            hidden_headers: Vec::new(),
            rate_limit_headers: Vec::new(),
            cache: None,
            request_body: Default::default(),
            body_replacement: None,
            chain: Vec::new(),
            _inflight: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// Generates a Kong-style request id: four random 32-bit values as 32 hex chars.
pub fn new_request_id() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}
