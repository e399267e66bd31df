//! The item cache, the engine's half: what an item's key is made of (the playbook, the
//! item's tasks rendered, the tasks and inputs of every earlier plain stage of the
//! stage's groups), the lookups asked for a few at a time, what an answer means, and
//! the entry written when an item succeeds. The inputs' identities (which need IO) are
//! added by the runner. Part of [`super::Engine`].

use super::Engine;
use super::render;
use super::stage::Scheduler;
use super::state::State;
use super::types::{Action, CacheHit, CacheInput, CacheQuery, TaskCommand, TaskKey};
use crate::plan::url::DataUrl;
use crate::record::journal::Entry;
use crate::record::{CacheEntry, CachedFile, FileRecord, keys};
use serde_json::Value;
use std::collections::BTreeMap;

/// How many lookups are out at once: enough to keep the store busy, few enough that a
/// stage of 100,000 items neither renders them all at once nor floods the runner.
const LOOKUPS_IN_FLIGHT: usize = 64;

/// The environment squall sets in every task (not the user's, and not part of a key).
const INJECTED_ENV: [&str; 4] = [
    "SQUALL_RUN_ID",
    "SQUALL_HOST",
    "SQUALL_HOST_INDEX",
    "SQUALL_ITEM",
];

/// The cache's bookkeeping.
#[derive(Debug, Default)]
pub(super) struct CacheBook {
    /// The open cached stage: its index, how many items it has, the next to ask about,
    /// and how many lookups are out.
    stage: Option<usize>,
    total: usize,
    next: usize,
    in_flight: usize,
    /// The part of the stage's keys that earlier stages make (the same for every item).
    prefix: Option<Part>,
    /// Each looked-up item's key.
    keys: BTreeMap<(usize, usize), String>,
}

impl CacheBook {
    /// Keys an earlier master looked up (a resumed run): its items' entries are written
    /// when they succeed here.
    pub fn restore_keys(&mut self, keys: BTreeMap<(usize, usize), String>) {
        self.keys.extend(keys);
    }
}

/// A part of a key: rendered text, and the inputs whose identities complete it.
#[derive(Debug, Clone, Default)]
struct Part {
    material: String,
    inputs: Vec<CacheInput>,
}

impl Engine {
    /// Starts looking up the `n_items` items of cached stage `index`.
    pub(super) fn ask_cache(&mut self, index: usize, n_items: usize, out: &mut Vec<Action>) {
        self.cache = CacheBook {
            stage: Some(index),
            total: n_items,
            keys: std::mem::take(&mut self.cache.keys),
            ..CacheBook::default()
        };
        self.cache.prefix = self.earlier_part(index);
        self.refill_lookups(out);
    }

    /// Asks for more lookups while fewer than [`LOOKUPS_IN_FLIGHT`] are out.
    fn refill_lookups(&mut self, out: &mut Vec<Action>) {
        let Some(index) = self.cache.stage else {
            return;
        };
        while self.cache.in_flight < LOOKUPS_IN_FLIGHT && self.cache.next < self.cache.total {
            let unit = self.cache.next;
            self.cache.next += 1;
            let waiting = match self.stage_mut().map(|r| &r.sched) {
                Some(Scheduler::Sharded(s)) => s.is_checking(unit),
                _ => true,
            };
            if !waiting {
                continue; // done or under way already (a resumed run)
            }
            match self.cache_query(index, unit) {
                Some(query) => {
                    self.cache.in_flight += 1;
                    out.push(Action::LookupCache {
                        stage: index,
                        unit,
                        query,
                    });
                }
                // Cannot be keyed here (a render failed): the item just runs, and
                // fails there with the error.
                None => {
                    if let Some(Scheduler::Sharded(s)) = self.stage_mut().map(|r| &mut r.sched) {
                        s.cache_miss(unit);
                    }
                }
            }
        }
    }

