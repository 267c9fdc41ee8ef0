//! Kong's token decoder and checks: splitting and decoding a compact JWT with
//! Kong's answers for each way it can be malformed, the signature check, and the
//! registered-claim checks (`exp`, `nbf`, `maximum_expiration`) plus this gateway's
//! `iss`/`aud` allow-lists.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::keys::{base64_lenient, Alg, VerifyKey};

/// Why a request is refused. Each variant is one row of Kong's table (§4), plus
/// the unknown `kid` of this gateway's key selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token anywhere: `Unauthorized` (the only one without `error=`).
    NoToken,
    /// Several distinct tokens.
    Multiple,
    /// A query argument given without a value (`?jwt`): Kong sees a boolean.
    Unrecognizable,
    /// `Bad token; <why>`: `invalid JSON`, `invalid alg`, `invalid claims`,
    /// `invalid signature`.
    BadToken(&'static str),
    /// The key claim is absent from claims and header.
    NoKeyClaim,
    /// The key claim is an empty string.
    InvalidKeyClaim,
    /// No jwt secret has that key.
    NoCredentials,
    /// The token's `alg` is not the one its credential (or JWKS key) pins.
    InvalidAlgorithm,
    /// The credential has no usable secret or key.
    InvalidKey,
    /// The signature does not verify.
    InvalidSignature,
    /// `kid` selection is on and no key has the token's `kid`.
    UnknownKid,
    /// Claim checks failed: claim name → message.
    Claims(BTreeMap<&'static str, &'static str>),
}

impl Refusal {
    /// The exact response body (Kong's plain JSON family, compact).
    pub fn body(&self, key_claim_name: &str) -> String {
        let message = match self {
            Refusal::NoToken => "Unauthorized".to_string(),
            Refusal::Multiple => "Multiple tokens provided".to_string(),
            Refusal::Unrecognizable => "Unrecognizable token".to_string(),
            Refusal::BadToken(why) => format!("Bad token; {why}"),
            Refusal::NoKeyClaim => format!("No mandatory '{key_claim_name}' in claims"),
            Refusal::InvalidKeyClaim => format!("Invalid '{key_claim_name}' in claims"),
            Refusal::NoCredentials => format!("No credentials found for given '{key_claim_name}'"),
            Refusal::InvalidAlgorithm => "Invalid algorithm".to_string(),
            Refusal::InvalidKey => "Invalid key/secret".to_string(),
            Refusal::InvalidSignature => "Invalid signature".to_string(),
            Refusal::UnknownKid => "No credentials found for given 'kid'".to_string(),
            Refusal::Claims(errors) => {
                let map: Map<String, Value> = errors
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(*v)))
                    .collect();
                return Value::Object(map).to_string();
            }
        };
        let mut map = Map::new();
        map.insert("message".to_string(), Value::String(message));
        Value::Object(map).to_string()
    }
}

/// A decoded (not yet verified) token.
#[derive(Debug)]
pub struct Token<'a> {
    /// The JOSE header.
    pub header: Map<String, Value>,
    /// The claims.
    pub claims: Map<String, Value>,
    /// The header's `alg`.
    pub alg: Alg,
    /// `base64(header).base64(claims)`, what the signature covers.
    pub signing_input: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Decodes `token` as Kong's parser does (§4 steps 3–4).
///
/// Runs once per request that carries a token. The split is Kong's: the first two
/// dots separate header and claims, anything after the second dot is the
/// signature (so an extra dot makes the signature undecodable).
pub fn parse(token: &str) -> Result<Token<'_>, Refusal> {
    const BAD_JSON: Refusal = Refusal::BadToken("invalid JSON");
    let mut parts = token.splitn(3, '.');
    let (Some(h), Some(c), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(BAD_JSON);
    };
    let json = |part: &str| -> Option<Value> {
        let bytes = base64_lenient(part)?;
        serde_json::from_slice(&bytes).ok()
    };
    let header = json(h).ok_or(BAD_JSON)?;
    let claims = json(c).ok_or(BAD_JSON)?;
    let Value::Object(header) = header else {
        return Err(Refusal::BadToken("invalid alg"));
    };
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .ok_or(Refusal::BadToken("invalid alg"))?;
    let Value::Object(claims) = claims else {
        return Err(Refusal::BadToken("invalid claims"));
    };
    let signature = base64_lenient(s).ok_or(Refusal::BadToken("invalid signature"))?;
    Ok(Token {
        header,
        claims,
        alg,
        signing_input: &token[..h.len() + 1 + c.len()],
        signature,
    })
}

