//! The runner: drives an [`Engine`] with real IO through the `Compute`, `Transport` and
//! `Store` seams.
//!
//! Each action runs as its own tokio task in one `JoinSet` (a task's panic is logged,
//! never lost) and reports back as an event on one channel. A one-second tick feeds
//! deadlines and timeouts; Ctrl-C and SIGTERM become a cancel. Whatever happens, the
//! run ends with logs collected, instances torn down by tag and a record written. The
//! decisions themselves (what to run where, when to retry, when to stop) are the
//! engine's, not this module's.

use crate::compute::{self, Compute, Instance, InstanceState, LaunchRequest, tags};
use crate::engine::{Action, Engine, Event, HostId, TaskCommand, TaskKey, TaskResult};
use crate::playbook::{FleetGroup, Loaded};
use crate::progress::ProgressView;
use crate::record::{Heartbeat, RunRecord, TaskOutcome};
use crate::store::{Store, keys};
use crate::transport::{Transport, TransportError};
use squall_worker::{Request, TaskState, TaskStatus, exit as agent_exit};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Where the agent lives on every host, relative to the login home.
pub const AGENT_PATH: &str = ".squall/bin/squall-worker";

/// Everything one run leaves on a host, relative to the login home.
pub fn run_dir(run_id: &str) -> String {
    format!(".squall/runs/{run_id}")
}

/// The agent's root for one run on one host, relative to the login home: one root per
/// run keeps task ids apart on hosts that serve many runs (a static inventory), and one
/// per instance keeps hosts apart where they share a home (e.g. one NFS home).
pub fn agent_root(run_id: &str, instance_id: &str) -> String {
    format!("{}/{instance_id}", run_dir(run_id))
}

/// The seams a run uses.
#[derive(Debug, Clone)]
pub struct Backends {
    pub compute: Arc<dyn Compute>,
    pub transport: Arc<dyn Transport>,
    pub store: Arc<dyn Store>,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub run_id: String,
    /// What started the run, for `trigger.*` and the record.
    pub trigger: BTreeMap<String, serde_json::Value>,
    /// The `squall-worker` binary to install on hosts.
    pub agent_binary: PathBuf,
    /// Seconds of each long-poll `wait` on a task (bounds how fast a lost host is seen).
    pub wait_poll_secs: u64,
    /// How often `status.json` is rewritten.
    pub heartbeat_every: Duration,
    /// Show a live progress bar (a terminal) instead of log lines.
    pub progress_bar: bool,
    /// The master's own log file, packed into `logs/master.tar.gz` at the end.
    pub master_log: Option<PathBuf>,
    /// Listen for Ctrl-C and SIGTERM.
    pub handle_signals: bool,
    /// Boot script of each fleet group's instances (none when absent).
    pub worker_user_data: BTreeMap<String, String>,
    /// Store a snapshot of every live host's logs this often while the stages run, so
    /// a host lost later loses at most this much (plus one snapshot's duration).
    pub snapshot_every: Option<Duration>,
}

/// What a finished run left behind.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub record: RunRecord,
    /// Where the record is, for people.
    pub record_location: String,
    /// Where the HTML report is, for people.
    pub report_location: String,
    /// Where each archive is, for people (host name, location).
    pub archives: Vec<(String, String)>,
}

/// Errors that stop a run before it can even be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// writing the run record failed
    #[error("failed to write the run record {key}: {detail}")]
    Record { key: String, detail: String },
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The action tasks of a run, each with the event that stands in for it if it panics:
/// the engine always hears back, so a panic cannot hang the run.
#[derive(Debug, Default)]
struct Jobs {
    set: JoinSet<()>,
    fallbacks: std::collections::HashMap<tokio::task::Id, Event>,
}

impl Jobs {
    fn spawn(&mut self, fallback: Option<Event>, job: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(job);
        if let Some(ev) = fallback {
            self.fallbacks.insert(handle.id(), ev);
        }
    }

    /// The next job to end; `Some(event)` when it panicked and has a stand-in event.
    async fn next(&mut self) -> Option<Option<Event>> {
        let joined = self.set.join_next_with_id().await?;
        Some(match joined {
            Ok((id, ())) => {
                self.fallbacks.remove(&id);
                None
            }
            Err(e) => {
                let fallback = self.fallbacks.remove(&e.id());
                if e.is_panic() {
                    tracing::error!("an action task panicked: {e}");
                    fallback
                } else {
                    None
                }
            }
        })
    }
}

