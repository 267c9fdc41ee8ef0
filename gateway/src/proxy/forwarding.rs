//! Headers on the way to the upstream and on the way back (Kong §8.2, §8.3):
//! forwarding headers, `Via`, `Host`, and the hop-by-hop headers that must not
//! cross the proxy.

use http::Version;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::error::KONG_VERSION_TOKEN;

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

/// A header name folded the way Kong compares plugin header names: lower-case, with
/// `_` and `-` alike (`X_Api_Key` and `x-api-key` are the same header).
pub fn fold_header_name(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Every spelling of header `name` present in `headers`, under [`fold_header_name`].
pub fn header_spellings(headers: &http::HeaderMap, name: &str) -> Vec<http::HeaderName> {
    let want = fold_header_name(name);
    headers
        .keys()
        .filter(|k| fold_header_name(k.as_str()) == want)
        .cloned()
        .collect()
}

/// The `Via` protocol token for an HTTP version (`1.1`, `2`, ...).
pub fn version_token(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn connection_tokens(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Removes hop-by-hop headers from a request before it goes upstream.
///
/// Keeps `TE: trailers` and a websocket `Upgrade` (with `Connection: Upgrade`), which
/// the upstream needs to see.
pub fn strip_request_hop_by_hop(req: &mut RequestHeader) {
    let tokens = connection_tokens(&req.headers);
    let wants_upgrade =
        tokens.iter().any(|t| t == "upgrade") && req.headers.contains_key(http::header::UPGRADE);
    let te_trailers = req
        .headers
        .get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    let upgrade = req.headers.get(http::header::UPGRADE).cloned();
    for name in tokens
        .iter()
        .map(String::as_str)
        .chain(HOP_BY_HOP.iter().copied())
    {
        req.remove_header(name);
    }
    if te_trailers {
        let _ = req.insert_header("te", "trailers");
    }
    if let (true, Some(up)) = (wants_upgrade, upgrade) {
        let _ = req.insert_header("connection", "keep-alive, Upgrade");
        let _ = req.insert_header("upgrade", up);
    }
}

/// Removes hop-by-hop headers from an upstream response before it goes to the client.
///
/// `client_te_trailers` says whether the client asked for trailers.
pub fn strip_response_hop_by_hop(resp: &mut ResponseHeader, client_te_trailers: bool) {
    let switching = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
    for name in connection_tokens(&resp.headers) {
        if switching && name == "upgrade" {
            continue;
        }
        resp.remove_header(name.as_str());
    }
    for name in ["keep-alive", "proxy-connection", "proxy"] {
        resp.remove_header(name);
    }
    if !switching {
        resp.remove_header("upgrade");
    }
    if !client_te_trailers {
        resp.remove_header("trailer");
    }
}

/// Appends `<version> kong/<ver>` to an existing `Via` value.
pub fn append_via(existing: Option<&str>, version: Version) -> String {
    let own = format!("{} {KONG_VERSION_TOKEN}", version_token(version));
    match existing {
        Some(v) if !v.trim().is_empty() => format!("{v}, {own}"),
        _ => own,
    }
}

/// The `Host` header to send upstream: the service host, with its port unless it is
/// the scheme's default.
pub fn upstream_host(host: &str, port: u16, default_port: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hop_by_hop_are_removed_but_trailers_and_websocket_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("connection", "keep-alive, X-Secret")
            .unwrap();
        req.insert_header("x-secret", "1").unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        req.insert_header("proxy-connection", "keep-alive").unwrap();
        req.insert_header("te", "trailers, deflate").unwrap();
        req.insert_header("x-keep", "1").unwrap();
        strip_request_hop_by_hop(&mut req);
        assert!(req.headers.get("x-secret").is_none());
        assert!(req.headers.get("keep-alive").is_none());
        assert!(req.headers.get("proxy-connection").is_none());
        assert!(req.headers.get("connection").is_none());
        assert_eq!(req.headers["te"], "trailers");
        assert_eq!(req.headers["x-keep"], "1");

        let mut ws = RequestHeader::build("GET", b"/", None).unwrap();
        ws.insert_header("connection", "Upgrade").unwrap();
        ws.insert_header("upgrade", "websocket").unwrap();
        strip_request_hop_by_hop(&mut ws);
        assert_eq!(ws.headers["upgrade"], "websocket");
    }

    #[test]
    fn response_hop_by_hop_are_removed() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("connection", "close, X-Internal")
            .unwrap();
        resp.insert_header("x-internal", "1").unwrap();
        resp.insert_header("trailer", "x-t").unwrap();
        resp.insert_header("keep-alive", "timeout=5").unwrap();
        strip_response_hop_by_hop(&mut resp, false);
        assert!(resp.headers.get("x-internal").is_none());
        assert!(resp.headers.get("trailer").is_none());
        assert!(resp.headers.get("keep-alive").is_none());
    }

    #[test]
    fn via_and_host() {
        assert_eq!(append_via(None, Version::HTTP_11), "1.1 kong/3.10.0");
        assert_eq!(
            append_via(Some("1.1 dev"), Version::HTTP_2),
            "1.1 dev, 2 kong/3.10.0"
        );
        assert_eq!(upstream_host("a.test", 80, 80), "a.test");
        assert_eq!(upstream_host("a.test", 8080, 80), "a.test:8080");
        assert_eq!(upstream_host("::1", 8080, 80), "[::1]:8080");
    }
}
