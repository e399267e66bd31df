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
//! whole lifecycle (retries, host loss, deadlines, cancel) is tested as data: events in,
//! actions out (see the tests at the bottom and `tests/`).
//!
//! Scheduling rules:
//! - A plain stage runs its tasks in order on every live host of its groups; a failed
//!   task is retried on the same host up to `retries` times.
//! - A sharded stage keeps a queue of items; an idle host takes the next item it has not
//!   failed before; a failed item goes back to the queue (retried from its first task,
//!   on another host where one is live) up to `retries` times. An item whose host is
//!   lost goes back to the queue without counting as a failure.
//! - A host lost while it owes work to a plain stage fails the run.
//! - Any failure stops scheduling, cancels what runs, and still collects logs and
//!   tears down.

use crate::compute::Instance;
use crate::playbook::{ALL_HOSTS, FleetGroup, Loaded, Task};
use crate::record::{
    HostLoss, HostRecord, Phase, PhaseMark, PlaybookInfo, RECORD_VERSION, RunRecord, RunStatus,
    StageRecord, TaskOutcome, TaskRecord, TeardownRecord,
};
use crate::template::{self, HostVars, TemplateContext, Trigger};
use squall_worker::TaskSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// How long running tasks get to end after a cancel before the run moves on (at most;
/// short runs get less, see [`Loaded::stop_grace`]).
pub const STOP_GRACE_MS: u64 = 60_000;
/// How long log collection may take in all before the run moves on to teardown (at
/// most; see [`Loaded::collect_grace`]).
pub const COLLECT_GRACE_MS: u64 = 300_000;

/// A host's position in [`Engine`]'s host list.
pub type HostId = usize;

/// Identifies one attempt of one task of one unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub stage: usize,
    pub unit: usize,
    pub task: usize,
    /// Counts every start of this unit's current task (or item), lost hosts included.
    pub try_no: u32,
}

impl TaskKey {
    /// The agent's task id: unique per host and readable in archives.
    pub fn agent_id(&self) -> String {
        format!(
            "s{}-u{}-t{}-a{}",
            self.stage, self.unit, self.task, self.try_no
        )
    }
}

/// What to run for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCommand {
    /// Run through the agent.
    Exec(TaskSpec),
    /// Put a file from the master on the host.
    Copy {
        src: PathBuf,
        dest: String,
        mode: u32,
    },
}

/// What the engine asks the runner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Launch a fleet group (one call whatever its count).
    Launch { group: String, spec: FleetGroup },
    /// Install the agent on a host.
    Bootstrap { host: HostId },
    /// Start a task on a host and report when it ends.
    StartTask {
        key: TaskKey,
        host: HostId,
        name: String,
        command: TaskCommand,
    },
    /// Cancel a running task.
    CancelTask { key: TaskKey, host: HostId },
    /// Pack the host's logs into the store.
    CollectLogs { host: HostId },
    /// Terminate every instance of the run (by tag).
    Teardown,
    /// Write the final run record.
    WriteRecord(Box<RunRecord>),
}

/// How a task attempt ended, as the runner saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    pub outcome: TaskOutcome,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
}

impl TaskResult {
    /// A result with no exit code or signal: the task never ran, or its end was not
    /// observed (cancelled without an answer, host lost, failed to start).
    pub fn without_exit(
        outcome: TaskOutcome,
        error: Option<String>,
        started_at_ms: u64,
        ended_at_ms: u64,
    ) -> Self {
        TaskResult {
            outcome,
            exit_code: None,
            signal: None,
            error,
            started_at_ms,
            ended_at_ms,
        }
    }
}

