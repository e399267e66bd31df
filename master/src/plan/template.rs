//! Jinja templating of task fields (minijinja), with strict undefined values.
//!
//! A template sees `vars`, `run.id`, `run.files`, `host.name`, `host.index`,
//! `host.count`, `host.group`, `item` (in sharded stages), `trigger.*` and `secrets.*`
//! (where [`super::secrets`] allows them), and the
//! `quote` filter (POSIX shell quoting, for values an uploader controls in `shell:`) and
//! the `basename` filter (a path's or URL's last part).
//! This module renders one string against one context; deciding which contexts a
//! playbook must be checked against is [`super::validate`]'s job, and when tasks are
//! rendered is the engine's.

use minijinja::value::{Object, Value};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Everything a template can refer to, borrowed from the plan and the run.
#[derive(Debug, Clone)]
pub struct TemplateContext<'a> {
    pub vars: &'a BTreeMap<String, serde_json::Value>,
    pub run_id: &'a str,
    /// The run's own files area: `s3://BUCKET/runs/ID/files` on AWS, the local store's
    /// path otherwise.
    pub run_files: &'a str,
    pub host: HostVars,
    pub item: Option<&'a serde_json::Value>,
    pub trigger: Trigger<'a>,
    /// `secrets.*`: the values (or, while validating, placeholders).
    pub secrets: &'a BTreeMap<String, String>,
}

/// No secrets (contexts that may not use them).
pub static NO_SECRETS: BTreeMap<String, String> = BTreeMap::new();

/// `host.*` in templates.
#[derive(Debug, Clone, Serialize)]
pub struct HostVars {
    /// e.g. `workers-0`.
    pub name: String,
    /// 0-based index of the host in its group.
    pub index: u32,
    /// Number of hosts in the group.
    pub count: u32,
    pub group: String,
}

/// `trigger.*` in templates: what started the run.
#[derive(Debug, Clone)]
pub enum Trigger<'a> {
    /// Known fields (e.g. `kind`, `bucket`, `key`, `etag`, `size`, `rule`, `time`).
    Known(&'a BTreeMap<String, serde_json::Value>),
    /// At validation time the trigger is unknown: any field renders as a placeholder.
    Any,
}

impl<'a> TemplateContext<'a> {
    /// A context for checking templates before any run exists.
    pub fn for_validation(
        vars: &'a BTreeMap<String, serde_json::Value>,
        group: &str,
        index: u32,
        count: u32,
        item: Option<&'a serde_json::Value>,
    ) -> Self {
        TemplateContext {
            vars,
            run_id: "validate",
            run_files: VALIDATION_RUN_FILES,
            host: HostVars {
                name: format!("{group}-{index}"),
                index,
                count,
                group: group.to_owned(),
            },
            item,
            trigger: Trigger::Any,
            secrets: &NO_SECRETS,
        }
    }

    /// The same context with `secrets.*` set.
    pub fn with_secrets(mut self, secrets: &'a BTreeMap<String, String>) -> Self {
        self.secrets = secrets;
        self
    }

    fn to_value(&self) -> Value {
        let mut m: BTreeMap<&str, Value> = BTreeMap::new();
        m.insert("vars", Value::from_serialize(self.vars));
        m.insert(
            "run",
            Value::from_serialize(BTreeMap::from([
                ("id", self.run_id),
                ("files", self.run_files),
            ])),
        );
        m.insert("host", Value::from_serialize(&self.host));
        m.insert("secrets", Value::from_serialize(self.secrets));
        if let Some(item) = self.item {
            m.insert("item", Value::from_serialize(item));
        }
        m.insert(
            "trigger",
            match &self.trigger {
                Trigger::Known(t) => Value::from_serialize(*t),
                Trigger::Any => Value::from_object(AnyTrigger),
            },
        );
        Value::from(m)
    }
}

/// What `run.files` renders as while validating (no run exists yet).
pub const VALIDATION_RUN_FILES: &str = "s3://validate/runs/validate/files";

/// A trigger whose every field exists (validation does not know the real one).
#[derive(Debug)]
struct AnyTrigger;

impl Object for AnyTrigger {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().map(|k| Value::from(format!("<trigger.{k}>")))
    }
}

/// A template that failed to compile or render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// e.g. "undefined value", "syntax error: unexpected end of input".
    pub what: String,
    /// The part of the template at fault, when known.
    pub fragment: Option<String>,
    /// 1-based line within the template, when it spans several lines.
    pub line: Option<usize>,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template error: {}", self.what)?;
        if let Some(frag) = &self.fragment {
            write!(f, " in `{frag}`")?;
        }
        if let Some(line) = self.line.filter(|l| *l > 1) {
            write!(f, " (line {line} of the template)")?;
        }
        f.write_str("; templates can use vars, run.id, run.files, host.name, host.index, host.count, host.group, item (sharded stages), trigger and secrets")
    }
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.add_filter("quote", quote);
        env.add_filter("basename", basename);
        env
    })
}

