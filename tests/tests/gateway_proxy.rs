//! The real gateway process proxying to a real upstream over loopback: routing, path
//! rewriting, forwarding headers, Kong's error statuses and bodies, TLS with SNI,
//! HTTP/2, the admin listener and reload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::gateway::GatewayProcess;
use e2e::pki::TestCa;
use e2e::upstream::Upstream;
use serde_json::Value;

fn is_request_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

async fn json(resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn routing_config(up: &Upstream) -> String {
    let a = up.addr;
    format!(
        r#"_format_version: "3.0"
services:
  - name: echo
    url: http://{a}/base
    routes:
      - name: api
        paths: [/api]
      - name: keep
        paths: [/keep]
        strip_path: false
      - name: regex
        paths: ['~/users/\d+/profile']
      - name: post-only
        paths: [/api]
        methods: [POST]
        hosts: [methods.test]
      - name: by-host
        hosts: [echo.test, "*.wild.test"]
      - name: preserve
        paths: [/preserve]
        preserve_host: true
  - name: root
    url: http://{a}
    routes:
      - name: root-regex
        paths: ['~/v\d+/items']
        strip_path: false
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_and_rewrites_paths_like_kong() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&routing_config(&up));
    let c = gw.client(None);
    let base = gw.http_url();

    // Raw requests, so the request targets reach the gateway exactly as written.
    let cases = [
        ("/api/x?q=1&q=2", "/base/x?q=1&q=2"),
        ("/api", "/base"),
        ("/api/", "/base/"),
        ("/apix", "/base/x"),
        ("/api/a/../b", "/base/b"),
        ("/api//a/./b", "/base/a/b"),
        ("/api/h%65llo/%2e%2e/world", "/base/world"),
        ("/api/a%2fb", "/base/a%2Fb"),
        ("/api/cat%20and%20dog", "/base/cat%20and%20dog"),
        ("/api/x?", "/base/x?"),
        ("/api/x?raw=%zz&a=b+c", "/base/x?raw=%zz&a=b+c"),
        ("/h%61pi/../api/z", "/base/z"),
        ("/keep/y", "/base/keep/y"),
        ("/users/42/profile/z", "/base/z"),
        ("/v2/items/7", "/v2/items/7"),
    ];
    for (req, want) in cases {
        let (status, body) = e2e::raw_request(gw.http_port, "GET", req, &[]).await;
        assert_eq!(status, 200, "{req}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["uri"], want, "{req}");
    }
    // A prefix reached only through traversal from outside is still not matched.
    let (status, _) = e2e::raw_request(gw.http_port, "GET", "/api/../nothing", &[]).await;
    assert_eq!(status, 404);

    // Method + host route wins over the plain path route for POST on that host only.
    let resp = c
        .post(format!("{base}/api/m"))
        .header("host", "methods.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Host-only routes: exact and wildcard.
    for host in ["echo.test", "a.wild.test"] {
        let resp = c
            .get(format!("{base}/anything"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(json(resp).await["uri"], "/base/anything");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_headers_as_kong_does() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&routing_config(&up));
    let c = gw.client(None);

    // The raw path goes upstream as X-Forwarded-Path, not the normalised one.
    let (status, body) = e2e::raw_request(gw.http_port, "GET", "/api/x/%2e%2e/y?k=v", &[]).await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["headers"]["x-forwarded-path"], "/api/x/%2e%2e/y");
    assert_eq!(body["uri"], "/base/y?k=v");

    let resp = c
        .get(format!("{}/api/x/y?k=v", gw.http_url()))
        .header("x-forwarded-for", "10.0.0.1")
        .header("via", "1.1 dev")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("x-kong-request-id", "spoofed")
        .header("x-custom", "kept")
        .header("x-consumer-id", "spoofed")
        .header("x-consumer-username", "admin")
        .header("x-credential-identifier", "spoofed")
        .header("x-anonymous-consumer", "false")
        .header("x-consumer-groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(is_request_id(&rid), "{rid}");
    assert_eq!(resp.headers()["via"], "1.1 kong/3.10.0");
    assert!(resp.headers().contains_key("x-kong-upstream-latency"));
    assert!(resp.headers().contains_key("x-kong-proxy-latency"));
    let body = json(resp).await;
    let h = &body["headers"];
    assert_eq!(h["host"], up.addr.to_string());
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "127.0.0.1");
    assert_eq!(h["x-forwarded-port"], gw.http_port.to_string());
    assert_eq!(h["x-forwarded-path"], "/api/x/y");
    assert_eq!(h["x-forwarded-prefix"], "/api");
    assert_eq!(h["via"], "1.1 dev, 1.1 kong/3.10.0");
    assert_eq!(h["x-kong-request-id"], rid.as_str());
    assert_eq!(h["x-custom"], "kept");
    assert!(h.get("x-hop").is_none(), "hop-by-hop header leaked: {h}");
    for spoofed in [
        "x-consumer-id",
        "x-consumer-username",
        "x-credential-identifier",
        "x-anonymous-consumer",
        "x-consumer-groups",
    ] {
        assert!(
            h.get(spoofed).is_none(),
            "client-sent {spoofed} reached the upstream: {h}"
        );
    }
    assert_eq!(body["uri"], "/base/x/y?k=v");

    // preserve_host sends the client's Host header verbatim.
    let resp = c
        .get(format!("{}/preserve", gw.http_url()))
        .header("host", "client.example:1234")
        .send()
        .await
        .unwrap();
    let body = json(resp).await;
    assert_eq!(body["headers"]["host"], "client.example:1234");
    assert_eq!(body["headers"]["x-forwarded-host"], "client.example");
}

#[tokio::test(flavor = "multi_thread")]
async fn kong_error_statuses_and_bodies() {
    let up = Upstream::echo().await;
    let garbage = Upstream::garbage().await;
    let dead_port = e2e::free_port();
    let config = format!(
        r#"_format_version: "3.0"
services:
  - name: dead
    url: http://127.0.0.1:{dead_port}
    retries: 2
    routes: [{{ name: dead, paths: [/dead] }}]
  - name: garbage
    url: http://{g}
    retries: 0
    routes: [{{ name: garbage, paths: [/garbage] }}]
  - name: slow
    url: http://{a}
    read_timeout: 300
    retries: 0
    routes: [{{ name: slow, paths: [/slow] , strip_path: false }}]
  - name: unresolvable
    url: http://no-such-host.invalid
    routes: [{{ name: unresolvable, paths: [/nxdomain] }}]
  - name: secure
    url: http://{a}
    routes:
      - {{ name: https-only, paths: [/secure], protocols: [https] }}
      - {{ name: https-redirect, paths: [/redirect], protocols: [https], https_redirect_status_code: 308 }}
  - name: ok
    url: http://{a}
    routes: [{{ name: ok, paths: [/ok] }}]
routes:
  - name: serviceless
    paths: [/orphan]
"#,
        g = garbage.addr,
        a = up.addr
    );
    let gw = GatewayProcess::start(&config);
    let c = gw.client(None);
    let base = gw.http_url();

    // 404: JSON template with the request id of the header.
    let resp = c.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["server"], "kong/3.10.0");
    assert!(resp.headers().get("via").is_none());
    assert!(resp.headers().contains_key("x-kong-response-latency"));
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    assert_eq!(
        text,
        format!("{{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"{rid}\"\n}}")
    );
    // Same with Accept: text/plain.
    let resp = c
        .get(format!("{base}/nope"))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        resp.text().await.unwrap(),
        format!("no Route matched with those values\nrequest_id: {rid}\n")
    );

    // 503: a route without a service.
    let resp = c.get(format!("{base}/orphan")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        json(resp).await["message"],
        "no Service found with those values"
    );

    // 503: the service host does not resolve.
    let resp = c.get(format!("{base}/nxdomain")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(json(resp).await["message"], "name resolution failed");

    // 502: connection refused; nginx family, so a bare client gets text/plain.
    let resp = c
        .get(format!("{base}/dead"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        resp.text().await.unwrap(),
        format!("An invalid response was received from the upstream server\nrequest_id: {rid}\n")
    );
    // With Accept: application/json the same failure is JSON.
    let resp = c
        .get(format!("{base}/dead"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        json(resp).await["message"],
        "An invalid response was received from the upstream server"
    );

    // 502: the upstream answers something that is not HTTP.
    let resp = c.get(format!("{base}/garbage")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(garbage.hits() >= 1);

    // 504: the upstream is slower than read_timeout.
    let resp = c.get(format!("{base}/slow/3000")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(resp
        .text()
        .await
        .unwrap()
        .starts_with("The upstream server is timing out\nrequest_id: "));

    // 426 on plain HTTP to an https-only route, and a redirect when configured.
    let resp = c.get(format!("{base}/secure/x")).send().await.unwrap();
    assert_eq!(resp.status(), 426);
    assert_eq!(resp.headers()["upgrade"], "TLS/1.2, HTTP/1.1");
    assert_eq!(json(resp).await["message"], "Please use HTTPS protocol");
    let resp = c
        .get(format!("{base}/redirect/x?a=1"))
        .header("host", "Example.COM:8000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        "https://example.com/redirect/x?a=1"
    );
    // Over HTTPS the same route proxies.
    let resp = c
        .get(format!("{}/secure/x", gw.https_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // 400: a path with broken percent-encoding never reaches routing.
    let (status, _) = e2e::raw_request(gw.http_port, "GET", "/ok/%zz", &[]).await;
    assert_eq!(status, 400);

    // Upstream statuses pass through untouched.
    let resp = c.get(format!("{base}/ok/status/500")).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["via"], "1.1 kong/3.10.0");

    // The gateway survived all of it.
    let resp = c.get(format!("{base}/ok/fine")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&routing_config(&up));
    let c = gw.client(None);
    for i in 0..30 {
        let resp = c
            .get(format!("{}/api/k/{i}", gw.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(up.hits(), 30);
    assert!(
        up.connections() <= 2,
        "30 sequential requests opened {} upstream connections",
        up.connections()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_retried_service_retries_times() {
    let dead_port = e2e::free_port();
    let gw = GatewayProcess::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: dead\n    url: http://127.0.0.1:{dead_port}\n    retries: 3\n    routes: [{{ paths: [/] }}]\n"
    ));
    let resp = gw.client(None).get(gw.http_url()).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    // The access line is written just after the response is sent.
    let mut log = gw.log();
    for _ in 0..40 {
        if log.contains("tries=4") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = gw.log();
    }
    assert!(
        log.contains("tries=4"),
        "expected 1 try + 3 retries in the access log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_certificate_is_chosen_by_sni() {
    let up = Upstream::echo().await;
    let ca = TestCa::new("sni test CA");
    let a = ca.issue(&["a.test"]);
    let b = ca.issue(&["b.test"]);
    let w = ca.issue(&["*.wild.test"]);
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    };
    let config = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: echo\n    url: http://{}\n    routes: [{{ paths: [/] }}]\ncertificates:\n  - cert: |\n{}    key: |\n{}    snis: [a.test]\n  - cert: |\n{}    key: |\n{}    snis: [b.test]\n  - cert: |\n{}    key: |\n{}    snis: ['*.wild.test']\n",
        up.addr,
        indent(&a.cert_pem),
        indent(&a.key_pem),
        indent(&b.cert_pem),
        indent(&b.key_pem),
        indent(&w.cert_pem),
        indent(&w.key_pem),
    );
    let gw = GatewayProcess::start(&config);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", gw.https_port).parse().unwrap();
    // A client that trusts only the test CA: a handshake succeeds only when the
    // gateway presents the certificate issued for the name the client asked for.
    let only_test_ca = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .resolve("a.test", addr)
        .resolve("b.test", addr)
        .resolve("x.wild.test", addr)
        .resolve("unknown.test", addr)
        .tls_info(true)
        .build()
        .unwrap();
    let mut seen = Vec::new();
    for host in ["a.test", "b.test", "x.wild.test"] {
        let resp = only_test_ca
            .get(format!("https://{host}:{}/", gw.https_port))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(resp.status(), 200, "{host}");
        let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
        seen.push(info.peer_certificate().unwrap().to_vec());
    }
    assert_ne!(
        seen[0], seen[1],
        "a.test and b.test must get different certificates"
    );
    // An unknown name gets the default (development) certificate, which the test CA
    // did not issue.
    let err = only_test_ca
        .get(format!("https://unknown.test:{}/", gw.https_port))
        .send()
        .await;
    assert!(
        err.is_err(),
        "unknown SNI must not get a test-CA certificate"
    );
    // ...and a client that trusts the development CA accepts it for localhost.
    let resp = gw
        .client(None)
        .get(format!("{}/", gw.https_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listener_speaks_http2_and_http1() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&routing_config(&up));
    let h2 = gw.client(None);
    let resp = h2
        .get(format!("{}/api/h2", gw.https_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = json(resp).await;
    assert_eq!(body["uri"], "/base/h2");
    assert_eq!(body["version"], "HTTP/1.1");
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(body["headers"]["via"], "2 kong/3.10.0");

    // Many concurrent streams on one HTTP/2 connection.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = h2.clone();
        let url = format!("{}/api/n/{i}", gw.https_url());
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }

    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(gw.dev_ca_pem().as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let resp = h1
        .get(format!("{}/api/h1", gw.https_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_status_and_reload_keep_serving() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&routing_config(&up));
    let c = gw.client(None);
    let status = json(
        c.get(format!("{}/status", gw.admin_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let first_hash = status["configuration_hash"].as_str().unwrap().to_string();
    assert_eq!(first_hash.len(), 64);
    assert!(status["uptime_seconds"].is_u64());
    assert!(status["server"]["connections_active"].as_i64().unwrap() >= 0);
    assert!(status["version"].is_string());

    // A broken file is refused; the old config keeps serving.
    std::fs::write(
        gw.conf_path(),
        "_format_version: \"3.0\"\nservices:\n  - name: x\n    url: http://[bad\n",
    )
    .unwrap();
    gw.reload();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.get(format!("{}/api/still", gw.http_url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(gw.log().contains("configuration refused"), "{}", gw.log());
    assert!(gw.log().contains("services[0].url"), "{}", gw.log());

    // A good file is swapped in.
    std::fs::write(
        gw.conf_path(),
        format!("_format_version: \"3.0\"\nservices:\n  - name: new\n    url: http://{}/v2\n    routes: [{{ paths: [/new] }}]\n", up.addr),
    )
    .unwrap();
    gw.reload();
    let mut swapped = false;
    for _ in 0..50 {
        let resp = c
            .get(format!("{}/new/x", gw.http_url()))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            assert_eq!(json(resp).await["uri"], "/v2/x");
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "new config never took effect:\n{}", gw.log());
    assert_eq!(
        c.get(format!("{}/api/x", gw.http_url()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let status = json(
        c.get(format!("{}/status", gw.admin_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ne!(status["configuration_hash"], first_hash.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_clean_answers() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&routing_config(&up));
    let port = gw.http_port;
    let before = up.hits();

    // TRACE is never proxied (cross-site tracing): 405 as Kong/nginx answer it.
    let (status, _) = e2e::raw_request(port, "TRACE", "/api/x", &[]).await;
    assert_eq!(status, 405);
    // HTTP/1.1 without Host, with two Hosts, or with a Host that is not a host.
    let resp = e2e::raw_exchange(port, b"GET /api/x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = e2e::raw_exchange(
        port,
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    for host in ["evil/.wild.test", "a@b.wild.test", "x..wild.test"] {
        let (status, _) = e2e::raw_request(port, "GET", "/", &[("Host", host)]).await;
        assert_eq!(status, 400, "{host}");
    }
    assert_eq!(up.hits(), before, "a refused request reached the upstream");

    // Pipelined requests are all answered, in order.
    let resp = e2e::raw_exchange(
        port,
        b"GET /api/p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /api/p2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let first = resp.find("/base/p1").expect("first pipelined response");
    let second = resp.find("/base/p2").expect("second pipelined response");
    assert!(first < second);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_faults_map_to_kong_statuses_and_are_retried() {
    let up = Upstream::echo().await;
    let switcher = Upstream::canned(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nRAW-TUNNEL-BYTES",
    )
    .await;
    let dead_port = e2e::free_port();
    let gw = GatewayProcess::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: slow
    url: http://{a}
    read_timeout: 300
    retries: 1
    routes: [{{ name: slow, paths: [/slow], strip_path: false }}]
  - name: switcher
    url: http://{s}
    retries: 0
    routes: [{{ name: switcher, paths: [/switch] }}]
  - name: dead
    url: http://127.0.0.1:{dead_port}
    retries: 0
    routes: [{{ name: dead, paths: [/dead] }}]
"#,
        a = up.addr,
        s = switcher.addr
    ));
    let c = gw.client(None);

    // A read timeout on an idempotent request is retried `retries` times (§8.4)...
    let resp = c
        .get(format!("{}/slow/1500", gw.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(up.hits(), 2, "GET should be tried twice");
    // ...and a 502/504 after a proxy attempt carries the proxied-response headers.
    assert_eq!(resp.headers()["via"], "1.1 kong/3.10.0");
    assert!(resp.headers().contains_key("x-kong-proxy-latency"));
    assert!(resp.headers().contains_key("x-kong-upstream-latency"));
    assert!(!resp.headers().contains_key("x-kong-response-latency"));
    // A POST is never replayed.
    let resp = c
        .post(format!("{}/slow/1500", gw.http_url()))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(up.hits(), 3, "POST must be sent once");

    // An upgrade the client never asked for is an invalid response, not a tunnel.
    let (status, body) = e2e::raw_request(gw.http_port, "GET", "/switch", &[]).await;
    assert_eq!(status, 502);
    assert!(!body.contains("RAW-TUNNEL-BYTES"));

    // Credentials in the query string never reach the log.
    let resp = c
        .get(format!("{}/dead?apikey=LEAKME-123&x=1", gw.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let (status, _) = e2e::raw_request(gw.http_port, "GET", "/slow/2000?jwt=LEAKME-456", &[]).await;
    assert_eq!(status, 504);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !gw.log().contains("LEAKME"),
        "a query string was logged:\n{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_config_on_reload_is_refused_and_reload_keeps_working() {
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&routing_config(&up));
    let c = gw.client(None);
    let hostile = [
        format!("_format_version: \"3.0\"\nservices:\n{}x\n", "- ".repeat(100_000)),
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1\n    retries: -0x-8000000000000000\n".to_string(),
    ];
    for text in hostile {
        std::fs::write(gw.conf_path(), text).unwrap();
        gw.reload();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let resp = c
            .get(format!("{}/api/ok", gw.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "the old config must keep serving:\n{}",
            gw.log()
        );
    }
    // Reload still works afterwards.
    std::fs::write(
        gw.conf_path(),
        format!("_format_version: \"3.0\"\nservices:\n  - url: http://{}/v3\n    routes: [{{ paths: [/after] }}]\n", up.addr),
    )
    .unwrap();
    gw.reload();
    let mut ok = false;
    for _ in 0..50 {
        if c.get(format!("{}/after/x", gw.http_url()))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "reload stopped working:\n{}", gw.log());
}
