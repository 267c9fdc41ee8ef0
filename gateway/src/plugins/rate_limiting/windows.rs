//! Rate-limit periods and their windows (Kong §5.3): fixed windows aligned to the
//! UTC calendar, the window lengths Kong uses for `RateLimit-Reset`, and the weight
//! of the previous window for sliding windows.

use chrono::{Datelike, TimeZone, Utc};

/// A rate-limit period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// One second.
    Second,
    /// A minute, starting at second 0.
    Minute,
    /// An hour.
    Hour,
    /// A UTC day.
    Day,
    /// A calendar month (UTC).
    Month,
    /// A calendar year (UTC).
    Year,
}

impl Period {
    /// Every period, shortest first.
    pub const ALL: [Period; 6] = [
        Period::Second,
        Period::Minute,
        Period::Hour,
        Period::Day,
        Period::Month,
        Period::Year,
    ];

    /// The config field and counter-key name (`minute`).
    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// The header suffix (`Minute` in `X-RateLimit-Limit-Minute`).
    pub fn header_name(self) -> &'static str {
        match self {
            Period::Second => "Second",
            Period::Minute => "Minute",
            Period::Hour => "Hour",
            Period::Day => "Day",
            Period::Month => "Month",
            Period::Year => "Year",
        }
    }

    /// Kong's nominal window length in seconds, used for `RateLimit-Reset` and as
    /// the counter's time to live (a month is 30 days, a year 365).
    pub fn nominal_seconds(self) -> u64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86_400,
            Period::Month => 2_592_000,
            Period::Year => 31_536_000,
        }
    }

    /// Start of the window holding `now_ms`, in epoch milliseconds.
    pub fn window_start_ms(self, now_ms: i64) -> i64 {
        let secs = now_ms.div_euclid(1000);
        let fixed = |len: i64| (secs - secs.rem_euclid(len)) * 1000;
        match self {
            Period::Second => fixed(1),
            Period::Minute => fixed(60),
            Period::Hour => fixed(3600),
            Period::Day => fixed(86_400),
            Period::Month | Period::Year => {
                let Some(now) = Utc.timestamp_opt(secs, 0).single() else {
                    return fixed(86_400);
                };
                let month = if self == Period::Month {
                    now.month()
                } else {
                    1
                };
                Utc.with_ymd_and_hms(now.year(), month, 1, 0, 0, 0)
                    .single()
                    .map_or_else(|| fixed(86_400), |t| t.timestamp() * 1000)
            }
        }
    }

    /// Start of the window after the one starting at `start_ms`.
    pub fn next_start_ms(self, start_ms: i64) -> i64 {
        match self {
            Period::Month | Period::Year => {
                let Some(start) = Utc.timestamp_millis_opt(start_ms).single() else {
                    return start_ms + self.nominal_seconds() as i64 * 1000;
                };
                let (y, m) = if self == Period::Year || start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
                    .single()
                    .map_or(start_ms + self.nominal_seconds() as i64 * 1000, |t| {
                        t.timestamp() * 1000
                    })
            }
            _ => start_ms + self.nominal_seconds() as i64 * 1000,
        }
    }

    /// Start of the window before the one starting at `start_ms`.
    pub fn previous_start_ms(self, start_ms: i64) -> i64 {
        self.window_start_ms(start_ms - 1)
    }
}

/// One period's window at a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// The period.
    pub period: Period,
    /// Window start, epoch milliseconds.
    pub start_ms: i64,
    /// Previous window start, epoch milliseconds.
    pub previous_start_ms: i64,
    /// Window length in milliseconds (calendar length for months and years).
    pub length_ms: i64,
    /// Milliseconds elapsed in the window.
    pub elapsed_ms: i64,
}

impl Window {
    /// The window of `period` holding `now_ms`.
    pub fn at(period: Period, now_ms: i64) -> Window {
        let start_ms = period.window_start_ms(now_ms);
        let length_ms = (period.next_start_ms(start_ms) - start_ms).max(1);
        Window {
            period,
            start_ms,
            previous_start_ms: period.previous_start_ms(start_ms),
            length_ms,
            elapsed_ms: now_ms - start_ms,
        }
    }

