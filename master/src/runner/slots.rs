//! How many transfers (log archives, copies, fetches) move at once: ONE limit for all of
//! them, sized from the master's memory, so that a run of hundreds of hosts snapshotting
//! and collecting together stays within it. Each transfer holds up to
//! [`TRANSFER_BYTES`] (the S3 store's two 8 MiB parts in flight and the one being read,
//! its pipes' buffers aside); the transfers together may use a quarter of the memory
//! (the rest is the master's own, its ssh connections' and the system's).
//! `SQUALL_TRANSFERS` sets the number instead.
//!
//! Snapshots hold at most half the slots at once (one without a turn is skipped, and the
//! hosts longest without one come first next time), so final collections, copies and
//! fetches always find the other half.

/// What one transfer may hold in memory at once.
pub const TRANSFER_BYTES: u64 = 24 << 20;

/// Fewest and most transfers at once.
pub const MIN_TRANSFERS: usize = 2;
pub const MAX_TRANSFERS: usize = 64;

/// The number of transfer slots for a machine of `memory` bytes (or `configured`).
pub fn transfer_slots(memory: Option<u64>, configured: Option<usize>) -> usize {
    if let Some(n) = configured.filter(|n| *n > 0) {
        return n.min(1024);
    }
    let Some(memory) = memory else {
        return 8;
    };
    ((memory / 4 / TRANSFER_BYTES) as usize).clamp(MIN_TRANSFERS, MAX_TRANSFERS)
}

/// This machine's memory (`MemTotal` of /proc/meminfo), when it says.
pub fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The slots for this master: `SQUALL_TRANSFERS`, else sized from its memory.
pub fn for_this_machine() -> usize {
    let configured = std::env::var("SQUALL_TRANSFERS")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    transfer_slots(machine_memory(), configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_memory_within_bounds() {
        const GIB: u64 = 1 << 30;
        // A t3.small (2 GiB): a quarter, in transfers of 24 MiB each.
        assert_eq!(transfer_slots(Some(2 * GIB), None), 21);
        assert_eq!(transfer_slots(Some(GIB / 2), None), 5);
        assert_eq!(transfer_slots(Some(GIB / 16), None), MIN_TRANSFERS);
        assert_eq!(transfer_slots(Some(64 * GIB), None), MAX_TRANSFERS);
        assert_eq!(transfer_slots(None, None), 8);
        assert_eq!(transfer_slots(Some(2 * GIB), Some(3)), 3);
        assert_eq!(transfer_slots(Some(2 * GIB), Some(0)), 21);
        assert!(machine_memory().is_some_and(|m| m > 0), "/proc/meminfo");
    }
}
