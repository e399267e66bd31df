//! Where a benchmark finds the binaries it times when no flag names them: next to its
//! own binary, in the `target/PROFILE/` folder cargo built it into, so that
//! `--profile bench-fast` times bench-fast builds and `--release` release builds.
//!
//! It builds nothing and does not check that the binaries are current; the benchmark
//! reports which build it timed (`facts::build`).

use anyhow::{Context, Result, ensure};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

/// The `target/PROFILE/` folders that hold optimized builds.
pub const OPTIMIZED: &[&str] = &["release", "bench-fast"];

/// The folder this binary lives in, `target/PROFILE/` (also when it runs from
/// `target/PROFILE/deps/`, as a test harness runs it).
pub fn build_dir() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| io::Error::other("this binary has no parent folder"))?
        .to_path_buf();
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.pop();
    }
    Ok(dir)
}

/// Whether `dir` (a `target/PROFILE/` folder) holds an optimized build ([`OPTIMIZED`]).
pub fn optimized(dir: &Path) -> bool {
    dir.file_name()
        .is_some_and(|name| OPTIMIZED.iter().any(|p| name == OsStr::new(p)))
}

/// The `cargo build` flags that build into `dir`: ` --release` for `target/release/`,
/// nothing for `target/debug/`, ` --profile NAME` for any other `target/NAME/`.
pub fn profile_flags(dir: &Path) -> String {
    match dir.file_name().and_then(OsStr::to_str) {
        Some("release") => " --release".to_owned(),
        Some("debug") | None => String::new(),
        Some(name) => format!(" --profile {name}"),
    }
}

/// `squall` and `squall-worker`: the given paths (`--squall`, `--agent`), else next to
/// this binary (warning when that build is not optimized); an error names the
/// `cargo build` that makes them when one is missing.
pub fn squall_binaries(squall: Option<&Path>, agent: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    let squall = match squall {
        Some(p) => p.to_owned(),
        None => {
            let dir = build_dir().context("finding this binary's path")?;
            if !optimized(&dir) {
                eprintln!(
                    "warning: using the squall binary of {} (not an optimized build): run with --profile bench-fast or --release",
                    dir.display()
                );
            }
            dir.join("squall")
        }
    };
    let agent = agent.map_or_else(|| squall.with_file_name("squall-worker"), Path::to_owned);
    for (what, p) in [("squall", &squall), ("squall-worker", &agent)] {
        ensure!(
            p.is_file(),
            "{what} not found at {}: run `cargo build{} --workspace --bins` first (or pass --squall/--agent)",
            p.display(),
            build_dir()
                .map(|dir| profile_flags(&dir))
                .unwrap_or_default()
        );
    }
    Ok((squall, agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_told_from_their_folders() {
        let dir = |name| Path::new("/w/target").join(name);
        assert!(optimized(&dir("release")) && optimized(&dir("bench-fast")));
        assert!(!optimized(&dir("debug")));
        assert_eq!(profile_flags(&dir("release")), " --release");
        assert_eq!(profile_flags(&dir("bench-fast")), " --profile bench-fast");
        assert_eq!(profile_flags(&dir("debug")), "");
    }
}
