//! Rendering one task of the plan for one host (and item) into what the runner runs: a
//! [`TaskSpec`] for the agent (argv, environment, timeout) or a file to copy, and the
//! name the record shows.
//!
//! Templates are rendered here, at start time; which contexts a playbook must render in
//! is checked before the run by [`crate::plan::validate`].

use super::types::{TaskCommand, TaskKey};
use crate::plan::secrets::{self, Secrets};
use crate::plan::template::{self, HostVars, TemplateContext, TemplateError, Trigger};
use crate::plan::url::{self, DataUrl, FetchDest};
use crate::plan::{Plan, TaskAction, short_name};
use serde_json::Value;
use squall_worker::TaskSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a task is rendered for.
#[derive(Debug, Clone, Copy)]
pub struct For<'a> {
    pub run_id: &'a str,
    /// What `run.files` renders as.
    pub run_files: &'a str,
    /// Whether a `copy` may read an absolute local path (not on an EC2 master).
    pub allow_absolute: bool,
    pub trigger: &'a BTreeMap<String, Value>,
    pub host_name: &'a str,
    pub host_index: u32,
    pub host_count: u32,
    pub group: &'a str,
    pub item: Option<&'a Value>,
    /// The run's secret values.
    pub secrets: &'a Secrets,
}

/// The environment variable a `shell` text that uses secrets travels in (the
/// environment reaches the agent on its stdin), instead of the task's argv.
pub const SHELL_SCRIPT_ENV: &str = "SQUALL_SHELL_SCRIPT";

/// The argv of a `shell` task whose text uses secrets: the shell takes its text from
/// [`SHELL_SCRIPT_ENV`], out of its environment before anything runs, and evaluates
/// it, so the text is in no process's argv and no child inherits it.
pub const SHELL_FROM_ENV: &str =
    "__squall_script=$SQUALL_SHELL_SCRIPT; unset SQUALL_SHELL_SCRIPT; eval \"$__squall_script\"";

/// Why a task could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Url(#[from] url::BadUrl),
    #[error(
        "`{0}` is an absolute local path: a master on EC2 copies from the playbook's folder, S3 or the run's files only"
    )]
    Absolute(String),
}

/// A rendered `copy.src` as the runner reads it: relative paths joined to the
/// playbook's folder.
pub fn source(plan: &Plan, text: &str, allow_absolute: bool) -> Result<DataUrl, RenderError> {
    url::check_rendered_source(text)?;
    Ok(match DataUrl::parse(text)? {
        DataUrl::Local(p) if p.is_absolute() && !allow_absolute => {
            return Err(RenderError::Absolute(text.to_owned()));
        }
        DataUrl::Local(p) if p.is_relative() => {
            // Keep a folder's trailing `/` (joining drops it).
            let folder = text.trim_end().ends_with('/');
            let mut joined = plan.base_dir.join(p).display().to_string();
            if folder && !joined.ends_with('/') {
                joined.push('/');
            }
            DataUrl::Local(joined.into())
        }
        other => other,
    })
}

