//! bench-s3's deterministic log lines: a seeded PRNG (splitmix64) and a generator per
//! task that writes plausible agent logs (timestamps, levels, step counters, a falling
//! loss, HTTP access lines with trace ids, loader lines with etags, Python tracebacks),
//! the same on every run and machine, so archives of them compress alike everywhere.
//!
//! It produces text only: laying the lines out as an agent root (`tasks/ID/stdout.log`,
//! `stderr.log`) and writing the files is bench-s3's.

use std::fmt::Write as _;

/// The generator's seed: the same data on every run and machine.
pub const SEED: u64 = 0x5351_5541_4c4c_5333;

/// splitmix64: tiny, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n), near enough (`% n`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One of `items`, uniformly.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const RESOURCES: &[&str] = &["items", "users", "shards", "jobs", "metrics", "artifacts"];
const STATUSES: &[&str] = &["200", "200", "200", "200", "201", "204", "404", "500"];
const NET_ERRORS: &[&str] = &[
    "connection reset by peer",
    "operation timed out",
    "503 Service Unavailable",
    "broken pipe",
    "TLS handshake timeout",
];
const WARNINGS: &[&str] = &[
    "gradient norm above clip threshold, clipping",
    "data loader queue is empty, waiting for shards",
    "slow step: host-to-device copy took longer than expected",
    "learning rate scheduler stepped before optimizer",
    "checkpoint directory nearly full",
];
const FRAMES: &[(&str, &str)] = &[
    ("/opt/app/train.py", "main"),
    ("/opt/app/train.py", "train_epoch"),
    ("/opt/app/loader.py", "next_batch"),
    ("/opt/app/loader.py", "fetch_shard"),
    (
        "/usr/lib/python3.11/site-packages/torch/nn/modules/module.py",
        "_call_impl",
    ),
    (
        "/usr/lib/python3.11/site-packages/urllib3/connectionpool.py",
        "urlopen",
    ),
];

/// One task's log lines: a clock, a training step counter, a loss that slowly falls.
#[derive(Debug, Clone)]
pub struct LogGen {
    rng: Rng,
    task: usize,
    t_us: u64,
    step: u64,
    loss: f64,
}

impl LogGen {
    /// Task `task`'s generator: its lines depend only on [`SEED`] and `task`.
    pub fn new(task: usize) -> LogGen {
        let mut rng = Rng::new(SEED ^ (task as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        let t_us = 8 * 3_600_000_000 + rng.below(3_600_000_000);
        LogGen {
            rng,
            task,
            t_us,
            step: 0,
            loss: 4.0,
        }
    }

    /// `2026-11-22T08:12:03.123456Z ` after advancing the clock by 0.1 to 5 ms.
    fn timestamp(&mut self, out: &mut String) {
        self.t_us += 100 + self.rng.below(4_900);
        let s = self.t_us / 1_000_000;
        let _ = write!(
            out,
            "2026-11-{:02}T{:02}:{:02}:{:02}.{:06}Z ",
            22 + s / 86_400,
            (s / 3_600) % 24,
            (s / 60) % 60,
            s % 60,
            self.t_us % 1_000_000
        );
    }

    /// Appends one stdout line to `out` (training steps, loader and HTTP lines,
    /// checkpoints, retries), newline included.
    pub fn stdout_line(&mut self, out: &mut String) {
        self.timestamp(out);
        let r = &mut self.rng;
        match r.below(100) {
            0..50 => {
                self.step += 1;
                self.loss = (self.loss * 0.99995 + (r.unit() - 0.5) * 0.01).max(0.05);
                let _ = writeln!(
                    out,
                    "INFO  [trainer] step={} epoch={} loss={:.4} grad_norm={:.3} lr={:.2e} \
                     tokens_per_s={} gpu_mem_mib={}",
                    self.step,
                    self.step / 20_000,
                    self.loss,
                    0.5 + r.unit() * 2.0,
                    3e-4 * (1.0 - self.step as f64 / 1e7),
                    118_000 + r.below(4_000),
                    20_480 + r.below(512)
                );
            }
            50..70 => {
                let _ = writeln!(
                    out,
                    "DEBUG [loader] fetched shard-{:05}.parquet rows={} bytes={} read_ms={} \
                     etag={:012x}",
                    r.below(4_096),
                    8_192 + r.below(1_024),
                    67_100_000 + r.below(100_000),
                    20 + r.below(200),
                    r.next_u64() & 0xffff_ffff_ffff
                );
            }
            70..85 => {
                let _ = writeln!(
                    out,
                    "INFO  [http] {} /api/v1/{}/{} {} {}ms client=10.0.{}.{} trace={:016x}",
                    r.pick(METHODS),
                    r.pick(RESOURCES),
                    r.below(100_000),
                    r.pick(STATUSES),
                    1 + r.below(250),
                    r.below(4),
                    r.below(256),
                    r.next_u64()
                );
            }
            85..95 => {
                let _ = writeln!(
                    out,
                    "INFO  [ckpt] step {} done, saved /mnt/ckpt/task-{:03}/step-{:08}.pt \
                     (size {} MiB)",
                    self.step,
                    self.task,
                    self.step,
                    1_900 + r.below(16)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "WARN  [net] retrying req_id={:08x} attempt={} after {} ms: {}",
                    r.next_u64() & 0xffff_ffff,
                    1 + r.below(4),
                    250 << r.below(4),
                    r.pick(NET_ERRORS)
                );
            }
        }
    }

    /// Appends one stderr entry to `out` (warnings, errors with a Python traceback,
    /// GC lines), newline included: one or several lines.
    pub fn stderr_line(&mut self, out: &mut String) {
        self.timestamp(out);
        let r = &mut self.rng;
        match r.below(100) {
            0..60 => {
                let _ = writeln!(
                    out,
                    "WARN  [trainer] step={}: {}",
                    self.step,
                    r.pick(WARNINGS)
                );
            }
            60..85 => {
                let _ = writeln!(
                    out,
                    "ERROR [loader] shard-{:05}.parquet: {} (request {:016x})\nTraceback (most recent call last):",
                    r.below(4_096),
                    r.pick(NET_ERRORS),
                    r.next_u64()
                );
                for _ in 0..3 + r.below(4) {
                    let (file, func) = FRAMES[r.below(FRAMES.len() as u64) as usize];
                    let _ = writeln!(
                        out,
                        "  File \"{file}\", line {}, in {func}",
                        10 + r.below(900)
                    );
                }
                let _ = writeln!(out, "ConnectionError: {}", r.pick(NET_ERRORS));
            }
            _ => {
                let _ = writeln!(
                    out,
                    "DEBUG [gc] collected {} objects in {} us, heap={} KiB",
                    r.below(100_000),
                    r.below(5_000),
                    1_000_000 + r.below(50_000)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_s_lines_depend_only_on_its_index() {
        let lines = |task| {
            let mut g = LogGen::new(task);
            let mut out = String::new();
            for _ in 0..100 {
                g.stdout_line(&mut out);
                g.stderr_line(&mut out);
            }
            out
        };
        assert_eq!(lines(3), lines(3));
        assert_ne!(lines(3), lines(4));
        assert!(lines(0).starts_with("2026-11-22T"));
    }
}
