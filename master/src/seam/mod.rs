//! The seams a run does its IO through, sized to our use (not mirrors of any SDK):
//! [`compute`] (start, describe, find, end instances), [`transport`] (run an argv on a
//! host, put a file, stream a command's output), [`store`] (where a run's records and
//! archives live) and [`data`] (the stores a playbook's data URLs name), plus where a
//! run lives on a host ([`host`]).
//!
//! Only traits and their vocabulary: the implementations are in [`crate::backend`], and
//! what to do through them is decided by [`crate::engine`] and done by
//! [`crate::runner`].

pub mod compute;
pub mod control;
pub mod data;
pub mod host;
pub mod store;
pub mod transport;

pub use compute::{Compute, ComputeError, Instance, InstanceState, LaunchRequest, tags};
pub use data::DataStores;
pub use store::{ByteReader, Store, StoreError};
pub use transport::{Output, Transport, TransportError};

use std::sync::Arc;

/// The seams a run uses.
#[derive(Debug, Clone)]
pub struct Backends {
    pub compute: Arc<dyn Compute>,
    pub transport: Arc<dyn Transport>,
    pub store: Arc<dyn Store>,
    /// The stores data URLs name (any bucket, local files).
    pub data: Arc<dyn DataStores>,
}