    /// Kong's `RateLimit-Reset` for this window: the nominal length minus the whole
    /// seconds elapsed, at least 1.
    pub fn kong_reset_seconds(&self) -> u64 {
        let elapsed = (self.elapsed_ms / 1000).max(0) as u64;
        self.period.nominal_seconds().saturating_sub(elapsed).max(1)
    }

    /// Seconds until the window ends (calendar length), at least 1.
    pub fn seconds_to_end(&self) -> u64 {
        let ms = (self.length_ms - self.elapsed_ms).max(0) as u64;
        ms.div_ceil(1000).max(1)
    }

    /// The share of the previous window a sliding estimate still counts, in 0..=1.
    pub fn previous_weight(&self) -> f64 {
        (1.0 - self.elapsed_ms as f64 / self.length_ms as f64).clamp(0.0, 1.0)
    }

    /// How long a client blocked by a sliding window waits, in seconds (at least 1):
    /// until `current + ceil(previous * weight)` drops below `limit`.
    pub fn sliding_retry_seconds(&self, limit: u64, current: u64, previous: u64) -> u64 {
        let len = self.length_ms as f64;
        let wait_ms = if current >= limit {
            // The current window must end; then its count decays as the previous one:
            // ceil(current * (1 - t/len)) <= limit - 1.
            let rest = (self.length_ms - self.elapsed_ms) as f64;
            let decay = if current == 0 {
                0.0
            } else {
                len * (1.0 - (limit.saturating_sub(1)) as f64 / current as f64)
            };
            rest + decay.max(0.0)
        } else if previous == 0 {
            0.0
        } else {
            // ceil(previous * (1 - (e + t)/len)) <= limit - current - 1
            let room = (limit - current - 1) as f64;
            len * (1.0 - room / previous as f64) - self.elapsed_ms as f64
        };
        ((wait_ms.max(0.0) / 1000.0).ceil() as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap()
            .timestamp()
            * 1000
    }

    #[test]
    fn windows_align_to_the_utc_calendar() {
        let now = ms(2024, 2, 29, 13, 45, 17) + 250;
        assert_eq!(
            Period::Second.window_start_ms(now),
            ms(2024, 2, 29, 13, 45, 17)
        );
        assert_eq!(
            Period::Minute.window_start_ms(now),
            ms(2024, 2, 29, 13, 45, 0)
        );
        assert_eq!(Period::Hour.window_start_ms(now), ms(2024, 2, 29, 13, 0, 0));
        assert_eq!(Period::Day.window_start_ms(now), ms(2024, 2, 29, 0, 0, 0));
        assert_eq!(Period::Month.window_start_ms(now), ms(2024, 2, 1, 0, 0, 0));
        assert_eq!(Period::Year.window_start_ms(now), ms(2024, 1, 1, 0, 0, 0));
        let w = Window::at(Period::Month, now);
        assert_eq!(w.length_ms, 29 * 86_400_000);
        assert_eq!(w.previous_start_ms, ms(2024, 1, 1, 0, 0, 0));
        let dec = Window::at(Period::Month, ms(2023, 12, 31, 23, 59, 59));
        assert_eq!(dec.start_ms + dec.length_ms, ms(2024, 1, 1, 0, 0, 0));
    }

    #[test]
    fn kong_reset_uses_nominal_lengths() {
        let w = Window::at(Period::Minute, ms(2024, 1, 1, 0, 0, 42) + 900);
        assert_eq!(w.kong_reset_seconds(), 18);
        assert_eq!(w.seconds_to_end(), 18);
        let s = Window::at(Period::Second, ms(2024, 1, 1, 0, 0, 42) + 900);
        assert_eq!(s.kong_reset_seconds(), 1);
        let m = Window::at(Period::Month, ms(2024, 2, 1, 0, 0, 10));
        assert_eq!(m.kong_reset_seconds(), 2_592_000 - 10);
    }

    #[test]
    fn sliding_weight_and_retry() {
        let w = Window::at(Period::Minute, ms(2024, 1, 1, 0, 0, 15));
        assert!((w.previous_weight() - 0.75).abs() < 1e-9);
        // 100 in the previous window, 0 now, limit 50: ceil(100*(1-(15+t)/60)) <= 49
        // → t >= 15.6.
        assert_eq!(w.sliding_retry_seconds(50, 0, 100), 16);
        // The current window is full: wait for it to end, then for 51% of the next.
        assert_eq!(w.sliding_retry_seconds(50, 100, 0), 45 + 31);
    }
}
