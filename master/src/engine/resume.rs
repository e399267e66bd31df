//! Resuming a run from its journal: a successor master rebuilds the engine of the
//! master that died, from the store alone.
//!
//! [`Rebuilt::from_batches`] folds the journal's batches into the run as the last
//! master left it (a generation's batches are read up to its first missing one, so a
//! crash mid-flush leaves an earlier, consistent view). [`Engine::resume`] then starts
//! from there: the same hosts with the same ids (live ones are adopted: bootstrapped
//! again, which checks the login key and the agent), the records and files kept so
//! far, completed stages skipped, and in the stage that was running each completed
//! unit done, each unit's progress kept, and each running attempt started again with
//! the same key on the same host, which re-attaches to it (the agent's `start` is
//! idempotent by task id). A completed unit is never run again.

use super::stage::{Scheduler, Unit};
use super::state::{Fate, State};
use super::types::{Action, HostId};
use super::{Engine, EngineOptions};
use crate::plan::Plan;
use crate::record::journal::{Attempt, Batch, Entry, Takeover};
use crate::record::{
    FileRecord, HostRecord, ItemsFile, ReplacementRecord, RunStatus, StageRecord, TaskOutcome,
    TaskRecord, TeardownRecord,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A journaled host.
#[derive(Debug, Clone, PartialEq)]
pub struct JournaledHost {
    pub index: u32,
    pub generation: u32,
    pub rec: HostRecord,
}

/// The run as its journal tells it. See the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rebuilt {
    /// When the run started and is cut off (the first master's).
    pub began: Option<(u64, u64)>,
    pub hosts: BTreeMap<usize, JournaledHost>,
    pub stages: BTreeMap<usize, StageRecord>,
    pub owners: BTreeMap<usize, Vec<usize>>,
    pub items: BTreeMap<usize, (Vec<Value>, Option<ItemsFile>)>,
    /// Each unit's last started attempt, and its host.
    pub started: BTreeMap<(usize, usize), (Attempt, usize)>,
    pub tasks: Vec<TaskRecord>,
    pub completed: BTreeSet<(usize, usize)>,
    pub files: Vec<(usize, usize, FileRecord)>,
    pub replacements: BTreeMap<usize, ReplacementRecord>,
    pub fate: Option<(RunStatus, Option<String>)>,
    pub torn_down: Option<TeardownRecord>,
    /// Replacements that finished their replay.
    pub joined: BTreeSet<usize>,
    /// Cache keys of cached stages' items.
    pub cache_keys: BTreeMap<(usize, usize), String>,
    /// Entries read.
    pub entries: usize,
}

impl Rebuilt {
    /// Folds `batches` (any order) into the run; each generation's are read in order
    /// up to the first missing one.
    pub fn from_batches(batches: impl IntoIterator<Item = Batch>) -> Rebuilt {
        let mut sorted: Vec<Batch> = batches.into_iter().collect();
        sorted.sort_by_key(|b| (b.generation, b.seq));
        let mut r = Rebuilt::default();
        let mut expect: BTreeMap<u32, u64> = BTreeMap::new();
        for b in sorted {
            let next = expect.entry(b.generation).or_insert(0);
            if b.seq != *next {
                continue; // a gap: this generation's later batches are not read
            }
            *next += 1;
            for e in b.entries {
                r.apply(e);
            }
        }
        r
    }

    /// Takes one entry.
    pub fn apply(&mut self, entry: Entry) {
        self.entries += 1;
        match entry {
            Entry::Began {
                started_at_ms,
                deadline_at_ms,
            } => {
                self.began.get_or_insert((started_at_ms, deadline_at_ms));
            }
            Entry::Host {
                id,
                index,
                generation,
                host,
            } => {
                self.hosts.insert(
                    id,
                    JournaledHost {
                        index,
                        generation,
                        rec: host,
                    },
                );
            }
            Entry::Stage { index, stage } => {
                self.stages.insert(index, stage);
            }
            Entry::Owners { stage, hosts } => {
                self.owners.insert(stage, hosts);
            }
            Entry::Items { stage, items, file } => {
                self.items.insert(stage, (items, file));
            }
            Entry::Started { attempt, host } => {
                self.started
                    .insert((attempt.stage, attempt.unit), (attempt, host));
            }
            Entry::Ended { task } => self.tasks.push(task),
            Entry::Completed { stage, unit } => {
                self.completed.insert((stage, unit));
            }
            Entry::File { stage, unit, file } => self.files.push((stage, unit, file)),
            Entry::Replacement { index, replacement } => {
                self.replacements.insert(index, replacement);
            }
            Entry::Fate { status, reason } => {
                self.fate.get_or_insert((status, reason));
            }
            Entry::TornDown { teardown } => self.torn_down = Some(teardown),
            Entry::Joined { host } => {
                self.joined.insert(host);
            }
            Entry::CacheKey { stage, unit, key } => {
                self.cache_keys.insert((stage, unit), key);
            }
        }
    }

