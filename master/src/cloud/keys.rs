//! The run's SSH material, made by the master with `ssh-keygen`: a login key authorized
//! on every worker, and one host key installed on every worker (through its user-data)
//! and pinned in the master's `known_hosts`.
//!
//! Making and reading the keys only; putting them in boot scripts is
//! [`super::userdata`]'s job, and connecting with them [`crate::backend::ssh`]'s.

use crate::error::{IoAt, io_at};
use std::path::{Path, PathBuf};

/// Making the run's keys failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Io(#[from] IoAt),
    #[error("running ssh-keygen")]
    Spawn(#[source] std::io::Error),
    #[error("ssh-keygen failed: {0}")]
    Keygen(String),
}

/// The run's SSH material, made by the master: a login key authorized on every worker,
/// and one host key installed on every worker and pinned in `known_hosts`.
#[derive(Debug, Clone)]
pub struct RunKeys {
    pub login_key: PathBuf,
    pub login_public: String,
    pub host_private: String,
    pub host_public: String,
    pub known_hosts: PathBuf,
}

impl RunKeys {
    /// Generates fresh ed25519 keys in `dir` with `ssh-keygen`.
    pub async fn generate(dir: &Path, run_id: &str) -> Result<RunKeys, KeyError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io_at("creating", dir))?;
        let login_key = dir.join("id_ed25519");
        let host_key = dir.join("host_ed25519");
        for (path, comment) in [
            (&login_key, format!("squall master of {run_id}")),
            (&host_key, format!("squall worker of {run_id}")),
        ] {
            let _ = tokio::fs::remove_file(path).await;
            let _ = tokio::fs::remove_file(path.with_extension("pub")).await;
            let out = tokio::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"])
                .arg(path)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(KeyError::Spawn)?;
            if !out.status.success() {
                return Err(KeyError::Keygen(
                    String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                ));
            }
        }
        let read = |p: PathBuf| async move {
            match tokio::fs::read_to_string(&p).await {
                Ok(s) => Ok(s.trim().to_owned()),
                Err(e) => Err(io_at("reading", &p)(e)),
            }
        };
        let host_public = read(dir.join("host_ed25519.pub")).await?;
        let known_hosts = dir.join("known_hosts");
        // Every worker of the run has this host key, whatever its address.
        let key_only: String = host_public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        tokio::fs::write(&known_hosts, format!("* {key_only}\n"))
            .await
            .map_err(io_at("writing", &known_hosts))?;
        Ok(RunKeys {
            login_public: read(dir.join("id_ed25519.pub")).await?,
            host_private: read(host_key).await?,
            host_public,
            login_key,
            known_hosts,
        })
    }
}
