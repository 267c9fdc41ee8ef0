//! `proxy-cache` (priority 100): Kong's edge response cache (§6) with a bounded
//! memory tier, an optional Redis tier, coalesced misses and stale-if-error.
//!
//! The access phase answers hits itself (`Flow::Respond`). On a miss the request
//! goes upstream and a [`CacheState`] in the request context watches the response:
//! the proxy hands it the upstream header, the body chunks and upstream failures,
//! and it stores the response when the body ends.

pub mod config;
pub mod key;
pub mod policy;
pub mod store;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use uuid::Uuid;

use super::{Flow, Plugin};
use crate::error::GatewayError;
use crate::plugins::redis_link::{RedisLink, RedisLinks};
use crate::proxy::ctx::RequestCtx;
use config::Strategy;
pub use config::{decode, Config, NAME};
use policy::{Freshness, RequestDecision};
use store::{CacheStore, Entry, Fill, FillGuard};

/// How long a request waits for another request that is fetching the same key.
const FILL_WAIT: Duration = Duration::from_secs(10);

/// `X-Cache-Status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not in the cache; fetched (and stored if the response allows).
    Miss,
    /// Answered from the cache.
    Hit,
    /// In the cache but stale; fetched again.
    Refresh,
    /// Not cacheable (request or response).
    Bypass,
    /// A stale entry answered because the upstream failed (beyond Kong).
    Stale,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Miss => "Miss",
            Status::Hit => "Hit",
            Status::Refresh => "Refresh",
            Status::Bypass => "Bypass",
            Status::Stale => "Stale",
        }
    }
}

/// One plugin instance's config and stores.
struct Instance {
    config: Config,
    route_scope: Option<Uuid>,
    store: Arc<CacheStore>,
    redis: Option<Arc<RedisLink>>,
}

/// The running plugin.
pub struct ProxyCache {
    inner: Arc<Instance>,
}

/// A response being stored.
struct Capture {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: BytesMut,
    ttl: u64,
    storage_ttl: u64,
}

/// The cache's view of one request, kept in the request context from the access
/// phase to the end of the response.
pub struct CacheState {
    inner: Arc<Instance>,
    key: Option<String>,
    status: Status,
    debug: bool,
    head: bool,
    fill: Option<FillGuard>,
    stale: Option<Arc<Entry>>,
    capture: Option<Capture>,
}

impl ProxyCache {
    /// Builds the plugin; runs when a config is compiled. Entries live in `store`,
    /// which outlives the config.
    pub fn new(
        config: Config,
        route_scope: Option<Uuid>,
        store: Arc<CacheStore>,
        links: &RedisLinks,
    ) -> Self {
        let redis = match &config.strategy {
            Strategy::Redis(settings) => Some(links.get(settings)),
            Strategy::Memory => None,
        };
        ProxyCache {
            inner: Arc::new(Instance {
                config,
                route_scope,
                store,
                redis,
            }),
        }
    }

    fn state(&self, status: Status, debug: bool, head: bool) -> CacheState {
        CacheState {
            inner: self.inner.clone(),
            key: None,
            status,
            debug,
            head,
            fill: None,
            stale: None,
            capture: None,
        }
    }

    /// Memory first, then Redis (whose hit is copied into memory).
    async fn lookup(&self, key: &str, now: u64) -> Option<Arc<Entry>> {
        let inner = &self.inner;
        if let Some(e) = inner.store.get_memory(key, now) {
            return Some(e);
        }
        let link = inner.redis.as_ref()?;
        let entry = Arc::new(store::get_redis(link, &inner.store, key).await?);
        if entry.expired(now) {
            return None;
        }
        inner.store.put_memory(entry.clone());
        Some(entry)
    }
}

/// Builds the answer for a hit (or a stale answer): stored status, headers and body,
/// `Age`, and no body for HEAD.
fn replay(entry: &Entry, now: u64, head: bool) -> Option<(Box<ResponseHeader>, Bytes)> {
    let mut header = ResponseHeader::build(entry.status, Some(entry.headers.len() + 4)).ok()?;
    for (k, v) in &entry.headers {
        if policy::replayable(k) {
            let value = http::HeaderValue::from_bytes(v).ok()?;
            header.append_header(k.clone(), value).ok()?;
        }
    }
    header
        .insert_header("content-length", entry.body.len().to_string())
        .ok()?;
    header
        .insert_header("age", entry.age(now).to_string())
        .ok()?;
    let body = if head {
        Bytes::new()
    } else {
        entry.body.clone()
    };
    Some((Box::new(header), body))
}

