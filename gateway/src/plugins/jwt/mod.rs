//! `jwt` (priority 1450): signed JSON Web Tokens checked against the consumers'
//! `jwt_secrets` (Kong §4).
//!
//! # Kong's behaviour
//!
//! The token is read from the query arguments named in `uri_param_names` (default
//! `jwt`; repeated arguments all count), the cookies in `cookie_names`, and the
//! headers in `header_names` (default `authorization`; first occurrence, the token
//! after `Bearer`). Identical copies count once; two different tokens are refused.
//! The key claim (`key_claim_name`, default `iss`, looked up in the claims and then
//! the JOSE header) names the jwt secret; the secret pins the algorithm, so a token
//! whose header names another one, or `none`, is refused. Then the signature,
//! `claims_to_verify` (`exp`, `nbf`) and `maximum_expiration` are checked, in that
//! order, each failure with Kong's exact 401 body (plain JSON, no request id) and
//! `WWW-Authenticate: Bearer` (`Bearer error="invalid_token"` once a token was
//! found). On success the request goes on as the secret's consumer with
//! `X-Credential-Identifier` = the secret's `key`; the token is forwarded as is.
//! With `anonymous`, failures go on as that consumer instead (logical OR).
//! From Kong's code besides §4's table: `?jwt` without a value is an
//! `Unrecognizable token`, an undecodable signature is `Bad token; invalid
//! signature`, and claims that are not a JSON object `Bad token; invalid claims`.
//! The plugin's `secret_is_base64` decodes every HS* secret (Kong); a credential's
//! own `secret_is_base64` decodes just its secret.
//!
//! Algorithms: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 and EdDSA.
//! ES512 cannot be verified (ring has no P-521): credentials pinning it are
//! refused at load, and a token naming it never verifies. Secrets and public keys
//! are parsed once when the config is compiled ([`keys::SecretKeys`]), never per
//! request; a PEM that does not hold a usable public key for the credential's
//! algorithm is refused at load with its line.
//!
//! # Beyond Kong (config fields of this gateway)
//!
//! * `use_kid` (bool, default false; true when `jwks` is set): select the
//!   verification key by the token's `kid` header. The key claim still identifies
//!   the consumer and its pinned algorithm as in Kong; if the token has a `kid`,
//!   the key is then the first of: that consumer's jwt secret whose `key` or `id`
//!   equals the `kid` (its own algorithm must also match the token's), else the
//!   `jwks` key with that `kid` (its `alg`, when given, must match too). A `kid`
//!   found nowhere is refused: 401 `{"message":"No credentials found for given
//!   'kid'"}`. Tokens without a `kid` use the key-claim secret, as Kong does. This
//!   lets a consumer rotate keys: the old and new secrets live side by side and
//!   tokens name the one they were signed with.
//! * `jwks` (string): a JWKS document, as a file path or an `http(s)://` URL, whose
//!   public keys (RSA, EC P-256/P-384, Ed25519; see [`jwks`]) can verify tokens by
//!   `kid` for any consumer whose key-claim secret pins the token's algorithm. A
//!   file (a relative path is taken from the gateway's working directory) is read
//!   at load (an unreadable or keyless file is a config error) and re-read on
//!   refresh; a URL is fetched in the background, first when the plugin
//!   is built (on reload) or on the first request that needs it (at start-up).
//!   The last good set stays in use when a refresh fails. A request never waits
//!   for a fetch longer than `jwks_timeout`. JWKS keys can sign for every consumer
//!   whose key-claim secret pins their algorithm: set `issuers` to tie them to the
//!   identity provider's `iss`.
//! * `jwks_refresh_interval` (seconds, default 300, 1–86400): how old a set may
//!   get before a request triggers a background refresh. A `kid` missing from the
//!   set also triggers one (at most every 10 seconds), for key rotation.
//! * `jwks_timeout` (milliseconds, default 1000, 1–60000): longest a request waits
//!   for a fetch when its `kid` is not (yet) in the set.
//! * `issuers` / `audiences` (lists of strings): when given, after Kong's checks,
//!   `iss` must be one of `issuers` and `aud` (a string or an array) must name one
//!   of `audiences`; failures are 401 claim objects like Kong's, e.g.
//!   `{"iss":"not allowed"}`, `{"aud":"missing"}`,
//!   `{"aud":"must be a string or an array of strings"}`.
//! * `leeway_seconds` (default 0, 0–86400): clock-skew tolerance for `exp` and
//!   `nbf` (Kong has none: 0 keeps Kong's behaviour).
//!
//! Tokens are never logged (the access log leaves out the query string).

