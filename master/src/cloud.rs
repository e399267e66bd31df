//! The master's life on EC2: `squall master --run s3://BUCKET/runs/RUN_ID/`.
//!
//! Started detached by the user-data the launcher wrote ([`crate::launch`]), it finds
//! its own instance id (IMDSv2), reads the run's request and playbook (and the
//! playbook's `copy` sources) from the bucket, makes the run's SSH keys (a login key and
//! the workers' host key, which reaches the workers in their user-data and is pinned in
//! the master's known_hosts), runs the playbook with EC2 compute, SSH and the S3 store
//! (heartbeats, logs, teardown of the workers and the record are the runner's), and
//! finally terminates itself. Whatever fails, a run record says why, and the instance
//! still ends: by its own TerminateInstances call or, failing that, by the dead-man's
//! switch in its user-data.

use crate::compute::{Compute, tags};
use crate::ec2::{Ec2Compute, Ec2Settings};
use crate::launch::{RunRequest, copy_source_keys, deadman_switch, launch_keys};
use crate::playbook::{self, Loaded};
use crate::record::{RunRecord, RunStatus};
use crate::runner::{self, Backends, RunOptions};
use crate::s3::S3Store;
use crate::ssh::{SshOptions, SshTarget, SshTransport};
use crate::store::{Store, keys};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The login user on worker images when the playbook's group names none.
pub const DEFAULT_USER: &str = "ec2-user";

/// How the master runs.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// `s3://BUCKET/runs/RUN_ID/`.
    pub run_url: String,
    /// Where the master keeps its keys, playbook files and log.
    pub work_dir: PathBuf,
    /// The `squall-worker` agent installed on workers.
    pub agent_binary: PathBuf,
    /// The master's log file, archived into the run's logs.
    pub master_log: PathBuf,
    /// How long to keep retrying SSH connections to a booting worker.
    pub connect_deadline: Duration,
    /// How long launched workers may take to be running.
    pub running_deadline: Duration,
    pub heartbeat_every: Duration,
    /// How often every live worker's logs are snapshotted into the store.
    pub snapshot_every: Duration,
    /// How long a worker reached before may stay unreachable before it is lost.
    pub reconnect_deadline: Duration,
}

/// Errors that stop the master before the run could start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("`{0}` is not a run location: expected s3://BUCKET/runs/RUN_ID/")]
    BadUrl(String),
    #[error("{0}")]
    Setup(String),
}

/// Parses `s3://BUCKET/runs/RUN_ID/` into (bucket, run id).
pub fn parse_run_url(url: &str) -> Result<(String, String), MasterError> {
    let bad = || MasterError::BadUrl(url.to_owned());
    let (bucket, key) = S3Store::parse_url(url).ok_or_else(bad)?;
    let run = key
        .strip_prefix("runs/")
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| crate::runid::valid(r))
        .ok_or_else(bad)?;
    Ok((bucket, run.to_owned()))
}

/// This instance's id from the instance metadata service (IMDSv2; the endpoint can be
/// overridden with `AWS_EC2_METADATA_SERVICE_ENDPOINT`, as for every AWS SDK).
pub async fn own_instance_id() -> Result<String, String> {
    let client = aws_config::imds::Client::builder()
        .max_attempts(5)
        .connect_timeout(Duration::from_secs(2))
        .build();
    client
        .get("/latest/meta-data/instance-id")
        .await
        .map(String::from)
        .map_err(|e| format!("reading the instance id from the instance metadata service: {e}"))
}

