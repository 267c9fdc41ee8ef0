//! End-to-end tests of the Revenue Engine's idempotent writes (`Idempotency-Key`),
//! customer lifetime value (`GET /customers/{id}`) and per-product summaries
//! (`GET /summary?group_by=product`), against the real `engine` binary on SQLite (a
//! temporary file) and on a throwaway PostgreSQL cluster (one per test binary, one
//! database per test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use e2e::engine::{assert_error, post_event, Backend, EngineCtx as Ctx, MAX_AMOUNT};
use e2e::on_both_backends;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// How many idempotency keys are stored.
fn idempotency_rows(ctx: &Ctx) -> String {
    ctx.sql("SELECT COUNT(*) FROM idempotency_keys")
}

fn charge() -> Value {
    json!({"customer_id":"cus_1001","product":"robot-pro-monthly","kind":"charge",
           "amount":4999,"currency":"USD","occurred_at":"2026-01-07T12:00:00Z",
           "metadata":{"order":"A-17","lines":[{"sku":"r1","qty":2}]}})
}

on_both_backends!(
    retry_replays_the_stored_event,
    same_key_different_body_conflicts,
    json_key_order_and_spelling_do_not_matter,
    concurrent_retries_store_one_event,
    invalid_keys_are_rejected,
    customer_lifetime_value_is_exact,
    summary_groups_by_product,
    an_expired_key_stores_a_new_event,
);

/// A retry with the same key and body answers 201 with the first event (same id)
/// and `Idempotent-Replayed: true`; nothing new is stored.
async fn retry_replays_the_stored_event(backend: Backend) {
    let ctx = Ctx::start(backend, "idem_replay");
    let first = ctx.post_keyed(&charge(), "order-A-17/attempt").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.replayed(), None);
    let location = first.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/revenue/events/{}", first.id()));

    for _ in 0..3 {
        let retry = ctx.post_keyed(&charge(), "order-A-17/attempt").await;
        assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
        assert_eq!(retry.replayed(), Some("true"));
        assert_eq!(retry.id(), first.id());
        assert_eq!(retry.body, first.body);
        assert_eq!(retry.headers["location"].to_str().unwrap(), location);
    }
    let (status, fetched) = ctx.get(&format!("/events/{}", first.id())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, first.body);
    assert_eq!(ctx.all_events().await.len(), 1);

    // Keys are case-sensitive and global: another key is another event, and so is
    // a request without a key.
    let other = ctx.post_keyed(&charge(), "ORDER-A-17/attempt").await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_eq!(other.replayed(), None);
    assert_ne!(other.id(), first.id());
    let plain = ctx.post_with_keys(&charge().to_string(), &[]).await;
    assert_eq!(plain.status, StatusCode::CREATED);
    assert_eq!(plain.replayed(), None);
    assert_eq!(ctx.all_events().await.len(), 3);
    assert_eq!(idempotency_rows(&ctx), "2");
}

/// The same key with a different body is a 409 and stores nothing; the original
/// request still replays. Failed requests do not use up a key.
async fn same_key_different_body_conflicts(backend: Backend) {
    let ctx = Ctx::start(backend, "idem_conflict");
    let first = ctx.post_keyed(&charge(), "k1").await;
    assert_eq!(first.status, StatusCode::CREATED);

    let mut changes = Vec::new();
    for (field, value) in [
        ("amount", json!(5000)),
        ("kind", json!("refund")),
        ("currency", json!("EUR")),
        ("customer_id", json!("cus_1002")),
        ("product", json!("robot-basic")),
        ("occurred_at", json!("2026-01-07T12:00:00.000001Z")),
        ("metadata", json!({"order":"A-18"})),
        ("metadata", Value::Null),
    ] {
        let mut body = charge();
        body[field] = value;
        changes.push(body);
    }
    for body in &changes {
        let reply = ctx.post_keyed(body, "k1").await;
        assert_error(
            &reply.pair(),
            StatusCode::CONFLICT,
            "idempotency_key_reused",
            None,
        );
        assert_eq!(reply.replayed(), None);
    }
    let again = ctx.post_keyed(&charge(), "k1").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.id(), first.id());
    assert_eq!(ctx.all_events().await.len(), 1);

    // A rejected body stores nothing under its key: the corrected body then
    // succeeds with that key.
    let mut bad = charge();
    bad["amount"] = json!(49.99);
    let reply = ctx.post_keyed(&bad, "k2").await;
    assert_error(
        &reply.pair(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("amount"),
    );
    let fixed = ctx.post_keyed(&changes[0], "k2").await;
    assert_eq!(fixed.status, StatusCode::CREATED, "{}", fixed.body);
    assert_eq!(fixed.replayed(), None);
    assert_eq!(fixed.body["amount"], 5000);
    assert_eq!(ctx.all_events().await.len(), 2);
    assert_eq!(idempotency_rows(&ctx), "2");
}

