//! Checks that run before anything launches: every data source the plan names that is
//! known before the run ([`crate::plan::sources`]) exists, is a file or a folder as its
//! form says (a trailing `/` is a folder), and is readable. Each problem is reported at
//! the source's file:line:column.
//!
//! `squall validate` checks local sources only; `squall run` checks S3 ones too (and
//! the launcher checks the bucket's, see `cloud::launch`).

use crate::engine::render;
use crate::error::chain;
use crate::plan::sources::{self, Known, Source, Use};
use crate::plan::url::DataUrl;
use crate::plan::{Invalid, Plan};
use crate::seam::data::{self, DataStores};
use serde_json::Value;
use std::collections::BTreeMap;

/// What to check.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    /// The run's trigger, when known (its fields then render).
    pub trigger: Option<&'a BTreeMap<String, Value>>,
    /// Whether absolute local paths are allowed (not on an EC2 master).
    pub allow_absolute: bool,
    /// Check `s3://` sources too (needs credentials).
    pub s3: bool,
}

/// Every problem with the plan's known sources; `Ok` when there is none.
pub async fn check(plan: &Plan, data: &dyn DataStores, checks: Checks<'_>) -> Result<(), Invalid> {
    let mut problems = Vec::new();
    for src in sources::sources(plan, checks.trigger) {
        let Known::Whole(text) = &src.known else {
            continue;
        };
        if src.produced {
            continue; // the run writes it first
        }
        if let Some(problem) = check_one(plan, data, checks, &src, text).await {
            problems.push(plan.diagnostic(src.at, format!("{problem}; nothing was launched")));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Invalid(problems))
    }
}

/// What is wrong with one source, if anything.
async fn check_one(
    plan: &Plan,
    data: &dyn DataStores,
    checks: Checks<'_>,
    src: &Source,
    text: &str,
) -> Option<String> {
    let what = src.used.noun();
    // The value checked, and what it was rendered from when templated.
    let named = if src.written.trim() == text {
        format!("`{text}`")
    } else {
        format!("`{text}` (from `{}`)", src.written.trim())
    };
    let url = match render::source(plan, text, checks.allow_absolute) {
        Ok(u) => u,
        Err(e) => return Some(format!("{what} {named}: {e}")),
    };
    let optional = matches!(src.used, Use::Copy { optional: true });
    // A listing is of a folder whatever its spelling; a manifest is one file.
    let folder = match src.used {
        Use::Objects => true,
        Use::Lines => false,
        Use::Copy { .. } => url.is_folder(),
    };
    if src.used == Use::Lines && url.is_folder() {
        return Some(format!(
            "{what} {named} ends with `/`: expected one file or object"
        ));
    }
    match &url {
        DataUrl::Local(path) => {
            let shown = path.display();
            // `file/` would fail as "not a directory": look at the path itself.
            let bare = std::path::Path::new(path.to_str().map_or("", |p| p.trim_end_matches('/')));
            let bare = if bare.as_os_str().is_empty() {
                path.as_path()
            } else {
                bare
            };
            let meta = match tokio::fs::metadata(bare).await {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return (!optional).then(|| format!("{what} {named} does not exist ({shown})"));
                }
                Err(e) => return Some(format!("{what} {named} cannot be read ({shown}): {e}")),
            };
            if folder && !meta.is_dir() {
                return Some(format!("{what} {named} is a file, not a folder ({shown})"));
            }
            if !folder && meta.is_dir() {
                return Some(format!(
                    "{what} {named} is a folder ({shown}): end it with `/` to copy its files"
                ));
            }
            let readable = if folder {
                tokio::fs::read_dir(path).await.map(|_| ())
            } else {
                tokio::fs::File::open(path).await.map(|_| ())
            };
            readable
                .err()
                .map(|e| format!("{what} {named} cannot be read ({shown}): {e}"))
        }
        DataUrl::S3 { .. } if !checks.s3 => None,
        DataUrl::S3 { .. } => {
            let at = match data::open(data, &url).await {
                Ok(at) => at,
                Err(e) => return Some(format!("{what} {named}: {}", chain(&e))),
            };
            let found = if folder {
                at.store
                    .any_under(&crate::plan::url::with_slash(&at.key))
                    .await
            } else {
                at.store.head(&at.key).await.map(|o| o.is_some())
            };
            match found {
                Err(e) => Some(format!("{what} {named} cannot be read: {}", chain(&e))),
                // An empty prefix is an empty listing, which is not an error.
                Ok(false) if src.used == Use::Objects => None,
                Ok(false) if optional => None,
                Ok(false) if folder => Some(format!("{what} {named} has no object under it")),
                Ok(false) => Some(format!("{what} {named} does not exist")),
                Ok(true) => None,
            }
        }
    }
}
