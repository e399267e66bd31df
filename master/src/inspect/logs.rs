//! A run's logs straight out of its tar.gz archives, for `squall logs`, the report's
//! stderr tails and `--extract`: streamed store -> gzip -> tar -> lines on a blocking
//! thread, never whole in memory or on disk, so memory stays flat whatever their size.
//!
//! Which archive stands for a host: its final one, else its last snapshot. Writing
//! archives is the runner's job.

use crate::record::{RunRecord, TaskOutcome, keys};
use crate::seam::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Which log lines `squall logs` prints.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub host: Option<String>,
    /// A task id, or its prefix (e.g. `s1-u3`).
    pub task: Option<String>,
    /// Only lines containing this.
    pub grep: Option<String>,
}

/// The archive to read for each host: the final one, else its last snapshot.
pub async fn archives(store: &dyn Store, run: &str) -> Result<Vec<(String, String)>, StoreError> {
    let prefix = keys::logs_prefix(run);
    let mut by_host: BTreeMap<String, String> = BTreeMap::new();
    let mut snapshots: BTreeMap<String, String> = BTreeMap::new();
    for key in store.list(&prefix).await? {
        let rest = &key[prefix.len()..];
        if let Some(snap) = rest.strip_prefix("snapshots/") {
            if let Some(host) = snap.strip_suffix(".tar.gz") {
                snapshots.insert(host.to_owned(), key.clone());
            }
        } else if let Some(host) = rest.strip_suffix(".tar.gz") {
            by_host.insert(host.to_owned(), key.clone());
        }
    }
    for (host, key) in snapshots {
        by_host.entry(host).or_insert(key);
    }
    // Host names become folder names (--extract): plain names only.
    Ok(by_host
        .into_iter()
        .filter(|(h, _)| !h.is_empty() && !h.starts_with('.') && !h.contains(['/', '\\']))
        .collect())
}

/// What one archive member is: the task id and the stream (`stdout`, `stderr`, `log`).
fn member_task(path: &str) -> Option<(String, String)> {
    let path = path.trim_start_matches("./");
    if let Some(rest) = path.strip_prefix("tasks/") {
        let (task, file) = rest.split_once('/')?;
        let stream = file.strip_suffix(".log")?;
        return Some((task.to_owned(), stream.to_owned()));
    }
    // The master's archive holds master.log.
    path.strip_suffix(".log")
        .map(|n| (n.to_owned(), "log".to_owned()))
}

/// The longest piece of a log line `squall logs` holds at once.
pub const MAX_LINE: usize = 1 << 20;

/// Streams the lines of one archive that pass `filter` into `out`, prefixed
/// `HOST TASK STREAM|`. Blocking: run it on a blocking thread. `skip` holds, per member,
/// how many lines were printed before (for `--follow`) and is updated.
/// `complete` is false for a live snapshot, whose last line may still be being written:
/// a last line without its newline is then left for a later read.
pub fn stream_archive(
    host: &str,
    archive: impl Read,
    filter: &LogFilter,
    skip: &mut BTreeMap<String, usize>,
    complete: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let gz = flate2::read::GzDecoder::new(archive);
    let mut tar = tar::Archive::new(gz);
    for entry in tar.entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let Some((task, stream)) = member_task(&path) else {
            continue;
        };
        if filter
            .task
            .as_ref()
            .is_some_and(|t| !task.starts_with(t.as_str()))
        {
            continue;
        }
        let seen = skip.entry(format!("{host}/{path}")).or_insert(0);
        let mut reader = std::io::BufReader::new(entry);
        let mut line = Vec::new();
        let mut n = 0;
        loop {
            line.clear();
            // A line is read MAX_LINE bytes at most at a time (a member without a newline,
            // corrupt or not, never fills memory): a longer one prints in pieces.
            if (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)?
                == 0
            {
                break;
            }
            let whole = line.last() == Some(&b'\n') || line.len() == MAX_LINE;
            if !whole && !complete {
                break;
            }
            n += 1;
            if n <= *seen {
                continue;
            }
            *seen = n;
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = String::from_utf8_lossy(body);
            if filter
                .grep
                .as_ref()
                .is_some_and(|g| !text.contains(g.as_str()))
            {
                continue;
            }
            writeln!(out, "{host} {task} {stream}| {text}")?;
        }
    }
    Ok(())
}

/// Why reading a run's logs failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading {key}")]
    Read {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {key}")]
    Join {
        key: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("creating {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a store object on a blocking thread as `std::io::Read`, calling `work` with it.
pub async fn with_blocking_reader<T: Send + 'static>(
    store: &dyn Store,
    key: &str,
    work: impl FnOnce(&mut dyn Read) -> std::io::Result<T> + Send + 'static,
) -> Result<Option<T>, LogError> {
    let Some(stream) = store.get_stream(key).await? else {
        return Ok(None);
    };
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _guard = handle.enter();
        let mut bridge = tokio_util::io::SyncIoBridge::new_with_handle(stream, handle.clone());
        work(&mut bridge)
    })
    .await
    .map_err(|source| LogError::Join {
        key: key.to_owned(),
        source,
    })?
    .map(Some)
    .map_err(|source| LogError::Read {
        key: key.to_owned(),
        source,
    })
}