/// The request is compared after validation: key order, whitespace, unicode
/// escapes, the offset of `occurred_at` and `null` versus absent metadata do not
/// make a different request.
async fn json_key_order_and_spelling_do_not_matter(backend: Backend) {
    let ctx = Ctx::start(backend, "idem_key_order");
    let original = r#"{"customer_id":"cus_1001","product":"robot-pro-monthly","kind":"charge","amount":4999,"currency":"USD","occurred_at":"2026-01-07T12:00:00Z","metadata":{"order":"A-17","lines":[{"sku":"r1","qty":2}]}}"#;
    let first = ctx.post_with_keys(original, &[b"k-order"]).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    for same in [
        r#"{"metadata":{"lines":[{"qty":2,"sku":"r1"}],"order":"A-17"},"occurred_at":"2026-01-07T12:00:00Z","currency":"USD","amount":4999,"kind":"charge","product":"robot-pro-monthly","customer_id":"cus_1001"}"#,
        "{\n  \"amount\" : 4999 ,\n  \"currency\" : \"USD\",\n  \"customer_id\" : \"cus_\\u0031001\",\n  \"kind\" : \"charge\",\n  \"product\" : \"robot-pro-monthly\",\n  \"occurred_at\" : \"2026-01-07T13:00:00.000+01:00\",\n  \"metadata\" : { \"order\" : \"A-17\", \"lines\" : [ { \"sku\" : \"r1\", \"qty\" : 2 } ] }\n}\n",
    ] {
        let reply = ctx.post_with_keys(same, &[b"k-order"]).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{same}: {}", reply.body);
        assert_eq!(reply.replayed(), Some("true"), "{same}");
        assert_eq!(reply.id(), first.id());
    }

    let bare = r#"{"customer_id":"c","product":"p","kind":"refund","amount":1,"currency":"EUR","occurred_at":"2026-01-07T12:00:00Z"}"#;
    let with_null = r#"{"metadata":null,"occurred_at":"2026-01-07T12:00:00Z","currency":"EUR","amount":1,"kind":"refund","product":"p","customer_id":"c"}"#;
    let first = ctx.post_with_keys(bare, &[b"k-null"]).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let reply = ctx.post_with_keys(with_null, &[b"k-null"]).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.id(), first.id());
    // An empty metadata object is a different request.
    let with_empty = bare.replace('}', r#","metadata":{}}"#);
    let reply = ctx.post_with_keys(&with_empty, &[b"k-null"]).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(ctx.all_events().await.len(), 2);
}

/// 20 concurrent requests with one key and one body: all 201 with one id (one
/// original, 19 replays), exactly one event and one key row stored.
async fn concurrent_retries_store_one_event(backend: Backend) {
    let ctx = Ctx::start(backend, "idem_concurrent");
    let body = charge().to_string();
    let url = ctx.url("/events");
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (http, url, body, barrier) = (
                Client::new(),
                url.clone(),
                body.clone(),
                Arc::clone(&barrier),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                post_event(&http, &url, &body, &[b"one-key-for-all"]).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(reply.id(), replies[0].id());
    }
    let originals = replies.iter().filter(|r| r.replayed().is_none()).count();
    assert_eq!(originals, 1);
    let events = ctx.all_events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["id"], replies[0].id());
    assert_eq!(idempotency_rows(&ctx), "1");
}

