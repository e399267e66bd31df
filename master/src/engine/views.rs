//! What the engine shows of the run without changing it: the heartbeat (asked for
//! when due), the run record as of now, and progress for people. Part of
//! [`super::Engine`].

use super::Engine;
use super::state::State;
use super::types::{Action, Progress};
use crate::record::{Heartbeat, Phase, PlaybookInfo, RECORD_VERSION, RunRecord, RunStatus};

impl Engine {
    /// Asks for a heartbeat when one is due (and heartbeats are on). The record, once
    /// being written, is the last word; the heartbeat after it marks the run done.
    pub(super) fn beat(&mut self, out: &mut Vec<Action>) {
        let phase = self.phase();
        if phase == Phase::Record {
            return;
        }
        let stage = self.progress().stage;
        if self.timers.beat_due(self.now_ms, phase, &stage) {
            self.timers.last_beat = Some((self.now_ms, phase, stage));
            out.push(Action::Heartbeat(Box::new(self.heartbeat())));
        }
    }

    /// The heartbeat as of now.
    pub fn heartbeat(&self) -> Heartbeat {
        let p = self.progress();
        let (shards_done, shards_total) = self.book.shards();
        Heartbeat {
            run_id: self.run_id.clone(),
            phase: p.phase,
            stage: p.stage,
            hosts_live: p.hosts_live,
            hosts_total: p.hosts_total,
            shards_done,
            shards_total,
            updated_at_ms: self.now_ms,
            started_at_ms: self.book.started_at_ms,
            playbook: self.plan.name.clone(),
            stages: self.book.stage_records(),
            hosts: self.hosts.beats(|h| self.flight.agent_ids_on(h)),
        }
    }

    /// The run record as of now (final once the engine reaches `Record`).
    pub fn record(&self) -> RunRecord {
        let (status, reason) = match self.state.fate() {
            Some(f) => (f.status, f.reason.clone()),
            None => (RunStatus::Running, None),
        };
        RunRecord {
            version: RECORD_VERSION,
            run_id: self.run_id.clone(),
            playbook: PlaybookInfo {
                name: self.plan.name.clone(),
                file: self.plan.file.display().to_string(),
                sha256: crate::digest::sha256_hex(self.plan.source.as_bytes()),
            },
            vars: self.plan.vars.clone(),
            trigger: self.trigger.clone(),
            status,
            reason,
            started_at_ms: self.book.started_at_ms,
            ended_at_ms: self.book.ended_at_ms,
            deadline_at_ms: self.deadline_at_ms,
            phases: self.book.phases.clone(),
            stages: self.book.stage_records(),
            hosts: self.hosts.records(),
            tasks: self.book.tasks.clone(),
            teardown: self.book.teardown.clone(),
            files: self.book.files().to_vec(),
            replacements: self.replace.records().to_vec(),
            masters: self.master_records(),
            instance_hours_saved: self.hours_saved(),
        }
    }

    /// A snapshot for progress displays.
    pub fn progress(&self) -> Progress {
        let (stage, stage_index, units_done, units_total, sharded) = match &self.state {
            State::Stages { stage: Some(s), .. } => (
                Some(self.plan.stages[s.index].name.clone()),
                s.index,
                s.done_units(),
                s.total_units(),
                s.is_sharded(),
            ),
            State::Stages { stage: None, next } => (None, *next, 0, 0, false),
            _ => match self.book.unfinished_stage() {
                Some((i, rec)) => (Some(rec.name.clone()), i, 0, 0, rec.shards_total > 0),
                None => (None, self.book.stages.len(), 0, 0, false),
            },
        };
        Progress {
            phase: self.phase(),
            stage,
            stage_index,
            stages_total: self.plan.stages.len(),
            units_done,
            units_total,
            sharded,
            hosts_live: self.hosts.live_count(),
            hosts_total: self.hosts.len(),
            elapsed_ms: self.now_ms.saturating_sub(self.book.started_at_ms),
        }
    }
}
