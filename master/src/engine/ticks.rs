//! What the passing of time does to a run: the budget ([`super::budget`]), the
//! deadline and stage timeouts fail it,
//! the stop and collect grace periods end their waits, and live hosts' logs are
//! snapshotted on schedule. Part of [`super::Engine`].

use super::Engine;
use super::state::State;
use super::types::{Action, TaskResult};
use crate::plan::Dur;
use crate::record::{RunStatus, TaskOutcome};

impl Engine {
    /// A tick at `self.now_ms`.
    pub(super) fn on_tick(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let running = matches!(
            self.state,
            State::Provision { .. } | State::Bootstrap | State::Stages { .. }
        );
        if running && self.check_budget(out) {
            return;
        }
        match &mut self.state {
            State::Provision { .. } | State::Bootstrap | State::Stages { .. }
                if now >= self.deadline_at_ms =>
            {
                let during = match &self.state {
                    State::Stages { stage: Some(s), .. } => {
                        format!(" during stage `{}`", self.plan.stages[s.index].name)
                    }
                    _ => String::new(),
                };
                let msg = format!(
                    "the run's deadline of {} passed{during}",
                    Dur(self.plan.deadline)
                );
                self.fail(RunStatus::DeadlineExceeded, msg, out);
            }
            State::Stages { stage, .. } => {
                if let Some(s) = stage {
                    let st = &self.plan.stages[s.index];
                    if let Some(t) = st.timeout
                        && now >= s.started_at_ms + t.0.as_millis() as u64
                    {
                        let msg = format!("stage `{}` exceeded its timeout of {t}", st.name);
                        self.fail(RunStatus::Failed, msg, out);
                        return;
                    }
                }
                self.snapshots(out);
            }
            State::Stopping {
                since_ms, pending, ..
            } if now >= *since_ms + self.plan.stop_grace().as_millis() as u64 => {
                pending.clear();
                self.replace.forget_launches();
                // Tasks that never reported back are recorded as cancelled.
                for (key, attempt) in self.flight.drain() {
                    let result = TaskResult::without_exit(
                        TaskOutcome::Cancelled,
                        Some("no answer after cancel".into()),
                        now,
                        now,
                    );
                    self.book
                        .task(key, &attempt, self.hosts.name(attempt.host), &result);
                }
                self.hosts.forget_bootstraps();
            }
            State::Collect {
                since_ms,
                collecting,
                ..
            } if now >= *since_ms + self.plan.collect_grace().as_millis() as u64 => {
                for h in std::mem::take(collecting) {
                    if let Some(h) = self.hosts.get_mut(h) {
                        h.rec.archive_error = Some("log collection timed out".into());
                    }
                }
            }
            _ => {}
        }
    }

    /// Snapshots every live host's logs when the interval has passed (while the stages
    /// run, one snapshot per host at a time).
    fn snapshots(&mut self, out: &mut Vec<Action>) {
        let Some(every) = self.timers.snapshot_every_ms else {
            return;
        };
        if self.now_ms < self.timers.next_snapshot_ms {
            return;
        }
        self.timers.next_snapshot_ms = self.now_ms + every;
        for host in self.hosts.snapshot_candidates() {
            if let Some(h) = self.hosts.get_mut(host) {
                h.snapshotting = true;
            }
            out.push(Action::SnapshotLogs { host });
        }
    }
}