/// Keys must be 1 to 255 visible ASCII characters, given once; anything else is a
/// 422 naming the header (checked before the body) and stores nothing.
async fn invalid_keys_are_rejected(backend: Backend) {
    let ctx = Ctx::start(backend, "idem_bad_keys");
    let body = charge().to_string();
    let too_long = "k".repeat(256);
    let cases: &[&[&[u8]]] = &[
        &[b""],
        &[too_long.as_bytes()],
        &[b"two words"],
        &[b"tab\there"],
        &["caf\u{e9}".as_bytes()],
        &[b"\xff\xfe"],
        &[b"k1", b"k2"],
        &[b"same", b"same"],
    ];
    for keys in cases {
        let reply = ctx.post_with_keys(&body, keys).await;
        assert_error(
            &reply.pair(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("Idempotency-Key"),
        );
    }
    // The header is checked before the body.
    let reply = ctx.post_with_keys(r#"{"amount":-1}"#, &[b"bad key"]).await;
    assert_error(
        &reply.pair(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("Idempotency-Key"),
    );
    assert!(ctx.all_events().await.is_empty());
    assert_eq!(idempotency_rows(&ctx), "0");

    // The limits themselves are fine.
    let longest = "~".repeat(255);
    for key in [longest.as_str(), "!", "a:b/c?d=e&f#g"] {
        let reply = ctx.post_with_keys(&body, &[key.as_bytes()]).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{key}: {}", reply.body);
    }
    assert_eq!(ctx.all_events().await.len(), 3);
}

/// Lifetime value per currency is charges minus refunds, exact beyond 64 bits; other
/// customers do not count; unknown customers are 404.
async fn customer_lifetime_value_is_exact(backend: Backend) {
    let ctx = Ctx::start(backend, "customer_ltv");
    let specs: &[(&str, &str, i64, &str, &str)] = &[
        ("cus_1", "charge", MAX_AMOUNT, "USD", "2026-01-07T12:00:00Z"),
        (
            "cus_1",
            "charge",
            MAX_AMOUNT,
            "USD",
            "2026-01-05T23:00:00-02:00",
        ),
        ("cus_1", "refund", 1001, "USD", "2026-02-01T00:00:00.5Z"),
        ("cus_1", "charge", 300, "EUR", "2026-03-01T00:00:00Z"),
        ("cus_1", "refund", 500, "EUR", "2026-03-02T00:00:00Z"),
        ("cus_2", "charge", 7, "USD", "2025-01-01T00:00:00Z"),
        ("cus_10", "charge", 9, "USD", "2027-01-01T00:00:00Z"),
    ];
    for (customer, kind, amount, currency, at) in specs {
        ctx.record(customer, "prod", kind, *amount, currency, at)
            .await;
    }
    // Rows from before the amount cap: two JPY charges of i64::MAX, whose 64-bit
    // sum would overflow.
    let values: Vec<String> = (1..=2)
        .map(|n| {
            format!(
                "('evt_{n:032x}', 'cus_1', 'prod', 'charge', {}, 'JPY', \
                 '2026-01-0{n}T00:00:00.000000Z', '2026-01-0{n}T00:00:00.000000Z')",
                i64::MAX
            )
        })
        .collect();
    let insert = format!(
        "INSERT INTO revenue_events \
         (id, customer_id, product, kind, amount, currency, occurred_at, created_at) \
         VALUES {}",
        values.join(", ")
    );
    ctx.sql(&insert);

    let (status, text) = ctx.get_text("/customers/cus_1").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let jpy = 2 * i128::from(i64::MAX);
    let usd_gross = 2 * i128::from(MAX_AMOUNT);
    let expected = format!(
        concat!(
            r#"{{"customer_id":"cus_1","data":["#,
            r#"{{"currency":"EUR","lifetime_value":-200,"gross":300,"refunds":500,"count":2,"#,
            r#""first_occurred_at":"2026-03-01T00:00:00Z","last_occurred_at":"2026-03-02T00:00:00Z"}},"#,
            r#"{{"currency":"JPY","lifetime_value":{jpy},"gross":{jpy},"refunds":0,"count":2,"#,
            r#""first_occurred_at":"2026-01-01T00:00:00Z","last_occurred_at":"2026-01-02T00:00:00Z"}},"#,
            r#"{{"currency":"USD","lifetime_value":{usd_net},"gross":{usd_gross},"refunds":1001,"count":3,"#,
            r#""first_occurred_at":"2026-01-06T01:00:00Z","last_occurred_at":"2026-02-01T00:00:00.500Z"}}"#,
            r#"]}}"#
        ),
        jpy = jpy,
        usd_gross = usd_gross,
        usd_net = usd_gross - 1001,
    );
    assert_eq!(text, expected);
    assert_eq!(jpy.to_string(), "18446744073709551614");

    // Only that customer, matched exactly (not cus_10).
    let (status, body) = ctx.get("/customers/cus_2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"customer_id":"cus_2","data":[{"currency":"USD","lifetime_value":7,"gross":7,
               "refunds":0,"count":1,"first_occurred_at":"2025-01-01T00:00:00Z",
               "last_occurred_at":"2025-01-01T00:00:00Z"}]})
    );

    // Percent-encoded ids are decoded.
    ctx.record(
        "cus 3/ü",
        "prod",
        "refund",
        5,
        "GBP",
        "2026-01-01T00:00:00Z",
    )
    .await;
    let (status, body) = ctx.get("/customers/cus%203%2F%C3%BC").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["customer_id"], "cus 3/ü");
    assert_eq!(body["data"][0]["lifetime_value"], -5);

    // No events: 404 with the engine's JSON error, also for ids no event can have.
    let long = "x".repeat(129);
    for path in [
        "/customers/cus_404",
        "/customers/cus_",
        "/customers/%20",
        &format!("/customers/{long}"),
    ] {
        let (status, body) = ctx.get(path).await;
        assert_error(&(status, &body), StatusCode::NOT_FOUND, "not_found", None);
    }
}

