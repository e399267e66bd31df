//! Secrets: values a run needs that are never written anywhere, declared at the
//! playbook's top level and used as `{{ secrets.NAME }}`.
//!
//! ```yaml
//! secrets:
//!   API_TOKEN: ssm:/squall/nightly/api-token   # SSM Parameter Store, read by the master
//!   DB_PASSWORD: env:DB_PASSWORD               # local and inventory runs only
//!   TLS_KEY: file:secrets/tls.key              # likewise; relative to the playbook
//! ```
//!
//! A secret may be used in a task's `shell` text and `environment` values only: in a
//! `command` it would be in the task's argv (readable by every user of the host), in a
//! `copy` or `fetch` in a path, and in a `name` in the record. This module declares and
//! checks them (no IO); reading the values is the runner's ([`crate::runner::secrets`]),
//! and masking them is [`squall_worker::mask`]'s.

use super::diagnostic::{Diagnostic, Locator};
use super::lower::Pos;
use super::model::{Playbook, Shards, Task};
use super::template;
use serde_saphyr::Spanned;
use squall_worker::mask::Masks;
use std::collections::BTreeMap;
use std::fmt;

/// Why a secret's source is not one squall reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadSource(pub String);

/// Where a secret's value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `ssm:/path`: an SSM Parameter Store parameter (SecureString), read by the master.
    Ssm(String),
    /// `env:VAR`: an environment variable where squall runs.
    Env(String),
    /// `file:PATH`: a file where squall runs (relative to the playbook's folder); one
    /// trailing newline is dropped.
    File(String),
}

impl SecretSource {
    /// Parses `ssm:/path`, `env:VAR` or `file:PATH`.
    pub fn parse(text: &str) -> Result<SecretSource, BadSource> {
        let expected = "expected `ssm:/path/to/parameter`, `env:VARIABLE` or `file:PATH`";
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(BadSource(format!("{expected}, found `{text}`")));
        };
        match scheme {
            "ssm" if rest == RUN_KEYS.trim_end_matches('/') || rest.starts_with(RUN_KEYS) => {
                Err(BadSource(format!(
                    "`ssm:{rest}` is under `{RUN_KEYS}`, where squall keeps the runs' own login keys: keep secrets elsewhere (on AWS, under the stack's SecretsPrefix)"
                )))
            }
            "ssm" if valid_parameter(rest) => Ok(SecretSource::Ssm(rest.to_owned())),
            "ssm" => Err(BadSource(format!(
                "expected an SSM parameter name after `ssm:`, starting with `/` (letters, digits and `_.-/` only), found `{rest}`"
            ))),
            "env" if valid_name(rest) => Ok(SecretSource::Env(rest.to_owned())),
            "env" => Err(BadSource(format!(
                "expected an environment variable name after `env:`, found `{rest}`"
            ))),
            "file" if !rest.trim().is_empty() => Ok(SecretSource::File(rest.to_owned())),
            "file" => Err(BadSource("expected a path after `file:`".to_owned())),
            _ => Err(BadSource(format!("{expected}, found `{text}`"))),
        }
    }

    /// Whether the value is read where squall runs (not by a master on EC2).
    pub fn is_local(&self) -> bool {
        !matches!(self, SecretSource::Ssm(_))
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Ssm(p) => write!(f, "ssm:{p}"),
            SecretSource::Env(v) => write!(f, "env:{v}"),
            SecretSource::File(p) => write!(f, "file:{p}"),
        }
    }
}

/// Where squall keeps each run's login key (never a playbook's secret).
const RUN_KEYS: &str = "/squall/runs/";

/// One declared secret, in a [`super::Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretDecl {
    pub source: SecretSource,
    pub at: Pos,
}

/// A secret's name: a letter or `_`, then letters, digits and `_`; at most 64.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

/// An SSM parameter name as squall accepts it: absolute, `[A-Za-z0-9_.-/]`, at most
/// 1011 characters (SSM's own limit for a full name).
fn valid_parameter(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && p.len() <= 1011
        && !p.contains("//")
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
}

/// What `{{ secrets.NAME }}` renders as while validating: the value is not known.
pub fn placeholders(pb: &Playbook) -> BTreeMap<String, String> {
    pb.secrets
        .keys()
        .map(|name| (name.clone(), format!("<secret {name}>")))
        .collect()
}

/// Whether a template refers to `secrets`: by the variables minijinja finds in it, or
/// by the word `secrets` as a name inside a `{{ }}` or `{% %}` (minijinja misses
/// variables in some expressions, e.g. a slice `secrets.A[1:]`; a string literal
/// `"secrets"` counts too, which errs on the safe side).
pub fn uses_secrets(text: &str) -> bool {
    let found = template::references(text).is_some_and(|refs| {
        refs.iter()
            .any(|r| r == "secrets" || r.starts_with("secrets."))
    });
    found || names_secrets(text)
}

