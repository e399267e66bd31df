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

/// Runs `ssh-keygen` with `args`; its standard output.
async fn keygen(args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, KeyError> {
    let out = tokio::process::Command::new("ssh-keygen")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(KeyError::Spawn)?;
    if !out.status.success() {
        return Err(KeyError::Keygen(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(out.stdout)
}

impl RunKeys {
    /// A successor master's keys: the run's login key (from where the first master
    /// kept it), a fresh host key for the workers this master launches, and a
    /// `known_hosts` pinning the run's published host keys plus the new one.
    pub async fn adopt(
        dir: &Path,
        run_id: &str,
        login_private: &str,
        published_known_hosts: &str,
    ) -> Result<RunKeys, KeyError> {
        let mut keys = RunKeys::generate(dir, run_id).await?;
        let login = &keys.login_key;
        let mut text = login_private.trim().to_owned();
        text.push('\n');
        write_private(login, &text).await?;
        let public = keygen(&["-y".as_ref(), "-f".as_ref(), login.as_os_str()]).await?;
        keys.login_public = String::from_utf8_lossy(&public).trim().to_owned();
        let _ = tokio::fs::remove_file(login.with_extension("pub")).await;
        let own = tokio::fs::read_to_string(&keys.known_hosts)
            .await
            .map_err(io_at("reading", &keys.known_hosts))?;
        let mut lines: Vec<&str> = published_known_hosts
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        lines.extend(own.lines().map(str::trim).filter(|l| !l.is_empty()));
        lines.dedup();
        let joined = lines.join("\n") + "\n";
        tokio::fs::write(&keys.known_hosts, joined)
            .await
            .map_err(io_at("writing", &keys.known_hosts))?;
        Ok(keys)
    }

    /// The login key's private text (to keep for a successor master).
    pub async fn login_private(&self) -> Result<String, KeyError> {
        Ok(tokio::fs::read_to_string(&self.login_key)
            .await
            .map_err(io_at("reading", &self.login_key))?)
    }

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

/// Writes a private key readable by its owner only (as ssh requires).
async fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = path.to_owned();
    let text = text.to_owned();
    let p = path.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let _ = std::fs::remove_file(&p);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)?;
        f.write_all(text.as_bytes())
    })
    .await
    .map_err(|e| KeyError::Keygen(format!("writing the login key: {e}")))?
    .map_err(io_at("writing", &path))?;
    Ok(())
}
