//! End-to-end tests of the `squall-worker` binary: every subcommand run as a real
//! process against a throw-away root under the system temp dir.
//!
//! They check the agent's contract with the master (status JSON, exit codes, files,
//! process-group handling, detachment); they do not test the master's side of it.

use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use squall_worker::{TaskState, TaskStatus, exit};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_squall-worker");

/// A fresh agent root, removed (after cancelling its tasks) when dropped.
struct Root {
    path: PathBuf,
}

/// What one agent invocation did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The status JSON lines printed on stdout.
    fn statuses(&self) -> Vec<TaskStatus> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("a status JSON line"))
            .collect()
    }

    /// The single status printed on stdout.
    fn status(&self) -> TaskStatus {
        let mut statuses = self.statuses();
        assert_eq!(statuses.len(), 1, "{self:?}");
        statuses.remove(0)
    }
}

impl Root {
    fn new() -> Root {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("squall-worker-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("creating the test root");
        Root { path }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(AGENT);
        command.arg("--root").arg(&self.path).args(args);
        // The agent runs where the master's commands run: in the host's login home,
        // which these tests stand in for with the root itself (when it exists).
        if self.path.is_dir() {
            command.current_dir(&self.path);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Out {
        let output = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("running the agent");
        Out {
            code: output.status.code().expect("the agent exited normally"),
            stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        }
    }

    /// `start --id ID OPTIONS... -- ARGV...`, which must succeed.
    fn start(&self, id: &str, options: &[&str], argv: &[&str]) -> TaskStatus {
        let mut args = vec!["start", "--id", id];
        args.extend(options);
        args.push("--");
        args.extend(argv);
        let out = self.run(&args);
        assert_eq!(out.code, exit::OK, "{out:?}");
        out.status()
    }

    /// `start --id ID --stdin OPTIONS... -- ARGV...` with `private` (JSON) on stdin,
    /// which must succeed.
    fn start_private(
        &self,
        id: &str,
        options: &[&str],
        private: &serde_json::Value,
        argv: &[&str],
    ) -> TaskStatus {
        let mut args = vec!["start", "--id", id, "--stdin"];
        args.extend(options);
        args.push("--");
        args.extend(argv);
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running the agent");
        let body = serde_json::to_vec(private).expect("json");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&body)
            .expect("writing stdin");
        let output = child.wait_with_output().expect("the agent ends");
        let out = Out {
            code: output.status.code().expect("the agent exited normally"),
            stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        };
        assert_eq!(out.code, exit::OK, "{out:?}");
        out.status()
    }

    fn wait(&self, id: &str, timeout_secs: u64) -> (i32, TaskStatus) {
        let out = self.run(&[
            "wait",
            "--id",
            id,
            "--timeout-secs",
            &timeout_secs.to_string(),
        ]);
        (out.code, out.status())
    }

    /// Waits for a task to finish (it must, within 10 s).
    fn finished(&self, id: &str) -> TaskStatus {
        let (code, status) = self.wait(id, 10);
        assert_eq!(code, exit::OK, "{status:?}");
        assert!(status.state.is_final(), "{status:?}");
        status
    }

    fn file(&self, id: &str, name: &str) -> PathBuf {
        self.path.join("tasks").join(id).join(name)
    }

    fn read(&self, id: &str, name: &str) -> String {
        fs::read_to_string(self.file(id, name)).expect("reading a task file")
    }

    fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp dir")
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = self.run(&["cancel", "--all", "--grace-secs", "0"]);
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Polls `check` every 10 ms until it gives a value; panics after `secs` seconds.
fn eventually<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the process is gone: no such pid, or a zombie nobody reaped yet.
fn gone(pid: u32) -> bool {
    let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits")).expect("non-zero pid");
    if rustix::process::test_kill_process(pid) == Err(Errno::SRCH) {
        return true;
    }
    fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X')
    })
}

fn pid_of(pid: Option<u32>) -> Pid {
    Pid::from_raw(i32::try_from(pid.expect("a pid")).expect("pid fits")).expect("non-zero pid")
}

#[test]
fn start_then_wait_reports_the_exit_code_and_captures_output() {
    let root = Root::new();
    let started = root.start("t1", &[], &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(started.id, "t1");
    assert!(started.pid.is_some() && started.supervisor_pid.is_some());

    let status = root.finished("t1");
    assert_eq!(status.state, TaskState::Exited);
    assert_eq!(status.exit_code, Some(3));
    assert_eq!(status.signal, None);
    assert_eq!(status.error, None);
    assert!(!status.succeeded());
    assert!(status.started_at_ms.is_some() && status.ended_at_ms >= status.started_at_ms);
    assert_eq!(root.read("t1", "stdout.log"), "out\n");
    assert_eq!(root.read("t1", "stderr.log"), "err\n");

    let out = root.run(&["status", "--id", "t1"]);
    assert_eq!(out.code, exit::OK);
    assert_eq!(out.status(), status);
}

#[test]
fn env_and_cwd_are_honoured() {
    let root = Root::new();
    let work = root.path.join("work dir");
    fs::create_dir(&work).expect("creating the work dir");
    let script = r#"printf '%s|%s\n' "$FOO" "${EMPTY-unset}"; pwd"#;
    let work_str = work.to_str().expect("utf-8 path");
    root.start_private(
        "env",
        &["--cwd", work_str],
        &serde_json::json!({ "env": { "FOO": "bar=baz", "EMPTY": "" } }),
        &["sh", "-c", script],
    );
    assert!(root.finished("env").succeeded());
    let canonical = |p: &Path| fs::canonicalize(p).expect("canonical path");
    let out = root.read("env", "stdout.log");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "bar=baz|");
    assert_eq!(canonical(Path::new(lines[1])), canonical(&work));

    // A relative cwd is relative to where `start` ran, and the default cwd is the root.
    root.start("rel", &["--cwd", "work dir"], &["pwd"]);
    root.start("default", &[], &["pwd"]);
    assert!(root.finished("rel").succeeded());
    assert!(root.finished("default").succeeded());
    let pwd = |id| canonical(Path::new(root.read(id, "stdout.log").trim_end()));
    assert_eq!(pwd("rel"), canonical(&work));
    assert_eq!(pwd("default"), canonical(&root.path));
}

/// The processes whose command line holds `needle`, read from `/proc`.
fn argv_holding(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(text);
        }
    }
    found
}