pub mod jwks;
pub mod keys;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use serde_json::Value;

use super::auth::{AuthConfig, AUTH_KEYS};
use super::{Flow, Plugin};
use crate::config::fields::{Errors, Fields};
use crate::config::yaml::Node;
use crate::consumers::Authenticated;
use crate::error::GatewayError;
use crate::proxy::ctx::RequestCtx;
use crate::state::Runtime;

pub use keys::{base64_lenient, Alg, SecretKeys, VerifyKey};
pub use token::{verify, Refusal, Registered};

/// Kong's name for the plugin.
pub const NAME: &str = "jwt";

/// Where the plugin takes JWKS keys from.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// The file or URL.
    pub source: jwks::Source,
    /// The set read at load (files only).
    pub initial: Option<Arc<jwks::KeySet>>,
    /// Refresh interval.
    pub refresh: Duration,
    /// Longest a request waits for a fetch.
    pub timeout: Duration,
}

/// Decoded plugin config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Query arguments holding the token (default `jwt`).
    pub uri_param_names: Vec<String>,
    /// Cookies holding the token (default none).
    pub cookie_names: Vec<String>,
    /// Headers holding `Bearer <token>` (default `authorization`).
    pub header_names: Vec<String>,
    /// Claim naming the jwt secret (default `iss`).
    pub key_claim_name: String,
    /// HS* secrets are stored base64-encoded (default false).
    pub secret_is_base64: bool,
    /// Registered claims to verify (default none).
    pub claims_to_verify: Vec<Registered>,
    /// Longest allowed `exp` distance in seconds; 0 = unchecked.
    pub maximum_expiration: i64,
    /// Select the key by `kid` (extension).
    pub use_kid: bool,
    /// JWKS keys (extension; boxed, as most configs have none).
    pub jwks: Option<Box<JwksConfig>>,
    /// Allowed `iss` values (extension; empty = unchecked).
    pub issuers: Vec<String>,
    /// Allowed `aud` values (extension; empty = unchecked).
    pub audiences: Vec<String>,
    /// Clock-skew tolerance for `exp`/`nbf` in seconds (extension).
    pub leeway_seconds: i64,
    /// anonymous, run_on_preflight, realm.
    pub auth: AuthConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            uri_param_names: vec!["jwt".to_string()],
            cookie_names: Vec::new(),
            header_names: vec!["authorization".to_string()],
            key_claim_name: "iss".to_string(),
            secret_is_base64: false,
            claims_to_verify: Vec::new(),
            maximum_expiration: 0,
            use_kid: false,
            jwks: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway_seconds: 0,
            auth: AuthConfig {
                run_on_preflight: true,
                ..AuthConfig::default()
            },
        }
    }
}

const KONG_KEYS: &[&str] = &[
    "uri_param_names",
    "cookie_names",
    "header_names",
    "key_claim_name",
    "secret_is_base64",
    "claims_to_verify",
    "maximum_expiration",
];

const EXTENSION_KEYS: &[&str] = &[
    "use_kid",
    "jwks",
    "jwks_refresh_interval",
    "jwks_timeout",
    "issuers",
    "audiences",
    "leeway_seconds",
];

