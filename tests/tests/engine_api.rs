//! End-to-end tests of the Revenue Engine's HTTP API against the real `engine`
//! binary, on SQLite (a temporary file) and on a throwaway PostgreSQL cluster (one
//! per test binary, one database per test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::engine::EngineProcess;
use e2e::pg::PgCluster;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One engine plus an HTTP client.
struct Ctx {
    engine: EngineProcess,
    http: Client,
}

impl Ctx {
    fn start(backend: Backend, name: &str) -> Self {
        let engine = match backend {
            Backend::Sqlite => EngineProcess::start_sqlite(),
            Backend::Postgres => EngineProcess::start(&PgCluster::shared().create_database(name)),
        };
        Ctx {
            engine,
            http: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        self.engine.api_url(path)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, body: &str, content_type: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url("/events")).body(body.to_owned());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, body: &Value) -> (StatusCode, Value) {
        self.post_raw(&body.to_string(), Some("application/json"))
            .await
    }

    /// Posts an event that must succeed; returns the stored event.
    async fn record(
        &self,
        customer: &str,
        product: &str,
        kind: &str,
        amount: i64,
        currency: &str,
        at: &str,
    ) -> Value {
        let (status, body) = self
            .post(
                &json!({"customer_id": customer, "product": product, "kind": kind,
                          "amount": amount, "currency": currency, "occurred_at": at}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Follows `next_cursor` through all pages of `query`; returns events and the
    /// number of pages.
    async fn list_all(&self, query: &str) -> (Vec<Value>, usize) {
        let mut events = Vec::new();
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        loop {
            let sep = if query.is_empty() { "" } else { "&" };
            let path = match &cursor {
                Some(c) => format!("/events?{query}{sep}cursor={c}"),
                None => format!("/events?{query}"),
            };
            let (status, body) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            pages += 1;
            events.extend(body["data"].as_array().unwrap().iter().cloned());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return (events, pages),
            }
            assert!(pages < 100, "pagination does not end");
        }
    }
}

/// Asserts an error response: status, `error.code` and `error.field`.
#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str, field: Option<&str>) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    match field {
        Some(f) => assert_eq!(body["error"]["field"], f, "{body}"),
        None => assert!(body["error"].get("field").is_none(), "{body}"),
    }
}

/// Runs an async test body against both backends as `<name>::sqlite` and
/// `<name>::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    )*};
}

on_both_backends!(
    create_and_fetch,
    list_filters_and_pagination,
    summary_by_day_and_month,
    summary_overflow_is_a_client_error,
    body_validation_errors,
    query_validation_errors,
    health_and_routing,
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
    // Amounts above 2^53 would lose precision in a float.
    let big: i64 = 9_007_199_254_740_993;
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

    // Two amounts above 2^53 summed exactly.
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

async fn summary_overflow_is_a_client_error(backend: Backend) {
    let ctx = Ctx::start(backend, "overflow");
    for _ in 0..2 {
        ctx.record("c", "p", "charge", i64::MAX, "USD", "2026-01-07T00:00:00Z")
            .await;
    }
    let got = ctx.get("/summary").await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "out_of_range", None);
    // Per-currency totals that fit are still fine.
    ctx.record("c", "p", "charge", 1, "EUR", "2026-01-07T00:00:00Z")
        .await;
    let (status, body) = ctx.get("/summary?currency=EUR").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][0]["gross"], 1);
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

    // Boundary values that are valid.
    let (status, body) = ctx.post(&with("amount", json!(i64::MAX))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["amount"], json!(i64::MAX));
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
        let body: Value = resp.json().await.unwrap();
        assert!(body["status"].is_string(), "{path}: {body}");
    }

    // Unknown routes: JSON 404.
    for path in ["/nope", "/api/v1/revenue/nope", "/api/v1/revenue"] {
        let resp = ctx.http.get(format!("{base}{path}")).send().await.unwrap();
        let status = resp.status();
        let got = (status, resp.json().await.unwrap());
        assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
    }

    // Wrong method: JSON 405 with Allow.
    let resp = ctx.http.delete(ctx.url("/events")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let got = (StatusCode::METHOD_NOT_ALLOWED, resp.json().await.unwrap());
    assert_error(
        &got,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
    let resp = ctx.http.post(ctx.url("/summary")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let resp = ctx
        .http
        .post(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
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
    let got = (status, resp.json().await.unwrap());
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "unavailable", None);
    let resp = http
        .get(format!("{}/healthz", engine.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
