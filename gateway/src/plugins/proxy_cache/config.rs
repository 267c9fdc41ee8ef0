//! The `proxy-cache` plugin's config (Kong §6.1), decoded and checked at load time,
//! plus this gateway's additions (`content_type_parameters`, `stale_if_error`,
//! `max_body_size`, the `redis` strategy).

use crate::config::fields::{Errors, Fields};
use crate::config::yaml::{Node, Value};
use crate::plugins::rate_limiting::config::{redis_settings, RedisSettings};

/// Kong's plugin name.
pub const NAME: &str = "proxy-cache";

/// How the parameters of a response `Content-Type` are compared with a configured
/// entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamMatch {
    /// Kong: the parameters must be identical in number and value.
    Exact,
    /// A configured entry without parameters matches any parameters; one with
    /// parameters still needs them identical.
    Ignore,
}

/// Where entries are kept.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// In this gateway process.
    Memory,
    /// In Redis, shared by every gateway instance.
    Redis(RedisSettings),
}

/// Which cache headers are added to responses.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHeaders {
    /// `Age` on hits.
    pub age: bool,
    /// `X-Cache-Status`.
    pub x_cache_status: bool,
    /// `X-Cache-Key`.
    pub x_cache_key: bool,
}

/// Decoded plugin config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Upstream statuses that may be stored (default 200, 301, 404).
    pub response_code: Vec<u16>,
    /// Request methods that may be answered from the cache (default GET, HEAD).
    pub request_method: Vec<http::Method>,
    /// Content types that may be stored, as configured.
    pub content_type: Vec<String>,
    /// How `Content-Type` parameters are compared (default [`ParamMatch::Exact`]).
    pub content_type_parameters: ParamMatch,
    /// Freshness in seconds when Cache-Control is not honoured (default 300).
    pub cache_ttl: u64,
    /// How long entries are kept, in seconds, when longer than their freshness.
    pub storage_ttl: Option<u64>,
    /// Honour request and response Cache-Control (default false).
    pub cache_control: bool,
    /// Lower-case the path in the key (default false).
    pub ignore_uri_case: bool,
    /// Query arguments in the key; `None` = all of them, `Some([])` = none.
    pub vary_query_params: Option<Vec<String>>,
    /// Request headers in the key, lower-case; `None` = none.
    pub vary_headers: Option<Vec<String>>,
    /// Which cache headers are sent.
    pub response_headers: ResponseHeaders,
    /// Where entries live.
    pub strategy: Strategy,
    /// Seconds past freshness a stale entry may be served when the upstream fails
    /// (default 0).
    pub stale_if_error: u64,
    /// Largest body stored, in bytes (default 1 MiB).
    pub max_body_size: usize,
}

/// Methods Kong allows in `request_method`.
const METHODS: &[&str] = &["HEAD", "GET", "POST", "PATCH", "PUT"];

/// Largest `max_body_size`: 64 MiB.
const MAX_BODY_LIMIT: i64 = 67_108_864;

