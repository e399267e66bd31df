//! The agent's error type and its mapping to the exit codes of `squall_worker::exit`.
//!
//! Every failure of a subcommand ends up here with what failed and on which path or
//! task. It does not print anything: `main` prints the message and its cause chain.

use squall_worker::exit;
use std::io;
use std::path::PathBuf;

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The command line could not be parsed.
    #[error("{0}")]
    Usage(String),
    /// No task folder with that id exists under the root.
    #[error("no task `{id}` under {}", root.display())]
    UnknownTask { id: String, root: PathBuf },
    /// A file-system operation on `path` failed; `action` says which (e.g. "reading").
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A JSON file of a task could not be parsed or produced.
    #[error("{action} {}", path.display())]
    Json {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Starting a process (the supervisor) failed.
    #[error("{what}")]
    Spawn {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Writing to standard output failed (e.g. the reader went away).
    #[error("writing {what} to stdout")]
    Stdout {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// A task did not produce the status that was waited for in time.
    #[error("task `{id}` {problem}")]
    Task { id: String, problem: String },
    /// A glob cannot be fetched as it is.
    #[error("glob `{pattern}` {problem}")]
    Glob { pattern: String, problem: String },
    /// Neither `--root` nor `$HOME` says where the agent root is.
    #[error("no --root given and $HOME is not set")]
    NoHome,
}

impl AgentError {
    /// An [`AgentError::Io`] for `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        AgentError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The process exit code that reports this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Usage(_) => exit::USAGE,
            AgentError::UnknownTask { .. } => exit::UNKNOWN_TASK,
            _ => exit::ERROR,
        }
    }
}

/// `err` and all its causes, joined by `": "`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