    /// The host name of a journaled id.
    fn name(&self, host: usize) -> &str {
        self.hosts.get(&host).map_or("?", |h| h.rec.name.as_str())
    }

    /// Where each unfinished unit of `stage` stands: its progress, and the host its
    /// last attempt still runs on (none when that attempt ended). `sharded` units keep
    /// counting `try_no` across tasks and restart at their first task after a failure.
    pub fn progress(&self, stage: usize, sharded: bool) -> BTreeMap<usize, (Unit, Option<usize>)> {
        let ended: BTreeMap<(&str, &str), &TaskRecord> = self
            .tasks
            .iter()
            .map(|t| ((t.id.as_str(), t.host.as_str()), t))
            .collect();
        let mut out = BTreeMap::new();
        for (&(s, unit), &(a, host)) in self.started.range((stage, 0)..(stage + 1, 0)) {
            debug_assert_eq!(s, stage);
            if self.completed.contains(&(stage, unit)) {
                continue;
            }
            let id = agent_id(a);
            // A plain unit's retries are per task and per host (a replacement that
            // takes a unit over starts its count again).
            let on = self.name(host);
            let counted = |t: &&TaskRecord| {
                matches!(t.outcome, TaskOutcome::Failed | TaskOutcome::TimedOut)
                    && (sharded || t.host == on)
                    && parse_agent_id(&t.id).is_some_and(|k| {
                        k.stage == stage && k.unit == unit && (sharded || k.task == a.task)
                    })
            };
            let failures = self.tasks.iter().filter(counted).count() as u32;
            let entry = match ended.get(&(id.as_str(), self.name(host))) {
                None => (
                    Unit {
                        next_task: a.task,
                        try_no: a.try_no,
                        failures,
                        running: false,
                        done: false,
                    },
                    Some(host),
                ),
                Some(t) if t.outcome == TaskOutcome::Succeeded => (
                    Unit {
                        next_task: a.task + 1,
                        try_no: if sharded { a.try_no } else { 0 },
                        failures: if sharded { failures } else { 0 },
                        running: false,
                        done: false,
                    },
                    // The item's next task runs where its last one did.
                    sharded.then_some(host),
                ),
                Some(_) => (
                    Unit {
                        next_task: if sharded { 0 } else { a.task },
                        try_no: a.try_no + 1,
                        failures,
                        running: false,
                        done: false,
                    },
                    None,
                ),
            };
            out.insert(unit, entry);
        }
        out
    }
}

/// The agent task id of an attempt (as [`super::TaskKey::agent_id`] spells it).
pub fn agent_id(a: Attempt) -> String {
    super::TaskKey {
        stage: a.stage,
        unit: a.unit,
        task: a.task,
        try_no: a.try_no,
    }
    .agent_id()
}

/// The attempt an agent task id names, if it is one.
pub fn parse_agent_id(id: &str) -> Option<Attempt> {
    let mut parts = id.split('-');
    let mut num =
        |prefix: char| -> Option<u64> { parts.next()?.strip_prefix(prefix)?.parse().ok() };
    let (stage, unit, task, try_no) = (num('s')?, num('u')?, num('t')?, num('a')?);
    if parts.next().is_some() {
        return None;
    }
    Some(Attempt {
        stage: stage as usize,
        unit: unit as usize,
        task: task as usize,
        try_no: try_no as u32,
    })
}

