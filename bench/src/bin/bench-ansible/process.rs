//! Processes for the benchmark: a command run to the end in its own process group and
//! killed after [`RUN_TIMEOUT`], the same work on every host's thread at once, and
//! stopping an ssh control master.
//!
//! It knows no contender: what to run and how to check it is `run.rs`'s.

use crate::HOSTS;
use anyhow::Result;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A contender run taking longer than this is killed and aborts the benchmark.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Asks the control master at `sock` to exit (if there is one).
pub fn stop_master(sock: &Path) {
    if !sock.exists() {
        return;
    }
    let _ = Command::new("ssh")
        .args(["-F", "/dev/null", "-S"])
        .arg(sock)
        .args(["-O", "exit", "placeholder"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `f(i)` for every host index on its own thread; the first error, if any.
pub fn per_host<F>(f: F) -> Result<()>
where
    F: Fn(usize) -> Result<()> + Sync,
{
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..HOSTS).map(|i| s.spawn(move || f(i))).collect();
        let mut first = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a per-host thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
}

/// Runs `cmd` to the end (stdin null, output captured) in its own process group, which is
/// killed after [`RUN_TIMEOUT`]; returns the output and the wall time from spawn to exit.
pub fn timed(cmd: &mut Command, what: &str) -> Result<(Output, Duration)> {
    squall_bench::child::run_within(cmd, what, RUN_TIMEOUT)
}

pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
