//! Spot interruption notices and rebalance recommendations, as a host's agent reads
//! them from its instance's metadata. Part of [`super::Engine`].
//!
//! On the two-minute notice the host takes no new work; its running tasks are stopped
//! for checkpointing (`$SQUALL_INTERRUPT_FILE`, SIGTERM, SIGKILL after the stage's
//! `interrupt_grace`); its logs are snapshotted; a replacement is launched at once. An
//! item stopped that way first runs its `on_interrupt: true` fetches on the host, then
//! goes back to the queue without counting as a failure. On a rebalance recommendation
//! the host only takes no new item (sharded stages) and a replacement is launched; what
//! runs goes on.

use super::Engine;
use super::flight::AttemptKind;
use super::stage::Scheduler;
use super::types::{Action, HostId, Notice, TaskKey, TaskResult};
use crate::record::{InterruptionRecord, TaskOutcome};
use std::collections::VecDeque;

/// An interrupted item's checkpoint fetches still to run on its old host.
#[derive(Debug, Clone)]
pub(super) struct Salvage {
    pub host: HostId,
    pub stage: usize,
    pub try_no: u32,
    pub left: VecDeque<usize>,
}

impl Engine {
    pub(super) fn on_interrupted(&mut self, host: HostId, notice: Notice, out: &mut Vec<Action>) {
        let now = self.now_ms;
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        if !h.live() {
            return;
        }
        let first = match &h.rec.interruption {
            None => true,
            // A notice after a recommendation is news; anything else was seen.
            Some(seen) => {
                seen.kind != Notice::Termination.as_str() && notice == Notice::Termination
            }
        };
        if !first {
            return;
        }
        h.rec.interruption = Some(InterruptionRecord {
            kind: notice.as_str().to_owned(),
            at_ms: now,
        });
        if self.state.decided() {
            return;
        }
        let sharded = self
            .stage_mut()
            .is_some_and(|run| matches!(run.sched, Scheduler::Sharded(_)));
        if notice == Notice::Rebalance {
            // Only where the host can be spared: a replacement comes, and the items
            // go to the others meanwhile.
            if sharded && self.maybe_replace(host, "a rebalance recommendation", out) {
                self.drain(host);
            }
            return;
        }
        self.drain(host);
        // A replacement replaying on a doomed host gives up; its own replacement
        // takes its place.
        self.forget_replay(host);
        for key in self.flight.keys_on(host) {
            let Some(a) = self.flight.get_mut(&key) else {
                continue;
            };
            if a.kind == AttemptKind::Salvage || a.interrupted {
                continue;
            }
            a.interrupted = true;
            let grace = self.plan.stages[key.stage].interrupt_grace.as_millis() as u64;
            out.push(Action::InterruptTask {
                key,
                host,
                grace_ms: grace,
            });
        }
        if let Some(h) = self.hosts.get_mut(host)
            && h.ready
            && !h.snapshotting
        {
            h.snapshotting = true;
            out.push(Action::SnapshotLogs { host });
        }
        self.maybe_replace(host, "a spot interruption notice", out);
    }

    /// `host` takes no new work.
    fn drain(&mut self, host: HostId) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.draining = true;
        }
        if let Some(run) = self.stage_mut()
            && let Scheduler::Sharded(s) = &mut run.sched
        {
            s.drain(host);
        }
    }

    /// An attempt stopped for a notice ended (its record says so): its item is held
    /// while its checkpoint fetches run, then requeued; a plain unit waits for the
    /// replacement.
    pub(super) fn interrupted_finished(
        &mut self,
        key: TaskKey,
        host: HostId,
        out: &mut Vec<Action>,
    ) {
        let Some(run) = self.stage_mut().filter(|s| s.index == key.stage) else {
            return;
        };
        match &mut run.sched {
            Scheduler::Plain(p) => p.suspend(host),
            Scheduler::Sharded(s) => {
                let Some(item) = s.hold(host) else { return };
                let left: VecDeque<usize> = self.plan.stages[key.stage]
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.on_interrupt)
                    .map(|(i, _)| i)
                    .collect();
                self.salvage.insert(
                    item,
                    Salvage {
                        host,
                        stage: key.stage,
                        try_no: key.try_no,
                        left,
                    },
                );
                self.salvage_next(item, out);
            }
            Scheduler::Listing => {}
        }
    }

    /// Runs the item's next checkpoint fetch, or puts it back in the queue.
    fn salvage_next(&mut self, item: usize, out: &mut Vec<Action>) {
        let Some(sv) = self.salvage.get_mut(&item) else {
            return;
        };
        let live = self.hosts.get(sv.host).is_some_and(|h| h.live());
        match sv
            .left
            .pop_front()
            .filter(|_| live && !self.state.decided())
        {
            Some(task) => {
                let key = TaskKey {
                    stage: sv.stage,
                    unit: item,
                    task,
                    try_no: sv.try_no,
                };
                let host = sv.host;
                self.start_task(key, host, Some(item), AttemptKind::Salvage, false, out);
            }
            None => {
                self.salvage.remove(&item);
                if let Some(run) = self.stage_mut()
                    && let Scheduler::Sharded(s) = &mut run.sched
                {
                    s.requeue_held(item);
                }
            }
        }
    }

    /// A checkpoint fetch ended (whatever its outcome, the item goes on).
    pub(super) fn salvage_finished(
        &mut self,
        key: TaskKey,
        result: &TaskResult,
        out: &mut Vec<Action>,
    ) {
        if result.outcome != TaskOutcome::Succeeded {
            tracing::warn!(
                "the checkpoint fetch of item {} failed: {}",
                key.unit,
                result.describe_failure()
            );
        }
        self.salvage_next(key.unit, out);
    }

    /// `host` was lost: checkpoints it was fetching are given up and their items
    /// requeued.
    pub(super) fn salvage_lost(&mut self, host: HostId, out: &mut Vec<Action>) {
        let items: Vec<usize> = self
            .salvage
            .iter()
            .filter(|(_, s)| s.host == host)
            .map(|(i, _)| *i)
            .collect();
        for item in items {
            if let Some(sv) = self.salvage.get_mut(&item) {
                sv.left.clear();
            }
            self.salvage_next(item, out);
        }
    }
}
