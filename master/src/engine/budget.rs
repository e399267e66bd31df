//! The run's estimated spend against its `budget_usd`: each worker from its launch to
//! now (or to its early release, which terminates it; a lost worker is counted on, as
//! its instance may still run until teardown), billed for 60 s at least, at the on-demand
//! price of its instance type ([`crate::plan::prices`]), else of its group's dearest
//! type (the default type's for a group that names none); spot at the on-demand price.
//! Types the table does not know are not counted. The master's own instance is not the
//! engine's and is not counted either. On an inventory the hosts are priced as if they
//! were EC2's (the engine does not know who pays for them). Once the spend reaches the budget the run stops
//! as at its deadline: nothing more is launched, running tasks are cancelled (with the
//! stop grace), logs are collected, everything is torn down, and the run is recorded
//! `budget_exceeded`. Part of [`super::Engine`].

use super::Engine;
use super::types::Action;
use crate::plan::prices;
use crate::record::RunStatus;

/// The least an instance is billed for.
pub const MIN_BILLED_MS: u64 = 60_000;

impl Engine {
    /// The run's estimated spend so far, in USD (see the module docs).
    pub fn spend_usd(&self) -> f64 {
        let now = self.now_ms;
        self.hosts
            .records()
            .iter()
            .map(|h| {
                let until = h.released_at_ms.map_or(now, |r| r.min(now));
                let ms = until.saturating_sub(h.launched_at_ms).max(MIN_BILLED_MS);
                let price = h
                    .instance_type
                    .as_deref()
                    .and_then(prices::price)
                    .or_else(|| {
                        let g = self.plan.fleet.get(&h.group)?;
                        prices::dearest(g.instance_type.as_ref().map_or(&[][..], |t| &t.0))
                    });
                price.map_or(0.0, |p| p * ms as f64 / 3_600_000.0)
            })
            .sum()
    }

    /// Stops the run once its estimated spend has reached its budget; whether it did.
    pub(super) fn check_budget(&mut self, out: &mut Vec<Action>) -> bool {
        let Some(budget) = self.plan.budget_usd else {
            return false;
        };
        if self.state.decided() {
            return false;
        }
        let spent = self.spend_usd();
        if spent < budget {
            return false;
        }
        let reason = format!(
            "the run's estimated spend reached its budget of ${budget:.2} (${spent:.4}: each \
             worker's instance-seconds at the on-demand price of its type; an estimate)"
        );
        self.fail(RunStatus::BudgetExceeded, reason, out);
        true
    }
}
