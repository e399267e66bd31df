//! Running the stages: opening each stage with its scheduler (asking for its items to
//! be listed when they come from data, and for each item to be looked up in the cache
//! when the stage is cached), taking the starts the scheduler decides and rendering them
//! into tasks, and closing a stage when every unit is done. Part of [`super::Engine`];
//! what a finished task means is decided in `mod.rs`, what data events mean in
//! `data.rs`, which unit goes where in [`super::plain`] and [`super::sharded`].

use super::flight::{Attempt, AttemptKind, FetchInfo};
use super::render;
use super::stage::{Scheduler, StageRun};
use super::state::{Fate, State};
use super::types::{Action, HostId, ShardSource, TaskCommand, TaskKey, TaskResult};
use super::{Engine, plain, sharded};
use crate::plan::ShardPlan;
use crate::plan::template::{self, HostVars, TemplateContext, Trigger};
use crate::record::{RunStatus, TaskOutcome};
use std::sync::Arc;

impl Engine {
    /// Fails the run when a group has fewer ready hosts (and replacements coming) than
    /// its minimum, once every bootstrap has answered.
    pub(super) fn check_groups_alive(&mut self, out: &mut Vec<Action>) {
        for (group, spec) in &self.plan.fleet {
            let coming = self
                .replace
                .slots_coming(&self.hosts, std::slice::from_ref(group));
            let live = self
                .hosts
                .in_group(group)
                // A host released early (in a resumed run) did its part.
                .filter(|h| (h.live() && h.ready) || h.released)
                .count() as u32
                + coming.len() as u32;
            if live < spec.min() {
                let losses: Vec<String> = self
                    .hosts
                    .in_group(group)
                    .filter_map(|h| {
                        h.rec
                            .lost
                            .as_ref()
                            .map(|l| format!("{}: {}", h.rec.name, l.reason))
                    })
                    .collect();
                let mut msg = format!(
                    "group `{group}` has {live} ready host(s), fewer than the {} required",
                    spec.min()
                );
                if !losses.is_empty() {
                    msg.push_str(&format!("; {}", losses.join("; ")));
                }
                self.fail(RunStatus::Failed, msg, out);
                return;
            }
        }
    }

