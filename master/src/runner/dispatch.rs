//! Dispatching the engine's actions: each one runs as a job in the runner's `JoinSet`
//! and reports back as an event on the runner's channel; heartbeats and journal
//! batches go out in order. What each action means is the engine's; doing it is
//! [`super::agent`]'s, [`super::data`]'s, [`super::fleet`]'s and [`super::logs`]'s.

use super::{Ctx, Jobs, agent, cache, data, fleet, listing, logs, now_ms};
use crate::engine::{Action, Engine, Event, Failure, HostId, TaskCommand, TaskResult};
use crate::error::chain;
use crate::record::{TaskOutcome, keys};
use crate::seam::compute::{self, Instance};
use crate::seam::store;
use std::sync::Arc;
use std::time::Duration;

/// Runs each action: as a job reporting back on the channel, or (heartbeats) in
/// order, here.
pub(super) async fn dispatch(
    ctx: &Arc<Ctx>,
    engine: &Engine,
    hosts: &[Instance],
    jobs: &mut Jobs,
    actions: Vec<Action>,
) {
    for action in actions {
        let job = ctx.clone();
        let host_of = |h: HostId| hosts.get(h).cloned();
        match action {
            // A successor drives the run's tasks now: none is cancelled from here.
            Action::CancelTask { .. } | Action::InterruptTask { .. } | Action::Release { .. }
                if ctx.fence.as_ref().is_some_and(|f| f.is_fenced()) => {}
            Action::Launch { group, spec } => {
                let stand_in = Event::LaunchFailed {
                    group: group.clone(),
                    error: "internal error: the launch task panicked".into(),
                };
                jobs.spawn(Some(stand_in), async move {
                    fleet::launch(&job, group, spec).await
                });
            }
            Action::LaunchReplacement {
                group,
                spec,
                replaces,
                name,
            } => {
                let stand_in = Event::ReplacementFailed {
                    replaces,
                    error: "internal error: the launch task panicked".into(),
                };
                jobs.spawn(Some(stand_in), async move {
                    fleet::launch_replacement(&job, group, spec, replaces, name).await
                });
            }
            Action::Release { host } => {
                let Some(inst) = host_of(host) else { continue };
                let name = engine.host_name(host).to_owned();
                let stand_in = Event::Released {
                    host,
                    archive: Err(Failure("internal error: the release task panicked".into())),
                    terminated: Err(Failure("not terminated early".into())),
                };
                jobs.spawn(Some(stand_in), async move {
                    fleet::release(&job, host, name, inst).await
                });
            }
            Action::InterruptTask {
                key,
                host,
                grace_ms,
            } => {
                // A copy or fetch runs here: there is no checkpoint to save, stop it.
                if jobs.abort_data(&key) {
                    let now = now_ms();
                    ctx.send(Event::TaskFinished {
                        key,
                        host,
                        result: TaskResult::without_exit(TaskOutcome::Cancelled, None, now, now),
                    });
                    continue;
                }
                let Some(inst) = host_of(host) else { continue };
                jobs.spawn(None, async move {
                    agent::interrupt_task(&job, key, inst, grace_ms).await
                });
            }
            Action::Bootstrap { host } => {
                let Some(inst) = host_of(host) else { continue };
                if inst.state.is_gone() {
                    // An adopted host whose instance has ended.
                    ctx.send(Event::BootstrapFailed {
                        host,
                        error: format!("its instance {} has ended", inst.id),
                    });
                    continue;
                }
                let stand_in = Event::BootstrapFailed {
                    host,
                    error: "internal error: the bootstrap task panicked".into(),
                };
                jobs.spawn(Some(stand_in), async move {
                    agent::bootstrap(&job, host, inst).await
                });
            }
            Action::StartTask {
                key,
                host,
                name,
                command,
            } => {
                let Some(inst) = host_of(host) else { continue };
                tracing::info!(host = %engine.host_name(host), task = %key.agent_id(), "starting `{name}`");
                let now = now_ms();
                let stand_in = Event::TaskFinished {
                    key,
                    host,
                    result: TaskResult::without_exit(
                        TaskOutcome::Failed,
                        Some("internal error: the task's driver panicked".into()),
                        now,
                        now,
                    ),
                };
                let moves_data = !matches!(command, TaskCommand::Exec(_));
                let handle = jobs.spawn(Some(stand_in), async move {
                    // Write-ahead: the attempt is journaled before it starts (the engine
                    // puts the batch before the start), so a successor re-attaches it.
                    job.journal_synced().await;
                    agent::run_task(&job, key, host, inst, command).await;
                });
                if moves_data {
                    jobs.track(key, handle);
                }
            }
            Action::CancelTask { key, host } => {
                // A copy or fetch runs here, not in the agent: stop it here.
                if jobs.abort_data(&key) {
                    let now = now_ms();
                    ctx.send(Event::TaskFinished {
                        key,
                        host,
                        result: TaskResult::without_exit(TaskOutcome::Cancelled, None, now, now),
                    });
                    continue;
                }
                let Some(inst) = host_of(host) else { continue };
                jobs.spawn(
                    None,
                    async move { agent::cancel_task(&job, key, inst).await },
                );
            }
            Action::CollectLogs { host } | Action::SnapshotLogs { host } => {
                let archive = if matches!(action, Action::CollectLogs { .. }) {
                    logs::Archive::Final
                } else {
                    logs::Archive::Snapshot
                };
                let Some(inst) = host_of(host) else { continue };
                let name = engine.host_name(host).to_owned();
                let stand_in = archive.event(
                    host,
                    Err(Failure("internal error: packing the logs panicked".into())),
                );
                jobs.spawn(Some(stand_in), async move {
                    logs::pack(&job, archive, host, name, inst).await;
                });
            }
            Action::Heartbeat(beat) => {
                let key = keys::status(&beat.run_id);
                if let Err(e) =
                    store::put_json_masked(ctx.b.store.as_ref(), &key, &beat, ctx.masks()).await
                {
                    tracing::warn!("heartbeat not written: {}", chain(&e));
                }
            }
            Action::ResolveShards { stage, source } => {
                let name = engine.plan().stages[stage].name.clone();
                let stand_in = Event::ShardsResolved {
                    stage,
                    result: Err(Failure("internal error: the listing task panicked".into())),
                };
                jobs.spawn(Some(stand_in), async move {
                    listing::resolve_shards(&job, stage, &name, source).await;
                });
            }
            Action::StoreFiles { key, host, files } => {
                let Some(inst) = host_of(host) else { continue };
                let now = now_ms();
                let stand_in = Event::TaskFinished {
                    key,
                    host,
                    result: TaskResult::without_exit(
                        TaskOutcome::Failed,
                        Some("internal error: storing the fetched files panicked".into()),
                        now,
                        now,
                    ),
                };
                let handle = jobs.spawn(Some(stand_in), async move {
                    data::store_files(&job, key, host, &inst, files).await;
                });
                jobs.track(key, handle);
            }
            Action::LookupCache { stage, unit, query } => {
                // A panic answers "no key, no hit": the item runs and is not cached.
                let stand_in = Event::CacheAnswered {
                    stage,
                    unit,
                    cache_key: String::new(),
                    hit: None,
                };
                jobs.spawn(Some(stand_in), async move {
                    let Ok(_slot) = job.store_slots.clone().acquire_owned().await else {
                        return;
                    };
                    cache::lookup_cache(&job, stage, unit, query).await;
                });
            }
            Action::WriteCache { entry } => {
                jobs.spawn(None, async move {
                    let Ok(_slot) = job.store_slots.clone().acquire_owned().await else {
                        return;
                    };
                    cache::write_cache(&job, &entry).await;
                });
            }
            Action::Teardown => {
                let stand_in = Event::TornDown {
                    result: Err(Failure("internal error: teardown panicked".into())),
                };
                jobs.spawn(Some(stand_in), async move {
                    job.journal_synced().await;
                    if !job.fenced_now().await {
                        teardown(&job).await
                    }
                });
            }
            Action::Journal(batch) => {
                if let Some(j) = ctx.journal() {
                    j.send(*batch);
                }
            }
            Action::WriteRecord(record) => {
                jobs.spawn(Some(Event::RecordWritten), async move {
                    job.journal_synced().await;
                    if job.fenced_now().await {
                        return;
                    }
                    let key = keys::run_record(&record.run_id);
                    // The S3 store retries passing trouble itself.
                    // Masked so that it still reads back as a record.
                    let record = super::masked(&record, job.masks());
                    if let Err(e) = store::put_json(job.b.store.as_ref(), &key, &record).await {
                        tracing::error!("failed to write the run record {key}: {}", chain(&e));
                        if let Ok(mut slot) = job.record_error.lock() {
                            *slot = Some(e);
                        }
                    }
                    job.send(Event::RecordWritten);
                });
            }
        }
    }
}

/// How long terminating the run's instances may take before the run is recorded
/// anyway (instances past their deadline are still swept later).
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(600);

async fn teardown(ctx: &Ctx) {
    let teardown = compute::teardown_workers(ctx.b.compute.as_ref(), &ctx.opts.run_id);
    let r = match tokio::time::timeout(TEARDOWN_TIMEOUT, teardown).await {
        Ok(r) => r.map_err(|e| Failure(chain(&e))),
        Err(_) => Err(Failure(format!(
            "teardown did not finish within {}s",
            TEARDOWN_TIMEOUT.as_secs()
        ))),
    };
    ctx.send(Event::TornDown { result: r });
}
