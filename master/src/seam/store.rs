//! The `Store` seam: where everything a run leaves behind lives (`runs/RUN_ID/...`).
//!
//! Put (whole or streaming), get, list and create-if-absent, the last for claiming a
//! run exactly once. Implementations live in [`crate::backend`]: a local directory and
//! S3. What goes under a run's prefix is [`crate::record`]'s business; [`put_json`] and
//! [`get_json`] are the one way records are serialized into the store and read back.

use crate::error::BoxError;
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncRead;

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is not a valid store key.
    #[error("invalid store key `{0}`")]
    BadKey(String),
    /// The operation failed.
    #[error("{op} `{key}` failed")]
    Failed {
        op: &'static str,
        key: String,
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// `op` on `key` failed because of `source`.
    pub fn failed(op: &'static str, key: &str, source: impl Into<BoxError>) -> Self {
        StoreError::Failed {
            op,
            key: key.to_owned(),
            source: source.into(),
        }
    }
}

/// A stream of an object's bytes.
pub type ByteReader = Box<dyn AsyncRead + Send + Unpin>;

/// What a store says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// S3's entity tag (quoted, as S3 gives it); `None` for a local file.
    pub etag: Option<String>,
    /// S3's version id, when the bucket is versioned.
    pub version: Option<String>,
}

/// A place to keep run records and archives.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Writes `body` at `key`, replacing what was there.
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError>;
    /// Streams `body` to `key` in constant memory; returns the bytes written. The
    /// object appears whole or not at all.
    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError>;
    /// Reads `key`; `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads `key` as a stream, in constant memory whatever its size; `None` when absent.
    async fn get_stream(&self, key: &str) -> Result<Option<ByteReader>, StoreError>;
    /// Every key under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Every object under `prefix`, in key order, handed to `each` as the listing goes
    /// (page by page: a listing is never held whole by the store).
    async fn list_each(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), StoreError>;
    /// The names directly under `prefix` (ending in `/`): the first path segment of
    /// every key below it, each once, sorted. S3 answers with a delimiter listing: one
    /// name per folder, not one key per object.
    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = std::collections::BTreeSet::new();
        self.list_each(prefix, &mut |o| {
            if let Some(first) = o.key.strip_prefix(prefix).and_then(|r| r.split('/').next())
                && !first.is_empty()
            {
                names.insert(first.to_owned());
            }
        })
        .await?;
        Ok(names.into_iter().collect())
    }
    /// Whether anything is under `prefix` (one object is enough; S3 asks for one).
    async fn any_under(&self, prefix: &str) -> Result<bool, StoreError> {
        let mut any = false;
        self.list_each(prefix, &mut |_| any = true).await?;
        Ok(any)
    }
    /// What the store says about `key`; `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;
    /// Copies `from` to `to` inside the store (server-side on S3; a hard link or a copy
    /// locally), replacing what was at `to`.
    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError>;
    /// Removes `key`; absent is fine.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Writes `body` at `key` only if nothing is there; false when it already was.
    async fn create_if_absent(&self, key: &str, body: Vec<u8>) -> Result<bool, StoreError>;
    /// Where `key` lives, for people (a path or an `s3://` URL).
    fn locate(&self, key: &str) -> String;
}

/// Serializes `value` as pretty JSON and writes it at `key`.
pub async fn put_json<T: Serialize + ?Sized>(
    store: &dyn Store,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| StoreError::failed("put", key, e))?;
    store.put(key, body).await
}

/// Serializes `value` as pretty JSON and writes it at `key` only if nothing is there;
/// false when something already was.
pub async fn create_json<T: Serialize + ?Sized>(
    store: &dyn Store,
    key: &str,
    value: &T,
) -> Result<bool, StoreError> {
    let body =
        serde_json::to_vec_pretty(value).map_err(|e| StoreError::failed("create", key, e))?;
    store.create_if_absent(key, body).await
}