impl Token<'_> {
    /// The key claim: from the claims, else from the header (Kong: `claims[name] or
    /// header[name]`, where `false` and absence fall through).
    pub fn key_claim(&self, name: &str) -> Option<&Value> {
        let usable = |v: &&Value| !matches!(v, Value::Bool(false));
        self.claims
            .get(name)
            .filter(usable)
            .or_else(|| self.header.get(name).filter(usable))
    }

    /// The header's `kid`, if it has one (any JSON type).
    pub fn kid(&self) -> Option<&Value> {
        self.header.get("kid")
    }

    /// Whether the signature verifies with `key` for the token's algorithm.
    pub fn verify_signature(&self, key: &VerifyKey) -> bool {
        key.verify(self.alg, self.signing_input.as_bytes(), &self.signature)
    }
}

/// Decodes `token` and checks that it is signed with `key` under `alg`: the
/// per-request cost of JWT verification (the plugin adds the table lookups and
/// claim checks around it). Public so the benches can measure it.
pub fn verify<'a>(token: &'a str, alg: Alg, key: &VerifyKey) -> Result<Token<'a>, Refusal> {
    let parsed = parse(token)?;
    if parsed.alg != alg {
        return Err(Refusal::InvalidAlgorithm);
    }
    if !parsed.verify_signature(key) {
        return Err(Refusal::InvalidSignature);
    }
    Ok(parsed)
}

/// A registered claim Kong can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Registered {
    /// Expiry.
    Exp,
    /// Not before.
    Nbf,
}

/// Checks `claims_to_verify` as Kong does: each listed claim must be a JSON number;
/// `exp` fails when `exp <= now`, `nbf` when `nbf > now`, each with `leeway`
/// seconds of tolerance (0 in Kong).
pub fn check_registered(
    claims: &Map<String, Value>,
    to_verify: &[Registered],
    now: i64,
    leeway: i64,
) -> BTreeMap<&'static str, &'static str> {
    let mut errors = BTreeMap::new();
    let now = now as f64;
    let leeway = leeway as f64;
    for claim in to_verify {
        let (name, message) = match claim {
            Registered::Exp => ("exp", "token expired"),
            Registered::Nbf => ("nbf", "token not valid yet"),
        };
        match claims.get(name).and_then(Value::as_f64) {
            None => {
                errors.insert(name, "must be a number");
            }
            Some(v) => {
                let fails = match claim {
                    Registered::Exp => v + leeway <= now,
                    Registered::Nbf => v - leeway > now,
                };
                if fails {
                    errors.insert(name, message);
                }
            }
        }
    }
    errors
}

/// Kong's `maximum_expiration`: `exp` must be present and at most `maximum`
/// seconds away.
pub fn check_maximum_expiration(
    claims: &Map<String, Value>,
    maximum: i64,
    now: i64,
) -> Option<BTreeMap<&'static str, &'static str>> {
    if maximum <= 0 {
        return None;
    }
    let too_far = match claims.get("exp").and_then(Value::as_f64) {
        Some(exp) => exp - now as f64 > maximum as f64,
        None => true,
    };
    too_far.then(|| BTreeMap::from([("exp", "exceeds maximum allowed expiration")]))
}

