//! The plain-stage scheduler: one unit per host of the stage, each running the stage's
//! tasks in order on its own host; a failed task is retried on the same host, each
//! task with its own retry budget.
//!
//! Units to start are kept in a queue, so a decision costs O(log n) whatever the
//! number of hosts. A host lost with its unit unfinished is reported to the engine,
//! which fails the run unless a replacement takes the unit over ([`Plain::rehome`]): it
//! then waits, and starts again from its first task once the replacement is ready
//! ([`Plain::resume`]).

use super::stage::{Start, Unit, Verdict};
use super::types::HostId;
use std::collections::{BTreeMap, BTreeSet};

/// One host's turn at the stage.
#[derive(Debug, Clone)]
struct HostUnit {
    host: HostId,
    unit: Unit,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Plain {
    units: Vec<HostUnit>,
    by_host: BTreeMap<HostId, usize>,
    /// Units whose next task should start.
    ready: BTreeSet<usize>,
    done: usize,
    n_tasks: usize,
    retries: u32,
}

impl Plain {
    /// A unit per host, in the order given: the `ready` hosts' units start now, the
    /// `waiting` ones' (replacements not ready yet) when [`Plain::resume`]d.
    pub fn new(ready: &[HostId], waiting: &[HostId], n_tasks: usize, retries: u32) -> Plain {
        let hosts: Vec<HostId> = ready.iter().chain(waiting).copied().collect();
        Plain {
            units: hosts
                .iter()
                .map(|h| HostUnit {
                    host: *h,
                    unit: Unit::default(),
                })
                .collect(),
            by_host: hosts.iter().enumerate().map(|(u, h)| (*h, u)).collect(),
            ready: (0..ready.len()).collect(),
            done: 0,
            n_tasks,
            retries,
        }
    }

    /// The host of each unit, in unit order.
    /// A stage an earlier master opened, its units owned by `owners` in unit order (as
    /// journaled); the units of `ready` hosts may start, the others wait for their
    /// replacement ([`Plain::rehome`]).
    pub fn restore(
        owners: &[HostId],
        ready: &BTreeSet<HostId>,
        n_tasks: usize,
        retries: u32,
    ) -> Plain {
        Plain {
            units: owners
                .iter()
                .map(|h| HostUnit {
                    host: *h,
                    unit: Unit::default(),
                })
                .collect(),
            by_host: owners.iter().enumerate().map(|(u, h)| (*h, u)).collect(),
            ready: (0..owners.len())
                .filter(|u| ready.contains(&owners[*u]))
                .collect(),
            done: 0,
            n_tasks,
            retries,
        }
    }

    /// Puts back unit `u`'s progress as an earlier master journaled it.
    pub fn restore_unit(&mut self, u: usize, unit: Unit) {
        let Some(hu) = self.units.get_mut(u) else {
            return;
        };
        if hu.unit.done {
            return;
        }
        hu.unit = Unit {
            running: false,
            ..unit
        };
        if hu.unit.done {
            self.done += 1;
            self.ready.remove(&u);
        }
    }

    pub fn owners(&self) -> Vec<HostId> {
        self.units.iter().map(|u| u.host).collect()
    }

    /// The host a unit belongs to now.
    pub fn host_of(&self, unit: usize) -> Option<HostId> {
        self.units.get(unit).map(|u| u.host)
    }

    /// Whether `host` has a unit here that is not done.
    pub fn owes(&self, host: HostId) -> bool {
        self.by_host
            .get(&host)
            .is_some_and(|u| !self.units[*u].unit.done)
    }

    /// `new` takes over `old`'s unit (a replacement): it waits for [`Plain::resume`],
    /// then starts again from its first task (the new host has none of the old one's
    /// work). Nothing happens when `old` has no unit or its unit is done.
    pub fn rehome(&mut self, old: HostId, new: HostId) {
        let Some(&u) = self.by_host.get(&old) else {
            return;
        };
        if self.units[u].unit.done {
            return;
        }
        self.by_host.remove(&old);
        self.by_host.insert(new, u);
        self.ready.remove(&u);
        let hu = &mut self.units[u];
        hu.host = new;
        hu.unit.running = false;
        hu.unit.next_task = 0;
        hu.unit.failures = 0;
        hu.unit.try_no += 1;
    }

    /// `host`'s unit (taken over, or interrupted) may start its next task.
    pub fn resume(&mut self, host: HostId) {
        if let Some(&u) = self.by_host.get(&host)
            && !self.units[u].unit.done
            && !self.units[u].unit.running
        {
            self.ready.insert(u);
        }
    }

    /// `host`'s running task was stopped (an interruption): its unit waits.
    pub fn suspend(&mut self, host: HostId) {
        if let Some(&u) = self.by_host.get(&host) {
            self.units[u].unit.running = false;
            self.ready.remove(&u);
        }
    }

    /// Unit `u`'s progress.
    pub fn unit(&self, u: usize) -> Option<&Unit> {
        self.units.get(u).map(|hu| &hu.unit)
    }

    pub fn done_units(&self) -> usize {
        self.done
    }

    pub fn total_units(&self) -> usize {
        self.units.len()
    }

    /// The tasks to start now, in unit order.
    pub fn starts(&mut self) -> Vec<Start> {
        std::mem::take(&mut self.ready)
            .into_iter()
            .map(|u| {
                let hu = &mut self.units[u];
                hu.unit.running = true;
                Start {
                    unit: u,
                    task: hu.unit.next_task,
                    try_no: hu.unit.try_no,
                    host: hu.host,
                    item: None,
                }
            })
            .collect()
    }

    /// An attempt of `unit` ended.
    pub fn finished(&mut self, unit: usize, succeeded: bool) -> Verdict {
        let Some(hu) = self.units.get_mut(unit) else {
            return Verdict::Continue;
        };
        let u = &mut hu.unit;
        if succeeded {
            // Each task of a plain stage has its own retry budget.
            u.try_no = 0;
            u.failures = 0;
            if u.succeeded(self.n_tasks) {
                self.done += 1;
            } else {
                self.ready.insert(unit);
            }
            return Verdict::Continue;
        }
        if u.failed(self.retries) {
            self.ready.insert(unit);
            return Verdict::Continue;
        }
        Verdict::GiveUp {
            attempts: u.failures,
            item: None,
        }
    }

    /// `host` was lost; true when its unit was not done.
    pub fn host_lost(&mut self, host: HostId) -> bool {
        let Some(&u) = self.by_host.get(&host) else {
            return false;
        };
        self.ready.remove(&u);
        let unit = &mut self.units[u].unit;
        unit.running = false;
        !unit.done
    }
}
