//! The playbook language: its YAML model, parsing, and validation.
//!
//! A playbook is parsed strictly (unknown keys are errors) and then validated as a whole:
//! groups named by stages exist, templates compile and render against every context
//! they will meet (each shard item, each host), durations are well formed. Every
//! problem becomes a [`Diagnostic`] with the file, line, column and what was expected;
//! validation reports all of them at once.
//!
//! This module knows nothing about running a playbook: rendering a task for a given
//! host and item is [`crate::template`]'s job, and scheduling is [`crate::engine`]'s.

use crate::template::{self, TemplateContext};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The name a stage uses to mean every host of every group.
pub const ALL_HOSTS: &str = "all";

/// A whole playbook, as written.
///
/// ```yaml
/// name: nightly-inference
/// deadline: 3h
/// vars: { model: resnet50 }
/// fleet:
///   gpu: { count: 4, instance_type: g5.xlarge, market: spot-or-on-demand }
/// stages:
///   - name: setup
///     hosts: all
///     tasks:
///       - shell: ./setup.sh {{ vars.model }}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// A short name for the job; it prefixes run ids.
    pub name: Spanned<String>,
    /// The whole run is cut off, its logs collected and its instances torn down by then.
    /// Defaults to 1h.
    #[serde(default)]
    pub deadline: Option<Spanned<Dur>>,
    /// Values for templates, as `{{ vars.NAME }}`. `--var NAME=VALUE` overrides them.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Named groups of workers.
    pub fleet: Spanned<BTreeMap<String, Spanned<FleetGroup>>>,
    /// Stages, run in order; a stage starts once the previous one is done everywhere.
    pub stages: Spanned<Vec<Spanned<Stage>>>,
}

/// A named group of identical workers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetGroup {
    /// How many workers to start.
    pub count: u32,
    /// Start the run with at least this many when capacity is short (default: `count`).
    #[serde(default)]
    pub min_count: Option<u32>,
    /// One EC2 instance type, or a list tried in order on capacity errors.
    #[serde(default)]
    pub instance_type: Option<InstanceTypes>,
    /// The machine image (AMI id); the launch configuration's default when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// How to buy capacity.
    #[serde(default)]
    pub market: Market,
    /// Root volume size in GiB.
    #[serde(default)]
    pub volume_gb: Option<u32>,
    /// The login user on the image (e.g. `ec2-user`, `ubuntu`).
    #[serde(default)]
    pub user: Option<String>,
    /// Subnet override for this group.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Security-group override for this group.
    #[serde(default)]
    pub security_groups: Option<Vec<String>>,
    /// Give the workers a public IP (off by default).
    #[serde(default)]
    pub public_ip: bool,
}

impl FleetGroup {
    /// The minimum number of workers the run starts with.
    pub fn min(&self) -> u32 {
        self.min_count.unwrap_or(self.count)
    }
}

/// How a group's capacity is bought.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    #[default]
    OnDemand,
    Spot,
    /// Spot first, on-demand when spot capacity is short.
    SpotOrOnDemand,
}

/// One instance type or a fallback list, written as a string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceTypes(pub Vec<String>);

impl<'de> Deserialize<'de> for InstanceTypes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InstanceTypes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an instance type or a list of instance types")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(InstanceTypes(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element::<String>()? {
                    out.push(t);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("expected at least one instance type"));
                }
                Ok(InstanceTypes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A stage: the same tasks on every host of a group, or shard items spread over them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: Spanned<String>,
    /// A fleet group, or `all`.
    pub hosts: Spanned<String>,
    /// Tasks run in order on each host (or for each shard item).
    pub tasks: Spanned<Vec<Spanned<Task>>>,
    /// The stage is cut off (and the run fails) after this long.
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
    /// Extra attempts for a failed task (a failed shard item is retried from its first
    /// task, on another host where possible).
    #[serde(default)]
    pub retries: u32,
    /// Items spread dynamically over the stage's hosts: a host that finishes takes the
    /// next item. Each item runs the stage's tasks with `item` set.
    #[serde(default)]
    pub shards: Option<Spanned<Vec<serde_json::Value>>>,
}

