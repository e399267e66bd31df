//! The run as a state machine: events in, actions out. It performs no IO.
//!
//! ```text
//! Provision ──all groups launched──> Bootstrap ──all hosts ready──> Stages
//!     │                                  │                            │ every stage done
//!     └────────── failure, deadline, cancel (any phase) ──> Stopping <┘ (or failure, ...)
//!                                          cancel running tasks, wait │
//!                                                                     v
//!                      Done <── Record <── Teardown <── CollectLogs <─┘
//! ```
//!
//! The caller (the runner) executes each [`Action`] with real IO and feeds back what
//! happened as an [`Event`], with the current time. Time is always passed in, so the
//! whole lifecycle (retries, host loss, deadlines, cancel, snapshots, heartbeats) is
//! tested as data: events in, actions out (see `tests/integration/engine.rs`).
//!
//! The parts: [`state`] (each phase's data), [`hosts`] (the host table), [`flight`]
//! (attempts in flight), [`plain`] and [`sharded`] (the schedulers, behind
//! [`stage`]), `schedule` (opening stages and starting their tasks), [`render`] (tasks
//! into commands), [`book`] (the record being kept), [`data`] (what data events mean),
//! `cache` (the item cache's keys, lookups and entries),
//! `ticks` (deadlines, timeouts, grace periods, snapshots) and `views` (heartbeat,
//! record, progress).
//!
//! Scheduling rules:
//! - A plain stage runs its tasks in order on every live host of its groups; a failed
//!   task is retried on the same host up to `retries` times.
//! - A sharded stage keeps a queue of items; an idle host takes the next item it has not
//!   failed before; a failed item goes back to the queue (retried from its first task,
//!   on another host where one is live) up to `retries` times. An item whose host is
//!   lost goes back to the queue without counting as a failure the first time (from
//!   the second, each loss counts one: a poison item cannot loop).
//! - A host lost while it owes work to a plain stage is replaced (`replace`); it fails
//!   the run only when it cannot be. Replacements, spot notices and early release are
//!   `replace`, `interrupt` and `release`.
//! - Any failure stops scheduling, cancels what runs, and still collects logs and
//!   tears down.

pub mod book;
pub mod budget;
mod cache;
pub mod data;
pub mod flight;
pub mod hosts;
mod interrupt;
mod journal;
pub mod plain;
mod release;
pub mod render;
mod replace;
pub mod resume;
mod schedule;
pub mod sharded;
pub mod stage;
pub mod state;
mod ticks;
pub mod types;
mod views;

pub use data::DataOptions;
pub use types::{
    Action, CacheHit, CacheInput, CacheQuery, Dest, Event, Failure, HostId, LaunchedInstance,
    Listed, Notice, Progress, ShardSource, TaskCommand, TaskKey, TaskResult, Transfer,
};

use crate::plan::Plan;
use crate::record::{Phase, RunStatus, TaskOutcome, TeardownRecord};
use book::{Book, Timers};
use flight::{AttemptKind, Flight};
use hosts::HostTable;
use serde_json::Value;
use stage::{StageRun, Verdict};
use state::{Fate, State};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What the engine does besides the run's work: how often it snapshots live hosts'
/// logs and writes heartbeats (neither, by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineOptions {
    pub snapshot_every_ms: Option<u64>,
    pub heartbeat_every_ms: Option<u64>,
    /// How often the journal is flushed (none: no journal is written).
    pub journal_every_ms: Option<u64>,
    /// The master generation running the engine (1 for the first; 0 is taken as 1).
    pub generation: u32,
}

/// The run's state machine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    plan: Arc<Plan>,
    run_id: String,
    trigger: BTreeMap<String, Value>,
    deadline_at_ms: u64,
    now_ms: u64,
    state: State,
    hosts: HostTable,
    flight: Flight,
    book: Book,
    timers: Timers,
    data: DataOptions,
    moved: data::Moved,
    cache: cache::CacheBook,
    replace: replace::Replacements,
    /// Interrupted items whose checkpoints are being fetched, by item.
    salvage: BTreeMap<usize, interrupt::Salvage>,
    /// Hosts being released early (their logs collected, then terminated).
    releasing: BTreeSet<HostId>,
    journal: journal::Journal,
    /// What an earlier master did, in a resumed run.
    seeds: Option<resume::Seeds>,
    /// What this master made of the run it took over.
    takeover: Option<crate::record::journal::Takeover>,
    /// The run's masters, for the record.
    masters: Vec<crate::record::journal::MasterRecord>,
    /// The run's secret values (for rendering; masked in everything the engine shows).
    secrets: Arc<crate::plan::secrets::Secrets>,
}

