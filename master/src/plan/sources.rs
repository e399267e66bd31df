//! The data a plan reads that is known before it runs: every `copy` source and shard
//! listing URL, rendered when it depends on `vars` (and on `trigger` once the trigger
//! is known) only. What depends on the host, the item or the run is known when the
//! task starts and is checked then.
//!
//! No IO: whether each source exists is checked by `runner::preflight` (locally) and by
//! the launcher (in the bucket), before anything launches; which playbook-folder files
//! go to the bucket and the master is derived from the same list.

use super::lower::{Plan, Pos, ShardPlan, TaskAction};
use super::template::{self, HostVars, TemplateContext, Trigger};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a source is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A `copy` task's `src`.
    Copy { optional: bool },
    /// `shards: { objects: URL }`.
    Objects,
    /// `shards: { lines: URL }`.
    Lines,
}

impl Use {
    /// How messages name a source used so.
    pub fn noun(&self) -> &'static str {
        match self {
            Use::Copy { .. } => "`copy` source",
            Use::Objects => "`objects` listing",
            Use::Lines => "`lines` manifest",
        }
    }
}

/// What is known of a source before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Its whole value (rendered).
    Whole(String),
    /// Only the literal text before its first template (`files/{{ item }}.txt` ->
    /// `files/`), when that names something (not empty, not a bare `s3://`).
    Prefix(String),
    /// Nothing until it renders (it starts with a template of the host, item or run).
    Nothing,
}

/// One source of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// As written.
    pub written: String,
    pub known: Known,
    pub used: Use,
    /// Its stage.
    pub stage: String,
    /// Where it is written.
    pub at: Pos,
    /// The run itself writes it before it is read: it is under `{{ run.files }}`, or
    /// under an earlier stage's `fetch` destination. Not checked before the run.
    pub produced: bool,
}

fn refs(text: &str) -> Option<Vec<String>> {
    template::references(text).map(|s| s.into_iter().collect())
}

/// Every source of `plan`; `trigger` is the run's trigger when known (its fields then
/// render).
pub fn sources(plan: &Plan, trigger: Option<&BTreeMap<String, Value>>) -> Vec<Source> {
    let ctx = TemplateContext {
        vars: &plan.vars,
        run_id: "",
        run_files: "",
        host: HostVars {
            name: String::new(),
            index: 0,
            count: 0,
            group: String::new(),
        },
        item: None,
        trigger: trigger.map_or(Trigger::Any, Trigger::Known),
        secrets: &template::NO_SECRETS,
    };
    let know = |text: &str| -> Known {
        let renderable = refs(text).is_some_and(|r| {
            r.iter().all(|v| {
                let root = v.split('.').next().unwrap_or(v);
                root == "vars" || (root == "trigger" && trigger.is_some())
            })
        });
        if renderable && let Ok(t) = template::render(text, &ctx) {
            return Known::Whole(t.trim().to_owned());
        }
        let lead = text
            .find("{{")
            .or_else(|| text.find("{%"))
            .unwrap_or(text.len());
        let prefix = text[..lead].trim_start();
        if prefix.is_empty() || (prefix.starts_with("s3://") && !prefix[5..].contains('/')) {
            Known::Nothing
        } else {
            Known::Prefix(prefix.to_owned())
        }
    };
    let mut out = Vec::new();
    // The `s3://` destinations of the fetches of the stages seen so far.
    let mut written: Vec<String> = Vec::new();
    let produced = |text: &str, known: &Known, written: &[String]| {
        let run_files = refs(text).is_some_and(|r| r.iter().any(|v| v == "run.files"));
        let under = match known {
            Known::Whole(t) | Known::Prefix(t) => written.iter().any(|w| t.starts_with(w.as_str())),
            Known::Nothing => false,
        };
        run_files || under
    };
    for st in &plan.stages {
        match &st.shards {
            Some(ShardPlan::Objects { url, at }) | Some(ShardPlan::Lines { url, at }) => {
                let known = know(url);
                out.push(Source {
                    produced: produced(url, &known, &written),
                    written: url.clone(),
                    known,
                    used: if matches!(st.shards, Some(ShardPlan::Lines { .. })) {
                        Use::Lines
                    } else {
                        Use::Objects
                    },
                    stage: st.name.clone(),
                    at: *at,
                });
            }
            _ => {}
        }
        for t in &st.tasks {
            if let TaskAction::Copy(c) = &t.action {
                let known = know(&c.src);
                out.push(Source {
                    produced: produced(&c.src, &known, &written),
                    written: c.src.clone(),
                    known,
                    used: Use::Copy {
                        optional: c.optional,
                    },
                    stage: st.name.clone(),
                    at: c.at,
                });
            }
        }
        // This stage's fetches write for the stages after it.
        for t in &st.tasks {
            if let TaskAction::Fetch(f) = &t.action
                && let Known::Whole(dest) | Known::Prefix(dest) = know(&f.dest)
                && dest.starts_with("s3://")
            {
                written.push(dest);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Plan {
        crate::plan::parse(
            std::path::Path::new("t.yml"),
            yaml,
            std::path::Path::new("."),
            &BTreeMap::new(),
        )
        .expect("valid")
    }

    #[test]
    fn sources_render_what_vars_decide_and_keep_a_literal_prefix_of_the_rest() {
        let p = plan(
            r#"name: t
vars: { input: files/in/, model: m.bin }
fleet: { w: { count: 1 } }
stages:
  - name: setup
    hosts: w
    tasks:
      - copy: { src: "models/{{ vars.model }}", dest: m }
      - copy: { src: "{{ run.files }}/x/", dest: x/, optional: true }
  - name: each
    hosts: w
    shards: { objects: "{{ vars.input }}" }
    tasks:
      - copy: { src: "files/{{ item.name }}", dest: in }
      - copy: { src: "{{ item.url }}", dest: in2 }
"#,
        );
        let got: Vec<(Known, Use)> = sources(&p, None)
            .into_iter()
            .map(|s| (s.known, s.used))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Known::Whole("models/m.bin".into()),
                    Use::Copy { optional: false }
                ),
                (Known::Nothing, Use::Copy { optional: true }),
                (Known::Whole("files/in/".into()), Use::Objects),
                (
                    Known::Prefix("files/".into()),
                    Use::Copy { optional: false }
                ),
                (Known::Nothing, Use::Copy { optional: false }),
            ]
        );
        let all = sources(&p, None);
        assert!(all[1].produced, "under run.files");
        assert!(!all[0].produced);
        assert_eq!((all[2].at.line, all[2].at.column), (12, 24));
    }

    #[test]
    fn the_trigger_renders_once_known() {
        let p = plan(
            "name: t\nfleet: { w: { count: 1 } }\nstages:\n  - name: s\n    hosts: w\n    shards: { lines: \"{{ trigger.url }}\" }\n    tasks:\n      - shell: echo\n",
        );
        assert_eq!(sources(&p, None)[0].known, Known::Nothing);
        let t = BTreeMap::from([("url".to_owned(), serde_json::json!("s3://bucket/in/m.txt"))]);
        assert_eq!(
            sources(&p, Some(&t))[0].known,
            Known::Whole("s3://bucket/in/m.txt".into())
        );
    }
}
