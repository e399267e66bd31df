//! The record being kept while the run goes: phase marks, stage records, every task
//! attempt, teardown, and when the run ended; and the two timers of a run that are not
//! about its work (when to snapshot logs next, when the last heartbeat was).
//!
//! It only writes down what the engine tells it; assembling the final [`RunRecord`]
//! with the hosts and the run's fate is [`super::Engine::record`]'s job.

use super::flight::Attempt;
use super::types::{TaskKey, TaskResult};
use crate::record::{FileRecord, Phase, PhaseMark, StageRecord, TaskRecord, TeardownRecord};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Book {
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub phases: Vec<PhaseMark>,
    pub stages: Vec<StageRecord>,
    pub tasks: Vec<TaskRecord>,
    pub teardown: Option<TeardownRecord>,
    /// Every file stored by a fetch (or reused from the cache), once per key: a
    /// retry that stores a key again replaces its record.
    files: Vec<FileRecord>,
    file_at: std::collections::HashMap<String, usize>,
}

impl Book {
    pub fn new(now_ms: u64) -> Book {
        Book {
            started_at_ms: now_ms,
            ended_at_ms: None,
            phases: vec![PhaseMark {
                phase: Phase::Provision,
                at_ms: now_ms,
            }],
            stages: Vec::new(),
            tasks: Vec::new(),
            teardown: None,
            files: Vec::new(),
            file_at: std::collections::HashMap::new(),
        }
    }

    /// Records a stored file (replacing an earlier record of its key).
    pub fn file(&mut self, rec: FileRecord) {
        match self.file_at.get(&rec.key) {
            Some(&i) => self.files[i] = rec,
            None => {
                self.file_at.insert(rec.key.clone(), self.files.len());
                self.files.push(rec);
            }
        }
    }

    /// The stored files, in the order they were first stored.
    pub fn files(&self) -> &[FileRecord] {
        &self.files
    }

    /// The stage records as the record shows them (cached items in order).
    pub fn stage_records(&self) -> Vec<StageRecord> {
        let mut stages = self.stages.clone();
        for s in &mut stages {
            s.cached.sort_unstable();
        }
        stages
    }

    /// The phase the run is in, as marked last.
    pub fn phase(&self) -> Phase {
        self.phases.last().map_or(Phase::Provision, |m| m.phase)
    }

    pub fn mark(&mut self, phase: Phase, at_ms: u64) {
        if self.phase() != phase {
            self.phases.push(PhaseMark { phase, at_ms });
        }
    }

    pub fn open_stage(&mut self, name: &str, at_ms: u64, shards_total: usize) {
        self.stages.push(StageRecord {
            name: name.to_owned(),
            started_at_ms: at_ms,
            ended_at_ms: None,
            succeeded: None,
            shards_total,
            shards_done: 0,
            items: None,
            cached: Vec::new(),
            note: None,
        });
    }

    pub fn end_stage(&mut self, index: usize, at_ms: u64, succeeded: bool) {
        if let Some(s) = self.stages.get_mut(index) {
            s.ended_at_ms = Some(at_ms);
            s.succeeded = Some(succeeded);
        }
    }

    /// The stage the run stopped in, if it stopped in one.
    /// Adds `note` to stage `index`'s record (notes accumulate, one per line).
    pub fn note_stage(&mut self, index: usize, note: String) {
        if let Some(s) = self.stages.get_mut(index) {
            s.note = Some(match s.note.take() {
                Some(old) => format!("{old}\n{note}"),
                None => note,
            });
        }
    }

    pub fn unfinished_stage(&self) -> Option<(usize, &StageRecord)> {
        let (i, s) = self.stages.iter().enumerate().next_back()?;
        (s.succeeded != Some(true)).then_some((i, s))
    }

    /// Records one attempt's end.
    pub fn task(&mut self, key: TaskKey, attempt: &Attempt, host: &str, r: &TaskResult) {
        let stage = match self.stages.get_mut(key.stage) {
            Some(s) => {
                if r.outcome == crate::record::TaskOutcome::Succeeded && attempt.completes_item {
                    s.shards_done += 1;
                }
                s.name.clone()
            }
            None => String::new(),
        };
        self.tasks.push(TaskRecord {
            id: key.agent_id(),
            stage,
            host: host.to_owned(),
            task: attempt.name.clone(),
            item: attempt.item,
            attempt: key.try_no,
            started_at_ms: r.started_at_ms,
            ended_at_ms: r.ended_at_ms,
            duration_ms: r.ended_at_ms.saturating_sub(r.started_at_ms),
            outcome: r.outcome,
            exit_code: r.exit_code,
            signal: r.signal,
            error: r.error.clone(),
        });
    }

    pub fn shards(&self) -> (usize, usize) {
        self.stages
            .iter()
            .fold((0, 0), |(d, t), s| (d + s.shards_done, t + s.shards_total))
    }
}

/// When a run snapshots logs and writes heartbeats, if it does.
#[derive(Debug, Clone, Default)]
pub struct Timers {
    pub snapshot_every_ms: Option<u64>,
    pub next_snapshot_ms: u64,
    pub heartbeat_every_ms: Option<u64>,
    /// When the last heartbeat was asked for, and what it said (phase, stage).
    pub last_beat: Option<(u64, Phase, Option<String>)>,
}

impl Timers {
    /// Whether a heartbeat is due at `now_ms` for `phase` and `stage`: it changed, or
    /// the interval passed.
    pub fn beat_due(&self, now_ms: u64, phase: Phase, stage: &Option<String>) -> bool {
        let Some(every) = self.heartbeat_every_ms else {
            return false;
        };
        match &self.last_beat {
            None => true,
            Some((at, p, s)) => *p != phase || s != stage || now_ms >= at + every,
        }
    }
}