/// One step on a host: exactly one of `shell`, `command` or `copy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// A command line run by `/bin/sh -c`.
    #[serde(default)]
    pub shell: Option<Spanned<String>>,
    /// A program and its arguments, run without a shell.
    #[serde(default)]
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    /// A file from the playbook's folder (src) put on the host (dest).
    #[serde(default)]
    pub copy: Option<Spanned<CopySpec>>,
    /// Extra environment variables for this task.
    #[serde(default)]
    pub environment: BTreeMap<String, Spanned<String>>,
    /// The task is killed (whole process group) after this long.
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
}

/// The `copy` task's arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySpec {
    /// Relative to the playbook's folder.
    pub src: Spanned<String>,
    /// Relative to the login user's home on the host, or absolute.
    pub dest: Spanned<String>,
    /// File mode, e.g. `"0755"` (default `0644`).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
}

/// A duration written like `90s`, `30m`, `3h`, `1h30m` or `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parses `1h30m`, `45s`, `250ms`, `2d`; units are required, the value is not zero.
    pub fn parse(s: &str) -> Option<Dur> {
        let mut total = Duration::ZERO;
        let mut rest = s.trim();
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let n: u64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let per: Duration = match &rest[..unit_len] {
                "ms" => Duration::from_millis(1),
                "s" => Duration::from_secs(1),
                "m" => Duration::from_secs(60),
                "h" => Duration::from_secs(3600),
                "d" => Duration::from_secs(86_400),
                _ => return None,
            };
            total = total.checked_add(per.checked_mul(u32::try_from(n).ok()?)?)?;
            rest = &rest[unit_len..];
        }
        (!total.is_zero()).then_some(Dur(total))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                "expected a duration like 90s, 30m, 3h or 1h30m, found `{s}`"
            ))
        })
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let (h, m, s, rem) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let mut out = String::new();
        for (v, u) in [(h, "h"), (m, "m"), (s, "s"), (rem, "ms")] {
            if v > 0 {
                out.push_str(&format!("{v}{u}"));
            }
        }
        f.write_str(if out.is_empty() { "0s" } else { &out })
    }
}

/// One problem in a playbook, at a place in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the position is unknown.
    pub line: u64,
    pub column: u64,
    /// What is wrong and what was expected: a lowercase fragment.
    pub message: String,
    /// The offending source line, for display.
    pub source_line: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(src) = &self.source_line {
            let pad = " ".repeat(self.line.to_string().len());
            let caret = " ".repeat(self.column.saturating_sub(1) as usize);
            write!(f, "\n{pad} |\n{} | {src}\n{pad} | {caret}^", self.line)?;
        }
        Ok(())
    }
}

/// Every problem found in one playbook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<Diagnostic>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Errors from loading a playbook file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// failed to read the playbook
    #[error("failed to read playbook {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// the playbook is invalid
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

/// A parsed and validated playbook, with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub playbook: Playbook,
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// The folder `copy` sources are relative to.
    pub base_dir: PathBuf,
    /// The source text (kept for the run record).
    pub source: String,
    /// `vars` after `--var` overrides.
    pub vars: BTreeMap<String, serde_json::Value>,
}

impl Loaded {
    /// The run deadline (default 1h).
    pub fn deadline(&self) -> Duration {
        self.playbook
            .deadline
            .as_ref()
            .map_or(Duration::from_secs(3600), |d| d.value.0)
    }

    /// How long running tasks get to end after a cancel: a twentieth of the deadline,
    /// between 5 s and [`crate::engine::STOP_GRACE_MS`].
    pub fn stop_grace(&self) -> Duration {
        (self.deadline() / 20).clamp(
            Duration::from_secs(5),
            Duration::from_millis(crate::engine::STOP_GRACE_MS),
        )
    }

