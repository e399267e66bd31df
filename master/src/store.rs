//! The `Store` seam: where everything a run leaves behind lives (`runs/RUN_ID/...`).
//!
//! Put (whole or streaming), get, list and create-if-absent, the last for claiming a
//! run exactly once. Implementations: [`crate::local::LocalStore`] (a directory). What
//! goes under a run's prefix is [`crate::record`]'s business.

use async_trait::async_trait;
use tokio::io::AsyncRead;

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is not a valid store key.
    #[error("invalid store key `{0}`")]
    BadKey(String),
    /// The operation failed.
    #[error("{op} `{key}` failed: {detail}")]
    Failed {
        op: &'static str,
        key: String,
        detail: String,
    },
}

/// A stream of an object's bytes.
pub type ByteReader = Box<dyn AsyncRead + Send + Unpin>;

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
    /// Writes `body` at `key` only if nothing is there; false when it already was.
    async fn create_if_absent(&self, key: &str, body: Vec<u8>) -> Result<bool, StoreError>;
    /// Where `key` lives, for people (a path or an `s3://` URL).
    fn locate(&self, key: &str) -> String;
}

/// Keys of what a run leaves behind.
pub mod keys {
    /// The prefix of everything of a run.
    pub fn run_prefix(run_id: &str) -> String {
        format!("runs/{run_id}/")
    }
    /// The run record.
    pub fn run_record(run_id: &str) -> String {
        format!("runs/{run_id}/run.json")
    }
    /// The HTML report, written at the end of the run.
    pub fn report(run_id: &str) -> String {
        format!("runs/{run_id}/report.html")
    }
    /// The heartbeat while the run is going.
    pub fn status(run_id: &str) -> String {
        format!("runs/{run_id}/status.json")
    }
    /// A host's (or `master`'s) log archive.
    pub fn log_archive(run_id: &str, host: &str) -> String {
        format!("runs/{run_id}/logs/{host}.tar.gz")
    }
    /// The latest snapshot of a host's logs, taken while the run goes.
    pub fn log_snapshot(run_id: &str, host: &str) -> String {
        format!("runs/{run_id}/logs/snapshots/{host}.tar.gz")
    }
}
