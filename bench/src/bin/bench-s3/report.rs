//! The markdown report: the data, the pack + upload table (medians, min, max,
//! throughput, peak RSS, ratios, whether the targets were met), raw samples with their
//! noise marks, and where the time goes (compression alone, upload alone, CPU per
//! process).
//!
//! It measures nothing: the samples come from `run.rs`, the machine's facts are printed
//! before it by `main.rs`.

use crate::data::Dataset;
use crate::run::{CONTENDERS, Contender, Sample, Single};
use crate::{Args, MIB, RSS_TARGET_MIB};
use squall_bench::loggen::SEED;
use squall_bench::stats::{max, median, min};
use std::fmt::Write as _;
use std::time::Duration;

/// The figures of the whole benchmark, per contender (indexed by [`Contender::index`]).
#[derive(Debug)]
pub struct Report {
    /// Compression-only (`> /dev/null`), per contender.
    pub compress: [Single; 2],
    /// Upload-only (`cat ARCHIVE |`), per contender.
    pub upload: [Single; 2],
    /// Timed runs per contender, in round order.
    pub samples: [Vec<Sample>; 2],
    /// The order the timed runs ran in.
    pub order: Vec<Contender>,
    /// moto's peak RSS (VmHWM, KiB), and its RSS after the last run.
    pub moto_rss: Option<(u64, u64)>,
}

/// Other processes using more CPU than this during a run make it suspect.
const NOISE_CPU_SECS: f64 = 1.0;

