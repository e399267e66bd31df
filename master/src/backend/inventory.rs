//! Static inventory: run playbooks on machines you already have, over SSH.
//!
//! An inventory file maps playbook groups to hosts (address, port, user, key, known
//! host key). As with Ansible, a group is all of its inventory hosts: [`Inventory::apply`]
//! sets each fleet group's count to its inventory size. [`InventoryCompute`] "launches" a
//! group by leasing its hosts to the run and "terminates" them by cancelling the run's tasks and removing the
//! run's agent folder: a static host is cleaned, never powered off. Reaching hosts is
//! [`super::ssh::SshTransport`]'s job.
//!
//! ```yaml
//! defaults:                  # optional; each host may override any of these
//!   user: deploy
//!   port: 22
//!   key: ~/.ssh/id_ed25519
//!   known_hosts: known_hosts # relative to the inventory file
//! groups:
//!   workers:
//!     - { name: gpu-1, address: 10.0.0.5 }
//!     - { name: gpu-2, address: 10.0.0.6, host_key: "ssh-ed25519 AAAA..." }
//! ```

use super::ssh::{SshTarget, SshTransport};
use crate::error::{Message, chain};
use crate::plan::diagnostic::{Diagnostic, Invalid, Locator};
use crate::seam::compute::{Compute, ComputeError, Instance, InstanceState, LaunchRequest, tags};
use crate::seam::host::{AGENT_PATH, agent_root, run_dir};
use crate::seam::transport::Transport;
use async_trait::async_trait;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The inventory file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    #[serde(default)]
    pub defaults: HostSettings,
    /// Playbook group name -> its hosts.
    pub groups: BTreeMap<String, Vec<Spanned<InventoryHost>>>,
}

/// Connection settings that hosts inherit from `defaults`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Private key file (`~/` is expanded; relative to the inventory file).
    #[serde(default)]
    pub key: Option<String>,
    /// known_hosts file holding the hosts' keys.
    #[serde(default)]
    pub known_hosts: Option<String>,
}

/// One host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryHost {
    /// Unique in the inventory (default: the address).
    #[serde(default)]
    pub name: Option<String>,
    pub address: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// The host's public key (`ssh-ed25519 AAAA...`), instead of a known_hosts file.
    #[serde(default)]
    pub host_key: Option<String>,
}

/// A loaded inventory: every host with its complete SSH settings.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub groups: BTreeMap<String, Vec<SshTarget>>,
}

impl Inventory {
    /// Makes the playbook's groups the inventory's: each group's count becomes its
    /// number of inventory hosts. A playbook group missing from the inventory is an error.
    pub fn apply(&self, pb: &mut crate::plan::Plan, inventory_file: &Path) -> Result<(), Invalid> {
        let mut problems = Vec::new();
        for (group, spec) in pb.fleet.iter_mut() {
            if spec.replace.is_some_and(|r| r > 0) {
                let at = pb.fleet_at.get(group).copied().unwrap_or_default();
                problems.push(Diagnostic {
                    file: pb.file.clone(),
                    line: at.line,
                    column: at.column,
                    message: format!(
                        "group `{group}` asks for `replace: {}`, but an inventory run cannot launch hosts: use `replace: 0` or leave it out",
                        spec.replace.unwrap_or(0)
                    ),
                    source_line: pb.source.lines().nth(at.line.saturating_sub(1) as usize).map(str::to_owned),
                });
            }
            // Lost inventory hosts are never replaced.
            spec.replace = Some(0);
            match self.groups.get(group) {
                Some(hosts) if !hosts.is_empty() => {
                    spec.count = hosts.len() as u32;
                    spec.min_count = None;
                }
                _ => problems.push(Diagnostic {
                    file: inventory_file.to_owned(),
                    line: 0,
                    column: 0,
                    message: format!(
                        "the playbook's group `{group}` has no hosts in the inventory (groups there: {})",
                        self.groups.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    source_line: None,
                }),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Invalid(problems))
        }
    }
}

/// Why `word` (a host name, address or user from an inventory) is unsafe, if it is:
/// empty, too long, starting with `-` (an option to ssh) or `.` (`.`, `..`, hidden), or
/// holding anything but letters, digits and `.`, `_`, `-` (and `:`, `[`, `]`, `%` for
/// addresses and names: IPv6).
fn unsafe_word(word: &str, address_chars: bool) -> Option<&'static str> {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '.' | '_' | '-')
            || (address_chars && matches!(c, ':' | '[' | ']' | '%'))
    };
    if word.is_empty() {
        Some("is empty")
    } else if word.len() > 253 {
        Some("is longer than 253 characters")
    } else if word.starts_with('-') {
        Some("must not start with `-` (ssh would read it as an option)")
    } else if word.starts_with('.') {
        Some("must not start with `.`")
    } else if !word.chars().all(allowed) {
        Some(if address_chars {
            "may hold only letters, digits and `.` `_` `-` `:` `[` `]` `%`"
        } else {
            "may hold only letters, digits and `.` `_` `-`"
        })
    } else {
        None
    }
}

