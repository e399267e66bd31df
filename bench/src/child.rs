//! Running a command to its end with a time bound: stdin null, output captured, in a
//! process group of its own, which is killed (whatever it started that stayed in the
//! group included) when the bound passes.

use anyhow::{Context, Result, ensure};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Runs `cmd` (named `what` in errors) within `limit`; returns its output and the wall
/// time from spawn to exit. Killed at the bound, it is an error carrying its output.
pub fn run_within(cmd: &mut Command, what: &str, limit: Duration) -> Result<(Output, Duration)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let pgid = child.id();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            return true;
        }
        false
    });
    let out = child.wait_with_output();
    let took = start.elapsed();
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(false);
    let out = out.with_context(|| format!("waiting for {what}"))?;
    ensure!(
        !killed,
        "{what} did not finish within {limit:?} and was killed:\n{}",
        squall_tests::text(&out)
    );
    Ok((out, took))
}