impl Engine {
    /// A new run of `plan`, starting at `now_ms`, with no snapshots or heartbeats. Call
    /// [`Engine::start`] next.
    pub fn new(
        plan: Arc<Plan>,
        run_id: String,
        trigger: BTreeMap<String, Value>,
        now_ms: u64,
    ) -> Engine {
        Engine::with_options(plan, run_id, trigger, now_ms, EngineOptions::default())
    }

    /// A new run of `plan` with `options`.
    pub fn with_options(
        plan: Arc<Plan>,
        run_id: String,
        trigger: BTreeMap<String, Value>,
        now_ms: u64,
        options: EngineOptions,
    ) -> Engine {
        let deadline_at_ms = now_ms + plan.deadline.as_millis() as u64;
        let snapshot_every_ms = options.snapshot_every_ms.filter(|ms| *ms > 0);
        let data = DataOptions {
            run_files: crate::record::keys::files_prefix(&run_id)
                .trim_end_matches('/')
                .to_owned(),
            allow_absolute_sources: true,
            use_cache: true,
        };
        Engine {
            plan,
            data,
            moved: data::Moved::default(),
            cache: cache::CacheBook::default(),
            replace: replace::Replacements::default(),
            salvage: BTreeMap::new(),
            releasing: BTreeSet::new(),
            journal: journal::Journal::new(options.journal_every_ms, options.generation.max(1)),
            seeds: None,
            takeover: None,
            masters: Vec::new(),
            secrets: Arc::default(),
            run_id,
            trigger,
            deadline_at_ms,
            now_ms,
            state: State::Provision {
                pending: BTreeSet::new(),
            },
            hosts: HostTable::default(),
            flight: Flight::default(),
            book: Book::new(now_ms),
            timers: Timers {
                snapshot_every_ms,
                next_snapshot_ms: now_ms + snapshot_every_ms.unwrap_or(0),
                heartbeat_every_ms: options.heartbeat_every_ms,
                last_beat: None,
            },
        }
    }

    /// Where the run keeps its data (by default `run.files` is the store key prefix,
    /// absolute sources are allowed and the cache is used).
    pub fn with_data(mut self, data: DataOptions) -> Engine {
        self.data = data;
        self
    }

    /// The run's secret values, for `{{ secrets.NAME }}` (none by default).
    pub fn with_secrets(mut self, secrets: Arc<crate::plan::secrets::Secrets>) -> Engine {
        self.secrets = secrets;
        self
    }