/// Reads an inventory. Host keys given inline are written to a known_hosts file in
/// `state_dir`.
pub fn load(path: &Path, state_dir: &Path) -> Result<Inventory, Invalid> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Invalid::whole_file(path, format!("failed to read the inventory: {e}")))?;
    let at = Locator {
        file: path,
        source: &text,
    };
    let file: InventoryFile =
        serde_saphyr::from_str(&text).map_err(|e| Invalid(vec![at.parse_error(&e)]))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| -> PathBuf {
        match p.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from(p), |h| PathBuf::from(h).join(rest)),
            None => base.join(p),
        }
    };
    let mut problems = Vec::new();
    let mut groups = BTreeMap::new();
    let mut names = BTreeMap::new();
    let mut inline_keys = String::new();
    let inline_file = state_dir.join("inventory_known_hosts");
    for (group, hosts) in &file.groups {
        let mut targets = Vec::new();
        for h in hosts {
            let (l, c) = (h.referenced.line(), h.referenced.column());
            let v = &h.value;
            let name = v.name.clone().unwrap_or_else(|| v.address.clone());
            if names.insert(name.clone(), l).is_some() {
                problems.push(at.diag(
                    l,
                    c,
                    format!("host name `{name}` appears twice; names must be unique"),
                ));
            }
            // A host's name becomes a folder the run removes (`rm -rf`), its address and
            // user reach ssh's command line: nothing that could be a path or an option.
            if let Some(why) = unsafe_word(&name, true) {
                problems.push(at.diag(l, c, format!("host name `{name}` {why}")));
            }
            if let Some(why) = unsafe_word(&v.address, true) {
                problems.push(at.diag(
                    l,
                    c,
                    format!("address `{}` of host `{name}` {why}", v.address),
                ));
            }
            let d = &file.defaults;
            if let Some(u) = v.user.as_ref().or(d.user.as_ref())
                && let Some(why) = unsafe_word(u, false)
            {
                problems.push(at.diag(l, c, format!("user `{u}` of host `{name}` {why}")));
            }
            let user = v.user.clone().or_else(|| d.user.clone());
            let key = v.key.clone().or_else(|| d.key.clone());
            let port = v.port.or(d.port).unwrap_or(22);
            let known_hosts = match (
                &v.host_key,
                v.known_hosts.as_ref().or(d.known_hosts.as_ref()),
            ) {
                (Some(k), _) => {
                    let who = if port == 22 {
                        v.address.clone()
                    } else {
                        format!("[{}]:{port}", v.address)
                    };
                    inline_keys.push_str(&format!("{who} {}\n", k.trim()));
                    Some(inline_file.clone())
                }
                (None, Some(f)) => Some(resolve(f)),
                (None, None) => None,
            };
            match (user, key, known_hosts) {
                (Some(user), Some(key), Some(known_hosts)) => targets.push(SshTarget {
                    name,
                    address: v.address.clone(),
                    port,
                    user,
                    key: resolve(&key),
                    known_hosts,
                }),
                (user, key, kh) => {
                    let missing: Vec<&str> = [
                        ("user", user.is_none()),
                        ("key", key.is_none()),
                        ("known_hosts or host_key", kh.is_none()),
                    ]
                    .iter()
                    .filter(|(_, m)| *m)
                    .map(|(n, _)| *n)
                    .collect();
                    problems.push(at.diag(
                        l,
                        c,
                        format!(
                            "host `{name}` has no {} (set it on the host or under `defaults`)",
                            missing.join(", ")
                        ),
                    ));
                }
            }
        }
        groups.insert(group.clone(), targets);
    }
    if !problems.is_empty() {
        return Err(Invalid(problems));
    }
    if !inline_keys.is_empty() {
        std::fs::create_dir_all(state_dir)
            .and_then(|()| std::fs::write(&inline_file, inline_keys))
            .map_err(|e| {
                Invalid::whole_file(
                    &inline_file,
                    format!("failed to write known host keys: {e}"),
                )
            })?;
    }
    Ok(Inventory { groups })
}

/// Cleans one host: `$1` is the agent, `$2` the run's agent root on this host, `$3` the
/// run's folder (removed once empty). A constant script; paths arrive as arguments.
const CLEAN_SCRIPT: &str = r#"if [ -d "$2" ]; then "$1" --root "$2" cancel --all --grace-secs 5 >/dev/null || true; fi
rm -rf -- "$2"
rmdir -- "$3" 2>/dev/null || true"#;

