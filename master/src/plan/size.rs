//! The one byte-size grammar of squall (a playbook's `log_limit`): a whole number and a
//! unit, `512KiB`, `100MiB`, `1GiB`, `2TiB` (powers of 1024) or `500KB`, `10MB`, `1GB`
//! (powers of 1000), or `B`; units are case-insensitive, a space between is allowed.
//!
//! Hand-written on purpose, like [`super::duration`]: the grammar is five lines, must
//! refuse what a crate like `bytesize` accepts (`1.5 GB`, bare numbers whose unit a
//! reader must guess), and speaks in the playbook's words when it refuses.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A size in bytes, written like `100MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

/// A string that is not a size of this grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a size like 512KiB, 100MiB or 1GiB, found `{0}`")]
pub struct BadSize(pub String);

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

impl Size {
    /// Parses `100MiB`, `1 GiB`, `500kb`; the unit is required.
    pub fn parse(s: &str) -> Result<Size, BadSize> {
        let bad = || BadSize(s.to_owned());
        let t = s.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = t.split_at(digits);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let unit = unit.trim_start().to_ascii_lowercase();
        let (_, scale) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
        n.checked_mul(*scale).map(Size).ok_or_else(bad)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, scale) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if b >= scale && b.is_multiple_of(scale) {
                return write!(f, "{}{unit}", b / scale);
            }
        }
        write!(f, "{b}B")
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Size::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        let good = [
            ("1B", 1),
            ("512KiB", 512 << 10),
            ("100MiB", 100 << 20),
            ("1 GiB", 1 << 30),
            ("1gib", 1 << 30),
            ("500KB", 500_000),
            ("10MB", 10_000_000),
            ("2TiB", 2 << 40),
        ];
        for (text, bytes) in good {
            assert_eq!(Size::parse(text), Ok(Size(bytes)), "{text}");
        }
        for bad in [
            "",
            "1",
            "1.5GiB",
            "-1MiB",
            "GiB",
            "1 G",
            "1 GiB extra",
            "99999999999TiB",
        ] {
            assert!(Size::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Size(1 << 30).to_string(), "1GiB");
        assert_eq!(Size(1536 << 10).to_string(), "1536KiB");
        assert_eq!(Size(1000).to_string(), "1000B");
    }
}
