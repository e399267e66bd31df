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
//! - stale, with `max_masters` masters had (or past its deadline): the masters are
//!   fenced, the instances terminated, the run recorded `abandoned`;
//! - stale otherwise: generation N+1 is claimed with a create-if-absent
//!   (`runs/ID/generation/N+1`: two watchdogs at once start one successor). The claim
//!   comes before the silent master is touched: from it on that master, should it
//!   wake or get the shutdown signal its termination brings, writes, drives and tears
//!   down nothing (its runner checks the claim). Then it is **fenced** (terminated, and
//!   seen terminated, only masters of generation N or earlier), and only then the
//!   successor is launched with `--generation N+1`; it resumes from the journal
//!   ([`super::master`]). A takeover left unfinished (a timeout while fencing) is
//!   finished by a later look, with the same launch token.

use super::launch::{LaunchError, Launcher};
use crate::error::chain;
use crate::record::journal::Generation;
use crate::record::{Heartbeat, LaunchRecord, RunRecord, RunRequest, RunStatus, keys};
use crate::seam::compute::{self, Compute, InstanceState, tags};
use crate::seam::control::{Control, schedule_name};
use crate::seam::store::{self as store, Store};
use serde::Serialize;
use std::time::Duration;

/// Instance ids (of masters fenced, or to fence).
pub type InstanceIds = Vec<String>;

/// How often a run's watchdog looks at it.
pub const WATCH_EVERY_MINUTES: u32 = 2;

/// How long fencing waits for the old master to be seen terminated.
/// (Within the launcher's 120 s timeout; a fence not done yet is finished by the next look.)
const FENCE_WAIT: Duration = Duration::from_secs(40);

