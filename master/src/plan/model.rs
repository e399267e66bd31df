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
}

impl FleetGroup {
    /// The minimum number of workers the run starts with.
    pub fn min(&self) -> u32 {
        self.min_count.unwrap_or(self.count)
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
    /// next item. Each item runs the stage's tasks with `item` set.
    #[serde(default)]
    pub shards: Option<Spanned<Vec<serde_json::Value>>>,
}

/// One step on a host: exactly one of `shell`, `command` or `copy`.
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
    /// A file from the playbook's folder (src) put on the host (dest).
    #[serde(default)]
    pub copy: Option<Spanned<CopySpec>>,
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
    /// Relative to the playbook's folder.
    pub src: Spanned<String>,
    /// Relative to the login user's home on the host, or absolute.
    pub dest: Spanned<String>,
    /// File mode, e.g. `"0755"` (default `0644`).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
}