/// What happened, as the runner reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Launched {
        group: String,
        instances: Vec<Instance>,
    },
    LaunchFailed {
        group: String,
        error: String,
    },
    Bootstrapped {
        host: HostId,
    },
    BootstrapFailed {
        host: HostId,
        error: String,
    },
    TaskFinished {
        key: TaskKey,
        host: HostId,
        result: TaskResult,
    },
    /// The host died, vanished or stopped answering.
    HostLost {
        host: HostId,
        reason: String,
    },
    LogsCollected {
        host: HostId,
        result: Result<String, String>,
    },
    /// A snapshot of a host's logs was stored while the run went.
    LogsSnapshotted {
        host: HostId,
        key: String,
    },
    TornDown {
        result: Result<usize, String>,
    },
    RecordWritten,
    /// Time passes (deadlines and timeouts are checked).
    Tick,
    /// The user asked to stop (Ctrl-C).
    Cancel {
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct HostState {
    rec: HostRecord,
    index: u32,
    ready: bool,
    bootstrapping: bool,
    collecting: bool,
}

impl HostState {
    fn live(&self) -> bool {
        self.rec.lost.is_none()
    }
}

#[derive(Debug, Clone)]
struct Unit {
    /// The shard item, in sharded stages.
    item: Option<usize>,
    /// The host it runs on (fixed for plain stages).
    host: Option<HostId>,
    next_task: usize,
    try_no: u32,
    failures: u32,
    failed_on: BTreeSet<HostId>,
    running: bool,
    done: bool,
}

#[derive(Debug, Clone)]
struct StageRun {
    index: usize,
    sharded: bool,
    hosts: Vec<HostId>,
    units: Vec<Unit>,
    started_at_ms: u64,
}

/// The run's state machine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    pb: Arc<Loaded>,
    run_id: String,
    trigger: BTreeMap<String, serde_json::Value>,
    started_at_ms: u64,
    deadline_at_ms: u64,
    now_ms: u64,
    phase: Phase,
    phases: Vec<PhaseMark>,
    pending_launches: BTreeSet<String>,
    hosts: Vec<HostState>,
    stage: Option<StageRun>,
    next_stage: usize,
    stage_records: Vec<StageRecord>,
    in_flight: BTreeMap<TaskKey, HostId>,
    /// Rendered names of started tasks, for their records.
    names: BTreeMap<TaskKey, String>,
    tasks: Vec<TaskRecord>,
    /// Set once the run's fate is decided.
    outcome: Option<(RunStatus, Option<String>)>,
    stopping_since_ms: Option<u64>,
    collect_since_ms: Option<u64>,
    teardown: Option<TeardownRecord>,
    ended_at_ms: Option<u64>,
}

impl Engine {
    /// A new run of `pb`, starting at `now_ms`. Call [`Engine::start`] next.
    pub fn new(
        pb: Arc<Loaded>,
        run_id: String,
        trigger: BTreeMap<String, serde_json::Value>,
        now_ms: u64,
    ) -> Engine {
        let deadline_at_ms = now_ms + pb.deadline().as_millis() as u64;
        Engine {
            pb,
            run_id,
            trigger,
            started_at_ms: now_ms,
            deadline_at_ms,
            now_ms,
            phase: Phase::Provision,
            phases: vec![PhaseMark {
                phase: Phase::Provision,
                at_ms: now_ms,
            }],
            pending_launches: BTreeSet::new(),
            hosts: Vec::new(),
            stage: None,
            next_stage: 0,
            stage_records: Vec::new(),
            in_flight: BTreeMap::new(),
            names: BTreeMap::new(),
            tasks: Vec::new(),
            outcome: None,
            stopping_since_ms: None,
            collect_since_ms: None,
            teardown: None,
            ended_at_ms: None,
        }
    }

