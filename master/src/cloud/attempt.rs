//! How a claimed launch attempt ends ([`super::claim`] says who holds it): launched, or
//! failed for good (recorded `launch-failed` at once), or failed for now (noted, so that
//! the next delivery takes over at once; recorded after the last attempt). Before it
//! records a failure, the launcher looks for a master an attempt started after all (a
//! launch that timed out after it landed, an attempt whose launcher stopped before it
//! wrote `launch.json`): one found is the run's launch, and nothing says nothing ran.
//! The records of a launch that never started (rejected, or failed) are written here.

use super::claim::{Claims, MAX_LAUNCH_ATTEMPTS};
use super::launch::{LaunchError, LaunchStatus, Launcher, Outcome};
use super::trigger::Trigger;
use crate::error::chain;
use crate::record::{LaunchRecord, RunRecord, RunStatus, keys};
use crate::seam::compute::tags;
use crate::seam::store;
use std::time::Duration;

/// How a claimed launch attempt failed.
#[derive(Debug)]
pub(super) enum Attempt {
    /// Refused for good: no retry helps (the reason).
    Refused(String),
    /// Passing trouble before a master was started.
    Failed(LaunchError),
    /// Passing trouble after the master was started.
    AfterLaunch(LaunchError),
}

impl From<LaunchError> for Attempt {
    fn from(e: LaunchError) -> Self {
        if e.retryable {
            Attempt::Failed(e)
        } else {
            Attempt::Refused(e.message)
        }
    }
}

/// The longest writing a failure note may take (the launcher's time is short).
const NOTE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest looking for a master an attempt started may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

