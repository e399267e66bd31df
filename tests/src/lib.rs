//! Harness for squall's integration tests: finding the built binaries, scratch
//! directories, and running `squall` as a user would.
//!
//! The tests themselves live in `integration/` (one test binary, modules inside). Real
//! servers are started by [`sshd`] (OpenSSH) and [`moto`] (the AWS API emulator). The
//! benchmarks (`bench/`, crate `squall-bench`) use the same harnesses.

pub mod ec2sim;
pub mod faults;
pub mod imds;
pub mod lambda;
pub mod moto;
pub mod sshd;
pub mod tidy;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether this is a CI run: `CI` set to `true`, `1` or `yes` (any case). CI must run
/// every test: a missing tool fails the test there instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "true" | "1" | "yes" | "on"
        )
    })
}

/// The test that cannot run here because `what` is missing. Under CI ([`in_ci`]) this
/// fails the test. Elsewhere it prints a loud `SKIPPED` line and appends one line to
/// the file `$SQUALL_SKIP_LOG` names (set by `scripts/test`, which lists the skipped
/// tests and why at the end, so "N passed" never silently includes a skip).
pub fn skip(what: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(!in_ci(), "{test} cannot run: {what}");
    eprintln!("SKIPPED: {test}: {what}");
    if let Some(log) = std::env::var_os("SQUALL_SKIP_LOG") {
        let line = format!("{test}: {what}\n");
        // One short append per skip: lines of parallel tests do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// How long a `squall` command run by a test may take before the test fails: a hang
/// becomes a failure that names the command, not a stuck run.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// Waits for `child` (which this test started) up to `limit`, collecting its output; on
/// timeout it is killed (by its PID) and the test fails, naming `what`.
pub fn finish_within(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} (pid {pid}) did not finish within {limit:?}");
        }
    }
}

/// Runs `cmd` to its end (stdin closed, output captured), failing the test if it takes
/// longer than `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    finish_within(child, limit, &what)
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A binary of the workspace, built by `cargo build --workspace --bins` (the test
/// command in README.md does that first).
pub fn binary(name: &str) -> PathBuf {
    // target/debug/deps/integration-HASH -> target/debug/NAME
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/PROFILE/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test does)",
        bin.display()
    );
    bin
}

/// A fresh scratch directory, removed on drop unless the test panicked (then it is
/// kept for inspection and its path printed).
#[derive(Debug)]
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "squall-test-{label}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a scratch dir");
        Scratch { path }
    }

    /// Writes `text` to `name` under the scratch dir and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("creating parent dirs");
        }
        std::fs::write(&p, text).expect("writing a scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept scratch dir {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs `squall ARGS` with `SQUALL_HOME=home` and plain output; waits for it (at most
/// [`COMMAND_LIMIT`]).
pub fn squall(home: &Path, args: &[&str]) -> Output {
    output_within(&mut squall_command(home, args), COMMAND_LIMIT)
}

/// The `squall ARGS` command with `SQUALL_HOME=home`, not yet started.
pub fn squall_command(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("squall"));
    cmd.args(args)
        .env("SQUALL_HOME", home)
        .env("SQUALL_WORKER_BIN", binary("squall-worker"))
        .env_remove("SQUALL_LOG")
        .current_dir(workspace());
    cmd
}

/// Lossy text of a process's stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `cond` every 50 ms until it holds, panicking after `limit` with `what`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The run record a run left in the local store under `home`.
pub fn run_record(home: &Path, run: &str) -> squall::record::RunRecord {
    let path = home.join("store/runs").join(run).join("run.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("run.json parses as a RunRecord")
}

/// A host's log archive in the local store under `home`.
pub fn archive(home: &Path, run: &str, host: &str) -> PathBuf {
    home.join("store/runs")
        .join(run)
        .join("logs")
        .join(format!("{host}.tar.gz"))
}

/// Lists an archive with GNU tar, which must accept it.
pub fn gnu_tar_list(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("tzf")
        .arg(archive)
        .output()
        .expect("running tar");
    assert!(
        out.status.success(),
        "GNU tar rejects {}: {}",
        archive.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One member's content from an archive, through GNU tar.
pub fn gnu_tar_cat(archive: &Path, member: &str) -> String {
    let out = Command::new("tar")
        .arg("xzOf")
        .arg(archive)
        .arg(member)
        .output()
        .expect("running tar");
    assert!(
        out.status.success(),
        "{member} not in {}: {}",
        archive.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
