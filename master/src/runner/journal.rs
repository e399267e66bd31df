//! Writing the journal the engine keeps, and the fence that stops a master a
//! successor has replaced.
//!
//! Batches are written in order by one writer task (a batch's key is new: create-if-
//! absent, never rewritten), so the loop never waits on the store and a crash leaves a
//! prefix. A batch that fails is tried again (with backoff) before the next one: a
//! gap would hide every later batch from a successor. A [`Journal::sync`] waits until
//! every batch sent before it is stored: teardown and the record wait for it, so the
//! journal always says the run's fate before its instances end.
//!
//! Before each journal, teardown and record write the writer's generation is checked:
//! once `runs/ID/generation/N+1` exists, a successor owns the run and this master
//! writes nothing more, tears nothing down and stops.

use crate::error::chain;
use crate::record::journal::Batch;
use crate::record::keys;
use crate::seam::store::{self as store, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The writer's generation and whether a successor has taken the run over.
#[derive(Debug)]
pub struct Fence {
    run_id: String,
    generation: u32,
    fenced: AtomicBool,
}

impl Fence {
    pub fn new(run_id: &str, generation: u32) -> Fence {
        Fence {
            run_id: run_id.to_owned(),
            generation,
            fenced: AtomicBool::new(false),
        }
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether a successor was seen (no store call).
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Asks the store whether the next generation is claimed. A store that cannot
    /// answer does not fence here: the journal's writes are retried, and the
    /// watchdog claims before it terminates a master (see [`Fence::ask`]).
    pub async fn check(&self, store: &dyn Store) -> bool {
        self.ask(store).await == Some(true)
    }

    /// Whether the next generation is claimed: `None` when the store did not answer
    /// (within [`ASK_TIMEOUT`]).
    pub async fn ask(&self, store: &dyn Store) -> Option<bool> {
        if self.is_fenced() {
            return Some(true);
        }
        let next = keys::generation(&self.run_id, self.generation + 1);
        match tokio::time::timeout(ASK_TIMEOUT, store.head(&next)).await {
            Ok(Ok(Some(_))) => {
                tracing::error!(
                    generation = self.generation,
                    "generation {} has taken this run over: this master stops here",
                    self.generation + 1
                );
                self.fenced.store(true, Ordering::SeqCst);
                Some(true)
            }
            Ok(Ok(None)) => Some(false),
            Ok(Err(e)) => {
                tracing::warn!("asking whether a successor owns the run: {}", chain(&e));
                None
            }
            Err(_) => None,
        }
    }

    /// Asks until the store answers, `tries` times at most, a second apart.
    pub async fn ask_retrying(&self, store: &dyn Store, tries: u32) -> Option<bool> {
        for i in 0..tries.max(1) {
            if let Some(answer) = self.ask(store).await {
                return Some(answer);
            }
            if i + 1 < tries {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        None
    }
}

/// What the writer is sent.
#[derive(Debug)]
enum Message {
    Batch(Batch),
    /// Answered once every batch sent before it is stored (or given up on, fenced).
    Sync(oneshot::Sender<()>),
}

/// The journal's writer: send batches, wait for them to be stored.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::UnboundedSender<Message>,
}

/// How long one fence question may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest pause between two tries of one batch.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

impl Journal {
    /// Starts the writer; the task ends once every [`Journal`] is dropped and every
    /// batch sent is stored (or fenced).
    pub fn start(
        store: Arc<dyn Store>,
        fence: Arc<Fence>,
        run_id: String,
        masks: squall_worker::mask::Masks,
    ) -> (Journal, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let task = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                match m {
                    Message::Sync(done) => {
                        let _ = done.send(());
                    }
                    Message::Batch(batch) => {
                        write(store.as_ref(), &fence, &run_id, &batch, &masks).await
                    }
                }
            }
        });
        (Journal { tx }, task)
    }

    pub fn send(&self, batch: Batch) {
        let _ = self.tx.send(Message::Batch(batch));
    }

    /// Waits (up to `limit`) until every batch sent so far is stored.
    pub async fn sync(&self, limit: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Sync(done)).is_ok()
            && tokio::time::timeout(limit, wait).await.is_err()
        {
            tracing::warn!("the journal is not stored within {limit:?}; going on");
        }
    }
}

/// Stores one batch, trying again until it is stored or the master is fenced.
async fn write(
    store: &dyn Store,
    fence: &Fence,
    run_id: &str,
    batch: &Batch,
    masks: &squall_worker::mask::Masks,
) {
    let key = keys::journal_batch(run_id, batch.generation, batch.seq);
    // A batch that cannot be masked never can be: it is skipped, not retried.
    let body = match store::masked_json(batch, masks) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!("journal batch {key} not written: {e}");
            return;
        }
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        if fence.check(store).await {
            return; // drained, not written
        }
        match store.create_if_absent(&key, body.clone()).await {
            Ok(true) => return,
            Ok(false) => {
                tracing::error!("journal batch {key} exists already; not rewritten");
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "journal batch {key} not written ({}); trying again in {backoff:?}",
                    chain(&e)
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