/// Decodes `config` for this plugin, recording located errors.
///
/// Runs at config load. A `jwks` file is read and parsed here.
pub fn decode(node: Option<&Node>, path: &str, errs: &mut Errors) -> Option<Config> {
    let mut config = Config::default();
    let Some(node) = node else {
        return Some(config);
    };
    let allowed: Vec<&str> = KONG_KEYS
        .iter()
        .chain(EXTENSION_KEYS)
        .chain(AUTH_KEYS)
        .copied()
        .collect();
    let fields = Fields::open(node, path, &allowed, errs)?;
    let before = errs.list.len();
    if fields.has("uri_param_names") {
        config.uri_param_names = fields
            .str_list("uri_param_names", errs)
            .into_iter()
            .map(|(s, _, _)| s)
            .collect();
    }
    if fields.has("cookie_names") {
        config.cookie_names = fields
            .str_list("cookie_names", errs)
            .into_iter()
            .map(|(s, _, _)| s)
            .collect();
    }
    if fields.has("header_names") {
        config.header_names.clear();
        for (name, p, line) in fields.str_list("header_names", errs) {
            if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errs.push(
                    &p,
                    line,
                    "bad header name: must contain only letters, digits, '-' and '_'",
                );
            } else {
                config.header_names.push(name.to_ascii_lowercase());
            }
        }
    }
    if let Some(name) = fields.str("key_claim_name", errs) {
        if name.is_empty() {
            errs.push(
                &fields.path_of("key_claim_name"),
                fields.line_of("key_claim_name"),
                "length must be at least 1",
            );
        }
        config.key_claim_name = name;
    }
    config.secret_is_base64 = fields.bool("secret_is_base64", false, errs);
    for (claim, p, line) in fields.str_list("claims_to_verify", errs) {
        let c = match claim.as_str() {
            "exp" => Registered::Exp,
            "nbf" => Registered::Nbf,
            _ => {
                errs.push(&p, line, "expected one of: exp, nbf");
                continue;
            }
        };
        if !config.claims_to_verify.contains(&c) {
            config.claims_to_verify.push(c);
        }
    }
    config.maximum_expiration = fields.int("maximum_expiration", 0, 31_536_000, 0, errs);
    if config.maximum_expiration > 0 && !config.claims_to_verify.contains(&Registered::Exp) {
        errs.push(
            &fields.path_of("claims_to_verify"),
            fields.line_of("claims_to_verify"),
            "expected to contain: exp (required when maximum_expiration is set)",
        );
    }
    config.auth = AuthConfig::decode(&fields, errs);

    // Extensions.
    config.issuers = non_empty_list(&fields, "issuers", errs);
    config.audiences = non_empty_list(&fields, "audiences", errs);
    config.leeway_seconds = fields.int("leeway_seconds", 0, 86_400, 0, errs);
    if let Some(source) = fields.str("jwks", errs) {
        let (p, line) = (fields.path_of("jwks"), fields.line_of("jwks"));
        let refresh = fields.int("jwks_refresh_interval", 1, 86_400, 300, errs);
        let timeout = fields.int("jwks_timeout", 1, 60_000, 1000, errs);
        let source = jwks_source(&source, &p, line, errs);
        let initial = match &source {
            Some(jwks::Source::File(file)) => match std::fs::read(file) {
                Ok(body) => match jwks::KeySet::parse(&body) {
                    Ok(set) => Some(Arc::new(set)),
                    Err(e) => {
                        errs.push(&p, line, format!("{}: {e}", file.display()));
                        None
                    }
                },
                Err(e) => {
                    errs.push(&p, line, format!("cannot read {}: {e}", file.display()));
                    None
                }
            },
            _ => None,
        };
        config.jwks = source.map(|source| {
            Box::new(JwksConfig {
                source,
                initial,
                refresh: Duration::from_secs(refresh.unsigned_abs()),
                timeout: Duration::from_millis(timeout.unsigned_abs()),
            })
        });
        config.use_kid = fields.bool("use_kid", true, errs);
        if !config.use_kid {
            errs.push(
                &fields.path_of("use_kid"),
                fields.line_of("use_kid"),
                "must be true when jwks is set (JWKS keys are found by kid)",
            );
        }
    } else {
        config.use_kid = fields.bool("use_kid", false, errs);
        for k in ["jwks_refresh_interval", "jwks_timeout"] {
            if fields.has(k) {
                errs.push(
                    &fields.path_of(k),
                    fields.line_of(k),
                    "only allowed with jwks",
                );
            }
        }
    }
    (errs.list.len() == before).then_some(config)
}

fn non_empty_list(fields: &Fields<'_>, key: &str, errs: &mut Errors) -> Vec<String> {
    if !fields.has(key) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let before = errs.list.len();
    for (value, p, line) in fields.str_list(key, errs) {
        if value.is_empty() {
            errs.push(&p, line, "length must be at least 1");
        } else {
            out.push(value);
        }
    }
    if out.is_empty() && errs.list.len() == before {
        errs.push(
            &fields.path_of(key),
            fields.line_of(key),
            "length must be at least 1",
        );
    }
    out
}

fn jwks_source(value: &str, path: &str, line: usize, errs: &mut Errors) -> Option<jwks::Source> {
    if value.starts_with("http://") || value.starts_with("https://") {
        match reqwest::Url::parse(value) {
            Ok(url) if url.host_str().is_some() => Some(jwks::Source::Url(value.to_string())),
            _ => {
                errs.push(path, line, "invalid URL");
                None
            }
        }
    } else if value.contains("://") {
        errs.push(
            path,
            line,
            "expected a file path or an http:// or https:// URL",
        );
        None
    } else if value.is_empty() {
        errs.push(path, line, "length must be at least 1");
        None
    } else {
        Some(jwks::Source::File(value.into()))
    }
}

