//! The run's phase as a state: each variant holds the data only that phase has (the
//! launches still out while provisioning, the running stage, since when the run has
//! been stopping or collecting, the hosts whose logs are being collected), and every
//! phase from `Stopping` on carries the run's [`Fate`], decided once.
//!
//! Transitions are made in [`super::Engine`]; this module only names the states.

use super::stage::StageRun;
use super::types::HostId;
use crate::record::{Phase, RunStatus};
use std::collections::BTreeSet;

/// How the run ends, decided once (the first decision wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fate {
    pub status: RunStatus,
    pub reason: Option<String>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub enum State {
    /// Launching the fleet: the groups whose launch has not answered.
    Provision {
        pending: BTreeSet<String>,
    },
    /// Installing the agent on every host.
    Bootstrap,
    /// Running the stages: the one running (none only between two stages) and the
    /// index of the next to open.
    Stages {
        stage: Option<StageRun>,
        next: usize,
    },
    /// Cancelling what runs; waiting for launches and bootstraps still out.
    Stopping {
        fate: Fate,
        since_ms: u64,
        pending: BTreeSet<String>,
    },
    /// Collecting every bootstrapped host's logs.
    Collect {
        fate: Fate,
        since_ms: u64,
        collecting: BTreeSet<HostId>,
    },
    /// Terminating every instance of the run.
    Teardown {
        fate: Fate,
    },
    /// Writing the run record.
    Record {
        fate: Fate,
    },
    Done {
        fate: Fate,
    },
}

impl State {
    /// The phase this state is, as records name it.
    pub fn phase(&self) -> Phase {
        match self {
            State::Provision { .. } => Phase::Provision,
            State::Bootstrap => Phase::Bootstrap,
            State::Stages { .. } => Phase::Stages,
            State::Stopping { .. } => Phase::Stopping,
            State::Collect { .. } => Phase::CollectLogs,
            State::Teardown { .. } => Phase::Teardown,
            State::Record { .. } => Phase::Record,
            State::Done { .. } => Phase::Done,
        }
    }

    /// The run's fate, once decided.
    pub fn fate(&self) -> Option<&Fate> {
        match self {
            State::Provision { .. } | State::Bootstrap | State::Stages { .. } => None,
            State::Stopping { fate, .. }
            | State::Collect { fate, .. }
            | State::Teardown { fate }
            | State::Record { fate }
            | State::Done { fate } => Some(fate),
        }
    }

    /// Whether the run's fate is decided (it is stopping or winding down).
    pub fn decided(&self) -> bool {
        self.fate().is_some()
    }
}
