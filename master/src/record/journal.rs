//! The run's journal: what a master has done, kept in the run's prefix as it happens,
//! so that a successor master can rebuild the run from the store alone
//! (`runs/RUN_ID/journal/GGGG-SSSSSSSS.json`, one object per flush, never rewritten).
//!
//! Each [`Batch`] is a list of [`Entry`]s. Entries are facts, never edits: a host's or
//! a stage's later entry supersedes its earlier one, attempts and files only add up. A
//! journal cut after any batch (a crash at any moment) is therefore a consistent,
//! earlier view of the run. Plain data; the engine writes and reads it.

use super::{FileRecord, HostRecord, ItemsFile, ReplacementRecord, RunStatus, StageRecord};
use super::{TaskRecord, TeardownRecord};
use serde::{Deserialize, Serialize};

/// One attempt of one task of one unit (the engine's task key, as stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attempt {
    pub stage: usize,
    pub unit: usize,
    pub task: usize,
    pub try_no: u32,
}

/// One fact about the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// The run began (written once, by the first master): the times every generation
    /// keeps.
    Began {
        started_at_ms: u64,
        deadline_at_ms: u64,
    },
    /// A host of the run and its record as of this entry (the last entry of an id wins).
    Host {
        id: usize,
        index: u32,
        generation: u32,
        host: HostRecord,
    },
    /// A stage's record as of this entry (the last entry of an index wins).
    Stage { index: usize, stage: StageRecord },
    /// The hosts owning a plain stage's units, in unit order.
    Owners { stage: usize, hosts: Vec<usize> },
    /// A sharded stage's items, as listed (or written).
    Items {
        stage: usize,
        items: Vec<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<ItemsFile>,
    },
    /// An attempt was started on a host (its agent task id follows from the attempt).
    Started { attempt: Attempt, host: usize },
    /// An attempt ended, as the record keeps it (its `id` is the agent task id).
    Ended { task: TaskRecord },
    /// A unit (a host's turn at a plain stage, or a shard item) completed: its files
    /// are stored.
    Completed { stage: usize, unit: usize },
    /// A fetched (or cached) file of a unit was stored.
    File {
        stage: usize,
        unit: usize,
        file: FileRecord,
    },
    /// A replacement as the record keeps it (the last entry of an index wins).
    Replacement {
        index: usize,
        replacement: ReplacementRecord,
    },
    /// A replacement finished replaying earlier stages and takes work.
    Joined { host: usize },
    /// A cached stage's item has this cache key (for its entry once it succeeds).
    CacheKey {
        stage: usize,
        unit: usize,
        key: String,
    },
    /// The run's fate was decided: from here it only winds down.
    Fate {
        status: RunStatus,
        #[serde(default)]
        reason: Option<String>,
    },
    /// The run's instances were terminated.
    TornDown { teardown: TeardownRecord },
}

/// One flush of the journal: one stored object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The master generation that wrote it (1 for the first master).
    pub generation: u32,
    /// Its place in the generation's journal, from 0.
    pub seq: u64,
    pub entries: Vec<Entry>,
}

/// A master generation's claim (`runs/RUN_ID/generation/N`, create-if-absent): who
/// took over, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub run_id: String,
    pub generation: u32,
    pub claimed_at_ms: u64,
    pub reason: String,
    /// The master instances fenced (terminated and seen terminated) before the claim.
    #[serde(default)]
    pub fenced: Vec<String>,
    /// The successor's instance, once launched.
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// What a successor master made of the run it took over, for the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    /// Journal entries it read.
    pub entries: usize,
    /// Units the journal showed complete (never run again).
    pub completed: usize,
    /// Hosts it reached and kept.
    pub adopted: Vec<String>,
    /// Hosts it could not reach (lost, and replaced where the run allows).
    pub unreachable: Vec<String>,
    /// Running attempts it re-attached to by agent task id.
    pub reattached: Vec<String>,
    /// Units started again because their host was gone.
    pub rerun: Vec<String>,
}

/// One master of the run, as the record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterRecord {
    pub generation: u32,
    pub claimed_at_ms: u64,
    pub reason: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub fenced: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover: Option<Takeover>,
}