/// The running plugin.
pub struct Jwt {
    config: Config,
    jwks: Option<Arc<jwks::JwksCache>>,
}

/// What was found in the request.
enum Found {
    None,
    One(String),
    /// Only a valueless query argument (`?jwt`).
    Flag,
    Multiple,
}

impl Jwt {
    /// Builds the plugin from its config; runs when a config is compiled. A JWKS
    /// URL starts being fetched here when there is a runtime to fetch on.
    pub fn new(config: Config) -> Self {
        let jwks = config.jwks.as_ref().map(|j| {
            let cache =
                jwks::JwksCache::new(j.source.clone(), j.refresh, j.timeout, j.initial.clone());
            cache.prefetch();
            cache
        });
        Jwt { config, jwks }
    }

    /// Collects the token candidates (Kong's `retrieve_tokens`).
    fn find_token(&self, req: &RequestHeader) -> Found {
        // `None` stands for a query argument without a value.
        let mut tokens: Vec<Option<String>> = Vec::new();
        let mut add = |t: Option<String>| {
            if !tokens.contains(&t) {
                tokens.push(t);
            }
        };
        if !self.config.uri_param_names.is_empty() {
            let query = req.uri.query().unwrap_or("");
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = match pair.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (pair, None),
                };
                let k = crate::plugins::auth::decode_query_component(k);
                if !self.config.uri_param_names.contains(&k) {
                    continue;
                }
                match v.map(crate::plugins::auth::decode_query_component) {
                    Some(v) if v.is_empty() => {}
                    v => add(v),
                }
            }
        }
        for name in &self.config.cookie_names {
            if let Some(v) = cookie(req, name).filter(|v| !v.is_empty()) {
                add(Some(v));
            }
        }
        for name in &self.config.header_names {
            let want = crate::proxy::forwarding::fold_header_name(name);
            let first = req
                .headers
                .iter()
                .find(|(k, _)| crate::proxy::forwarding::fold_header_name(k.as_str()) == want)
                .map(|(_, v)| v.as_bytes());
            if let Some(t) = first.and_then(bearer) {
                add(Some(t));
            }
        }
        match tokens.as_slice() {
            [] => Found::None,
            [Some(t)] => Found::One(t.clone()),
            [None] => Found::Flag,
            _ => Found::Multiple,
        }
    }

    /// Authenticates `token`: every step of Kong's table in order, then the
    /// extensions. Returns the identity, or the refusal.
    async fn check(&self, raw: &str, rt: &Runtime) -> Result<Authenticated, Refusal> {
        let token = token::parse(raw)?;
        let key_value = match token.key_claim(&self.config.key_claim_name) {
            None => return Err(Refusal::NoKeyClaim),
            Some(Value::String(s)) if s.is_empty() => return Err(Refusal::InvalidKeyClaim),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(Refusal::NoCredentials),
        };
        let (consumer, secret_idx) = rt
            .credentials
            .jwt_secret(&key_value)
            .ok_or(Refusal::NoCredentials)?;
        let secrets = &rt
            .config
            .consumers
            .get(consumer)
            .ok_or(Refusal::NoCredentials)?
            .jwt_secrets;
        let secret = secrets.get(secret_idx).ok_or(Refusal::NoCredentials)?;
        let compiled = rt
            .jwt_keys
            .get(consumer, secret_idx)
            .ok_or(Refusal::InvalidKey)?;
        if token.alg.name() != secret.algorithm || compiled.alg != token.alg {
            return Err(Refusal::InvalidAlgorithm);
        }
        let kid = if self.config.use_kid {
            token.kid()
        } else {
            None
        };
        let verified = match kid {
            None => {
                let key = compiled
                    .key_for(self.config.secret_is_base64)
                    .ok_or(Refusal::InvalidKey)?;
                token.verify_signature(key)
            }
            Some(kid) => {
                let kid = kid.as_str().ok_or(Refusal::UnknownKid)?;
                let own = secrets
                    .iter()
                    .position(|s| s.key == kid || s.id.to_string() == kid);
                if let Some(j) = own {
                    let chosen = rt.jwt_keys.get(consumer, j).ok_or(Refusal::InvalidKey)?;
                    if chosen.alg != token.alg {
                        return Err(Refusal::InvalidAlgorithm);
                    }
                    let key = chosen
                        .key_for(self.config.secret_is_base64)
                        .ok_or(Refusal::InvalidKey)?;
                    token.verify_signature(key)
                } else {
                    let cache = self.jwks.as_ref().ok_or(Refusal::UnknownKid)?;
                    let found = cache.key(kid).await.ok_or(Refusal::UnknownKid)?;
                    if found.alg.is_some_and(|a| a != token.alg)
                        || found.key.family() != token.alg.family()
                    {
                        return Err(Refusal::InvalidAlgorithm);
                    }
                    token.verify_signature(&found.key)
                }
            }
        };
        if !verified {
            return Err(Refusal::InvalidSignature);
        }
        let now = now();
        let errors = token::check_registered(
            &token.claims,
            &self.config.claims_to_verify,
            now,
            self.config.leeway_seconds,
        );
        if !errors.is_empty() {
            return Err(Refusal::Claims(errors));
        }
        if let Some(errors) =
            token::check_maximum_expiration(&token.claims, self.config.maximum_expiration, now)
        {
            return Err(Refusal::Claims(errors));
        }
        let errors =
            token::check_allow_lists(&token.claims, &self.config.issuers, &self.config.audiences);
        if !errors.is_empty() {
            return Err(Refusal::Claims(errors));
        }
        Ok(Authenticated {
            consumer,
            credential: Some(secret.key.clone()),
            anonymous: false,
        })
    }

    fn refusal(&self, refusal: &Refusal) -> GatewayError {
        let error = (*refusal != Refusal::NoToken).then_some("invalid_token");
        GatewayError::PluginJson {
            status: 401,
            body: refusal.body(&self.config.key_claim_name),
            headers: vec![self.config.auth.www_authenticate("Bearer", error)],
        }
    }
}

