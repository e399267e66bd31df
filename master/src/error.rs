//! Error plumbing shared by every layer: the boxed error that seams carry as a
//! `#[source]`, a plain-text error for details that only exist as text (a remote
//! command's stderr, a provider's message), and [`chain`], the one function that renders
//! an error with its whole cause chain for records, reports and messages.
//!
//! Each operation's error type lives with the operation; this module only holds what
//! they all share. Whether an error is worth retrying is decided elsewhere (the AWS
//! backend's `retry` module).

use std::error::Error;
use std::path::{Path, PathBuf};

/// A boxed error, as seams carry their causes.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// An error that is only text: a remote command's stderr, a provider's message, a
/// reason found by a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Message(pub String);

impl Message {
    /// `text` as a boxed error.
    pub fn boxed(text: impl Into<String>) -> BoxError {
        Box::new(Message(text.into()))
    }
}

/// A file-system operation on a path failed: `creating /x: Permission denied`.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}", path.display())]
pub struct IoAt {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A `map_err` for an IO operation `action` (`"reading"`, `"creating"`) on `path`.
pub fn io_at<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> IoAt + 'a {
    move |source| IoAt {
        action,
        path: path.to_owned(),
        source,
    }
}

/// `err` and all its causes, joined by `": "`, e.g. `put `k` failed: SlowDown: ...`.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let next = c.to_string();
        // A cause whose text its parent already spelled out adds nothing.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("put `k` failed")]
    struct Outer(#[source] BoxError);

    #[test]
    fn the_chain_reads_after_failed_to() {
        let e = Outer(Message::boxed("SlowDown: reduce your request rate"));
        assert_eq!(
            chain(&e),
            "put `k` failed: SlowDown: reduce your request rate"
        );
        assert_eq!(chain(&Message("alone".into())), "alone");
    }
}
