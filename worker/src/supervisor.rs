//! The hidden `supervise` subcommand: the detached process that runs one task.
//!
//! It leaves the caller's session (`setsid`) so the task survives the SSH session that
//! started it, spawns the task in a process group of its own with its output going to
//! the task's log files, writes `status.json` (`Running`, then the final state), enforces
//! `timeout_secs` and, once the task's process has ended, kills whatever is left of its
//! process group. It does not talk to the master: `start` spawns it and everyone else
//! only reads the files it writes. Its own stderr is the task's `supervisor.log`.
//!
//! A task with a log cap, or given secret values to mask, writes into pipes instead of
//! its log files: a thread per stream copies (through a [`StreamMasker`], when there are
//! values to mask) into a [`CappedLog`], so no value it was given reaches the disk, even
//! split across two writes, and no stream outgrows its cap.

use crate::caplog::CappedLog;
use crate::error::{AgentError, Result, chain};
use crate::store::{RING_SUFFIX, STDERR_FILE, STDOUT_FILE, TaskDir, now_ms, signal_group};
use rustix::process::{Pid, Signal};
use squall_worker::mask::{Masks, StreamMasker};
use squall_worker::{TaskSpec, TaskState, TaskStatus};
use std::fs::File;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a timed-out task gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How often the supervisor polls a task that has a timeout.
const POLL: Duration = Duration::from_millis(25);

/// Runs task `id` to its end and records its status.
pub fn supervise(root: &Path, id: &str) -> Result<()> {
    if let Err(e) = rustix::process::setsid() {
        // Still run the task; it is merely less detached from the caller.
        eprintln!("squall-worker: warning: setsid failed for task `{id}`: {e}");
    }
    let task = TaskDir::new(root, id);
    let supervisor_pid = Some(std::process::id());
    let base = TaskStatus {
        id: id.to_owned(),
        state: TaskState::FailedToStart,
        pid: None,
        supervisor_pid,
        started_at_ms: None,
        ended_at_ms: None,
        exit_code: None,
        signal: None,
        error: None,
        interruption: None,
    };

    let spec = match task.take_spec() {
        Ok(spec) => spec,
        Err(e) => return fail_to_start(&task, base, chain(&e)),
    };
    if task.cancel_requested() {
        let status = TaskStatus {
            state: TaskState::Cancelled,
            ended_at_ms: Some(now_ms()),
            ..base
        };
        return task.write_status(&status);
    }
    crate::imds::spawn_watch(root);
    let masks = Masks::new(&spec.masks);
    let mut child = match spawn(root, &task, &spec, &masks) {
        Ok(child) => child,
        Err(e) => return fail_to_start(&task, base, masks.mask(&e.to_string()).into_owned()),
    };
    let pid = child.0.id();
    // The task is its own group leader, so its pid is the group's id.
    let pgid = Pid::from_child(&child.0);
    task.record_boot_id();
    let running = TaskStatus {
        state: TaskState::Running,
        pid: Some(pid),
        started_at_ms: Some(now_ms()),
        ..base
    };
    if let Err(e) = task.write_status(&running) {
        // Nobody could ever learn about this task: do not let it run unobserved.
        let _ = signal_group(pgid, Signal::KILL);
        let _ = child.0.wait();
        return Err(e);
    }

    let (mut child, copiers) = child;
    let waited = wait(&mut child, pgid, spec.timeout_secs);
    // A cancelled (or interrupted) task's top process may end at SIGTERM before the
    // processes it started have done with theirs (a checkpoint being written): they get
    // up to the cancel's grace (the `cancel` itself KILLs the group when its grace is
    // over). Then whatever the task left behind in its group (background jobs) ends
    // with it.
    if let Some(grace) = task.cancel_grace() {
        let until = Instant::now() + grace;
        while group_alive(pgid) && Instant::now() < until {
            std::thread::sleep(POLL);
        }
    }
    let _ = signal_group(pgid, Signal::KILL);
    copiers.finish();
    let ended_at_ms = Some(now_ms());
    let status = match waited {
        Ok((exit, timed_out)) => TaskStatus {
            state: if timed_out {
                TaskState::TimedOut
            } else if task.cancel_requested() {
                TaskState::Cancelled
            } else {
                TaskState::Exited
            },
            ended_at_ms,
            exit_code: exit.code(),
            signal: exit.signal(),
            ..running
        },
        Err(e) => TaskStatus {
            state: TaskState::Exited,
            ended_at_ms,
            error: Some(format!("waiting for the task's process {pid}: {e}")),
            ..running
        },
    };
    task.write_status(&status)
}