    /// One scheduling step of the stages; true when the run moved (a stage opened or
    /// ended, the run stopped or started collecting).
    pub(super) fn schedule(&mut self, out: &mut Vec<Action>) -> bool {
        if let State::Stages { stage: None, next } = &self.state {
            let n = *next;
            if n < self.plan.stages.len() && self.resumed_stage_done(n) {
                // Completed under an earlier master.
                if let State::Stages { next, .. } = &mut self.state {
                    *next = n + 1;
                }
                return true;
            }
        }
        let State::Stages { stage, next } = &mut self.state else {
            return false;
        };
        let Some(run) = stage else {
            if *next == self.plan.stages.len() {
                let fate = Fate {
                    status: RunStatus::Succeeded,
                    reason: None,
                };
                if self.flight.is_empty()
                    && self.replace.none_launching()
                    && self.hosts.none_bootstrapping()
                {
                    self.start_collect(fate, out);
                } else {
                    // A replacement still replaying or launching: stopped first, as on
                    // any end, so nothing is left running or unrecorded.
                    for (key, attempt) in self.flight.iter() {
                        out.push(Action::CancelTask {
                            key: *key,
                            host: attempt.host,
                        });
                    }
                    self.enter(State::Stopping {
                        fate,
                        since_ms: self.now_ms,
                        pending: Default::default(),
                    });
                }
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
        let stranded = run
            .stranded()
            .then(|| (run.done_units(), run.total_units()));
        if let Some((done, total)) = stranded
            && !self.replacement_coming(&self.plan.stages[index].groups.clone())
        {
            let msg = format!(
                "no live hosts left for stage `{}` ({done} of {total} items done)",
                self.plan.stages[index].name,
            );
            self.fail(RunStatus::Failed, msg, out);
            return true;
        }
        let Some(run) = self.stage_mut() else {
            return false;
        };
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
            let kind = AttemptKind::Stage;
            let completes_item = sharded && s.task + 1 == n_tasks;
            if !self.start_task(key, s.host, s.item, kind, completes_item, out) {
                return true;
            }
        }
        self.release_idle(out);
        false
    }

    /// Renders task `key` for `host` and asks for it to start; false when it could not
    /// be rendered (the run then fails).
    pub(super) fn start_task(
        &mut self,
        key: TaskKey,
        host: HostId,
        item: Option<usize>,
        kind: AttemptKind,
        completes_item: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let index = key.stage;
        let Some(h) = self.hosts.get(host) else {
            return true;
        };
        let items = match (&self.state, item) {
            (
                State::Stages {
                    stage: Some(run), ..
                },
                Some(_),
            ) if run.index == index => run.items.clone(),
            _ => Arc::default(),
        };
        let rendered = render::render(
            &self.plan,
            key,
            render::For {
                run_id: &self.run_id,
                run_files: &self.data.run_files,
                allow_absolute: self.data.allow_absolute_sources,
                trigger: &self.trigger,
                host_name: &h.rec.name,
                host_index: h.index,
                host_count: self.hosts.group_count(&h.rec.group),
                group: &h.rec.group,
                item: item.and_then(|i| items.get(i)),
                secrets: &self.secrets,
            },
        );
        match rendered {
            Ok((name, command)) => {
                if key.task == 0 && kind == AttemptKind::Stage {
                    // A fresh attempt of the unit: what earlier attempts stored is
                    // not this attempt's.
                    self.moved.unit_files.remove(&(index, key.unit));
                }
                let fetch = match &command {
                    TaskCommand::Fetch {
                        pattern,
                        dest,
                        optional,
                    } => Some(FetchInfo {
                        dest: dest.clone(),
                        optional: *optional,
                        pattern: pattern.clone(),
                    }),
                    _ => None,
                };
                let displaced = self.flight.insert(
                    key,
                    Attempt {
                        host,
                        name: name.clone(),
                        item,
                        completes_item,
                        fetch,
                        kind,
                        interrupted: false,
                    },
                );
                if let Some(old) = displaced {
                    // A replaced host's attempt that never answered: its end is unknown.
                    let outcome = if old.interrupted {
                        TaskOutcome::Interrupted
                    } else {
                        TaskOutcome::HostLost
                    };
                    let why = Some("its host was replaced before it answered".to_owned());
                    let r = TaskResult::without_exit(outcome, why, self.now_ms, self.now_ms);
                    let old_name = self.hosts.name(old.host).to_owned();
                    self.book.task(key, &old, &old_name, &r);
                }
                if kind == AttemptKind::Stage {
                    self.journal.note(crate::record::journal::Entry::Started {
                        attempt: super::journal::attempt(key),
                        host,
                    });
                }
                out.push(Action::StartTask {
                    key,
                    host,
                    name,
                    command,
                });
                true
            }
            Err(e) => {
                let task_name = self.plan.stages[index].tasks[key.task].written_name();
                let attempt = Attempt {
                    host,
                    name: task_name.clone(),
                    item,
                    completes_item: false,
                    fetch: None,
                    kind,
                    interrupted: false,
                };
                let result = TaskResult::without_exit(
                    TaskOutcome::Failed,
                    Some(e.to_string()),
                    self.now_ms,
                    self.now_ms,
                );
                let host_name = self.hosts.name(host).to_owned();
                self.book.task(key, &attempt, &host_name, &result);
                let msg = format!(
                    "task `{task_name}` of stage `{}` could not be rendered for {host_name}: {e}",
                    self.plan.stages[index].name,
                );
                self.fail(RunStatus::Failed, msg, out);
                false
            }
        }
    }

    fn open_stage(&mut self, index: usize, out: &mut Vec<Action>) {
        let st = &self.plan.stages[index];
        let hosts = self.hosts.live_ready_in(&st.groups);
        let n_tasks = st.tasks.len();
        let mut listing = None;
        let (sched, items) = match &st.shards {
            Some(ShardPlan::Items(items)) => (
                Scheduler::Sharded(Box::new(sharded::Sharded::new(
                    &hosts,
                    items.len(),
                    n_tasks,
                    st.retries,
                    st.cache,
                ))),
                Arc::new(items.clone()),
            ),
            Some(ShardPlan::Objects { url, .. } | ShardPlan::Lines { url, .. }) => {
                listing = Some(url.clone());
                (Scheduler::Listing, Arc::new(Vec::new()))
            }
            None => {
                let plain = match self.resumed_owners(index) {
                    // Opened by an earlier master: its units keep their owners.
                    Some(owners) => {
                        let ready = hosts.iter().copied().collect();
                        plain::Plain::restore(&owners, &ready, n_tasks, st.retries)
                    }
                    None => {
                        // Replacements still on their way take their slot's unit when
                        // ready.
                        let waiting = self.replace.slots_coming(&self.hosts, &st.groups);
                        plain::Plain::new(&hosts, &waiting, n_tasks, st.retries)
                    }
                };
                self.replace.owners.insert(index, plain.owners());
                (Scheduler::Plain(plain), Arc::new(Vec::new()))
            }
        };
        let written = st.written_items().map_or(0, <[_]>::len);
        if self.book.stages.len() <= index {
            self.book.open_stage(&st.name, self.now_ms, written);
        }
        let empty = hosts.is_empty() && !self.replacement_coming(&st.groups.clone());
        let message = format!(
            "no live hosts in group(s) {} for stage `{}`",
            st.groups.join(", "),
            st.name
        );
        let cached = st.cache && listing.is_none() && written > 0;
        self.state = State::Stages {
            stage: Some(StageRun {
                index,
                started_at_ms: self.now_ms,
                sched,
                items,
            }),
            next: index,
        };
        if empty {
            self.fail(RunStatus::Failed, message, out);
            return;
        }
        if let Some(h) = self.stranded_owner(index) {
            let msg = format!(
                "host {} was lost during stage `{}` and cannot be replaced",
                self.hosts.name(h),
                self.plan.stages[index].name
            );
            self.fail(RunStatus::Failed, msg, out);
            return;
        }
        match (listing, self.resumed_items(index)) {
            (Some(_), Some((items, file))) => {
                // Listed by an earlier master: the same items, not listed again.
                let listed = super::types::Listed { items, file };
                self.on_shards_resolved(index, Ok(listed), out);
                self.apply_seeds(index);
            }
            (Some(url), None) => self.ask_listing(index, &url, out),
            (None, _) => {
                self.apply_seeds(index);
                if cached {
                    self.ask_cache(index, written, out);
                }
            }
        }
    }

    /// Renders a stage's listing URL and asks for its items.
    fn ask_listing(&mut self, index: usize, url: &str, out: &mut Vec<Action>) {
        let ctx = TemplateContext {
            vars: &self.plan.vars,
            run_id: &self.run_id,
            run_files: &self.data.run_files,
            host: HostVars {
                name: String::new(),
                index: 0,
                count: 0,
                group: String::new(),
            },
            item: None,
            secrets: &template::NO_SECRETS,
            trigger: Trigger::Known(&self.trigger),
        };
        let rendered = template::render(url, &ctx)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                render::source(&self.plan, &text, self.data.allow_absolute_sources)
                    .map_err(|e| e.to_string())
            });
        let source = match rendered {
            Ok(u) => u,
            Err(e) => {
                let msg = format!(
                    "the items of stage `{}` cannot be listed: {e}",
                    self.plan.stages[index].name
                );
                self.fail(RunStatus::Failed, msg, out);
                return;
            }
        };
        self.moved.listing_from.insert(index, source.to_string());
        let source = match &self.plan.stages[index].shards {
            Some(ShardPlan::Lines { .. }) => ShardSource::Lines(source),
            _ => ShardSource::Objects(source),
        };
        out.push(Action::ResolveShards {
            stage: index,
            source,
        });
    }
}
