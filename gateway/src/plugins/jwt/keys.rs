//! Verification keys: the algorithms a credential may pin, public keys parsed from
//! PEM once (at config load and compile time, never per request), and the table of
//! every jwt secret's compiled key that a [`crate::state::Runtime`] carries.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use jsonwebtoken::DecodingKey;

use crate::config::model::{Config, JwtSecret};

/// The algorithms Kong's jwt plugin knows (a token naming anything else is a
/// "Bad token; invalid alg"). All but ES512 can be verified here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// ECDSA P-521 SHA-512: known (so a token naming it gets Kong's answers) but
    /// never verifiable, since ring has no P-521; credentials may not pin it.
    ES512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// Ed25519.
    EdDSA,
}

/// The kind of key an algorithm needs. A key is only ever used with an algorithm
/// of its own family, which rules out algorithm confusion (an RSA public key used
/// as an HMAC secret, a P-384 key with ES256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Shared secret.
    Hmac,
    /// RSA public key (PKCS#1 v1.5 and PSS).
    Rsa,
    /// EC public key on P-256.
    EcP256,
    /// EC public key on P-384.
    EcP384,
    /// EC public key on P-521.
    EcP521,
    /// Ed25519 public key.
    Ed25519,
}

impl Alg {
    /// Every algorithm, in Kong's order.
    pub const ALL: [Alg; 13] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::ES256,
        Alg::ES384,
        Alg::ES512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::EdDSA,
    ];

    /// The algorithm named `name` exactly (JOSE names are case-sensitive).
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The kind of key the algorithm verifies with.
    pub fn family(self) -> Family {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => Family::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                Family::Rsa
            }
            Alg::ES256 => Family::EcP256,
            Alg::ES384 => Family::EcP384,
            Alg::ES512 => Family::EcP521,
            Alg::EdDSA => Family::Ed25519,
        }
    }

    /// The library's algorithm; `None` for ES512, which it cannot verify.
    pub fn library(self) -> Option<jsonwebtoken::Algorithm> {
        use jsonwebtoken::Algorithm as A;
        Some(match self {
            Alg::HS256 => A::HS256,
            Alg::HS384 => A::HS384,
            Alg::HS512 => A::HS512,
            Alg::RS256 => A::RS256,
            Alg::RS384 => A::RS384,
            Alg::RS512 => A::RS512,
            Alg::ES256 => A::ES256,
            Alg::ES384 => A::ES384,
            Alg::ES512 => return None,
            Alg::PS256 => A::PS256,
            Alg::PS384 => A::PS384,
            Alg::PS512 => A::PS512,
            Alg::EdDSA => A::EdDSA,
        })
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key ready to verify signatures, tagged with its family.
#[derive(Clone)]
pub struct VerifyKey {
    family: Family,
    key: DecodingKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material (an HMAC secret is one).
        f.debug_struct("VerifyKey")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// An HMAC secret.
    pub fn from_secret(secret: &[u8]) -> VerifyKey {
        VerifyKey {
            family: Family::Hmac,
            key: DecodingKey::from_secret(secret),
        }
    }

    /// A public key for `alg` from PEM (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC
    /// KEY` for RS*/PS*).
    ///
    /// Runs at config load (to report a bad key with its line) and when a config is
    /// compiled. Returns a message for the operator when the PEM does not hold a
    /// public key this algorithm can verify with.
    pub fn from_pem(alg: Alg, pem: &str) -> Result<VerifyKey, String> {
        let family = alg.family();
        if family == Family::Hmac {
            return Err(format!("{alg} uses a shared secret, not a public key"));
        }
        if family == Family::EcP521 {
            return Err("ES512 (P-521) is not supported by this gateway".to_string());
        }
        let (label, der) = pem_block(pem)?;
        let (found, material) = match label.as_str() {
            "PUBLIC KEY" => spki(&der)?,
            "RSA PUBLIC KEY" => (Family::Rsa, der),
            "CERTIFICATE" => {
                return Err("expected a public key (BEGIN PUBLIC KEY), got a certificate".into())
            }
            other if other.contains("PRIVATE KEY") => {
                return Err(format!(
                    "expected a public key (BEGIN PUBLIC KEY), got a private key ({other})"
                ))
            }
            other => {
                return Err(format!(
                    "expected a public key (BEGIN PUBLIC KEY), got BEGIN {other}"
                ))
            }
        };
        if found != family {
            return Err(format!(
                "{alg} needs {}, this PEM holds {}",
                family_name(family),
                family_name(found)
            ));
        }
        let key = match family {
            Family::Rsa => {
                check_rsa_modulus(rsa_modulus(&material)?)?;
                DecodingKey::from_rsa_der(&material)
            }
            Family::EcP256 | Family::EcP384 => DecodingKey::from_ec_der(&material),
            Family::Ed25519 => DecodingKey::from_ed_der(&material),
            Family::Hmac | Family::EcP521 => return Err("unsupported key".into()),
        };
        Ok(VerifyKey { family, key })
    }

    /// An RSA public key from its JWK components (already base64url-decoded).
    pub(crate) fn from_rsa_components(n: &[u8], e: &[u8]) -> Result<VerifyKey, String> {
        check_rsa_modulus(n)?;
        if e.is_empty() {
            return Err("empty RSA exponent".into());
        }
        Ok(VerifyKey {
            family: Family::Rsa,
            key: DecodingKey::from_rsa_raw_components(n, e),
        })
    }

    /// An EC public key from its uncompressed point.
    pub(crate) fn from_ec_point(family: Family, point: &[u8]) -> Result<VerifyKey, String> {
        let want = match family {
            Family::EcP256 => 65,
            Family::EcP384 => 97,
            _ => return Err("not an EC family".into()),
        };
        if point.len() != want || point.first() != Some(&4) {
            return Err(format!(
                "{} needs an uncompressed point of {want} bytes",
                family_name(family)
            ));
        }
        Ok(VerifyKey {
            family,
            key: DecodingKey::from_ec_der(point),
        })
    }

    /// An Ed25519 public key from its 32 bytes.
    pub(crate) fn from_ed25519(raw: &[u8]) -> Result<VerifyKey, String> {
        if raw.len() != 32 {
            return Err("an Ed25519 public key has 32 bytes".into());
        }
        Ok(VerifyKey {
            family: Family::Ed25519,
            key: DecodingKey::from_ed_der(raw),
        })
    }

    /// The key's family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Checks `signature` over `message` for `alg`, in constant time for HMAC (the
    /// library compares the recomputed MAC with ring's constant-time comparison).
    ///
    /// Runs once per authenticated request. False when the key is not of the
    /// algorithm's family, whatever the signature.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if alg.family() != self.family {
            return false;
        }
        let Some(lib) = alg.library() else {
            return false;
        };
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature);
        jsonwebtoken::crypto::verify(&encoded, message, &self.key, lib).unwrap_or(false)
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Hmac => "a shared secret",
        Family::Rsa => "an RSA key",
        Family::EcP256 => "an EC P-256 key",
        Family::EcP384 => "an EC P-384 key",
        Family::EcP521 => "an EC P-521 key",
        Family::Ed25519 => "an Ed25519 key",
    }
}