impl CacheState {
    /// Called with the upstream's response header, before anything reaches the
    /// client: decides whether to store it, or (upstream 5xx with a usable stale
    /// entry) replaces it with the stale entry.
    ///
    /// Returns `true` when the upstream answered 5xx and a stale entry within its
    /// grace period should answer instead (the proxy then abandons the upstream
    /// response and calls [`CacheState::stale_for_error`]).
    pub fn on_upstream_response(&mut self, resp: &mut ResponseHeader) -> bool {
        if !matches!(self.status, Status::Miss | Status::Refresh) {
            return false;
        }
        let status = resp.status.as_u16();
        if status < 200 {
            // 1xx (103 Early Hints): the final response is still to come.
            return false;
        }
        if status >= 500 && self.usable_stale().is_some() {
            return true;
        }
        if self.head {
            return false;
        }
        let too_big = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|n| n > self.inner.config.max_body_size);
        let cfg = &self.inner.config;
        match policy::response(cfg, status, &resp.headers, SystemTime::now()).filter(|_| !too_big) {
            Some(s) => {
                let headers = resp
                    .headers
                    .iter()
                    .filter(|(k, _)| policy::replayable(k.as_str()))
                    .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                    .collect();
                self.capture = Some(Capture {
                    status,
                    headers,
                    body: BytesMut::new(),
                    ttl: s.ttl,
                    storage_ttl: s.storage_ttl,
                });
            }
            None => {
                self.status = Status::Bypass;
                // Waiters need not wait for a response that will not be stored.
                self.fill = None;
            }
        }
        false
    }

    /// Called with each response body chunk: collects a response being stored and
    /// stores it at the end; swaps in the stale body when serving stale.
    pub fn on_body(&mut self, body: &mut Option<Bytes>, end: bool) {
        let Some(capture) = self.capture.as_mut() else {
            return;
        };
        if let Some(chunk) = body.as_ref() {
            if capture.body.len() + chunk.len() > self.inner.config.max_body_size {
                self.capture = None;
                self.fill = None;
                return;
            }
            capture.body.extend_from_slice(chunk);
        }
        if end {
            self.store();
        }
    }

    fn store(&mut self) {
        let (Some(capture), Some(key)) = (self.capture.take(), self.key.clone()) else {
            return;
        };
        let entry = Arc::new(Entry {
            key,
            status: capture.status,
            headers: capture.headers,
            body: capture.body.freeze(),
            stored_at_ms: store::now_ms(),
            ttl: capture.ttl,
            storage_ttl: capture.storage_ttl,
        });
        let inner = &self.inner;
        let in_memory = inner.store.put_memory(entry.clone());
        if in_memory || inner.redis.is_some() {
            inner.store.stats.stores.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(link) = &inner.redis {
            store::put_redis(link.clone(), inner.store.clone(), entry);
        }
        // Stored: the requests waiting for this key may now read it.
        self.fill = None;
    }

    /// The stale entry, if the upstream failed within its grace period.
    fn usable_stale(&self) -> Option<(Box<ResponseHeader>, Bytes)> {
        let e = self.stale.as_ref()?;
        let now = store::now_ms();
        let grace = self.inner.config.stale_if_error;
        if grace == 0 || e.must_revalidate() || e.age(now) > e.ttl.saturating_add(grace) {
            return None;
        }
        replay(e, now, self.head)
    }

    /// Called when the upstream could not be reached: a stale answer to send instead
    /// of the error, if the entry's grace period allows.
    pub fn stale_for_error(&mut self) -> Option<(Box<ResponseHeader>, Bytes)> {
        let answer = self.usable_stale()?;
        self.status = Status::Stale;
        self.fill = None;
        Some(answer)
    }

    /// Adds `X-Cache-Status` and `X-Cache-Key` (as configured, or always with a
    /// `Kong-Debug` request header).
    pub fn decorate(&self, resp: &mut ResponseHeader) {
        let shown = self.inner.config.response_headers;
        if self.debug || shown.x_cache_status {
            let _ = resp.insert_header("X-Cache-Status", self.status.as_str());
        }
        if let Some(key) = &self.key {
            if self.debug || shown.x_cache_key {
                let _ = resp.insert_header("X-Cache-Key", key.as_str());
            }
        }
        if matches!(self.status, Status::Hit | Status::Stale) && !(self.debug || shown.age) {
            resp.remove_header("age");
        }
    }
}

