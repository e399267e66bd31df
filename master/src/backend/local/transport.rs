//! Local `Transport`: runs commands as processes in a local instance's home.
//!
//! A command runs with the instance's home as working directory and `HOME`, and with the
//! instance marker in its environment (see [`super::compute`]). A command on an instance
//! that is down fails as unreachable, as SSH to a dead host would. This module does not
//! decide what to run.

use super::compute::{INSTANCE_ENV, LocalCompute};
use crate::error::{BoxError, Message};
use crate::seam::compute::Instance;
use crate::seam::transport::{Output, Transport, TransportError, streamed};
use async_trait::async_trait;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
                source: Message::boxed("the instance is not running"),
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
            return Err(cmd_err(host, argv, Message::boxed("empty command")));
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

fn cmd_err(host: &Instance, argv: &[String], source: impl Into<BoxError>) -> TransportError {
    TransportError::Command {
        host: host.id.clone(),
        argv: argv.join(" "),
        source: source.into(),
    }
}

/// An IO error about one path.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
struct AtPath {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> AtPath + '_ {
    move |source| AtPath {
        path: path.to_owned(),
        source,
    }
}

#[async_trait]
impl Transport for LocalTransport {
    async fn run_input(
        &self,
        host: &Instance,
        argv: &[String],
        input: &[u8],
    ) -> Result<Output, TransportError> {
        let home = self.check_up(host)?;
        let mut child = self
            .command(host, &home, argv)?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| cmd_err(host, argv, e))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that exits without reading shows in its output.
            let _ = stdin.write_all(input).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| cmd_err(host, argv, e))?;
        Ok(Output {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    async fn put_stream(
        &self,
        host: &Instance,
        body: &mut (dyn AsyncRead + Send + Unpin),
        size: u64,
        dest: &str,
        mode: u32,
    ) -> Result<(), TransportError> {
        let home = self.check_up(host)?;
        let target = home.join(dest);
        let what = [format!("put {dest}")];
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| cmd_err(host, &what, at(parent)(e)))?;
        }
        let tmp = PathBuf::from(format!("{}.squall-tmp", target.display()));
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let n = tokio::io::copy(body, &mut file).await?;
            file.flush().await?;
            Ok::<u64, std::io::Error>(n)
        }
        .await;
        let outcome = match written {
            Ok(n) if n == size => Ok(()),
            Ok(n) => Err(cmd_err(
                host,
                &what,
                Message(format!("received {n} of {size} bytes")),
            )),
            Err(e) => Err(cmd_err(host, &what, at(&tmp)(e))),
        };
        if let Err(e) = outcome {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| cmd_err(host, &what, e))?;
        tokio::fs::rename(&tmp, &target)
            .await
            .map_err(|e| cmd_err(host, &what, at(&target)(e)))
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
            return Err(cmd_err(host, argv, Message::boxed("no pipes to the child")));
        };
        let mut err_buf = Vec::new();
        // A sink that fails ends the output at once (dropping it), so the command is not
        // left blocked on a full pipe while its stderr is awaited.
        let copy = async move {
            let copied = tokio::io::copy(&mut stdout, sink).await;
            drop(stdout);
            copied
        };
        let (copied, read_err) = tokio::join!(copy, stderr.read_to_end(&mut err_buf));
        copied.map_err(|e| cmd_err(host, argv, CopyingOutput(e)))?;
        read_err.map_err(|e| cmd_err(host, argv, e))?;
        let status = child.wait().await.map_err(|e| cmd_err(host, argv, e))?;
        streamed(status, err_buf).map_err(|e| cmd_err(host, argv, e))
    }
}

/// Copying a command's output to its sink failed.
#[derive(Debug, thiserror::Error)]
#[error("copying output")]
struct CopyingOutput(#[source] std::io::Error);
