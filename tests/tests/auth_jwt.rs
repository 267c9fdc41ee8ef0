//! The jwt plugin through the real gateway: every status, body and
//! `WWW-Authenticate` of Kong §4 and §11 item 8, what the upstream sees on success,
//! each algorithm family, an attack table, anonymous fallback, and this gateway's
//! extensions (key selection by `kid`, JWKS from a file and a URL, `iss`/`aud`
//! allow-lists, leeway). Keys are generated at test time; nothing secret is
//! committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use e2e::gateway::GatewayProcess;
use e2e::upstream::Upstream;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ALICE_ID: &str = "6f0c8a52-3b1d-4c7e-9a2f-5d8e1b4c7a90";
const ANON_ID: &str = "0d7e5b3a-9c2f-4e1d-8b6a-3f5c7e9a1b2d";
const HS_SECRET: &str = "alice-hs-secret";
const HS_ROTATED: &str = "alice-rotated-secret";

/// Key pairs generated once per test binary.
struct Keys {
    rsa_private: String,
    rsa_public: String,
    rsa_n: Vec<u8>,
    rsa_e: Vec<u8>,
    p256: (String, String),
    p384: (String, String),
    ed25519: (String, String),
    /// The JWKS-file key (P-256): private PEM and raw uncompressed point.
    jwks_p256: (String, Vec<u8>),
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let rsa = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa key");
        let public = rsa.to_public_key();
        let ec = |alg| {
            let kp = rcgen::KeyPair::generate_for(alg).expect("key pair");
            (kp.serialize_pem(), kp.public_key_pem())
        };
        let jwks = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        Keys {
            rsa_private: rsa.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string(),
            rsa_public: public.to_public_key_pem(LineEnding::LF).expect("pem"),
            rsa_n: public.n().to_bytes_be(),
            rsa_e: public.e().to_bytes_be(),
            p256: ec(&rcgen::PKCS_ECDSA_P256_SHA256),
            p384: ec(&rcgen::PKCS_ECDSA_P384_SHA384),
            ed25519: ec(&rcgen::PKCS_ED25519),
            jwks_p256: (jwks.serialize_pem(), jwks.public_key_raw().to_vec()),
        }
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs `claims` with `alg`; `kid` goes into the header.
fn sign(alg: Algorithm, key: &EncodingKey, claims: Value, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn rs() -> EncodingKey {
    EncodingKey::from_rsa_pem(keys().rsa_private.as_bytes()).expect("rsa pem")
}

fn es(private: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(private.as_bytes()).expect("ec pem")
}

/// A token assembled by hand (header and claims as given, any signature).
fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string()),
        b64(claims.to_string()),
        b64(signature)
    )
}

fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("          {l}\n"))
        .collect::<String>()
}

