//! The plain-stage scheduler: one unit per host of the stage, each running the stage's
//! tasks in order on its own host; a failed task is retried on the same host, each
//! task with its own retry budget.
//!
//! Units to start are kept in a queue, so a decision costs O(log n) whatever the
//! number of hosts. A host lost with its unit unfinished is reported to the engine,
//! which fails the run: nobody else can do that host's share.

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
    /// A unit per host, in the order given.
    pub fn new(hosts: &[HostId], n_tasks: usize, retries: u32) -> Plain {
        Plain {
            units: hosts
                .iter()
                .map(|h| HostUnit {
                    host: *h,
                    unit: Unit::default(),
                })
                .collect(),
            by_host: hosts.iter().enumerate().map(|(u, h)| (*h, u)).collect(),
            ready: (0..hosts.len()).collect(),
            done: 0,
            n_tasks,
            retries,
        }
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