/// This gateway's allow-lists: `iss` must be one of `issuers`, and `aud` (a string
/// or an array of strings) must name at least one of `audiences`. Empty lists are
/// not checked.
pub fn check_allow_lists(
    claims: &Map<String, Value>,
    issuers: &[String],
    audiences: &[String],
) -> BTreeMap<&'static str, &'static str> {
    let mut errors = BTreeMap::new();
    if !issuers.is_empty() {
        match claims.get("iss") {
            None => {
                errors.insert("iss", "missing");
            }
            Some(Value::String(iss)) if issuers.iter().any(|i| i == iss) => {}
            Some(Value::String(_)) => {
                errors.insert("iss", "not allowed");
            }
            Some(_) => {
                errors.insert("iss", "must be a string");
            }
        }
    }
    if !audiences.is_empty() {
        let allowed = |a: &str| audiences.iter().any(|x| x == a);
        match claims.get("aud") {
            None => {
                errors.insert("aud", "missing");
            }
            Some(Value::String(a)) => {
                if !allowed(a) {
                    errors.insert("aud", "not allowed");
                }
            }
            Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
                if !list.iter().filter_map(Value::as_str).any(allowed) {
                    errors.insert("aud", "not allowed");
                }
            }
            Some(_) => {
                errors.insert("aud", "must be a string or an array of strings");
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, claims: &str, sig: &str) -> String {
        format!("{}.{}.{sig}", b64(header), b64(claims))
    }

    #[test]
    fn kong_bad_token_answers() {
        let bad = |t: &str| parse(t).unwrap_err();
        assert_eq!(bad("abc"), Refusal::BadToken("invalid JSON"));
        assert_eq!(bad("a.b"), Refusal::BadToken("invalid JSON"));
        assert_eq!(bad("!!.!!.!!"), Refusal::BadToken("invalid JSON"));
        assert_eq!(
            bad(&token(r#"{"alg":"HS256"}"#, "not json", "")),
            Refusal::BadToken("invalid JSON")
        );
        assert_eq!(
            bad(&token(r#"{"alg":"none"}"#, "{}", "")),
            Refusal::BadToken("invalid alg")
        );
        assert_eq!(
            bad(&token(r#"{"typ":"JWT"}"#, "{}", "")),
            Refusal::BadToken("invalid alg")
        );
        assert_eq!(
            bad(&token(r#"{"alg":"hs256"}"#, "{}", "")),
            Refusal::BadToken("invalid alg")
        );
        assert_eq!(
            bad(&token(r#"{"alg":"HS256"}"#, "{}", "a.b")),
            Refusal::BadToken("invalid signature")
        );
        assert_eq!(
            bad(&token(r#"{"alg":"HS256"}"#, "[1]", "")),
            Refusal::BadToken("invalid claims")
        );
        let ok = token(r#"{"alg":"ES512"}"#, r#"{"iss":"a"}"#, "");
        let t = parse(&ok).expect("ES512 is a known alg");
        assert_eq!(t.alg, Alg::ES512);
        assert_eq!(t.key_claim("iss"), Some(&Value::from("a")));
    }

    #[test]
    fn key_claim_falls_back_to_the_header() {
        let t = token(r#"{"alg":"HS256","iss":"h"}"#, r#"{"iss":false}"#, "");
        let t = parse(&t).expect("token");
        assert_eq!(t.key_claim("iss"), Some(&Value::from("h")));
        assert_eq!(t.key_claim("sub"), None);
    }

    #[test]
    fn bodies_are_kongs_compact_json() {
        assert_eq!(
            Refusal::NoToken.body("iss"),
            r#"{"message":"Unauthorized"}"#
        );
        assert_eq!(
            Refusal::NoKeyClaim.body("sub"),
            r#"{"message":"No mandatory 'sub' in claims"}"#
        );
        let both = check_registered(&Map::new(), &[Registered::Nbf, Registered::Exp], 0, 0);
        assert_eq!(
            Refusal::Claims(both).body("iss"),
            r#"{"exp":"must be a number","nbf":"must be a number"}"#
        );
    }

    #[test]
    fn registered_claims_and_leeway() {
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        let c = claims(serde_json::json!({"exp": 100, "nbf": 50}));
        let both = [Registered::Exp, Registered::Nbf];
        assert!(check_registered(&c, &both, 99, 0).is_empty());
        assert_eq!(check_registered(&c, &both, 100, 0)["exp"], "token expired");
        assert!(check_registered(&c, &both, 100, 1).is_empty());
        assert_eq!(
            check_registered(&c, &both, 49, 0)["nbf"],
            "token not valid yet"
        );
        assert!(check_registered(&c, &both, 49, 1).is_empty());
        let s = claims(serde_json::json!({"exp": "100"}));
        assert_eq!(
            check_registered(&s, &[Registered::Exp], 0, 0)["exp"],
            "must be a number"
        );
        assert!(check_maximum_expiration(&c, 10, 95).is_none());
        assert!(check_maximum_expiration(&c, 10, 80).is_some());
        assert!(check_maximum_expiration(&Map::new(), 10, 80).is_some());
        assert!(check_maximum_expiration(&Map::new(), 0, 80).is_none());
    }

    #[test]
    fn allow_lists() {
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        let iss = vec!["https://idp".to_string()];
        let aud = vec!["api".to_string()];
        let ok = claims(serde_json::json!({"iss": "https://idp", "aud": ["x", "api"]}));
        assert!(check_allow_lists(&ok, &iss, &aud).is_empty());
        let bad = claims(serde_json::json!({"iss": "https://evil", "aud": "x"}));
        let e = check_allow_lists(&bad, &iss, &aud);
        assert_eq!(e["iss"], "not allowed");
        assert_eq!(e["aud"], "not allowed");
        let e = check_allow_lists(&Map::new(), &iss, &aud);
        assert_eq!((e["iss"], e["aud"]), ("missing", "missing"));
        let e = check_allow_lists(&claims(serde_json::json!({"aud": [1]})), &[], &aud);
        assert_eq!(e["aud"], "must be a string or an array of strings");
        assert!(check_allow_lists(&Map::new(), &[], &[]).is_empty());
    }
}
