//! Route lookup cost per request, for 10, 100 and 1000 routes, and path
//! normalisation. Run with `cargo bench -p benches --bench router`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use gateway::router::{normalize::normalize_path, RequestInfo, Router};

fn config(routes: usize) -> gateway::config::Config {
    let mut text = String::from(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:1\n  routes:\n",
    );
    for i in 0..routes {
        match i % 4 {
            0 => text.push_str(&format!("  - paths: [/api/v{i}/items]\n")),
            1 => text.push_str(&format!("  - paths: ['~/users/{i}/\\d+$']\n")),
            2 => text.push_str(&format!("  - hosts: [h{i}.example.com]\n    paths: [/]\n")),
            _ => text.push_str(&format!("  - paths: [/svc{i}]\n    methods: [GET, POST]\n")),
        }
    }
    gateway::config::parse_str(&text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn lookup(c: &mut Criterion) {
    let headers = http::HeaderMap::new();
    let mut group = c.benchmark_group("router_find");
    for n in [10, 100, 1000] {
        let cfg = config(n);
        let router = Router::build(&cfg);
        // A prefix route near the end of the table: the worst case for a scan.
        let path = format!("/api/v{}/items/42", (n - 1) / 4 * 4);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let req = RequestInfo {
                    method: "GET",
                    host: Some("api.example.com"),
                    port: 8000,
                    path: &path,
                    headers: &headers,
                };
                black_box(router.find(&cfg, black_box(&req)))
            })
        });
    }
    group.finish();
}

fn normalise(c: &mut Criterion) {
    c.bench_function("normalize_path", |b| {
        b.iter(|| normalize_path(black_box("/api/v1/revenue/%65vents/../events//42?x")))
    });
}

criterion_group!(benches, lookup, normalise);
criterion_main!(benches);
