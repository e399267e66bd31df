//! Validation of a parsed playbook as a whole: names, counts, groups named by stages,
//! task shapes, modes, environment names, data URLs and fetch destinations, caching,
//! and every template rendered against every context it will meet (each shard item, a
//! sample item of data shards, the first and last host of each group, the trigger when
//! it is known).
//!
//! Every problem becomes a [`Diagnostic`] at its place in the file; all of them are
//! reported at once. Parsing the YAML is [`super::parse`]'s job, and lowering a valid
//! playbook into what the engine runs is [`super::lower`]'s.

use super::diagnostic::{Diagnostic, Locator};
use super::lower::MAX_INTERRUPT_GRACE;
use super::model::{ALL_HOSTS, Playbook, Shards, Stage, Task};
use super::template::{self, TemplateContext, Trigger};
use super::url;
use serde_json::{Value, json};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

use super::limits::{MAX_DURATION, MAX_DURATION_TEXT};

/// What validation sees: the playbook as written, its variables after `--var`, and the
/// trigger's fields when the trigger is known (a template using a field the trigger
/// lacks, e.g. `trigger.url` under a schedule, is then an error).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub playbook: &'a Playbook,
    pub vars: &'a BTreeMap<String, Value>,
    pub trigger: Option<&'a BTreeMap<String, Value>>,
    /// What `secrets.*` renders as (placeholders: the values are not known yet).
    pub secrets: &'a BTreeMap<String, String>,
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

