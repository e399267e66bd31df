//! The `DataStores` a run reads and writes data through: S3 buckets opened on first
//! use (one client configuration for all, from the standard chain), and the local file
//! system as a [`LocalStore`] rooted at `/`.

use super::aws::Aws;
use super::local::LocalStore;
use crate::seam::data::DataStores;
use crate::seam::store::{Store, StoreError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Buckets opened as they are named, and local files.
#[derive(Debug)]
pub struct Stores {
    aws: OnceCell<Aws>,
    buckets: Mutex<HashMap<String, Arc<dyn Store>>>,
    files: Arc<dyn Store>,
}

impl Default for Stores {
    fn default() -> Self {
        Self::new()
    }
}

impl Stores {
    /// Opens nothing yet: AWS configuration is loaded when a bucket is first named.
    pub fn new() -> Self {
        Stores {
            aws: OnceCell::new(),
            buckets: Mutex::new(HashMap::new()),
            files: Arc::new(LocalStore::new("/")),
        }
    }

    /// Buckets through `aws`'s configuration.
    pub fn with_aws(aws: Aws) -> Self {
        let s = Self::new();
        let _ = s.aws.set(aws);
        s
    }
}

#[async_trait]
impl DataStores for Stores {
    async fn bucket(&self, name: &str) -> Result<Arc<dyn Store>, StoreError> {
        if let Some(s) = self.buckets.lock().ok().and_then(|b| b.get(name).cloned()) {
            return Ok(s);
        }
        let aws = self.aws.get_or_init(Aws::from_env).await;
        let store: Arc<dyn Store> = Arc::new(aws.store(name, ""));
        if let Ok(mut b) = self.buckets.lock() {
            b.insert(name.to_owned(), store.clone());
        }
        Ok(store)
    }

    fn files(&self) -> Arc<dyn Store> {
        self.files.clone()
    }
}
