//! Where cached responses live: a bounded in-process tier (TinyUFO eviction, sized
//! in bytes) shared by every proxy-cache instance, an optional Redis tier shared by
//! every gateway instance, and the table that coalesces concurrent misses.
//!
//! The memory tier survives config reloads. A Redis failure makes the cache use
//! memory only, never an error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tinyufo::TinyUfo;

use crate::plugins::redis_link::{LinkError, RedisLink};

/// One stored response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The cache key (64 hex characters).
    pub key: String,
    /// Upstream status.
    pub status: u16,
    /// Replayable upstream headers, in order (values base64 when stored in Redis).
    #[serde(with = "headers_b64")]
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    #[serde(skip)]
    pub body: Bytes,
    /// When it was stored, epoch milliseconds.
    pub stored_at_ms: u64,
    /// Seconds it is fresh for.
    pub ttl: u64,
    /// Seconds it is kept for (fresh time, storage_ttl and stale grace).
    pub storage_ttl: u64,
}

mod headers_b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(h: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(&str, String)> = h
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    base64::engine::general_purpose::STANDARD.encode(v),
                )
            })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let v: Vec<(String, String)> = Vec::deserialize(d)?;
        v.into_iter()
            .map(|(k, v)| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(|v| (k, v))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// The longest time anything is kept or fresh for, in seconds (about 68 years).
pub const MAX_TTL: u64 = (1 << 31) - 1;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Entry {
    /// Whole seconds since it was stored.
    pub fn age(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    /// Whether it is past its storage time.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms
            >= self
                .stored_at_ms
                .saturating_add(self.storage_ttl.saturating_mul(1000))
    }

    /// Whether the stored response said `must-revalidate` or `proxy-revalidate`.
    pub fn must_revalidate(&self) -> bool {
        super::policy::must_revalidate(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    /// Bytes it takes, roughly (body, headers and bookkeeping).
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 32)
                .sum::<usize>()
            + 256
    }

    /// The Redis value: a JSON line, then the raw body.
    fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(raw: &[u8]) -> Option<Entry> {
        let nl = raw.iter().position(|b| *b == b'\n')?;
        let mut entry: Entry = serde_json::from_slice(&raw[..nl]).ok()?;
        entry.body = Bytes::copy_from_slice(&raw[nl + 1..]);
        // Whatever another writer put there, it must be a replayable final answer
        // with sane times.
        if !(200..=599).contains(&entry.status) || matches!(entry.status, 204 | 304) {
            return None;
        }
        entry.ttl = entry.ttl.min(MAX_TTL);
        entry.storage_ttl = entry.storage_ttl.min(MAX_TTL);
        Some(entry)
    }
}

/// Entries are weighed in KiB (TinyUFO weights are 16-bit).
fn weight(entry: &Entry) -> u16 {
    entry.size().div_ceil(1024).clamp(1, u16::MAX as usize) as u16
}

fn hash_key(key: &str) -> u64 {
    u64::from_str_radix(key.get(..16).unwrap_or("0"), 16).unwrap_or(0)
}

/// Counters for `/status`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Answers from a stored entry.
    pub hits: AtomicU64,
    /// Lookups that found nothing.
    pub misses: AtomicU64,
    /// Entries stored.
    pub stores: AtomicU64,
    /// Requests that waited for another request's miss instead of going upstream.
    pub coalesced: AtomicU64,
    /// Redis tier operations that failed (the cache went on with memory only).
    pub redis_errors: AtomicU64,
}

/// The in-process tier and the miss coalescing table, shared by all instances.
pub struct CacheStore {
    memory: ArcSwap<TinyUfo<u64, Arc<Entry>>>,
    limit_kib: usize,
    inflight: Mutex<HashMap<String, tokio::sync::watch::Receiver<()>>>,
    /// Counters.
    pub stats: CacheStats,
}

