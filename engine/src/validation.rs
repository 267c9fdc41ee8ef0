//! Turns untrusted input (JSON bodies and query strings) into the validated types of
//! [`crate::model`], or an [`AppError`] naming the offending field.
//!
//! Rules, in short:
//! - `customer_id`, `product`: non-empty strings of at most 128 characters, not only
//!   whitespace, no control characters.
//! - `kind`: exactly `charge` or `refund`.
//! - `amount`: a JSON integer from 1 to 999999999999 ([`MAX_AMOUNT`], minor
//!   units). Decimals (`49.99`, `4999.0`), strings, zero, negatives and larger
//!   amounts are rejected.
//! - `currency`: an uppercase ISO 4217 code from [`KNOWN_CURRENCIES`]; lowercase
//!   (`usd`) is rejected with a hint.
//! - `occurred_at`, `from`, `to`: RFC 3339 with an offset, years 1970..=9999,
//!   stored in UTC truncated to microseconds. In a query string a `+` offset must be
//!   percent-encoded as `%2B`.
//! - `metadata`: optional JSON object (or `null`), at most 16 KiB serialized, whose
//!   numbers are stored exactly: integers must fit in 64 bits (signed or unsigned)
//!   and other numbers must survive a 64-bit float unchanged (`0.1` does,
//!   `0.12345678901234567890` does not); big values belong in strings. No key or
//!   string in it may contain U+0000 (Postgres' JSONB cannot store it).
//! - Unknown body fields and unknown or repeated query parameters are rejected.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::error::AppError;
use crate::model::{
    truncate_to_micros, year_in_range, Cursor, EventFilter, GroupBy, Interval, Kind, NewEvent,
    SummaryQuery, DEFAULT_LIMIT, MAX_AMOUNT, MAX_LIMIT, MAX_TEXT_LEN, MAX_YEAR, MIN_YEAR,
};

/// Largest accepted `metadata` object, serialized, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// ISO 4217 codes accepted as `currency`: the circulating currencies, plus a few
/// recently replaced ones (ANG, CUC, SLL, ZWL) so historical events can be recorded.
/// Sorted, for binary search.
pub const KNOWN_CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP",
    "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF",
    "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD",
    "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR",
    "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB",
    "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD",
    "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
    "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD",
    "UYU", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER",
    "ZAR", "ZMW", "ZWG", "ZWL",
];

/// Body fields accepted by `POST /events`.
const EVENT_FIELDS: &[&str] = &[
    "customer_id",
    "product",
    "kind",
    "amount",
    "currency",
    "occurred_at",
    "metadata",
];

