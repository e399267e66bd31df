//! Reading runs back from a store, for `squall runs`, `status`, `logs` and the report:
//! everything comes from the run's prefix (run.json, status.json, the launcher's files,
//! the tar.gz archives), for live runs, finished ones and ones whose master died.
//!
//! The run table and status text are here; logs are [`logs`], the report and the
//! CloudWatch line [`report`], cost estimates [`cost`]. Nothing here writes a run's
//! record or decides anything about a live run.

pub mod cost;
pub mod logs;
pub mod report;

pub use cost::{PRICES, price, usage};

use crate::record::{Heartbeat, RunRecord, RunRequest, RunStatus, StageRecord, TaskOutcome, keys};
use crate::seam::store::{Store, StoreError, get_json};
use serde::Serialize;
use std::collections::BTreeMap;

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

/// Every run id in the store.
pub async fn run_ids(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    // One name per run (a delimiter listing on S3), not every key of every run.
    store.list_children("runs/").await
}

/// A JSON object of the run, `None` when absent or unreadable (a record written by a
/// newer squall, a half-written heartbeat).
async fn json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match get_json(store, key).await {
        Ok(v) => Ok(v),
        Err(StoreError::Failed { op: "parse", .. }) => Ok(None),
        Err(e) => Err(e),
    }
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
    if let Some(req) = json::<RunRequest>(store, &keys::request(run)).await? {
        return Ok(Some(Known::Launched {
            at_ms: req.requested_at * 1000,
            playbook: req.playbook,
        }));
    }
    Ok(None)
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
    crate::record::runid::utc_format(ms / 1000, "%Y-%m-%d %H:%M")
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

/// A stage's state for people; `open` names a stage that has not ended.
fn stage_state<'a>(s: &StageRecord, open: &'a str) -> &'a str {
    match s.succeeded {
        Some(true) => "succeeded",
        Some(false) => "failed",
        None => open,
    }
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
                let state = stage_state(s, "not finished");
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
                let state = stage_state(s, "running");
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

/// Whether a run has ended (its record is written).
pub fn ended(k: &Known) -> bool {
    matches!(k, Known::Recorded(r) if r.status != RunStatus::Running)
}
