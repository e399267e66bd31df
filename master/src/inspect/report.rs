//! `report.html` (one self-contained file: inline CSS, SVG and a little JS, no network
//! fetches, so it opens from S3 or from disk) and the run's CloudWatch metrics in
//! embedded metric format.
//!
//! The report holds the run summary, a per-host timeline (a Gantt chart: one row per
//! host, one bar per task attempt, coloured by outcome, with a tooltip), the failures
//! with their stderr tails, and links to each archive (relative to the run's prefix).
//! [`publish`] renders it from the store's archives and stores it: the one way a report
//! is written, at the end of a run and by `squall report`.

use super::logs::stderr_tails;
use crate::record::{RunRecord, TaskOutcome, keys};
use crate::seam::{Store, StoreError};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The summary row of the run's masters, when more than one ran it: each generation,
/// when and why it took over, and what it adopted, re-attached and re-ran.
fn masters_row(rec: &RunRecord) -> String {
    if rec.masters.len() < 2 {
        return String::new();
    }
    let lines: Vec<String> = rec
        .masters
        .iter()
        .map(|m| {
            let mut line = format!(
                "generation {} at {} UTC ({}){}",
                m.generation,
                super::utc(m.claimed_at_ms),
                m.reason,
                m.instance_id
                    .as_ref()
                    .map_or(String::new(), |i| format!(", instance {i}")),
            );
            if !m.fenced.is_empty() {
                line.push_str(&format!("; fenced {}", m.fenced.join(", ")));
            }
            if let Some(t) = &m.takeover {
                let list = |v: &[String]| {
                    if v.is_empty() {
                        "none".to_owned()
                    } else {
                        v.join(", ")
                    }
                };
                line.push_str(&format!(
                    "; resumed from {} journal entries with {} unit(s) complete; adopted {}; unreachable {}; re-attached {}; re-ran {}",
                    t.entries,
                    t.completed,
                    list(&t.adopted),
                    list(&t.unreachable),
                    list(&t.reattached),
                    list(&t.rerun)
                ));
            }
            esc(&line)
        })
        .collect();
    format!(
        "<tr><td>masters</td><td id=\"masters\">{}</td></tr>\n",
        lines.join("<br>")
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn outcome_class(o: TaskOutcome) -> &'static str {
    match o {
        TaskOutcome::Succeeded => "ok",
        TaskOutcome::Failed => "failed",
        TaskOutcome::TimedOut => "timeout",
        TaskOutcome::Cancelled => "cancelled",
        TaskOutcome::HostLost => "lost",
        TaskOutcome::Interrupted => "interrupted",
    }
}

/// Renders the report of `rec` (with the stderr tails of its failures, read from the
/// archives already stored, with `masks`' values masked: a task may print a secret
/// another task was given) and stores it; returns its key.
pub async fn publish(
    store: &dyn Store,
    rec: &RunRecord,
    masks: &squall_worker::mask::Masks,
) -> Result<String, StoreError> {
    let mut tails = stderr_tails(store, rec, 20).await;
    for tail in tails.values_mut() {
        if let std::borrow::Cow::Owned(m) = masks.mask(tail) {
            *tail = m;
        }
    }
    let key = keys::report(&rec.run_id);
    store.put(&key, render(rec, &tails).into_bytes()).await?;
    Ok(key)
}

/// The report for `rec`; `tails` maps failed task ids to the end of their stderr.
pub fn render(rec: &RunRecord, tails: &BTreeMap<String, String>) -> String {
    let start = rec.started_at_ms;
    let end = rec
        .ended_at_ms
        .unwrap_or_else(|| {
            rec.tasks
                .iter()
                .map(|t| t.ended_at_ms)
                .max()
                .unwrap_or(start)
        })
        .max(start + 1);
    let span = (end - start) as f64;
    let (label_w, chart_w, row_h) = (150.0, 900.0, 26.0);
    let x = |t: u64| label_w + (t.saturating_sub(start) as f64 / span) * chart_w;
    let height = 40.0 + row_h * rec.hosts.len().max(1) as f64;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" role="img" aria-label="task timeline per host">"#,
        w = label_w + chart_w + 10.0
    );
    // Time axis: five ticks.
    for i in 0..=4 {
        let t = start + (end - start) * i / 4;
        let tx = x(t);
        let _ = write!(
            svg,
            r##"<line x1="{tx:.1}" y1="18" x2="{tx:.1}" y2="{height}" stroke="#ddd"/><text x="{tx:.1}" y="12" class="tick">{}</text>"##,
            crate::inspect::human_ms(t - start)
        );
    }
    for (i, h) in rec.hosts.iter().enumerate() {
        let y = 22.0 + row_h * i as f64;
        let _ = write!(
            svg,
            r#"<g class="host-row" data-host="{name}"><text x="4" y="{ty:.1}" class="host">{name}{lost}</text>"#,
            name = esc(&h.name),
            ty = y + row_h * 0.65,
            lost = if h.lost.is_some() { " (lost)" } else { "" }
        );
        for t in rec.tasks.iter().filter(|t| t.host == h.name) {
            let x0 = x(t.started_at_ms);
            let w = (x(t.ended_at_ms.max(t.started_at_ms)) - x0).max(2.0);
            let _ = write!(
                svg,
                r#"<rect class="bar {cls}" x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{bh:.1}" rx="2" data-task="{id}"><title>{title}</title></rect>"#,
                cls = outcome_class(t.outcome),
                bh = row_h - 6.0,
                id = esc(&t.id),
                title = esc(&format!(
                    "{} / {} on {}: {:?} in {}{}",
                    t.stage,
                    t.task,
                    t.host,
                    t.outcome,
                    crate::inspect::human_ms(t.duration_ms),
                    t.exit_code
                        .map(|c| format!(", exit {c}"))
                        .unwrap_or_default()
                ))
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");

    let mut failures = String::new();
    for t in rec
        .tasks
        .iter()
        .filter(|t| t.outcome != TaskOutcome::Succeeded)
    {
        let _ = write!(
            failures,
            "<div class=\"failure\"><h3>{} / {} on {} ({:?}{})</h3>{}<pre>{}</pre></div>",
            esc(&t.stage),
            esc(&t.task),
            esc(&t.host),
            t.outcome,
            t.exit_code
                .map(|c| format!(", exit {c}"))
                .unwrap_or_default(),
            t.error
                .as_ref()
                .map(|e| format!("<p>{}</p>", esc(e)))
                .unwrap_or_default(),
            esc(tails
                .get(&t.id)
                .filter(|t| !t.is_empty())
                .map_or("(no stderr)", String::as_str))
        );
    }
    if failures.is_empty() {
        failures.push_str("<p>None.</p>");
    }
    let mut archives = String::new();
    let prefix = keys::run_prefix(&rec.run_id);
    for h in &rec.hosts {
        let key = h.archive.as_ref().or(h.snapshot.as_ref().map(|s| &s.key));
        if let Some(k) = key {
            let rel = k.strip_prefix(&prefix).unwrap_or(k);
            let _ = write!(
                archives,
                "<li><a href=\"{r}\">{r}</a> ({}){}</li>",
                esc(&h.name),
                if h.archive.is_none() {
                    " last snapshot"
                } else {
                    ""
                },
                r = esc(rel)
            );
        }
    }
    archives.push_str("<li><a href=\"logs/master.tar.gz\">logs/master.tar.gz</a> (master)</li>");
    let (hours, cost) = crate::inspect::usage(rec, end);
    let saved = rec.instance_hours_saved;
    let replacements = if rec.replacements.is_empty() {
        "none".to_owned()
    } else {
        rec.replacements
            .iter()
            .map(|r| {
                let how = match (&r.instance_id, &r.error) {
                    (_, Some(e)) => format!("not launched: {e}"),
                    (Some(_), None) => String::new(),
                    (None, None) => "launching".to_owned(),
                };
                esc(&format!(
                    "{} for {} ({}) {how}",
                    r.name, r.replaces, r.reason
                ))
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let masters = masters_row(rec);
    let status = rec.status.as_str();
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>squall run {id}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }} h3 {{ font-size: 14px; }}
.status {{ padding: 2px 8px; border-radius: 4px; color: #fff; }}
.status.succeeded {{ background: #2e7d32; }} .status.failed, .status.abandoned {{ background: #c62828; }}
.status.deadline_exceeded, .status.cancelled {{ background: #ef6c00; }}
table.summary td {{ padding: 2px 12px 2px 0; }}
svg text.host {{ font-size: 12px; }} svg text.tick {{ font-size: 10px; fill: #666; }}
rect.bar.ok {{ fill: #43a047; }} rect.bar.failed {{ fill: #e53935; }} rect.bar.timeout {{ fill: #fb8c00; }}
rect.bar.cancelled, rect.bar.lost {{ fill: #9e9e9e; }} rect.bar.dim {{ opacity: 0.15; }}
pre {{ background: #f5f5f5; padding: 8px; overflow-x: auto; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }}
</style></head>
<body>
<h1>squall run {id} <span class="status {status}">{status}</span></h1>
<table class="summary">
<tr><td>playbook</td><td>{playbook} ({file})</td></tr>
<tr><td>started</td><td>{started} UTC</td></tr>
<tr><td>duration</td><td>{duration}</td></tr>
<tr><td>hosts</td><td>{hosts}</td></tr>
<tr><td>tasks</td><td id="task-count">{tasks}</td></tr>
<tr><td>instance-hours</td><td>{hours:.3}{cost}</td></tr>
<tr><td>saved by early release</td><td id="hours-saved">{saved:.3} instance-hours</td></tr>
<tr><td>replacements</td><td id="replacements">{replacements}</td></tr>
{masters}{reason}</table>
<h2>Timeline</h2>
<div class="legend">outcome:<span style="background:#43a047"></span>succeeded<span style="background:#e53935"></span>failed<span style="background:#fb8c00"></span>timed out<span style="background:#9e9e9e"></span>cancelled
 &nbsp; <label><input type="checkbox" id="only-failed"> only not succeeded</label></div>
{svg}
<h2>Failures</h2>
{failures}
<h2>Logs</h2>
<ul>{archives}</ul>
<script>
(function () {{
  var box = document.getElementById("only-failed");
  box.addEventListener("change", function () {{
    var bars = document.querySelectorAll("#timeline rect.bar");
    for (var i = 0; i < bars.length; i++) {{
      bars[i].classList.toggle("dim", box.checked && bars[i].classList.contains("ok"));
    }}
  }});
}})();
</script>
</body></html>
"##,
        id = esc(&rec.run_id),
        playbook = esc(&rec.playbook.name),
        file = esc(&rec.playbook.file),
        started = crate::inspect::utc(rec.started_at_ms),
        duration = crate::inspect::human_ms(end - start),
        hosts = rec.hosts.len(),
        tasks = rec.tasks.len(),
        cost = cost.map_or(String::new(), |c| format!(
            " (estimated ~${c:.2} on-demand)"
        )),
        reason = rec
            .reason
            .as_ref()
            .map(|r| format!("<tr><td>reason</td><td>{}</td></tr>", esc(r)))
            .unwrap_or_default(),
    )
}

/// The run's metrics as one CloudWatch embedded-metric-format line (namespace
/// `squall`, dimension `Playbook`): CloudWatch Logs turns it into metrics when the
/// master's output reaches a log group (e.g. by the CloudWatch agent), no server needed.
pub fn emf(rec: &RunRecord, now_ms: u64) -> String {
    let end = rec.ended_at_ms.unwrap_or(now_ms);
    let retried: usize = rec.tasks.iter().filter(|t| t.attempt > 0).count();
    let (hours, _) = crate::inspect::usage(rec, end);
    serde_json::json!({
        "_aws": {
            "Timestamp": end,
            "CloudWatchMetrics": [{
                "Namespace": "squall",
                "Dimensions": [["Playbook"]],
                "Metrics": [
                    {"Name": "RunDuration", "Unit": "Seconds"},
                    {"Name": "TasksFailed", "Unit": "Count"},
                    {"Name": "ShardsRetried", "Unit": "Count"},
                    {"Name": "InstanceHours", "Unit": "None"},
                    {"Name": "RunSucceeded", "Unit": "Count"}
                ]
            }]
        },
        "Playbook": rec.playbook.name,
        "RunId": rec.run_id,
        "Status": rec.status.as_str(),
        "RunDuration": end.saturating_sub(rec.started_at_ms) as f64 / 1000.0,
        "TasksFailed": rec.tasks.iter().filter(|t| t.outcome == TaskOutcome::Failed || t.outcome == TaskOutcome::TimedOut).count(),
        "ShardsRetried": rec.tasks.iter().filter(|t| t.item.is_some() && t.attempt > 0).count().min(retried),
        "InstanceHours": hours,
        "RunSucceeded": usize::from(rec.status == crate::record::RunStatus::Succeeded),
    })
    .to_string()
}
