//! A run's watchdog: what keeps a run going when its master dies, at no cost between
//! runs.
//!
//! When the launcher starts a run it writes the `live/RUN_ID` marker and a per-run
//! EventBridge Scheduler schedule ([`Launcher::begin_watch`]) that invokes the
//! launcher with `{"squall_watch": RUN_ID}` every [`WATCH_EVERY_MINUTES`]. Each
//! invocation ([`Launcher::watch`]) looks at the run:
//!
//! - recorded (`run.json` exists): the schedule, the marker and the run's login key are
//!   removed ([`end_watch`]); the master does the same when it records the run;
//! - heartbeat fresh (younger than `stale_after`, counting the launch and the last
//!   generation's claim as signs of life): nothing;
//! - stale: the run's masters are **fenced** first (terminated, and seen terminated),
//!   then either the run has had `max_masters` masters (or is past its deadline) and is
//!   recorded `abandoned` with its workers terminated, or generation N+1 is claimed
//!   with a create-if-absent (`runs/ID/generation/N+1`: two watchdogs at once start one
//!   successor) and a successor master is launched with `--generation N+1`. The
//!   successor resumes from the journal ([`super::master`]).

use super::launch::{LaunchError, Launcher};
use crate::error::chain;
use crate::record::journal::Generation;
use crate::record::{Heartbeat, LaunchRecord, RunRecord, RunRequest, RunStatus, keys};
use crate::seam::compute::{self, Compute, InstanceState, tags};
use crate::seam::control::{Control, schedule_name};
use crate::seam::store::{self as store, Store};
use serde::Serialize;
use std::time::Duration;

/// How often a run's watchdog looks at it.
pub const WATCH_EVERY_MINUTES: u32 = 2;

/// How long fencing waits for the old master to be seen terminated.
const FENCE_WAIT: Duration = Duration::from_secs(30);

/// What one watchdog invocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Watched {
    /// The run's master is alive (its heartbeat is fresh).
    Alive,
    /// The run is recorded: its watch was removed.
    Finished,
    /// A successor master was started.
    TookOver,
    /// Another watchdog claimed the next generation first.
    Contended,
    /// The run had all the masters it may have (or is past its deadline): recorded
    /// `abandoned`, its instances terminated.
    Abandoned,
    /// Not a run of this bucket (no request).
    Unknown,
}

/// See [`Watched`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchReport {
    pub run_id: String,
    pub watched: Watched,
    /// The generation now running the run.
    pub generation: u32,
    /// Milliseconds since the run's last sign of life.
    pub silent_ms: u64,
    /// Masters terminated before the takeover.
    pub fenced: Vec<String>,
    /// The successor's instance.
    pub master: Option<String>,
}

/// The current generation of a run: the highest claimed, 1 when none was.
pub async fn current_generation(store: &dyn Store, run: &str) -> Result<u32, LaunchError> {
    let claimed = store
        .list(&keys::generations_prefix(run))
        .await
        .map_err(|e| {
            LaunchError::retryable(format!("listing the generations of {run}: {}", chain(&e)))
        })?;
    Ok(claimed
        .iter()
        .filter_map(|k| k.rsplit('/').next()?.parse::<u32>().ok())
        .max()
        .unwrap_or(1)
        .max(1))
}

/// The run's masters of generation `upto` or earlier not yet terminated (a later
/// generation's master, started by another watchdog meanwhile, is never fenced).
async fn live_masters(
    compute: &dyn Compute,
    run: &str,
    upto: u32,
) -> Result<Vec<String>, LaunchError> {
    let all = compute.list_by_tag(tags::RUN, run).await.map_err(|e| {
        LaunchError::retryable(format!("listing the masters of {run}: {}", chain(&e)))
    })?;
    Ok(all
        .into_iter()
        .filter(|i| i.tag(tags::ROLE) == Some("master"))
        .filter(|i| i.state != InstanceState::Terminated)
        .filter(|i| {
            let g = i.tag(tags::GENERATION).and_then(|g| g.parse::<u32>().ok());
            g.unwrap_or(1) <= upto
        })
        .map(|i| i.id)
        .collect())
}

