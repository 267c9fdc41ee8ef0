//! The cache key: Kong's shape (§6.3: `sha256_hex("<prefix>|<method>|<uri>|<params>|<headers>")`)
//! with the parts this gateway always includes for safety: the consumer on
//! authenticated requests, the scheme and host, the method class (GET and HEAD share
//! entries), the normalised path, and the vary'd query arguments in sorted order.
//! Separators inside names, values and the path are escaped, so no request can
//! spell another request's key.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::config::Config;
use crate::plugins::auth::decode_query_component as decode;

/// What the key is computed from; gathered by the plugin in the access phase.
pub struct KeyInput<'a> {
    /// The authenticated consumer, if any (anonymous included).
    pub consumer: Option<Uuid>,
    /// The matched route.
    pub route: Uuid,
    /// The request method.
    pub method: &'a http::Method,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The request host (lower-case), port included when sent.
    pub host: &'a str,
    /// The normalised request path.
    pub path: &'a str,
    /// The raw query string.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a http::HeaderMap,
}

/// GET and HEAD share entries (a HEAD may be answered from a GET); every other
/// method has its own.
pub fn method_class(method: &http::Method) -> &str {
    if method == http::Method::HEAD {
        "GET"
    } else {
        method.as_str()
    }
}

/// Computes the 64-hex-character key; runs once per cacheable request.
pub fn cache_key(config: &Config, input: &KeyInput<'_>) -> String {
    let prefix = match input.consumer {
        Some(c) => format!("{c}:{}", input.route),
        None => input.route.to_string(),
    };
    let mut uri = format!("{}://{}{}", input.scheme, input.host, input.path).replace('|', "%7C");
    if config.ignore_uri_case {
        uri = uri.to_lowercase();
    }
    let params = params(
        input.query.unwrap_or(""),
        config.vary_query_params.as_deref(),
    );
    let headers = vary_headers(input.headers, config.vary_headers.as_deref());
    let raw = format!(
        "{prefix}|{}|{uri}|{params}|{headers}",
        method_class(input.method)
    );
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// Escapes the characters the key uses as separators, so distinct arguments can
/// never spell the same key (`a=b:c=d` as one value is not `a=b` and `c=d`).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            ',' => out.push_str("%2C"),
            '=' => out.push_str("%3D"),
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
    out
}

/// One argument: its escaped name, then each value sorted, `=value` for a value and
/// nothing for a bare name, joined by `,` (so `a&a=1` differs from `a=1`).
fn render(name: &str, values: &[Option<String>]) -> String {
    let mut vals: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
    vals.sort_unstable();
    let parts: Vec<String> = vals
        .iter()
        .map(|v| v.map_or(String::new(), |v| format!("={}", esc(v))))
        .collect();
    format!("{}{}", esc(name), parts.join(","))
}

/// Arguments joined by `:`, names sorted (or in the configured order).
fn params(query: &str, only: Option<&[String]>) -> String {
    let mut args: std::collections::BTreeMap<String, Vec<Option<String>>> = Default::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) => (decode(k), Some(decode(v))),
            None => (decode(pair), None),
        };
        args.entry(k).or_default().push(v);
    }
    match only {
        None => args
            .iter()
            .map(|(k, v)| render(k, v))
            .collect::<Vec<_>>()
            .join(":"),
        Some(names) => names
            .iter()
            .filter_map(|n| args.get(n).map(|v| render(n, v)))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn vary_headers(headers: &http::HeaderMap, names: Option<&[String]>) -> String {
    let Some(names) = names else {
        return String::new();
    };
    names
        .iter()
        .filter_map(|n| {
            let vals: Vec<Option<String>> = headers
                .get_all(n.as_str())
                .iter()
                .map(|v| Some(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            (!vals.is_empty()).then(|| render(n, &vals))
        })
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_sorted_decoded_and_grouped() {
        assert_eq!(params("b=2&a=1&a=0&c&d=%20x", None), "a=0,=1:b=2:c:d= x");
        // Separators inside values cannot forge other arguments.
        assert_ne!(params("a=b:c=d", None), params("a=b&c=d", None));
        assert_ne!(params("a=1,2", None), params("a=1&a=2", None));
        assert_ne!(params("a&a=1", None), params("a=1", None));
        assert_ne!(params("a=", None), params("a", None));
        assert_eq!(params("", None), "");
        let only = vec!["b".to_string(), "a".to_string()];
        assert_eq!(params("a=1&b=2&z=9", Some(&only)), "b=2:a=1");
    }

    #[test]
    fn vary_headers_follow_the_configured_order() {
        let mut h = http::HeaderMap::new();
        h.append("x-b", "2".parse().unwrap());
        h.append("x-a", "z".parse().unwrap());
        h.append("x-a", "y".parse().unwrap());
        let names = vec!["x-a".to_string(), "x-b".to_string(), "x-none".to_string()];
        assert_eq!(vary_headers(&h, Some(&names)), "x-a=y,=z:x-b=2");
        let mut forged = http::HeaderMap::new();
        forged.append("x-a", "y:x-b=2".parse().unwrap());
        let mut real = http::HeaderMap::new();
        real.append("x-a", "y".parse().unwrap());
        real.append("x-b", "2".parse().unwrap());
        assert_ne!(
            vary_headers(&forged, Some(&names)),
            vary_headers(&real, Some(&names))
        );
        assert_eq!(vary_headers(&h, None), "");
    }
}