/// Whether `secrets` appears as a root name inside a template delimiter.
fn names_secrets(text: &str) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut tail = text;
    while let Some(open) = tail.find(['{']) {
        let rest = &tail[open..];
        let close = if rest.starts_with("{{") {
            "}}"
        } else if rest.starts_with("{%") {
            "%}"
        } else {
            tail = &tail[open + 1..];
            continue;
        };
        let end = rest.find(close).map_or(rest.len(), |e| e + close.len());
        let span = &rest[..end];
        for (i, _) in span.match_indices("secrets") {
            let before = span[..i].chars().next_back();
            let after = span[i + "secrets".len()..].chars().next();
            if !before.is_some_and(|c| name_char(c) || c == '.') && !after.is_some_and(name_char) {
                return true;
            }
        }
        tail = &rest[end..];
    }
    false
}

/// The declarations: names and sources.
pub fn validate(pb: &Playbook, at: &Locator<'_>, out: &mut Vec<Diagnostic>) {
    for (name, source) in &pb.secrets {
        if !valid_name(name) {
            out.push(at.at(
                source,
                format!("expected a secret name of letters, digits and `_` (not starting with a digit), found `{name}`"),
            ));
        }
        if let Err(why) = SecretSource::parse(&source.value) {
            out.push(at.at(source, format!("secret `{name}`: {why}")));
        }
    }
    for stage in &pb.stages.value {
        if let Some(s) = &stage.value.shards
            && let Shards::Objects(u) | Shards::Lines(u) = &s.value
            && uses_secrets(&u.value)
        {
            out.push(at.at(u, misplaced("a shard listing's URL")));
        }
    }
}

/// A template uses secrets only as `{{ secrets.NAME }}` or `{{ secrets.NAME | quote }}`:
/// what a filter makes of a value (`replace`, `upper`, ...) could not be masked.
fn plain_uses(text: &str) -> bool {
    let mut rest = String::with_capacity(text.len());
    let mut tail = text;
    while let Some(open) = tail.find("{{") {
        let Some(len) = tail[open..].find("}}") else {
            break;
        };
        let inner = tail[open + 2..open + len]
            .trim_start_matches('-')
            .trim_end_matches('-');
        rest.push_str(&tail[..open]);
        if plain_form(inner) {
            rest.push('x');
        } else {
            rest.push_str(&tail[open..open + len + 2]);
        }
        tail = &tail[open + len + 2..];
    }
    rest.push_str(tail);
    !uses_secrets(&rest)
}

/// A text that uses a secret has no block tag that could capture or transform what is
/// rendered inside it (`filter`, `set` ... `endset`, `autoescape`): only `if` and `for`.
fn plain_blocks(text: &str) -> bool {
    const ALLOWED: [&str; 6] = ["if", "elif", "else", "endif", "for", "endfor"];
    let mut tail = text;
    while let Some(open) = tail.find("{%") {
        let Some(len) = tail[open..].find("%}") else {
            return true; // does not compile: reported elsewhere
        };
        let word = tail[open + 2..open + len]
            .trim_start_matches(['-', '+'])
            .split_whitespace()
            .next()
            .unwrap_or("");
        if !ALLOWED.contains(&word) {
            return false;
        }
        tail = &tail[open + len + 2..];
    }
    true
}

/// `secrets.NAME`, optionally `| quote`, with any spacing.
fn plain_form(inner: &str) -> bool {
    let (value, filter) = match inner.split_once('|') {
        Some((v, f)) => (v.trim(), Some(f.trim())),
        None => (inner.trim(), None),
    };
    value.strip_prefix("secrets.").is_some_and(valid_name) && filter.is_none_or(|f| f == "quote")
}

/// A task's templates outside `shell` and `environment` use no secret, and those use
/// them plainly (see [`plain_uses`]).
pub fn check_task(t: &Task, at: &Locator<'_>, out: &mut Vec<Diagnostic>) {
    let plain = t.shell.iter().chain(t.environment.values());
    for s in plain {
        if !plain_uses(&s.value) || (uses_secrets(&s.value) && !plain_blocks(&s.value)) {
            out.push(at.at(
                s,
                "expected `{{ secrets.NAME }}` or `{{ secrets.NAME | quote }}`, and no block but `if` and `for` beside it: a secret passed through another filter, or captured by a block, could not be masked",
            ));
        }
    }
    let mut check = |s: &Spanned<String>, field: &str| {
        if uses_secrets(&s.value) {
            out.push(at.at(s, misplaced(field)));
        }
    };
    if let Some(c) = &t.command {
        for a in &c.value {
            check(
                a,
                "`command` (it would be in the task's argv, which every user of the host can read; use `shell` with an `environment` variable)",
            );
        }
    }
    if let Some(c) = &t.copy {
        check(&c.value.src, "`copy.src`");
        check(&c.value.dest, "`copy.dest`");
    }
    if let Some(f) = &t.fetch {
        check(&f.value.src, "`fetch.src`");
        check(&f.value.dest, "`fetch.dest`");
    }
    if let Some(n) = &t.name {
        check(n, "a task's `name` (it is shown in the record)");
    }
}