/// Shared state of the action tasks.
#[derive(Debug)]
struct Ctx {
    b: Backends,
    opts: RunOptions,
    /// sha256 of the agent binary, hex: an up-to-date agent is not uploaded again.
    agent_sha256: Option<String>,
    deadline_tag: String,
    tx: mpsc::UnboundedSender<Event>,
    /// Why the run record could not be written, if it could not.
    record_error: std::sync::Mutex<Option<String>>,
}

/// Runs `pb` to the end: provision, stages, collect, teardown, record.
pub async fn run(pb: Arc<Loaded>, b: Backends, opts: RunOptions) -> Result<RunSummary, RunError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut engine = Engine::new(
        pb.clone(),
        opts.run_id.clone(),
        opts.trigger.clone(),
        now_ms(),
    );
    // Instances may be swept once the run's deadline and its collect/teardown grace
    // have passed.
    let grace = (pb.stop_grace() + pb.collect_grace()).as_secs();
    let deadline_tag = (engine.deadline_at_ms() / 1000 + grace).to_string();
    let agent_sha256 = file_sha256(&opts.agent_binary).await;
    let ctx = Arc::new(Ctx {
        b: b.clone(),
        opts: opts.clone(),
        agent_sha256,
        deadline_tag,
        tx,
        record_error: std::sync::Mutex::new(None),
    });
    let mut hosts: Vec<Instance> = Vec::new();
    let mut jobs = Jobs::default();
    let mut view = ProgressView::new(opts.progress_bar, &pb.playbook.name.value, &opts.run_id);
    tracing::info!(run = %opts.run_id, playbook = %pb.file.display(), "run started");
    put_heartbeat(&b, &engine).await;

    let first = engine.start();
    dispatch(&ctx, &engine, &mut hosts, &mut jobs, first);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut signals = Signals::new(opts.handle_signals);
    // A zero interval means no snapshots (tokio's interval cannot tick every 0 s).
    let snapshot_every = opts.snapshot_every.filter(|d| !d.is_zero());
    let mut snapshot_tick = tokio::time::interval(snapshot_every.unwrap_or(Duration::MAX / 4));
    snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    snapshot_tick.tick().await;
    let snapshotting = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut last_beat = std::time::Instant::now();
    let mut last_phase = engine.phase();
    let mut last_stage = None;
    while !engine.is_done() {
        let event = tokio::select! {
            Some(ev) = rx.recv() => ev,
            _ = tick.tick() => Event::Tick,
            _ = snapshot_tick.tick(), if snapshot_every.is_some() => {
                snapshot_logs(&ctx, &engine, &hosts, &mut jobs, &snapshotting);
                continue;
            }
            reason = signals.next() => {
                tracing::warn!("{reason}: stopping the run (logs are still collected and instances torn down)");
                Event::Cancel { reason: format!("cancelled by {reason}") }
            }
            Some(ended) = jobs.next() => match ended {
                Some(stand_in) => stand_in,
                None => continue,
            },
        };
        if let Event::Launched { instances, .. } = &event {
            hosts.extend(instances.iter().cloned());
        }
        log_event(&engine, &event);
        let actions = engine.handle(now_ms(), event);
        dispatch(&ctx, &engine, &mut hosts, &mut jobs, actions);
        view.update(&engine.progress());
        let stage = engine.progress().stage;
        if engine.phase() != last_phase
            || stage != last_stage
            || last_beat.elapsed() >= opts.heartbeat_every
        {
            last_phase = engine.phase();
            last_stage = stage;
            last_beat = std::time::Instant::now();
            put_heartbeat(&b, &engine).await;
        }
    }
    jobs.set.abort_all();
    while jobs.set.join_next().await.is_some() {}
    view.finish();

    // Belt and braces: a launch that finished after teardown must not leave anything.
    if let Err(e) = compute::teardown_workers(b.compute.as_ref(), &opts.run_id).await {
        tracing::error!("final teardown check failed: {e}");
    }
    if let Some(e) = ctx.record_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(RunError::Record {
            key: keys::run_record(&opts.run_id),
            detail: e,
        });
    }
    let record = engine.record();
    tracing::info!(
        status = record.status.as_str(),
        reason = record.reason.as_deref().unwrap_or(""),
        "run ended"
    );
    put_heartbeat(&b, &engine).await;
    if let Some(log) = &opts.master_log {
        let key = keys::log_archive(&opts.run_id, "master");
        if let Err(e) = put_master_log(b.store.as_ref(), &key, log).await {
            tracing::error!("storing the master log failed: {e}");
        }
    }
    // The report reads the failures' stderr from the archives just stored.
    let tails = crate::inspect::stderr_tails(b.store.as_ref(), &record, 20).await;
    let html = crate::report::render(&record, &tails);
    if let Err(e) = b
        .store
        .put(&keys::report(&opts.run_id), html.into_bytes())
        .await
    {
        tracing::error!("storing the report failed: {e}");
    }
    let archives = record
        .hosts
        .iter()
        .filter_map(|h| {
            h.archive
                .as_ref()
                .map(|k| (h.name.clone(), b.store.locate(k)))
        })
        .chain(opts.master_log.iter().map(|_| {
            (
                "master".to_owned(),
                b.store.locate(&keys::log_archive(&opts.run_id, "master")),
            )
        }))
        .collect();
    Ok(RunSummary {
        report_location: b.store.locate(&keys::report(&opts.run_id)),
        record_location: b.store.locate(&keys::run_record(&opts.run_id)),
        record,
        archives,
    })
}

