//! `rate-limiting` (priority 910): Kong's request limits per second … year (§5),
//! counted in this process (`local`) or in Redis shared by every gateway instance
//! (`redis`), with Kong's headers and refusals.
//!
//! Counting is exact: a store checks every period and increments them in one atomic
//! step, so concurrent requests across instances never pass more than the limit,
//! and refused requests are not counted. With `window_type: sliding` the previous
//! window counts in proportion to its overlap, so a client cannot pass twice the
//! limit across a window boundary.

pub mod config;
pub mod redis_check;
pub mod store;
pub mod windows;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use sha2::Digest;
use uuid::Uuid;

use super::{Flow, Plugin};
use crate::error::GatewayError;
use crate::plugins::redis_link::{RedisLink, RedisLinks};
use crate::proxy::ctx::RequestCtx;
pub use config::{decode, Config};
use config::{LimitBy, Policy, WindowType};
use store::{estimate, Outcome, PeriodCheck, Stores};
use windows::Window;

/// Kong's name for the plugin.
pub const NAME: &str = "rate-limiting";

/// Identifiers longer than this are counted under their SHA-256 digest.
const MAX_IDENTIFIER: usize = 128;

/// Where a plugin instance is attached: its counters are keyed by these ids (the
/// all-zero UUID when not scoped), as Kong keys them.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstanceScope {
    /// The route the instance is attached to.
    pub route: Option<Uuid>,
    /// The service the instance is attached to.
    pub service: Option<Uuid>,
    /// The consumer the instance is attached to.
    pub consumer: Option<Uuid>,
}

/// The running plugin.
pub struct RateLimiting {
    config: Config,
    scope: InstanceScope,
    stores: Arc<Stores>,
    redis: Option<Arc<RedisLink>>,
}

impl RateLimiting {
    /// Builds the plugin; runs when a config is compiled. Counters and Redis links
    /// live in `stores`, which outlives the config.
    pub fn new(
        config: Config,
        scope: InstanceScope,
        stores: Arc<Stores>,
        links: &RedisLinks,
    ) -> Self {
        let redis = match &config.policy {
            Policy::Redis(settings) => Some(links.get(settings)),
            Policy::Local => None,
        };
        RateLimiting {
            config,
            scope,
            stores,
            redis,
        }
    }

