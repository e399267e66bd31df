//! `bench-scale`: one run of W workers (real `sshd` servers on loopback) and N items of
//! instant tasks, through the real `squall run --inventory`: the master's peak memory
//! (its own, and with every process under it, its ssh connections included, sampled
//! every 100 ms: as the sum of their PSS, which counts a shared library's pages once
//! in all, and as the sum of their RSS, which counts them once per process) and the
//! per-item overhead (the run's items phase, per item per worker). A benchmark, not a
//! test: it passes or fails nothing.
//!
//! ```text
//! cargo build --profile bench-fast --workspace --bins
//! cargo run -p squall-bench --profile bench-fast --bin bench-scale -- --workers 10,50,200 --items 20000
//! ```
//!
//! As root (the sshd harness needs it; `scripts/install-test-deps` sets the machine up).

use anyhow::{Context, Result, bail};
use clap::Parser;
use squall_bench::meter::proc_status_kib;
use squall_tests::sshd::SshFleet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "A run of many SSH workers and items: peak memory and per-item overhead")]
struct Args {
    /// Fleet sizes to run, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10,50,200")]
    workers: Vec<usize>,
    /// Items of the one sharded stage.
    #[arg(long, default_value_t = 20_000)]
    items: usize,
    /// The squall binary (default: next to this one).
    #[arg(long)]
    squall: Option<PathBuf>,
    /// The squall-worker binary (default: next to squall).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 1800)]
    max_seconds: u64,
}

/// Every process under `root` (and itself), by /proc's parent links.
fn tree(root: u32) -> Vec<u32> {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parent.insert(pid, ppid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// A process's proportional set size (`Pss:` of /proc/PID/smaps_rollup), in KiB.
fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One run's figures.
#[derive(Debug)]
struct Figures {
    workers: usize,
    wall_s: f64,
    items_s: f64,
    peak_tree_mib: f64,
    peak_tree_pss_mib: f64,
    peak_master_mib: f64,
    processes: usize,
}

fn run_once(args: &Args, squall: &Path, agent: &Path, workers: usize) -> Result<Figures> {
    eprintln!("starting {workers} sshd servers...");
    let fleet = SshFleet::start(workers);
    let home = std::env::temp_dir().join(format!(
        "squall-bench-scale-{}-{workers}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home)?;
    let inventory = home.join("inventory.yml");
    std::fs::write(&inventory, fleet.inventory_yaml(&[("workers", 0..workers)]))?;
    let items: Vec<String> = (0..args.items).map(|i| i.to_string()).collect();
    let playbook = home.join("scale.yml");
    std::fs::write(
        &playbook,
        format!(
            "name: scale\ndeadline: 2h\nfleet: {{ workers: {{ count: {workers} }} }}\nstages:\n  - name: items\n    hosts: workers\n    shards: [{}]\n    tasks:\n      - shell: \"true\"\n",
            items.join(", ")
        ),
    )?;
    let run_id = format!("scale-{workers}-{}", std::process::id());
    let started = Instant::now();
    let mut child = Command::new(squall)
        .args(["run"])
        .arg(&playbook)
        .arg("--inventory")
        .arg(&inventory)
        .args(["--run-id", &run_id])
        .env("SQUALL_HOME", &home)
        .env("SQUALL_WORKER_BIN", agent)
        .env_remove("SQUALL_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting squall")?;
    let pid = child.id();
    let (mut peak_tree, mut peak_master, mut most) = (0u64, 0u64, 0usize);
    let mut peak_pss = 0u64;
    let limit = Duration::from_secs(args.max_seconds);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the run of {workers} workers took over {limit:?}");
        }
        let pids = tree(pid);
        most = most.max(pids.len());
        let sum: u64 = pids
            .iter()
            .filter_map(|p| proc_status_kib(*p, "VmRSS"))
            .sum();
        peak_tree = peak_tree.max(sum);
        let pss: u64 = pids.iter().filter_map(|p| pss_kib(*p)).sum();
        peak_pss = peak_pss.max(pss);
        peak_master = peak_master.max(proc_status_kib(pid, "VmHWM").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    };
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the run of {workers} workers failed: {status}");
    }
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.join(format!("store/runs/{run_id}/run.json"))).context("run.json")?,
    )?;
    // The items phase: from the first item's start to the last item's end.
    let tasks = record["tasks"].as_array().cloned().unwrap_or_default();
    let first = tasks
        .iter()
        .filter_map(|t| t["started_at_ms"].as_u64())
        .min()
        .unwrap_or(0);
    let last = tasks
        .iter()
        .filter_map(|t| t["ended_at_ms"].as_u64())
        .max()
        .unwrap_or(0);
    let done = tasks.iter().filter(|t| t["outcome"] == "succeeded").count();
    if done != args.items {
        bail!("{done} of {} items succeeded", args.items);
    }
    let _ = std::fs::remove_dir_all(&home);
    drop(fleet);
    Ok(Figures {
        workers,
        wall_s: wall,
        items_s: last.saturating_sub(first) as f64 / 1000.0,
        peak_tree_mib: peak_tree as f64 / 1024.0,
        peak_tree_pss_mib: peak_pss as f64 / 1024.0,
        peak_master_mib: peak_master as f64 / 1024.0,
        processes: most,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (squall, agent) =
        squall_bench::locate::squall_binaries(args.squall.as_deref(), args.agent.as_deref())?;
    let mut rows = Vec::new();
    for &w in &args.workers {
        let f = run_once(&args, &squall, &agent, w)?;
        eprintln!("{f:?}");
        rows.push(f);
    }
    println!(
        "{}",
        squall_bench::facts::markdown(&squall_bench::facts::machine())
    );
    println!(
        "| workers | items | wall (s) | items phase (s) | per item per worker (ms) | peak PSS, master + children (MiB) | peak RSS sum, master + children (MiB) | master's own peak RSS (MiB) | processes at most |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for f in rows {
        let per_item = f.items_s * 1000.0 * f.workers as f64 / args.items as f64;
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {} |",
            f.workers,
            args.items,
            f.wall_s,
            f.items_s,
            per_item,
            f.peak_tree_pss_mib,
            f.peak_tree_mib,
            f.peak_master_mib,
            f.processes
        );
    }
    Ok(())
}
