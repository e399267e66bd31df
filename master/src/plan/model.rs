//! The playbook as written: the serde model of its YAML, with positions (`Spanned`)
//! for messages.
//!
//! Unknown keys are errors (`deny_unknown_fields` everywhere). Checking the model as a
//! whole is [`super::validate`]'s job, and what the engine runs is the plain
//! [`super::Plan`] lowered from it once ([`super::lower`]); nothing after validation
//! walks this tree.

use super::duration::Dur;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;

/// The name a stage uses to mean every host of every group.
pub const ALL_HOSTS: &str = "all";

/// A whole playbook, as written.
///
/// ```yaml
/// name: nightly-inference
/// deadline: 3h
/// vars: { model: resnet50 }
/// fleet:
///   gpu: { count: 4, instance_type: g5.xlarge, market: spot-or-on-demand }
/// stages:
///   - name: setup
///     hosts: all
///     tasks:
///       - shell: ./setup.sh {{ vars.model }}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// A short name for the job; it prefixes run ids.
    pub name: Spanned<String>,
    /// The whole run is cut off, its logs collected and its instances torn down by then.
    /// Defaults to 1h.
    #[serde(default)]
    pub deadline: Option<Spanned<Dur>>,
    /// Values for templates, as `{{ vars.NAME }}`. `--var NAME=VALUE` overrides them.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Named groups of workers.
    pub fleet: Spanned<BTreeMap<String, Spanned<FleetGroup>>>,
    /// Stages, run in order; a stage starts once the previous one is done everywhere.
    pub stages: Spanned<Vec<Spanned<Stage>>>,
    /// How many masters may run the run in all: when one dies, a watchdog starts a
    /// successor that resumes from the journal, up to this many (default 3; 1: none).
    #[serde(default)]
    pub max_masters: Option<Spanned<u32>>,
    /// The most each task's stdout and stderr keep (default 1GiB): past it a stream
    /// keeps its first and last halves with a line saying how much was skipped.
    #[serde(default)]
    pub log_limit: Option<Spanned<super::size::Size>>,
    /// The most the run may spend, in USD (estimated: each worker's instance-seconds at
    /// the on-demand price of its type, 60 s at least): once reached, nothing more is
    /// launched, running tasks are cancelled, logs collected, everything torn down, and
    /// the run is recorded `budget_exceeded`.
    #[serde(default)]
    pub budget_usd: Option<Spanned<f64>>,
    /// Values never written anywhere, as `{{ secrets.NAME }}` in `shell` and
    /// `environment`: `NAME: ssm:/path`, `env:VAR` or `file:PATH` (see
    /// [`super::secrets`]).
    #[serde(default)]
    pub secrets: BTreeMap<String, Spanned<String>>,
}

/// A named group of identical workers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetGroup {
    /// How many workers to start.
    pub count: u32,
    /// Start the run with at least this many when capacity is short (default: `count`).
    #[serde(default)]
    pub min_count: Option<u32>,
    /// One EC2 instance type, or a list tried in order on capacity errors.
    #[serde(default)]
    pub instance_type: Option<InstanceTypes>,
    /// The machine image (AMI id); the launch configuration's default when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// How to buy capacity.
    #[serde(default)]
    pub market: Market,
    /// Root volume size in GiB.
    #[serde(default)]
    pub volume_gb: Option<u32>,
    /// The login user on the image (e.g. `ec2-user`, `ubuntu`).
    #[serde(default)]
    pub user: Option<String>,
    /// Subnet override for this group.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Security-group override for this group.
    #[serde(default)]
    pub security_groups: Option<Vec<String>>,
    /// Give the workers a public IP (off by default).
    #[serde(default)]
    pub public_ip: bool,
    /// An instance profile (name or ARN) for this group's workers, for jobs that pull
    /// many GB themselves. Off by default: workers then hold no AWS credentials, and the
    /// master moves every byte (`copy`, `fetch`).
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// How many lost workers may be replaced over the run (default: `count`; `0` never
    /// replaces). The group can have at most `count + replace` hosts in all.
    #[serde(default)]
    pub replace: Option<u32>,
}

impl FleetGroup {
    /// The minimum number of workers the run starts with.
    pub fn min(&self) -> u32 {
        self.min_count.unwrap_or(self.count)
    }

    /// How many replacements the group may launch over the run.
    pub fn replacements(&self) -> u32 {
        self.replace.unwrap_or(self.count)
    }
}

/// How a group's capacity is bought.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    #[default]
    OnDemand,
    Spot,
    /// Spot first, on-demand when spot capacity is short.
    SpotOrOnDemand,
}

/// One instance type or a fallback list, written as a string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceTypes(pub Vec<String>);

