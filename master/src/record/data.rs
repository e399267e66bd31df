//! The stored shapes of a run's data: every file a fetch stored (with its size and
//! sha256), where a stage's items came from, and the cache's entries.
//!
//! Plain data with serde; the engine fills them in, the runner stores them. Key names
//! are [`super::keys`]'s.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One file a fetch stored, as the runner reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// The run store's key, or an `s3://` URL for a destination in another bucket.
    pub key: String,
    pub size: u64,
    /// sha256 of its bytes, hex, computed while it streamed.
    pub sha256: String,
}

/// One stored file in `run.json`, with the unit that stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub stage: String,
    /// The host that ran the fetch (empty for a cached item: it ran in the run named by
    /// `cached_from`).
    pub host: String,
    /// The shard item, in sharded stages.
    #[serde(default)]
    pub item: Option<usize>,
    /// The agent task id of the fetch (empty for a cached item).
    pub task: String,
    /// The run whose cached files this is a copy of.
    #[serde(default)]
    pub cached_from: Option<String>,
}

/// Where a sharded stage's items are, beyond the first [`ITEMS_IN_RECORD`] kept in
/// the record itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemsFile {
    /// `runs/ID/shards/STAGE.jsonl`: one item per line.
    pub key: String,
    pub count: usize,
    pub sha256: String,
}

/// How many listed items `run.json` keeps inline.
pub const ITEMS_IN_RECORD: usize = 1000;

/// The items of a stage listed from data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemsRecord {
    /// The URL listed (rendered).
    pub source: String,
    pub count: usize,
    /// The items, when there are at most [`ITEMS_IN_RECORD`].
    #[serde(default)]
    pub listed: Option<Vec<Value>>,
    /// The items' file, when there are more.
    #[serde(default)]
    pub file: Option<ItemsFile>,
}

/// `cache/KEY.json`: an item that succeeded, and the files it stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub key: String,
    pub playbook: String,
    pub stage: String,
    pub item: Value,
    /// The run that computed it (whose store holds the files).
    pub run_id: String,
    pub created_at_ms: u64,
    pub files: Vec<CachedFile>,
}

/// A file of a cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedFile {
    /// For a file in the run's files area: its path under `runs/RUN/files/`; `None`
    /// for a file stored at an absolute `s3://` destination (`key` then).
    pub rel: Option<String>,
    pub key: String,
    pub size: u64,
    pub sha256: String,
}
