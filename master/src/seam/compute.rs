//! The `Compute` seam: start, describe, find and end instances.
//!
//! Sized to what a run needs, not a mirror of any SDK: launch a group of identical
//! instances with tags and user-data in one call, describe them, list them by tag, and
//! terminate them. Implementations live in [`crate::backend`]: local (an instance is a
//! directory plus its processes), a static inventory, and EC2. How a command reaches an
//! instance is [`super::transport`]'s business, not this module's.

use crate::error::BoxError;
use crate::plan::FleetGroup;
use async_trait::async_trait;
use std::collections::BTreeMap;

/// Tag keys squall puts on every instance. Teardown finds instances by these alone.
pub mod tags {
    /// The run id.
    pub const RUN: &str = "squall:run";
    /// `worker` or `master`.
    pub const ROLE: &str = "squall:role";
    /// The fleet group of a worker.
    pub const GROUP: &str = "squall:group";
    /// Unix seconds after which the instance may be terminated by anyone.
    pub const DEADLINE: &str = "squall:deadline";
    /// The human-readable name.
    pub const NAME: &str = "Name";
    /// The CloudFormation stack whose launcher started the run (the roles may end only
    /// their own stack's instances).
    pub const STACK: &str = "squall:stack";
    /// A master's generation (1 for the first; absent means 1).
    pub const GENERATION: &str = "squall:generation";
}

/// What to launch: `count` identical instances of one fleet group.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub run_id: String,
    pub group: String,
    pub spec: FleetGroup,
    /// Tags for the instances (and their volumes).
    pub tags: BTreeMap<String, String>,
    /// Script run at boot; may be empty.
    pub user_data: String,
    /// Idempotency token: a retried launch with the same token launches nothing new.
    pub client_token: String,
    /// Instance profile (name or ARN) for the instances; none for workers, which hold
    /// no AWS credentials.
    pub instance_profile: Option<String>,
}

/// An instance's life as the provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Stopped,
    Terminated,
}

impl InstanceState {
    /// Whether the instance is gone for good (or going).
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }
}

/// One instance as described by the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    /// Where the transport connects: a private IP on EC2, a directory for local.
    pub address: String,
    pub tags: BTreeMap<String, String>,
    /// The provider's machine type (e.g. `c7i.large`), when it has one.
    pub instance_type: Option<String>,
}

impl Instance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// Errors from a compute provider.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The provider had too little capacity for the minimum asked.
    #[error("insufficient capacity for group `{group}`")]
    Capacity {
        group: String,
        #[source]
        source: BoxError,
    },
    /// The request failed, maybe only for now (throttled past every retry, the service
    /// unwell, instances that did not start).
    #[error("{op} failed")]
    Failed {
        op: &'static str,
        #[source]
        source: BoxError,
    },
    /// The provider refused the request for good (an image that does not exist, a
    /// missing permission, a malformed parameter): no retry helps.
    #[error("{op} was refused")]
    Refused {
        op: &'static str,
        #[source]
        source: BoxError,
    },
}

impl ComputeError {
    /// `op` failed because of `source`.
    pub fn failed(op: &'static str, source: impl Into<BoxError>) -> Self {
        ComputeError::Failed {
            op,
            source: source.into(),
        }
    }

    /// `op` was refused for good because of `source`.
    pub fn refused(op: &'static str, source: impl Into<BoxError>) -> Self {
        ComputeError::Refused {
            op,
            source: source.into(),
        }
    }

    /// Whether no retry can help (see [`ComputeError::Refused`]).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ComputeError::Refused { .. })
    }

    /// Too little capacity for `group`, because of `source`.
    pub fn capacity(group: impl Into<String>, source: impl Into<BoxError>) -> Self {
        ComputeError::Capacity {
            group: group.into(),
            source: source.into(),
        }
    }
}

/// Starts, describes, finds and ends instances.
#[async_trait]
pub trait Compute: Send + Sync + std::fmt::Debug {
    /// Launches `spec.count` instances (at least `spec.min()`), tagged and with
    /// user-data, in one call. Returns the instances launched (pending or running).
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, ComputeError>;
    /// Describes the given instances; unknown ids are left out.
    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, ComputeError>;
    /// Every instance, in any state, carrying tag `key=value`.
    async fn list_by_tag(&self, key: &str, value: &str) -> Result<Vec<Instance>, ComputeError>;
    /// Terminates the given instances; terminating a terminated one is not an error.
    async fn terminate(&self, ids: &[String]) -> Result<(), ComputeError>;
}

/// Terminates every instance tagged with `run_id` that is not gone already (terminated,
/// or shutting down: a worker released early), from tags alone, and verifies none is
/// left. Safe to run twice and from a fresh process.
pub async fn teardown_run(compute: &dyn Compute, run_id: &str) -> Result<usize, ComputeError> {
    teardown_matching(compute, run_id, |_| true).await
}

/// Like [`teardown_run`], but spares the run's master (`squall:role=master`): the
/// master tears down its workers, records the run, and terminates itself last.
pub async fn teardown_workers(compute: &dyn Compute, run_id: &str) -> Result<usize, ComputeError> {
    teardown_matching(compute, run_id, |i| i.tag(tags::ROLE) != Some("master")).await
}

async fn teardown_matching(
    compute: &dyn Compute,
    run_id: &str,
    matches: impl Fn(&Instance) -> bool,
) -> Result<usize, ComputeError> {
    let live: Vec<String> = compute
        .list_by_tag(tags::RUN, run_id)
        .await?
        .into_iter()
        .filter(|i| !i.state.is_gone() && matches(i))
        .map(|i| i.id)
        .collect();
    if !live.is_empty() {
        compute.terminate(&live).await?;
    }
    let left: Vec<String> = compute
        .list_by_tag(tags::RUN, run_id)
        .await?
        .into_iter()
        .filter(|i| !i.state.is_gone() && matches(i))
        .map(|i| i.id)
        .collect();
    if left.is_empty() {
        Ok(live.len())
    } else {
        Err(ComputeError::failed(
            "teardown",
            crate::error::Message(format!(
                "instances still running after terminate: {}",
                left.join(", ")
            )),
        ))
    }
}

/// The idempotency token of a group's launch (at most 64 characters, as EC2 wants).
pub fn client_token(run_id: &str, group: &str) -> String {
    let token = format!("{run_id}/{group}");
    if token.len() <= 64 {
        return token;
    }
    crate::digest::short_sha256_hex(token.as_bytes(), 32)
}
