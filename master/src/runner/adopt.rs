//! Adopting a resumed run's hosts: the instances an earlier master journaled, as the
//! provider describes them now.
//!
//! The engine names hosts by id, the runner keeps their instances in the same order.
//! An instance the provider no longer has, or has ended, is kept as journaled with a
//! terminated state: its bootstrap fails at once (it is lost, and replaced where the
//! run allows) instead of waiting out the connect deadline.

use crate::engine::Engine;
use crate::error::chain;
use crate::seam::compute::{Compute, Instance, InstanceState, tags};
use std::collections::BTreeMap;

/// The instances of the engine's hosts, in id order (none for a fresh run).
pub async fn instances(compute: &dyn Compute, engine: &Engine) -> Vec<Instance> {
    if engine.host_count() == 0 {
        return Vec::new();
    }
    let record = engine.record();
    let ids: Vec<String> = record.hosts.iter().map(|h| h.instance_id.clone()).collect();
    let described: BTreeMap<String, Instance> = match compute.describe(&ids).await {
        Ok(found) => found.into_iter().map(|i| (i.id.clone(), i)).collect(),
        Err(e) => {
            // Adoption itself will tell which hosts answer.
            tracing::warn!("describing the journaled instances failed: {}", chain(&e));
            BTreeMap::new()
        }
    };
    record
        .hosts
        .iter()
        .map(|h| {
            described
                .get(&h.instance_id)
                .cloned()
                .unwrap_or_else(|| Instance {
                    id: h.instance_id.clone(),
                    state: if described.is_empty() {
                        InstanceState::Running
                    } else {
                        InstanceState::Terminated
                    },
                    address: h.address.clone(),
                    tags: BTreeMap::from([
                        (tags::RUN.to_owned(), engine.run_id().to_owned()),
                        (tags::GROUP.to_owned(), h.group.clone()),
                        (tags::NAME.to_owned(), h.name.clone()),
                    ]),
                    instance_type: h.instance_type.clone(),
                })
        })
        .collect()
}
