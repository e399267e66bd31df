//! Starting a run in the cloud: what the launcher Lambda does, and what `squall launch`
//! does from a laptop. A trigger becomes a run id derived from the trigger alone; the
//! run is claimed in the store (create-if-absent); the playbook is validated BEFORE
//! anything is launched; then exactly one master is started, whose user-data fetches
//! squall and runs `squall master` (see [`crate::cloud`]) detached.
//!
//! It depends on narrow seams ([`Store`], [`Compute`]), so tests call
//! [`Launcher::handle_trigger`] directly against moto. Parsing Lambda events and the
//! Lambda runtime loop live in the `squall-launcher` crate.

use crate::compute::{Compute, LaunchRequest, tags};
use crate::playbook::{FleetGroup, Loaded, Market};
use crate::record::{RunRecord, RunStatus};
use crate::store::{Store, keys};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    /// Key of the `squall-worker` agent the master installs on workers
    /// (`SQUALL_AGENT_KEY`, default `bin/squall-worker`).
    pub agent_key: String,
    /// Security groups of the workers (`SQUALL_WORKER_SECURITY_GROUPS`,
    /// comma-separated; default: the master's). They must let the master in on port 22.
    pub worker_security_groups: Vec<String>,
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
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let security_groups = list(need("SQUALL_SECURITY_GROUPS")?);
        Ok(Settings {
            bucket: need("SQUALL_BUCKET")?,
            subnet: need("SQUALL_SUBNET")?,
            worker_security_groups: get("SQUALL_WORKER_SECURITY_GROUPS")
                .map(list)
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| security_groups.clone()),
            security_groups,
            master_profile: get("SQUALL_MASTER_PROFILE").filter(|s| !s.is_empty()),
            image: need("SQUALL_IMAGE")?,
            master_type: get("SQUALL_MASTER_TYPE").unwrap_or_else(|| "t3.small".into()),
            uploads: pairs("SQUALL_UPLOADS")?,
            schedules: pairs("SQUALL_SCHEDULES")?.into_iter().collect(),
            binary_key: get("SQUALL_BINARY_KEY").unwrap_or_else(|| "bin/squall".into()),
            agent_key: get("SQUALL_AGENT_KEY").unwrap_or_else(|| "bin/squall-worker".into()),
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

/// `runs/RUN_ID/request.json`: everything the master needs besides the playbook,
/// written before the master is launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub run_id: String,
    /// The playbook's key in the bucket; `copy` sources are relative to its folder.
    pub playbook: String,
    /// `--var`-style overrides (a direct invocation's `vars`).
    pub vars: BTreeMap<String, String>,
    /// `trigger.*`.
    pub trigger: BTreeMap<String, Value>,
    /// Where workers are launched unless their group says otherwise.
    pub subnet: String,
    pub security_groups: Vec<String>,
    pub image: String,
    /// Unix seconds after which the master may be swept.
    pub master_deadline: u64,
    pub requested_at: u64,
}

/// `runs/RUN_ID/launch.json`: the master started for the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub run_id: String,
    pub master: Option<String>,
    pub launched_at: u64,
}

/// Keys of what the launcher writes under a run's prefix.
pub mod launch_keys {
    use crate::store::keys::run_prefix;
    pub fn claim(run: &str) -> String {
        format!("{}claim.json", run_prefix(run))
    }
    pub fn request(run: &str) -> String {
        format!("{}request.json", run_prefix(run))
    }
    pub fn playbook(run: &str) -> String {
        format!("{}playbook.yml", run_prefix(run))
    }
    pub fn launch(run: &str) -> String {
        format!("{}launch.json", run_prefix(run))
    }
}

/// The handler. See the module docs.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub compute: Arc<dyn Compute>,
}

/// Seconds a master may live beyond its workers' lifetime (the run's deadline plus its
/// stop and collect graces): its own boot, teardown and record.
pub const MASTER_GRACE_SECS: u64 = 600;

/// A claim without a launch record this old is taken over by a redelivery (its
/// launcher died between claiming and launching). Longer than a launcher invocation
/// may last, so a claim is never taken over from a launcher still at work.
pub const STALE_CLAIM_SECS: u64 = 180;

