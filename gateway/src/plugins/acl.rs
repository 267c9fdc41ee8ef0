//! `acl` (priority 950): allow or deny consumers by group (Kong §7.2).

use async_trait::async_trait;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::config::fields::{Errors, Fields};
use crate::config::yaml::Node;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;

/// Kong's name for the plugin.
pub const NAME: &str = "acl";

/// Allow-list or deny-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Only consumers in one of these groups pass.
    Allow(Vec<String>),
    /// Consumers in any of these groups are refused.
    Deny(Vec<String>),
}

/// Decoded plugin config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The groups and what to do with them.
    pub mode: Mode,
    /// Do not send `X-Consumer-Groups` upstream.
    pub hide_groups_header: bool,
}

/// Decodes `config` for this plugin, recording located errors.
pub fn decode(node: Option<&Node>, path: &str, errs: &mut Errors) -> Option<Config> {
    let Some(node) = node else {
        errs.push(
            path,
            0,
            "at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
        );
        return None;
    };
    let fields = Fields::open(
        node,
        path,
        &[
            "allow",
            "deny",
            "hide_groups_header",
            "always_use_authenticated_groups",
            "include_consumer_groups",
        ],
        errs,
    )?;
    let before = errs.list.len();
    let list = |key: &str, errs: &mut Errors| {
        fields.has(key).then(|| {
            fields
                .str_list(key, errs)
                .into_iter()
                .map(|(g, _, _)| g)
                .collect::<Vec<_>>()
        })
    };
    let allow = list("allow", errs);
    let deny = list("deny", errs);
    let mode = match (allow, deny) {
        (Some(a), None) if !a.is_empty() => Mode::Allow(a),
        (None, Some(d)) if !d.is_empty() => Mode::Deny(d),
        (Some(_), Some(_)) => {
            errs.push(
                path,
                fields.line,
                "only one of these fields can be set: 'config.allow', 'config.deny'",
            );
            return None;
        }
        _ => {
            errs.push(
                path,
                fields.line,
                "at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
            );
            return None;
        }
    };
    let hide_groups_header = fields.bool("hide_groups_header", false, errs);
    // Authenticated groups come from plugins this gateway does not have (LDAP,
    // OIDC); without them Kong falls back to the consumer's groups, as here.
    fields.bool("always_use_authenticated_groups", false, errs);
    fields.bool("include_consumer_groups", false, errs);
    (errs.list.len() == before).then_some(Config {
        mode,
        hide_groups_header,
    })
}

/// The running plugin.
pub struct Acl {
    config: Config,
}

impl Acl {
    /// Builds the plugin from its config; runs when a config is compiled.
    pub fn new(config: Config) -> Self {
        Acl { config }
    }
}

fn refuse(status: u16, message: &str) -> GatewayError {
    GatewayError::Plugin {
        status,
        message: message.to_string(),
        headers: Vec::new(),
    }
}

#[async_trait]
impl Plugin for Acl {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        950
    }

    async fn access(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let groups: Vec<String> = match (&ctx.auth, &ctx.runtime) {
            (Some(auth), Some(rt)) => rt
                .config
                .consumers
                .get(auth.consumer)
                .map(|c| c.acls.clone())
                .unwrap_or_default(),
            _ => return Err(refuse(401, "Unauthorized")),
        };
        let has_credential = ctx.auth.as_ref().is_some_and(|a| a.credential.is_some());
        let allowed = match &self.config.mode {
            Mode::Allow(list) => {
                if groups.is_empty() {
                    return Err(if has_credential {
                        refuse(403, "You cannot consume this service")
                    } else {
                        refuse(401, "Unauthorized")
                    });
                }
                groups.iter().any(|g| list.contains(g))
            }
            Mode::Deny(list) => !groups.iter().any(|g| list.contains(g)),
        };
        if !allowed {
            return Err(refuse(403, "You cannot consume this service"));
        }
        if !self.config.hide_groups_header && !groups.is_empty() {
            ctx.consumer_groups = Some(groups.join(", "));
        }
        Ok(Flow::Continue)
    }

    fn upstream_request(&self, ctx: &RequestCtx, req: &mut RequestHeader) {
        if let Some(groups) = &ctx.consumer_groups {
            let _ = req.insert_header("x-consumer-groups", groups.as_str());
        }
    }
}
