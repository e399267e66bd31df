//! The launcher Lambda's event handling: one entry point for S3 uploads, EventBridge
//! schedules and direct invocations. Parsing Lambda's event shapes lives here; turning a
//! trigger into a run (claim, validate, start one master) is [`squall::cloud::launch`]'s,
//! shared with `squall launch`.
//!
//! A run's watchdog schedule invokes it with `{"squall_watch": RUN_ID}`: the run is
//! looked at, and taken over by a successor master when its heartbeat is stale
//! ([`squall::cloud::watch`]).
//!
//! Every invocation also sweeps: instances past their `squall:deadline` are terminated
//! and recorded in their runs ([`squall::cloud::sweep`]), concurrently with the launch.

use serde::Serialize;
use serde_json::Value;
pub use squall::cloud::launch::{
    LaunchError, LaunchStatus, Launcher, Outcome, Settings, Trigger, run_id,
};
pub use squall::cloud::userdata::master_user_data;
pub use squall::record::RunRequest;
use std::collections::BTreeMap;

/// What one invocation did.
#[derive(Debug, Clone, Serialize)]
pub struct Handled {
    pub runs: Vec<Outcome>,
    /// What a watchdog invocation (`{"squall_watch": RUN_ID}`, from the run's
    /// schedule) did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<squall::cloud::watch::WatchReport>,
    /// The sweep's findings; `None` when it failed (logged, never fails the launch).
    pub sweep: Option<squall::cloud::sweep::SweepReport>,
}

/// Handles one event at `now_secs` (unix time): the triggers in it, and a sweep.
pub async fn handle(
    launcher: &Launcher,
    event: &Value,
    now_secs: u64,
) -> Result<Handled, LaunchError> {
    if let Some(run) = event.get("squall_watch") {
        let run = run
            .as_str()
            .ok_or_else(|| LaunchError::permanent("`squall_watch` must be a run id"))?;
        let watch = launcher.watch(run, now_secs * 1000);
        let sweep = squall::cloud::sweep::sweep(
            launcher.compute.as_ref(),
            Some(launcher.store.as_ref()),
            launcher.control.as_deref(),
            launcher.settings.stack.as_deref(),
            now_secs,
        );
        let (watched, swept) = tokio::join!(watch, sweep);
        return Ok(Handled {
            runs: Vec::new(),
            watch: Some(watched?),
            sweep: swept
                .inspect_err(|e| tracing::warn!("sweep failed: {e}"))
                .ok(),
        });
    }
    let triggers = parse_event(event)?;
    // One budget for the whole invocation, however many records its event holds.
    let deadline = launcher.launch_deadline();
    let launches = async {
        let mut out = Vec::new();
        for trigger in &triggers {
            out.push(
                launcher
                    .handle_trigger_by(trigger, now_secs, deadline)
                    .await?,
            );
        }
        Ok::<_, LaunchError>(out)
    };
    let sweep = squall::cloud::sweep::sweep(
        launcher.compute.as_ref(),
        Some(launcher.store.as_ref()),
        launcher.control.as_deref(),
        launcher.settings.stack.as_deref(),
        now_secs,
    );
    let (runs, swept) = tokio::join!(launches, sweep);
    let sweep = match swept {
        Ok(report) => Some(report),
        Err(e) => {
            tracing::warn!("sweep failed: {e}");
            None
        }
    };
    Ok(Handled {
        runs: runs?,
        watch: None,
        sweep,
    })
}

/// The triggers in an event (an S3 notification may carry several records).
pub fn parse_event(event: &Value) -> Result<Vec<Trigger>, LaunchError> {
    if event.get("Records").is_some() {
        let ev: aws_lambda_events::event::s3::S3Event = serde_json::from_value(event.clone())
            .map_err(|e| LaunchError::permanent(format!("not a valid S3 event: {e}")))?;
        return ev
            .records
            .into_iter()
            .map(|r| {
                let o = r.s3.object;
                let key = o
                    .url_decoded_key
                    .or(o.key)
                    .ok_or_else(|| LaunchError::permanent("S3 record without an object key"))?;
                Ok(Trigger::S3 {
                    bucket: r.s3.bucket.name.unwrap_or_default(),
                    key: decode_key(&key),
                    size: o.size.unwrap_or(0),
                    etag: o.e_tag.unwrap_or_default(),
                    version_id: o.version_id.unwrap_or_default(),
                    sequencer: o.sequencer.unwrap_or_default(),
                })
            })
            .collect();
    }
    if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        let rule = event
            .get("resources")
            .and_then(|r| r.get(0))
            .and_then(Value::as_str)
            .and_then(|arn| arn.rsplit('/').next())
            .ok_or_else(|| {
                LaunchError::permanent("scheduled event without a rule ARN in `resources`")
            })?;
        let time = event
            .get("time")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Ok(vec![Trigger::Schedule {
            rule: rule.to_owned(),
            time: time.to_owned(),
        }]);
    }
    if let Some(pb) = event.get("playbook").and_then(Value::as_str) {
        let vars = match event.get("vars") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect(),
            Some(_) => {
                return Err(LaunchError::permanent(
                    "`vars` must be an object of NAME: VALUE",
                ));
            }
        };
        let request = event
            .get("request_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let no_cache = event
            .get("no_cache")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return Ok(vec![Trigger::Direct {
            playbook: pb.to_owned(),
            vars,
            request: request.to_owned(),
            no_cache,
        }]);
    }
    Err(LaunchError::permanent(
        "unrecognised event: expected an S3 notification, a Scheduled Event or {\"playbook\": KEY, \"vars\": {...}}",
    ))
}

/// S3 notification keys are URL-encoded with `+` for spaces.
fn decode_key(key: &str) -> String {
    let bytes = key.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
