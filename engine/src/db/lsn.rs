//! Positions in Postgres' write-ahead log (LSNs): the consistency tokens of
//! read-your-writes.
//!
//! Postgres prints an LSN as two hexadecimal halves, `16/B374D848`. The engine
//! hands that text to clients as the `Consistency-Token` of a write and parses it
//! back from their reads; in Redis it stores the plain 64-bit number (see
//! [`crate::cache`]), which orders the same way.

use std::fmt;

/// A write-ahead-log position of the Postgres primary.
///
/// Ordered like Postgres' `pg_lsn`: a replica whose replayed position is at or
/// after a write's position shows that write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// The LSN with this 64-bit value.
    pub const fn from_u64(value: u64) -> Self {
        Self(value)
    }

    /// The 64-bit value (what the read cache stores as a version).
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses Postgres' text form `HI/LO` (each 1 to 8 hexadecimal digits, any
    /// case). Returns `None` for anything else, including surrounding spaces.
    pub fn parse(text: &str) -> Option<Self> {
        let (hi, lo) = text.split_once('/')?;
        let half = |s: &str| {
            if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(s, 16).ok()
        };
        Some(Self((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

impl fmt::Display for Lsn {
    /// Postgres' text form, upper-case hexadecimal: `16/B374D848`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_postgres_text() {
        let lsn = Lsn::parse("16/B374D848");
        assert_eq!(lsn, Some(Lsn::from_u64(0x16_B374_D848)));
        assert_eq!(lsn.map(|l| l.to_string()).as_deref(), Some("16/B374D848"));
        assert_eq!(Lsn::parse("0/0"), Some(Lsn::from_u64(0)));
        assert_eq!(
            Lsn::parse("ffffffff/FFFFFFFF"),
            Some(Lsn::from_u64(u64::MAX))
        );
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1/2/3",
            " 0/1",
            "0/1 ",
            "g/1",
            "123456789/0",
            "+1/1",
        ] {
            assert_eq!(Lsn::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn orders_like_pg_lsn() {
        let a = Lsn::parse("0/FFFFFFFF");
        let b = Lsn::parse("1/0");
        assert!(a < b);
    }
}
