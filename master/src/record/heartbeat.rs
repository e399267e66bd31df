//! The heartbeat (`runs/RUN_ID/status.json`): what a live run says about itself, rewritten
//! while it goes, for `squall status` and for whoever must tell a live master from a
//! dead one.
//!
//! Plain data with serde; the engine shapes it ([`crate::engine::Engine::heartbeat`]).

use super::run::{Phase, StageRecord};
use serde::{Deserialize, Serialize};

/// `status.json`: a heartbeat written while the run goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub run_id: String,
    pub phase: Phase,
    pub stage: Option<String>,
    pub hosts_live: usize,
    pub hosts_total: usize,
    pub shards_done: usize,
    pub shards_total: usize,
    pub updated_at_ms: u64,
    /// When the run started and its playbook, for readers without run.json yet.
    #[serde(default)]
    pub started_at_ms: u64,
    #[serde(default)]
    pub playbook: String,
    /// The stages so far.
    #[serde(default)]
    pub stages: Vec<StageRecord>,
    /// Each host's state and the tasks it runs now.
    #[serde(default)]
    pub hosts: Vec<HostBeat>,
}

/// A host in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBeat {
    pub name: String,
    pub instance_id: String,
    /// `bootstrapping`, `ready` or `lost`.
    pub state: String,
    /// Agent ids of the tasks running there now.
    pub running: Vec<String>,
}
