//! What the run's data events mean: a fetch's matches placed at their keys (or refused
//! when another unit already wrote one), stored files recorded, a stage's listed items
//! taken in, cache answers, and the cache entry of an item that succeeded. Part of
//! [`super::Engine`]; moving the bytes is the runner's.

use super::Engine;
use super::stage::Scheduler;
use super::types::{Action, Dest, Failure, HostId, Listed, TaskKey, TaskResult, Transfer};
use crate::plan::url::FetchDest;
use crate::record::{
    FileRecord, ITEMS_IN_RECORD, ItemsRecord, RunStatus, StoredFile, TaskOutcome, keys,
};
use squall_worker::GlobMatch;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where the run keeps its data and how it may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOptions {
    /// What `run.files` renders as: `s3://BUCKET/runs/ID/files` on AWS, the local
    /// store's path otherwise.
    pub run_files: String,
    /// Whether `copy` may read absolute local paths (local and inventory runs; not a
    /// master on EC2).
    pub allow_absolute_sources: bool,
    /// Whether cached stages reuse earlier items (`--no-cache` turns this off; entries
    /// are still written, replacing the old ones).
    pub use_cache: bool,
}

/// What the engine keeps about the data moved so far.
#[derive(Debug, Default)]
pub(super) struct Moved {
    /// Every key a fetch stored, and the unit that did (two units may not share one).
    pub fetched: BTreeMap<String, Owner>,
    /// What each unit's current attempt stored, for its cache entry.
    pub unit_files: BTreeMap<(usize, usize), Vec<StoredFile>>,
    /// The URL each listed stage's items came from (rendered).
    pub listing_from: BTreeMap<usize, String>,
}

/// The unit that first stored a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner {
    pub stage: usize,
    pub unit: usize,
    pub host: String,
    pub item: Option<usize>,
}

impl Owner {
    fn describe(&self, stage_name: &str) -> String {
        match self.item {
            Some(i) => format!("item {i} of stage `{stage_name}` (on {})", self.host),
            None => format!("{} in stage `{stage_name}`", self.host),
        }
    }
}

impl Engine {
    /// A fetch listed its matches: places them, or fails the attempt.
    pub(super) fn on_fetch_listed(
        &mut self,
        key: TaskKey,
        host: HostId,
        files: Vec<GlobMatch>,
        out: &mut Vec<Action>,
    ) {
        let attempt = self.flight.get(&key).filter(|a| a.host == host);
        let Some(info) = attempt.and_then(|a| a.fetch.clone()) else {
            return;
        };
        let now = self.now_ms;
        if self.state.decided() {
            // The run is stopping: nothing more is moved.
            let r = TaskResult::without_exit(TaskOutcome::Cancelled, None, now, now);
            self.on_task_finished(key, host, r, out);
            return;
        }
        let fail = |why: String| TaskResult::without_exit(TaskOutcome::Failed, Some(why), now, now);
        let host_name = self.hosts.name(host).to_owned();
        if files.is_empty() {
            let result = if info.optional {
                TaskResult::without_exit(TaskOutcome::Succeeded, None, now, now)
            } else {
                fail(format!(
                    "no file matches `{}` on {host_name} (`optional: true` allows that)",
                    info.pattern
                ))
            };
            self.on_task_finished(key, host, result, out);
            return;
        }
        let transfers: Vec<Transfer> = files
            .into_iter()
            .map(|f| Transfer {
                to: match &info.dest {
                    FetchDest::RunFiles(prefix) => Dest::Run(format!(
                        "{}{prefix}{}",
                        keys::files_prefix(&self.run_id),
                        f.name
                    )),
                    FetchDest::S3 { bucket, prefix } => Dest::S3 {
                        bucket: bucket.clone(),
                        key: format!("{prefix}{}", f.name),
                    },
                },
                from: f.path,
                size: f.size,
            })
            .collect();
        let item = self.flight.get(&key).and_then(|a| a.item);
        for t in &transfers {
            let label = t.to.label();
            if let Some(owner) = self.moved.fetched.get(&label)
                && (owner.stage, owner.unit) != (key.stage, key.unit)
            {
                let them = owner.describe(&self.plan.stages[owner.stage].name);
                let by = if self.plan.stages[key.stage].is_sharded() {
                    "the item"
                } else {
                    "`{{ host.name }}`"
                };
                let why = format!(
                    "`{label}` was already fetched by {them}; two units may not write one key: template `dest` with {by}"
                );
                let msg = format!(
                    "the fetch of `{}` on {host_name} (stage `{}`) collides: {why}",
                    info.pattern, self.plan.stages[key.stage].name
                );
                self.on_task_finished(key, host, fail(why), out);
                self.fail(RunStatus::Failed, msg, out);
                return;
            }
        }
        for t in &transfers {
            self.moved.fetched.insert(
                t.to.label(),
                Owner {
                    stage: key.stage,
                    unit: key.unit,
                    host: host_name.clone(),
                    item,
                },
            );
        }
        out.push(Action::StoreFiles {
            key,
            host,
            files: transfers,
        });
    }

