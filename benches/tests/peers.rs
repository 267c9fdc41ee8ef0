//! The load harness' comparison set-up (`load proxy`) works: the gateway, nginx
//! and HAProxy each answer through to the same upstream, over HTTP and HTTPS
//! with the gateway's development certificate, and pass the client address on.
//! A smoke test of the harness, not a measurement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use benches::load::client;
use benches::peers::{self, Peer, Tls};
use e2e::gateway::GatewayProcess;
use e2e::upstream::Upstream;
use serde_json::Value;

#[tokio::test]
async fn gateway_nginx_and_haproxy_all_proxy_to_the_upstream() {
    peers::ensure_installed().unwrap();
    let up = Upstream::echo().await;
    let gw = GatewayProcess::start(&peers::gateway_config(&up.addr.to_string()));
    let (ca, cert, key) = peers::gateway_certs(gw.dir());
    let tls = Tls {
        cert: &cert,
        key: &key,
    };
    let nginx = Peer::nginx(&up.addr.to_string(), &tls).unwrap();
    let haproxy = Peer::haproxy(&up.addr.to_string(), &tls).unwrap();
    let ca_pem = std::fs::read_to_string(ca).unwrap();
    let http = client(2, None);
    let https = client(2, Some(&ca_pem));
    for (name, base, c) in [
        ("gateway", gw.http_url(), &http),
        ("gateway", gw.https_url(), &https),
        ("nginx", nginx.http_url(), &http),
        ("nginx", nginx.https_url(), &https),
        ("haproxy", haproxy.http_url(), &http),
        ("haproxy", haproxy.https_url(), &https),
    ] {
        let before = up.hits();
        let resp = c
            .get(format!("{base}/bench/item?id=42"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name} {base}: {e}"));
        assert_eq!(resp.status(), 200, "{name} {base}");
        let echoed: Value = resp.json().await.unwrap();
        assert_eq!(
            up.hits(),
            before + 1,
            "{name} {base} did not reach the upstream"
        );
        assert_eq!(echoed["uri"], "/bench/item?id=42", "{name}: {echoed}");
        assert!(
            echoed["headers"]["x-forwarded-for"]
                .as_str()
                .is_some_and(|v| v.contains("127.0.0.1")),
            "{name} {base}: {echoed}"
        );
    }
    assert!(peers::rss_kib_with_children(nginx.pid()) > 0);
}