    /// The first actions: launch every fleet group.
    pub fn start(&mut self) -> Vec<Action> {
        self.pb
            .playbook
            .fleet
            .value
            .iter()
            .map(|(group, spec)| {
                self.pending_launches.insert(group.clone());
                Action::Launch {
                    group: group.clone(),
                    spec: spec.value.clone(),
                }
            })
            .collect()
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Unix milliseconds at which the run is cut off.
    pub fn deadline_at_ms(&self) -> u64 {
        self.deadline_at_ms
    }

    /// The final (or, before the end, provisional) status.
    pub fn status(&self) -> RunStatus {
        match &self.outcome {
            Some((s, _)) => *s,
            None => RunStatus::Running,
        }
    }

    /// The instance behind a host.
    /// Each host's state and running tasks, for the heartbeat.
    pub fn host_beats(&self) -> Vec<crate::record::HostBeat> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| crate::record::HostBeat {
                name: h.rec.name.clone(),
                instance_id: h.rec.instance_id.clone(),
                state: if h.rec.lost.is_some() {
                    "lost"
                } else if h.ready {
                    "ready"
                } else {
                    "bootstrapping"
                }
                .to_owned(),
                running: self
                    .in_flight
                    .iter()
                    .filter(|(_, host)| **host == i)
                    .map(|(k, _)| k.agent_id())
                    .collect(),
            })
            .collect()
    }

    /// Hosts whose logs are worth a snapshot now: bootstrapped and not lost, while the
    /// stages run.
    pub fn snapshot_hosts(&self) -> Vec<(HostId, String)> {
        if self.phase != Phase::Stages {
            return Vec::new();
        }
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.ready && h.live())
            .map(|(i, h)| (i, h.rec.name.clone()))
            .collect()
    }

    pub fn host_instance(&self, host: HostId) -> Option<(&str, &str, &str)> {
        self.hosts.get(host).map(|h| {
            (
                h.rec.name.as_str(),
                h.rec.instance_id.as_str(),
                h.rec.address.as_str(),
            )
        })
    }

    /// Feeds one event at time `now_ms`; returns what to do next.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        match event {
            Event::Launched { group, instances } => self.on_launched(group, instances, &mut out),
            Event::LaunchFailed { group, error } => {
                self.pending_launches.remove(&group);
                self.fail(
                    RunStatus::Failed,
                    format!("launching group `{group}` failed: {error}"),
                    &mut out,
                );
            }
            Event::Bootstrapped { host } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.bootstrapping = false;
                    h.ready = true;
                    h.rec.ready_at_ms = Some(self.now_ms);
                }
            }
            Event::BootstrapFailed { host, error } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.bootstrapping = false;
                }
                self.lose_host(host, format!("bootstrap failed: {error}"), &mut out);
            }
            Event::TaskFinished { key, host, result } => {
                self.on_task_finished(key, host, result, &mut out)
            }
            Event::HostLost { host, reason } => self.lose_host(host, reason, &mut out),
            Event::LogsCollected { host, result } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.collecting = false;
                    match result {
                        Ok(key) => h.rec.archive = Some(key),
                        Err(e) => h.rec.archive_error = Some(e),
                    }
                }
            }
            Event::LogsSnapshotted { host, key } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.rec.snapshot = Some(crate::record::LogSnapshot {
                        key,
                        at_ms: self.now_ms,
                    });
                }
            }
            Event::TornDown { result } => {
                if self.phase == Phase::Teardown {
                    let (terminated, error) = match result {
                        Ok(n) => (n, None),
                        Err(e) => (0, Some(e)),
                    };
                    self.teardown = Some(TeardownRecord {
                        at_ms: self.now_ms,
                        terminated,
                        error,
                    });
                    self.ended_at_ms = Some(self.now_ms);
                    self.enter(Phase::Record);
                    out.push(Action::WriteRecord(Box::new(self.record())));
                }
            }
            Event::RecordWritten => {
                if self.phase == Phase::Record {
                    self.enter(Phase::Done);
                }
            }
            Event::Tick => self.on_tick(&mut out),
            Event::Cancel { reason } => self.fail(RunStatus::Cancelled, reason, &mut out),
        }
        self.advance(&mut out);
        out
    }

    fn enter(&mut self, phase: Phase) {
        if self.phase != phase {
            self.phase = phase;
            self.phases.push(PhaseMark {
                phase,
                at_ms: self.now_ms,
            });
        }
    }

    fn on_launched(&mut self, group: String, instances: Vec<Instance>, out: &mut Vec<Action>) {
        if !self.pending_launches.remove(&group) {
            return;
        }
        let bootstrap = self.outcome.is_none();
        for (i, inst) in instances.into_iter().enumerate() {
            let id = self.hosts.len();
            self.hosts.push(HostState {
                rec: HostRecord {
                    name: format!("{group}-{i}"),
                    group: group.clone(),
                    instance_id: inst.id,
                    address: inst.address,
                    instance_type: inst.instance_type,
                    launched_at_ms: self.now_ms,
                    ready_at_ms: None,
                    lost: None,
                    archive: None,
                    archive_error: None,
                    snapshot: None,
                },
                index: i as u32,
                ready: false,
                bootstrapping: bootstrap,
                collecting: false,
            });
            if bootstrap {
                out.push(Action::Bootstrap { host: id });
            }
        }
        if self.phase == Phase::Provision && self.pending_launches.is_empty() {
            self.enter(Phase::Bootstrap);
        }
    }

    fn on_task_finished(
        &mut self,
        key: TaskKey,
        host: HostId,
        result: TaskResult,
        out: &mut Vec<Action>,
    ) {
        if self.in_flight.remove(&key).is_none() {
            return; // already accounted for (e.g. its host was lost first)
        }
        self.push_task_record(key, host, &result);
        let stopping = self.outcome.is_some();
        let Some(stage) = self.stage.as_mut().filter(|s| s.index == key.stage) else {
            return;
        };
        let retries = self.pb.playbook.stages.value[key.stage].value.retries;
        let n_tasks = self.pb.playbook.stages.value[key.stage]
            .value
            .tasks
            .value
            .len();
        let unit = &mut stage.units[key.unit];
        unit.running = false;
        if stopping {
            return;
        }
        if result.outcome == TaskOutcome::Succeeded {
            unit.next_task += 1;
            if !stage.sharded {
                // A plain stage retries each task on its own budget. A sharded item keeps
                // counting: its retries restart at task 0, and its task ids (which carry
                // `try_no`) must never repeat, or the agent would hand back an old
                // attempt's status instead of running the task again.
                unit.try_no = 0;
                unit.failures = 0;
            }
            if unit.next_task == n_tasks {
                unit.done = true;
            }
            return;
        }
        unit.failures += 1;
        if unit.failures <= retries {
            unit.try_no += 1;
            if stage.sharded {
                unit.failed_on.insert(host);
                unit.host = None;
                unit.next_task = 0;
            }
            return;
        }
        let item = unit.item;
        let attempts = unit.failures;
        let why = describe_failure(&result);
        let task_name = self.task_name(key.stage, key.task);
        let host_name = self.hosts[host].rec.name.clone();
        let stage_name = self.pb.playbook.stages.value[key.stage]
            .value
            .name
            .value
            .clone();
        let item = item.map(|i| format!(", item {i}")).unwrap_or_default();
        let tries = if attempts == 1 {
            String::new()
        } else {
            format!(" after {attempts} attempts")
        };
        self.fail(
            RunStatus::Failed,
            format!("task `{task_name}` failed on {host_name} (stage `{stage_name}`{item}){tries}: {why}"),
            out,
        );
    }

    fn on_tick(&mut self, out: &mut Vec<Action>) {
        let now = self.now_ms;
        match self.phase {
            Phase::Provision | Phase::Bootstrap | Phase::Stages if now >= self.deadline_at_ms => {
                let deadline = crate::playbook::Dur(self.pb.deadline());
                let during = self
                    .stage
                    .as_ref()
                    .map(|s| format!(" during stage `{}`", self.stage_name(s.index)))
                    .unwrap_or_default();
                self.fail(
                    RunStatus::DeadlineExceeded,
                    format!("the run's deadline of {deadline} passed{during}"),
                    out,
                );
            }
            Phase::Stages => {
                if let Some(s) = &self.stage {
                    let st = &self.pb.playbook.stages.value[s.index].value;
                    if let Some(t) = &st.timeout
                        && now >= s.started_at_ms + t.value.0.as_millis() as u64
                    {
                        let msg = format!(
                            "stage `{}` exceeded its timeout of {}",
                            st.name.value, t.value
                        );
                        self.fail(RunStatus::Failed, msg, out);
                    }
                }
            }
            Phase::Stopping
                if self
                    .stopping_since_ms
                    .is_some_and(|t| now >= t + self.pb.stop_grace().as_millis() as u64) =>
            {
                // Tasks that never reported back are recorded as cancelled.
                for (key, host) in std::mem::take(&mut self.in_flight) {
                    let result = TaskResult::without_exit(
                        TaskOutcome::Cancelled,
                        Some("no answer after cancel".into()),
                        now,
                        now,
                    );
                    self.push_task_record(key, host, &result);
                }
                self.pending_launches.clear();
                for h in &mut self.hosts {
                    h.bootstrapping = false;
                }
            }
            Phase::CollectLogs
                if self
                    .collect_since_ms
                    .is_some_and(|t| now >= t + self.pb.collect_grace().as_millis() as u64) =>
            {
                for h in self.hosts.iter_mut().filter(|h| h.collecting) {
                    h.collecting = false;
                    h.rec.archive_error = Some("log collection timed out".into());
                }
            }
            _ => {}
        }
    }

    /// Decides the run's fate (first decision wins) and starts stopping.
    fn fail(&mut self, status: RunStatus, reason: String, out: &mut Vec<Action>) {
        if self.outcome.is_some() || self.phase > Phase::Stopping {
            return;
        }
        self.outcome = Some((status, Some(reason)));
        self.stopping_since_ms = Some(self.now_ms);
        self.enter(Phase::Stopping);
        if let Some(stage) = &self.stage {
            self.stage_records[stage.index].succeeded = Some(false);
            self.stage_records[stage.index].ended_at_ms = Some(self.now_ms);
        }
        for (key, host) in &self.in_flight {
            out.push(Action::CancelTask {
                key: *key,
                host: *host,
            });
        }
    }

    fn lose_host(&mut self, host: HostId, reason: String, out: &mut Vec<Action>) {
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        if h.rec.lost.is_some() {
            return;
        }
        h.rec.lost = Some(HostLoss {
            at_ms: self.now_ms,
            reason: reason.clone(),
        });
        h.bootstrapping = false;
        let name = h.rec.name.clone();
        let lost: Vec<TaskKey> = self
            .in_flight
            .iter()
            .filter(|(_, h)| **h == host)
            .map(|(k, _)| *k)
            .collect();
        for key in lost {
            self.in_flight.remove(&key);
            let result = TaskResult::without_exit(
                TaskOutcome::HostLost,
                Some(reason.clone()),
                self.now_ms,
                self.now_ms,
            );
            self.push_task_record(key, host, &result);
        }
        if self.outcome.is_some() {
            return;
        }
        let Some(stage) = self.stage.as_mut() else {
            return;
        };
        let stage_index = stage.index;
        let mut owed_plain_work = false;
        for unit in stage.units.iter_mut().filter(|u| u.host == Some(host)) {
            unit.running = false;
            if stage.sharded {
                unit.host = None;
                unit.next_task = 0;
                unit.try_no += 1;
            } else if !unit.done {
                owed_plain_work = true;
            }
        }
        if owed_plain_work {
            let stage_name = self.stage_name(stage_index);
            self.fail(
                RunStatus::Failed,
                format!("host {name} was lost during stage `{stage_name}`: {reason}"),
                out,
            );
        }
    }

    /// Moves the run forward as far as it can go without new events.
    fn advance(&mut self, out: &mut Vec<Action>) {
        loop {
            let before = (self.phase, self.next_stage, out.len());
            match self.phase {
                Phase::Provision => {}
                Phase::Bootstrap => {
                    if self.hosts.iter().all(|h| !h.bootstrapping) {
                        self.check_groups_alive(out);
                        if self.outcome.is_none() {
                            self.enter(Phase::Stages);
                        }
                    }
                }
                Phase::Stages => self.schedule(out),
                Phase::Stopping => {
                    let quiet = self.in_flight.is_empty()
                        && self.pending_launches.is_empty()
                        && self.hosts.iter().all(|h| !h.bootstrapping);
                    if quiet {
                        self.start_collect(out);
                    }
                }
                Phase::CollectLogs => {
                    if self.hosts.iter().all(|h| !h.collecting) {
                        self.enter(Phase::Teardown);
                        out.push(Action::Teardown);
                    }
                }
                Phase::Teardown | Phase::Record | Phase::Done => {}
            }
            if (self.phase, self.next_stage, out.len()) == before {
                break;
            }
        }
    }

    fn check_groups_alive(&mut self, out: &mut Vec<Action>) {
        for (group, spec) in &self.pb.playbook.fleet.value {
            let live = self
                .hosts
                .iter()
                .filter(|h| &h.rec.group == group && h.live() && h.ready)
                .count() as u32;
            if live < spec.value.min() {
                let losses: Vec<String> = self
                    .hosts
                    .iter()
                    .filter(|h| &h.rec.group == group)
                    .filter_map(|h| {
                        h.rec
                            .lost
                            .as_ref()
                            .map(|l| format!("{}: {}", h.rec.name, l.reason))
                    })
                    .collect();
                let mut msg = format!(
                    "group `{group}` has {live} ready host(s), fewer than the {} required",
                    spec.value.min()
                );
                if !losses.is_empty() {
                    msg.push_str(&format!("; {}", losses.join("; ")));
                }
                self.fail(RunStatus::Failed, msg, out);
                return;
            }
        }
    }

    fn start_collect(&mut self, out: &mut Vec<Action>) {
        if self.outcome.is_none() {
            self.outcome = Some((RunStatus::Succeeded, None));
        }
        self.enter(Phase::CollectLogs);
        self.collect_since_ms = Some(self.now_ms);
        for (id, h) in self.hosts.iter_mut().enumerate() {
            // A lost host may still hold logs (it may only be cut off): try anyway.
            if h.ready {
                h.collecting = true;
                out.push(Action::CollectLogs { host: id });
            }
        }
    }

    fn schedule(&mut self, out: &mut Vec<Action>) {
        if self.stage.is_none() {
            if self.next_stage == self.pb.playbook.stages.value.len() {
                self.start_collect(out);
                return;
            }
            self.open_stage(out);
            if self.stage.is_none() {
                return;
            }
        }
        let Some(mut stage) = self.stage.take() else {
            return;
        };
        if stage.units.iter().all(|u| u.done) {
            let rec = &mut self.stage_records[stage.index];
            rec.ended_at_ms = Some(self.now_ms);
            rec.succeeded = Some(true);
            self.next_stage = stage.index + 1;
            return;
        }
        let live: Vec<HostId> = stage
            .hosts
            .iter()
            .copied()
            .filter(|h| self.hosts[*h].live())
            .collect();
        if stage.sharded {
            if live.is_empty() {
                let msg = format!(
                    "no live hosts left for stage `{}` ({} of {} items done)",
                    self.stage_name(stage.index),
                    stage.units.iter().filter(|u| u.done).count(),
                    stage.units.len()
                );
                self.stage = Some(stage);
                self.fail(RunStatus::Failed, msg, out);
                return;
            }
            for &host in &live {
                let busy = stage.units.iter().any(|u| u.host == Some(host) && !u.done);
                if busy {
                    continue;
                }
                let pick = stage.units.iter().position(|u| {
                    !u.done
                        && u.host.is_none()
                        && (!u.failed_on.contains(&host)
                            || live.iter().all(|h| *h == host || u.failed_on.contains(h)))
                });
                if let Some(i) = pick {
                    stage.units[i].host = Some(host);
                }
            }
        }
        let mut starts = Vec::new();
        for (ui, unit) in stage.units.iter_mut().enumerate() {
            if unit.done || unit.running {
                continue;
            }
            let Some(host) = unit.host else { continue };
            if !self.hosts[host].live() {
                continue;
            }
            unit.running = true;
            starts.push((
                TaskKey {
                    stage: stage.index,
                    unit: ui,
                    task: unit.next_task,
                    try_no: unit.try_no,
                },
                host,
                unit.item,
            ));
        }
        let stage_index = stage.index;
        self.stage = Some(stage);
        for (key, host, item) in starts {
            match self.render_task(key, host, item) {
                Ok((name, command)) => {
                    self.in_flight.insert(key, host);
                    self.names.insert(key, name.clone());
                    out.push(Action::StartTask {
                        key,
                        host,
                        name,
                        command,
                    });
                }
                Err(e) => {
                    let result = TaskResult::without_exit(
                        TaskOutcome::Failed,
                        Some(e.clone()),
                        self.now_ms,
                        self.now_ms,
                    );
                    self.push_task_record(key, host, &result);
                    let msg = format!(
                        "task `{}` of stage `{}` could not be rendered for {}: {e}",
                        self.task_name(stage_index, key.task),
                        self.stage_name(stage_index),
                        self.hosts[host].rec.name
                    );
                    self.fail(RunStatus::Failed, msg, out);
                    return;
                }
            }
        }
    }

    fn open_stage(&mut self, out: &mut Vec<Action>) {
        let index = self.next_stage;
        let st = &self.pb.playbook.stages.value[index].value;
        let groups: BTreeSet<String> = if st.hosts.value == ALL_HOSTS {
            self.pb.playbook.fleet.value.keys().cloned().collect()
        } else {
            BTreeSet::from([st.hosts.value.clone()])
        };
        let hosts: Vec<HostId> = (0..self.hosts.len())
            .filter(|h| {
                let h = &self.hosts[*h];
                groups.contains(&h.rec.group) && h.live() && h.ready
            })
            .collect();
        let sharded = st.shards.is_some();
        let n_items = st.shards.as_ref().map_or(0, |s| s.value.len());
        let unit = |item, host| Unit {
            item,
            host,
            next_task: 0,
            try_no: 0,
            failures: 0,
            failed_on: BTreeSet::new(),
            running: false,
            done: false,
        };
        let units: Vec<Unit> = if sharded {
            (0..n_items).map(|i| unit(Some(i), None)).collect()
        } else {
            hosts.iter().map(|h| unit(None, Some(*h))).collect()
        };
        self.stage_records.push(StageRecord {
            name: st.name.value.clone(),
            started_at_ms: self.now_ms,
            ended_at_ms: None,
            succeeded: None,
            shards_total: n_items,
            shards_done: 0,
        });
        let name = st.name.value.clone();
        let empty = hosts.is_empty();
        self.stage = Some(StageRun {
            index,
            sharded,
            hosts,
            units,
            started_at_ms: self.now_ms,
        });
        if empty {
            let groups: Vec<String> = groups.into_iter().collect();
            self.fail(
                RunStatus::Failed,
                format!(
                    "no live hosts in group(s) {} for stage `{name}`",
                    groups.join(", ")
                ),
                out,
            );
        }
    }

    fn render_task(
        &self,
        key: TaskKey,
        host: HostId,
        item: Option<usize>,
    ) -> Result<(String, TaskCommand), String> {
        let st = &self.pb.playbook.stages.value[key.stage].value;
        let task: &Task = &st.tasks.value[key.task].value;
        let h = &self.hosts[host];
        let count = self
            .hosts
            .iter()
            .filter(|o| o.rec.group == h.rec.group)
            .count() as u32;
        let item_value = item.and_then(|i| st.shards.as_ref().map(|s| s.value[i].clone()));
        let ctx = TemplateContext {
            vars: self.pb.vars.clone(),
            run_id: self.run_id.clone(),
            host: HostVars {
                name: h.rec.name.clone(),
                index: h.index,
                count,
                group: h.rec.group.clone(),
            },
            item: item_value.clone(),
            trigger: Trigger::Known(self.trigger.clone()),
        };
        let r = |s: &str| template::render(s, &ctx).map_err(|e| e.to_string());
        let name = match &task.name {
            Some(n) => r(&n.value)?,
            None => String::new(), // named below from the rendered command
        };
        if let Some(copy) = &task.copy {
            let mode = copy
                .value
                .mode
                .as_ref()
                .and_then(|m| u32::from_str_radix(m.value.trim_start_matches("0o"), 8).ok())
                .unwrap_or(0o644);
            let (src, dest) = (r(&copy.value.src.value)?, r(&copy.value.dest.value)?);
            let name = or_short(name, &format!("copy {src} -> {dest}"));
            return Ok((
                name,
                TaskCommand::Copy {
                    src: self.pb.base_dir.join(src),
                    dest,
                    mode,
                },
            ));
        }
        let argv = match (&task.shell, &task.command) {
            (Some(sh), _) => vec!["/bin/sh".to_owned(), "-c".to_owned(), r(&sh.value)?],
            (None, Some(cmd)) => cmd
                .value
                .iter()
                .map(|a| r(&a.value))
                .collect::<Result<_, _>>()?,
            (None, None) => return Err("the task has no action".into()),
        };
        let mut env = BTreeMap::new();
        for (k, v) in &task.environment {
            env.insert(k.clone(), r(&v.value)?);
        }
        env.insert("SQUALL_RUN_ID".into(), self.run_id.clone());
        env.insert("SQUALL_HOST".into(), h.rec.name.clone());
        env.insert("SQUALL_HOST_INDEX".into(), h.index.to_string());
        if let Some(v) = item_value {
            env.insert("SQUALL_ITEM".into(), json_scalar(&v));
        }
        let shown = match &task.shell {
            Some(_) => argv[2].clone(),
            None => argv.join(" "),
        };
        Ok((
            or_short(name, &shown),
            TaskCommand::Exec(TaskSpec {
                id: key.agent_id(),
                argv,
                env,
                cwd: Some(PathBuf::from(".")),
                timeout_secs: task.timeout.as_ref().map(|t| t.value.0.as_secs().max(1)),
            }),
        ))
    }

    fn stage_name(&self, stage: usize) -> String {
        self.pb.playbook.stages.value[stage]
            .value
            .name
            .value
            .clone()
    }

    fn task_name(&self, stage: usize, task: usize) -> String {
        let t = &self.pb.playbook.stages.value[stage].value.tasks.value[task].value;
        if let Some(n) = &t.name {
            return n.value.clone();
        }
        let text = match (&t.shell, &t.command, &t.copy) {
            (Some(s), _, _) => s.value.clone(),
            (_, Some(c), _) => c
                .value
                .iter()
                .map(|a| a.value.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            (_, _, Some(c)) => format!("copy {} -> {}", c.value.src.value, c.value.dest.value),
            _ => format!("task {task}"),
        };
        or_short(String::new(), &text)
    }

    fn push_task_record(&mut self, key: TaskKey, host: HostId, r: &TaskResult) {
        let item = self
            .stage
            .as_ref()
            .filter(|s| s.index == key.stage)
            .and_then(|s| s.units.get(key.unit))
            .and_then(|u| u.item);
        if r.outcome == TaskOutcome::Succeeded
            && let Some(stage) = self.stage.as_ref().filter(|s| s.index == key.stage)
            && stage.sharded
            && key.task + 1
                == self.pb.playbook.stages.value[key.stage]
                    .value
                    .tasks
                    .value
                    .len()
        {
            self.stage_records[key.stage].shards_done += 1;
        }
        self.tasks.push(TaskRecord {
            id: key.agent_id(),
            stage: self.stage_name(key.stage),
            host: self.hosts[host].rec.name.clone(),
            task: self
                .names
                .remove(&key)
                .unwrap_or_else(|| self.task_name(key.stage, key.task)),
            item,
            attempt: key.try_no,
            started_at_ms: r.started_at_ms,
            ended_at_ms: r.ended_at_ms,
            duration_ms: r.ended_at_ms.saturating_sub(r.started_at_ms),
            outcome: r.outcome,
            exit_code: r.exit_code,
            signal: r.signal,
            error: r.error.clone(),
        });
    }

    /// The run record as of now (final once the engine reaches `Record`).
    pub fn record(&self) -> RunRecord {
        let (status, reason) = self.outcome.clone().unwrap_or((RunStatus::Running, None));
        RunRecord {
            version: RECORD_VERSION,
            run_id: self.run_id.clone(),
            playbook: PlaybookInfo {
                name: self.pb.playbook.name.value.clone(),
                file: self.pb.file.display().to_string(),
                sha256: sha256_hex(self.pb.source.as_bytes()),
            },
            vars: self.pb.vars.clone(),
            trigger: self.trigger.clone(),
            status,
            reason,
            started_at_ms: self.started_at_ms,
            ended_at_ms: self.ended_at_ms,
            deadline_at_ms: self.deadline_at_ms,
            phases: self.phases.clone(),
            stages: self.stage_records.clone(),
            hosts: self.hosts.iter().map(|h| h.rec.clone()).collect(),
            tasks: self.tasks.clone(),
            teardown: self.teardown.clone(),
        }
    }

    /// A snapshot for progress displays and heartbeats.
    pub fn progress(&self) -> Progress {
        let (stage, stage_index, units_done, units_total, sharded) = match &self.stage {
            Some(s) => (
                Some(self.stage_name(s.index)),
                s.index,
                s.units.iter().filter(|u| u.done).count(),
                s.units.len(),
                s.sharded,
            ),
            None => (None, self.next_stage, 0, 0, false),
        };
        Progress {
            phase: self.phase,
            stage,
            stage_index,
            stages_total: self.pb.playbook.stages.value.len(),
            units_done,
            units_total,
            sharded,
            hosts_live: self.hosts.iter().filter(|h| h.live()).count(),
            hosts_total: self.hosts.len(),
            elapsed_ms: self.now_ms.saturating_sub(self.started_at_ms),
        }
    }
}

