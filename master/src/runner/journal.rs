//! Writing the journal the engine keeps, and the fence that stops a master a
//! successor has replaced.
//!
//! Batches are written in order by one writer task (a batch's key is new: create-if-
//! absent, never rewritten), so the loop never waits on the store and a crash leaves a
//! prefix. Before each journal, teardown and record write, the writer's generation is
//! checked: once `runs/ID/generation/N+1` exists, a successor owns the run and this
//! master writes nothing more, tears nothing down and stops.

use crate::error::chain;
use crate::record::journal::Batch;
use crate::record::keys;
use crate::seam::store::{self as store, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

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
    /// answer does not fence: the watchdog terminates a master before it claims.
    pub async fn check(&self, store: &dyn Store) -> bool {
        if self.is_fenced() {
            return true;
        }
        let next = keys::generation(&self.run_id, self.generation + 1);
        if let Ok(Some(_)) = store.head(&next).await {
            tracing::error!(
                generation = self.generation,
                "generation {} has taken this run over: this master stops here",
                self.generation + 1
            );
            self.fenced.store(true, Ordering::SeqCst);
        }
        self.is_fenced()
    }
}

/// Starts the writer; batches sent to the returned channel are stored in order. The
/// task ends when the channel is closed and every batch is written (or fenced).
pub fn writer(
    store: Arc<dyn Store>,
    fence: Arc<Fence>,
    run_id: String,
) -> (mpsc::UnboundedSender<Batch>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Batch>();
    let task = tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            if fence.check(store.as_ref()).await {
                continue; // drained, not written
            }
            let key = keys::journal_batch(&run_id, batch.generation, batch.seq);
            match store::create_json(store.as_ref(), &key, &batch).await {
                Ok(true) => {}
                Ok(false) => tracing::error!("journal batch {key} exists already; not rewritten"),
                Err(e) => tracing::error!("journal batch {key} not written: {}", chain(&e)),
            }
        }
    });
    (tx, task)
}
