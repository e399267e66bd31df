//! The on-disk side of a task: reading and atomically replacing `status.json`, writing
//! `spec.json`, the `cancel` marker, the `boot_id` record, plus the small process helpers
//! (liveness checks, signalling a process group) that decide whether a recorded task is
//! still alive.
//!
//! It does not decide what a subcommand does with a task; `agent` and `supervisor` do.

use crate::error::{AgentError, Result};
use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use squall_worker::{TaskSpec, TaskState, TaskStatus, task_dir};
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const SPEC_FILE: &str = "spec.json";
/// The task's environment and masks (0600), removed by the supervisor once read and
/// never packed.
pub const PRIVATE_FILE: &str = "private.json";
pub const STATUS_FILE: &str = "status.json";
pub const STDOUT_FILE: &str = "stdout.log";
pub const STDERR_FILE: &str = "stderr.log";
/// A capped stream's ring of its latest bytes while the task runs (`stdout.log.tail`),
/// folded into its log at the end and never archived.
pub const RING_SUFFIX: &str = ".tail";
pub const CANCEL_FILE: &str = "cancel";
/// Created when the task is interrupted (a spot notice); the task reads its path from
/// `$SQUALL_INTERRUPT_FILE`.
pub const INTERRUPT_FILE: &str = "interrupt";
pub const SUPERVISOR_LOG: &str = "supervisor.log";
/// The kernel boot id at the time the supervisor started the task (Linux only); a
/// different boot id now means the host rebooted and every recorded pid is stale.
pub const BOOT_ID_FILE: &str = "boot_id";

/// The error text recorded when a task's supervisor died without writing a final status.
pub const VANISHED: &str = squall_worker::SUPERVISOR_VANISHED;

/// One task's folder under the root.
#[derive(Debug, Clone)]
pub struct TaskDir {
    pub id: String,
    pub dir: PathBuf,
}

impl TaskDir {
    pub fn new(root: &Path, id: &str) -> Self {
        TaskDir {
            id: id.to_owned(),
            dir: task_dir(root, id),
        }
    }