/// A warning mark for a run during which other processes used CPU.
pub fn noisy(other_cpu: f64) -> &'static str {
    if other_cpu > NOISE_CPU_SECS {
        "  NOISY: something else ran on the machine"
    } else {
        ""
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    /// The report after the machine's facts: data, tables, raw samples, breakdown.
    pub fn markdown(&self, args: &Args, data: &Dataset, total: Duration) -> String {
        let mut md = String::new();
        let raw_mib = data.raw_bytes as f64 / MIB;
        let _ = writeln!(
            md,
            "- moto peak RSS: {}\n",
            self.moto_rss.map_or("?".to_owned(), |(hwm, now)| format!(
                "{:.0} MiB (VmHWM; {:.0} MiB at the end)",
                mib(hwm),
                mib(now)
            ))
        );
        let _ = writeln!(
            md,
            "### Data\n\n{} task folders x 2 files (`stdout.log` 7/8, `stderr.log` 1/8), {} bytes \
             ({raw_mib:.1} MiB) of log lines, seed {SEED:#x}. Archives: squall {} bytes \
             ({:.2}x), tar {} bytes ({:.2}x).\n",
            data.files.len() / 2,
            data.raw_bytes,
            self.compress[0].bytes,
            data.raw_bytes as f64 / self.compress[0].bytes as f64,
            self.compress[1].bytes,
            data.raw_bytes as f64 / self.compress[1].bytes as f64,
        );
        let _ = writeln!(
            md,
            "### Pack + upload ({raw_mib:.0} MiB of logs, {} timed run(s) each, interleaved)\n",
            args.runs
        );
        let _ = writeln!(
            md,
            "| contender | median wall s | min s | max s | MiB/s of input | peak RSS producer MiB | \
             peak RSS uploader MiB | peak RSS total MiB | compressed MiB (ratio) |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let mut throughput = [0.0; 2];
        for c in CONTENDERS {
            let s = &self.samples[c.index()];
            let walls: Vec<f64> = s.iter().map(|x| x.wall).collect();
            let m = median(&walls);
            throughput[c.index()] = raw_mib / m;
            let p = s.iter().map(|x| x.rss_kib[0]).max().unwrap_or(0);
            let u = s.iter().map(|x| x.rss_kib[1]).max().unwrap_or(0);
            let t = s
                .iter()
                .map(|x| x.rss_kib[0] + x.rss_kib[1])
                .max()
                .unwrap_or(0);
            let bytes = self.compress[c.index()].bytes;
            let _ = writeln!(
                md,
                "| {} | {m:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} ({:.2}x) |",
                c.label(),
                min(&walls),
                max(&walls),
                raw_mib / m,
                mib(p),
                mib(u),
                mib(t),
                bytes as f64 / MIB,
                data.raw_bytes as f64 / bytes as f64
            );
        }
        let ratio = throughput[0] / throughput[1];
        let squall_total = self.samples[0]
            .iter()
            .map(|x| x.rss_kib[0] + x.rss_kib[1])
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            md,
            "\nsquall throughput / tar|aws throughput: **{ratio:.2}x**. Target (squall at least as \
             fast, peak RSS < {RSS_TARGET_MIB:.0} MiB): speed {}, memory {} ({:.1} MiB).\n",
            if ratio >= 1.0 { "MET" } else { "MISSED" },
            if mib(squall_total) < RSS_TARGET_MIB {
                "MET"
            } else {
                "MISSED"
            },
            mib(squall_total)
        );
        let _ = writeln!(
            md,
            "Peak RSS: each process's `ru_maxrss` from `/usr/bin/time -f %M`, the largest over \
             the timed runs; total = the largest per-run sum. tar's figure is the larger of \
             tar and the `gzip` it runs (`wait4` folds a waited-for child into its parent's \
             peak), so tar|aws's total leaves out the smaller of the two.\n"
        );
        let _ = writeln!(
            md,
            "Raw wall times in run order, each with the CPU seconds that other processes \
             used meanwhile (/proc/stat's busy time minus the pipeline's, moto's and this \
             process's; over {NOISE_CPU_SECS:.0} s marks the run NOISY):\n"
        );
        for c in CONTENDERS {
            let list: Vec<String> = self.samples[c.index()]
                .iter()
                .map(|x| {
                    format!(
                        "{:.2} s (other {:.2}{})",
                        x.wall,
                        x.other_cpu,
                        if x.other_cpu > NOISE_CPU_SECS {
                            ", NOISY"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            let _ = writeln!(md, "- {}: {}", c.short(), list.join(", "));
        }
        let order: Vec<&str> = self.order.iter().map(|c| c.short()).collect();
        let _ = writeln!(md, "- order: {}\n", order.join(", "));

        let _ = writeln!(
            md,
            "### Where the time goes\n\n\
             One run each of the producer alone and the uploader alone; CPU is user + system \
             seconds (`/usr/bin/time` `%U + %S`; tar's includes its gzip child), moto's from \
             /proc/PID/stat over the run.\n\n\
             | step | squall s | squall MiB/s | squall CPU s | squall peak RSS MiB | tar\\|aws s | tar\\|aws MiB/s | tar\\|aws CPU s | tar\\|aws peak RSS MiB |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let [cs, ct] = &self.compress;
        let _ = writeln!(
            md,
            "| compress only (`squall-worker pack` / `tar czf -` into a pipe, counted and dropped); MiB/s of input | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} |",
            cs.wall,
            raw_mib / cs.wall,
            cs.cpu,
            mib(cs.rss_kib),
            ct.wall,
            raw_mib / ct.wall,
            ct.cpu,
            mib(ct.rss_kib),
        );
        let [us, ut] = &self.upload;
        let _ = writeln!(
            md,
            "| upload only (`cat ARCHIVE \\|` uploader, its own archive); MiB/s of compressed bytes | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} |",
            us.wall,
            us.bytes as f64 / MIB / us.wall,
            us.cpu,
            mib(us.rss_kib),
            ut.wall,
            ut.bytes as f64 / MIB / ut.wall,
            ut.cpu,
            mib(ut.rss_kib),
        );
        let _ = writeln!(
            md,
            "| moto during upload only | | | {:.2} | | | | {:.2} | |",
            us.moto_cpu, ut.moto_cpu
        );
        let med = |c: Contender, f: &dyn Fn(&Sample) -> f64| -> f64 {
            median(&self.samples[c.index()].iter().map(f).collect::<Vec<_>>())
        };
        let (a, b) = (Contender::Squall, Contender::TarAws);
        let _ = writeln!(
            md,
            "| whole pipeline (medians): wall | {:.2} | {:.1} | | | {:.2} | {:.1} | | |",
            raw_mib / throughput[0],
            throughput[0],
            raw_mib / throughput[1],
            throughput[1],
        );
        let _ = writeln!(
            md,
            "| whole pipeline: producer exits after (s) / its input rate (MiB/s) | {:.2} | {:.1} | | | {:.2} | {:.1} | | |",
            med(a, &|x| x.producer_exit),
            raw_mib / med(a, &|x| x.producer_exit),
            med(b, &|x| x.producer_exit),
            raw_mib / med(b, &|x| x.producer_exit),
        );
        let _ = writeln!(
            md,
            "| whole pipeline: uploader finishes after the producer exits (s) | {:.2} | | | | {:.2} | | | |",
            med(a, &|x| x.wall - x.producer_exit),
            med(b, &|x| x.wall - x.producer_exit),
        );
        let _ = writeln!(
            md,
            "| whole pipeline: producer (`squall-worker pack` / `tar czf -`) | | | {:.2} | | | | {:.2} | |",
            med(a, &|x| x.cpu[0]),
            med(b, &|x| x.cpu[0]),
        );
        let _ = writeln!(
            md,
            "| whole pipeline: uploader (upload child / `aws`) | | | {:.2} | | | | {:.2} | |",
            med(a, &|x| x.cpu[1]),
            med(b, &|x| x.cpu[1]),
        );
        let _ = writeln!(
            md,
            "| whole pipeline: moto | | | {:.2} | | | | {:.2} | |",
            med(a, &|x| x.cpu[2]),
            med(b, &|x| x.cpu[2]),
        );
        let ready: Vec<f64> = self.samples[0]
            .iter()
            .filter_map(|s| s.child.map(|c| c.0))
            .collect();
        let done: Vec<f64> = self.samples[0]
            .iter()
            .filter_map(|s| s.child.map(|c| c.1))
            .collect();
        let _ = writeln!(
            md,
            "\nsquall's upload child (medians): SDK configured {:.0} ms after it started; upload \
             complete {:.2} s after it started.\n",
            median(&ready) * 1e3,
            median(&done)
        );
        let _ = writeln!(md, "Total benchmark time {:.0}s.\n", total.as_secs_f64());
        md
    }
}