#[test]
fn a_task_s_secrets_are_masked_in_its_logs_even_split_across_writes_and_never_stored_or_in_an_argv()
{
    let root = Root::new();
    let secret = "s3cr3t-Tok3n-v4lue";
    let pem = "-----BEGIN KEY-----\nMIIEpAIBAAKCAQEA\n-----END KEY-----";
    // The value is written in two writes a moment apart (two reads of the pipe), then
    // whole on stderr, and a multi-line one line by line.
    let script = r#"printf '%s' "$TOKEN" | head -c 7; sleep 0.3; printf '%s\n' "$TOKEN" | tail -c +8
echo "full $TOKEN, twice $TOKEN." >&2
printf '%s\n' "$PEM"
touch started; sleep 1"#;
    let private = serde_json::json!({
        "env": { "TOKEN": secret, "PEM": pem, "PLAIN": "visible" },
        "masks": [secret, pem],
    });
    root.start_private("sec", &[], &private, &["sh", "-c", script]);
    eventually("the task to run", 10, || {
        root.path.join("started").exists().then_some(())
    });
    // No process's argv holds a value: not the agent's, the supervisor's or the task's.
    assert_eq!(argv_holding(secret), Vec::<String>::new());
    assert!(root.finished("sec").succeeded());
    assert_eq!(root.read("sec", "stdout.log"), "***\n***\n***\n***\n");
    assert_eq!(root.read("sec", "stderr.log"), "full ***, twice ***.\n");
    // The stored spec masks what it holds; the private file is gone once read.
    let spec = root.read("sec", "spec.json");
    assert!(
        !spec.contains(secret) && !spec.contains("MIIEpAIBAAKCAQEA"),
        "{spec}"
    );
    assert!(
        spec.contains(r#""TOKEN": "***""#) && spec.contains(r#""PLAIN": "visible""#),
        "{spec}"
    );
    assert!(!root.file("sec", "private.json").exists());
    for (name, body) in unpack(&pack(&root)) {
        assert!(!name.ends_with("private.json"), "{name}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains(secret) && !text.contains("MIIEpAIBAAKCAQEA"),
            "{name}: {text}"
        );
    }
}

#[test]
fn starting_an_existing_id_again_does_not_run_it_twice() {
    let root = Root::new();
    let argv = ["sh", "-c", "echo run >> count.txt"];
    let args: Vec<&str> = ["start", "--id", "once", "--"]
        .into_iter()
        .chain(argv)
        .collect();
    // Two racing starts, then a late one after the task has finished.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            root.command(&args)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawning start")
        })
        .collect();
    let mut pids = Vec::new();
    for racer in racers {
        let output = racer.wait_with_output().expect("waiting for start");
        assert!(output.status.success(), "{output:?}");
        let status: TaskStatus =
            serde_json::from_slice(&output.stdout).expect("a status JSON line");
        pids.push(status.pid);
    }
    let status = root.finished("once");
    assert!(status.succeeded(), "{status:?}");
    let again = root.start("once", &[], &argv);
    assert_eq!(again, status);
    pids.push(again.pid);
    assert!(pids.iter().all(|pid| *pid == status.pid), "{pids:?}");
    let count = fs::read_to_string(root.path.join("count.txt")).expect("reading count.txt");
    assert_eq!(count, "run\n");
}