/// Whether `p` is an IAM instance profile name, or the ARN of one.
fn valid_profile(p: &str) -> bool {
    let name_char = |c: u8| c.is_ascii_alphanumeric() || b"+=,.@_-".contains(&c);
    match p.strip_prefix("arn:") {
        Some(rest) => {
            rest.contains(":instance-profile/")
                && p.len() <= 2048
                && rest.bytes().all(|c| name_char(c) || c == b':' || c == b'/')
        }
        None => (1..=128).contains(&p.len()) && p.bytes().all(name_char),
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
    super::secrets::validate(p, at, out);
    super::limits::validate(p, at, out);
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
        if let Some(profile) = &g.value.instance_profile
            && !valid_profile(profile)
        {
            out.push(at.at(
                g,
                format!("expected `instance_profile` in group `{name}` to be an IAM instance profile name (1 to 128 letters, digits and `+=,.@_-`) or its ARN, found `{profile}`"),
            ));
        }
        if let Some(replace) = g.value.replace
            && replace > 1000
        {
            out.push(at.at(
                g,
                format!("expected `replace` of at most 1000 in group `{name}`, found {replace}"),
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
        match s.shards.as_ref().map(|s| (s, &s.value)) {
            Some((spanned, Shards::Items(items))) if items.is_empty() => out.push(at.at(
                spanned,
                "expected at least one item in `shards` (or no `shards` key)",
            )),
            Some((_, Shards::Objects(u) | Shards::Lines(u))) => {
                if let Err(why) = url::check_source(&u.value) {
                    out.push(at.at(u, why.to_string()));
                }
                validate_shard_url(pb, s, u, at, out);
            }
            _ => {}
        }
        if let Some(cache) = &s.cache
            && cache.value
        {
            validate_cache(s, cache, at, out);
        }
        if let Some(t) = &s.timeout
            && t.value.0 > MAX_DURATION
        {
            out.push(at.at(
                t,
                format!(
                    "expected `timeout` of at most {MAX_DURATION_TEXT}, found {}",
                    t.value
                ),
            ));
        }
        if let Some(grace) = &s.interrupt_grace
            && (grace.value.0.is_zero() || grace.value.0 > MAX_INTERRUPT_GRACE)
        {
            out.push(at.at(
                grace,
                "expected `interrupt_grace` between 1s and 110s (a spot notice comes 2 minutes ahead)",
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
    if let Some(d) = &t.timeout
        && d.value.0 > MAX_DURATION
    {
        out.push(at.at(
            d,
            format!(
                "expected `timeout` of at most {MAX_DURATION_TEXT}, found {}",
                d.value
            ),
        ));
    }
    let actions = [
        t.shell.is_some(),
        t.command.is_some(),
        t.copy.is_some(),
        t.fetch.is_some(),
    ];
    match actions.iter().filter(|a| **a).count() {
        0 => out.push(at.at(
            task,
            "expected one of `shell`, `command`, `copy` or `fetch` in this task",
        )),
        1 => {}
        _ => out.push(at.at(
            task,
            "expected only one of `shell`, `command`, `copy` or `fetch` in this task, found several",
        )),
    }
    if let Some(copy) = &t.copy {
        if let Err(why) = url::check_source(&copy.value.src.value) {
            out.push(at.at(&copy.value.src, why.to_string()));
        }
        let dest = &copy.value.dest.value;
        if !dest.contains("{{")
            && !dest.contains("{%")
            && let Err(why) = url::check_copy_dest(dest, dest)
        {
            out.push(at.at(&copy.value.dest, why.to_string()));
        }
    }
    if let Some(flag) = &t.on_interrupt
        && flag.value
        && (t.fetch.is_none() || stage.shards.is_none())
    {
        out.push(at.at(
            flag,
            "`on_interrupt: true` is for `fetch` tasks of sharded stages (it saves an interrupted item's checkpoint)",
        ));
    }
    if let Some(fetch) = &t.fetch {
        let f = &fetch.value;
        if f.src.value.trim().is_empty() {
            out.push(at.at(&f.src, "expected a glob in `fetch.src`, e.g. `out/*.csv`"));
        }
        if let Err(why) = url::check_fetch_dest(&f.dest.value) {
            out.push(at.at(&f.dest, why.to_string()));
        }
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
    super::secrets::check_task(t, at, out);
    if !known_group {
        return;
    }
    // Render every template against every context it will meet: each host index of the
    // stage's groups (first and last suffice for index-dependent logic) and each item
    // (a sample item for items resolved from data).
    let templates = task_templates(t);
    let samples = sample_items(stage);
    let items: Vec<Option<&Value>> = match (&stage.shards, &samples) {
        (Some(s), _) if matches!(s.value, Shards::Items(_)) => match &s.value {
            Shards::Items(items) => items.iter().map(Some).collect(),
            _ => Vec::new(),
        },
        (Some(_), samples) => samples.iter().map(Some).collect(),
        (None, _) => vec![None],
    };
    if let Some(fetch) = &t.fetch {
        check_fetch_varies(pb, stage, fetch, &items, at, out);
    }
    let trigger = pb.trigger.map_or(Trigger::Any, Trigger::Known);
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
                let mut ctx = TemplateContext::for_validation(pb.vars, &group, index, count, *item)
                    .with_secrets(pb.secrets);
                ctx.trigger = trigger.clone();
                for (spanned, text) in &templates {
                    if let Err(e) = template::render(text, &ctx) {
                        let d = at.diag(
                            spanned.0,
                            spanned.1,
                            template_message(&e, *item, pb.trigger),
                        );
                        // One problem per place (the first host or item that shows it).
                        if !out.iter().any(|o| o.line == d.line && o.column == d.column) {
                            out.push(d);
                        }
                    }
                }
            }
        }
    }
}

fn template_message(
    e: &template::TemplateError,
    item: Option<&Value>,
    trigger: Option<&BTreeMap<String, Value>>,
) -> String {
    if let (Some(t), Some(frag)) = (trigger, &e.fragment)
        && let Some(field) = frag.strip_prefix("trigger.")
        && !t.contains_key(field.split(['.', ' ', '|']).next().unwrap_or(field))
    {
        let kind = t.get("kind").and_then(Value::as_str).unwrap_or("this");
        return format!(
            "`{frag}` is not set for a {kind} trigger (`trigger.url` is set by S3 uploads and `squall run --trigger-url`); nothing was launched"
        );
    }
    match item {
        Some(item) => format!("{e} (with item = {item})"),
        None => e.to_string(),
    }
}

/// A shard URL renders (it is resolved when the stage starts, with no host or item).
fn validate_shard_url(
    pb: &Input<'_>,
    stage: &Stage,
    u: &Spanned<String>,
    at: &Locator<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let group = pb
        .stage_groups(stage)
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut ctx =
        TemplateContext::for_validation(pb.vars, &group, 0, 1, None).with_secrets(pb.secrets);
    ctx.trigger = pb.trigger.map_or(Trigger::Any, Trigger::Known);
    if let Err(e) = template::render(&u.value, &ctx) {
        out.push(at.at(u, template_message(&e, None, pb.trigger)));
    }
}

/// Sample items for a stage whose items come from data, as the listing will make them.
fn sample_items(stage: &Stage) -> Vec<Value> {
    match stage.shards.as_ref().map(|s| &s.value) {
        Some(Shards::Objects(u)) => {
            let s3 = u.value.starts_with("s3://");
            ["a.csv", "b/c.csv"]
                .iter()
                .map(|name| {
                    let mut item = json!({
                        "url": if s3 { format!("s3://bucket/prefix/{name}") } else { format!("inputs/{name}") },
                        "key": format!("prefix/{name}"),
                        "name": name,
                        "size": 1,
                    });
                    if s3 {
                        item["etag"] = json!("\"0\"");
                    }
                    item
                })
                .collect()
        }
        Some(Shards::Lines(_)) => vec![json!("first line"), json!("second line")],
        _ => Vec::new(),
    }
}

/// A fetch in a stage of more than one unit must be able to write different keys for
/// different units: its `src` or `dest` must render differently for two of them.
fn check_fetch_varies(
    pb: &Input<'_>,
    stage: &Stage,
    fetch: &Spanned<super::model::FetchSpec>,
    items: &[Option<&Value>],
    at: &Locator<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let f = &fetch.value;
    if url::check_fetch_dest(&f.dest.value).is_err() {
        return; // already reported
    }
    let groups: Vec<(String, u32)> = pb
        .stage_groups(stage)
        .into_iter()
        .filter_map(|g| pb.playbook.fleet.value.get(&g).map(|f| (g, f.value.count)))
        .collect();
    // Two different units: two items of a sharded stage, two hosts of a plain one.
    let units: Vec<(String, u32, u32, Option<&Value>)> = if stage.shards.is_some() {
        let Some((group, count)) = groups.first() else {
            return;
        };
        items
            .iter()
            .take(2)
            .map(|i| (group.clone(), 0, *count, *i))
            .collect()
    } else {
        let mut hosts = Vec::new();
        for (group, count) in &groups {
            for index in 0..(*count).min(2) {
                hosts.push((group.clone(), index, *count, None));
            }
        }
        hosts.into_iter().take(2).collect()
    };
    if units.len() < 2 {
        return;
    }
    let render = |(group, index, count, item): &(String, u32, u32, Option<&Value>)| {
        let ctx = TemplateContext::for_validation(pb.vars, group, *index, *count, *item)
            .with_secrets(pb.secrets);
        (
            template::render(&f.src.value, &ctx).ok(),
            template::render(&f.dest.value, &ctx).ok(),
        )
    };
    let (a, b) = (render(&units[0]), render(&units[1]));
    if a.0.is_some() && a == b {
        let by = if stage.shards.is_some() {
            "the item (e.g. `{{ item }}`)"
        } else {
            "`{{ host.name }}`"
        };
        out.push(at.at(
            &f.dest,
            format!(
                "every unit of stage `{}` would fetch to the same keys: template `dest` (or `src`) with {by}",
                stage.name.value
            ),
        ));
    }
}

/// A cached stage is keyed by what its items do: it must be sharded, and its tasks must
/// not depend on the run, the host or the trigger.
fn validate_cache(
    stage: &Stage,
    cache: &Spanned<bool>,
    at: &Locator<'_>,
    out: &mut Vec<Diagnostic>,
) {
    if stage.shards.is_none() {
        out.push(at.at(
            cache,
            "`cache` applies to sharded stages (their items are what is cached)",
        ));
        return;
    }
    for task in &stage.tasks.value {
        for (_, text) in task_templates(&task.value) {
            let Some(refs) = template::references(text) else {
                continue;
            };
            if let Some(r) = refs.iter().find(|r| {
                ["run", "host", "trigger"]
                    .iter()
                    .any(|p| r.as_str() == *p || r.starts_with(&format!("{p}.")))
            }) {
                out.push(at.at(
                    cache,
                    format!(
                        "stage `{}` cannot be keyed for the cache: a task uses `{r}` (cached items may depend only on vars and the item)",
                        stage.name.value
                    ),
                ));
                return;
            }
        }
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
    if let Some(f) = &t.fetch {
        v.push((pos(&f.value.src), f.value.src.value.as_str()));
        v.push((pos(&f.value.dest), f.value.dest.value.as_str()));
    }
    v.extend(t.environment.values().map(|e| (pos(e), e.value.as_str())));
    if let Some(n) = &t.name {
        v.push((pos(n), n.value.as_str()));
    }
    v
}
