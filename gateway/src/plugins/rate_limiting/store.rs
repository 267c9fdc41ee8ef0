//! What a counter store is asked and answers, the in-process store, and the
//! registry of stores the gateway keeps across config reloads.
//!
//! Every store applies the same rule atomically: a request is admitted when, for
//! every period, `current + floor(previous * weight)` is below the limit; only an
//! admitted request increments the current windows' counters, and the first
//! increment of a counter sets its expiry in the same step.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One period of one request's check.
#[derive(Debug, Clone)]
pub struct PeriodCheck {
    /// Counter key of the current window.
    pub key: String,
    /// Counter key of the previous window (sliding windows only).
    pub previous_key: Option<String>,
    /// Requests allowed in the window.
    pub limit: u64,
    /// Counter time to live, in seconds.
    pub ttl_seconds: u64,
    /// Share of the previous window that still counts (0 for fixed windows).
    pub previous_weight: f64,
}

/// Counts read for one period, before this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Requests counted in the current window.
    pub current: u64,
    /// Requests counted in the previous window (sliding windows only).
    pub previous: u64,
}

/// The store's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the request was admitted (and counted).
    pub admitted: bool,
    /// Usage per period, in the order asked.
    pub usage: Vec<Usage>,
}

/// The admission rule, shared by every store: the previous window's share is
/// rounded up, so the estimate never favours the client.
pub fn estimate(check: &PeriodCheck, usage: Usage) -> u64 {
    usage.current + (usage.previous as f64 * check.previous_weight).ceil() as u64
}

const SHARDS: usize = 64;
/// A shard sweeps expired counters after this many operations.
const SWEEP_EVERY: u64 = 4096;
/// Counters a shard may hold (about 260,000 in all, keys of at most ~250 bytes). Past it, a shard first drops
/// expired counters, then the ones closest to expiry, as Kong's shared dictionary
/// evicts when full: memory stays bounded under a flood of distinct identifiers.
const SHARD_CAPACITY: usize = 4096;

#[derive(Default)]
struct Shard {
    counters: HashMap<String, (u64, i64)>,
    ops: u64,
    swept_ms: i64,
}

/// A shard also sweeps when this long has passed since its last sweep.
const SWEEP_AFTER_MS: i64 = 10_000;

/// Counters kept in this process: the `local` policy, and the fallback of the
/// `redis` policy while Redis is unreachable.
pub struct LocalCounters {
    shards: Vec<Mutex<Shard>>,
}