    /// A cache lookup answered: a hit is done (its files are this run's now), a miss
    /// runs.
    pub(super) fn on_cache_answered(
        &mut self,
        stage: usize,
        unit: usize,
        cache_key: String,
        hit: Option<CacheHit>,
        out: &mut Vec<Action>,
    ) {
        if self.cache.stage == Some(stage) {
            self.cache.in_flight = self.cache.in_flight.saturating_sub(1);
        }
        if !cache_key.is_empty() {
            self.journal.note(Entry::CacheKey {
                stage,
                unit,
                key: cache_key.clone(),
            });
            self.cache.keys.insert((stage, unit), cache_key);
        }
        self.take_answer(stage, unit, hit);
        self.refill_lookups(out);
    }

    fn take_answer(&mut self, stage: usize, unit: usize, hit: Option<CacheHit>) {
        let Some(run) = self.stage_mut().filter(|r| r.index == stage) else {
            return;
        };
        let Scheduler::Sharded(s) = &mut run.sched else {
            return;
        };
        let Some(hit) = hit else {
            s.cache_miss(unit);
            return;
        };
        if !s.cache_hit(unit) {
            return; // not waiting for its answer (already answered)
        }
        let stage_name = self.plan.stages[stage].name.clone();
        if let Some(rec) = self.book.stages.get_mut(stage) {
            rec.cached.push(unit);
            rec.shards_done += 1;
        }
        self.unit_completed(stage, unit);
        for f in hit.files {
            // Its keys are this item's, as if it had fetched them here.
            self.moved.fetched.insert(
                f.key.clone(),
                super::data::Owner {
                    stage,
                    unit,
                    host: format!("the cache (run {})", hit.from_run),
                    item: Some(unit),
                },
            );
            let file = FileRecord {
                key: f.key,
                size: f.size,
                sha256: f.sha256,
                stage: stage_name.clone(),
                host: String::new(),
                item: Some(unit),
                task: String::new(),
                cached_from: Some(hit.from_run.clone()),
            };
            self.journal.note(Entry::File {
                stage,
                unit,
                file: file.clone(),
            });
            self.book.file(file);
        }
    }

    /// An item of a cached stage succeeded: its cache entry, with what it stored.
    pub(super) fn cache_entry_for(&mut self, stage: usize, unit: usize) -> Option<Action> {
        let st = &self.plan.stages[stage];
        if !st.cache {
            return None;
        }
        let cache_key = self.cache.keys.get(&(stage, unit))?.clone();
        let item = match &self.state {
            State::Stages { stage: Some(r), .. } => r.items.get(unit)?.clone(),
            _ => return None,
        };
        let files_prefix = keys::files_prefix(&self.run_id);
        let files = self
            .moved
            .unit_files
            .remove(&(stage, unit))
            .unwrap_or_default()
            .into_iter()
            .map(|f| CachedFile {
                rel: f.key.strip_prefix(&files_prefix).map(str::to_owned),
                key: f.key,
                size: f.size,
                sha256: f.sha256,
            })
            .collect();
        Some(Action::WriteCache {
            entry: Box::new(CacheEntry {
                key: cache_key,
                playbook: self.plan.name.clone(),
                stage: st.name.clone(),
                item,
                run_id: self.run_id.clone(),
                created_at_ms: self.now_ms,
                files,
            }),
        })
    }

    /// What every earlier plain stage of the stage's groups contributes to its items'
    /// keys: their tasks rendered for each group's first host, with their inputs (a
    /// changed setup, model or input invalidates every item).
    fn earlier_part(&self, index: usize) -> Option<Part> {
        let st = &self.plan.stages[index];
        let mut part = Part {
            material: format!("playbook {}\nstage {}\n", self.plan.name, st.name),
            inputs: Vec::new(),
        };
        for group in &st.groups {
            for earlier in 0..index {
                let e = &self.plan.stages[earlier];
                if e.shards.is_none() && e.groups.iter().any(|g| g == group) {
                    part.material
                        .push_str(&format!("after {} on {group}\n", e.name));
                    self.render_part(earlier, group, None, &mut part)?;
                }
            }
        }
        Some(part)
    }