fn log_event(engine: &Engine, event: &Event) {
    let name = |h: HostId| {
        engine
            .host_instance(h)
            .map_or("?", |(n, _, _)| n)
            .to_owned()
    };
    match event {
        Event::TaskFinished { key, host, result } if result.outcome != TaskOutcome::Succeeded => {
            tracing::warn!(
                host = %name(*host),
                task = %key.agent_id(),
                outcome = ?result.outcome,
                exit_code = ?result.exit_code,
                error = result.error.as_deref().unwrap_or(""),
                "task did not succeed"
            );
        }
        Event::TaskFinished { key, host, .. } => {
            tracing::info!(host = %name(*host), task = %key.agent_id(), "task succeeded");
        }
        Event::HostLost { host, reason } => {
            tracing::warn!(host = %name(*host), "host lost: {reason}");
        }
        Event::LaunchFailed { group, error } => {
            tracing::error!("launch of `{group}` failed: {error}")
        }
        Event::BootstrapFailed { host, error } => {
            tracing::warn!(host = %name(*host), "bootstrap failed: {error}");
        }
        Event::LogsCollected {
            host,
            result: Err(e),
        } => {
            tracing::warn!(host = %name(*host), "log collection failed: {e}");
        }
        Event::TornDown { result: Err(e) } => tracing::error!("teardown failed: {e}"),
        _ => {}
    }
}

async fn put_heartbeat(b: &Backends, engine: &Engine) {
    let p = engine.progress();
    let rec = engine.record();
    let beat = Heartbeat {
        run_id: engine.run_id().to_owned(),
        phase: p.phase,
        stage: p.stage,
        hosts_live: p.hosts_live,
        hosts_total: p.hosts_total,
        shards_done: rec.stages.iter().map(|s| s.shards_done).sum(),
        shards_total: rec.stages.iter().map(|s| s.shards_total).sum(),
        updated_at_ms: now_ms(),
        started_at_ms: rec.started_at_ms,
        playbook: rec.playbook.name.clone(),
        stages: rec.stages.clone(),
        hosts: engine.host_beats(),
    };
    let key = keys::status(engine.run_id());
    match serde_json::to_vec_pretty(&beat) {
        Ok(body) => {
            if let Err(e) = b.store.put(&key, body).await {
                tracing::warn!("heartbeat not written: {e}");
            }
        }
        Err(e) => tracing::warn!("heartbeat not serialized: {e}"),
    }
}

