//! Idempotent `POST /events`: the `Idempotency-Key` header and the fingerprint
//! (SHA-256 of a canonical form) of the request it protects.
//!
//! A client that may retry a write sends the same `Idempotency-Key` with every
//! attempt. The first attempt that succeeds stores the event together with the key
//! and [`request_hash`] of the request, in one transaction, and the database's
//! primary key on the key decides which of several concurrent attempts wins (see
//! [`crate::db::Db::insert_event_idempotent`]). Later attempts with the same key
//! then get the stored event back instead of a second copy.
//!
//! Keys are global: one key names one request for the whole engine, whoever sends
//! it. Records are kept forever for now; expiring them (e.g. after 24 hours, as
//! payment APIs do) is future work. Failed requests (4xx, 5xx) store nothing, so a
//! client may fix its body and retry under the same key.

use std::fmt::Write as _;

use axum::http::{HeaderMap, HeaderName};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::model::NewEvent;

/// The request header carrying the key (matched case-insensitively).
pub const KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// How the header is named in error bodies (`error.field`).
pub const KEY_FIELD: &str = "Idempotency-Key";
/// The response header marking a replayed response (value `true`).
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest accepted key, in characters (bytes: keys are ASCII).
pub const MAX_KEY_LEN: usize = 255;

/// A valid `Idempotency-Key`: 1 to [`MAX_KEY_LEN`] visible ASCII characters
/// (`!` to `~`, so no spaces or control characters). Compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Reads the key from a request's headers. Runs once per `POST /events`, before
    /// the body is validated.
    ///
    /// Returns `Ok(None)` without the header, `Ok(Some(key))` for one valid value,
    /// and a 422 naming `Idempotency-Key` for an empty, too long or non-visible-ASCII
    /// value, or for the header given more than once.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, AppError> {
        let mut values = headers.get_all(KEY_HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AppError::invalid(
                KEY_FIELD,
                format!("{KEY_FIELD} must be given at most once"),
            ));
        }
        Self::parse(value.as_bytes()).map(Some)
    }

    /// Checks one header value (see [`IdempotencyKey`] for the rules); 422 naming
    /// `Idempotency-Key` otherwise.
    pub fn parse(bytes: &[u8]) -> Result<Self, AppError> {
        if bytes.is_empty() || bytes.len() > MAX_KEY_LEN {
            return Err(AppError::invalid(
                KEY_FIELD,
                format!("{KEY_FIELD} must be 1 to {MAX_KEY_LEN} characters long"),
            ));
        }
        if !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(AppError::invalid(
                KEY_FIELD,
                format!(
                    "{KEY_FIELD} must contain only visible ASCII characters \
                     (no spaces or control characters)"
                ),
            ));
        }
        // Visible ASCII is valid UTF-8.
        String::from_utf8(bytes.to_vec())
            .map(Self)
            .map_err(|_| AppError::invalid(KEY_FIELD, format!("{KEY_FIELD} must be ASCII")))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Version tag leading the canonical form; change it if the form ever changes, so
/// old and new fingerprints can never be confused.
const CANONICAL_VERSION: &str = "revenue-event/v1";

/// The fingerprint of a validated `POST /events` request: lowercase hex SHA-256 of
/// [`canonical_request`]. Runs once per request that carries a key.
///
/// Two bodies get the same fingerprint exactly when they would store the same
/// event: key order and whitespace do not matter, nor does the offset in which
/// `occurred_at` is written (it is compared in UTC, to the microsecond), nor a
/// `metadata` of `null` versus none.
pub fn request_hash(new: &NewEvent) -> String {
    hex::encode(Sha256::digest(canonical_request(new).as_bytes()))
}

