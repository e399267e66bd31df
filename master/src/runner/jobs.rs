//! The runner's background work: every action runs as a job in one `JoinSet`, each with
//! the event that stands in for it if it panics (so the engine always hears back and a
//! panic cannot hang the run); and Ctrl-C / SIGTERM as a stream of reasons.
//!
//! What a job does is [`super::dispatch`]'s business.

use crate::engine::Event;
use std::collections::HashMap;
use std::future::Future;
use tokio::task::JoinSet;

/// The action jobs of a run. See the module docs.
#[derive(Debug, Default)]
pub struct Jobs {
    set: JoinSet<()>,
    fallbacks: HashMap<tokio::task::Id, Event>,
}

impl Jobs {
    /// Runs `job`; `fallback` is reported in its stead if it panics.
    pub fn spawn(
        &mut self,
        fallback: Option<Event>,
        job: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.set.spawn(job);
        if let Some(ev) = fallback {
            self.fallbacks.insert(handle.id(), ev);
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
