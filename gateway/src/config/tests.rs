//! Config decoding: defaults, the url shorthand, nesting rules, references,
//! uniqueness, legacy migration and error locations.

use std::time::Duration;

use super::model::*;
use super::{ids, parse_str, FieldError};

fn ok(text: &str) -> Config {
    parse_str(text).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn errors(text: &str) -> Vec<FieldError> {
    match parse_str(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e,
    }
}

fn has(errs: &[FieldError], path: &str, line: usize, msg: &str) {
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.line == line && e.message.contains(msg)),
        "no error {path} (line {line}) containing {msg:?} in {errs:#?}"
    );
}

#[test]
fn service_defaults_follow_kong() {
    let c = ok("_format_version: \"3.0\"\nservices:\n- name: s\n  host: example.com\n");
    let s = &c.services[0];
    assert_eq!(s.protocol, UpstreamScheme::Http);
    assert_eq!(s.port, 80);
    assert_eq!(s.path, None);
    assert_eq!(s.retries, 5);
    assert_eq!(s.connect_timeout, Duration::from_millis(60_000));
    assert_eq!(s.read_timeout, Duration::from_millis(60_000));
    assert_eq!(s.write_timeout, Duration::from_millis(60_000));
    assert!(s.enabled);
    assert_eq!(s.id, ids::derived("services", "s"));
}

#[test]
fn url_shorthand_infers_scheme_and_port() {
    let cases = [
        ("https://example.com", UpstreamScheme::Https, 443, None),
        (
            "http://h:8080/foo",
            UpstreamScheme::Http,
            8080,
            Some("/foo"),
        ),
        ("example.com:443", UpstreamScheme::Https, 443, None),
        ("example.com", UpstreamScheme::Http, 80, None),
        (
            "http://[::1]:9000/x",
            UpstreamScheme::Http,
            9000,
            Some("/x"),
        ),
    ];
    for (url, scheme, port, path) in cases {
        let c = ok(&format!(
            "_format_version: \"3.0\"\nservices:\n- url: \"{url}\"\n"
        ));
        let s = &c.services[0];
        assert_eq!(
            (s.protocol, s.port, s.path.as_deref()),
            (scheme, port, path),
            "{url}"
        );
    }
}

#[test]
fn route_defaults_follow_kong() {
    let c =
        ok("_format_version: \"3.0\"\nservices:\n- url: http://x\n  routes:\n  - paths: [/a]\n");
    let r = &c.routes[0];
    assert!(r.strip_path);
    assert!(!r.preserve_host);
    assert_eq!(r.https_redirect_status_code, 426);
    assert_eq!(
        r.protocols,
        Protocols {
            http: true,
            https: true
        }
    );
    assert_eq!(r.service, Some(0));
    assert_eq!(r.regex_priority, 0);
}

#[test]
fn format_version_must_be_a_known_string() {
    has(
        &errors("_format_version: 3.0\n"),
        "_format_version",
        1,
        "expected a string",
    );
    has(
        &errors("_format_version: \"4.0\"\n"),
        "_format_version",
        1,
        "expected one of: 1.1, 2.1, 3.0",
    );
    has(
        &errors("services: []\n"),
        "_format_version",
        1,
        "required field missing",
    );
    has(&errors(""), "", 1, "the file is empty");
}

#[test]
fn nested_children_must_not_repeat_the_parent_reference() {
    let errs = errors("_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://x\n  routes:\n  - service: s\n    paths: [/]\n");
    has(
        &errs,
        "services[0].routes[0].service",
        6,
        "value must be null",
    );
}

#[test]
fn top_level_routes_and_plugins_resolve_by_name_or_id() {
    let c = ok(concat!(
        "_format_version: \"3.0\"\n",
        "services:\n- name: s\n  id: 6b8b2d8e-2f6e-4c59-a5a6-6a4b1b8f3a10\n  url: http://x\n",
        "routes:\n- name: r1\n  service: s\n  paths: [/a]\n",
        "- name: r2\n  service: 6b8b2d8e-2f6e-4c59-a5a6-6a4b1b8f3a10\n  paths: [/b]\n",
        "plugins:\n- name: correlation-id\n  route: r1\n- name: correlation-id\n  service: s\n",
    ));
    assert_eq!(c.routes[0].service, Some(0));
    assert_eq!(c.routes[1].service, Some(0));
    assert_eq!(c.plugins[0].scope.route, Some(0));
    assert_eq!(c.plugins[1].scope.service, Some(0));
}