/// `group_by=product` adds the product to each row's grouping; unknown values are a
/// 422 naming `group_by`.
async fn summary_groups_by_product(backend: Backend) {
    let ctx = Ctx::start(backend, "summary_group_by");
    let specs: &[(&str, &str, i64, &str, &str)] = &[
        ("pro", "charge", 4999, "USD", "2026-01-07T00:00:00Z"),
        ("pro", "charge", 5001, "USD", "2026-01-07T10:00:00Z"),
        ("pro", "refund", 1000, "USD", "2026-01-07T11:00:00Z"),
        ("basic", "charge", 700, "USD", "2026-01-07T12:00:00Z"),
        ("basic", "charge", 300, "EUR", "2026-01-07T13:00:00Z"),
        ("pro", "charge", MAX_AMOUNT, "EUR", "2026-01-31T00:00:00Z"),
        ("basic", "refund", 5, "USD", "2026-02-01T00:00:00Z"),
    ];
    for (product, kind, amount, currency, at) in specs {
        ctx.record("cus_1", product, kind, *amount, currency, at)
            .await;
    }
    let row =
        |bucket: &str, currency: &str, product: &str, gross: i64, refunds: i64, count: i64| {
            json!({"bucket": bucket, "currency": currency, "product": product, "gross": gross,
               "refunds": refunds, "net": gross - refunds, "count": count})
        };

    let (status, body) = ctx.get("/summary?group_by=product").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["group_by"], "product");
    assert_eq!(
        body["data"],
        json!([
            row("2026-01-07", "EUR", "basic", 300, 0, 1),
            row("2026-01-07", "USD", "basic", 700, 0, 1),
            row("2026-01-07", "USD", "pro", 10000, 1000, 3),
            row("2026-01-31", "EUR", "pro", MAX_AMOUNT, 0, 1),
            row("2026-02-01", "USD", "basic", 0, 5, 1),
        ])
    );

    let (status, body) = ctx
        .get("/summary?interval=month&group_by=product&currency=USD&to=2026-02-01T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"],
        json!([
            row("2026-01", "USD", "basic", 700, 0, 1),
            row("2026-01", "USD", "pro", 10000, 1000, 3),
        ])
    );

    // Without group_by: no product in the rows, as before.
    let (status, body) = ctx.get("/summary?interval=month").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["group_by"], Value::Null);
    assert_eq!(
        body["data"],
        json!([
            {"bucket":"2026-01","currency":"EUR","gross":300 + MAX_AMOUNT,"refunds":0,
             "net":300 + MAX_AMOUNT,"count":2},
            {"bucket":"2026-01","currency":"USD","gross":10700,"refunds":1000,"net":9700,"count":4},
            {"bucket":"2026-02","currency":"USD","gross":0,"refunds":5,"net":-5,"count":1},
        ])
    );

    for query in [
        "group_by=customer",
        "group_by=",
        "group_by=Product",
        "group_by=product&group_by=product",
    ] {
        let (status, body) = ctx.get(&format!("/summary?{query}")).await;
        assert_error(
            &(status, &body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("group_by"),
        );
    }
}

/// A key older than `ENGINE_IDEMPOTENCY_KEY_TTL` is expired: the same key then
/// stores a new event (even with another body), which replays from then on; the
/// sweep deletes expired rows. The first event stays.
async fn an_expired_key_stores_a_new_event(backend: Backend) {
    let ctx = Ctx::start_with(
        backend,
        "idem_expiry",
        &[("ENGINE_IDEMPOTENCY_KEY_TTL", "2s")],
    );
    let first = ctx.post_keyed(&charge(), "expiring").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = ctx.post_keyed(&charge(), "expiring").await;
    assert_eq!((retry.replayed(), retry.id()), (Some("true"), first.id()));
    let mut other = charge();
    other["amount"] = json!(1);
    assert_eq!(
        ctx.post_keyed(&other, "expiring").await.status,
        StatusCode::CONFLICT
    );

    std::thread::sleep(std::time::Duration::from_millis(2300));
    let again = ctx.post_keyed(&other, "expiring").await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.replayed(), None);
    assert_ne!(again.id(), first.id());
    let retry = ctx.post_keyed(&other, "expiring").await;
    assert_eq!((retry.replayed(), retry.id()), (Some("true"), again.id()));
    assert_eq!(ctx.all_events().await.len(), 2);

    // The sweep (every ttl/4, at least 1 s) deletes the keys once they expire;
    // their events stay.
    ctx.post_keyed(&charge(), "short-lived").await;
    assert_eq!(idempotency_rows(&ctx), "2");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while idempotency_rows(&ctx) != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "expired keys were never swept"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(ctx.all_events().await.len(), 3);
}
