//! key-auth, acl, request-termination and consumer-scoped plugins through the real
//! gateway: every status and message of Kong §3 and §7.2, §11 item 7, and the
//! headers the upstream sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::gateway::GatewayProcess;
use e2e::upstream::Upstream;
use serde_json::Value;

const ALICE_ID: &str = "2c8b6c5e-8f7c-4a62-9d43-7d3f8f1b7a01";
const ALICE_KEY_ID: &str = "9a1f4b8e-1c2d-4e3f-8a9b-0c1d2e3f4a5b";

fn config(up: &Upstream) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
  - id: {ALICE_ID}
    username: alice
    custom_id: cust-alice
    keyauth_credentials:
      - id: {ALICE_KEY_ID}
        key: alice-secret-key
    acls:
      - group: revenue-readers
      - group: staff
  - username: bob
    keyauth_credentials:
      - key: bob-secret-key
    acls:
      - group: banned
  - username: carol
    keyauth_credentials:
      - key: carol-secret-key
  - username: anonymous
  - username: guest
services:
  - name: echo
    url: http://{a}
    routes:
      - name: keyed
        paths: [/keyed]
        plugins:
          - name: key-auth
      - name: custom
        paths: [/custom]
        plugins:
          - name: key-auth
            config:
              key_names: [x_api_key, token]
              hide_credentials: true
              realm: revenue
      - name: header-only
        paths: [/header-only]
        plugins:
          - name: key-auth
            config: {{ key_in_query: false }}
      - name: allow
        paths: [/allow]
        plugins:
          - name: key-auth
          - name: acl
            config: {{ allow: [revenue-readers] }}
      - name: deny
        paths: [/deny]
        plugins:
          - name: key-auth
          - name: acl
            config: {{ deny: [banned], hide_groups_header: true }}
      - name: acl-alone
        paths: [/acl-alone]
        plugins:
          - name: acl
            config: {{ allow: [staff] }}
      - name: anon
        paths: [/anon]
        plugins:
          - name: key-auth
            config: {{ anonymous: anonymous }}
      - name: preflight
        paths: [/preflight]
        plugins:
          - name: key-auth
            config: {{ run_on_preflight: false }}
      - name: open
        paths: [/open]
      - name: body
        paths: [/body]
        plugins:
          - name: key-auth
            config: {{ key_in_body: true, hide_credentials: true }}
      - name: body-kept
        paths: [/body-kept]
        plugins:
          - name: key-auth
            config: {{ key_in_body: true }}
      - name: guest
        paths: [/guest]
        plugins:
          - name: key-auth
            config: {{ anonymous: guest, hide_credentials: true }}
      - name: guest-acl
        paths: [/guest-acl]
        plugins:
          - name: key-auth
            config: {{ anonymous: guest }}
          - name: acl
            config: {{ allow: [revenue-readers] }}
plugins:
  # Consumer-scoped: only the anonymous consumer is turned away, on every route.
  - name: request-termination
    consumer: anonymous
    config: {{ status_code: 401, message: "Unauthorized" }}
"#,
        a = up.addr
    )
}