/// The `quote` filter: a value quoted for a POSIX shell (shlex), so that a name an
/// uploader chose stays one word in `shell:` text.
fn quote(value: Value) -> Result<String, minijinja::Error> {
    let text = match value.as_str() {
        Some(s) => s.to_owned(),
        None => value.to_string(),
    };
    shlex::try_quote(&text)
        .map(|q| q.into_owned())
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
}

/// The `basename` filter: the last part of a path or URL (`s3://b/in/a.csv` -> `a.csv`),
/// for naming a listed or manifest item's files.
fn basename(value: String) -> String {
    let trimmed = value.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_owned()
}

/// The variables a template refers to, dotted (`run.files`, `item.name`, `host`), or
/// `None` when it does not compile.
pub fn references(text: &str) -> Option<std::collections::BTreeSet<String>> {
    if !text.contains("{{") && !text.contains("{%") {
        return Some(Default::default());
    }
    let t = env().template_from_str(text).ok()?;
    Some(t.undeclared_variables(true).into_iter().collect())
}

/// Renders `text` against `ctx`. Text without `{{` or `{%` is returned as is.
pub fn render(text: &str, ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
    if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
        return Ok(text.to_owned());
    }
    env().render_str(text, ctx.to_value()).map_err(|e| {
        let what = match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        };
        TemplateError {
            what,
            fragment: e
                .range()
                .and_then(|r| text.get(r))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            line: e.line(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(item: Option<serde_json::Value>) -> TemplateContext<'static> {
        let vars = Box::leak(Box::new(BTreeMap::from([(
            "model".to_owned(),
            serde_json::json!("resnet"),
        )])));
        let trigger = Box::leak(Box::new(BTreeMap::from([(
            "kind".to_owned(),
            serde_json::json!("manual"),
        )])));
        TemplateContext {
            vars,
            run_id: "r1",
            run_files: "/store/runs/r1/files",
            host: HostVars {
                name: "w-1".into(),
                index: 1,
                count: 3,
                group: "w".into(),
            },
            item: item.map(|i| &*Box::leak(Box::new(i))),
            trigger: Trigger::Known(trigger),
            secrets: &NO_SECRETS,
        }
    }

    #[test]
    fn renders_every_namespace() {
        let out = render(
            "{{ vars.model }} {{ run.id }} {{ host.name }} {{ host.index }}/{{ host.count }} {{ item.n }} {{ trigger.kind }}",
            &ctx(Some(serde_json::json!({"n": 7}))),
        );
        assert_eq!(out.as_deref(), Ok("resnet r1 w-1 1/3 7 manual"));
    }

    #[test]
    fn undefined_is_an_error_that_names_the_fragment() {
        let e = render("echo {{ vars.nope }}", &ctx(None)).unwrap_err();
        assert_eq!(e.what, "undefined value");
        assert_eq!(e.fragment.as_deref(), Some("vars.nope"));
        let e = render("echo {{ item }}", &ctx(None)).unwrap_err();
        assert_eq!(e.what, "undefined value");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let e = render("echo {{ host.name ", &ctx(None)).unwrap_err();
        assert!(e.what.starts_with("syntax error"), "{e}");
    }

    #[test]
    fn quote_makes_one_shell_word() {
        // What a real shell makes of the quoted value: exactly the one original word.
        for hostile in ["it's a $file; rm -rf /", "a\"b`c`\\d\n$(e)", "-rf *", ""] {
            let item = serde_json::json!(hostile);
            let out = render("printf '%s|' {{ item | quote }}", &ctx(Some(item))).expect("renders");
            let got = std::process::Command::new("/bin/sh")
                .args(["-c", &out])
                .output()
                .expect("sh runs");
            assert_eq!(
                String::from_utf8_lossy(&got.stdout),
                format!("{hostile}|"),
                "{out}"
            );
        }
        assert_eq!(
            render("{{ vars.model | quote }}", &ctx(None)).as_deref(),
            Ok("resnet")
        );
    }

    #[test]
    fn basename_is_the_last_part() {
        for (url, base) in [
            ("s3://b/in/a.csv", "a.csv"),
            ("files/x/", "x"),
            ("plain", "plain"),
        ] {
            let item = serde_json::json!(url);
            assert_eq!(
                render("{{ item | basename }}", &ctx(Some(item))).as_deref(),
                Ok(base)
            );
        }
    }

    #[test]
    fn references_are_dotted_paths() {
        let refs =
            references("cp {{ run.files }}/x {{ item.name }} {{ host.name }}").expect("compiles");
        assert!(
            refs.contains("run.files") && refs.contains("item.name") && refs.contains("host.name"),
            "{refs:?}"
        );
        assert_eq!(references("plain").map(|r| r.len()), Some(0));
    }

    #[test]
    fn plain_text_is_untouched() {
        assert_eq!(
            render("echo $HOME }", &ctx(None)).as_deref(),
            Ok("echo $HOME }")
        );
    }
}
