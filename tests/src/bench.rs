//! Helpers shared by the benchmark binaries (`src/bin/bench-*.rs`): machine facts and
//! statistics. Not used by the tests themselves.

use std::fs;
use std::process::{Command, Stdio};

/// First line of a command's stdout (or stderr, for `ssh -V`), or why it failed.
pub fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                String::from_utf8_lossy(&out.stderr).into_owned()
            } else {
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(e) => format!("({program}: {e})"),
    }
}

/// The value of `key` in a `key: value` or `key=value` file (`/proc/cpuinfo`,
/// `/etc/os-release`), or `?`.
pub fn file_field(path: &str, key: &str) -> String {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once([':', '='])?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "?".to_string())
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