/// What a resumed engine still has to apply as the run goes on.
#[derive(Debug, Default)]
pub(super) struct Seeds {
    pub rebuilt: Rebuilt,
    /// How many hosts were restored (ids below are the earlier masters').
    pub restored: usize,
}

impl Engine {
    /// The run `rebuilt` tells of, taken over by a successor master at `now_ms` (see
    /// the module docs). Call [`Engine::start`] next: it adopts the live hosts.
    pub fn resume(
        plan: Arc<Plan>,
        run_id: String,
        trigger: BTreeMap<String, Value>,
        now_ms: u64,
        options: EngineOptions,
        rebuilt: Rebuilt,
    ) -> Engine {
        let mut e = Engine::with_options(plan, run_id, trigger, now_ms, options);
        if let Some((started, deadline)) = rebuilt.began {
            e.book.started_at_ms = started;
            e.deadline_at_ms = deadline;
        }
        e.book.phases.clear();
        e.book
            .mark(crate::record::Phase::Provision, e.book.started_at_ms);
        e.book.tasks = rebuilt.tasks.clone();
        e.book.stages = rebuilt.stages.values().cloned().collect();
        for (stage, unit, file) in &rebuilt.files {
            if file.cached_from.is_none() {
                e.moved.fetched.insert(
                    file.key.clone(),
                    super::data::Owner {
                        stage: *stage,
                        unit: *unit,
                        host: file.host.clone(),
                        item: file.item,
                    },
                );
            }
            e.book.file(file.clone());
        }
        e.journal.completed = rebuilt.completed.clone();
        e.cache.restore_keys(rebuilt.cache_keys.clone());
        e.journal.fate_noted = rebuilt.fate.is_some();
        let fate = rebuilt
            .fate
            .clone()
            .map(|(status, reason)| Fate { status, reason });
        // Hosts in id order; a torn-down run's hosts are not adopted.
        for (id, h) in &rebuilt.hosts {
            if *id != e.hosts.len() {
                break; // ids are journaled in order; a gap ends what can be trusted
            }
            let adopt = rebuilt.torn_down.is_none();
            let id = e.hosts.restore(h.index, h.generation, h.rec.clone(), adopt);
            // A replacement that had not finished replaying takes no work until it has
            // (it replays again, with the same task keys: finished ones re-attach).
            if h.rec.replaces.is_some()
                && !rebuilt.joined.contains(&id)
                && let Some(x) = e.hosts.get_mut(id)
            {
                x.draining = true;
            }
        }
        e.replace.owners = rebuilt.owners.clone();
        e.replace.restore(
            &mut e.hosts,
            rebuilt.replacements.values().cloned().collect(),
        );
        e.journal.seen(
            (0..e.hosts.len())
                .map(|id| e.hosts.get(id).map(|h| h.rec.clone()))
                .collect(),
            e.book.stages.clone(),
            e.replace.owners.clone(),
            e.replace.records().to_vec(),
            e.book.tasks.len(),
        );
        e.takeover = Some(Takeover {
            entries: rebuilt.entries,
            completed: rebuilt.completed.len(),
            ..Takeover::default()
        });
        let unlaunched: BTreeSet<String> = e
            .plan
            .fleet
            .keys()
            .filter(|g| e.hosts.in_group(g).next().is_none())
            .cloned()
            .collect();
        e.state = match (fate, rebuilt.torn_down.clone()) {
            (Some(fate), Some(teardown)) => {
                e.book.teardown = Some(teardown);
                State::Teardown { fate }
            }
            (Some(fate), None) => State::Stopping {
                fate,
                since_ms: now_ms,
                pending: BTreeSet::new(),
            },
            (None, _) if !unlaunched.is_empty() => State::Provision {
                pending: unlaunched,
            },
            (None, _) => State::Bootstrap,
        };
        e.book.mark(e.state.phase(), now_ms);
        let restored = e.hosts.len();
        e.seeds = Some(Seeds { rebuilt, restored });
        e
    }

