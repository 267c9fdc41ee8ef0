//! The admin listener (localhost by default): `GET /status`, and the proxy-cache's
//! `GET`/`DELETE /proxy-cache/{key}` and `DELETE /proxy-cache` (Kong §6.4).

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
            "pid": std::process::id(),
            "server": {
                "connections_active": stats.connections_active.load(Ordering::Relaxed),
                "connections_accepted": stats.connections_accepted.load(Ordering::Relaxed),
                "requests_active": stats.requests_active.load(Ordering::Relaxed),
                "total_requests": stats.requests_total.load(Ordering::Relaxed),
            },
            "configuration_hash": runtime.config.hash,
            "rate_limiting": self.gateway.shared.rate_limiting_status(),
            "proxy_cache": crate::plugins::proxy_cache::stats_json(&self.gateway.shared.cache),
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

impl AdminApp {
    /// The Redis links of the proxy-cache instances in the live config.
    fn cache_links(&self) -> Vec<Arc<crate::plugins::redis_link::RedisLink>> {
        let runtime = self.gateway.runtime.load();
        let mut links: Vec<Arc<crate::plugins::redis_link::RedisLink>> = Vec::new();
        for p in &runtime.config.plugins {
            if let crate::plugins::PluginConfig::ProxyCache(c) = &p.config {
                if let crate::plugins::proxy_cache::config::Strategy::Redis(s) = &c.strategy {
                    let link = self.gateway.shared.redis.get(s);
                    if !links.iter().any(|l| Arc::ptr_eq(l, &link)) {
                        links.push(link);
                    }
                }
            }
        }
        links
    }

    /// `GET`/`DELETE /proxy-cache/{key}` and `DELETE /proxy-cache`.
    async fn proxy_cache(&self, method: &str, key: Option<&str>) -> Response<Vec<u8>> {
        use crate::plugins::proxy_cache::store;
        let cache = &self.gateway.shared.cache;
        let links = self.cache_links();
        match (method, key) {
            ("DELETE", None) => {
                cache.clear_memory();
                for link in &links {
                    if let Err(e) = store::clear_redis(link).await {
                        return partial_purge(&e);
                    }
                }
                reply(StatusCode::NO_CONTENT, serde_json::Value::Null)
            }
            ("DELETE", Some(key)) => {
                let mut found = cache.remove_memory(key);
                for link in &links {
                    match store::delete_redis(link, key).await {
                        Ok(there) => found |= there,
                        Err(e) => return partial_purge(&e),
                    }
                }
                if found {
                    reply(StatusCode::NO_CONTENT, serde_json::Value::Null)
                } else {
                    reply(StatusCode::NOT_FOUND, json!({"message": "Not found"}))
                }
            }
            ("GET" | "HEAD", Some(key)) => {
                let now = store::now_ms();
                let mut entry = cache.get_memory(key, now).map(|e| (*e).clone());
                for link in &links {
                    if entry.is_none() {
                        entry = store::get_redis(link, cache, key).await;
                    }
                }
                match entry {
                    Some(e) => reply(
                        StatusCode::OK,
                        json!({
                            "key": e.key,
                            "status": e.status,
                            "headers": e.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect::<Vec<_>>(),
                            "body_len": e.body.len(),
                            "timestamp": e.stored_at_ms / 1000,
                            "ttl": e.ttl,
                            "storage_ttl": e.storage_ttl,
                            "age": e.age(now),
                        }),
                    ),
                    None => reply(StatusCode::NOT_FOUND, json!({"message": "Not found"})),
                }
            }
            _ => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"message": "Method not allowed"}),
            ),
        }
    }
}

/// 503 for a purge that reached memory but not Redis: the client must retry.
fn partial_purge(e: &crate::plugins::redis_link::LinkError) -> Response<Vec<u8>> {
    tracing::warn!("proxy-cache purge incomplete: {e}");
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"message": "purged from memory, but the redis tier is unavailable: retry"}),
    )
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let length = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if length > 0 {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    headers.insert(
        http::header::SERVER,
        http::HeaderValue::from_static(KONG_VERSION_TOKEN),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
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
            (method, "/proxy-cache") => self.proxy_cache(method, None).await,
            (method, p) if p.starts_with("/proxy-cache/") => {
                let key = p.trim_start_matches("/proxy-cache/").to_string();
                let method = method.to_string();
                self.proxy_cache(&method, Some(&key)).await
            }
            (_, "/status") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"message": "Method not allowed"}),
            ),
            _ => reply(StatusCode::NOT_FOUND, json!({"message": "Not found"})),
        }
    }
}
