//! `bench-s3`: packing an agent's logs and streaming them into S3, squall
//! (`squall-worker pack | S3Store::put_stream`) against `tar czf - | aws s3 cp -` (AWS CLI
//! v1), both uploading to one moto server on loopback. A benchmark, not a test: nothing
//! in `scripts/test` runs it.
//!
//! It generates ~1 GiB (`--size-mib`) of deterministic log files (seeded PRNG: lines with
//! timestamps, levels, counters, pseudo-random hex) laid out as an agent root
//! (`ROOT/tasks/TASK/stdout.log`, `stderr.log`), then times whole pipelines, from
//! spawning the first process to the upload being complete:
//!
//! - **squall**: `squall-worker --root ROOT pack` with its stdout piped into a child
//!   process of this benchmark (this binary re-executed with the hidden `--upload-child`
//!   mode) that streams stdin into `squall::backend::aws::s3::S3Store::put_stream`, configured from the
//!   environment like the master (`squall::backend::aws::sdk_config`, `squall::backend::aws::s3_client`);
//! - **tar | aws**: `tar czf - -C ROOT tasks | aws s3 cp - s3://BUCKET/KEY --endpoint-url
//!   URL` with the AWS CLI v1 of `bench/setup-s3`'s venv.
//!
//! Every process runs under `/usr/bin/time -f '%M %U %S'`: its `ru_maxrss` (peak RSS) and
//! CPU time as returned by `wait4`; moto's CPU comes from /proc/PID/stat, and the
//! machine's busy time from /proc/stat flags runs during which something else used the
//! CPU (NOISY). One untimed warm-up of each contender, then `--runs` interleaved rounds
//! (A B, B A, ...). Every upload is checked (the object's size is the number of bytes the
//! producer makes, known from a compression-only run; the warm-up objects are downloaded,
//! streamed through `tar tvzf -` and every member's size compared): a failed or short
//! upload aborts the benchmark. Compression alone and upload alone are timed once each,
//! to tell gzip from upload. Markdown on stdout, progress on stderr.
//!
//! ```text
//! scripts/install-test-deps                   # moto (once per machine)
//! bench/setup-s3                              # the AWS CLI v1 venv, GNU time
//! cargo build --release -p squall-worker      # the agent
//! cargo run -p squall-tests --release --bin bench-s3 -- [--size-mib 1024] [--runs 3]
//! ```
//!
//! See bench/README.md for the method and the latest results.

use anyhow::{Context, Result, bail, ensure};
use squall::backend::aws::s3::S3Store;
use squall::seam::Store;
use squall_tests::bench::{file_field, first_line, median};
use squall_tests::moto::{self, Moto};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write as _};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Input size when `--size-mib` is not given.
const DEFAULT_SIZE_MIB: u64 = 1024;
/// Timed rounds when `--runs` is not given.
const DEFAULT_RUNS: usize = 3;
/// Task folders in the generated agent root (two files each).
const DEFAULT_TASKS: usize = 64;
/// The generator's seed: the same data on every run and machine.
const SEED: u64 = 0x5351_5541_4c4c_5333;
/// The bucket every upload goes to.
const BUCKET: &str = "squall-bench";
/// A pipeline taking longer than this is killed and aborts the benchmark.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// GNU time: `-f '%M %U %S'` prints the process's peak RSS in KiB and its user and
/// system CPU seconds.
const TIME: &str = "/usr/bin/time";
/// The target this benchmark checks squall against.
const RSS_TARGET_MIB: f64 = 64.0;
const MIB: f64 = 1024.0 * 1024.0;

const USAGE: &str = "\
usage: bench-s3 [--size-mib N] [--runs N] [--tasks N] [--agent PATH] [--venv DIR] [--keep]

  --size-mib N   MiB of log files to generate, pack and upload (default 1024)
  --runs N       timed runs per contender, interleaved (default 3), after one untimed
                 warm-up of each
  --tasks N      task folders in the generated agent root (default 64; 2 files each)
  --agent PATH   the squall-worker agent (default: next to this binary, i.e. the build of
                 `cargo build --release -p squall-worker`)
  --venv DIR     the venv of bench/setup-s3 (default $SQUALL_BENCH_S3_VENV or
                 /var/tmp/squall-bench-s3-venv)
  --keep         keep the scratch folder (generated root, archives, each process's
                 stderr) and print its path
";

#[derive(Debug)]
struct Args {
    size_mib: u64,
    runs: usize,
    tasks: usize,
    agent: Option<PathBuf>,
    venv: PathBuf,
    keep: bool,
}

