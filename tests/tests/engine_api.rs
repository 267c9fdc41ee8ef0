//! End-to-end tests of the Revenue Engine's HTTP API against the real `engine`
//! binary, on SQLite (a temporary file) and on a throwaway PostgreSQL cluster (one
//! per test binary, one database per test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::engine::{
    assert_error, post_event, sqlite_url, Backend, EngineCtx as Ctx, EngineProcess, MAX_AMOUNT,
};
use e2e::on_both_backends;
use e2e::pg::PgCluster;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

on_both_backends!(
    create_and_fetch,
    list_filters_and_pagination,
    summary_by_day_and_month,
    summary_totals_are_exact_and_never_overflow,
    metadata_numbers_are_exact,
    body_validation_errors,
    query_validation_errors,
    health_and_routing,
    pagination_is_stable_under_concurrent_inserts,
);

async fn create_and_fetch(backend: Backend) {
    let ctx = Ctx::start(backend, "create_and_fetch");
    let body = json!({"customer_id":"cus_1001","product":"robot-pro-monthly","kind":"charge",
                      "amount":4999,"currency":"USD","occurred_at":"2026-01-07T12:00:00Z"});
    let resp = ctx
        .http
        .post(ctx.url("/events"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let charge: Value = resp.json().await.unwrap();
    let id = charge["id"].as_str().unwrap();
    assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
    assert_eq!(location, format!("/api/v1/revenue/events/{id}"));
    for key in [
        "customer_id",
        "product",
        "kind",
        "amount",
        "currency",
        "occurred_at",
    ] {
        assert_eq!(charge[key], body[key], "{key}");
    }
    assert!(charge["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(charge["metadata"], Value::Null);

    // The Location header resolves to the same event.
    let fetched: Value = ctx
        .http
        .get(format!("{}{location}", ctx.engine.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, charge);

    // A refund with an offset timestamp and metadata: stored in UTC.
    let (status, refund) = ctx
        .post(
            &json!({"customer_id":"cus_1001","product":"robot-pro-monthly","kind":"refund",
                      "amount":1000,"currency":"USD","occurred_at":"2026-01-08T09:30:00.25+02:00",
                      "metadata":{"reason":"damaged","ticket":42}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{refund}");
    assert_eq!(refund["kind"], "refund");
    assert_eq!(refund["occurred_at"], "2026-01-08T07:30:00.250Z");
    assert_eq!(refund["metadata"], json!({"reason":"damaged","ticket":42}));
    assert_ne!(refund["id"], charge["id"]);
    let (status, fetched) = ctx
        .get(&format!("/events/{}", refund["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, refund);

    // Unknown or malformed ids are 404.
    assert_error(
        &ctx.get("/events/evt_00000000000000000000000000000000")
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &ctx.get("/events/nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}

async fn list_filters_and_pagination(backend: Backend) {
    let ctx = Ctx::start(backend, "list_filters");
    // 13 events; several share a timestamp so the id tie-breaker matters.
    let specs: &[(&str, &str, &str, i64, &str, &str)] = &[
        (
            "cus_a",
            "basic",
            "charge",
            100,
            "USD",
            "2026-01-01T00:00:00Z",
        ),
        (
            "cus_a",
            "basic",
            "charge",
            101,
            "USD",
            "2026-01-02T00:00:00Z",
        ),
        ("cus_a", "pro", "refund", 102, "USD", "2026-01-02T00:00:00Z"),
        ("cus_b", "pro", "charge", 103, "EUR", "2026-01-02T00:00:00Z"),
        ("cus_b", "pro", "charge", 104, "EUR", "2026-01-02T00:00:00Z"),
        (
            "cus_b",
            "basic",
            "charge",
            105,
            "USD",
            "2026-01-03T00:00:00Z",
        ),
        (
            "cus_c",
            "basic",
            "refund",
            106,
            "JPY",
            "2026-01-03T12:00:00Z",
        ),
        ("cus_c", "pro", "charge", 107, "JPY", "2026-01-04T00:00:00Z"),
        ("cus_a", "pro", "charge", 108, "USD", "2026-01-04T00:00:00Z"),
        (
            "cus_a",
            "pro",
            "charge",
            109,
            "USD",
            "2026-01-05T00:00:00.000001Z",
        ),
        (
            "cus_b",
            "basic",
            "refund",
            110,
            "EUR",
            "2026-01-05T00:00:00Z",
        ),
        (
            "cus_c",
            "basic",
            "charge",
            111,
            "USD",
            "2026-01-06T00:00:00Z",
        ),
        (
            "cus_c",
            "basic",
            "charge",
            112,
            "USD",
            "2026-01-06T00:00:00Z",
        ),
    ];
    for (c, p, k, a, cur, at) in specs {
        ctx.record(c, p, k, *a, cur, at).await;
    }

    // Everything, 5 per page: 3 pages, every event exactly once, in
    // (occurred_at DESC, id DESC) order.
    let (all, pages) = ctx.list_all("limit=5").await;
    assert_eq!(pages, 3);
    assert_eq!(all.len(), specs.len());
    let keys: Vec<(String, String)> = all
        .iter()
        .map(|e| {
            (
                e["occurred_at"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // RFC 3339 strings of these values sort like the instants they name, except that
    // a fractional part sorts after none; normalise before comparing.
    let norm = |s: &str| s.replace('Z', ".000000Z");
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| (norm(&b.0), &b.1).cmp(&(norm(&a.0), &a.1)));
    assert_eq!(keys, sorted, "not in (occurred_at DESC, id DESC) order");
    let mut amounts: Vec<i64> = all.iter().map(|e| e["amount"].as_i64().unwrap()).collect();
    amounts.sort();
    assert_eq!(amounts, (100..=112).collect::<Vec<_>>());

    // Exact page size: the last full page has no next cursor.
    let (status, body) = ctx.get("/events?limit=13").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().unwrap().len(), 13);
    assert_eq!(body["next_cursor"], Value::Null);
    // Default limit (50) returns everything at once.
    let (_, body) = ctx.get("/events").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 13);
    assert_eq!(body["next_cursor"], Value::Null);

    let amounts_of = |events: &[Value]| -> Vec<i64> {
        let mut a: Vec<i64> = events
            .iter()
            .map(|e| e["amount"].as_i64().unwrap())
            .collect();
        a.sort();
        a
    };
    let cases: &[(&str, &[i64])] = &[
        ("customer_id=cus_a", &[100, 101, 102, 108, 109]),
        ("product=pro", &[102, 103, 104, 107, 108, 109]),
        ("kind=refund", &[102, 106, 110]),
        ("currency=EUR", &[103, 104, 110]),
        ("customer_id=cus_a&product=pro&kind=charge", &[108, 109]),
        // Half-open: `from` included, `to` excluded.
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-04T00:00:00Z",
            &[101, 102, 103, 104, 105, 106],
        ),
        // Offsets are honoured (%2B is '+'): 2026-01-05T01:00+01:00 = 00:00Z.
        ("from=2026-01-05T01:00:00%2B01:00", &[109, 110, 111, 112]),
        ("from=2026-01-05T00:00:00.000001Z", &[109, 111, 112]),
        ("to=2026-01-01T00:00:00Z", &[]),
        ("currency=GBP", &[]),
    ];
    for (query, expected) in cases {
        // Page through with a small limit to exercise cursors together with filters.
        let (events, _) = ctx.list_all(&format!("{query}&limit=2")).await;
        assert_eq!(amounts_of(&events), *expected, "{query}");
    }
}

async fn summary_by_day_and_month(backend: Backend) {
    let ctx = Ctx::start(backend, "summary");
    // The largest accepted amount (exactness far beyond 2^53 is checked by
    // summary_totals_are_exact_and_never_overflow).
    let big: i64 = MAX_AMOUNT;
    let specs: &[(&str, i64, &str, &str)] = &[
        ("charge", 4999, "USD", "2026-01-07T00:00:00Z"),
        ("charge", 5001, "USD", "2026-01-07T23:59:59.999999Z"),
        ("refund", 1000, "USD", "2026-01-07T12:00:00Z"),
        // 23:30 on the 7th at -01:00 is 00:30 on the 8th in UTC.
        ("charge", 700, "USD", "2026-01-07T23:30:00-01:00"),
        ("charge", 300, "EUR", "2026-01-07T08:00:00Z"),
        ("refund", 300, "EUR", "2026-01-07T09:00:00Z"),
        ("charge", big, "JPY", "2026-01-31T10:00:00Z"),
        ("charge", big, "JPY", "2026-02-01T10:00:00Z"),
        ("refund", 5, "USD", "2026-02-28T23:59:59Z"),
        ("charge", 42, "USD", "2026-03-01T00:00:00Z"),
    ];
    for (k, a, c, at) in specs {
        ctx.record("cus_1", "prod", k, *a, c, at).await;
    }

    let row = |bucket: &str, currency: &str, gross: i64, refunds: i64, count: i64| {
        json!({"bucket": bucket, "currency": currency, "gross": gross, "refunds": refunds,
               "net": gross - refunds, "count": count})
    };

    let (status, body) = ctx.get("/summary").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["interval"], "day");
    assert_eq!(
        body["data"],
        json!([
            row("2026-01-07", "EUR", 300, 300, 2),
            row("2026-01-07", "USD", 10000, 1000, 3),
            row("2026-01-08", "USD", 700, 0, 1),
            row("2026-01-31", "JPY", big, 0, 1),
            row("2026-02-01", "JPY", big, 0, 1),
            row("2026-02-28", "USD", 0, 5, 1),
            row("2026-03-01", "USD", 42, 0, 1),
        ])
    );

    let (status, body) = ctx.get("/summary?interval=month").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["interval"], "month");
    assert_eq!(
        body["data"],
        json!([
            row("2026-01", "EUR", 300, 300, 2),
            row("2026-01", "JPY", big, 0, 1),
            row("2026-01", "USD", 10700, 1000, 4),
            row("2026-02", "JPY", big, 0, 1),
            row("2026-02", "USD", 0, 5, 1),
            row("2026-03", "USD", 42, 0, 1),
        ])
    );

    // The largest amounts, bucketed and summed exactly.
    let (_, body) = ctx
        .get("/summary?interval=month&currency=JPY&from=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(
        body["data"],
        json!([
            row("2026-01", "JPY", big, 0, 1),
            row("2026-02", "JPY", big, 0, 1)
        ])
    );
    let (_, body) = ctx
        .get("/summary?interval=month&currency=JPY&to=2026-03-01T00:00:00Z")
        .await;
    assert_eq!(body["currency"], "JPY");
    let total: i64 = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["gross"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 2 * big);

    // Range and currency filters; `to` is exclusive.
    let (_, body) = ctx
        .get("/summary?currency=USD&from=2026-01-07T12:00:00Z&to=2026-03-01T00:00:00Z&interval=month")
        .await;
    assert_eq!(
        body["data"],
        json!([
            row("2026-01", "USD", 5001 + 700, 1000, 3),
            row("2026-02", "USD", 0, 5, 1)
        ])
    );
    assert_eq!(body["from"], "2026-01-07T12:00:00Z");
    assert_eq!(body["to"], "2026-03-01T00:00:00Z");

    // No events in range: empty data, not an error.
    let (status, body) = ctx.get("/summary?from=2030-01-01T00:00:00Z").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], json!([]));
}

/// Amounts are capped at 10^12 - 1, and totals are exact integers that cannot
/// overflow, even over rows stored before the cap (up to `i64::MAX` each).
async fn summary_totals_are_exact_and_never_overflow(backend: Backend) {
    let ctx = Ctx::start(backend, "exact_totals");
    let day = "2026-01-07T00:00:00Z";

    // The cap, named in a 422.
    let over = ctx
        .post(&json!({"customer_id":"c","product":"p","kind":"charge",
                       "amount": MAX_AMOUNT + 1,"currency":"USD","occurred_at": day}))
        .await;
    assert_error(
        &over,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("amount"),
    );
    let message = over.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("999999999999"), "{message}");
    for _ in 0..2 {
        ctx.record("c", "p", "charge", MAX_AMOUNT, "USD", day).await;
    }
    ctx.record("c", "p", "refund", 5, "USD", day).await;
    ctx.record("c", "p", "charge", 1, "EUR", day).await;

    // Rows from before the cap: three charges and a refund of i64::MAX in USD, two
    // charges in JPY. Any 64-bit sum over them overflows.
    let legacy = [
        (1, "charge", "USD"),
        (2, "charge", "USD"),
        (3, "charge", "USD"),
        (4, "refund", "USD"),
        (5, "charge", "JPY"),
        (6, "charge", "JPY"),
    ];
    let values: Vec<String> = legacy
        .iter()
        .map(|(n, kind, currency)| {
            format!(
                "('evt_{n:032x}', 'legacy', 'p', '{kind}', {}, '{currency}', \
                 '2026-01-07T10:00:00.000000Z', '2026-01-07T10:00:00.000000Z')",
                i64::MAX
            )
        })
        .collect();
    ctx.sql(&format!(
        "INSERT INTO revenue_events \
         (id, customer_id, product, kind, amount, currency, occurred_at, created_at) \
         VALUES {}",
        values.join(", ")
    ));

    let max = i128::from(i64::MAX);
    let usd_gross = 3 * max + 2 * i128::from(MAX_AMOUNT);
    let usd_refunds = max + 5;
    // Serialized exactly as below: JSON integers, no float notation.
    let row = |bucket: &str, currency: &str, gross: i128, refunds: i128, count: u32| {
        format!(
            r#"{{"bucket":"{bucket}","currency":"{currency}","gross":{gross},"refunds":{refunds},"net":{},"count":{count}}}"#,
            gross - refunds
        )
    };
    let expected = |bucket: &str| {
        format!(
            "[{},{},{}]",
            row(bucket, "EUR", 1, 0, 1),
            row(bucket, "JPY", 2 * max, 0, 2),
            row(bucket, "USD", usd_gross, usd_refunds, 7)
        )
    };
    for (query, bucket) in [("", "2026-01-07"), ("?interval=month", "2026-01")] {
        let (status, text) = ctx.get_text(&format!("/summary{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {text}");
        assert!(
            text.contains(&format!(r#""data":{}"#, expected(bucket))),
            "{query}: {text}"
        );
    }
    assert!(usd_gross.to_string() == "27670118110564327419");

    // Filters still work next to the huge totals.
    let (status, text) = ctx.get_text("/summary?currency=USD").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        text.contains(&format!(
            r#""data":[{}]"#,
            row("2026-01-07", "USD", usd_gross, usd_refunds, 7)
        )),
        "{text}"
    );
    let (status, body) = ctx.get("/summary?currency=EUR").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][0]["gross"], 1);
}

/// Numbers in `metadata` are stored exactly, or rejected naming `metadata`.
async fn metadata_numbers_are_exact(backend: Backend) {
    let ctx = Ctx::start(backend, "metadata_numbers");
    let event = |metadata: &str| {
        format!(
            r#"{{"customer_id":"c","product":"p","kind":"charge","amount":1,"currency":"USD","occurred_at":"2026-01-07T00:00:00Z","metadata":{metadata}}}"#
        )
    };
    let json_ct = Some("application/json");
    for bad in [
        r#"{"order":12345678901234567890123}"#,
        r#"{"n":18446744073709551616}"#,
        r#"{"n":-9223372036854775809}"#,
        r#"{"deep":[1,{"x":[2,100000000000000000000000000000]}]}"#,
        r#"{"pi":3.14159265358979323846264}"#,
    ] {
        let got = ctx.post_raw(&event(bad), json_ct).await;
        assert_error(
            &got,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("metadata"),
        );
    }
    // Nothing was stored.
    let (_, body) = ctx.get("/events").await;
    assert_eq!(body["data"], json!([]));

    // Numbers that fit come back exactly, from both the write and the read path.
    let good = r#"{"u":18446744073709551615,"i":-9223372036854775808,"f":0.1,"note":"12345678901234567890123"}"#;
    let (status, created) = ctx.post_raw(&event(good), json_ct).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let expected =
        json!({"u": u64::MAX, "i": i64::MIN, "f": 0.1, "note": "12345678901234567890123"});
    assert_eq!(created["metadata"], expected);
    let (status, text) = ctx
        .get_text(&format!("/events/{}", created["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let fetched: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(fetched["metadata"], expected);
    assert!(text.contains(r#""u":18446744073709551615"#), "{text}");
}

async fn body_validation_errors(backend: Backend) {
    let ctx = Ctx::start(backend, "body_validation");
    let valid = json!({"customer_id":"cus_1001","product":"robot-pro-monthly","kind":"charge",
                       "amount":4999,"currency":"USD","occurred_at":"2026-01-07T12:00:00Z"});
    let with = |key: &str, value: Value| {
        let mut b = valid.clone();
        b[key] = value;
        b
    };
    let without = |key: &str| {
        let mut b = valid.clone();
        b.as_object_mut().unwrap().remove(key);
        b
    };
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;

    // Missing fields (absent or null).
    for key in [
        "customer_id",
        "product",
        "kind",
        "amount",
        "currency",
        "occurred_at",
    ] {
        assert_error(
            &ctx.post(&without(key)).await,
            unprocessable,
            "missing_field",
            Some(key),
        );
        assert_error(
            &ctx.post(&with(key, Value::Null)).await,
            unprocessable,
            "missing_field",
            Some(key),
        );
    }

    let invalid: Vec<(&str, Value)> = vec![
        ("amount", json!(0)),
        ("amount", json!(-4999)),
        ("amount", json!(49.99)),
        ("amount", json!(4999.0)),
        ("amount", json!("4999")),
        ("amount", json!(u64::MAX)),
        ("amount", json!(i64::MAX)),
        ("amount", json!(MAX_AMOUNT + 1)),
        ("amount", json!(true)),
        ("currency", json!("XYZ")),
        ("currency", json!("usd")),
        ("currency", json!("US")),
        ("currency", json!(840)),
        ("kind", json!("chargeback")),
        ("kind", json!("Charge")),
        ("occurred_at", json!("2026-01-07")),
        ("occurred_at", json!("2026-01-07T12:00:00")),
        ("occurred_at", json!("07/01/2026 12:00")),
        ("occurred_at", json!("2026-13-07T12:00:00Z")),
        ("occurred_at", json!(1767787200)),
        ("customer_id", json!("")),
        ("customer_id", json!("   ")),
        ("customer_id", json!("x".repeat(129))),
        ("customer_id", json!("cus\n1")),
        ("customer_id", json!(1001)),
        ("product", json!("")),
        ("product", json!("robot\u{7}")),
        ("metadata", json!("note")),
        ("metadata", json!([1, 2])),
    ];
    for (key, value) in invalid {
        let got = ctx.post(&with(key, value.clone())).await;
        assert!(got.0 == unprocessable, "{key}={value}: {:?}", got);
        assert_error(&got, unprocessable, "invalid_field", Some(key));
    }
    // An unknown field is named too.
    let got = ctx.post(&with("amount_cents", json!(4999))).await;
    assert_error(&got, unprocessable, "invalid_field", Some("amount_cents"));
    // A repeated member is ambiguous (which amount?): refused, naming it, at
    // the top level and inside metadata.
    let text = valid.to_string();
    let repeated = text.replacen(
        "\"customer_id\"",
        "\"customer_id\":\"cus_x\",\"customer_id\"",
        1,
    );
    let got = ctx.post_raw(&repeated, Some("application/json")).await;
    assert_error(&got, unprocessable, "invalid_field", Some("customer_id"));
    let repeated = text.replacen('}', r#","metadata":{"a":1,"a":2}}"#, 1);
    let got = ctx.post_raw(&repeated, Some("application/json")).await;
    assert_error(&got, unprocessable, "invalid_field", Some("metadata"));

    // Boundary values that are valid.
    let (status, body) = ctx.post(&with("amount", json!(MAX_AMOUNT))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["amount"], json!(MAX_AMOUNT));
    let (status, _) = ctx.post(&with("customer_id", json!("é".repeat(128)))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = ctx.post(&with("metadata", Value::Null)).await;
    assert_eq!(status, StatusCode::CREATED);

    // Malformed JSON, wrong content type, non-object bodies: 400.
    let bad_request = StatusCode::BAD_REQUEST;
    let json_ct = Some("application/json");
    let got = ctx
        .post_raw(r#"{"customer_id": "cus_1001","#, json_ct)
        .await;
    assert_error(&got, bad_request, "malformed_json", None);
    let got = ctx.post_raw("", json_ct).await;
    assert_error(&got, bad_request, "malformed_json", None);
    let got = ctx.post_raw(&valid.to_string(), None).await;
    assert_error(&got, bad_request, "invalid_content_type", None);
    let got = ctx.post_raw(&valid.to_string(), Some("text/plain")).await;
    assert_error(&got, bad_request, "invalid_content_type", None);
    let got = ctx.post_raw("[1,2,3]", json_ct).await;
    assert_error(&got, bad_request, "invalid_body", None);

    // Too large: 413 with the JSON error body.
    let huge = json!({"customer_id":"c","metadata":{"blob":"x".repeat(70 * 1024)}});
    let got = ctx.post(&huge).await;
    assert_error(
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    );

    // None of the rejected requests was stored.
    let (_, body) = ctx.get("/events").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 3);
}

async fn query_validation_errors(backend: Backend) {
    let ctx = Ctx::start(backend, "query_validation");
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: &[(&str, &str)] = &[
        ("/events?cursor=not-a-cursor", "cursor"),
        ("/events?cursor=", "cursor"),
        (
            "/events?cursor=0100000000000000000000000000000000000000000000000000",
            "cursor",
        ),
        ("/events?limit=0", "limit"),
        ("/events?limit=501", "limit"),
        ("/events?limit=ten", "limit"),
        ("/events?limit=-1", "limit"),
        ("/events?kind=sale", "kind"),
        ("/events?currency=usd", "currency"),
        ("/events?currency=XYZ", "currency"),
        ("/events?from=yesterday", "from"),
        // An unencoded '+' arrives as a space.
        ("/events?from=2026-01-07T12:00:00+01:00", "from"),
        ("/events?to=2026-01-07", "to"),
        (
            "/events?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "to",
        ),
        ("/events?customer_id=", "customer_id"),
        ("/events?customer=cus_1", "customer"),
        ("/events?kind=charge&kind=refund", "kind"),
        ("/summary?interval=week", "interval"),
        ("/summary?interval=", "interval"),
        ("/summary?currency=EURO", "currency"),
        ("/summary?from=2026-01-07T12:00:00", "from"),
        ("/summary?to=soon", "to"),
        ("/summary?limit=5", "limit"),
    ];
    for (path, field) in cases {
        let got = ctx.get(path).await;
        assert!(got.0 == unprocessable, "{path}: {:?}", got);
        assert_error(&got, unprocessable, "invalid_field", Some(field));
    }
    // A cursor from a real page works; it is opaque but stable.
    for i in 0..3 {
        ctx.record("c", "p", "charge", 1 + i, "USD", "2026-01-07T00:00:00Z")
            .await;
    }
    let (_, page) = ctx.get("/events?limit=2").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, body) = ctx.get(&format!("/events?limit=2&cursor={cursor}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    // A tampered cursor is rejected, not a server error.
    let tampered = format!("{}{}", &cursor[..cursor.len() - 1], "g");
    let got = ctx.get(&format!("/events?cursor={tampered}")).await;
    assert_error(&got, unprocessable, "invalid_field", Some("cursor"));
}

async fn health_and_routing(backend: Backend) {
    let ctx = Ctx::start(backend, "health");
    let base = ctx.engine.base_url();
    for path in [
        "/healthz",
        "/readyz",
        "/api/v1/revenue/healthz",
        "/api/v1/revenue/readyz",
    ] {
        let resp = ctx.http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        // Probes do not depend on a consistency token.
        assert!(resp.headers().get("vary").is_none(), "{path}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["status"].is_string(), "{path}: {body}");
    }

    // Unknown routes: JSON 404. The metrics are for operators: served at the root
    // only, never under the prefix the gateway exposes to consumers.
    for path in [
        "/nope",
        "/api/v1/revenue/nope",
        "/api/v1/revenue",
        "/api/v1/revenue/metrics",
    ] {
        let resp = ctx.http.get(format!("{base}{path}")).send().await.unwrap();
        let status = resp.status();
        let got: (StatusCode, Value) = (status, resp.json().await.unwrap());
        assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
    }

    // Wrong method: JSON 405 with Allow.
    let resp = ctx.http.delete(ctx.url("/events")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let got: (StatusCode, Value) = (StatusCode::METHOD_NOT_ALLOWED, resp.json().await.unwrap());
    assert_error(
        &got,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
    // Every route's 405 lists exactly its methods in `Allow`, with the JSON body.
    let id = "evt_00000000000000000000000000000000";
    let routes: &[(&str, &str, &[&str])] = &[
        ("/healthz", "POST", &["GET", "HEAD"]),
        ("/readyz", "DELETE", &["GET", "HEAD"]),
        ("/api/v1/revenue/healthz", "PUT", &["GET", "HEAD"]),
        ("/api/v1/revenue/readyz", "PATCH", &["GET", "HEAD"]),
        ("/api/v1/revenue/events", "PUT", &["GET", "HEAD", "POST"]),
        ("/api/v1/revenue/summary", "POST", &["GET", "HEAD"]),
        (
            &format!("/api/v1/revenue/events/{id}"),
            "DELETE",
            &["GET", "HEAD"],
        ),
    ];
    for (path, method, allowed) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = ctx
            .http
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let allow = resp
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
            .to_str()
            .unwrap()
            .to_owned();
        let mut got: Vec<&str> = allow.split(',').map(str::trim).collect();
        got.sort();
        assert_eq!(got, *allowed, "{method} {path}");
        let got: (StatusCode, Value) = (status, resp.json().await.unwrap());
        assert_error(
            &got,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        );
    }

    // A path parameter that is not UTF-8 once decoded: the JSON 404, not axum's
    // plain-text 400.
    for target in [
        "/api/v1/revenue/events/%ff",
        "/api/v1/revenue/events/%C3%28",
        "/api/v1/revenue/events/evt_%ff%fe",
    ] {
        let (status, body) = e2e::raw_request(ctx.engine.port(), "GET", target, &[]).await;
        let body: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {body:?}"));
        assert_error(
            &(StatusCode::from_u16(status).unwrap(), body),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
    }
}

/// Reads from `stream` until the engine closes it (EOF or reset) and returns how
/// long that took; panics if it is still open after `limit`.
async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("the engine kept the connection open for {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Slow or silent clients are disconnected: a connection that sends nothing, half
/// a request line, or headers a byte at a time is closed at the header read
/// timeout, a body that stalls gets 408 at the same timeout, and a kept-alive
/// connection is closed at the idle timeout; requests in between are served
/// normally.
#[tokio::test]
async fn slow_clients_are_disconnected() {
    let dir = tempfile::Builder::new()
        .prefix("e2e-engine-db-")
        .tempdir()
        .unwrap();
    let engine = EngineProcess::start_with(
        &sqlite_url(&dir.path().join("engine.sqlite")),
        &[
            ("ENGINE_HEADER_READ_TIMEOUT_MS", "600"),
            ("ENGINE_IDLE_TIMEOUT_MS", "2000"),
        ],
    );
    let addr = ("127.0.0.1", engine.port());
    let limit = Duration::from_secs(10);
    let header_timeout = Duration::from_millis(600);

    // Nothing at all, half a request line, an HTTP/2 preface cut short.
    for sent in [&b""[..], b"GET /api/v1/rev", b"PRI * HTTP/2.0\r\n"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let took = time_until_closed(&mut stream, limit).await;
        assert!(
            took >= header_timeout / 2 && took < Duration::from_secs(5),
            "{:?}: closed after {took:?}",
            String::from_utf8_lossy(sent)
        );
    }

    // Headers drip-fed a byte every 50 ms: the traffic does not reset the timer.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let drip = tokio::spawn(async move {
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(200)
        );
        for b in head.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let got = tokio::time::timeout(limit, rd.read(&mut buf)).await;
    assert!(
        matches!(got, Ok(Ok(0)) | Ok(Err(_))),
        "drip-fed request: {got:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drip.abort();

    // A body that stalls after its headers: 408 at the header read timeout, and
    // the connection is closed (the rest of the body is never read).
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/v1/revenue/events HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("a stalled body kept the connection open for {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains(r#""code":"request_timeout""#), "{got}");
    assert!(
        started.elapsed() >= header_timeout / 2 && started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A kept-alive connection serves requests, stays open past the header timeout
    // while idle, and is closed at the idle timeout.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for pause in [Duration::ZERO, Duration::from_millis(1000)] {
        tokio::time::sleep(pause).await;
        stream.write_all(request).await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(br#"{"status":"ok"}"#) {
            let n = tokio::time::timeout(limit, stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let took = time_until_closed(&mut stream, limit).await;
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "idle connection closed after {took:?}"
    );

    // The engine is still serving.
    let resp = Client::new()
        .get(format!("{}/healthz", engine.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// SIGTERM stops the engine gracefully (exit code 0).
#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let mut engine = EngineProcess::start_sqlite();
    let status = engine.terminate();
    assert!(status.success(), "{status}; log:\n{}", engine.log());
    assert!(engine.log().contains("listening on http://127.0.0.1:"));
}

/// With the database gone, /readyz answers 503 while /healthz stays 200.
#[tokio::test]
async fn readyz_fails_when_postgres_is_gone() {
    let mut cluster = PgCluster::start();
    let engine = EngineProcess::start(&cluster.url());
    let http = Client::new();
    let resp = http
        .get(format!("{}/readyz", engine.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    cluster.stop();
    let resp = http
        .get(format!("{}/readyz", engine.base_url()))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let got: (StatusCode, Value) = (status, resp.json().await.unwrap());
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "unavailable", None);
    let resp = http
        .get(format!("{}/healthz", engine.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// A 100-cent EUR charge of `customer` as a request body.
fn eur_charge(customer: &str) -> String {
    json!({"customer_id": customer, "product": "pro", "kind": "charge",
           "amount": 100, "currency": "EUR", "occurred_at": "2026-03-01T10:00:00Z"})
    .to_string()
}

/// A primary that answers but cannot write (a demoted primary, or
/// `default_transaction_read_only`) is not ready, and a write meanwhile is a
/// retryable 503, not a 500; both recover when it takes writes again.
#[tokio::test]
async fn a_read_only_primary_is_unavailable_not_an_internal_error() {
    let cluster = PgCluster::start();
    let engine = EngineProcess::start(&cluster.url());
    let http = Client::new();
    let ready = || async {
        http.get(format!("{}/readyz", engine.base_url()))
            .send()
            .await
            .unwrap()
            .status()
    };
    let charge = eur_charge("cus_ro");
    let events_url = engine.api_url("/events");
    let post = || post_event(&http, &events_url, &charge, &[]);
    assert_eq!(ready().await, StatusCode::OK);
    let set_read_only = |on: &str| {
        cluster
            .sql(
                "postgres",
                &format!("ALTER SYSTEM SET default_transaction_read_only = {on}"),
            )
            .unwrap();
        cluster.sql("postgres", "SELECT pg_reload_conf()").unwrap();
    };
    set_read_only("on");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready().await == StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "readyz stayed 200 on a read-only primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready().await, StatusCode::SERVICE_UNAVAILABLE);
    let got = post().await;
    assert_error(
        &got.pair(),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        None,
    );
    assert!(
        !got.text.contains("read-only"),
        "no internals: {}",
        got.text
    );

    set_read_only("off");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready().await != StatusCode::OK {
        assert!(Instant::now() < deadline, "readyz did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post().await.status, StatusCode::CREATED);
}

/// A primary that hangs (SIGSTOP) instead of failing: requests already holding
/// a connection are answered 503 at the request timeout, not when the primary
/// wakes up; after it does, the engine serves again.
#[tokio::test]
async fn a_hung_primary_answers_503_at_the_request_timeout() {
    let mut cluster = PgCluster::start();
    let engine = EngineProcess::start_with(
        &cluster.url(),
        &[
            ("ENGINE_REQUEST_TIMEOUT_MS", "1500"),
            ("ENGINE_DB_ACQUIRE_TIMEOUT", "30s"),
        ],
    );
    let http = Client::new();
    let charge = eur_charge("cus_h");
    let events_url = engine.api_url("/events");
    assert_eq!(
        post_event(&http, &events_url, &charge, &[]).await.status,
        StatusCode::CREATED
    );
    cluster.freeze().unwrap();
    let started = Instant::now();
    let (write, read) = tokio::join!(
        post_event(&http, &events_url, &charge, &[]),
        http.get(engine.api_url("/summary")).send()
    );
    let took = started.elapsed();
    cluster.thaw().unwrap();
    assert_error(
        &write.pair(),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        None,
    );
    let read = read.unwrap();
    assert_eq!(read.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(6),
        "answered after {took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = http.get(engine.api_url("/summary")).send().await.unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "{}", engine.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A SQLite file another process keeps locked past the busy timeout is a
/// retryable 503, not a 500; the write goes through once the lock is released.
#[tokio::test]
async fn a_locked_sqlite_file_is_unavailable_not_an_internal_error() {
    use std::io::Write;
    let dir = tempfile::Builder::new()
        .prefix("e2e-engine-db-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("engine.sqlite");
    let engine = EngineProcess::start(&sqlite_url(&path));
    let http = Client::new();
    let charge = eur_charge("cus_l");
    let events_url = engine.api_url("/events");
    let mut locker = std::process::Command::new("sqlite3")
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = locker.stdin.take().unwrap();
    stdin
        .write_all(b"BEGIN EXCLUSIVE; SELECT count(*) FROM revenue_events;\n")
        .unwrap();
    stdin.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = post_event(&http, &events_url, &charge, &[]).await;
    assert_error(
        &got.pair(),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        None,
    );
    stdin.write_all(b"COMMIT;\n").unwrap();
    drop(stdin);
    locker.wait().unwrap();
    assert_eq!(
        post_event(&http, &events_url, &charge, &[]).await.status,
        StatusCode::CREATED
    );
}

/// Microseconds in a second.
const US: i64 = 1_000_000;

/// `2026-01-01T00:00:00Z` plus `micros` (less than 28 days), in RFC 3339.
fn at(micros: i64) -> String {
    let (secs, frac) = (micros / US, micros % US);
    let (day, rest) = (secs / 86_400, secs % 86_400);
    format!(
        "2026-01-{:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        day + 1,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The inverse of [`at`] for any `occurred_at` the engine answers in January 2026
/// (`2026-01-DDTHH:MM:SS[.f]Z`).
fn micros_of(occurred_at: &str) -> i64 {
    let s = occurred_at
        .strip_prefix("2026-01-")
        .and_then(|s| s.strip_suffix('Z'))
        .unwrap_or_else(|| panic!("not in January 2026: {occurred_at}"));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let n = |r: std::ops::Range<usize>| whole[r].parse::<i64>().unwrap();
    let secs = (n(0..2) - 1) * 86_400 + n(3..5) * 3600 + n(6..8) * 60 + n(9..11);
    let frac = format!("{frac:0<6}").parse::<i64>().unwrap();
    secs * US + frac
}

/// A position in the `(occurred_at DESC, id DESC)` order: larger is newer.
type Key = (i64, String);

fn key_of(event: &Value) -> Key {
    (
        micros_of(event["occurred_at"].as_str().unwrap()),
        event["id"].as_str().unwrap().to_owned(),
    )
}

/// Where a concurrent insert was aimed, relative to the reader's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Aim {
    /// Newer than every event (after the first page was read).
    Newer,
    /// Strictly newer than the last event read so far (already-read region).
    Read,
    /// Strictly older than the last event read so far (not-yet-read region).
    Unread,
    /// The same `occurred_at` as the last event read (the id decides the side).
    Tie,
}

/// An event posted while the reader paged.
#[derive(Debug)]
struct Inserted {
    key: Key,
    aim: Aim,
    /// When its 201 arrived.
    done: Instant,
}

/// What the reader has seen so far, shared with the writers.
#[derive(Debug, Default)]
struct Progress {
    /// `occurred_at` of the last event read; `None` before the first page.
    last: Option<i64>,
}

/// Pages of 25 through 300 events (runs of equal `occurred_at`, one of 30 across
/// a page boundary) while three writers post events newer than everything, into
/// the region already read, into the region not yet read, and at the reader's
/// exact `occurred_at`. Every pre-existing event is listed exactly once, nothing
/// twice, in strict (occurred_at DESC, id DESC) order; nothing newer than the
/// reader's position shows up later; events posted into the unread region show up
/// in order (and must, when posted before the page that covers them was asked
/// for). A cursor whose event and neighbours were deleted still works.
async fn pagination_is_stable_under_concurrent_inserts(backend: Backend) {
    let ctx = Ctx::start(backend, "keyset_concurrent");
    let url = ctx.url("/events");
    let body = |micros: i64, tag: &str| {
        json!({"customer_id": tag, "product": "p", "kind": "charge", "amount": 1,
               "currency": "USD", "occurred_at": at(micros)})
        .to_string()
    };

    // 300 events on slots 1000 s apart: slot 100 holds a run of 30 (i 100..130),
    // and every 7th other event shares the slot of the one before it.
    let slot = |i: i64| -> i64 {
        let s = if (100..130).contains(&i) {
            100
        } else if i % 7 == 0 {
            i - 1
        } else {
            i
        };
        (s + 1) * 1000 * US
    };
    let mut seeded: HashMap<String, i64> = HashMap::new();
    for chunk in (0..300i64).collect::<Vec<_>>().chunks(20) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (http, url, body) = (ctx.http.clone(), url.clone(), body(slot(i), "seed"));
            set.spawn(async move { (i, post_event(&http, &url, &body, &[]).await) });
        }
        while let Some(done) = set.join_next().await {
            let (i, reply) = done.unwrap();
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
            seeded.insert(reply.id().to_owned(), slot(i));
        }
    }
    assert_eq!(seeded.len(), 300);
    let newest_seed = slot(299);

    let progress = Arc::new(Mutex::new(Progress::default()));
    let inserted = Arc::new(Mutex::new(Vec::<Inserted>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..3u64 {
        let (http, url) = (ctx.http.clone(), url.clone());
        let (progress, inserted, stop) = (progress.clone(), inserted.clone(), stop.clone());
        writers.spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (w + 1);
            let mut next = move |n: i64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                i64::try_from(rng % n.max(1) as u64).unwrap()
            };
            for n in 0..40 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let last = progress.lock().unwrap().last;
                let Some(last) = last else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                let aim = [Aim::Newer, Aim::Read, Aim::Unread, Aim::Tie][n % 4];
                // Off-slot instants carry microseconds, so they tie with nothing.
                let micros = match aim {
                    Aim::Newer => newest_seed + (1 + next(1000)) * US + next(US),
                    Aim::Read if last < newest_seed => last + 1 + next(newest_seed - last),
                    Aim::Unread if last > 1000 * US => 1 + next(last - 1),
                    Aim::Tie => last,
                    _ => continue,
                };
                let reply = post_event(&http, &url, &body(micros, "new"), &[]).await;
                assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
                let key = (micros, reply.id().to_owned());
                let done = Instant::now();
                inserted.lock().unwrap().push(Inserted { key, aim, done });
                tokio::time::sleep(Duration::from_millis(1 + next(5) as u64)).await;
            }
        });
    }

    // The reader: each page's request time and the position it starts after.
    let mut listed: Vec<Key> = Vec::new();
    let mut pages: Vec<(Instant, Option<Key>, usize)> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/events?limit=25&cursor={c}"),
            None => "/events?limit=25".to_owned(),
        };
        let sent = Instant::now();
        let (status, page) = ctx.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 25);
        pages.push((sent, listed.last().cloned(), data.len()));
        listed.extend(data.iter().map(key_of));
        progress.lock().unwrap().last = listed.last().map(|k| k.0);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages.len() < 60, "pagination does not end");
        // Let the writers in between pages.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let inserted = std::mem::take(&mut *inserted.lock().unwrap());

    // Nothing twice, strictly (occurred_at DESC, id DESC).
    let mut seen = HashSet::new();
    for key in &listed {
        assert!(seen.insert(key.1.clone()), "{} listed twice", key.1);
    }
    for pair in listed.windows(2) {
        assert!(pair[0] > pair[1], "out of order: {pair:?}");
    }
    // Every pre-existing event exactly once, with its own occurred_at.
    for (id, micros) in &seeded {
        let found = listed.iter().find(|k| &k.0 == micros && &k.1 == id);
        assert!(found.is_some(), "seeded {id} at {} not listed", at(*micros));
    }
    let by_id: HashMap<&str, &Inserted> = inserted.iter().map(|e| (e.key.1.as_str(), e)).collect();
    for key in &listed {
        assert!(
            seeded.contains_key(&key.1) || by_id.contains_key(key.1.as_str()),
            "{key:?} was never posted"
        );
    }
    // Inserts behind the reader never show up; inserts ahead of it do when they
    // were stored before the page covering them was asked for.
    let first_page = pages[0].2;
    let mut counts: HashMap<(Aim, bool), usize> = HashMap::new();
    for e in &inserted {
        let index = listed.iter().position(|k| *k == e.key);
        *counts.entry((e.aim, index.is_some())).or_default() += 1;
        match e.aim {
            Aim::Newer | Aim::Read => {
                assert!(index.is_none(), "{:?} insert {:?} listed", e.aim, e.key);
            }
            Aim::Unread | Aim::Tie => {
                let must = pages.iter().any(|(sent, after, _)| {
                    e.done < *sent && after.as_ref().is_some_and(|a| e.key < *a)
                });
                assert!(
                    index.is_some() || !must,
                    "{:?} insert {:?} stored before its page was read, but not listed",
                    e.aim,
                    e.key
                );
                if let Some(i) = index {
                    assert!(i >= first_page, "{:?} insert on the first page", e.aim);
                }
            }
        }
    }
    eprintln!(
        "{backend:?}: {} pages, {} listed, {} inserted meanwhile; (aim, listed) counts {counts:?}",
        pages.len(),
        listed.len(),
        inserted.len()
    );
    assert_eq!(
        listed.len(),
        300 + counts
            .iter()
            .filter(|((_, l), _)| *l)
            .map(|(_, n)| n)
            .sum::<usize>()
    );
    assert!(
        counts.get(&(Aim::Unread, true)).copied().unwrap_or(0) > 0
            && counts.get(&(Aim::Read, false)).copied().unwrap_or(0) > 0
            && counts.get(&(Aim::Newer, false)).copied().unwrap_or(0) > 0,
        "the writers did not overlap the reader: {counts:?}"
    );

    // A cursor whose event and both neighbours are gone still continues right
    // after its position.
    let all = ctx.all_events().await;
    let (_, page) = ctx.get("/events?limit=75").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let gone: Vec<&str> = all[73..76]
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    ctx.sql(&format!(
        "DELETE FROM revenue_events WHERE id IN ('{}')",
        gone.join("', '")
    ));
    let (status, page) = ctx.get(&format!("/events?limit=25&cursor={cursor}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let expected: Vec<&Value> = all[76..101].iter().collect();
    let got: Vec<&Value> = page["data"].as_array().unwrap().iter().collect();
    assert_eq!(got, expected);
    // And one past the oldest event, with nothing left after it: an empty last page.
    let all = ctx.all_events().await;
    let n = all.len();
    let (_, page) = ctx.get(&format!("/events?limit={}", n - 1)).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    ctx.sql(&format!(
        "DELETE FROM revenue_events WHERE id IN ('{}', '{}')",
        all[n - 2]["id"].as_str().unwrap(),
        all[n - 1]["id"].as_str().unwrap()
    ));
    let (status, page) = ctx.get(&format!("/events?limit=25&cursor={cursor}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, json!({"data": [], "next_cursor": null}));
}
