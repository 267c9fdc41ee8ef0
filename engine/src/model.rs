//! Domain types: revenue events, list filters and cursors, summary queries and rows,
//! and per-customer totals.
//!
//! These types are already validated: handlers build them through
//! [`crate::validation`], and the database layer trusts them.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// Longest accepted `customer_id` or `product`, in characters.
pub const MAX_TEXT_LEN: usize = 128;
/// Default page size of `GET /events`.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size of `GET /events`.
pub const MAX_LIMIT: u32 = 500;
/// Earliest year accepted for `occurred_at` and time filters.
pub const MIN_YEAR: i32 = 1970;
/// Latest year accepted for `occurred_at` and time filters.
pub const MAX_YEAR: i32 = 9999;
/// Largest accepted `amount` of one event, in minor units: 10^12 − 1 (just under
/// ten billion dollars or euros, a trillion yen). Larger amounts are not real
/// payments, and the cap keeps every amount far from the 64-bit limit.
pub const MAX_AMOUNT: i64 = 999_999_999_999;
/// Prefix of every event id.
pub const EVENT_ID_PREFIX: &str = "evt_";

/// Whether an event adds money (`charge`) or gives it back (`refund`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Money received from the customer.
    Charge,
    /// Money returned to the customer.
    Refund,
}

impl Kind {
    /// The wire and database spelling: `charge` or `refund`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Charge => "charge",
            Kind::Refund => "refund",
        }
    }

    /// Parses the exact lowercase spelling; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "charge" => Some(Kind::Charge),
            "refund" => Some(Kind::Refund),
            _ => None,
        }
    }
}

/// Summary bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// UTC calendar day; bucket label `YYYY-MM-DD`.
    Day,
    /// UTC calendar month; bucket label `YYYY-MM`.
    Month,
}

impl Interval {
    /// Parses `day` or `month`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Interval::Day),
            "month" => Some(Interval::Month),
            _ => None,
        }
    }
}

/// An optional extra grouping of `GET /summary` rows (`group_by=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One row per bucket, currency and product; rows carry `"product"`.
    Product,
}

impl GroupBy {
    /// Parses `product`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "product" => Some(GroupBy::Product),
            _ => None,
        }
    }
}

/// A validated event to be stored (the body of `POST /events`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Who paid or was refunded.
    pub customer_id: String,
    /// What was sold.
    pub product: String,
    /// Charge or refund.
    pub kind: Kind,
    /// Amount in minor units (cents for USD, yen for JPY), 1..=[`MAX_AMOUNT`].
    pub amount: i64,
    /// Uppercase ISO 4217 code from [`crate::validation::KNOWN_CURRENCIES`].
    pub currency: &'static str,
    /// When the money moved, UTC, truncated to microseconds.
    pub occurred_at: DateTime<Utc>,
    /// Free-form JSON object supplied by the client.
    pub metadata: Option<Map<String, Value>>,
}

/// A stored event, as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// `evt_` followed by 32 lowercase hex digits (a UUID v4).
    pub id: String,
    /// Who paid or was refunded.
    pub customer_id: String,
    /// What was sold.
    pub product: String,
    /// Charge or refund.
    pub kind: Kind,
    /// Positive amount in minor units.
    pub amount: i64,
    /// Uppercase ISO 4217 code.
    pub currency: String,
    /// When the money moved (RFC 3339, UTC).
    #[serde(serialize_with = "serialize_ts")]
    pub occurred_at: DateTime<Utc>,
    /// When the engine stored the event (RFC 3339, UTC).
    #[serde(serialize_with = "serialize_ts")]
    pub created_at: DateTime<Utc>,
    /// The client's metadata object, or `null`.
    pub metadata: Option<Value>,
}

impl Event {
    /// Builds the event to store from a validated body: assigns a fresh id and the
    /// current time as `created_at`. Runs once per `POST /events`.
    pub fn from_new(new: NewEvent) -> Self {
        Event {
            id: new_event_id(),
            customer_id: new.customer_id,
            product: new.product,
            kind: new.kind,
            amount: new.amount,
            currency: new.currency.to_owned(),
            occurred_at: new.occurred_at,
            created_at: truncate_to_micros(Utc::now()),
            metadata: new.metadata.map(Value::Object),
        }
    }
}

