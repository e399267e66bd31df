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
//! scripts/install-test-deps                       # moto (once per machine)
//! bench/setup-s3                                  # the AWS CLI v1 venv, GNU time
//! cargo build --profile bench-fast -p squall-worker   # the agent
//! cargo run -p squall-bench --profile bench-fast --bin bench-s3 -- [--size-mib 1024] [--runs 3]
//! ```
//!
//! See bench/README.md for the method and the latest results.
//!
//! The modules: `data` (the generated agent root), `pipeline` (processes under GNU time),
//! `run` (the contenders and the order of the runs), `verify` (every upload checked),
//! `report` (the markdown), `upload_child` (the hidden `--upload-child` mode).

mod data;
mod pipeline;
mod report;
mod run;
mod upload_child;
mod verify;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use clap::builder::RangedU64ValueParser;
use squall_bench::facts::{self, Facts, first_line};
use squall_bench::locate;
use squall_tests::moto;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The bucket every upload goes to.
const BUCKET: &str = "squall-bench";
/// The target this benchmark checks squall against.
const RSS_TARGET_MIB: f64 = 64.0;
const MIB: f64 = 1024.0 * 1024.0;
/// The venv of bench/setup-s3 when neither `--venv` nor `$SQUALL_BENCH_S3_VENV` says.
const DEFAULT_VENV: &str = "/var/tmp/squall-bench-s3-venv";

/// Packing an agent's logs into S3: squall against `tar czf - | aws s3 cp -` on moto.
#[derive(Debug, Parser)]
#[command(name = "bench-s3", args_override_self = true)]
struct Args {
    /// MiB of log files to generate, pack and upload.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    size_mib: u64,
    /// Timed runs per contender, interleaved, after one untimed warm-up of each.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,
    /// Task folders in the generated agent root (2 files each).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    tasks: usize,
    /// The squall-worker agent (default: next to this binary, i.e. the build of `cargo
    /// build --profile bench-fast -p squall-worker` for a bench-fast build of this one).
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// The venv of bench/setup-s3 (an empty `$SQUALL_BENCH_S3_VENV` means the default).
    #[arg(long, value_name = "DIR", env = "SQUALL_BENCH_S3_VENV", default_value = DEFAULT_VENV, value_parser = venv_dir)]
    venv: PathBuf,
    /// Keep the scratch folder (generated root, archives, each process's stderr) and
    /// print its path.
    #[arg(long)]
    keep: bool,
    /// Internal: upload stdin to s3://BUCKET/KEY and report (see `upload_child.rs`).
    #[arg(long, hide = true, num_args = 2, value_names = ["KEY", "BUCKET"], conflicts_with_all = ["size_mib", "runs", "tasks", "agent", "keep"])]
    upload_child: Option<Vec<String>>,
}

/// `--venv DIR`, where empty (`SQUALL_BENCH_S3_VENV=` in the environment) means
/// [`DEFAULT_VENV`], as in bench/setup-s3.
fn venv_dir(dir: &str) -> Result<PathBuf, Infallible> {
    Ok(PathBuf::from(if dir.is_empty() {
        DEFAULT_VENV
    } else {
        dir
    }))
}

fn main() -> Result<()> {
    let process_start = Instant::now();
    let args = Args::parse();
    if let Some(key_bucket) = &args.upload_child {
        let [key, bucket] = &key_bucket[..] else {
            bail!("usage: bench-s3 --upload-child KEY BUCKET (with the archive on stdin)");
        };
        return upload_child::upload_child(process_start, key, bucket);
    }
    ensure!(
        moto::available(),
        "moto is not installed (scripts/install-test-deps)"
    );
    ensure!(
        Path::new(pipeline::TIME).is_file(),
        "{} is missing: run bench/setup-s3",
        pipeline::TIME
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
    let bench = run::Bench::new(&scratch.path, agent, aws)?;

    eprintln!(
        "generating {} MiB of logs in {} task folders under {}...",
        args.size_mib,
        args.tasks,
        bench.root.display()
    );
    let t = Instant::now();
    let data = data::generate(&bench.root, args.size_mib * 1024 * 1024, args.tasks)?;
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

    let mut md = facts::markdown(&facts);
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
    let dir = locate::build_dir().context("finding this binary's path")?;
    if !locate::optimized(&dir) {
        eprintln!(
            "warning: using the squall-worker of {} (not an optimized build): run with --profile bench-fast or --release",
            dir.display()
        );
    }
    let agent = dir.join("squall-worker");
    ensure!(
        agent.is_file(),
        "{} is missing: run `cargo build{} -p squall-worker` first (or pass --agent)",
        agent.display(),
        locate::profile_flags(&dir)
    );
    Ok(agent)
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

fn machine_facts(aws: &Path, agent: &Path) -> Facts {
    let mut facts = facts::machine();
    facts.extend([
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
                "{}; flate2 {} (miniz_oxide {}), Compression::default() (level 6)",
                facts::build(agent),
                facts::locked_version("flate2"),
                facts::locked_version("miniz_oxide"),
            ),
        ),
        ("aws-sdk-s3", facts::locked_version("aws-sdk-s3")),
    ]);
    facts
}