/// `value` with every secret value in its strings masked, such that it still reads
/// back as a `T`. Masking the strings before they are encoded matters: JSON escaping
/// would hide a value with a quote or a newline from a search afterwards. When a value
/// is also (part of) a word the format needs (a status, a phase, an entry's kind), the
/// one string the format cannot do without is given back, and only it, until the value
/// reads back (a bounded number of times); `None` when it still does not.
pub fn masked<T: Serialize + DeserializeOwned>(
    value: &T,
    masks: &squall_worker::mask::Masks,
) -> Option<T> {
    let original = serde_json::to_value(value).ok()?;
    let mut v = original.clone();
    masks.mask_json(&mut v);
    if let Ok(t) = serde_json::from_value::<T>(v) {
        return Some(t);
    }
    // Keys stay as they are from here on (they are names, and the paths below go by
    // them); values are masked, and given back one by one where the format needs them.
    let mut v = original.clone();
    masks.mask_json_values(&mut v);
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, T>(&v) {
            Ok(t) => return Some(t),
            Err(e) => {
                if !give_back(&mut v, &original, e.path()) {
                    return None;
                }
            }
        }
    }
    None
}

/// Puts back, at `path` in `masked`, the original string (or, at an object, its
/// strings) that masking changed; false when there was none.
fn give_back(
    masked: &mut serde_json::Value,
    original: &serde_json::Value,
    path: &serde_path_to_error::Path,
) -> bool {
    use serde_json::Value;
    let (mut m, mut o) = (masked, original);
    for seg in path.iter() {
        let next = match (seg, m, o) {
            (serde_path_to_error::Segment::Seq { index }, Value::Array(ma), Value::Array(oa)) => {
                ma.get_mut(*index).zip(oa.get(*index))
            }
            (serde_path_to_error::Segment::Map { key }, Value::Object(mo), Value::Object(oo)) => {
                mo.get_mut(key.as_str()).zip(oo.get(key.as_str()))
            }
            _ => None,
        };
        match next {
            Some((mn, on)) => (m, o) = (mn, on),
            None => return false,
        }
    }
    match (m, o) {
        (Value::String(ms), Value::String(os)) if ms != os => {
            *ms = os.clone();
            true
        }
        (Value::Object(mo), Value::Object(oo)) => {
            let mut changed = false;
            for (k, mv) in mo.iter_mut() {
                if let (Value::String(ms), Some(Value::String(os))) = (mv, oo.get(k))
                    && ms != os
                {
                    *ms = os.clone();
                    changed = true;
                }
            }
            changed
        }
        _ => false,
    }
}

/// `value` as pretty JSON, masked (see [`masked`]); an error when it cannot be.
pub fn masked_json<T: Serialize + DeserializeOwned>(
    value: &T,
    masks: &squall_worker::mask::Masks,
) -> serde_json::Result<Vec<u8>> {
    if masks.is_empty() {
        return serde_json::to_vec_pretty(value);
    }
    let Some(v) = masked(value, masks) else {
        return Err(serde::ser::Error::custom(
            "a secret's value could not be masked in it",
        ));
    };
    serde_json::to_vec_pretty(&v)
}

/// [`put_json`], with the run's secret values masked (see [`masked_json`]).
pub async fn put_json_masked<T: Serialize + DeserializeOwned>(
    store: &dyn Store,
    key: &str,
    value: &T,
    masks: &squall_worker::mask::Masks,
) -> Result<(), StoreError> {
    let body = masked_json(value, masks).map_err(|e| StoreError::failed("put", key, e))?;
    store.put(key, body).await
}

/// Reads `key` as JSON; `None` when absent, an error when it does not parse.
pub async fn get_json<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match store.get(key).await? {
        Some(body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| StoreError::failed("parse", key, e)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use squall_worker::mask::Masks;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Status {
        Failed,
        Succeeded,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        status: Status,
        reason: String,
        items: Vec<String>,
    }

    #[test]
    fn a_value_that_is_part_of_a_format_word_leaves_that_word_and_nothing_else() {
        let masks = Masks::new(["fail", "correct-horse"]);
        let rec = Rec {
            status: Status::Failed,
            reason: "fail: correct-horse".into(),
            items: vec!["correct-horse".into(), "ok".into()],
        };
        assert_eq!(
            masked(&rec, &masks),
            Some(Rec {
                status: Status::Failed,
                reason: "***: ***".into(),
                items: vec!["***".into(), "ok".into()],
            })
        );
        let plain = Rec {
            status: Status::Succeeded,
            reason: "correct-horse".into(),
            items: Vec::new(),
        };
        assert_eq!(masked(&plain, &masks).map(|r| r.reason), Some("***".into()));
    }
}