/// Validates the JSON body of `POST /events`, given as its exact (well-formed) text
/// so that metadata numbers can be checked as sent.
///
/// Runs once per request. Returns the [`NewEvent`] or the first problem found: 400
/// if the body is not a JSON object, 422 naming the field otherwise (checked in the
/// order customer_id, product, kind, amount, currency, occurred_at, metadata;
/// unknown fields last).
pub fn new_event(body: &RawValue) -> Result<NewEvent, AppError> {
    let malformed = |e: serde_json::Error| AppError::BadRequest {
        code: "malformed_json",
        message: format!("cannot parse the request body: {e}"),
    };
    let body_value: Value = serde_json::from_str(body.get()).map_err(malformed)?;
    if let Some(field) = crate::unique_keys::first_duplicate(body.get()) {
        return Err(AppError::invalid(
            field.clone(),
            format!("{field} appears more than once, or an object in it repeats a key"),
        ));
    }
    let Value::Object(mut obj) = body_value else {
        return Err(AppError::BadRequest {
            code: "invalid_body",
            message: "request body must be a JSON object".into(),
        });
    };

    let customer_id = text("customer_id", required(&mut obj, "customer_id")?)?;
    let product = text("product", required(&mut obj, "product")?)?;
    let kind = kind_value(required(&mut obj, "kind")?)?;
    let amount = amount(required(&mut obj, "amount")?)?;
    let currency = currency("currency", required(&mut obj, "currency")?)?;
    let occurred_at = match required(&mut obj, "occurred_at")? {
        Value::String(s) => timestamp("occurred_at", &s)?,
        _ => {
            return Err(AppError::invalid(
                "occurred_at",
                "occurred_at must be an RFC 3339 string",
            ))
        }
    };
    let metadata = match obj.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let size = serde_json::to_string(&m)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                return Err(AppError::invalid(
                    "metadata",
                    format!("metadata must be at most {MAX_METADATA_BYTES} bytes when serialized"),
                ));
            }
            if has_nul(&m) {
                // Postgres' JSONB cannot hold U+0000; refused on both backends.
                return Err(AppError::invalid(
                    "metadata",
                    "metadata must not contain the character U+0000 (\\u0000)",
                ));
            }
            // The parsed value has already rounded inexact numbers; look at the text.
            let fields: HashMap<String, &RawValue> =
                serde_json::from_str(body.get()).map_err(malformed)?;
            if let Some(raw) = fields.get("metadata") {
                exact_numbers("metadata", raw.get())?;
            }
            Some(m)
        }
        Some(_) => {
            return Err(AppError::invalid(
                "metadata",
                "metadata must be a JSON object",
            ))
        }
    };
    if let Some(unknown) = obj.keys().next() {
        return Err(AppError::invalid(
            unknown.clone(),
            format!(
                "unknown field `{unknown}`; expected one of: {}",
                EVENT_FIELDS.join(", ")
            ),
        ));
    }

    Ok(NewEvent {
        customer_id,
        product,
        kind,
        amount,
        currency,
        occurred_at,
        metadata,
    })
}

/// Removes and returns a field that must be present and not `null`.
fn required(obj: &mut Map<String, Value>, field: &str) -> Result<Value, AppError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err(AppError::missing(field)),
        Some(v) => Ok(v),
    }
}

/// Validates an identifier-like string (`customer_id`, `product`).
fn text(field: &str, value: Value) -> Result<String, AppError> {
    let Value::String(s) = value else {
        return Err(AppError::invalid(
            field,
            format!("{field} must be a string"),
        ));
    };
    text_str(field, &s)?;
    Ok(s)
}

/// Whether `s` passes the rules of `customer_id` and `product` (so it could name
/// stored events). Used on path parameters before touching the database.
pub fn is_valid_text(s: &str) -> bool {
    text_str("customer_id", s).is_ok()
}