fn misplaced(field: &str) -> String {
    format!("`secrets` may be used in `shell` and `environment` only, not in {field}")
}

/// Refuses what a master on EC2 cannot read: secrets read where squall runs (`env:`,
/// `file:`), and `ssm:` parameters outside `prefix` (the stack's `SecretsPrefix`, when
/// known). Each at its file:line:column.
pub fn check_for_ec2(plan: &super::Plan, prefix: Option<&str>) -> Result<(), super::Invalid> {
    let problems: Vec<Diagnostic> = plan
        .secrets
        .iter()
        .filter_map(|(name, d)| {
            let why = match &d.source {
                SecretSource::Ssm(p) => match prefix {
                    Some(prefix) if !p.starts_with(prefix) => format!(
                        "secret `{name}` is `ssm:{p}`, outside the stack's secrets prefix `{prefix}` (its master may read only there)"
                    ),
                    _ => return None,
                },
                local => format!(
                    "secret `{name}` is read from `{local}` where squall runs, which a master on EC2 cannot do: use `ssm:/path` on AWS (`env:` and `file:` are for local and inventory runs)"
                ),
            };
            Some(plan.diagnostic(d.at, format!("{why}; nothing was launched")))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(super::Invalid(problems))
    }
}

/// A run's secret values, by name. `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    masks: Masks,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

/// What a value may look like in rendered text: as is, and shell-quoted (`quote`).
pub fn forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    if let Ok(q) = shlex::try_quote(value)
        && q != value
    {
        out.push(q.into_owned());
    }
    out
}

impl Secrets {
    pub fn new(values: BTreeMap<String, String>) -> Secrets {
        let masks = Masks::new(values.values().flat_map(|v| forms(v)));
        Secrets { values, masks }
    }

    /// The values by name, for rendering.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    /// Every value's needles.
    pub fn masks(&self) -> &Masks {
        &self.masks
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_or_say_what_was_expected() {
        assert_eq!(
            SecretSource::parse("ssm:/squall/a-b/c_d.e"),
            Ok(SecretSource::Ssm("/squall/a-b/c_d.e".into()))
        );
        assert_eq!(
            SecretSource::parse("env:API_TOKEN"),
            Ok(SecretSource::Env("API_TOKEN".into()))
        );
        assert_eq!(
            SecretSource::parse("file:keys/a.pem"),
            Ok(SecretSource::File("keys/a.pem".into()))
        );
        for bad in [
            "plain",
            "vault:x",
            "ssm:relative",
            "ssm:/a b",
            "ssm:/",
            "env:1X",
            "env:",
            "file:",
        ] {
            assert!(SecretSource::parse(bad).is_err(), "{bad}");
        }
        assert!(!SecretSource::Ssm("/a".into()).is_local());
        assert!(SecretSource::Env("A".into()).is_local());
    }

    #[test]
    fn secrets_are_used_plainly_or_refused() {
        for ok in [
            "echo {{ secrets.A }}",
            "echo {{secrets.A|quote}} {{- secrets.B -}}",
            "{% if vars.x %}{{ secrets.A | quote }}{% endif %}",
            "{% for h in vars.hosts %}{{ h }} {{ secrets.A }}{% endfor %}",
            "{{ vars.secrets_dir }} {% filter upper %}x{% endfilter %}",
        ] {
            assert!(
                plain_uses(ok) && (!uses_secrets(ok) || plain_blocks(ok)),
                "{ok}"
            );
        }
        for bad in [
            "echo {{ secrets.A | upper }}",
            "echo {{ secrets.A[1:] }}",
            "echo {{ secrets['A'] }}",
            "{% for c in secrets.A %}{{ c }}{% endfor %}",
        ] {
            assert!(!plain_uses(bad), "{bad}");
        }
        for captured in [
            "{% filter upper %}{{ secrets.A }}{% endfilter %}",
            "{% set t %}{{ secrets.A }}{% endset %}{{ t | replace('a', 'b') }}",
            "{%- autoescape true %}{{ secrets.A }}{% endautoescape %}",
        ] {
            assert!(
                plain_uses(captured) && !plain_blocks(captured),
                "{captured}"
            );
        }
    }

    #[test]
    fn secrets_show_their_names_only() {
        let s = Secrets::new(BTreeMap::from([("TOKEN".into(), "hunter22".into())]));
        assert_eq!(format!("{s:?}"), r#"{"TOKEN"}"#);
        assert_eq!(s.masks().mask("x hunter22"), "x ***");
    }
}
