//! The Postgres summary's daily rollup (`revenue_daily`): summaries read whole UTC
//! days from it and the partial days at a range's edges from the events, so every
//! summary must equal the totals computed here from the posted events, for ranges
//! starting and ending at midnight or mid-day, by day and by month, per product,
//! with and without a currency filter, after concurrent writes to one rollup row
//! (plain and keyed POSTs, replays) and after events deleted by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use e2e::engine::{post_event, Backend, EngineCtx as Ctx};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A posted event: when (October or November 2026, UTC), what and how much.
#[derive(Debug, Clone)]
struct Posted {
    /// (month, day, second of the day, microsecond): orders like the timestamp.
    at: (u32, u32, u32, u32),
    product: &'static str,
    kind: &'static str,
    amount: i64,
    currency: &'static str,
}

impl Posted {
    fn occurred_at(&self) -> String {
        ts(self.at)
    }

    fn body(&self, customer: &str) -> Value {
        json!({"customer_id": customer, "product": self.product, "kind": self.kind,
               "amount": self.amount, "currency": self.currency,
               "occurred_at": self.occurred_at()})
    }
}

/// The RFC 3339 text of `(month, day, second, microsecond)` in 2026, UTC.
fn ts((month, day, sec, us): (u32, u32, u32, u32)) -> String {
    format!(
        "2026-{month:02}-{day:02}T{:02}:{:02}:{:02}.{us:06}Z",
        sec / 3600,
        sec / 60 % 60,
        sec % 60
    )
}

/// splitmix64: reproducible pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The summary rows the engine must answer for `events` in `[from, to)` (either
/// end open), bucketed by day or month, per product or not, in one currency or all.
fn expected(
    events: &[Posted],
    from: Option<(u32, u32, u32, u32)>,
    to: Option<(u32, u32, u32, u32)>,
    month: bool,
    by_product: bool,
    currency: Option<&str>,
) -> Value {
    let mut groups: BTreeMap<(String, &str, &str), (i64, i64, i64)> = BTreeMap::new();
    for e in events {
        if from.is_some_and(|f| e.at < f) || to.is_some_and(|t| e.at >= t) {
            continue;
        }
        if currency.is_some_and(|c| c != e.currency) {
            continue;
        }
        let at = e.occurred_at();
        let bucket = at[..if month { 7 } else { 10 }].to_owned();
        let product = if by_product { e.product } else { "" };
        let g = groups.entry((bucket, e.currency, product)).or_default();
        match e.kind {
            "charge" => g.0 += e.amount,
            _ => g.1 += e.amount,
        }
        g.2 += 1;
    }
    Value::Array(
        groups
            .into_iter()
            .map(|((bucket, currency, product), (gross, refunds, count))| {
                let mut row = json!({"bucket": bucket, "currency": currency});
                if by_product {
                    row["product"] = json!(product);
                }
                row["gross"] = json!(gross);
                row["refunds"] = json!(refunds);
                row["net"] = json!(gross - refunds);
                row["count"] = json!(count);
                row
            })
            .collect(),
    )
}