/// Runs the master to the end; returns the run's exit code (see [`crate::exit`]).
pub async fn run_master(opts: MasterOptions) -> Result<u8, MasterError> {
    let (bucket, run_id) = parse_run_url(&opts.run_url)?;
    let conf = crate::aws::sdk_config(None).await;
    let store: Arc<dyn Store> = Arc::new(S3Store::new(
        crate::aws::s3_client(&conf),
        bucket.clone(),
        "",
    ));
    let me = match own_instance_id().await {
        Ok(id) => Some(id),
        Err(e) => {
            // The run still goes; the dead-man's switch ends this instance instead.
            tracing::error!("{e}; this instance will not terminate itself");
            None
        }
    };
    tracing::info!(run = %run_id, instance = me.as_deref().unwrap_or("?"), "master started");
    let ec2 = crate::aws::ec2_client(&conf);
    let outcome = match prepare(&opts, store.as_ref(), &run_id).await {
        Ok((pb, request)) => {
            let compute: Arc<dyn Compute> = Arc::new(Ec2Compute::new(
                ec2.clone(),
                Ec2Settings {
                    subnet: Some(request.subnet.clone()),
                    security_groups: request.security_groups.clone(),
                    image: Some(request.image.clone()),
                    instance_type: None,
                    running_deadline: opts.running_deadline,
                },
            ));
            run_prepared(&opts, pb, request, compute, store.clone())
                .await
                .map_err(|e| e.to_string())
        }
        Err(reason) => Err(reason),
    };
    let code = match outcome {
        Ok(code) => code,
        Err(reason) => {
            // Whatever stopped the run before the runner could record it is recorded
            // here, with the master's log, before the instance ends.
            tracing::error!("the run cannot start: {reason}");
            let record = RunRecord::ended_before_start(
                &run_id,
                "",
                RunStatus::Failed,
                format!("the master could not start the run: {reason}"),
                runner::now_ms(),
            );
            match serde_json::to_vec_pretty(&record) {
                Ok(body) => {
                    if let Err(e) = store.put(&keys::run_record(&run_id), body).await {
                        tracing::error!("writing the run record failed: {e}");
                    }
                }
                Err(e) => tracing::error!("serializing the run record failed: {e}"),
            }
            if let Ok(mut log) = tokio::fs::File::open(&opts.master_log).await {
                let key = format!("{}logs/master.log", keys::run_prefix(&run_id));
                if let Err(e) = store.put_stream(&key, &mut log).await {
                    tracing::error!("storing the master log failed: {e}");
                }
            }
            crate::exit::ERROR
        }
    };
    if let Some(me) = me {
        terminate_self(&ec2, &me, &run_id).await;
    }
    Ok(code)
}

/// Reads the request, the playbook and its `copy` sources. `Err` says why the run
/// cannot start.
async fn prepare(
    opts: &MasterOptions,
    store: &dyn Store,
    run_id: &str,
) -> Result<(Loaded, RunRequest), String> {
    let request: RunRequest =
        serde_json::from_slice(&get_required(store, &launch_keys::request(run_id)).await?)
            .map_err(|e| {
                format!(
                    "{} is not a valid run request: {e}",
                    launch_keys::request(run_id)
                )
            })?;
    let source = String::from_utf8(get_required(store, &launch_keys::playbook(run_id)).await?)
        .map_err(|_| "the playbook is not UTF-8 text".to_owned())?;
    let files = opts.work_dir.join("playbook");
    let pb = playbook::parse(Path::new(&request.playbook), &source, &files, &request.vars)
        .map_err(|e| e.to_string())?;
    let (exact, prefixes) = copy_source_keys(&pb, &request.playbook)?;
    let mut wanted = exact;
    for p in prefixes {
        wanted.extend(store.list(&p).await.map_err(|e| e.to_string())?);
    }
    let dir = request
        .playbook
        .rfind('/')
        .map_or("", |i| &request.playbook[..=i]);
    for key in wanted {
        if key.ends_with('/') {
            continue; // a "folder" marker, not a file
        }
        let rel = key.strip_prefix(dir).unwrap_or(&key);
        // Only plain relative paths: a key like `playbooks//etc/x` must not become an
        // absolute path on the master.
        if rel.is_empty()
            || !Path::new(rel)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!("copy source {key} is not a plain relative path"));
        }
        let dest = files.join(rel);
        let body = get_required(store, &key).await?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        tokio::fs::write(&dest, body)
            .await
            .map_err(|e| format!("writing {}: {e}", dest.display()))?;
    }
    Ok((pb, request))
}