impl<'de> Deserialize<'de> for InstanceTypes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InstanceTypes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an instance type or a list of instance types")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(InstanceTypes(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element::<String>()? {
                    out.push(t);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("expected at least one instance type"));
                }
                Ok(InstanceTypes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A stage: the same tasks on every host of a group, or shard items spread over them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: Spanned<String>,
    /// A fleet group, or `all`.
    pub hosts: Spanned<String>,
    /// Tasks run in order on each host (or for each shard item).
    pub tasks: Spanned<Vec<Spanned<Task>>>,
    /// The stage is cut off (and the run fails) after this long.
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
    /// Extra attempts for a failed task (a failed shard item is retried from its first
    /// task, on another host where possible).
    #[serde(default)]
    pub retries: u32,
    /// Items spread dynamically over the stage's hosts: a host that finishes takes the
    /// next item. Each item runs the stage's tasks with `item` set. A list, or items
    /// resolved from data when the stage starts (`objects: URL`, `lines: URL`).
    #[serde(default)]
    pub shards: Option<Spanned<Shards>>,
    /// Sharded stages: an item whose cache key matches an earlier success is not run
    /// again; its fetched files are reused.
    #[serde(default)]
    pub cache: Option<Spanned<bool>>,
    /// On a spot interruption notice, how long a running task has between SIGTERM (and
    /// `$SQUALL_INTERRUPT_FILE`) and SIGKILL: default 90s, at most 110s (the notice
    /// comes two minutes ahead).
    #[serde(default)]
    pub interrupt_grace: Option<Spanned<Dur>>,
}

/// A sharded stage's items: written out, or one per object under a prefix (or file
/// under a folder), or one per non-empty line of a manifest.
#[derive(Debug, Clone)]
pub enum Shards {
    Items(Vec<serde_json::Value>),
    /// `objects: URL`: an S3 prefix or a local folder, listed recursively.
    Objects(Spanned<String>),
    /// `lines: URL`: an S3 object or a local file, one item per non-empty line.
    Lines(Spanned<String>),
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shards;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of items, or `objects: URL` or `lines: URL`")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<serde_json::Value>()? {
                    out.push(v);
                }
                Ok(Shards::Items(out))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "expected `objects: URL` or `lines: URL` in `shards`",
                    ));
                };
                let url: Spanned<String> = map.next_value()?;
                let shards = match key.as_str() {
                    "objects" => Shards::Objects(url),
                    "lines" => Shards::Lines(url),
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown key `{other}` in `shards`, expected `objects` or `lines`"
                        )));
                    }
                };
                if let Some(more) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "`shards` takes one of `objects` or `lines`, found `{more}` as well"
                    )));
                }
                Ok(shards)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "expected a list, e.g. `[a, b]`, or `objects: URL` or `lines: URL`, found `{v}`"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// One step on a host: exactly one of `shell`, `command`, `copy` or `fetch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// A command line run by `/bin/sh -c`.
    #[serde(default)]
    pub shell: Option<Spanned<String>>,
    /// A program and its arguments, run without a shell.
    #[serde(default)]
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    /// A file or folder (from the playbook's folder, S3, or the run's files) put on the
    /// host.
    #[serde(default)]
    pub copy: Option<Spanned<CopySpec>>,
    /// Files on the host matching a glob, stored in the run's files (or S3).
    #[serde(default)]
    pub fetch: Option<Spanned<FetchSpec>>,
    /// A `fetch` of a sharded stage that also runs when the item is interrupted by a
    /// spot notice (for checkpoints), before the item goes back to the queue.
    #[serde(default)]
    pub on_interrupt: Option<Spanned<bool>>,
    /// Extra environment variables for this task.
    #[serde(default)]
    pub environment: BTreeMap<String, Spanned<String>>,
    /// The task is killed (whole process group) after this long.
    #[serde(default)]
    pub timeout: Option<Spanned<Dur>>,
}

/// The `copy` task's arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySpec {
    /// A path relative to the playbook's folder (absolute: local and inventory runs
    /// only), `s3://bucket/key`, or under `{{ run.files }}`; ending in `/`, a folder
    /// copied recursively.
    pub src: Spanned<String>,
    /// Relative to the login user's home on the host, or absolute (a folder when `src`
    /// is one).
    pub dest: Spanned<String>,
    /// File mode, e.g. `"0755"` (default `0644`).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// A missing source is not an error (nothing is copied).
    #[serde(default)]
    pub optional: bool,
}

/// The `fetch` task's arguments: host -> store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSpec {
    /// A glob on the host (`*`, `?`, `**`), relative to the login home or absolute.
    pub src: Spanned<String>,
    /// A prefix in the run's files area (`runs/RUN_ID/files/PREFIX/...`), or an
    /// absolute `s3://bucket/prefix/`.
    pub dest: Spanned<String>,
    /// No match is not an error.
    #[serde(default)]
    pub optional: bool,
}