/// How old a claim with no master may be before another look finishes its takeover
/// (past the launcher's 120 s timeout: the watchdog that claimed it has given up).
const UNFINISHED_TAKEOVER_MS: u64 = 150_000;

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
    /// The silent masters are being terminated; the next look goes on.
    Fencing,
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
) -> Result<InstanceIds, LaunchError> {
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
    /// Creates the run's watchdog schedule (ending at `until_unix`), then marks the run
    /// live, before its master is started (so that no master runs unwatched). A
    /// watchdog that cannot be made is logged, not fatal: the run goes, with the
    /// dead-man's switches and the sweep as its net (an unwatched run is not marked
    /// live, so the sweep records it if its master dies).
    pub async fn begin_watch(&self, run: &str, until_unix: u64) {
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
            .create_schedule(&schedule_name(run), WATCH_EVERY_MINUTES, until_unix, &input)
            .await
        {
            tracing::warn!("creating the watchdog of {run}: {}", chain(&e));
            return;
        }
        if let Err(e) = self
            .store
            .put(&keys::live(run), run.as_bytes().to_vec())
            .await
        {
            tracing::warn!("writing the live marker of {run}: {}", chain(&e));
        }
    }

    /// One watchdog look at `run` at `now_ms` (see the module docs).
    pub async fn watch(&self, run: &str, now_ms: u64) -> Result<WatchReport, LaunchError> {
        if !crate::record::runid::valid(run) {
            return Err(LaunchError::permanent(format!("`{run}` is not a run id")));
        }
        let mut report = WatchReport {
            run_id: run.to_owned(),
            watched: Watched::Alive,
            generation: current_generation(self.store.as_ref(), run).await?,
            silent_ms: 0,
            fenced: Vec::new(),
            master: None,
        };
        if self.recorded(run).await? {
            end_watch(self.store.as_ref(), self.control.as_deref(), run).await;
            report.watched = Watched::Finished;
            return Ok(report);
        }
        let Some(request) = self
            .get(keys::request(run))
            .await?
            .and_then(|b| serde_json::from_slice::<RunRequest>(&b).ok())
        else {
            // Not a run of this bucket: its schedule is of no use.
            if let Some(c) = &self.control
                && let Err(e) = c.delete_schedule(&schedule_name(run)).await
            {
                tracing::warn!("deleting the watchdog of {run}: {}", chain(&e));
            }
            report.watched = Watched::Unknown;
            return Ok(report);
        };
        let claim = self.claim_of(run, report.generation).await?;
        // A takeover a watchdog claimed and did not finish (it timed out fencing, or
        // before its launch): this one finishes it, with the same launch token.
        if let Some(c) = claim.as_ref().filter(|c| c.instance_id.is_none()) {
            if now_ms.saturating_sub(c.claimed_at_ms) < UNFINISHED_TAKEOVER_MS {
                // Another look is taking over right now, whatever the stale window.
                return Ok(report);
            }
            if now_ms / 1000 < request.master_deadline {
                return self.take_over(run, &request, c.clone(), report).await;
            }
        }
        // The last sign of life: the heartbeat, the launch, the latest takeover.
        let beat = self
            .get(keys::status(run))
            .await?
            .and_then(|b| serde_json::from_slice::<Heartbeat>(&b).ok())
            .map_or(0, |h| h.updated_at_ms);
        let launched = self
            .get(keys::launch(run))
            .await?
            .and_then(|b| serde_json::from_slice::<LaunchRecord>(&b).ok())
            .map_or(0, |l| l.launched_at * 1000);
        let life = beat
            .max(launched)
            .max(claim.as_ref().map_or(0, |c| c.claimed_at_ms))
            .max(request.requested_at * 1000);
        report.silent_ms = now_ms.saturating_sub(life);
        if report.silent_ms < self.settings.stale_after.as_millis() as u64 {
            return Ok(report);
        }
        tracing::warn!(
            run,
            silent_s = report.silent_ms / 1000,
            generation = report.generation,
            "the run's master is silent"
        );
        let past_deadline = now_ms / 1000 >= request.master_deadline;
        if report.generation >= request.max_masters.max(1) || past_deadline {
            let why = if past_deadline {
                "the run is past its deadline".to_owned()
            } else {
                format!("the run had its {} master(s)", request.max_masters)
            };
            report.fenced = match self.fence(run, report.generation).await? {
                Some(f) => f,
                None => {
                    report.watched = Watched::Fencing;
                    return Ok(report);
                }
            };
            // A successor another look started meanwhile is not ended with the run.
            if current_generation(self.store.as_ref(), run).await? > report.generation {
                report.watched = Watched::Contended;
                return Ok(report);
            }
            self.abandon(run, &request, &why, report.silent_ms, now_ms)
                .await?;
            report.watched = Watched::Abandoned;
            return Ok(report);
        }
        // The claim comes first: from it on the silent master, should it wake (or get
        // its shutdown signal), writes, drives and tears down nothing; only then is it
        // terminated, and the successor launched once it is seen terminated.
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
            fenced: Vec::new(),
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
        self.take_over(run, &request, claim, report).await
    }

    /// Finishes the takeover `claim` stands for: the earlier masters fenced (terminated
    /// and seen terminated), then its master launched (the launch token makes a second
    /// try return the same instance) and noted in the claim.
    async fn take_over(
        &self,
        run: &str,
        request: &RunRequest,
        claim: Generation,
        mut report: WatchReport,
    ) -> Result<WatchReport, LaunchError> {
        let n = claim.generation;
        report.generation = n;
        let Some(fenced) = self.fence(run, n - 1).await? else {
            report.watched = Watched::Fencing;
            return Ok(report);
        };
        report.fenced = fenced;
        // The silent master may have recorded the run as it went.
        if self.recorded(run).await? {
            end_watch(self.store.as_ref(), self.control.as_deref(), run).await;
            report.watched = Watched::Finished;
            return Ok(report);
        }
        let req = self.master_request(run, request.master_deadline, n);
        let launched = self.compute.launch(&req).await.map_err(|e| {
            LaunchError::retryable(format!(
                "starting master generation {n} of run {run}: {}",
                chain(&e)
            ))
        })?;
        report.master = launched.first().map(|i| i.id.clone());
        let mut fenced = claim.fenced.clone();
        fenced.extend(report.fenced.iter().cloned());
        let claim = Generation {
            instance_id: report.master.clone(),
            fenced,
            ..claim
        };
        let key = keys::generation(run, n);
        if let Err(e) = store::put_json(self.store.as_ref(), &key, &claim).await {
            tracing::warn!("noting the successor in {key}: {}", chain(&e));
        }
        report.watched = Watched::TookOver;
        tracing::warn!(run, generation = n, master = ?report.master, "successor master started");
        Ok(report)
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, LaunchError> {
        self.store
            .get(&key)
            .await
            .map_err(|e| LaunchError::retryable(format!("reading {key}: {}", chain(&e))))
    }

    async fn recorded(&self, run: &str) -> Result<bool, LaunchError> {
        Ok(self.get(keys::run_record(run)).await?.is_some())
    }

    /// Generation `n`'s claim (none for the first master, which the launcher started).
    async fn claim_of(&self, run: &str, n: u32) -> Result<Option<Generation>, LaunchError> {
        if n <= 1 {
            return Ok(None);
        }
        Ok(self
            .get(keys::generation(run, n))
            .await?
            .and_then(|b| serde_json::from_slice::<Generation>(&b).ok()))
    }

    /// Terminates every master of the run of generation `upto` or earlier and waits
    /// (bounded) until each is seen terminated: from then on, none can drive a worker
    /// or write beside a successor. `None` when some are not terminated yet.
    pub async fn fence(&self, run: &str, upto: u32) -> Result<Option<InstanceIds>, LaunchError> {
        let alive = live_masters(self.compute.as_ref(), run, upto).await?;
        if alive.is_empty() {
            return Ok(Some(alive));
        }
        // A failed call is judged by what it left: another watchdog may have ended the
        // same instance at the same moment.
        let call = self.compute.terminate(&alive).await.err();
        let started = std::time::Instant::now();
        loop {
            let left = live_masters(self.compute.as_ref(), run, upto).await?;
            if left.is_empty() {
                return Ok(Some(alive));
            }
            if started.elapsed() > FENCE_WAIT {
                let why = call
                    .as_ref()
                    .map_or(String::new(), |e| format!(" ({})", chain(e)));
                tracing::warn!(
                    "the masters of {run} are not terminated yet ({}){why}: the next look goes on",
                    left.join(", ")
                );
                return Ok(None);
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
