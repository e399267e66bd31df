//! A valid playbook lowered ONCE into a [`Plan`]: plain values with no positions, every
//! default applied and every field parsed (a copy's mode is a number here), so that
//! nothing after validation walks the syntax tree or parses a field again.
//!
//! Lowering assumes a playbook that [`super::validate`] accepted; it does not report
//! problems itself.

use super::duration::Dur;
use super::model::{ALL_HOSTS, FleetGroup, Playbook, Shards, Task};
use super::validate::file_mode;
use serde_json::Value;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long running tasks get to end after a cancel before the run moves on (at most;
/// short runs get less, see [`Plan::stop_grace`]).
pub const STOP_GRACE_MS: u64 = 60_000;
/// How long log collection may take in all before the run moves on to teardown (at
/// most; see [`Plan::collect_grace`]).
pub const COLLECT_GRACE_MS: u64 = 300_000;
/// A spot-interrupted task's default grace between SIGTERM and SIGKILL.
pub const DEFAULT_INTERRUPT_GRACE: Duration = Duration::from_secs(90);
/// The longest `interrupt_grace`: the notice comes two minutes before the instance goes.
pub const MAX_INTERRUPT_GRACE: Duration = Duration::from_secs(110);
/// The most a worker's dead-man's switch (and its deadline tag) waits past the latest
/// moment its logs may still be collected (see [`Plan::switch_margin`]).
pub const SWITCH_MARGIN: Duration = Duration::from_secs(120);
/// How many masters a run may have when its playbook does not say.
pub const DEFAULT_MAX_MASTERS: u32 = 3;

/// The most each task's stdout and stderr keep unless `log_limit` says otherwise.
pub const DEFAULT_LOG_LIMIT: u64 = 1 << 30;

/// The deadline of a playbook that sets none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);

/// A validated playbook: what a run does, and where it came from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The playbook's `name` (it prefixes run ids).
    pub name: String,
    /// The file it was read from (for messages and the record).
    pub file: PathBuf,
    /// The folder `copy` sources are relative to.
    pub base_dir: PathBuf,
    /// The source text (kept for the run record).
    pub source: String,
    /// `vars` after `--var` overrides.
    pub vars: BTreeMap<String, Value>,
    /// `vars` as the playbook writes them.
    pub written_vars: BTreeMap<String, Value>,
    /// The whole run is cut off by then.
    pub deadline: Duration,
    /// The fleet groups by name.
    pub fleet: BTreeMap<String, FleetGroup>,
    /// Where each fleet group is written (for messages about it after lowering).
    pub fleet_at: BTreeMap<String, Pos>,
    pub stages: Vec<StagePlan>,
    /// How many masters may run the run in all (the first and its successors).
    pub max_masters: u32,
    /// The most each task's stdout and stderr keep, in bytes.
    pub log_limit: u64,
    /// The most the run may spend, USD (estimated).
    pub budget_usd: Option<f64>,
    /// The declared secrets by name (where each value is read, not the value).
    pub secrets: BTreeMap<String, super::secrets::SecretDecl>,
}

/// Where something is written in the playbook (1-based), for messages about it found
/// after validation (a missing source, a failed listing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub fn of<T>(s: &Spanned<T>) -> Pos {
        Pos {
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }
}

/// Where a sharded stage's items come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardPlan {
    /// Written in the playbook.
    Items(Vec<Value>),
    /// One item `{url, key, name, size[, etag]}` per object under an S3 prefix or file
    /// under a local folder; `url` is a template, resolved when the stage starts.
    Objects { url: String, at: Pos },
    /// One item per non-empty line of an S3 object or local file.
    Lines { url: String, at: Pos },
}

/// One stage of a [`Plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    pub name: String,
    /// The groups it runs on, in fleet order (`hosts: all` is every group).
    pub groups: Vec<String>,
    pub tasks: Vec<TaskPlan>,
    /// The stage is cut off (and the run fails) after this long.
    pub timeout: Option<Dur>,
    /// Extra attempts of a failed task (plain) or item (sharded).
    pub retries: u32,
    /// Where a sharded stage's items come from; `None` for a plain stage.
    pub shards: Option<ShardPlan>,
    /// A sharded stage whose items are looked up in (and written to) the cache.
    pub cache: bool,
    /// Between SIGTERM and SIGKILL for a task interrupted by a spot notice.
    pub interrupt_grace: Duration,
}

impl StagePlan {
    pub fn is_sharded(&self) -> bool {
        self.shards.is_some()
    }

    /// The items written in the playbook, if they are.
    pub fn written_items(&self) -> Option<&[Value]> {
        match &self.shards {
            Some(ShardPlan::Items(items)) => Some(items),
            _ => None,
        }
    }
}