/// The canonical text of a validated request: a JSON array of a version tag and the
/// fields in a fixed order, with `occurred_at` as fixed-width UTC and the keys of
/// every `metadata` object sorted, without whitespace.
pub fn canonical_request(new: &NewEvent) -> String {
    let fields = Value::Array(vec![
        Value::from(CANONICAL_VERSION),
        Value::from(new.customer_id.as_str()),
        Value::from(new.product.as_str()),
        Value::from(new.kind.as_str()),
        Value::from(new.amount),
        Value::from(new.currency),
        Value::from(new.occurred_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        new.metadata
            .clone()
            .map(Value::Object)
            .unwrap_or(Value::Null),
    ]);
    let mut out = String::new();
    write_canonical(&fields, &mut out);
    out
}

/// Writes `value` as compact JSON with object keys sorted (bytewise), whatever the
/// order they were parsed in.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
        // Scalars: serde_json's own compact form (strings escaped, numbers as parsed).
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_canonical(&Value::String(key.clone()), out);
        out.push(':');
        write_canonical(value, out);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use axum::http::HeaderValue;
    use serde_json::value::RawValue;

    use super::*;
    use crate::validation;

    fn validated(text: &str) -> NewEvent {
        validation::new_event(&RawValue::from_string(text.to_owned()).unwrap()).unwrap()
    }

    fn hash_of(text: &str) -> String {
        request_hash(&validated(text))
    }

    const BODY: &str = r#"{"customer_id":"cus_1","product":"pro","kind":"charge","amount":4999,"currency":"USD","occurred_at":"2026-01-07T12:00:00Z","metadata":{"b":[1,{"y":2,"x":"é\""}],"a":0.5}}"#;

    #[test]
    fn same_request_same_hash_whatever_the_spelling() {
        let base = hash_of(BODY);
        assert_eq!(base.len(), 64);
        assert!(base.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        for same in [
            // Keys reordered at every level, whitespace added.
            r#" { "metadata" : { "a" : 0.5 , "b" : [ 1 , { "x" : "é\"" , "y" : 2 } ] },
                 "occurred_at":"2026-01-07T12:00:00Z","currency":"USD","amount":4999,
                 "kind":"charge","product":"pro","customer_id":"cus_1" } "#,
            // The same instant in another offset, and with zero fractions.
            r#"{"customer_id":"cus_1","product":"pro","kind":"charge","amount":4999,"currency":"USD","occurred_at":"2026-01-07T13:00:00.000000+01:00","metadata":{"a":0.5,"b":[1,{"x":"\u00e9\"","y":2}]}}"#,
        ] {
            assert_eq!(hash_of(same), base, "{same}");
        }
    }

    #[test]
    fn different_request_different_hash() {
        let base = hash_of(BODY);
        for (from, to) in [
            (r#""amount":4999"#, r#""amount":4998"#),
            (r#""kind":"charge""#, r#""kind":"refund""#),
            (r#""currency":"USD""#, r#""currency":"EUR""#),
            (r#""cus_1""#, r#""cus_2""#),
            (r#""pro""#, r#""pro2""#),
            ("12:00:00Z", "12:00:00.000001Z"),
            (r#""a":0.5"#, r#""a":0.25"#),
            // Array order matters.
            (r#"[1,{"y":2,"x":"é\""}]"#, r#"[{"y":2,"x":"é\""},1]"#),
        ] {
            let other = BODY.replacen(from, to, 1);
            assert_ne!(other, BODY);
            assert_ne!(hash_of(&other), base, "{other}");
        }
        // No metadata and null metadata are the same request, but not {}.
        let bare = r#"{"customer_id":"c","product":"p","kind":"charge","amount":1,"currency":"USD","occurred_at":"2026-01-07T12:00:00Z"}"#;
        let null = bare.replace('}', r#","metadata":null}"#);
        let empty = bare.replace('}', r#","metadata":{}}"#);
        assert_eq!(hash_of(bare), hash_of(&null));
        assert_ne!(hash_of(bare), hash_of(&empty));
    }

    #[test]
    fn canonical_form_is_compact_and_sorted() {
        let text = canonical_request(&validated(BODY));
        assert_eq!(
            text,
            r#"["revenue-event/v1","cus_1","pro","charge",4999,"USD","2026-01-07T12:00:00.000000Z",{"a":0.5,"b":[1,{"x":"é\"","y":2}]}]"#
        );
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert_eq!(
            IdempotencyKey::parse(b"order-42:retry/1").unwrap().as_str(),
            "order-42:retry/1"
        );
        assert!(IdempotencyKey::parse("!~".repeat(127).as_bytes()).is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; MAX_KEY_LEN]).is_ok());
        for bad in [
            &b""[..],
            &[b'k'; MAX_KEY_LEN + 1][..],
            b"two words",
            b"tab\there",
            b"nul\0",
            b"del\x7f",
            "caf\u{e9}".as_bytes(),
        ] {
            match IdempotencyKey::parse(bad) {
                Err(AppError::InvalidField { field, .. }) => assert_eq!(field, KEY_FIELD),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn header_is_optional_but_single() {
        let mut headers = HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&headers).unwrap(), None);
        headers.insert("Idempotency-Key", HeaderValue::from_static("abc"));
        assert_eq!(
            IdempotencyKey::from_headers(&headers).unwrap(),
            Some(IdempotencyKey("abc".into()))
        );
        headers.append("idempotency-key", HeaderValue::from_static("abc"));
        assert!(matches!(
            IdempotencyKey::from_headers(&headers),
            Err(AppError::InvalidField { field, .. }) if field == KEY_FIELD
        ));
        let mut headers = HeaderMap::new();
        headers.insert(KEY_HEADER, HeaderValue::from_bytes(b"\xe9t\xe9").unwrap());
        assert!(IdempotencyKey::from_headers(&headers).is_err());
    }
}
