//! Reading runs back from a store, for `squall runs`, `status`, `logs` and the report:
//! everything comes from the run's prefix (run.json, status.json, the launcher's files,
//! the tar.gz archives), for live runs, finished ones and ones whose master died.
//!
//! Archives are streamed (store -> gzip -> tar -> lines) on a blocking thread, never
//! written whole to disk or memory, so memory stays flat whatever their size.

use crate::record::{Heartbeat, RunRecord, RunStatus, TaskOutcome};
use crate::store::{Store, StoreError, keys};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::Path;

/// A heartbeat older than this (with no run.json) means the master may be gone.
pub const STALE_HEARTBEAT_MS: u64 = 120_000;

/// One line of `squall runs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub playbook: String,
    pub trigger: String,
    pub started_at_ms: u64,
    pub duration_ms: Option<u64>,
    /// A `RunStatus` name, or `running` / `stale` (heartbeat too old) / `launched`.
    pub status: String,
    pub hosts: usize,
    pub shards_done: usize,
    pub shards_total: usize,
    pub instance_hours: f64,
    /// Estimated on-demand cost in USD, when every host's type is in [`PRICES`].
    pub estimated_cost_usd: Option<f64>,
    pub reason: Option<String>,
}

/// On-demand prices, USD per hour (us-east-1, Linux), for cost estimates only.
pub const PRICES: &[(&str, f64)] = &[
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("c6i.large", 0.085),
    ("c7i.large", 0.08925),
    ("c7i.xlarge", 0.1785),
    ("m7i.large", 0.1008),
    ("m7i.xlarge", 0.2016),
    ("r7i.large", 0.1323),
    ("g4dn.xlarge", 0.526),
    ("g5.xlarge", 1.006),
    ("g6.xlarge", 0.8048),
    ("p3.2xlarge", 3.06),
];

pub fn price(instance_type: &str) -> Option<f64> {
    PRICES
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map(|(_, p)| *p)
}

/// Every run id in the store.
pub async fn run_ids(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let ids: BTreeSet<String> = store
        .list("runs/")
        .await?
        .iter()
        .filter_map(|k| k.strip_prefix("runs/")?.split('/').next())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(ids.into_iter().collect())
}

