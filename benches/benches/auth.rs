//! Authentication cost per request: JWT verification (decode, algorithm pin,
//! signature) for HS256, RS256 and ES256 with keys parsed once as the gateway
//! does, and the API-key lookup over 10 000 keys. Run with
//! `cargo bench -p benches --bench auth`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use gateway::consumers::CredentialIndex;
use gateway::plugins::jwt::{verify, Alg, VerifyKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let claims = serde_claims();
    jsonwebtoken::encode(&Header::new(alg), &claims, key)
        .unwrap_or_else(|e| panic!("cannot sign: {e}"))
}

fn serde_claims() -> std::collections::BTreeMap<&'static str, String> {
    [
        ("iss", "bench-key".to_string()),
        ("sub", "user-42".to_string()),
        ("exp", "4102444800".to_string()),
    ]
    .into_iter()
    .collect()
}

fn jwt(c: &mut Criterion) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    let rsa = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
        .unwrap_or_else(|e| panic!("rsa key: {e}"));
    let rsa_private = rsa
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap_or_else(|e| panic!("{e}"));
    let rsa_public = rsa
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap_or_else(|e| panic!("{e}"));
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap_or_else(|e| panic!("p256 key: {e}"));

    let cases = [
        (
            "HS256",
            Alg::HS256,
            token(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"a-32-byte-shared-secret-for-hs256"),
            ),
            VerifyKey::from_secret(b"a-32-byte-shared-secret-for-hs256"),
        ),
        (
            "RS256",
            Alg::RS256,
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(rsa_private.as_bytes())
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            VerifyKey::from_pem(Alg::RS256, &rsa_public).unwrap_or_else(|e| panic!("{e}")),
        ),
        (
            "ES256",
            Alg::ES256,
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes())
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            VerifyKey::from_pem(Alg::ES256, &ec.public_key_pem()).unwrap_or_else(|e| panic!("{e}")),
        ),
    ];
    let mut group = c.benchmark_group("jwt_verify");
    for (name, alg, token, key) in &cases {
        assert!(verify(token, *alg, key).is_ok(), "{name} token must verify");
        group.bench_with_input(BenchmarkId::from_parameter(name), name, |b, _| {
            b.iter(|| black_box(verify(black_box(token), *alg, key).is_ok()))
        });
    }
    group.finish();
}

fn key_lookup(c: &mut Criterion) {
    let n = 10_000;
    let mut text = String::from("_format_version: \"3.0\"\nconsumers:\n");
    for i in 0..n {
        text.push_str(&format!(
            "- username: user{i}\n  keyauth_credentials:\n  - key: api-key-{i:05}-0123456789abcdef\n"
        ));
    }
    let config = gateway::config::parse_str(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let index = CredentialIndex::build(&config);
    let hit = format!("api-key-{:05}-0123456789abcdef", n / 2);
    assert!(index.key_owner(&hit).is_some());
    let mut group = c.benchmark_group("key_owner_10k");
    group.bench_function("hit", |b| {
        b.iter(|| black_box(index.key_owner(black_box(&hit))))
    });
    group.bench_function("miss", |b| {
        b.iter(|| black_box(index.key_owner(black_box("api-key-unknown-0123456789abcdef"))))
    });
    group.finish();
}

criterion_group!(benches, jwt, key_lookup);
criterion_main!(benches);
