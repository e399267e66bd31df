//! One running stage: its scheduler ([`super::plain`] or [`super::sharded`]) behind one
//! interface, and the unit of work both schedule.
//!
//! A scheduler only knows units, hosts and attempts: it says which unit to start on
//! which host and what a finished attempt or a lost host means for the stage. Rendering
//! tasks and recording attempts are the engine's job.

use super::plain::Plain;
use super::sharded::Sharded;
use super::types::HostId;

/// A unit of work: one host's turn at a plain stage, or one shard item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    /// The index of the task to run next.
    pub next_task: usize,
    /// Counts every start of the current task (or item), lost hosts included.
    pub try_no: u32,
    /// Failed attempts counted against the retries.
    pub failures: u32,
    pub running: bool,
    pub done: bool,
}

impl Unit {
    /// The unit's current task succeeded; true when it was its last.
    pub fn succeeded(&mut self, n_tasks: usize) -> bool {
        self.running = false;
        self.next_task += 1;
        self.done = self.next_task == n_tasks;
        self.done
    }

    /// The unit's current task failed; true when a retry is left (and counted in
    /// `try_no`, so the retry's task id is new).
    pub fn failed(&mut self, retries: u32) -> bool {
        self.running = false;
        self.failures += 1;
        let retry = self.failures <= retries;
        if retry {
            self.try_no += 1;
        }
        retry
    }
}

/// A task the engine should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub unit: usize,
    pub task: usize,
    pub try_no: u32,
    pub host: HostId,
    /// The shard item, in sharded stages.
    pub item: Option<usize>,
}

/// What a finished attempt means for its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The stage goes on (the unit moves on, or it is retried).
    Continue,
    /// The unit failed after its retries: the run fails.
    GiveUp { attempts: u32, item: Option<usize> },
}

/// What losing a host means for its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Nothing the others cannot do (its item, if any, is back in the queue).
    Nothing,
    /// It owed a plain stage its unit: only a replacement can do it.
    Owed,
    /// Its item lost a host once too often and has no retry left.
    GiveUp { attempts: u32, item: Option<usize> },
}

/// A stage's scheduler.
#[derive(Debug, Clone)]
pub enum Scheduler {
    Plain(Plain),
    /// Boxed: its queues make it much larger than the others.
    Sharded(Box<Sharded>),
    /// A sharded stage whose items are being listed.
    Listing,
}

/// The stage that is running.
#[derive(Debug, Clone)]
pub struct StageRun {
    pub index: usize,
    pub started_at_ms: u64,
    pub sched: Scheduler,
    /// Its shard items (written in the playbook, or listed); empty for a plain stage.
    pub items: std::sync::Arc<Vec<serde_json::Value>>,
}

impl StageRun {
    pub fn is_sharded(&self) -> bool {
        matches!(self.sched, Scheduler::Sharded(_) | Scheduler::Listing)
    }

    /// Every unit is done (a stage still listing its items is not).
    pub fn is_done(&self) -> bool {
        !matches!(self.sched, Scheduler::Listing) && self.done_units() == self.total_units()
    }

    pub fn done_units(&self) -> usize {
        match &self.sched {
            Scheduler::Plain(p) => p.done_units(),
            Scheduler::Sharded(s) => s.done_units(),
            Scheduler::Listing => 0,
        }
    }

    pub fn total_units(&self) -> usize {
        match &self.sched {
            Scheduler::Plain(p) => p.total_units(),
            Scheduler::Sharded(s) => s.total_units(),
            Scheduler::Listing => 0,
        }
    }

    /// Whether `unit` is done.
    pub fn unit_done(&self, unit: usize) -> bool {
        match &self.sched {
            Scheduler::Plain(p) => p.unit(unit).is_some_and(|u| u.done),
            Scheduler::Sharded(s) => s.unit(unit).is_some_and(|u| u.done),
            Scheduler::Listing => false,
        }
    }

    /// Gives idle hosts work and returns the tasks to start, in unit order.
    pub fn starts(&mut self) -> Vec<Start> {
        match &mut self.sched {
            Scheduler::Plain(p) => p.starts(),
            Scheduler::Sharded(s) => {
                s.assign();
                s.starts()
            }
            Scheduler::Listing => Vec::new(),
        }
    }

    /// An attempt of `unit` on `host` ended.
    pub fn finished(&mut self, unit: usize, host: HostId, succeeded: bool) -> Verdict {
        match &mut self.sched {
            Scheduler::Plain(p) => p.finished(unit, succeeded),
            Scheduler::Sharded(s) => s.finished(unit, host, succeeded),
            Scheduler::Listing => Verdict::Continue,
        }
    }

    /// `host` was lost: what that means for the stage.
    pub fn host_lost(&mut self, host: HostId) -> Loss {
        match &mut self.sched {
            Scheduler::Plain(p) => {
                if p.host_lost(host) {
                    Loss::Owed
                } else {
                    Loss::Nothing
                }
            }
            Scheduler::Sharded(s) => match s.host_lost(host) {
                Verdict::GiveUp { attempts, item } => Loss::GiveUp { attempts, item },
                Verdict::Continue => Loss::Nothing,
            },
            Scheduler::Listing => Loss::Nothing,
        }
    }

    /// A sharded stage with items left and no live host to take them.
    pub fn stranded(&self) -> bool {
        match &self.sched {
            Scheduler::Sharded(s) => s.stranded(),
            _ => false,
        }
    }
}
