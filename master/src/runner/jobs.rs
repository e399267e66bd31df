//! The runner's background work: every action runs as a job in one `JoinSet`, each with
//! the event that stands in for it if it panics (so the engine always hears back and a
//! panic cannot hang the run); and Ctrl-C / SIGTERM as a stream of reasons.
//!
//! What a job does is [`super::dispatch`]'s business.

use crate::engine::{Event, TaskKey};
use std::collections::HashMap;
use std::future::Future;
use tokio::task::JoinSet;

/// The action jobs of a run. See the module docs.
#[derive(Debug, Default)]
pub struct Jobs {
    set: JoinSet<()>,
    fallbacks: HashMap<tokio::task::Id, Event>,
    /// The jobs moving a task's data (copies, fetches), which cancelling aborts: no
    /// agent runs them.
    data: HashMap<TaskKey, tokio::task::AbortHandle>,
}

impl Jobs {
    /// Runs `job`; `fallback` is reported in its stead if it panics. The handle aborts
    /// it (nothing is reported then).
    pub fn spawn(
        &mut self,
        fallback: Option<Event>,
        job: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::AbortHandle {
        let handle = self.set.spawn(job);
        if let Some(ev) = fallback {
            self.fallbacks.insert(handle.id(), ev);
        }
        handle
    }

    /// Notes that `handle` moves task `key`'s data.
    pub fn track(&mut self, key: TaskKey, handle: tokio::task::AbortHandle) {
        self.data.insert(key, handle);
    }

    /// Forgets task `key` (it ended).
    pub fn untrack(&mut self, key: &TaskKey) {
        self.data.remove(key);
    }

    /// Aborts the job moving task `key`'s data; false when there is none.
    pub fn abort_data(&mut self, key: &TaskKey) -> bool {
        match self.data.remove(key) {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }

    /// The next job to end; `Some(event)` when it panicked and has a stand-in event.
    pub async fn next(&mut self) -> Option<Option<Event>> {
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

    /// Ends every job still running and waits for them.
    pub async fn shutdown(&mut self) {
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
    }
}

/// Ctrl-C and SIGTERM as a stream of reasons; pending forever when disabled.
#[derive(Debug)]
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn new(enabled: bool) -> Self {
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

    /// The next signal's name.
    pub async fn next(&mut self) -> &'static str {
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
