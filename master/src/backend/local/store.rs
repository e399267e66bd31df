//! Local `Store`: keys are files under a directory.
//!
//! Writes go to a temporary file renamed into place, so a key appears whole or not at
//! all; create-if-absent uses a hard link, which fails atomically when the key exists.
//! What the keys are is [`crate::record::keys`]'s business.

use crate::seam::store::{ByteReader, ObjectInfo, Store, StoreError};
use async_trait::async_trait;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncWriteExt};

/// A store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    /// Every file under `prefix` with its size, sorted by key: the walk starts at the
    /// prefix's folder, so a store rooted at `/` lists only what is asked.
    async fn walk(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        // The deepest folder the prefix names: `runs/a/lo` starts at `runs/a/`.
        let start = match prefix.rfind('/') {
            Some(i) => root.join(&prefix[..i]),
            None => root.clone(),
        };
        let found = tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let entry = entry?;
                    let path = entry.path();
                    let kind = entry.file_type()?;
                    if kind.is_dir() {
                        stack.push(path);
                    } else if kind.is_file()
                        && let Ok(rel) = path.strip_prefix(&root)
                    {
                        let key = rel.to_string_lossy().into_owned();
                        let hidden = rel
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"));
                        if !hidden && key.starts_with(&prefix) {
                            keys.push((key, entry.metadata()?.len()));
                        }
                    }
                }
            }
            keys.sort();
            Ok(keys)
        })
        .await
        .map_err(|e| err("list", "", e))?;
        found.map_err(|e| err("list", "", e))
    }

    /// The file behind `key`.
    pub fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let rel = Path::new(key);
        let ok = !key.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if ok {
            Ok(self.root.join(rel))
        } else {
            Err(StoreError::BadKey(key.to_owned()))
        }
    }

    async fn tmp_for(&self, key: &str, path: &Path) -> Result<PathBuf, StoreError> {
        let parent = path.parent().unwrap_or(&self.root);
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| err("put", key, e))?;
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        Ok(parent.join(format!(".tmp-{}-{n}", std::process::id())))
    }
}

fn err(op: &'static str, key: &str, e: impl Into<crate::error::BoxError>) -> StoreError {
    StoreError::failed(op, key, e)
}

#[async_trait]
impl Store for LocalStore {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let tmp = self.tmp_for(key, &path).await?;
        tokio::fs::write(&tmp, body)
            .await
            .map_err(|e| err("put", key, e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| err("put", key, e))
    }

    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError> {
        let path = self.path(key)?;
        let tmp = self.tmp_for(key, &path).await?;
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| err("put", key, e))?;
        let result = async {
            let n = tokio::io::copy(body, &mut file).await?;
            file.flush().await?;
            file.sync_all().await?;
            Ok::<u64, std::io::Error>(n)
        }
        .await;
        match result {
            Ok(n) => {
                tokio::fs::rename(&tmp, &path)
                    .await
                    .map_err(|e| err("put", key, e))?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(err("put", key, e))
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("get", key, e)),
        }
    }

    async fn get_stream(&self, key: &str) -> Result<Option<ByteReader>, StoreError> {
        match tokio::fs::File::open(self.path(key)?).await {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("get", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .walk(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    async fn list_each(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), StoreError> {
        for (key, size) in self.walk(prefix).await? {
            each(ObjectInfo {
                key,
                size,
                etag: None,
                version: None,
            });
        }
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: m.len(),
                etag: None,
                version: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("head", key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("delete", key, e)),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (src, dest) = (self.path(from)?, self.path(to)?);
        let tmp = self.tmp_for(to, &dest).await?;
        // A hard link when both are on one file system (objects are never modified in
        // place: writes go to a temporary name first), else a copy.
        if tokio::fs::hard_link(&src, &tmp).await.is_err() {
            tokio::fs::copy(&src, &tmp)
                .await
                .map_err(|e| err("copy", from, e))?;
        }
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| err("copy", to, e))
    }

    async fn create_if_absent(&self, key: &str, body: Vec<u8>) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        let tmp = self.tmp_for(key, &path).await?;
        tokio::fs::write(&tmp, body)
            .await
            .map_err(|e| err("create", key, e))?;
        let linked = tokio::fs::hard_link(&tmp, &path).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(err("create", key, e)),
        }
    }

    fn locate(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_root() {
        let s = LocalStore::new("/r");
        assert!(s.path("runs/a/run.json").is_ok());
        for bad in ["", "/etc/passwd", "../x", "runs/../../x", "./x"] {
            assert!(s.path(bad).is_err(), "{bad}");
        }
    }
}
