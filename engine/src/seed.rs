//! `engine seed`: fills the configured database with realistic, reproducible test
//! data (charges and some refunds of subscription products, several currencies,
//! spread over the last twelve months).
//!
//! The data comes from a small self-contained PRNG (splitmix64), so a given
//! `--seed` always yields the same customers, products, kinds, amounts, currencies
//! and event ids; only the timestamps move with the day the command runs (events
//! are placed in the twelve months before the current UTC day). Because the ids are
//! fixed by the seed, seeding the same database twice with the same seed fails on
//! the primary key (nothing of the failing batch is stored).
//!
//! Events are generated and stored in batches of [`BATCH_EVENTS`], each in one
//! transaction of multi-row `INSERT`s ([`Db::insert_events`]), so memory stays
//! small and a million events take minutes.

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::db::Db;
use crate::model::{truncate_to_micros, Event, Kind, EVENT_ID_PREFIX};

/// Events generated and stored per transaction.
pub const BATCH_EVENTS: usize = 5_000;

/// A progress line is printed to stderr every this many stored events.
pub const PROGRESS_EVERY: u64 = 100_000;

/// Share of refunds among events, in per mille (about 3%).
const REFUND_PER_MILLE: u64 = 30;

/// Length of the period events are spread over, in microseconds (365 days).
const SPAN_MICROS: u64 = 365 * 24 * 3600 * 1_000_000;

/// The products: name and monthly-equivalent list price in USD cents.
const PRODUCTS: [(&str, i64); 8] = [
    ("starter_monthly", 900),
    ("pro_monthly", 2_900),
    ("team_monthly", 9_900),
    ("business_monthly", 49_900),
    ("starter_annual", 9_000),
    ("pro_annual", 29_000),
    ("extra_seats", 1_500),
    ("extra_storage", 500),
];

/// Currencies with their weight (out of 100) and the price of one USD cent in the
/// currency's minor units, in hundredths (JPY has no minor unit: 1 cent = 1.5 yen).
const CURRENCIES: [(&str, u64, i64); 4] = [
    ("USD", 70, 100),
    ("EUR", 15, 92),
    ("GBP", 10, 79),
    ("JPY", 5, 150),
];

/// What `engine seed` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedOptions {
    /// Number of events to store.
    pub events: u64,
    /// PRNG seed: the same seed gives the same data.
    pub seed: u64,
}

/// What `engine seed` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// Events stored.
    pub events: u64,
    /// Distinct customers among them.
    pub customers: u64,
    /// Distinct products among them.
    pub products: u64,
    /// Distinct currencies among them.
    pub currencies: u64,
    /// Refunds among them.
    pub refunds: u64,
    /// Wall-clock time spent generating and storing.
    pub elapsed: Duration,
}

impl std::fmt::Display for SeedReport {
    /// The one-line summary `engine seed` prints on stdout.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        };
        write!(
            f,
            "seeded events={} customers={} products={} currencies={} refunds={} \
             elapsed={secs:.2}s rate={rate:.0}/s",
            self.events, self.customers, self.products, self.currencies, self.refunds
        )
    }
}

/// splitmix64: a tiny, fast, well-mixed PRNG (Steele, Lea and Flood), enough for
/// test data and fully determined by its seed.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`; the modulo bias is negligible for test data).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Number of customers for `events` events: about one per 20 events, at least 10.
fn customer_count(events: u64) -> u64 {
    (events / 20).max(10)
}

