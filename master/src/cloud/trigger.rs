//! What starts a run ([`Trigger`]: an S3 upload, a schedule, a direct invocation) and
//! the run id derived from it alone, so every delivery of one trigger is one run.
//!
//! Parsing Lambda's event shapes into triggers is the `squall-launcher` crate's job;
//! claiming and launching, [`super::launch`]'s.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// An object was created in the bucket.
    S3 {
        bucket: String,
        key: String,
        size: i64,
        etag: String,
        version_id: String,
        sequencer: String,
    },
    /// A schedule rule fired.
    Schedule { rule: String, time: String },
    /// A direct invocation `{playbook, vars}`.
    Direct {
        playbook: String,
        vars: BTreeMap<String, String>,
        /// Distinguishes deliberate repeats; duplicates of one request share it.
        request: String,
        /// Run every item of cached stages again (`squall launch --no-cache`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        no_cache: bool,
    },
}

impl Trigger {
    /// `trigger.*` for templates and the record; an upload's also has `url`
    /// (`s3://bucket/key`, which `copy` and `lines` take).
    pub fn fields(&self) -> BTreeMap<String, Value> {
        let mut fields: BTreeMap<String, Value> = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        if let Trigger::S3 { bucket, key, .. } = self {
            fields.insert("url".into(), Value::String(format!("s3://{bucket}/{key}")));
        }
        fields
    }
}

/// The run id of a trigger: the playbook's file stem and a digest of everything that
/// identifies the trigger (so every delivery of one event gets the same id).
pub fn run_id(playbook_key: &str, trigger: &Trigger) -> String {
    let identity = match trigger {
        Trigger::S3 {
            bucket,
            key,
            etag,
            version_id,
            sequencer,
            ..
        } => format!("s3\n{bucket}\n{key}\n{version_id}\n{etag}\n{sequencer}"),
        Trigger::Schedule { rule, time } => format!("schedule\n{rule}\n{time}"),
        Trigger::Direct {
            playbook,
            vars,
            request,
            no_cache,
        } => format!("direct\n{playbook}\n{vars:?}\n{request}\n{no_cache}"),
    };
    let hex = crate::digest::short_sha256_hex(format!("{playbook_key}\n{identity}").as_bytes(), 8);
    let stem: String = Path::new(playbook_key)
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    let stem = stem.trim_matches('-');
    if stem.is_empty() {
        format!("run-{hex}")
    } else {
        format!("{stem}-{hex}")
    }
}
