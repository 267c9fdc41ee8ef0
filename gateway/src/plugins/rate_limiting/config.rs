//! The `rate-limiting` plugin's config (Kong §5.1), decoded and checked at load time.

use crate::config::fields::{Errors, Fields};
use crate::config::yaml::{Node, Value};

use super::windows::Period;

/// What requests are counted together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitBy {
    /// The authenticated consumer, else the credential, else the client IP.
    Consumer,
    /// The credential, else the client IP.
    Credential,
    /// The client IP.
    Ip,
    /// The route's service, else the client IP.
    Service,
    /// The value of a request header, else the client IP.
    Header(String),
    /// The request path when it equals this one, else the client IP.
    Path(String),
}

/// Where the counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// In this gateway process.
    Local,
    /// In Redis, shared by every gateway instance.
    Redis(RedisSettings),
}

/// How usage within a window is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowType {
    /// Kong's calendar-aligned windows.
    Fixed,
    /// The previous window counts in proportion to how much of it still overlaps the
    /// last full window length.
    Sliding,
}

/// How to reach Redis. Two plugin instances with equal settings share a connection.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisSettings {
    /// Host name or address.
    pub host: String,
    /// Port (default 6379).
    pub port: u16,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (never logged).
    pub password: Option<String>,
    /// Database number (default 0).
    pub database: i64,
    /// Connect with TLS.
    pub ssl: bool,
    /// Verify the server certificate when `ssl` is on.
    pub ssl_verify: bool,
    /// Connect, send and read timeout in milliseconds (default 2000).
    pub timeout_ms: u64,
}

impl std::fmt::Debug for RedisSettings {
    /// Everything but the password, which is shown as set or not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("ssl", &self.ssl)
            .field("ssl_verify", &self.ssl_verify)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl RedisSettings {
    /// `host:port/db`, for log lines (no credentials).
    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }
}

/// Decoded plugin config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Limits per period, shortest period first.
    pub limits: Vec<(Period, u64)>,
    /// What is counted together.
    pub limit_by: LimitBy,
    /// Where counters live.
    pub policy: Policy,
    /// Fixed or sliding windows.
    pub window_type: WindowType,
    /// Let requests through (counting locally) when Redis fails.
    pub fault_tolerant: bool,
    /// Send no rate-limit headers.
    pub hide_client_headers: bool,
    /// Status of a refusal (default 429).
    pub error_code: u16,
    /// Message of a refusal.
    pub error_message: String,
}

/// Fields of the `redis` record (Kong's names).
pub const REDIS_KEYS: &[&str] = &[
    "host",
    "port",
    "username",
    "password",
    "database",
    "ssl",
    "ssl_verify",
    "server_name",
    "timeout",
    "connect_timeout",
    "send_timeout",
    "read_timeout",
    "keepalive_pool_size",
    "keepalive_backlog",
];

