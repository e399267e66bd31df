//! The architecture check (in the spirit of rust-analyzer's tidy tests): reads the
//! workspace's sources and reports every broken rule of ARCHITECTURE.md that a reading
//! of the text can find. It does not compile anything.
//!
//! Rules:
//! - every `.rs` file opens with a `//!` comment;
//! - no library function returns `Result<_, String>` (library code: `master/src`,
//!   `worker/src`, `launcher/src`, outside `#[cfg(test)]` modules);
//! - the `squall` library's layers depend only on the layers below them ([`LAYERS`]),
//!   so there is no cycle between them;
//! - only `master/src/backend/aws/` names `aws_*` crates;
//! - the worker never depends on the master.
//!
//! The test that runs it on the real tree, and on synthetic trees that break each rule,
//! is `integration/architecture.rs`.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Each layer of `master/src` (its first path component, or the file's stem at the top)
/// and the layers it may use. Listed bottom up, so the graph has no cycle.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("digest", &[]),
    ("record", &["error"]),
    ("exit", &["record"]),
    ("plan", &["error", "digest"]),
    ("engine", &["plan", "record", "error", "digest"]),
    ("seam", &["plan", "record", "error", "digest"]),
    ("backend", &["seam", "plan", "record", "error", "digest"]),
    ("inspect", &["seam", "plan", "record", "error", "digest"]),
    (
        "runner",
        &[
            "engine", "seam", "plan", "record", "inspect", "error", "digest",
        ],
    ),
    (
        "cloud",
        &[
            "backend", "runner", "inspect", "engine", "seam", "plan", "record", "error", "digest",
            "exit",
        ],
    ),
    (
        "cli",
        &[
            "cloud", "backend", "runner", "inspect", "engine", "seam", "plan", "record", "error",
            "digest", "exit",
        ],
    ),
];

/// One broken rule, at a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// Relative to the root checked.
    pub file: PathBuf,
    /// 1-based, 0 for the whole file.
    pub line: usize,
    pub rule: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.rule,
            self.detail
        )
    }
}

/// Every `.rs` file under `dir` (skipping `target` folders), sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The code of a line without its comment (a `//` outside a string).
fn code(line: &str) -> &str {
    let mut in_str = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '/' if !in_str && prev == '/' => return &line[..i - 1],
            _ => {}
        }
        prev = c;
    }
    line
}

/// The lines of a file before its `#[cfg(test)]` module (library code only).
fn library_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .map(|(i, l)| (i + 1, code(l)))
}

/// The layer a file of `master/src` belongs to.
fn layer_of(rel: &Path) -> Option<String> {
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str().to_string_lossy().into_owned();
    Some(match first.strip_suffix(".rs") {
        Some(stem) => stem.to_owned(),
        None => first,
    })
}

/// The top-level modules a line of code names through `crate::`.
fn crate_refs(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `squall_crate::` or `my_crate::` are other names.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b::{c, d}}`: the top-level names in the group.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.extend(first_ident(&item));
        } else {
            out.extend(first_ident(rest));
        }
    }
    out
}

/// Whether a line of code names `Result<T, String>` (whatever `T` is).
fn string_error(line: &str) -> bool {
    let squeezed: String = line.split_whitespace().collect();
    let mut rest = squeezed.as_str();
    while let Some(i) = rest.find("Result<") {
        rest = &rest[i + "Result<".len()..];
        // The generic arguments up to the matching `>`, split at top-level commas.
        let mut depth = 0;
        let mut args = vec![String::new()];
        for c in rest.chars() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' if depth == 0 => break,
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    args.push(String::new());
                    continue;
                }
                _ => {}
            }
            if let Some(a) = args.last_mut() {
                a.push(c);
            }
        }
        if args.len() == 2 && matches!(args[1].as_str(), "String" | "std::string::String") {
            return true;
        }
    }
    false
}

fn first_ident(s: &str) -> Option<String> {
    let id: String = s
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!id.is_empty()).then_some(id)
}

/// Checks the workspace (or a synthetic tree shaped like it) at `root`.
pub fn check(root: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    for dir in ["master", "worker", "launcher", "tests", "bench"] {
        rust_files(&root.join(dir), &mut files);
    }
    let layers: BTreeSet<&str> = LAYERS.iter().map(|(l, _)| *l).collect();
    let master = root.join("master/src");
    for path in &files {
        let rel = path.strip_prefix(root).unwrap_or(path).to_path_buf();
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let mut found = |line: usize, rule: &'static str, detail: String| {
            out.push(Violation {
                file: rel.clone(),
                line,
                rule,
                detail,
            });
        };
        if !text.starts_with("//!") {
            found(
                1,
                "opening",
                "the file does not open with a `//!` comment saying what it is for".into(),
            );
        }
        let library = ["master/src", "worker/src", "launcher/src"]
            .iter()
            .any(|d| rel.starts_with(d));
        if library {
            for (n, line) in library_lines(&text) {
                if string_error(line) {
                    found(
                        n,
                        "string-error",
                        "a `Result<_, String>`: a typed error keeps its cause".into(),
                    );
                }
            }
        }
        if rel.starts_with("worker/src") {
            for (n, line) in library_lines(&text) {
                if line.contains("squall::") && !line.contains("squall_worker") {
                    found(
                        n,
                        "worker-independent",
                        "the worker names the master".into(),
                    );
                }
            }
        }
        let Ok(inner) = path.strip_prefix(&master) else {
            continue;
        };
        let in_aws = inner.starts_with("backend/aws");
        let Some(layer) = layer_of(inner) else {
            continue;
        };
        let allowed: Option<&[&str]> = LAYERS
            .iter()
            .find(|(l, _)| *l == layer)
            .map(|(_, deps)| *deps);
        for (n, line) in library_lines(&text) {
            if !in_aws
                && ["aws_config", "aws_sdk_", "aws_smithy", "aws_types"]
                    .iter()
                    .any(|c| line.contains(c))
            {
                found(
                    n,
                    "aws-outside-backend",
                    format!("only backend/aws/ names aws_* crates: `{}`", line.trim()),
                );
            }
            let Some(allowed) = allowed else { continue };
            for target in crate_refs(line) {
                if target != layer
                    && layers.contains(target.as_str())
                    && !allowed.contains(&target.as_str())
                {
                    found(
                        n,
                        "layering",
                        format!(
                            "`{layer}` may not use `{target}` (allowed: {})",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_references_are_found_in_paths_and_groups() {
        assert_eq!(crate_refs("use crate::plan::Plan;"), ["plan"]);
        assert_eq!(
            crate_refs("use crate::{record::X, seam::{a, b}, error};"),
            ["record", "seam", "error"]
        );
        assert_eq!(crate_refs("let x = crate::runner::now_ms();"), ["runner"]);
        assert!(crate_refs("squall_crate::x").is_empty());
        assert_eq!(code("let a = 1; // crate::runner"), "let a = 1; ");
        assert!(string_error("fn f() -> Result<Vec<u8>, String> {"));
        assert!(string_error("type R = std::result::Result<(), String>;"));
        assert!(!string_error(
            "fn f() -> anyhow::Result<BTreeMap<String, String>> {"
        ));
        assert!(!string_error("fn f() -> Result<String, Error> {"));
        assert_eq!(code(r#"let s = "a//b"; // c"#), r#"let s = "a//b"; "#);
    }
}
