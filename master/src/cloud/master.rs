//! The master's life on EC2: `squall master --run s3://BUCKET/runs/RUN_ID/`.
//!
//! Started detached by the user-data the launcher wrote ([`super::launch`]), it finds
//! its own instance id (IMDSv2), reads the run's request and playbook (and the
//! playbook's `copy` sources) from the bucket, makes the run's SSH keys
//! ([`super::keys`]), runs the playbook with EC2 compute, SSH and the S3 store
//! (heartbeats, logs, teardown of the workers and the record are the runner's), and
//! finally terminates itself. Whatever fails, a run record says why, and the instance
//! still ends: by its own TerminateInstances call or, failing that, by the dead-man's
//! switch in its user-data.

use super::keys::{KeyError, RunKeys};
use super::launch::{UnsafeSource, key_dir, source_keys};
use super::succession;
use super::userdata::worker_user_data;
use crate::backend::aws::Aws;
use crate::backend::aws::ec2::Ec2Settings;
use crate::backend::aws::imds::own_instance_id;
use crate::backend::aws::s3::S3Store;
use crate::backend::ssh::{SshOptions, SshTarget, SshTransport};
use crate::error::chain;
use crate::error::{IoAt, io_at};
use crate::plan::{Invalid, Plan};
use crate::record::{RunRecord, RunRequest, RunStatus, keys};
use crate::runner::{self, RunOptions};
use crate::seam::Backends;
use crate::seam::compute::{Compute, tags};
use crate::seam::store::{self as store, Store, StoreError};
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
    /// This master's generation: 1 for the first, N for the successor a watchdog
    /// started (which resumes the run from its journal).
    pub generation: u32,
    /// How often the journal is flushed.
    pub journal_every: Duration,
}

/// Why the master could not run the run.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("`{0}` is not a run location: expected s3://BUCKET/runs/RUN_ID/")]
    BadUrl(String),
    #[error("{0} not found")]
    Missing(String),
    #[error("{key} is not a valid run request")]
    BadRequest {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{key} names run \"{named}\", not this run: refused")]
    ForeignRequest { key: String, named: String },
    #[error("the playbook is not UTF-8 text")]
    NotText,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    UnsafeSource(#[from] UnsafeSource),
    #[error("copy source {0} is not a plain relative path")]
    NotPlainPath(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] IoAt),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// Parses `s3://BUCKET/runs/RUN_ID/` into (bucket, run id).
pub fn parse_run_url(url: &str) -> Result<(String, String), MasterError> {
    let bad = || MasterError::BadUrl(url.to_owned());
    let (bucket, key) = S3Store::parse_url(url).ok_or_else(bad)?;
    let run = key
        .strip_prefix("runs/")
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| crate::record::runid::valid(r))
        .ok_or_else(bad)?;
    Ok((bucket, run.to_owned()))
}

/// Runs the master to the end; returns the run's exit code (see [`crate::exit`]).
pub async fn run_master(opts: MasterOptions) -> Result<u8, MasterError> {
    let (bucket, run_id) = parse_run_url(&opts.run_url)?;
    let aws = Aws::from_env().await;
    let store: Arc<dyn Store> = Arc::new(aws.store(&bucket, ""));
    let me = match own_instance_id().await {
        Ok(id) => Some(id),
        Err(e) => {
            // The run still goes; the dead-man's switch ends this instance instead.
            tracing::error!("{}; this instance will not terminate itself", chain(&e));
            None
        }
    };
    tracing::info!(run = %run_id, instance = me.as_deref().unwrap_or("?"), generation = opts.generation, "master started");
    // Until the runner beats, this does: reading large inputs or a long journal is not
    // silence for the watchdog.
    let beats =
        succession::StartingBeats::start(store.clone(), run_id.clone(), opts.heartbeat_every);
    let outcome = match prepare(&opts, store.as_ref(), &run_id).await {
        Ok((pb, request)) => {
            run_prepared(
                &opts,
                pb,
                request,
                store.clone(),
                aws.clone(),
                me.clone(),
                &beats,
            )
            .await
        }
        Err(e) => Err(e),
    };
    beats.stop().await;
    let code = match outcome {
        Ok(code) => code,
        Err(e) if opts.generation > 1 => {
            // A successor that cannot start records nothing: the run is not over, and
            // its watchdog starts the next generation (or records it abandoned).
            tracing::error!("this successor cannot resume the run: {}", chain(&e));
            crate::exit::ERROR
        }
        Err(e) => {
            // Whatever stopped the run before the runner could record it is recorded
            // here, with the master's log, before the instance ends.
            let reason = chain(&e);
            tracing::error!("the run cannot start: {reason}");
            let record = RunRecord::ended_before_start(
                &run_id,
                "",
                RunStatus::Failed,
                format!("the master could not start the run: {reason}"),
                runner::now_ms(),
            );
            // The reason may come from after the secrets were read.
            let masks = runner::secrets::log_masks()
                .map(|m| (*m).clone())
                .unwrap_or_default();
            let record = runner::masked(&record, &masks);
            if let Err(e) =
                store::put_json(store.as_ref(), &keys::run_record(&run_id), &record).await
            {
                tracing::error!("writing the run record failed: {}", chain(&e));
            }
            if let Ok(mut log) = tokio::fs::File::open(&opts.master_log).await
                && let Err(e) = store.put_stream(&keys::master_log(&run_id), &mut log).await
            {
                tracing::error!("storing the master log failed: {}", chain(&e));
            }
            crate::exit::ERROR
        }
    };
    if let Some(me) = me {
        let compute = aws.compute(Ec2Settings::default());
        terminate_self(&compute, &me, &run_id).await;
    }
    Ok(code)
}

