//! The playbook: its YAML model ([`model`]), parsing and validation with file, line
//! and column ([`validate`], [`diagnostic`]), templates ([`template`]), durations
//! ([`duration`]), data URLs ([`url`]), and the plain [`Plan`] a valid playbook is
//! lowered into once ([`lower`]), with the data it reads before it runs ([`sources`]).
//!
//! This layer knows nothing about running a plan: scheduling and rendering tasks for a
//! host are the engine's, and it performs no IO beyond reading the playbook file in
//! [`load`].

pub mod diagnostic;
pub mod duration;
pub mod limits;
pub mod lower;
pub mod model;
pub mod prices;
pub mod secrets;
pub mod size;
pub mod sources;
pub mod template;
pub mod url;
pub mod validate;

pub use diagnostic::{Diagnostic, Invalid, LoadError};
pub use duration::{BadDuration, Dur};
pub use lower::{
    COLLECT_GRACE_MS, CopyPlan, FetchPlan, Plan, Pos, STOP_GRACE_MS, ShardPlan, StagePlan,
    TaskAction, TaskPlan, short_name,
};
pub use model::{ALL_HOSTS, FleetGroup, InstanceTypes, Market};

use diagnostic::Locator;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Reads, parses and validates a playbook file, applying `--var` overrides.
pub fn load(path: &Path, overrides: &BTreeMap<String, String>) -> Result<Plan, LoadError> {
    load_for(path, overrides, None)
}

/// Like [`load`], for a known trigger (see [`parse_for`]).
pub fn load_for(
    path: &Path,
    overrides: &BTreeMap<String, String>,
    trigger: Option<&BTreeMap<String, serde_json::Value>>,
) -> Result<Plan, LoadError> {
    let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(parse_for(path, &source, &base_dir, overrides, trigger)?)
}

/// The largest playbook squall reads (long item lists belong in files, read with
/// `lines:` or `objects:`).
pub const MAX_PLAYBOOK_BYTES: usize = 4 << 20;

/// The deepest nesting of lists and mappings a playbook may have.
const MAX_DEPTH: usize = 64;

/// Aliases (`*name`) a playbook may use.
const MAX_ALIASES: usize = 1_000;

/// Events aliases may replay in all: a YAML alias bomb (nested aliases that expand to
/// billions of nodes) stops here, long before memory does.
const MAX_ALIAS_EVENTS: usize = 100_000;

/// Parses and validates playbook text; `file` is used in messages only. The trigger is
/// not known yet: a template may use any `trigger.*` field.
pub fn parse(
    file: &Path,
    source: &str,
    base_dir: &Path,
    overrides: &BTreeMap<String, String>,
) -> Result<Plan, Invalid> {
    parse_for(file, source, base_dir, overrides, None)
}

/// Like [`parse`], for a known trigger (its `trigger.*` fields): a template using a
/// field the trigger lacks is an error.
pub fn parse_for(
    file: &Path,
    source: &str,
    base_dir: &Path,
    overrides: &BTreeMap<String, String>,
    trigger: Option<&BTreeMap<String, serde_json::Value>>,
) -> Result<Plan, Invalid> {
    let at = Locator { file, source };
    if source.len() > MAX_PLAYBOOK_BYTES {
        let (line, column) = at.position(MAX_PLAYBOOK_BYTES);
        return Err(Invalid(vec![at.diag(
            line,
            column,
            format!(
                "the playbook is larger than {} MiB; keep long lists in files and read them \
                 with `lines:` or `objects:`",
                MAX_PLAYBOOK_BYTES >> 20
            ),
        )]));
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_aliases: MAX_ALIASES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EVENTS,
        },
    };
    let playbook: model::Playbook = serde_saphyr::from_str_with_options(source, options)
        .map_err(|e| Invalid(vec![at.parse_error(&e)]))?;
    let mut vars = playbook.vars.clone();
    for (k, v) in overrides {
        vars.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let mut problems = Vec::new();
    let placeholders = secrets::placeholders(&playbook);
    validate::validate(
        &validate::Input {
            playbook: &playbook,
            vars: &vars,
            trigger,
            secrets: &placeholders,
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