/// One task of a [`StagePlan`], still templated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlan {
    pub name: Option<String>,
    pub action: TaskAction,
    pub environment: BTreeMap<String, String>,
    /// The task is killed after this long.
    pub timeout: Option<Dur>,
    /// A fetch that also runs for an interrupted item (its checkpoint).
    pub on_interrupt: bool,
}

/// What a task does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskAction {
    /// `/bin/sh -c TEXT`.
    Shell(String),
    /// A program and its arguments.
    Command(Vec<String>),
    /// A file or folder put on the host.
    Copy(CopyPlan),
    /// Files matching a glob on the host, stored.
    Fetch(FetchPlan),
}

/// A `copy` task, still templated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    pub src: String,
    pub dest: String,
    pub mode: u32,
    pub optional: bool,
    /// Where `src` is written.
    pub at: Pos,
}

/// A `fetch` task, still templated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPlan {
    pub src: String,
    pub dest: String,
    pub optional: bool,
    /// Where `src` is written.
    pub at: Pos,
}

impl TaskPlan {
    /// The task's name as written, or its command as written (first line, cut to 60
    /// characters), for messages about a task not yet rendered.
    pub fn written_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let text = match &self.action {
            TaskAction::Shell(s) => s.clone(),
            TaskAction::Command(c) => c.join(" "),
            TaskAction::Copy(c) => format!("copy {} -> {}", c.src, c.dest),
            TaskAction::Fetch(f) => format!("fetch {} -> {}", f.src, f.dest),
        };
        short_name(String::new(), &text)
    }
}

/// `name` if not empty, else the first line of `text` cut to 60 characters.
pub fn short_name(name: String, text: &str) -> String {
    if !name.is_empty() {
        return name;
    }
    let first = text.trim().lines().next().unwrap_or_default();
    let mut short: String = first.chars().take(60).collect();
    if short.len() < text.trim().len() {
        short.push('…');
    }
    short
}

impl Plan {
    /// How long running tasks get to end after a cancel: a twentieth of the deadline,
    /// between 5 s and [`STOP_GRACE_MS`].
    pub fn stop_grace(&self) -> Duration {
        (self.deadline / 20).clamp(Duration::from_secs(5), Duration::from_millis(STOP_GRACE_MS))
    }

    /// How long log collection may take in all: a tenth of the deadline, between 15 s
    /// and [`COLLECT_GRACE_MS`].
    pub fn collect_grace(&self) -> Duration {
        (self.deadline / 10).clamp(
            Duration::from_secs(15),
            Duration::from_millis(COLLECT_GRACE_MS),
        )
    }

    /// How long a worker's dead-man's switch waits past the latest moment its logs may
    /// still be collected, so that the last collection never races the power-off
    /// (clocks differ): a twentieth of the deadline, between 5 s and [`SWITCH_MARGIN`].
    pub fn switch_margin(&self) -> Duration {
        (self.deadline / 20).clamp(Duration::from_secs(5), SWITCH_MARGIN)
    }

    /// How long after the deadline a worker may live: the stop and collect graces and
    /// the [`Plan::switch_margin`].
    pub fn after_deadline(&self) -> Duration {
        self.stop_grace() + self.collect_grace() + self.switch_margin()
    }

    /// How long after the run's start its workers may be swept (and their dead-man's
    /// switches fire): the deadline plus [`Plan::after_deadline`].
    pub fn worker_lifetime(&self) -> Duration {
        self.deadline + self.after_deadline()
    }

    /// Every `copy` task's source as written (possibly templated), relative to
    /// [`Plan::base_dir`].
    pub fn copy_sources(&self) -> Vec<&str> {
        self.copies().map(|c| c.src.as_str()).collect()
    }

    /// A problem at `at` in the playbook, found after validation.
    pub fn diagnostic(&self, at: Pos, message: String) -> super::Diagnostic {
        super::Diagnostic::at(&self.file, &self.source, at.line, at.column, message)
    }

    /// Every `copy` task of the plan.
    pub fn copies(&self) -> impl Iterator<Item = &CopyPlan> {
        self.stages
            .iter()
            .flat_map(|s| &s.tasks)
            .filter_map(|t| match &t.action {
                TaskAction::Copy(c) => Some(c),
                _ => None,
            })
    }
}

