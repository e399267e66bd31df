//! What a master leaves for a successor, and what a successor takes up: the run's
//! access (the login key in SSM Parameter Store for the run's life, the workers' host
//! keys published in the run's prefix), the journal, and the story of the run's masters.
//!
//! The first master keeps the access before it launches a worker
//! ([`keep_access`]); a successor reads it back ([`adopt_access`]), rebuilds the run
//! from the journal ([`read_journal`]) and names every generation for the record
//! ([`masters`]). Starting successors is the watchdog's ([`super::watch`]).

use super::keys::{KeyError, RunKeys};
use crate::engine::resume::Rebuilt;
use crate::error::chain;
use crate::record::journal::{Batch, Generation, MasterRecord};
use crate::record::{Heartbeat, LaunchRecord, RunRequest, keys};
use crate::seam::control::Control;
use crate::seam::store::{self as store, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

/// Keeps the run's login key (SSM, SecureString) and publishes its host keys, so a
/// successor can reach the workers. A failure is logged: the run goes on, and a
/// successor would replace the workers it cannot reach.
pub async fn keep_access(
    store: &dyn Store,
    control: Option<&dyn Control>,
    run: &str,
    keys_: &RunKeys,
) {
    let published = tokio::fs::read_to_string(&keys_.known_hosts).await;
    match published {
        Ok(text) => {
            if let Err(e) = store.put(&keys::known_hosts(run), text.into_bytes()).await {
                tracing::warn!("publishing the host keys of {run}: {}", chain(&e));
            }
        }
        Err(e) => tracing::warn!("reading the run's known_hosts: {e}"),
    }
    let Some(control) = control else {
        return;
    };
    match keys_.login_private().await {
        Ok(private) => {
            if let Err(e) = control
                .put_secret(&keys::login_key_parameter(run), &private)
                .await
            {
                tracing::warn!(
                    "keeping the login key of {run} for a successor: {}; a successor would replace every worker",
                    chain(&e)
                );
            }
        }
        Err(e) => tracing::warn!("reading the login key: {}", chain(&e)),
    }
}

/// A successor's keys: the run's login key from SSM and the published host keys, plus
/// a host key of its own for the workers it launches (published too). Without the
/// login key, fresh keys: the workers it cannot reach are replaced.
pub async fn adopt_access(
    store: &dyn Store,
    control: Option<&dyn Control>,
    run: &str,
    dir: &Path,
) -> Result<RunKeys, KeyError> {
    let login = match control {
        Some(c) => match c.get_secret(&keys::login_key_parameter(run)).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("reading the login key of {run}: {}", chain(&e));
                None
            }
        },
        None => None,
    };
    let published = match store.get(&keys::known_hosts(run)).await {
        Ok(b) => b.map(|b| String::from_utf8_lossy(&b).into_owned()),
        Err(e) => {
            tracing::warn!("reading the host keys of {run}: {}", chain(&e));
            None
        }
    };
    let keys_ = match (login, published) {
        (Some(login), Some(known)) => RunKeys::adopt(dir, run, login.expose(), &known).await?,
        _ => {
            tracing::warn!("no login key or host keys for {run}: its workers cannot be adopted");
            RunKeys::generate(dir, run).await?
        }
    };
    keep_access(store, control, run, &keys_).await;
    Ok(keys_)
}

/// How many journal batches are read at once.
const READS_IN_FLIGHT: usize = 16;

/// Every batch of the run's journal, folded (see [`Rebuilt::from_batches`]), read
/// [`READS_IN_FLIGHT`] at a time.
pub async fn read_journal(store: Arc<dyn Store>, run: &str) -> Result<Rebuilt, StoreError> {
    let keys_ = store.list(&keys::journal_prefix(run)).await?;
    let mut batches = Vec::with_capacity(keys_.len());
    let mut reads = tokio::task::JoinSet::new();
    let mut pending = keys_.into_iter();
    loop {
        while reads.len() < READS_IN_FLIGHT
            && let Some(key) = pending.next()
        {
            let store = store.clone();
            reads.spawn(async move {
                let got = store::get_json::<Batch>(store.as_ref(), &key).await;
                (key, got)
            });
        }
        let Some(done) = reads.join_next().await else {
            break;
        };
        match done {
            Ok((_, Ok(Some(b)))) => batches.push(b),
            Ok((_, Ok(None))) => {}
            // A batch that cannot be read ends its generation's journal there.
            Ok((key, Err(e))) => tracing::warn!("journal batch {key} unreadable: {}", chain(&e)),
            Err(e) => tracing::warn!("reading the journal: {e}"),
        }
    }
    Ok(Rebuilt::from_batches(batches))
}

