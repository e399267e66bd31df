//! Running the stages: opening each stage with its scheduler, taking the starts the
//! scheduler decides and rendering them into tasks, and closing a stage when every unit
//! is done. Part of [`super::Engine`]; what a finished task means is decided in
//! `mod.rs`, which unit goes where in [`super::plain`] and [`super::sharded`].

use super::flight::Attempt;
use super::render;
use super::stage::{Scheduler, StageRun};
use super::state::{Fate, State};
use super::types::{Action, TaskKey, TaskResult};
use super::{Engine, plain, sharded};
use crate::record::{RunStatus, TaskOutcome};

impl Engine {
    /// One scheduling step of the stages; true when the run moved (a stage opened or
    /// ended, the run stopped or started collecting).
    pub(super) fn schedule(&mut self, out: &mut Vec<Action>) -> bool {
        let State::Stages { stage, next } = &mut self.state else {
            return false;
        };
        let Some(run) = stage else {
            if *next == self.plan.stages.len() {
                self.start_collect(
                    Fate {
                        status: RunStatus::Succeeded,
                        reason: None,
                    },
                    out,
                );
            } else {
                let index = *next;
                self.open_stage(index, out);
            }
            return true;
        };
        if run.is_done() {
            let index = run.index;
            *next = index + 1;
            *stage = None;
            self.book.end_stage(index, self.now_ms, true);
            return true;
        }
        let index = run.index;
        if run.stranded() {
            let msg = format!(
                "no live hosts left for stage `{}` ({} of {} items done)",
                self.plan.stages[index].name,
                run.done_units(),
                run.total_units()
            );
            self.fail(RunStatus::Failed, msg, out);
            return true;
        }
        let sharded = run.is_sharded();
        let starts = run.starts();
        let n_tasks = self.plan.stages[index].tasks.len();
        for s in starts {
            let key = TaskKey {
                stage: index,
                unit: s.unit,
                task: s.task,
                try_no: s.try_no,
            };
            let Some(h) = self.hosts.get(s.host) else {
                continue;
            };
            let item_value = s
                .item
                .and_then(|i| self.plan.stages[index].shards.as_ref()?.get(i));
            let rendered = render::render(
                &self.plan,
                key,
                render::For {
                    run_id: &self.run_id,
                    trigger: &self.trigger,
                    host_name: &h.rec.name,
                    host_index: h.index,
                    host_count: self.hosts.group_count(&h.rec.group),
                    group: &h.rec.group,
                    item: item_value,
                },
            );
            match rendered {
                Ok((name, command)) => {
                    self.flight.insert(
                        key,
                        Attempt {
                            host: s.host,
                            name: name.clone(),
                            item: s.item,
                            completes_item: sharded && s.task + 1 == n_tasks,
                        },
                    );
                    out.push(Action::StartTask {
                        key,
                        host: s.host,
                        name,
                        command,
                    });
                }
                Err(e) => {
                    let task_name = self.plan.stages[index].tasks[s.task].written_name();
                    let attempt = Attempt {
                        host: s.host,
                        name: task_name.clone(),
                        item: s.item,
                        completes_item: false,
                    };
                    let result = TaskResult::without_exit(
                        TaskOutcome::Failed,
                        Some(e.to_string()),
                        self.now_ms,
                        self.now_ms,
                    );
                    let host_name = self.hosts.name(s.host).to_owned();
                    self.book.task(key, &attempt, &host_name, &result);
                    let msg = format!(
                        "task `{task_name}` of stage `{}` could not be rendered for {host_name}: {e}",
                        self.plan.stages[index].name,
                    );
                    self.fail(RunStatus::Failed, msg, out);
                    return true;
                }
            }
        }
        false
    }

    fn open_stage(&mut self, index: usize, out: &mut Vec<Action>) {
        let st = &self.plan.stages[index];
        let hosts = self.hosts.live_ready_in(&st.groups);
        let n_tasks = st.tasks.len();
        let sched = match &st.shards {
            Some(items) => Scheduler::Sharded(sharded::Sharded::new(
                &hosts,
                items.len(),
                n_tasks,
                st.retries,
            )),
            None => Scheduler::Plain(plain::Plain::new(&hosts, n_tasks, st.retries)),
        };
        self.book.open_stage(
            &st.name,
            self.now_ms,
            st.shards.as_ref().map_or(0, Vec::len),
        );
        let empty = hosts.is_empty();
        let message = format!(
            "no live hosts in group(s) {} for stage `{}`",
            st.groups.join(", "),
            st.name
        );
        self.state = State::Stages {
            stage: Some(StageRun {
                index,
                started_at_ms: self.now_ms,
                sched,
            }),
            next: index,
        };
        if empty {
            self.fail(RunStatus::Failed, message, out);
        }
    }
}
