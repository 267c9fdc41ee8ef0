//! `correlation-id` (priority 100001): gives each request an id in a header of the
//! operator's choice, unless the client already sent one, and optionally echoes it.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use uuid::Uuid;

use super::{Flow, Plugin};
use crate::config::fields::{Errors, Fields};
use crate::config::yaml::Node;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;

/// Kong's name for the plugin.
pub const NAME: &str = "correlation-id";

/// How ids are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    /// A random UUID per request.
    Uuid,
    /// A UUID per gateway process followed by `#` and a counter.
    UuidCounter,
    /// The listener address, process id, a counter and the time.
    Tracker,
}

/// Decoded plugin config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Header that carries the id (default `Kong-Request-ID`).
    pub header_name: http::HeaderName,
    /// Id generator (default `uuid#counter`).
    pub generator: Generator,
    /// Also send the id back to the client.
    pub echo_downstream: bool,
}

/// Decodes `config` for this plugin, recording located errors.
pub fn decode(node: Option<&Node>, path: &str, errs: &mut Errors) -> Option<Config> {
    let mut config = Config {
        header_name: http::HeaderName::from_static("kong-request-id"),
        generator: Generator::UuidCounter,
        echo_downstream: false,
    };
    let Some(node) = node else {
        return Some(config);
    };
    let fields = Fields::open(
        node,
        path,
        &["header_name", "generator", "echo_downstream"],
        errs,
    )?;
    let before = errs.list.len();
    if let Some(name) = fields.str("header_name", errs) {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => config.header_name = h,
            Err(_) => errs.push(
                &fields.path_of("header_name"),
                fields.line_of("header_name"),
                "invalid header name",
            ),
        }
    }
    if let Some(generator) = fields.str("generator", errs) {
        config.generator = match generator.as_str() {
            "uuid" => Generator::Uuid,
            "uuid#counter" => Generator::UuidCounter,
            "tracker" => Generator::Tracker,
            _ => {
                errs.push(
                    &fields.path_of("generator"),
                    fields.line_of("generator"),
                    "expected one of: uuid, uuid#counter, tracker",
                );
                Generator::UuidCounter
            }
        };
    }
    config.echo_downstream = fields.bool("echo_downstream", false, errs);
    (errs.list.len() == before).then_some(config)
}

/// The running plugin.
pub struct CorrelationId {
    config: Config,
    process_uuid: Uuid,
    counter: AtomicU64,
}

impl CorrelationId {
    /// Builds the plugin from its config; runs when a config is compiled.
    pub fn new(config: Config) -> Self {
        CorrelationId {
            config,
            process_uuid: Uuid::new_v4(),
            counter: AtomicU64::new(0),
        }
    }

    fn generate(&self, session: &Session) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        match self.config.generator {
            Generator::Uuid => Uuid::new_v4().to_string(),
            Generator::UuidCounter => format!("{}#{n}", self.process_uuid),
            Generator::Tracker => {
                let addr = session.server_addr().and_then(|a| a.as_inet()).map_or_else(
                    || "0.0.0.0-0".to_string(),
                    |a| format!("{}-{}", a.ip(), a.port()),
                );
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                format!("{addr}-{}-{n}-{now:.3}", std::process::id())
            }
        }
    }
}

#[async_trait]
impl Plugin for CorrelationId {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        100_001
    }

    async fn access(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let existing = session
            .req_header()
            .headers
            .get(&self.config.header_name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let id = match existing {
            Some(id) => id,
            None => self.generate(session),
        };
        ctx.correlation_id = Some(id);
        Ok(Flow::Continue)
    }

    fn upstream_request(&self, ctx: &RequestCtx, req: &mut RequestHeader) {
        if let Some(id) = &ctx.correlation_id {
            let _ = req.insert_header(self.config.header_name.clone(), id.as_str());
        }
    }

    fn response(&self, ctx: &RequestCtx, resp: &mut ResponseHeader) {
        if self.config.echo_downstream {
            if let Some(id) = &ctx.correlation_id {
                let _ = resp.insert_header(self.config.header_name.clone(), id.as_str());
            }
        }
    }
}
