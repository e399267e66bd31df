//! The launcher's handler: one function for S3 uploads, EventBridge schedules and direct
//! invocations. It turns a trigger into a run id derived from the trigger alone, claims
//! the run in the store (create-if-absent), validates the playbook BEFORE launching
//! anything, and starts exactly one master.
//!
//! It depends on narrow seams ([`squall::store::Store`], [`squall::compute::Compute`]),
//! so tests call [`Launcher::handle`] directly against moto. Reading settings from the
//! environment and the Lambda runtime loop live in `main.rs`; what the master does once
//! started is the master's business.

use serde::Serialize;
use serde_json::Value;
use squall::compute::{Compute, LaunchRequest, tags};
use squall::playbook::{FleetGroup, Market};
use squall::record::{RunRecord, RunStatus};
use squall::store::{Store, keys};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// What the launcher needs besides the event; read from environment variables by
/// [`Settings::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The bucket holding playbooks, runs and the squall binary (`SQUALL_BUCKET`).
    pub bucket: String,
    /// Subnet of the master (`SQUALL_SUBNET`).
    pub subnet: String,
    /// Security groups of the master (`SQUALL_SECURITY_GROUPS`, comma-separated).
    pub security_groups: Vec<String>,
    /// Instance profile of the master (`SQUALL_MASTER_PROFILE`).
    pub master_profile: Option<String>,
    /// AMI of the master (`SQUALL_IMAGE`).
    pub image: String,
    /// Instance type of the master (`SQUALL_MASTER_TYPE`, default `t3.small`).
    pub master_type: String,
    /// Upload prefixes and the playbook each starts (`SQUALL_UPLOADS`:
    /// `inbox/=playbooks/nightly.yml,scans/=playbooks/scan.yml`).
    pub uploads: Vec<(String, String)>,
    /// Schedule rule names and the playbook each starts (`SQUALL_SCHEDULES`:
    /// `squall-nightly=playbooks/nightly.yml`).
    pub schedules: BTreeMap<String, String>,
    /// Key of the `squall` binary the master runs (`SQUALL_BINARY_KEY`, default
    /// `bin/squall`).
    pub binary_key: String,
}

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
    fn permanent(message: impl Into<String>) -> Self {
        LaunchError {
            message: message.into(),
            retryable: false,
        }
    }

    fn retryable(message: impl Into<String>) -> Self {
        LaunchError {
            message: message.into(),
            retryable: true,
        }
    }
}

impl Settings {
    /// Reads settings through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, LaunchError> {
        let need = |k: &str| {
            get(k)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| LaunchError::permanent(format!("missing setting {k}")))
        };
        let pairs = |k: &str| -> Result<Vec<(String, String)>, LaunchError> {
            get(k)
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|p| {
                    p.split_once('=')
                        .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
                        .ok_or_else(|| {
                            LaunchError::permanent(format!(
                                "{k}: expected NAME=PLAYBOOK, found `{p}`"
                            ))
                        })
                })
                .collect()
        };
        Ok(Settings {
            bucket: need("SQUALL_BUCKET")?,
            subnet: need("SQUALL_SUBNET")?,
            security_groups: need("SQUALL_SECURITY_GROUPS")?
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            master_profile: get("SQUALL_MASTER_PROFILE").filter(|s| !s.is_empty()),
            image: need("SQUALL_IMAGE")?,
            master_type: get("SQUALL_MASTER_TYPE").unwrap_or_else(|| "t3.small".into()),
            uploads: pairs("SQUALL_UPLOADS")?,
            schedules: pairs("SQUALL_SCHEDULES")?.into_iter().collect(),
            binary_key: get("SQUALL_BINARY_KEY").unwrap_or_else(|| "bin/squall".into()),
        })
    }
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// An object was created in the bucket.
    S3 {
        bucket: String,
        key: String,
        size: i64,
        etag: String,
        version_id: String,
        sequencer: String,
    },
    /// A schedule rule fired.
    Schedule { rule: String, time: String },
    /// A direct invocation `{playbook, vars}`.
    Direct {
        playbook: String,
        vars: BTreeMap<String, String>,
        /// Distinguishes deliberate repeats; duplicates of one request share it.
        request: String,
    },
}

