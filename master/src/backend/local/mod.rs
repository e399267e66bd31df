//! The embedded local backend: instances are directories plus processes, the transport
//! spawns processes, the store is a directory. Needs nothing installed.
//!
//! Layout under the squall home (default `./.squall`): `instances/ID/` (see
//! [`compute`]) and `store/runs/RUN_ID/...` (see [`store`]).

pub mod compute;
pub mod store;
pub mod transport;

pub use compute::LocalCompute;
pub use store::LocalStore;
pub use transport::LocalTransport;

use crate::seam::Backends;
use std::path::Path;
use std::sync::Arc;

/// The local backends rooted at `home`.
pub fn backends(home: &Path) -> Backends {
    let compute = LocalCompute::new(home.join("instances"));
    Backends {
        transport: Arc::new(LocalTransport::new(compute.clone())),
        compute: Arc::new(compute),
        store: Arc::new(LocalStore::new(home.join("store"))),
        data: Arc::new(super::data::Stores::new()),
    }
}
