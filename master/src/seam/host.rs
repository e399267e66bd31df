//! Where a run lives on a host, relative to the login user's home: the agent binary and
//! one folder per run (one agent root per instance inside it).
//!
//! Only paths; installing the agent and cleaning a host are the runner's and the
//! inventory backend's jobs.

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