impl Default for LocalCounters {
    fn default() -> Self {
        LocalCounters {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl LocalCounters {
    /// Checks and counts one request; runs in the access phase.
    ///
    /// `shard_key` (the plugin instance and identifier) puts every period of one
    /// request under one lock, so the check and the increments are one atomic step.
    pub fn check(&self, shard_key: &str, checks: &[PeriodCheck], now_ms: i64) -> Outcome {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        shard_key.hash(&mut h);
        let Some(shard) = self.shards.get(h.finish() as usize % SHARDS) else {
            return Outcome {
                admitted: true,
                usage: vec![Usage::default(); checks.len()],
            };
        };
        let mut shard = crate::sync::lock(shard);
        shard.ops += 1;
        if shard.ops % SWEEP_EVERY == 0
            || shard.counters.len() >= SHARD_CAPACITY
            || now_ms - shard.swept_ms > SWEEP_AFTER_MS
        {
            shard.swept_ms = now_ms;
            shard.counters.retain(|_, (_, exp)| *exp > now_ms);
            if shard.counters.len() >= SHARD_CAPACITY {
                let mut expiries: Vec<i64> = shard.counters.values().map(|(_, e)| *e).collect();
                let cut = SHARD_CAPACITY / 4;
                expiries.select_nth_unstable(cut);
                let threshold = expiries[cut];
                shard.counters.retain(|_, (_, exp)| *exp > threshold);
            }
        }
        let read = |shard: &Shard, key: &str| {
            shard
                .counters
                .get(key)
                .filter(|(_, exp)| *exp > now_ms)
                .map_or(0, |(n, _)| *n)
        };
        let usage: Vec<Usage> = checks
            .iter()
            .map(|c| Usage {
                current: read(&shard, &c.key),
                previous: c.previous_key.as_deref().map_or(0, |k| read(&shard, k)),
            })
            .collect();
        let admitted = checks
            .iter()
            .zip(&usage)
            .all(|(c, u)| estimate(c, *u) < c.limit);
        if admitted {
            for c in checks {
                let exp = now_ms + c.ttl_seconds as i64 * 1000;
                let entry = shard.counters.entry(c.key.clone()).or_insert((0, exp));
                if entry.1 <= now_ms {
                    *entry = (0, exp);
                }
                entry.0 += 1;
            }
        }
        Outcome { admitted, usage }
    }

    /// Number of live and not yet swept counters (for tests and `/status`).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |g| g.counters.len()))
            .sum()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counters about rate limiting, for `/status` and the logs.
#[derive(Debug, Default)]
pub struct RateLimitStats {
    /// Requests counted in Redis.
    pub redis_checks: AtomicU64,
    /// Requests counted locally because Redis failed (fault_tolerant).
    pub redis_fallbacks: AtomicU64,
    /// Requests refused with 500 because Redis failed (not fault_tolerant).
    pub redis_failures: AtomicU64,
    /// Requests refused by a limit.
    pub rejected: AtomicU64,
}

/// Counter stores shared by every config the gateway loads, so a reload does not
/// reset counts.
#[derive(Default)]
pub struct Stores {
    /// In-process counters.
    pub local: LocalCounters,
    /// Counters for `/status`.
    pub stats: RateLimitStats,
}

impl Stores {
    /// Counts of checks, fallbacks and refusals, for `/status`.
    pub fn stats_json(&self) -> serde_json::Value {
        let s = &self.stats;
        serde_json::json!({
            "redis_checks": s.redis_checks.load(Ordering::Relaxed),
            "redis_fallbacks": s.redis_fallbacks.load(Ordering::Relaxed),
            "redis_failures": s.redis_failures.load(Ordering::Relaxed),
            "rejected": s.rejected.load(Ordering::Relaxed),
            "local_counters": self.local.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, limit: u64) -> PeriodCheck {
        PeriodCheck {
            key: key.into(),
            previous_key: None,
            limit,
            ttl_seconds: 60,
            previous_weight: 0.0,
        }
    }

    #[test]
    fn admits_exactly_the_limit_and_does_not_count_refusals() {
        let local = LocalCounters::default();
        let checks = [check("s", 3), check("m", 5)];
        let admitted: Vec<bool> = (0..7)
            .map(|_| local.check("i", &checks, 1000).admitted)
            .collect();
        assert_eq!(admitted, [true, true, true, false, false, false, false]);
        // The minute counter only holds the admitted requests.
        let out = local.check("i", &[check("m", 5)], 1000);
        assert_eq!(out.usage[0].current, 3);
        // Expired counters start again.
        assert!(local.check("i", &checks, 61_001).admitted);
    }

    #[test]
    fn sliding_counts_the_previous_window_in_proportion() {
        let local = LocalCounters::default();
        for _ in 0..10 {
            local.check("i", &[check("prev", 100)], 0);
        }
        let sliding = PeriodCheck {
            key: "cur".into(),
            previous_key: Some("prev".into()),
            limit: 10,
            ttl_seconds: 120,
            previous_weight: 0.5,
        };
        let admitted = (0..10)
            .filter(|_| local.check("i", std::slice::from_ref(&sliding), 1).admitted)
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn memory_stays_bounded_under_distinct_identifiers() {
        let local = LocalCounters::default();
        for i in 0..(SHARDS * SHARD_CAPACITY * 2) {
            let key = format!("id{i}");
            let mut c = check(&key, 10);
            c.ttl_seconds = 31_536_000 + i as u64;
            local.check(&key, &[c], 0);
        }
        assert!(local.len() <= SHARDS * SHARD_CAPACITY, "{}", local.len());
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_limit() {
        use std::sync::Arc;
        let local = Arc::new(LocalCounters::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let local = local.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| local.check("i", &[check("k", 1000)], 5).admitted)
                        .count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
