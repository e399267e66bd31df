//! The fleet's comings and goings: launching a group, launching one replacement for a
//! lost worker, and releasing a worker early (its final archive, then its instance
//! terminated). Whether any of it happens is the engine's decision.

use super::{Ctx, Report, logs};
use crate::engine::{Event, Failure, HostId};
use crate::error::chain;
use crate::plan::FleetGroup;
use crate::seam::compute::{self, Instance, LaunchRequest, tags};
use std::collections::BTreeMap;

/// The launch of a group's workers (or of one replacement, named `name`).
fn request(ctx: &Ctx, group: &str, spec: &FleetGroup, name: Option<&str>) -> LaunchRequest {
    let run_id = &ctx.opts.run_id;
    let mut tags = BTreeMap::from([
        (tags::RUN.to_owned(), run_id.clone()),
        (tags::ROLE.to_owned(), "worker".to_owned()),
        (tags::GROUP.to_owned(), group.to_owned()),
        (tags::DEADLINE.to_owned(), ctx.deadline_tag.clone()),
    ]);
    if let Some(stack) = &ctx.opts.stack {
        tags.insert(tags::STACK.to_owned(), stack.clone());
    }
    if let Some(name) = name {
        tags.insert(tags::NAME.to_owned(), format!("squall {run_id} {name}"));
    }
    LaunchRequest {
        run_id: run_id.clone(),
        group: group.to_owned(),
        tags,
        user_data: ctx
            .opts
            .worker_user_data
            .get(group)
            .cloned()
            .unwrap_or_default(),
        // A replacement's own token: a retried launch of it launches nothing new.
        client_token: compute::client_token(run_id, name.unwrap_or(group)),
        instance_profile: spec.instance_profile.clone(),
        spec: spec.clone(),
    }
}

/// Launches a fleet group and reports its instances.
pub async fn launch(ctx: &Ctx, group: String, spec: FleetGroup) {
    let req = request(ctx, &group, &spec, None);
    let report = match ctx.b.compute.launch(&req).await {
        Ok(instances) if instances.len() as u32 >= spec.min() => Report::Launched {
            group,
            instances,
            replaces: None,
        },
        Ok(instances) => Report::Event(Event::LaunchFailed {
            error: format!(
                "only {} of the {} required instances started",
                instances.len(),
                spec.min()
            ),
            group,
        }),
        Err(e) => Report::Event(Event::LaunchFailed {
            group,
            error: chain(&e),
        }),
    };
    let _ = ctx.tx.send(report);
}

/// Launches one replacement of `replaces` through the group's capacity ladder.
pub async fn launch_replacement(
    ctx: &Ctx,
    group: String,
    spec: FleetGroup,
    replaces: HostId,
    name: String,
) {
    let req = request(ctx, &group, &spec, Some(&name));
    let report = match ctx.b.compute.launch(&req).await {
        Ok(mut instances) if !instances.is_empty() => {
            instances.truncate(1);
            Report::Launched {
                group,
                instances,
                replaces: Some(replaces),
            }
        }
        Ok(_) => Report::Event(Event::ReplacementFailed {
            replaces,
            error: "no instance started".into(),
        }),
        Err(e) => Report::Event(Event::ReplacementFailed {
            replaces,
            error: chain(&e),
        }),
    };
    let _ = ctx.tx.send(report);
}

/// Collects a worker's logs, then terminates its instance.
pub async fn release(ctx: &Ctx, host: HostId, name: String, inst: Instance) {
    let archive = logs::collect(ctx, &name, &inst).await;
    let terminated = ctx
        .b
        .compute
        .terminate(std::slice::from_ref(&inst.id))
        .await
        .map_err(|e| Failure(chain(&e)));
    tracing::info!(host = %name, instance = %inst.id, "released early: no later stage needs it");
    ctx.send(Event::Released {
        host,
        archive,
        terminated,
    });
}