    /// The first actions: a heartbeat (when heartbeats are on), then launch every
    /// fleet group.
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.beat(&mut out);
        if self.seeds.is_some() {
            self.start_resumed(&mut out);
            self.advance(&mut out);
            self.flush_journal(true, &mut out);
            self.journal_ahead_of_starts(&mut out);
            return out;
        }
        self.journal.note(crate::record::journal::Entry::Began {
            started_at_ms: self.book.started_at_ms,
            deadline_at_ms: self.deadline_at_ms,
        });
        let mut pending = BTreeSet::new();
        for (group, spec) in &self.plan.fleet {
            pending.insert(group.clone());
            out.push(Action::Launch {
                group: group.clone(),
                spec: spec.clone(),
            });
        }
        if let State::Provision { pending: p } = &mut self.state {
            *p = pending;
        }
        self.flush_journal(true, &mut out);
        out
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done { .. })
    }

    /// Unix milliseconds at which the run is cut off.
    pub fn deadline_at_ms(&self) -> u64 {
        self.deadline_at_ms
    }

    /// The final (or, before the end, provisional) status.
    pub fn status(&self) -> RunStatus {
        self.state.fate().map_or(RunStatus::Running, |f| f.status)
    }

    /// How many hosts the run has had.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// The name of a host (`?` for an unknown id).
    pub fn host_name(&self, host: HostId) -> &str {
        self.hosts.name(host)
    }

    /// Feeds one event at time `now_ms`; returns what to do next.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        match event {
            Event::Launched { group, instances } => self.on_launched(&group, instances, &mut out),
            Event::LaunchFailed { group, error } => {
                if let State::Provision { pending } | State::Stopping { pending, .. } =
                    &mut self.state
                {
                    pending.remove(&group);
                }
                self.fail(
                    RunStatus::Failed,
                    format!("launching group `{group}` failed: {error}"),
                    &mut out,
                );
            }
            Event::Replaced { replaces, instance } => {
                self.on_replaced(replaces, instance, &mut out)
            }
            Event::ReplacementFailed { replaces, error } => {
                self.on_replacement_failed(replaces, error, &mut out)
            }
            Event::Interrupted { host, notice } => self.on_interrupted(host, notice, &mut out),
            Event::Released {
                host,
                archive,
                terminated,
            } => self.on_released(host, archive, terminated),
            Event::Bootstrapped { host } => {
                self.adopted(host, true);
                self.hosts.bootstrapped(host, self.now_ms);
                self.start_replay(host, &mut out);
            }
            Event::BootstrapFailed { host, error } => {
                self.adopted(host, false);
                self.hosts.bootstrap_failed(host);
                self.lose_host(host, format!("bootstrap failed: {error}"), &mut out);
            }
            Event::TaskFinished { key, host, result } => {
                self.on_task_finished(key, host, result, &mut out)
            }
            Event::HostLost { host, reason } => self.lose_host(host, reason, &mut out),
            Event::LogsCollected { host, result } => self.on_collected(host, result),
            Event::LogsSnapshotted { host, result } => {
                self.hosts.snapshotted(host, result.ok(), self.now_ms)
            }
            Event::TornDown { result } => self.on_torn_down(result, &mut out),
            Event::RecordWritten => {
                if let State::Record { fate } = &self.state {
                    let fate = fate.clone();
                    self.enter(State::Done { fate });
                }
            }
            Event::FetchListed { key, host, files } => {
                self.on_fetch_listed(key, host, files, &mut out)
            }
            Event::FilesStored { key, host, files } => self.on_files_stored(key, host, files),
            Event::ShardsResolved { stage, result } => {
                self.on_shards_resolved(stage, result, &mut out)
            }
            Event::CacheAnswered {
                stage,
                unit,
                cache_key,
                hit,
            } => self.on_cache_answered(stage, unit, cache_key, hit, &mut out),
            Event::Tick => self.on_tick(&mut out),
            Event::Cancel { reason } => self.fail(RunStatus::Cancelled, reason, &mut out),
        }
        self.advance(&mut out);
        self.beat(&mut out);
        self.flush_journal_ahead(&mut out);
        out
    }

    /// The stage that is running, if the stages are.
    fn stage_mut(&mut self) -> Option<&mut StageRun> {
        match &mut self.state {
            State::Stages { stage, .. } => stage.as_mut(),
            _ => None,
        }
    }

    /// Moves to `state`, marking the phase when it changes.
    fn enter(&mut self, state: State) {
        self.book.mark(state.phase(), self.now_ms);
        self.state = state;
    }

    fn on_launched(
        &mut self,
        group: &str,
        instances: Vec<LaunchedInstance>,
        out: &mut Vec<Action>,
    ) {
        let (State::Provision { pending } | State::Stopping { pending, .. }) = &mut self.state
        else {
            return;
        };
        if !pending.remove(group) {
            return;
        }
        let provisioning_done = pending.is_empty();
        let bootstrap = !self.state.decided();
        for (i, inst) in instances.into_iter().enumerate() {
            let id = self
                .hosts
                .add(group, i as u32, inst, self.now_ms, bootstrap);
            if bootstrap {
                out.push(Action::Bootstrap { host: id });
            }
        }
        if provisioning_done && matches!(self.state, State::Provision { .. }) {
            self.enter(State::Bootstrap);
        }
    }

    pub(super) fn on_task_finished(
        &mut self,
        key: TaskKey,
        host: HostId,
        result: TaskResult,
        out: &mut Vec<Action>,
    ) {
        if self.flight.get(&key).is_some_and(|a| a.host != host) {
            return; // an answer for an attempt another host's replaced
        }
        let Some(attempt) = self.flight.remove(&key) else {
            return; // already accounted for (e.g. its host was lost first)
        };
        let mut result = result;
        let interrupted = attempt.interrupted && result.outcome != TaskOutcome::Succeeded;
        if interrupted {
            result.outcome = TaskOutcome::Interrupted;
        }
        self.book
            .task(key, &attempt, self.hosts.name(host), &result);
        match attempt.kind {
            AttemptKind::Replay => return self.replay_finished(key, host, &result, out),
            AttemptKind::Salvage => return self.salvage_finished(key, &result, out),
            AttemptKind::Stage if interrupted => {
                if !self.state.decided() {
                    self.interrupted_finished(key, host, out);
                }
                return;
            }
            AttemptKind::Stage => {}
        }
        let Some(stage) = self.stage_mut().filter(|s| s.index == key.stage) else {
            return; // stopping: nothing more is scheduled
        };
        if let stage::Scheduler::Plain(p) = &stage.sched
            && p.host_of(key.unit) != Some(host)
        {
            return; // the unit moved to a replacement meanwhile: its result is only recorded
        }
        let succeeded = result.outcome == TaskOutcome::Succeeded;
        let verdict = stage.finished(key.unit, host, succeeded);
        if succeeded && stage.unit_done(key.unit) {
            self.unit_completed(key.stage, key.unit);
        }
        let Verdict::GiveUp { attempts, item } = verdict else {
            if succeeded
                && attempt.completes_item
                && let Some(write) = self.cache_entry_for(key.stage, key.unit)
            {
                out.push(write);
            }
            return;
        };
        let st = &self.plan.stages[key.stage];
        let task_name = st.tasks[key.task].written_name();
        let item = item.map(|i| format!(", item {i}")).unwrap_or_default();
        let tries = if attempts == 1 {
            String::new()
        } else {
            format!(" after {attempts} attempts")
        };
        let msg = format!(
            "task `{task_name}` failed on {} (stage `{}`{item}){tries}: {}",
            self.hosts.name(host),
            st.name,
            result.describe_failure()
        );
        self.fail(RunStatus::Failed, msg, out);
    }

    fn on_collected(&mut self, host: HostId, result: Result<String, Failure>) {
        if let State::Collect { collecting, .. } = &mut self.state {
            collecting.remove(&host);
        }
        if let Some(h) = self.hosts.get_mut(host) {
            match result {
                Ok(key) => h.rec.archive = Some(key),
                Err(e) => h.rec.archive_error = Some(e.0),
            }
        }
    }

    fn on_torn_down(&mut self, result: Result<usize, Failure>, out: &mut Vec<Action>) {
        let State::Teardown { fate } = &self.state else {
            return;
        };
        let fate = fate.clone();
        let (terminated, error) = match result {
            Ok(n) => (n, None),
            Err(e) => (0, Some(e.0)),
        };
        self.book.teardown = Some(TeardownRecord {
            at_ms: self.now_ms,
            terminated,
            error,
        });
        self.book.ended_at_ms = Some(self.now_ms);
        self.enter(State::Record { fate });
        self.flush_journal(true, out);
        out.push(Action::WriteRecord(Box::new(self.record())));
    }

    /// Decides the run's fate (the first decision wins) and starts stopping.
    fn fail(&mut self, status: RunStatus, reason: String, out: &mut Vec<Action>) {
        if self.state.decided() {
            return;
        }
        let pending = match std::mem::replace(&mut self.state, State::Bootstrap) {
            State::Provision { pending } => pending,
            State::Stages {
                stage: Some(stage), ..
            } => {
                self.book.end_stage(stage.index, self.now_ms, false);
                BTreeSet::new()
            }
            _ => BTreeSet::new(),
        };
        self.enter(State::Stopping {
            fate: Fate {
                status,
                reason: Some(reason),
            },
            since_ms: self.now_ms,
            pending,
        });
        for (key, attempt) in self.flight.iter() {
            out.push(Action::CancelTask {
                key: *key,
                host: attempt.host,
            });
        }
    }

    /// Moves the run forward as far as it can go without new events.
    fn advance(&mut self, out: &mut Vec<Action>) {
        loop {
            let moved = match &self.state {
                State::Provision { .. } | State::Teardown { .. } => false,
                State::Record { .. } | State::Done { .. } => false,
                State::Bootstrap => {
                    if self.hosts.none_bootstrapping() {
                        self.check_groups_alive(out);
                        if !self.state.decided() {
                            self.enter(State::Stages {
                                stage: None,
                                next: 0,
                            });
                        }
                        true
                    } else {
                        false
                    }
                }
                State::Stages { .. } => self.schedule(out),
                State::Stopping { fate, pending, .. } => {
                    let quiet = self.flight.is_empty()
                        && pending.is_empty()
                        && self.replace.none_launching()
                        && self.hosts.none_bootstrapping();
                    if quiet {
                        let fate = fate.clone();
                        self.start_collect(fate, out);
                    }
                    quiet
                }
                State::Collect {
                    fate, collecting, ..
                } => {
                    let done = collecting.is_empty();
                    if done {
                        let fate = fate.clone();
                        self.enter(State::Teardown { fate });
                        // The journal says the fate before the instances end.
                        self.flush_journal(true, out);
                        out.push(Action::Teardown);
                    }
                    done
                }
            };
            if !moved {
                break;
            }
        }
    }

    fn start_collect(&mut self, fate: Fate, out: &mut Vec<Action>) {
        // A lost host may still hold logs (it may only be cut off): try anyway. Hosts
        // being released are collected by their release.
        let mut collecting = self.hosts.ever_ready();
        for host in &collecting {
            out.push(Action::CollectLogs { host: *host });
        }
        collecting.extend(self.releasing.iter().copied());
        self.enter(State::Collect {
            fate,
            since_ms: self.now_ms,
            collecting,
        });
    }
}
