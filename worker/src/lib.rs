//! Wire types of the squall agent: what the master asks `squall-worker` to do and what
//! it answers.
//!
//! The master depends on this module (master -> worker, never the reverse). It holds the
//! agent's on-disk layout, the status record of a task, the argv builder for every agent
//! subcommand and the agent's exit codes. It performs no IO: the agent itself lives in
//! `main.rs` and its modules (`agent.rs`, `supervisor.rs`, ...), and how a command
//! reaches a host is the master's `Transport`'s business.
//!
//! On-disk layout under the agent root (default `~/.squall`):
//!
//! ```text
//! ROOT/tasks/TASK_ID/spec.json     what to run (written by `start`; secret values
//!                                  masked)
//! ROOT/tasks/TASK_ID/private.json  the environment and the values to mask (0600;
//!                                  read and removed by the supervisor, never packed)
//! ROOT/tasks/TASK_ID/status.json   the task's status (atomically replaced)
//! ROOT/tasks/TASK_ID/stdout.log    the task's standard output
//! ROOT/tasks/TASK_ID/stderr.log    the task's standard error
//! ROOT/tasks/TASK_ID/cancel        present once a cancel was asked
//! ROOT/tasks/TASK_ID/supervisor.log the supervisor's own errors (normally empty)
//! ROOT/tasks/TASK_ID/boot_id       the host's boot id when the task was started (Linux)
//! ```

pub mod mask;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Exit codes of `squall-worker`: a documented contract the master relies on.
pub mod exit {
    /// The subcommand did what was asked (for `wait`: the task has finished).
    pub const OK: i32 = 0;
    /// Any other failure (IO, bad spec); the message is on stderr.
    pub const ERROR: i32 = 1;
    /// The command line could not be parsed.
    pub const USAGE: i32 = 2;
    /// No task with that id exists under the root.
    pub const UNKNOWN_TASK: i32 = 3;
    /// `wait` gave up before the task finished; the task is still running.
    pub const STILL_RUNNING: i32 = 4;
}

/// The error text of a task whose supervisor died without writing a final status
/// (the host rebooted, or every process of the task was killed).
pub const SUPERVISOR_VANISHED: &str = "supervisor vanished";

/// Whether process `pid` exists and has not ended. A zombie counts as ended: under an
/// init that does not reap orphans (some containers), a dead detached process stays a
/// zombie and `kill(pid, 0)` still succeeds. A process we may not signal counts as
/// alive.
pub fn pid_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if matches!(
        rustix::process::test_kill_process(p),
        Err(rustix::io::Errno::SRCH)
    ) {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // "PID (COMM) STATE ...", where COMM may itself contain ") ".
    !stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
        .is_some_and(|state| matches!(state, 'Z' | 'X'))
}

/// The directory under the agent root that holds one folder per task.
pub const TASKS_DIR: &str = "tasks";

/// What to run: written to `spec.json` by `start`, read by the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique within the root; `[A-Za-z0-9._-]`, at most 128 characters.
    pub id: String,
    /// Program and arguments, run without a shell.
    pub argv: Vec<String>,
    /// Extra environment variables, added to the agent's own. They reach the agent
    /// on its standard input ([`Private`]), never in its argv.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the agent root when absent.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Killed (whole process group) after this many seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Secret values the agent masks as `***` in the task's stdout and stderr (and in
    /// the spec it writes); sent with the environment, never stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<String>,
    /// The most each of the task's streams keeps, in bytes: past it the log holds its
    /// first and its last halves with a line saying how much was skipped between them
    /// (none: no cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_limit: Option<u64>,
}

/// The smallest cap of a task's log stream: a marker line and some output either side.
pub const MIN_LOG_LIMIT: u64 = 4096;

impl TaskSpec {
    /// The spec as the agent stores it in `spec.json`: every value masked, and no
    /// masks.
    pub fn public(&self) -> TaskSpec {
        let m = mask::Masks::new(&self.masks);
        TaskSpec {
            id: self.id.clone(),
            argv: self.argv.iter().map(|a| m.mask(a).into_owned()).collect(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), m.mask(v).into_owned()))
                .collect(),
            cwd: self.cwd.clone(),
            timeout_secs: self.timeout_secs,
            masks: Vec::new(),
            log_limit: self.log_limit,
        }
    }
}