fn text_str(field: &str, s: &str) -> Result<(), AppError> {
    if s.trim().is_empty() {
        return Err(AppError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if s.chars().count() > MAX_TEXT_LEN {
        return Err(AppError::invalid(
            field,
            format!("{field} must be at most {MAX_TEXT_LEN} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

fn kind_value(value: Value) -> Result<Kind, AppError> {
    match value {
        Value::String(s) => kind_str("kind", &s),
        _ => Err(AppError::invalid(
            "kind",
            "kind must be \"charge\" or \"refund\"",
        )),
    }
}

fn kind_str(field: &str, s: &str) -> Result<Kind, AppError> {
    Kind::parse(s).ok_or_else(|| {
        AppError::invalid(field, format!("{field} must be \"charge\" or \"refund\""))
    })
}

/// Validates `amount`: a JSON integer from 1 to [`MAX_AMOUNT`].
fn amount(value: Value) -> Result<i64, AppError> {
    let hint = format!(
        "amount must be a positive integer number of minor units (e.g. 4999 for 49.99) \
         no larger than {MAX_AMOUNT}"
    );
    let too_large = || {
        AppError::invalid(
            "amount",
            format!("amount must be at most {MAX_AMOUNT} (minor units)"),
        )
    };
    let Value::Number(n) = value else {
        return Err(AppError::invalid(
            "amount",
            format!("{hint}; got a JSON {}", json_type(&value)),
        ));
    };
    match n.as_i64() {
        Some(i) if i > MAX_AMOUNT => Err(too_large()),
        Some(i) if i > 0 => Ok(i),
        Some(_) => Err(AppError::invalid(
            "amount",
            "amount must be greater than zero",
        )),
        None if n.is_u64() => Err(too_large()),
        None if n.is_f64() && n.as_f64().is_some_and(|f| f <= 0.0) => Err(AppError::invalid(
            "amount",
            "amount must be greater than zero",
        )),
        None => Err(AppError::invalid("amount", hint)),
    }
}

/// Longest number quoted back in an error message.
const MAX_QUOTED_NUMBER: usize = 40;

/// Checks that every number in the JSON text `raw` (the value of `field`) would
/// be stored and returned with the same value: serde_json keeps integers only
/// within 64 bits and other numbers as `f64`, so e.g. 12345678901234567890123 would
/// silently become 1.2345678901234568e22. Returns 422 naming `field` otherwise.
fn exact_numbers(field: &str, raw: &str) -> Result<(), AppError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, escapes included (`\"` does not end it).
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = &raw[start..i];
                if !number_is_exact(token) {
                    let quoted = if token.len() > MAX_QUOTED_NUMBER {
                        format!("{}...", &token[..MAX_QUOTED_NUMBER])
                    } else {
                        token.to_owned()
                    };
                    return Err(AppError::invalid(
                        field,
                        format!(
                            "{field} contains the number {quoted}, which cannot be stored \
                             exactly (integers must fit in 64 bits, other numbers in a 64-bit \
                             float); send it as a string"
                        ),
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Whether the JSON number `token` keeps its value once parsed by serde_json and
/// written back, and an integer stays an integer.
fn number_is_exact(token: &str) -> bool {
    let Ok(number) = serde_json::from_str::<Number>(token) else {
        return false;
    };
    if number.is_f64() && !token.contains(['.', 'e', 'E']) {
        // An integer beyond 64 bits became a float (even 10^29, whose shortest float
        // form reads back as the same value). Only `-0` is harmless.
        return decimal_value(token) == Some((false, String::new(), 0));
    }
    match (decimal_value(token), decimal_value(&number.to_string())) {
        (Some(sent), Some(stored)) => sent == stored,
        _ => false,
    }
}

/// The value of a JSON number in a canonical form: sign, significant digits
/// (without leading or trailing zeros) and the power of ten of the last digit. Zero
/// (of either sign) is `(false, "", 0)`. `None` if `s` is not a JSON number.
fn decimal_value(s: &str) -> Option<(bool, String, i64)> {
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, exponent_value(e)?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    let without_leading = digits.trim_start_matches('0');
    let significant = without_leading.trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let frac_len = i64::try_from(frac.len()).unwrap_or(i64::MAX);
    let trailing_zeros = i64::try_from(without_leading.len() - significant.len()).unwrap_or(0);
    let scale = exponent
        .saturating_sub(frac_len)
        .saturating_add(trailing_zeros);
    Some((negative, significant.to_owned(), scale))
}

/// The exponent of a JSON number (after the `e`), saturating far beyond any `f64`.
fn exponent_value(e: &str) -> Option<i64> {
    let (negative, digits) = match e.as_bytes().first() {
        Some(b'-') => (true, &e[1..]),
        Some(b'+') => (false, &e[1..]),
        _ => (false, e),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.bytes().fold(0i64, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(i64::from(b - b'0'))
            .min(1 << 40)
    });
    Some(if negative { -magnitude } else { magnitude })
}

/// Validates a currency code (body field or query parameter).
fn currency(field: &str, value: Value) -> Result<&'static str, AppError> {
    match value {
        Value::String(s) => currency_str(field, &s),
        _ => Err(AppError::invalid(
            field,
            format!("{field} must be a string such as \"USD\""),
        )),
    }
}

/// Looks `s` up in [`KNOWN_CURRENCIES`]; lowercase codes get a hint.
pub fn currency_str(field: &str, s: &str) -> Result<&'static str, AppError> {
    if let Ok(i) = KNOWN_CURRENCIES.binary_search(&s) {
        return Ok(KNOWN_CURRENCIES[i]);
    }
    let upper = s.to_ascii_uppercase();
    if upper != s && KNOWN_CURRENCIES.binary_search(&upper.as_str()).is_ok() {
        return Err(AppError::invalid(
            field,
            format!("{field} must be an uppercase ISO 4217 code: use \"{upper}\""),
        ));
    }
    Err(AppError::invalid(
        field,
        format!("{field} {s:?} is not a known ISO 4217 currency code (e.g. \"USD\", \"EUR\")"),
    ))
}

/// Parses an RFC 3339 timestamp into UTC, checks the year range and truncates to
/// microseconds.
pub fn timestamp(field: &str, s: &str) -> Result<DateTime<Utc>, AppError> {
    let parsed = DateTime::parse_from_rfc3339(s).map_err(|e| {
        let hint = if s.contains(' ') {
            " (in a query string, encode `+` as %2B)"
        } else {
            ""
        };
        AppError::invalid(
            field,
            format!(
                "{field} must be an RFC 3339 timestamp such as 2026-01-07T12:00:00Z: {e}{hint}"
            ),
        )
    })?;
    let utc = parsed.with_timezone(&Utc);
    if utc.timestamp_subsec_nanos() >= 1_000_000_000 {
        // chrono keeps a leap second (`:60`) as a nanosecond count past one
        // second, which the databases store as the next second (Postgres) or as
        // text that sorts apart from its instant (SQLite): refused, not skewed.
        return Err(AppError::invalid(
            field,
            format!("{field} must not be a leap second (:60); use :59 or the next second"),
        ));
    }
    if !year_in_range(&utc) {
        return Err(AppError::invalid(
            field,
            format!("{field} must be between the years {MIN_YEAR} and {MAX_YEAR} (UTC)"),
        ));
    }
    Ok(truncate_to_micros(utc))
}

/// Whether a key or string anywhere in `object` contains U+0000.
fn has_nul(object: &Map<String, Value>) -> bool {
    fn value_has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(value_has_nul),
            Value::Object(m) => has_nul(m),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    object
        .iter()
        .any(|(k, v)| k.contains('\0') || value_has_nul(v))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Optional `[from, to)` bounds.
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Query parameters checked against an allow-list: no unknown names, no repeats.
#[derive(Debug)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Checks `pairs` (the decoded query string) against `allowed`.
    ///
    /// Runs once per request; returns 422 naming the first unknown or repeated
    /// parameter.
    pub fn new(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<Self, AppError> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(AppError::invalid(
                    name.clone(),
                    format!(
                        "unknown query parameter `{name}`; expected one of: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(AppError::invalid(
                    name.clone(),
                    format!("query parameter `{name}` is given more than once"),
                ));
            }
        }
        Ok(Self { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> Result<Option<String>, AppError> {
        self.get(name)
            .map(|v| text_str(name, v).map(|()| v.to_owned()))
            .transpose()
    }

    fn kind(&self, name: &str) -> Result<Option<Kind>, AppError> {
        self.get(name).map(|v| kind_str(name, v)).transpose()
    }

    fn currency(&self, name: &str) -> Result<Option<&'static str>, AppError> {
        self.get(name).map(|v| currency_str(name, v)).transpose()
    }

    fn timestamp(&self, name: &str) -> Result<Option<DateTime<Utc>>, AppError> {
        self.get(name).map(|v| timestamp(name, v)).transpose()
    }

    /// Reads `from` and `to` and checks `from <= to`.
    fn range(&self) -> Result<TimeRange, AppError> {
        let from = self.timestamp("from")?;
        let to = self.timestamp("to")?;
        if let (Some(f), Some(t)) = (from, to) {
            if t < f {
                return Err(AppError::invalid("to", "to must not be earlier than from"));
            }
        }
        Ok((from, to))
    }
}

/// Query parameters accepted by `GET /events`.
pub const EVENT_FILTER_PARAMS: &[&str] = &[
    "customer_id",
    "product",
    "kind",
    "currency",
    "from",
    "to",
    "limit",
    "cursor",
];

/// Validates the query of `GET /events`. Returns the filter or 422 naming the
/// parameter.
pub fn event_filter(pairs: Vec<(String, String)>) -> Result<EventFilter, AppError> {
    let q = QueryParams::new(pairs, EVENT_FILTER_PARAMS)?;
    let (from, to) = q.range()?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(AppError::invalid(
                    "limit",
                    format!("limit must be an integer from 1 to {MAX_LIMIT}"),
                ))
            }
        },
    };
    let cursor = q
        .get("cursor")
        .map(|v| {
            Cursor::decode(v).ok_or_else(|| {
                AppError::invalid(
                    "cursor",
                    "cursor is not valid; pass the next_cursor of a previous page unchanged",
                )
            })
        })
        .transpose()?;
    Ok(EventFilter {
        customer_id: q.text("customer_id")?,
        product: q.text("product")?,
        kind: q.kind("kind")?,
        currency: q.currency("currency")?,
        from,
        to,
        limit,
        cursor,
    })
}

/// Query parameters accepted by `GET /summary`.
pub const SUMMARY_PARAMS: &[&str] = &["from", "to", "interval", "currency", "group_by"];

/// Validates the query of `GET /summary` (`interval` defaults to `day`; `from`,
/// `to`, `currency` and `group_by` (only `product`) are optional). Returns 422
/// naming the parameter.
pub fn summary_query(pairs: Vec<(String, String)>) -> Result<SummaryQuery, AppError> {
    let q = QueryParams::new(pairs, SUMMARY_PARAMS)?;
    let (from, to) = q.range()?;
    let interval = match q.get("interval") {
        None => Interval::Day,
        Some(v) => Interval::parse(v).ok_or_else(|| {
            AppError::invalid("interval", "interval must be \"day\" or \"month\"")
        })?,
    };
    let group_by = q
        .get("group_by")
        .map(|v| {
            GroupBy::parse(v)
                .ok_or_else(|| AppError::invalid("group_by", "group_by must be \"product\""))
        })
        .transpose()?;
    Ok(SummaryQuery {
        from,
        to,
        interval,
        currency: q.currency("currency")?,
        group_by,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use serde_json::json;

    use super::*;

    fn body() -> Value {
        json!({"customer_id":"cus_1001","product":"robot-pro-monthly","kind":"charge",
               "amount":4999,"currency":"USD","occurred_at":"2026-01-07T12:00:00Z"})
    }

    /// Runs [`new_event`] on the JSON text of `body`.
    fn check(body: Value) -> Result<NewEvent, AppError> {
        new_event(&RawValue::from_string(body.to_string()).unwrap())
    }

    /// Runs [`new_event`] on a JSON text.
    fn check_text(text: &str) -> Result<NewEvent, AppError> {
        new_event(&RawValue::from_string(text.to_owned()).unwrap())
    }

    fn field_of(e: AppError) -> String {
        match e {
            AppError::InvalidField { field, .. } | AppError::MissingField { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn currencies_are_sorted_and_unique() {
        assert!(KNOWN_CURRENCIES.windows(2).all(|w| w[0] < w[1]));
        assert!(KNOWN_CURRENCIES
            .iter()
            .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
    }

    #[test]
    fn accepts_a_valid_event() {
        let e = check(body()).unwrap();
        assert_eq!(e.amount, 4999);
        assert_eq!(e.currency, "USD");
    }

    #[test]
    fn names_the_bad_field() {
        let cases: &[(&str, Value, &str)] = &[
            ("amount", json!(0), "amount"),
            ("amount", json!(-5), "amount"),
            ("amount", json!(49.99), "amount"),
            ("amount", json!(4999.0), "amount"),
            ("amount", json!("4999"), "amount"),
            ("amount", json!(u64::MAX), "amount"),
            ("amount", json!(i64::MAX), "amount"),
            ("amount", json!(MAX_AMOUNT + 1), "amount"),
            ("currency", json!("usd"), "currency"),
            ("currency", json!("XYZ"), "currency"),
            ("kind", json!("chargeback"), "kind"),
            ("occurred_at", json!("yesterday"), "occurred_at"),
            ("occurred_at", json!("2026-01-07T12:00:00"), "occurred_at"),
            ("customer_id", json!(""), "customer_id"),
            ("customer_id", json!("a\u{0}b"), "customer_id"),
            ("product", json!("x".repeat(129)), "product"),
            ("metadata", json!([1]), "metadata"),
            ("surprise", json!(1), "surprise"),
        ];
        for (field, value, expected) in cases {
            let mut b = body();
            b[*field] = value.clone();
            let err = check(b).expect_err(&format!("{field}={value}"));
            assert_eq!(field_of(err), *expected, "{field}={value}");
        }
        let mut b = body();
        b.as_object_mut().unwrap().remove("amount");
        assert!(matches!(check(b), Err(AppError::MissingField { .. })));
    }

    #[test]
    fn amount_is_capped() {
        let mut b = body();
        b["amount"] = json!(MAX_AMOUNT);
        assert_eq!(check(b).unwrap().amount, MAX_AMOUNT);
        let mut b = body();
        b["amount"] = json!(MAX_AMOUNT + 1);
        match check(b) {
            Err(AppError::InvalidField { field, message }) => {
                assert_eq!(field, "amount");
                assert!(message.contains("999999999999"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metadata_must_not_hold_nul() {
        for bad in [
            r#"{"a":"x\u0000y"}"#,
            r#"{"a\u0000":1}"#,
            r#"{"a":[{"b":["\u0000"]}]}"#,
        ] {
            let mut b = body();
            b["metadata"] = serde_json::from_str(bad).unwrap();
            let got = check(b);
            assert!(
                matches!(&got, Err(AppError::InvalidField { field, .. }) if field == "metadata"),
                "{bad}: {got:?}"
            );
        }
        let mut b = body();
        b["metadata"] = json!({"path": "C:\\u0000"});
        assert!(check(b).is_ok(), "a backslash followed by u0000 is fine");
    }

    #[test]
    fn metadata_numbers_must_be_exact() {
        let with_metadata = |m: &str| {
            let b = body().to_string();
            format!("{},\"metadata\":{m}}}", &b[..b.len() - 1])
        };
        for ok in [
            r#"{"n":42,"neg":-9223372036854775808,"u":18446744073709551615}"#,
            r#"{"f":0.1,"g":1.5e-7,"h":1e3,"i":-0,"j":100.0,"k":2.5E+2}"#,
            r#"{"s":"12345678901234567890123 \" 0.1234567890123456789","n":[1,[2,{"x":3}]]}"#,
            r#"{"z":0e999999999999999999999,"big":1.7976931348623157e308}"#,
        ] {
            let got = check_text(&with_metadata(ok));
            assert!(got.is_ok(), "{ok}: {got:?}");
        }
        for bad in [
            r#"{"n":12345678901234567890123}"#,
            r#"{"n":18446744073709551616}"#,
            r#"{"n":-9223372036854775809}"#,
            r#"{"n":100000000000000000000000000000}"#,
            r#"{"deep":{"list":[1,2,{"x":1180591620717411303424}]}}"#,
            r#"{"pi":3.14159265358979323846}"#,
            r#"{"tiny":1e-400}"#,
            r#"{"s":"\"","n":0.10000000000000000000000001}"#,
        ] {
            let got = check_text(&with_metadata(bad));
            assert!(
                matches!(&got, Err(AppError::InvalidField { field, .. }) if field == "metadata"),
                "{bad}: {got:?}"
            );
        }
        // A repeated member is refused, not resolved one way or the other.
        let text = with_metadata(r#"{"n":12345678901234567890123},"metadata":{"n":1}"#);
        assert_eq!(field_of(check_text(&text).unwrap_err()), "metadata");
        // Out-of-range numbers elsewhere are the field's own problem.
        let b = body()
            .to_string()
            .replace("4999", "12345678901234567890123");
        assert_eq!(field_of(check_text(&b).unwrap_err()), "amount");
    }

    #[test]
    fn decimal_values_are_canonical() {
        let v = |s| decimal_value(s).unwrap();
        assert_eq!(v("100"), v("1e2"));
        assert_eq!(v("100"), v("100.0"));
        assert_eq!(v("0.5"), v("5E-1"));
        assert_eq!(v("0"), v("-0.0e5"));
        assert_ne!(v("1"), v("-1"));
        assert_ne!(v("0.1"), v("0.10000000000000001"));
        assert_eq!(decimal_value("abc"), None);
    }

    #[test]
    fn timestamps_become_utc() {
        for leap in [
            "2016-12-31T23:59:60Z",
            "9999-12-31T23:59:60.5Z",
            "2017-01-01T00:59:60+01:00",
        ] {
            let e = timestamp("occurred_at", leap).unwrap_err();
            assert!(e.to_string().contains("leap second"), "{leap}: {e}");
        }
        let ts = timestamp("from", "2026-01-07T12:00:00+01:00").unwrap();
        assert_eq!(ts.to_rfc3339(), "2026-01-07T11:00:00+00:00");
        assert!(timestamp("from", "1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn query_rejects_unknown_and_repeated() {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            field_of(event_filter(pairs(&[("customer", "x")])).unwrap_err()),
            "customer"
        );
        assert_eq!(
            field_of(event_filter(pairs(&[("kind", "charge"), ("kind", "refund")])).unwrap_err()),
            "kind"
        );
        assert_eq!(
            field_of(event_filter(pairs(&[("limit", "0")])).unwrap_err()),
            "limit"
        );
        assert_eq!(
            field_of(event_filter(pairs(&[("limit", "501")])).unwrap_err()),
            "limit"
        );
        assert_eq!(
            field_of(event_filter(pairs(&[("cursor", "nope")])).unwrap_err()),
            "cursor"
        );
        assert_eq!(
            field_of(
                event_filter(pairs(&[
                    ("from", "2026-02-01T00:00:00Z"),
                    ("to", "2026-01-01T00:00:00Z")
                ]))
                .unwrap_err()
            ),
            "to"
        );
        assert_eq!(
            field_of(summary_query(pairs(&[("interval", "week")])).unwrap_err()),
            "interval"
        );
        assert_eq!(event_filter(vec![]).unwrap().limit, DEFAULT_LIMIT);
        for bad in ["", "customer", "PRODUCT"] {
            assert_eq!(
                field_of(summary_query(pairs(&[("group_by", bad)])).unwrap_err()),
                "group_by",
                "{bad}"
            );
        }
        assert_eq!(
            summary_query(pairs(&[("group_by", "product")]))
                .unwrap()
                .group_by,
            Some(GroupBy::Product)
        );
        assert_eq!(summary_query(vec![]).unwrap().group_by, None);
    }

    #[test]
    fn path_texts_follow_the_body_rules() {
        assert!(is_valid_text("cus_1001"));
        assert!(!is_valid_text(""));
        assert!(!is_valid_text("  "));
        assert!(!is_valid_text("a\u{7}b"));
        assert!(!is_valid_text(&"x".repeat(MAX_TEXT_LEN + 1)));
    }
}
