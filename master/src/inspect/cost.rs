//! Cost estimates: a record's instance-hours and cost, at the on-demand price table of
//! [`crate::plan::prices`] (marked an estimate wherever shown).
//!
//! Only arithmetic over records; presenting it is the callers' job.

use crate::record::RunRecord;

pub use crate::plan::prices::{PRICES, price};

/// Instance-hours and estimated cost of a record's hosts.
pub fn usage(rec: &RunRecord, now_ms: u64) -> (f64, Option<f64>) {
    let end = rec.ended_at_ms.unwrap_or(now_ms);
    let mut hours = 0.0;
    let mut cost = Some(0.0);
    for h in &rec.hosts {
        let until = h.lost.as_ref().map_or(end, |l| l.at_ms.min(end));
        // A worker released early stopped costing then.
        let until = h.released_at_ms.map_or(until, |r| r.min(until));
        let hrs = until.saturating_sub(h.launched_at_ms) as f64 / 3_600_000.0;
        hours += hrs;
        cost = match (cost, h.instance_type.as_deref().and_then(price)) {
            (Some(c), Some(p)) => Some(c + hrs * p),
            _ => None,
        };
    }
    (hours, cost)
}