/// Decodes `config` for this plugin.
///
/// Runs at config load. Returns the config, or `None` after recording located errors
/// (unknown keys, wrong types, out-of-range values, missing `strategy`, bad Redis
/// settings).
pub fn decode(node: Option<&Node>, path: &str, errs: &mut Errors) -> Option<Config> {
    let Some(node) = node else {
        errs.push(
            &crate::config::fields::join(path, "strategy"),
            0,
            "required field missing",
        );
        return None;
    };
    let allowed = [
        "response_code",
        "request_method",
        "content_type",
        "content_type_parameters",
        "cache_ttl",
        "storage_ttl",
        "cache_control",
        "ignore_uri_case",
        "vary_query_params",
        "vary_headers",
        "response_headers",
        "strategy",
        "memory",
        "redis",
        "stale_if_error",
        "max_body_size",
    ];
    let before = errs.list.len();
    let fields = Fields::open(node, path, &allowed, errs)?;

    let response_code = response_codes(&fields, errs);

    let mut request_method = Vec::new();
    let methods = fields.str_list("request_method", errs);
    for (m, p, line) in &methods {
        match METHODS.iter().find(|k| **k == m.as_str()) {
            Some(k) => match http::Method::from_bytes(k.as_bytes()) {
                Ok(method) => request_method.push(method),
                Err(_) => errs.push(p, *line, format!("bad method '{m}'")),
            },
            None => errs.push(
                p,
                *line,
                format!("expected one of: HEAD, GET, POST, PATCH, PUT (got '{m}')"),
            ),
        }
    }
    if !fields.has("request_method") {
        request_method = vec![http::Method::GET, http::Method::HEAD];
    } else {
        non_empty(&fields, "request_method", methods.len(), errs);
    }

    let types = fields.str_list("content_type", errs);
    non_empty(&fields, "content_type", types.len(), errs);
    let content_type = if fields.has("content_type") {
        types
            .into_iter()
            .filter_map(|(t, path, line)| {
                if super::policy::is_media_type(&t) {
                    Some(t)
                } else {
                    errs.push(&path, line, "not a media type (expected type/subtype)");
                    None
                }
            })
            .collect()
    } else {
        vec!["text/plain".to_string(), "application/json".to_string()]
    };

    let content_type_parameters = match fields.str("content_type_parameters", errs).as_deref() {
        None | Some("exact") => ParamMatch::Exact,
        Some("ignore") => ParamMatch::Ignore,
        Some(other) => {
            errs.push(
                &fields.path_of("content_type_parameters"),
                fields.line_of("content_type_parameters"),
                format!("expected one of: exact, ignore (got '{other}')"),
            );
            ParamMatch::Exact
        }
    };

    let cache_ttl = seconds(&fields, "cache_ttl", 1, errs).unwrap_or(300);
    let storage_ttl = seconds(&fields, "storage_ttl", 0, errs);
    let stale_if_error = seconds(&fields, "stale_if_error", 0, errs).unwrap_or(0);
    let cache_control = fields.bool("cache_control", false, errs);
    let ignore_uri_case = fields.bool("ignore_uri_case", false, errs);

    let vary_query_params = fields.has("vary_query_params").then(|| {
        fields
            .str_list("vary_query_params", errs)
            .into_iter()
            .map(|(s, _, _)| s)
            .collect()
    });
    let vary_headers = fields.has("vary_headers").then(|| {
        let mut names = Vec::new();
        for (s, path, line) in fields.str_list("vary_headers", errs) {
            if http::HeaderName::from_bytes(s.as_bytes()).is_ok() {
                names.push(s.to_ascii_lowercase());
            } else {
                errs.push(&path, line, "bad header name");
            }
        }
        names
    });

    let response_headers = response_headers(&fields, errs);

    if let Some(memory) = fields.node("memory") {
        // Kong's shared-dictionary name has no meaning here; it is checked, then ignored.
        if let Some(m) = Fields::open(
            memory,
            &fields.path_of("memory"),
            &["dictionary_name"],
            errs,
        ) {
            let _ = m.str("dictionary_name", errs);
        }
    }

    let strategy = match fields.str("strategy", errs).as_deref() {
        Some("memory") => Some(Strategy::Memory),
        Some("redis") => redis_settings(&fields, errs, "strategy").map(Strategy::Redis),
        Some(other) => {
            errs.push(
                &fields.path_of("strategy"),
                fields.line_of("strategy"),
                format!("expected one of: memory, redis (got '{other}')"),
            );
            None
        }
        None => {
            if !fields.has("strategy") {
                errs.push(
                    &fields.path_of("strategy"),
                    fields.line_of("strategy"),
                    "required field missing",
                );
            }
            None
        }
    };

    let max_body_size = fields.int("max_body_size", 1, MAX_BODY_LIMIT, 1_048_576, errs) as usize;

    let strategy = strategy?;
    (errs.list.len() == before).then_some(Config {
        response_code,
        request_method,
        content_type,
        content_type_parameters,
        cache_ttl,
        storage_ttl,
        cache_control,
        ignore_uri_case,
        vary_query_params,
        vary_headers,
        response_headers,
        strategy,
        stale_if_error,
        max_body_size,
    })
}

