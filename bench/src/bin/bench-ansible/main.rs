//! `bench-ansible`: squall against `ansible-playbook` (linear and Mitogen strategies) and
//! raw OpenSSH, on one fleet of ten real sshd servers on loopback. A benchmark, not a
//! test: nothing in `scripts/test` runs it.
//!
//! Every contender drives the same ten hosts as the same user with the same key and the
//! same pinned known_hosts. Two workloads: 10 hosts x 10 `/bin/true`, and 10 hosts x one
//! `sleep 1`. Contenders run interleaved (each round runs every contender once, the order
//! rotating by one each round) after one untimed warm-up run of each, and every timed run
//! is checked (exit codes, squall's `run.json`, ansible's PLAY RECAP): a failure aborts
//! the benchmark with its output, it is never timed. Prints markdown tables (median, min,
//! max, ratios) and the machine's facts on stdout, progress on stderr.
//!
//! ```text
//! bench/setup                                        # the Python venv (ansible-core + mitogen)
//! cargo build --profile bench-fast --workspace --bins  # squall and squall-worker
//! cargo run -p squall-bench --profile bench-fast --bin bench-ansible -- [--runs N]
//! ```
//!
//! Needs what `squall_tests::sshd` needs (root, sshd, the user `squall-test`); see
//! bench/README.md for the method and the latest results.
//!
//! The modules: `contender` (the contenders and workloads), `run` (the fleet's files and
//! every contender's run, each checked), `process` (timed processes, per-host threads,
//! control masters), `report` (the markdown tables), `venv` (bench/setup's venv).

mod contender;
mod process;
mod report;
mod run;
mod venv;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use clap::builder::RangedU64ValueParser;
use squall_bench::facts::{self, Facts, first_line};
use squall_bench::locate;
use squall_tests::sshd::{self, SshFleet, TEST_USER};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use venv::Venv;

/// How many sshd servers the fleet has.
const HOSTS: usize = 10;
/// The fewest rounds worth reporting a median of (fewer is allowed, with a warning).
const MIN_RUNS: usize = 5;
/// The group (squall) and inventory group (Ansible) of the fleet.
const GROUP: &str = "workers";
/// The remote interpreter Ansible is told to use, when it exists (same machine).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// How long the raw floor's (and Ansible's) control masters persist when idle.
const CONTROL_PERSIST: &str = "ControlPersist=60s";
/// The venv of bench/setup when neither `--venv` nor `$SQUALL_BENCH_VENV` says.
const DEFAULT_VENV: &str = "/var/tmp/squall-bench-venv";

/// squall against ansible-playbook (linear and Mitogen) and raw OpenSSH on ten sshd.
#[derive(Debug, Parser)]
#[command(name = "bench-ansible", args_override_self = true)]
struct Args {
    /// Timed rounds per workload (at least 5 recommended).
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,
    /// Only workload (a) 10 x /bin/true or (b) 1 x sleep 1 (default: both).
    #[arg(long, value_name = "a|b", value_parser = ["a", "b"])]
    workload: Option<String>,
    /// The squall binary (default: next to this binary, i.e. the build of `cargo build
    /// --profile bench-fast --workspace --bins` for a bench-fast build of this one).
    #[arg(long, value_name = "PATH")]
    squall: Option<PathBuf>,
    /// The squall-worker agent (default: next to the squall binary).
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// The venv of bench/setup (an empty `$SQUALL_BENCH_VENV` means the default).
    #[arg(long, value_name = "DIR", env = "SQUALL_BENCH_VENV", default_value = DEFAULT_VENV, value_parser = venv_dir)]
    venv: PathBuf,
    /// After the warm-up, one extra untimed squall run per workload with
    /// SQUALL_LOG=FILTER (e.g. info), its log printed to stderr.
    #[arg(long, value_name = "FILTER")]
    squall_log: Option<String>,
}

/// `--venv DIR`, where empty (`SQUALL_BENCH_VENV=` in the environment) means
/// [`DEFAULT_VENV`], as in bench/setup.
fn venv_dir(dir: &str) -> Result<PathBuf, Infallible> {
    Ok(PathBuf::from(if dir.is_empty() {
        DEFAULT_VENV
    } else {
        dir
    }))
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        sshd::available(),
        "the benchmark needs root, sshd and the user {TEST_USER} (scripts/install-test-deps)"
    );
    if args.runs < MIN_RUNS {
        eprintln!(
            "warning: --runs {} is fewer than {MIN_RUNS} rounds: medians are rough",
            args.runs
        );
    }
    let (squall, agent) = locate_squall(&args)?;
    let venv = Venv::open(&args.venv)?;
    let facts = machine_facts(&venv, &squall)?;

    let started = Instant::now();
    eprintln!("starting {HOSTS} sshd servers on loopback...");
    let fleet = SshFleet::start(HOSTS);
    let bench = run::Bench::new(&fleet, squall, agent, venv)?;
    bench.probe_ansible()?;

    let mut reports = Vec::new();
    for wl in contender::workloads() {
        if args.workload.as_deref().is_some_and(|w| w != wl.key) {
            continue;
        }
        reports.push(bench.run_workload(&wl, args.runs, args.squall_log.as_deref())?);
    }
    drop(bench);
    drop(fleet);

    let mut md = facts::markdown(&facts);
    writeln!(
        md,
        "\n{} timed round(s) per workload, contenders interleaved in a rotating order, after \
         one untimed warm-up run of each contender (squall's warm-up also uploads its agent, \
         so timed runs find it in place). Total benchmark time {:.0}s.\n",
        args.runs,
        started.elapsed().as_secs_f64()
    )?;
    for r in &reports {
        md.push_str(&r.markdown());
    }
    print!("{md}");
    Ok(())
}

/// `squall` and `squall-worker`: from the flags, else next to this binary.
fn locate_squall(args: &Args) -> Result<(PathBuf, PathBuf)> {
    locate::squall_binaries(args.squall.as_deref(), args.agent.as_deref())
}

fn machine_facts(venv: &Venv, squall: &Path) -> Result<Facts> {
    let remote_python = if Path::new(SYSTEM_PYTHON).is_file() {
        format!(
            "{SYSTEM_PYTHON} ({})",
            first_line(SYSTEM_PYTHON, &["--version"])
        )
    } else {
        "auto-discovered by Ansible (no /usr/bin/python3)".to_string()
    };
    let python = venv.bin("python");
    let mut facts = facts::machine();
    facts.extend([
        ("ssh -V", first_line("ssh", &["-V"])),
        ("squall", facts::build(squall)),
        ("ansible-core", venv.ansible_core.clone()),
        ("mitogen", venv.mitogen.clone()),
        (
            "controller Python",
            first_line(
                python.to_str().context("a UTF-8 venv path")?,
                &["--version"],
            ),
        ),
        ("hosts' Python (Ansible)", remote_python),
    ]);
    Ok(facts)
}