#[test]
fn duplicates_and_dangling_references_are_located() {
    let errs = errors(concat!(
        "_format_version: \"3.0\"\n",
        "services:\n- name: s\n  url: http://x\n- name: s\n  url: http://y\n",
        "routes:\n- name: r\n  service: ghost\n  paths: [/a]\n- name: r\n  paths: [/b]\n",
        "consumers:\n- username: u\n- username: u\n",
        "plugins:\n- name: correlation-id\n  consumer: nobody\n",
    ));
    has(
        &errs,
        "services[1].name",
        5,
        "uniqueness violation: 'services' entity with name set to 's'",
    );
    has(
        &errs,
        "routes[0].service",
        9,
        "invalid reference 'service: ghost' (no such entry in 'services')",
    );
    has(
        &errs,
        "routes[1].name",
        11,
        "uniqueness violation: 'routes' entity with name set to 'r'",
    );
    has(
        &errs,
        "consumers[1].username",
        15,
        "uniqueness violation: 'consumers' entity with username set to 'u'",
    );
    has(
        &errs,
        "plugins[0].consumer",
        18,
        "invalid reference 'consumer: nobody'",
    );
}

#[test]
fn the_same_plugin_twice_in_one_scope_is_refused() {
    let errs = errors(
        "_format_version: \"3.0\"\nplugins:\n- name: correlation-id\n- name: correlation-id\n",
    );
    has(
        &errs,
        "plugins[1].name",
        4,
        "uniqueness violation: 'plugins'",
    );
}

#[test]
fn route_field_rules() {
    let errs = errors(concat!(
        "_format_version: \"3.0\"\n",
        "services:\n- url: http://x\n  routes:\n",
        "  - paths: [foo]\n",
        "  - hosts: ['a.*.com']\n",
        "  - headers: {host: [a]}\n",
        "  - protocols: [grpc]\n    paths: [/g]\n",
        "  - paths: [/r]\n    https_redirect_status_code: 303\n",
        "  - strip_path: false\n",
    ));
    has(
        &errs,
        "services[0].routes[0].paths[0]",
        5,
        "should start with: /",
    );
    has(
        &errs,
        "services[0].routes[1].hosts[0]",
        6,
        "invalid wildcard",
    );
    has(
        &errs,
        "services[0].routes[2].headers.host",
        7,
        "cannot contain 'host' header",
    );
    has(
        &errs,
        "services[0].routes[3].protocols[0]",
        8,
        "not supported by this gateway yet",
    );
    has(
        &errs,
        "services[0].routes[4].https_redirect_status_code",
        11,
        "expected one of: 426, 301, 302, 307, 308",
    );
    has(
        &errs,
        "services[0].routes[5]",
        12,
        "must set one of 'methods', 'hosts', 'headers', 'paths'",
    );
}

#[test]
fn legacy_formats_migrate_regex_paths() {
    let c = ok("_format_version: \"2.1\"\nservices:\n- url: http://x\n  routes:\n  - paths: ['/users/\\d+/profile', /plain, '/a%2Eb(c)']\n");
    let paths: Vec<String> = c.routes[0]
        .paths
        .iter()
        .map(|p| match p {
            PathPattern::Prefix(s) => format!("prefix {s}"),
            PathPattern::Regex { source, .. } => format!("regex {source}"),
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            "regex /users/\\d+/profile",
            "prefix /plain",
            "regex /a\\.b(c)"
        ]
    );
    // In 3.0 the same regex without "~" is a prefix that is not normalised: refused.
    let errs = errors("_format_version: \"3.0\"\nservices:\n- url: http://x\n  routes:\n  - paths: ['/users/\\d+']\n");
    has(
        &errs,
        "services[0].routes[0].paths[0]",
        5,
        "characters outside of the reserved list of RFC 3986",
    );
}

#[test]
fn unsupported_entities_and_plugins_are_refused_by_name() {
    let errs = errors("_format_version: \"3.0\"\nupstreams:\n- name: u\nplugins:\n- name: cors\n");
    has(&errs, "upstreams", 2, "not supported by this gateway yet");
    has(
        &errs,
        "plugins[0].name",
        5,
        "plugin 'cors' is not available in this gateway yet",
    );
}

#[test]
fn credentials_never_appear_in_errors() {
    let errs = errors(concat!(
        "_format_version: \"3.0\"\nconsumers:\n",
        "- username: a\n  keyauth_credentials: [{key: hunter2-secret}]\n",
        "- username: b\n  keyauth_credentials: [{key: hunter2-secret}]\n",
    ));
    assert!(!format!("{errs:?}").contains("hunter2"), "{errs:?}");
    let c = ok("_format_version: \"3.0\"\nconsumers:\n- username: a\n  keyauth_credentials: [{key: hunter2-secret}]\n");
    assert!(!format!("{c:?}").contains("hunter2"));
    assert_eq!(c.consumers[0].id, ids::derived("consumers", "a"));
}

