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
/// back as a `T`: when a value is also a word the format needs (a status, a phase, an
/// entry's kind), those words (short lowercase identifiers) are kept. `None` when even
/// that does not read back. Masking the strings before they are encoded matters: JSON
/// escaping would hide a value with a quote or a newline from a search afterwards.
pub fn masked<T: Serialize + DeserializeOwned>(
    value: &T,
    masks: &squall_worker::mask::Masks,
) -> Option<T> {
    let value = serde_json::to_value(value).ok()?;
    let back = |keep: &dyn Fn(&str) -> bool| {
        let mut v = value.clone();
        masks.mask_json_keeping(&mut v, keep);
        serde_json::from_value::<T>(v).ok()
    };
    let format_word = |s: &str| {
        s.len() <= 24
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-')
    };
    back(&|_| false).or_else(|| back(&format_word))
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

/// [`create_json`], with the run's secret values masked (see [`masked_json`]).
pub async fn create_json_masked<T: Serialize + DeserializeOwned>(
    store: &dyn Store,
    key: &str,
    value: &T,
    masks: &squall_worker::mask::Masks,
) -> Result<bool, StoreError> {
    let body = masked_json(value, masks).map_err(|e| StoreError::failed("create", key, e))?;
    store.create_if_absent(key, body).await
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
