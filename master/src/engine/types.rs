//! The engine's vocabulary: the [`Event`]s it is fed, the [`Action`]s it asks for, and
//! the small values both carry (task keys, commands, results, progress).
//!
//! Plain data. What each event does to the run is decided in [`super::Engine::handle`].

use crate::record::{Heartbeat, Phase, RunRecord, TaskOutcome};
use squall_worker::TaskSpec;
use std::path::PathBuf;

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
    Launch {
        group: String,
        spec: crate::plan::FleetGroup,
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
    /// Pack the host's logs into the store (its final archive).
    CollectLogs { host: HostId },
    /// Store a snapshot of a live host's logs while the stages run (so a host lost later
    /// keeps its logs up to here).
    SnapshotLogs { host: HostId },
    /// Write the heartbeat (`status.json`). Heartbeats are written in order.
    Heartbeat(Box<Heartbeat>),
    /// Terminate every instance of the run (by tag).
    Teardown,
    /// Write the final run record.
    WriteRecord(Box<RunRecord>),
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
    /// Time passes (deadlines, timeouts, snapshots and heartbeats are checked).
    Tick,
    /// The user asked to stop (Ctrl-C).
    Cancel {
        reason: String,
    },
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