#[test]
fn a_missing_program_or_cwd_fails_to_start() {
    let root = Root::new();
    let status = root.start("missing", &[], &["nosuchprog-squall-test", "x"]);
    assert_eq!(status.state, TaskState::FailedToStart, "{status:?}");
    let error = status.error.clone().expect("an error");
    assert!(error.contains("No such file or directory"), "{error}");
    assert!(error.contains("nosuchprog-squall-test"), "{error}");
    assert_eq!(status.pid, None);
    assert_eq!(root.finished("missing"), status);

    let status = root.start("nocwd", &["--cwd", "/nonexistent/squall"], &["true"]);
    assert_eq!(status.state, TaskState::FailedToStart, "{status:?}");
    let error = status.error.expect("an error");
    assert!(error.contains("/nonexistent/squall"), "{error}");
}

#[test]
fn a_task_past_its_timeout_is_killed() {
    let root = Root::new();
    let began = Instant::now();
    root.start("slow", &["--timeout-secs", "1"], &["sleep", "30"]);
    let status = root.finished("slow");
    assert_eq!(status.state, TaskState::TimedOut, "{status:?}");
    assert_eq!(status.signal, Some(15));
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert!(gone(status.pid.expect("a pid")));
}

#[test]
fn cancel_kills_the_whole_process_group() {
    let root = Root::new();
    let started = root.start(
        "group",
        &[],
        &["sh", "-c", "sleep 30 & echo $! > child.pid; wait"],
    );
    let child_pid: u32 = eventually("child.pid", 5, || {
        fs::read_to_string(root.path.join("child.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    assert!(!gone(child_pid));

    let out = root.run(&["cancel", "--id", "group", "--grace-secs", "5"]);
    assert_eq!(out.code, exit::OK, "{out:?}");
    let status = out.status();
    assert_eq!(status.state, TaskState::Cancelled, "{status:?}");
    assert_eq!(status.pid, started.pid);
    eventually("the background grandchild to die", 5, || {
        gone(child_pid).then_some(())
    });
    assert!(gone(started.pid.expect("a pid")));
    assert!(root.file("group", "cancel").exists());

    // Cancelling a finished task only reports it.
    let out = root.run(&["cancel", "--id", "group", "--grace-secs", "5"]);
    assert_eq!(out.code, exit::OK, "{out:?}");
    assert_eq!(out.status(), status);
}

#[test]
fn cancel_escalates_to_sigkill_after_the_grace_period() {
    let root = Root::new();
    // An ignored SIGTERM stays ignored in the shell's children too.
    root.start(
        "stubborn",
        &[],
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    eventually("the trap to be set", 5, || {
        (root.read("stubborn", "stdout.log") == "ready\n").then_some(())
    });
    let began = Instant::now();
    let out = root.run(&["cancel", "--id", "stubborn", "--grace-secs", "1"]);
    assert_eq!(out.code, exit::OK, "{out:?}");
    let status = out.status();
    assert_eq!(status.state, TaskState::Cancelled, "{status:?}");
    assert_eq!(status.signal, Some(9));
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[test]
fn cancel_all_cancels_the_running_tasks_only() {
    let root = Root::new();
    root.start("done", &[], &["true"]);
    let done = root.finished("done");
    root.start("b", &[], &["sleep", "30"]);
    root.start("a", &[], &["sleep", "30"]);
    let out = root.run(&["cancel", "--all", "--grace-secs", "5"]);
    assert_eq!(out.code, exit::OK, "{out:?}");
    let statuses = out.statuses();
    let ids: Vec<&str> = statuses.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(
        statuses.iter().all(|s| s.state == TaskState::Cancelled),
        "{statuses:?}"
    );
    assert_eq!(root.run(&["status", "--id", "done"]).status(), done);
    assert!(!root.file("done", "cancel").exists());
}

#[test]
fn wait_on_a_running_task_gives_up_with_exit_4() {
    let root = Root::new();
    root.start("long", &[], &["sleep", "30"]);
    let (code, status) = root.wait("long", 0);
    assert_eq!(code, exit::STILL_RUNNING);
    assert_eq!(status.state, TaskState::Running);

    let began = Instant::now();
    let (code, status) = root.wait("long", 1);
    assert_eq!(code, exit::STILL_RUNNING);
    assert_eq!(status.state, TaskState::Running);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn unknown_tasks_exit_3_and_bad_command_lines_exit_2() {
    let root = Root::new();
    for args in [
        &["status", "--id", "nope"][..],
        &["wait", "--id", "nope", "--timeout-secs", "1"],
        &["cancel", "--id", "nope", "--grace-secs", "1"],
    ] {
        let out = root.run(args);
        assert_eq!(out.code, exit::UNKNOWN_TASK, "{args:?}: {out:?}");
        assert!(
            out.stderr.starts_with("squall-worker: no task `nope`"),
            "{out:?}"
        );
    }
    for args in [
        &[][..],
        &["status", "--id", "a/b"],
        &["start", "--id", "x"],
        &["bogus"],
    ] {
        let out = root.run(args);
        assert_eq!(out.code, exit::USAGE, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("squall-worker: "), "{out:?}");
    }
    // Nothing to cancel is not an error.
    let out = root.run(&["cancel", "--all", "--grace-secs", "1"]);
    assert_eq!((out.code, out.stdout.as_str()), (exit::OK, ""));
}

#[test]
fn the_task_outlives_the_process_that_started_it() {
    let root = Root::new();
    // The start runs inside a shell in its own process group, which is killed as an SSH
    // session's processes would be once `start` has answered.
    let script =
        r#""$0" --root "$1" start --id survivor -- sh -c 'sleep 1; echo done'; exec sleep 30"#;
    let mut parent = Command::new("sh")
        .args(["-c", script, AGENT, root.path_str()])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the parent shell");
    let mut line = String::new();
    BufReader::new(parent.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("reading start's answer");
    let started: TaskStatus = serde_json::from_str(&line).expect("a status JSON line");
    assert_eq!(started.state, TaskState::Running, "{started:?}");
    let parent_group = Pid::from_child(&parent);
    rustix::process::kill_process_group(parent_group, Signal::KILL).expect("killing the parent");
    parent.wait().expect("reaping the parent");

    let now = root.run(&["status", "--id", "survivor"]).status();
    assert_eq!(now.state, TaskState::Running, "{now:?}");
    let status = root.finished("survivor");
    assert!(status.succeeded(), "{status:?}");
    assert_eq!(root.read("survivor", "stdout.log"), "done\n");
}

#[test]
fn a_vanished_supervisor_does_not_leave_the_task_running_forever() {
    let root = Root::new();
    let started = root.start("orphan", &[], &["sleep", "30"]);
    rustix::process::kill_process(pid_of(started.supervisor_pid), Signal::KILL)
        .expect("killing the supervisor");
    eventually("the supervisor to die", 5, || {
        gone(started.supervisor_pid.expect("a pid")).then_some(())
    });
    // The task itself still runs, so it is still reported as running.
    let (code, status) = root.wait("orphan", 0);
    assert_eq!(
        (code, status.state),
        (exit::STILL_RUNNING, TaskState::Running)
    );

    rustix::process::kill_process(pid_of(started.pid), Signal::KILL).expect("killing the task");
    let status = root.finished("orphan");
    assert_eq!(status.state, TaskState::Exited, "{status:?}");
    assert_eq!(status.exit_code, None);
    assert_eq!(status.error.as_deref(), Some("supervisor vanished"));
}

/// Runs `pack` and returns the archive's bytes.
fn pack(root: &Root) -> Vec<u8> {
    let output = root
        .command(&["pack"])
        .stdin(Stdio::null())
        .output()
        .expect("running pack");
    assert!(output.status.success(), "{output:?}");
    output.stdout
}

/// The names GNU tar lists in a tar.gz.
fn gnu_tar_list(archive: &[u8]) -> Vec<String> {
    let mut tar = Command::new("tar")
        .arg("tzf")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running tar");
    let mut stdin = tar.stdin.take().expect("piped stdin");
    let archive = archive.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&archive));
    let output = tar.wait_with_output().expect("waiting for tar");
    feeder
        .join()
        .expect("the feeder thread")
        .expect("feeding tar");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8 listing")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The regular files of a tar.gz, by name.
fn unpack(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().expect("reading the archive") {
        let mut entry = entry.expect("an archive entry");
        if entry.header().entry_type().is_file() {
            let name = entry.path().expect("a name").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("an entry's data");
            files.push((name, data));
        }
    }
    files
}

#[test]
fn pack_streams_a_tar_gz_of_the_task_folders_even_while_they_grow() {
    let root = Root::new();
    root.start("quiet", &[], &["sh", "-c", "echo hello; echo oops >&2"]);
    root.finished("quiet");
    root.start(
        "chatty",
        &[],
        &["sh", "-c", "while :; do echo 0123456789; done"],
    );
    eventually("chatty output", 5, || {
        let len = fs::metadata(root.file("chatty", "stdout.log")).ok()?.len();
        (len > 0).then_some(())
    });

    for _ in 0..3 {
        let archive = pack(&root);
        let listing = gnu_tar_list(&archive);
        for name in [
            "tasks/quiet/spec.json",
            "tasks/quiet/status.json",
            "tasks/quiet/stdout.log",
            "tasks/quiet/stderr.log",
            "tasks/chatty/stdout.log",
        ] {
            assert!(listing.iter().any(|n| n == name), "{name} in {listing:?}");
        }
        assert!(!listing.iter().any(|n| n.ends_with(".tmp")), "{listing:?}");

        let files = unpack(&archive);
        let file = |name: &str| {
            files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, data)| data.as_slice())
                .expect("a packed file")
        };
        assert_eq!(file("tasks/quiet/stdout.log"), b"hello\n");
        assert_eq!(file("tasks/quiet/stderr.log"), b"oops\n");
        // A prefix of the growing log: whole lines, then possibly part of one.
        let chatty = file("tasks/chatty/stdout.log");
        let line = b"0123456789\n";
        assert!(!chatty.is_empty());
        for chunk in chatty.chunks(line.len()) {
            assert_eq!(chunk, &line[..chunk.len()]);
        }
    }
}

#[test]
fn pack_of_an_empty_root_is_an_empty_archive() {
    let root = Root::new();
    assert!(gnu_tar_list(&pack(&root)).is_empty());
    let missing = Root {
        path: root.path.join("missing"),
    };
    assert!(gnu_tar_list(&pack(&missing)).is_empty());
    assert!(!missing.path.exists());
}

#[test]
fn an_interrupted_task_sees_its_interrupt_file_and_its_children_finish_their_checkpoint() {
    let root = Root::new();
    // The top shell ends at SIGTERM at once; the job it runs traps it, finds the
    // interrupt file, and takes a second to save its checkpoint: the rest of the grace
    // is its, not cut short by the group's SIGKILL.
    fs::write(
        root.path.join("job.sh"),
        "trap '[ -f \"$SQUALL_INTERRUPT_FILE\" ] && { sleep 1; echo saved > ckpt; }; exit 143' TERM\n\
         echo ready > ready\nsleep 30 &\nwait $!\n",
    )
    .expect("job.sh");
    root.start("spot", &[], &["sh", "-c", "sh ./job.sh; echo never"]);
    eventually("the job to be ready", 5, || {
        root.path.join("ready").exists().then_some(())
    });
    let out = root.run(&["interrupt", "--id", "spot", "--grace-secs", "5"]);
    assert_eq!(out.code, exit::OK, "{out:?}");
    assert_eq!(out.status().state, TaskState::Cancelled);
    assert!(root.file("spot", "interrupt").exists());
    assert_eq!(
        fs::read_to_string(root.path.join("ckpt")).ok().as_deref(),
        Some("saved\n"),
        "the checkpoint was written before the group was killed"
    );
}

#[test]
fn pack_follows_no_symlink_and_reads_no_fifo_in_a_task_folder() {
    let root = Root::new();
    root.start("sneaky", &[], &["sh", "-c", "echo done"]);
    root.finished("sneaky");
    let secret = root.path.join("secret.txt");
    fs::write(&secret, "the user's key\n").expect("secret");
    let dir = root.file("sneaky", "stdout.log");
    let dir = dir.parent().expect("the task folder");
    std::os::unix::fs::symlink(&secret, dir.join("stolen.log")).expect("symlink");
    let made = Command::new("mkfifo")
        .arg(dir.join("pipe.log"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // Bounded: a pack that opened the FIFO would block forever.
    let mut child = root
        .command(&["pack"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running pack");
    let mut out = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        out.read_to_end(&mut bytes).map(|_| bytes)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for pack") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pack blocked on the FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let archive = reader.join().expect("reader").expect("pack's output");
    let listing = gnu_tar_list(&archive);
    assert!(
        listing.iter().any(|n| n == "tasks/sneaky/stdout.log"),
        "{listing:?}"
    );
    assert!(
        !listing
            .iter()
            .any(|n| n.contains("stolen") || n.contains("pipe")),
        "{listing:?}"
    );
    assert!(
        !unpack(&archive)
            .iter()
            .any(|(_, data)| data.starts_with(b"the user's key")),
        "the symlink's target is not packed"
    );
}

#[test]
fn a_task_s_streams_keep_their_head_and_tail_past_the_log_limit() {
    let root = Root::new();
    // 200,000 numbered lines (about 1.3 MB) on stdout, a little on stderr, with a cap of
    // 64 KiB per stream: stdout keeps its first and last 32 KiB and says what it skipped.
    root.start(
        "big",
        &["--log-limit", "65536"],
        &["sh", "-c", "seq 1 200000; echo small >&2"],
    );
    let status = root.finished("big");
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    let out = fs::read(root.file("big", "stdout.log")).expect("stdout.log");
    let all: Vec<u8> = (1..=200_000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    assert_eq!(&out[..32 * 1024], &all[..32 * 1024], "the head");
    assert_eq!(
        &out[out.len() - 32 * 1024..],
        &all[all.len() - 32 * 1024..],
        "the tail"
    );
    let middle = String::from_utf8_lossy(&out[32 * 1024..out.len() - 32 * 1024]).into_owned();
    let skipped = all.len() - 64 * 1024;
    assert!(
        middle.contains(&format!(
            "[squall: {skipped} bytes of this stream were skipped here"
        )),
        "{middle}"
    );
    assert!(out.len() < 64 * 1024 + 200, "{} bytes", out.len());
    assert_eq!(
        root.read("big", "stderr.log"),
        "small\n",
        "under the cap: whole"
    );
    assert!(
        !root.file("big", "stdout.log.tail").exists(),
        "the ring is folded into the log"
    );
    // Too small a cap is refused.
    let out = root.run(&["start", "--id", "tiny", "--log-limit", "100", "--", "true"]);
    assert_eq!(out.code, exit::USAGE, "{out:?}");
}

#[test]
fn a_capped_log_is_completed_even_when_an_escaped_process_holds_the_pipe_open() {
    let root = Root::new();
    // The task ends at once, but a process that left its group (setsid) keeps its stdout
    // open: the log still gets its tail folded in, within the drain time.
    let started = Instant::now();
    root.start(
        "escaped",
        &["--log-limit", "65536"],
        &[
            "sh",
            "-c",
            "seq 1 100000; setsid sleep 5 & sleep 0.5; exit 0",
        ],
    );
    let status = root.finished("escaped");
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    let took = started.elapsed();
    // It waited out the drain time for the escaped process's pipe, and no longer.
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(15)).contains(&took),
        "{took:?}"
    );
    let out = fs::read(root.file("escaped", "stdout.log")).expect("stdout.log");
    assert!(out.starts_with(b"1\n2\n3\n"), "the head");
    assert!(out.ends_with(b"99999\n100000\n"), "the tail");
    assert!(!root.file("escaped", "stdout.log.tail").exists());
}
