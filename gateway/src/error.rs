//! The gateway's one error type, and the one place it becomes an HTTP response.
//!
//! Every response the gateway makes up itself (no route, https required, upstream
//! failures, plugin refusals) is a [`GatewayError`] rendered by [`GatewayError::render`]
//! with Kong's bodies (§0): the "error template" family, whose content type follows
//! `Accept` and defaults to JSON, and the nginx family (502/504/400/500), which falls
//! back to the request's `Content-Type` and then to `text/plain`.

use bytes::Bytes;
use http::StatusCode;
use pingora_http::ResponseHeader;

/// Version token used in `Server` and `Via`: the Kong version whose behaviour this
/// gateway reproduces.
pub const KONG_VERSION_TOKEN: &str = "kong/3.10.0";

/// A response the gateway generates instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// No route matched (404).
    #[error("no Route matched with those values")]
    NoRoute,
    /// The route has no service (503).
    #[error("no Service found with those values")]
    NoService,
    /// Plain HTTP on an https-only route with code 426.
    #[error("Please use HTTPS protocol")]
    HttpsRequired,
    /// Plain HTTP on an https-only route with a redirect code.
    #[error("redirect to {location}")]
    HttpsRedirect {
        /// 301, 302, 307 or 308.
        status: u16,
        /// `https://host/uri?query`.
        location: String,
    },
    /// A request no client should send (400).
    #[error("Bad request")]
    BadRequest,
    /// A body larger than the gateway can inspect, on a route that must inspect it
    /// (413).
    #[error("Payload too large")]
    PayloadTooLarge,
    /// The client stopped sending a body the gateway was reading (408).
    #[error("Request timeout")]
    RequestTimeout,
    /// A method the gateway never proxies, such as TRACE (405).
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// The service host did not resolve (503).
    #[error("name resolution failed")]
    NameResolution,
    /// The upstream refused, reset, or answered garbage (502).
    #[error("An invalid response was received from the upstream server")]
    UpstreamInvalid,
    /// The upstream timed out (504).
    #[error("The upstream server is timing out")]
    UpstreamTimeout,
    /// Something went wrong inside the gateway (500). Details go to the log only.
    #[error("An unexpected error occurred")]
    Internal,
    /// A plugin's answer in Kong's plain JSON family (§0.2): the body is sent as is,
    /// with no request id in it (jwt's 401s, for instance).
    #[error("{body}")]
    PluginJson {
        /// Status code.
        status: u16,
        /// The complete JSON body.
        body: String,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// A plugin's refusal in the error-template family, e.g. 401 or 429.
    #[error("{message}")]
    Plugin {
        /// Status code.
        status: u16,
        /// Message shown to the client.
        message: String,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
}

/// The body formats of Kong's error templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json; charset=utf-8`
    Json,
    /// `text/html; charset=utf-8`
    Html,
    /// `application/xml; charset=utf-8`
    Xml,
    /// `text/plain; charset=utf-8`
    Plain,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
            Format::Xml => "application/xml; charset=utf-8",
            Format::Plain => "text/plain; charset=utf-8",
        }
    }

    fn from_mime(mime: &str) -> Option<Format> {
        match mime {
            "application/json" | "*/*" | "application/*" => Some(Format::Json),
            "text/html" => Some(Format::Html),
            "application/xml" | "text/xml" => Some(Format::Xml),
            "text/plain" | "text/*" => Some(Format::Plain),
            _ => None,
        }
    }
}

/// Picks the body format from an `Accept` header: highest q wins, ties by order.
///
/// Returns `None` when the header names nothing the templates can produce. With
/// `wildcards` false, `*/*`-style entries are ignored (the nginx error handler treats
/// them as no preference, so a bare `curl` gets its `text/plain` default).
pub fn negotiate(accept: &str, wildcards: bool) -> Option<Format> {
    let mut best: Option<(f32, Format)> = None;
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let mime = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = pieces
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        if !wildcards && mime.contains('*') {
            continue;
        }
        if let Some(f) = Format::from_mime(&mime) {
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, f));
            }
        }
    }
    best.map(|(_, f)| f)
}

/// What the renderer needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RenderCtx<'a> {
    /// The request's `Accept` header.
    pub accept: Option<&'a str>,
    /// The request's `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// 32-hex request id.
    pub request_id: &'a str,
    /// HEAD requests get no body.
    pub head: bool,
    /// Milliseconds the gateway spent on the request.
    pub latency_ms: u128,
}