impl Trigger {
    /// `trigger.*` for templates and the record.
    pub fn fields(&self) -> BTreeMap<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// The triggers in an event (an S3 notification may carry several records).
pub fn parse_event(event: &Value) -> Result<Vec<Trigger>, LaunchError> {
    if event.get("Records").is_some() {
        let ev: aws_lambda_events::event::s3::S3Event = serde_json::from_value(event.clone())
            .map_err(|e| LaunchError::permanent(format!("not a valid S3 event: {e}")))?;
        return ev
            .records
            .into_iter()
            .map(|r| {
                let o = r.s3.object;
                let key = o
                    .url_decoded_key
                    .or(o.key)
                    .ok_or_else(|| LaunchError::permanent("S3 record without an object key"))?;
                Ok(Trigger::S3 {
                    bucket: r.s3.bucket.name.unwrap_or_default(),
                    key: decode_key(&key),
                    size: o.size.unwrap_or(0),
                    etag: o.e_tag.unwrap_or_default(),
                    version_id: o.version_id.unwrap_or_default(),
                    sequencer: o.sequencer.unwrap_or_default(),
                })
            })
            .collect();
    }
    if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        let rule = event
            .get("resources")
            .and_then(|r| r.get(0))
            .and_then(Value::as_str)
            .and_then(|arn| arn.rsplit('/').next())
            .ok_or_else(|| {
                LaunchError::permanent("scheduled event without a rule ARN in `resources`")
            })?;
        let time = event
            .get("time")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Ok(vec![Trigger::Schedule {
            rule: rule.to_owned(),
            time: time.to_owned(),
        }]);
    }
    if let Some(pb) = event.get("playbook").and_then(Value::as_str) {
        let vars = match event.get("vars") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect(),
            Some(_) => {
                return Err(LaunchError::permanent(
                    "`vars` must be an object of NAME: VALUE",
                ));
            }
        };
        let request = event
            .get("request_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Ok(vec![Trigger::Direct {
            playbook: pb.to_owned(),
            vars,
            request: request.to_owned(),
        }]);
    }
    Err(LaunchError::permanent(
        "unrecognised event: expected an S3 notification, a Scheduled Event or {\"playbook\": KEY, \"vars\": {...}}",
    ))
}

/// S3 notification keys are URL-encoded with `+` for spaces.
fn decode_key(key: &str) -> String {
    let bytes = key.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The run id of a trigger: the playbook's file stem and a digest of everything that
/// identifies the trigger (so every delivery of one event gets the same id).
pub fn run_id(playbook_key: &str, trigger: &Trigger) -> String {
    use sha2::Digest;
    let identity = match trigger {
        Trigger::S3 {
            bucket,
            key,
            etag,
            version_id,
            sequencer,
            ..
        } => format!("s3\n{bucket}\n{key}\n{version_id}\n{etag}\n{sequencer}"),
        Trigger::Schedule { rule, time } => format!("schedule\n{rule}\n{time}"),
        Trigger::Direct {
            playbook,
            vars,
            request,
        } => format!("direct\n{playbook}\n{vars:?}\n{request}"),
    };
    let digest = sha2::Sha256::digest(format!("{playbook_key}\n{identity}").as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let stem: String = Path::new(playbook_key)
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    let stem = stem.trim_matches('-');
    if stem.is_empty() {
        format!("run-{hex}")
    } else {
        format!("{stem}-{hex}")
    }
}

/// What the launcher did for one trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub run_id: Option<String>,
    /// `launched`, `duplicate`, `rejected` or `ignored`.
    pub status: &'static str,
    pub master: Option<String>,
    pub reason: Option<String>,
}

/// The handler. See the module docs.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub compute: Arc<dyn Compute>,
}

/// Seconds a master may live past its playbook's deadline (collect, teardown, record).
const MASTER_GRACE_SECS: u64 = 900;

impl Launcher {
    /// Handles one event at `now_secs` (unix time).
    pub async fn handle(&self, event: &Value, now_secs: u64) -> Result<Vec<Outcome>, LaunchError> {
        let mut out = Vec::new();
        for trigger in parse_event(event)? {
            out.push(self.handle_trigger(&trigger, now_secs).await?);
        }
        Ok(out)
    }

