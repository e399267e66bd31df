//! The markdown of one workload: median, min and max per contender, the ratios to
//! squall's and to the floors, the raw samples in round order, and where squall's time
//! went (its phase marks in `run.json`).
//!
//! It measures nothing: the samples come from `run.rs`.

use crate::contender::{CONTENDERS, Contender};
use squall_bench::stats::{max, median, min};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Timings of one squall run, from its `run.json`: (phase, ms), in order.
pub type Phases = Vec<(String, f64)>;

/// Where a squall run's wall time went, from `run.json`'s phase marks: process start to
/// the run's start, each phase to the next mark (the last to the run's end), and the
/// run's end to process exit.
pub fn phase_times(rec: &serde_json::Value, spawned_ms: u64, exited_ms: u64) -> Phases {
    let ms = |v: &serde_json::Value| v.as_u64();
    let mut marks: Vec<(String, u64)> = rec["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["phase"].as_str()?.to_string(), ms(&p["at_ms"])?)))
        .collect();
    let (Some(start), Some(end)) = (ms(&rec["started_at_ms"]), ms(&rec["ended_at_ms"])) else {
        return Vec::new();
    };
    let diff = |a: u64, b: u64| b.saturating_sub(a) as f64;
    let mut out = vec![(
        "(process start to run start)".to_string(),
        diff(spawned_ms, start),
    )];
    marks.push(("(end)".to_string(), end));
    if let Some((_, first)) = marks.first()
        && *first > start
    {
        out.push((
            "(run start to first phase)".to_string(),
            diff(start, *first),
        ));
    }
    for w in marks.windows(2) {
        out.push((w[0].0.clone(), diff(w[0].1, w[1].1)));
    }
    out.push((
        "(run end to process exit)".to_string(),
        diff(end, exited_ms),
    ));
    out
}

/// One workload's samples, indexed like [`CONTENDERS`].
pub struct Report {
    pub title: &'static str,
    pub samples: Vec<Vec<f64>>,
    pub phases: Vec<Phases>,
}

impl Report {
    fn med(&self, c: Contender) -> f64 {
        let i = CONTENDERS.iter().position(|x| *x == c).unwrap_or_default();
        median(&self.samples[i])
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let squall = self.med(Contender::Squall);
        let _ = writeln!(md, "### {}\n", self.title);
        let _ = writeln!(
            md,
            "| contender | median s | min s | max s | median / squall's |\n| --- | ---: | ---: | ---: | ---: |"
        );
        for (c, s) in CONTENDERS.iter().zip(&self.samples) {
            let m = median(s);
            let _ = writeln!(
                md,
                "| {} | {m:.3} | {:.3} | {:.3} | {:.2}x |",
                c.label(),
                min(s),
                max(s),
                m / squall
            );
        }
        let _ = writeln!(
            md,
            "\nsquall / floor (pre-connected): **{:.2}x**; squall / floor incl. connect: **{:.2}x**\n",
            squall / self.med(Contender::Floor),
            squall / self.med(Contender::FloorConnect)
        );
        let _ = writeln!(md, "Raw samples (s, in round order):\n");
        for (c, s) in CONTENDERS.iter().zip(&self.samples) {
            let list: Vec<String> = s.iter().map(|x| format!("{x:.3}")).collect();
            let _ = writeln!(md, "- {}: {}", c.short(), list.join(" "));
        }
        if !self.phases.is_empty() {
            // Median per phase, in the order of the first run's phases.
            let mut by: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for run in &self.phases {
                for (name, ms) in run {
                    by.entry(name).or_default().push(*ms);
                }
            }
            let _ = writeln!(
                md,
                "\nWhere squall's time goes (medians over the timed runs, from run.json's phase marks; ms):\n\n| phase | median ms |\n| --- | ---: |"
            );
            for (name, _) in &self.phases[0] {
                let _ = writeln!(md, "| {name} | {:.0} |", median(&by[name.as_str()]));
            }
        }
        md.push('\n');
        md
    }
}