impl GatewayError {
    /// HTTP status of the error.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::NoRoute => 404,
            GatewayError::NoService | GatewayError::NameResolution => 503,
            GatewayError::HttpsRequired => 426,
            GatewayError::HttpsRedirect { status, .. } => *status,
            GatewayError::BadRequest => 400,
            GatewayError::MethodNotAllowed => 405,
            GatewayError::PayloadTooLarge => 413,
            GatewayError::RequestTimeout => 408,
            GatewayError::UpstreamInvalid => 502,
            GatewayError::UpstreamTimeout => 504,
            GatewayError::Internal => 500,
            GatewayError::Plugin { status, .. } | GatewayError::PluginJson { status, .. } => {
                *status
            }
        }
    }

    /// Errors nginx itself would produce use the nginx handler's content-type rule.
    fn nginx_family(&self) -> bool {
        matches!(
            self,
            GatewayError::BadRequest
                | GatewayError::MethodNotAllowed
                | GatewayError::PayloadTooLarge
                | GatewayError::RequestTimeout
                | GatewayError::UpstreamInvalid
                | GatewayError::UpstreamTimeout
                | GatewayError::Internal
        )
    }

    /// Renders the error as Kong would: status, headers and body.
    ///
    /// Runs once per gateway-made response. The returned header carries
    /// `Content-Type`, `Content-Length`, `Server`, `X-Kong-Request-Id` and
    /// `X-Kong-Response-Latency`. Never fails: a header that cannot be set is skipped.
    pub fn render(&self, ctx: &RenderCtx<'_>) -> (ResponseHeader, Bytes) {
        let status = self.status();
        let nginx = self.nginx_family();
        let format = ctx
            .accept
            .and_then(|a| negotiate(a, !nginx))
            .or_else(|| {
                if nginx {
                    Some(
                        ctx.content_type
                            .and_then(|c| negotiate(c, false))
                            .unwrap_or(Format::Plain),
                    )
                } else {
                    None
                }
            })
            .unwrap_or(Format::Json);
        let (format, body) = match self {
            GatewayError::HttpsRedirect { .. } => (format, Bytes::new()),
            GatewayError::PluginJson { body, .. } => (Format::Json, Bytes::from(body.clone())),
            _ => (
                format,
                Bytes::from(template(format, &self.to_string(), ctx.request_id)),
            ),
        };
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut header = ResponseHeader::from(parts);
        let mut set = |name: &str, value: &str| {
            let _ = header.insert_header(name.to_string(), value);
        };
        if !body.is_empty() {
            set("content-type", format.content_type());
        }
        set("content-length", &body.len().to_string());
        set("server", KONG_VERSION_TOKEN);
        set("x-kong-response-latency", &ctx.latency_ms.to_string());
        set("x-kong-request-id", ctx.request_id);
        match self {
            GatewayError::HttpsRequired => {
                set("connection", "Upgrade");
                set("upgrade", "TLS/1.2, HTTP/1.1");
            }
            GatewayError::HttpsRedirect { location, .. } => set("location", location),
            GatewayError::Plugin { headers, .. } | GatewayError::PluginJson { headers, .. } => {
                for (k, v) in headers {
                    set(k, v);
                }
            }
            _ => {}
        }
        let body = if ctx.head { Bytes::new() } else { body };
        (header, body)
    }
}

/// Kong's error templates (§0.1).
fn template(format: Format, message: &str, request_id: &str) -> String {
    match format {
        Format::Json => format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{request_id}\"\n}}"),
        Format::Plain => format!("{message}\nrequest_id: {request_id}\n"),
        Format::Html => format!(
            "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{message}.</p>\n    <p>request_id: {request_id}</p>\n  </body>\n</html>\n"
        ),
        Format::Xml => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{message}</message>\n  <requestid>{request_id}</requestid>\n</error>\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(accept: Option<&'static str>, ct: Option<&'static str>) -> RenderCtx<'static> {
        RenderCtx {
            accept,
            content_type: ct,
            request_id: "0123456789abcdef0123456789abcdef",
            head: false,
            latency_ms: 0,
        }
    }

    #[test]
    fn no_route_is_json_by_default() {
        let (h, body) = GatewayError::NoRoute.render(&ctx(None, None));
        assert_eq!(h.status.as_u16(), 404);
        assert_eq!(
            body,
            "{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"0123456789abcdef0123456789abcdef\"\n}"
        );
        assert_eq!(h.headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(
            h.headers["x-kong-request-id"],
            "0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn accept_picks_the_highest_q() {
        assert_eq!(negotiate("text/plain", true), Some(Format::Plain));
        assert_eq!(
            negotiate("text/html;q=0.5, application/xml;q=0.9", true),
            Some(Format::Xml)
        );
        assert_eq!(negotiate("image/png", true), None);
        assert_eq!(negotiate("*/*", true), Some(Format::Json));
        assert_eq!(negotiate("*/*", false), None);
        let (_, body) = GatewayError::NoRoute.render(&ctx(Some("text/plain"), None));
        assert_eq!(
            body,
            "no Route matched with those values\nrequest_id: 0123456789abcdef0123456789abcdef\n"
        );
    }

    #[test]
    fn nginx_family_defaults_to_text_plain_then_content_type() {
        let (h, body) = GatewayError::UpstreamInvalid.render(&ctx(Some("*/*"), None));
        assert_eq!(h.status.as_u16(), 502);
        assert!(body.starts_with(
            b"An invalid response was received from the upstream server\nrequest_id: "
        ));
        let (h, _) = GatewayError::UpstreamTimeout.render(&ctx(None, Some("application/json")));
        assert_eq!(h.headers["content-type"], "application/json; charset=utf-8");
    }

    #[test]
    fn https_required_and_redirect_headers() {
        let (h, _) = GatewayError::HttpsRequired.render(&ctx(None, None));
        assert_eq!(h.status.as_u16(), 426);
        assert_eq!(h.headers["upgrade"], "TLS/1.2, HTTP/1.1");
        let (h, body) = GatewayError::HttpsRedirect {
            status: 301,
            location: "https://a.test/x?y=1".into(),
        }
        .render(&ctx(None, None));
        assert_eq!(h.status.as_u16(), 301);
        assert_eq!(h.headers["location"], "https://a.test/x?y=1");
        assert!(body.is_empty());
    }

    #[test]
    fn html_adds_a_full_stop_and_head_has_no_body() {
        let (_, body) = GatewayError::NoRoute.render(&ctx(Some("text/html"), None));
        assert!(
            String::from_utf8_lossy(&body).contains("<p>no Route matched with those values.</p>")
        );
        let mut c = ctx(None, None);
        c.head = true;
        let (h, body) = GatewayError::NoRoute.render(&c);
        assert!(body.is_empty());
        assert_ne!(h.headers["content-length"], "0");
    }
}