/// The generator of events, one at a time.
struct Generator {
    rng: SplitMix64,
    customers: u64,
    /// Start of the period (inclusive), whole UTC day.
    start: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl Generator {
    fn new(opts: SeedOptions, now: DateTime<Utc>) -> Self {
        let today = now.duration_trunc(TimeDelta::days(1)).unwrap_or(now);
        Self {
            rng: SplitMix64(opts.seed),
            customers: customer_count(opts.events),
            start: today - TimeDelta::days(365),
            created_at: truncate_to_micros(now),
        }
    }

    /// A valid event id (`evt_` + a UUID v4 in lowercase hex) from the PRNG.
    fn event_id(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        bytes[8..].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
        format!("{EVENT_ID_PREFIX}{}", uuid.simple())
    }

    /// The next event and the indexes of its customer, product and currency.
    fn next_event(&mut self) -> (Event, u64, usize, usize) {
        let id = self.event_id();
        // Skewed activity: squaring a uniform value favours low customer numbers.
        let u = self.rng.below(1 << 20);
        let customer = (((u * u) >> 20) * self.customers) >> 20;
        // A customer pays in one currency, chosen from the customer number.
        let currency = currency_of(customer);
        // Cheaper products sell more: pick the lower of two draws half the time.
        let a = self.rng.below(PRODUCTS.len() as u64);
        let b = self.rng.below(PRODUCTS.len() as u64);
        let product = if self.rng.below(2) == 0 { a.min(b) } else { a } as usize;
        let (product_name, usd_cents) = PRODUCTS[product];
        let (code, _, per_cent) = CURRENCIES[currency];
        let price = (usd_cents * per_cent / 100).max(1);
        let refund = self.rng.below(1000) < REFUND_PER_MILLE;
        let (kind, amount) = if refund {
            // Full refund, or a partial one (25% to 99%) of one charge.
            let amount = if self.rng.below(2) == 0 {
                price
            } else {
                (price * (25 + self.rng.below(75) as i64) / 100).max(1)
            };
            (Kind::Refund, amount)
        } else {
            // Quantities for seats and storage, one unit otherwise.
            let quantity = if product >= 6 {
                1 + self.rng.below(5) as i64
            } else {
                1
            };
            (Kind::Charge, price * quantity)
        };
        let offset = self.rng.below(SPAN_MICROS);
        let occurred_at =
            self.start + TimeDelta::microseconds(i64::try_from(offset).unwrap_or(i64::MAX));
        let event = Event {
            id,
            customer_id: format!("cus_{customer:06}"),
            product: product_name.to_owned(),
            kind,
            amount,
            currency: code.to_owned(),
            occurred_at,
            created_at: self.created_at,
            metadata: None,
        };
        (event, customer, product, currency)
    }
}

/// The currency index of customer number `customer`, weighted by [`CURRENCIES`]
/// (a fixed hash of the number, so it does not depend on the seed).
fn currency_of(customer: u64) -> usize {
    let mut h = SplitMix64(customer ^ 0xC0FF_EE00);
    let mut pick = h.below(100);
    for (i, (_, weight, _)) in CURRENCIES.iter().enumerate() {
        if pick < *weight {
            return i;
        }
        pick -= weight;
    }
    0
}

/// Generates `opts.events` events and stores them in `db`, in transactions of
/// [`BATCH_EVENTS`] events.
///
/// Runs once per `engine seed`. Calls `progress` with the number of events stored
/// so far every [`PROGRESS_EVERY`] events. Returns what was stored, or the first
/// database error (batches already committed stay stored).
pub async fn seed(
    db: &Db,
    opts: SeedOptions,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    let mut generator = Generator::new(opts, Utc::now());
    let mut seen_customers = vec![false; usize::try_from(generator.customers).unwrap_or(0)];
    let mut seen_products = [false; PRODUCTS.len()];
    let mut seen_currencies = [false; CURRENCIES.len()];
    let mut refunds = 0u64;
    let mut stored = 0u64;
    let mut batch = Vec::with_capacity(BATCH_EVENTS);
    while stored < opts.events {
        batch.clear();
        let size = (opts.events - stored).min(BATCH_EVENTS as u64);
        for _ in 0..size {
            let (event, customer, product, currency) = generator.next_event();
            if let Some(seen) = usize::try_from(customer)
                .ok()
                .and_then(|c| seen_customers.get_mut(c))
            {
                *seen = true;
            }
            seen_products[product] = true;
            seen_currencies[currency] = true;
            if event.kind == Kind::Refund {
                refunds += 1;
            }
            batch.push(event);
        }
        if let Err(e) = db.insert_events(&batch).await {
            if e.is_unique_violation() {
                anyhow::bail!(
                    "{e}: this database already holds events of seed {} (the same seed gives \
                     the same ids); seed it with another --seed",
                    opts.seed
                );
            }
            return Err(e.into());
        }
        let before = stored;
        stored += size;
        if stored / PROGRESS_EVERY > before / PROGRESS_EVERY {
            progress(stored);
        }
    }
    let count = |seen: &[bool]| seen.iter().filter(|s| **s).count() as u64;
    Ok(SeedReport {
        events: stored,
        customers: count(&seen_customers),
        products: count(&seen_products),
        currencies: count(&seen_currencies),
        refunds,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::model::is_event_id;

    fn events(seed: u64, n: u64) -> Vec<Event> {
        let now = "2026-06-15T10:00:00Z".parse().unwrap();
        let mut g = Generator::new(SeedOptions { events: n, seed }, now);
        (0..n).map(|_| g.next_event().0).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        assert_eq!(events(7, 500), events(7, 500));
        assert_ne!(events(7, 50), events(8, 50));
    }

    #[test]
    fn events_are_valid_and_realistic() {
        let list = events(1, 20_000);
        let now: DateTime<Utc> = "2026-06-15T10:00:00Z".parse().unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut refunds = 0;
        for e in &list {
            assert!(is_event_id(&e.id), "{}", e.id);
            assert!(ids.insert(e.id.clone()));
            assert!(e.amount > 0 && e.amount <= 5 * 49_900 * 150 / 100);
            assert!(e.occurred_at < now && e.occurred_at >= now - TimeDelta::days(366));
            assert!(e.customer_id.starts_with("cus_") && e.customer_id.len() == 10);
            if e.kind == Kind::Refund {
                refunds += 1;
            }
        }
        assert!((300..=900).contains(&refunds), "{refunds}");
        let usd = list.iter().filter(|e| e.currency == "USD").count();
        assert!(usd > list.len() / 2, "{usd}");
    }
}
