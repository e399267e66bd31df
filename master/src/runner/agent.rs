//! The agent client: installing `squall-worker` on a host, starting a task through it
//! and long-polling it to its end (re-attaching by task id after a dropped connection),
//! and cancelling a task. A `copy` or `fetch` task is [`super::data`]'s.
//!
//! Every agent command line is built by [`squall_worker::Request::argv`]. Whether a
//! failed task is retried is the engine's decision; this module reports what happened.

use super::{Ctx, now_ms};
use crate::engine::{Event, HostId, Notice, TaskCommand, TaskKey, TaskResult};
use crate::error::chain;
use crate::record::TaskOutcome;
use crate::seam::host::{AGENT_PATH, agent_root};
use crate::seam::{Instance, InstanceState};
use squall_worker::{Request, TaskState, TaskStatus, exit as agent_exit};
use std::time::Duration;

/// How many times in a row a command to the agent may fail before the task is failed.
const AGENT_ERRORS_TOLERATED: u32 = 3;
/// How long a cancel keeps trying while the task is still being created.
const CANCEL_RETRY_FOR: Duration = Duration::from_secs(10);

pub(super) fn agent_argv(ctx: &Ctx, inst: &Instance, req: &Request) -> Vec<String> {
    req.argv(AGENT_PATH, &agent_root(&ctx.opts.run_id, &inst.id))
}

/// Installs the agent unless the host already has this exact binary.
pub async fn bootstrap(ctx: &Ctx, host: HostId, inst: Instance) {
    let check = ["sha256sum".to_owned(), AGENT_PATH.to_owned()];
    let up_to_date = match (&ctx.agent_sha256, ctx.b.transport.run(&inst, &check).await) {
        (Some(want), Ok(out)) => {
            out.code == Some(0) && String::from_utf8_lossy(&out.stdout).starts_with(want.as_str())
        }
        _ => false,
    };
    let r = if up_to_date {
        tracing::info!(host = %inst.id, "agent already installed");
        Ok(())
    } else {
        crate::seam::transport::put_file(
            ctx.b.transport.as_ref(),
            &inst,
            &ctx.opts.agent_binary,
            AGENT_PATH,
            0o755,
        )
        .await
    };
    ctx.send(match r {
        Ok(()) => Event::Bootstrapped { host },
        Err(e) => Event::BootstrapFailed {
            host,
            error: chain(&e),
        },
    });
}

/// Runs one task to its end and reports it.
pub async fn run_task(ctx: &Ctx, key: TaskKey, host: HostId, inst: Instance, command: TaskCommand) {
    let started = now_ms();
    let event = match command {
        TaskCommand::Copy {
            src,
            dest,
            mode,
            optional,
        } => {
            let order = super::data::CopyOrder {
                src: &src,
                dest: &dest,
                mode,
                optional,
            };
            super::data::copy_task(ctx, key, host, &inst, order).await
        }
        TaskCommand::Fetch { pattern, .. } => {
            super::data::list_fetch(ctx, key, host, &inst, &pattern).await
        }
        TaskCommand::Exec(spec) => match exec_task(ctx, host, &inst, spec).await {
            Ok(status) => Event::TaskFinished {
                key,
                host,
                result: to_result(&status, started),
            },
            Err(TaskError::HostLost(reason)) => Event::HostLost { host, reason },
            Err(TaskError::Failed(error)) => Event::TaskFinished {
                key,
                host,
                result: TaskResult::without_exit(
                    TaskOutcome::Failed,
                    Some(error),
                    started,
                    now_ms(),
                ),
            },
        },
    };
    ctx.send(event);
}

/// Why a task's end could not be observed: its host went away, or the agent kept
/// failing (with the text for the record).
enum TaskError {
    HostLost(String),
    Failed(String),
}

/// Parses the last JSON line an agent printed.
fn parse_status(stdout: &[u8]) -> Option<TaskStatus> {
    String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
}

/// Starts the task through the agent and long-polls it to its end. Re-attaches by task
/// id after a failed call (`start` is idempotent), so a dropped connection costs nothing.
async fn exec_task(
    ctx: &Ctx,
    host: HostId,
    inst: &Instance,
    spec: squall_worker::TaskSpec,
) -> Result<TaskStatus, TaskError> {
    let id = spec.id.clone();
    // `start` also waits, so a short task costs one round trip. The task's environment
    // and secrets go on its stdin.
    let start_request = Request::Start {
        spec,
        wait_secs: ctx.opts.wait_poll_secs,
    };
    let start = agent_argv(ctx, inst, &start_request);
    let private = start_request.stdin();
    drop(start_request);
    let wait = agent_argv(
        ctx,
        inst,
        &Request::Wait {
            id: id.clone(),
            timeout_secs: ctx.opts.wait_poll_secs,
        },
    );
    let mut started = false;
    let mut errors = 0;
    loop {
        let argv = if started { &wait } else { &start };
        let result = match (&private, started) {
            (Some(input), false) => ctx.b.transport.run_input(inst, argv, input).await,
            _ => ctx.b.transport.run(inst, argv).await,
        };
        let failure = match result {
            Err(e) if e.is_unreachable() => return Err(TaskError::HostLost(chain(&e))),
            Err(e) => chain(&e),
            Ok(out) => match (
                out.code,
                parse_status(&out.stdout).inspect(|s| notice(ctx, host, inst, s)),
            ) {
                (Some(agent_exit::OK), Some(status)) if status.state.is_final() => {
                    if status.error.as_deref() == Some(squall_worker::SUPERVISOR_VANISHED)
                        && host_down(ctx, inst).await
                    {
                        return Err(TaskError::HostLost(
                            "the host went down during the task".into(),
                        ));
                    }
                    return Ok(status);
                }
                (Some(agent_exit::OK | agent_exit::STILL_RUNNING), Some(_)) => {
                    started = true;
                    errors = 0;
                    continue;
                }
                (code, _) => format!(
                    "the agent on {} answered {} to `{}`: {}",
                    inst.id,
                    code.map_or("a signal".to_owned(), |c| format!("exit code {c}")),
                    argv.join(" "),
                    out.stderr_tail()
                ),
            },
        };
        if host_down(ctx, inst).await {
            return Err(TaskError::HostLost(failure));
        }
        errors += 1;
        if errors > AGENT_ERRORS_TOLERATED {
            if started {
                // It may still run: stop it, so that a retry never runs beside it.
                let cancel = agent_argv(
                    ctx,
                    inst,
                    &Request::Cancel {
                        id: id.clone(),
                        grace_secs: 5,
                    },
                );
                let _ = ctx.b.transport.run(inst, &cancel).await;
            }
            return Err(TaskError::Failed(failure));
        }
        tracing::warn!(host = %inst.id, task = %id, "retrying after: {failure}");
        tokio::time::sleep(Duration::from_millis(250 << errors)).await;
    }
}

