//! The runner: drives an [`Engine`] with real IO through the `Compute`, `Transport` and
//! `Store` seams.
//!
//! Each action runs as a job ([`jobs`]) and reports back as an event on one channel; a
//! one-second tick feeds deadlines, timeouts, snapshots and heartbeats; Ctrl-C and
//! SIGTERM become a cancel. Whatever happens, the run ends with logs collected,
//! instances torn down by tag and a record written. The decisions themselves (what to
//! run where, when to retry, when to stop, which hosts to snapshot, when to write a
//! heartbeat) are the engine's, not this module's. The agent client is [`agent`],
//! moving data (copies, fetches, listings, the cache) [`data`], moving logs into the
//! store [`logs`], what people see while it runs [`progress`]; what is checked before
//! anything launches, [`preflight`].

pub mod adopt;
pub mod agent;
pub mod cache;
pub mod data;
mod dispatch;
pub mod fleet;
pub mod jobs;
pub mod journal;
pub mod listing;
pub mod logs;
pub mod preflight;
pub mod progress;
pub mod secrets;
pub mod slots;

use crate::engine::{DataOptions, Engine, EngineOptions, Event, HostId, LaunchedInstance};
use crate::error::chain;
use crate::plan::Plan;
use crate::record::{RunRecord, TaskOutcome, keys};
use crate::seam::Backends;
use crate::seam::compute::{self, Instance};
use crate::seam::store::StoreError;
use dispatch::dispatch;
use jobs::{Jobs, Signals};
use progress::ProgressView;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

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
    /// Whether `copy` may read absolute local paths (not on an EC2 master).
    pub allow_absolute_sources: bool,
    /// Whether cached stages reuse earlier items (`--no-cache` turns it off; entries
    /// are still written).
    pub use_cache: bool,
    /// Keep the run's journal (a master on EC2), and resume from it (a successor).
    pub journal: Option<JournalOptions>,
    /// The stack every instance is tagged with (`squall:stack`), on AWS.
    pub stack: Option<String>,
    /// The run's secret values (masked in everything the run stores or logs).
    pub secrets: Arc<crate::plan::secrets::Secrets>,
    /// How many transfers move at once (none: sized from this machine, see [`slots`]).
    pub transfers: Option<usize>,
}

/// The journal of a run a successor master may resume.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// This master's generation (1 for the first).
    pub generation: u32,
    /// How often the journal is flushed.
    pub every: Duration,
    /// What earlier generations journaled (a successor).
    pub resume: Option<Box<crate::engine::resume::Rebuilt>>,
    /// The run's masters so far, this one last, for the record.
    pub masters: Vec<crate::record::journal::MasterRecord>,
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
    /// a successor master took the run over
    #[error("master generation {0} took the run over: this master stopped without tearing down")]
    Fenced(u32),
    /// writing the run record failed
    #[error("failed to write the run record {key}")]
    Record {
        key: String,
        #[source]
        source: StoreError,
    },
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a job reports on the runner's channel.
#[derive(Debug)]
enum Report {
    /// A group (or one replacement of host `replaces`) was launched: the runner keeps
    /// the instances, the engine learns of them.
    Launched {
        group: String,
        instances: Vec<Instance>,
        replaces: Option<HostId>,
    },
    Event(Event),
}

