//! Router unit tests: Kong's matching rules and priority order.

use http::HeaderMap;

use super::*;
use crate::config::parse_str;

fn config(routes: &str) -> Config {
    let text = format!("_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:1\n  routes:\n{routes}");
    match parse_str(&text) {
        Ok(c) => c,
        Err(e) => panic!("{e:#?}\n{text}"),
    }
}

fn find(
    c: &Config,
    method: &str,
    host: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(String, String)> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let router = Router::build(c);
    let (host, port) = match host {
        Some(h) => {
            let (n, p) = split_host_header(h);
            (Some(n), p.unwrap_or(8000))
        }
        None => (None, 8000),
    };
    let path = normalize::normalize_path(path).unwrap();
    let req = RequestInfo {
        method,
        host,
        port,
        path: &path,
        headers: &map,
    };
    router.find(c, &req).map(|m| {
        (
            c.routes[m.route].name.clone().unwrap_or_default(),
            path[..m.prefix_len].to_string(),
        )
    })
}

fn name(r: Option<(String, String)>) -> Option<String> {
    r.map(|(n, _)| n)
}

#[test]
fn prefix_paths_have_no_segment_boundary() {
    let c = config("  - name: foo\n    paths: [/foo]\n");
    assert_eq!(name(find(&c, "GET", None, "/foo", &[])), Some("foo".into()));
    assert_eq!(
        name(find(&c, "GET", None, "/foo/bar", &[])),
        Some("foo".into())
    );
    assert_eq!(
        name(find(&c, "GET", None, "/foobar", &[])),
        Some("foo".into())
    );
    assert_eq!(find(&c, "GET", None, "/fo", &[]), None);
}

#[test]
fn longer_prefix_wins() {
    let c = config("  - name: short\n    paths: [/a]\n  - name: long\n    paths: [/a/b]\n");
    assert_eq!(
        name(find(&c, "GET", None, "/a/b/c", &[])),
        Some("long".into())
    );
    assert_eq!(
        name(find(&c, "GET", None, "/a/c", &[])),
        Some("short".into())
    );
}

#[test]
fn regex_beats_prefix_and_regex_priority_orders_regexes() {
    let c = config(concat!(
        "  - name: vs\n    paths: ['~/version/\\d+/status/\\d+']\n    regex_priority: 6\n",
        "  - name: st\n    paths: ['~/status/\\d+']\n",
        "  - name: v\n    paths: [/version]\n",
        "  - name: va\n    paths: ['~/version/any/']\n",
    ));
    assert_eq!(
        name(find(&c, "GET", None, "/version/1/status/2", &[])),
        Some("vs".into())
    );
    assert_eq!(
        name(find(&c, "GET", None, "/version/any/x", &[])),
        Some("va".into())
    );
    assert_eq!(
        name(find(&c, "GET", None, "/version/x", &[])),
        Some("v".into())
    );
    assert_eq!(
        name(find(&c, "GET", None, "/status/7", &[])),
        Some("st".into())
    );
}

#[test]
fn regex_is_anchored_at_start_only_and_case_sensitive() {
    let c = config("  - name: r\n    paths: ['~/users/\\d+/profile']\n");
    let (n, prefix) = find(&c, "GET", None, "/users/123/profile/x", &[]).unwrap();
    assert_eq!(n, "r");
    assert_eq!(prefix, "/users/123/profile");
    assert_eq!(find(&c, "GET", None, "/x/users/1/profile", &[]), None);
    assert_eq!(find(&c, "GET", None, "/USERS/1/profile", &[]), None);
}

#[test]
fn hosts_exact_and_wildcards() {
    let c = config(concat!(
        "  - name: exact\n    hosts: [api.example.com]\n",
        "  - name: suffix\n    hosts: ['*.example.com']\n",
        "  - name: prefix\n    hosts: ['example.*']\n",
    ));
    assert_eq!(
        name(find(&c, "GET", Some("api.example.com"), "/", &[])),
        Some("exact".into())
    );
    assert_eq!(
        name(find(&c, "GET", Some("a.b.example.com"), "/", &[])),
        Some("suffix".into())
    );
    assert_eq!(
        name(find(&c, "GET", Some("example.org"), "/", &[])),
        Some("prefix".into())
    );
    assert_eq!(find(&c, "GET", Some("other.org"), "/", &[]), None);
    // Host comparison is exact, as in Kong.
    assert_eq!(
        name(find(&c, "GET", Some("API.example.com"), "/", &[])),
        Some("suffix".into())
    );
    assert_eq!(find(&c, "GET", Some("API.EXAMPLE.COM"), "/", &[]), None);
}