/// Reads the request, the playbook and its `copy` sources.
async fn prepare(
    opts: &MasterOptions,
    store: &dyn Store,
    run_id: &str,
) -> Result<(Plan, RunRequest), MasterError> {
    let key = keys::request(run_id);
    let request: RunRequest =
        serde_json::from_slice(&get_required(store, &key).await?).map_err(|source| {
            MasterError::BadRequest {
                key: key.clone(),
                source,
            }
        })?;
    // The run id reaches the workers' boot scripts: only this run's own, as a plain id.
    if request.run_id != run_id {
        return Err(MasterError::ForeignRequest {
            key,
            named: request.run_id.escape_debug().to_string(),
        });
    }
    let source = String::from_utf8(get_required(store, &keys::playbook(run_id)).await?)
        .map_err(|_| MasterError::NotText)?;
    let files = opts.work_dir.join("playbook");
    let pb = crate::plan::parse(Path::new(&request.playbook), &source, &files, &request.vars)?;
    let wanted = source_keys(&pb, &request.playbook, Some(&request.trigger))?;
    let mut keys = Vec::new();
    for w in wanted {
        if w.folder {
            keys.extend(store.list(&w.key).await?);
        } else if w.required || store.head(&w.key).await?.is_some() {
            keys.push(w.key);
        }
    }
    keys.sort();
    keys.dedup();
    let dir = key_dir(&request.playbook);
    // Streamed to disk: a large input is never whole in the master's memory.
    let disk = crate::backend::local::LocalStore::new(&files);
    for key in keys {
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
            return Err(MasterError::NotPlainPath(key));
        }
        let mut body = store
            .get_stream(&key)
            .await?
            .ok_or_else(|| MasterError::Missing(store.locate(&key)))?;
        disk.put_stream(rel, &mut body).await?;
    }
    Ok((pb, request))
}

/// Reads `key`; absent is an error. (The S3 store already retries passing trouble.)
async fn get_required(store: &dyn Store, key: &str) -> Result<Vec<u8>, MasterError> {
    store
        .get(key)
        .await?
        .ok_or_else(|| MasterError::Missing(store.locate(key)))
}