/// `response_code`: integers in 100..=900, at least one; Kong's default when absent.
fn response_codes(fields: &Fields<'_>, errs: &mut Errors) -> Vec<u16> {
    if !fields.has("response_code") {
        return vec![200, 301, 404];
    }
    let mut codes = Vec::new();
    let mut count = 0;
    fields.each("response_code", errs, |item, p, errs| {
        count += 1;
        match item.value {
            Value::Int(i) if (100..=900).contains(&i) => codes.push(i as u16),
            Value::Int(_) => errs.push(&p, item.line, "value should be between 100 and 900"),
            _ => errs.push(
                &p,
                item.line,
                format!("expected an integer, got {}", item.type_name()),
            ),
        }
    });
    non_empty(fields, "response_code", count, errs);
    codes
}

/// Records Kong's error for a present but empty array.
fn non_empty(fields: &Fields<'_>, key: &str, len: usize, errs: &mut Errors) {
    let is_array = matches!(fields.node(key).map(|n| &n.value), Some(Value::Seq(_)));
    if is_array && len == 0 {
        errs.push(
            &fields.path_of(key),
            fields.line_of(key),
            "length must be at least 1",
        );
    }
}

/// An optional whole number of seconds, at least `min`.
fn seconds(fields: &Fields<'_>, key: &str, min: i64, errs: &mut Errors) -> Option<u64> {
    let node = fields.node(key)?;
    match node.value {
        Value::Int(i) if i >= min && i as u64 <= super::store::MAX_TTL => Some(i as u64),
        Value::Int(i) if i >= min => {
            errs.push(
                &fields.path_of(key),
                node.line,
                format!("value must be at most {}", super::store::MAX_TTL),
            );
            None
        }
        Value::Int(_) => {
            let message = if min > 0 {
                format!("value must be greater than {}", min - 1)
            } else {
                format!("value must be at least {min}")
            };
            errs.push(&fields.path_of(key), node.line, message);
            None
        }
        _ => {
            errs.push(
                &fields.path_of(key),
                node.line,
                format!("expected an integer, got {}", node.type_name()),
            );
            None
        }
    }
}