    fn playbook_for(&self, trigger: &Trigger) -> Option<String> {
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

    async fn handle_trigger(
        &self,
        trigger: &Trigger,
        now_secs: u64,
    ) -> Result<Outcome, LaunchError> {
        let Some(playbook_key) = self.playbook_for(trigger) else {
            return Ok(Outcome {
                run_id: None,
                status: "ignored",
                master: None,
                reason: Some("no playbook is configured for this trigger".into()),
            });
        };
        let run = run_id(&playbook_key, trigger);
        let claim =
            serde_json::json!({ "run_id": run, "trigger": trigger, "claimed_at": now_secs });
        let claimed = self
            .store
            .create_if_absent(
                &format!("{}claim.json", keys::run_prefix(&run)),
                claim.to_string().into_bytes(),
            )
            .await
            .map_err(|e| LaunchError::retryable(format!("claiming run {run}: {e}")))?;
        if !claimed {
            return Ok(Outcome {
                run_id: Some(run),
                status: "duplicate",
                master: None,
                reason: Some("this trigger was delivered before; its run exists".into()),
            });
        }
        let source =
            self.store.get(&playbook_key).await.map_err(|e| {
                LaunchError::retryable(format!("reading playbook {playbook_key}: {e}"))
            })?;
        let vars = match trigger {
            Trigger::Direct { vars, .. } => vars.clone(),
            _ => BTreeMap::new(),
        };
        let checked = match source {
            None => Err(format!(
                "playbook {playbook_key} not found in s3://{}",
                self.settings.bucket
            )),
            Some(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                squall::playbook::parse(Path::new(&playbook_key), &text, Path::new("."), &vars)
                    .map_err(|e| e.to_string())
            }
        };
        let pb = match checked {
            Ok(pb) => pb,
            Err(reason) => {
                self.record_rejection(&run, &playbook_key, trigger, &reason, now_secs)
                    .await?;
                return Ok(Outcome {
                    run_id: Some(run),
                    status: "rejected",
                    master: None,
                    reason: Some(reason),
                });
            }
        };
        let run_prefix = keys::run_prefix(&run);
        self.store
            .put(
                &format!("{run_prefix}playbook.yml"),
                pb.source.clone().into_bytes(),
            )
            .await
            .map_err(|e| {
                LaunchError::retryable(format!("storing the playbook of run {run}: {e}"))
            })?;
        let deadline = now_secs + pb.deadline().as_secs() + MASTER_GRACE_SECS;
        let req = LaunchRequest {
            run_id: run.clone(),
            group: "master".into(),
            spec: FleetGroup {
                count: 1,
                min_count: None,
                instance_type: Some(squall::playbook::InstanceTypes(vec![
                    self.settings.master_type.clone(),
                ])),
                image: Some(self.settings.image.clone()),
                market: Market::OnDemand,
                volume_gb: None,
                user: None,
                subnet: Some(self.settings.subnet.clone()),
                security_groups: Some(self.settings.security_groups.clone()),
                public_ip: false,
            },
            tags: BTreeMap::from([
                (tags::RUN.to_owned(), run.clone()),
                (tags::ROLE.to_owned(), "master".to_owned()),
                (tags::GROUP.to_owned(), "master".to_owned()),
                (tags::DEADLINE.to_owned(), deadline.to_string()),
            ]),
            user_data: master_user_data(&self.settings, &run, deadline),
            client_token: squall::runner::client_token(&run, "master"),
            instance_profile: self.settings.master_profile.clone(),
        };
        let launched = self.compute.launch(&req).await.map_err(|e| {
            LaunchError::retryable(format!("starting the master of run {run}: {e}"))
        })?;
        let master = launched.first().map(|i| i.id.clone());
        let launch = serde_json::json!({ "run_id": run, "trigger": trigger, "playbook": playbook_key, "master": master, "launched_at": now_secs, "deadline": deadline });
        self.store
            .put(
                &format!("{run_prefix}launch.json"),
                launch.to_string().into_bytes(),
            )
            .await
            .map_err(|e| {
                LaunchError::retryable(format!("recording the launch of run {run}: {e}"))
            })?;
        Ok(Outcome {
            run_id: Some(run),
            status: "launched",
            master,
            reason: None,
        })
    }

    /// A failed run record saying why nothing was launched.
    async fn record_rejection(
        &self,
        run: &str,
        playbook_key: &str,
        trigger: &Trigger,
        reason: &str,
        now_secs: u64,
    ) -> Result<(), LaunchError> {
        let record = RunRecord {
            version: squall::record::RECORD_VERSION,
            run_id: run.to_owned(),
            playbook: squall::record::PlaybookInfo {
                name: String::new(),
                file: playbook_key.to_owned(),
                sha256: String::new(),
            },
            vars: BTreeMap::new(),
            trigger: trigger.fields(),
            status: RunStatus::Failed,
            reason: Some(format!(
                "rejected by the launcher, nothing was launched: {reason}"
            )),
            started_at_ms: now_secs * 1000,
            ended_at_ms: Some(now_secs * 1000),
            deadline_at_ms: now_secs * 1000,
            phases: Vec::new(),
            stages: Vec::new(),
            hosts: Vec::new(),
            tasks: Vec::new(),
            teardown: None,
        };
        let body = serde_json::to_vec_pretty(&record)
            .map_err(|e| LaunchError::permanent(e.to_string()))?;
        self.store
            .put(&keys::run_record(run), body)
            .await
            .map_err(|e| {
                LaunchError::retryable(format!("recording the rejection of run {run}: {e}"))
            })
    }
}

/// The master's boot script: schedule the dead-man's switch for the deadline, fetch
/// squall, and start `squall master` detached.
pub fn master_user_data(s: &Settings, run: &str, deadline_unix: u64) -> String {
    format!(
        r#"#!/bin/sh
# squall master for run {run}. Generated by the launcher.
set -eu
# Dead-man's switch: whatever happens, this instance powers off (and, with shutdown
# behaviour terminate, is terminated) at the run's deadline.
now=$(date +%s)
( sleep $(( {deadline_unix} - now )) ; poweroff ) >/dev/null 2>&1 &
aws s3 cp "s3://{bucket}/{binary}" /usr/local/bin/squall
chmod 0755 /usr/local/bin/squall
nohup setsid /usr/local/bin/squall master --run "s3://{bucket}/runs/{run}/" >/var/log/squall-master.log 2>&1 </dev/null &
"#,
        bucket = s.bucket,
        binary = s.binary_key,
    )
}
