//! The markdown after the machine's facts: the data and method in a few lines, one table
//! (median, min and max seconds, MiB/s, peak RSS, squall / peer ratios), the ratios
//! spelled out, and every run's raw figures.
//!
//! It measures nothing: the samples come from `run.rs`.

use crate::MIB;
use crate::contender::{Contender, FLOORS, PAIRS};
use crate::pattern::SEED;
use crate::run::{BUCKET, HOST_SRC, SRC_KEY, Sample};
use squall_bench::stats::{max, median, min};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Everything the report says.
#[derive(Debug)]
pub struct Report {
    pub samples: BTreeMap<Contender, Vec<Sample>>,
    pub size: u64,
    pub runs: usize,
    pub sha256: String,
    /// moto's VmHWM (KiB) at the end.
    pub moto_hwm_kib: Option<u64>,
    pub total: Duration,
}

/// Which figure of a sample a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interval {
    /// [`Sample::transfer`].
    Transfer,
    /// [`Sample::run_wall`].
    RunWall,
}

impl Report {
    fn secs(&self, c: Contender, i: Interval) -> Vec<f64> {
        self.samples
            .get(&c)
            .map(|v| {
                v.iter()
                    .filter_map(|s| match i {
                        Interval::Transfer => Some(s.transfer),
                        Interval::RunWall => s.run_wall,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn peaks(&self, c: Contender) -> Vec<f64> {
        self.samples
            .get(&c)
            .map(|v| v.iter().map(|s| s.peak_kib as f64).collect())
            .unwrap_or_default()
    }

    fn ssh_peaks(&self, c: Contender) -> Vec<f64> {
        self.samples
            .get(&c)
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.ssh_kib.map(|k| k as f64))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn mibs(&self, secs: f64) -> f64 {
        self.size as f64 / MIB / secs
    }

    /// squall's MiB/s over its peer's (the peer timed by its pipeline's wall time).
    fn speed_ratio(&self, c: Contender, i: Interval) -> Option<f64> {
        let peer = c.peer()?;
        Some(median(&self.secs(peer, Interval::Transfer)) / median(&self.secs(c, i)))
    }

    /// squall's peak RSS over `aws`'s in the peer.
    fn rss_ratio(&self, c: Contender) -> Option<f64> {
        let peer = c.peer()?;
        Some(median(&self.peaks(c)) / median(&self.peaks(peer)))
    }

    fn row(&self, md: &mut String, c: Contender, i: Interval) {
        let secs = self.secs(c, i);
        let (med, lo, hi) = (median(&secs), min(&secs), max(&secs));
        let interval = match (c.is_squall(), i) {
            (true, Interval::Transfer) => {
                "the task: `started_at_ms` to `ended_at_ms` of `tasks[0]` in run.json"
            }
            (true, Interval::RunWall) => "the whole `squall run`: spawn to exit",
            (false, _) => "the pipeline: first spawn to last exit",
        };
        let label = match i {
            Interval::Transfer => c.label().to_owned(),
            Interval::RunWall => format!("{} (whole run)", c.label()),
        };
        let peaks = self.peaks(c);
        let mut rss = format!(
            "{:.0} ({:.0}-{:.0}) {}",
            median(&peaks),
            min(&peaks),
            max(&peaks),
            c.measured()
        );
        let ssh = self.ssh_peaks(c);
        if !ssh.is_empty() {
            let _ = write!(rss, "; ssh {:.0}", median(&ssh));
        }
        let ratio = match (self.speed_ratio(c, i), self.rss_ratio(c)) {
            (Some(s), Some(r)) => format!("speed {s:.2}x, RSS {r:.2}x"),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| {label} | {interval} | {med:.2} | {lo:.2} | {hi:.2} | {:.1} ({:.1}-{:.1}) | {rss} | {ratio} |",
            self.mibs(med),
            self.mibs(hi),
            self.mibs(lo),
        );
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let size_mib = self.size as f64 / MIB;
        let _ = writeln!(
            md,
            "- moto peak RSS over the benchmark: {}\n",
            self.moto_hwm_kib.map_or("?".to_owned(), |k| format!(
                "{:.0} MiB (VmHWM)",
                k as f64 / 1024.0
            ))
        );
        let _ = writeln!(
            md,
            "### Data transfer: {} bytes ({size_mib:.0} MiB), one sshd host on loopback, moto on 127.0.0.1\n\n\
             Data: splitmix64 of a counter (seed {SEED:#x}), sha256 {}, streamed into \
             s3://{BUCKET}/{SRC_KEY} and onto the host as ~/{HOST_SRC}. Every copy checked \
             byte for byte (`ssh HOST sha256sum`, or the object streamed back and hashed). \
             {} timed round(s) after one untimed warm-up of each contender; per round the \
             floors, then each squall/peer pair (order alternating by round). Total \
             benchmark time {:.0}s.\n",
            self.size,
            self.sha256,
            self.runs,
            self.total.as_secs_f64()
        );
        md.push_str(
            "| contender | timed interval | median s | min s | max s | MiB/s at median (range) \
             | peak RSS KiB, median (min-max) | squall / peer (MiB/s; peak RSS vs aws) |\n\
             | --- | --- | ---: | ---: | ---: | ---: | --- | --- |\n",
        );
        for c in FLOORS {
            self.row(&mut md, c, Interval::Transfer);
        }
        for [sq, peer] in PAIRS {
            self.row(&mut md, sq, Interval::Transfer);
            self.row(&mut md, sq, Interval::RunWall);
            self.row(&mut md, peer, Interval::Transfer);
        }
        md.push('\n');
        for [sq, _] in PAIRS {
            let (Some(task), Some(wall), Some(rss)) = (
                self.speed_ratio(sq, Interval::Transfer),
                self.speed_ratio(sq, Interval::RunWall),
                self.rss_ratio(sq),
            ) else {
                continue;
            };
            let _ = writeln!(
                md,
                "- {}: squall / peer throughput **{task:.2}x** (task interval), {wall:.2}x \
                 (whole run); peak RSS squall / aws **{rss:.2}x**",
                sq.short()
            );
        }
        md.push_str("\nRaw seconds (round order; squall: task / whole run):\n\n");
        for c in FLOORS.into_iter().chain(PAIRS.into_iter().flatten()) {
            let v: Vec<String> = self
                .samples
                .get(&c)
                .into_iter()
                .flatten()
                .map(|s| match s.run_wall {
                    Some(w) => format!("{:.2}/{w:.2}", s.transfer),
                    None => format!("{:.2}", s.transfer),
                })
                .collect();
            let _ = writeln!(md, "- {}: {}", c.short(), v.join(", "));
        }
        md
    }
}
