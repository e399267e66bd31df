//! The facts a benchmark report opens with: the machine (cores, CPU, memory, OS,
//! kernel), the build that was timed (its binary, when it was built, the commit and
//! whether `master/` or `worker/` had uncommitted changes) and versions of tools and
//! locked crates, rendered as the report's `### Machine` list.
//!
//! Each fact is read from a command or a file and is never an error: a fact that cannot
//! be found reads `?` or says why. The facts that belong to one benchmark (ansible's
//! versions, the AWS CLI's) are gathered by that benchmark with [`first_line`].

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// A report's facts, in the order they are printed: (name, value).
pub type Facts = Vec<(&'static str, String)>;

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

/// The machine's facts every report starts with: nproc, CPU, memory, OS, kernel.
pub fn machine() -> Facts {
    vec![
        ("nproc", first_line("nproc", &[])),
        ("CPU", file_field("/proc/cpuinfo", "model name")),
        ("memory", file_field("/proc/meminfo", "MemTotal")),
        ("OS", file_field("/etc/os-release", "PRETTY_NAME")),
        ("kernel", first_line("uname", &["-sr"])),
    ]
}

/// Which build `binary` is: `PATH built TIME; HEAD COMMIT`, and `, with uncommitted
/// changes in master/ or worker/` when the product's code differs from HEAD (only
/// product code counts: a benchmark's own files may be uncommitted).
pub fn build(binary: &Path) -> String {
    let ws = squall_tests::workspace();
    let ws = ws.to_string_lossy();
    let commit = first_line("git", &["-C", &ws, "log", "-1", "--format=%h of %cI"]);
    let dirty = Command::new("git")
        .args([
            "-C",
            &ws,
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "master",
            "worker",
        ])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    let path = binary.to_string_lossy();
    let built = first_line("date", &["-u", "-r", &path, "+%FT%TZ"]);
    format!(
        "{path} built {built}; HEAD {commit}{}",
        if dirty {
            ", with uncommitted changes in master/ or worker/"
        } else {
            ""
        }
    )
}

/// A package's version in the workspace's Cargo.lock, or `?`.
pub fn locked_version(name: &str) -> String {
    let lock = fs::read_to_string(squall_tests::workspace().join("Cargo.lock")).unwrap_or_default();
    let name_line = format!("name = \"{name}\"");
    lock.split("[[package]]")
        .find(|p| p.lines().any(|l| l == name_line))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or_else(|| "?".to_owned(), |v| v.trim_matches('"').to_owned())
}

/// The report's `### Machine` section: one `- name: value` line per fact.
pub fn markdown(facts: &[(&'static str, String)]) -> String {
    let mut md = String::from("### Machine\n\n");
    for (k, v) in facts {
        let _ = writeln!(md, "- {k}: {v}");
    }
    md
}