    /// How long log collection may take in all: a tenth of the deadline, between 15 s
    /// and [`crate::engine::COLLECT_GRACE_MS`].
    pub fn collect_grace(&self) -> Duration {
        (self.deadline() / 10).clamp(
            Duration::from_secs(15),
            Duration::from_millis(crate::engine::COLLECT_GRACE_MS),
        )
    }

    /// How long after the run's start its workers may be swept (and their dead-man's
    /// switches fire): the deadline plus the stop and collect graces.
    pub fn worker_lifetime(&self) -> Duration {
        self.deadline() + self.stop_grace() + self.collect_grace()
    }

    /// Every `copy` task's source as written (possibly templated), relative to
    /// [`Loaded::base_dir`].
    pub fn copy_sources(&self) -> Vec<&str> {
        self.playbook
            .stages
            .value
            .iter()
            .flat_map(|s| s.value.tasks.value.iter())
            .filter_map(|t| t.value.copy.as_ref())
            .map(|c| c.value.src.value.as_str())
            .collect()
    }

    /// The group names a stage runs on, in fleet order.
    pub fn stage_groups(&self, stage: &Stage) -> Vec<String> {
        if stage.hosts.value == ALL_HOSTS {
            self.playbook.fleet.value.keys().cloned().collect()
        } else {
            vec![stage.hosts.value.clone()]
        }
    }
}

/// Reads, parses and validates a playbook file, applying `--var` overrides.
pub fn load(path: &Path, overrides: &BTreeMap<String, String>) -> Result<Loaded, LoadError> {
    let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(parse(path, &source, &base_dir, overrides)?)
}

/// Parses and validates playbook text; `file` is used in messages only.
pub fn parse(
    file: &Path,
    source: &str,
    base_dir: &Path,
    overrides: &BTreeMap<String, String>,
) -> Result<Loaded, Invalid> {
    let at = Locator { file, source };
    let playbook: Playbook = serde_saphyr::from_str(source).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        Invalid(vec![at.diag(line, column, bare_message(&e))])
    })?;
    let mut vars = playbook.vars.clone();
    for (k, v) in overrides {
        vars.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let loaded = Loaded {
        playbook,
        file: file.to_owned(),
        base_dir: base_dir.to_owned(),
        source: source.to_owned(),
        vars,
    };
    let mut problems = Vec::new();
    validate(&loaded, &at, &mut problems);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        problems.sort_by_key(|d| (d.line, d.column));
        Err(Invalid(problems))
    }
}

/// A POSIX-portable login name, safe to put in a boot script.
fn valid_user(u: &str) -> bool {
    let mut chars = u.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && u.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// serde-saphyr's message without its own location (prefix or suffix) and snippet, with
/// parser jargon turned into what was expected.
fn bare_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 4 column 5: unknown field ..." -> "unknown field ..."
    let msg = match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") && head.contains(" column ") => rest,
        _ => first,
    };
    // "... at line 9, column 18" -> "..."
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(", column ") => &msg[..i],
        _ => msg,
    };
    friendly(msg)
}

/// Rewrites the parser's wording of common type errors as what was expected.
fn friendly(msg: &str) -> String {
    let rewrites: [(&str, &str); 6] = [
        (
            "unexpected event: expected sequence start",
            "expected a list, e.g. `[a, b]` or `- a` lines",
        ),
        (
            "unexpected event: expected mapping start",
            "expected a mapping of keys to values, e.g. `{ key: value }`",
        ),
        (
            "unexpected event: expected string scalar",
            "expected a string",
        ),
        (
            "invalid u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("invalid u64", "expected a whole number"),
        ("invalid bool", "expected true or false"),
    ];
    for (from, to) in rewrites {
        if msg == from {
            return to.to_owned();
        }
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!("duplicate key `{key}`: each key may appear once");
    }
    msg.to_owned()
}

/// Turns positions into diagnostics for one file.
struct Locator<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Locator<'_> {
    fn diag(&self, line: u64, column: u64, message: impl Into<String>) -> Diagnostic {
        let source_line = (line > 0)
            .then(|| self.source.lines().nth((line - 1) as usize))
            .flatten()
            .map(str::to_owned);
        Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            source_line,
        }
    }

    fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> Diagnostic {
        self.diag(s.referenced.line(), s.referenced.column(), message)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_lowercase()
}