/// Whether a process of the group is left.
fn group_alive(pgid: Pid) -> bool {
    rustix::process::test_kill_process_group(pgid).is_ok()
}

/// Records `FailedToStart` with `error` as the reason.
fn fail_to_start(task: &TaskDir, base: TaskStatus, error: String) -> Result<()> {
    let status = TaskStatus {
        state: TaskState::FailedToStart,
        ended_at_ms: Some(now_ms()),
        error: Some(error),
        ..base
    };
    task.write_status(&status)
}

/// Why a task could not start. Its text is the status's `error`, e.g. "No such file or
/// directory (os error 2) running `nosuchprog`", so each message carries its cause.
#[derive(Debug, thiserror::Error)]
enum SpawnError {
    #[error("the task's argv is empty")]
    EmptyArgv,
    #[error("{}", chain(.0))]
    Log(AgentError),
    #[error("{source} for the working directory {}", cwd.display())]
    Cwd { cwd: PathBuf, source: io::Error },
    #[error("{source} running `{program}`")]
    Program { program: String, source: io::Error },
}

/// Spawns the task in its own process group with its output in the task's log files
/// (through masking copiers when it has values to mask).
fn spawn(
    root: &Path,
    task: &TaskDir,
    spec: &TaskSpec,
    masks: &Masks,
) -> Result<(Child, Copiers), SpawnError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(SpawnError::EmptyArgv);
    };
    let log = |name: &str| {
        let path = task.path(name);
        File::create(&path).map_err(|e| SpawnError::Log(AgentError::io("creating", path, e)))
    };
    let stdout = log(STDOUT_FILE)?;
    let stderr = log(STDERR_FILE)?;
    // `start` makes a given cwd absolute; the default is the root.
    let cwd = match &spec.cwd {
        Some(cwd) => root.join(cwd),
        None => root.to_owned(),
    };
    if let Err(source) = std::fs::metadata(&cwd) {
        return Err(SpawnError::Cwd { cwd, source });
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(&spec.env)
        .env(
            squall_worker::INTERRUPT_FILE_ENV,
            task.path(crate::store::INTERRUPT_FILE),
        )
        .current_dir(&cwd)
        .process_group(0)
        .stdin(Stdio::null());
    let spawned = |command: &mut Command| {
        command.spawn().map_err(|source| SpawnError::Program {
            program: program.clone(),
            source,
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    if masks.is_empty() && spec.log_limit.is_none() {
        let child = spawned(command.stdout(stdout).stderr(stderr))?;
        let threads = Vec::new();
        return Ok((child, Copiers { threads, stop }));
    }
    let mut child = spawned(command.stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let limit = spec.log_limit.unwrap_or(u64::MAX);
    let capped = |file: File, name: &str| {
        CappedLog::new(file, task.path(&format!("{name}{RING_SUFFIX}")), limit)
    };
    let masker = || (!masks.is_empty()).then(|| masks.stream());
    let mut threads = Vec::new();
    if let Some(out) = child.stdout.take() {
        threads.push(copy_log(
            out,
            capped(stdout, STDOUT_FILE),
            masker(),
            stop.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        threads.push(copy_log(
            err,
            capped(stderr, STDERR_FILE),
            masker(),
            stop.clone(),
        ));
    }
    Ok((child, Copiers { threads, stop }))
}

/// How long the supervisor waits for a task's output to drain once its group is gone
/// (a process that left the group may hold a pipe open for ever).
const DRAIN: Duration = Duration::from_secs(2);

/// What a copy still reads once stopped: what the pipe can hold, and some.
const AFTER_STOP: usize = 4 << 20;

/// The threads copying a task's output into its logs, and the flag that tells them to
/// stop reading.
struct Copiers {
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Copiers {
    /// Lets the copies drain their pipes for at most [`DRAIN`] (a process that left the
    /// task's group may hold one open for ever), then stops them reading and waits for
    /// each to complete its log (the ring appended), however long that takes.
    fn finish(self) {
        let until = Instant::now() + DRAIN;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < until {
            std::thread::sleep(POLL);
        }
        self.stop.store(true, Ordering::SeqCst);
        for copier in self.threads {
            let _ = copier.join();
        }
    }
}

/// Copies `from` into `to` (through `masker`, if any) until the end of the pipe, or
/// until `stop` once no output is waiting; each chunk is written as soon as it is read
/// (less a tail that could begin a value), and the log is completed at the end. A log
/// that cannot be written (a full disk) loses output but keeps the pipe drained: the
/// task must not die of SIGPIPE for it.
fn copy_log(
    mut from: impl io::Read + std::os::fd::AsFd + Send + 'static,
    mut to: CappedLog,
    mut masker: Option<StreamMasker>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(buf.len());
        let mut writable = true;
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        // Once stopped (the drain time is over), what is already in the pipe is still
        // read, up to AFTER_STOP more bytes; then the copy ends, whatever a process that
        // left the task's group goes on writing, with a line saying so.
        let no_wait = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut after_stop = 0usize;
        let mut cut = false;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if stopping && after_stop >= AFTER_STOP {
                cut = true;
                break;
            }
            let mut fds = [PollFd::new(&from, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(if stopping { &no_wait } else { &tick })) {
                Ok(0) if stopping => break,
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    eprintln!("squall-worker: waiting for the task's output: {e}");
                    break;
                }
            }
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("squall-worker: reading the task's output: {e}");
                    break;
                }
            };
            if stopping {
                after_stop += n;
            }
            let chunk = match masker.as_mut() {
                Some(m) => {
                    out.clear();
                    m.feed(&buf[..n], &mut out);
                    &out[..]
                }
                None => &buf[..n],
            };
            if writable && let Err(e) = to.write_all(chunk) {
                eprintln!(
                    "squall-worker: writing the task's log (its output is dropped from now on): {e}"
                );
                writable = false;
            }
        }
        out.clear();
        if let Some(m) = masker.as_mut() {
            m.finish(&mut out);
        }
        if cut {
            out.extend_from_slice(
                b"\n[squall: output written after the task ended was not all kept]\n",
            );
        }
        if writable {
            let _ = to.write_all(&out);
        }
        if let Err(e) = to.finish() {
            eprintln!("squall-worker: completing the task's log: {e}");
        }
    })
}

/// Waits for the task's process; with a timeout, TERMs its group at the deadline and
/// KILLs it [`TERM_GRACE`] later. Returns the exit status and whether it timed out.
fn wait(child: &mut Child, pgid: Pid, timeout_secs: Option<u64>) -> io::Result<(ExitStatus, bool)> {
    let deadline = timeout_secs.and_then(|s| Instant::now().checked_add(Duration::from_secs(s)));
    let Some(deadline) = deadline else {
        return Ok((child.wait()?, false));
    };
    // From 1 ms up to POLL, so a short task with a timeout is not slowed down.
    let mut step = Duration::from_millis(1);
    while Instant::now() < deadline {
        if let Some(exit) = child.try_wait()? {
            return Ok((exit, false));
        }
        std::thread::sleep(step.min(deadline.saturating_duration_since(Instant::now())));
        step = (step * 2).min(POLL);
    }
    signal_group(pgid, Signal::TERM)?;
    let kill_at = Instant::now() + TERM_GRACE;
    while Instant::now() < kill_at {
        if let Some(exit) = child.try_wait()? {
            return Ok((exit, true));
        }
        std::thread::sleep(POLL);
    }
    signal_group(pgid, Signal::KILL)?;
    Ok((child.wait()?, true))
}
