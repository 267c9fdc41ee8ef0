//! TLS on the HTTPS listener: certificates chosen by SNI from the config, with a
//! default certificate for clients that send no SNI or an unknown name.
//!
//! The resolver holds its table behind an `ArcSwap`, so a config reload replaces the
//! certificates without touching the listener.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::model::Certificate;

/// Parses a PEM certificate chain and private key into a rustls `CertifiedKey`.
///
/// Runs at config load and start-up. Returns a message fit for an operator (it never
/// contains key material) when the PEM is unusable or the key does not match.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "invalid certificate: not valid PEM".to_string())?;
    if certs.is_empty() {
        return Err("invalid certificate: no certificate found in PEM".to_string());
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|_| "invalid key: not valid PEM".to_string())?
        .ok_or_else(|| "invalid key: no private key found in PEM".to_string())?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| "invalid key: unsupported private key type".to_string())?;
    let ck = CertifiedKey::new(certs, signing);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err("certificate does not match key".to_string())
        }
        // Key types whose public key rustls cannot extract are accepted as they are.
        Err(_) => Ok(Arc::new(ck)),
    }
}

/// Checks that a certificate and key pair is usable; see [`certified_key`].
pub fn check_pem_pair(cert_pem: &str, key_pem: &str) -> Result<(), String> {
    certified_key(cert_pem, key_pem).map(|_| ())
}

/// The certificates the HTTPS listener can present.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard_left: HashMap<String, Arc<CertifiedKey>>,
    /// `example.*` stored as `example`.
    wildcard_right: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertTable {
    /// Builds the table from the config's certificates and the listener's default.
    ///
    /// Runs at start-up and on reload. Certificates were validated at config load;
    /// one that fails here anyway is skipped with a log line.
    pub fn build(certs: &[Certificate], default: Option<Arc<CertifiedKey>>) -> CertTable {
        let mut table = CertTable {
            default,
            ..CertTable::default()
        };
        for c in certs {
            let ck = match certified_key(&c.cert, &c.key) {
                Ok(ck) => ck,
                Err(e) => {
                    tracing::error!(certificate = %c.id, "skipping certificate: {e}");
                    continue;
                }
            };
            for name in &c.snis {
                let name = name.to_ascii_lowercase();
                if let Some(rest) = name.strip_prefix("*.") {
                    table.wildcard_left.insert(rest.to_string(), ck.clone());
                } else if let Some(rest) = name.strip_suffix(".*") {
                    table.wildcard_right.insert(rest.to_string(), ck.clone());
                } else {
                    table.exact.insert(name, ck.clone());
                }
            }
        }
        table
    }

    /// Picks the certificate for a server name: exact, then `*.rest` (one label),
    /// then `first.*`, then the default.
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            if let Some(ck) = self.exact.get(&name) {
                return Some(ck.clone());
            }
            if let Some((_, rest)) = name.split_once('.') {
                if let Some(ck) = self.wildcard_left.get(rest) {
                    return Some(ck.clone());
                }
            }
            if let Some((first, _)) = name.rsplit_once('.') {
                if let Some(ck) = self.wildcard_right.get(first) {
                    return Some(ck.clone());
                }
            }
        }
        self.default.clone()
    }
}

/// rustls certificate resolver backed by a swappable [`CertTable`].
#[derive(Debug, Default)]
pub struct SniResolver {
    table: ArcSwap<CertTable>,
}

impl SniResolver {
    /// Creates a resolver serving `table`.
    pub fn new(table: CertTable) -> Self {
        SniResolver {
            table: ArcSwap::from_pointee(table),
        }
    }

    /// Replaces the table; handshakes already in progress keep the old one.
    pub fn replace(&self, table: CertTable) {
        self.table.store(Arc::new(table));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.load().lookup(client_hello.server_name())
    }
}