    /// The first actions of a resumed run: adopt every live host, launch what had not
    /// been launched, and finish a teardown that was under way.
    pub(super) fn start_resumed(&mut self, out: &mut Vec<Action>) {
        for id in 0..self.hosts.len() {
            if self.hosts.get(id).is_some_and(|h| h.bootstrapping) {
                out.push(Action::Bootstrap { host: id });
            }
        }
        if let State::Provision { pending } = &self.state {
            for group in pending.clone() {
                if let Some(spec) = self.plan.fleet.get(&group) {
                    out.push(Action::Launch {
                        group,
                        spec: spec.clone(),
                    });
                }
            }
        }
        if !self.state.decided() {
            self.relaunch_replacements(out);
        }
        if matches!(self.state, State::Teardown { .. }) {
            // It was torn down already: terminating again by tag is harmless and sure.
            out.push(Action::Teardown);
        }
    }

    /// A restored host answered (or not) its adoption.
    pub(super) fn adopted(&mut self, host: HostId, ok: bool) {
        let name = self.hosts.name(host).to_owned();
        let restored = self.seeds.as_ref().map_or(0, |s| s.restored);
        if let Some(t) = &mut self.takeover
            && host < restored
        {
            if ok {
                t.adopted.push(name);
            } else {
                t.unreachable.push(name);
            }
        }
    }

    /// Whether stage `index` completed under an earlier master.
    pub(super) fn resumed_stage_done(&self, index: usize) -> bool {
        self.seeds.as_ref().is_some_and(|s| {
            s.rebuilt
                .stages
                .get(&index)
                .is_some_and(|st| st.succeeded == Some(true))
        })
    }

    /// The items an earlier master listed for stage `index`.
    pub(super) fn resumed_items(&self, index: usize) -> Option<(Vec<Value>, Option<ItemsFile>)> {
        self.seeds.as_ref()?.rebuilt.items.get(&index).cloned()
    }

    /// The owners an earlier master gave plain stage `index`'s units.
    pub(super) fn resumed_owners(&self, index: usize) -> Option<Vec<HostId>> {
        // Seeded from the journal, and kept current as replacements take slots over.
        self.seeds.as_ref()?.rebuilt.owners.get(&index)?;
        self.replace.owners.get(&index).cloned()
    }

    /// The first stage an earlier master did not complete (0 in a fresh run): what a
    /// replacement adopted before the stages reopen replays up to.
    pub(super) fn resumed_upto(&self) -> usize {
        if self.seeds.is_none() {
            return 0;
        }
        (0..self.plan.stages.len())
            .find(|i| !self.resumed_stage_done(*i))
            .unwrap_or(self.plan.stages.len())
    }

    /// Whether a restored replacement had finished its replay (it takes work at once).
    pub(super) fn resumed_joined(&self, host: HostId) -> bool {
        self.seeds
            .as_ref()
            .is_some_and(|s| host < s.restored && s.rebuilt.joined.contains(&host))
    }

    /// In a resumed plain stage, an owner that is gone with its unit not done and no
    /// replacement coming: nobody can do its unit.
    pub(super) fn stranded_owner(&self, index: usize) -> Option<HostId> {
        let owners = self.resumed_owners(index)?;
        owners.iter().enumerate().find_map(|(u, h)| {
            let gone = self.hosts.get(*h).is_some_and(|x| !x.live());
            let done = self.journal.completed.contains(&(index, u));
            (gone && !done && !self.replace.launching_for(*h)).then_some(*h)
        })
    }

