//! Validation of a parsed playbook as a whole: names, counts, groups named by stages,
//! task shapes, modes, environment names, and every template rendered against every
//! context it will meet (each shard item, the first and last host of each group).
//!
//! Every problem becomes a [`Diagnostic`] at its place in the file; all of them are
//! reported at once. Parsing the YAML is [`super::parse`]'s job, and lowering a valid
//! playbook into what the engine runs is [`super::lower`]'s.

use super::diagnostic::{Diagnostic, Locator};
use super::model::{ALL_HOSTS, Playbook, Stage, Task};
use super::template::{self, TemplateContext};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// What validation sees: the playbook as written and its variables after `--var`.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub playbook: &'a Playbook,
    pub vars: &'a BTreeMap<String, serde_json::Value>,
}

impl Input<'_> {
    /// The group names a stage runs on, in fleet order.
    fn stage_groups(&self, stage: &Stage) -> Vec<String> {
        if stage.hosts.value == ALL_HOSTS {
            self.playbook.fleet.value.keys().cloned().collect()
        } else {
            vec![stage.hosts.value.clone()]
        }
    }
}

/// Whether an octal file mode as written (`"0644"`, `"0o755"`) is valid; its value.
pub fn file_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
}

/// A POSIX-portable login name, safe to put in a boot script.
fn valid_user(u: &str) -> bool {
    let mut chars = u.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && u.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_lowercase()
}

/// Appends every problem of the playbook to `out`.
pub fn validate(pb: &Input<'_>, at: &Locator<'_>, out: &mut Vec<Diagnostic>) {
    let p = pb.playbook;
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
    pb: &Input<'_>,
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
        && file_mode(&mode.value).is_none()
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
                let ctx = TemplateContext::for_validation(pb.vars, &group, index, count, *item);
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