fn dispatch(
    ctx: &Arc<Ctx>,
    engine: &Engine,
    hosts: &mut [Instance],
    jobs: &mut Jobs,
    actions: Vec<Action>,
) {
    for action in actions {
        let ctx = ctx.clone();
        let host_of = |h: HostId| hosts.get(h).cloned();
        match action {
            Action::Launch { group, spec } => {
                let stand_in = Event::LaunchFailed {
                    group: group.clone(),
                    error: "internal error: the launch task panicked".into(),
                };
                jobs.spawn(
                    Some(stand_in),
                    async move { launch(&ctx, group, spec).await },
                );
            }
            Action::Bootstrap { host } => {
                let Some(inst) = host_of(host) else { continue };
                let stand_in = Event::BootstrapFailed {
                    host,
                    error: "internal error: the bootstrap task panicked".into(),
                };
                jobs.spawn(
                    Some(stand_in),
                    async move { bootstrap(&ctx, host, inst).await },
                );
            }
            Action::StartTask {
                key,
                host,
                name,
                command,
            } => {
                let Some(inst) = host_of(host) else { continue };
                let host_name = engine.host_instance(host).map_or("?", |(n, _, _)| n);
                tracing::info!(host = %host_name, task = %key.agent_id(), "starting `{name}`");
                let now = now_ms();
                let stand_in = Event::TaskFinished {
                    key,
                    host,
                    result: TaskResult::without_exit(
                        TaskOutcome::Failed,
                        Some("internal error: the task's driver panicked".into()),
                        now,
                        now,
                    ),
                };
                jobs.spawn(Some(stand_in), async move {
                    run_task(&ctx, key, host, inst, command).await;
                });
            }
            Action::CancelTask { key, host } => {
                let Some(inst) = host_of(host) else { continue };
                jobs.spawn(None, async move { cancel_task(&ctx, key, inst).await });
            }
            Action::CollectLogs { host } => {
                let Some(inst) = host_of(host) else { continue };
                let name = engine
                    .host_instance(host)
                    .map_or_else(|| inst.id.clone(), |(n, _, _)| n.to_owned());
                let stand_in = Event::LogsCollected {
                    host,
                    result: Err("internal error: log collection panicked".into()),
                };
                jobs.spawn(Some(stand_in), async move {
                    collect_logs(&ctx, host, name, inst).await;
                });
            }
            Action::Teardown => {
                let stand_in = Event::TornDown {
                    result: Err("internal error: teardown panicked".into()),
                };
                jobs.spawn(Some(stand_in), async move {
                    let teardown =
                        compute::teardown_workers(ctx.b.compute.as_ref(), &ctx.opts.run_id);
                    let r = match tokio::time::timeout(TEARDOWN_TIMEOUT, teardown).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(format!(
                            "teardown did not finish within {}s",
                            TEARDOWN_TIMEOUT.as_secs()
                        )),
                    };
                    let _ = ctx.tx.send(Event::TornDown { result: r });
                });
            }
            Action::WriteRecord(record) => {
                jobs.spawn(Some(Event::RecordWritten), async move {
                    if let Err(e) = write_record(ctx.b.store.as_ref(), &record).await {
                        tracing::error!("{e}");
                        if let Ok(mut slot) = ctx.record_error.lock() {
                            *slot = Some(e.to_string());
                        }
                    }
                    let _ = ctx.tx.send(Event::RecordWritten);
                });
            }
        }
    }
}

async fn launch(ctx: &Ctx, group: String, spec: FleetGroup) {
    let run_id = &ctx.opts.run_id;
    let req = LaunchRequest {
        run_id: run_id.clone(),
        group: group.clone(),
        tags: BTreeMap::from([
            (tags::RUN.to_owned(), run_id.clone()),
            (tags::ROLE.to_owned(), "worker".to_owned()),
            (tags::GROUP.to_owned(), group.clone()),
            (tags::DEADLINE.to_owned(), ctx.deadline_tag.clone()),
        ]),
        user_data: ctx
            .opts
            .worker_user_data
            .get(&group)
            .cloned()
            .unwrap_or_default(),
        client_token: client_token(run_id, &group),
        instance_profile: None,
        spec: spec.clone(),
    };
    let event = match ctx.b.compute.launch(&req).await {
        Ok(instances) if instances.len() as u32 >= spec.min() => {
            Event::Launched { group, instances }
        }
        Ok(instances) => Event::LaunchFailed {
            error: format!(
                "only {} of the {} required instances started",
                instances.len(),
                spec.min()
            ),
            group,
        },
        Err(e) => Event::LaunchFailed {
            group,
            error: e.to_string(),
        },
    };
    let _ = ctx.tx.send(event);
}

