//! The engine's vocabulary: the [`Event`]s it is fed, the [`Action`]s it asks for, and
//! the small values both carry (task keys, commands, results, progress).
//!
//! Plain data. What each event does to the run is decided in [`super::Engine::handle`].

use crate::plan::url::{DataUrl, FetchDest};
use crate::record::{CacheEntry, Heartbeat, ItemsFile, Phase, RunRecord, StoredFile, TaskOutcome};
use serde_json::Value;
use squall_worker::{GlobMatch, TaskSpec};

/// A host's position in the engine's host table (in the order hosts were launched).
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
    /// Put a file, or a folder's files, on the host (streamed by the master).
    Copy {
        src: DataUrl,
        dest: String,
        mode: u32,
        /// A missing source is not an error.
        optional: bool,
    },
    /// List the host's files matching `pattern`; the engine then asks for them
    /// ([`Action::StoreFiles`]) once it has checked where they go.
    Fetch {
        pattern: String,
        dest: FetchDest,
        optional: bool,
    },
}

/// Where a shard stage's items are listed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSource {
    /// One item per object under a prefix (or file under a folder).
    Objects(DataUrl),
    /// One item per non-empty line.
    Lines(DataUrl),
}

/// A fetched file's destination, decided by the engine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    /// A key of the run's own store (`runs/ID/files/...`).
    Run(String),
    /// An object in any bucket.
    S3 { bucket: String, key: String },
}

impl Dest {
    /// How the record names it: the store key, or an `s3://` URL.
    pub fn label(&self) -> String {
        match self {
            Dest::Run(key) => key.clone(),
            Dest::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }
}

/// One host file to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The file on the host.
    pub from: String,
    pub size: u64,
    pub to: Dest,
}

/// Items listed for a sharded stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub items: Vec<Value>,
    /// Where the items were also written (when there are more than the record keeps).
    pub file: Option<ItemsFile>,
}

/// An item found in the cache, its files copied into this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHit {
    /// The run that computed it.
    pub from_run: String,
    pub files: Vec<StoredFile>,
}

/// An input of a cached item: how the key names it (the same in every run) and where
/// its identity is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInput {
    pub label: String,
    pub url: DataUrl,
}

/// What a cache lookup needs: the key's part the engine knows (the rendered tasks),
/// and the inputs whose identities complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheQuery {
    pub material: String,
    pub inputs: Vec<CacheInput>,
    /// Look the key up (false under `--no-cache`: the key is only computed, so the
    /// item's fresh entry replaces the old one).
    pub lookup: bool,
}

/// What the engine asks the runner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Launch a fleet group (one call whatever its count).
    Launch {
        group: String,
        spec: crate::plan::FleetGroup,
    },
    /// Launch one instance of `group` to replace host `replaces`, named `name`.
    LaunchReplacement {
        group: String,
        spec: crate::plan::FleetGroup,
        replaces: HostId,
        name: String,
    },
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
    /// Stop a task for a spot interruption: create its `$SQUALL_INTERRUPT_FILE`, SIGTERM
    /// its process group, SIGKILL after `grace_ms`; then report it ended.
    InterruptTask {
        key: TaskKey,
        host: HostId,
        grace_ms: u64,
    },
    /// Collect a host's logs (its final archive), then terminate its instance: no
    /// later stage needs it.
    Release { host: HostId },
    /// Pack the host's logs into the store (its final archive).
    CollectLogs { host: HostId },
    /// Store a snapshot of a live host's logs while the stages run (so a host lost later
    /// keeps its logs up to here).
    SnapshotLogs { host: HostId },
    /// Write the heartbeat (`status.json`). Heartbeats are written in order.
    Heartbeat(Box<Heartbeat>),
    /// List a sharded stage's items from data.
    ResolveShards { stage: usize, source: ShardSource },
    /// Stream a fetch's files from the host into the store, then report the task.
    StoreFiles {
        key: TaskKey,
        host: HostId,
        files: Vec<Transfer>,
    },
    /// Look an item up in the cache; on a hit, reuse its files (copied into this run).
    LookupCache {
        stage: usize,
        unit: usize,
        query: CacheQuery,
    },
    /// Write a cache entry for an item that succeeded.
    WriteCache { entry: Box<CacheEntry> },
    /// Terminate every instance of the run (by tag).
    Teardown,
    /// Write the final run record.
    WriteRecord(Box<RunRecord>),
    /// Append a batch to the run's journal (in order: each batch after the last).
    Journal(Box<crate::record::journal::Batch>),
}