/// Why a host could not be cleaned.
enum CleanError {
    Unreachable(String),
    Failed(String),
}

#[derive(Debug, Clone)]
struct Lease {
    instance: Instance,
}

/// `Compute` over a static inventory. See the module docs.
#[derive(Debug)]
pub struct InventoryCompute {
    inventory: Inventory,
    transport: Arc<SshTransport>,
    leases: Mutex<BTreeMap<String, Lease>>,
}

impl InventoryCompute {
    /// Registers every host with `transport` under its name.
    pub fn new(inventory: Inventory, transport: Arc<SshTransport>) -> Self {
        for t in inventory.groups.values().flatten() {
            transport.register(&t.name, t.clone());
        }
        InventoryCompute {
            inventory,
            transport,
            leases: Mutex::new(BTreeMap::new()),
        }
    }

    fn leases(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Lease>>, ComputeError> {
        self.leases
            .lock()
            .map_err(|_| ComputeError::failed("inventory", Message("lease table poisoned".into())))
    }

    /// Cancels the run's tasks on a host and removes its agent folder, in one round trip.
    async fn clean(&self, inst: &Instance) -> Result<(), CleanError> {
        let Some(run) = inst.tag(tags::RUN) else {
            return Ok(());
        };
        let argv: Vec<String> = ["sh", "-c", CLEAN_SCRIPT, "squall-clean", AGENT_PATH]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([agent_root(run, &inst.id), run_dir(run)])
            .collect();
        match self.transport.run(inst, &argv).await {
            Ok(out) if out.code == Some(0) => Ok(()),
            Ok(out) => Err(CleanError::Failed(format!(
                "cleaning {} failed: {}",
                inst.id,
                out.stderr_tail()
            ))),
            Err(e) if e.is_unreachable() => Err(CleanError::Unreachable(chain(&e))),
            Err(e) => Err(CleanError::Failed(chain(&e))),
        }
    }
}

#[async_trait]
impl Compute for InventoryCompute {
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, ComputeError> {
        let Some(hosts) = self.inventory.groups.get(&req.group) else {
            return Err(ComputeError::capacity(
                req.group.clone(),
                Message("the inventory has no such group".into()),
            ));
        };
        let mut leases = self.leases()?;
        let mut out = Vec::new();
        for t in hosts {
            let taken = leases.get(&t.name).is_some_and(|l| {
                l.instance.state == InstanceState::Running
                    && l.instance.tag(tags::RUN) != Some(req.run_id.as_str())
            });
            if taken {
                continue;
            }
            let mut tags = req.tags.clone();
            tags.insert(tags::NAME.into(), t.name.clone());
            let instance = Instance {
                id: t.name.clone(),
                state: InstanceState::Running,
                address: t.address.clone(),
                tags,
                instance_type: None,
            };
            leases.insert(
                t.name.clone(),
                Lease {
                    instance: instance.clone(),
                },
            );
            out.push(instance);
        }
        if (out.len() as u32) < req.spec.min() {
            return Err(ComputeError::capacity(
                req.group.clone(),
                Message(format!(
                    "the inventory has {} free host(s), the group needs {}",
                    out.len(),
                    req.spec.min()
                )),
            ));
        }
        Ok(out)
    }

    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, ComputeError> {
        let leases = self.leases()?;
        Ok(ids
            .iter()
            .filter_map(|id| leases.get(id).map(|l| l.instance.clone()))
            .collect())
    }

    async fn list_by_tag(&self, key: &str, value: &str) -> Result<Vec<Instance>, ComputeError> {
        let leases = self.leases()?;
        Ok(leases
            .values()
            .filter(|l| l.instance.tag(key) == Some(value))
            .map(|l| l.instance.clone())
            .collect())
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), ComputeError> {
        let targets: Vec<Instance> = {
            let leases = self.leases()?;
            ids.iter()
                .filter_map(|id| leases.get(id))
                .filter(|l| l.instance.state != InstanceState::Terminated)
                .map(|l| l.instance.clone())
                .collect()
        };
        let mut errors = Vec::new();
        for inst in &targets {
            match self.clean(inst).await {
                Ok(()) => {}
                // Nothing of the run can be left on a host it cannot reach now; a host
                // that comes back keeps only a dead folder under .squall/runs.
                Err(CleanError::Unreachable(e)) => {
                    tracing::warn!(host = %inst.id, "not cleaned: {e}");
                }
                Err(CleanError::Failed(e)) => {
                    tracing::warn!(host = %inst.id, "cleaning failed: {e}");
                    errors.push(e);
                }
            }
            if let Some(l) = self.leases()?.get_mut(&inst.id) {
                l.instance.state = InstanceState::Terminated;
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            // The hosts are released either way; say what could not be cleaned.
            Err(ComputeError::failed("clean", Message(errors.join("; "))))
        }
    }
}