fn validate(pb: &Loaded, at: &Locator<'_>, out: &mut Vec<Diagnostic>) {
    let p = &pb.playbook;
    if !valid_name(&p.name.value) {
        out.push(at.at(
            &p.name,
            format!(
                "expected a name of lowercase letters, digits and '-', starting with a letter, at most 40 characters, found `{}`",
                p.name.value
            ),
        ));
    }
    if p.fleet.value.is_empty() {
        out.push(at.at(&p.fleet, "expected at least one group under `fleet`"));
    }
    for (name, g) in &p.fleet.value {
        if !valid_name(name) || name == ALL_HOSTS || name == "master" {
            out.push(at.at(
                g,
                format!("expected a group name of lowercase letters, digits and '-' (not `all` or `master`), found `{name}`"),
            ));
        }
        if g.value.count == 0 || g.value.count > 1000 {
            out.push(at.at(
                g,
                format!(
                    "expected `count` between 1 and 1000 in group `{name}`, found {}",
                    g.value.count
                ),
            ));
        }
        if let Some(user) = &g.value.user
            && !valid_user(user)
        {
            out.push(at.at(
                g,
                format!("expected `user` in group `{name}` to be a login name (a lowercase letter or '_', then lowercase letters, digits, '_' or '-', at most 32), found `{user}`"),
            ));
        }
        if let Some(min) = g.value.min_count
            && (min == 0 || min > g.value.count)
        {
            out.push(at.at(g, format!("expected `min_count` between 1 and `count` ({}) in group `{name}`, found {min}", g.value.count)));
        }
    }
    if p.stages.value.is_empty() {
        out.push(at.at(&p.stages, "expected at least one stage under `stages`"));
    }
    let mut seen = BTreeMap::new();
    for stage in &p.stages.value {
        let s = &stage.value;
        if s.name.value.trim().is_empty() {
            out.push(at.at(&s.name, "expected a non-empty stage name"));
        } else if let Some(line) = seen.insert(s.name.value.clone(), s.name.referenced.line()) {
            out.push(at.at(
                &s.name,
                format!(
                    "stage name `{}` is already used at line {line}; stage names must be unique",
                    s.name.value
                ),
            ));
        }
        let known_group = s.hosts.value == ALL_HOSTS || p.fleet.value.contains_key(&s.hosts.value);
        if !known_group {
            let groups: Vec<&str> = p.fleet.value.keys().map(String::as_str).collect();
            out.push(at.at(
                &s.hosts,
                format!(
                    "unknown group `{}` in `hosts`, expected `all` or one of: {}",
                    s.hosts.value,
                    groups.join(", ")
                ),
            ));
        }
        if s.tasks.value.is_empty() {
            out.push(at.at(
                &s.tasks,
                format!("expected at least one task in stage `{}`", s.name.value),
            ));
        }
        if let Some(shards) = &s.shards
            && shards.value.is_empty()
        {
            out.push(at.at(
                shards,
                "expected at least one item in `shards` (or no `shards` key)",
            ));
        }
        if s.retries > 100 {
            out.push(at.at(
                stage,
                format!("expected `retries` of at most 100, found {}", s.retries),
            ));
        }
        for task in &s.tasks.value {
            validate_task(pb, s, task, known_group, at, out);
        }
    }
}