/// Default size of the memory tier.
pub const DEFAULT_MEMORY_BYTES: usize = 128 << 20;

impl Default for CacheStore {
    fn default() -> Self {
        CacheStore::new(DEFAULT_MEMORY_BYTES)
    }
}

/// Held by the one request that fetches a missing key; waiters wake when it drops.
pub struct FillGuard {
    store: Arc<CacheStore>,
    key: String,
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.store.inflight.lock() {
            map.remove(&self.key);
        }
    }
}

/// Whether this request fills the key or waits for another one.
pub enum Fill {
    /// Go upstream; store the answer; others wait for this guard to drop.
    Leader(FillGuard),
    /// Another request is fetching the key; wait on this.
    Wait(tokio::sync::watch::Receiver<()>),
}

impl CacheStore {
    /// A store whose memory tier holds about `bytes`.
    pub fn new(bytes: usize) -> CacheStore {
        let limit_kib = (bytes / 1024).max(64);
        CacheStore {
            memory: ArcSwap::from_pointee(Self::tier(limit_kib)),
            limit_kib,
            inflight: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
        }
    }

    fn tier(limit_kib: usize) -> TinyUfo<u64, Arc<Entry>> {
        // Estimated entries: assume about 4 KiB each.
        TinyUfo::new(limit_kib, (limit_kib / 4).max(16))
    }

    /// The memory entry for `key`, unless absent or past its storage time.
    pub fn get_memory(&self, key: &str, now_ms: u64) -> Option<Arc<Entry>> {
        let memory = self.memory.load();
        let entry = memory.get(&hash_key(key))?;
        if entry.key != key {
            return None;
        }
        if entry.expired(now_ms) {
            memory.remove(&hash_key(key));
            return None;
        }
        Some(entry)
    }

    /// Stores an entry in memory; entries larger than a tenth of the tier are not
    /// kept (they would evict too much). Returns whether it was kept.
    pub fn put_memory(&self, entry: Arc<Entry>) -> bool {
        let w = weight(&entry);
        if (w as usize) * 10 > self.limit_kib {
            return false;
        }
        self.memory.load().put(hash_key(&entry.key), entry, w);
        true
    }

    /// Removes one key from memory; returns whether it was there.
    pub fn remove_memory(&self, key: &str) -> bool {
        let memory = self.memory.load();
        match memory.remove(&hash_key(key)) {
            Some(e) if e.key == key => true,
            Some(e) => {
                // A different key sharing the hash: put it back.
                let w = weight(&e);
                memory.put(hash_key(&e.key), e, w);
                false
            }
            None => false,
        }
    }

    /// Empties the memory tier.
    pub fn clear_memory(&self) {
        self.memory.store(Arc::new(Self::tier(self.limit_kib)));
    }

    /// Joins the fetch of `key`: the first request leads, the others wait.
    pub fn fill(self: &Arc<Self>, key: &str) -> Fill {
        let mut map = crate::sync::lock(&self.inflight);
        if let Some(rx) = map.get(key) {
            return Fill::Wait(rx.clone());
        }
        let (tx, rx) = tokio::sync::watch::channel(());
        map.insert(key.to_string(), rx);
        Fill::Leader(FillGuard {
            store: self.clone(),
            key: key.to_string(),
            _done: tx,
        })
    }
}

/// Waits until the leader of a fill is done (its guard dropped) or `limit` passes.
pub async fn wait_fill(mut rx: tokio::sync::watch::Receiver<()>, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        // Ends when the sender is dropped.
        while rx.changed().await.is_ok() {}
    })
    .await;
}

/// Redis key of an entry.
fn redis_key(key: &str) -> String {
    format!("proxy-cache:{key}")
}