fn config(up: &Upstream, jwks_file: &str, jwks_url: &str) -> String {
    let k = keys();
    let a = up.addr;
    let (rsa, p256, p384, ed) = (
        indent(&k.rsa_public),
        indent(&k.p256.1),
        indent(&k.p384.1),
        indent(&k.ed25519.1),
    );
    let eve_b64 = b64("eve-decoded-secret");
    format!(
        r#"_format_version: "3.0"
consumers:
  - id: {ALICE_ID}
    username: alice
    jwt_secrets:
      - key: alice-hs
        secret: {HS_SECRET}
      - key: alice-hs-2026
        secret: {HS_ROTATED}
      - key: alice-hs512
        algorithm: HS512
        secret: alice-hs512-secret
  - username: bob
    custom_id: cust-bob
    jwt_secrets:
      - key: bob-rs
        algorithm: RS256
        rsa_public_key: |
{rsa}      - key: bob-ps
        algorithm: PS256
        rsa_public_key: |
{rsa}      - key: bob-rs512
        algorithm: RS512
        rsa_public_key: |
{rsa}  - username: carol
    jwt_secrets:
      - key: carol-es256
        algorithm: ES256
        rsa_public_key: |
{p256}      - key: carol-es384
        algorithm: ES384
        rsa_public_key: |
{p384}  - username: dave
    jwt_secrets:
      - key: dave-ed
        algorithm: EdDSA
        rsa_public_key: |
{ed}  - username: eve
    jwt_secrets:
      - key: eve-plain
        secret: "plain secret!"
      - key: eve-b64
        secret: {eve_b64}
        secret_is_base64: true
  - username: frank
    jwt_secrets:
      - key: https://idp.test
        algorithm: ES256
        rsa_public_key: |
{p256}  - username: grace
    jwt_secrets:
      - key: https://idp2.test
        algorithm: RS256
        rsa_public_key: |
{rsa}  - id: {ANON_ID}
    username: anonymous
services:
  - name: echo
    url: http://{a}
    routes:
      - name: jwt
        paths: [/jwt]
        plugins:
          - name: jwt
      - name: exp
        paths: [/exp]
        plugins:
          - name: jwt
            config: {{ claims_to_verify: [exp] }}
      - name: nbf
        paths: [/nbf]
        plugins:
          - name: jwt
            config: {{ claims_to_verify: [nbf] }}
      - name: both
        paths: [/both]
        plugins:
          - name: jwt
            config: {{ claims_to_verify: [exp, nbf] }}
      - name: maxexp
        paths: [/maxexp]
        plugins:
          - name: jwt
            config: {{ claims_to_verify: [exp], maximum_expiration: 60 }}
      - name: realm
        paths: [/realm]
        plugins:
          - name: jwt
            config: {{ realm: kong-test }}
      - name: anon
        paths: [/anon]
        plugins:
          - name: jwt
            config: {{ anonymous: anonymous }}
      - name: preflight
        paths: [/preflight]
        plugins:
          - name: jwt
            config: {{ run_on_preflight: false }}
      - name: custom
        paths: [/custom]
        plugins:
          - name: jwt
            config:
              uri_param_names: [token]
              cookie_names: [session]
              header_names: [x-jwt]
              key_claim_name: sub
      - name: b64
        paths: [/b64]
        plugins:
          - name: jwt
            config: {{ secret_is_base64: true }}
      - name: kid
        paths: [/kid]
        plugins:
          - name: jwt
            config: {{ use_kid: true }}
      - name: jwks-file
        paths: [/jwks-file]
        plugins:
          - name: jwt
            config: {{ jwks: "{jwks_file}" }}
      - name: jwks-url
        paths: [/jwks-url]
        plugins:
          - name: jwt
            config: {{ jwks: "{jwks_url}", jwks_refresh_interval: 1, jwks_timeout: 3000 }}
      - name: allow-lists
        paths: [/allow-lists]
        plugins:
          - name: jwt
            config:
              claims_to_verify: [exp]
              issuers: [alice-hs]
              audiences: ["api://orders"]
              leeway_seconds: 30
"#
    )
}

/// A JWKS document for `keys` (kid, kty-specific fields).
fn jwks_doc(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn rsa_jwk(kid: &str) -> Value {
    let k = keys();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
           "n": b64(&k.rsa_n), "e": b64(&k.rsa_e)})
}

/// Serves `/jwks.json` with a body and status the test can change.
struct JwksServer {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<(u16, String)>>,
    hits: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        use axum::extract::State;
        type Shared = (Arc<Mutex<(u16, String)>>, Arc<Mutex<usize>>);
        let state = Arc::new(Mutex::new((200u16, body)));
        let hits = Arc::new(Mutex::new(0usize));
        let app = axum::Router::new()
            .route(
                "/jwks.json",
                axum::routing::get(|State((state, hits)): State<Shared>| async move {
                    *hits.lock().unwrap() += 1;
                    let (status, body) = state.lock().unwrap().clone();
                    (http::StatusCode::from_u16(status).unwrap(), body)
                }),
            )
            .with_state((state.clone(), hits.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer {
            addr,
            state,
            hits,
            task,
        }
    }

    fn set(&self, status: u16, body: String) {
        *self.state.lock().unwrap() = (status, body);
    }

    fn hits(&self) -> usize {
        *self.hits.lock().unwrap()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gateway, its upstream and the JWKS sources of one test.
struct Setup {
    gw: GatewayProcess,
    client: reqwest::Client,
    jwks: JwksServer,
    _up: Upstream,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let k = keys();
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let point = &k.jwks_p256.1;
    let file_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "file-key-1",
        "x": b64(&point[1..33]), "y": b64(&point[33..65])});
    std::fs::write(&file, jwks_doc(&[file_jwk])).unwrap();
    let jwks = JwksServer::start(jwks_doc(&[rsa_jwk("url-key-1")])).await;
    let url = format!("http://{}/jwks.json", jwks.addr);
    let gw = GatewayProcess::start(&config(&up, &file.display().to_string(), &url));
    let client = gw.client(None);
    Setup {
        gw,
        client,
        jwks,
        _up: up,
        _dir: dir,
    }
}

/// One response, reduced to what the tests compare.
struct Answer {
    status: u16,
    www: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    fn upstream(&self) -> Value {
        assert_eq!(
            self.status, 200,
            "expected the upstream's answer: {}",
            self.body
        );
        serde_json::from_str(&self.body).unwrap()
    }
}

impl Setup {
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.client.request(
            method.parse().unwrap(),
            format!("{}{path}", self.gw.http_url()),
        );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (status, www, content_type) = (
            resp.status().as_u16(),
            header("www-authenticate"),
            header("content-type"),
        );
        Answer {
            status,
            www,
            content_type,
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send("GET", path, headers).await
    }