/// Removes a recorded run's watch: its schedule, its `live/` marker and its login key.
/// Every step is repeatable; failures are logged (a leftover schedule finds the run
/// recorded and tries again).
pub async fn end_watch(store: &dyn Store, control: Option<&dyn Control>, run: &str) {
    if let Some(c) = control {
        if let Err(e) = c.delete_secret(&keys::login_key_parameter(run)).await {
            tracing::warn!("deleting the login key of {run}: {}", chain(&e));
        }
        if let Err(e) = c.delete_schedule(&schedule_name(run)).await {
            tracing::warn!("deleting the watchdog of {run}: {}", chain(&e));
        }
    }
    if let Err(e) = store.delete(&keys::live(run)).await {
        tracing::warn!("removing the live marker of {run}: {}", chain(&e));
    }
}

impl Launcher {
    /// Marks the run live and creates its watchdog schedule, before its master is
    /// started (so that no master runs unwatched). A watchdog that cannot be made is
    /// logged, not fatal: the run goes, with the dead-man's switches as its net.
    pub async fn begin_watch(&self, run: &str) {
        if let Err(e) = self
            .store
            .put(&keys::live(run), run.as_bytes().to_vec())
            .await
        {
            tracing::warn!("writing the live marker of {run}: {}", chain(&e));
        }
        let Some(control) = &self.control else {
            return;
        };
        if self.settings.watch_target.is_none() || self.settings.watch_role.is_none() {
            tracing::warn!(
                run,
                "no watchdog: SQUALL_WATCH_TARGET and SQUALL_WATCH_ROLE are not set"
            );
            return;
        }
        let input = serde_json::json!({ "squall_watch": run }).to_string();
        if let Err(e) = control
            .create_schedule(&schedule_name(run), WATCH_EVERY_MINUTES, &input)
            .await
        {
            tracing::warn!("creating the watchdog of {run}: {}", chain(&e));
        }
    }

    /// One watchdog look at `run` at `now_ms` (see the module docs).
    pub async fn watch(&self, run: &str, now_ms: u64) -> Result<WatchReport, LaunchError> {
        if !crate::record::runid::valid(run) {
            return Err(LaunchError::permanent(format!("`{run}` is not a run id")));
        }
        let get = |key: String| async move {
            self.store
                .get(&key)
                .await
                .map_err(|e| LaunchError::retryable(format!("reading {key}: {}", chain(&e))))
        };
        let mut report = WatchReport {
            run_id: run.to_owned(),
            watched: Watched::Alive,
            generation: current_generation(self.store.as_ref(), run).await?,
            silent_ms: 0,
            fenced: Vec::new(),
            master: None,
        };
        if get(keys::run_record(run)).await?.is_some() {
            end_watch(self.store.as_ref(), self.control.as_deref(), run).await;
            report.watched = Watched::Finished;
            return Ok(report);
        }
        let Some(request) = get(keys::request(run))
            .await?
            .and_then(|b| serde_json::from_slice::<RunRequest>(&b).ok())
        else {
            report.watched = Watched::Unknown;
            return Ok(report);
        };
        // The last sign of life: the heartbeat, the launch, the latest takeover.
        let beat = get(keys::status(run))
            .await?
            .and_then(|b| serde_json::from_slice::<Heartbeat>(&b).ok())
            .map_or(0, |h| h.updated_at_ms);
        let launched = get(keys::launch(run))
            .await?
            .and_then(|b| serde_json::from_slice::<LaunchRecord>(&b).ok())
            .map_or(0, |l| l.launched_at * 1000);
        let claimed = get(keys::generation(run, report.generation))
            .await?
            .and_then(|b| serde_json::from_slice::<Generation>(&b).ok())
            .map_or(0, |g| g.claimed_at_ms);
        let life = beat
            .max(launched)
            .max(claimed)
            .max(request.requested_at * 1000);
        report.silent_ms = now_ms.saturating_sub(life);
        if report.silent_ms < self.settings.stale_after.as_millis() as u64 {
            return Ok(report);
        }
        tracing::warn!(
            run,
            silent_s = report.silent_ms / 1000,
            generation = report.generation,
            "the run's master is silent: fencing it"
        );
        report.fenced = self.fence(run, report.generation).await?;
        let past_deadline = now_ms / 1000 >= request.master_deadline;
        if report.generation >= request.max_masters.max(1) || past_deadline {
            let why = if past_deadline {
                "the run is past its deadline".to_owned()
            } else {
                format!("the run had its {} master(s)", request.max_masters)
            };
            self.abandon(run, &request, &why, report.silent_ms, now_ms)
                .await?;
            report.watched = Watched::Abandoned;
            return Ok(report);
        }
        let next = report.generation + 1;
        let claim = Generation {
            run_id: run.to_owned(),
            generation: next,
            claimed_at_ms: now_ms,
            reason: format!(
                "the heartbeat of generation {} was {} s old",
                report.generation,
                report.silent_ms / 1000
            ),
            fenced: report.fenced.clone(),
            instance_id: None,
        };
        let key = keys::generation(run, next);
        let won = store::create_json(self.store.as_ref(), &key, &claim)
            .await
            .map_err(|e| LaunchError::retryable(format!("claiming {key}: {}", chain(&e))))?;
        if !won {
            report.watched = Watched::Contended;
            return Ok(report);
        }
        report.generation = next;
        let req = self.master_request(run, request.master_deadline, next);
        let launched = self.compute.launch(&req).await.map_err(|e| {
            LaunchError::retryable(format!(
                "starting master generation {next} of run {run}: {}",
                chain(&e)
            ))
        })?;
        report.master = launched.first().map(|i| i.id.clone());
        let claim = Generation {
            instance_id: report.master.clone(),
            ..claim
        };
        if let Err(e) = store::put_json(self.store.as_ref(), &key, &claim).await {
            tracing::warn!("noting the successor in {key}: {}", chain(&e));
        }
        report.watched = Watched::TookOver;
        tracing::warn!(run, generation = next, master = ?report.master, "successor master started");
        Ok(report)
    }