/// Reads an entry from the Redis tier; `None` on absence or any failure.
pub async fn get_redis(link: &Arc<RedisLink>, store: &CacheStore, key: &str) -> Option<Entry> {
    let k = redis_key(key);
    let raw: Result<Option<Vec<u8>>, _> = link
        .run(|mut conn| async move { redis::cmd("GET").arg(k).query_async(&mut conn).await })
        .await;
    match raw {
        Ok(Some(raw)) => Entry::decode(&raw).filter(|e| e.key == key),
        Ok(None) => None,
        Err(e) => {
            store.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("proxy-cache: {e}; using memory only");
            None
        }
    }
}

/// Writes an entry to the Redis tier in the background, expiring with it.
pub fn put_redis(link: Arc<RedisLink>, store: Arc<CacheStore>, entry: Arc<Entry>) {
    let k = redis_key(&entry.key);
    let ms = entry.storage_ttl.clamp(1, MAX_TTL).saturating_mul(1000);
    let value = entry.encode();
    tokio::spawn(async move {
        let r: Result<(), _> = link
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(k)
                    .arg(value)
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        if r.is_err() {
            store.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Deletes one key from the Redis tier; returns whether it was there, or why Redis
/// could not be asked.
pub async fn delete_redis(link: &Arc<RedisLink>, key: &str) -> Result<bool, LinkError> {
    let k = redis_key(key);
    let n: u64 = link
        .run(|mut conn| async move { redis::cmd("DEL").arg(k).query_async(&mut conn).await })
        .await?;
    Ok(n > 0)
}

/// Deletes every proxy-cache key from the Redis tier; an error means some may be
/// left.
pub async fn clear_redis(link: &Arc<RedisLink>) -> Result<(), LinkError> {
    let mut cursor: u64 = 0;
    loop {
        let c = cursor;
        let page: Result<(u64, Vec<String>), _> = link
            .run(|mut conn| async move {
                redis::cmd("SCAN")
                    .arg(c)
                    .arg("MATCH")
                    .arg("proxy-cache:*")
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        let (next, keys) = page?;
        if !keys.is_empty() {
            let _: u64 = link
                .run(|mut conn| async move {
                    redis::cmd("UNLINK").arg(keys).query_async(&mut conn).await
                })
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, body: usize) -> Arc<Entry> {
        Arc::new(Entry {
            key: key.to_string(),
            status: 200,
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
            body: Bytes::from(vec![b'x'; body]),
            stored_at_ms: 1_000_000,
            ttl: 10,
            storage_ttl: 20,
        })
    }

    fn key(i: usize) -> String {
        format!("{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn entries_expire_after_their_storage_time() {
        let s = CacheStore::new(1 << 20);
        s.put_memory(entry(&key(1), 10));
        assert!(s.get_memory(&key(1), 1_000_000 + 19_999).is_some());
        assert!(s.get_memory(&key(1), 1_000_000 + 20_000).is_none());
    }

    #[test]
    fn memory_stays_within_its_size_under_a_flood_of_keys() {
        let s = CacheStore::new(1 << 20);
        for i in 1..5000 {
            s.put_memory(entry(&key(i), 2000));
        }
        let kept = (1..5000)
            .filter(|i| s.get_memory(&key(*i), 1_000_000).is_some())
            .count();
        // About 2.3 KiB each in a 1 MiB tier.
        assert!(kept > 0 && kept <= 1024 / 2, "{kept}");
    }

    #[test]
    fn redis_encoding_round_trips() {
        let e = entry(&key(7), 3);
        let back = Entry::decode(&e.encode()).unwrap();
        assert_eq!(&back, e.as_ref());
    }

    #[tokio::test]
    async fn fills_are_coalesced() {
        let s = Arc::new(CacheStore::new(1 << 20));
        let Fill::Leader(guard) = s.fill("k") else {
            panic!("first is the leader")
        };
        let Fill::Wait(rx) = s.fill("k") else {
            panic!("second waits")
        };
        let waiter = tokio::spawn(wait_fill(rx, Duration::from_secs(5)));
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(s.fill("k"), Fill::Leader(_)));
    }
}
