//! The Pingora `ProxyHttp` implementation. Each phase only dispatches: routing to
//! `router`, path building to `router::upstream_path`, headers to `forwarding`,
//! policy to the route's plugin chain, and every made-up response to
//! [`GatewayError::render`].

pub mod ctx;
pub mod forwarding;
pub mod request_body;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::Version;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::model::UpstreamScheme;
use crate::error::{GatewayError, RenderCtx, KONG_VERSION_TOKEN};
use crate::plugins::Flow;
use crate::router::{normalize, split_host_header, upstream_path, RequestInfo};
use crate::state::Gateway;
use ctx::RequestCtx;

/// A response a plugin made in the access phase: header and body.
type Answer = (Box<ResponseHeader>, Bytes);

/// The proxy for one listener. The HTTP and HTTPS listeners each get one, sharing
/// the [`Gateway`] state.
pub struct GatewayProxy {
    /// Shared state.
    pub gateway: Arc<Gateway>,
    /// Whether this listener terminates TLS.
    pub tls: bool,
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a `Host` value is a plausible `host[:port]`: no path, user info,
/// whitespace or dot-dot tricks that could confuse routing or upstream logs.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && !h.contains("..")
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
        })
}

/// The request's host: the `Host` header, else the HTTP/2 `:authority`.
fn request_host(req: &RequestHeader) -> Option<&str> {
    header_str(req, "host").or_else(|| req.uri.authority().map(|a| a.as_str()))
}

impl GatewayProxy {
    fn listener_port(session: &Session) -> u16 {
        session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map_or(0, |a| a.port())
    }

    /// Routes the request and runs the access phase of its plugins.
    ///
    /// Returns `Ok` when the request should go upstream, or the error to answer with.
    async fn route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Answer>, GatewayError> {
        let runtime = self.gateway.runtime.load_full();
        ctx.runtime = Some(runtime.clone());
        let listener_port = Self::listener_port(session);
        let req = session.req_header();
        let (raw_path, query) = match req.uri.path_and_query() {
            Some(pq) => match pq.as_str().split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (pq.as_str().to_string(), None),
            },
            None => ("/".to_string(), None),
        };
        let path = normalize::normalize_path(&raw_path).map_err(|_| GatewayError::BadRequest)?;
        ctx.raw_path = raw_path;
        ctx.normalized_path = path.clone();
        if req.method.as_str() == "TRACE" {
            return Err(GatewayError::MethodNotAllowed);
        }
        let host_headers = req.headers.get_all(http::header::HOST).iter().count();
        if host_headers > 1 || (host_headers == 0 && req.version == Version::HTTP_11) {
            return Err(GatewayError::BadRequest);
        }
        let (host, host_port) = match request_host(req) {
            Some(h) if !valid_host(h) => return Err(GatewayError::BadRequest),
            Some(h) => {
                let (name, port) = split_host_header(h);
                (Some(name), port)
            }
            None => (None, None),
        };
        let info = RequestInfo {
            method: req.method.as_str(),
            host,
            port: host_port.unwrap_or(listener_port),
            path: &path,
            headers: &req.headers,
        };
        let found = runtime
            .router
            .find(&runtime.config, &info)
            .ok_or(GatewayError::NoRoute)?;
        let route = &runtime.config.routes[found.route];
        ctx.route = Some(found.route);

        if !self.tls && !route.protocols.http {
            return Err(if route.https_redirect_status_code == 426 {
                GatewayError::HttpsRequired
            } else {
                let host = host.unwrap_or("").to_ascii_lowercase();
                let uri = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
                GatewayError::HttpsRedirect {
                    status: route.https_redirect_status_code,
                    location: format!("https://{host}{uri}"),
                }
            });
        }
        let service = route
            .service
            .and_then(|s| runtime.config.services.get(s))
            .ok_or(GatewayError::NoService)?;
        let prefix = if route.strip_path {
            &path[..found.prefix_len]
        } else {
            "/"
        };
        if route.strip_path && !route.paths.is_empty() && prefix != "/" {
            ctx.stripped_prefix = Some(prefix.to_string());
        }
        ctx.upstream_uri = Some(upstream_path::build(
            service.path.as_deref(),
            route.strip_path,
            prefix,
            &path,
            query.as_deref(),
        ));