/// Checks every summary shape against [`expected`] for `events`.
async fn check_all(ctx: &Ctx, events: &[Posted]) {
    let midnight = |month, day| Some((month, day, 0, 0));
    let noon = |month, day| Some((month, day, 12 * 3600, 0));
    let ranges = [
        (None, None),
        (midnight(11, 1), midnight(12, 1)),
        (midnight(10, 15), midnight(11, 20)),
        (noon(10, 3), noon(11, 7)),
        (noon(11, 1), midnight(11, 2)),
        (midnight(11, 1), noon(11, 1)),
        (noon(11, 10), Some((11, 10, 13 * 3600, 1))),
        (noon(11, 10), noon(11, 11)),
        (Some((10, 31, 86_399, 999_999)), Some((11, 1, 0, 1))),
        (None, noon(11, 5)),
        (noon(10, 20), None),
        (midnight(11, 5), None),
        (None, midnight(11, 5)),
    ];
    let mut checked = 0;
    for (from, to) in ranges {
        for month in [false, true] {
            for by_product in [false, true] {
                for currency in [None, Some("EUR")] {
                    let mut query =
                        vec![format!("interval={}", if month { "month" } else { "day" })];
                    if let Some(f) = from {
                        query.push(format!("from={}", ts(f)));
                    }
                    if let Some(t) = to {
                        query.push(format!("to={}", ts(t)));
                    }
                    if by_product {
                        query.push("group_by=product".to_owned());
                    }
                    if let Some(c) = currency {
                        query.push(format!("currency={c}"));
                    }
                    let path = format!("/summary?{}", query.join("&"));
                    let (status, body) = ctx.get(&path).await;
                    assert_eq!(status, StatusCode::OK, "{path}: {body}");
                    assert_eq!(
                        body["data"],
                        expected(events, from, to, month, by_product, currency),
                        "{path}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 13 * 8);
}

#[tokio::test]
async fn summaries_from_the_rollup_equal_the_events_totals() {
    let ctx = Ctx::start(Backend::Postgres, "rollup");
    let mut rng = Rng(7);
    let products = ["alpha", "beta", "gamma"];
    let currencies = ["EUR", "USD", "JPY"];
    let mut events = Vec::new();
    for i in 0..160u32 {
        let month = if rng.below(3) == 0 { 10 } else { 11 };
        let day = 1 + rng.below(if month == 10 { 31 } else { 30 }) as u32;
        // Some events exactly at midnight, just before midnight, and at noon.
        let (sec, us) = match i % 7 {
            0 => (0, 0),
            1 => (86_399, 999_999),
            2 => (12 * 3600, 0),
            _ => (rng.below(86_400) as u32, rng.below(1_000_000) as u32),
        };
        events.push(Posted {
            at: (month, day, sec, us),
            product: products[rng.below(3) as usize],
            kind: if rng.below(5) == 0 {
                "refund"
            } else {
                "charge"
            },
            amount: 1 + rng.below(100_000) as i64,
            currency: currencies[rng.below(3) as usize],
        });
    }
    for e in &events {
        let (status, body) = ctx.post(&e.body("cus_1")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    check_all(&ctx, &events).await;

    // Concurrent writers of one day, product and currency (one rollup row): plain
    // POSTs and keyed POSTs, each key sent twice (the replay adds nothing).
    let hot = |i: u32| Posted {
        at: (11, 15, 10 * 3600 + i, i),
        product: "alpha",
        kind: if i % 4 == 0 { "refund" } else { "charge" },
        amount: 1_000 + i64::from(i),
        currency: "EUR",
    };
    let url = ctx.url("/events");
    let mut tasks = Vec::new();
    for i in 0..48u32 {
        let (http, url) = (ctx.http.clone(), url.clone());
        let body = hot(i).body("cus_hot").to_string();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let reply = post_event(&http, &url, &body, &[]).await;
                assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
            } else {
                let key = format!("rollup-hot-{i}");
                for _ in 0..2 {
                    let reply = post_event(&http, &url, &body, &[key.as_bytes()]).await;
                    assert!(reply.status.is_success(), "{:?}", reply.body);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    events.extend((0..48).map(hot));
    check_all(&ctx, &events).await;

    // The rollup has no empty groups and counts every event once.
    assert_eq!(
        ctx.sql("SELECT count(*) FROM revenue_daily WHERE count <= 0"),
        "0"
    );
    assert_eq!(
        ctx.sql("SELECT sum(count) FROM revenue_daily"),
        events.len().to_string()
    );

    // Events deleted (and inserted) by hand keep it exact; an emptied group is gone.
    let lone = Posted {
        at: (10, 2, 3600, 0),
        product: "delta",
        kind: "charge",
        amount: 5,
        currency: "USD",
    };
    let (status, body) = ctx.post(&lone.body("cus_lone")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    ctx.sql(
        "DELETE FROM revenue_events WHERE customer_id = 'cus_lone' \
         OR id IN (SELECT id FROM revenue_events WHERE customer_id = 'cus_hot' \
                   AND kind = 'refund')",
    );
    events.truncate(events.len() - 48);
    events.extend((0..48).map(hot).filter(|e| e.kind == "charge"));
    assert_eq!(
        ctx.sql("SELECT count(*) FROM revenue_daily WHERE product = 'delta'"),
        "0"
    );
    check_all(&ctx, &events).await;
}
