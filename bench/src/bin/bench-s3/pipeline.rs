//! Running a pipeline of processes connected by pipes, each under GNU time
//! (`/usr/bin/time -f '%M %U %S'`: peak RSS and CPU seconds as `wait4` returns them),
//! in one process group that is killed if it outlives [`RUN_TIMEOUT`], with the CPU
//! [`Meter`] read around it.
//!
//! It knows nothing of squall, tar or S3: the stages are given by `run.rs`, and what
//! the last stage wrote is only counted or captured, never checked here.

use anyhow::{Context, Result, bail};
use squall_bench::meter::Meter;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A pipeline taking longer than this is killed and aborts the benchmark.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// GNU time: `-f '%M %U %S'` prints the process's peak RSS in KiB and its user and
/// system CPU seconds.
pub const TIME: &str = "/usr/bin/time";

/// Where the last process's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Read by this process and counted (then dropped): the "> /dev/null" runs.
    Count,
    /// A file, read back afterwards (the upload child's report, the CLI's output).
    Capture,
}

/// One process of a pipeline.
pub struct Stage {
    label: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Stage {
    pub fn new(label: &'static str, program: impl Into<PathBuf>, args: &[&str]) -> Stage {
        Stage {
            label,
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, env: &[(String, String)]) -> Stage {
        self.env = env.to_vec();
        self
    }
}

/// A finished pipeline.
#[derive(Debug)]
pub struct Finished {
    pub wall: Duration,
    /// When each stage exited, in seconds since the first spawn (to within 1 ms).
    pub exits: Vec<f64>,
    /// Peak RSS (KiB) of each stage, in order.
    pub rss_kib: Vec<u64>,
    /// CPU seconds (user + system) of each stage, in order.
    pub cpu: Vec<f64>,
    /// moto's CPU seconds during the run (NaN without moto).
    pub moto_cpu: f64,
    /// CPU seconds that processes other than the stages, moto and this one used
    /// meanwhile (whole-machine busy time minus those): another workload on the machine.
    pub other_cpu: f64,
    /// Bytes the last stage wrote ([`Sink::Count`]).
    pub counted: u64,
    /// What the last stage wrote ([`Sink::Capture`]).
    pub captured: String,
}

/// Runs `stages` connected by pipes, each as `/usr/bin/time -f '%M %U %S' -o FILE PROGRAM
/// ARGS` (peak RSS in KiB, user and system CPU seconds),
/// in one new process group; times it from the first spawn to the last exit. Fails (with
/// each stage's stderr) if any stage fails or the pipeline outlives [`RUN_TIMEOUT`].
pub fn run_pipeline(
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

pub fn stderr_tails(stages: &[Stage], err_files: &[PathBuf]) -> String {
    let mut s = String::new();
    for (stage, f) in stages.iter().zip(err_files) {
        let text = fs::read_to_string(f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        let _ = write!(s, "\n--- {} stderr:\n{tail}", stage.label);
    }
    s
}