fn parse_args(argv: Vec<String>) -> Result<Option<Args>> {
    let mut args = Args {
        size_mib: DEFAULT_SIZE_MIB,
        runs: DEFAULT_RUNS,
        tasks: DEFAULT_TASKS,
        agent: None,
        venv: std::env::var_os("SQUALL_BENCH_S3_VENV")
            .filter(|v| !v.is_empty())
            .map_or_else(
                || PathBuf::from("/var/tmp/squall-bench-s3-venv"),
                PathBuf::from,
            ),
        keep: false,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let positive = |v: String| -> Result<u64> {
            v.parse()
                .ok()
                .filter(|n| *n >= 1)
                .with_context(|| format!("{flag} expects a positive number, found `{v}`"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--size-mib" => args.size_mib = positive(value()?)?,
            "--runs" => args.runs = usize::try_from(positive(value()?)?)?,
            "--tasks" => args.tasks = usize::try_from(positive(value()?)?)?,
            "--agent" => args.agent = Some(PathBuf::from(value()?)),
            "--venv" => args.venv = PathBuf::from(value()?),
            "--keep" => args.keep = true,
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(Some(args))
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--upload-child") {
        return upload_child(&argv[1..]);
    }
    let Some(args) = parse_args(argv)? else {
        return Ok(());
    };
    ensure!(
        moto::available(),
        "moto is not installed (scripts/install-test-deps)"
    );
    ensure!(
        Path::new(TIME).is_file(),
        "{TIME} is missing: run bench/setup-s3"
    );
    let aws = args.venv.join("bin/aws");
    ensure!(
        aws.is_file(),
        "{} is missing: run bench/setup-s3",
        aws.display()
    );
    let agent = locate_agent(&args)?;
    let facts = machine_facts(&aws, &agent);
    let started = Instant::now();
    let scratch = squall_tests::Scratch::new("bench-s3");
    let bench = Bench::new(&scratch.path, agent, aws)?;

    eprintln!(
        "generating {} MiB of logs in {} task folders under {}...",
        args.size_mib,
        args.tasks,
        bench.root.display()
    );
    let t = Instant::now();
    let data = generate(&bench.root, args.size_mib * 1024 * 1024, args.tasks)?;
    // Flush the new files now, so no writeback runs during the timed runs; they stay in
    // the page cache (the machine has ample memory), so every run reads them from memory.
    let synced = Command::new("sync").status().context("running sync")?;
    ensure!(synced.success(), "sync failed");
    eprintln!(
        "  {} files, {} bytes, in {:.1}s",
        data.files.len(),
        data.raw_bytes,
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt.block_on(bench.run(&args, &data))?;
    if args.keep {
        eprintln!("kept {}", scratch.path.display());
        std::mem::forget(scratch);
    } else {
        drop(scratch);
    }

    let mut md = String::new();
    writeln!(md, "### Machine\n")?;
    for (k, v) in &facts {
        writeln!(md, "- {k}: {v}")?;
    }
    md.push_str(&report.markdown(&args, &data, started.elapsed()));
    print!("{md}");
    Ok(())
}

/// `squall-worker`: from `--agent`, else next to this binary (which lives in
/// `target/PROFILE/`).
fn locate_agent(args: &Args) -> Result<PathBuf> {
    if let Some(p) = &args.agent {
        ensure!(p.is_file(), "--agent {}: no such file", p.display());
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("finding this binary's path")?;
    let mut dir = exe
        .parent()
        .context("this binary has no parent folder")?
        .to_path_buf();
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.pop();
    }
    if dir.file_name() != Some(OsStr::new("release")) {
        eprintln!(
            "warning: using the squall-worker of {} (not a release build): run with --release",
            dir.display()
        );
    }
    let agent = dir.join("squall-worker");
    ensure!(
        agent.is_file(),
        "{} is missing: run `cargo build --release -p squall-worker` first (or pass --agent)",
        agent.display()
    );
    Ok(agent)
}

// ---------------------------------------------------------------------------------------
// The upload child: stdin -> S3Store::put_stream, as the master does with the agent's
// stdout (`pipe_to_store` in master/src/runner.rs: the source copied into a 64 KiB
// duplex that put_stream reads).

/// `--upload-child KEY BUCKET`: uploads stdin (a pipe) to s3://BUCKET/KEY with the SDK
/// configured from the environment, then prints `BYTES READY_US TOTAL_US` on stdout
/// (READY: process start to SDK configured; TOTAL: to upload complete).
fn upload_child(argv: &[String]) -> Result<()> {
    let started = Instant::now();
    let [key, bucket] = argv else {
        bail!("usage: bench-s3 --upload-child KEY BUCKET (with the archive on stdin)");
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let conf = squall::backend::aws::sdk_config(None).await;
        let store = S3Store::new(squall::backend::aws::s3_client(&conf), bucket.as_str(), "");
        let stdin = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stdin")?;
        let mut input = tokio::net::unix::pipe::Receiver::from_owned_fd(stdin)
            .context("stdin must be a pipe")?;
        let ready = started.elapsed();
        let (writer, mut reader) = tokio::io::duplex(1 << 16);
        let pull = async move {
            let mut writer = writer;
            let r = tokio::io::copy(&mut input, &mut writer).await;
            let _ = writer.shutdown().await;
            r
        };
        let (pulled, stored) = tokio::join!(pull, store.put_stream(key, &mut reader));
        let pulled = pulled.context("reading stdin")?;
        let stored = stored.with_context(|| format!("uploading s3://{bucket}/{key}"))?;
        ensure!(
            pulled == stored,
            "read {pulled} bytes from stdin but uploaded {stored}"
        );
        println!(
            "{stored} {} {}",
            ready.as_micros(),
            started.elapsed().as_micros()
        );
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Deterministic log data.

/// splitmix64: tiny, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
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
struct LogGen {
    rng: Rng,
    task: usize,
    t_us: u64,
    step: u64,
    loss: f64,
}

impl LogGen {
    fn new(task: usize) -> LogGen {
        let mut rng = Rng(SEED ^ (task as u64).wrapping_mul(0xA076_1D64_78BD_642F));
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

    fn stdout_line(&mut self, out: &mut String) {
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

    fn stderr_line(&mut self, out: &mut String) {
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

/// The generated agent root.
#[derive(Debug)]
struct Dataset {
    raw_bytes: u64,
    /// Archive member name (`tasks/ID/FILE`) and size, sorted.
    files: Vec<(String, u64)>,
}

/// Writes `tasks` task folders of about `total` bytes together under `root/tasks/`, on
/// two threads (each file's content depends only on its task's index).
fn generate(root: &Path, total: u64, tasks: usize) -> Result<Dataset> {
    let per_task = total / tasks as u64;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let results: Vec<Result<Vec<(String, u64)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<Vec<(String, u64)>> {
                    let mut files = Vec::new();
                    for task in (t..tasks).step_by(threads) {
                        files.extend(write_task(root, task, per_task)?);
                    }
                    Ok(files)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a generator thread panicked")))
            })
            .collect()
    });
    let mut files = Vec::new();
    for r in results {
        files.extend(r?);
    }
    files.sort();
    let raw_bytes = files.iter().map(|(_, n)| n).sum();
    Ok(Dataset { raw_bytes, files })
}

/// One task folder: stdout.log gets 7/8 of `bytes`, stderr.log the rest.
fn write_task(root: &Path, task: usize, bytes: u64) -> Result<Vec<(String, u64)>> {
    let id = format!("train-{task:03}");
    let dir = root.join("tasks").join(&id);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut generator = LogGen::new(task);
    let mut files = Vec::new();
    for (name, target) in [("stdout.log", bytes / 8 * 7), ("stderr.log", bytes / 8)] {
        let path = dir.join(name);
        let mut out = BufWriter::with_capacity(
            1 << 20,
            File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        let mut written = 0u64;
        let mut line = String::with_capacity(512);
        while written < target {
            line.clear();
            if name == "stdout.log" {
                generator.stdout_line(&mut line);
            } else {
                generator.stderr_line(&mut line);
            }
            out.write_all(line.as_bytes())?;
            written += line.len() as u64;
        }
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        files.push((format!("tasks/{id}/{name}"), written));
    }
    Ok(files)
}

// ---------------------------------------------------------------------------------------
// Running pipelines of processes, each under /usr/bin/time.

/// Where the last process's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// Read by this process and counted (then dropped): the "> /dev/null" runs.
    Count,
    /// A file, read back afterwards (the upload child's report, the CLI's output).
    Capture,
}

/// One process of a pipeline.
struct Stage {
    label: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Stage {
    fn new(label: &'static str, program: impl Into<PathBuf>, args: &[&str]) -> Stage {
        Stage {
            label,
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
        }
    }

    fn env(mut self, env: &[(String, String)]) -> Stage {
        self.env = env.to_vec();
        self
    }
}

/// A finished pipeline.
#[derive(Debug)]
struct Finished {
    wall: Duration,
    /// When each stage exited, in seconds since the first spawn (to within 1 ms).
    exits: Vec<f64>,
    /// Peak RSS (KiB) of each stage, in order.
    rss_kib: Vec<u64>,
    /// CPU seconds (user + system) of each stage, in order.
    cpu: Vec<f64>,
    /// moto's CPU seconds during the run (NaN without moto).
    moto_cpu: f64,
    /// CPU seconds that processes other than the stages, moto and this one used
    /// meanwhile (whole-machine busy time minus those): another workload on the machine.
    other_cpu: f64,
    /// Bytes the last stage wrote ([`Sink::Count`]).
    counted: u64,
    /// What the last stage wrote ([`Sink::Capture`]).
    captured: String,
}

/// Runs `stages` connected by pipes, each as `/usr/bin/time -f '%M %U %S' -o FILE PROGRAM
/// ARGS` (peak RSS in KiB, user and system CPU seconds),
/// in one new process group; times it from the first spawn to the last exit. Fails (with
/// each stage's stderr) if any stage fails or the pipeline outlives [`RUN_TIMEOUT`].
fn run_pipeline(
    dir: &Path,
    name: &str,
    stages: &[Stage],
    sink: Sink,
    meter: &Meter,
) -> Result<Finished> {
    let rss_files: Vec<PathBuf> = (0..stages.len())
        .map(|i| dir.join(format!("{name}.{i}.rss")))
        .collect();
    let err_files: Vec<PathBuf> = (0..stages.len())
        .map(|i| dir.join(format!("{name}.{i}.err")))
        .collect();
    let out_file = dir.join(format!("{name}.out"));
    let mut commands = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        let mut cmd = Command::new(TIME);
        cmd.arg("-f")
            .arg("%M %U %S")
            .arg("-o")
            .arg(&rss_files[i])
            .arg(&stage.program)
            .args(&stage.args)
            .envs(stage.env.iter().map(|(k, v)| (k, v)))
            .stderr(File::create(&err_files[i])?);
        if !stage.env.is_empty() {
            // A profile name would have to exist in the (absent) profile files.
            cmd.env_remove("AWS_PROFILE")
                .env_remove("AWS_DEFAULT_PROFILE");
        }
        if i == 0 {
            cmd.stdin(Stdio::null());
        }
        commands.push(cmd);
    }
    let last = commands.len() - 1;
    match sink {
        Sink::Count => commands[last].stdout(Stdio::piped()),
        Sink::Capture => commands[last].stdout(File::create(&out_file)?),
    };
    for cmd in &mut commands[..last] {
        cmd.stdout(Stdio::piped());
    }

    let before = meter.snap();
    let started = Instant::now();
    let mut children: Vec<Child> = Vec::new();
    let mut pgid = 0;
    for (i, mut cmd) in commands.into_iter().enumerate() {
        cmd.process_group(pgid);
        if let Some(prev) = children.last_mut() {
            let out = prev.stdout.take().context("a piped stdout")?;
            cmd.stdin(Stdio::from(out));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", stages[i].program.display()))?;
        if i == 0 {
            pgid = i32::try_from(child.id())?;
        }
        children.push(child);
    }
    let counter = match sink {
        Sink::Count => {
            let mut out = children[last].stdout.take().context("a piped stdout")?;
            Some(std::thread::spawn(move || -> std::io::Result<u64> {
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0u64;
                loop {
                    match out.read(&mut buf)? {
                        0 => return Ok(n),
                        k => n += k as u64,
                    }
                }
            }))
        }
        Sink::Capture => None,
    };
    let mut statuses = vec![None; children.len()];
    let mut exits = vec![f64::NAN; children.len()];
    while statuses.iter().any(Option::is_none) {
        for (i, child) in children.iter_mut().enumerate() {
            if statuses[i].is_none() {
                statuses[i] = child.try_wait()?;
                if statuses[i].is_some() {
                    exits[i] = started.elapsed().as_secs_f64();
                }
            }
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            for child in &mut children {
                let _ = child.wait();
            }
            bail!(
                "{name} took over {}s and was killed{}",
                RUN_TIMEOUT.as_secs(),
                stderr_tails(stages, &err_files)
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = started.elapsed();
    let after = meter.snap();
    let counted = match counter {
        Some(h) => h
            .join()
            .map_err(|_| anyhow::anyhow!("the counting thread panicked"))?
            .context("reading the pipeline's output")?,
        None => 0,
    };
    for (stage, status) in stages.iter().zip(&statuses) {
        if let Some(status) = status
            && !status.success()
        {
            bail!(
                "{name}: {} failed ({status}){}",
                stage.label,
                stderr_tails(stages, &err_files)
            );
        }
    }
    let mut rss_kib = Vec::new();
    let mut cpu = Vec::new();
    for (stage, f) in stages.iter().zip(&rss_files) {
        let text = fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let last = text.lines().rev().find(|l| !l.trim().is_empty());
        let fields: Vec<&str> = last.unwrap_or("").split_whitespace().collect();
        let parsed = match fields[..] {
            [m, u, s] => m
                .parse::<u64>()
                .ok()
                .zip(u.parse::<f64>().ok())
                .zip(s.parse::<f64>().ok()),
            _ => None,
        };
        let ((kib, user), system) = parsed
            .with_context(|| format!("{}: no `RSS USER SYSTEM` line in `{text}`", stage.label))?;
        rss_kib.push(kib);
        cpu.push(user + system);
    }
    let captured = match sink {
        Sink::Capture => fs::read_to_string(&out_file).unwrap_or_default(),
        Sink::Count => String::new(),
    };
    let moto_cpu = after.moto - before.moto;
    let other_cpu = (after.busy - before.busy)
        - (after.own - before.own)
        - if moto_cpu.is_nan() { 0.0 } else { moto_cpu }
        - cpu.iter().sum::<f64>();
    Ok(Finished {
        wall,
        exits,
        rss_kib,
        cpu,
        moto_cpu,
        other_cpu,
        counted,
        captured,
    })
}

fn stderr_tails(stages: &[Stage], err_files: &[PathBuf]) -> String {
    let mut s = String::new();
    for (stage, f) in stages.iter().zip(err_files) {
        let text = fs::read_to_string(f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        let _ = write!(s, "\n--- {} stderr:\n{tail}", stage.label);
    }
    s
}

// ---------------------------------------------------------------------------------------
// The benchmark.

/// The two contenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Squall,
    TarAws,
}

impl Contender {
    fn index(self) -> usize {
        match self {
            Contender::Squall => 0,
            Contender::TarAws => 1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Contender::Squall => "squall (`squall-worker pack` \\| `S3Store::put_stream`)",
            Contender::TarAws => "`tar czf -` \\| `aws s3 cp -`",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Contender::Squall => "squall",
            Contender::TarAws => "tar|aws",
        }
    }
}

const CONTENDERS: [Contender; 2] = [Contender::Squall, Contender::TarAws];

/// One timed (or warm-up) pipeline run.
#[derive(Debug)]
struct Sample {
    wall: f64,
    /// Peak RSS (KiB): producer, uploader.
    rss_kib: [u64; 2],
    /// CPU seconds: producer, uploader, moto (during the run).
    cpu: [f64; 3],
    /// CPU seconds other processes used during the run ([`Finished::other_cpu`]).
    other_cpu: f64,
    /// When the producer exited (seconds since the start): the rest of the wall time is
    /// the uploader finishing (last parts, CompleteMultipartUpload, exiting).
    producer_exit: f64,
    /// squall's upload child: (SDK ready, upload complete), seconds since it started.
    child: Option<(f64, f64)>,
}

/// A compression-only or upload-only run.
#[derive(Debug)]
struct Single {
    wall: f64,
    rss_kib: u64,
    /// CPU seconds of the measured process (the producer, resp. the uploader).
    cpu: f64,
    /// moto's CPU seconds during the run (upload only; NaN otherwise).
    moto_cpu: f64,
    /// CPU seconds other processes used during the run ([`Finished::other_cpu`]).
    other_cpu: f64,
    bytes: u64,
}

#[derive(Debug)]
struct Report {
    /// Compression-only (`> /dev/null`), per contender.
    compress: [Single; 2],
    /// Upload-only (`cat ARCHIVE |`), per contender.
    upload: [Single; 2],
    /// Timed runs per contender, in round order.
    samples: [Vec<Sample>; 2],
    /// The order the timed runs ran in.
    order: Vec<Contender>,
    /// moto's peak RSS (VmHWM, KiB), and its RSS after the last run.
    moto_rss: Option<(u64, u64)>,
}

struct Bench {
    dir: PathBuf,
    root: PathBuf,
    agent: PathBuf,
    aws: PathBuf,
    this: PathBuf,
}

impl Bench {
    fn new(scratch: &Path, agent: PathBuf, aws: PathBuf) -> Result<Bench> {
        let dir = scratch.join("runs");
        fs::create_dir_all(&dir)?;
        Ok(Bench {
            dir,
            root: scratch.join("root"),
            agent,
            aws,
            this: std::env::current_exe().context("finding this binary's path")?,
        })
    }

    fn root_str(&self) -> Result<&str> {
        self.root.to_str().context("a UTF-8 scratch path")
    }

    /// The producer alone, its output counted and dropped.
    fn compress_only(&self, c: Contender, meter: &Meter) -> Result<Single> {
        let root = self.root_str()?;
        let stage = match c {
            Contender::Squall => {
                Stage::new("squall-worker pack", &self.agent, &["--root", root, "pack"])
            }
            Contender::TarAws => Stage::new("tar czf", "tar", &["czf", "-", "-C", root, "tasks"]),
        };
        let name = format!("compress-{}", c.index());
        let f = run_pipeline(&self.dir, &name, &[stage], Sink::Count, meter)?;
        Ok(Single {
            wall: f.wall.as_secs_f64(),
            rss_kib: f.rss_kib[0],
            cpu: f.cpu[0],
            moto_cpu: f.moto_cpu,
            other_cpu: f.other_cpu,
            bytes: f.counted,
        })
    }

    /// The environment of every uploader: moto's, and no profile files (nor a profile
    /// name, see [`run_pipeline`]), so both use their defaults whatever ~/.aws holds.
    fn upload_env(&self, moto: &Moto) -> Vec<(String, String)> {
        let none = self.dir.join("no-such-aws-file");
        let none = none.to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = moto
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.push(("AWS_CONFIG_FILE".into(), none.clone()));
        env.push(("AWS_SHARED_CREDENTIALS_FILE".into(), none));
        env
    }

    fn uploader(&self, c: Contender, moto: &Moto, key: &str) -> Stage {
        let env = self.upload_env(moto);
        match c {
            Contender::Squall => Stage::new(
                "bench-s3 --upload-child",
                &self.this,
                &["--upload-child", key, BUCKET],
            )
            .env(&env),
            Contender::TarAws => Stage::new(
                "aws s3 cp",
                &self.aws,
                &[
                    "s3",
                    "cp",
                    "-",
                    &format!("s3://{BUCKET}/{key}"),
                    "--endpoint-url",
                    &moto.endpoint(),
                ],
            )
            .env(&env),
        }
    }

    /// One whole pipeline: producer | uploader.
    fn pipeline(
        &self,
        c: Contender,
        moto: &Moto,
        key: &str,
        meter: &Meter,
    ) -> Result<(Sample, Finished)> {
        let root = self.root_str()?;
        let producer = match c {
            Contender::Squall => {
                Stage::new("squall-worker pack", &self.agent, &["--root", root, "pack"])
            }
            Contender::TarAws => Stage::new("tar czf", "tar", &["czf", "-", "-C", root, "tasks"]),
        };
        let name = key.replace('/', "-");
        let f = run_pipeline(
            &self.dir,
            &name,
            &[producer, self.uploader(c, moto, key)],
            Sink::Capture,
            meter,
        )?;
        let child = match c {
            Contender::Squall => Some(parse_child_report(&f.captured)?),
            Contender::TarAws => None,
        };
        Ok((
            Sample {
                wall: f.wall.as_secs_f64(),
                rss_kib: [f.rss_kib[0], f.rss_kib[1]],
                cpu: [f.cpu[0], f.cpu[1], f.moto_cpu],
                other_cpu: f.other_cpu,
                producer_exit: f.exits[0],
                child: child.map(|(_, ready, total)| (ready, total)),
            },
            f,
        ))
    }

    async fn run(&self, args: &Args, data: &Dataset) -> Result<Report> {
        // 1. Compression alone; these also give the archive sizes every upload must have.
        eprintln!("compression only (`... > pipe to this process`, counted)...");
        let mut compress = Vec::new();
        for c in CONTENDERS {
            let s = self.compress_only(c, &Meter::new(None))?;
            eprintln!(
                "  {}: {:.2}s, {} bytes (ratio {:.2}x), peak RSS {} KiB, CPU {:.2} s, \
                 other processes' CPU {:.2} s{}",
                c.short(),
                s.wall,
                s.bytes,
                data.raw_bytes as f64 / s.bytes as f64,
                s.rss_kib,
                s.cpu,
                s.other_cpu,
                noisy(s.other_cpu)
            );
            compress.push(s);
        }
        let expected = [compress[0].bytes, compress[1].bytes];

        eprintln!("starting moto...");
        let moto = Moto::start();
        let moto_pid = moto_pid(moto.addr.port());
        let meter = Meter::new(moto_pid);
        let client = squall::backend::aws::s3_client(&moto.sdk_config().await);
        client
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .context("creating the bucket")?;

        // 2. Warm-ups, each downloaded and listed in full.
        let mut archives = Vec::new();
        for c in CONTENDERS {
            let key = format!("warmup/{}.tar.gz", c.index());
            eprintln!("warm-up {}...", c.short());
            let (s, f) = self.pipeline(c, &moto, &key, &meter)?;
            self.check_upload(&client, c, &key, expected[c.index()], &f)
                .await?;
            let archive = self.dir.join(format!("archive-{}.tar.gz", c.index()));
            let (n, listing) = download_and_list(&client, &key, &archive, &self.dir).await?;
            ensure!(
                n == expected[c.index()],
                "{}: downloaded {n} bytes, expected {}",
                c.short(),
                expected[c.index()]
            );
            check_listing(c, &listing, data)?;
            delete(&client, &key).await?;
            eprintln!(
                "  {:.2}s (untimed); object verified: {n} bytes, {} files listed by `tar tvzf -` with the right sizes",
                s.wall,
                data.files.len()
            );
            archives.push(archive);
        }

        // 3. Timed rounds, interleaved: A B, B A, A B, ...
        let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        let mut order = Vec::new();
        for round in 0..args.runs {
            let pair = if round % 2 == 0 {
                CONTENDERS
            } else {
                [CONTENDERS[1], CONTENDERS[0]]
            };
            for c in pair {
                let key = format!("run/{}-{}.tar.gz", round, c.index());
                let (s, f) = self.pipeline(c, &moto, &key, &meter)?;
                self.check_upload(&client, c, &key, expected[c.index()], &f)
                    .await?;
                delete(&client, &key).await?;
                let moto_now = moto_pid.and_then(|p| proc_status_kib(p, "VmRSS"));
                eprintln!(
                    "round {}: {:<7} {:>7.2}s (producer exited at {:.2}s)  peak RSS {} + {} KiB, \
                     CPU {:.2} + {:.2} s, moto CPU {:.2} s (moto RSS {}), other processes' CPU \
                     {:.2} s{}",
                    round + 1,
                    c.short(),
                    s.wall,
                    s.producer_exit,
                    s.rss_kib[0],
                    s.rss_kib[1],
                    s.cpu[0],
                    s.cpu[1],
                    s.cpu[2],
                    moto_now.map_or("?".into(), |k| format!("{} MiB", k / 1024)),
                    s.other_cpu,
                    noisy(s.other_cpu)
                );
                samples[c.index()].push(s);
                order.push(c);
            }
        }

        // 4. Upload alone: each contender's own archive from a file, through `cat |`.
        eprintln!("upload only (`cat ARCHIVE | uploader`)...");
        let mut upload = Vec::new();
        for c in CONTENDERS {
            let key = format!("upload-only/{}.tar.gz", c.index());
            let archive = archives[c.index()]
                .to_str()
                .context("a UTF-8 path")?
                .to_owned();
            let stages = [
                Stage::new("cat", "cat", &[&archive]),
                self.uploader(c, &moto, &key),
            ];
            let f = run_pipeline(
                &self.dir,
                &format!("upload-only-{}", c.index()),
                &stages,
                Sink::Capture,
                &meter,
            )?;
            self.check_upload(&client, c, &key, expected[c.index()], &f)
                .await?;
            delete(&client, &key).await?;
            let s = Single {
                wall: f.wall.as_secs_f64(),
                rss_kib: f.rss_kib[1],
                cpu: f.cpu[1],
                moto_cpu: f.moto_cpu,
                other_cpu: f.other_cpu,
                bytes: expected[c.index()],
            };
            eprintln!(
                "  {}: {:.2}s for {} bytes, peak RSS {} KiB, CPU {:.2} s, moto CPU {:.2} s, \
                 other processes' CPU {:.2} s{}",
                c.short(),
                s.wall,
                s.bytes,
                s.rss_kib,
                s.cpu,
                s.moto_cpu,
                s.other_cpu,
                noisy(s.other_cpu)
            );
            upload.push(s);
        }
        let moto_rss = moto_pid
            .and_then(|p| Some((proc_status_kib(p, "VmHWM")?, proc_status_kib(p, "VmRSS")?)));
        drop(moto);
        let [c0, c1]: [Single; 2] = compress
            .try_into()
            .map_err(|_| anyhow::anyhow!("two compression runs"))?;
        let [u0, u1]: [Single; 2] = upload
            .try_into()
            .map_err(|_| anyhow::anyhow!("two upload runs"))?;
        Ok(Report {
            compress: [c0, c1],
            upload: [u0, u1],
            samples,
            order,
            moto_rss,
        })
    }

    /// The object is there with exactly the bytes the producer makes; squall's child
    /// also says it uploaded that many.
    async fn check_upload(
        &self,
        client: &aws_sdk_s3::Client,
        c: Contender,
        key: &str,
        expected: u64,
        f: &Finished,
    ) -> Result<()> {
        let head = client
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .with_context(|| format!("{}: HEAD s3://{BUCKET}/{key} after the upload", c.short()))?;
        let size = head.content_length().unwrap_or(-1);
        ensure!(
            u64::try_from(size).ok() == Some(expected),
            "{}: s3://{BUCKET}/{key} has {size} bytes, the producer makes {expected}: a short or failed upload",
            c.short()
        );
        if c == Contender::Squall {
            let (n, _, _) = parse_child_report(&f.captured)?;
            ensure!(
                n == expected,
                "squall: put_stream uploaded {n} bytes, the producer makes {expected}"
            );
        }
        Ok(())
    }
}

/// Other processes using more CPU than this during a run make it suspect.
const NOISE_CPU_SECS: f64 = 1.0;

/// A warning mark for a run during which other processes used CPU.
fn noisy(other_cpu: f64) -> &'static str {
    if other_cpu > NOISE_CPU_SECS {
        "  NOISY: something else ran on the machine"
    } else {
        ""
    }
}

/// `BYTES READY_US TOTAL_US` from the upload child; times in seconds.
fn parse_child_report(text: &str) -> Result<(u64, f64, f64)> {
    let nums: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("the upload child's report `{text}`"))?;
    let [bytes, ready, total] = nums[..] else {
        bail!("the upload child's report `{text}` is not `BYTES READY_US TOTAL_US`");
    };
    Ok((bytes, ready as f64 / 1e6, total as f64 / 1e6))
}

async fn delete(client: &aws_sdk_s3::Client, key: &str) -> Result<()> {
    client
        .delete_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .with_context(|| format!("deleting s3://{BUCKET}/{key}"))?;
    Ok(())
}

/// Streams the object into `tar tvzf -` (and into `save`), never holding it in memory;
/// returns its size and tar's listing.
async fn download_and_list(
    client: &aws_sdk_s3::Client,
    key: &str,
    save: &Path,
    dir: &Path,
) -> Result<(u64, String)> {
    let out = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .with_context(|| format!("GET s3://{BUCKET}/{key}"))?;
    let err_path = dir.join("tar-list.err");
    let mut tar = tokio::process::Command::new("tar")
        .args(["tvzf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&err_path)?)
        .spawn()
        .context("running tar tvzf -")?;
    let mut stdin = tar.stdin.take().context("tar's stdin")?;
    let mut stdout = tar.stdout.take().context("tar's stdout")?;
    let listing = tokio::spawn(async move {
        let mut s = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut s)
            .await
            .map(|_| s)
    });
    let mut file = tokio::fs::File::create(save).await?;
    let mut body = out.body;
    let mut n = 0u64;
    while let Some(chunk) = body
        .try_next()
        .await
        .with_context(|| format!("downloading s3://{BUCKET}/{key}"))?
    {
        n += chunk.len() as u64;
        file.write_all(&chunk).await?;
        stdin
            .write_all(&chunk)
            .await
            .context("writing to tar tvzf -")?;
    }
    file.flush().await?;
    drop(stdin);
    let listing = listing.await?.context("reading tar's listing")?;
    let status = tar.wait().await?;
    ensure!(
        status.success(),
        "`tar tvzf -` rejects s3://{BUCKET}/{key} ({status}): {}",
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    Ok((n, listing))
}

/// Every generated file, and nothing else, with its size, in `tar tvzf`'s listing
/// (`-rw-r--r-- root/root 123 2026-11-22 10:00 tasks/ID/stdout.log`).
fn check_listing(c: Contender, listing: &str, data: &Dataset) -> Result<()> {
    let mut files = Vec::new();
    let mut dirs = 0;
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            fields.len() >= 6,
            "{}: unexpected listing line `{line}`",
            c.short()
        );
        match fields[0].chars().next() {
            Some('d') => dirs += 1,
            Some('-') => {
                let size: u64 = fields[2]
                    .parse()
                    .with_context(|| format!("size in `{line}`"))?;
                files.push((fields[5..].join(" "), size));
            }
            _ => bail!("{}: unexpected member `{line}`", c.short()),
        }
    }
    files.sort();
    ensure!(
        files == data.files,
        "{}: the archive's files differ from the generated ones ({} listed, {} generated)",
        c.short(),
        files.len(),
        data.files.len()
    );
    ensure!(
        dirs == data.files.len() / 2 + 1,
        "{}: {dirs} directories in the archive",
        c.short()
    );
    Ok(())
}

/// moto_server's PID, found by its command line (`... moto_server -H 127.0.0.1 -p PORT`).
fn moto_pid(port: u16) -> Option<u32> {
    let port = port.to_string();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_moto = args
            .iter()
            .any(|a| String::from_utf8_lossy(a).ends_with("moto_server"));
        let on_port = args
            .windows(2)
            .any(|w| w[0] == b"-p" && w[1] == port.as_bytes());
        (is_moto && on_port).then_some(pid)
    })
}

/// CPU accounting around a pipeline: the whole machine's busy time, this process's and
/// moto's, to tell what else ran meanwhile.
#[derive(Debug, Clone, Copy)]
struct Meter {
    clk_tck: f64,
    moto: Option<u32>,
}

/// CPU seconds so far: the machine's (user + nice + system over all cores, from
/// /proc/stat), this process's and moto's (NaN without moto).
#[derive(Debug, Clone, Copy)]
struct CpuSnap {
    busy: f64,
    own: f64,
    moto: f64,
}

impl Meter {
    fn new(moto: Option<u32>) -> Meter {
        Meter {
            clk_tck: first_line("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0),
            moto,
        }
    }

    fn snap(&self) -> CpuSnap {
        let busy = fs::read_to_string("/proc/stat").ok().and_then(|t| {
            let line = t.lines().next()?.strip_prefix("cpu ")?.to_owned();
            let f: Vec<f64> = line
                .split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3).then(|| f.iter().sum::<f64>() / self.clk_tck)
        });
        CpuSnap {
            busy: busy.unwrap_or(f64::NAN),
            own: proc_cpu_secs(std::process::id(), self.clk_tck).unwrap_or(f64::NAN),
            moto: self
                .moto
                .and_then(|p| proc_cpu_secs(p, self.clk_tck))
                .unwrap_or(f64::NAN),
        }
    }
}

/// A process's CPU seconds so far (user + system, from /proc/PID/stat).
fn proc_cpu_secs(pid: u32, clk_tck: f64) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After `PID (COMM) `: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck)
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn moto_version() -> String {
    let python = moto::venv().join("bin/python");
    first_line(
        &python.to_string_lossy(),
        &[
            "-c",
            "import sys; from importlib.metadata import version; \
             print(version('moto'), 'on Python', sys.version.split()[0])",
        ],
    )
}

// ---------------------------------------------------------------------------------------
// Reporting.

/// A package's version in the workspace's Cargo.lock.
fn locked_version(name: &str) -> String {
    let lock = fs::read_to_string(squall_tests::workspace().join("Cargo.lock")).unwrap_or_default();
    let name_line = format!("name = \"{name}\"");
    lock.split("[[package]]")
        .find(|p| p.lines().any(|l| l == name_line))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or_else(|| "?".to_owned(), |v| v.trim_matches('"').to_owned())
}

fn machine_facts(aws: &Path, agent: &Path) -> Vec<(&'static str, String)> {
    let ws = squall_tests::workspace();
    let ws = ws.to_string_lossy();
    let commit = first_line("git", &["-C", &ws, "log", "-1", "--format=%h of %cI"]);
    let dirty = Command::new("git")
        .args([
            "-C",
            &ws,
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "master",
            "worker",
        ])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    let agent_str = agent.to_string_lossy();
    let built = first_line("date", &["-u", "-r", &agent_str, "+%FT%TZ"]);
    vec![
        ("nproc", first_line("nproc", &[])),
        ("CPU", file_field("/proc/cpuinfo", "model name")),
        ("memory", file_field("/proc/meminfo", "MemTotal")),
        ("OS", file_field("/etc/os-release", "PRETTY_NAME")),
        ("kernel", first_line("uname", &["-sr"])),
        ("tar --version", first_line("tar", &["--version"])),
        ("gzip --version", first_line("gzip", &["--version"])),
        (
            "aws --version",
            first_line(&aws.to_string_lossy(), &["--version"]),
        ),
        ("moto", moto_version()),
        (
            "squall-worker",
            format!(
                "{agent_str} built {built}; HEAD {commit}{}; flate2 {} (miniz_oxide {}), \
                 Compression::default() (level 6)",
                if dirty {
                    ", with uncommitted changes in master/ or worker/"
                } else {
                    ""
                },
                locked_version("flate2"),
                locked_version("miniz_oxide"),
            ),
        ),
        ("aws-sdk-s3", locked_version("aws-sdk-s3")),
    ]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    fn markdown(&self, args: &Args, data: &Dataset, total: Duration) -> String {
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
                walls.iter().copied().fold(f64::INFINITY, f64::min),
                walls.iter().copied().fold(f64::NEG_INFINITY, f64::max),
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