/// ring verifies RSA signatures with moduli of 2048 to 8192 bits only.
fn check_rsa_modulus(n: &[u8]) -> Result<(), String> {
    let n = strip_leading_zeros(n);
    let bits = n
        .first()
        .map_or(0, |b| (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
    if (2048..=8192).contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "RSA keys must have 2048 to 8192 bits, this one has {bits}"
        ))
    }
}

fn strip_leading_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        b = rest;
    }
    b
}

/// The label and decoded body of the first PEM block in `pem`.
fn pem_block(pem: &str) -> Result<(String, Vec<u8>), String> {
    const NOT_PEM: &str = "not a PEM public key (expected -----BEGIN PUBLIC KEY-----)";
    let start = pem.find("-----BEGIN ").ok_or(NOT_PEM)?;
    let rest = &pem[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or(NOT_PEM)?;
    let label = rest[..label_end].to_string();
    let body = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let end = body
        .find(&end_marker)
        .ok_or_else(|| format!("PEM block BEGIN {label} has no matching END line"))?;
    let b64: String = body[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| format!("the PEM block BEGIN {label} is not valid base64"))?;
    Ok((label, der))
}

/// A minimal DER reader: one tag-length-value at the front of `input`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Reads a SubjectPublicKeyInfo: the key's family and the bytes ring verifies with
/// (PKCS#1 RSAPublicKey, uncompressed EC point, raw Ed25519 key).
fn spki(der: &[u8]) -> Result<(Family, Vec<u8>), String> {
    const BAD: &str = "the PEM PUBLIC KEY is not a valid SubjectPublicKeyInfo";
    let (tag, body, _) = tlv(der).ok_or(BAD)?;
    if tag != SEQUENCE {
        return Err(BAD.into());
    }
    let (tag, algid, rest) = tlv(body).ok_or(BAD)?;
    if tag != SEQUENCE {
        return Err(BAD.into());
    }
    let (tag, bits, _) = tlv(rest).ok_or(BAD)?;
    if tag != BIT_STRING {
        return Err(BAD.into());
    }
    let key = match bits.split_first() {
        Some((0, key)) => key.to_vec(),
        _ => return Err(BAD.into()),
    };
    let (tag, oid, params) = tlv(algid).ok_or(BAD)?;
    if tag != OID {
        return Err(BAD.into());
    }
    let family = if oid == OID_RSA {
        Family::Rsa
    } else if oid == OID_ED25519 {
        if key.len() != 32 {
            return Err("an Ed25519 public key has 32 bytes".into());
        }
        Family::Ed25519
    } else if oid == OID_EC {
        let (tag, curve, _) = tlv(params).ok_or(BAD)?;
        if tag != OID {
            return Err("EC keys must name their curve".into());
        }
        let family = if curve == OID_P256 {
            Family::EcP256
        } else if curve == OID_P384 {
            Family::EcP384
        } else if curve == OID_P521 {
            Family::EcP521
        } else {
            return Err("unsupported EC curve (P-256 and P-384 are supported)".into());
        };
        if key.first() != Some(&4) {
            return Err("compressed EC points are not supported".into());
        }
        family
    } else {
        return Err("unsupported public key type (RSA, EC or Ed25519 expected)".into());
    };
    Ok((family, key))
}

/// The modulus of a PKCS#1 RSAPublicKey.
fn rsa_modulus(der: &[u8]) -> Result<&[u8], String> {
    const BAD: &str = "not a valid RSA public key";
    let (tag, body, _) = tlv(der).ok_or(BAD)?;
    if tag != SEQUENCE {
        return Err(BAD.into());
    }
    let (tag, n, rest) = tlv(body).ok_or(BAD)?;
    let (tag_e, _, _) = tlv(rest).ok_or(BAD)?;
    if tag != INTEGER || tag_e != INTEGER {
        return Err(BAD.into());
    }
    Ok(n)
}

/// Kong's base64 decoding of token parts and `secret_is_base64` secrets: both the
/// URL-safe and the standard alphabet, padding optional, anything from the first
/// `=` on ignored (as nginx's decoder does).
///
/// Returns `None` when the input is not base64.
pub fn base64_lenient(input: &str) -> Option<Vec<u8>> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    let data = input.split('=').next().unwrap_or("");
    if data.bytes().any(|b| b == b'+' || b == b'/') {
        let mapped: String = data
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        return ENGINE.decode(mapped.as_bytes()).ok();
    }
    ENGINE.decode(data.as_bytes()).ok()
}