        ctx.chain = runtime.chains.get(found.route).cloned().unwrap_or_default();
        let mut i = 0;
        let mut chain_consumer = None;
        while let Some(plugin) = ctx.chain.get(i).cloned() {
            match plugin.access(session, ctx).await? {
                Flow::Continue => {}
                Flow::Respond(header, body) => return Ok(Some((header, body))),
            }
            i += 1;
            // Kong looks each plugin's configuration up with the consumer known at
            // the moment it runs (§7.8). When an authentication plugin changes the
            // consumer, the plugins still to run come from that consumer's chain.
            let consumer = ctx.auth.as_ref().map(|a| a.consumer);
            if consumer != chain_consumer {
                chain_consumer = consumer;
                let base = consumer
                    .and_then(|c| runtime.consumer_chains.get(&(found.route, c)))
                    .or_else(|| runtime.chains.get(found.route));
                let runs_later = |p: &&Arc<dyn crate::plugins::Plugin>| {
                    (std::cmp::Reverse(p.priority()), p.name())
                        > (std::cmp::Reverse(plugin.priority()), plugin.name())
                };
                let rest: Vec<_> = base
                    .map(|b| b.iter().filter(runs_later).cloned().collect())
                    .unwrap_or_default();
                ctx.chain.truncate(i);
                ctx.chain.extend(rest);
            }
        }
        Ok(None)
    }

    /// Adds what Kong adds to a proxied response (Via, Server, latencies, request
    /// id) and lets the plugins add theirs. Runs for upstream answers and cache hits.
    fn decorate(ctx: &RequestCtx, resp: &mut ResponseHeader) -> pingora_error::Result<()> {
        let via = forwarding::append_via(
            resp.headers.get("via").and_then(|v| v.to_str().ok()),
            Version::HTTP_11,
        );
        resp.insert_header("via", via)?;
        if !resp.headers.contains_key("server") {
            resp.insert_header("server", KONG_VERSION_TOKEN)?;
        }
        resp.insert_header(
            "x-kong-upstream-latency",
            ctx.upstream_latency_ms.unwrap_or(0).to_string(),
        )?;
        resp.insert_header("x-kong-proxy-latency", proxy_latency_ms(ctx).to_string())?;
        resp.insert_header("x-kong-request-id", ctx.request_id.as_str())?;
        for plugin in &ctx.chain {
            plugin.response(ctx, resp);
        }
        Ok(())
    }

    /// Writes an answer a plugin made (a cache hit), decorated like a proxied
    /// response.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        mut header: Box<ResponseHeader>,
        body: Bytes,
    ) {
        if let Err(e) = Self::decorate(ctx, &mut header) {
            tracing::warn!(request_id = %ctx.request_id, "cannot decorate a plugin answer: {e}");
        }
        Self::send(session, ctx, header, body).await;
    }

    /// Writes a complete response the gateway made (header, then the body if any).
    /// A client that went away is only worth a debug line.
    async fn send(
        session: &mut Session,
        ctx: &RequestCtx,
        header: Box<ResponseHeader>,
        body: Bytes,
    ) {
        let end = body.is_empty();
        if let Err(e) = session.write_response_header(header, end).await {
            tracing::debug!(request_id = %ctx.request_id, "client went away before the response: {e}");
            return;
        }
        if !end {
            if let Err(e) = session.write_response_body(Some(body), true).await {
                tracing::debug!(request_id = %ctx.request_id, "client went away during the response: {e}");
            }
        }
    }

    /// Writes a gateway-made response. Runs at most once per request.
    async fn respond(&self, session: &mut Session, ctx: &RequestCtx, err: &GatewayError) {
        let req = session.req_header();
        let render = RenderCtx {
            accept: header_str(req, "accept"),
            content_type: header_str(req, "content-type"),
            request_id: &ctx.request_id,
            head: req.method == http::Method::HEAD,
            latency_ms: ctx.started.elapsed().as_millis(),
        };
        let (mut header, body) = err.render(&render);
        // As Kong runs every plugin's header filter on its own answers: the
        // correlation id is echoed on a 401 too, and the headers of plugins that ran
        // (rate limits) are kept.
        for plugin in &ctx.chain {
            plugin.response(ctx, &mut header);
        }
        if ctx.proxy_started.is_some() {
            // Kong marks a request as proxied once it tried the upstream: its 502/504
            // carry the proxy headers instead of X-Kong-Response-Latency (§8.2).
            header.remove_header("x-kong-response-latency");
            let via = forwarding::append_via(None, Version::HTTP_11);
            let _ = header.insert_header("via", via);
            let _ = header.insert_header("x-kong-proxy-latency", proxy_latency_ms(ctx).to_string());
            let upstream_ms = ctx.upstream_sent.map_or(0, |t| t.elapsed().as_millis());
            let _ = header.insert_header("x-kong-upstream-latency", upstream_ms.to_string());
        }
        Self::send(session, ctx, Box::new(header), body).await;
    }

    /// Maps a Pingora error to the response Kong would give (§8.4).
    fn classify(e: &Error) -> Option<GatewayError> {
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                return Some(GatewayError::UpstreamTimeout)
            }
            ErrorType::HTTPStatus(code) if (400..500).contains(code) => {
                return Some(GatewayError::BadRequest)
            }
            _ => {}
        }
        match e.esource() {
            ErrorSource::Upstream => Some(GatewayError::UpstreamInvalid),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => None,
                _ => Some(GatewayError::BadRequest),
            },
            ErrorSource::Internal | ErrorSource::Unset => Some(GatewayError::Internal),
        }
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let mut ctx = RequestCtx::new();
        ctx._inflight = Some(self.gateway.stats.inflight());
        ctx
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        // Serve pipelined HTTP/1.1 requests in order, as nginx does, instead of
        // dropping the ones that arrived early.
        session.downstream_session.set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        match self.route(session, ctx).await {
            Ok(None) => Ok(false),
            Ok(Some((header, body))) => {
                self.answer(session, ctx, header, body).await;
                Ok(true)
            }
            Err(err) => {
                if matches!(
                    err,
                    GatewayError::PayloadTooLarge
                        | GatewayError::RequestTimeout
                        | GatewayError::BadRequest
                ) {
                    // Part of the body may still be unread, or unreadable: this
                    // connection cannot carry another request (nginx closes too).
                    session.set_keepalive(None);
                }
                self.respond(session, ctx, &err).await;
                ctx.failure = Some(err);
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let runtime = ctx
            .runtime
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no config snapshot"))?;
        let service = ctx
            .route
            .and_then(|r| runtime.config.routes.get(r))
            .and_then(|r| r.service)
            .and_then(|s| runtime.config.services.get(s))
            .ok_or_else(|| {
                Error::explain(ErrorType::InternalError, "no service for the matched route")
            })?;
        ctx.tries += 1;
        if ctx.proxy_started.is_none() {
            ctx.proxy_started = Some(Instant::now());
        }
        let Some(addr) = self.gateway.resolve(&service.host, service.port).await else {
            ctx.failure = Some(GatewayError::NameResolution);
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                "name resolution failed",
            ));
        };
        let tls = service.protocol == UpstreamScheme::Https;
        let mut peer = HttpPeer::new(addr, tls, service.host.clone());
        peer.options.connection_timeout = Some(service.connect_timeout);
        peer.options.read_timeout = Some(service.read_timeout);
        peer.options.write_timeout = Some(service.write_timeout);
        peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
        peer.options.verify_cert = service.tls_verify;
        peer.options.verify_hostname = service.tls_verify;
        Ok(Box::new(peer))
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // As nginx's `proxy_next_upstream error timeout`: an idempotent request whose
        // response has not started may go to the upstream again, up to
        // `service.retries` more times. Anything else is never replayed.
        // Only the upstream's failures: a client that went away, or an answer the
        // gateway turned down on purpose (`HTTPStatus`), is not a reason to ask again.
        let replayable = session.req_header().method.is_idempotent()
            && *e.esource() == ErrorSource::Upstream
            && !matches!(e.etype(), ErrorType::HTTPStatus(_))
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if replayable && ctx.tries <= service_retries(ctx) {
            e.set_retry(true);
        } else if replayable {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        e
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.tries <= service_retries(ctx) && ctx.failure.is_none() {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let Some(runtime) = ctx.runtime.clone() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no config snapshot",
            ));
        };
        let Some(route_idx) = ctx.route else {
            return Err(Error::explain(ErrorType::InternalError, "no route"));
        };
        let route = &runtime.config.routes[route_idx];
        let service = route
            .service
            .and_then(|s| runtime.config.services.get(s))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no service"))?;
        let downstream = session.req_header();
        let client_version = downstream.version;
        let client_host = request_host(downstream).map(str::to_string);

        if let Some(uri) = &ctx.upstream_uri {
            let uri: http::Uri = uri.parse().map_err(|_| {
                Error::explain(ErrorType::InternalError, "built an invalid upstream uri")
            })?;
            upstream.set_uri(uri);
        }
        upstream.set_version(Version::HTTP_11);
        forwarding::strip_request_hop_by_hop(upstream);
        let host = if route.preserve_host {
            client_host.clone().unwrap_or_default()
        } else {
            forwarding::upstream_host(&service.host, service.port, service.protocol.default_port())
        };
        let set = |h: &mut RequestHeader, name: &'static str, value: &str| {
            h.insert_header(name, value).map(|_| ())
        };
        set(upstream, "host", &host)?;

        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let xff = match header_str(upstream, "x-forwarded-for") {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {client_ip}"),
            _ => client_ip.clone(),
        };
        set(upstream, "x-real-ip", &client_ip)?;
        set(upstream, "x-forwarded-for", &xff)?;
        set(
            upstream,
            "x-forwarded-proto",
            if self.tls { "https" } else { "http" },
        )?;
        let fwd_host = client_host
            .as_deref()
            .map(|h| split_host_header(h).0)
            .unwrap_or("");
        set(upstream, "x-forwarded-host", fwd_host)?;
        set(
            upstream,
            "x-forwarded-port",
            &Self::listener_port(session).to_string(),
        )?;
        set(upstream, "x-forwarded-path", &ctx.raw_path)?;
        match &ctx.stripped_prefix {
            Some(p) => set(upstream, "x-forwarded-prefix", p)?,
            None => {
                upstream.remove_header("x-forwarded-prefix");
            }
        }
        let via = forwarding::append_via(header_str(upstream, "via"), client_version);
        set(upstream, "via", &via)?;
        set(upstream, "x-kong-request-id", &ctx.request_id)?;
        crate::consumers::set_upstream_headers(
            upstream,
            &runtime.config.consumers,
            ctx.auth.as_ref(),
        );
        for plugin in &ctx.chain {
            plugin.upstream_request(ctx, upstream);
        }
        if matches!(ctx.request_body, request_body::BodyState::Buffered(_)) {
            // The gateway already answered `Expect: 100-continue` and holds the body.
            upstream.remove_header("expect");
        }
        if let Some(body) = &ctx.body_replacement {
            // The whole body is known: send it with its length, whatever framing the
            // client used.
            upstream.remove_header("transfer-encoding");
            set(upstream, "content-length", &body.len().to_string())?;
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Option<std::time::Duration>> {
        if let Some(cache) = ctx.cache.as_mut() {
            cache.on_body(body, end_of_stream);
        }
        Ok(None)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        // A buffered body arrives here whole, once per upstream attempt. An empty
        // replacement is sent as no data at all: an empty chunk would end the body.
        if let Some(replacement) = &ctx.body_replacement {
            if body.as_ref().is_some_and(|d| !d.is_empty()) {
                *body = (!replacement.is_empty()).then(|| replacement.clone());
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        ctx.upstream_latency_ms = ctx.upstream_sent.map(|t| t.elapsed().as_millis());
        if let Some(cache) = ctx.cache.as_mut() {
            if cache.on_upstream_response(upstream_response) {
                // The upstream failed and a stale entry may answer instead: stop here;
                // `fail_to_proxy` sends the whole stale response.
                let status = upstream_response.status.as_u16();
                return Err(Error::explain(
                    ErrorType::HTTPStatus(status),
                    "upstream failed; answering from a stale cache entry",
                )
                .into_up());
            }
        }
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS
            && !session
                .req_header()
                .headers
                .contains_key(http::header::UPGRADE)
        {
            // An upgrade nobody asked for would turn the client connection into a raw
            // tunnel to the upstream: treat it as the invalid response it is.
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "upstream switched protocols without an upgrade request",
            )
            .into_up());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        if resp.status.is_informational() {
            // 1xx (103 Early Hints) go out as the upstream sent them; the final
            // response gets Kong's and the plugins' headers.
            return Ok(());
        }
        let te_trailers = header_str(session.req_header(), "te").is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
        forwarding::strip_response_hop_by_hop(resp, te_trailers);
        Self::decorate(ctx, resp)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // A stale cached answer beats an error, within its grace period.
        if session.response_written().is_none() {
            if let Some((header, body)) = ctx.cache.as_mut().and_then(|c| c.stale_for_error()) {
                tracing::warn!(request_id = %ctx.request_id, "upstream failed ({e}); answered from a stale cache entry");
                let status = header.status.as_u16();
                // Pingora will not reuse this connection: say so (`Connection: close`)
                // so the client does not send its next request into a closed socket.
                session.set_keepalive(None);
                self.answer(session, ctx, header, body).await;
                return FailToProxy {
                    error_code: status,
                    can_reuse_downstream: false,
                };
            }
        }
        let err = ctx.failure.take().or_else(|| Self::classify(e));
        let code = match &err {
            Some(err) => {
                if err == &GatewayError::Internal {
                    tracing::error!(request_id = %ctx.request_id, "internal error: {e}");
                } else {
                    tracing::warn!(request_id = %ctx.request_id, status = err.status(), "proxy error: {e}");
                }
                if session.response_written().is_none() {
                    // Pingora will not reuse this connection, so say so: a client that
                    // reused it would otherwise meet a reset.
                    session.set_keepalive(None);
                    self.respond(session, ctx, err).await;
                }
                err.status()
            }
            None => 0,
        };
        ctx.failure = err;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let route = ctx
            .runtime
            .as_ref()
            .zip(ctx.route)
            .and_then(|(rt, r)| rt.config.routes.get(r).and_then(|r| r.name.clone()))
            .unwrap_or_default();
        // The query string is left out on purpose: it may carry API keys.
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            method = %req.method,
            path = %ctx.raw_path,
            status,
            route = %route,
            tries = ctx.tries,
            latency_ms = ctx.started.elapsed().as_millis() as u64,
        );
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // Errors with a known client-facing meaning were already logged once, and a
        // client that goes away is not the gateway's error (a client could otherwise
        // flood the error log).
        ctx.failure.is_some() || error.esource() == &ErrorSource::Downstream
    }

    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        // Pingora logs this with its errors. The query string is left out because it
        // may carry API keys or tokens.
        let req = session.req_header();
        let host = request_host(req).unwrap_or("-");
        format!("{} {}, Host: {host}", req.method, req.uri.path())
    }
}

/// `retries` of the matched route's service (0 when there is none).
fn service_retries(ctx: &RequestCtx) -> u32 {
    ctx.runtime
        .as_ref()
        .and_then(|rt| {
            let route = rt.config.routes.get(ctx.route?)?;
            rt.config.services.get(route.service?)
        })
        .map_or(0, |s| s.retries)
}

/// Milliseconds the gateway spent before its first upstream attempt.
fn proxy_latency_ms(ctx: &RequestCtx) -> u128 {
    ctx.proxy_started
        .map_or(0, |p| p.saturating_duration_since(ctx.started).as_millis())
}
