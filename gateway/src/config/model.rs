//! The validated, internal model of a gateway configuration.
//!
//! Nothing here mirrors the YAML file's schema: references are resolved to indices,
//! durations are `Duration`s, regexes are compiled and defaults are filled in. The
//! router, the proxy and the plugins only ever see this model.

use std::time::Duration;

use regex::Regex;
use uuid::Uuid;

/// A fully validated configuration, ready to be compiled into a router.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Services, in file order.
    pub services: Vec<Service>,
    /// Routes from every place they may be declared, in file order.
    pub routes: Vec<Route>,
    /// Plugin instances with their scope.
    pub plugins: Vec<PluginInstance>,
    /// Consumers with their credentials.
    pub consumers: Vec<Consumer>,
    /// TLS certificates with the server names they answer for.
    pub certificates: Vec<Certificate>,
    /// Hex SHA-256 of the file as loaded; shown by the admin `/status` endpoint.
    pub hash: String,
}

/// Upstream scheme of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS.
    Https,
}

impl UpstreamScheme {
    /// The scheme's default port (80 or 443).
    pub fn default_port(self) -> u16 {
        match self {
            UpstreamScheme::Http => 80,
            UpstreamScheme::Https => 443,
        }
    }
}

/// A Kong service: where matched requests go.
#[derive(Debug, Clone)]
pub struct Service {
    /// Given or derived id (UUIDv5 of the name, as Kong derives it).
    pub id: Uuid,
    /// Optional unique name.
    pub name: Option<String>,
    /// `http` or `https`.
    pub protocol: UpstreamScheme,
    /// Host name or IP address of the upstream.
    pub host: String,
    /// Upstream port.
    pub port: u16,
    /// Base path on the upstream (`None` means `/`).
    pub path: Option<String>,
    /// Extra attempts after a connection failure or timeout.
    pub retries: u32,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed between two successive writes to the upstream.
    pub write_timeout: Duration,
    /// Time allowed between two successive reads from the upstream.
    pub read_timeout: Duration,
    /// Disabled services are left out of the router.
    pub enabled: bool,
    /// Verify the upstream certificate (https only). Defaults to false, as in Kong.
    pub tls_verify: bool,
}

/// How a route path is matched.
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// A plain prefix test on the normalised path (no segment boundary).
    Prefix(String),
    /// A regex anchored at the start of the normalised path.
    Regex {
        /// The pattern as written, without its `~`.
        source: String,
        /// The pattern compiled as `^(?:source)`.
        regex: Regex,
    },
}

/// A host entry of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// What the host name must be.
    pub name: HostName,
    /// A port the request must have arrived for, when the entry has one.
    pub port: Option<u16>,
}

/// The name part of a route host entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// `api.example.com`: exact equality.
    Exact(String),
    /// `*.example.com`: stored as `.example.com`, a suffix test.
    WildcardPrefix(String),
    /// `example.*`: stored as `example.`, a prefix test.
    WildcardSuffix(String),
}

/// One accepted value of a header condition.
#[derive(Debug, Clone)]
pub enum HeaderValue {
    /// Compared case-insensitively; stored lower-cased.
    Exact(String),
    /// `~*regex`, compiled case-insensitive.
    Regex(Regex),
}

/// A header condition: the named header must carry one of the values.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    /// Header name, lower-cased.
    pub name: String,
    /// Any one of these matches.
    pub values: Vec<HeaderValue>,
}

/// Which client protocols a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    /// Accepts plain HTTP.
    pub http: bool,
    /// Accepts HTTPS.
    pub https: bool,
}

/// A Kong route: request conditions and how the upstream path is built.
#[derive(Debug, Clone)]
pub struct Route {
    /// Given or derived id.
    pub id: Uuid,
    /// Optional unique name.
    pub name: Option<String>,
    /// Index into [`Config::services`]; `None` means a serviceless route (503).
    pub service: Option<usize>,
    /// Client protocols the route accepts.
    pub protocols: Protocols,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    /// Hosts; empty means any.
    pub hosts: Vec<HostPattern>,
    /// Paths; empty means any.
    pub paths: Vec<PathPattern>,
    /// Header conditions; all must match.
    pub headers: Vec<HeaderCondition>,
    /// Remove the matched prefix before forwarding.
    pub strip_path: bool,
    /// Send the client's Host header upstream instead of the service host.
    pub preserve_host: bool,
    /// Order among regex routes of equal rank (higher first).
    pub regex_priority: i64,
    /// Answer for plain HTTP on an https-only route: 426, 301, 302, 307 or 308.
    pub https_redirect_status_code: u16,
}

/// Where a plugin instance applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PluginScope {
    /// Index of the service it is bound to.
    pub service: Option<usize>,
    /// Index of the route it is bound to.
    pub route: Option<usize>,
    /// Index of the consumer it is bound to.
    pub consumer: Option<usize>,
}

/// A configured plugin instance.
#[derive(Debug, Clone)]
pub struct PluginInstance {
    /// Given or random id.
    pub id: Uuid,
    /// Plugin name, e.g. `correlation-id`.
    pub name: String,
    /// Scope of the instance.
    pub scope: PluginScope,
    /// Disabled instances are validated but never run.
    pub enabled: bool,
    /// The plugin's own validated config, already decoded by the plugin.
    pub config: crate::plugins::PluginConfig,
}

/// A consumer and its credentials.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// Given or derived id.
    pub id: Uuid,
    /// Unique user name.
    pub username: Option<String>,
    /// Unique custom id.
    pub custom_id: Option<String>,
    /// key-auth credentials.
    pub keyauth_credentials: Vec<KeyAuthCredential>,
    /// jwt credentials.
    pub jwt_secrets: Vec<JwtSecret>,
    /// ACL group memberships.
    pub acls: Vec<String>,
}

/// An API key belonging to a consumer.
#[derive(Clone)]
pub struct KeyAuthCredential {
    /// Given or random id.
    pub id: Uuid,
    /// The key itself. Never printed.
    pub key: String,
}

impl std::fmt::Debug for KeyAuthCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAuthCredential")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A JWT verification key belonging to a consumer.
#[derive(Clone)]
pub struct JwtSecret {
    /// Given or random id.
    pub id: Uuid,
    /// Value matched against the token's key claim (`iss` by default).
    pub key: String,
    /// Pinned algorithm, e.g. `HS256`.
    pub algorithm: String,
    /// HMAC secret (HS*). Never printed.
    pub secret: Option<String>,
    /// PEM public key (RS*, PS*, ES*, EdDSA).
    pub rsa_public_key: Option<String>,
    /// The HMAC secret is base64-encoded.
    pub secret_is_base64: bool,
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSecret")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A certificate and key (PEM) and the server names it is chosen for.
#[derive(Clone)]
pub struct Certificate {
    /// Given or random id.
    pub id: Uuid,
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key. Never printed.
    pub key: String,
    /// Exact (`api.example.com`) or wildcard (`*.example.com`, `example.*`) names.
    pub snis: Vec<String>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id)
            .field("snis", &self.snis)
            .field("key", &"<redacted>")
            .finish()
    }
}