/// What `start --stdin` reads on its standard input: the parts of a [`TaskSpec`] that
/// must not be in any process's argv (readable in `/proc/PID/cmdline` by every user).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Private {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub masks: Vec<String>,
}

/// The most `start --stdin` reads.
pub const MAX_PRIVATE_BYTES: u64 = 1 << 20;

/// Where a task is in its life.
///
/// ```text
/// start -> Running -> Exited      (the process ended by itself; see exit_code/signal)
///                  -> TimedOut    (killed by the supervisor at timeout_secs)
///                  -> Cancelled   (killed by `cancel`)
///       -> FailedToStart          (spawn failed: no such program, bad cwd, ...)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Running,
    Exited,
    TimedOut,
    Cancelled,
    FailedToStart,
}

impl TaskState {
    /// Whether the task has ended and its status will not change again.
    pub fn is_final(self) -> bool {
        !matches!(self, TaskState::Running)
    }
}

/// The status record of a task (`status.json`), printed as JSON by every subcommand
/// that concerns one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub id: String,
    pub state: TaskState,
    /// Pid of the task's process, which is also its process-group id.
    pub pid: Option<u32>,
    /// Pid of the supervisor that waits for the task and writes this file.
    pub supervisor_pid: Option<u32>,
    /// Unix time in milliseconds.
    pub started_at_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
    /// The process's exit code when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended the process, if any.
    pub signal: Option<i32>,
    /// Why the task could not start, or another supervisor-side failure.
    pub error: Option<String>,
    /// What the instance's metadata announced (a spot interruption notice or a
    /// rebalance recommendation), as of this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption: Option<Interruption>,
}

/// A notice read from the instance metadata service (IMDSv2) by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interruption {
    /// `termination` (`spot/instance-action`) or `rebalance`
    /// (`events/recommendations/rebalance`).
    pub kind: String,
    /// The time the notice gives, as IMDS wrote it.
    #[serde(default)]
    pub time: Option<String>,
}

/// The environment variable naming the file the agent creates when the task is
/// interrupted (a spot notice): checkpoint and exit when it appears.
pub const INTERRUPT_FILE_ENV: &str = "SQUALL_INTERRUPT_FILE";

impl TaskStatus {
    /// Whether the task ended successfully (exited with code 0).
    pub fn succeeded(&self) -> bool {
        self.state == TaskState::Exited && self.exit_code == Some(0)
    }
}

/// Whether `id` is a valid task id (it becomes a directory name).
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The folder of one task under the agent root.
pub fn task_dir(root: &Path, id: &str) -> PathBuf {
    root.join(TASKS_DIR).join(id)
}

/// A request to the agent, turned into an argv by [`Request::argv`]. The master never
/// builds agent command lines by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start a task detached; idempotent for an id that already exists. With
    /// `wait_secs > 0`, then wait up to that long for it to end (one round trip for a
    /// short task); exits [`exit::STILL_RUNNING`] if it has not.
    Start { spec: TaskSpec, wait_secs: u64 },
    /// Print a task's status.
    Status { id: String },
    /// Wait up to `timeout_secs` for a task to finish.
    Wait { id: String, timeout_secs: u64 },
    /// Kill a task's process group (TERM, then KILL after `grace_secs`).
    Cancel { id: String, grace_secs: u64 },
    /// Cancel every running task under the root.
    CancelAll { grace_secs: u64 },
    /// Stop a task for a spot interruption: create its `$SQUALL_INTERRUPT_FILE`, then
    /// cancel it (TERM, then KILL after `grace_secs`).
    Interrupt { id: String, grace_secs: u64 },
    /// Stream a tar.gz of the root's task folders to stdout.
    Pack,
    /// Print the files matching a glob (relative to the working directory, or
    /// absolute), one [`GlobMatch`] JSON line each; a matched folder is an error.
    Glob { pattern: String },
}

/// A file matched by [`Request::Glob`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobMatch {
    /// The file's path as the host names it (absolute, or relative to the working
    /// directory).
    pub path: String,
    /// Its name relative to the glob's fixed part (`out/**/*.csv` matching
    /// `out/a/b.csv` names it `a/b.csv`).
    pub name: String,
    pub size: u64,
}