    /// A fetch's files were stored: the record keeps each one.
    pub(super) fn on_files_stored(&mut self, key: TaskKey, host: HostId, files: Vec<StoredFile>) {
        let Some(attempt) = self.flight.get(&key).filter(|a| a.host == host) else {
            return;
        };
        let item = attempt.item;
        let stage = self.plan.stages[key.stage].name.clone();
        for f in &files {
            let file = FileRecord {
                key: f.key.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
                stage: stage.clone(),
                host: self.hosts.name(host).to_owned(),
                item,
                task: key.agent_id(),
                cached_from: None,
            };
            self.journal.note(crate::record::journal::Entry::File {
                stage: key.stage,
                unit: key.unit,
                file: file.clone(),
            });
            self.book.file(file);
        }
        self.moved
            .unit_files
            .entry((key.stage, key.unit))
            .or_default()
            .extend(files);
    }

    /// A stage's items were listed.
    pub(super) fn on_shards_resolved(
        &mut self,
        stage: usize,
        result: Result<Listed, Failure>,
        out: &mut Vec<Action>,
    ) {
        let st = &self.plan.stages[stage];
        let source = self
            .moved
            .listing_from
            .get(&stage)
            .cloned()
            .unwrap_or_default();
        let listed = match result {
            Ok(l) => l,
            Err(e) => {
                let msg = format!(
                    "listing the items of stage `{}` from `{source}` failed: {}",
                    st.name, e.0
                );
                self.fail(RunStatus::Failed, msg, out);
                return;
            }
        };
        let (groups, n_tasks, retries) = (st.groups.clone(), st.tasks.len(), st.retries);
        let cached = st.cache;
        let n = listed.items.len();
        let hosts = self.hosts.live_ready_in(&groups);
        let Some(run) = self.stage_mut().filter(|r| r.index == stage) else {
            return;
        };
        if !matches!(run.sched, Scheduler::Listing) {
            return;
        }
        run.sched = Scheduler::Sharded(Box::new(super::sharded::Sharded::new(
            &hosts, n, n_tasks, retries, cached,
        )));
        if self.resumed_items(stage).is_none() {
            self.journal.note(crate::record::journal::Entry::Items {
                stage,
                items: listed.items.clone(),
                file: listed.file.clone(),
            });
        }
        let Some(run) = self.stage_mut().filter(|r| r.index == stage) else {
            return;
        };
        let inline = (n <= ITEMS_IN_RECORD).then(|| listed.items.clone());
        run.items = Arc::new(listed.items);
        if let Some(rec) = self.book.stages.get_mut(stage) {
            rec.shards_total = n;
            rec.items = Some(ItemsRecord {
                source: source.clone(),
                count: n,
                listed: inline,
                file: listed.file,
            });
            if n == 0 {
                rec.note = Some(format!("the listing of `{source}` is empty: no item ran"));
            }
        }
        if cached && n > 0 {
            self.ask_cache(stage, n, out);
        }
    }
}
