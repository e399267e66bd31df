//! Rendering one task of the plan for one host (and item) into what the runner runs: a
//! [`TaskSpec`] for the agent (argv, environment, timeout) or a file to copy, and the
//! name the record shows.
//!
//! Templates are rendered here, at start time; which contexts a playbook must render in
//! is checked before the run by [`crate::plan::validate`].

use super::types::{TaskCommand, TaskKey};
use crate::plan::template::{self, HostVars, TemplateContext, TemplateError, Trigger};
use crate::plan::{Plan, TaskAction, short_name};
use serde_json::Value;
use squall_worker::TaskSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a task is rendered for.
#[derive(Debug, Clone, Copy)]
pub struct For<'a> {
    pub run_id: &'a str,
    pub trigger: &'a BTreeMap<String, Value>,
    pub host_name: &'a str,
    pub host_index: u32,
    pub host_count: u32,
    pub group: &'a str,
    pub item: Option<&'a Value>,
}

/// The task `key` names, rendered: its name and its command.
pub fn render(
    plan: &Plan,
    key: TaskKey,
    at: For<'_>,
) -> Result<(String, TaskCommand), TemplateError> {
    let task = &plan.stages[key.stage].tasks[key.task];
    let ctx = TemplateContext {
        vars: &plan.vars,
        run_id: at.run_id,
        host: HostVars {
            name: at.host_name.to_owned(),
            index: at.host_index,
            count: at.host_count,
            group: at.group.to_owned(),
        },
        item: at.item,
        trigger: Trigger::Known(at.trigger),
    };
    let r = |s: &str| template::render(s, &ctx);
    let name = match &task.name {
        Some(n) => r(n)?,
        None => String::new(), // named below from the rendered command
    };
    let argv = match &task.action {
        TaskAction::Copy { src, dest, mode } => {
            let (src, dest) = (r(src)?, r(dest)?);
            let name = short_name(name, &format!("copy {src} -> {dest}"));
            return Ok((
                name,
                TaskCommand::Copy {
                    src: plan.base_dir.join(src),
                    dest,
                    mode: *mode,
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
    env.insert("SQUALL_RUN_ID".into(), at.run_id.to_owned());
    env.insert("SQUALL_HOST".into(), at.host_name.to_owned());
    env.insert("SQUALL_HOST_INDEX".into(), at.host_index.to_string());
    if let Some(v) = at.item {
        env.insert("SQUALL_ITEM".into(), json_scalar(v));
    }
    let shown = match &task.action {
        TaskAction::Shell(_) => argv[2].clone(),
        _ => argv.join(" "),
    };
    Ok((
        short_name(name, &shown),
        TaskCommand::Exec(TaskSpec {
            id: key.agent_id(),
            argv,
            env,
            cwd: Some(PathBuf::from(".")),
            timeout_secs: task.timeout.map(|t| t.0.as_secs().max(1)),
        }),
    ))
}

/// A JSON value as an environment variable: strings bare, everything else as JSON.
fn json_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