/// Why something the runner did failed, as text for the record (the runner renders the
/// error with its whole cause chain).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

/// An instance the runner launched, as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchedInstance {
    pub id: String,
    /// Where the transport connects.
    pub address: String,
    /// The provider's machine type, when it has one.
    pub instance_type: Option<String>,
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

    /// Why the attempt failed, for people: `exit code 3: ...`, `timed out`, ...
    pub fn describe_failure(&self) -> String {
        let mut why = match (self.outcome, self.exit_code, self.signal) {
            (TaskOutcome::TimedOut, _, _) => "timed out".to_owned(),
            (TaskOutcome::Cancelled, _, _) => "cancelled".to_owned(),
            (TaskOutcome::HostLost, _, _) => "its host was lost".to_owned(),
            (_, Some(code), _) => format!("exit code {code}"),
            (_, None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "failed".to_owned(),
        };
        if let Some(e) = &self.error {
            why.push_str(": ");
            why.push_str(e);
        }
        why
    }
}

/// What happened, as the runner reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Launched {
        group: String,
        instances: Vec<LaunchedInstance>,
    },
    LaunchFailed {
        group: String,
        error: String,
    },
    /// A replacement of host `replaces` was launched.
    Replaced {
        replaces: HostId,
        instance: LaunchedInstance,
    },
    /// A replacement of host `replaces` could not be launched.
    ReplacementFailed {
        replaces: HostId,
        error: String,
    },
    /// A host's agent read a spot interruption notice (or a rebalance recommendation)
    /// from its instance's metadata.
    Interrupted {
        host: HostId,
        notice: Notice,
    },
    /// A released host's logs were collected (the archive's key, or why not) and its
    /// instance terminated (or why not).
    Released {
        host: HostId,
        archive: Result<String, Failure>,
        terminated: Result<(), Failure>,
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
    /// The final archive of a host's logs was stored (its key), or not.
    LogsCollected {
        host: HostId,
        result: Result<String, Failure>,
    },
    /// A snapshot of a host's logs was stored while the run went (its key), or not.
    LogsSnapshotted {
        host: HostId,
        result: Result<String, Failure>,
    },
    /// The run's instances were terminated (how many), or not.
    TornDown {
        result: Result<usize, Failure>,
    },
    RecordWritten,
    /// A fetch's glob matched these files on its host.
    FetchListed {
        key: TaskKey,
        host: HostId,
        files: Vec<GlobMatch>,
    },
    /// A fetch's files were stored (reported before its `TaskFinished`).
    FilesStored {
        key: TaskKey,
        host: HostId,
        files: Vec<StoredFile>,
    },
    /// A sharded stage's items were listed, or not.
    ShardsResolved {
        stage: usize,
        result: Result<Listed, Failure>,
    },
    /// A cache lookup's answer: the item's cache key, and (on a hit) the files reused.
    CacheAnswered {
        stage: usize,
        unit: usize,
        cache_key: String,
        hit: Option<CacheHit>,
    },
    /// Time passes (deadlines, timeouts, snapshots and heartbeats are checked).
    Tick,
    /// The user asked to stop (Ctrl-C).
    Cancel {
        reason: String,
    },
}

/// What the instance's metadata said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The spot interruption notice: the instance goes in about two minutes.
    Termination,
    /// A rebalance recommendation: the instance is at elevated risk of interruption.
    Rebalance,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Termination => "termination",
            Notice::Rebalance => "rebalance",
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
