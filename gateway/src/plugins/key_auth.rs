//! `key-auth` (priority 1250): API keys in a header, the query string or the body
//! (Kong §3).

use async_trait::async_trait;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::auth::{AuthConfig, AUTH_KEYS};
use super::body_args::{self, BodyKind, Lookup};
use super::{Flow, Plugin};
use crate::config::fields::{Errors, Fields};
use crate::config::yaml::Node;
use crate::consumers::Authenticated;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::forwarding::{fold_header_name, header_spellings};
use crate::proxy::request_body;

/// Kong's name for the plugin.
pub const NAME: &str = "key-auth";

/// Decoded plugin config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Names to look for, in order (default `apikey`).
    pub key_names: Vec<String>,
    /// Look in request headers (default true).
    pub key_in_header: bool,
    /// Look in the query string (default true).
    pub key_in_query: bool,
    /// Look in form, JSON and multipart bodies (default false).
    pub key_in_body: bool,
    /// Remove the key before the request goes upstream (default false).
    pub hide_credentials: bool,
    /// anonymous, run_on_preflight, realm.
    pub auth: AuthConfig,
}

/// Decodes `config` for this plugin, recording located errors.
pub fn decode(node: Option<&Node>, path: &str, errs: &mut Errors) -> Option<Config> {
    let mut config = Config {
        key_names: vec!["apikey".to_string()],
        key_in_header: true,
        key_in_query: true,
        key_in_body: false,
        hide_credentials: false,
        auth: AuthConfig {
            run_on_preflight: true,
            ..AuthConfig::default()
        },
    };
    let Some(node) = node else {
        return Some(config);
    };
    let allowed: Vec<&str> = [
        "key_names",
        "key_in_header",
        "key_in_query",
        "key_in_body",
        "hide_credentials",
    ]
    .into_iter()
    .chain(AUTH_KEYS.iter().copied())
    .collect();
    let fields = Fields::open(node, path, &allowed, errs)?;
    let before = errs.list.len();
    if fields.has("key_names") {
        config.key_names.clear();
        for (name, p, line) in fields.str_list("key_names", errs) {
            if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errs.push(
                    &p,
                    line,
                    "bad header name: must contain only letters, digits, '-' and '_'",
                );
            } else {
                config.key_names.push(name);
            }
        }
        if config.key_names.is_empty() && errs.list.len() == before {
            errs.push(
                &fields.path_of("key_names"),
                fields.line_of("key_names"),
                "length must be at least 1",
            );
        }
    }
    config.key_in_header = fields.bool("key_in_header", true, errs);
    config.key_in_query = fields.bool("key_in_query", true, errs);
    config.key_in_body = fields.bool("key_in_body", false, errs);
    config.hide_credentials = fields.bool("hide_credentials", false, errs);
    config.auth = AuthConfig::decode(&fields, errs);
    (errs.list.len() == before).then_some(config)
}

/// The running plugin.
pub struct KeyAuth {
    config: Config,
}

/// Where a key was found.
enum Found {
    Header(String),
    Query(String),
    Body(String),
}

impl Found {
    fn name(&self) -> &str {
        match self {
            Found::Header(n) | Found::Query(n) | Found::Body(n) => n,
        }
    }
}

/// Why no single key could be taken from the request.
enum Missing {
    None,
    Duplicate,
}

impl KeyAuth {
    /// Builds the plugin from its config; runs when a config is compiled.
    pub fn new(config: Config) -> Self {
        KeyAuth { config }
    }

