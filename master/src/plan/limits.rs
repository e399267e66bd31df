//! The bounds of a playbook's top-level numbers: the deadline (it arms every
//! instance's dead-man's switch), `log_limit`, `budget_usd` and `max_masters`. Part of
//! [`super::validate`].

use super::diagnostic::{Diagnostic, Locator};
use super::model::Playbook;

/// The longest deadline or timeout a playbook may ask for: a run (and every instance's
/// dead-man's switch) is bounded by it.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
pub const MAX_DURATION_TEXT: &str = "7d";
/// The largest `log_limit`.
const MAX_LOG_LIMIT: u64 = 1 << 40;
/// The largest `budget_usd`.
const MAX_BUDGET_USD: f64 = 1e7;

/// Appends the problems of the playbook's top-level numbers to `out`.
pub fn validate(p: &Playbook, at: &Locator<'_>, out: &mut Vec<Diagnostic>) {
    // The deadline arms every instance's dead-man's switch: a huge one disarms it.
    if let Some(d) = &p.deadline
        && d.value.0 > MAX_DURATION
    {
        out.push(at.at(
            d,
            format!("expected `deadline` of at most {MAX_DURATION_TEXT} (every instance powers itself off by then), found {}", d.value),
        ));
    }
    if let Some(l) = &p.log_limit
        && !(squall_worker::MIN_LOG_LIMIT..=MAX_LOG_LIMIT).contains(&l.value.0)
    {
        let found = format!("expected `log_limit` from 4KiB to 1TiB, found {}", l.value);
        out.push(at.at(l, found));
    }
    if let Some(b) = &p.budget_usd
        && !(b.value.is_finite() && b.value > 0.0 && b.value <= MAX_BUDGET_USD)
    {
        let found = format!(
            "expected `budget_usd` above 0 and at most 10000000 (USD), found {}",
            b.value
        );
        out.push(at.at(b, found));
    }
    if let Some(m) = &p.max_masters
        && !(1..=10).contains(&m.value)
    {
        out.push(at.at(
            m,
            format!("expected `max_masters` between 1 and 10, found {}", m.value),
        ));
    }
}
