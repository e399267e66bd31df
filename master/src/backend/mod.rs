//! The implementations behind the seams: [`local`] (the embedded default: instances are
//! directories and processes, the store a directory; needs nothing installed), [`ssh`]
//! and [`inventory`] (machines you already have), [`aws`] (EC2, S3, IMDS, Lambda), and
//! [`data`] (the buckets and local files a playbook's data URLs name).
//!
//! Backends do IO and nothing else: they never decide what a run does and never import
//! the runner. [`open_store`] is the one way a store is opened from what a user typed.

pub mod aws;
pub mod data;
pub mod inventory;
pub mod local;
pub mod ssh;

use crate::seam::Store;
use std::path::Path;
use std::sync::Arc;

/// A `--store` that is neither `s3://BUCKET[/PREFIX]` nor a folder.
#[derive(Debug, thiserror::Error)]
#[error("--store expects s3://BUCKET[/PREFIX] or a folder, found `{0}`")]
pub struct BadStoreUrl(pub String);

/// The store a user named: `s3://BUCKET[/PREFIX]`, a folder, or (`None`) the local
/// store under `home`.
pub async fn open_store(url: Option<&str>, home: &Path) -> Result<Arc<dyn Store>, BadStoreUrl> {
    Ok(match url {
        None => Arc::new(local::LocalStore::new(home.join("store"))),
        Some(url) if url.starts_with("s3://") => {
            let (bucket, prefix) =
                aws::s3::S3Store::parse_url(url).ok_or_else(|| BadStoreUrl(url.to_owned()))?;
            Arc::new(aws::Aws::from_env().await.store(&bucket, &prefix))
        }
        Some(dir) => Arc::new(local::LocalStore::new(dir)),
    })
}