    /// GET `path` with `Authorization: Bearer <token>`.
    async fn bearer(&self, path: &str, token: &str) -> Answer {
        self.get(path, &[("authorization", &format!("Bearer {token}"))])
            .await
    }

    /// Asserts a 401 with exactly `body` and `www`.
    async fn refused(&self, path: &str, token: &str, body: &str, www: &str) {
        let a = self.bearer(path, token).await;
        assert_refused(&a, body, www, &format!("{path} with {token}"));
    }

    /// Asserts the request reached the upstream as `username` with credential `key`.
    async fn accepted(&self, path: &str, token: &str, username: &str, key: &str) -> Value {
        let a = self.bearer(path, token).await;
        let echo = a.upstream();
        let h = &echo["headers"];
        assert_eq!(h["x-consumer-username"], username, "{path}: {h}");
        assert_eq!(h["x-credential-identifier"], key, "{path}: {h}");
        assert!(h.get("x-anonymous-consumer").is_none(), "{h}");
        echo
    }
}

fn assert_refused(a: &Answer, body: &str, www: &str, what: &str) {
    assert_eq!(a.status, 401, "{what}: {}", a.body);
    assert_eq!(a.body, body, "{what}");
    assert_eq!(a.www.as_deref(), Some(www), "{what}");
    assert_eq!(
        a.content_type.as_deref(),
        Some("application/json; charset=utf-8"),
        "{what}"
    );
}

const INVALID: &str = "Bearer error=\"invalid_token\"";

#[tokio::test(flavor = "multi_thread")]
async fn kongs_table_every_status_body_and_challenge() {
    let s = setup().await;
    let t = now();
    let alice = |claims: Value| sign(Algorithm::HS256, &hs(HS_SECRET), claims, None);

    // §11 item 8: no token, and an expired one with claims_to_verify [exp].
    let a = s.get("/jwt", &[]).await;
    assert_refused(&a, r#"{"message":"Unauthorized"}"#, "Bearer", "no token");
    assert!(!a.body.contains("request_id"));
    let expired = alice(json!({"iss": "alice-hs", "exp": t - 10}));
    s.refused("/exp", &expired, r#"{"exp":"token expired"}"#, INVALID)
        .await;

    // A header that is not Bearer, and an empty query value, count as no token.
    let a = s.get("/jwt", &[("authorization", "Basic YTpi")]).await;
    assert_refused(&a, r#"{"message":"Unauthorized"}"#, "Bearer", "basic");
    let a = s.get("/jwt?jwt=", &[]).await;
    assert_refused(&a, r#"{"message":"Unauthorized"}"#, "Bearer", "empty");

    // Several distinct tokens; identical copies are one.
    let good = alice(json!({"iss": "alice-hs"}));
    let other = alice(json!({"iss": "alice-hs", "n": 1}));
    let a = s
        .get(
            &format!("/jwt?jwt={other}"),
            &[("authorization", &format!("Bearer {good}"))],
        )
        .await;
    assert_refused(
        &a,
        r#"{"message":"Multiple tokens provided"}"#,
        INVALID,
        "two",
    );
    let a = s
        .get(
            &format!("/jwt?jwt={good}&jwt={good}"),
            &[("authorization", &format!("bearer {good}"))],
        )
        .await;
    assert_eq!(
        a.status, 200,
        "the same token three times is one: {}",
        a.body
    );
    let a = s.get("/jwt?jwt", &[]).await;
    assert_refused(&a, r#"{"message":"Unrecognizable token"}"#, INVALID, "flag");

    // Undecodable tokens.
    for bad in ["not-a-token", "a.b", "!!!.e30.x", "e30.bm90IGpzb24.x"] {
        s.refused(
            "/jwt",
            bad,
            r#"{"message":"Bad token; invalid JSON"}"#,
            INVALID,
        )
        .await;
    }
    // alg missing, unsupported, or `none`.
    for header in [
        json!({"typ": "JWT"}),
        json!({"alg": "XS256"}),
        json!({"alg": "none"}),
    ] {
        let tok = raw_token(&header, &json!({"iss": "alice-hs"}), b"");
        s.refused(
            "/jwt",
            &tok,
            r#"{"message":"Bad token; invalid alg"}"#,
            INVALID,
        )
        .await;
    }
    // Key claim absent, empty, unknown.
    s.refused(
        "/jwt",
        &alice(json!({"sub": "x"})),
        r#"{"message":"No mandatory 'iss' in claims"}"#,
        INVALID,
    )
    .await;
    s.refused(
        "/jwt",
        &alice(json!({"iss": ""})),
        r#"{"message":"Invalid 'iss' in claims"}"#,
        INVALID,
    )
    .await;
    s.refused(
        "/jwt",
        &alice(json!({"iss": "nobody"})),
        r#"{"message":"No credentials found for given 'iss'"}"#,
        INVALID,
    )
    .await;
    // The key claim may sit in the JOSE header instead.
    let in_header = raw_token(&json!({"alg": "HS256", "iss": "alice-hs"}), &json!({}), b"");
    s.refused(
        "/jwt",
        &in_header,
        r#"{"message":"Invalid signature"}"#,
        INVALID,
    )
    .await;
    // alg other than the credential's.
    let hs384 = sign(
        Algorithm::HS384,
        &hs(HS_SECRET),
        json!({"iss": "alice-hs"}),
        None,
    );
    s.refused(
        "/jwt",
        &hs384,
        r#"{"message":"Invalid algorithm"}"#,
        INVALID,
    )
    .await;
    // Invalid key/secret: the plugin says secrets are base64, this one is not.
    let eve = sign(
        Algorithm::HS256,
        &hs("plain secret!"),
        json!({"iss": "eve-plain"}),
        None,
    );
    s.refused("/b64", &eve, r#"{"message":"Invalid key/secret"}"#, INVALID)
        .await;
    // Bad signature.
    let wrong = sign(
        Algorithm::HS256,
        &hs("guess"),
        json!({"iss": "alice-hs"}),
        None,
    );
    s.refused(
        "/jwt",
        &wrong,
        r#"{"message":"Invalid signature"}"#,
        INVALID,
    )
    .await;
    // claims_to_verify.
    let future = alice(json!({"iss": "alice-hs", "nbf": t + 600}));
    s.refused("/nbf", &future, r#"{"nbf":"token not valid yet"}"#, INVALID)
        .await;
    let neither = alice(json!({"iss": "alice-hs"}));
    s.refused(
        "/both",
        &neither,
        r#"{"exp":"must be a number","nbf":"must be a number"}"#,
        INVALID,
    )
    .await;
    let strings = alice(json!({"iss": "alice-hs", "exp": "soon"}));
    s.refused("/exp", &strings, r#"{"exp":"must be a number"}"#, INVALID)
        .await;
    // maximum_expiration.
    let far = alice(json!({"iss": "alice-hs", "exp": t + 3600}));
    s.refused(
        "/maxexp",
        &far,
        r#"{"exp":"exceeds maximum allowed expiration"}"#,
        INVALID,
    )
    .await;
    let near = alice(json!({"iss": "alice-hs", "exp": t + 30}));
    s.accepted("/maxexp", &near, "alice", "alice-hs").await;
    // Without claims_to_verify nothing is checked (Kong's default).
    s.accepted("/jwt", &expired, "alice", "alice-hs").await;

    // Realm.
    let a = s.get("/realm", &[]).await;
    assert_refused(
        &a,
        r#"{"message":"Unauthorized"}"#,
        "Bearer realm=\"kong-test\"",
        "realm",
    );
    s.refused(
        "/realm",
        &wrong,
        r#"{"message":"Invalid signature"}"#,
        "Bearer realm=\"kong-test\", error=\"invalid_token\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn success_headers_and_every_algorithm_family() {
    let s = setup().await;
    let k = keys();
    let t = now();
    let claims = |iss: &str| json!({"iss": iss, "exp": t + 300, "nbf": t - 5});

    // HS256: the upstream sees the consumer, the secret's key, and the token.
    let token = sign(Algorithm::HS256, &hs(HS_SECRET), claims("alice-hs"), None);
    let a = s
        .get(
            "/both",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-consumer-id", "spoofed"),
                ("x-anonymous-consumer", "true"),
            ],
        )
        .await;
    let h = &a.upstream()["headers"];
    assert_eq!(h["x-consumer-id"], ALICE_ID);
    assert_eq!(h["x-consumer-username"], "alice");
    assert_eq!(h["x-credential-identifier"], "alice-hs");
    assert_eq!(h["authorization"], format!("Bearer {token}"));
    assert!(h.get("x-anonymous-consumer").is_none(), "{h}");
    assert!(h.get("x-consumer-custom-id").is_none(), "{h}");

    let hs512 = sign(
        Algorithm::HS512,
        &hs("alice-hs512-secret"),
        claims("alice-hs512"),
        None,
    );
    s.accepted("/both", &hs512, "alice", "alice-hs512").await;
    let echo = s
        .accepted(
            "/both",
            &sign(Algorithm::RS256, &rs(), claims("bob-rs"), None),
            "bob",
            "bob-rs",
        )
        .await;
    assert_eq!(echo["headers"]["x-consumer-custom-id"], "cust-bob");
    s.accepted(
        "/both",
        &sign(Algorithm::RS512, &rs(), claims("bob-rs512"), None),
        "bob",
        "bob-rs512",
    )
    .await;
    s.accepted(
        "/both",
        &sign(Algorithm::PS256, &rs(), claims("bob-ps"), None),
        "bob",
        "bob-ps",
    )
    .await;
    s.accepted(
        "/both",
        &sign(
            Algorithm::ES256,
            &es(&k.p256.0),
            claims("carol-es256"),
            None,
        ),
        "carol",
        "carol-es256",
    )
    .await;
    s.accepted(
        "/both",
        &sign(
            Algorithm::ES384,
            &es(&k.p384.0),
            claims("carol-es384"),
            None,
        ),
        "carol",
        "carol-es384",
    )
    .await;
    let ed = EncodingKey::from_ed_pem(k.ed25519.0.as_bytes()).unwrap();
    s.accepted(
        "/both",
        &sign(Algorithm::EdDSA, &ed, claims("dave-ed"), None),
        "dave",
        "dave-ed",
    )
    .await;
    // A credential-level base64 secret is decoded before use.
    s.accepted(
        "/jwt",
        &sign(
            Algorithm::HS256,
            &hs("eve-decoded-secret"),
            claims("eve-b64"),
            None,
        ),
        "eve",
        "eve-b64",
    )
    .await;
    // The plugin-level secret_is_base64 decodes every HS secret (Kong).
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = lenient.decode(HS_SECRET).unwrap();
    let b64_token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&decoded),
        claims("alice-hs"),
        None,
    );
    s.accepted("/b64", &b64_token, "alice", "alice-hs").await;
    s.refused(
        "/b64",
        &token,
        r#"{"message":"Invalid signature"}"#,
        INVALID,
    )
    .await;

    // Custom token places and key claim.
    let sub = sign(
        Algorithm::HS256,
        &hs(HS_SECRET),
        json!({"sub": "alice-hs"}),
        None,
    );
    for (path, headers) in [
        (format!("/custom?token={sub}"), vec![]),
        (
            "/custom".to_string(),
            vec![("cookie", format!("a=b; session={sub}"))],
        ),
        (
            "/custom".to_string(),
            vec![("x-jwt", format!("Bearer {sub}"))],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = s.get(&path, &headers).await;
        assert_eq!(
            a.upstream()["headers"]["x-credential-identifier"],
            "alice-hs"
        );
    }
    // The default places are not looked at there, and messages name `sub`.
    let a = s.get(&format!("/custom?jwt={sub}"), &[]).await;
    assert_refused(&a, r#"{"message":"Unauthorized"}"#, "Bearer", "custom");
    let a = s
        .get("/custom", &[("x-jwt", &format!("Bearer {token}"))])
        .await;
    assert_refused(
        &a,
        r#"{"message":"No mandatory 'sub' in claims"}"#,
        INVALID,
        "sub",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_are_refused() {
    let s = setup().await;
    let k = keys();
    let t = now();

    // alg none, unsigned.
    let none = raw_token(
        &json!({"alg": "none", "typ": "JWT"}),
        &json!({"iss": "bob-rs"}),
        b"",
    );
    s.refused(
        "/jwt",
        &none,
        r#"{"message":"Bad token; invalid alg"}"#,
        INVALID,
    )
    .await;
    // Algorithm confusion: HS256 keyed with the RSA public key PEM, against an
    // RS256 credential.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(k.rsa_public.as_bytes()),
        json!({"iss": "bob-rs"}),
        None,
    );
    s.refused(
        "/jwt",
        &confused,
        r#"{"message":"Invalid algorithm"}"#,
        INVALID,
    )
    .await;
    // Tampered payload under a valid signature.
    let genuine = sign(
        Algorithm::RS256,
        &rs(),
        json!({"iss": "bob-rs", "admin": false}),
        None,
    );
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(json!({"iss": "bob-rs", "admin": true}).to_string()),
        parts[2]
    );
    s.refused(
        "/jwt",
        &tampered,
        r#"{"message":"Invalid signature"}"#,
        INVALID,
    )
    .await;
    // A signature cut short, and one with an extra segment.
    let cut = &genuine[..genuine.len() - 4];
    s.refused("/jwt", cut, r#"{"message":"Invalid signature"}"#, INVALID)
        .await;
    s.refused(
        "/jwt",
        &format!("{genuine}.x"),
        r#"{"message":"Bad token; invalid signature"}"#,
        INVALID,
    )
    .await;
    // A P-384 signature claimed as ES256 on the P-256 credential.
    let es384_as_256 = {
        let real = sign(
            Algorithm::ES384,
            &es(&k.p384.0),
            json!({"iss": "carol-es256"}),
            None,
        );
        let p: Vec<&str> = real.split('.').collect();
        format!(
            "{}.{}.{}",
            b64(json!({"alg": "ES256"}).to_string()),
            p[1],
            p[2]
        )
    };
    s.refused(
        "/jwt",
        &es384_as_256,
        r#"{"message":"Invalid signature"}"#,
        INVALID,
    )
    .await;
    // Expired, not yet valid, and exp missing where it is required.
    let hs_token = |claims: Value| sign(Algorithm::HS256, &hs(HS_SECRET), claims, None);
    s.refused(
        "/exp",
        &hs_token(json!({"iss": "alice-hs", "exp": t})),
        r#"{"exp":"token expired"}"#,
        INVALID,
    )
    .await;
    s.refused(
        "/nbf",
        &hs_token(json!({"iss": "alice-hs", "nbf": t + 120})),
        r#"{"nbf":"token not valid yet"}"#,
        INVALID,
    )
    .await;
    s.refused(
        "/exp",
        &hs_token(json!({"iss": "alice-hs"})),
        r#"{"exp":"must be a number"}"#,
        INVALID,
    )
    .await;
    // Unknown kid (selection by kid on).
    let unknown = sign(
        Algorithm::HS256,
        &hs(HS_SECRET),
        json!({"iss": "alice-hs"}),
        Some("no-such-key"),
    );
    s.refused(
        "/kid",
        &unknown,
        r#"{"message":"No credentials found for given 'kid'"}"#,
        INVALID,
    )
    .await;
    // Another consumer's secret cannot be borrowed through kid.
    let borrowed = sign(
        Algorithm::HS256,
        &hs("alice-hs512-secret"),
        json!({"iss": "eve-plain"}),
        Some("alice-hs512"),
    );
    s.refused(
        "/kid",
        &borrowed,
        r#"{"message":"No credentials found for given 'kid'"}"#,
        INVALID,
    )
    .await;
    // The same token in two places with different values.
    let a = hs_token(json!({"iss": "alice-hs"}));
    let b = hs_token(json!({"iss": "alice-hs", "x": 1}));
    let answer = s
        .get(
            &format!("/jwt?jwt={a}"),
            &[("authorization", &format!("Bearer {b}"))],
        )
        .await;
    assert_refused(
        &answer,
        r#"{"message":"Multiple tokens provided"}"#,
        INVALID,
        "dup",
    );
    let answer = s.get(&format!("/jwt?jwt={a}&jwt={b}"), &[]).await;
    assert_refused(
        &answer,
        r#"{"message":"Multiple tokens provided"}"#,
        INVALID,
        "dup query",
    );

    // Tokens in the query string never reach the gateway's log, good or bad.
    let marker = "LEAKME-jwt-7781";
    let leaky = hs_token(json!({"iss": "alice-hs", "marker": marker}));
    let ok = s.get(&format!("/jwt?jwt={leaky}"), &[]).await;
    assert_eq!(ok.status, 200);
    let bad = s.get(&format!("/jwt?jwt={marker}"), &[]).await;
    assert_eq!(bad.status, 401);
    let _ = s.get(&format!("/exp?jwt={leaky}"), &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = s.gw.log();
    assert!(
        log.contains("/jwt"),
        "the access log should have the requests:\n{log}"
    );
    assert!(!log.contains(marker), "a token reached the log:\n{log}");
    let signature = leaky.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token reached the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_fallback_and_preflight() {
    let s = setup().await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer garbage")],
        vec![("authorization", "Bearer a.b.c")],
    ] {
        let a = s.get("/anon", &headers).await;
        let h = &a.upstream()["headers"];
        assert_eq!(h["x-anonymous-consumer"], "true");
        assert_eq!(h["x-consumer-id"], ANON_ID);
        assert_eq!(h["x-consumer-username"], "anonymous");
        assert!(h.get("x-credential-identifier").is_none(), "{h}");
    }
    let good = sign(
        Algorithm::HS256,
        &hs(HS_SECRET),
        json!({"iss": "alice-hs"}),
        None,
    );
    s.accepted("/anon", &good, "alice", "alice-hs").await;

    // OPTIONS goes through unauthenticated with run_on_preflight false, and is
    // authenticated by default.
    let a = s.send("OPTIONS", "/preflight", &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = s.send("OPTIONS", "/jwt", &[]).await;
    assert_refused(&a, r#"{"message":"Unauthorized"}"#, "Bearer", "preflight");
    let a = s.send("GET", "/preflight", &[]).await;
    assert_eq!(a.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn kid_selection_jwks_and_allow_lists() {
    let s = setup().await;
    let k = keys();
    let t = now();

    // Key rotation by kid: the key claim names the consumer, kid the key.
    let rotated = sign(
        Algorithm::HS256,
        &hs(HS_ROTATED),
        json!({"iss": "alice-hs"}),
        Some("alice-hs-2026"),
    );
    s.accepted("/kid", &rotated, "alice", "alice-hs").await;
    // Without kid selection the kid is ignored, as in Kong.
    s.refused(
        "/jwt",
        &rotated,
        r#"{"message":"Invalid signature"}"#,
        INVALID,
    )
    .await;
    // The old key under the new kid does not verify.
    let mismatch = sign(
        Algorithm::HS256,
        &hs(HS_SECRET),
        json!({"iss": "alice-hs"}),
        Some("alice-hs-2026"),
    );
    s.refused(
        "/kid",
        &mismatch,
        r#"{"message":"Invalid signature"}"#,
        INVALID,
    )
    .await;
    // The kid's secret pins its own algorithm.
    let wrong_alg = sign(
        Algorithm::HS256,
        &hs("alice-hs512-secret"),
        json!({"iss": "alice-hs"}),
        Some("alice-hs512"),
    );
    s.refused(
        "/kid",
        &wrong_alg,
        r#"{"message":"Invalid algorithm"}"#,
        INVALID,
    )
    .await;
    // No kid: Kong's behaviour.
    let plain = sign(
        Algorithm::HS256,
        &hs(HS_SECRET),
        json!({"iss": "alice-hs"}),
        None,
    );
    s.accepted("/kid", &plain, "alice", "alice-hs").await;

    // JWKS file: the key with the token's kid verifies it; the credential's own
    // PEM still serves tokens without a kid.
    let file_key = es(&k.jwks_p256.0);
    let by_file = sign(
        Algorithm::ES256,
        &file_key,
        json!({"iss": "https://idp.test"}),
        Some("file-key-1"),
    );
    s.accepted("/jwks-file", &by_file, "frank", "https://idp.test")
        .await;
    let own = sign(
        Algorithm::ES256,
        &es(&k.p256.0),
        json!({"iss": "https://idp.test"}),
        None,
    );
    s.accepted("/jwks-file", &own, "frank", "https://idp.test")
        .await;
    let unknown = sign(
        Algorithm::ES256,
        &file_key,
        json!({"iss": "https://idp.test"}),
        Some("file-key-2"),
    );
    s.refused(
        "/jwks-file",
        &unknown,
        r#"{"message":"No credentials found for given 'kid'"}"#,
        INVALID,
    )
    .await;
    // A JWKS key is only used with its own algorithm.
    let confused = sign(
        Algorithm::HS256,
        &hs("x"),
        json!({"iss": "alice-hs"}),
        Some("file-key-1"),
    );
    s.refused(
        "/jwks-file",
        &confused,
        r#"{"message":"Invalid algorithm"}"#,
        INVALID,
    )
    .await;

    // JWKS URL: fetched on first need.
    let by_url = sign(
        Algorithm::RS256,
        &rs(),
        json!({"iss": "https://idp2.test"}),
        Some("url-key-1"),
    );
    s.accepted("/jwks-url", &by_url, "grace", "https://idp2.test")
        .await;
    let fetched = s.jwks.hits();
    assert!(fetched >= 1);
    // The key server fails: the last good set keeps serving.
    s.jwks.set(500, "down".into());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.accepted("/jwks-url", &by_url, "grace", "https://idp2.test")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.accepted("/jwks-url", &by_url, "grace", "https://idp2.test")
        .await;
    assert!(
        s.jwks.hits() > fetched,
        "a stale set is refreshed in the background"
    );
    // Rotation: a new kid is fetched when first seen.
    s.jwks
        .set(200, jwks_doc(&[rsa_jwk("url-key-1"), rsa_jwk("url-key-2")]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = sign(
        Algorithm::RS256,
        &rs(),
        json!({"iss": "https://idp2.test"}),
        Some("url-key-2"),
    );
    s.accepted("/jwks-url", &rotated, "grace", "https://idp2.test")
        .await;

    // iss/aud allow-lists and leeway.
    let token = |claims: Value| sign(Algorithm::HS256, &hs(HS_SECRET), claims, None);
    s.accepted(
        "/allow-lists",
        &token(json!({"iss": "alice-hs", "aud": ["x", "api://orders"], "exp": t - 10})),
        "alice",
        "alice-hs",
    )
    .await;
    s.refused(
        "/allow-lists",
        &token(json!({"iss": "alice-hs", "aud": "api://orders", "exp": t - 60})),
        r#"{"exp":"token expired"}"#,
        INVALID,
    )
    .await;
    s.refused(
        "/allow-lists",
        &token(json!({"iss": "alice-hs", "aud": "api://other", "exp": t + 60})),
        r#"{"aud":"not allowed"}"#,
        INVALID,
    )
    .await;
    s.refused(
        "/allow-lists",
        &token(json!({"iss": "alice-hs", "exp": t + 60})),
        r#"{"aud":"missing"}"#,
        INVALID,
    )
    .await;
    let hs512 = sign(
        Algorithm::HS512,
        &hs("alice-hs512-secret"),
        json!({"iss": "alice-hs512", "aud": "api://orders", "exp": t + 60}),
        None,
    );
    s.refused("/allow-lists", &hs512, r#"{"iss":"not allowed"}"#, INVALID)
        .await;
}

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, config).unwrap();
    let out = std::process::Command::new(e2e::bin::path("gateway"))
        .args(["check", "--conf"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_secrets_and_plugin_configs_are_refused_at_load() {
    let k = keys();
    let p256 = indent(&k.p256.1);
    let config = format!(
        r#"_format_version: "3.0"
consumers:
  - username: x
    jwt_secrets:
      - key: a
        algorithm: ES512
        rsa_public_key: |
{p256}      - key: b
        algorithm: RS256
        rsa_public_key: |
{p256}      - key: c
        algorithm: ES256
        rsa_public_key: "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n"
      - key: d
        algorithm: HS256
      - key: e
        secret: "not base64!"
        secret_is_base64: true
      - key: f
        algorithm: RS256
services:
  - url: http://127.0.0.1:9
    routes:
      - paths: [/x]
        plugins:
          - name: jwt
            config:
              claims_to_verify: [iat]
              maximum_expiration: 10
              jwks: /nonexistent/jwks.json
"#
    );
    let (ok, stderr) = check(&config);
    assert!(!ok);
    let pem_lines = p256.lines().count();
    let b_line = 7 + pem_lines + 3;
    for want in [
        ":6: consumers[0].jwt_secrets[0].algorithm: ES512 is not supported".to_string(),
        format!(
            ":{b_line}: consumers[0].jwt_secrets[1].rsa_public_key: invalid key for RS256: RS256 needs an RSA key"
        ),
        "consumers[0].jwt_secrets[2].rsa_public_key: invalid key for ES256".to_string(),
        "consumers[0].jwt_secrets[3].secret: required field missing for algorithm HS256"
            .to_string(),
        "consumers[0].jwt_secrets[4].secret: secret_is_base64 is set but the secret is not valid base64".to_string(),
        "consumers[0].jwt_secrets[5].rsa_public_key: required field missing for algorithm RS256"
            .to_string(),
        "services[0].routes[0].plugins[0].config.claims_to_verify[0]: expected one of: exp, nbf"
            .to_string(),
        "services[0].routes[0].plugins[0].config.jwks: cannot read /nonexistent/jwks.json"
            .to_string(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
}
