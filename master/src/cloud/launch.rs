//! Starting a run in the cloud: what the launcher Lambda does, and what `squall launch`
//! does from a laptop. A trigger becomes a run id derived from the trigger alone; the
//! run is claimed in the store (create-if-absent); the playbook is validated BEFORE
//! anything is launched; then exactly one master is started, whose user-data fetches
//! squall and runs `squall master` (see [`super::master`]) detached. Triggers and their
//! run ids are [`super::trigger`]'s, the settings [`super::settings`]'s.
//!
//! It depends on narrow seams ([`Store`], [`Compute`]), so tests call
//! [`Launcher::handle_trigger`] directly against moto; [`Launcher::on_aws`] builds the
//! one the Lambda and `squall launch` use. Parsing Lambda events and the Lambda runtime
//! loop live in the `squall-launcher` crate; the boot script is [`super::userdata`]'s.

use super::attempt::Attempt;
use super::claim::{Claimed, Claims};
pub use super::invoke::{InvokeError, invoke_launcher};
pub use super::settings::Settings;
pub use super::trigger::{Trigger, run_id};
use super::userdata::master_user_data;
use crate::backend::aws::Aws;
use crate::backend::aws::ec2::Ec2Settings;
use crate::error::chain;
use crate::plan::{FleetGroup, Market, Plan};
use crate::record::{Claim, LaunchRecord, RunRequest, keys};
use crate::seam::compute::{self, Compute, LaunchRequest, tags};
use crate::seam::store::{self as store, Store};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A launcher failure, saying whether a retry (by Lambda) can help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LaunchError {
    pub message: String,
    /// True for passing trouble (the store or EC2 failed); false when the event or
    /// the configuration is wrong, which no retry fixes.
    pub retryable: bool,
}

impl LaunchError {
    pub fn permanent(message: impl Into<String>) -> Self {
        LaunchError {
            message: message.into(),
            retryable: false,
        }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        LaunchError {
            message: message.into(),
            retryable: true,
        }
    }
}

/// What the launcher did with a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchStatus {
    /// A master was started.
    Launched,
    /// The trigger was delivered before; its run exists.
    Duplicate,
    /// The playbook (or the trigger) is invalid; a failed record says why.
    Rejected,
    /// No master could be started (refused for good, or every attempt failed); a
    /// `launch-failed` record says why.
    LaunchFailed,
    /// No playbook is configured for this trigger.
    Ignored,
}

impl LaunchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchStatus::Launched => "launched",
            LaunchStatus::Duplicate => "duplicate",
            LaunchStatus::Rejected => "rejected",
            LaunchStatus::LaunchFailed => "launch-failed",
            LaunchStatus::Ignored => "ignored",
        }
    }
}

impl fmt::Display for LaunchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for LaunchStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What the launcher did for one trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub run_id: Option<String>,
    pub status: LaunchStatus,
    pub master: Option<String>,
    pub reason: Option<String>,
}

/// The handler. See the module docs.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub compute: Arc<dyn Compute>,
    /// Secrets and watchdog schedules (none: runs get no watchdog).
    pub control: Option<Arc<dyn crate::seam::control::Control>>,
}

/// Seconds a master may live beyond its workers' lifetime (the run's deadline plus its
/// stop and collect graces and the switch margin): its own boot, teardown and record.
pub const MASTER_GRACE_SECS: u64 = 600;

/// The default `SQUALL_STALE_CLAIM` (see [`super::claim`]): longer than a launcher
/// invocation may last, so a claim is never taken over from a launcher still at work.
pub const STALE_CLAIM_SECS: u64 = 180;

/// Why a playbook is rejected, for its failed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// A copy source that would leave the playbook's folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "copy source `{0}` must be a relative path inside the playbook's folder (no `..`, not absolute)"
)]
pub struct UnsafeSource(pub String);

