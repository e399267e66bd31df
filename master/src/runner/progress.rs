//! Progress for people: a live bar on a terminal (indicatif), plain log lines otherwise.
//!
//! It only presents an [`engine::Progress`](crate::engine::Progress) snapshot; it does
//! not decide anything and does not write records.

use crate::engine::Progress;
use crate::record::Phase;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// Shows the run's progress. See the module docs.
#[derive(Debug)]
pub struct ProgressView {
    bar: Option<ProgressBar>,
    last_line: String,
}

impl ProgressView {
    /// A bar when `live`, plain lines (through `tracing`) otherwise.
    pub fn new(live: bool, playbook: &str, run_id: &str) -> Self {
        let bar = live.then(|| {
            let bar = ProgressBar::new_spinner();
            let style =
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(format!("{playbook} ({run_id})"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        ProgressView {
            bar,
            last_line: String::new(),
        }
    }

    /// Shows a new snapshot (only when something people care about changed).
    pub fn update(&mut self, p: &Progress) {
        let line = describe(p);
        if line == self.last_line {
            return;
        }
        match &self.bar {
            Some(bar) => bar.set_message(line.clone()),
            None => tracing::info!(elapsed_s = p.elapsed_ms / 1000, "{line}"),
        }
        self.last_line = line;
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One line: phase, stage, hosts or shards done, live hosts.
pub fn describe(p: &Progress) -> String {
    match p.phase {
        Phase::Stages => {
            let stage = p.stage.as_deref().unwrap_or("-");
            let what = if p.sharded { "shards" } else { "hosts" };
            format!(
                "stage {}/{} `{stage}`: {what} {}/{} done, {}/{} hosts live",
                p.stage_index + 1,
                p.stages_total,
                p.units_done,
                p.units_total,
                p.hosts_live,
                p.hosts_total
            )
        }
        Phase::Provision => "provisioning workers".to_owned(),
        Phase::Bootstrap => format!("bootstrapping {} hosts", p.hosts_total),
        Phase::Stopping => "stopping: cancelling running tasks".to_owned(),
        Phase::CollectLogs => "collecting logs".to_owned(),
        Phase::Teardown => "tearing down".to_owned(),
        Phase::Record => "writing the run record".to_owned(),
        Phase::Done => "done".to_owned(),
    }
}