/// Passes on what the host's metadata announced, once per host and kind of notice.
fn notice(ctx: &Ctx, host: HostId, inst: &Instance, status: &TaskStatus) {
    let Some(i) = &status.interruption else {
        return;
    };
    let notice = match i.kind.as_str() {
        "termination" => Notice::Termination,
        "rebalance" => Notice::Rebalance,
        _ => return,
    };
    let new = ctx
        .notices
        .lock()
        .is_ok_and(|mut seen| seen.insert((host, notice.as_str())));
    if new {
        tracing::warn!(host = %inst.id, time = i.time.as_deref().unwrap_or(""), "the instance's metadata announces a spot {}", notice.as_str());
        ctx.send(Event::Interrupted { host, notice });
    }
}

/// Stops a task for a spot interruption (the agent creates its interrupt file, then
/// TERMs its group and KILLs it after the grace); its end is reported by the task's
/// own long poll.
pub async fn interrupt_task(ctx: &Ctx, key: TaskKey, inst: Instance, grace_ms: u64) {
    let argv = agent_argv(
        ctx,
        &inst,
        &Request::Interrupt {
            id: key.agent_id(),
            grace_secs: grace_ms.div_ceil(1000),
        },
    );
    match ctx.b.transport.run(&inst, &argv).await {
        Ok(out) if out.code == Some(agent_exit::OK) => {}
        Ok(out) => {
            tracing::warn!(host = %inst.id, task = %key.agent_id(), "interrupt answered {:?}: {}", out.code, out.stderr_tail());
        }
        Err(e) => {
            tracing::warn!(host = %inst.id, task = %key.agent_id(), "interrupt failed: {}", chain(&e));
        }
    }
}

/// Whether the provider says the instance is gone, or the host does not answer.
async fn host_down(ctx: &Ctx, inst: &Instance) -> bool {
    match ctx.b.compute.describe(std::slice::from_ref(&inst.id)).await {
        Ok(found) => found
            .first()
            .is_none_or(|i| i.state != InstanceState::Running),
        Err(_) => false,
    }
}

fn to_result(s: &TaskStatus, fallback_start: u64) -> TaskResult {
    let outcome = match s.state {
        TaskState::Exited if s.exit_code == Some(0) => TaskOutcome::Succeeded,
        TaskState::TimedOut => TaskOutcome::TimedOut,
        TaskState::Cancelled => TaskOutcome::Cancelled,
        _ => TaskOutcome::Failed,
    };
    let started = s.started_at_ms.unwrap_or(fallback_start);
    TaskResult {
        outcome,
        exit_code: s.exit_code,
        signal: s.signal,
        error: s.error.clone(),
        started_at_ms: started,
        ended_at_ms: s.ended_at_ms.unwrap_or_else(now_ms).max(started),
    }
}

/// Cancels a task (its whole process group), retrying while the task is still being
/// created.
pub async fn cancel_task(ctx: &Ctx, key: TaskKey, inst: Instance) {
    let argv = agent_argv(
        ctx,
        &inst,
        &Request::Cancel {
            id: key.agent_id(),
            grace_secs: 10,
        },
    );
    let started = std::time::Instant::now();
    loop {
        match ctx.b.transport.run(&inst, &argv).await {
            Ok(out) if out.code == Some(agent_exit::OK) => return,
            // The cancel overtook the start: the task folder does not exist yet.
            Ok(out)
                if out.code == Some(agent_exit::UNKNOWN_TASK)
                    && started.elapsed() < CANCEL_RETRY_FOR =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(out) => {
                tracing::warn!(host = %inst.id, task = %key.agent_id(), "cancel answered {:?}: {}", out.code, out.stderr_tail());
                return;
            }
            Err(e) => {
                tracing::warn!(host = %inst.id, task = %key.agent_id(), "cancel failed: {}", chain(&e));
                return;
            }
        }
    }
}

/// A command line to the agent on `inst` (for log packing).
pub fn pack_argv(ctx: &Ctx, inst: &Instance) -> Vec<String> {
    agent_argv(ctx, inst, &Request::Pack)
}