    /// The key's material and inputs for item `unit` of stage `index`.
    fn cache_query(&self, index: usize, unit: usize) -> Option<CacheQuery> {
        let run = match &self.state {
            State::Stages { stage: Some(r), .. } => r,
            _ => return None,
        };
        let mut part = self.cache.prefix.clone()?;
        let item = run.items.get(unit)?;
        part.material.push_str(&format!("item {item}\n"));
        let group = self.plan.stages[index].groups.first()?;
        self.render_part(index, group, Some(item), &mut part)?;
        Some(CacheQuery {
            material: part.material,
            inputs: part.inputs,
            lookup: self.data.use_cache,
        })
    }

    /// Renders stage `stage`'s tasks for `group`'s first host (and `item`) into `part`.
    fn render_part(
        &self,
        stage: usize,
        group: &str,
        item: Option<&Value>,
        part: &mut Part,
    ) -> Option<()> {
        let host = self.hosts.in_group(group).next()?;
        for task in 0..self.plan.stages[stage].tasks.len() {
            let key = TaskKey {
                stage,
                unit: 0,
                task,
                try_no: 0,
            };
            let (_, command) = render::render(
                &self.plan,
                key,
                render::For {
                    run_id: "cache",
                    run_files: &self.data.run_files,
                    allow_absolute: self.data.allow_absolute_sources,
                    trigger: &self.trigger,
                    host_name: &host.rec.name,
                    host_index: host.index,
                    host_count: self.hosts.group_count(group),
                    group,
                    item,
                    secrets: &self.secrets,
                },
            )
            .ok()?;
            let text = self.canonical(&command);
            if self.data.run_files.is_empty() {
                part.material.push_str(&text);
            } else {
                part.material
                    .push_str(&text.replace(self.data.run_files.as_str(), "{run.files}"));
            }
            part.material.push('\n');
            if let TaskCommand::Copy { src, .. } = command {
                part.inputs.push(CacheInput {
                    label: self.label(&src),
                    url: src,
                });
            }
        }
        Some(())
    }

    /// A source as keys name it: relative to the playbook's folder (however the
    /// playbook's path was typed), with the run's own files area as a placeholder (it
    /// differs between runs; what is in it is keyed by its identity).
    fn label(&self, src: &DataUrl) -> String {
        let text = match src {
            DataUrl::Local(p) => match p.strip_prefix(&self.plan.base_dir) {
                Ok(rel) => format!("{{playbook}}/{}", rel.display()),
                Err(_) => p.display().to_string(),
            },
            DataUrl::S3 { .. } => src.to_string(),
        };
        let text = if src.is_folder() && !text.ends_with('/') {
            format!("{text}/")
        } else {
            text
        };
        if self.data.run_files.is_empty() {
            text
        } else {
            text.replace(self.data.run_files.as_str(), "{run.files}")
        }
    }

    /// A rendered task as the cache key sees it: what it does, without what differs
    /// between runs or attempts (task ids, the variables squall injects).
    fn canonical(&self, c: &TaskCommand) -> String {
        match c {
            TaskCommand::Exec(spec) => {
                // Secrets never enter the key: their values are masked.
                let spec = spec.public();
                let env: Vec<String> = spec
                    .env
                    .iter()
                    .filter(|(k, _)| !INJECTED_ENV.contains(&k.as_str()))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!(
                    "exec {:?} env {:?} timeout {:?}",
                    spec.argv, env, spec.timeout_secs
                )
            }
            TaskCommand::Copy {
                src, dest, mode, ..
            } => format!("copy {} -> {dest} mode {mode:o}", self.label(src)),
            TaskCommand::Fetch { pattern, dest, .. } => format!("fetch {pattern} -> {dest:?}"),
        }
    }
}
