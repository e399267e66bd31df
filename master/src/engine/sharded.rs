//! The sharded-stage scheduler: a queue of pending items and a host -> item map. An
//! idle host takes the lowest pending item it has not failed before (or one it failed,
//! when every other live host failed it too); an item's tasks run in order on its host.
//!
//! A failed item goes back to the queue (retried from its first task, on another host
//! where one is live) until its retries are spent. An item whose host is lost goes back
//! without counting as a failure. Each decision costs O(log n): pending items never
//! failed are one ordered set, items failed before (few) another, and only idle hosts
//! are offered work.

use super::stage::{Start, Unit, Verdict};
use super::types::HostId;
use std::collections::{BTreeMap, BTreeSet};

/// One shard item.
#[derive(Debug, Clone, Default)]
struct Item {
    unit: Unit,
    /// The host running it.
    host: Option<HostId>,
    /// Hosts it failed on.
    failed_on: BTreeSet<HostId>,
    /// How many times its host was lost while it ran (from the second, each counts
    /// as a failed attempt: a poison item cannot loop over replacements).
    losses: u32,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Sharded {
    items: Vec<Item>,
    /// Items being looked up in the cache (not yet pending).
    checking: BTreeSet<usize>,
    /// Pending items that never failed.
    fresh: BTreeSet<usize>,
    /// Pending items that failed before.
    retry: BTreeSet<usize>,
    /// Live hosts of the stage.
    live: BTreeSet<HostId>,
    /// Live hosts with no item.
    idle: BTreeSet<HostId>,
    /// Live hosts that take no new item (a spot notice or rebalance recommendation).
    draining: BTreeSet<HostId>,
    /// Items taken back from an interrupted host, not yet back in the queue (their
    /// checkpoint is being fetched).
    held: BTreeSet<usize>,
    /// Each busy host's item.
    assigned: BTreeMap<HostId, usize>,
    /// Items whose next task should start.
    ready: BTreeSet<usize>,
    done: usize,
    n_tasks: usize,
    retries: u32,
}

impl Sharded {
    /// `n_items` items over `hosts`; with `cached`, every item is first looked up in
    /// the cache ([`Sharded::cache_hit`], [`Sharded::cache_miss`]) before it is pending.
    pub fn new(
        hosts: &[HostId],
        n_items: usize,
        n_tasks: usize,
        retries: u32,
        cached: bool,
    ) -> Sharded {
        let all: BTreeSet<usize> = (0..n_items).collect();
        let (checking, fresh) = if cached {
            (all, BTreeSet::new())
        } else {
            (BTreeSet::new(), all)
        };
        Sharded {
            items: vec![Item::default(); n_items],
            checking,
            fresh,
            retry: BTreeSet::new(),
            live: hosts.iter().copied().collect(),
            idle: hosts.iter().copied().collect(),
            draining: BTreeSet::new(),
            held: BTreeSet::new(),
            assigned: BTreeMap::new(),
            ready: BTreeSet::new(),
            done: 0,
            n_tasks,
            retries,
        }
    }

    /// Item `i`'s progress.
    pub fn unit(&self, i: usize) -> Option<&Unit> {
        self.items.get(i).map(|it| &it.unit)
    }

    pub fn done_units(&self) -> usize {
        self.done
    }

    pub fn total_units(&self) -> usize {
        self.items.len()
    }

    /// Item `i` was found in the cache: it is done without running.
    /// False when item `i` was not waiting for its lookup.
    pub fn cache_hit(&mut self, i: usize) -> bool {
        if self.checking.remove(&i) {
            self.items[i].unit.done = true;
            self.done += 1;
            return true;
        }
        false
    }

    /// Puts back item `i`'s progress as an earlier master journaled it: done, pending
    /// (a retry if it failed before), or, with `on`, running on that host again (its
    /// current attempt is re-attached by its task id). True when it was put on `on`.
    pub fn restore(&mut self, i: usize, unit: Unit, on: Option<HostId>) -> bool {
        if i >= self.items.len() || self.items[i].unit.done {
            return false;
        }
        self.checking.remove(&i);
        self.fresh.remove(&i);
        self.retry.remove(&i);
        let done = unit.done;
        self.items[i].unit = Unit {
            running: false,
            ..unit
        };
        if done {
            self.done += 1;
            return false;
        }
        if let Some(h) = on
            && self.idle.remove(&h)
        {
            self.items[i].host = Some(h);
            self.assigned.insert(h, i);
            self.ready.insert(i);
            return true;
        }
        if on.is_some() {
            // Its attempt ran on a host that is gone: the next one has a new task id.
            self.items[i].unit.try_no += 1;
        }
        self.items[i].unit.next_task = 0;
        if self.items[i].unit.failures > 0 {
            self.retry.insert(i);
        } else {
            self.fresh.insert(i);
        }
        false
    }

    /// Whether item `i` waits for its cache lookup.
    pub fn is_checking(&self, i: usize) -> bool {
        self.checking.contains(&i)
    }

    /// Item `i` is not in the cache: it is pending like any other.
    pub fn cache_miss(&mut self, i: usize) {
        if self.checking.remove(&i) {
            self.fresh.insert(i);
        }
    }

    /// Items are left and no live host can take them.
    pub fn stranded(&self) -> bool {
        self.live.len() == self.draining.len() && self.done < self.items.len() && {
            // A draining host still finishing its item is not stranded yet.
            self.assigned.is_empty()
        }
    }

    /// Whether an item is waiting for a host (or for its cache lookup, or its
    /// checkpoint): a host with nothing to do may still get one.
    pub fn has_pending(&self) -> bool {
        !(self.fresh.is_empty()
            && self.retry.is_empty()
            && self.checking.is_empty()
            && self.held.is_empty())
    }