#[test]
fn host_with_port_requires_that_port() {
    let c = config("  - name: p\n    hosts: ['api.example.com:9000']\n");
    assert_eq!(
        name(find(&c, "GET", Some("api.example.com:9000"), "/", &[])),
        Some("p".into())
    );
    assert_eq!(find(&c, "GET", Some("api.example.com"), "/", &[]), None);
}

#[test]
fn more_fields_beat_longer_paths() {
    let c = config(concat!(
        "  - name: long\n    paths: [/very/long/path]\n",
        "  - name: hostpath\n    hosts: [h.test]\n    paths: [/]\n",
    ));
    assert_eq!(
        name(find(&c, "GET", Some("h.test"), "/very/long/path", &[])),
        Some("hostpath".into())
    );
    assert_eq!(
        name(find(&c, "GET", Some("x.test"), "/very/long/path", &[])),
        Some("long".into())
    );
}

#[test]
fn method_route_takes_its_method() {
    let c = config(concat!(
        "  - name: any\n    hosts: [h.test]\n",
        "  - name: post\n    hosts: [h.test]\n    methods: [POST]\n",
    ));
    assert_eq!(
        name(find(&c, "POST", Some("h.test"), "/", &[])),
        Some("post".into())
    );
    assert_eq!(
        name(find(&c, "GET", Some("h.test"), "/", &[])),
        Some("any".into())
    );
}

#[test]
fn headers_match_case_insensitively_and_by_regex() {
    let c = config(concat!(
        "  - name: v1\n    headers: {x-version: [V1, v2]}\n",
        "  - name: re\n    headers: {x-client: ['~*^mobile-\\d+$']}\n",
        "  - name: both\n    headers: {x-a: ['1'], x-b: ['2']}\n",
    ));
    assert_eq!(
        name(find(&c, "GET", None, "/", &[("x-version", "v1")])),
        Some("v1".into())
    );
    assert_eq!(
        name(find(&c, "GET", None, "/", &[("X-Version", "V2")])),
        Some("v1".into())
    );
    assert_eq!(
        name(find(&c, "GET", None, "/", &[("x-client", "MOBILE-42")])),
        Some("re".into())
    );
    assert_eq!(find(&c, "GET", None, "/", &[("x-a", "1")]), None);
    assert_eq!(
        name(find(&c, "GET", None, "/", &[("x-a", "1"), ("x-b", "2")])),
        Some("both".into())
    );
    assert_eq!(
        name(find(
            &c,
            "GET",
            None,
            "/",
            &[("x-version", "v9"), ("x-version", "v2")]
        )),
        Some("v1".into())
    );
}

#[test]
fn normalisation_defeats_encoded_traversal() {
    let c = config(concat!(
        "  - name: admin\n    paths: [/admin]\n",
        "  - name: public\n    paths: [/public]\n",
    ));
    for p in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "//admin",
        "/./admin",
    ] {
        assert_eq!(
            name(find(&c, "GET", None, p, &[])),
            Some("admin".into()),
            "{p}"
        );
    }
}

#[test]
fn disabled_service_routes_are_dropped() {
    let text = "_format_version: \"3.0\"\nservices:\n- name: s\n  enabled: false\n  url: http://x\n  routes:\n  - paths: [/]\n";
    let c = parse_str(text).unwrap();
    assert_eq!(find(&c, "GET", None, "/", &[]), None);
}

#[test]
fn split_host_header_handles_ports_and_ipv6() {
    assert_eq!(split_host_header("a.com:8080"), ("a.com", Some(8080)));
    assert_eq!(split_host_header("a.com"), ("a.com", None));
    assert_eq!(split_host_header("[::1]:9"), ("[::1]", Some(9)));
    assert_eq!(split_host_header("[::1]"), ("[::1]", None));
}
