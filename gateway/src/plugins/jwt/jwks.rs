//! JSON Web Key Sets: parsing a JWKS document into verification keys by `kid`, and a
//! cache that keeps the last good set of a file or URL, refreshes it in the
//! background, and never holds a request longer than a short wait.
//!
//! Only public signature keys are taken: `kty` `RSA` (2048–8192 bits), `EC` on
//! P-256 or P-384, and `OKP` Ed25519, each with a `kid`, without `use` or with
//! `use: sig`. Symmetric (`oct`) keys, P-521 keys, keys without a `kid`, and keys
//! whose `alg` does not fit their type are skipped.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::Value;

use super::keys::{base64_lenient, Alg, Family, VerifyKey};

/// A key from a JWKS.
#[derive(Debug)]
pub struct JwksKey {
    /// The key.
    pub key: VerifyKey,
    /// The JWK's `alg`, when it names one: tokens must then use exactly it.
    pub alg: Option<Alg>,
}

/// The usable keys of a JWKS document, by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<JwksKey>>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Largest JWKS document accepted.
const MAX_DOCUMENT: usize = 1 << 20;

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`).
    ///
    /// Returns the usable keys, or why there are none. With two keys of one `kid`
    /// the first is kept.
    pub fn parse(body: &[u8]) -> Result<KeySet, String> {
        if body.len() > MAX_DOCUMENT {
            return Err(format!("JWKS larger than {MAX_DOCUMENT} bytes"));
        }
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS must be an object with a \"keys\" array")?;
        let mut keys = HashMap::new();
        for jwk in list {
            if let Some((kid, key)) = jwk_key(jwk) {
                keys.entry(kid).or_insert_with(|| Arc::new(key));
            }
        }
        if keys.is_empty() {
            return Err(
                "JWKS has no usable signature key (RSA, EC P-256/P-384 or Ed25519, with a kid)"
                    .into(),
            );
        }
        Ok(KeySet { keys })
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<Arc<JwksKey>> {
        self.keys.get(kid).cloned()
    }

    /// How many keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn jwk_key(jwk: &Value) -> Option<(String, JwksKey)> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| field(name).and_then(base64_lenient);
    let kid = field("kid")?.to_string();
    if jwk.get("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(Alg::from_name(name)?),
        Some(_) => return None,
    };
    let key = match field("kty")? {
        "RSA" => VerifyKey::from_rsa_components(&bytes("n")?, &bytes("e")?).ok()?,
        "EC" => {
            let family = match field("crv")? {
                "P-256" => Family::EcP256,
                "P-384" => Family::EcP384,
                _ => return None,
            };
            let mut point = vec![4u8];
            point.extend(bytes("x")?);
            point.extend(bytes("y")?);
            VerifyKey::from_ec_point(family, &point).ok()?
        }
        "OKP" if field("crv")? == "Ed25519" => VerifyKey::from_ed25519(&bytes("x")?).ok()?,
        _ => return None,
    };
    if alg.is_some_and(|a| a.family() != key.family()) {
        return None;
    }
    Some((kid, JwksKey { key, alg }))
}

/// Where a JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file, re-read on refresh.
    File(PathBuf),
    /// An `http` or `https` URL, fetched on refresh.
    Url(String),
}

impl fmt::Display for Source {
    /// For logs: a URL loses any user info and query string, which may carry
    /// credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Url(u) => match reqwest::Url::parse(u) {
                Ok(url) => write!(
                    f,
                    "{}://{}{}{}",
                    url.scheme(),
                    url.host_str().unwrap_or(""),
                    url.port().map(|p| format!(":{p}")).unwrap_or_default(),
                    url.path()
                ),
                Err(_) => f.write_str("<invalid URL>"),
            },
        }
    }
}

/// How long one background fetch may take in all.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Least time between two fetches started because a `kid` was not in the set (or
/// there is no set yet), so unknown `kid`s cannot make the gateway hammer the
/// key server. Capped by the refresh interval.
const MIN_REFETCH: Duration = Duration::from_secs(10);

struct Snapshot {
    keys: Option<Arc<KeySet>>,
    fetched: Option<Instant>,
}

/// The keys of one JWKS source, shared by the requests of one plugin instance.
pub struct JwksCache {
    source: Source,
    refresh: Duration,
    wait: Duration,
    state: ArcSwap<Snapshot>,
    inflight: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
    done: tokio::sync::watch::Sender<u64>,
    client: OnceLock<Option<reqwest::Client>>,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksCache")
            .field("source", &self.source)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache for `source`, refreshed every `refresh`; a request that finds no
    /// key for its `kid` waits at most `wait` for a fetch. `initial` is a set read
    /// at config load (files), used until the first refresh.
    pub fn new(
        source: Source,
        refresh: Duration,
        wait: Duration,
        initial: Option<Arc<KeySet>>,
    ) -> Arc<JwksCache> {
        let fetched = initial.as_ref().map(|_| Instant::now());
        Arc::new(JwksCache {
            source,
            refresh,
            wait,
            state: ArcSwap::from_pointee(Snapshot {
                keys: initial,
                fetched,
            }),
            inflight: AtomicBool::new(false),
            last_attempt: Mutex::new(fetched),
            done: tokio::sync::watch::channel(0).0,
            client: OnceLock::new(),
        })
    }

    /// Starts the first fetch now if there is no set yet and a runtime to run it
    /// on (the plugin is built on config reload, inside one; at start-up it is
    /// not, and the first request starts the fetch).
    pub fn prefetch(self: &Arc<Self>) {
        if self.state.load().keys.is_none() {
            self.start_fetch(Duration::ZERO);
        }
    }

    /// The key with this `kid`.
    ///
    /// Runs on requests whose token has a `kid` that no consumer secret matched.
    /// A stale set is used as it is while a background fetch refreshes it. When the
    /// `kid` is not in the set (or there is no set yet) a fetch is started, rate
    /// limited, and the request waits for it at most the configured wait.
    pub async fn key(self: &Arc<Self>, kid: &str) -> Option<Arc<JwksKey>> {
        let snap = self.state.load_full();
        if let Some(key) = snap.keys.as_ref().and_then(|s| s.get(kid)) {
            let stale = snap.fetched.is_none_or(|t| t.elapsed() >= self.refresh);
            if stale {
                self.start_fetch(self.refresh);
            }
            return Some(key);
        }
        let mut done = self.done.subscribe();
        let started = self.start_fetch(MIN_REFETCH.min(self.refresh));
        if started || self.inflight.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(self.wait, done.changed()).await;
            return self.state.load().keys.as_ref().and_then(|s| s.get(kid));
        }
        None
    }

    /// Starts a background fetch unless one is running or the last one began less
    /// than `gap` ago. Returns whether one was started.
    fn start_fetch(self: &Arc<Self>, gap: Duration) -> bool {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self.inflight.swap(true, Ordering::AcqRel) {
            return false;
        }
        {
            let mut last = crate::sync::lock(&self.last_attempt);
            if last.is_some_and(|t| t.elapsed() < gap) {
                self.inflight.store(false, Ordering::Release);
                return false;
            }
            *last = Some(Instant::now());
        }
        let this = self.clone();
        handle.spawn(async move {
            match tokio::time::timeout(FETCH_TIMEOUT, this.fetch()).await {
                Ok(Ok(set)) => {
                    this.state.store(Arc::new(Snapshot {
                        keys: Some(Arc::new(set)),
                        fetched: Some(Instant::now()),
                    }));
                }
                // The last good set stays in use.
                Ok(Err(e)) => {
                    tracing::warn!(source = %this.source, "jwt: JWKS refresh failed: {e}")
                }
                Err(_) => tracing::warn!(source = %this.source, "jwt: JWKS refresh timed out"),
            }
            this.inflight.store(false, Ordering::Release);
            this.done.send_modify(|n| *n = n.wrapping_add(1));
        });
        true
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let body = match &self.source {
            Source::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read: {e}"))?,
            Source::Url(url) => {
                let client = self
                    .client
                    .get_or_init(|| {
                        reqwest::Client::builder()
                            .timeout(FETCH_TIMEOUT)
                            .redirect(reqwest::redirect::Policy::limited(3))
                            .build()
                            .ok()
                    })
                    .as_ref()
                    .ok_or("cannot build an HTTP client")?;
                let mut resp = client
                    .get(url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .map_err(|e| format!("request failed: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("answered {}", resp.status()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| format!("reading the body failed: {e}"))?
                {
                    if body.len() + chunk.len() > MAX_DOCUMENT {
                        return Err(format!("JWKS larger than {MAX_DOCUMENT} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                body
            }
        };
        KeySet::parse(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usable_signature_keys_are_kept() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "wrong-alg", "alg": "RS256",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "EC", "crv": "P-256", "kid": "short", "x": "AAAA", "y": "AAAA"},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).expect("one usable key");
        assert_eq!(set.len(), 1);
        assert!(set.get("ed").is_some());
        assert!(set.get("sym").is_none());
        assert!(KeySet::parse(b"{\"keys\": []}").is_err());
        assert!(KeySet::parse(b"[]").is_err());
        assert!(KeySet::parse(b"nope").is_err());
    }

    #[test]
    fn logged_sources_hide_credentials() {
        let url = Source::Url("https://user:pw@idp.test:8443/keys?token=t".into());
        assert_eq!(url.to_string(), "https://idp.test:8443/keys");
    }
}