/// The folder of a playbook key, with a trailing `/` (or empty).
pub fn key_dir(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// A file or folder of the playbook's folder that a run reads, as a key in the bucket
/// (the playbook's folder is its key's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceKey {
    /// The key, or (for a folder or a templated path's literal part) the prefix.
    pub key: String,
    /// `key` is a prefix: every object under it is taken.
    pub folder: bool,
    /// The run fails without it (not an optional copy, nor a templated path's part).
    pub required: bool,
    /// The source as written, what for, and where.
    pub written: String,
    pub used: crate::plan::sources::Use,
    pub at: crate::plan::Pos,
}

/// The bucket keys of the playbook-folder files a playbook stored at `playbook_key`
/// reads: its `copy` sources and local listings known before the run (rendered with
/// `vars`, and `trigger` when given), and the literal folder of templated ones.
/// `s3://` sources are not the folder's. A source that would leave the playbook's
/// folder is an error.
pub fn source_keys(
    pb: &Plan,
    playbook_key: &str,
    trigger: Option<&BTreeMap<String, Value>>,
) -> Result<Vec<SourceKey>, UnsafeSource> {
    use crate::plan::sources::{Known, Use, sources};
    let dir = key_dir(playbook_key);
    let mut out: Vec<SourceKey> = Vec::new();
    for src in sources(pb, trigger) {
        let (text, whole) = match &src.known {
            Known::Whole(t) => (t.as_str(), true),
            Known::Prefix(p) => (p.as_str(), false),
            Known::Nothing => continue,
        };
        if text.starts_with("s3://") {
            continue;
        }
        if src.produced {
            continue; // the run writes it (not the playbook's folder)
        }
        if text.starts_with('/') || text.split('/').any(|c| c == "..") {
            return Err(UnsafeSource(text.to_owned()));
        }
        let rel = text.trim_start_matches("./");
        let folder = !whole || src.used == Use::Objects || rel.ends_with('/');
        let key = if folder && whole {
            format!("{dir}{}", crate::plan::url::with_slash(rel))
        } else {
            format!("{dir}{rel}")
        };
        out.push(SourceKey {
            key,
            folder,
            required: whole && src.used != Use::Copy { optional: true },
            written: src.written.clone(),
            used: src.used,
            at: src.at,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| {
        let same = a.key == b.key && a.folder == b.folder;
        if same {
            b.required |= a.required;
        }
        same
    });
    Ok(out)
}

impl Launcher {
    /// The launcher on AWS (EC2 for the master, the settings' bucket as the store), as
    /// the Lambda and `squall launch` build it.
    pub fn on_aws(aws: &Aws, settings: Settings) -> Launcher {
        Launcher {
            compute: Arc::new(aws.compute(Ec2Settings {
                subnet: Some(settings.subnet.clone()),
                security_groups: settings.security_groups.clone(),
                image: Some(settings.image.clone()),
                instance_type: Some(settings.master_type.clone()),
                // The launcher returns as soon as RunInstances answers.
                running_deadline: Duration::ZERO,
            })),
            store: Arc::new(aws.store(&settings.bucket, "")),
            control: Some(Arc::new(aws.control(
                crate::backend::aws::control::ScheduleTarget {
                    function_arn: settings.watch_target.clone().unwrap_or_default(),
                    role_arn: settings.watch_role.clone().unwrap_or_default(),
                },
            ))),
            settings,
        }
    }

    /// The playbook a trigger starts, if any is configured for it.
    pub fn playbook_for(&self, trigger: &Trigger) -> Option<String> {
        match trigger {
            Trigger::S3 { key, .. } => self
                .settings
                .uploads
                .iter()
                .filter(|(prefix, _)| key.starts_with(prefix.as_str()))
                .max_by_key(|(prefix, _)| prefix.len())
                .map(|(_, pb)| pb.clone()),
            Trigger::Schedule { rule, .. } => self.settings.schedules.get(rule).cloned(),
            Trigger::Direct { playbook, .. } => Some(playbook.clone()),
        }
    }

    /// Handles one trigger at `now_secs` (unix time), within the launch budget from now.
    /// See the module docs.
    pub async fn handle_trigger(
        &self,
        trigger: &Trigger,
        now_secs: u64,
    ) -> Result<Outcome, LaunchError> {
        let deadline = self.launch_deadline();
        self.handle_trigger_by(trigger, now_secs, deadline).await
    }

    /// When the launch budget (`SQUALL_LAUNCH_BUDGET`) started now runs out.
    pub fn launch_deadline(&self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        self.settings.launch_budget.map(|b| now + b)
    }

    /// Handles one trigger, claiming and launching by `deadline` (one invocation's
    /// budget, shared by all the triggers of its event).
    pub async fn handle_trigger_by(
        &self,
        trigger: &Trigger,
        now_secs: u64,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Outcome, LaunchError> {
        let Some(playbook_key) = self.playbook_for(trigger) else {
            return Ok(Outcome {
                run_id: None,
                status: LaunchStatus::Ignored,
                master: None,
                reason: Some("no playbook is configured for this trigger".into()),
            });
        };
        let run = run_id(&playbook_key, trigger);
        let claim = Claim {
            run_id: run.clone(),
            trigger: serde_json::to_value(trigger)
                .map_err(|e| LaunchError::permanent(e.to_string()))?,
            claimed_at: now_secs,
            attempt: 1,
            nonce: String::new(),
        };
        let claims = Claims {
            store: self.store.as_ref(),
            run: &run,
            stale_after: self.settings.stale_claim,
        };
        // Claiming and launching must end in time to note a failure (a Lambda invocation
        // ends at its timeout).
        let take = claims.take(claim, now_secs);
        let taken = match deadline {
            Some(d) => tokio::time::timeout_at(d, take).await.unwrap_or_else(|_| {
                Err(LaunchError::retryable(format!(
                    "claiming run {run} did not finish within SQUALL_LAUNCH_BUDGET"
                )))
            }),
            None => take.await,
        };
        let attempt = match taken? {
            Claimed::Attempt(n) => n,
            Claimed::Settled => {
                return Ok(Outcome {
                    run_id: Some(run),
                    status: LaunchStatus::Duplicate,
                    master: None,
                    reason: Some("this trigger was delivered before; its run exists".into()),
                });
            }
            // Another delivery is launching it, or died doing so: an error, so that
            // Lambda delivers again later (and a later delivery takes over a claim left
            // behind), never a success that would end the retries.
            Claimed::InProgress => {
                return Err(LaunchError::retryable(format!(
                    "run {run} is being launched by another delivery; retry later"
                )));
            }
            Claimed::GaveUp(reason) => {
                return self
                    .gave_up(&run, &playbook_key, trigger, reason, now_secs)
                    .await;
            }
        };
        // Past the budget the attempt is noted failed, so that the next delivery takes
        // over at once.
        let launch = self.launch_claimed(&run, &playbook_key, trigger, now_secs);
        let result = match deadline {
            Some(d) => tokio::time::timeout_at(d, launch)
                .await
                .unwrap_or_else(|_| {
                    Err(Attempt::Failed(LaunchError::retryable(
                        "the launch did not finish within SQUALL_LAUNCH_BUDGET",
                    )))
                }),
            None => launch.await,
        };
        self.finish_attempt(&claims, attempt, &playbook_key, trigger, now_secs, result)
            .await
    }

    /// Launches the claimed run: validates the playbook (a rejection is recorded), writes
    /// its request, starts its watchdog and its master, and writes the launch record.
    async fn launch_claimed(
        &self,
        run: &str,
        playbook_key: &str,
        trigger: &Trigger,
        now_secs: u64,
    ) -> Result<Outcome, Attempt> {
        let run = run.to_owned();
        let playbook_key = playbook_key.to_owned();
        let vars = match trigger {
            Trigger::Direct { vars, .. } => vars.clone(),
            _ => BTreeMap::new(),
        };
        let pb = match self.checked_playbook(&playbook_key, &vars, trigger).await? {
            Ok(pb) => pb,
            Err(Rejection(reason)) => {
                self.record_rejection(&run, &playbook_key, trigger, &reason, now_secs)
                    .await?;
                return Ok(Outcome {
                    run_id: Some(run),
                    status: LaunchStatus::Rejected,
                    master: None,
                    reason: Some(reason),
                });
            }
        };
        let deadline = now_secs + pb.worker_lifetime().as_secs() + MASTER_GRACE_SECS;
        let request = RunRequest {
            run_id: run.clone(),
            playbook: playbook_key.clone(),
            vars,
            trigger: trigger.fields(),
            subnet: self.settings.subnet.clone(),
            security_groups: self.settings.worker_security_groups.clone(),
            image: self.settings.image.clone(),
            master_deadline: deadline,
            requested_at: now_secs,
            use_cache: !matches!(trigger, Trigger::Direct { no_cache: true, .. }),
            run_deadline: now_secs + pb.deadline.as_secs(),
            stack: self.settings.stack.clone(),
            max_masters: pb.max_masters,
        };
        let written = |key: String| {
            move |e: crate::seam::StoreError| {
                LaunchError::retryable(format!("writing {key}: {}", chain(&e)))
            }
        };
        let key = keys::playbook(&run);
        self.store
            .put(&key, pb.source.clone().into_bytes())
            .await
            .map_err(written(key))?;
        let key = keys::request(&run);
        store::put_json(self.store.as_ref(), &key, &request)
            .await
            .map_err(written(key))?;
        // The schedule ends a while after the master's own deadline, in case nobody
        // deletes it.
        self.begin_watch(&run, deadline + 3600).await;
        let req = self.master_request(&run, deadline, 1);
        let launched = self.compute.launch(&req).await.map_err(|e| {
            let message = format!("starting the master of run {run}: {}", chain(&e));
            if e.is_permanent() {
                Attempt::Refused(message)
            } else {
                Attempt::Failed(LaunchError::retryable(message))
            }
        })?;
        let master = launched.first().map(|i| i.id.clone());
        let record = LaunchRecord {
            run_id: run.clone(),
            master: master.clone(),
            launched_at: now_secs,
        };
        let key = keys::launch(&run);
        store::put_json(self.store.as_ref(), &key, &record)
            .await
            .map_err(|e| Attempt::AfterLaunch(written(key)(e)))?;
        Ok(Outcome {
            run_id: Some(run),
            status: LaunchStatus::Launched,
            master,
            reason: None,
        })
    }

    /// Reads and validates the playbook for `trigger` and checks the sources it reads
    /// from the bucket exist. The outer error is passing trouble; the inner one why the
    /// playbook is rejected.
    async fn checked_playbook(
        &self,
        key: &str,
        vars: &BTreeMap<String, String>,
        trigger: &Trigger,
    ) -> Result<Result<Plan, Rejection>, LaunchError> {
        let reject = |text: String| Ok(Err(Rejection(text)));
        let source = self.store.get(key).await.map_err(|e| {
            LaunchError::retryable(format!("reading playbook {key}: {}", chain(&e)))
        })?;
        let Some(bytes) = source else {
            return reject(format!(
                "playbook {key} not found in s3://{}",
                self.settings.bucket
            ));
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return reject(format!("playbook {key} is not UTF-8 text"));
        };
        self.checked_text(key, text, vars, trigger).await
    }

    async fn checked_text(
        &self,
        key: &str,
        text: String,
        vars: &BTreeMap<String, String>,
        trigger: &Trigger,
    ) -> Result<Result<Plan, Rejection>, LaunchError> {
        let reject = |text: String| Ok(Err(Rejection(text)));
        let fields = trigger.fields();
        let pb = match crate::plan::parse_for(
            Path::new(key),
            &text,
            Path::new("."),
            vars,
            Some(&fields),
        ) {
            Ok(pb) => pb,
            Err(e) => return reject(e.to_string()),
        };
        // The master reads secrets from SSM only.
        if let Err(e) =
            crate::plan::secrets::check_for_ec2(&pb, self.settings.secrets_prefix.as_deref())
        {
            return reject(e.to_string());
        }
        let wanted = match source_keys(&pb, key, Some(&fields)) {
            Ok(k) => k,
            Err(e) => return reject(format!("{key}: {e}")),
        };
        let bucket = &self.settings.bucket;
        let mut checks: Vec<SourceKey> = wanted.into_iter().filter(|k| k.required).collect();
        // `s3://` sources in this bucket (the upload itself, usually).
        for src in crate::plan::sources::sources(&pb, Some(&fields)) {
            let crate::plan::sources::Known::Whole(t) = &src.known else {
                continue;
            };
            if src.produced {
                continue;
            }
            if let Ok(crate::plan::url::DataUrl::S3 { bucket: b, key: k }) =
                crate::plan::url::DataUrl::parse(t)
                && &b == bucket
                && src.used != (crate::plan::sources::Use::Copy { optional: true })
                && src.used != crate::plan::sources::Use::Objects
            {
                checks.push(SourceKey {
                    key: k,
                    folder: t.ends_with('/'),
                    required: true,
                    written: src.written.clone(),
                    used: src.used,
                    at: src.at,
                });
            }
        }
        for c in checks {
            let k = &c.key;
            let found = if c.folder {
                self.store.any_under(k).await
            } else {
                self.store.head(k).await.map(|o| o.is_some())
            }
            .map_err(|e| LaunchError::retryable(format!("reading {k}: {}", chain(&e))))?;
            if !found {
                let what = if c.folder {
                    "has no object under it"
                } else {
                    "does not exist"
                };
                let d = pb.diagnostic(
                    c.at,
                    format!(
                        "{} `{}` (s3://{bucket}/{k}) {what}; nothing was launched",
                        c.used.noun(),
                        c.written
                    ),
                );
                return reject(d.to_string());
            }
        }
        Ok(Ok(pb))
    }

    /// The RunInstances request of the run's `generation`-th master.
    pub(super) fn master_request(
        &self,
        run: &str,
        deadline: u64,
        generation: u32,
    ) -> LaunchRequest {
        LaunchRequest {
            run_id: run.to_owned(),
            group: "master".into(),
            spec: FleetGroup {
                count: 1,
                min_count: None,
                instance_type: Some(crate::plan::InstanceTypes(vec![
                    self.settings.master_type.clone(),
                ])),
                image: Some(self.settings.image.clone()),
                market: Market::OnDemand,
                volume_gb: None,
                user: None,
                subnet: Some(self.settings.subnet.clone()),
                security_groups: Some(self.settings.security_groups.clone()),
                public_ip: false,
                instance_profile: None,
                replace: Some(0),
            },
            tags: BTreeMap::from([
                (tags::RUN.to_owned(), run.to_owned()),
                (tags::ROLE.to_owned(), "master".to_owned()),
                (tags::GROUP.to_owned(), "master".to_owned()),
                (tags::DEADLINE.to_owned(), deadline.to_string()),
                (tags::GENERATION.to_owned(), generation.to_string()),
            ])
            .into_iter()
            .chain(
                self.settings
                    .stack
                    .iter()
                    .map(|s| (tags::STACK.to_owned(), s.clone())),
            )
            .collect(),
            user_data: master_user_data(&self.settings, run, deadline, generation),
            client_token: if generation <= 1 {
                compute::client_token(run, "master")
            } else {
                compute::client_token(run, &format!("master-g{generation}"))
            },
            instance_profile: self.settings.master_profile.clone(),
        }
    }
}