    /// Puts back what an earlier master did of stage `index`, once it is open.
    pub(super) fn apply_seeds(&mut self, index: usize) {
        let sharded = matches!(&self.state, State::Stages { stage: Some(r), .. }
            if r.index == index && matches!(r.sched, Scheduler::Sharded(_)));
        let Some(seeds) = &self.seeds else {
            return;
        };
        let progress = seeds.rebuilt.progress(index, sharded);
        let starts: BTreeMap<usize, (Attempt, usize)> = seeds
            .rebuilt
            .started
            .range((index, 0)..(index + 1, 0))
            .map(|(&(_, u), &v)| (u, v))
            .collect();
        // How each unit's last started attempt ended, if it did.
        let outcomes: BTreeMap<usize, Option<TaskOutcome>> = starts
            .iter()
            .map(|(u, (a, h))| {
                let id = agent_id(*a);
                let on = seeds.rebuilt.name(*h);
                let ended = seeds
                    .rebuilt
                    .tasks
                    .iter()
                    .rfind(|t| t.id == id && t.host == on)
                    .map(|t| t.outcome);
                (*u, ended)
            })
            .collect();
        let completed: Vec<usize> = self
            .journal
            .completed
            .range((index, 0)..(index + 1, 0))
            .map(|(_, u)| *u)
            .collect();
        let mut reattached = Vec::new();
        let mut rerun = Vec::new();
        let names: BTreeMap<usize, String> = (0..self.hosts.len())
            .map(|h| (h, self.hosts.name(h).to_owned()))
            .collect();
        let live: BTreeSet<HostId> = (0..self.hosts.len())
            .filter(|h| self.hosts.get(*h).is_some_and(|x| x.live() && x.ready))
            .collect();
        let Some(run) = self.stage_mut().filter(|r| r.index == index) else {
            return;
        };
        let done = Unit {
            done: true,
            ..Unit::default()
        };
        match &mut run.sched {
            Scheduler::Sharded(s) => {
                for u in completed {
                    s.restore(u, done.clone(), None);
                }
                for (u, (unit, on)) in progress {
                    let id = format!("s{index}-u{u}-t{}-a{}", unit.next_task, unit.try_no);
                    let running = on.is_some();
                    if s.restore(u, unit, on) {
                        if let Some(h) = on.filter(|_| running) {
                            let name = names.get(&h).cloned().unwrap_or_default();
                            reattached.push(format!("{id} on {name}"));
                        }
                    } else if running {
                        rerun.push(format!("item {u} (its host was gone)"));
                    }
                }
            }
            Scheduler::Plain(p) => {
                for u in completed {
                    p.restore_unit(u, done.clone());
                }
                for (u, (unit, on)) in progress {
                    let Some(owner) = p.host_of(u) else { continue };
                    let name = |h: HostId| names.get(&h).cloned().unwrap_or_default();
                    let Some(&(a, started_on)) = starts.get(&u) else {
                        continue;
                    };
                    if started_on != owner {
                        // A replacement took the unit over from the host that ran it:
                        // it starts from the first task with the next try, as a rehome
                        // does (the try the lost host's unit had, plus one).
                        let had = match outcomes.get(&u).copied().flatten() {
                            Some(TaskOutcome::Succeeded) => 0,
                            Some(TaskOutcome::Failed | TaskOutcome::TimedOut) => a.try_no + 1,
                            _ => a.try_no,
                        };
                        p.restore_unit(
                            u,
                            Unit {
                                try_no: had + 1,
                                ..Unit::default()
                            },
                        );
                        continue;
                    }
                    let id = format!("s{index}-u{u}-t{}-a{}", unit.next_task, unit.try_no);
                    p.restore_unit(u, unit);
                    if on.is_some() {
                        if live.contains(&owner) {
                            reattached.push(format!("{id} on {}", name(owner)));
                        } else {
                            rerun.push(format!("{} (its host was gone)", name(owner)));
                        }
                    }
                }
            }
            Scheduler::Listing => {}
        }
        if let Some(t) = &mut self.takeover {
            t.reattached.extend(reattached);
            t.rerun.extend(rerun);
        }
    }
}

impl Engine {
    /// Launches again the replacements an earlier master asked for and never heard of
    /// (the launch token makes a launch that did happen return the same instance).
    fn relaunch_replacements(&mut self, out: &mut Vec<Action>) {
        for (old, group, name) in self.replace.unanswered(&self.hosts) {
            let Some(spec) = self.plan.fleet.get(&group) else {
                continue;
            };
            let mut one = spec.clone();
            one.count = 1;
            one.min_count = None;
            self.replace.relaunching(old);
            out.push(Action::LaunchReplacement {
                group,
                spec: one,
                replaces: old,
                name,
            });
        }
    }

    /// The run's masters, for the record (this one last); what this one made of the
    /// run it took over is added to its entry.
    pub fn set_masters(&mut self, masters: Vec<crate::record::journal::MasterRecord>) {
        self.masters = masters;
    }

    /// The masters as the record shows them.
    pub(super) fn master_records(&self) -> Vec<crate::record::journal::MasterRecord> {
        let mut out = self.masters.clone();
        if let (Some(last), Some(t)) = (out.last_mut(), &self.takeover) {
            last.takeover = Some(t.clone());
        }
        out
    }
}