#[async_trait]
impl Plugin for ProxyCache {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        100
    }

    async fn access(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let req = session.req_header();
        let debug = req.headers.contains_key("kong-debug");
        let head = req.method == http::Method::HEAD;
        let cfg = &self.inner.config;
        let directives = match policy::request(cfg, &req.method, &req.headers) {
            RequestDecision::Bypass => {
                ctx.cache = Some(Box::new(self.state(Status::Bypass, debug, head)));
                return Ok(Flow::Continue);
            }
            RequestDecision::Lookup(d) => d,
        };
        let runtime = ctx.runtime.clone();
        let consumer = ctx.auth.as_ref().and_then(|a| {
            runtime
                .as_ref()?
                .config
                .consumers
                .get(a.consumer)
                .map(|c| c.id)
        });
        let route = ctx
            .route
            .and_then(|r| runtime.as_ref()?.config.routes.get(r).map(|r| r.id))
            .or(self.inner.route_scope)
            .unwrap_or_default();
        let host = req
            .headers
            .get(http::header::HOST)
            .or_else(|| req.headers.get(":authority"))
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_ascii_lowercase();
        let scheme = if session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some()
        {
            "https"
        } else {
            "http"
        };
        let key = key::cache_key(
            cfg,
            &key::KeyInput {
                consumer,
                route,
                method: &req.method,
                scheme,
                host: &host,
                path: &ctx.normalized_path,
                query: req.uri.query(),
                headers: &req.headers,
            },
        );
        let mut state = self.state(Status::Miss, debug, head);
        state.key = Some(key.clone());
        let stats = &self.inner.store.stats;
        let now = store::now_ms();
        let found = self.lookup(&key, now).await;
        let found = match found {
            Some(e) => Some(e),
            None if !head && !directives.only_if_cached => {
                // Coalesce: one request fetches a missing key, the others wait for it.
                match self.inner.store.fill(&key) {
                    Fill::Leader(guard) => {
                        state.fill = Some(guard);
                        None
                    }
                    Fill::Wait(rx) => {
                        stats.coalesced.fetch_add(1, Ordering::Relaxed);
                        store::wait_fill(rx, FILL_WAIT).await;
                        self.lookup(&key, store::now_ms()).await
                    }
                }
            }
            None => None,
        };
        let now = store::now_ms();
        if let Some(entry) = found {
            let mut directives = directives.clone();
            if entry.must_revalidate() {
                // A stale entry that must be revalidated is never served as is.
                directives.max_stale = None;
            }
            match policy::freshness(cfg, entry.age(now), entry.ttl, &directives) {
                Freshness::Fresh => {
                    if let Some((mut header, body)) = replay(&entry, now, head) {
                        stats.hits.fetch_add(1, Ordering::Relaxed);
                        state.status = Status::Hit;
                        state.fill = None;
                        state.decorate(&mut header);
                        ctx.cache = Some(Box::new(state));
                        return Ok(Flow::Respond(header, body));
                    }
                }
                Freshness::Stale => {
                    state.status = Status::Refresh;
                    state.stale = Some(entry);
                    if state.fill.is_none() && !head && !directives.only_if_cached {
                        // One request refreshes; the others wait for its answer.
                        match self.inner.store.fill(&key) {
                            Fill::Leader(guard) => state.fill = Some(guard),
                            Fill::Wait(rx) => {
                                stats.coalesced.fetch_add(1, Ordering::Relaxed);
                                store::wait_fill(rx, FILL_WAIT).await;
                                let now = store::now_ms();
                                if let Some(fresh) = self.lookup(&key, now).await {
                                    if policy::freshness(
                                        cfg,
                                        fresh.age(now),
                                        fresh.ttl,
                                        &directives,
                                    ) == Freshness::Fresh
                                    {
                                        if let Some((mut header, body)) = replay(&fresh, now, head)
                                        {
                                            stats.hits.fetch_add(1, Ordering::Relaxed);
                                            state.status = Status::Hit;
                                            state.decorate(&mut header);
                                            ctx.cache = Some(Box::new(state));
                                            return Ok(Flow::Respond(header, body));
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } else {
            stats.misses.fetch_add(1, Ordering::Relaxed);
        }
        if directives.only_if_cached {
            return Err(GatewayError::PluginJson {
                status: 504,
                body: String::new(),
                headers: Vec::new(),
            });
        }
        ctx.cache = Some(Box::new(state));
        Ok(Flow::Continue)
    }

    fn response(&self, ctx: &RequestCtx, resp: &mut ResponseHeader) {
        if let Some(state) = &ctx.cache {
            state.decorate(resp);
        }
    }
}

/// Counters for `/status`.
pub fn stats_json(store: &CacheStore) -> serde_json::Value {
    let s = &store.stats;
    serde_json::json!({
        "hits": s.hits.load(Ordering::Relaxed),
        "misses": s.misses.load(Ordering::Relaxed),
        "stores": s.stores.load(Ordering::Relaxed),
        "coalesced": s.coalesced.load(Ordering::Relaxed),
        "redis_errors": s.redis_errors.load(Ordering::Relaxed),
    })
}
