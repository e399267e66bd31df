//! Sweeping: ending every instance whose `squall:deadline` tag has passed, whoever
//! started it, from tags alone, and recording it in the instance's run.
//!
//! A run whose master died leaves workers (and maybe the master) behind; their
//! dead-man's switches power them off at the deadline, and a sweep (`squall sweep`, and
//! every launcher invocation) makes sure of it through the provider's API. A run with
//! no `run.json` then gets one with status `abandoned`; every sweep that touched a run
//! leaves `runs/RUN_ID/sweeps/UNIX.json` saying what it terminated.

use crate::error::chain;
use crate::record::{RunRecord, RunRequest, RunStatus, keys};
use crate::seam::compute::{Compute, ComputeError, InstanceState, tags};
use crate::seam::store::{self as store, Store, StoreError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

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
    control: Option<&dyn crate::seam::control::Control>,
    stack: Option<&str>,
    now_secs: u64,
) -> Result<SweepReport, ComputeError> {
    let mut report = SweepReport::default();
    // Runs whose master is alive and within its deadline: it will record the run.
    let mut mastered = BTreeSet::new();
    // Runs with an instance still alive and within its deadline, and runs with one gone.
    let mut alive = BTreeSet::new();
    let mut ended = BTreeSet::new();
    for role in ROLES {
        for inst in compute.list_by_tag(tags::ROLE, role).await? {
            // Only instances of a squall run: the roles may terminate nothing else.
            let Some(run) = inst
                .tag(tags::RUN)
                .filter(|r| crate::record::runid::valid(r))
                .map(str::to_owned)
            else {
                continue;
            };
            // Another stack's runs are its own sweeps' (its roles alone may end them).
            if stack.is_some_and(|s| inst.tag(tags::STACK).is_some_and(|t| t != s)) {
                continue;
            }
            if inst.state.is_gone() || inst.state == InstanceState::Terminated {
                ended.insert(run);
                continue;
            }
            let expired = inst
                .tag(tags::DEADLINE)
                .and_then(|d| d.parse::<u64>().ok())
                .is_some_and(|d| d <= now_secs);
            if expired {
                report.terminated.entry(run).or_default().push(inst.id);
            } else {
                if role == "master" {
                    mastered.insert(run.clone());
                }
                alive.insert(run);
            }
        }
    }
    let ids: Vec<String> = report.terminated.values().flatten().cloned().collect();
    if !ids.is_empty() && compute.terminate(&ids).await.is_err() {
        // One instance EC2 refuses (protected, not ours to end) must not stop the
        // others: one at a time, keeping what failed.
        for (run, instances) in report.terminated.iter_mut() {
            let mut ended = Vec::new();
            for id in instances.drain(..) {
                match compute.terminate(std::slice::from_ref(&id)).await {
                    Ok(()) => ended.push(id),
                    Err(e) => report
                        .errors
                        .push(format!("run {run}: terminating {id}: {}", chain(&e))),
                }
            }
            *instances = ended;
        }
        report.terminated.retain(|_, ids| !ids.is_empty());
    }
    let count = report.count();
    if count > 0 {
        tracing::warn!(count, "swept instances past their deadline");
    }
    let Some(store) = store else {
        return Ok(report);
    };
    // Runs left with no live instance (ended now, or earlier by their dead-man's
    // switches) and no master to record them.
    let runs: BTreeSet<&String> = report
        .terminated
        .keys()
        .chain(&ended)
        .filter(|run| {
            crate::record::runid::valid(run) && !alive.contains(*run) && !mastered.contains(*run)
        })
        .collect();
    for run in runs {
        let swept = report.terminated.get(run).cloned().unwrap_or_default();
        match record_sweep(store, run, &swept, now_secs).await {
            Ok(true) => {
                // Recorded: its watchdog, live marker and login key (if any) go too.
                super::watch::end_watch(store, control, run).await;
                report.abandoned.push(run.clone());
            }
            Ok(false) => {}
            Err(e) => report.errors.push(format!("run {run}: {}", chain(&e))),
        }
    }
    Ok(report)
}

/// Writes the sweep note (when this sweep terminated instances of the run) and, when the
/// run has no record, an `abandoned` one. True when the run record was written.
async fn record_sweep(
    store: &dyn Store,
    run: &str,
    instances: &[String],
    now_secs: u64,
) -> Result<bool, StoreError> {
    if !instances.is_empty() {
        let note = serde_json::json!({
            "run_id": run,
            "swept_at": now_secs,
            "terminated": instances,
            "reason": "past the run's deadline (squall:deadline tag)",
        });
        store
            .put(
                &keys::sweep_note(run, now_secs),
                note.to_string().into_bytes(),
            )
            .await?;
    }
    if store.get(&keys::run_record(run)).await?.is_some() {
        return Ok(false);
    }
    // Only runs of this store: another stack's (or bucket's) runs are not ours to record.
    let claimed = store.get(&keys::claim(run)).await?.is_some();
    // What is known of the run without its master: the launch request, if any.
    let request = store
        .get(&keys::request(run))
        .await?
        .and_then(|b| serde_json::from_slice::<RunRequest>(&b).ok());
    if !claimed && request.is_none() {
        return Ok(false);
    }
    // A live run whose watchdog may still start a successor (one with work left before
    // the run's deadline) is not abandoned yet: the watchdog records it when it gives up.
    if let Some(r) = &request
        && now_secs < r.master_deadline
        && store.head(&keys::live(run)).await?.is_some()
    {
        let claims = store.list(&keys::generations_prefix(run)).await?;
        let generations = claims.len() as u32;
        // A takeover claimed and not finished is a master on its way.
        let coming = match claims.last() {
            Some(k) => store::get_json::<crate::record::journal::Generation>(store, k)
                .await
                .ok()
                .flatten()
                .is_some_and(|g| g.instance_id.is_none()),
            None => false,
        };
        if generations + 1 < r.max_masters || coming {
            return Ok(false);
        }
    }
    let mut record = RunRecord::ended_before_start(
        run,
        request.as_ref().map_or("", |r| r.playbook.as_str()),
        RunStatus::Abandoned,
        if instances.is_empty() {
            format!(
                "the run's master stopped without recording the run; its instances had ended (by their dead-man's switches or otherwise) when a sweep found it at unix time {now_secs}"
            )
        } else {
            format!(
                "the run's master stopped without recording the run; a sweep at unix time {now_secs} terminated {} instance(s) past the deadline: {}",
                instances.len(),
                instances.join(", ")
            )
        },
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
    // Never over a record the master wrote meanwhile.
    store::create_json(store, &keys::run_record(run), &record).await
}
