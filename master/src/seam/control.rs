//! The `Control` seam: what keeps a run alive beyond its master, outside the store:
//! the run's secrets while it lives (its login key, for a successor master) and its
//! watchdog schedule (which invokes the launcher's watch for the run every few
//! minutes, and costs nothing between runs).
//!
//! The AWS implementation is SSM Parameter Store (SecureString) and EventBridge
//! Scheduler ([`crate::backend::aws::control`]); local runs have none.

use crate::error::BoxError;
use async_trait::async_trait;

/// A control-plane call failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} `{name}` failed")]
pub struct ControlError {
    pub op: &'static str,
    pub name: String,
    #[source]
    pub source: BoxError,
}

/// A secret's value: shown as `***` by `Debug`, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value itself, for where it must go (a key file, a call).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// See the module docs.
#[async_trait]
pub trait Control: Send + Sync + std::fmt::Debug {
    /// Stores a secret under `name` (encrypted at rest), replacing an older value.
    async fn put_secret(&self, name: &str, value: &str) -> Result<(), ControlError>;
    /// Reads a secret; `None` when there is none.
    async fn get_secret(&self, name: &str) -> Result<Option<Secret>, ControlError>;
    /// Deletes a secret; absent is fine.
    async fn delete_secret(&self, name: &str) -> Result<(), ControlError>;
    /// Creates (or keeps) the schedule `name` that sends `input` to the launcher every
    /// `every_minutes`, until `until_unix` (it never outlives the run by much, even if
    /// nobody deletes it).
    async fn create_schedule(
        &self,
        name: &str,
        every_minutes: u32,
        until_unix: u64,
        input: &str,
    ) -> Result<(), ControlError>;
    /// Deletes a schedule; absent is fine.
    async fn delete_schedule(&self, name: &str) -> Result<(), ControlError>;
    /// Whether the schedule exists.
    async fn schedule_exists(&self, name: &str) -> Result<bool, ControlError>;
}

/// The watchdog schedule's name for a run: `squall-RUN_ID`, or a digest of the id
/// when that would pass the 64 characters EventBridge Scheduler allows.
pub fn schedule_name(run_id: &str) -> String {
    let name = format!("squall-{run_id}");
    if name.len() <= 64 {
        return name;
    }
    let digest = crate::digest::sha256_hex(run_id.as_bytes());
    format!("squall-{}", &digest[..32])
}
