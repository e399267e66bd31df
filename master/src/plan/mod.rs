//! The playbook: its YAML model ([`model`]), parsing and validation with file, line
//! and column ([`validate`], [`diagnostic`]), templates ([`template`]), durations
//! ([`duration`]), and the plain [`Plan`] a valid playbook is lowered into once
//! ([`lower`]).
//!
//! This layer knows nothing about running a plan: scheduling and rendering tasks for a
//! host are the engine's, and it performs no IO beyond reading the playbook file in
//! [`load`].

pub mod diagnostic;
pub mod duration;
pub mod lower;
pub mod model;
pub mod template;
pub mod validate;

pub use diagnostic::{Diagnostic, Invalid, LoadError};
pub use duration::{BadDuration, Dur};
pub use lower::{
    COLLECT_GRACE_MS, Plan, STOP_GRACE_MS, StagePlan, TaskAction, TaskPlan, short_name,
};
pub use model::{ALL_HOSTS, FleetGroup, InstanceTypes, Market};

use diagnostic::Locator;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Reads, parses and validates a playbook file, applying `--var` overrides.
pub fn load(path: &Path, overrides: &BTreeMap<String, String>) -> Result<Plan, LoadError> {
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
) -> Result<Plan, Invalid> {
    let at = Locator { file, source };
    let playbook: model::Playbook =
        serde_saphyr::from_str(source).map_err(|e| Invalid(vec![at.parse_error(&e)]))?;
    let mut vars = playbook.vars.clone();
    for (k, v) in overrides {
        vars.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let mut problems = Vec::new();
    validate::validate(
        &validate::Input {
            playbook: &playbook,
            vars: &vars,
        },
        &at,
        &mut problems,
    );
    if !problems.is_empty() {
        problems.sort_by_key(|d| (d.line, d.column));
        return Err(Invalid(problems));
    }
    Ok(lower::lower(
        playbook,
        vars,
        file.to_owned(),
        base_dir.to_owned(),
        source.to_owned(),
    ))
}
