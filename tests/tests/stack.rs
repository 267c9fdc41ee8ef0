//! The whole stack as a user runs it: the engine behind the gateway configured by
//! conf/gateway.yaml, over HTTPS with the development CA, on SQLite and Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::engine::EngineProcess;
use e2e::gateway::GatewayProcess;
use e2e::pg::PgCluster;
use serde_json::{json, Value};

/// The development credentials shipped in conf/gateway.yaml (see README).
const DEV_API_KEY: &str = "dev-only-dashboard-key-do-not-use-in-production";
const DEV_JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJiaWxsaW5nLXNlcnZpY2UtZGV2LWtleSIsInN1YiI6ImJpbGxpbmctc2VydmljZSIsImV4cCI6NDEwMjQ0NDgwMH0.Lu4nUhjg5x6He1hV2iJDp69CEXOomr8qKyOMlEHcyZU";

/// conf/gateway.yaml with the engine's address swapped for the test engine's.
fn shipped_config(engine_port: u16) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/gateway.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains("url: http://127.0.0.1:8080"),
        "conf/gateway.yaml changed shape"
    );
    text.replace(
        "url: http://127.0.0.1:8080",
        &format!("url: http://127.0.0.1:{engine_port}"),
    )
}

async fn walk_through(engine: &EngineProcess) {
    let gw = GatewayProcess::start(&shipped_config(engine.port()));
    let c = gw.client(None);
    let api = format!("{}/api/v1/revenue", gw.https_url());

    // README walk-through: no credential is refused...
    let resp = c.get(format!("{api}/events")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // Kong runs every plugin's header filter on its own answers too.
    assert!(resp.headers().contains_key("x-correlation-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Unauthorized");
    let resp = c
        .get(format!("{api}/events"))
        .header("apikey", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // ...a service with its JWT creates an event through the gateway over HTTPS...
    let resp = c
        .post(format!("{api}/events"))
        .bearer_auth(DEV_JWT)
        .json(&json!({
            "customer_id": "cus_1001",
            "product": "robot-pro-monthly",
            "kind": "charge",
            "amount": 4999,
            "currency": "USD",
            "occurred_at": "2026-01-07T12:00:00Z"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", gw.log());
    assert!(resp.headers().contains_key("x-correlation-id"));
    assert_eq!(resp.headers()["via"], "1.1 kong/3.10.0");
    let created: Value = resp.json().await.unwrap();
    assert!(created["id"].is_string());
    assert_eq!(created["amount"], 4999);

    let resp = c
        .post(format!("{api}/events"))
        .bearer_auth(DEV_JWT)
        .json(&json!({
            "customer_id": "cus_1001", "product": "robot-pro-monthly", "kind": "refund",
            "amount": 999, "currency": "USD", "occurred_at": "2026-01-08T09:30:00Z"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // The dashboard's key reads but may not write (acl: revenue-writers only).
    let resp = c
        .post(format!("{api}/events"))
        .header("apikey", DEV_API_KEY)
        .json(&json!({
            "customer_id": "cus_1001", "product": "robot-pro-monthly", "kind": "charge",
            "amount": 1, "currency": "USD", "occurred_at": "2026-01-08T09:30:00Z"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "You cannot consume this service");

    // ...and the dashboard with its API key reads the summary.
    let resp = c
        .get(format!("{api}/summary?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&interval=month&currency=USD"))
        .header("apikey", DEV_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let summary: Value = resp.json().await.unwrap();
    let text = summary.to_string();
    assert!(
        text.contains("4999") && text.contains("999") && text.contains("4000"),
        "{text}"
    );

    // The gateway caches the summary at the edge (proxy-cache, 30 s)...
    let summary_url = format!(
        "{api}/summary?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&interval=month&currency=USD"
    );
    let cached = |token: Option<String>| {
        let mut req = c.get(&summary_url).header("apikey", DEV_API_KEY);
        if let Some(t) = token {
            req = req.header("consistency-token", t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.headers()["x-cache-status"]
                .to_str()
                .unwrap()
                .to_owned();
            (
                status,
                resp.json::<Value>().await.unwrap()["data"][0]["net"].clone(),
            )
        }
    };
    assert_eq!(cached(None).await, ("Hit".to_owned(), json!(4000)));
    // ...but a read carrying a new write's Consistency-Token (Postgres; SQLite
    // answers none, and any token is accepted) is keyed apart and sees the write.
    let resp = c
        .post(format!("{api}/events"))
        .bearer_auth(DEV_JWT)
        .json(&json!({
            "customer_id": "cus_1002", "product": "robot-pro-monthly", "kind": "charge",
            "amount": 1, "currency": "USD", "occurred_at": "2026-01-09T09:30:00Z"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let token = resp
        .headers()
        .get("consistency-token")
        .map_or("0/0", |v| v.to_str().unwrap())
        .to_owned();
    assert_eq!(cached(Some(token)).await, ("Miss".to_owned(), json!(4001)));

    // Validation errors from the engine pass through the gateway untouched.
    let resp = c
        .post(format!("{api}/events"))
        .bearer_auth(DEV_JWT)
        .json(&json!({"customer_id": "c", "product": "p", "kind": "charge", "amount": 49.99, "currency": "USD", "occurred_at": "2026-01-07T12:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = c
        .post(format!("{api}/events"))
        .bearer_auth(DEV_JWT)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // No route.
    let resp = c
        .get(format!("{}/nope", gw.https_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Plain HTTP to the HTTPS-only revenue route.
    let resp = c
        .get(format!("{}/api/v1/revenue/events", gw.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 426);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_through_the_gateway_to_the_engine_on_sqlite() {
    let engine = EngineProcess::start_sqlite();
    walk_through(&engine).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn https_through_the_gateway_to_the_engine_on_postgres() {
    let pg = PgCluster::shared();
    let engine = EngineProcess::start(&pg.create_database("stack"));
    walk_through(&engine).await;
}
