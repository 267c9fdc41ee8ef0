//! The router: picks the route for a request with Kong's `traditional_compatible`
//! rules (§2.2, §2.3). A pure module: no I/O, no Pingora types.
//!
//! Each route is split into one matcher per path group (each regex, each distinct
//! prefix length), every matcher gets Kong's priority, and matchers are tried from the
//! highest priority down; the first whose conditions all hold wins.

pub mod normalize;
pub mod upstream_path;

use http::HeaderMap;

use crate::config::model::{Config, HeaderValue, HostName, HostPattern, PathPattern, Route};

/// What the router looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Request method, e.g. `GET`.
    pub method: &'a str,
    /// Host without its port (from `Host`, or `:authority` on HTTP/2).
    pub host: Option<&'a str>,
    /// The port the request was addressed to (Host header port, else listener port).
    pub port: u16,
    /// The normalised path (see [`normalize::normalize_path`]).
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// The result of a successful match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Index of the route in [`Config::routes`].
    pub route: usize,
    /// Length of the start of the normalised path the route matched (`1`, for `/`,
    /// on routes without paths).
    pub prefix_len: usize,
}

#[derive(Debug)]
enum PathGroup {
    Any,
    Prefixes(Vec<String>),
    Regex(regex::Regex),
}

#[derive(Debug)]
struct Matcher {
    route: usize,
    paths: PathGroup,
    priority: (u8, bool, u8, bool, i64, usize),
    order: usize,
}

/// A compiled route table.
#[derive(Debug, Default)]
pub struct Router {
    matchers: Vec<Matcher>,
}

impl Router {
    /// Compiles the routes of `config`, leaving out routes of disabled services.
    ///
    /// Runs once per config load; the result is immutable and shared by all requests.
    pub fn build(config: &Config) -> Router {
        let mut matchers = Vec::new();
        for (idx, route) in config.routes.iter().enumerate() {
            let service_disabled = route
                .service
                .and_then(|s| config.services.get(s))
                .is_some_and(|s| !s.enabled);
            if service_disabled {
                continue;
            }
            for paths in path_groups(route) {
                let priority = priority(route, &paths);
                let order = matchers.len();
                matchers.push(Matcher {
                    route: idx,
                    paths,
                    priority,
                    order,
                });
            }
        }
        matchers.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.order.cmp(&b.order)));
        Router { matchers }
    }

    /// Finds the route for a request.
    ///
    /// Runs once per request. Returns the highest-priority route whose every
    /// configured condition holds, or `None` (the proxy answers 404).
    pub fn find(&self, config: &Config, req: &RequestInfo<'_>) -> Option<Match> {
        for m in &self.matchers {
            let route = &config.routes[m.route];
            if !route.methods.is_empty() && !route.methods.iter().any(|x| x == req.method) {
                continue;
            }
            if !route.hosts.is_empty() && !route.hosts.iter().any(|h| host_matches(h, req)) {
                continue;
            }
            if !route.headers.iter().all(|c| {
                req.headers.get_all(c.name.as_str()).iter().any(|v| {
                    let v = String::from_utf8_lossy(v.as_bytes()).to_lowercase();
                    c.values.iter().any(|want| match want {
                        HeaderValue::Exact(s) => *s == v,
                        HeaderValue::Regex(r) => r.is_match(&v),
                    })
                })
            }) {
                continue;
            }
            let prefix_len = match &m.paths {
                PathGroup::Any => Some(1),
                PathGroup::Prefixes(ps) => ps
                    .iter()
                    .find(|p| req.path.starts_with(p.as_str()))
                    .map(|p| p.len()),
                PathGroup::Regex(r) => r.find(req.path).map(|found| found.end()),
            };
            if let Some(prefix_len) = prefix_len {
                return Some(Match {
                    route: m.route,
                    prefix_len,
                });
            }
        }
        None
    }
}

fn host_matches(pattern: &HostPattern, req: &RequestInfo<'_>) -> bool {
    if let Some(port) = pattern.port {
        if port != req.port {
            return false;
        }
    }
    let Some(host) = req.host else {
        return false;
    };
    match &pattern.name {
        HostName::Exact(h) => h == host,
        HostName::WildcardPrefix(suffix) => {
            host.len() > suffix.len() && host.ends_with(suffix.as_str())
        }
        HostName::WildcardSuffix(prefix) => {
            host.len() > prefix.len() && host.starts_with(prefix.as_str())
        }
    }
}

/// Splits a route's paths into Kong's matcher groups.
fn path_groups(route: &Route) -> Vec<PathGroup> {
    if route.paths.is_empty() {
        return vec![PathGroup::Any];
    }
    let mut groups: Vec<PathGroup> = Vec::new();
    let mut by_len: Vec<(usize, Vec<String>)> = Vec::new();
    for p in &route.paths {
        match p {
            PathPattern::Regex { regex, .. } => groups.push(PathGroup::Regex(regex.clone())),
            PathPattern::Prefix(s) => match by_len.iter_mut().find(|(l, _)| *l == s.len()) {
                Some((_, v)) => v.push(s.clone()),
                None => by_len.push((s.len(), vec![s.clone()])),
            },
        }
    }
    groups.extend(by_len.into_iter().map(|(_, v)| PathGroup::Prefixes(v)));
    groups
}

/// Kong's route priority (§2.3), most significant first.
fn priority(route: &Route, paths: &PathGroup) -> (u8, bool, u8, bool, i64, usize) {
    let fields = [
        !route.methods.is_empty(),
        !route.hosts.is_empty(),
        !route.headers.is_empty(),
        !route.paths.is_empty(),
    ]
    .iter()
    .filter(|x| **x)
    .count() as u8;
    let plain_hosts = !route.hosts.is_empty()
        && route
            .hosts
            .iter()
            .all(|h| matches!(h.name, HostName::Exact(_)));
    let header_count = route.headers.len().min(255) as u8;
    let (is_regex, regex_priority, prefix_len) = match paths {
        PathGroup::Regex(_) => (true, route.regex_priority, 0),
        PathGroup::Prefixes(ps) => (false, 0, ps.first().map_or(0, String::len)),
        PathGroup::Any => (false, 0, 0),
    };
    (
        fields,
        plain_hosts,
        header_count,
        is_regex,
        regex_priority,
        prefix_len,
    )
}

/// Splits a `Host` header value into name and optional port.
///
/// Runs once per request. `[::1]:8000` gives `("[::1]", Some(8000))`.
pub fn split_host_header(value: &str) -> (&str, Option<u16>) {
    if value.starts_with('[') {
        if let Some(end) = value.find(']') {
            let port = value[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (&value[..=end], port);
        }
        return (value, None);
    }
    match value.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(port) => (h, Some(port)),
            Err(_) => (value, None),
        },
        None => (value, None),
    }
}

#[cfg(test)]
mod tests;
