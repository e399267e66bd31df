//! The client-side subcommands the master calls: `start`, `status`, `wait` and `cancel`.
//!
//! Each one is short-lived and works only through a task's files and signals: `start`
//! creates the task folder and launches a detached supervisor (see `supervisor`), the
//! others read `status.json` and signal the task's process group. None of them runs a
//! task itself or outlives the call; none of them prints (they return statuses to `main`).

use crate::error::{AgentError, Result, chain};
use crate::store::{
    SUPERVISOR_LOG, TaskDir, deadline_after, now_ms, passed, signal_group, signalable,
    sleep_until_at_most,
};
use rustix::process::Signal;
use squall_worker::{TASKS_DIR, TaskSpec, TaskState, TaskStatus, valid_task_id};
use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long `start` waits for a fresh supervisor to report the task's first status.
const START_TIMEOUT_SECS: u64 = 10;
/// How long `start` waits for the status of a task some earlier `start` created.
const REATTACH_TIMEOUT_SECS: u64 = 5;
/// How long `cancel` waits for the final status after SIGKILL.
const KILL_WAIT_SECS: u64 = 5;

/// A usage error unless `id` is a valid task id.
pub fn check_id(id: &str) -> Result<()> {
    if valid_task_id(id) {
        Ok(())
    } else {
        Err(AgentError::Usage(format!(
            "invalid task id `{id}` (expected 1 to 128 of [A-Za-z0-9._-])"
        )))
    }
}

/// `start`: launches the task detached and returns its first status. For an id that
/// already exists, starts nothing and returns the existing task's status.
pub fn start(root: &Path, spec: &TaskSpec) -> Result<TaskStatus> {
    check_id(&spec.id)?;
    if spec.argv.is_empty() {
        return Err(AgentError::Usage(format!(
            "task `{}` has no command (expected `-- PROGRAM [ARG]...`)",
            spec.id
        )));
    }
    let tasks = root.join(TASKS_DIR);
    fs::create_dir_all(&tasks).map_err(|e| AgentError::io("creating", &tasks, e))?;
    let task = TaskDir::new(root, &spec.id);
    match fs::create_dir(&task.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return reattach(&task),
        Err(e) => return Err(AgentError::io("creating", &task.dir, e)),
    }
    match launch(root, &task, spec) {
        Ok(status) => Ok(status),
        // Record the failure so that a retried `start` finds a final status instead of
        // a task folder without one; the task's secrets leave the disk with it.
        Err(e) => {
            task.drop_private();
            let status = TaskStatus {
                id: spec.id.clone(),
                state: TaskState::FailedToStart,
                pid: None,
                supervisor_pid: None,
                started_at_ms: None,
                ended_at_ms: Some(now_ms()),
                exit_code: None,
                signal: None,
                error: Some(chain(&e)),
                interruption: None,
            };
            match task.write_status(&status) {
                Ok(()) => Ok(status),
                Err(_) => Err(e),
            }
        }
    }
}

/// Writes the spec, starts the supervisor through `detach` (a double fork: the
/// supervisor is nobody's child here, so killing the caller's whole process tree, e.g. an
/// SSH session being torn down, cannot reach it) and waits for its first status.
fn launch(root: &Path, task: &TaskDir, spec: &TaskSpec) -> Result<TaskStatus> {
    task.write_spec(spec)?;
    let log_path = task.path(SUPERVISOR_LOG);
    let exe = std::env::current_exe().map_err(|source| AgentError::Spawn {
        what: "finding the agent's own executable".to_owned(),
        source,
    })?;
    let out = Command::new(&exe)
        .arg("--root")
        .arg(root)
        .args(["detach", "--id", &task.id])
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|source| AgentError::Spawn {
            what: format!(
                "spawning the supervisor {} for task `{}`",
                exe.display(),
                task.id
            ),
            source,
        })?;
    let supervisor_pid: Option<u32> = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    let Some(supervisor_pid) = supervisor_pid.filter(|_| out.status.success()) else {
        return Err(AgentError::Task {
            id: task.id.clone(),
            problem: format!(
                "was not started: detaching its supervisor failed ({}); supervisor.log: {}",
                out.status,
                log_tail(&log_path)
            ),
        });
    };

    let deadline = deadline_after(START_TIMEOUT_SECS);
    // A task usually starts within a few milliseconds: poll fast first, then back off.
    let mut step = Duration::from_millis(1);
    loop {
        if let Some(status) = task.read_status()? {
            return Ok(status);
        }
        if !squall_worker::pid_alive(supervisor_pid) {
            // It may have written its status just before exiting.
            if let Some(status) = task.read_status()? {
                return Ok(status);
            }
            return Err(AgentError::Task {
                id: task.id.clone(),
                problem: format!(
                    "was not started: its supervisor (pid {supervisor_pid}) exited without a \
                     status; supervisor.log: {}",
                    log_tail(&log_path)
                ),
            });
        }
        if passed(deadline) {
            // Stop it so that it cannot bring the task up behind the failure recorded
            // by the caller; a status it wrote meanwhile still wins.
            if let Some(pid) = i32::try_from(supervisor_pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
            if let Some(status) = task.read_status()? {
                return Ok(status);
            }
            return Err(AgentError::Task {
                id: task.id.clone(),
                problem: format!(
                    "reported no status within {START_TIMEOUT_SECS} s of starting its \
                     supervisor (killed it); supervisor.log: {}",
                    log_tail(&log_path)
                ),
            });
        }
        sleep_until_at_most(step, deadline);
        step = (step * 2).min(Duration::from_millis(10));
    }
}

