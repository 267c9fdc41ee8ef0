//! The admin listener (localhost by default): `GET /status` now; metrics, config and
//! cache purge endpoints join it in later work.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;

use crate::error::KONG_VERSION_TOKEN;
use crate::state::Gateway;

/// The admin HTTP application.
pub struct AdminApp {
    /// Shared gateway state.
    pub gateway: Arc<Gateway>,
}

impl AdminApp {
    /// The `/status` document: version, uptime, connections, requests and the hash
    /// of the config being served.
    pub fn status(&self) -> serde_json::Value {
        let stats = &self.gateway.stats;
        let runtime = self.gateway.runtime.load();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "compatible_with": KONG_VERSION_TOKEN,
            "uptime_seconds": self.gateway.started.elapsed().as_secs(),
            "server": {
                "connections_active": stats.connections_active.load(Ordering::Relaxed),
                "connections_accepted": stats.connections_accepted.load(Ordering::Relaxed),
                "requests_active": stats.requests_active.load(Ordering::Relaxed),
                "total_requests": stats.requests_total.load(Ordering::Relaxed),
            },
            "configuration_hash": runtime.config.hash,
            "rate_limiting": self.gateway.shared.rate_limits.stats_json(),
            "entities": {
                "services": runtime.config.services.len(),
                "routes": runtime.config.routes.len(),
                "plugins": runtime.config.plugins.len(),
                "consumers": runtime.config.consumers.len(),
                "certificates": runtime.config.certificates.len(),
            },
        })
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        http::header::SERVER,
        http::HeaderValue::from_static(KONG_VERSION_TOKEN),
    );
    resp
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path();
        match (req.method.as_str(), path) {
            ("GET" | "HEAD", "/status") => reply(StatusCode::OK, self.status()),
            (_, "/status") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"message": "Method not allowed"}),
            ),
            _ => reply(StatusCode::NOT_FOUND, json!({"message": "Not found"})),
        }
    }
}
