//! Local `Compute`: an instance is a directory plus its processes.
//!
//! `HOME/instances/ID/meta.json` holds the instance's tags and state;
//! `HOME/instances/ID/home/` is its login user's home. Every process started on the
//! instance carries `SQUALL_LOCAL_INSTANCE=ID` in its environment, which is how
//! terminate finds them all (tasks' background children included). Each instance has an
//! "init" process (a `sleep` until the instance's deadline): the instance is up while
//! init lives, so killing an instance's processes is a crash, and the deadline is a
//! dead-man's switch. Running commands on an instance is [`super::LocalTransport`]'s job.

use crate::seam::compute::{Compute, ComputeError, Instance, InstanceState, LaunchRequest, tags};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that marks a process as belonging to a local instance.
pub const INSTANCE_ENV: &str = "SQUALL_LOCAL_INSTANCE";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    state: InstanceState,
    tags: BTreeMap<String, String>,
    client_token: String,
    init_pid: Option<u32>,
    created_at_ms: u64,
}

/// Instances as local directories. See the module docs.
#[derive(Debug, Clone)]
pub struct LocalCompute {
    root: PathBuf,
}

impl LocalCompute {
    /// Instances live under `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalCompute { root: root.into() }
    }

    /// The folder of instance `id`.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The login home of instance `id`.
    pub fn home(&self, id: &str) -> PathBuf {
        self.instance_dir(id).join("home")
    }

    /// Whether instance `id` is up: recorded running and its init alive.
    pub fn is_up(&self, id: &str) -> bool {
        self.read_meta(id)
            .is_ok_and(|m| self.effective_state(&m) == InstanceState::Running)
    }

    /// Kills every process of the instance without recording anything: a crash, for
    /// fault tests. The instance then reads as terminated.
    pub fn crash(&self, id: &str) -> usize {
        kill_marked(id)
    }

    fn read_meta(&self, id: &str) -> Result<Meta, ComputeError> {
        let path = self.instance_dir(id).join("meta.json");
        let bytes = std::fs::read(&path).map_err(|e| failed("describe", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| failed("describe", &path, e))
    }

    fn write_meta(&self, meta: &Meta) -> Result<(), ComputeError> {
        let path = self.instance_dir(&meta.id).join("meta.json");
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(meta).map_err(|e| failed("write", &path, e))?;
        std::fs::write(&tmp, bytes).map_err(|e| failed("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| failed("write", &path, e))
    }

    fn effective_state(&self, m: &Meta) -> InstanceState {
        match (m.state, m.init_pid) {
            (InstanceState::Running, Some(pid)) if !squall_worker::pid_alive(pid) => {
                InstanceState::Terminated
            }
            (s, _) => s,
        }
    }

    fn to_instance(&self, m: Meta) -> Instance {
        Instance {
            state: self.effective_state(&m),
            address: self.home(&m.id).display().to_string(),
            id: m.id,
            tags: m.tags,
            instance_type: None,
        }
    }

    fn all(&self) -> Result<Vec<Meta>, ComputeError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(failed("list", &self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| failed("list", &self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("i-")
                && let Ok(m) = self.read_meta(&name)
            {
                out.push(m);
            }
        }
        out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(out)
    }

    fn launch_one(&self, req: &LaunchRequest, index: u32) -> Result<Meta, ComputeError> {
        let id = instance_id(&req.client_token, index);
        let dir = self.instance_dir(&id);
        if let Ok(existing) = self.read_meta(&id) {
            if self.effective_state(&existing) == InstanceState::Running {
                return Ok(existing); // a retried launch with the same token
            }
            return Err(ComputeError::failed(
                "launch",
                crate::error::Message(format!(
                    "instance {id} of an earlier launch with this token ({}) has ended; a run id can be used once",
                    req.client_token
                )),
            ));
        }
        let home = dir.join("home");
        std::fs::create_dir_all(&home).map_err(|e| failed("launch", &home, e))?;
        let mut tags = req.tags.clone();
        tags.entry(tags::NAME.into())
            .or_insert_with(|| format!("{}-{}", req.group, index));
        let now = now_secs();
        let lifetime = tags
            .get(tags::DEADLINE)
            .and_then(|d| d.parse::<u64>().ok())
            .map_or(86_400, |d| d.saturating_sub(now).max(1));
        let init_pid = spawn_init(&id, &home, lifetime).map_err(|e| failed("launch", &home, e))?;
        let meta = Meta {
            id,
            state: InstanceState::Running,
            tags,
            client_token: req.client_token.clone(),
            init_pid: Some(init_pid),
            created_at_ms: now * 1000 + u64::from(index),
        };
        self.write_meta(&meta)?;
        if !req.user_data.trim().is_empty() {
            std::fs::write(dir.join("user-data"), &req.user_data)
                .map_err(|e| failed("launch", &dir, e))?;
        }
        Ok(meta)
    }
}

#[async_trait]
impl Compute for LocalCompute {
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, ComputeError> {
        let this = self.clone();
        let req = req.clone();
        tokio::task::spawn_blocking(move || {
            (0..req.spec.count)
                .map(|i| this.launch_one(&req, i).map(|m| this.to_instance(m)))
                .collect()
        })
        .await
        .map_err(|e| ComputeError::failed("launch", e))?
    }

    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, ComputeError> {
        Ok(ids
            .iter()
            .filter_map(|id| self.read_meta(id).ok())
            .map(|m| self.to_instance(m))
            .collect())
    }

    async fn list_by_tag(&self, key: &str, value: &str) -> Result<Vec<Instance>, ComputeError> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|m| m.tags.get(key).is_some_and(|v| v == value))
            .map(|m| self.to_instance(m))
            .collect())
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), ComputeError> {
        for id in ids {
            let Ok(mut meta) = self.read_meta(id) else {
                continue; // unknown ids are not an error, as on EC2
            };
            kill_marked(id);
            if meta.state != InstanceState::Terminated {
                meta.state = InstanceState::Terminated;
                self.write_meta(&meta)?;
            }
        }
        Ok(())
    }
}

/// A stable id for the `index`-th instance of a launch: retries find the same ids.
fn instance_id(client_token: &str, index: u32) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{client_token}/{index}").as_bytes());
    let hex: String = digest.iter().take(9).map(|b| format!("{b:02x}")).collect();
    format!("i-{}", &hex[..17])
}

/// Starts the instance's init (`sleep` for its lifetime), detached so that it is not
/// this process's child, and returns its pid.
fn spawn_init(id: &str, home: &Path, lifetime_secs: u64) -> std::io::Result<u32> {
    let out = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            "sleep \"$1\" </dev/null >/dev/null 2>&1 & echo $!",
            "squall-init",
            &lifetime_secs.to_string(),
        ])
        .current_dir(home)
        .env(INSTANCE_ENV, id)
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other("could not read the init process's pid"))
}

/// Kills (SIGKILL) every process whose environment marks it as part of instance `id`;
/// returns how many were signalled.
fn kill_marked(id: &str) -> usize {
    let marker = format!("{INSTANCE_ENV}={id}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut killed = 0;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(p.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes())
            && let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            && rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error about one file of the local backend.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
struct AtPath {
    path: PathBuf,
    #[source]
    source: crate::error::BoxError,
}

fn failed(op: &'static str, path: &Path, e: impl Into<crate::error::BoxError>) -> ComputeError {
    ComputeError::failed(
        op,
        AtPath {
            path: path.to_owned(),
            source: e.into(),
        },
    )
}
