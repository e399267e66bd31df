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
            let (shown, caret_at) = window(src, self.column.saturating_sub(1) as usize);
            let caret = " ".repeat(caret_at);
            write!(f, "\n{pad} |\n{} | {shown}\n{pad} | {caret}^", self.line)?;
        }
        Ok(())
    }
}

/// The most of a source line a diagnostic shows, around its column.
const WINDOW: usize = 100;

/// The part of `line` shown (at most [`WINDOW`] characters around `column`, 0-based,
/// with `…` where it is cut) and where the column falls in it.
fn window(line: &str, column: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= WINDOW {
        return (line.to_owned(), column);
    }
    let start = column
        .saturating_sub(WINDOW / 2)
        .min(chars.len().saturating_sub(WINDOW));
    let end = (start + WINDOW).min(chars.len());
    let mut shown = String::new();
    let mut caret = column - start.min(column);
    if start > 0 {
        shown.push('…');
        caret += 1;
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    (shown, caret)
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

    /// The 1-based line and column of byte `offset` of the source.
    pub fn position(&self, offset: usize) -> (u64, u64) {
        let mut at = offset.min(self.source.len());
        while !self.source.is_char_boundary(at) {
            at -= 1;
        }
        let before = &self.source[..at];
        let line = before.matches('\n').count() as u64 + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
        (line, column)
    }

    /// A YAML or type error from serde-saphyr as a diagnostic at its position.
    pub fn parse_error(&self, e: &serde_saphyr::Error) -> Diagnostic {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = bare_message(e);
        // serde-saphyr places a missing field at the mapping's last key: name the
        // mapping that lacks it, at its first key.
        let (line, column, message) = if message.starts_with("missing field") {
            let (l, c) = self.mapping_start(line, column);
            (l, c, message)
        } else if message.contains("quoted scalar")
            && let Some((l, c, quote)) = self.open_quote_before(line, column)
        {
            // The scanner gives up where the file or the indentation ends; the mistake
            // is where the quote opened.
            (
                l,
                c,
                format!("unclosed quote: the string opened here has no closing {quote}"),
            )
        } else {
            (line, column, message)
        };
        // A position outside the file (the parser gave none) becomes its start.
        let (line, column) = if line == 0 || column == 0 {
            (1, 1)
        } else {
            (line, column)
        };
        self.diag(line, column, message)
    }

    /// The quote (line, column, and the quote itself) of a quoted scalar still open at
    /// `line`:`column`, scanning the source as YAML does: a quote opens a scalar only
    /// where a value begins (after `: `, `- `, `[`, `{`, `,` or at a line's start), `\"`
    /// and `''` are escapes, `#` outside quotes starts a comment.
    pub fn open_quote_before(&self, line: u64, column: u64) -> Option<(u64, u64, char)> {
        let mut open: Option<(u64, u64, char)> = None;
        for (i, text) in self.source.lines().enumerate() {
            let n = i as u64 + 1;
            if n > line {
                break;
            }
            let chars: Vec<char> = text.chars().collect();
            let mut prev_significant: Option<char> = None;
            let mut k = 0;
            while k < chars.len() {
                if n == line && k as u64 + 1 >= column {
                    break;
                }
                let ch = chars[k];
                match open {
                    Some((_, _, '"')) => {
                        if ch == '\\' {
                            k += 1; // the escaped character
                        } else if ch == '"' {
                            open = None;
                        }
                    }
                    Some((_, _, _)) => {
                        if ch == '\'' {
                            if chars.get(k + 1) == Some(&'\'') {
                                k += 1;
                            } else {
                                open = None;
                            }
                        }
                    }
                    None => {
                        if ch == '#' && (k == 0 || chars[k - 1] == ' ') {
                            break;
                        }
                        let starts_value = matches!(
                            prev_significant,
                            None | Some(':' | '-' | '[' | '{' | ',' | '?')
                        );
                        if (ch == '"' || ch == '\'') && starts_value {
                            open = Some((n, k as u64 + 1, ch));
                        }
                        if ch != ' ' {
                            prev_significant = Some(ch);
                        }
                    }
                }
                k += 1;
            }
        }
        open
    }

    /// Where the block mapping whose key is at `line`:`column` begins (its first key):
    /// the lines above it at the same indentation, up to the line that holds it (a
    /// shallower key, or the `- ` of its list item). Any other position is kept.
    pub fn mapping_start(&self, line: u64, column: u64) -> (u64, u64) {
        let lines: Vec<&str> = self.source.lines().collect();
        let Some(at) = (line as usize).checked_sub(1).filter(|i| *i < lines.len()) else {
            return (line, column);
        };
        let column_us = column as usize;
        if key_column(lines[at]) != Some(column_us) {
            return (line, column); // a flow mapping, or not a key
        }
        let item = |l: &str| l.trim_start_matches(' ').starts_with("- ");
        if item(lines[at]) {
            return (line, column); // the first key of its item already
        }
        let mut start = at;
        for i in (0..at).rev() {
            match key_column(lines[i]) {
                None => continue,
                Some(c) if c > column_us => continue,
                Some(c) if c == column_us => {
                    start = i;
                    if item(lines[i]) {
                        break;
                    }
                }
                Some(_) => break,
            }
        }
        (start as u64 + 1, column)
    }
}

/// The 1-based column where the key of a block-mapping line begins (after any `- `
/// list markers); `None` for blank and comment lines.
fn key_column(line: &str) -> Option<usize> {
    let mut rest = line.trim_start_matches(' ');
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    let mut col = line.len() - rest.len() + 1;
    while let Some(r) = rest.strip_prefix("- ") {
        let r2 = r.trim_start_matches(' ');
        col += rest.len() - r2.len();
        rest = r2;
    }
    Some(col)
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
    if msg.starts_with("alias replay limit exceeded") || msg.starts_with("alias limit") {
        return "the playbook's aliases (`*name`) expand to too many values (a YAML alias \
                bomb?); write the values out or keep them in a file"
            .to_owned();
    }
    if msg.starts_with("recursion limit exceeded") || msg.starts_with("budget breached: Depth") {
        return "lists and mappings nest too deep (at most 64 levels)".to_owned();
    }
    if msg.starts_with("budget breached: Aliases") || msg.starts_with("budget breached: Anchors") {
        return "the playbook uses too many aliases (`*name`, at most 1000); write the values \
                out or keep them in a file"
            .to_owned();
    }
    if msg.starts_with("budget breached") {
        return "the playbook is too large to read (too many values); keep long lists in files \
                and read them with `lines:` or `objects:`"
            .to_owned();
    }
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