/// A glob split into its fixed part (the leading folders with no wildcard; for a
/// glob with none, the parent folder) and the segments matched below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// The folder matching starts from (`""` for the working directory, `/` for root).
    pub base: String,
    /// The segments below it: literal names, names with `*` and `?`, or `**`.
    pub segments: Vec<String>,
}

/// Whether a glob segment has a wildcard.
pub fn is_wild(segment: &str) -> bool {
    segment.contains('*') || segment.contains('?')
}

impl Glob {
    /// Splits `pattern`; `None` for an empty one.
    pub fn parse(pattern: &str) -> Option<Glob> {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return None;
        }
        let absolute = pattern.starts_with('/');
        let parts: Vec<&str> = pattern
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.is_empty() {
            return None;
        }
        let fixed = match parts.iter().position(|p| is_wild(p)) {
            Some(i) => i,
            // No wildcard: the fixed part is the parent folder.
            None => parts.len() - 1,
        };
        let mut base = parts[..fixed].join("/");
        if absolute {
            base = format!("/{base}");
        }
        let mut segments: Vec<String> = parts[fixed..].iter().map(|s| (*s).to_owned()).collect();
        // A final `**` means every file below: `out/**` is `out/**/*`.
        if segments.last().is_some_and(|s| s == "**") {
            segments.push("*".to_owned());
        }
        Some(Glob { base, segments })
    }
}