    /// Header names match case-insensitively, and `_` and `-` are interchangeable.
    fn header_values<'a>(req: &'a RequestHeader, name: &str) -> Vec<&'a [u8]> {
        let want = fold_header_name(name);
        req.headers
            .iter()
            .filter(|(k, _)| fold_header_name(k.as_str()) == want)
            .map(|(_, v)| v.as_bytes())
            .collect()
    }

    /// Values of query argument `name` (exact name, percent-decoded values).
    /// A bare name counts as an empty value.
    fn query_values(query: &str, name: &str) -> Vec<String> {
        body_args::form_values(query.as_bytes(), name)
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    }

    /// The body encoding to look in, when `key_in_body` is on and the body has one.
    fn body_kind(&self, session: &Session) -> Option<BodyKind> {
        if !self.config.key_in_body {
            return None;
        }
        BodyKind::of(
            session
                .req_header()
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        )
    }

    /// Removes argument `name` from what goes upstream: the header (every spelling),
    /// the query string, and the body when `key_in_body` is on.
    async fn hide(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        name: &str,
    ) -> Result<(), GatewayError> {
        ctx.hidden_headers.push(name.to_string());
        if let Some(uri) = &ctx.upstream_uri {
            if let Some((path, query)) = uri.split_once('?') {
                let rest = strip_query_arg(query, name);
                ctx.upstream_uri = Some(if rest.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{rest}")
                });
            }
        }
        if let Some(kind) = self.body_kind(session) {
            if let Some(body) = request_body::read(session, ctx).await? {
                let current = ctx.body_replacement.clone().unwrap_or(body);
                if let Some(rest) = body_args::remove(&kind, &current, name) {
                    ctx.body_replacement = Some(rest);
                }
            }
        }
        Ok(())
    }

    /// Looks for the key: for each name, in the headers, the query string, then the
    /// body. Reads the body only when a name is found nowhere else.
    async fn find_key(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Result<(String, Found), Missing>, GatewayError> {
        let body_kind = self.body_kind(session);
        for name in &self.config.key_names {
            let req = session.req_header();
            if self.config.key_in_header {
                let values = Self::header_values(req, name);
                match values.as_slice() {
                    [] => {}
                    [one] => {
                        // A present header is the key, even when empty (as in Kong).
                        let key = String::from_utf8_lossy(one).trim().to_string();
                        if key.is_empty() {
                            return Ok(Err(Missing::None));
                        }
                        return Ok(Ok((key, Found::Header(name.clone()))));
                    }
                    _ => return Ok(Err(Missing::Duplicate)),
                }
            }
            if self.config.key_in_query {
                let values = Self::query_values(req.uri.query().unwrap_or(""), name);
                match values.as_slice() {
                    [] => {}
                    [one] if !one.is_empty() => {
                        return Ok(Ok((one.clone(), Found::Query(name.clone()))))
                    }
                    [_] => {}
                    _ => return Ok(Err(Missing::Duplicate)),
                }
            }
            if let Some(kind) = &body_kind {
                let Some(body) = request_body::read(session, ctx).await? else {
                    continue;
                };
                match body_args::lookup(kind, &body, name) {
                    Lookup::Missing => {}
                    Lookup::One(key) if key.is_empty() => return Ok(Err(Missing::None)),
                    Lookup::One(key) => return Ok(Ok((key, Found::Body(name.clone())))),
                    Lookup::Duplicate => return Ok(Err(Missing::Duplicate)),
                }
            }
        }
        Ok(Err(Missing::None))
    }

    fn refusal(&self, message: &str) -> GatewayError {
        GatewayError::Plugin {
            status: 401,
            message: message.to_string(),
            headers: vec![self.config.auth.www_authenticate("Key", None)],
        }
    }
}

/// Removes every `name=` argument from a raw query, keeping the others byte for byte.
fn strip_query_arg(query: &str, name: &str) -> String {
    body_args::strip_form_arg(query.as_bytes(), name).map_or_else(
        || query.to_string(),
        |rest| String::from_utf8_lossy(&rest).into_owned(),
    )
}

#[async_trait]
impl Plugin for KeyAuth {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        1250
    }

    async fn access(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        if self.config.auth.skip(session, ctx) {
            return Ok(Flow::Continue);
        }
        let found = self.find_key(session, ctx).await?;
        let (key, place) = match found {
            Ok(found) => found,
            Err(Missing::None) => {
                self.config
                    .auth
                    .fail(ctx, self.refusal("No API key found in request"))?;
                return Ok(Flow::Continue);
            }
            Err(Missing::Duplicate) => {
                self.config
                    .auth
                    .fail(ctx, self.refusal("Duplicate API key found"))?;
                return Ok(Flow::Continue);
            }
        };
        // Hidden as soon as it is found, valid or not: a mistyped key must not reach
        // the upstream either (it may still go on as the anonymous consumer).
        if self.config.hide_credentials {
            // As Kong: the name that carried the key is cleared from the headers, the
            // query and (with key_in_body) the body, wherever the key was found.
            self.hide(session, ctx, place.name()).await?;
        }
        let owner = ctx
            .runtime
            .as_ref()
            .and_then(|rt| rt.credentials.key_owner(&key));
        let Some(owner) = owner else {
            self.config.auth.fail(ctx, self.refusal("Unauthorized"))?;
            return Ok(Flow::Continue);
        };
        ctx.auth = Some(Authenticated {
            consumer: owner.consumer,
            credential: Some(owner.credential.to_string()),
            anonymous: false,
        });
        Ok(Flow::Continue)
    }

    fn upstream_request(&self, ctx: &RequestCtx, req: &mut RequestHeader) {
        for name in &ctx.hidden_headers {
            for k in header_spellings(&req.headers, name) {
                req.remove_header(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_query_arg_keeps_the_rest_byte_for_byte() {
        assert_eq!(
            strip_query_arg("a=%20x&apikey=k&b=1&apikey", "apikey"),
            "a=%20x&b=1"
        );
        assert_eq!(strip_query_arg("api%6Bey=k&z=%2F", "apikey"), "z=%2F");
        assert_eq!(strip_query_arg("apikey=k", "apikey"), "");
    }

    #[test]
    fn query_values_are_decoded_and_counted() {
        assert_eq!(
            KeyAuth::query_values("apikey=a%20b&x=1", "apikey"),
            vec!["a b"]
        );
        assert_eq!(
            KeyAuth::query_values("apikey=a&apikey=a", "apikey").len(),
            2
        );
        assert!(KeyAuth::query_values("apikeyx=a", "apikey").is_empty());
    }
}
