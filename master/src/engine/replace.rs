//! Replacing lost workers. When a worker is lost (or gets a spot notice) while the run
//! still has time, its group may launch a replacement (`replace: N` per group, default
//! its `count`): it keeps the lost host's slot (`host.index`, `host.count`), is named
//! `GROUP-INDEX-rK`, replays every completed plain stage its slot ran (fetches
//! included: the same unit writing its own keys again), taking no work meanwhile, and
//! then joins the running stage: it takes items in a sharded stage, or the lost host's
//! unit in a plain one. Part of [`super::Engine`].

use super::Engine;
use super::flight::AttemptKind;
use super::hosts::{HostTable, Slot};
use super::stage::{Loss, Scheduler};
use super::state::State;
use super::types::{Action, HostId, LaunchedInstance, TaskKey, TaskResult};
use crate::record::{Replaced, ReplacementRecord, RunStatus, TaskOutcome};
use std::collections::{BTreeMap, BTreeSet};

/// What the engine keeps about replacements. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Replacements {
    /// Per group, replacements asked for so far (the cap is `replace`).
    used: BTreeMap<String, u32>,
    /// Launches out, by the host each replaces.
    launching: BTreeSet<HostId>,
    /// Replacements replaying earlier stages, with what is left to replay.
    replaying: BTreeMap<HostId, Replay>,
    /// Each plain stage's unit owners (unit -> host), kept current as replacements take
    /// slots over: who replays what.
    pub owners: BTreeMap<usize, Vec<HostId>>,
    records: Vec<ReplacementRecord>,
    /// The record of the replacement asked for each host.
    record_of: BTreeMap<HostId, usize>,
}

/// A replacement's way through the stages it replays.
#[derive(Debug, Clone, Default)]
struct Replay {
    /// The (stage, unit) being replayed.
    current: Option<(usize, usize)>,
    /// Stages replayed already.
    done: BTreeSet<usize>,
    task: usize,
    try_no: u32,
    failures: u32,
}

/// Whether the host got the spot termination notice.
fn doomed(h: &super::hosts::Host) -> bool {
    h.rec
        .interruption
        .as_ref()
        .is_some_and(|i| i.kind == super::types::Notice::Termination.as_str())
}

impl Replacements {
    pub fn records(&self) -> &[ReplacementRecord] {
        &self.records
    }

    /// Puts back the replacements an earlier master asked for (a resumed run): the
    /// hosts they replace are not replaced twice, and they count against the cap.
    pub fn restore(&mut self, hosts: &mut HostTable, records: Vec<ReplacementRecord>) {
        let by_name: BTreeMap<String, HostId> = (0..hosts.len())
            .map(|h| (hosts.name(h).to_owned(), h))
            .collect();
        for (index, r) in records.iter().enumerate() {
            let Some(&old) = by_name.get(&r.replaces) else {
                continue;
            };
            if let Some(h) = hosts.get_mut(old) {
                // A replacement that could not be launched leaves the host replaceable
                // again (as the engine that saw it fail left it).
                h.replaced = r.error.is_none();
                *self.used.entry(h.rec.group.clone()).or_default() += 1;
            }
            self.record_of.insert(old, index);
        }
        self.records = records;
    }

    /// Replacements asked for and never answered (the master died meanwhile): the lost
    /// host, its group and the replacement's name.
    pub fn unanswered(&self, hosts: &HostTable) -> Vec<(HostId, String, String)> {
        self.record_of
            .iter()
            .filter_map(|(old, i)| {
                let r = &self.records[*i];
                let answered = r.instance_id.is_some() || r.error.is_some();
                let group = hosts.get(*old)?.rec.group.clone();
                (!answered).then(|| (*old, group, r.name.clone()))
            })
            .collect()
    }

    /// A replacement of `old` is being launched (again).
    pub fn relaunching(&mut self, old: HostId) {
        self.launching.insert(old);
    }

    /// No replacement launch is out.
    pub fn none_launching(&self) -> bool {
        self.launching.is_empty()
    }

    /// The hosts a replacement was asked for, in id order.
    pub fn replaced_hosts(&self) -> Vec<HostId> {
        self.record_of.keys().copied().collect()
    }

    /// Whether a replacement of `host` is being launched.
    pub fn launching_for(&self, host: HostId) -> bool {
        self.launching.contains(&host)
    }

    /// Stop waiting for the launches still out (after the stop grace).
    pub fn forget_launches(&mut self) {
        self.launching.clear();
    }