/// Whether `name` matches one glob segment: `*` any run of characters, `?` one, and
/// names starting with `.` only when the segment does too (hidden files only when
/// matched literally).
pub fn segment_matches(segment: &str, name: &str) -> bool {
    if name.starts_with('.') && !segment.starts_with('.') {
        return false;
    }
    let (p, n): (Vec<char>, Vec<char>) = (segment.chars().collect(), name.chars().collect());
    // Iterative wildcard matching with one backtrack point for the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

impl Request {
    /// What the agent reads on its standard input for this request: a task's
    /// environment and masks ([`Private`]), when it has any.
    pub fn stdin(&self) -> Option<Vec<u8>> {
        match self {
            Request::Start { spec, .. } if !spec.env.is_empty() || !spec.masks.is_empty() => {
                serde_json::to_vec(&Private {
                    env: spec.env.clone(),
                    masks: spec.masks.clone(),
                })
                .ok()
            }
            _ => None,
        }
    }

    /// The agent's argv for this request, starting with `agent` (the program path) and
    /// `--root root`.
    pub fn argv(&self, agent: &str, root: &str) -> Vec<String> {
        let mut argv = vec![agent.to_owned(), "--root".to_owned(), root.to_owned()];
        match self {
            Request::Start { spec, wait_secs } => {
                argv.extend(["start".to_owned(), "--id".to_owned(), spec.id.clone()]);
                if *wait_secs > 0 {
                    argv.extend(["--wait-secs".to_owned(), wait_secs.to_string()]);
                }
                if let Some(t) = spec.timeout_secs {
                    argv.extend(["--timeout-secs".to_owned(), t.to_string()]);
                }
                if let Some(cwd) = &spec.cwd {
                    argv.extend(["--cwd".to_owned(), cwd.display().to_string()]);
                }
                if let Some(limit) = spec.log_limit {
                    argv.extend(["--log-limit".to_owned(), limit.to_string()]);
                }
                if self.stdin().is_some() {
                    argv.push("--stdin".to_owned());
                }
                argv.push("--".to_owned());
                argv.extend(spec.argv.iter().cloned());
            }
            Request::Status { id } => argv.extend(["status".into(), "--id".into(), id.clone()]),
            Request::Wait { id, timeout_secs } => argv.extend([
                "wait".into(),
                "--id".into(),
                id.clone(),
                "--timeout-secs".into(),
                timeout_secs.to_string(),
            ]),
            Request::Cancel { id, grace_secs } => argv.extend([
                "cancel".into(),
                "--id".into(),
                id.clone(),
                "--grace-secs".into(),
                grace_secs.to_string(),
            ]),
            Request::CancelAll { grace_secs } => argv.extend([
                "cancel".into(),
                "--all".into(),
                "--grace-secs".into(),
                grace_secs.to_string(),
            ]),
            Request::Interrupt { id, grace_secs } => argv.extend([
                "interrupt".into(),
                "--id".into(),
                id.clone(),
                "--grace-secs".into(),
                grace_secs.to_string(),
            ]),
            Request::Pack => argv.push("pack".into()),
            Request::Glob { pattern } => {
                argv.extend(["glob".into(), "--".into(), pattern.clone()]);
            }
        }
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_split_at_their_fixed_part() {
        let g = |p: &str| Glob::parse(p).map(|g| (g.base, g.segments));
        assert_eq!(
            g("work/a.count"),
            Some(("work".into(), vec!["a.count".into()]))
        );
        assert_eq!(g("out/*.csv"), Some(("out".into(), vec!["*.csv".into()])));
        assert_eq!(
            g("/data/run/**/x?.bin"),
            Some(("/data/run".into(), vec!["**".into(), "x?.bin".into()]))
        );
        assert_eq!(g("*.log"), Some((String::new(), vec!["*.log".into()])));
        assert_eq!(g("a.txt"), Some((String::new(), vec!["a.txt".into()])));
        assert_eq!(
            g("out/**"),
            Some(("out".into(), vec!["**".into(), "*".into()]))
        );
        assert_eq!(g("  "), None);
    }

    #[test]
    fn segments_match_like_a_shell() {
        for (seg, name, ok) in [
            ("*.csv", "a.csv", true),
            ("*.csv", "a.csv.gz", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "x", true),
            ("*", ".hidden", false),
            (".*", ".hidden", true),
            (".hidden", ".hidden", true),
            ("*b*c", "abxxc", true),
            ("part-*-of-*", "part-1-of-3", true),
            ("part-*-of-*", "part-1-of", false),
        ] {
            assert_eq!(segment_matches(seg, name), ok, "{seg} vs {name}");
        }
    }

    #[test]
    fn task_ids_are_path_safe() {
        for ok in ["a", "s0-h1-t2-a0", "setup.1_x"] {
            assert!(valid_task_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä", &"x".repeat(129)] {
            assert!(!valid_task_id(bad), "{bad}");
        }
    }

    #[test]
    fn start_argv_passes_the_command_after_a_separator() {
        let spec = TaskSpec {
            id: "t1".into(),
            argv: vec!["sh".into(), "-c".into(), "echo --root".into()],
            env: BTreeMap::from([("A".into(), "b=c".into())]),
            cwd: None,
            timeout_secs: Some(5),
            masks: vec!["s3cr3t-value".into()],
            log_limit: Some(4096),
        };
        let req = Request::Start { spec, wait_secs: 2 };
        let argv = req.argv("/bin/agent", "/r");
        assert_eq!(
            argv,
            [
                "/bin/agent",
                "--root",
                "/r",
                "start",
                "--id",
                "t1",
                "--wait-secs",
                "2",
                "--timeout-secs",
                "5",
                "--log-limit",
                "4096",
                "--stdin",
                "--",
                "sh",
                "-c",
                "echo --root"
            ]
        );
        // The environment and the masks travel on stdin, never in the argv.
        let private: Private = serde_json::from_slice(&req.stdin().expect("stdin")).unwrap();
        assert_eq!(private.env["A"], "b=c");
        assert_eq!(private.masks, ["s3cr3t-value"]);
        assert!(
            !argv
                .iter()
                .any(|a| a.contains("b=c") || a.contains("s3cr3t"))
        );
    }

    #[test]
    fn the_stored_spec_masks_secret_values() {
        let spec = TaskSpec {
            id: "t1".into(),
            argv: vec!["sh".into(), "-c".into(), "echo s3cr3t-value".into()],
            env: BTreeMap::from([("TOKEN".into(), "s3cr3t-value".into())]),
            cwd: None,
            timeout_secs: None,
            masks: vec!["s3cr3t-value".into()],
            log_limit: None,
        };
        let p = spec.public();
        assert_eq!(p.argv[2], "echo ***");
        assert_eq!(p.env["TOKEN"], "***");
        assert!(p.masks.is_empty());
    }
}