/// Where a run is, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub stage: Option<String>,
    pub stage_index: usize,
    pub stages_total: usize,
    /// Hosts done (plain stage) or items done (sharded stage).
    pub units_done: usize,
    pub units_total: usize,
    pub sharded: bool,
    pub hosts_live: usize,
    pub hosts_total: usize,
    pub elapsed_ms: u64,
}

/// `name` if not empty, else the first line of `text` cut to 60 characters.
fn or_short(name: String, text: &str) -> String {
    if !name.is_empty() {
        return name;
    }
    let first = text.trim().lines().next().unwrap_or_default();
    let mut short: String = first.chars().take(60).collect();
    if short.len() < text.trim().len() {
        short.push('…');
    }
    short
}

fn describe_failure(r: &TaskResult) -> String {
    let mut why = match (r.outcome, r.exit_code, r.signal) {
        (TaskOutcome::TimedOut, _, _) => "timed out".to_owned(),
        (TaskOutcome::Cancelled, _, _) => "cancelled".to_owned(),
        (TaskOutcome::HostLost, _, _) => "its host was lost".to_owned(),
        (_, Some(code), _) => format!("exit code {code}"),
        (_, None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "failed".to_owned(),
    };
    if let Some(e) = &r.error {
        why.push_str(": ");
        why.push_str(e);
    }
    why
}

/// A JSON value as an environment variable: strings bare, everything else as JSON.
fn json_scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