/// A jwt secret compiled for verification.
#[derive(Debug, Clone)]
pub struct CompiledSecret {
    /// The algorithm the credential pins.
    pub alg: Alg,
    /// The key as configured (the credential's own `secret_is_base64` applied);
    /// `None` when it cannot be used (the loader refuses such credentials).
    pub key: Option<VerifyKey>,
    /// HS* only: the key with the stored secret base64-decoded, for the plugin's
    /// `secret_is_base64`; `None` when the secret is not base64.
    pub base64_key: Option<VerifyKey>,
}

impl CompiledSecret {
    /// Compiles one credential. Never fails: what cannot be used is `None`.
    pub fn build(secret: &JwtSecret) -> CompiledSecret {
        let alg = Alg::from_name(&secret.algorithm).unwrap_or(Alg::HS256);
        if alg.family() == Family::Hmac {
            let raw = secret.secret.as_deref().unwrap_or("");
            let decoded = base64_lenient(raw).map(|b| VerifyKey::from_secret(&b));
            let key = if secret.secret.is_none() {
                None
            } else if secret.secret_is_base64 {
                decoded.clone()
            } else {
                Some(VerifyKey::from_secret(raw.as_bytes()))
            };
            CompiledSecret {
                alg,
                key,
                base64_key: if secret.secret.is_some() {
                    decoded
                } else {
                    None
                },
            }
        } else {
            CompiledSecret {
                alg,
                key: secret
                    .rsa_public_key
                    .as_deref()
                    .and_then(|pem| VerifyKey::from_pem(alg, pem).ok()),
                base64_key: None,
            }
        }
    }