/// Decodes `config` for this plugin, recording located errors.
pub fn decode(node: Option<&Node>, path: &str, errs: &mut Errors) -> Option<Config> {
    let Some(node) = node else {
        errs.push(
            path,
            0,
            "at least one of these fields must be non-empty: 'config.second', 'config.minute', \
             'config.hour', 'config.day', 'config.month', 'config.year'",
        );
        return None;
    };
    let mut allowed: Vec<String> = [
        "second",
        "minute",
        "hour",
        "day",
        "month",
        "year",
        "limit_by",
        "header_name",
        "path",
        "policy",
        "fault_tolerant",
        "hide_client_headers",
        "error_code",
        "error_message",
        "sync_rate",
        "window_type",
        "redis",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    allowed.extend(REDIS_KEYS.iter().map(|k| format!("redis_{k}")));
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let fields = Fields::open(node, path, &allowed, errs)?;
    let before = errs.list.len();

    let mut limits = Vec::new();
    for period in Period::ALL {
        let name = period.name();
        let Some(n) = fields.node(name) else {
            continue;
        };
        let value = match n.value {
            Value::Int(i) if i > 0 => Some(i as u64),
            Value::Float(f) if f > 0.0 && f.fract() == 0.0 && f < 1e15 => Some(f as u64),
            Value::Float(f) if f > 0.0 => {
                errs.push(
                    &fields.path_of(name),
                    n.line,
                    "must be a whole number of requests, at most 10^15",
                );
                None
            }
            Value::Int(_) | Value::Float(_) => {
                errs.push(
                    &fields.path_of(name),
                    n.line,
                    "value must be greater than 0",
                );
                None
            }
            _ => {
                errs.push(
                    &fields.path_of(name),
                    n.line,
                    format!("expected a number, got {}", n.type_name()),
                );
                None
            }
        };
        if let Some(v) = value {
            limits.push((period, v));
        }
    }
    if limits.is_empty() && errs.list.len() == before {
        errs.push(
            path,
            fields.line_of("second"),
            "at least one of these fields must be non-empty: 'config.second', 'config.minute', \
             'config.hour', 'config.day', 'config.month', 'config.year'",
        );
    }
    // Kong: a longer period may not allow fewer requests than a shorter one.
    for pair in limits.windows(2) {
        let ((short, s), (long, l)) = (pair[0], pair[1]);
        if l < s {
            errs.push(
                &fields.path_of(long.name()),
                fields.line_of(long.name()),
                format!(
                    "The limit for {}({l}.0) cannot be lower than the limit for {}({s}.0)",
                    long.name(),
                    short.name()
                ),
            );
        }
    }

    let limit_by = match fields.str("limit_by", errs).as_deref() {
        None | Some("consumer") => LimitBy::Consumer,
        Some("credential") => LimitBy::Credential,
        Some("ip") => LimitBy::Ip,
        Some("service") => LimitBy::Service,
        Some("header") => match fields.str("header_name", errs) {
            Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                LimitBy::Header(h.to_ascii_lowercase())
            }
            Some(_) => {
                errs.push(
                    &fields.path_of("header_name"),
                    fields.line_of("header_name"),
                    "bad header name",
                );
                LimitBy::Ip
            }
            None => {
                errs.push(
                    &fields.path_of("header_name"),
                    fields.line_of("limit_by"),
                    "required field missing (limit_by is 'header')",
                );
                LimitBy::Ip
            }
        },
        Some("path") => match fields.str("path", errs) {
            Some(p) if p.starts_with('/') => LimitBy::Path(p),
            Some(_) => {
                errs.push(
                    &fields.path_of("path"),
                    fields.line_of("path"),
                    "should start with: /",
                );
                LimitBy::Ip
            }
            None => {
                errs.push(
                    &fields.path_of("path"),
                    fields.line_of("limit_by"),
                    "required field missing (limit_by is 'path')",
                );
                LimitBy::Ip
            }
        },
        Some(other) => {
            errs.push(
                &fields.path_of("limit_by"),
                fields.line_of("limit_by"),
                format!(
                    "expected one of: consumer, credential, ip, service, header, path (got '{other}')"
                ),
            );
            LimitBy::Consumer
        }
    };

    let window_type = match fields.str("window_type", errs).as_deref() {
        None | Some("fixed") => WindowType::Fixed,
        Some("sliding") => WindowType::Sliding,
        Some(other) => {
            errs.push(
                &fields.path_of("window_type"),
                fields.line_of("window_type"),
                format!("expected one of: fixed, sliding (got '{other}')"),
            );
            WindowType::Fixed
        }
    };

    let policy_name = fields.str("policy", errs);
    let policy = match policy_name.as_deref() {
        None | Some("local") => Policy::Local,
        Some("redis") => match redis_settings(&fields, errs, "policy") {
            Some(s) => Policy::Redis(s),
            None => Policy::Local,
        },
        Some("cluster") => {
            errs.push(
                &fields.path_of("policy"),
                fields.line_of("policy"),
                "policy 'cluster' keeps counters in Kong's database, which a declarative \
                 (DB-less) gateway does not have; Kong refuses it in DB-less mode too. Use \
                 'redis' to share limits between gateway instances, or 'local'",
            );
            Policy::Local
        }
        Some(other) => {
            errs.push(
                &fields.path_of("policy"),
                fields.line_of("policy"),
                format!("expected one of: local, cluster, redis (got '{other}')"),
            );
            Policy::Local
        }
    };
    if fields.has("sync_rate") {
        let node = fields.node("sync_rate");
        let off = matches!(node.map(|n| &n.value), Some(Value::Int(-1)))
            || matches!(node.map(|n| &n.value), Some(Value::Float(f)) if *f == -1.0);
        if !off {
            let message = if matches!(policy, Policy::Redis(_)) {
                "only -1 is supported: every request is counted in Redis in one atomic \
                 round trip, so limits are exact across instances"
            } else {
                "sync_rate can only be used with the redis policy"
            };
            errs.push(
                &fields.path_of("sync_rate"),
                fields.line_of("sync_rate"),
                message,
            );
        }
    }

    let fault_tolerant = fields.bool("fault_tolerant", true, errs);
    let hide_client_headers = fields.bool("hide_client_headers", false, errs);
    // Below 200 there is no final response to carry the message, and 204/304 carry
    // no body at all.
    let error_code = fields.int("error_code", 200, 599, 429, errs) as u16;
    if matches!(error_code, 204 | 304) {
        errs.push(
            &fields.path_of("error_code"),
            fields.line_of("error_code"),
            "a refusal needs a status that carries a body (not 204 or 304)",
        );
    }
    let error_message = fields
        .str("error_message", errs)
        .unwrap_or_else(|| "API rate limit exceeded".to_string());

    (errs.list.len() == before).then_some(Config {
        limits,
        limit_by,
        policy,
        window_type,
        fault_tolerant,
        hide_client_headers,
        error_code,
        error_message,
    })
}

