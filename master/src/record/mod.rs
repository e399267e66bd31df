//! The stored shapes of a run and their key layout: `run.json` ([`run`]), `status.json`
//! ([`heartbeat`]), the launcher's `claim.json`/`request.json`/`launch.json`
//! ([`launch`]), where each lives in the store ([`keys`]), and run ids ([`runid`]).
//!
//! Plain data: nothing here performs IO or decides anything about a run.

pub mod data;
pub mod heartbeat;
pub mod journal;
pub mod keys;
pub mod launch;
pub mod run;
pub mod runid;

pub use data::{
    CacheEntry, CachedFile, FileRecord, ITEMS_IN_RECORD, ItemsFile, ItemsRecord, StoredFile,
};
pub use heartbeat::{Heartbeat, HostBeat};
pub use launch::{Claim, LaunchFailure, LaunchRecord, RunRequest};
pub use run::{
    HostLoss, HostRecord, InterruptionRecord, LogSnapshot, Phase, PhaseMark, PlaybookInfo,
    RECORD_VERSION, Replaced, ReplacementRecord, RunRecord, RunStatus, StageRecord, TaskOutcome,
    TaskRecord, TeardownRecord,
};