/// Reads `key`; absent is an error. (The S3 store already retries passing trouble.)
async fn get_required(store: &dyn Store, key: &str) -> Result<Vec<u8>, String> {
    match store.get(key).await {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err(format!("{} not found", store.locate(key))),
        Err(e) => Err(e.to_string()),
    }
}

async fn run_prepared(
    opts: &MasterOptions,
    pb: Loaded,
    request: RunRequest,
    compute: Arc<dyn Compute>,
    store: Arc<dyn Store>,
) -> Result<u8, MasterError> {
    let keys = RunKeys::generate(&opts.work_dir.join("ssh"), &request.run_id)
        .await
        .map_err(MasterError::Setup)?;
    // The workers' deadline tag and dead-man's switch: the run's deadline plus the time
    // stopping and collecting may take (as the runner computes its tag).
    let worker_deadline = runner::now_ms() / 1000 + pb.worker_lifetime().as_secs();
    let mut user_data = BTreeMap::new();
    let mut users = BTreeMap::new();
    for (group, spec) in &pb.playbook.fleet.value {
        let user = spec
            .value
            .user
            .clone()
            .unwrap_or_else(|| DEFAULT_USER.to_owned());
        user_data.insert(
            group.clone(),
            worker_user_data(&request.run_id, group, &user, &keys, worker_deadline),
        );
        users.insert(group.clone(), user);
    }
    let control_dir = std::env::temp_dir().join(format!("squall-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&control_dir)
        .map_err(|e| MasterError::Setup(format!("creating {}: {e}", control_dir.display())))?;
    let transport = Arc::new(
        SshTransport::new(
            SshOptions {
                control_dir,
                connect_deadline: opts.connect_deadline,
                reconnect_deadline: opts.reconnect_deadline,
                booting_hosts: true,
                ..SshOptions::default()
            },
            Some(SshTarget {
                name: String::new(),
                address: String::new(),
                port: 22,
                user: DEFAULT_USER.to_owned(),
                key: keys.login_key.clone(),
                known_hosts: keys.known_hosts.clone(),
            }),
        )
        .with_group_users(users),
    );
    let run_opts = RunOptions {
        run_id: request.run_id.clone(),
        trigger: request.trigger.clone(),
        agent_binary: opts.agent_binary.clone(),
        wait_poll_secs: 20,
        heartbeat_every: opts.heartbeat_every,
        progress_bar: false,
        master_log: Some(opts.master_log.clone()),
        handle_signals: true,
        worker_user_data: user_data,
        snapshot_every: Some(opts.snapshot_every),
    };
    let backends = Backends {
        compute,
        transport: transport.clone(),
        store,
    };
    let summary = runner::run(Arc::new(pb), backends, run_opts).await;
    transport.close_all().await;
    match summary {
        Ok(s) => {
            tracing::info!(status = s.record.status.as_str(), "run recorded");
            // CloudWatch embedded metric format, on the master's output.
            println!("{}", crate::report::emf(&s.record, runner::now_ms()));
            Ok(crate::exit::for_status(s.record.status))
        }
        Err(e) => {
            tracing::error!("{e}");
            Ok(crate::exit::ERROR)
        }
    }
}

/// Terminates this instance, the master, last: after the run is recorded.
async fn terminate_self(ec2: &aws_sdk_ec2::Client, me: &str, run_id: &str) {
    // Only ever this run's master: refuse if the tags say otherwise.
    let compute = Ec2Compute::new(ec2.clone(), Ec2Settings::default());
    match compute.describe(&[me.to_owned()]).await {
        Ok(found) => {
            let ours = found
                .iter()
                .any(|i| i.tag(tags::RUN) == Some(run_id) && i.tag(tags::ROLE) == Some("master"));
            if !ours {
                tracing::error!(
                    instance = me,
                    "not terminating: this instance is not tagged as the master of run {run_id}"
                );
                return;
            }
        }
        Err(e) => tracing::warn!("describing this instance failed ({e}); terminating anyway"),
    }
    tracing::info!(instance = me, "terminating this master instance");
    if let Err(e) = compute.terminate(&[me.to_owned()]).await {
        tracing::error!("terminating this instance failed: {e}; the dead-man's switch will");
    }
}

/// The run's SSH material, made by the master: a login key authorized on every worker,
/// and one host key installed on every worker and pinned in `known_hosts`.
#[derive(Debug, Clone)]
pub struct RunKeys {
    pub login_key: PathBuf,
    pub login_public: String,
    pub host_private: String,
    pub host_public: String,
    pub known_hosts: PathBuf,
}

impl RunKeys {
    /// Generates fresh ed25519 keys in `dir` with `ssh-keygen`.
    pub async fn generate(dir: &Path, run_id: &str) -> Result<RunKeys, String> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let login_key = dir.join("id_ed25519");
        let host_key = dir.join("host_ed25519");
        for (path, comment) in [
            (&login_key, format!("squall master of {run_id}")),
            (&host_key, format!("squall worker of {run_id}")),
        ] {
            let _ = tokio::fs::remove_file(path).await;
            let _ = tokio::fs::remove_file(path.with_extension("pub")).await;
            let out = tokio::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"])
                .arg(path)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|e| format!("running ssh-keygen: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let read = |p: PathBuf| async move {
            tokio::fs::read_to_string(&p)
                .await
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("reading {}: {e}", p.display()))
        };
        let host_public = read(dir.join("host_ed25519.pub")).await?;
        let known_hosts = dir.join("known_hosts");
        // Every worker of the run has this host key, whatever its address.
        let key_only: String = host_public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        tokio::fs::write(&known_hosts, format!("* {key_only}\n"))
            .await
            .map_err(|e| format!("writing {}: {e}", known_hosts.display()))?;
        Ok(RunKeys {
            login_public: read(dir.join("id_ed25519.pub")).await?,
            host_private: read(host_key).await?,
            host_public,
            login_key,
            known_hosts,
        })
    }
}

/// A worker's boot script: the dead-man's switch, the run's host key for sshd, and the
/// master's login key for `user`.
pub fn worker_user_data(
    run_id: &str,
    group: &str,
    user: &str,
    keys: &RunKeys,
    deadline_unix: u64,
) -> String {
    format!(
        r#"#!/bin/sh
# squall worker of run {run_id}, group {group}. Generated by the master.
set -eu
{deadman}umask 077
# The host key the master pins for this run's workers.
cat >/etc/ssh/ssh_host_ed25519_key <<'SQUALL_HOST_KEY'
{host_private}
SQUALL_HOST_KEY
printf '%s\n' '{host_public}' >/etc/ssh/ssh_host_ed25519_key.pub
chmod 0600 /etc/ssh/ssh_host_ed25519_key
chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub
# The master's login key.
home=$(getent passwd '{user}' | cut -d: -f6)
[ -n "$home" ] || {{ echo "squall: no user {user} on this image" >&2; exit 1; }}
mkdir -p "$home/.ssh"
printf '%s\n' '{login_public}' >>"$home/.ssh/authorized_keys"
chown -R '{user}':"$(id -gn '{user}')" "$home/.ssh"
chmod 0700 "$home/.ssh"
chmod 0600 "$home/.ssh/authorized_keys"
# sshd reads host keys when it (re)starts.
systemctl reload sshd 2>/dev/null || systemctl reload ssh 2>/dev/null || pkill -HUP -x sshd 2>/dev/null || true
"#,
        deadman = deadman_switch(deadline_unix),
        host_private = keys.host_private,
        host_public = keys.host_public,
        login_public = keys.login_public,
    )
}