/// Returns a fresh event id: `evt_` + a UUID v4 as 32 lowercase hex digits.
pub fn new_event_id() -> String {
    format!("{EVENT_ID_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// Whether `id` has the shape of an event id (used before touching the database).
pub fn is_event_id(id: &str) -> bool {
    id.strip_prefix(EVENT_ID_PREFIX).is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Filters and paging of `GET /events`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventFilter {
    /// Only this customer.
    pub customer_id: Option<String>,
    /// Only this product.
    pub product: Option<String>,
    /// Only charges or only refunds.
    pub kind: Option<Kind>,
    /// Only this currency.
    pub currency: Option<&'static str>,
    /// `occurred_at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `occurred_at < to`.
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1..=[`MAX_LIMIT`].
    pub limit: u32,
    /// Continue after this position (exclusive).
    pub cursor: Option<Cursor>,
}

/// A position in the `(occurred_at DESC, id DESC)` order of events.
///
/// On the wire it is opaque: hex of a version byte (1), `occurred_at` as big-endian
/// unix microseconds (8 bytes) and the 16 bytes of the id's UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `occurred_at` of the last event of the previous page.
    pub occurred_at: DateTime<Utc>,
    /// `id` of the last event of the previous page.
    pub id: String,
}

const CURSOR_VERSION: u8 = 1;

impl Cursor {
    /// The cursor pointing just after `event`.
    pub fn after(event: &Event) -> Self {
        Cursor {
            occurred_at: event.occurred_at,
            id: event.id.clone(),
        }
    }

    /// Encodes the cursor as the opaque string clients pass back as `cursor`.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(25);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&self.occurred_at.timestamp_micros().to_be_bytes());
        let uuid_hex = self.id.strip_prefix(EVENT_ID_PREFIX).unwrap_or_default();
        bytes.extend(hex::decode(uuid_hex).unwrap_or_default());
        hex::encode(bytes)
    }

    /// Decodes a string produced by [`Cursor::encode`]; `None` if it is not one.
    pub fn decode(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        let (&version, rest) = bytes.split_first()?;
        if version != CURSOR_VERSION || rest.len() != 24 {
            return None;
        }
        let (micros, uuid) = rest.split_at(8);
        let micros = i64::from_be_bytes(micros.try_into().ok()?);
        let occurred_at = DateTime::<Utc>::from_timestamp_micros(micros)?;
        if !year_in_range(&occurred_at) {
            return None;
        }
        Some(Cursor {
            occurred_at,
            id: format!("{EVENT_ID_PREFIX}{}", hex::encode(uuid)),
        })
    }
}

/// One page of `GET /events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    /// Events in `(occurred_at DESC, id DESC)` order.
    pub data: Vec<Event>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Parameters of `GET /summary`.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryQuery {
    /// `occurred_at >= from`; unbounded if absent.
    pub from: Option<DateTime<Utc>>,
    /// `occurred_at < to`; unbounded if absent.
    pub to: Option<DateTime<Utc>>,
    /// Bucket width.
    pub interval: Interval,
    /// Only this currency; all currencies (one row each) if absent.
    pub currency: Option<&'static str>,
    /// Also group by this column (one row per value); absent: bucket and currency only.
    pub group_by: Option<GroupBy>,
}

/// Totals of one bucket and currency. All sums are exact integers in minor units.
///
/// They are `i128`, so no number of events can overflow them, and serde_json
/// writes them as plain JSON integers (never through `f64`), however large.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryRow {
    /// `YYYY-MM-DD` (day) or `YYYY-MM` (month), UTC.
    pub bucket: String,
    /// ISO 4217 code; different currencies are never added together.
    pub currency: String,
    /// The product, with `group_by=product` only (otherwise the field is absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Sum of charges.
    pub gross: i128,
    /// Sum of refunds.
    pub refunds: i128,
    /// `gross - refunds`.
    pub net: i128,
    /// Number of events (charges and refunds).
    pub count: i64,
}

/// Response body of `GET /summary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The bucket width used.
    pub interval: Interval,
    /// The lower bound used, if any.
    #[serde(serialize_with = "serialize_opt_ts")]
    pub from: Option<DateTime<Utc>>,
    /// The upper bound used, if any.
    #[serde(serialize_with = "serialize_opt_ts")]
    pub to: Option<DateTime<Utc>>,
    /// The currency filter used, if any.
    pub currency: Option<&'static str>,
    /// The extra grouping used, if any.
    pub group_by: Option<GroupBy>,
    /// Rows ordered by bucket, then currency (then product with
    /// `group_by=product`); buckets without events are omitted.
    pub data: Vec<SummaryRow>,
}

