//! Problems in a playbook (or an inventory), each at a place in its file: what is wrong,
//! what was expected, and the source line with a caret under the column.
//!
//! This module turns positions and parser errors into [`Diagnostic`]s; deciding what
//! is a problem is [`super::validate`]'s job.

use serde_saphyr::Spanned;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a playbook, at a place in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the position is unknown.
    pub line: u64,
    pub column: u64,
    /// What is wrong and what was expected: a lowercase fragment.
    pub message: String,
    /// The offending source line, for display.
    pub source_line: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(src) = &self.source_line {
            let pad = " ".repeat(self.line.to_string().len());
            let caret = " ".repeat(self.column.saturating_sub(1) as usize);
            write!(f, "\n{pad} |\n{} | {src}\n{pad} | {caret}^", self.line)?;
        }
        Ok(())
    }
}

/// Every problem found in one playbook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<Diagnostic>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// A problem at `line:column` of `source` (read from `file`), found after
    /// validation (e.g. a `copy` source that does not exist).
    pub fn at(file: &Path, source: &str, line: u64, column: u64, message: String) -> Diagnostic {
        let source_line = (line > 0)
            .then(|| source.lines().nth(line as usize - 1).map(str::to_owned))
            .flatten();
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            message,
            source_line,
        }
    }
}

impl Invalid {
    /// One problem with no position in `file` (e.g. it cannot be read).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Invalid {
        Invalid(vec![Diagnostic {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: message.into(),
            source_line: None,
        }])
    }
}

/// Errors from loading a playbook file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// failed to read the playbook
    #[error("failed to read playbook {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// the playbook is invalid
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

/// Turns positions into diagnostics for one file.
#[derive(Debug, Clone, Copy)]
pub struct Locator<'a> {
    pub file: &'a Path,
    pub source: &'a str,
}

impl Locator<'_> {
    pub fn diag(&self, line: u64, column: u64, message: impl Into<String>) -> Diagnostic {
        let source_line = (line > 0)
            .then(|| self.source.lines().nth((line - 1) as usize))
            .flatten()
            .map(str::to_owned);
        Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            source_line,
        }
    }

    pub fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> Diagnostic {
        self.diag(s.referenced.line(), s.referenced.column(), message)
    }

    /// A YAML or type error from serde-saphyr as a diagnostic at its position.
    pub fn parse_error(&self, e: &serde_saphyr::Error) -> Diagnostic {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        self.diag(line, column, bare_message(e))
    }
}

/// serde-saphyr's message without its own location (prefix or suffix) and snippet, with
/// parser jargon turned into what was expected.
fn bare_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 4 column 5: unknown field ..." -> "unknown field ..."
    let msg = match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") && head.contains(" column ") => rest,
        _ => first,
    };
    // "... at line 9, column 18" -> "..."
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(", column ") => &msg[..i],
        _ => msg,
    };
    friendly(msg)
}

/// Rewrites the parser's wording of common type errors as what was expected.
fn friendly(msg: &str) -> String {
    let rewrites: [(&str, &str); 6] = [
        (
            "unexpected event: expected sequence start",
            "expected a list, e.g. `[a, b]` or `- a` lines",
        ),
        (
            "unexpected event: expected mapping start",
            "expected a mapping of keys to values, e.g. `{ key: value }`",
        ),
        (
            "unexpected event: expected string scalar",
            "expected a string",
        ),
        (
            "invalid u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("invalid u64", "expected a whole number"),
        ("invalid bool", "expected true or false"),
    ];
    for (from, to) in rewrites {
        if msg == from {
            return to.to_owned();
        }
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!("duplicate key `{key}`: each key may appear once");
    }
    msg.to_owned()
}