/// `detach --id ID` (internal): starts the supervisor of task `id` and exits at once,
/// printing its pid; the supervisor is then re-parented away from the caller.
pub fn detach(root: &Path, id: &str) -> Result<u32> {
    let task = TaskDir::existing(root, id)?;
    let log_path = task.path(SUPERVISOR_LOG);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| AgentError::io("creating", &log_path, e))?;
    let exe = std::env::current_exe().map_err(|source| AgentError::Spawn {
        what: "finding the agent's own executable".to_owned(),
        source,
    })?;
    // Nothing of the caller's stdio is passed on: an SSH session must be able to close
    // while the supervisor runs.
    let supervisor = Command::new(&exe)
        .arg("--root")
        .arg(root)
        .args(["supervise", "--id", id])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|source| AgentError::Spawn {
            what: format!("spawning the supervisor {} for task `{id}`", exe.display()),
            source,
        })?;
    Ok(supervisor.id())
}

/// The last part of the supervisor's log, for an error message.
fn log_tail(path: &Path) -> String {
    const MAX: u64 = 1000;
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
        let mut bytes = Vec::new();
        let _ = file.take(MAX).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).trim().to_owned();
    }
    if text.is_empty() {
        "(empty)".to_owned()
    } else {
        text
    }
}

/// The status of a task an earlier `start` created (waiting briefly if that start is
/// still launching it).
fn reattach(task: &TaskDir) -> Result<TaskStatus> {
    let deadline = deadline_after(REATTACH_TIMEOUT_SECS);
    loop {
        if let Some(status) = task.read_status()? {
            return task.settle_vanished(status, TaskState::Exited);
        }
        if passed(deadline) {
            return Err(AgentError::Task {
                id: task.id.clone(),
                problem: format!(
                    "already exists but reported no status within {REATTACH_TIMEOUT_SECS} s \
                     (its start may have been interrupted)"
                ),
            });
        }
        sleep_until_at_most(Duration::from_millis(10), deadline);
    }
}

/// `status`: the task's current status.
pub fn status(root: &Path, id: &str) -> Result<TaskStatus> {
    check_id(id)?;
    let task = TaskDir::existing(root, id)?;
    let status = task.read_status()?.ok_or_else(|| no_status(id))?;
    Ok(with_notice(
        root,
        task.settle_vanished(status, TaskState::Exited)?,
    ))
}

/// `status` with what the instance's metadata announced, if anything.
pub fn with_notice(root: &Path, mut status: TaskStatus) -> TaskStatus {
    status.interruption = crate::imds::read(root);
    status
}

/// `interrupt`: creates the task's `$SQUALL_INTERRUPT_FILE` (before it is cancelled).
pub fn mark_interrupted(root: &Path, id: &str) -> Result<()> {
    check_id(id)?;
    let task = TaskDir::existing(root, id)?;
    let path = task.path(crate::store::INTERRUPT_FILE);
    fs::write(&path, b"").map_err(|e| AgentError::io("creating", path, e))
}

fn no_status(id: &str) -> AgentError {
    AgentError::Task {
        id: id.to_owned(),
        problem: "has no status yet (it is being started)".to_owned(),
    }
}

/// `wait`: the task's status once final, or its last status after `timeout_secs`, or
/// as soon as the instance's metadata announces something new (so the master learns
/// of a spot notice at once). `None` when the task has not written any status within
/// that time.
pub fn wait(root: &Path, id: &str, timeout_secs: u64) -> Result<Option<TaskStatus>> {
    check_id(id)?;
    let task = TaskDir::existing(root, id)?;
    let deadline = deadline_after(timeout_secs);
    let notice = crate::imds::read(root);
    // Short tasks end within milliseconds: poll from 1 ms, doubling up to 50 ms (a
    // status file read 20 times a second costs nothing, and the end is seen at most
    // 50 ms late).
    let mut step = Duration::from_millis(1);
    loop {
        let status = match task.read_status()? {
            Some(s) => Some(task.settle_vanished(s, TaskState::Exited)?),
            None => None,
        };
        let news = crate::imds::read(root) != notice;
        if status.as_ref().is_some_and(|s| s.state.is_final()) || passed(deadline) || news {
            return Ok(status.map(|s| with_notice(root, s)));
        }
        sleep_until_at_most(step, deadline);
        step = (step * 2).min(Duration::from_millis(50));
    }
}

