//! Sweeping: ending every instance whose `squall:deadline` tag has passed, whoever
//! started it, from tags alone, and recording it in the instance's run.
//!
//! A run whose master died leaves workers (and maybe the master) behind; their
//! dead-man's switches power them off at the deadline, and a sweep (`squall sweep`, and
//! every launcher invocation) makes sure of it through the provider's API. A run with
//! no `run.json` then gets one with status `abandoned`; every sweep that touched a run
//! leaves `runs/RUN_ID/sweeps/UNIX.json` saying what it terminated.

use crate::compute::{Compute, ComputeError, InstanceState, tags};
use crate::record::{RunRecord, RunStatus};
use crate::store::{Store, keys};
use serde::Serialize;
use std::collections::BTreeMap;

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Instances terminated, by run (`?` for instances without a run tag).
    pub terminated: BTreeMap<String, Vec<String>>,
    /// Runs given an `abandoned` record by this sweep.
    pub abandoned: Vec<String>,
    /// Records that could not be written (the instances were terminated anyway).
    pub errors: Vec<String>,
}

impl SweepReport {
    pub fn count(&self) -> usize {
        self.terminated.values().map(Vec::len).sum()
    }
}

/// The roles squall tags its instances with.
const ROLES: [&str; 2] = ["worker", "master"];

/// Terminates every live squall instance whose deadline is at or before `now_secs`, and,
/// with a store, records it in their runs.
pub async fn sweep(
    compute: &dyn Compute,
    store: Option<&dyn Store>,
    now_secs: u64,
) -> Result<SweepReport, ComputeError> {
    let mut report = SweepReport::default();
    // Runs whose master is alive and within its deadline: it will record the run.
    let mut mastered = std::collections::BTreeSet::new();
    for role in ROLES {
        for inst in compute.list_by_tag(tags::ROLE, role).await? {
            if inst.state.is_gone() || inst.state == InstanceState::Terminated {
                continue;
            }
            let run = inst.tag(tags::RUN).unwrap_or("?").to_owned();
            let expired = inst
                .tag(tags::DEADLINE)
                .and_then(|d| d.parse::<u64>().ok())
                .is_some_and(|d| d <= now_secs);
            if expired {
                report.terminated.entry(run).or_default().push(inst.id);
            } else if role == "master" {
                mastered.insert(run);
            }
        }
    }
    let ids: Vec<String> = report.terminated.values().flatten().cloned().collect();
    if ids.is_empty() {
        return Ok(report);
    }
    compute.terminate(&ids).await?;
    tracing::warn!(count = ids.len(), "swept instances past their deadline");
    let Some(store) = store else {
        return Ok(report);
    };
    let runs: Vec<(String, Vec<String>)> = report
        .terminated
        .iter()
        .filter(|(run, _)| crate::runid::valid(run) && !mastered.contains(*run))
        .map(|(r, i)| (r.clone(), i.clone()))
        .collect();
    for (run, instances) in runs {
        match record_sweep(store, &run, &instances, now_secs).await {
            Ok(true) => report.abandoned.push(run),
            Ok(false) => {}
            Err(e) => report.errors.push(format!("run {run}: {e}")),
        }
    }
    Ok(report)
}

/// Writes the sweep note and, when the run has no record, an `abandoned` one. True when
/// the run record was written.
async fn record_sweep(
    store: &dyn Store,
    run: &str,
    instances: &[String],
    now_secs: u64,
) -> Result<bool, crate::store::StoreError> {
    let note = serde_json::json!({
        "run_id": run,
        "swept_at": now_secs,
        "terminated": instances,
        "reason": "past the run's deadline (squall:deadline tag)",
    });
    store
        .put(
            &format!("{}sweeps/{now_secs}.json", keys::run_prefix(run)),
            note.to_string().into_bytes(),
        )
        .await?;
    if store.get(&keys::run_record(run)).await?.is_some() {
        return Ok(false);
    }
    // What is known of the run without its master: the launch request, if any.
    let request = store
        .get(&crate::launch::launch_keys::request(run))
        .await?
        .and_then(|b| serde_json::from_slice::<crate::launch::RunRequest>(&b).ok());
    let mut record = RunRecord::ended_before_start(
        run,
        request.as_ref().map_or("", |r| r.playbook.as_str()),
        RunStatus::Abandoned,
        format!(
            "the run's master stopped without recording the run; a sweep at unix time {now_secs} terminated {} instance(s) past the deadline: {}",
            instances.len(),
            instances.join(", ")
        ),
        now_secs * 1000,
    );
    if let Some(r) = request {
        record.trigger = r.trigger;
        record.started_at_ms = r.requested_at * 1000;
        record.vars = r
            .vars
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
    }
    let body =
        serde_json::to_vec_pretty(&record).map_err(|e| crate::store::StoreError::Failed {
            op: "serialize",
            key: keys::run_record(run),
            detail: e.to_string(),
        })?;
    store.put(&keys::run_record(run), body).await?;
    Ok(true)
}
