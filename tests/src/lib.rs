//! Harness for squall's integration tests: finding the built binaries, scratch
//! directories, and running `squall` as a user would.
//!
//! The tests themselves live in `integration/` (one test binary, modules inside). Real
//! servers are started by [`sshd`] (OpenSSH) and [`moto`] (the AWS API emulator). The
//! benchmarks (`bench/`, crate `squall-bench`) use the same harnesses.

pub mod ec2sim;
pub mod imds;
pub mod lambda;
pub mod moto;
pub mod sshd;
pub mod tidy;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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

/// Runs `squall ARGS` with `SQUALL_HOME=home` and plain output; waits for it.
pub fn squall(home: &Path, args: &[&str]) -> Output {
    squall_command(home, args).output().expect("running squall")
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
