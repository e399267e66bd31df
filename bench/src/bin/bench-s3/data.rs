//! The benchmark's input: about `--size-mib` of generated log files laid out as an agent
//! root (`ROOT/tasks/train-NNN/stdout.log` 7/8, `stderr.log` 1/8), written on a few
//! threads, and the list of what was written, which every upload is checked against.
//!
//! The lines come from `squall_bench::loggen`; nothing here times anything.

use anyhow::{Context, Result};
use squall_bench::loggen::LogGen;
use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::path::Path;

/// The generated agent root.
#[derive(Debug)]
pub struct Dataset {
    pub raw_bytes: u64,
    /// Archive member name (`tasks/ID/FILE`) and size, sorted.
    pub files: Vec<(String, u64)>,
}

/// Writes `tasks` task folders of about `total` bytes together under `root/tasks/`, on
/// two threads (each file's content depends only on its task's index).
pub fn generate(root: &Path, total: u64, tasks: usize) -> Result<Dataset> {
    let per_task = total / tasks as u64;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let results: Vec<Result<Vec<(String, u64)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<Vec<(String, u64)>> {
                    let mut files = Vec::new();
                    for task in (t..tasks).step_by(threads) {
                        files.extend(write_task(root, task, per_task)?);
                    }
                    Ok(files)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread panicked")))
            })
            .collect()
    });
    let mut files = Vec::new();
    for r in results {
        files.extend(r?);
    }
    files.sort();
    let raw_bytes = files.iter().map(|(_, n)| n).sum();
    Ok(Dataset { raw_bytes, files })
}

/// One task folder: stdout.log gets 7/8 of `bytes`, stderr.log the rest.
fn write_task(root: &Path, task: usize, bytes: u64) -> Result<Vec<(String, u64)>> {
    let id = format!("train-{task:03}");
    let dir = root.join("tasks").join(&id);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut generator = LogGen::new(task);
    let mut files = Vec::new();
    for (name, target) in [("stdout.log", bytes / 8 * 7), ("stderr.log", bytes / 8)] {
        let path = dir.join(name);
        let mut out = BufWriter::with_capacity(
            1 << 20,
            File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        let mut written = 0u64;
        let mut line = String::with_capacity(512);
        while written < target {
            line.clear();
            if name == "stdout.log" {
                generator.stdout_line(&mut line);
            } else {
                generator.stderr_line(&mut line);
            }
            out.write_all(line.as_bytes())?;
            written += line.len() as u64;
        }
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        files.push((format!("tasks/{id}/{name}"), written));
    }
    Ok(files)
}