impl Launcher {
    /// Ends launch attempt `attempt` of `claims.run` with `result`.
    pub(super) async fn finish_attempt(
        &self,
        claims: &Claims<'_>,
        attempt: u32,
        playbook_key: &str,
        trigger: &Trigger,
        now_secs: u64,
        result: Result<Outcome, Attempt>,
    ) -> Result<Outcome, LaunchError> {
        let run = claims.run;
        let (reason, e) = match result {
            Ok(outcome) => return Ok(outcome),
            // After the master was started (its launch record not written): not noted,
            // so that no record says nothing ran; the claim goes stale and a later
            // delivery finds the master and writes the record.
            Err(Attempt::AfterLaunch(e)) => return Err(e),
            // Refused for good (a bad image, a missing permission): recorded at once.
            Err(Attempt::Refused(reason)) => (reason.clone(), LaunchError::retryable(reason)),
            // Passing trouble: recorded after the last attempt.
            Err(Attempt::Failed(e)) if attempt >= MAX_LAUNCH_ATTEMPTS => (
                format!(
                    "no master could be started in {attempt} attempts; the last: {}",
                    e.message
                ),
                e,
            ),
            // Passing trouble before the last attempt: noted (the next delivery takes
            // over at once), unless the launch landed after all.
            Err(Attempt::Failed(e)) => {
                self.note(claims, attempt, &e.message, now_secs).await;
                let lookup = self.started_master(run, now_secs);
                return match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                    Ok(Ok(Some(found))) => Ok(found),
                    _ => Err(e),
                };
            }
        };
        // Noted first: should looking for a master or recording fail, the next delivery
        // still takes over at once (and gives up, or finds the refusal again).
        self.note(claims, attempt, &e.message, now_secs).await;
        // A master an attempt started after all is the run's launch; one not looked for
        // (the lookup failed) leaves the decision to the next delivery.
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.started_master(run, now_secs)).await {
            Ok(Ok(Some(found))) => Ok(found),
            Ok(Ok(None)) => {
                self.record_launch_failure(run, playbook_key, trigger, reason, now_secs)
                    .await
            }
            Ok(Err(lookup)) => Err(lookup),
            Err(_) => Err(LaunchError::retryable(format!(
                "looking for run {run}'s master did not finish in time; {}",
                e.message
            ))),
        }
    }

    /// Notes attempt `attempt`'s failure, in time (a note not written leaves the claim
    /// to go stale, and a later delivery takes it over then).
    async fn note(&self, claims: &Claims<'_>, attempt: u32, why: &str, now_secs: u64) {
        let run = claims.run;
        match tokio::time::timeout(NOTE_TIMEOUT, claims.failed(attempt, why, now_secs)).await {
            Ok(Ok(())) => {}
            Ok(Err(note)) => tracing::warn!(run = %run, "{note}"),
            Err(_) => tracing::warn!(run = %run, "attempt {attempt}'s failure not noted in time"),
        }
    }

    /// Every attempt failed (the last one's launcher may have stopped after starting a
    /// master: then that is the run's launch).
    pub(super) async fn gave_up(
        &self,
        run: &str,
        playbook_key: &str,
        trigger: &Trigger,
        reason: String,
        now_secs: u64,
    ) -> Result<Outcome, LaunchError> {
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.started_master(run, now_secs)).await {
            Ok(Ok(Some(found))) => Ok(found),
            Ok(Ok(None)) => {
                self.record_launch_failure(run, playbook_key, trigger, reason, now_secs)
                    .await
            }
            Ok(Err(lookup)) => Err(lookup),
            Err(_) => Err(LaunchError::retryable(format!(
                "looking for run {run}'s master did not finish in time"
            ))),
        }
    }

    /// A master of the run an attempt started after all, with its launch record written
    /// now; `None` when the run has none.
    async fn started_master(
        &self,
        run: &str,
        now_secs: u64,
    ) -> Result<Option<Outcome>, LaunchError> {
        let masters = self
            .compute
            .list_by_tag(tags::RUN, run)
            .await
            .map_err(|e| {
                LaunchError::retryable(format!("looking for run {run}'s master: {}", chain(&e)))
            })?;
        let Some(master) = masters
            .into_iter()
            .find(|i| i.tag(tags::ROLE) == Some("master") && !i.state.is_gone())
        else {
            return Ok(None);
        };
        tracing::warn!(run = %run, master = %master.id, "an earlier attempt started the master after all");
        let record = LaunchRecord {
            run_id: run.to_owned(),
            master: Some(master.id.clone()),
            launched_at: now_secs,
        };
        let key = keys::launch(run);
        store::put_json(self.store.as_ref(), &key, &record)
            .await
            .map_err(|e| LaunchError::retryable(format!("writing {key}: {}", chain(&e))))?;
        Ok(Some(Outcome {
            run_id: Some(run.to_owned()),
            status: LaunchStatus::Launched,
            master: Some(master.id),
            reason: Some("an earlier attempt started the master".into()),
        }))
    }

    /// Records that no master could be started, for `reason`: the trigger ends here.
    async fn record_launch_failure(
        &self,
        run: &str,
        playbook_key: &str,
        trigger: &Trigger,
        reason: String,
        now_secs: u64,
    ) -> Result<Outcome, LaunchError> {
        tracing::error!(run = %run, "launch failed: {reason}");
        let text = format!("launch failed, nothing ran: {reason}");
        self.record_unstarted(
            run,
            playbook_key,
            trigger,
            RunStatus::LaunchFailed,
            text,
            now_secs,
        )
        .await?;
        Ok(Outcome {
            run_id: Some(run.to_owned()),
            status: LaunchStatus::LaunchFailed,
            master: None,
            reason: Some(reason),
        })
    }

    /// A failed run record saying why nothing was launched: the playbook was rejected,
    /// for `reason`.
    pub(super) async fn record_rejection(
        &self,
        run: &str,
        playbook_key: &str,
        trigger: &Trigger,
        reason: &str,
        now_secs: u64,
    ) -> Result<(), LaunchError> {
        let text = format!("rejected by the launcher, nothing was launched: {reason}");
        self.record_unstarted(
            run,
            playbook_key,
            trigger,
            RunStatus::Failed,
            text,
            now_secs,
        )
        .await
    }

    /// Writes the record of a run that never started: `status`, because of `reason`.
    async fn record_unstarted(
        &self,
        run: &str,
        playbook_key: &str,
        trigger: &Trigger,
        status: RunStatus,
        reason: String,
        now_secs: u64,
    ) -> Result<(), LaunchError> {
        let mut record =
            RunRecord::ended_before_start(run, playbook_key, status, reason, now_secs * 1000);
        record.trigger = trigger.fields();
        store::put_json(self.store.as_ref(), &keys::run_record(run), &record)
            .await
            .map_err(|e| LaunchError::retryable(format!("recording run {run}: {}", chain(&e))))
    }
}
