//! Keeping the run's journal (see [`crate::record::journal`]): what the engine tells a
//! successor master, as [`Action::Journal`] batches.
//!
//! Facts that happen once (an attempt started, a unit completed, a file stored, items
//! listed, the fate decided) are noted as they happen; records that change (hosts,
//! stages, plain stages' owners, replacements) are compared at each flush with what
//! was journaled last, and only changes are written; ended attempts are the book's
//! new task records. A flush happens at most every `every_ms`, at once past
//! [`MAX_ENTRIES`] entries, and on every phase change, so a crash loses at most the
//! last interval. The completed units are kept whether or not a journal is written:
//! they are what a resumed run must never run again.

use super::Engine;
use super::types::{Action, TaskKey};
use crate::record::journal::{Attempt, Batch, Entry};
use crate::record::{HostRecord, Phase, ReplacementRecord, StageRecord};
use std::collections::{BTreeMap, BTreeSet};

/// A flush happens once this many entries wait.
pub const MAX_ENTRIES: usize = 1000;

/// The engine's journal state. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// How often to flush; `None`: no journal is written.
    pub every_ms: Option<u64>,
    /// The writer's generation (1 for the first master).
    pub generation: u32,
    pending: Vec<Entry>,
    seq: u64,
    last_flush_ms: u64,
    last_phase: Option<Phase>,
    /// What was journaled last of each host, stage, owners list and replacement.
    hosts: Vec<Option<HostRecord>>,
    stages: Vec<StageRecord>,
    owners: BTreeMap<usize, Vec<usize>>,
    replacements: Vec<ReplacementRecord>,
    tasks: usize,
    /// The run's fate is in the journal.
    pub fate_noted: bool,
    /// Every unit (stage, unit) completed so far, by this master or an earlier one.
    pub completed: BTreeSet<(usize, usize)>,
}

impl Journal {
    pub fn new(every_ms: Option<u64>, generation: u32) -> Journal {
        Journal {
            every_ms,
            generation,
            ..Journal::default()
        }
    }

    /// Notes a fact, to be written with the next flush.
    pub fn note(&mut self, entry: Entry) {
        if self.every_ms.is_some() {
            self.pending.push(entry);
        }
    }

    /// Takes what an earlier generation journaled as already written (a successor only
    /// writes what changes after it took over).
    pub fn seen(
        &mut self,
        hosts: Vec<Option<HostRecord>>,
        stages: Vec<StageRecord>,
        owners: BTreeMap<usize, Vec<usize>>,
        replacements: Vec<ReplacementRecord>,
        tasks: usize,
    ) {
        self.hosts = hosts;
        self.stages = stages;
        self.owners = owners;
        self.replacements = replacements;
        self.tasks = tasks;
    }
}

pub(super) fn attempt(key: TaskKey) -> Attempt {
    Attempt {
        stage: key.stage,
        unit: key.unit,
        task: key.task,
        try_no: key.try_no,
    }
}

impl Engine {
    /// A unit completed (its files are stored): never to run again.
    pub(super) fn unit_completed(&mut self, stage: usize, unit: usize) {
        if self.journal.completed.insert((stage, unit)) {
            self.journal.note(Entry::Completed { stage, unit });
        }
    }

    /// The units completed so far, by this master or an earlier generation's.
    pub fn completed_units(&self) -> &BTreeSet<(usize, usize)> {
        &self.journal.completed
    }

    /// Flushes the journal when it is due (or `force`d): one batch, changed records
    /// first, then the facts noted since the last flush.
    /// Flushes the journal as it falls due, and at once when `out` starts attempts: the
    /// batch goes before the starts (the runner starts a task only once the journal
    /// sent before it is stored), so every attempt a successor could find running on a
    /// host is journaled, and re-attached by its id instead of run again.
    pub(super) fn flush_journal_ahead(&mut self, out: &mut Vec<Action>) {
        let starts = out.iter().any(|a| matches!(a, Action::StartTask { .. }));
        self.flush_journal(starts, out);
        self.journal_ahead_of_starts(out);
    }

    /// Moves the journal batches at the end of `out` before its first start.
    pub(super) fn journal_ahead_of_starts(&mut self, out: &mut Vec<Action>) {
        let Some(first) = out
            .iter()
            .position(|a| matches!(a, Action::StartTask { .. }))
        else {
            return;
        };
        let tail = out[first..]
            .iter()
            .rposition(|a| !matches!(a, Action::Journal(_)))
            .map_or(first, |p| first + p + 1);
        let batches: Vec<Action> = out.drain(tail..).collect();
        out.splice(first..first, batches);
    }

    pub(super) fn flush_journal(&mut self, force: bool, out: &mut Vec<Action>) {
        let Some(every_ms) = self.journal.every_ms else {
            return;
        };
        let phase = self.state.phase();
        let phase_changed = self.journal.last_phase != Some(phase);
        let due = force
            || phase_changed
            || self.journal.pending.len() >= MAX_ENTRIES
            || self.now_ms >= self.journal.last_flush_ms + every_ms;
        if !due {
            return;
        }
        let mut entries = Vec::new();
        let j = &mut self.journal;
        for id in 0..self.hosts.len() {
            let Some(h) = self.hosts.get(id) else {
                continue;
            };
            if j.hosts.len() <= id {
                j.hosts.resize(id + 1, None);
            }
            if j.hosts[id].as_ref() != Some(&h.rec) {
                j.hosts[id] = Some(h.rec.clone());
                entries.push(Entry::Host {
                    id,
                    index: h.index,
                    generation: h.generation,
                    host: h.rec.clone(),
                });
            }
        }
        for (index, stage) in self.book.stages.iter().enumerate() {
            if j.stages.get(index) != Some(stage) {
                if j.stages.len() <= index {
                    j.stages.push(stage.clone());
                } else {
                    j.stages[index] = stage.clone();
                }
                entries.push(Entry::Stage {
                    index,
                    stage: stage.clone(),
                });
            }
        }
        for (stage, hosts) in &self.replace.owners {
            if j.owners.get(stage) != Some(hosts) {
                j.owners.insert(*stage, hosts.clone());
                entries.push(Entry::Owners {
                    stage: *stage,
                    hosts: hosts.clone(),
                });
            }
        }
        for (index, r) in self.replace.records().iter().enumerate() {
            if j.replacements.get(index) != Some(r) {
                if j.replacements.len() <= index {
                    j.replacements.push(r.clone());
                } else {
                    j.replacements[index] = r.clone();
                }
                entries.push(Entry::Replacement {
                    index,
                    replacement: r.clone(),
                });
            }
        }
        entries.append(&mut j.pending);
        for task in &self.book.tasks[j.tasks.min(self.book.tasks.len())..] {
            entries.push(Entry::Ended { task: task.clone() });
        }
        j.tasks = self.book.tasks.len();
        if let Some(fate) = self.state.fate()
            && !j.fate_noted
        {
            j.fate_noted = true;
            entries.push(Entry::Fate {
                status: fate.status,
                reason: fate.reason.clone(),
            });
        }
        if let (Some(t), true) = (&self.book.teardown, phase_changed && phase == Phase::Record) {
            entries.push(Entry::TornDown {
                teardown: t.clone(),
            });
        }
        j.last_phase = Some(phase);
        j.last_flush_ms = self.now_ms;
        if entries.is_empty() {
            return;
        }
        let batch = Batch {
            generation: j.generation,
            seq: j.seq,
            entries,
        };
        j.seq += 1;
        out.push(Action::Journal(Box::new(batch)));
    }
}