/// `response_headers`: Kong's record of three booleans, each default true.
fn response_headers(fields: &Fields<'_>, errs: &mut Errors) -> ResponseHeaders {
    let mut out = ResponseHeaders {
        age: true,
        x_cache_status: true,
        x_cache_key: true,
    };
    if let Some(node) = fields.node("response_headers") {
        if let Some(h) = Fields::open(
            node,
            &fields.path_of("response_headers"),
            &["age", "X-Cache-Status", "X-Cache-Key"],
            errs,
        ) {
            out.age = h.bool("age", true, errs);
            out.x_cache_status = h.bool("X-Cache-Status", true, errs);
            out.x_cache_key = h.bool("X-Cache-Key", true, errs);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fields::FieldError;

    fn run(yaml: &str) -> (Option<Config>, Vec<FieldError>) {
        let node = crate::config::yaml::parse(yaml).unwrap();
        let mut errs = Errors::default();
        let c = decode(Some(&node), "plugins[0].config", &mut errs);
        (c, errs.list)
    }

    fn ok(yaml: &str) -> Config {
        let (c, errs) = run(yaml);
        assert!(errs.is_empty(), "{errs:#?}");
        c.unwrap()
    }

    fn err(yaml: &str, path: &str, line: usize, msg: &str) {
        let (c, errs) = run(yaml);
        assert!(c.is_none(), "expected no config for:\n{yaml}");
        assert!(
            errs.iter()
                .any(|e| e.path == path && e.line == line && e.message.contains(msg)),
            "no error {path} (line {line}) containing {msg:?} in {errs:#?}"
        );
    }

    #[test]
    fn defaults_follow_kong() {
        let c = ok("strategy: memory\n");
        assert_eq!(c.response_code, vec![200, 301, 404]);
        assert_eq!(
            c.request_method,
            vec![http::Method::GET, http::Method::HEAD]
        );
        assert_eq!(c.content_type, vec!["text/plain", "application/json"]);
        assert_eq!(c.content_type_parameters, ParamMatch::Exact);
        assert_eq!(c.cache_ttl, 300);
        assert_eq!(c.storage_ttl, None);
        assert!(!c.cache_control);
        assert!(!c.ignore_uri_case);
        assert_eq!(c.vary_query_params, None);
        assert_eq!(c.vary_headers, None);
        assert!(c.response_headers.age);
        assert!(c.response_headers.x_cache_status);
        assert!(c.response_headers.x_cache_key);
        assert!(matches!(c.strategy, Strategy::Memory));
        assert_eq!(c.stale_if_error, 0);
        assert_eq!(c.max_body_size, 1_048_576);
    }

    #[test]
    fn every_field_is_read() {
        let c = ok("strategy: memory\n\
             memory:\n  dictionary_name: kong_db_cache\n\
             response_code: [200, 418]\n\
             request_method: [POST, GET]\n\
             content_type: [\"application/json; charset=utf-8\", \"*/*\"]\n\
             content_type_parameters: ignore\n\
             cache_ttl: 10\n\
             storage_ttl: 60\n\
             cache_control: true\n\
             ignore_uri_case: true\n\
             vary_query_params: [page, sort]\n\
             vary_headers: [X-Tenant, Accept]\n\
             response_headers:\n  age: false\n  X-Cache-Status: true\n  X-Cache-Key: false\n\
             stale_if_error: 30\n\
             max_body_size: 2048\n");
        assert_eq!(c.response_code, vec![200, 418]);
        assert_eq!(
            c.request_method,
            vec![http::Method::POST, http::Method::GET]
        );
        assert_eq!(
            c.content_type,
            vec!["application/json; charset=utf-8", "*/*"]
        );
        assert_eq!(c.content_type_parameters, ParamMatch::Ignore);
        assert_eq!(c.cache_ttl, 10);
        assert_eq!(c.storage_ttl, Some(60));
        assert!(c.cache_control);
        assert!(c.ignore_uri_case);
        assert_eq!(
            c.vary_query_params,
            Some(vec!["page".to_string(), "sort".to_string()])
        );
        assert_eq!(
            c.vary_headers,
            Some(vec!["x-tenant".to_string(), "accept".to_string()])
        );
        assert!(!c.response_headers.age);
        assert!(c.response_headers.x_cache_status);
        assert!(!c.response_headers.x_cache_key);
        assert_eq!(c.stale_if_error, 30);
        assert_eq!(c.max_body_size, 2048);
    }

    #[test]
    fn empty_vary_lists_are_kept_distinct_from_absent() {
        let c = ok("strategy: memory\nvary_query_params: []\nvary_headers: []\n");
        assert_eq!(c.vary_query_params, Some(vec![]));
        assert_eq!(c.vary_headers, Some(vec![]));
        let c = ok("strategy: memory\nvary_query_params: null\n");
        assert_eq!(c.vary_query_params, None);
    }

    #[test]
    fn redis_strategy_reads_the_nested_record() {
        let c = ok("strategy: redis\nredis:\n  host: cache.local\n  port: 6380\n  database: 2\n");
        let Strategy::Redis(r) = c.strategy else {
            panic!("expected redis");
        };
        assert_eq!(r.host, "cache.local");
        assert_eq!(r.port, 6380);
        assert_eq!(r.database, 2);
        assert_eq!(r.timeout_ms, 2000);
    }

    #[test]
    fn redis_strategy_needs_a_host() {
        err(
            "strategy: redis\n",
            "plugins[0].config.redis.host",
            1,
            "required field missing (strategy is 'redis')",
        );
        err(
            "strategy: redis\nredis:\n  port: 6379\n",
            "plugins[0].config.redis.host",
            3,
            "required field missing",
        );
        err(
            "strategy: redis\nredis:\n  host: h\n  bogus: 1\n",
            "plugins[0].config.redis.bogus",
            4,
            "unknown field",
        );
    }

    #[test]
    fn flat_redis_fields_are_unknown() {
        err(
            "strategy: redis\nredis_host: h\n",
            "plugins[0].config.redis_host",
            2,
            "unknown field",
        );
    }

    #[test]
    fn strategy_is_required_and_checked() {
        err(
            "cache_ttl: 5\n",
            "plugins[0].config.strategy",
            1,
            "required field missing",
        );
        err(
            "strategy: null\n",
            "plugins[0].config.strategy",
            1,
            "required field missing",
        );
        err(
            "strategy: disk\n",
            "plugins[0].config.strategy",
            1,
            "expected one of: memory, redis (got 'disk')",
        );
        err(
            "strategy: 3\n",
            "plugins[0].config.strategy",
            1,
            "expected a string",
        );
        let mut errs = Errors::default();
        assert!(decode(None, "plugins[0].config", &mut errs).is_none());
        assert_eq!(errs.list[0].path, "plugins[0].config.strategy");
        assert_eq!(errs.list[0].message, "required field missing");
    }

    #[test]
    fn unknown_keys_and_non_maps_are_errors() {
        err(
            "strategy: memory\ncache_tll: 5\n",
            "plugins[0].config.cache_tll",
            2,
            "unknown field",
        );
        err(
            "strategy: memory\nmemory:\n  size: 5\n",
            "plugins[0].config.memory.size",
            3,
            "unknown field",
        );
        err(
            "strategy: memory\nresponse_headers:\n  x-cache-status: false\n",
            "plugins[0].config.response_headers.x-cache-status",
            3,
            "unknown field",
        );
        err("- a\n", "plugins[0].config", 1, "expected a map");
    }

    #[test]
    fn response_code_is_checked() {
        err(
            "strategy: memory\nresponse_code: []\n",
            "plugins[0].config.response_code",
            2,
            "length must be at least 1",
        );
        err(
            "strategy: memory\nresponse_code: [200, 99]\n",
            "plugins[0].config.response_code[1]",
            2,
            "value should be between 100 and 900",
        );
        err(
            "strategy: memory\nresponse_code:\n- 200\n- 901\n",
            "plugins[0].config.response_code[1]",
            4,
            "value should be between 100 and 900",
        );
        err(
            "strategy: memory\nresponse_code: [\"200\"]\n",
            "plugins[0].config.response_code[0]",
            2,
            "expected an integer, got a string",
        );
        err(
            "strategy: memory\nresponse_code: 200\n",
            "plugins[0].config.response_code",
            2,
            "expected an array",
        );
        assert_eq!(
            ok("strategy: memory\nresponse_code: [100, 900]\n").response_code,
            vec![100, 900]
        );
    }

    #[test]
    fn request_method_is_checked() {
        err(
            "strategy: memory\nrequest_method: []\n",
            "plugins[0].config.request_method",
            2,
            "length must be at least 1",
        );
        err(
            "strategy: memory\nrequest_method: [GET, DELETE]\n",
            "plugins[0].config.request_method[1]",
            2,
            "(got 'DELETE')",
        );
        err(
            "strategy: memory\nrequest_method: [get]\n",
            "plugins[0].config.request_method[0]",
            2,
            "expected one of: HEAD, GET, POST, PATCH, PUT (got 'get')",
        );
        err(
            "strategy: memory\nrequest_method: [1]\n",
            "plugins[0].config.request_method[0]",
            2,
            "expected a string",
        );
        let c = ok("strategy: memory\nrequest_method: [HEAD, GET, POST, PATCH, PUT]\n");
        assert_eq!(c.request_method.len(), 5);
    }

    #[test]
    fn content_type_is_checked() {
        err(
            "strategy: memory\ncontent_type: []\n",
            "plugins[0].config.content_type",
            2,
            "length must be at least 1",
        );
        err(
            "strategy: memory\ncontent_type: text/plain\n",
            "plugins[0].config.content_type",
            2,
            "expected an array",
        );
        err(
            "strategy: memory\ncontent_type_parameters: loose\n",
            "plugins[0].config.content_type_parameters",
            2,
            "expected one of: exact, ignore (got 'loose')",
        );
        // Stored as given.
        let c = ok("strategy: memory\ncontent_type: [\"Application/JSON; Charset=UTF-8\"]\n");
        assert_eq!(c.content_type, vec!["Application/JSON; Charset=UTF-8"]);
    }

    #[test]
    fn durations_are_checked() {
        err(
            "strategy: memory\ncache_ttl: 0\n",
            "plugins[0].config.cache_ttl",
            2,
            "value must be greater than 0",
        );
        err(
            "strategy: memory\ncache_ttl: -3\n",
            "plugins[0].config.cache_ttl",
            2,
            "value must be greater than 0",
        );
        err(
            "strategy: memory\ncache_ttl: 1.5\n",
            "plugins[0].config.cache_ttl",
            2,
            "expected an integer, got a number",
        );
        err(
            "strategy: memory\nstorage_ttl: -1\n",
            "plugins[0].config.storage_ttl",
            2,
            "value must be at least 0",
        );
        err(
            "strategy: memory\nstorage_ttl: soon\n",
            "plugins[0].config.storage_ttl",
            2,
            "expected an integer",
        );
        err(
            "strategy: memory\nstale_if_error: -1\n",
            "plugins[0].config.stale_if_error",
            2,
            "value must be at least 0",
        );
        assert_eq!(
            ok("strategy: memory\nstorage_ttl: 0\n").storage_ttl,
            Some(0)
        );
    }

    #[test]
    fn max_body_size_is_bounded() {
        err(
            "strategy: memory\nmax_body_size: 0\n",
            "plugins[0].config.max_body_size",
            2,
            "value should be between 1 and 67108864",
        );
        err(
            "strategy: memory\nmax_body_size: 67108865\n",
            "plugins[0].config.max_body_size",
            2,
            "value should be between 1 and 67108864",
        );
        assert_eq!(
            ok("strategy: memory\nmax_body_size: 67108864\n").max_body_size,
            67_108_864
        );
    }

    #[test]
    fn booleans_and_lists_are_type_checked() {
        err(
            "strategy: memory\ncache_control: yes please\n",
            "plugins[0].config.cache_control",
            2,
            "expected a boolean",
        );
        err(
            "strategy: memory\nignore_uri_case: 1\n",
            "plugins[0].config.ignore_uri_case",
            2,
            "expected a boolean",
        );
        err(
            "strategy: memory\nresponse_headers:\n  age: \"no\"\n",
            "plugins[0].config.response_headers.age",
            3,
            "expected a boolean",
        );
        err(
            "strategy: memory\nresponse_headers: true\n",
            "plugins[0].config.response_headers",
            2,
            "expected a map",
        );
        err(
            "strategy: memory\nvary_headers: [1]\n",
            "plugins[0].config.vary_headers[0]",
            2,
            "expected a string",
        );
        err(
            "strategy: memory\nvary_query_params: page\n",
            "plugins[0].config.vary_query_params",
            2,
            "expected an array",
        );
        err(
            "strategy: memory\nmemory:\n  dictionary_name: 5\n",
            "plugins[0].config.memory.dictionary_name",
            3,
            "expected a string",
        );
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let (c, errs) = run("cache_ttl: 0\nresponse_code: []\nbogus: 1\n");
        assert!(c.is_none());
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "plugins[0].config.cache_ttl",
            "plugins[0].config.response_code",
            "plugins[0].config.bogus",
            "plugins[0].config.strategy",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }
}