/// The idempotency token of a group's launch (at most 64 characters, as EC2 wants).
pub fn client_token(run_id: &str, group: &str) -> String {
    let token = format!("{run_id}/{group}");
    if token.len() <= 64 {
        return token;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest.iter().take(32).map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a local file, hex; None when it cannot be read (then the agent is always
/// uploaded, and the upload reports the error).
async fn file_sha256(path: &std::path::Path) -> Option<String> {
    use sha2::Digest;
    let bytes = tokio::fs::read(path).await.ok()?;
    Some(
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Installs the agent unless the host already has this exact binary.
async fn bootstrap(ctx: &Ctx, host: HostId, inst: Instance) {
    let check = ["sha256sum".to_owned(), AGENT_PATH.to_owned()];
    let up_to_date = match (&ctx.agent_sha256, ctx.b.transport.run(&inst, &check).await) {
        (Some(want), Ok(out)) => {
            out.code == Some(0) && String::from_utf8_lossy(&out.stdout).starts_with(want.as_str())
        }
        _ => false,
    };
    let r = if up_to_date {
        tracing::info!(host = %inst.id, "agent already installed");
        Ok(())
    } else {
        ctx.b
            .transport
            .put_file(&inst, &ctx.opts.agent_binary, AGENT_PATH, 0o755)
            .await
    };
    let event = match r {
        Ok(()) => Event::Bootstrapped { host },
        Err(e) => Event::BootstrapFailed {
            host,
            error: e.to_string(),
        },
    };
    let _ = ctx.tx.send(event);
}

fn agent_argv(ctx: &Ctx, inst: &Instance, req: &Request) -> Vec<String> {
    req.argv(AGENT_PATH, &agent_root(&ctx.opts.run_id, &inst.id))
}

/// Parses the last JSON line an agent printed.
fn parse_status(stdout: &[u8]) -> Option<TaskStatus> {
    String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
}

async fn run_task(ctx: &Ctx, key: TaskKey, host: HostId, inst: Instance, command: TaskCommand) {
    let started = now_ms();
    let event = match command {
        TaskCommand::Copy { src, dest, mode } => {
            let r = ctx.b.transport.put_file(&inst, &src, &dest, mode).await;
            match r {
                Err(e) if e.is_unreachable() => Event::HostLost {
                    host,
                    reason: e.to_string(),
                },
                r => Event::TaskFinished {
                    key,
                    host,
                    result: TaskResult::without_exit(
                        if r.is_ok() {
                            TaskOutcome::Succeeded
                        } else {
                            TaskOutcome::Failed
                        },
                        r.err().map(|e| e.to_string()),
                        started,
                        now_ms(),
                    ),
                },
            }
        }
        TaskCommand::Exec(spec) => match exec_task(ctx, &inst, spec).await {
            Ok(status) => Event::TaskFinished {
                key,
                host,
                result: to_result(&status, started),
            },
            Err(TaskError::HostLost(reason)) => Event::HostLost { host, reason },
            Err(TaskError::Failed(error)) => Event::TaskFinished {
                key,
                host,
                result: TaskResult::without_exit(
                    TaskOutcome::Failed,
                    Some(error),
                    started,
                    now_ms(),
                ),
            },
        },
    };
    let _ = ctx.tx.send(event);
}

enum TaskError {
    HostLost(String),
    Failed(String),
}

/// How many times in a row a command to the agent may fail before the task is failed.
const AGENT_ERRORS_TOLERATED: u32 = 3;

/// Starts the task through the agent and long-polls it to its end. Re-attaches by task
/// id after a failed call (`start` is idempotent), so a dropped connection costs nothing.
async fn exec_task(
    ctx: &Ctx,
    inst: &Instance,
    spec: squall_worker::TaskSpec,
) -> Result<TaskStatus, TaskError> {
    let id = spec.id.clone();
    // `start` also waits, so a short task costs one round trip.
    let start = agent_argv(
        ctx,
        inst,
        &Request::Start {
            spec,
            wait_secs: ctx.opts.wait_poll_secs,
        },
    );
    let wait = agent_argv(
        ctx,
        inst,
        &Request::Wait {
            id: id.clone(),
            timeout_secs: ctx.opts.wait_poll_secs,
        },
    );
    let mut started = false;
    let mut errors = 0;
    loop {
        let argv = if started { &wait } else { &start };
        let result = ctx.b.transport.run(inst, argv).await;
        let failure = match result {
            Err(e) if e.is_unreachable() => return Err(TaskError::HostLost(e.to_string())),
            Err(e) => e.to_string(),
            Ok(out) => match (out.code, parse_status(&out.stdout)) {
                (Some(agent_exit::OK), Some(status)) if status.state.is_final() => {
                    if status.error.as_deref() == Some(squall_worker::SUPERVISOR_VANISHED)
                        && host_down(ctx, inst).await
                    {
                        return Err(TaskError::HostLost(
                            "the host went down during the task".into(),
                        ));
                    }
                    return Ok(status);
                }
                (Some(agent_exit::OK | agent_exit::STILL_RUNNING), Some(_)) => {
                    started = true;
                    errors = 0;
                    continue;
                }
                (code, _) => format!(
                    "the agent on {} answered {} to `{}`: {}",
                    inst.id,
                    code.map_or("a signal".to_owned(), |c| format!("exit code {c}")),
                    argv.join(" "),
                    out.stderr_tail()
                ),
            },
        };
        if host_down(ctx, inst).await {
            return Err(TaskError::HostLost(failure));
        }
        errors += 1;
        if errors > AGENT_ERRORS_TOLERATED {
            if started {
                // It may still run: stop it, so that a retry never runs beside it.
                let cancel = agent_argv(
                    ctx,
                    inst,
                    &Request::Cancel {
                        id: id.clone(),
                        grace_secs: 5,
                    },
                );
                let _ = ctx.b.transport.run(inst, &cancel).await;
            }
            return Err(TaskError::Failed(failure));
        }
        tracing::warn!(host = %inst.id, task = %id, "retrying after: {failure}");
        tokio::time::sleep(Duration::from_millis(250 << errors)).await;
    }
}

/// Whether the provider says the instance is gone, or the host does not answer.
async fn host_down(ctx: &Ctx, inst: &Instance) -> bool {
    match ctx.b.compute.describe(std::slice::from_ref(&inst.id)).await {
        Ok(found) => found
            .first()
            .is_none_or(|i| i.state != InstanceState::Running),
        Err(_) => false,
    }
}

fn to_result(s: &TaskStatus, fallback_start: u64) -> TaskResult {
    let outcome = match s.state {
        TaskState::Exited if s.exit_code == Some(0) => TaskOutcome::Succeeded,
        TaskState::TimedOut => TaskOutcome::TimedOut,
        TaskState::Cancelled => TaskOutcome::Cancelled,
        _ => TaskOutcome::Failed,
    };
    let started = s.started_at_ms.unwrap_or(fallback_start);
    TaskResult {
        outcome,
        exit_code: s.exit_code,
        signal: s.signal,
        error: s.error.clone(),
        started_at_ms: started,
        ended_at_ms: s.ended_at_ms.unwrap_or_else(now_ms).max(started),
    }
}

/// How long a cancel keeps trying while the task is still being created.
const CANCEL_RETRY_FOR: Duration = Duration::from_secs(10);

async fn cancel_task(ctx: &Ctx, key: TaskKey, inst: Instance) {
    let argv = agent_argv(
        ctx,
        &inst,
        &Request::Cancel {
            id: key.agent_id(),
            grace_secs: 10,
        },
    );
    let started = std::time::Instant::now();
    loop {
        match ctx.b.transport.run(&inst, &argv).await {
            Ok(out) if out.code == Some(agent_exit::OK) => return,
            // The cancel overtook the start: the task folder does not exist yet.
            Ok(out)
                if out.code == Some(agent_exit::UNKNOWN_TASK)
                    && started.elapsed() < CANCEL_RETRY_FOR =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(out) => {
                tracing::warn!(host = %inst.id, task = %key.agent_id(), "cancel answered {:?}: {}", out.code, out.stderr_tail());
                return;
            }
            Err(e) => {
                tracing::warn!(host = %inst.id, task = %key.agent_id(), "cancel failed: {e}");
                return;
            }
        }
    }
}

/// How long terminating the run's instances may take before the run is recorded
/// anyway (instances past their deadline are still swept later).
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(600);

/// How long packing and storing one host's logs may take.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(240);

/// Starts a snapshot of each live host's logs that has none in flight.
fn snapshot_logs(
    ctx: &Arc<Ctx>,
    engine: &Engine,
    hosts: &[Instance],
    jobs: &mut Jobs,
    in_flight: &Arc<std::sync::Mutex<std::collections::BTreeSet<HostId>>>,
) {
    for (host, name) in engine.snapshot_hosts() {
        let Some(inst) = hosts.get(host).cloned() else {
            continue;
        };
        let fresh = in_flight
            .lock()
            .map(|mut s| s.insert(host))
            .unwrap_or(false);
        if !fresh {
            continue;
        }
        let ctx = ctx.clone();
        let in_flight = in_flight.clone();
        jobs.spawn(None, async move {
            let key = keys::log_snapshot(&ctx.opts.run_id, &name);
            let r = tokio::time::timeout(COLLECT_TIMEOUT, pipe_to_store(&ctx, &inst, &key)).await;
            match r {
                Ok(Ok(_)) => {
                    let _ = ctx.tx.send(Event::LogsSnapshotted { host, key });
                }
                Ok(Err(e)) => tracing::debug!(host = %name, "log snapshot failed: {e}"),
                Err(_) => tracing::debug!(host = %name, "log snapshot timed out"),
            }
            if let Ok(mut s) = in_flight.lock() {
                s.remove(&host);
            }
        });
    }
}

async fn collect_logs(ctx: &Ctx, host: HostId, name: String, inst: Instance) {
    let key = keys::log_archive(&ctx.opts.run_id, &name);
    let r = tokio::time::timeout(COLLECT_TIMEOUT, pipe_to_store(ctx, &inst, &key))
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {}s", COLLECT_TIMEOUT.as_secs())));
    let _ = ctx.tx.send(Event::LogsCollected {
        host,
        result: r.map(|_| key),
    });
}

/// Streams the agent's `pack` output straight into the store, in constant memory. The
/// object is only kept if the whole archive arrived.
async fn pipe_to_store(ctx: &Ctx, inst: &Instance, key: &str) -> Result<u64, String> {
    let (writer, reader) = tokio::io::duplex(1 << 16);
    let ok = Arc::new(AtomicBool::new(false));
    let mut reader = FailUnlessComplete {
        inner: reader,
        ok: ok.clone(),
    };
    let argv = agent_argv(ctx, inst, &Request::Pack);
    let pull = async move {
        let mut writer = writer;
        let r = ctx.b.transport.stream(inst, &argv, &mut writer).await;
        if r.is_ok() {
            ok.store(true, Ordering::SeqCst);
        }
        let _ = writer.shutdown().await;
        r
    };
    // The reader is dropped as soon as the store gives up, so the producer sees a broken
    // pipe instead of blocking on a full buffer until the collect timeout.
    let store = async move { ctx.b.store.put_stream(key, &mut reader).await };
    let (pulled, stored) = tokio::join!(pull, store);
    pulled.map_err(|e: TransportError| e.to_string())?;
    stored.map_err(|e| e.to_string())
}

/// A reader that turns end-of-stream into an error unless the producer said it
/// finished, so a cut-off archive is never stored as if whole.
struct FailUnlessComplete<R> {
    inner: R,
    ok: Arc<AtomicBool>,
}

impl<R: AsyncRead + Unpin> AsyncRead for FailUnlessComplete<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(()))
                if buf.filled().len() == before && !this.ok.load(Ordering::SeqCst) =>
            {
                Poll::Ready(Err(std::io::Error::other("the archive stream ended early")))
            }
            other => other,
        }
    }
}

async fn write_record(store: &dyn Store, record: &RunRecord) -> Result<(), RunError> {
    let key = keys::run_record(&record.run_id);
    let body = serde_json::to_vec_pretty(record).map_err(|e| RunError::Record {
        key: key.clone(),
        detail: e.to_string(),
    })?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        match store.put(&key, body.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    Err(RunError::Record { key, detail: last })
}

/// Packs the master's log file as `master.log` in a tar.gz and stores it.
async fn put_master_log(store: &dyn Store, key: &str, log: &std::path::Path) -> Result<(), String> {
    let log = log.to_owned();
    let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(enc);
        tar.append_path_with_name(&log, "master.log")?;
        tar.into_inner()?.finish()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    store.put(key, bytes).await.map_err(|e| e.to_string())
}

/// Ctrl-C and SIGTERM as a stream of reasons; pending forever when disabled.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new(enabled: bool) -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        if !enabled {
            return Signals {
                term: None,
                int: None,
            };
        }
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn next(&mut self) -> &'static str {
        let int = async {
            match &mut self.int {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let term = async {
            match &mut self.term {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int => "Ctrl-C",
            _ = term => "SIGTERM",
        }
    }
}