    /// Kong's identifier (§5.2).
    fn identifier(&self, session: &Session, ctx: &RequestCtx) -> String {
        let ip = || {
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string())
                .unwrap_or_default()
        };
        let runtime = ctx.runtime.as_ref();
        let consumer_id = || {
            let auth = ctx.auth.as_ref()?;
            runtime?
                .config
                .consumers
                .get(auth.consumer)
                .map(|c| c.id.to_string())
        };
        let credential = || ctx.auth.as_ref().and_then(|a| a.credential.clone());
        let id = match &self.config.limit_by {
            LimitBy::Consumer => consumer_id().or_else(credential).unwrap_or_else(ip),
            LimitBy::Credential => credential().unwrap_or_else(ip),
            LimitBy::Ip => ip(),
            LimitBy::Service => ctx
                .route
                .and_then(|r| {
                    let rt = runtime?;
                    let s = rt.config.routes.get(r)?.service?;
                    rt.config.services.get(s).map(|s| s.id.to_string())
                })
                .unwrap_or_else(ip),
            LimitBy::Header(name) => session
                .req_header()
                .headers
                .get(name.as_str())
                .filter(|v| !v.is_empty())
                .map(|v| match v.to_str() {
                    Ok(s) => s.to_string(),
                    // Raw bytes count as they are, not as the client's IP.
                    Err(_) => hex::encode(v.as_bytes()),
                })
                .unwrap_or_else(ip),
            LimitBy::Path(p) => {
                if &ctx.normalized_path == p {
                    p.clone()
                } else {
                    ip()
                }
            }
        };
        // A consumer-scoped instance keeps its own counters, apart from a global or
        // route instance counting the same client.
        let id = match (self.scope.consumer, &self.config.limit_by) {
            (Some(c), by) if *by != LimitBy::Consumer => format!("{c}|{id}"),
            _ => id,
        };
        // Client-chosen identifiers (header values) can be long: a long one is
        // counted under its digest, so a counter's size stays bounded.
        if id.len() > MAX_IDENTIFIER {
            format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(id.as_bytes()))
            )
        } else {
            id
        }
    }

    /// The counters of this request, the windows they count in, and the key prefix
    /// (instance and identifier) shared by all of them.
    fn checks(&self, identifier: &str, now_ms: i64) -> (Vec<PeriodCheck>, Vec<Window>, String) {
        let zero = Uuid::nil();
        let prefix = format!(
            "ratelimit:{}:{}:{identifier}",
            self.scope.route.unwrap_or(zero),
            self.scope.service.unwrap_or(zero)
        );
        let sliding = self.config.window_type == WindowType::Sliding;
        let mut checks = Vec::with_capacity(self.config.limits.len());
        let mut wins = Vec::with_capacity(self.config.limits.len());
        for &(period, limit) in &self.config.limits {
            let w = Window::at(period, now_ms);
            let ttl = period.nominal_seconds().max(w.length_ms as u64 / 1000);
            checks.push(PeriodCheck {
                key: format!("{prefix}:{}:{}", w.start_ms, period.name()),
                previous_key: sliding
                    .then(|| format!("{prefix}:{}:{}", w.previous_start_ms, period.name())),
                limit,
                ttl_seconds: if sliding { ttl * 2 } else { ttl },
                previous_weight: if sliding { w.previous_weight() } else { 0.0 },
            });
            wins.push(w);
        }
        (checks, wins, prefix)
    }

    /// Kong's headers (§5.4) for an outcome; the refusal also gets `Retry-After`.
    fn headers(
        &self,
        checks: &[PeriodCheck],
        wins: &[Window],
        outcome: &Outcome,
    ) -> (Vec<(String, String)>, Option<u64>) {
        let blocked = !outcome.admitted;
        let mut headers = Vec::new();
        // (remaining, window length, reset) of the period that sets RateLimit-*.
        let mut best: Option<(u64, u64, u64, u64)> = None;
        for ((check, win), usage) in checks.iter().zip(wins).zip(&outcome.usage) {
            let used = estimate(check, *usage);
            let room = check.limit.saturating_sub(used);
            let is_stop = room == 0;
            // Kong takes one off for this request, except on the periods that did
            // not block a blocked request.
            let remaining = if !blocked || is_stop {
                room.saturating_sub(1)
            } else {
                room
            };
            let reset = if check.previous_key.is_some() && is_stop {
                win.sliding_retry_seconds(check.limit, usage.current, usage.previous)
            } else if is_stop {
                // Until the blocking window really ends (a calendar month is not
                // always Kong's nominal 30 days).
                win.seconds_to_end()
            } else {
                win.kong_reset_seconds()
            };
            let len = win.period.nominal_seconds();
            let better = match best {
                None => true,
                Some((r, l, _, _)) => remaining < r || (remaining == r && len > l),
            };
            if better {
                best = Some((remaining, len, reset, check.limit));
            }
            let p = win.period.header_name();
            headers.push((format!("X-RateLimit-Limit-{p}"), check.limit.to_string()));
            headers.push((format!("X-RateLimit-Remaining-{p}"), remaining.to_string()));
        }
        let Some((remaining, _, reset, limit)) = best else {
            return (Vec::new(), None);
        };
        headers.push(("RateLimit-Limit".into(), limit.to_string()));
        headers.push(("RateLimit-Remaining".into(), remaining.to_string()));
        headers.push(("RateLimit-Reset".into(), reset.to_string()));
        (headers, blocked.then_some(reset))
    }

    /// Counts in Redis, or locally when Redis fails and the plugin is fault
    /// tolerant. Returns `None` after a logged failure that must become a 500.
    async fn count(&self, shard_key: &str, checks: &[PeriodCheck], now_ms: i64) -> Option<Outcome> {
        let stats = &self.stores.stats;
        let Some(link) = &self.redis else {
            return Some(self.stores.local.check(shard_key, checks, now_ms));
        };
        match redis_check::check(link, checks).await {
            Ok(outcome) => {
                stats.redis_checks.fetch_add(1, Ordering::Relaxed);
                Some(outcome)
            }
            Err(e) if self.config.fault_tolerant => {
                let n = stats.redis_fallbacks.fetch_add(1, Ordering::Relaxed);
                if n % 1000 == 0 {
                    tracing::warn!(
                        fallbacks = n + 1,
                        "rate-limiting: {e}; counting locally (fault_tolerant)"
                    );
                }
                Some(self.stores.local.check(shard_key, checks, now_ms))
            }
            Err(e) => {
                stats.redis_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "rate-limiting: {e}; refusing the request (fault_tolerant is false)"
                );
                None
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl Plugin for RateLimiting {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        910
    }

    async fn access(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Flow, GatewayError> {
        let identifier = self.identifier(session, ctx);
        let now = now_ms();
        let (checks, wins, prefix) = self.checks(&identifier, now);
        let Some(outcome) = self.count(&prefix, &checks, now).await else {
            return Err(GatewayError::Plugin {
                status: 500,
                message: "An unexpected error occurred".to_string(),
                headers: Vec::new(),
            });
        };
        let (headers, retry_after) = self.headers(&checks, &wins, &outcome);
        if !outcome.admitted {
            self.stores.stats.rejected.fetch_add(1, Ordering::Relaxed);
            let mut headers = if self.config.hide_client_headers {
                Vec::new()
            } else {
                headers
            };
            if let (false, Some(s)) = (self.config.hide_client_headers, retry_after) {
                headers.push(("Retry-After".into(), s.to_string()));
            }
            return Err(GatewayError::Plugin {
                status: self.config.error_code,
                message: self.config.error_message.clone(),
                headers,
            });
        }
        if !self.config.hide_client_headers {
            ctx.rate_limit_headers = headers;
        }
        Ok(Flow::Continue)
    }

    fn response(&self, ctx: &RequestCtx, resp: &mut ResponseHeader) {
        for (k, v) in &ctx.rate_limit_headers {
            let _ = resp.insert_header(k.clone(), v.as_str());
        }
    }
}