    /// Live hosts with no item, in id order.
    pub fn idle_hosts(&self) -> Vec<HostId> {
        self.idle.iter().copied().collect()
    }

    /// The item `host` runs.
    pub fn item_on(&self, host: HostId) -> Option<usize> {
        self.assigned.get(&host).copied()
    }

    /// A host joins the stage (a replacement): it takes items like the others.
    pub fn add_host(&mut self, host: HostId) {
        if self.live.insert(host) && !self.assigned.contains_key(&host) {
            self.idle.insert(host);
        }
    }

    /// `host` takes no new item; the one it runs goes on.
    pub fn drain(&mut self, host: HostId) {
        if self.live.contains(&host) {
            self.draining.insert(host);
            self.idle.remove(&host);
        }
    }

    /// `host` leaves the stage with no item (released early).
    pub fn remove_host(&mut self, host: HostId) {
        self.live.remove(&host);
        self.idle.remove(&host);
        self.draining.remove(&host);
    }

    /// The item on `host` is taken back for an interruption: it runs no further task
    /// until [`Sharded::requeue_held`] puts it back in the queue.
    pub fn hold(&mut self, host: HostId) -> Option<usize> {
        let i = self.assigned.remove(&host)?;
        self.ready.remove(&i);
        let item = &mut self.items[i];
        item.unit.running = false;
        item.host = None;
        self.held.insert(i);
        Some(i)
    }

    /// A held item goes back to the queue without counting as a failure.
    pub fn requeue_held(&mut self, i: usize) {
        if self.held.remove(&i) {
            self.items[i].unit.try_no += 1;
            self.requeue(i);
        }
    }

    /// The lowest pending item `host` may take.
    fn pick(&self, host: HostId) -> Option<usize> {
        let fresh = self.fresh.first().copied();
        // Items failed before: one this host failed only when every other live host
        // failed it too (a retry goes elsewhere where it can).
        let others = self.live.len() - usize::from(self.live.contains(&host));
        let retry = self.retry.iter().copied().find(|i| {
            let failed = &self.items[*i].failed_on;
            !failed.contains(&host)
                || failed
                    .iter()
                    .filter(|h| **h != host && self.live.contains(h))
                    .count()
                    == others
        });
        match (fresh, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gives each idle host (in id order) the item it should take next.
    pub fn assign(&mut self) {
        if self.fresh.is_empty() && self.retry.is_empty() {
            return;
        }
        let idle: Vec<HostId> = self.idle.iter().copied().collect();
        for host in idle {
            if self.fresh.is_empty() && self.retry.is_empty() {
                return;
            }
            let Some(i) = self.pick(host) else { continue };
            if !self.fresh.remove(&i) {
                self.retry.remove(&i);
            }
            self.items[i].host = Some(host);
            self.assigned.insert(host, i);
            self.idle.remove(&host);
            self.ready.insert(i);
        }
    }

    /// The tasks to start now, in item order.
    pub fn starts(&mut self) -> Vec<Start> {
        let mut out = Vec::new();
        for i in std::mem::take(&mut self.ready) {
            let item = &mut self.items[i];
            let Some(host) = item.host else { continue };
            item.unit.running = true;
            out.push(Start {
                unit: i,
                task: item.unit.next_task,
                try_no: item.unit.try_no,
                host,
                item: Some(i),
            });
        }
        out
    }

    /// Frees `host` for the next item.
    fn release(&mut self, host: HostId) {
        self.assigned.remove(&host);
        if self.live.contains(&host) && !self.draining.contains(&host) {
            self.idle.insert(host);
        }
    }

    /// Puts item `i` back in the queue.
    fn requeue(&mut self, i: usize) {
        let item = &mut self.items[i];
        item.host = None;
        item.unit.next_task = 0;
        if item.failed_on.is_empty() {
            self.fresh.insert(i);
        } else {
            self.retry.insert(i);
        }
    }

    /// An attempt of item `unit` on `host` ended.
    pub fn finished(&mut self, unit: usize, host: HostId, succeeded: bool) -> Verdict {
        let Some(item) = self.items.get_mut(unit) else {
            return Verdict::Continue;
        };
        let u = &mut item.unit;
        if succeeded {
            // An item's retries restart at its first task and its task ids (which carry
            // `try_no`) must never repeat, so `try_no` keeps counting across tasks.
            if u.succeeded(self.n_tasks) {
                self.done += 1;
                self.release(host);
            } else {
                self.ready.insert(unit);
            }
            return Verdict::Continue;
        }
        if u.failed(self.retries) {
            item.failed_on.insert(host);
            self.release(host);
            self.requeue(unit);
            return Verdict::Continue;
        }
        Verdict::GiveUp {
            attempts: item.unit.failures,
            item: Some(unit),
        }
    }

    /// `host` was lost: its item goes back to the queue, not counted as a failure the
    /// first time; from its second lost host on, each loss counts as a failed attempt.
    pub fn host_lost(&mut self, host: HostId) -> Verdict {
        self.live.remove(&host);
        self.idle.remove(&host);
        self.draining.remove(&host);
        let Some(i) = self.assigned.remove(&host) else {
            return Verdict::Continue;
        };
        self.ready.remove(&i);
        let item = &mut self.items[i];
        item.unit.running = false;
        item.losses += 1;
        if item.losses < 2 {
            item.unit.try_no += 1;
            self.requeue(i);
            return Verdict::Continue;
        }
        if item.unit.failed(self.retries) {
            item.failed_on.insert(host);
            self.requeue(i);
            return Verdict::Continue;
        }
        Verdict::GiveUp {
            attempts: item.unit.failures,
            item: Some(i),
        }
    }
}
