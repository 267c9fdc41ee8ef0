//! What the authentication plugins (key-auth, jwt) share: their common config
//! fields, Kong's "logical OR" with an anonymous consumer, and `WWW-Authenticate`.

use pingora_proxy::Session;

use crate::config::fields::{Errors, Fields};
use crate::consumers::Authenticated;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;

/// Config fields every authentication plugin has.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Consumer (id or username) to fall back to when authentication fails.
    pub anonymous: Option<String>,
    /// Authenticate CORS preflight (`OPTIONS`) requests too (default true).
    pub run_on_preflight: bool,
    /// Realm in `WWW-Authenticate`.
    pub realm: Option<String>,
}

/// The common field names, for `Fields::open`'s allowed list.
pub const AUTH_KEYS: &[&str] = &["anonymous", "run_on_preflight", "realm"];

impl AuthConfig {
    /// Reads the common fields of an authentication plugin's config.
    pub fn decode(fields: &Fields<'_>, errs: &mut Errors) -> AuthConfig {
        AuthConfig {
            anonymous: fields.str("anonymous", errs).filter(|s| !s.is_empty()),
            run_on_preflight: fields.bool("run_on_preflight", true, errs),
            realm: fields.str("realm", errs),
        }
    }

    /// Whether this plugin should not run for the request: a preflight it is told
    /// to let through, or a request another authentication plugin already
    /// identified while this one has an anonymous fallback (Kong's logical OR).
    pub fn skip(&self, session: &Session, ctx: &RequestCtx) -> bool {
        if !self.run_on_preflight && session.req_header().method == http::Method::OPTIONS {
            return true;
        }
        self.anonymous.is_some() && ctx.auth.as_ref().is_some_and(|a| !a.anonymous)
    }

    /// Handles a failed authentication: with an anonymous consumer configured the
    /// request goes on as that consumer, otherwise `refusal` is the answer.
    ///
    /// Returns the error to answer with, or `Ok` after setting the anonymous
    /// identity. A configured anonymous consumer that does not exist is a 500, as
    /// in Kong (the loader refuses such files, so this only guards a bug).
    pub fn fail(&self, ctx: &mut RequestCtx, refusal: GatewayError) -> Result<(), GatewayError> {
        let Some(anonymous) = &self.anonymous else {
            return Err(refusal);
        };
        let consumer = ctx
            .runtime
            .as_ref()
            .and_then(|rt| rt.credentials.consumer(anonymous));
        match consumer {
            Some(consumer) => {
                ctx.auth = Some(Authenticated {
                    consumer,
                    credential: None,
                    anonymous: true,
                });
                Ok(())
            }
            None => Err(GatewayError::Plugin {
                status: 500,
                message: format!("anonymous consumer {anonymous} is configured but doesn't exist"),
                headers: Vec::new(),
            }),
        }
    }

    /// `WWW-Authenticate` for `scheme` (`Key`, `Bearer`), with the realm and an
    /// optional `error` parameter.
    pub fn www_authenticate(&self, scheme: &str, error: Option<&str>) -> (String, String) {
        let mut params = Vec::new();
        if let Some(realm) = &self.realm {
            params.push(format!("realm=\"{realm}\""));
        }
        if let Some(error) = error {
            params.push(format!("error=\"{error}\""));
        }
        let value = if params.is_empty() {
            scheme.to_string()
        } else {
            format!("{scheme} {}", params.join(", "))
        };
        ("WWW-Authenticate".to_string(), value)
    }
}

/// Percent-decodes a query-string component (`+` is a space, as in forms).
///
/// Used by the plugins that read credentials from the query string.
pub fn decode_query_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}