#[test]
fn certificates_must_parse() {
    let errs = errors(
        "_format_version: \"3.0\"\ncertificates:\n- cert: nope\n  key: nope\n  snis: [a.test]\n",
    );
    has(&errs, "certificates[0].cert", 3, "invalid certificate");
}

#[test]
fn wrong_types_are_reported_not_panicked_on() {
    let errs =
        errors("_format_version: \"3.0\"\nservices: {a: 1}\nroutes: 7\nconsumers: [1, [2]]\n");
    has(&errs, "services", 2, "expected an array");
    has(&errs, "routes", 3, "expected an array");
    has(&errs, "consumers[0]", 4, "expected a map");
}

#[test]
fn authentication_plugins_are_checked_against_consumers() {
    let errs = errors(concat!(
        "_format_version: \"3.0\"\n",
        "consumers:\n- username: u\n",
        "plugins:\n- name: key-auth\n  config: {anonymous: ghost}\n",
        "- name: key-auth\n  consumer: u\n",
        "- name: acl\n",
    ));
    has(
        &errs,
        "plugins[0].config.anonymous",
        5,
        "anonymous consumer ghost is configured but doesn't exist",
    );
    has(
        &errs,
        "plugins[1].consumer",
        7,
        "plugin 'key-auth' cannot be scoped to a consumer",
    );
    has(
        &errs,
        "plugins[2].config",
        9,
        "at least one of these fields must be non-empty",
    );
}

fn rate_limiting(config: &str) -> Vec<FieldError> {
    errors(&format!(
        "_format_version: \"3.0\"\nplugins:\n- name: rate-limiting\n  config:\n{config}"
    ))
}

#[test]
fn rate_limiting_config_is_checked_as_kong_checks_it() {
    has(
        &rate_limiting("    policy: local\n"),
        "plugins[0].config",
        5,
        "at least one of these fields must be non-empty",
    );
    has(
        &rate_limiting("    minute: 10\n    hour: 5\n"),
        "plugins[0].config.hour",
        6,
        "The limit for hour(5.0) cannot be lower than the limit for minute(10.0)",
    );
    has(
        &rate_limiting("    minute: 0\n"),
        "plugins[0].config.minute",
        5,
        "greater than 0",
    );
    has(
        &rate_limiting("    minute: 1.5\n"),
        "plugins[0].config.minute",
        5,
        "whole number",
    );
    has(
        &rate_limiting("    minute: 5\n    policy: cluster\n"),
        "plugins[0].config.policy",
        6,
        "DB-less",
    );
    has(
        &rate_limiting("    minute: 5\n    policy: redis\n"),
        "plugins[0].config.redis.host",
        6,
        "required field missing",
    );
    has(
        &rate_limiting("    minute: 5\n    sync_rate: 1\n"),
        "plugins[0].config.sync_rate",
        6,
        "sync_rate can only be used with the redis policy",
    );
    has(
        &rate_limiting("    minute: 5\n    limit_by: header\n"),
        "plugins[0].config.header_name",
        6,
        "required field missing",
    );
    has(
        &rate_limiting(
            "    minute: 5\n    policy: redis\n    redis:\n      host: r\n      pasword: x\n",
        ),
        "plugins[0].config.redis.pasword",
        9,
        "unknown field",
    );
}

#[test]
fn rate_limiting_reads_nested_and_flat_redis_settings() {
    use crate::plugins::rate_limiting::config::Policy;
    use crate::plugins::PluginConfig;
    let redis_of = |text: &str| {
        let c = ok(&format!(
            "_format_version: \"3.0\"\nplugins:\n- name: rate-limiting\n  config:\n    minute: 5\n    policy: redis\n{text}"
        ));
        match &c.plugins[0].config {
            PluginConfig::RateLimiting(rl) => match &rl.policy {
                Policy::Redis(s) => s.clone(),
                Policy::Local => panic!("not redis"),
            },
            other => panic!("{other:?}"),
        }
    };
    let nested = redis_of(
        "    redis:\n      host: cache\n      port: 6380\n      password: hunter2\n      database: 3\n      timeout: 150\n",
    );
    assert_eq!(
        (nested.host.as_str(), nested.port, nested.database),
        ("cache", 6380, 3)
    );
    assert_eq!(nested.timeout_ms, 150);
    assert_eq!(nested.password.as_deref(), Some("hunter2"));
    assert!(!format!("{nested:?}").contains("hunter2"));
    let flat = redis_of(
        "    redis_host: cache\n    redis_port: 6381\n    redis_username: u\n    redis_ssl: true\n",
    );
    assert_eq!((flat.host.as_str(), flat.port), ("cache", 6381));
    assert_eq!(flat.username.as_deref(), Some("u"));
    assert!(flat.ssl && !flat.ssl_verify);
    assert_eq!(flat.timeout_ms, 2000);
}
