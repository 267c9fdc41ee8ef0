//! Building the upstream request path from the service path, the matched route path
//! and `strip_path`, exactly as Kong's v0 path handling does (§2.4).

use super::normalize::escape_path;

/// Returns the path (with the raw query appended) to send upstream.
///
/// Runs once per proxied request, after routing. `base` is the service path (`None`
/// means `/`), `prefix` the part of the normalised request path the route matched
/// (only used when `strip_path` is on; `/` for a route without paths), `path` the
/// normalised request path, and `query` the raw query string if the request had a
/// `?` (possibly empty).
pub fn build(
    base: Option<&str>,
    strip_path: bool,
    prefix: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let base = base.unwrap_or("/");
    let mut out = if strip_path {
        let postfix = path.strip_prefix(prefix).unwrap_or(path);
        let postfix = trim_dot_prefix(postfix);
        join_stripped(base, postfix, path)
    } else if base.ends_with('/') {
        format!("{base}{}", path.strip_prefix('/').unwrap_or(path))
    } else if path == "/" {
        base.to_string()
    } else {
        format!("{base}{path}")
    };
    out = escape_path(&out);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Removes a leading `./` or `../` left by the prefix cut; `.` and `..` become empty.
fn trim_dot_prefix(postfix: &str) -> &str {
    if postfix == "." || postfix == ".." {
        ""
    } else if let Some(rest) = postfix.strip_prefix("../") {
        rest
    } else if let Some(rest) = postfix.strip_prefix("./") {
        rest
    } else {
        postfix
    }
}

fn join_stripped(base: &str, postfix: &str, path: &str) -> String {
    if let Some(trimmed) = base.strip_suffix('/') {
        if postfix.is_empty() {
            if base == "/" {
                "/".to_string()
            } else if path.ends_with('/') {
                base.to_string()
            } else {
                trimmed.to_string()
            }
        } else if postfix.starts_with('/') {
            format!("{trimmed}{postfix}")
        } else {
            format!("{base}{postfix}")
        }
    } else if postfix.is_empty() {
        if path.len() > 1 && path.ends_with('/') {
            format!("{base}/")
        } else {
            base.to_string()
        }
    } else if postfix.starts_with('/') {
        format!("{base}{postfix}")
    } else {
        format!("{base}/{postfix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::normalize::normalize_path;

    /// One row of Kong's `router_path_handling_tests` (v0): service path, route path
    /// (None for a host-only route), strip_path, request path, expected upstream path.
    fn row(svc: &str, route: Option<&str>, strip: bool, request: &str, expected: &str) {
        let path = normalize_path(request).unwrap();
        let prefix = route.unwrap_or("/");
        assert!(
            path.starts_with(prefix),
            "row precondition: {path} starts with {prefix}"
        );
        let got = build(Some(svc), strip, prefix, &path, None);
        assert_eq!(
            got, expected,
            "svc={svc} route={route:?} strip={strip} req={request}"
        );
    }

    fn both(svc: &str, route: Option<&str>, request: &str, expected: &str) {
        row(svc, route, true, request, expected);
        row(svc, route, false, request, expected);
    }

    #[test]
    fn kong_path_handling_table_v0() {
        both("/", Some("/"), "/route/req", "/route/req");
        row("/", Some("/route"), true, "/route", "/");
        row("/", Some("/route"), true, "/routereq", "/req");
        row("/", Some("/route/"), true, "/route/req", "/req");
        row("/srv", Some("/rou"), false, "/roureq", "/srv/roureq");
        row("/srv", Some("/rou"), true, "/roureq", "/srv/req");
        row("/srv/", Some("/rou"), true, "/rou", "/srv");
        both("/service", Some("/"), "/", "/service");
        both("/service", Some("/"), "/route/", "/service/route/");
        row(
            "/service",
            Some("/route"),
            false,
            "/route",
            "/service/route",
        );
        row("/service", Some("/route"), true, "/route", "/service");
        row("/service", Some("/route"), true, "/route/", "/service/");
        row("/service", Some("/route/"), true, "/route/", "/service/");
        row("/service/", Some("/route"), true, "/route", "/service");
        row(
            "/service/",
            Some("/route"),
            true,
            "/routereq",
            "/service/req",
        );
        both("/service", None, "/route", "/service/route");
        row(
            "/service",
            Some("/route"),
            true,
            "/route./req",
            "/service/req",
        );
        row(
            "/service",
            Some("/route"),
            true,
            "/route%2E/req",
            "/service/req",
        );
        row(
            "/service",
            Some("/route"),
            true,
            "/route../req",
            "/service/req",
        );
        row(
            "/service",
            Some("/route"),
            false,
            "/route%2e/req",
            "/service/route./req",
        );
    }

    #[test]
    fn more_cases_from_the_spec() {
        // Trailing slashes on both sides, strip off.
        row(
            "/service/",
            Some("/route/"),
            false,
            "/route/",
            "/service/route/",
        );
        row(
            "/service/",
            Some("/route"),
            false,
            "/route",
            "/service/route",
        );
        // Root service, strip off.
        row("/", Some("/route"), false, "/route/x", "/route/x");
        // §11 item 3: route /foo + service /bar.
        row("/bar", Some("/foo"), true, "/foo/x", "/bar/x");
        row("/bar", Some("/foo"), true, "/foobar", "/bar/bar");
        row("/bar", Some("/foo"), true, "/foo", "/bar");
        row("/bar", Some("/foo"), true, "/foo/", "/bar/");
    }

    #[test]
    fn query_is_appended_raw_even_when_empty() {
        assert_eq!(
            build(None, true, "/r", "/r/x", Some("a=1&b=%20")),
            "/x?a=1&b=%20"
        );
        assert_eq!(build(None, true, "/r", "/r/request", Some("")), "/request?");
        assert_eq!(
            build(None, false, "/", "/request", Some("hello")),
            "/request?hello"
        );
    }

    #[test]
    fn unsafe_characters_are_reescaped() {
        assert_eq!(build(None, false, "/", "/a b", None), "/a%20b");
        assert_eq!(
            build(None, false, "/", "/cat%20and%20dog", None),
            "/cat%20and%20dog"
        );
    }
}