fn validate_task(
    pb: &Loaded,
    stage: &Stage,
    task: &Spanned<Task>,
    known_group: bool,
    at: &Locator<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let t = &task.value;
    let actions = [t.shell.is_some(), t.command.is_some(), t.copy.is_some()];
    match actions.iter().filter(|a| **a).count() {
        0 => out.push(at.at(
            task,
            "expected one of `shell`, `command` or `copy` in this task",
        )),
        1 => {}
        _ => out.push(at.at(
            task,
            "expected only one of `shell`, `command` or `copy` in this task, found several",
        )),
    }
    if let Some(cmd) = &t.command
        && cmd.value.is_empty()
    {
        out.push(at.at(
            cmd,
            "expected `command` to be a non-empty list: [program, arg, ...]",
        ));
    }
    if let Some(copy) = &t.copy
        && let Some(mode) = &copy.value.mode
        && u32::from_str_radix(mode.value.trim_start_matches("0o"), 8).map_or(true, |m| m > 0o7777)
    {
        out.push(at.at(
            mode,
            format!(
                "expected an octal file mode like \"0644\", found `{}`",
                mode.value
            ),
        ));
    }
    for k in t.environment.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            out.push(at.at(
                task,
                format!("expected an environment variable name, found `{k}`"),
            ));
        }
    }
    if !known_group {
        return;
    }
    // Render every template against every context it will meet: each host index of the
    // stage's groups (first and last suffice for index-dependent logic) and each item.
    let templates = task_templates(t);
    let items: Vec<Option<&serde_json::Value>> = match &stage.shards {
        Some(s) => s.value.iter().map(Some).collect(),
        None => vec![None],
    };
    for (group, count) in pb
        .stage_groups(stage)
        .into_iter()
        .filter_map(|g| pb.playbook.fleet.value.get(&g).map(|f| (g, f.value.count)))
    {
        let mut indices = vec![0];
        if count > 1 {
            indices.push(count - 1);
        }
        for index in indices {
            for item in &items {
                let ctx = TemplateContext::for_validation(pb, &group, index, count, *item);
                for (spanned, text) in &templates {
                    if let Err(e) = template::render(text, &ctx) {
                        let d = at.diag(spanned.0, spanned.1, template_message(&e, *item));
                        if !out.contains(&d) {
                            out.push(d);
                        }
                    }
                }
            }
        }
    }
}

fn template_message(e: &template::TemplateError, item: Option<&serde_json::Value>) -> String {
    match item {
        Some(item) => format!("{e} (with item = {item})"),
        None => e.to_string(),
    }
}

/// Every template string of a task with its (line, column).
fn task_templates(t: &Task) -> Vec<((u64, u64), &str)> {
    fn pos<T>(s: &Spanned<T>) -> (u64, u64) {
        (s.referenced.line(), s.referenced.column())
    }
    let mut v = Vec::new();
    if let Some(s) = &t.shell {
        v.push((pos(s), s.value.as_str()));
    }
    if let Some(c) = &t.command {
        v.extend(c.value.iter().map(|a| (pos(a), a.value.as_str())));
    }
    if let Some(c) = &t.copy {
        v.push((pos(&c.value.src), c.value.src.value.as_str()));
        v.push((pos(&c.value.dest), c.value.dest.value.as_str()));
    }
    v.extend(t.environment.values().map(|e| (pos(e), e.value.as_str())));
    if let Some(n) = &t.name {
        v.push((pos(n), n.value.as_str()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("3h", 10800),
            ("1h30m", 5400),
            ("2d", 172_800),
        ] {
            assert_eq!(Dur::parse(s), Some(Dur(Duration::from_secs(secs))), "{s}");
        }
        assert_eq!(Dur::parse("250ms"), Some(Dur(Duration::from_millis(250))));
        for bad in [
            "",
            "5",
            "h",
            "5q",
            "0s",
            "-1s",
            "1.5h",
            "1h 30m",
            "99999999999h",
        ] {
            assert_eq!(Dur::parse(bad), None, "{bad}");
        }
        assert_eq!(Dur(Duration::from_secs(5400)).to_string(), "1h30m");
    }
}