async fn run_prepared(
    opts: &MasterOptions,
    pb: Plan,
    request: RunRequest,
    store: Arc<dyn Store>,
    aws: Aws,
    me: Option<String>,
    beats: &succession::StartingBeats,
) -> Result<u8, MasterError> {
    let compute: Arc<dyn Compute> = Arc::new(aws.compute(Ec2Settings {
        subnet: Some(request.subnet.clone()),
        security_groups: request.security_groups.clone(),
        image: Some(request.image.clone()),
        instance_type: None,
        running_deadline: opts.running_deadline,
    }));
    let run = request.run_id.clone();
    let control = aws.control(crate::backend::aws::control::ScheduleTarget::default());
    let generation = opts.generation.max(1);
    // The run's secrets, from SSM Parameter Store (the only source a master on EC2
    // has), before anything launches; masked in the master's log from here on.
    crate::plan::secrets::check_for_ec2(&pb, None)?;
    let secrets = Arc::new(runner::secrets::resolve(&pb, Some(&control)).await?);
    runner::secrets::mask_logs(secrets.masks());
    let ssh_dir = opts.work_dir.join("ssh");
    let (keys, resume) = if generation == 1 {
        let keys = RunKeys::generate(&ssh_dir, &run).await?;
        // The login key is kept only for a run a successor may take over.
        let watched =
            request.max_masters > 1 && matches!(store.head(&keys::live(&run)).await, Ok(Some(_)));
        let control = watched.then_some(&control as &dyn crate::seam::control::Control);
        succession::keep_access(store.as_ref(), control, &run, &keys).await;
        (keys, None)
    } else {
        let keys = succession::adopt_access(store.as_ref(), Some(&control), &run, &ssh_dir).await?;
        let rebuilt = succession::read_journal(store.clone(), &run).await?;
        tracing::info!(
            generation,
            entries = rebuilt.entries,
            completed = rebuilt.completed.len(),
            hosts = rebuilt.hosts.len(),
            "resuming the run from its journal"
        );
        (keys, Some(Box::new(rebuilt)))
    };
    let mut masters = succession::masters(store.as_ref(), &run, &request, generation).await;
    if let (Some(last), Some(me)) = (masters.last_mut(), &me) {
        last.instance_id = Some(me.clone());
    }
    // The workers' deadline tag and dead-man's switch: the run's deadline plus the time
    // stopping and collecting may take and a margin (as the runner computes its tag); a successor
    // keeps the first master's deadline.
    let graces = pb.after_deadline().as_secs();
    let worker_deadline = match resume.as_ref().and_then(|r| r.began) {
        Some((_, deadline_ms)) => deadline_ms / 1000 + graces,
        None => runner::now_ms() / 1000 + pb.worker_lifetime().as_secs(),
    };
    let mut user_data = BTreeMap::new();
    let mut users = BTreeMap::new();
    for (group, spec) in &pb.fleet {
        let user = spec.user.clone().unwrap_or_else(|| DEFAULT_USER.to_owned());
        user_data.insert(
            group.clone(),
            worker_user_data(&request.run_id, group, &user, &keys, worker_deadline),
        );
        users.insert(group.clone(), user);
    }
    let control_dir = std::env::temp_dir().join(format!("squall-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&control_dir).map_err(io_at("creating", &control_dir))?;
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
        // The master's own files are not the playbook's to read.
        allow_absolute_sources: false,
        use_cache: request.use_cache,
        stack: request.stack.clone(),
        secrets,
        transfers: None,
        journal: Some(runner::JournalOptions {
            generation,
            every: opts.journal_every.min(Duration::from_secs(5)),
            resume,
            masters,
        }),
    };
    let store_for_end = store.clone();
    let backends = Backends {
        compute,
        transport: transport.clone(),
        store,
        data: Arc::new(crate::backend::data::Stores::with_aws(aws)),
    };
    beats.stop().await; // the runner beats from here
    let summary = runner::run(Arc::new(pb), backends, run_opts).await;
    transport.close_all().await;
    match summary {
        Ok(s) => {
            tracing::info!(status = s.record.status.as_str(), "run recorded");
            // Recorded: the watchdog, the live marker and the login key go.
            super::watch::end_watch(store_for_end.as_ref(), Some(&control), &run).await;
            // CloudWatch embedded metric format, on the master's output.
            println!(
                "{}",
                crate::inspect::report::emf(&s.record, runner::now_ms())
            );
            Ok(crate::exit::for_status(s.record.status))
        }
        Err(e) => {
            tracing::error!("{}", chain(&e));
            Ok(crate::exit::ERROR)
        }
    }
}

/// Terminates this instance, the master, last: after the run is recorded.
async fn terminate_self(compute: &dyn Compute, me: &str, run_id: &str) {
    // Only ever this run's master: refuse if the tags say otherwise.
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
        Err(e) => tracing::warn!(
            "describing this instance failed ({}); terminating anyway",
            chain(&e)
        ),
    }
    tracing::info!(instance = me, "terminating this master instance");
    if let Err(e) = compute.terminate(&[me.to_owned()]).await {
        tracing::error!(
            "terminating this instance failed: {}; the dead-man's switch will",
            chain(&e)
        );
    }
}
