//! Run ids: `NAME-YYYYMMDDtHHMMSSz-XXXX` (lowercase), safe as a store key, a tag value
//! and part of an EC2 client token; and UTC time stamps for people (jiff).
//!
//! Time and randomness are passed in. Deriving ids from triggers (S3 events,
//! schedules) for exactly-once runs belongs to the launcher ([`crate::cloud::launch`]).

/// A run id for a manual run of playbook `name` at `unix_secs`, with `nonce` for
/// uniqueness.
pub fn manual(name: &str, unix_secs: u64, nonce: u16) -> String {
    let name: String = name.chars().take(24).collect();
    format!("{name}-{}-{nonce:04x}", utc_stamp(unix_secs).to_lowercase())
}

/// `YYYYMMDDTHHMMSSZ` for a unix time (UTC).
pub fn utc_stamp(unix_secs: u64) -> String {
    utc_format(unix_secs, "%Y%m%dT%H%M%SZ")
}

/// A unix time (seconds, UTC) formatted with strftime's `format`; `?` for a time jiff
/// cannot represent (past the year 9999).
pub fn utc_format(unix_secs: u64, format: &str) -> String {
    i64::try_from(unix_secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| "?".to_owned(), |t| t.strftime(format).to_string())
}

/// Whether `id` can be a run id: it becomes a store prefix, a tag value, part of an EC2
/// client token and a folder name on hosts, so `[a-z0-9]` then `[a-z0-9._-]`, at most 48
/// characters (room for a `/group` suffix within EC2's 64).
pub fn valid(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 48
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
        && !id.contains("..")
}

/// A nonce from the OS's randomness (falls back to the clock).
pub fn nonce() -> u16 {
    use std::io::Read;
    let mut b = [0u8; 2];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u16::from_le_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps() {
        assert_eq!(super::utc_stamp(0), "19700101T000000Z");
        assert_eq!(super::utc_stamp(1_795_392_000), "20261123T000000Z");
        assert_eq!(super::utc_stamp(951_782_400 + 3661), "20000229T010101Z");
        assert_eq!(
            super::manual("hello", 0, 0xab),
            "hello-19700101t000000z-00ab"
        );
    }

    #[test]
    fn run_ids_are_path_and_tag_safe() {
        let longest = super::manual(&"n".repeat(40), 1_795_392_000, 0xffff);
        assert!(
            super::valid(&longest),
            "manual ids always validate: {longest}"
        );
        for ok in ["hello-1", "a", "r.1_x-2", "hello-20261122t222148z-d48d"] {
            assert!(super::valid(ok), "{ok}");
        }
        for bad in [
            "",
            "../..",
            "a/b",
            "-x",
            ".x",
            "a..b",
            "A",
            "a b",
            &"x".repeat(49),
        ] {
            assert!(!super::valid(bad), "{bad}");
        }
    }
}