/// The task `key` names, rendered: its name and its command.
pub fn render(
    plan: &Plan,
    key: TaskKey,
    at: For<'_>,
) -> Result<(String, TaskCommand), RenderError> {
    let task = &plan.stages[key.stage].tasks[key.task];
    let ctx = TemplateContext {
        vars: &plan.vars,
        run_id: at.run_id,
        run_files: at.run_files,
        host: HostVars {
            name: at.host_name.to_owned(),
            index: at.host_index,
            count: at.host_count,
            group: at.group.to_owned(),
        },
        item: at.item,
        trigger: Trigger::Known(at.trigger),
        secrets: at.secrets.values(),
    };
    let masks = at.secrets.masks();
    // A template error may quote what it rendered.
    let r = |s: &str| {
        template::render(s, &ctx).map_err(|mut e| {
            e.what = masks.mask(&e.what).into_owned();
            RenderError::from(e)
        })
    };
    let name = match &task.name {
        Some(n) => r(n)?,
        None => String::new(), // named below from the rendered command
    };
    let argv = match &task.action {
        TaskAction::Copy(c) => {
            let (src, dest) = (r(&c.src)?, r(&c.dest)?);
            url::check_copy_dest(&c.dest, &dest)?;
            let name = short_name(name, &format!("copy {src} -> {dest}"));
            return Ok((
                name,
                TaskCommand::Copy {
                    src: source(plan, &src, at.allow_absolute)?,
                    dest,
                    mode: c.mode,
                    optional: c.optional,
                },
            ));
        }
        TaskAction::Fetch(f) => {
            let (src, dest) = (r(&f.src)?, r(&f.dest)?);
            let name = short_name(name, &format!("fetch {src} -> {dest}"));
            return Ok((
                name,
                TaskCommand::Fetch {
                    pattern: src,
                    dest: FetchDest::parse(&dest)?,
                    optional: f.optional,
                },
            ));
        }
        TaskAction::Shell(sh) => vec!["/bin/sh".to_owned(), "-c".to_owned(), r(sh)?],
        TaskAction::Command(cmd) => cmd.iter().map(|a| r(a)).collect::<Result<_, _>>()?,
    };
    let mut env = BTreeMap::new();
    for (k, v) in &task.environment {
        env.insert(k.clone(), r(v)?);
    }
    // The values of the secrets this task uses: the agent masks them in its output.
    let used = secrets_used(task, at.secrets);
    let shown = match &task.action {
        TaskAction::Shell(_) => masks.mask(&argv[2]).into_owned(),
        _ => masks.mask(&argv.join(" ")).into_owned(),
    };
    let mut argv = argv;
    if matches!(&task.action, TaskAction::Shell(sh) if secrets::uses_secrets(sh)) {
        env.insert(SHELL_SCRIPT_ENV.into(), argv.pop().unwrap_or_default());
        argv.push(SHELL_FROM_ENV.to_owned());
    }
    env.insert("SQUALL_RUN_ID".into(), at.run_id.to_owned());
    env.insert("SQUALL_HOST".into(), at.host_name.to_owned());
    env.insert("SQUALL_HOST_INDEX".into(), at.host_index.to_string());
    if let Some(v) = at.item {
        env.insert("SQUALL_ITEM".into(), json_scalar(v));
    }
    Ok((
        short_name(masks.mask(&name).into_owned(), &shown),
        TaskCommand::Exec(TaskSpec {
            id: key.agent_id(),
            argv,
            env,
            cwd: Some(PathBuf::from(".")),
            timeout_secs: task.timeout.map(|t| t.0.as_secs().max(1)),
            masks: used,
            log_limit: Some(plan.log_limit),
        }),
    ))
}

/// The values of the secrets `task`'s `shell` and `environment` refer to.
fn secrets_used(task: &crate::plan::TaskPlan, all: &Secrets) -> Vec<String> {
    if all.is_empty() {
        return Vec::new();
    }
    let mut texts: Vec<&str> = task.environment.values().map(String::as_str).collect();
    if let TaskAction::Shell(sh) = &task.action {
        texts.push(sh);
    }
    let mut names = std::collections::BTreeSet::new();
    for text in texts {
        for r in template::references(text).unwrap_or_default() {
            if let Some(name) = r.strip_prefix("secrets.") {
                names.insert(name.split('.').next().unwrap_or(name).to_owned());
            } else if r == "secrets" {
                // The whole map (e.g. iterated): every value.
                names.extend(all.values().keys().cloned());
            }
        }
    }
    names
        .iter()
        .filter_map(|n| all.values().get(n))
        .flat_map(|v| secrets::forms(v))
        .collect()
}

/// A JSON value as an environment variable: strings bare, everything else as JSON.
fn json_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