/// Lowers a playbook that validation accepted.
pub fn lower(
    playbook: Playbook,
    vars: BTreeMap<String, Value>,
    file: PathBuf,
    base_dir: PathBuf,
    source: String,
) -> Plan {
    let fleet_at: BTreeMap<String, Pos> = playbook
        .fleet
        .value
        .iter()
        .map(|(name, g)| (name.clone(), Pos::of(g)))
        .collect();
    let fleet: BTreeMap<String, FleetGroup> = playbook
        .fleet
        .value
        .into_iter()
        .map(|(name, g)| (name, g.value))
        .collect();
    let stages = playbook
        .stages
        .value
        .into_iter()
        .map(|s| {
            let s = s.value;
            let groups = if s.hosts.value == ALL_HOSTS {
                fleet.keys().cloned().collect()
            } else {
                vec![s.hosts.value]
            };
            StagePlan {
                name: s.name.value,
                groups,
                tasks: s
                    .tasks
                    .value
                    .into_iter()
                    .map(|t| lower_task(t.value))
                    .collect(),
                timeout: s.timeout.map(|t| t.value),
                retries: s.retries,
                shards: s.shards.map(|s| match s.value {
                    Shards::Items(items) => ShardPlan::Items(items),
                    Shards::Objects(url) => ShardPlan::Objects {
                        at: Pos::of(&url),
                        url: url.value,
                    },
                    Shards::Lines(url) => ShardPlan::Lines {
                        at: Pos::of(&url),
                        url: url.value,
                    },
                }),
                cache: s.cache.is_some_and(|c| c.value),
                interrupt_grace: s
                    .interrupt_grace
                    .map_or(DEFAULT_INTERRUPT_GRACE, |g| g.value.0),
            }
        })
        .collect();
    Plan {
        name: playbook.name.value,
        file,
        base_dir,
        source,
        vars,
        written_vars: playbook.vars,
        deadline: playbook.deadline.map_or(DEFAULT_DEADLINE, |d| d.value.0),
        max_masters: playbook
            .max_masters
            .as_ref()
            .map_or(DEFAULT_MAX_MASTERS, |m| m.value),
        log_limit: playbook
            .log_limit
            .as_ref()
            .map_or(DEFAULT_LOG_LIMIT, |l| l.value.0),
        budget_usd: playbook.budget_usd.as_ref().map(|b| b.value),
        secrets: playbook
            .secrets
            .iter()
            .filter_map(|(name, s)| {
                let source = super::secrets::SecretSource::parse(&s.value).ok()?;
                Some((
                    name.clone(),
                    super::secrets::SecretDecl {
                        source,
                        at: Pos::of(s),
                    },
                ))
            })
            .collect(),
        fleet,
        fleet_at,
        stages,
    }
}

fn lower_task(t: Task) -> TaskPlan {
    let action = match (t.shell, t.command, t.copy, t.fetch) {
        (Some(sh), ..) => TaskAction::Shell(sh.value),
        (None, Some(cmd), ..) => {
            TaskAction::Command(cmd.value.into_iter().map(|a| a.value).collect())
        }
        (None, None, Some(copy), _) => {
            let c = copy.value;
            TaskAction::Copy(CopyPlan {
                at: Pos::of(&c.src),
                src: c.src.value,
                dest: c.dest.value,
                // Validated: a mode that is present parses.
                mode: c.mode.and_then(|m| file_mode(&m.value)).unwrap_or(0o644),
                optional: c.optional,
            })
        }
        (None, None, None, Some(fetch)) => {
            let f = fetch.value;
            TaskAction::Fetch(FetchPlan {
                at: Pos::of(&f.src),
                src: f.src.value,
                dest: f.dest.value,
                optional: f.optional,
            })
        }
        // Validation requires exactly one action.
        (None, None, None, None) => TaskAction::Command(Vec::new()),
    };
    TaskPlan {
        name: t.name.map(|n| n.value),
        action,
        environment: t
            .environment
            .into_iter()
            .map(|(k, v)| (k, v.value))
            .collect(),
        timeout: t.timeout.map(|t| t.value),
        on_interrupt: t.on_interrupt.is_some_and(|f| f.value),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn workers_outlive_the_last_log_collection_by_a_margin() {
        for (deadline, margin) in [("30s", 5), ("1h", 120), ("7d", 120)] {
            let yaml = format!(
                "name: t\ndeadline: {deadline}\nfleet: {{ w: {{ count: 1 }} }}\nstages:\n  - name: s\n    hosts: w\n    tasks:\n      - shell: 'true'\n"
            );
            let plan =
                crate::plan::parse(Path::new("t.yml"), &yaml, Path::new("."), &BTreeMap::new())
                    .expect("valid");
            let last_collection = plan.deadline + plan.stop_grace() + plan.collect_grace();
            assert!(
                plan.worker_lifetime() >= last_collection + Duration::from_secs(margin),
                "{deadline}: the switch fires at {:?}, collection may run until {last_collection:?}",
                plan.worker_lifetime()
            );
        }
    }
}