async fn json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, StoreError> {
    Ok(store
        .get(key)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// What is known of a run: its record, or its last heartbeat.
#[derive(Debug, Clone)]
pub enum Known {
    Recorded(Box<RunRecord>),
    Live(Box<Heartbeat>),
    /// Claimed (and maybe launched) but no heartbeat yet.
    Launched {
        at_ms: u64,
        playbook: String,
    },
}

pub async fn known(store: &dyn Store, run: &str) -> Result<Option<Known>, StoreError> {
    if let Some(rec) = json::<RunRecord>(store, &keys::run_record(run)).await? {
        return Ok(Some(Known::Recorded(Box::new(rec))));
    }
    if let Some(beat) = json::<Heartbeat>(store, &keys::status(run)).await? {
        return Ok(Some(Known::Live(Box::new(beat))));
    }
    if let Some(req) =
        json::<crate::launch::RunRequest>(store, &crate::launch::launch_keys::request(run)).await?
    {
        return Ok(Some(Known::Launched {
            at_ms: req.requested_at * 1000,
            playbook: req.playbook,
        }));
    }
    Ok(None)
}

/// Instance-hours and estimated cost of a record's hosts.
pub fn usage(rec: &RunRecord, now_ms: u64) -> (f64, Option<f64>) {
    let end = rec.ended_at_ms.unwrap_or(now_ms);
    let mut hours = 0.0;
    let mut cost = Some(0.0);
    for h in &rec.hosts {
        let until = h.lost.as_ref().map_or(end, |l| l.at_ms.min(end));
        let hrs = until.saturating_sub(h.launched_at_ms) as f64 / 3_600_000.0;
        hours += hrs;
        cost = match (cost, h.instance_type.as_deref().and_then(price)) {
            (Some(c), Some(p)) => Some(c + hrs * p),
            _ => None,
        };
    }
    (hours, cost)
}

pub fn row(run: &str, k: &Known, now_ms: u64) -> RunRow {
    match k {
        Known::Recorded(rec) => {
            let (instance_hours, estimated_cost_usd) = usage(rec, now_ms);
            RunRow {
                run_id: run.to_owned(),
                playbook: if rec.playbook.name.is_empty() {
                    rec.playbook.file.clone()
                } else {
                    rec.playbook.name.clone()
                },
                trigger: trigger_text(&rec.trigger),
                started_at_ms: rec.started_at_ms,
                duration_ms: rec.ended_at_ms.map(|e| e.saturating_sub(rec.started_at_ms)),
                status: rec.status.as_str().to_owned(),
                hosts: rec.hosts.len(),
                shards_done: rec.stages.iter().map(|s| s.shards_done).sum(),
                shards_total: rec.stages.iter().map(|s| s.shards_total).sum(),
                instance_hours,
                estimated_cost_usd: if rec.hosts.is_empty() {
                    Some(0.0)
                } else {
                    estimated_cost_usd
                },
                reason: rec.reason.clone(),
            }
        }
        Known::Live(beat) => {
            let stale = now_ms.saturating_sub(beat.updated_at_ms) > STALE_HEARTBEAT_MS;
            RunRow {
                run_id: run.to_owned(),
                playbook: beat.playbook.clone(),
                trigger: String::new(),
                started_at_ms: beat.started_at_ms,
                duration_ms: None,
                status: if stale { "stale" } else { "running" }.to_owned(),
                hosts: beat.hosts_total,
                shards_done: beat.shards_done,
                shards_total: beat.shards_total,
                instance_hours: 0.0,
                estimated_cost_usd: None,
                reason: stale.then(|| {
                    format!(
                        "no heartbeat for {}; the master may be gone",
                        human_ms(now_ms.saturating_sub(beat.updated_at_ms))
                    )
                }),
            }
        }
        Known::Launched { at_ms, playbook } => RunRow {
            run_id: run.to_owned(),
            playbook: playbook.clone(),
            trigger: String::new(),
            started_at_ms: *at_ms,
            duration_ms: None,
            status: "launched".into(),
            hosts: 0,
            shards_done: 0,
            shards_total: 0,
            instance_hours: 0.0,
            estimated_cost_usd: None,
            reason: None,
        },
    }
}

fn trigger_text(t: &BTreeMap<String, serde_json::Value>) -> String {
    let kind = t.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let detail = match kind {
        "s3" => t.get("key").and_then(|k| k.as_str()),
        "schedule" => t.get("rule").and_then(|k| k.as_str()),
        "manual" => t.get("user").and_then(|k| k.as_str()),
        _ => None,
    };
    match detail {
        Some(d) if !d.is_empty() => format!("{kind}:{d}"),
        _ => kind.to_owned(),
    }
}

/// Which runs `squall runs` lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs started at or after this (unix ms).
    pub since_ms: Option<u64>,
    pub status: Option<String>,
}

/// Every run matching `filter`, newest first.
pub async fn runs(
    store: &dyn Store,
    filter: &RunFilter,
    now_ms: u64,
) -> Result<Vec<RunRow>, StoreError> {
    let mut rows = Vec::new();
    for id in run_ids(store).await? {
        let Some(k) = known(store, &id).await? else {
            continue;
        };
        let r = row(&id, &k, now_ms);
        if filter.since_ms.is_some_and(|s| r.started_at_ms < s) {
            continue;
        }
        if filter.status.as_ref().is_some_and(|s| *s != r.status) {
            continue;
        }
        rows.push(r);
    }
    rows.sort_by(|a, b| {
        b.started_at_ms
            .cmp(&a.started_at_ms)
            .then(a.run_id.cmp(&b.run_id))
    });
    Ok(rows)
}

/// `1h02m`, `4m10s`, `3.2s`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// `2026-11-23 01:02` (UTC) for unix milliseconds.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let (y, m, d) = crate::runid::civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// The `squall runs` table.
pub fn table(rows: &[RunRow]) -> String {
    let head = [
        "RUN",
        "PLAYBOOK",
        "TRIGGER",
        "STARTED (UTC)",
        "DURATION",
        "STATUS",
        "HOSTS",
        "SHARDS",
        "INST-H",
        "EST. COST",
    ];
    let body: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.run_id.clone(),
                r.playbook.clone(),
                r.trigger.clone(),
                utc(r.started_at_ms),
                r.duration_ms.map_or("-".into(), human_ms),
                r.status.clone(),
                r.hosts.to_string(),
                if r.shards_total > 0 {
                    format!("{}/{}", r.shards_done, r.shards_total)
                } else {
                    "-".into()
                },
                format!("{:.2}", r.instance_hours),
                r.estimated_cost_usd
                    .map_or("?".into(), |c| format!("~${c:.2}")),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(head.to_vec(), &mut out);
    for row in &body {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    if rows.iter().any(|r| r.estimated_cost_usd.is_some()) {
        out.push_str("EST. COST is an estimate from on-demand list prices (us-east-1); ? = unknown instance type.\n");
    }
    out
}

/// `squall status RUN` as text.
pub fn status_text(run: &str, k: &Known, now_ms: u64) -> String {
    let mut out = String::new();
    match k {
        Known::Recorded(rec) => {
            out.push_str(&format!(
                "run {run} ({}) {}\n",
                rec.playbook.name,
                rec.status.as_str()
            ));
            if let Some(r) = &rec.reason {
                out.push_str(&format!("  reason: {r}\n"));
            }
            out.push_str(&format!(
                "  started {}  took {}\n",
                utc(rec.started_at_ms),
                rec.ended_at_ms.map_or("-".into(), |e| human_ms(
                    e.saturating_sub(rec.started_at_ms)
                ))
            ));
            out.push_str("stages:\n");
            for s in &rec.stages {
                let state = match s.succeeded {
                    Some(true) => "succeeded",
                    Some(false) => "failed",
                    None => "not finished",
                };
                let shards = if s.shards_total > 0 {
                    format!("  shards {}/{}", s.shards_done, s.shards_total)
                } else {
                    String::new()
                };
                out.push_str(&format!("  {:<16} {state}{shards}\n", s.name));
            }
            out.push_str("hosts:\n");
            for h in &rec.hosts {
                let tasks = rec.tasks.iter().filter(|t| t.host == h.name);
                let failed = tasks
                    .clone()
                    .filter(|t| t.outcome != TaskOutcome::Succeeded)
                    .count();
                let state = match &h.lost {
                    Some(l) => format!("lost: {}", l.reason),
                    None => "ok".into(),
                };
                out.push_str(&format!(
                    "  {:<14} {:<20} {:<15} tasks {} ({} not succeeded)  {}  logs: {}\n",
                    h.name,
                    h.instance_id,
                    h.address,
                    tasks.count(),
                    failed,
                    state,
                    h.archive
                        .as_deref()
                        .or(h.snapshot.as_ref().map(|s| s.key.as_str()))
                        .unwrap_or("-")
                ));
            }
        }
        Known::Live(beat) => {
            let age = now_ms.saturating_sub(beat.updated_at_ms);
            out.push_str(&format!(
                "run {run} ({}) running: phase {:?}{}\n",
                beat.playbook,
                beat.phase,
                beat.stage
                    .as_ref()
                    .map(|s| format!(", stage {s}"))
                    .unwrap_or_default()
            ));
            out.push_str(&format!(
                "  last heartbeat {} ago{}\n",
                human_ms(age),
                if age > STALE_HEARTBEAT_MS {
                    "  WARNING: stale; the master may be gone (a sweep records it as abandoned after its deadline)"
                } else {
                    ""
                }
            ));
            out.push_str(&format!(
                "  hosts {}/{} live, shards {}/{}\n",
                beat.hosts_live, beat.hosts_total, beat.shards_done, beat.shards_total
            ));
            out.push_str("stages:\n");
            for s in &beat.stages {
                let state = match s.succeeded {
                    Some(true) => "succeeded",
                    Some(false) => "failed",
                    None => "running",
                };
                out.push_str(&format!("  {:<16} {state}\n", s.name));
            }
            out.push_str("hosts:\n");
            for h in &beat.hosts {
                out.push_str(&format!(
                    "  {:<14} {:<20} {:<13} {}\n",
                    h.name,
                    h.instance_id,
                    h.state,
                    if h.running.is_empty() {
                        "idle".into()
                    } else {
                        format!("running {}", h.running.join(", "))
                    }
                ));
            }
        }
        Known::Launched { at_ms, playbook } => {
            out.push_str(&format!(
                "run {run} ({playbook}) launched {} ago; the master has not reported yet\n",
                human_ms(now_ms.saturating_sub(*at_ms))
            ));
        }
    }
    out
}

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
    let prefix = format!("{}logs/", keys::run_prefix(run));
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

/// Streams the lines of one archive that pass `filter` into `out`, prefixed
/// `HOST TASK STREAM|`. Blocking: run it on a blocking thread. `skip` holds, per member,
/// how many lines were printed before (for `--follow`) and is updated.
/// `complete` is false for a live snapshot, whose last line may still be being written:
/// a last line without its newline is then left for a later read.
pub fn stream_archive(
    host: &str,
    archive: impl std::io::Read,
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
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let whole = line.last() == Some(&b'\n');
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

/// Reads a store object on a blocking thread as `std::io::Read`, calling `work` with it.
pub async fn with_blocking_reader<T: Send + 'static>(
    store: &dyn Store,
    key: &str,
    work: impl FnOnce(&mut dyn std::io::Read) -> std::io::Result<T> + Send + 'static,
) -> Result<Option<T>, String> {
    let Some(stream) = store.get_stream(key).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _guard = handle.enter();
        let mut bridge = tokio_util::io::SyncIoBridge::new_with_handle(stream, handle.clone());
        work(&mut bridge)
    })
    .await
    .map_err(|e| e.to_string())?
    .map(Some)
    .map_err(|e| e.to_string())
}

/// Prints every matching line of the run's archives to `out` (stdout for the CLI).
pub async fn print_logs(
    store: &dyn Store,
    run: &str,
    filter: &LogFilter,
    skip: &mut BTreeMap<String, usize>,
) -> Result<usize, String> {
    let mut printed = 0;
    for (host, key) in archives(store, run).await.map_err(|e| e.to_string())? {
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
pub async fn extract(store: &dyn Store, run: &str, dir: &Path) -> Result<usize, String> {
    let mut n = 0;
    for (host, key) in archives(store, run).await.map_err(|e| e.to_string())? {
        let dest = dir.join(&host);
        std::fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        with_blocking_reader(store, &key, move |r| {
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(r));
            tar.unpack(&dest)
        })
        .await?;
        n += 1;
    }
    Ok(n)
}

/// The last `lines` lines of each failed task's stderr, read from the archives.
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
                for line in std::io::BufReader::new(entry).split(b'\n') {
                    tail.push_back(String::from_utf8_lossy(&line?).into_owned());
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

/// Whether a run has ended (its record is written).
pub fn ended(k: &Known) -> bool {
    matches!(k, Known::Recorded(r) if r.status != RunStatus::Running)
}
