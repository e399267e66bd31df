//! What the launcher leaves under a run's prefix before the master runs it:
//! `claim.json` (the run is taken), `request.json` (what the master runs besides the
//! playbook) and `launch.json` (the master it started).
//!
//! Plain data with serde. Writing these is [`crate::cloud::launch`]'s job; reading them
//! back, the master's ([`crate::cloud::master`]) and [`crate::inspect`]'s.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `runs/RUN_ID/claim.json`: a launcher took the run (written create-if-absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub run_id: String,
    /// The trigger, as the launcher parsed it.
    pub trigger: Value,
    /// Unix seconds.
    pub claimed_at: u64,
    /// Which launch attempt of the run this is (1 for `claim.json`; later ones are
    /// `claims/N.json`, see [`crate::cloud::claim`]).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// Unique to the delivery that wrote it (see [`crate::cloud::claim`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nonce: String,
}

fn first_attempt() -> u32 {
    1
}

/// `runs/RUN_ID/claims/N.failed.json`: launch attempt N failed for a passing reason; the
/// next delivery takes over at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchFailure {
    pub attempt: u32,
    pub reason: String,
    /// Unix seconds.
    pub failed_at: u64,
}

/// `runs/RUN_ID/request.json`: everything the master needs besides the playbook,
/// written before the master is launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    pub run_id: String,
    /// The playbook's key in the bucket; `copy` sources are relative to its folder.
    pub playbook: String,
    /// `--var`-style overrides (a direct invocation's `vars`).
    pub vars: BTreeMap<String, String>,
    /// `trigger.*`.
    pub trigger: BTreeMap<String, Value>,
    /// Where workers are launched unless their group says otherwise.
    pub subnet: String,
    pub security_groups: Vec<String>,
    pub image: String,
    /// Unix seconds after which the master may be swept.
    pub master_deadline: u64,
    pub requested_at: u64,
    /// Whether cached stages reuse earlier items.
    #[serde(default = "yes")]
    pub use_cache: bool,
    /// Unix seconds at which the run is cut off, as the launcher reckoned it (0 in older
    /// requests: unknown). Past it a successor master has nothing left to run.
    #[serde(default)]
    pub run_deadline: u64,
    /// The stack whose launcher started the run: every instance is tagged with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// How many masters may run the run (the playbook's `max_masters`).
    #[serde(default = "three")]
    pub max_masters: u32,
}

fn three() -> u32 {
    3
}

fn yes() -> bool {
    true
}

/// `runs/RUN_ID/launch.json`: the master started for the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub run_id: String,
    pub master: Option<String>,
    pub launched_at: u64,
}