/// Reads the `redis` record, falling back to Kong's older flat `redis_*` fields (a
/// plugin that has none simply does not allow them). `why` names the setting that
/// asked for Redis, for the "host missing" error (`policy`, `strategy`).
pub fn redis_settings(fields: &Fields<'_>, errs: &mut Errors, why: &str) -> Option<RedisSettings> {
    let nested = match fields.node("redis") {
        Some(node) => Some(Fields::open(
            node,
            &fields.path_of("redis"),
            REDIS_KEYS,
            errs,
        )?),
        None => None,
    };
    // A nested value wins; the flat alias is read when the nested one is absent.
    let str_of = |key: &str, errs: &mut Errors| -> Option<String> {
        nested
            .as_ref()
            .and_then(|n| n.str(key, errs))
            .or_else(|| fields.str(&format!("redis_{key}"), errs))
    };
    let has = |key: &str| {
        nested.as_ref().is_some_and(|n| n.has(key)) || fields.has(&format!("redis_{key}"))
    };
    let int_of = |key: &str, min: i64, max: i64, default: i64, errs: &mut Errors| -> i64 {
        match &nested {
            Some(n) if n.has(key) => n.int(key, min, max, default, errs),
            _ => fields.int(&format!("redis_{key}"), min, max, default, errs),
        }
    };
    let bool_of = |key: &str, errs: &mut Errors| -> bool {
        match &nested {
            Some(n) if n.has(key) => n.bool(key, false, errs),
            _ => fields.bool(&format!("redis_{key}"), false, errs),
        }
    };
    let host = str_of("host", errs);
    let port = int_of("port", 1, 65535, 6379, errs) as u16;
    let username = str_of("username", errs).filter(|s| !s.is_empty());
    let password = str_of("password", errs).filter(|s| !s.is_empty());
    let database = int_of("database", 0, 1 << 20, 0, errs);
    let ssl = bool_of("ssl", errs);
    let ssl_verify = bool_of("ssl_verify", errs);
    let mut timeout_ms = int_of("timeout", 1, 3_600_000, 2000, errs) as u64;
    // Kong 3.x's split timeouts: the longest one bounds a round trip here.
    for key in ["connect_timeout", "send_timeout", "read_timeout"] {
        if has(key) {
            timeout_ms = timeout_ms.max(int_of(key, 1, 3_600_000, 2000, errs) as u64);
        }
    }
    if has("server_name") {
        // Only the host name itself is verified; say so instead of ignoring it.
        let name = str_of("server_name", errs);
        if name.is_some() && name != host {
            let at = nested
                .as_ref()
                .filter(|n| n.has("server_name"))
                .map(|n| (n.path_of("server_name"), n.line_of("server_name")))
                .unwrap_or_else(|| {
                    (
                        fields.path_of("redis_server_name"),
                        fields.line_of("redis_server_name"),
                    )
                });
            errs.push(
                &at.0,
                at.1,
                "a TLS server name different from the host is not supported; connect by that \
                 name instead",
            );
        }
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        let (p, line) = match &nested {
            Some(n) => (n.path_of("host"), n.line_of("host")),
            None => (fields.path_of("redis.host"), fields.line_of(why)),
        };
        errs.push(
            &p,
            line,
            format!("required field missing ({why} is 'redis')"),
        );
        return None;
    };
    Some(RedisSettings {
        host,
        port,
        username,
        password,
        database,
        ssl,
        ssl_verify,
        timeout_ms,
    })
}