/// Lifetime totals of one customer in one currency. Sums are exact integers in
/// minor units (`i128`, like [`SummaryRow`]'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerTotals {
    /// ISO 4217 code; different currencies are never added together.
    pub currency: String,
    /// `gross - refunds`; negative when more was refunded than charged.
    pub lifetime_value: i128,
    /// Sum of charges.
    pub gross: i128,
    /// Sum of refunds.
    pub refunds: i128,
    /// Number of events (charges and refunds).
    pub count: i64,
    /// `occurred_at` of the customer's earliest event in this currency.
    #[serde(serialize_with = "serialize_ts")]
    pub first_occurred_at: DateTime<Utc>,
    /// `occurred_at` of the customer's latest event in this currency.
    #[serde(serialize_with = "serialize_ts")]
    pub last_occurred_at: DateTime<Utc>,
}

/// Response body of `GET /customers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerSummary {
    /// The customer asked about.
    pub customer_id: String,
    /// One entry per currency the customer has events in, ordered by currency.
    pub data: Vec<CustomerTotals>,
}

/// Formats a timestamp as RFC 3339 in UTC with `Z` and only as many fractional
/// digits as needed (0, 3, 6 or 9).
pub fn format_ts(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Drops sub-microsecond precision (both databases store microseconds).
pub fn truncate_to_micros(ts: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = ts.nanosecond();
    ts.with_nanosecond(nanos - nanos % 1_000).unwrap_or(ts)
}

/// Whether the timestamp's UTC year is within [`MIN_YEAR`]..=[`MAX_YEAR`].
pub fn year_in_range(ts: &DateTime<Utc>) -> bool {
    (MIN_YEAR..=MAX_YEAR).contains(&ts.year())
}

fn serialize_ts<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ts(ts))
}

fn serialize_opt_ts<S: Serializer>(ts: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(ts) => s.serialize_str(&format_ts(ts)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            occurred_at: "2026-01-07T12:00:00.123456Z".parse().unwrap(),
            id: new_event_id(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
    }

    #[test]
    fn cursor_rejects_garbage() {
        let good = Cursor {
            occurred_at: "2026-01-07T12:00:00Z".parse().unwrap(),
            id: new_event_id(),
        }
        .encode();
        let wrong_version = format!("02{}", &good[2..]);
        let short = &good[..good.len() - 2];
        for s in ["", "zz", "abc", &wrong_version, short, &format!("{good}00")] {
            assert_eq!(Cursor::decode(s), None, "{s}");
        }
    }

    #[test]
    fn event_ids_have_a_fixed_shape() {
        assert!(is_event_id(&new_event_id()));
        assert!(!is_event_id("evt_"));
        assert!(!is_event_id("evt_0123456789ABCDEF0123456789abcdef"));
    }

    #[test]
    fn summary_totals_serialize_as_exact_json_integers() {
        let gross = 3 * i128::from(i64::MAX) + 1;
        let row = SummaryRow {
            bucket: "2026-01-07".into(),
            currency: "USD".into(),
            product: None,
            gross,
            refunds: 7,
            net: gross - 7,
            count: 4,
        };
        let text = serde_json::to_string(&row).unwrap();
        assert_eq!(
            text,
            r#"{"bucket":"2026-01-07","currency":"USD","gross":27670116110564327422,"refunds":7,"net":27670116110564327415,"count":4}"#
        );
        let negative = SummaryRow {
            gross: 0,
            refunds: gross,
            net: -gross,
            ..row
        };
        assert!(serde_json::to_string(&negative)
            .unwrap()
            .contains(r#""net":-27670116110564327422,"#));
        let by_product = SummaryRow {
            product: Some("pro".into()),
            ..negative
        };
        assert!(serde_json::to_string(&by_product)
            .unwrap()
            .starts_with(r#"{"bucket":"2026-01-07","currency":"USD","product":"pro","gross":0,"#));
    }

    #[test]
    fn group_by_parses_only_product() {
        assert_eq!(GroupBy::parse("product"), Some(GroupBy::Product));
        for bad in ["", "Product", "customer", "product,currency"] {
            assert_eq!(GroupBy::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_format_compactly() {
        let ts: DateTime<Utc> = "2026-01-07T12:00:00.123456789Z".parse().unwrap();
        assert_eq!(
            format_ts(&truncate_to_micros(ts)),
            "2026-01-07T12:00:00.123456Z"
        );
        let ts: DateTime<Utc> = "2026-01-07T12:00:00Z".parse().unwrap();
        assert_eq!(format_ts(&ts), "2026-01-07T12:00:00Z");
    }
}
