//! Cost estimates: an on-demand price table (us-east-1, Linux; marked an estimate
//! wherever shown) and a record's instance-hours.
//!
//! Only arithmetic over records; presenting it is the callers' job.

use crate::record::RunRecord;

/// On-demand prices, USD per hour (us-east-1, Linux), for cost estimates only.
pub const PRICES: &[(&str, f64)] = &[
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("c6i.large", 0.085),
    ("c7i.large", 0.08925),
    ("c7i.xlarge", 0.1785),
    ("m7i.large", 0.1008),
    ("m7i.xlarge", 0.2016),
    ("r7i.large", 0.1323),
    ("g4dn.xlarge", 0.526),
    ("g5.xlarge", 1.006),
    ("g6.xlarge", 0.8048),
    ("p3.2xlarge", 3.06),
];

pub fn price(instance_type: &str) -> Option<f64> {
    PRICES
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map(|(_, p)| *p)
}

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