/// How long a master may say it is starting: one stuck preparing is let go silent,
/// so that its watchdog replaces it.
const STARTING_AT_MOST: std::time::Duration = std::time::Duration::from_secs(1800);

/// The heartbeat a master keeps while it prepares, before its runner beats: the one an
/// earlier master left is kept with only its time moved (a first master writes a
/// `provision` one), every `every`, until [`StartingBeats::stop`] (or
/// [`STARTING_AT_MOST`]).
#[derive(Debug)]
pub struct StartingBeats {
    stop: Arc<tokio::sync::Notify>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl StartingBeats {
    pub fn start(store: Arc<dyn Store>, run: String, every: std::time::Duration) -> StartingBeats {
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(starting_beats(store, run, every, stop.clone()));
        StartingBeats {
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Stops the beats once the one being written (if any) is stored, so that none
    /// lands after the runner's own; repeatable.
    pub async fn stop(&self) {
        self.stop.notify_one();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(15), task).await;
        }
    }
}

async fn starting_beats(
    store: Arc<dyn Store>,
    run: String,
    every: std::time::Duration,
    stop: Arc<tokio::sync::Notify>,
) {
    let key = keys::status(&run);
    let mut beat = match store::get_json::<Heartbeat>(store.as_ref(), &key).await {
        Ok(Some(b)) => b,
        _ => Heartbeat {
            run_id: run.clone(),
            phase: crate::record::Phase::Provision,
            stage: None,
            hosts_live: 0,
            hosts_total: 0,
            shards_done: 0,
            shards_total: 0,
            updated_at_ms: 0,
            started_at_ms: 0,
            playbook: String::new(),
            stages: Vec::new(),
            hosts: Vec::new(),
        },
    };
    let every = every.max(std::time::Duration::from_secs(1));
    let started = std::time::Instant::now();
    while started.elapsed() < STARTING_AT_MOST {
        beat.updated_at_ms = crate::runner::now_ms();
        if let Err(e) = store::put_json(store.as_ref(), &key, &beat).await {
            tracing::warn!("heartbeat not written: {}", chain(&e));
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.notified() => return,
        }
    }
    tracing::warn!("still preparing after {STARTING_AT_MOST:?}: no more starting heartbeats");
}

/// The run's masters up to `generation`, for the record: the first as the launcher
/// started it, each successor as its watchdog claimed it.
pub async fn masters(
    store: &dyn Store,
    run: &str,
    request: &RunRequest,
    generation: u32,
) -> Vec<MasterRecord> {
    let launch = store::get_json::<LaunchRecord>(store, &keys::launch(run))
        .await
        .ok()
        .flatten();
    let mut out = vec![MasterRecord {
        generation: 1,
        claimed_at_ms: launch
            .as_ref()
            .map_or(request.requested_at, |l| l.launched_at)
            * 1000,
        reason: "started by the launcher".into(),
        instance_id: launch.and_then(|l| l.master),
        fenced: Vec::new(),
        takeover: None,
    }];
    for n in 2..=generation {
        let g = store::get_json::<Generation>(store, &keys::generation(run, n))
            .await
            .ok()
            .flatten();
        out.push(match g {
            Some(g) => MasterRecord {
                generation: n,
                claimed_at_ms: g.claimed_at_ms,
                reason: g.reason,
                instance_id: g.instance_id,
                fenced: g.fenced,
                takeover: None,
            },
            None => MasterRecord {
                generation: n,
                claimed_at_ms: 0,
                reason: "(its claim is unreadable)".into(),
                instance_id: None,
                fenced: Vec::new(),
                takeover: None,
            },
        });
    }
    out
}