/// Shared state of the action jobs.
#[derive(Debug)]
pub struct Ctx {
    b: Backends,
    opts: RunOptions,
    /// sha256 of the agent binary, hex: an up-to-date agent is not uploaded again.
    agent_sha256: Option<String>,
    deadline_tag: String,
    tx: mpsc::UnboundedSender<Report>,
    /// Why the run record could not be written, if it could not.
    record_error: Mutex<Option<StoreError>>,
    /// The playbook's folder, absolute (listed local files are named relative to it).
    base_dir: PathBuf,
    /// Bounds the cache's lookups and writes toward the store.
    store_slots: Arc<tokio::sync::Semaphore>,
    /// Bounds the transfers (log archives, copies, fetches) moving at once.
    transfers: Arc<tokio::sync::Semaphore>,
    /// Half the transfer slots: what snapshots may hold at once.
    snapshot_turns: Arc<tokio::sync::Semaphore>,
    /// The identities of the cache's inputs, once per (stage, URL).
    identities: Mutex<std::collections::HashMap<(usize, String), cache::Identity>>,
    /// The spot notices already passed on to the engine, per host and kind.
    notices: Mutex<std::collections::BTreeSet<(HostId, &'static str)>>,
    /// This master's generation, when the run is journaled.
    fence: Option<Arc<journal::Fence>>,
    /// The journal's writer.
    journal: Mutex<Option<journal::Journal>>,
}

/// How many cache lookups or writes go to the store at once.
const STORE_SLOTS: usize = 16;

impl Ctx {
    /// Reports an event to the run loop (which only stops listening once it is done).
    fn send(&self, event: Event) {
        let _ = self.tx.send(Report::Event(event));
    }

    /// The journal's writer, when the run keeps a journal.
    fn journal(&self) -> Option<journal::Journal> {
        self.journal.lock().ok().and_then(|j| j.clone())
    }

    /// A transfer slot ([`slots`]), held while a log archive, a copy or a fetch moves.
    async fn transfer(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.transfers.clone().acquire_owned().await.ok()
    }

    /// A snapshot's turn if one is free now: snapshots hold at most half the transfer
    /// slots at once (none when there is one slot only).
    fn snapshot_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.snapshot_turns.clone().try_acquire_owned().ok()
    }

    /// The run's secret values' needles: masked in whatever the run stores.
    fn masks(&self) -> &squall_worker::mask::Masks {
        self.opts.secrets.masks()
    }

    /// Waits until the journal sent so far is stored (teardown and the record go
    /// after the fate they follow from).
    async fn journal_synced(&self) {
        if let Some(j) = self.journal() {
            j.sync(Duration::from_secs(60)).await;
        }
    }

    /// Whether a successor owns the run (asked of the store): then this master writes
    /// and ends nothing more, and the loop stops. A run with no journal is never fenced.
    async fn fenced_now(&self) -> bool {
        let Some(f) = &self.fence else {
            return false;
        };
        // A store that keeps not answering does not stop the run's own teardown.
        let fenced = f.ask_retrying(self.b.store.as_ref(), 3).await == Some(true);
        if fenced {
            // Wakes the loop, which sees the fence and stops.
            self.send(Event::Tick);
        }
        fenced
    }
}

