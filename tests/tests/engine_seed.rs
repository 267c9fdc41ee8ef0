//! End-to-end tests of `engine seed`: it stores the requested number of realistic
//! events in a SQLite file, the API then serves them, and the same `--seed` gives
//! the same data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use e2e::engine::{engine_binary, sqlite_url, EngineProcess};
use serde_json::Value;

/// Runs `engine seed --events N --seed S` on `db`; returns its output.
fn run_seed(db: &Path, events: u64, seed: u64) -> std::process::Output {
    Command::new(engine_binary())
        .args(["seed", "--events", &events.to_string(), "--seed"])
        .arg(seed.to_string())
        .arg("--database-url")
        .arg(sqlite_url(db))
        .env_remove("ENGINE_CONFIG")
        .env_remove("DATABASE_URL")
        .current_dir(db.parent().unwrap())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `engine seed --events N --seed S` on `db`; returns its stdout line
/// (panicking with stderr if it fails).
fn seed(db: &Path, events: u64, seed: u64) -> String {
    let out = run_seed(db, events, seed);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "engine seed failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The summary line without its timing fields (`elapsed=`, `rate=`).
fn without_timing(line: &str) -> String {
    line.split_whitespace()
        .filter(|f| !f.starts_with("elapsed=") && !f.starts_with("rate="))
        .collect::<Vec<_>>()
        .join(" ")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("e2e-engine-seed-")
        .tempdir()
        .unwrap()
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn seeded_data_is_served_by_the_api() {
    let dir = tempdir();
    let db = dir.path().join("seed.sqlite");
    let line = seed(&db, 3000, 7);
    assert!(line.starts_with("seeded events=3000 "), "{line}");

    let engine = EngineProcess::start(&sqlite_url(&db));
    let http = reqwest::Client::new();

    // Page through every event.
    let mut total = 0;
    let mut refunds = 0;
    let mut currencies = BTreeSet::new();
    let mut products = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = engine.api_url("/events?limit=500");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get(&http, &url).await;
        for e in page["data"].as_array().unwrap() {
            total += 1;
            if e["kind"] == "refund" {
                refunds += 1;
            }
            currencies.insert(e["currency"].as_str().unwrap().to_owned());
            products.insert(e["product"].as_str().unwrap().to_owned());
            ids.insert(e["id"].as_str().unwrap().to_owned());
            assert!(e["amount"].as_i64().unwrap() > 0);
            assert!(e["customer_id"].as_str().unwrap().starts_with("cus_"));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(total, 3000);
    assert_eq!(ids.len(), 3000, "event ids are not unique");
    assert!(
        (30..=180).contains(&refunds),
        "refunds {refunds} not between 1% and 6%"
    );
    assert!(currencies.len() >= 3, "{currencies:?}");
    assert!(products.len() >= 5, "{products:?}");
    assert!(currencies.contains("JPY") && currencies.contains("USD"));

    // The summary agrees, and all events are within the last year.
    let summary = get(&http, &engine.api_url("/summary?interval=month")).await;
    let rows = summary["data"].as_array().unwrap();
    let counted: i64 = rows.iter().map(|r| r["count"].as_i64().unwrap()).sum();
    assert_eq!(counted, 3000);
    let months: BTreeSet<_> = rows.iter().map(|r| r["bucket"].as_str().unwrap()).collect();
    assert!((12..=13).contains(&months.len()), "{months:?}");
}

#[test]
fn the_same_seed_gives_the_same_data() {
    let dir = tempdir();
    let a = seed(&dir.path().join("a.sqlite"), 3000, 7);
    let b = seed(&dir.path().join("b.sqlite"), 3000, 7);
    assert_eq!(without_timing(&a), without_timing(&b));
    let c = seed(&dir.path().join("c.sqlite"), 3000, 8);
    assert!(c.starts_with("seeded events=3000 "), "{c}");

    // The same seed again on one database collides on the ids, and says what to do.
    let again = run_seed(&dir.path().join("c.sqlite"), 3000, 8);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(
        stderr.contains("already holds events of seed 8") && stderr.contains("another --seed"),
        "{stderr}"
    );
    assert!(seed(&dir.path().join("c.sqlite"), 3000, 9).starts_with("seeded events=3000 "));
}