/// What a `cancel` call left each task in.
#[derive(Debug)]
pub struct Cancelled {
    /// The last status of each task that has one, in the order asked.
    pub statuses: Vec<TaskStatus>,
    /// Tasks that were not final when `cancel` gave up.
    pub unfinished: Vec<String>,
}

/// `cancel --id`: cancels one task.
pub fn cancel_one(root: &Path, id: &str, grace_secs: u64) -> Result<Cancelled> {
    check_id(id)?;
    let task = TaskDir::existing(root, id)?;
    cancel(vec![task], grace_secs)
}

/// `cancel --all`: cancels every task under the root whose status is `Running`.
pub fn cancel_all(root: &Path, grace_secs: u64) -> Result<Cancelled> {
    let tasks_dir = root.join(TASKS_DIR);
    let entries = match fs::read_dir(&tasks_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok(Cancelled {
                statuses: Vec::new(),
                unfinished: Vec::new(),
            });
        }
        Err(e) => return Err(AgentError::io("listing", tasks_dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AgentError::io("listing", &tasks_dir, e))?;
        if let Some(id) = entry.file_name().to_str().filter(|id| valid_task_id(id)) {
            ids.push(id.to_owned());
        }
    }
    ids.sort();
    let mut running = Vec::new();
    for id in ids {
        let task = TaskDir::new(root, &id);
        // A task that cannot be read is not reported as running; skip it.
        let Ok(Some(status)) = task.read_status() else {
            continue;
        };
        if task.settle_vanished(status, TaskState::Cancelled)?.state == TaskState::Running {
            running.push(task);
        }
    }
    cancel(running, grace_secs)
}

/// One task being cancelled.
#[derive(Debug)]
struct Pending {
    task: TaskDir,
    last: Option<TaskStatus>,
    termed: bool,
}

/// Cancels all `tasks` together: marker, SIGTERM to each group, up to `grace_secs` for
/// them to end, then SIGKILL and up to [`KILL_WAIT_SECS`] for their final statuses.
fn cancel(tasks: Vec<TaskDir>, grace_secs: u64) -> Result<Cancelled> {
    let mut pending = Vec::with_capacity(tasks.len());
    for task in tasks {
        let last = task.read_status()?;
        // An already-final task is only reported, not marked.
        if !last.as_ref().is_some_and(|s| s.state.is_final()) {
            task.request_cancel(grace_secs)?;
        }
        pending.push(Pending {
            task,
            last,
            termed: false,
        });
    }
    let grace = deadline_after(grace_secs);
    poll_until_final(&mut pending, grace, Signal::TERM)?;
    if pending.iter().any(|p| !is_final(p)) {
        for p in &mut pending {
            p.termed = false;
        }
        poll_until_final(&mut pending, deadline_after(KILL_WAIT_SECS), Signal::KILL)?;
    }
    let unfinished = pending
        .iter()
        .filter(|p| !is_final(p))
        .map(|p| p.task.id.clone())
        .collect();
    Ok(Cancelled {
        statuses: pending.into_iter().filter_map(|p| p.last).collect(),
        unfinished,
    })
}

fn signal_name(signal: Signal) -> &'static str {
    if signal == Signal::KILL {
        "SIGKILL"
    } else {
        "SIGTERM"
    }
}

fn is_final(p: &Pending) -> bool {
    p.last.as_ref().is_some_and(|s| s.state.is_final())
}

/// Polls the tasks' statuses until all are final or `deadline`, sending `signal` once to
/// each running task's process group (as soon as its pid is known).
fn poll_until_final(
    pending: &mut [Pending],
    deadline: Option<std::time::Instant>,
    signal: Signal,
) -> Result<()> {
    loop {
        for p in pending.iter_mut() {
            if is_final(p) {
                continue;
            }
            if let Some(status) = p.task.read_status()? {
                p.last = Some(p.task.settle_vanished(status, TaskState::Cancelled)?);
            }
            let Some(status) = p.last.as_ref().filter(|s| !s.state.is_final()) else {
                continue;
            };
            if !p.termed
                && let Some(pgid) = signalable(status.pid)
            {
                signal_group(pgid, signal).map_err(|e| AgentError::Task {
                    id: p.task.id.clone(),
                    problem: format!("could not be sent {}: {e}", signal_name(signal)),
                })?;
                p.termed = true;
            }
        }
        if pending.iter().all(is_final) || passed(deadline) {
            return Ok(());
        }
        sleep_until_at_most(Duration::from_millis(20), deadline);
    }
}
