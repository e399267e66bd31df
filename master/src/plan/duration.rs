//! The one duration grammar of squall, shared by playbooks (`deadline`, `timeout`) and
//! the command line (`--connect-deadline`, `--since`, ...): `90s`, `30m`, `3h`,
//! `1h30m`, `2d`, `500ms`.
//!
//! Units are required, parts are written without spaces, the value is a whole number
//! and not zero. This grammar is hand-written on purpose: jiff's `SignedDuration`
//! parser (the well-kept crate for durations) also accepts `1.5h`, `1h 30m`, `-1s` and
//! ISO 8601 forms, and rejects days, so it would change what playbooks mean. The table
//! test below pins every accepted and rejected form. Where a duration is used is not
//! this module's business.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written like `90s`, `30m`, `3h`, `1h30m` or `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

/// A string that is not a duration of this grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a duration like 90s, 30m, 3h or 1h30m, found `{0}`")]
pub struct BadDuration(pub String);

impl Dur {
    /// Parses `1h30m`, `45s`, `250ms`, `2d`; units are required, the value is not zero.
    pub fn parse(s: &str) -> Result<Dur, BadDuration> {
        parse_parts(s).ok_or_else(|| BadDuration(s.to_owned()))
    }
}

fn parse_parts(s: &str) -> Option<Dur> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let per: Duration = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return None,
        };
        total = total.checked_add(per.checked_mul(u32::try_from(n).ok()?)?)?;
        rest = &rest[unit_len..];
    }
    (!total.is_zero()).then_some(Dur(total))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let (h, m, s, rem) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let mut out = String::new();
        for (v, u) in [(h, "h"), (m, "m"), (s, "s"), (rem, "ms")] {
            if v > 0 {
                out.push_str(&format!("{v}{u}"));
            }
        }
        f.write_str(if out.is_empty() { "0s" } else { &out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form the grammar accepts or rejects, as the playbook and the command line
    /// both see it.
    #[test]
    fn the_grammar_is_pinned() {
        let accepted: &[(&str, u64)] = &[
            ("90s", 90_000),
            ("30m", 1_800_000),
            ("3h", 10_800_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            ("250ms", 250),
            ("1d2h3m4s5ms", 93_784_005),
            (" 5s ", 5_000),
            ("0s1ms", 1),
            ("1m0s", 60_000),
            ("4294967295ms", 4_294_967_295),
        ];
        for (s, ms) in accepted {
            assert_eq!(
                Dur::parse(s).map(|d| d.0.as_millis()),
                Ok(u128::from(*ms)),
                "{s}"
            );
        }
        let rejected = [
            "",
            " ",
            "5",
            "h",
            "5q",
            "0s",
            "-1s",
            "+1s",
            "1.5h",
            "1h 30m",
            "99999999999h",
            "4294967296s",
            "1H",
            "1sec",
            "PT1H",
            "s5",
            "3 hours",
            "10",
        ];
        for bad in rejected {
            assert_eq!(Dur::parse(bad), Err(BadDuration(bad.to_owned())), "{bad}");
        }
        assert_eq!(
            BadDuration("10".into()).to_string(),
            "expected a duration like 90s, 30m, 3h or 1h30m, found `10`"
        );
    }

    #[test]
    fn durations_display_as_they_are_written() {
        for (ms, text) in [
            (5_400_000, "1h30m"),
            (90_000, "1m30s"),
            (250, "250ms"),
            (0, "0s"),
            (172_800_000, "48h"),
        ] {
            assert_eq!(Dur(Duration::from_millis(ms)).to_string(), text);
        }
    }
}