    /// The task's folder if it exists, [`AgentError::UnknownTask`] if not.
    pub fn existing(root: &Path, id: &str) -> Result<Self> {
        let task = TaskDir::new(root, id);
        match fs::metadata(&task.dir) {
            Ok(m) if m.is_dir() => Ok(task),
            Ok(_) => Err(AgentError::UnknownTask {
                id: id.to_owned(),
                root: root.to_owned(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(AgentError::UnknownTask {
                id: id.to_owned(),
                root: root.to_owned(),
            }),
            Err(e) => Err(AgentError::io("reading", &task.dir, e)),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The task's status, `None` while `status.json` does not exist yet.
    pub fn read_status(&self) -> Result<Option<TaskStatus>> {
        let path = self.path(STATUS_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::io("reading", path, e)),
        };
        parse(path, &bytes).map(Some)
    }

    /// Replaces `status.json` atomically: readers see the old or the new record, never
    /// a partial one.
    pub fn write_status(&self, status: &TaskStatus) -> Result<()> {
        let mut bytes = serde_json::to_vec(status).map_err(|source| AgentError::Json {
            action: "serializing",
            path: self.path(STATUS_FILE),
            source,
        })?;
        bytes.push(b'\n');
        self.replace(STATUS_FILE, &bytes)
    }

    /// Writes `spec.json` atomically, with secret values masked; the environment and
    /// the masks themselves go to `private.json`, created 0600 (never readable by
    /// others, not even for a moment).
    pub fn write_spec(&self, spec: &TaskSpec) -> Result<()> {
        let unwritable = |file: &str| {
            let path = self.path(file);
            move |source| AgentError::Json {
                action: "serializing",
                path,
                source,
            }
        };
        if !spec.env.is_empty() || !spec.masks.is_empty() {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let private = squall_worker::Private {
                env: spec.env.clone(),
                masks: spec.masks.clone(),
            };
            let bytes = serde_json::to_vec(&private).map_err(unwritable(PRIVATE_FILE))?;
            // Whole or not at all: through a temporary file, renamed into place.
            let tmp = self.path(&format!("{PRIVATE_FILE}.{}.tmp", std::process::id()));
            let written = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| f.write_all(&bytes))
                .and_then(|()| fs::rename(&tmp, self.path(PRIVATE_FILE)));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(AgentError::io("writing", self.path(PRIVATE_FILE), e));
            }
        }
        let mut bytes = serde_json::to_vec_pretty(&spec.public()).map_err(unwritable(SPEC_FILE))?;
        bytes.push(b'\n');
        self.replace(SPEC_FILE, &bytes)
    }

    /// The spec as `start` was given it: `spec.json` with `private.json`'s
    /// environment and masks, which is removed once read (the supervisor holds them).
    pub fn take_spec(&self) -> Result<TaskSpec> {
        // The private file first: it is removed whatever else goes wrong.
        let private = self.take_private();
        let path = self.path(SPEC_FILE);
        let bytes = fs::read(&path).map_err(|e| AgentError::io("reading", &path, e))?;
        let mut spec: TaskSpec = parse(path, &bytes)?;
        if let Some(private) = private? {
            spec.env = private.env;
            spec.masks = private.masks;
        }
        Ok(spec)
    }

    /// `private.json`, read and removed (`None` when there is none).
    fn take_private(&self) -> Result<Option<squall_worker::Private>> {
        let path = self.path(PRIVATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(AgentError::io("reading", path, e));
            }
        };
        fs::remove_file(&path).map_err(|e| AgentError::io("removing", &path, e))?;
        parse(path, &bytes).map(Some)
    }

    /// Removes `private.json` if it is there (a task that never started).
    pub fn drop_private(&self) {
        let _ = fs::remove_file(self.path(PRIVATE_FILE));
    }

    /// Writes `file` through a temporary `*.tmp` sibling (unique per process, so two
    /// writers never share it) and a rename.
    fn replace(&self, file: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(file);
        let tmp = self.path(&format!("{file}.{}.tmp", std::process::id()));
        fs::write(&tmp, bytes).map_err(|e| AgentError::io("writing", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            AgentError::io("replacing", &path, e)
        })
    }

    pub fn cancel_requested(&self) -> bool {
        self.path(CANCEL_FILE).exists()
    }

    /// Creates the `cancel` marker, holding the grace the task's processes have between
    /// SIGTERM and SIGKILL.
    pub fn request_cancel(&self, grace_secs: u64) -> Result<()> {
        let path = self.path(CANCEL_FILE);
        fs::write(&path, grace_secs.to_string()).map_err(|e| AgentError::io("creating", path, e))
    }

    /// The grace of a requested cancel (`None` when none was requested; a marker
    /// without a number gives the default of 5 s).
    pub fn cancel_grace(&self) -> Option<Duration> {
        let text = fs::read_to_string(self.path(CANCEL_FILE)).ok()?;
        let secs = text.trim().parse::<u64>().unwrap_or(5).min(600);
        Some(Duration::from_secs(secs))
    }

    /// Records the current boot id next to the status (best effort).
    pub fn record_boot_id(&self) {
        if let Some(id) = current_boot_id() {
            let _ = self.replace(BOOT_ID_FILE, id.as_bytes());
        }
    }

    /// Whether the host rebooted since the supervisor recorded its boot id.
    fn rebooted(&self) -> bool {
        let (Some(now), Ok(then)) = (
            current_boot_id(),
            fs::read_to_string(self.path(BOOT_ID_FILE)),
        ) else {
            return false;
        };
        then.trim() != now
    }

    /// Whether the processes behind a `Running` status are all gone: the host rebooted,
    /// or neither the supervisor nor the task's process exists any more.
    pub fn processes_gone(&self, status: &TaskStatus) -> bool {
        self.rebooted() || (!pid_alive(status.supervisor_pid) && !pid_alive(status.pid))
    }

    /// `status` itself unless it says `Running` while its supervisor and task are gone
    /// (host rebooted, supervisor killed): then the record is finalised as `state` with
    /// error [`VANISHED`], so nobody waits forever for a status that will never come.
    pub fn settle_vanished(&self, status: TaskStatus, state: TaskState) -> Result<TaskStatus> {
        if status.state.is_final() || !self.processes_gone(&status) {
            return Ok(status);
        }
        // The supervisor writes its final status before it exits, so a record read
        // after seeing it gone is its last word.
        let latest = self.read_status()?.unwrap_or(status);
        if latest.state.is_final() {
            return Ok(latest);
        }
        let settled = TaskStatus {
            state,
            ended_at_ms: Some(now_ms()),
            exit_code: None,
            signal: None,
            error: Some(VANISHED.to_owned()),
            ..latest
        };
        self.write_status(&settled)?;
        Ok(settled)
    }
}

/// The kernel's boot id, read once per process; `None` off Linux.
fn current_boot_id() -> Option<&'static str> {
    static BOOT_ID: OnceLock<Option<String>> = OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// A recorded pid as a [`Pid`] that is safe to signal: `None` for 0, 1 and values out of
/// range (a process-group kill of pid 1 would mean "every process").
pub fn signalable(pid: Option<u32>) -> Option<Pid> {
    let raw = i32::try_from(pid?).ok()?;
    if raw <= 1 {
        return None;
    }
    Pid::from_raw(raw)
}

/// Whether a process with that pid exists and has not ended (see
/// [`squall_worker::pid_alive`]); pids 0 and 1 are never considered ours.
pub fn pid_alive(pid: Option<u32>) -> bool {
    signalable(pid).is_some_and(|p| squall_worker::pid_alive(p.as_raw_nonzero().get() as u32))
}

/// Sends `signal` to the process group `pgid`; a group that no longer exists is fine.
pub fn signal_group(pgid: Pid, signal: Signal) -> io::Result<()> {
    match rustix::process::kill_process_group(pgid, signal) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The instant `secs` from now; `None` when that is too far to represent (never).
pub fn deadline_after(secs: u64) -> Option<Instant> {
    Instant::now().checked_add(Duration::from_secs(secs))
}

/// Whether `deadline` has passed (`None` never passes).
pub fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Sleeps `step`, but not past `deadline`.
pub fn sleep_until_at_most(step: Duration, deadline: Option<Instant>) {
    let step = match deadline {
        Some(d) => step.min(d.saturating_duration_since(Instant::now())),
        None => step,
    };
    std::thread::sleep(step);
}

/// `bytes` (read from `path`) as JSON.
fn parse<T: serde::de::DeserializeOwned>(path: PathBuf, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| AgentError::Json {
        action: "parsing",
        path,
        source,
    })
}