    /// Terminates every master of the run and waits (bounded) until each is seen
    /// terminated: from then on, none can drive a worker or write beside a successor.
    async fn fence(&self, run: &str, upto: u32) -> Result<Vec<String>, LaunchError> {
        let alive = live_masters(self.compute.as_ref(), run, upto).await?;
        if alive.is_empty() {
            return Ok(alive);
        }
        // A failed call is judged by what it left: another watchdog may have ended the
        // same instance at the same moment.
        let call = self.compute.terminate(&alive).await.err();
        let started = std::time::Instant::now();
        loop {
            let left = live_masters(self.compute.as_ref(), run, upto).await?;
            if left.is_empty() {
                return Ok(alive);
            }
            if started.elapsed() > FENCE_WAIT {
                let why = call
                    .as_ref()
                    .map_or(String::new(), |e| format!(" ({})", chain(e)));
                return Err(LaunchError::retryable(format!(
                    "the masters of {run} are not terminated yet ({}){why}; no successor until they are",
                    left.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Records the run `abandoned` (never over a record), terminates its instances and
    /// removes its watch.
    async fn abandon(
        &self,
        run: &str,
        request: &RunRequest,
        why: &str,
        silent_ms: u64,
        now_ms: u64,
    ) -> Result<(), LaunchError> {
        let terminated = compute::teardown_run(self.compute.as_ref(), run)
            .await
            .map_err(|e| LaunchError::retryable(format!("terminating run {run}: {}", chain(&e))))?;
        let mut record = RunRecord::ended_before_start(
            run,
            &request.playbook,
            RunStatus::Abandoned,
            format!(
                "the run's master was silent for {} s and {why}: no successor was started; {terminated} instance(s) terminated",
                silent_ms / 1000
            ),
            now_ms,
        );
        record.trigger = request.trigger.clone();
        record.started_at_ms = request.requested_at * 1000;
        record.vars = request
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        store::create_json(self.store.as_ref(), &keys::run_record(run), &record)
            .await
            .map_err(|e| LaunchError::retryable(format!("recording run {run}: {}", chain(&e))))?;
        end_watch(self.store.as_ref(), self.control.as_deref(), run).await;
        Ok(())
    }
}
