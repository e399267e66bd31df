//! The store key layout: where everything a run leaves behind lives, under one prefix
//! `runs/RUN_ID/`. The one place key names are spelled.
//!
//! It only names keys; writing and reading them is the store's and its callers' job.

/// The prefix of everything of a run.
pub fn run_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/")
}

/// The run record.
pub fn run_record(run_id: &str) -> String {
    format!("runs/{run_id}/run.json")
}

/// The HTML report, written at the end of the run.
pub fn report(run_id: &str) -> String {
    format!("runs/{run_id}/report.html")
}

/// The heartbeat while the run is going.
pub fn status(run_id: &str) -> String {
    format!("runs/{run_id}/status.json")
}

/// The prefix of a run's log archives.
pub fn logs_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/logs/")
}

/// A host's (or `master`'s) log archive.
pub fn log_archive(run_id: &str, host: &str) -> String {
    format!("runs/{run_id}/logs/{host}.tar.gz")
}

/// The latest snapshot of a host's logs, taken while the run goes.
pub fn log_snapshot(run_id: &str, host: &str) -> String {
    format!("runs/{run_id}/logs/snapshots/{host}.tar.gz")
}

/// The master's plain log, stored when the run could not even start.
pub fn master_log(run_id: &str) -> String {
    format!("runs/{run_id}/logs/master.log")
}

/// The launcher's claim of a run (create-if-absent).
pub fn claim(run_id: &str) -> String {
    format!("runs/{run_id}/claim.json")
}

/// The claim of a later launch attempt `n` (2, 3, ...), taken when attempt `n - 1`
/// failed or its launcher stopped (create-if-absent: one delivery takes it).
pub fn claim_attempt(run_id: &str, n: u32) -> String {
    format!("runs/{run_id}/claims/{n}.json")
}

/// The claims of later launch attempts, with their failure notes.
pub fn claims_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/claims/")
}

/// Why launch attempt `n` failed (its claim is free to take over at once).
pub fn launch_failure(run_id: &str, n: u32) -> String {
    format!("runs/{run_id}/claims/{n}.failed.json")
}

/// What the master runs besides the playbook.
pub fn request(run_id: &str) -> String {
    format!("runs/{run_id}/request.json")
}

/// The playbook text the master runs.
pub fn playbook(run_id: &str) -> String {
    format!("runs/{run_id}/playbook.yml")
}

/// The master the launcher started.
pub fn launch(run_id: &str) -> String {
    format!("runs/{run_id}/launch.json")
}

/// What a sweep at `unix_secs` terminated of the run.
pub fn sweep_note(run_id: &str, unix_secs: u64) -> String {
    format!("runs/{run_id}/sweeps/{unix_secs}.json")
}

/// The run's own files area (what `fetch` stores, what `run.files` names).
pub fn files_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/files/")
}

/// The items listed for a stage, beyond what the record keeps.
pub fn shard_items(run_id: &str, stage: &str) -> String {
    let safe: String = stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    format!("runs/{run_id}/shards/{safe}.jsonl")
}

/// A cache entry, shared across runs.
pub fn cache_entry(cache_key: &str) -> String {
    format!("cache/{cache_key}.json")
}

/// The prefix of a run's journal.
pub fn journal_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/journal/")
}

/// One flush of a generation's journal (sorted by generation, then sequence).
pub fn journal_batch(run_id: &str, generation: u32, seq: u64) -> String {
    format!("runs/{run_id}/journal/{generation:04}-{seq:08}.json")
}

/// The prefix of a run's master generations.
pub fn generations_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/generation/")
}

/// The claim of master generation `n` (create-if-absent: one successor per generation).
pub fn generation(run_id: &str, n: u32) -> String {
    format!("runs/{run_id}/generation/{n:04}")
}

/// The run's worker host keys (public keys only), for a successor master.
pub fn known_hosts(run_id: &str) -> String {
    format!("runs/{run_id}/known_hosts")
}

/// The prefix of the live-run markers.
pub const LIVE_PREFIX: &str = "live/";

/// The marker of a live run (written at launch, removed once the run is recorded).
pub fn live(run_id: &str) -> String {
    format!("live/{run_id}")
}

/// The SSM parameter holding the run's login key while the run lives.
pub fn login_key_parameter(run_id: &str) -> String {
    format!("/squall/runs/{run_id}/login-key")
}