/// Prints every matching line of the run's archives to `out` (stdout for the CLI).
pub async fn print_logs(
    store: &dyn Store,
    run: &str,
    filter: &LogFilter,
    skip: &mut BTreeMap<String, usize>,
) -> Result<usize, LogError> {
    let mut printed = 0;
    for (host, key) in archives(store, run).await? {
        if filter.host.as_ref().is_some_and(|h| *h != host) {
            continue;
        }
        let filter = filter.clone();
        let mut seen = skip.clone();
        let host2 = host.clone();
        let complete = !key.contains("/logs/snapshots/");
        let r = with_blocking_reader(store, &key, move |r| {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            stream_archive(&host2, r, &filter, &mut seen, complete, &mut lock).map(|()| seen)
        })
        .await?;
        if let Some(seen) = r {
            *skip = seen;
            printed += 1;
        }
    }
    Ok(printed)
}

/// Unpacks every archive of the run into `dir/HOST/` (paths are kept inside).
pub async fn extract(store: &dyn Store, run: &str, dir: &Path) -> Result<usize, LogError> {
    let mut n = 0;
    for (host, key) in archives(store, run).await? {
        let dest = dir.join(&host);
        std::fs::create_dir_all(&dest).map_err(|source| LogError::Create {
            path: dest.clone(),
            source,
        })?;
        with_blocking_reader(store, &key, move |r| {
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(r));
            tar.unpack(&dest)
        })
        .await?;
        n += 1;
    }
    Ok(n)
}

/// The most of one stderr line a tail keeps (the rest of a longer line is skipped).
pub const MAX_TAIL_LINE: usize = 4096;

/// Reads the next line of `r` into `line` (without its newline), keeping at most `max`
/// bytes of it and skipping the rest, so that no line is ever held whole; false at the
/// end.
pub fn read_line_capped(
    r: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(buf.len());
        r.consume(used);
        if done.is_some() {
            return Ok(true);
        }
    }
}

/// The last `lines` lines of each failed task's stderr, read from the archives (each
/// line cut at [`MAX_TAIL_LINE`]).
pub async fn stderr_tails(
    store: &dyn Store,
    rec: &RunRecord,
    lines: usize,
) -> BTreeMap<String, String> {
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in rec
        .tasks
        .iter()
        .filter(|t| t.outcome != TaskOutcome::Succeeded)
    {
        wanted
            .entry(t.host.clone())
            .or_default()
            .insert(t.id.clone());
    }
    let mut tails = BTreeMap::new();
    let Ok(found) = archives(store, &rec.run_id).await else {
        return tails;
    };
    for (host, key) in found {
        let Some(ids) = wanted.remove(&host) else {
            continue;
        };
        let got = with_blocking_reader(store, &key, move |r| {
            let mut out = BTreeMap::new();
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(r));
            for entry in tar.entries()? {
                let entry = entry?;
                let path = entry.path()?.to_string_lossy().into_owned();
                let Some((task, stream)) = member_task(&path) else {
                    continue;
                };
                if stream != "stderr" || !ids.contains(&task) {
                    continue;
                }
                let mut tail = std::collections::VecDeque::new();
                let mut reader = std::io::BufReader::new(entry);
                let mut line = Vec::new();
                while read_line_capped(&mut reader, &mut line, MAX_TAIL_LINE)? {
                    tail.push_back(String::from_utf8_lossy(&line).into_owned());
                    if tail.len() > lines {
                        tail.pop_front();
                    }
                }
                out.insert(task, tail.into_iter().collect::<Vec<_>>().join("\n"));
            }
            Ok(out)
        })
        .await;
        if let Ok(Some(t)) = got {
            tails.extend(t);
        }
    }
    tails
}

/// Prints the run's log lines and, while the run goes, new ones from its snapshots every
/// `poll`, until its record is written; then the final archives' lines not yet printed.
pub async fn follow(
    store: &dyn Store,
    run: &str,
    filter: &LogFilter,
    poll: std::time::Duration,
) -> Result<(), LogError> {
    let mut seen = BTreeMap::new();
    loop {
        print_logs(store, run, filter, &mut seen).await?;
        let done = super::known(store, run)
            .await?
            .is_some_and(|k| super::ended(&k));
        if done {
            // The final archives may hold lines the last snapshots had not.
            print_logs(store, run, filter, &mut seen).await?;
            return Ok(());
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_lines_keep_their_start_and_skip_the_rest() {
        let text = format!("short\n{}\nlast", "x".repeat(10_000));
        let mut r = std::io::BufReader::with_capacity(64, text.as_bytes());
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while read_line_capped(&mut r, &mut line, 100).expect("read") {
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        assert_eq!(
            lines,
            ["short".to_owned(), "x".repeat(100), "last".to_owned()]
        );
    }
}
