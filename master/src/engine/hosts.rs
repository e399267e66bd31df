//! The host table: every host of the run with its instance and its state (booting,
//! ready, lost), in launch order. Hosts are only ever added, so a [`HostId`] stays valid
//! for the whole run and hosts can join mid-run.
//!
//! It keeps per-group counts and the number of hosts still bootstrapping, so every
//! question the engine asks of it is O(1) or O(log n). It decides nothing: losing a
//! host's work is the schedulers' business.

use super::types::{HostId, LaunchedInstance};
use crate::record::{HostBeat, HostLoss, HostRecord, LogSnapshot, Replaced};
use std::collections::{BTreeMap, BTreeSet};

/// One host of the run.
#[derive(Debug, Clone)]
pub struct Host {
    /// What the record says of it.
    pub rec: HostRecord,
    /// Its index in its group (`host.index`).
    pub index: u32,
    /// Bootstrapped at some point (a lost host may still hold logs).
    pub ready: bool,
    /// A bootstrap was asked for and has not answered.
    pub bootstrapping: bool,
    /// A snapshot of its logs is being stored.
    pub snapshotting: bool,
    /// Released early (its logs collected, its instance terminated) or being released.
    pub released: bool,
    /// Takes no new work: a spot notice or rebalance recommendation came, or it is
    /// replaying earlier stages as a replacement.
    pub draining: bool,
    /// A replacement was asked for it (it is not replaced twice).
    pub replaced: bool,
    /// How many replacements its slot (group and index) has had (`-rK`).
    pub generation: u32,
}

impl Host {
    /// Not lost and not released: it can do work.
    pub fn live(&self) -> bool {
        self.rec.lost.is_none() && !self.released
    }
}

/// A place in a group a replacement takes: the group, the lost host's index, and
/// how many replacements the place has had with this one (`-rK`).
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub group: &'a str,
    pub index: u32,
    pub generation: u32,
}

/// Every host of the run. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct HostTable {
    hosts: Vec<Host>,
    group_counts: BTreeMap<String, u32>,
    /// Each group's hosts, in id order (so a group's questions cost its size, not the
    /// run's).
    by_group: BTreeMap<String, Vec<HostId>>,
    bootstrapping: usize,
    live: usize,
}

impl HostTable {
    /// Adds the `index`-th host of `group`; returns its id.
    pub fn add(
        &mut self,
        group: &str,
        index: u32,
        inst: LaunchedInstance,
        now_ms: u64,
        bootstrapping: bool,
    ) -> HostId {
        let id = self.hosts.len();
        self.hosts.push(Host {
            rec: HostRecord {
                name: format!("{group}-{index}"),
                group: group.to_owned(),
                instance_id: inst.id,
                address: inst.address,
                instance_type: inst.instance_type,
                launched_at_ms: now_ms,
                ready_at_ms: None,
                lost: None,
                archive: None,
                archive_error: None,
                snapshot: None,
                replaces: None,
                interruption: None,
                released_at_ms: None,
            },
            index,
            ready: false,
            bootstrapping,
            snapshotting: false,
            released: false,
            draining: false,
            replaced: false,
            generation: 0,
        });
        *self.group_counts.entry(group.to_owned()).or_default() += 1;
        self.by_group.entry(group.to_owned()).or_default().push(id);
        self.bootstrapping += usize::from(bootstrapping);
        self.live += 1;
        id
    }

    /// Adds a replacement in `group`'s slot `index` (its `generation`-th), named
    /// `GROUP-INDEX-rK`; it does not change `host.count`. Returns its id.
    pub fn add_replacement(
        &mut self,
        slot: Slot<'_>,
        inst: LaunchedInstance,
        now_ms: u64,
        replaces: Replaced,
        bootstrapping: bool,
    ) -> HostId {
        let Slot {
            group,
            index,
            generation,
        } = slot;
        let id = self.add(group, index, inst, now_ms, bootstrapping);
        *self.group_counts.entry(group.to_owned()).or_default() -= 1;
        let h = &mut self.hosts[id];
        h.rec.name = format!("{group}-{index}-r{generation}");
        h.rec.replaces = Some(replaces);
        h.generation = generation;
        id
    }

    /// Puts back a host an earlier master journaled, as it was: a replacement keeps its
    /// name and slot, a lost or released host stays so. A live one is bootstrapped
    /// again (adopted) when `bootstrapping`. Returns its id (ids are restored in order).
    pub fn restore(
        &mut self,
        index: u32,
        generation: u32,
        rec: HostRecord,
        bootstrapping: bool,
    ) -> HostId {
        let id = self.hosts.len();
        let replacement = rec.replaces.is_some();
        let released = rec.released_at_ms.is_some();
        let live = rec.lost.is_none() && !released;
        let group = rec.group.clone();
        let bootstrapping = bootstrapping && live;
        self.hosts.push(Host {
            rec,
            index,
            ready: false,
            bootstrapping,
            snapshotting: false,
            released,
            draining: false,
            replaced: false,
            generation,
        });
        if !replacement {
            *self.group_counts.entry(group.clone()).or_default() += 1;
        }
        self.by_group.entry(group).or_default().push(id);
        self.bootstrapping += usize::from(bootstrapping);
        self.live += usize::from(live);
        id
    }