/// Where an existing claim stands; see [`Launcher::handle_trigger`].
enum ClaimState {
    Settled,
    InProgress,
    Stale,
}

/// The folder of a playbook key, with a trailing `/` (or empty).
fn key_dir(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// The store keys a playbook's `copy` sources are read from, for a playbook stored at
/// `playbook_key`: `Ok(exact keys, prefixes of templated sources)`. A source that would
/// leave the playbook's folder is an error.
pub fn copy_source_keys(
    pb: &Loaded,
    playbook_key: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let dir = key_dir(playbook_key);
    let mut exact = Vec::new();
    let mut prefixes = Vec::new();
    for src in pb.copy_sources() {
        if src.starts_with('/') || src.split('/').any(|c| c == "..") {
            return Err(format!(
                "copy source `{src}` must be a relative path inside the playbook's folder (no `..`, not absolute)"
            ));
        }
        match src.find("{{") {
            None => exact.push(format!("{dir}{src}")),
            Some(i) => prefixes.push(format!("{dir}{}", &src[..i])),
        }
    }
    exact.sort();
    exact.dedup();
    prefixes.sort();
    prefixes.dedup();
    Ok((exact, prefixes))
}

impl Launcher {
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

    /// Handles one trigger at `now_secs` (unix time). See the module docs.
    pub async fn handle_trigger(
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
            .create_if_absent(&launch_keys::claim(&run), claim.to_string().into_bytes())
            .await
            .map_err(|e| LaunchError::retryable(format!("claiming run {run}: {e}")))?;
        if !claimed {
            match self.claim_state(&run, now_secs).await? {
                ClaimState::Settled => {
                    return Ok(Outcome {
                        run_id: Some(run),
                        status: "duplicate",
                        master: None,
                        reason: Some("this trigger was delivered before; its run exists".into()),
                    });
                }
                // Another delivery is launching it, or died doing so: an error, so that
                // Lambda delivers again later (and a later delivery takes over a claim
                // left behind), never a success that would end the retries.
                ClaimState::InProgress => {
                    return Err(LaunchError::retryable(format!(
                        "run {run} is being launched by another delivery; retry later"
                    )));
                }
                ClaimState::Stale => {
                    tracing::warn!(run = %run, "taking over a stale claim: its launcher stopped before launching");
                }
            }
        }
        let vars = match trigger {
            Trigger::Direct { vars, .. } => vars.clone(),
            _ => BTreeMap::new(),
        };
        let pb = match self.checked_playbook(&playbook_key, &vars).await? {
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
        };
        let put = |key: String, body: Vec<u8>| async move {
            self.store
                .put(&key, body)
                .await
                .map_err(|e| LaunchError::retryable(format!("writing {key}: {e}")))
        };
        put(launch_keys::playbook(&run), pb.source.clone().into_bytes()).await?;
        put(
            launch_keys::request(&run),
            serde_json::to_vec_pretty(&request)
                .map_err(|e| LaunchError::permanent(e.to_string()))?,
        )
        .await?;
        let req = self.master_request(&run, deadline);
        let launched = self.compute.launch(&req).await.map_err(|e| {
            LaunchError::retryable(format!("starting the master of run {run}: {e}"))
        })?;
        let master = launched.first().map(|i| i.id.clone());
        let record = LaunchRecord {
            run_id: run.clone(),
            master: master.clone(),
            launched_at: now_secs,
        };
        put(
            launch_keys::launch(&run),
            serde_json::to_vec_pretty(&record)
                .map_err(|e| LaunchError::permanent(e.to_string()))?,
        )
        .await?;
        Ok(Outcome {
            run_id: Some(run),
            status: "launched",
            master,
            reason: None,
        })
    }

    /// Where an existing claim stands: its run launched or recorded (settled), being
    /// launched (younger than [`STALE_CLAIM_SECS`]), or abandoned by its launcher.
    async fn claim_state(&self, run: &str, now_secs: u64) -> Result<ClaimState, LaunchError> {
        let get = |key: String| async move {
            self.store
                .get(&key)
                .await
                .map_err(|e| LaunchError::retryable(format!("reading {key}: {e}")))
        };
        if get(launch_keys::launch(run)).await?.is_some()
            || get(keys::run_record(run)).await?.is_some()
        {
            return Ok(ClaimState::Settled);
        }
        let claimed_at = get(launch_keys::claim(run))
            .await?
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("claimed_at").and_then(Value::as_u64));
        // An unreadable claim is treated as fresh: never risk a second master.
        Ok(
            if claimed_at.is_some_and(|at| now_secs.saturating_sub(at) >= STALE_CLAIM_SECS) {
                ClaimState::Stale
            } else {
                ClaimState::InProgress
            },
        )
    }

    /// Reads and validates the playbook and checks its `copy` sources exist. The outer
    /// error is passing trouble; the inner one why the playbook is rejected.
    async fn checked_playbook(
        &self,
        key: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<Result<Loaded, String>, LaunchError> {
        let source = self
            .store
            .get(key)
            .await
            .map_err(|e| LaunchError::retryable(format!("reading playbook {key}: {e}")))?;
        let Some(bytes) = source else {
            return Ok(Err(format!(
                "playbook {key} not found in s3://{}",
                self.settings.bucket
            )));
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return Ok(Err(format!("playbook {key} is not UTF-8 text")));
        };
        let pb = match crate::playbook::parse(Path::new(key), &text, Path::new("."), vars) {
            Ok(pb) => pb,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let (exact, prefixes) = match copy_source_keys(&pb, key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(format!("{key}: {e}"))),
        };
        for k in exact.iter().chain(&prefixes) {
            let found = self
                .store
                .list(k)
                .await
                .map_err(|e| LaunchError::retryable(format!("listing {k}: {e}")))?;
            let present = if prefixes.contains(k) {
                !found.is_empty()
            } else {
                found.iter().any(|f| f == k)
            };
            if !present {
                return Ok(Err(format!(
                    "{key}: copy source s3://{}/{k} not found",
                    self.settings.bucket
                )));
            }
        }
        Ok(Ok(pb))
    }

    fn master_request(&self, run: &str, deadline: u64) -> LaunchRequest {
        LaunchRequest {
            run_id: run.to_owned(),
            group: "master".into(),
            spec: FleetGroup {
                count: 1,
                min_count: None,
                instance_type: Some(crate::playbook::InstanceTypes(vec![
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
                (tags::RUN.to_owned(), run.to_owned()),
                (tags::ROLE.to_owned(), "master".to_owned()),
                (tags::GROUP.to_owned(), "master".to_owned()),
                (tags::DEADLINE.to_owned(), deadline.to_string()),
            ]),
            user_data: master_user_data(&self.settings, run, deadline),
            client_token: crate::runner::client_token(run, "master"),
            instance_profile: self.settings.master_profile.clone(),
        }
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
        let mut record = RunRecord::ended_before_start(
            run,
            playbook_key,
            RunStatus::Failed,
            format!("rejected by the launcher, nothing was launched: {reason}"),
            now_secs * 1000,
        );
        record.trigger = trigger.fields();
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

/// A shell snippet that powers the machine off at `deadline_unix` whatever else
/// happens: the instance's dead-man's switch (with shutdown behaviour terminate, EC2
/// then terminates it). It runs in its own session, so it outlives the boot script.
pub fn deadman_switch(deadline_unix: u64) -> String {
    format!(
        "# Dead-man's switch: whatever happens, this instance powers off (and, with shutdown\n\
         # behaviour terminate, is terminated) at unix time {deadline_unix}.\n\
         nohup setsid sh -c 'while [ \"$(date +%s)\" -lt {deadline_unix} ]; do sleep 20; done; poweroff' >/dev/null 2>&1 </dev/null &\n"
    )
}

/// The master's boot script: the dead-man's switch, fetch squall and its agent, and
/// start `squall master` detached (it outlives this script).
pub fn master_user_data(s: &Settings, run: &str, deadline_unix: u64) -> String {
    format!(
        r#"#!/bin/sh
# squall master for run {run}. Generated by the launcher.
set -eu
{deadman}# A boot that fails before squall runs powers the instance off at once, instead of
# idling until the dead-man's switch.
trap 'rc=$?; [ "$rc" -eq 0 ] || poweroff' EXIT
mkdir -p /opt/squall/bin
aws s3 cp --only-show-errors "s3://{bucket}/{binary}" /opt/squall/bin/squall
aws s3 cp --only-show-errors "s3://{bucket}/{agent}" /opt/squall/bin/squall-worker
chmod 0755 /opt/squall/bin/squall /opt/squall/bin/squall-worker
cd /opt/squall
nohup setsid /opt/squall/bin/squall master --run "s3://{bucket}/runs/{run}/" >>/var/log/squall-master.log 2>&1 </dev/null &
"#,
        deadman = deadman_switch(deadline_unix),
        bucket = s.bucket,
        binary = s.binary_key,
        agent = s.agent_key,
    )
}

/// Uploads a local playbook and its `copy` sources to `playbooks/` in the store, for
/// `squall launch`; returns the playbook's key. Templated sources upload every file
/// under their literal prefix.
pub async fn upload_playbook(store: &dyn Store, pb: &Loaded) -> Result<String, String> {
    let name = pb
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} has no file name", pb.file.display()))?;
    let key = format!("playbooks/{name}");
    let (exact, prefixes) = copy_source_keys(pb, &key)?;
    let mut files: Vec<String> = exact
        .iter()
        .map(|k| k.trim_start_matches("playbooks/").to_owned())
        .collect();
    for p in prefixes {
        let rel = p.trim_start_matches("playbooks/");
        let (dir, stem) = rel.rsplit_once('/').unwrap_or(("", rel));
        walk(&pb.base_dir, Path::new(dir), &mut |f: &str| {
            if f.starts_with(rel) || (stem.is_empty() && f.starts_with(dir)) {
                files.push(f.to_owned());
            }
        })?;
    }
    for rel in files {
        let path = pb.base_dir.join(&rel);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("opening copy source {}: {e}", path.display()))?;
        store
            .put_stream(&format!("playbooks/{rel}"), &mut file)
            .await
            .map_err(|e| e.to_string())?;
    }
    store
        .put(&key, pb.source.clone().into_bytes())
        .await
        .map_err(|e| e.to_string())?;
    Ok(key)
}

/// Calls `found` with every file's path under `base/dir`, relative to `base`.
fn walk(base: &Path, dir: &Path, found: &mut dyn FnMut(&str)) -> Result<(), String> {
    let full = base.join(dir);
    let entries =
        std::fs::read_dir(&full).map_err(|e| format!("reading {}: {e}", full.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", full.display()))?;
        let rel = dir.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| format!("reading {}: {e}", rel.display()))?;
        if kind.is_dir() {
            walk(base, &rel, found)?;
        } else if kind.is_file() {
            found(&rel.to_string_lossy());
        }
    }
    Ok(())
}

/// Invokes the deployed launcher Lambda with a direct invocation, for
/// `squall launch --via-lambda`; returns the function's answer.
pub async fn invoke_lambda(
    client: &aws_sdk_lambda::Client,
    function: &str,
    trigger: &Trigger,
) -> Result<Value, String> {
    let Trigger::Direct {
        playbook,
        vars,
        request,
    } = trigger
    else {
        return Err("only direct invocations can be sent to the launcher".into());
    };
    let payload = serde_json::json!({ "playbook": playbook, "vars": vars, "request_id": request });
    let out = client
        .invoke()
        .function_name(function)
        .payload(aws_sdk_lambda::primitives::Blob::new(payload.to_string()))
        .send()
        .await
        .map_err(|e| format!("invoking {function}: {}", crate::aws::describe(&e)))?;
    let body = out
        .payload()
        .map(|b| b.as_ref().to_vec())
        .unwrap_or_default();
    let answer: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    match out.function_error() {
        Some(kind) => Err(format!("{function} failed ({kind}): {answer}")),
        None => Ok(answer),
    }
}