/// Runs `plan` to the end: provision, stages, collect, teardown, record.
pub async fn run(plan: Arc<Plan>, b: Backends, opts: RunOptions) -> Result<RunSummary, RunError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let engine_opts = EngineOptions {
        snapshot_every_ms: opts.snapshot_every.map(|d| d.as_millis() as u64),
        heartbeat_every_ms: Some(opts.heartbeat_every.as_millis() as u64),
        journal_every_ms: opts.journal.as_ref().map(|j| j.every.as_millis() as u64),
        generation: opts.journal.as_ref().map_or(1, |j| j.generation),
    };
    let resume = opts.journal.as_ref().and_then(|j| j.resume.clone());
    let engine = match resume {
        Some(rebuilt) => Engine::resume(
            plan.clone(),
            opts.run_id.clone(),
            opts.trigger.clone(),
            now_ms(),
            engine_opts,
            *rebuilt,
        ),
        None => Engine::with_options(
            plan.clone(),
            opts.run_id.clone(),
            opts.trigger.clone(),
            now_ms(),
            engine_opts,
        ),
    };
    let mut engine = engine
        .with_secrets(opts.secrets.clone())
        .with_data(DataOptions {
            run_files: b
                .store
                .locate(&keys::files_prefix(&opts.run_id))
                .trim_end_matches('/')
                .to_owned(),
            allow_absolute_sources: opts.allow_absolute_sources,
            use_cache: opts.use_cache,
        });
    // Instances may be swept once the run's deadline, its stop and collect graces and
    // a margin have passed.
    let grace = plan.after_deadline().as_secs();
    let deadline_tag = (engine.deadline_at_ms() / 1000 + grace).to_string();
    // Unreadable: the agent is always uploaded, and the upload reports the error.
    let agent_sha256 = crate::digest::file_sha256_hex(&opts.agent_binary)
        .await
        .ok();
    if let Some(j) = &opts.journal {
        engine.set_masters(j.masters.clone());
    }
    let fence = opts
        .journal
        .as_ref()
        .map(|j| Arc::new(journal::Fence::new(&opts.run_id, j.generation)));
    let (journal_writer, journal_task) = match &fence {
        Some(f) => {
            let (j, task) = journal::Journal::start(
                b.store.clone(),
                f.clone(),
                opts.run_id.clone(),
                opts.secrets.masks().clone(),
            );
            (Some(j), Some(task))
        }
        None => (None, None),
    };
    let transfers = opts.transfers.unwrap_or_else(slots::for_this_machine);
    let ctx = Arc::new(Ctx {
        b: b.clone(),
        opts: opts.clone(),
        agent_sha256,
        deadline_tag,
        tx,
        record_error: Mutex::new(None),
        base_dir: std::path::absolute(&plan.base_dir).unwrap_or_else(|_| plan.base_dir.clone()),
        store_slots: Arc::new(tokio::sync::Semaphore::new(STORE_SLOTS)),
        transfers: Arc::new(tokio::sync::Semaphore::new(transfers)),
        snapshot_turns: Arc::new(tokio::sync::Semaphore::new(transfers / 2)),
        identities: Mutex::new(std::collections::HashMap::new()),
        notices: Mutex::new(std::collections::BTreeSet::new()),
        fence: fence.clone(),
        journal: Mutex::new(journal_writer),
    });
    // A resumed run's hosts, as the earlier masters journaled them (ids in order).
    let mut hosts: Vec<Instance> = adopt::instances(b.compute.as_ref(), &engine).await;
    let mut jobs = Jobs::default();
    let mut view = ProgressView::new(opts.progress_bar, &plan.name, &opts.run_id);
    tracing::info!(run = %opts.run_id, playbook = %plan.file.display(), "run started");

    let first = engine.start();
    dispatch(&ctx, &engine, &hosts, &mut jobs, first).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut signals = Signals::new(opts.handle_signals);
    while !engine.is_done() {
        if fence.as_ref().is_some_and(|f| f.is_fenced()) {
            break;
        }
        let report = tokio::select! {
            Some(r) = rx.recv() => r,
            _ = tick.tick() => Report::Event(Event::Tick),
            reason = signals.next() => {
                // A fenced master's instance is being ended by the watchdog that claimed
                // the run: the signal is its shutdown, not a cancel of the run. When the
                // store cannot say (a master is silent when it cannot reach it), the run
                // is left to its successor too: cancelling would end workers a successor
                // may be adopting.
                if let Some(f) = &ctx.fence {
                    match f.ask_retrying(ctx.b.store.as_ref(), 3).await {
                        Some(false) => {}
                        _ => {
                            tracing::error!("{reason} while a successor may own the run: stopping without cancelling it");
                            break;
                        }
                    }
                }
                tracing::warn!("{reason}: stopping the run (logs are still collected and instances torn down)");
                Report::Event(Event::Cancel { reason: format!("cancelled by {reason}") })
            }
            Some(ended) = jobs.next() => match ended {
                Some(stand_in) => Report::Event(stand_in),
                None => continue,
            },
        };
        let (event, launched) = match report {
            Report::Launched {
                group,
                instances,
                replaces,
            } => {
                let mut launched: Vec<LaunchedInstance> = instances
                    .iter()
                    .map(|i| LaunchedInstance {
                        id: i.id.clone(),
                        address: i.address.clone(),
                        instance_type: i.instance_type.clone(),
                    })
                    .collect();
                let event = match replaces {
                    Some(replaces) if !launched.is_empty() => Event::Replaced {
                        replaces,
                        instance: launched.swap_remove(0),
                    },
                    _ => Event::Launched {
                        group,
                        instances: launched,
                    },
                };
                (event, instances)
            }
            Report::Event(e) => (e, Vec::new()),
        };
        log_event(&engine, &event);
        if let Event::TaskFinished { key, .. } = &event {
            jobs.untrack(key);
        }
        let before = engine.host_count();
        let actions = engine.handle(now_ms(), event);
        // The engine numbers hosts in the order it takes them in; a launch it ignored
        // (it came after the run stopped waiting) gets no ids (teardown by tag ends it).
        if engine.host_count() > before {
            hosts.extend(launched);
        }
        dispatch(&ctx, &engine, &hosts, &mut jobs, actions).await;
        view.update(&engine.progress());
    }
    jobs.shutdown().await;
    view.finish();
    let fenced = match &fence {
        Some(f) => f.is_fenced() || f.check(b.store.as_ref()).await,
        None => false,
    };
    if let Some(f) = fence.as_ref().filter(|_| !engine.is_done()) {
        // The loop stopped before the run was recorded: a successor drives the workers
        // now (or may): nothing here may end them.
        return Err(RunError::Fenced(f.generation() + 1));
    }
    // The batches out are written (each is small) before the run ends.
    drop(ctx.journal.lock().ok().and_then(|mut t| t.take()));
    if let Some(task) = journal_task {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }

    // Belt and braces: a launch that finished after teardown must not leave anything
    // (unless the run is another master's now).
    if !fenced && let Err(e) = compute::teardown_workers(b.compute.as_ref(), &opts.run_id).await {
        tracing::error!("final teardown check failed: {}", chain(&e));
    }
    // What the record holds is masked before anyone sees it: the report, the summary
    // and the CLI's output are made from it.
    let record = masked(&engine.record(), opts.secrets.masks());
    let record_error = ctx.record_error.lock().ok().and_then(|mut e| e.take());
    tracing::info!(
        status = record.status.as_str(),
        reason = record.reason.as_deref().unwrap_or(""),
        recorded = record_error.is_none(),
        "run ended"
    );
    // The evidence is stored even when run.json could not be: the master's log says
    // why, and the report shows what happened.
    if let Some(log) = &opts.master_log {
        let key = keys::log_archive(&opts.run_id, "master");
        if let Err(e) = logs::put_master_log(b.store.as_ref(), &key, log).await {
            tracing::error!("storing the master log failed: {}", chain(&e));
        }
    }
    if let Err(e) =
        crate::inspect::report::publish(b.store.as_ref(), &record, opts.secrets.masks()).await
    {
        tracing::error!("storing the report failed: {}", chain(&e));
    }
    if let Some(e) = record_error {
        return Err(RunError::Record {
            key: keys::run_record(&opts.run_id),
            source: e,
        });
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

/// `record` with every secret value in it masked (see [`crate::seam::store::masked`]).
/// Never the record unmasked: when it cannot be masked, a record that says so.
pub(crate) fn masked(record: &RunRecord, masks: &squall_worker::mask::Masks) -> RunRecord {
    if masks.is_empty() {
        return record.clone();
    }
    crate::seam::store::masked(record, masks).unwrap_or_else(|| withheld(record))
}

/// A record that holds nothing but the run's outcome (its masked form did not read
/// back).
fn withheld(record: &RunRecord) -> RunRecord {
    tracing::error!("the run record could not be masked; it is written without its details");
    RunRecord::ended_before_start(
        &record.run_id,
        "",
        record.status,
        "the record's details were withheld: a secret's value could not be masked in them"
            .to_owned(),
        record.ended_at_ms.unwrap_or(record.started_at_ms),
    )
}

fn log_event(engine: &Engine, event: &Event) {
    let name = |h: HostId| engine.host_name(h).to_owned();
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
