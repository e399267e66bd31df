//! The run record (`runs/RUN_ID/run.json`): the serialized shape of how a run went.
//!
//! Plain data with serde. The engine fills it in ([`crate::engine::Engine::record`]);
//! the runner writes it to the store. Reading and presenting records to users is
//! [`crate::inspect`]'s job.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the record format; bumped on incompatible changes.
pub const RECORD_VERSION: u32 = 1;

/// How a run ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    DeadlineExceeded,
    Cancelled,
    /// The master vanished; recorded by a later sweep.
    Abandoned,
    /// No master could be started: the launch was refused for good, or failed on every
    /// delivery of its trigger. Nothing ran.
    #[serde(rename = "launch-failed")]
    LaunchFailed,
    /// The run's estimated spend reached its `budget_usd`.
    BudgetExceeded,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::DeadlineExceeded => "deadline_exceeded",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Abandoned => "abandoned",
            RunStatus::LaunchFailed => "launch-failed",
            RunStatus::BudgetExceeded => "budget_exceeded",
        }
    }
}

/// The phases of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Provision,
    Bootstrap,
    Stages,
    /// Cancelling what runs after a failure, the deadline or a cancel.
    Stopping,
    CollectLogs,
    Teardown,
    Record,
    Done,
}

/// `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub version: u32,
    pub run_id: String,
    pub playbook: PlaybookInfo,
    pub vars: BTreeMap<String, serde_json::Value>,
    pub trigger: BTreeMap<String, serde_json::Value>,
    pub status: RunStatus,
    /// Why the run did not succeed.
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub deadline_at_ms: u64,
    pub phases: Vec<PhaseMark>,
    pub stages: Vec<StageRecord>,
    pub hosts: Vec<HostRecord>,
    pub tasks: Vec<TaskRecord>,
    pub teardown: Option<TeardownRecord>,
    /// Every file the run's fetches stored (or reused from the cache).
    #[serde(default)]
    pub files: Vec<super::FileRecord>,
    /// Every replacement asked for a lost (or interrupted) worker, launched or not.
    #[serde(default)]
    pub replacements: Vec<ReplacementRecord>,
    /// Instance-hours not paid for because workers no later stage needed were released
    /// before the run ended.
    #[serde(default)]
    pub instance_hours_saved: f64,
    /// The run's masters, when more than one ran it: each generation, when and why it
    /// took over, and what it adopted, re-attached and re-ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masters: Vec<super::journal::MasterRecord>,
}

impl RunRecord {
    /// The record of a run that ended before its master ran it (rejected by the
    /// launcher, or found abandoned by a sweep): no stages, hosts or tasks.
    pub fn ended_before_start(
        run_id: &str,
        playbook_file: &str,
        status: RunStatus,
        reason: String,
        at_ms: u64,
    ) -> RunRecord {
        RunRecord {
            version: RECORD_VERSION,
            run_id: run_id.to_owned(),
            playbook: PlaybookInfo {
                name: String::new(),
                file: playbook_file.to_owned(),
                sha256: String::new(),
            },
            vars: BTreeMap::new(),
            trigger: BTreeMap::new(),
            status,
            reason: Some(reason),
            started_at_ms: at_ms,
            ended_at_ms: Some(at_ms),
            deadline_at_ms: at_ms,
            phases: Vec::new(),
            stages: Vec::new(),
            hosts: Vec::new(),
            tasks: Vec::new(),
            teardown: None,
            files: Vec::new(),
            replacements: Vec::new(),
            instance_hours_saved: 0.0,
            masters: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybookInfo {
    pub name: String,
    pub file: String,
    /// sha256 of the playbook text, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseMark {
    pub phase: Phase,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub succeeded: Option<bool>,
    /// Number of shard items (0 when the stage is not sharded).
    pub shards_total: usize,
    pub shards_done: usize,
    /// Where its items came from, when they were listed from data.
    #[serde(default)]
    pub items: Option<super::ItemsRecord>,
    /// Items served from the cache instead of run.
    #[serde(default)]
    pub cached: Vec<usize>,
    /// Anything worth saying about how the stage went (e.g. an empty listing).
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub group: String,
    pub instance_id: String,
    pub address: String,
    /// The machine type, when the provider has one.
    #[serde(default)]
    pub instance_type: Option<String>,
    pub launched_at_ms: u64,
    pub ready_at_ms: Option<u64>,
    /// Set when the host died, was cut off or failed to bootstrap.
    pub lost: Option<HostLoss>,
    /// Store key of the host's log archive, once collected.
    pub archive: Option<String>,
    pub archive_error: Option<String>,
    /// The latest snapshot of the host's logs taken while the run went (what is kept
    /// of a host lost before the final collection).
    #[serde(default)]
    pub snapshot: Option<LogSnapshot>,
    /// The host this one replaced, and why (`GROUP-INDEX-rK` hosts).
    #[serde(default)]
    pub replaces: Option<Replaced>,
    /// A spot interruption notice or rebalance recommendation its agent reported.
    #[serde(default)]
    pub interruption: Option<InterruptionRecord>,
    /// When it was released early (logs collected, instance terminated) because no
    /// later stage needed it.
    #[serde(default)]
    pub released_at_ms: Option<u64>,
}

/// Which host a replacement took the place of, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    pub host: String,
    pub reason: String,
}

/// What a worker's agent read from its instance's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptionRecord {
    /// `termination` (the two-minute spot notice) or `rebalance` (a recommendation).
    pub kind: String,
    pub at_ms: u64,
}

/// One replacement asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacementRecord {
    /// The host it replaces.
    pub replaces: String,
    /// The name it was given (`GROUP-INDEX-rK`).
    pub name: String,
    pub reason: String,
    pub asked_at_ms: u64,
    /// The instance, once launched.
    pub instance_id: Option<String>,
    /// Why it could not be launched.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSnapshot {
    pub key: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLoss {
    pub at_ms: u64,
    pub reason: String,
}

/// How one task attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// Its host was lost while it ran.
    HostLost,
    /// Stopped for a spot interruption notice (its item went back to the queue,
    /// without counting as a failure).
    Interrupted,
}

/// One attempt of one task on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The agent's task id (the folder in the host's archive).
    pub id: String,
    pub stage: String,
    pub host: String,
    pub task: String,
    /// Index of the shard item, in sharded stages.
    pub item: Option<usize>,
    pub attempt: u32,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    pub duration_ms: u64,
    pub outcome: TaskOutcome,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeardownRecord {
    pub at_ms: u64,
    pub terminated: usize,
    pub error: Option<String>,
}
