//! What `squall launch` puts in the bucket before a run can start there: the playbook
//! and the files of its folder it reads (`copy` sources, local listings), under a key
//! of their content (`playbooks/launched/DIGEST/`, so two projects' `nightly.yml` never
//! overwrite each other, nor what a schedule runs under `playbooks/`), and (on request)
//! the `squall` and `squall-worker` binaries the master fetches at boot. A templated
//! source with no literal folder (`./{{ item }}`) is refused: it would upload the whole
//! playbook folder.
//!
//! Uploading only; validating and launching are [`super::launch`]'s.

use super::launch::{UnsafeSource, source_keys};
use crate::error::{IoAt, io_at};
use crate::plan::Plan;
use crate::seam::{Store, StoreError};
use std::path::{Path, PathBuf};

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{} has no file name", .0.display())]
    NoFileName(PathBuf),
    #[error(transparent)]
    UnsafeSource(#[from] UnsafeSource),
    #[error(transparent)]
    Io(#[from] IoAt),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    NotLiteral(String),
}

/// Uploads a local playbook and its `copy` sources to `playbooks/` in the store, for
/// `squall launch`; returns the playbook's key. Templated sources upload every file
/// under their literal prefix.
pub async fn upload_playbook(store: &dyn Store, pb: &Plan) -> Result<String, UploadError> {
    let name = pb
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| UploadError::NoFileName(pb.file.clone()))?;
    let key = format!("playbooks/{name}");
    let mut files: Vec<String> = Vec::new();
    for w in source_keys(pb, &key, None)? {
        let rel = w.key.trim_start_matches("playbooks/");
        // A templated source whose literal part is the playbook's folder itself would
        // upload all of it (`.git`, `.env` included).
        let bare = rel.trim_start_matches("./").trim_matches('/');
        if w.folder && (bare.is_empty() || bare == ".") {
            let d = pb.diagnostic(
                w.at,
                format!(
                    "{} `{}` has no literal folder before its template: `squall launch` would upload the whole playbook folder; write one (e.g. `files/{{{{ item }}}}.csv`); nothing was launched",
                    w.used.noun(),
                    w.written
                ),
            );
            return Err(UploadError::NotLiteral(d.to_string()));
        }
        if !w.folder {
            // A missing optional source is not uploaded (a missing required one was
            // reported by the checks before).
            if w.required || pb.base_dir.join(rel).is_file() {
                files.push(rel.to_owned());
            }
            continue;
        }
        let (dir, stem) = rel.rsplit_once('/').unwrap_or(("", rel));
        if !pb.base_dir.join(dir).is_dir() {
            continue;
        }
        walk(&pb.base_dir, Path::new(dir), &mut |f: &str| {
            if f.starts_with(rel) || (stem.is_empty() && f.starts_with(dir)) {
                files.push(f.to_owned());
            }
        })?;
    }
    files.sort();
    files.dedup();
    // The folder is named by the content: the playbook's text and each file's path
    // and digest.
    let mut content = format!(
        "{name}\n{}\n",
        crate::digest::sha256_hex(pb.source.as_bytes())
    );
    for rel in &files {
        let path = pb.base_dir.join(rel);
        let sha = crate::digest::file_sha256_hex(&path)
            .await
            .map_err(io_at("reading copy source", &path))?;
        content.push_str(&format!("{rel}\n{sha}\n"));
    }
    let digest = crate::digest::sha256_hex(content.as_bytes());
    let dir = format!("playbooks/launched/{}/", &digest[..16]);
    for rel in files {
        let path = pb.base_dir.join(&rel);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(io_at("opening copy source", &path))?;
        store.put_stream(&format!("{dir}{rel}"), &mut file).await?;
    }
    let key = format!("{dir}{name}");
    store.put(&key, pb.source.clone().into_bytes()).await?;
    Ok(key)
}

/// Uploads the `squall` and `squall-worker` binaries to the keys the master fetches.
pub async fn upload_binaries(
    store: &dyn Store,
    squall: &Path,
    agent: &Path,
) -> Result<(), UploadError> {
    for (path, key) in [(squall, "bin/squall"), (agent, "bin/squall-worker")] {
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(io_at("opening", path))?;
        store.put_stream(key, &mut f).await?;
    }
    Ok(())
}

/// Calls `found` with every file's path under `base/dir`, relative to `base`.
fn walk(base: &Path, dir: &Path, found: &mut dyn FnMut(&str)) -> Result<(), UploadError> {
    let full = base.join(dir);
    let entries = std::fs::read_dir(&full).map_err(io_at("reading", &full))?;
    for entry in entries {
        let entry = entry.map_err(io_at("reading", &full))?;
        let rel = dir.join(entry.file_name());
        let kind = entry.file_type().map_err(io_at("reading", &rel))?;
        if kind.is_dir() {
            walk(base, &rel, found)?;
        } else if kind.is_file() {
            found(&rel.to_string_lossy());
        }
    }
    Ok(())
}
