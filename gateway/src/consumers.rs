//! Consumers at run time: who a request belongs to once an authentication plugin has
//! identified it, the credential indexes the plugins look keys up in, and the
//! `X-Consumer-*` headers the upstream sees.

use std::collections::HashMap;

use pingora_http::RequestHeader;

use crate::proxy::forwarding::fold_header_name;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::model::{Config, Consumer};

/// The identity an authentication plugin established for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Index of the consumer in [`Config::consumers`].
    pub consumer: usize,
    /// Sent as `X-Credential-Identifier` (key-auth: the credential id; jwt: its key).
    pub credential: Option<String>,
    /// The consumer is the configured anonymous one: authentication failed.
    pub anonymous: bool,
}

/// Where an API key belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    /// Index of the consumer.
    pub consumer: usize,
    /// Id of the key-auth credential.
    pub credential: Uuid,
}

/// Lookup tables built once per config.
#[derive(Debug, Default)]
pub struct CredentialIndex {
    /// SHA-256 of each API key → its owner. Keys are compared by digest, so the
    /// lookup's timing depends on the digest, never on how much of a key matched.
    keys: HashMap<[u8; 32], KeyOwner>,
    /// jwt secret `key` → (consumer, index in its `jwt_secrets`).
    jwt: HashMap<String, (usize, usize)>,
    /// Consumer id and username → index (for `anonymous` references).
    consumers: HashMap<String, usize>,
}

/// Digest of an API key as the index stores it.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl CredentialIndex {
    /// Builds the indexes. Runs once per config load.
    pub fn build(config: &Config) -> CredentialIndex {
        let mut index = CredentialIndex::default();
        for (i, c) in config.consumers.iter().enumerate() {
            index.consumers.insert(c.id.to_string(), i);
            if let Some(name) = &c.username {
                index.consumers.insert(name.clone(), i);
            }
            for cred in &c.keyauth_credentials {
                index.keys.insert(
                    key_digest(&cred.key),
                    KeyOwner {
                        consumer: i,
                        credential: cred.id,
                    },
                );
            }
            for (j, secret) in c.jwt_secrets.iter().enumerate() {
                index.jwt.insert(secret.key.clone(), (i, j));
            }
        }
        index
    }

    /// The owner of an API key, if any. Runs once per key-auth request.
    pub fn key_owner(&self, key: &str) -> Option<KeyOwner> {
        self.keys.get(&key_digest(key)).copied()
    }

    /// The consumer and secret index of a jwt secret `key`.
    pub fn jwt_secret(&self, key: &str) -> Option<(usize, usize)> {
        self.jwt.get(key).copied()
    }

    /// A consumer by id or username.
    pub fn consumer(&self, id_or_name: &str) -> Option<usize> {
        self.consumers.get(id_or_name).copied()
    }
}

/// Headers that only the gateway may set: a client's copies are always removed.
pub const CONSUMER_HEADERS: &[&str] = &[
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-username",
    "x-credential-identifier",
    "x-anonymous-consumer",
    "x-consumer-groups",
    "x-authenticated-groups",
];

/// Removes client-sent consumer headers and sets the authenticated consumer's.
///
/// Runs on every request just before it goes upstream, whether or not the route has
/// an authentication plugin, so a client can never spoof an identity.
pub fn set_upstream_headers(
    req: &mut RequestHeader,
    consumers: &[Consumer],
    auth: Option<&Authenticated>,
) {
    // `X_Consumer_ID` reaches CGI/WSGI-style upstreams as the same variable as
    // `X-Consumer-ID`, so every spelling is removed, not only the dashed one.
    let spoofed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| CONSUMER_HEADERS.contains(&fold_header_name(k.as_str()).as_str()))
        .cloned()
        .collect();
    for name in spoofed {
        req.remove_header(&name);
    }
    let Some(auth) = auth else {
        return;
    };
    let Some(consumer) = consumers.get(auth.consumer) else {
        return;
    };
    let _ = req.insert_header("x-consumer-id", consumer.id.to_string());
    if let Some(custom) = &consumer.custom_id {
        let _ = req.insert_header("x-consumer-custom-id", custom.as_str());
    }
    if let Some(name) = &consumer.username {
        let _ = req.insert_header("x-consumer-username", name.as_str());
    }
    if let Some(cred) = &auth.credential {
        let _ = req.insert_header("x-credential-identifier", cred.as_str());
    }
    if auth.anonymous {
        let _ = req.insert_header("x-anonymous-consumer", "true");
    }
}
