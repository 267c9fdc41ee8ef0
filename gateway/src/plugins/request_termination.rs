//! `request-termination` (priority 2): answers the request itself with a fixed status
//! and message or body. Scoped to the anonymous consumer, it turns "no valid
//! credential" into a 401 while key-auth and jwt accept either credential.

use async_trait::async_trait;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::config::fields::{Errors, Fields};
use crate::config::yaml::Node;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;

/// Kong's name for the plugin.
pub const NAME: &str = "request-termination";

/// Decoded plugin config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Status to answer with (default 503).
    pub status_code: u16,
    /// Message for Kong's error template (used when no `body` is set).
    pub message: Option<String>,
    /// A raw body, sent with `content_type`.
    pub body: Option<String>,
    /// Content type of `body` (default `application/json; charset=utf-8`).
    pub content_type: Option<String>,
}

/// Decodes `config` for this plugin, recording located errors.
pub fn decode(node: Option<&Node>, path: &str, errs: &mut Errors) -> Option<Config> {
    let mut config = Config {
        status_code: 503,
        message: None,
        body: None,
        content_type: None,
    };
    let Some(node) = node else {
        return Some(config);
    };
    let fields = Fields::open(
        node,
        path,
        &[
            "status_code",
            "message",
            "body",
            "content_type",
            "echo",
            "trigger",
        ],
        errs,
    )?;
    let before = errs.list.len();
    config.status_code = fields.int("status_code", 100, 599, 503, errs) as u16;
    config.message = fields.str("message", errs);
    config.body = fields.str("body", errs);
    config.content_type = fields.str("content_type", errs);
    if config.message.is_some() && config.body.is_some() {
        errs.push(
            path,
            fields.line,
            "message cannot be used with content_type or body",
        );
    }
    for key in ["echo", "trigger"] {
        if fields.has(key) {
            errs.push(
                &fields.path_of(key),
                fields.line_of(key),
                "not supported by this gateway yet",
            );
        }
    }
    (errs.list.len() == before).then_some(config)
}

/// The running plugin.
pub struct RequestTermination {
    config: Config,
}

impl RequestTermination {
    /// Builds the plugin from its config; runs when a config is compiled.
    pub fn new(config: Config) -> Self {
        RequestTermination { config }
    }
}

#[async_trait]
impl Plugin for RequestTermination {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        2
    }

    async fn access(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let status = self.config.status_code;
        Err(match &self.config.body {
            Some(body) => GatewayError::PluginJson {
                status,
                body: body.clone(),
                headers: vec![(
                    "Content-Type".to_string(),
                    self.config
                        .content_type
                        .clone()
                        .unwrap_or_else(|| "application/json; charset=utf-8".to_string()),
                )],
            },
            None => GatewayError::Plugin {
                status,
                message: self.config.message.clone().unwrap_or_else(|| {
                    http::StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("Request terminated")
                        .to_string()
                }),
                headers: Vec::new(),
            },
        })
    }
}
