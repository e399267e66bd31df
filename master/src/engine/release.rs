//! Releasing idle workers early: a worker whose group no later stage uses, and that has
//! nothing left to take in the running stage, has its logs collected and its instance
//! terminated right away instead of at the end of the run; so has a worker drained for
//! a spot notice or recommendation once its replacement is launched and it is idle. The record sums the
//! instance-hours that saved. Part of [`super::Engine`].

use super::Engine;
use super::stage::Scheduler;
use super::state::State;
use super::types::{Action, Failure, HostId};

impl Engine {
    /// Releases every worker no stage from the running one on needs (called as the
    /// stages are scheduled).
    pub(super) fn release_idle(&mut self, out: &mut Vec<Action>) {
        let (from, run) = match &self.state {
            State::Stages { stage, next } => (stage.as_ref().map_or(*next, |s| s.index), stage),
            _ => return,
        };
        // After the last stage everything is collected anyway.
        if from >= self.plan.stages.len() {
            return;
        }
        let later_uses = |group: &str| {
            self.plan.stages[from + 1..]
                .iter()
                .any(|s| s.groups.iter().any(|g| g == group))
        };
        let mut release = Vec::new();
        for group in self.plan.fleet.keys() {
            if later_uses(group) {
                continue;
            }
            let current = run
                .as_ref()
                .filter(|r| self.plan.stages[r.index].groups.contains(group))
                .map(|r| &r.sched);
            // While items wait, no host of the stage is done: the common case costs
            // nothing, not a pass over the hosts.
            if let Some(Scheduler::Sharded(s)) = current
                && s.has_pending()
            {
                continue;
            }
            for host in self.hosts.live_in(group) {
                let Some(h) = self.hosts.get(host) else {
                    continue;
                };
                if !h.ready || h.bootstrapping || h.snapshotting || h.draining {
                    continue;
                }
                if self.flight.busy(host) {
                    continue;
                }
                let idle = match current {
                    None => true,
                    Some(Scheduler::Plain(p)) => !p.owes(host),
                    Some(Scheduler::Sharded(s)) => !s.has_pending() && s.item_on(host).is_none(),
                    Some(Scheduler::Listing) => false,
                };
                if idle {
                    release.push(host);
                }
            }
        }
        // A host drained for a spot notice or a rebalance recommendation, whose
        // replacement is launched, goes as soon as it has nothing left to do: its final
        // logs are collected before the instance is reclaimed, and it stops costing.
        for host in self.replace.replaced_hosts() {
            let Some(h) = self.hosts.get(host) else {
                continue;
            };
            let done = h.live()
                && h.draining
                && h.replaced
                && h.ready
                && !h.bootstrapping
                && !h.snapshotting
                && !self.flight.busy(host)
                && !self.replace.launching_for(host)
                && !self.salvage.values().any(|s| s.host == host)
                && match run.as_ref().map(|r| &r.sched) {
                    Some(Scheduler::Sharded(s)) => s.item_on(host).is_none(),
                    Some(Scheduler::Plain(p)) => !p.owes(host),
                    _ => true,
                };
            if done && !release.contains(&host) {
                release.push(host);
            }
        }
        for host in release {
            if !self.hosts.release(host) {
                continue;
            }
            if let Some(run) = self.stage_mut()
                && let Scheduler::Sharded(s) = &mut run.sched
            {
                s.remove_host(host);
            }
            self.releasing.insert(host);
            out.push(Action::Release { host });
        }
    }

    pub(super) fn on_released(
        &mut self,
        host: HostId,
        archive: Result<String, Failure>,
        terminated: Result<(), Failure>,
    ) {
        self.releasing.remove(&host);
        if let State::Collect { collecting, .. } = &mut self.state {
            collecting.remove(&host);
        }
        let now = self.now_ms;
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        match archive {
            Ok(key) => h.rec.archive = Some(key),
            Err(e) => h.rec.archive_error = Some(e.0),
        }
        match terminated {
            Ok(()) => h.rec.released_at_ms = Some(now),
            Err(e) => {
                // Teardown by tag ends it with the rest.
                let why = format!("terminating it early failed: {}", e.0);
                h.rec.archive_error = Some(match h.rec.archive_error.take() {
                    Some(old) => format!("{old}; {why}"),
                    None => why,
                });
            }
        }
    }

    /// Instance-hours not paid for thanks to early releases (up to the run's end, or
    /// now while it goes).
    pub(super) fn hours_saved(&self) -> f64 {
        let end = self.book.ended_at_ms.unwrap_or(self.now_ms);
        let ms: u64 = self
            .hosts
            .records()
            .iter()
            .filter_map(|h| h.released_at_ms)
            .map(|at| end.saturating_sub(at))
            .sum();
        ms as f64 / 3_600_000.0
    }
}
