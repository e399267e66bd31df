//! The `DataStores` seam: the stores a playbook's data URLs name — any S3 bucket, and
//! the local file system (a store rooted at `/`, whose keys are absolute paths without
//! their leading `/`).
//!
//! The run's own store is [`super::Backends::store`]; this seam is for everything else
//! a `copy`, a listing or a fetch to `s3://` reaches. [`open`] turns a rendered
//! [`DataUrl`] into a store and a key.

use super::store::{Store, StoreError};
use crate::plan::url::DataUrl;
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

/// Opens the stores data URLs name.
#[async_trait]
pub trait DataStores: Send + Sync + std::fmt::Debug {
    /// The store holding bucket `name`'s objects (opened once, then shared).
    async fn bucket(&self, name: &str) -> Result<Arc<dyn Store>, StoreError>;
    /// The local file system as a store rooted at `/`.
    fn files(&self) -> Arc<dyn Store>;
}

/// A store and a key (or prefix) inside it.
#[derive(Debug, Clone)]
pub struct Located {
    pub store: Arc<dyn Store>,
    pub key: String,
}

/// Where `url` lives. A relative local path is taken from the working directory
/// (rendered sources are already joined to the playbook's folder).
pub async fn open(data: &dyn DataStores, url: &DataUrl) -> Result<Located, StoreError> {
    match url {
        DataUrl::S3 { bucket, key } => Ok(Located {
            store: data.bucket(bucket).await?,
            key: key.clone(),
        }),
        DataUrl::Local(p) => {
            let shown = p.display().to_string();
            let abs = std::path::absolute(p).map_err(|e| StoreError::failed("open", &shown, e))?;
            let mut key = abs
                .strip_prefix(Path::new("/"))
                .unwrap_or(&abs)
                .to_string_lossy()
                .into_owned();
            if url.is_folder() && !key.ends_with('/') {
                key.push('/');
            }
            Ok(Located {
                store: data.files(),
                key,
            })
        }
    }
}