async fn body(resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn key_auth_statuses_messages_and_headers() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&config(&up));
    let c = gw.client(None);
    let base = gw.http_url();

    // No key.
    let resp = c.get(format!("{base}/keyed")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Key");
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        resp.text().await.unwrap(),
        format!(
            "{{\n  \"message\":\"No API key found in request\",\n  \"request_id\":\"{rid}\"\n}}"
        )
    );
    // Empty key.
    let resp = c.get(format!("{base}/keyed?apikey=")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(body(resp).await["message"], "No API key found in request");
    // Wrong key.
    let resp = c
        .get(format!("{base}/keyed"))
        .header("apikey", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Key");
    assert_eq!(body(resp).await["message"], "Unauthorized");
    // Duplicate key (§11 item 7), in the query and in headers.
    let resp = c
        .get(format!("{base}/keyed?apikey=a&apikey=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(body(resp).await["message"], "Duplicate API key found");
    let resp = c
        .get(format!("{base}/keyed"))
        .header("apikey", "alice-secret-key")
        .header("apikey", "alice-secret-key")
        .send()
        .await
        .unwrap();
    assert_eq!(body(resp).await["message"], "Duplicate API key found");

    // An empty key header is the key, even with a valid key in the query (Kong).
    let resp = c
        .get(format!("{base}/keyed?apikey=alice-secret-key"))
        .header("apikey", "")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(body(resp).await["message"], "No API key found in request");

    // Good key in a header: the upstream sees who it is, never spoofed values,
    // whichever way the client spells the header names.
    let resp = c
        .get(format!("{base}/keyed/x?keep=1"))
        .header("apikey", "alice-secret-key")
        .header("x-consumer-username", "mallory")
        .header("x_consumer_username", "mallory")
        .header("X_Consumer_Groups", "admin")
        .header("x-anonymous-consumer", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = body(resp).await["headers"].clone();
    assert_eq!(h["x-consumer-id"], ALICE_ID);
    assert_eq!(h["x-consumer-username"], "alice");
    assert!(h.get("x_consumer_username").is_none(), "{h}");
    assert!(h.get("x_consumer_groups").is_none(), "{h}");
    assert_eq!(h["x-consumer-custom-id"], "cust-alice");
    assert_eq!(h["x-credential-identifier"], ALICE_KEY_ID);
    assert!(h.get("x-anonymous-consumer").is_none());
    // Without hide_credentials the key goes upstream.
    assert_eq!(h["apikey"], "alice-secret-key");

    // Good key in the query string.
    let resp = c
        .get(format!("{base}/keyed?apikey=bob-secret-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body(resp).await["headers"]["x-consumer-username"], "bob");
    // key_in_query false: a query key is not looked at.
    let resp = c
        .get(format!("{base}/header-only?apikey=bob-secret-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_names_realm_and_hide_credentials() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&config(&up));
    let c = gw.client(None);
    let base = gw.http_url();

    let resp = c.get(format!("{base}/custom")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Key realm=\"revenue\"");

    // x_api_key matches an X-Api-Key header (case and _/- do not matter), and the
    // header is removed before the request goes upstream.
    let resp = c
        .get(format!("{base}/custom"))
        .header("X-Api-Key", "carol-secret-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let b = body(resp).await;
    assert_eq!(b["headers"]["x-consumer-username"], "carol");
    assert!(b["headers"].get("x-api-key").is_none(), "{b}");

    // A query key is removed and every other argument is kept byte for byte.
    let (status, text) = e2e::raw_request(
        gw.http_port,
        "GET",
        "/custom/p?a=%20x&token=carol-secret-key&b=1&c=%2F",
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["uri"], "/p?a=%20x&b=1&c=%2F");
    // When the key was the only argument, no dangling `?` is left.
    let (status, text) =
        e2e::raw_request(gw.http_port, "GET", "/custom/q?token=carol-secret-key", &[]).await;
    assert_eq!(status, 200, "{text}");
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["uri"], "/q");
}

#[tokio::test(flavor = "multi_thread")]
async fn acl_allow_and_deny() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&config(&up));
    let c = gw.client(None);
    let base = gw.http_url();
    let get = |path: &str, key: &str| {
        c.get(format!("{base}{path}"))
            .header("apikey", key.to_string())
            .send()
    };

    let resp = get("/allow", "alice-secret-key").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        body(resp).await["headers"]["x-consumer-groups"],
        "revenue-readers, staff"
    );
    // A consumer in no listed group, and one with no groups at all.
    for key in ["bob-secret-key", "carol-secret-key"] {
        let resp = get("/allow", key).await.unwrap();
        assert_eq!(resp.status(), 403, "{key}");
        assert_eq!(
            body(resp).await["message"],
            "You cannot consume this service"
        );
    }
    // Deny list; hide_groups_header keeps the groups from the upstream.
    let resp = get("/deny", "bob-secret-key").await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        body(resp).await["message"],
        "You cannot consume this service"
    );
    let resp = get("/deny", "alice-secret-key").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(body(resp).await["headers"]
        .get("x-consumer-groups")
        .is_none());
    let resp = get("/deny", "carol-secret-key").await.unwrap();
    assert_eq!(resp.status(), 200);
    // acl without authentication: no consumer → 401.
    let resp = c.get(format!("{base}/acl-alone")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(body(resp).await["message"], "Unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_fallback_and_consumer_scoped_plugins() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&config(&up));
    let c = gw.client(None);
    let base = gw.http_url();

    // A bad key on the anonymous route: the request continues as "anonymous", and
    // the request-termination plugin scoped to that consumer answers 401.
    let before = up.hits();
    let resp = c
        .get(format!("{base}/anon"))
        .header("apikey", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(body(resp).await["message"], "Unauthorized");
    assert_eq!(
        up.hits(),
        before,
        "the anonymous request reached the upstream"
    );
    // A good key passes; the consumer-scoped plugin does not apply to alice.
    let resp = c
        .get(format!("{base}/anon"))
        .header("apikey", "alice-secret-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A mistyped key is hidden from the upstream even when the request goes on as
    // the anonymous consumer.
    let resp = c
        .get(format!("{base}/guest?apikey=typo-key&x=1"))
        .header("apikey", "typo-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let b = body(resp).await;
    assert_eq!(b["headers"]["x-anonymous-consumer"], "true");
    assert_eq!(b["headers"]["x-consumer-username"], "guest");
    assert!(b["headers"].get("apikey").is_none(), "{b}");
    // acl: an anonymous consumer (no credential) gets 401, not 403 (§7.2).
    let resp = c.get(format!("{base}/guest-acl")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(body(resp).await["message"], "Unauthorized");

    // Routes without authentication are untouched by consumer-scoped plugins.
    assert_eq!(
        c.get(format!("{base}/open")).send().await.unwrap().status(),
        200
    );
    // run_on_preflight false lets OPTIONS through without a key.
    let resp = c
        .request(reqwest::Method::OPTIONS, format!("{base}/preflight"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c.get(format!("{base}/preflight")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_never_reach_the_log_and_encoded_paths_stay_protected() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&config(&up));
    let c = gw.client(None);
    // Spellings of /keyed that reach it through /open are still authenticated.
    for path in [
        "/open/../keyed",
        "/open/%2e%2e/keyed",
        "//keyed",
        "/%6beyed",
    ] {
        let (status, _) = e2e::raw_request(gw.http_port, "GET", path, &[]).await;
        assert_eq!(status, 401, "{path}");
    }
    let resp = c
        .get(format!("{}/keyed?apikey=alice-secret-key", gw.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = c
        .get(format!("{}/keyed?apikey=wrong-LEAK-key", gw.http_url()))
        .send()
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = gw.log();
    assert!(
        !log.contains("alice-secret-key") && !log.contains("LEAK"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_in_body_form_json_and_multipart() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&config(&up));
    let c = gw.client(None);
    let base = gw.http_url();
    let post = |path: &str, ct: &str, body: Vec<u8>| {
        c.post(format!("{base}{path}"))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let form = "application/x-www-form-urlencoded";

    // Form: the key is found and removed; the rest goes upstream byte for byte, with
    // a Content-Length that matches.
    let resp = post(
        "/body",
        form,
        b"a=%20x&apikey=alice-secret-key&b=1".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let b = body(resp).await;
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    assert_eq!(b["body"], "a=%20x&b=1");
    assert_eq!(b["headers"]["content-length"], "10");

    // Without hide_credentials the body is untouched.
    let resp = post("/body-kept", form, b"apikey=alice-secret-key&b=1".to_vec())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body(resp).await["body"], "apikey=alice-secret-key&b=1");

    // JSON: a string value is the key; the body is re-serialised without it.
    let resp = post(
        "/body",
        "application/json; charset=utf-8",
        br#"{"apikey":"carol-secret-key","amount":5}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let b = body(resp).await;
    assert_eq!(b["headers"]["x-consumer-username"], "carol");
    assert_eq!(b["body"], r#"{"amount":5}"#);

    // Multipart: the key part is cut out, the file part is kept as it was.
    let mp =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nalice-secret-key\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.csv\"\r\n\r\n1,2\r\n--XyZ--\r\n";
    let resp = post("/body", "multipart/form-data; boundary=XyZ", mp.to_vec())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let b = body(resp).await;
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    assert_eq!(
        b["body"],
        "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.csv\"\r\n\r\n1,2\r\n--XyZ--\r\n"
    );

    // Kong's refusals: repeated, array, wrong, and a key in a body type Kong does not
    // read.
    for (ct, payload, message) in [
        (form, &b"apikey=a&apikey=b"[..], "Duplicate API key found"),
        (
            "application/json",
            br#"{"apikey":["a"]}"#,
            "Duplicate API key found",
        ),
        (form, b"apikey=wrong", "Unauthorized"),
        (
            "text/plain",
            b"apikey=alice-secret-key",
            "No API key found in request",
        ),
        (
            "application/json",
            b"{not json",
            "No API key found in request",
        ),
    ] {
        let resp = post("/body", ct, payload.to_vec()).await.unwrap();
        assert_eq!(resp.status(), 401, "{ct} {payload:?}");
        assert_eq!(body(resp).await["message"], message, "{ct} {payload:?}");
    }
    // A header key wins over the body; with hide_credentials the body's copy of the
    // name is removed too (as Kong clears header, query and body alike).
    let resp = c
        .post(format!("{base}/body"))
        .header("apikey", "carol-secret-key")
        .header("content-type", form)
        .body("apikey=alice-secret-key&x=1")
        .send()
        .await
        .unwrap();
    let b = body(resp).await;
    assert_eq!(b["headers"]["x-consumer-username"], "carol");
    assert_eq!(b["body"], "x=1");
    let resp = c
        .post(format!("{base}/body-kept"))
        .header("apikey", "carol-secret-key")
        .header("content-type", form)
        .body("apikey=alice-secret-key")
        .send()
        .await
        .unwrap();
    assert_eq!(body(resp).await["body"], "apikey=alice-secret-key");

    // A body larger than the gateway inspects, with a declared length, streams up
    // uninspected: the key must then come from elsewhere.
    let big = format!("apikey=alice-secret-key&pad={}", "x".repeat(70_000));
    let resp = post("/body", form, big.clone().into_bytes()).await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = c
        .post(format!("{base}/body?apikey=alice-secret-key"))
        .header("content-type", form)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body(resp).await["body"].as_str().unwrap().len(), big.len());

    // Chunked and small: read, found, removed. Chunked and too large: 413, and the
    // connection is closed.
    let chunked = |payload: &str| {
        format!(
            "POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: {form}\r\n\
Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{payload}\r\n0\r\n\r\n",
            payload.len()
        )
    };
    let text = e2e::raw_exchange(
        gw.http_port,
        chunked("apikey=alice-secret-key&z=9")
            .replace("Host: x\r\n", "Host: x\r\nConnection: close\r\n")
            .as_bytes(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""body":"z=9""#), "{text}");
    // A chunked body that was only the key goes up empty, framed by its length, and
    // nothing stray is left on the upstream connection for the next request.
    for _ in 0..3 {
        let text = e2e::raw_exchange(
            gw.http_port,
            chunked("apikey=alice-secret-key")
                .replace("Host: x\r\n", "Host: x\r\nConnection: close\r\n")
                .as_bytes(),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(r#""body":"""#), "{text}");
        assert!(text.contains(r#""content-length":"0""#), "{text}");
        let resp = c.get(format!("{base}/open")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let text = e2e::raw_exchange(gw.http_port, chunked(&big).as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("Payload too large"), "{text}");

    // Expect: 100-continue is answered by the gateway before it reads the body.
    let req = "POST /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\nExpect: 100-continue\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.http_port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"apikey=alice-secret-key").await.unwrap();
    let mut rest = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("HTTP/1.1 200"), "{rest}");
    assert!(!rest.contains("expect"), "{rest}");
    assert!(!gw.log().contains("alice-secret-key"));
}