    /// The host is being released early: it takes no more work and is not collected
    /// with the others. False when it was released or lost already.
    pub fn release(&mut self, id: HostId) -> bool {
        let Some(h) = self.hosts.get_mut(id) else {
            return false;
        };
        if !h.live() {
            return false;
        }
        h.released = true;
        self.live -= 1;
        true
    }

    pub fn get(&self, id: HostId) -> Option<&Host> {
        self.hosts.get(id)
    }

    pub fn get_mut(&mut self, id: HostId) -> Option<&mut Host> {
        self.hosts.get_mut(id)
    }

    /// The host's name, or `?` for an unknown id.
    pub fn name(&self, id: HostId) -> &str {
        self.hosts.get(id).map_or("?", |h| h.rec.name.as_str())
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn live_count(&self) -> usize {
        self.live
    }

    /// How many hosts `group` has had (`host.count`).
    pub fn group_count(&self, group: &str) -> u32 {
        self.group_counts.get(group).copied().unwrap_or(0)
    }

    /// Whether no host is waiting for its bootstrap.
    pub fn none_bootstrapping(&self) -> bool {
        self.bootstrapping == 0
    }

    fn end_bootstrap(&mut self, id: HostId) {
        if let Some(h) = self.hosts.get_mut(id)
            && h.bootstrapping
        {
            h.bootstrapping = false;
            self.bootstrapping -= 1;
        }
    }

    /// The host's agent is installed.
    pub fn bootstrapped(&mut self, id: HostId, now_ms: u64) {
        self.end_bootstrap(id);
        if let Some(h) = self.hosts.get_mut(id) {
            h.ready = true;
            h.rec.ready_at_ms = Some(now_ms);
        }
    }

    /// The host's bootstrap failed (it is lost next).
    pub fn bootstrap_failed(&mut self, id: HostId) {
        self.end_bootstrap(id);
    }

    /// Stop waiting for every bootstrap still out (after the stop grace).
    pub fn forget_bootstraps(&mut self) {
        for h in &mut self.hosts {
            h.bootstrapping = false;
        }
        self.bootstrapping = 0;
    }

    /// Marks the host lost; false when it was lost already (or is unknown).
    pub fn mark_lost(&mut self, id: HostId, now_ms: u64, reason: &str) -> bool {
        let Some(h) = self.hosts.get_mut(id) else {
            return false;
        };
        if h.rec.lost.is_some() || h.released {
            return false;
        }
        h.rec.lost = Some(HostLoss {
            at_ms: now_ms,
            reason: reason.to_owned(),
        });
        self.live -= 1;
        self.end_bootstrap(id);
        true
    }

    /// Hosts that were ever bootstrapped (lost ones included) and not released early
    /// (those were collected then), in id order.
    pub fn ever_ready(&self) -> BTreeSet<HostId> {
        (0..self.hosts.len())
            .filter(|h| self.hosts[*h].ready && !self.hosts[*h].released)
            .collect()
    }

    /// Live, bootstrapped hosts of `groups` that take work, in id order.
    pub fn live_ready_in(&self, groups: &[String]) -> Vec<HostId> {
        (0..self.hosts.len())
            .filter(|h| {
                let h = &self.hosts[*h];
                h.live() && h.ready && !h.draining && groups.contains(&h.rec.group)
            })
            .collect()
    }

    /// Live hosts of `group`, ready or not, in id order.
    pub fn live_in(&self, group: &str) -> Vec<HostId> {
        self.by_group
            .get(group)
            .into_iter()
            .flatten()
            .copied()
            .filter(|h| self.hosts[*h].live())
            .collect()
    }

    /// Live, bootstrapped hosts whose logs are not being snapshotted, in id order.
    pub fn snapshot_candidates(&self) -> Vec<HostId> {
        let mut hosts: Vec<HostId> = (0..self.hosts.len())
            .filter(|h| {
                let h = &self.hosts[*h];
                h.live() && h.ready && !h.snapshotting
            })
            .collect();
        // The longest without a snapshot first: when the runner has too few slots for
        // all, those it skipped come first next time.
        hosts.sort_by_key(|h| self.hosts[*h].rec.snapshot.as_ref().map_or(0, |s| s.at_ms));
        hosts
    }

    /// Every host of `group`.
    pub fn in_group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Host> + 'a {
        self.by_group
            .get(group)
            .into_iter()
            .flatten()
            .map(|h| &self.hosts[*h])
    }

    /// A snapshot of the host's logs was stored at `key` (or failed, with `None`).
    pub fn snapshotted(&mut self, id: HostId, key: Option<String>, now_ms: u64) {
        if let Some(h) = self.hosts.get_mut(id) {
            h.snapshotting = false;
            if let Some(key) = key {
                h.rec.snapshot = Some(LogSnapshot { key, at_ms: now_ms });
            }
        }
    }

    /// What the record says of every host.
    pub fn records(&self) -> Vec<HostRecord> {
        self.hosts.iter().map(|h| h.rec.clone()).collect()
    }

    /// Each host's state and running tasks, for the heartbeat; `running` gives a host's
    /// running agent task ids.
    pub fn beats(&self, running: impl Fn(HostId) -> Vec<String>) -> Vec<HostBeat> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostBeat {
                name: h.rec.name.clone(),
                instance_id: h.rec.instance_id.clone(),
                state: if h.rec.lost.is_some() {
                    "lost"
                } else if h.released {
                    "released"
                } else if h.ready {
                    "ready"
                } else {
                    "bootstrapping"
                }
                .to_owned(),
                running: running(i),
            })
            .collect()
    }
}
