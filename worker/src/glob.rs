//! The `glob` subcommand: the files on this host matching a fetch's glob, as
//! `squall_worker::GlobMatch` JSON lines, for the master to stream one by one.
//!
//! `*` and `?` match within one name, `**` any run of folders; hidden names only when
//! matched literally; symlinked folders are not followed (no loops). A folder matched
//! by the last segment is an error: fetch copies files. Reading the files is `cat`'s,
//! on the master's request; this module only lists.

use crate::error::{AgentError, Result};
use squall_worker::{Glob, GlobMatch, segment_matches};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The most files one glob may match (a guard against `**` over a whole disk).
const MAX_MATCHES: usize = 100_000;

/// Every file matching `pattern`, sorted by name.
pub fn matches(pattern: &str) -> Result<Vec<GlobMatch>> {
    let glob =
        Glob::parse(pattern).ok_or_else(|| AgentError::Usage("glob needs a pattern".into()))?;
    let base = if glob.base.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(&glob.base)
    };
    let mut out = Vec::new();
    walk(pattern, &base, "", &glob.segments, false, &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

/// Matches `segments` below `dir` (whose name relative to the fixed part is `rel`).
/// `below_globstar`: a `**` came just before, which walks into the folders the next
/// segment matches, so a folder matched by a last segment there is not an error.
fn walk(
    pattern: &str,
    dir: &Path,
    rel: &str,
    segments: &[String],
    below_globstar: bool,
    out: &mut Vec<GlobMatch>,
) -> Result<()> {
    let Some((seg, rest)) = segments.split_first() else {
        return Ok(());
    };
    if seg == "**" {
        // Zero folders...
        walk(pattern, dir, rel, rest, true, out)?;
        // ...or one more, then `**` again.
        for (name, path) in entries(dir)? {
            if name.starts_with('.') {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                walk(pattern, &path, &join(rel, &name), segments, false, out)?;
            }
        }
        return Ok(());
    }
    let candidates: Vec<(String, PathBuf)> = if squall_worker::is_wild(seg) {
        entries(dir)?
            .into_iter()
            .filter(|(name, _)| segment_matches(seg, name))
            .collect()
    } else {
        vec![(seg.clone(), dir.join(seg))]
    };
    for (name, path) in candidates {
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(AgentError::io("reading", path, e)),
        };
        let here = join(rel, &name);
        if !rest.is_empty() {
            if meta.is_dir() && !fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink()) {
                walk(pattern, &path, &here, rest, false, out)?;
            }
            continue;
        }
        if meta.is_dir() {
            if below_globstar {
                continue;
            }
            return Err(AgentError::Glob {
                pattern: pattern.to_owned(),
                problem: format!(
                    "matches the folder {}: fetch copies files (match them, e.g. `{}/**`)",
                    path.display(),
                    path.display()
                ),
            });
        }
        if meta.is_file() {
            if out.len() >= MAX_MATCHES {
                return Err(AgentError::Glob {
                    pattern: pattern.to_owned(),
                    problem: format!("matches more than {MAX_MATCHES} files"),
                });
            }
            out.push(GlobMatch {
                path: path.to_string_lossy().trim_start_matches("./").to_owned(),
                name: here,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    }
}

/// The UTF-8 names in `dir` with their paths; a missing folder has none.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(AgentError::io("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| AgentError::io("listing", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder with `files` (relative paths) in it.
    fn tree(label: &str, files: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("squall-glob-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for f in files {
            let p = dir.join(f);
            fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
            fs::write(&p, f.as_bytes()).expect("write");
        }
        dir
    }

    fn names(dir: &Path, pattern: &str) -> Vec<String> {
        let found = matches(&format!("{}/{pattern}", dir.display())).expect("matches");
        for m in &found {
            assert!(m.path.starts_with(&*dir.to_string_lossy()), "{m:?}");
            assert_eq!(m.size, fs::metadata(&m.path).expect("stat").len());
        }
        found.into_iter().map(|m| m.name).collect()
    }

    #[test]
    fn names_are_relative_to_the_fixed_part_and_hidden_files_need_a_literal_dot() {
        let dir = tree(
            "names",
            &[
                "work/a.count",
                "out/x.csv",
                "out/y.csv",
                "out/.h.csv",
                "out/sub/z.csv",
                "out/sub/.d/w.csv",
                "out/n.txt",
            ],
        );
        assert_eq!(names(&dir, "work/a.count"), ["a.count"]);
        assert_eq!(names(&dir, "out/*.csv"), ["x.csv", "y.csv"]);
        assert_eq!(names(&dir, "out/?.csv"), ["x.csv", "y.csv"]);
        assert_eq!(names(&dir, "out/.*.csv"), [".h.csv"]);
        assert_eq!(names(&dir, "out/**/*.csv"), ["sub/z.csv", "x.csv", "y.csv"]);
        assert_eq!(
            names(&dir, "out/**"),
            ["n.txt", "sub/z.csv", "x.csv", "y.csv"],
            "a final `**` is every (non-hidden) file below"
        );
        assert_eq!(names(&dir, "out/sub/.d/w.csv"), ["w.csv"]);
        assert!(
            names(&dir, "out/*.parquet").is_empty(),
            "no match is no error here"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_matched_folder_is_an_error_and_symlinked_folders_are_not_followed() {
        let dir = tree("folders", &["out/sub/z.csv", "elsewhere/secret.csv"]);
        let err = matches(&format!("{}/out/*", dir.display())).expect_err("a folder");
        assert!(err.to_string().contains("matches the folder"), "{err}");
        std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join("out/link")).expect("symlink");
        assert_eq!(names(&dir, "out/**/*.csv"), ["sub/z.csv"]);
        let _ = fs::remove_dir_all(&dir);
    }
}
