//! The `Transport` seam: run an argv on a host, put a file there, stream a command's
//! output.
//!
//! Commands are argv vectors, never shell strings built from user data. Paths on the
//! host are relative to the login user's home unless absolute. Implementations live in
//! [`crate::backend`]: local (spawns processes in the instance's directory) and SSH.
//! Which commands to run is decided by the engine and [`squall_worker::Request`].

use super::compute::Instance;
use crate::error::BoxError;
use async_trait::async_trait;
use std::path::Path;
use tokio::io::{AsyncRead, AsyncWrite};

/// The result of a finished remote command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// None when the command was killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// The last few lines of stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        tail_lines(&self.stderr, 5)
    }
}

/// The last `n` lines of `bytes`, lossily decoded and trimmed.
pub fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A remote command that exited unsuccessfully, with the tail of its stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exit status {status}: {stderr_tail}")]
pub struct ExitFailure {
    pub status: String,
    pub stderr_tail: String,
}

/// The result of a command whose stdout was streamed elsewhere: its exit code and
/// stderr, or (for a non-zero exit) why it failed, with the tail of its stderr.
pub fn streamed(status: std::process::ExitStatus, stderr: Vec<u8>) -> Result<Output, ExitFailure> {
    if status.success() {
        Ok(Output {
            code: status.code(),
            stdout: Vec::new(),
            stderr,
        })
    } else {
        Err(ExitFailure {
            status: status.to_string(),
            stderr_tail: tail_lines(&stderr, 5),
        })
    }
}

/// Errors from reaching a host.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The host cannot be reached (down, gone, or not answering).
    #[error("host {host} ({address}) is unreachable")]
    Unreachable {
        host: String,
        address: String,
        #[source]
        source: BoxError,
    },
    /// The command could not be run or its IO failed.
    #[error("running `{argv}` on {host} failed")]
    Command {
        host: String,
        argv: String,
        #[source]
        source: BoxError,
    },
}

impl TransportError {
    /// Whether the host itself is gone (as opposed to one command failing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TransportError::Unreachable { .. })
    }
}

/// Runs commands on hosts.
#[async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Runs `argv` on `host` and collects its output (its stdin is empty).
    async fn run(&self, host: &Instance, argv: &[String]) -> Result<Output, TransportError> {
        self.run_input(host, argv, &[]).await
    }
    /// Runs `argv` on `host` with `input` on its stdin and collects its output. The
    /// input carries what must not be in an argv (a task's environment and secrets;
    /// every user of a host can read every process's command line).
    async fn run_input(
        &self,
        host: &Instance,
        argv: &[String],
        input: &[u8],
    ) -> Result<Output, TransportError>;
    /// Puts the `size` bytes `body` gives at `dest` on `host` with `mode`, creating
    /// parent folders, in constant memory. `dest` is left untouched unless exactly
    /// `size` bytes arrived.
    async fn put_stream(
        &self,
        host: &Instance,
        body: &mut (dyn AsyncRead + Send + Unpin),
        size: u64,
        dest: &str,
        mode: u32,
    ) -> Result<(), TransportError>;
    /// Runs `argv` on `host`, copying its stdout into `sink` as it comes.
    async fn stream(
        &self,
        host: &Instance,
        argv: &[String],
        sink: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<Output, TransportError>;
}

/// A local file could not be read for an upload.
#[derive(Debug, thiserror::Error)]
#[error("reading {}", path.display())]
pub struct ReadSource {
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Puts the local file `src` at `dest` on `host` with `mode` (see
/// [`Transport::put_stream`]); a missing source never reaches the host.
pub async fn put_file(
    t: &dyn Transport,
    host: &Instance,
    src: &Path,
    dest: &str,
    mode: u32,
) -> Result<(), TransportError> {
    let unreadable = |e: std::io::Error| TransportError::Command {
        host: host.id.clone(),
        argv: format!("put {} {dest}", src.display()),
        source: Box::new(ReadSource {
            path: src.to_owned(),
            source: e,
        }),
    };
    let mut file = tokio::fs::File::open(src).await.map_err(unreadable)?;
    let size = file.metadata().await.map_err(unreadable)?.len();
    t.put_stream(host, &mut file, size, dest, mode).await
}