    /// The hosts whose slot is coming back in `groups`: lost hosts with a launch out,
    /// and replacements not ready to work yet (booting or replaying).
    pub fn slots_coming(&self, hosts: &HostTable, groups: &[String]) -> Vec<HostId> {
        let in_groups = |h: &HostId| hosts.get(*h).is_some_and(|h| groups.contains(&h.rec.group));
        let booting = (0..hosts.len()).filter(|h| {
            hosts.get(*h).is_some_and(|x| {
                x.live()
                    && x.rec.replaces.is_some()
                    && !x.replaced
                    && !doomed(x)
                    && (!x.ready || self.replaying.contains_key(h))
            })
        });
        let mut out: Vec<HostId> = self
            .launching
            .iter()
            .copied()
            .chain(booting)
            .filter(in_groups)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Engine {
    /// Whether a replacement is on its way for one of `groups` (launching, booting or
    /// replaying): a stage with no live host then waits for it.
    pub(super) fn replacement_coming(&self, groups: &[String]) -> bool {
        !self.replace.slots_coming(&self.hosts, groups).is_empty()
    }

    /// Asks for a replacement of `host` when its group allows one and the run can use
    /// it; true when one was asked for.
    pub(super) fn maybe_replace(
        &mut self,
        host: HostId,
        reason: &str,
        out: &mut Vec<Action>,
    ) -> bool {
        let from_stage = match &self.state {
            State::Bootstrap => 0,
            State::Stages { stage, next } => stage.as_ref().map_or(*next, |s| s.index),
            _ => return false,
        };
        if self.now_ms >= self.deadline_at_ms {
            return false;
        }
        let Some(h) = self.hosts.get(host) else {
            return false;
        };
        if h.replaced || h.released {
            return false;
        }
        let group = h.rec.group.clone();
        let (index, generation) = (h.index, h.generation + 1);
        let lost_name = h.rec.name.clone();
        let Some(spec) = self.plan.fleet.get(&group) else {
            return false;
        };
        let uses = |i: usize| {
            self.plan
                .stages
                .get(i)
                .is_some_and(|s| s.groups.contains(&group))
        };
        let later = (from_stage + 1..self.plan.stages.len()).any(uses);
        // The running stage needs it while it has work left for the group.
        let now = uses(from_stage)
            && match &self.state {
                State::Stages {
                    stage: Some(run), ..
                } => match &run.sched {
                    // Items waiting, or the host's own (a notice gives it back).
                    Scheduler::Sharded(s) => s.has_pending() || s.item_on(host).is_some(),
                    Scheduler::Plain(p) => p.owes(host),
                    Scheduler::Listing => true,
                },
                _ => true,
            };
        let needed = later || now;
        let used = self.replace.used.get(&group).copied().unwrap_or(0);
        if !needed || used >= spec.replacements() {
            return false;
        }
        let mut one = spec.clone();
        one.count = 1;
        one.min_count = None;
        self.replace.used.insert(group.clone(), used + 1);
        self.replace.launching.insert(host);
        if let Some(h) = self.hosts.get_mut(host) {
            h.replaced = true;
        }
        let name = format!("{group}-{index}-r{generation}");
        self.replace
            .record_of
            .insert(host, self.replace.records.len());
        self.replace.records.push(ReplacementRecord {
            replaces: lost_name,
            name: name.clone(),
            reason: reason.to_owned(),
            asked_at_ms: self.now_ms,
            instance_id: None,
            error: None,
        });
        out.push(Action::LaunchReplacement {
            group,
            spec: one,
            replaces: host,
            name,
        });
        true
    }

    /// A replacement of `old` was launched: it takes `old`'s slot and boots.
    pub(super) fn on_replaced(
        &mut self,
        old: HostId,
        inst: LaunchedInstance,
        out: &mut Vec<Action>,
    ) {
        if !self.replace.launching.remove(&old) {
            return;
        }
        if let Some(&r) = self.replace.record_of.get(&old) {
            self.replace.records[r].instance_id = Some(inst.id.clone());
        }
        let Some(h) = self.hosts.get(old) else { return };
        let (group, index, generation) = (h.rec.group.clone(), h.index, h.generation + 1);
        let replaces = Replaced {
            host: h.rec.name.clone(),
            reason: self
                .replace
                .record_of
                .get(&old)
                .map(|r| self.replace.records[*r].reason.clone())
                .unwrap_or_default(),
        };
        let working = !self.state.decided();
        let slot = Slot {
            group: &group,
            index,
            generation,
        };
        let new = self
            .hosts
            .add_replacement(slot, inst, self.now_ms, replaces, working);
        if !working {
            return; // recorded; torn down with the rest
        }
        if let Some(h) = self.hosts.get_mut(new) {
            h.draining = true; // no work until it has replayed
        }
        for owners in self.replace.owners.values_mut() {
            for o in owners.iter_mut().filter(|o| **o == old) {
                *o = new;
            }
        }
        if let Some(run) = self.stage_mut()
            && let Scheduler::Plain(p) = &mut run.sched
        {
            p.rehome(old, new);
        }
        out.push(Action::Bootstrap { host: new });
    }

    /// A replacement of `old` could not be launched: the run goes on without it, and
    /// fails only when the slot owes work nobody else can do.
    pub(super) fn on_replacement_failed(
        &mut self,
        old: HostId,
        error: String,
        out: &mut Vec<Action>,
    ) {
        if !self.replace.launching.remove(&old) {
            return;
        }
        if let Some(&r) = self.replace.record_of.get(&old) {
            self.replace.records[r].error = Some(error.clone());
        }
        if self.state.decided() {
            return;
        }
        let name = self.hosts.name(old).to_owned();
        // Another try, while the group's replacements last.
        if let Some(h) = self.hosts.get_mut(old) {
            h.replaced = false;
        }
        let why = format!("the replacement of {name} could not be launched: {error}");
        if self.maybe_replace(old, &why, out) {
            return;
        }
        let owed = match &self.state {
            State::Stages {
                stage: Some(run), ..
            } => match &run.sched {
                Scheduler::Plain(p) => p.owes(old).then_some(run.index),
                _ => None,
            },
            _ => None,
        };
        if let Some(index) = owed {
            let msg = format!(
                "host {name} was lost during stage `{}` and {why}",
                self.plan.stages[index].name
            );
            self.fail(RunStatus::Failed, msg, out);
        } else if let State::Stages {
            stage: Some(run), ..
        } = &self.state
        {
            let note = format!("{why}; the stage goes on with the hosts it has");
            self.book.note_stage(run.index, note);
        }
    }

    /// A replacement's agent is installed: it replays the completed plain stages of its
    /// slot, then joins.
    pub(super) fn start_replay(&mut self, host: HostId, out: &mut Vec<Action>) {
        let Some(h) = self.hosts.get(host) else {
            return;
        };
        if h.rec.replaces.is_none() || !h.live() || self.state.decided() {
            return;
        }
        if self.resumed_joined(host) {
            return; // it had replayed under an earlier master
        }
        self.replace.replaying.insert(host, Replay::default());
        self.replay_next(host, out);
    }

    /// The next stage `host` should replay: a completed plain stage its slot ran, or
    /// the running plain stage when its slot's unit there was done by the lost host
    /// (its effects are on the lost disk). Asked each time, so a stage that completes
    /// while the replacement boots or replays is replayed too.
    fn next_replay(&self, host: HostId) -> Option<(usize, usize)> {
        let r = self.replace.replaying.get(&host)?;
        let (upto, running_plain) = match &self.state {
            State::Stages { stage, next } => match stage {
                Some(run) => match &run.sched {
                    Scheduler::Plain(p) => (run.index, (!p.owes(host)).then_some(run.index)),
                    _ => (run.index, None),
                },
                None => (*next, None),
            },
            // Before the stages (re)open: none yet, or in a resumed run the stages an
            // earlier master completed, and the stage it was in when the host's slot
            // had done its unit there (its effects were on the lost disk).
            _ => {
                let upto = self.resumed_upto();
                let done_there = self.replace.owners.get(&upto).is_some_and(|o| {
                    o.iter()
                        .position(|h| *h == host)
                        .is_some_and(|u| self.completed_units().contains(&(upto, u)))
                });
                (upto, done_there.then_some(upto))
            }
        };
        self.replace
            .owners
            .range(..=upto)
            .filter(|(stage, _)| **stage < upto || Some(**stage) == running_plain)
            .filter(|(stage, _)| !r.done.contains(stage))
            .find_map(|(stage, owners)| owners.iter().position(|o| *o == host).map(|u| (*stage, u)))
    }

    /// Starts the replacement's next replayed task, or lets it join once none is left.
    fn replay_next(&mut self, host: HostId, out: &mut Vec<Action>) {
        let current = match self.replace.replaying.get(&host) {
            None => return,
            Some(r) => r.current,
        };
        let current = current.or_else(|| self.next_replay(host));
        let Some(r) = self.replace.replaying.get_mut(&host) else {
            return;
        };
        r.current = current;
        let Some((stage, unit)) = current else {
            self.replace.replaying.remove(&host);
            self.join(host);
            return;
        };
        let key = TaskKey {
            stage,
            unit,
            task: r.task,
            try_no: r.try_no,
        };
        self.start_task(key, host, None, AttemptKind::Replay, false, out);
    }

    /// A replayed task ended.
    pub(super) fn replay_finished(
        &mut self,
        key: TaskKey,
        host: HostId,
        result: &TaskResult,
        out: &mut Vec<Action>,
    ) {
        if self.state.decided() {
            return;
        }
        let Some(r) = self.replace.replaying.get_mut(&host) else {
            return;
        };
        let st = &self.plan.stages[key.stage];
        if result.outcome == TaskOutcome::Succeeded {
            r.task += 1;
            r.failures = 0;
            if r.task == st.tasks.len() {
                r.done.insert(key.stage);
                r.current = None;
                r.task = 0;
            }
            // Keys only grow: an attempt of an earlier try may still be in flight.
            r.try_no += 1;
            self.replay_next(host, out);
            return;
        }
        r.failures += 1;
        if r.failures <= st.retries {
            r.try_no += 1;
            self.replay_next(host, out);
            return;
        }
        let msg = format!(
            "task `{}` failed on {} while it replayed stage `{}`: {}",
            st.tasks[key.task].written_name(),
            self.hosts.name(host),
            st.name,
            result.describe_failure()
        );
        self.fail(RunStatus::Failed, msg, out);
    }

    /// A replacement that lost its host stops replaying.
    pub(super) fn forget_replay(&mut self, host: HostId) {
        self.replace.replaying.remove(&host);
    }

    /// The replacement has replayed everything: it works from now on (a sharded stage
    /// still listing its items takes it in with the other ready hosts). One that got a
    /// notice meanwhile stays drained.
    fn join(&mut self, host: HostId) {
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        // A host with its own replacement on the way (or a termination notice) stays
        // drained; a mere recommendation that brought no replacement does not.
        if h.replaced || doomed(h) {
            return;
        }
        h.draining = false;
        let group = h.rec.group.clone();
        self.journal
            .note(crate::record::journal::Entry::Joined { host });
        let plan = self.plan.clone();
        let Some(run) = self.stage_mut() else { return };
        match &mut run.sched {
            Scheduler::Plain(p) => p.resume(host),
            Scheduler::Sharded(s) => {
                if plan.stages[run.index].groups.contains(&group) {
                    s.add_host(host);
                }
            }
            Scheduler::Listing => {}
        }
    }

    /// A host died, vanished, stopped answering or failed its bootstrap: its attempts
    /// are recorded lost (or interrupted), its item requeued, and a replacement asked
    /// for; the run fails only when its work cannot be done otherwise.
    pub(super) fn lose_host(&mut self, host: HostId, reason: String, out: &mut Vec<Action>) {
        if !self.hosts.mark_lost(host, self.now_ms, &reason) {
            return;
        }
        let mut interrupted = false;
        for (key, attempt) in self.flight.remove_host(host) {
            // A task stopped for a spot notice whose host went before it answered: the
            // interruption, not a loss.
            let outcome = if attempt.interrupted {
                interrupted |= attempt.kind == AttemptKind::Stage;
                TaskOutcome::Interrupted
            } else {
                TaskOutcome::HostLost
            };
            let result =
                TaskResult::without_exit(outcome, Some(reason.clone()), self.now_ms, self.now_ms);
            self.book
                .task(key, &attempt, self.hosts.name(host), &result);
        }
        self.forget_replay(host);
        self.salvage_lost(host, out);
        if interrupted
            && let Some(run) = self.stage_mut()
            && let Scheduler::Sharded(s) = &mut run.sched
            && let Some(item) = s.hold(host)
        {
            s.requeue_held(item); // back in the queue, no loss counted
        }
        let loss = self.stage_mut().map(|s| (s.index, s.host_lost(host)));
        let name = self.hosts.name(host).to_owned();
        if let Some((index, Loss::GiveUp { attempts, item })) = loss {
            let item = item.map(|i| format!("item {i}")).unwrap_or_default();
            let msg = format!(
                "{item} of stage `{}` lost its host {attempts} time(s) beyond the first, the last {name}: {reason}",
                self.plan.stages[index].name
            );
            self.fail(RunStatus::Failed, msg, out);
            return;
        }
        let asked = self.maybe_replace(host, &reason, out);
        let coming = asked || self.replace.launching_for(host);
        if let Some((index, Loss::Owed)) = loss
            && !coming
        {
            let msg = format!(
                "host {name} was lost during stage `{}`: {reason}",
                self.plan.stages[index].name
            );
            self.fail(RunStatus::Failed, msg, out);
        }
    }
}
