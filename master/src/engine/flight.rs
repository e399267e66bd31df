//! The task attempts in flight: started and not yet answered, by key and by host.
//!
//! Every attempt carries what its record will need (its rendered name, its item) so an
//! answer can be recorded whatever phase the run is in by then. Deciding what an answer
//! means is the engine's and the schedulers' job.

use super::types::{HostId, TaskKey};
use std::collections::{BTreeMap, BTreeSet};

/// One attempt in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub host: HostId,
    /// The rendered task name.
    pub name: String,
    /// The shard item, in sharded stages.
    pub item: Option<usize>,
    /// Its success completes its item (the last task of a sharded stage).
    pub completes_item: bool,
    /// For a fetch: where its files go, whether no match is fine, and the glob.
    pub fetch: Option<FetchInfo>,
    /// What the attempt is part of: the running stage, or a replacement replaying an
    /// earlier one, or an interrupted item's checkpoint fetch.
    pub kind: AttemptKind,
    /// It was asked to stop for a spot interruption notice.
    pub interrupted: bool,
}

/// What an attempt is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// The running stage's work.
    Stage,
    /// A replacement replaying a stage that completed before it came.
    Replay,
    /// An `on_interrupt` fetch of an item taken back from an interrupted host.
    Salvage,
}

/// What the engine needs to place a fetch's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchInfo {
    pub dest: crate::plan::url::FetchDest,
    pub optional: bool,
    pub pattern: String,
}

/// The attempts in flight. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Flight {
    by_key: BTreeMap<TaskKey, Attempt>,
    by_host: BTreeMap<HostId, BTreeSet<TaskKey>>,
}

impl Flight {
    /// Adds an attempt. An attempt with the same key on another host (a lost or
    /// interrupted host's, whose slot a replacement took over) is dropped: its answer,
    /// if one comes, is not this attempt's.
    /// Returns the attempt it displaced, if any, for the record.
    pub fn insert(&mut self, key: TaskKey, attempt: Attempt) -> Option<Attempt> {
        let mut displaced = None;
        if let Some(old) = self.by_key.get(&key)
            && old.host != attempt.host
        {
            let old_host = old.host;
            if let Some(keys) = self.by_host.get_mut(&old_host) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.by_host.remove(&old_host);
                }
            }
            displaced = self.by_key.remove(&key);
        }
        self.by_host.entry(attempt.host).or_default().insert(key);
        self.by_key.insert(key, attempt);
        displaced
    }

    /// Takes an attempt out; `None` when it was not in flight (answered already).
    pub fn remove(&mut self, key: &TaskKey) -> Option<Attempt> {
        let attempt = self.by_key.remove(key)?;
        if let Some(keys) = self.by_host.get_mut(&attempt.host) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_host.remove(&attempt.host);
            }
        }
        Some(attempt)
    }

    pub fn get(&self, key: &TaskKey) -> Option<&Attempt> {
        self.by_key.get(key)
    }

    pub fn get_mut(&mut self, key: &TaskKey) -> Option<&mut Attempt> {
        self.by_key.get_mut(key)
    }

    /// The keys of the attempts on `host`, in key order.
    pub fn keys_on(&self, host: HostId) -> Vec<TaskKey> {
        self.by_host
            .get(&host)
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether an attempt runs on `host`.
    pub fn busy(&self, host: HostId) -> bool {
        self.by_host.contains_key(&host)
    }

    /// Takes out every attempt on `host`, in key order.
    pub fn remove_host(&mut self, host: HostId) -> Vec<(TaskKey, Attempt)> {
        let keys = self.by_host.remove(&host).unwrap_or_default();
        keys.into_iter()
            .filter_map(|k| self.by_key.remove(&k).map(|a| (k, a)))
            .collect()
    }

    /// Takes out every attempt, in key order.
    pub fn drain(&mut self) -> Vec<(TaskKey, Attempt)> {
        self.by_host.clear();
        std::mem::take(&mut self.by_key).into_iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every attempt in flight, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&TaskKey, &Attempt)> {
        self.by_key.iter()
    }

    /// The agent ids of the attempts running on `host`, in key order.
    pub fn agent_ids_on(&self, host: HostId) -> Vec<String> {
        self.by_host
            .get(&host)
            .map(|keys| keys.iter().map(TaskKey::agent_id).collect())
            .unwrap_or_default()
    }
}