/// Seconds since the epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The token in a `Bearer` header value: Kong's unanchored
/// `\s*[Bb]earer\s+(.+)`, first match.
fn bearer(value: &[u8]) -> Option<String> {
    let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut from = 0;
    while let Some(pos) = value[from..]
        .windows(6)
        .position(|w| (w[0] == b'B' || w[0] == b'b') && &w[1..] == b"earer")
    {
        let start = from + pos + 6;
        let rest = &value[start..];
        let run = rest.iter().take_while(|b| ws(**b)).count();
        if run > 0 {
            // `(.+)` stops at a newline; when nothing follows the spaces, the
            // regex gives the last space back to `(.+)`.
            let tail = &rest[run..];
            let line_end = tail.iter().position(|b| *b == b'\n').unwrap_or(tail.len());
            if line_end > 0 {
                return Some(String::from_utf8_lossy(&tail[..line_end]).into_owned());
            }
            if run > 1 && rest[run - 1] != b'\n' {
                let end = run + line_end;
                return Some(String::from_utf8_lossy(&rest[run - 1..end]).into_owned());
            }
        }
        from = from + pos + 1;
    }
    None
}

/// The first non-repeated value of cookie `name` (as nginx's `$cookie_<name>`:
/// names compare case-insensitively, values are taken as sent).
fn cookie(req: &RequestHeader, name: &str) -> Option<String> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            k.trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| String::from_utf8_lossy(v.trim_ascii()).into_owned())
        })
}