    /// The key to verify with, given the plugin's `secret_is_base64`.
    pub fn key_for(&self, plugin_secret_is_base64: bool) -> Option<&VerifyKey> {
        if plugin_secret_is_base64 && self.alg.family() == Family::Hmac {
            self.base64_key.as_ref()
        } else {
            self.key.as_ref()
        }
    }
}

/// Every jwt secret of a config, compiled once when the config is compiled, by
/// (consumer index, index in its `jwt_secrets`).
#[derive(Debug, Default)]
pub struct SecretKeys {
    by_consumer: Vec<Vec<CompiledSecret>>,
}

impl SecretKeys {
    /// Compiles the secrets of every consumer. Runs in `Runtime::new`.
    pub fn build(config: &Config) -> SecretKeys {
        SecretKeys {
            by_consumer: config
                .consumers
                .iter()
                .map(|c| c.jwt_secrets.iter().map(CompiledSecret::build).collect())
                .collect(),
        }
    }

    /// The compiled secret `secret` of consumer `consumer`.
    pub fn get(&self, consumer: usize, secret: usize) -> Option<&CompiledSecret> {
        self.by_consumer.get(consumer)?.get(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The public half of a P-256 key generated for this test.
    const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhWMk6PwFb+xiiLTbLUacHieaAbXH
N3Dwfss/KVJk1d0kvepfIFBdNW+GSAxRManSs4otti1C+k1VuCVMsUwesA==
-----END PUBLIC KEY-----
";

    #[test]
    fn base64_is_lenient_like_kong() {
        assert_eq!(base64_lenient("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_lenient("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_lenient("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(base64_lenient("+/8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(base64_lenient("").as_deref(), Some(&b""[..]));
        assert!(base64_lenient("a").is_none());
        assert!(base64_lenient("a.b").is_none());
        assert!(base64_lenient("ab cd").is_none());
    }

    #[test]
    fn pem_keys_are_checked_against_the_algorithm() {
        let key = VerifyKey::from_pem(Alg::ES256, P256_PEM).expect("P-256 key");
        assert_eq!(key.family(), Family::EcP256);
        let err = VerifyKey::from_pem(Alg::ES384, P256_PEM).unwrap_err();
        assert!(err.contains("P-384"), "{err}");
        let err = VerifyKey::from_pem(Alg::RS256, P256_PEM).unwrap_err();
        assert!(err.contains("RSA"), "{err}");
        assert!(VerifyKey::from_pem(Alg::RS256, "garbage").is_err());
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(VerifyKey::from_pem(Alg::RS256, private)
            .unwrap_err()
            .contains("private key"));
        assert!(VerifyKey::from_pem(Alg::HS256, P256_PEM).is_err());
    }

    #[test]
    fn keys_only_verify_their_own_family() {
        let key = VerifyKey::from_secret(b"secret");
        assert!(!key.verify(Alg::RS256, b"a.b", b"sig"));
        let ec = VerifyKey::from_pem(Alg::ES256, P256_PEM).expect("key");
        assert!(!ec.verify(Alg::HS256, b"a.b", b"sig"));
        assert!(!ec.verify(Alg::ES512, b"a.b", b"sig"));
    }

    #[test]
    fn alg_names_round_trip() {
        for a in Alg::ALL {
            assert_eq!(Alg::from_name(a.name()), Some(a));
        }
        assert_eq!(Alg::from_name("none"), None);
        assert_eq!(Alg::from_name("hs256"), None);
    }
}
