//! Local `Transport`: runs commands as processes in a local instance's home.
//!
//! A command runs with the instance's home as working directory and `HOME`, and with the
//! instance marker in its environment (see [`super::compute`]). A command on an instance
//! that is down fails as unreachable, as SSH to a dead host would. This module does not
//! decide what to run.

use super::compute::{INSTANCE_ENV, LocalCompute};
use crate::compute::Instance;
use crate::transport::{Output, Transport, TransportError, streamed};
use async_trait::async_trait;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::process::Command;

/// Runs commands on [`LocalCompute`] instances.
#[derive(Debug, Clone)]
pub struct LocalTransport {
    compute: LocalCompute,
}

impl LocalTransport {
    pub fn new(compute: LocalCompute) -> Self {
        LocalTransport { compute }
    }

    fn check_up(&self, host: &Instance) -> Result<PathBuf, TransportError> {
        if self.compute.is_up(&host.id) {
            Ok(self.compute.home(&host.id))
        } else {
            Err(TransportError::Unreachable {
                host: host.id.clone(),
                address: host.address.clone(),
                detail: "the instance is not running".into(),
            })
        }
    }

    fn command(
        &self,
        host: &Instance,
        home: &Path,
        argv: &[String],
    ) -> Result<Command, TransportError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(cmd_err(host, argv, "empty command"));
        };
        // A relative program path is relative to the instance's home, as over SSH.
        let program = if program.contains('/') && !program.starts_with('/') {
            home.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(home)
            .env("HOME", home)
            .env(INSTANCE_ENV, &host.id)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Ok(cmd)
    }
}

fn cmd_err(host: &Instance, argv: &[String], detail: impl std::fmt::Display) -> TransportError {
    TransportError::Command {
        host: host.id.clone(),
        argv: argv.join(" "),
        detail: detail.to_string(),
    }
}

#[async_trait]
impl Transport for LocalTransport {
    async fn run(&self, host: &Instance, argv: &[String]) -> Result<Output, TransportError> {
        let home = self.check_up(host)?;
        let out = self
            .command(host, &home, argv)?
            .output()
            .await
            .map_err(|e| cmd_err(host, argv, e))?;
        Ok(Output {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    async fn put_file(
        &self,
        host: &Instance,
        src: &Path,
        dest: &str,
        mode: u32,
    ) -> Result<(), TransportError> {
        let home = self.check_up(host)?;
        let target = home.join(dest);
        let what = [format!("copy {} {dest}", src.display())];
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| cmd_err(host, &what, format!("{}: {e}", parent.display())))?;
        }
        let tmp = target.with_extension("squall-tmp");
        tokio::fs::copy(src, &tmp)
            .await
            .map_err(|e| cmd_err(host, &what, format!("{}: {e}", src.display())))?;
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| cmd_err(host, &what, e))?;
        tokio::fs::rename(&tmp, &target)
            .await
            .map_err(|e| cmd_err(host, &what, format!("{}: {e}", target.display())))
    }

    async fn stream(
        &self,
        host: &Instance,
        argv: &[String],
        sink: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<Output, TransportError> {
        let home = self.check_up(host)?;
        let mut child = self
            .command(host, &home, argv)?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| cmd_err(host, argv, e))?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            return Err(cmd_err(host, argv, "no pipes to the child"));
        };
        let mut err_buf = Vec::new();
        let (copied, read_err) = tokio::join!(
            tokio::io::copy(&mut stdout, sink),
            stderr.read_to_end(&mut err_buf)
        );
        copied.map_err(|e| cmd_err(host, argv, format!("copying output: {e}")))?;
        read_err.map_err(|e| cmd_err(host, argv, e))?;
        let status = child.wait().await.map_err(|e| cmd_err(host, argv, e))?;
        streamed(status, err_buf).map_err(|e| cmd_err(host, argv, e))
    }
}