#[async_trait]
impl Plugin for Jwt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        1450
    }

    async fn access(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        if self.config.auth.skip(session, ctx) {
            return Ok(Flow::Continue);
        }
        let outcome = match self.find_token(session.req_header()) {
            Found::None => Err(Refusal::NoToken),
            Found::Multiple => Err(Refusal::Multiple),
            Found::Flag => Err(Refusal::Unrecognizable),
            Found::One(token) => match ctx.runtime.clone() {
                Some(rt) => self.check(&token, &rt).await,
                None => return Err(GatewayError::Internal),
            },
        };
        match outcome {
            Ok(auth) => ctx.auth = Some(auth),
            Err(refusal) => self.config.auth.fail(ctx, self.refusal(&refusal))?,
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    fn decode_yaml(text: &str) -> (Option<Config>, Vec<String>) {
        let node = yaml::parse(text).expect("yaml");
        let mut errs = Errors::default();
        let config = decode(Some(&node), "config", &mut errs);
        (config, errs.list.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn defaults_are_kongs() {
        let c = decode(None, "config", &mut Errors::default()).expect("defaults");
        assert_eq!(c.uri_param_names, vec!["jwt"]);
        assert!(c.cookie_names.is_empty());
        assert_eq!(c.header_names, vec!["authorization"]);
        assert_eq!(c.key_claim_name, "iss");
        assert!(!c.secret_is_base64 && !c.use_kid);
        assert!(c.claims_to_verify.is_empty());
        assert_eq!((c.maximum_expiration, c.leeway_seconds), (0, 0));
        assert!(c.auth.run_on_preflight);
    }

    #[test]
    fn config_errors_are_located() {
        let (c, errs) = decode_yaml("claims_to_verify: [exp, iat]\nmaximum_expiration: 40000000\n");
        assert!(c.is_none());
        assert!(
            errs.iter()
                .any(|e| e.contains("config.claims_to_verify[1]: expected one of: exp, nbf")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("value should be between 0 and 31536000")),
            "{errs:?}"
        );
        let (_, errs) = decode_yaml("maximum_expiration: 60\n");
        assert!(
            errs.iter()
                .any(|e| e.contains("config.claims_to_verify: expected to contain: exp")),
            "{errs:?}"
        );
        let (c, errs) = decode_yaml("maximum_expiration: 60\nclaims_to_verify: [exp]\n");
        assert!(c.is_some(), "{errs:?}");
        let (_, errs) = decode_yaml("jwks: /nonexistent/jwks.json\n");
        assert!(
            errs.iter().any(|e| e.contains("config.jwks: cannot read")),
            "{errs:?}"
        );
        let (_, errs) = decode_yaml("jwks: ftp://x/y\n");
        assert!(errs.iter().any(|e| e.contains("config.jwks")), "{errs:?}");
        let (c, _) = decode_yaml("jwks: https://idp.example/jwks.json\n");
        assert!(c.is_some_and(|c| c.use_kid));
        let (_, errs) = decode_yaml("jwks: https://idp.example/jwks.json\nuse_kid: false\n");
        assert!(
            errs.iter().any(|e| e.contains("config.use_kid")),
            "{errs:?}"
        );
        let (_, errs) = decode_yaml("jwks_timeout: 5\n");
        assert!(
            errs.iter().any(|e| e.contains("only allowed with jwks")),
            "{errs:?}"
        );
        let (_, errs) = decode_yaml("issuers: []\nheader_names: ['bad header']\n");
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn bearer_follows_kongs_regex() {
        assert_eq!(bearer(b"Bearer abc").as_deref(), Some("abc"));
        assert_eq!(bearer(b"bearer   abc def").as_deref(), Some("abc def"));
        assert_eq!(bearer(b"Basic x, Bearer tok").as_deref(), Some("tok"));
        assert_eq!(bearer(b"BEARER abc"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer  ").as_deref(), Some(" "));
        assert_eq!(bearer(b"xBearer t").as_deref(), Some("t"));
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", uri.as_bytes(), None).expect("request");
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).expect("header");
        }
        req
    }

    #[test]
    fn tokens_are_collected_and_deduplicated() {
        let jwt = Jwt::new(Config {
            cookie_names: vec!["session".into()],
            ..Config::default()
        });
        let found = |uri: &str, h: &[(&str, &str)]| match jwt.find_token(&request(uri, h)) {
            Found::None => "none".to_string(),
            Found::One(t) => t,
            Found::Flag => "flag".to_string(),
            Found::Multiple => "multiple".to_string(),
        };
        assert_eq!(found("/", &[]), "none");
        assert_eq!(found("/?jwt=", &[]), "none");
        assert_eq!(found("/?jwt=a%2Eb", &[]), "a.b");
        assert_eq!(
            found("/?jwt=a&jwt=a", &[("authorization", "Bearer a")]),
            "a"
        );
        assert_eq!(found("/?jwt=a&jwt=b", &[]), "multiple");
        assert_eq!(
            found("/?jwt=a", &[("authorization", "Bearer b")]),
            "multiple"
        );
        assert_eq!(found("/?jwt", &[]), "flag");
        assert_eq!(found("/?jwt&jwt=a", &[]), "multiple");
        assert_eq!(found("/", &[("cookie", "x=1; Session=c")]), "c");
        assert_eq!(
            found(
                "/",
                &[("authorization", "Bearer a"), ("authorization", "Bearer b")]
            ),
            "a"
        );
        assert_eq!(found("/", &[("authorization", "Basic a")]), "none");
    }
}
