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
//! bench/setup                                   # the Python venv (ansible-core + mitogen)
//! cargo build --release --workspace --bins      # squall and squall-worker
//! cargo run -p squall-tests --release --bin bench-ansible -- [--runs N]
//! ```
//!
//! Needs what `squall_tests::sshd` needs (root, sshd, the user `squall-test`); see
//! bench/README.md for the method and the latest results.

use anyhow::{Context, Result, bail, ensure};
use squall_tests::bench::{file_field, first_line, median};
use squall_tests::sshd::{self, SshFleet, TEST_USER};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many sshd servers the fleet has.
const HOSTS: usize = 10;
/// Rounds when `--runs` is not given.
const DEFAULT_RUNS: usize = 7;
/// The fewest rounds worth reporting a median of (fewer is allowed, with a warning).
const MIN_RUNS: usize = 5;
/// A contender run taking longer than this is killed and aborts the benchmark.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// The group (squall) and inventory group (Ansible) of the fleet.
const GROUP: &str = "workers";
/// The remote interpreter Ansible is told to use, when it exists (same machine).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// How long the raw floor's (and Ansible's) control masters persist when idle.
const CONTROL_PERSIST: &str = "ControlPersist=60s";

const USAGE: &str = "\
usage: bench-ansible [--runs N] [--workload a|b] [--squall PATH] [--agent PATH]
                     [--venv DIR] [--squall-log FILTER]

  --runs N            timed rounds per workload (default 7; at least 5 recommended)
  --workload a|b      only workload (a) 10 x /bin/true or (b) 1 x sleep 1 (default: both)
  --squall PATH       the squall binary (default: next to this binary, i.e. the release
                      build of `cargo build --release --workspace --bins`)
  --agent PATH        the squall-worker agent (default: next to the squall binary)
  --venv DIR          the venv of bench/setup (default $SQUALL_BENCH_VENV or
                      /var/tmp/squall-bench-venv)
  --squall-log FILTER after the warm-up, one extra untimed squall run per workload with
                      SQUALL_LOG=FILTER (e.g. info), its log printed to stderr
";

/// One way of running the workload on the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Squall,
    Ansible,
    Mitogen,
    /// Pre-established ControlMasters (set up before the clock starts).
    Floor,
    /// The same, with the ControlMasters set up inside the timed region.
    FloorConnect,
}

const CONTENDERS: [Contender; 5] = [
    Contender::Squall,
    Contender::Ansible,
    Contender::Mitogen,
    Contender::Floor,
    Contender::FloorConnect,
];

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::Squall => "squall",
            Contender::Ansible => "ansible-playbook (linear, pipelining)",
            Contender::Mitogen => "ansible-playbook + mitogen_linear",
            Contender::Floor => "raw ssh floor (pre-connected)",
            Contender::FloorConnect => "raw ssh floor incl. connect",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Contender::Squall => "squall",
            Contender::Ansible => "ansible",
            Contender::Mitogen => "mitogen",
            Contender::Floor => "floor",
            Contender::FloorConnect => "floor+connect",
        }
    }
}

/// The same tasks on every host, in order; each task is an argv.
#[derive(Debug)]
struct Workload {
    key: &'static str,
    title: &'static str,
    tasks: Vec<Vec<&'static str>>,
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            key: "a",
            title: "(a) 10 hosts x 10 trivial tasks (`/bin/true`)",
            tasks: vec![vec!["/bin/true"]; 10],
        },
        Workload {
            key: "b",
            title: "(b) 10 hosts x 1 task `sleep 1`",
            tasks: vec![vec!["sleep", "1"]],
        },
    ]
}

#[derive(Debug)]
struct Args {
    runs: usize,
    workload: Option<String>,
    squall: Option<PathBuf>,
    agent: Option<PathBuf>,
    venv: PathBuf,
    squall_log: Option<String>,
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        runs: DEFAULT_RUNS,
        workload: None,
        squall: None,
        agent: None,
        venv: std::env::var_os("SQUALL_BENCH_VENV")
            .filter(|v| !v.is_empty())
            .map_or_else(
                || PathBuf::from("/var/tmp/squall-bench-venv"),
                PathBuf::from,
            ),
        squall_log: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--runs" => {
                let v = value()?;
                args.runs =
                    v.parse().ok().filter(|n| *n >= 1).with_context(|| {
                        format!("--runs expects a positive number, found `{v}`")
                    })?;
            }
            "--workload" => {
                let v = value()?;
                ensure!(
                    v == "a" || v == "b",
                    "--workload expects a or b, found `{v}`"
                );
                args.workload = Some(v);
            }
            "--squall" => args.squall = Some(PathBuf::from(value()?)),
            "--agent" => args.agent = Some(PathBuf::from(value()?)),
            "--venv" => args.venv = PathBuf::from(value()?),
            "--squall-log" => args.squall_log = Some(value()?),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(Some(args))
}

fn main() -> Result<()> {
    let Some(args) = parse_args()? else {
        return Ok(());
    };
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
    let bench = Bench::new(&fleet, squall, agent, venv)?;
    bench.probe_ansible()?;

    let mut reports = Vec::new();
    for wl in workloads() {
        if args.workload.as_deref().is_some_and(|w| w != wl.key) {
            continue;
        }
        reports.push(bench.run_workload(&wl, args.runs, args.squall_log.as_deref())?);
    }
    drop(bench);
    drop(fleet);

    let mut md = String::new();
    writeln!(md, "### Machine\n")?;
    for (k, v) in &facts {
        writeln!(md, "- {k}: {v}")?;
    }
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

/// `squall` and `squall-worker`: from the flags, else next to this binary (which lives in
/// `target/PROFILE/`, or `target/PROFILE/deps/` when run by the test harness).
fn locate_squall(args: &Args) -> Result<(PathBuf, PathBuf)> {
    let squall = match &args.squall {
        Some(p) => p.clone(),
        None => {
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
                    "warning: using the squall binary of {} (not a release build): run with --release",
                    dir.display()
                );
            }
            dir.join("squall")
        }
    };
    let agent = match &args.agent {
        Some(p) => p.clone(),
        None => squall.with_file_name("squall-worker"),
    };
    for (what, p) in [("squall", &squall), ("squall-worker", &agent)] {
        ensure!(
            p.is_file(),
            "{what} not found at {}: run `cargo build --release --workspace --bins` first (or pass --squall/--agent)",
            p.display()
        );
    }
    Ok((squall, agent))
}

/// The Python venv of bench/setup.
#[derive(Debug)]
struct Venv {
    root: PathBuf,
    ansible_core: String,
    mitogen: String,
    /// `.../ansible_mitogen/plugins/strategy`.
    strategy_dir: PathBuf,
}

impl Venv {
    fn open(root: &Path) -> Result<Venv> {
        let python = root.join("bin/python");
        ensure!(
            root.join("bin/ansible-playbook").is_file(),
            "no ansible-playbook in {}: run bench/setup (SQUALL_BENCH_VENV={} bench/setup)",
            root.display(),
            root.display()
        );
        let out = Command::new(&python)
            .args([
                "-c",
                "import os, ansible_mitogen\n\
                 from importlib.metadata import version\n\
                 print(version('ansible-core'))\n\
                 print(version('mitogen'))\n\
                 print(os.path.join(os.path.dirname(ansible_mitogen.__file__), 'plugins', 'strategy'))",
            ])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        ensure!(
            out.status.success(),
            "the venv {} lacks ansible-core or mitogen (run bench/setup):\n{}",
            root.display(),
            squall_tests::text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut lines = stdout.lines();
        let mut next = || lines.next().map(str::to_string).unwrap_or_default();
        let (ansible_core, mitogen, strategy_dir) = (next(), next(), PathBuf::from(next()));
        ensure!(
            strategy_dir.join("mitogen_linear.py").is_file(),
            "no mitogen_linear strategy in {}",
            strategy_dir.display()
        );
        Ok(Venv {
            root: root.to_path_buf(),
            ansible_core,
            mitogen,
            strategy_dir,
        })
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.root.join("bin").join(name)
    }
}

fn machine_facts(venv: &Venv, squall: &Path) -> Result<Vec<(&'static str, String)>> {
    let ws = squall_tests::workspace();
    let ws = ws.to_str().context("a UTF-8 workspace path")?;
    let commit = first_line("git", &["-C", ws, "log", "-1", "--format=%h of %cI"]);
    // Only product code counts: this benchmark's own files may be uncommitted.
    let dirty = Command::new("git")
        .args([
            "-C",
            ws,
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "master",
            "worker",
        ])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    let squall_str = squall.to_str().context("a UTF-8 squall path")?;
    let built = first_line("date", &["-u", "-r", squall_str, "+%FT%TZ"]);
    let remote_python = if Path::new(SYSTEM_PYTHON).is_file() {
        format!(
            "{SYSTEM_PYTHON} ({})",
            first_line(SYSTEM_PYTHON, &["--version"])
        )
    } else {
        "auto-discovered by Ansible (no /usr/bin/python3)".to_string()
    };
    let python = venv.bin("python");
    Ok(vec![
        ("nproc", first_line("nproc", &[])),
        ("CPU", file_field("/proc/cpuinfo", "model name")),
        ("memory", file_field("/proc/meminfo", "MemTotal")),
        ("OS", file_field("/etc/os-release", "PRETTY_NAME")),
        ("kernel", first_line("uname", &["-sr"])),
        ("ssh -V", first_line("ssh", &["-V"])),
        (
            "squall",
            format!(
                "{squall_str} built {built}; HEAD {commit}{}",
                if dirty {
                    ", with uncommitted changes in master/ or worker/"
                } else {
                    ""
                }
            ),
        ),
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
    ])
}

/// The fleet, the files every contender reads, and the binaries.
struct Bench<'a> {
    fleet: &'a SshFleet,
    /// Scratch under the fleet's dir (short: control sockets have a path limit).
    work: PathBuf,
    squall: PathBuf,
    agent: PathBuf,
    venv: Venv,
    squall_inventory: PathBuf,
    cfg_linear: PathBuf,
    cfg_mitogen: PathBuf,
    seq: AtomicU32,
}

/// Timings of one squall run, from its `run.json`: (phase, ms), in order.
type Phases = Vec<(String, f64)>;

impl<'a> Bench<'a> {
    fn new(fleet: &'a SshFleet, squall: PathBuf, agent: PathBuf, venv: Venv) -> Result<Self> {
        let work = fleet.dir.join("b");
        fs::create_dir_all(work.join("ansible-local")).context("creating the scratch dir")?;
        let squall_inventory = work.join("inventory.yml");
        fs::write(
            &squall_inventory,
            fleet.inventory_yaml(&[(GROUP, 0..HOSTS)]),
        )?;

        // Ansible: the same hosts, user, key and known_hosts.
        let mut ini = format!("[{GROUP}]\n");
        for h in &fleet.hosts {
            writeln!(
                ini,
                "{} ansible_host={} ansible_port={}",
                h.name, h.address, h.port
            )?;
        }
        writeln!(ini, "\n[{GROUP}:vars]\nansible_user={TEST_USER}")?;
        writeln!(
            ini,
            "ansible_ssh_private_key_file={}",
            fleet.client_key.display()
        )?;
        writeln!(
            ini,
            "ansible_ssh_common_args='-F /dev/null -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes'",
            fleet.known_hosts.display()
        )?;
        if Path::new(SYSTEM_PYTHON).is_file() {
            writeln!(ini, "ansible_python_interpreter={SYSTEM_PYTHON}")?;
        }
        let ansible_inventory = work.join("hosts.ini");
        fs::write(&ansible_inventory, ini)?;

        let cfg = |strategy: &str, plugins: Option<&Path>| {
            let mut c = String::from("[defaults]\n");
            c += &format!("inventory = {}\n", ansible_inventory.display());
            c += "forks = 10\n";
            if let Some(dir) = plugins {
                c += &format!("strategy_plugins = {}\n", dir.display());
            }
            c += &format!("strategy = {strategy}\n");
            c += "gathering = explicit\nhost_key_checking = True\nretry_files_enabled = False\n";
            c += "stdout_callback = ansible.builtin.default\ndeprecation_warnings = False\n";
            c += &format!("local_tmp = {}\n", work.join("ansible-local").display());
            c += "\n[ssh_connection]\npipelining = True\n";
            c += &format!("ssh_args = -o ControlMaster=auto -o {CONTROL_PERSIST}\n");
            // control_path_dir: a fresh one per run, through ANSIBLE_SSH_CONTROL_PATH_DIR.
            c
        };
        let cfg_linear = work.join("ansible-linear.cfg");
        fs::write(&cfg_linear, cfg("linear", None))?;
        let cfg_mitogen = work.join("ansible-mitogen.cfg");
        fs::write(
            &cfg_mitogen,
            cfg("mitogen_linear", Some(&venv.strategy_dir)),
        )?;

        // A probe: which processes a task runs under (mitogen's read `python(mitogen:...)`).
        fs::write(
            work.join("probe.yml"),
            format!(
                "- hosts: {GROUP}\n  gather_facts: false\n  tasks:\n\
                 \x20   - ansible.builtin.shell: |\n\
                 \x20       p=$$\n\
                 \x20       while [ \"$p\" -gt 1 ]; do\n\
                 \x20         tr '\\0' ' ' < /proc/$p/cmdline; echo\n\
                 \x20         p=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2)\n\
                 \x20       done\n\
                 \x20     register: ancestors\n\
                 \x20   - ansible.builtin.assert:\n\
                 \x20       that: \"('(mitogen:' in ancestors.stdout) == (expect_mitogen | bool)\"\n\
                 \x20       fail_msg: \"expect_mitogen={{{{ expect_mitogen }}}}, the task ran under: {{{{ ancestors.stdout }}}}\"\n"
            ),
        )?;
        Ok(Bench {
            fleet,
            work,
            squall,
            agent,
            venv,
            squall_inventory,
            cfg_linear,
            cfg_mitogen,
            seq: AtomicU32::new(0),
        })
    }

    fn next_id(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes the workload's squall and Ansible playbooks; returns their paths.
    fn write_playbooks(&self, wl: &Workload) -> Result<(PathBuf, PathBuf)> {
        let mut sq = format!(
            "name: bench-{key}\nfleet:\n  {GROUP}:\n    count: {HOSTS}\nstages:\n  - name: bench\n    hosts: {GROUP}\n    tasks:\n",
            key = wl.key
        );
        let mut ans = format!(
            "- name: bench-{}\n  hosts: {GROUP}\n  gather_facts: false\n  tasks:\n",
            wl.key
        );
        for argv in &wl.tasks {
            let words: Vec<String> = argv.iter().map(|w| format!("\"{w}\"")).collect();
            writeln!(sq, "      - command: [{}]", words.join(", "))?;
            writeln!(ans, "    - ansible.builtin.command: {}", argv.join(" "))?;
        }
        let sq_path = self.work.join(format!("squall-{}.yml", wl.key));
        fs::write(&sq_path, sq)?;
        let ans_path = self.work.join(format!("ansible-{}.yml", wl.key));
        fs::write(&ans_path, ans)?;
        Ok((sq_path, ans_path))
    }

    /// Checks both Ansible setups reach every host, and that the Mitogen one really runs
    /// tasks through Mitogen (and the linear one does not).
    fn probe_ansible(&self) -> Result<()> {
        let probe = self.work.join("probe.yml");
        for (cfg, mitogen) in [(&self.cfg_linear, false), (&self.cfg_mitogen, true)] {
            let extra = format!("expect_mitogen={mitogen}");
            self.run_ansible(cfg, &probe, &["-e", &extra], 2)
                .with_context(|| {
                    format!(
                        "probing Ansible ({})",
                        if mitogen { "mitogen" } else { "linear" }
                    )
                })?;
        }
        eprintln!(
            "probe: ansible linear and mitogen_linear reach all {HOSTS} hosts; tasks run under mitogen only with mitogen_linear"
        );
        Ok(())
    }

    fn run_workload(&self, wl: &Workload, runs: usize, squall_log: Option<&str>) -> Result<Report> {
        let (sq_pb, ans_pb) = self.write_playbooks(wl)?;
        eprintln!(
            "workload {}: warm-up (untimed), one run of each contender",
            wl.title
        );
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CONTENDERS.len()];
        let mut phases: Vec<Phases> = Vec::new();
        for c in CONTENDERS {
            let (took, _) = self.run_one(c, wl, &sq_pb, &ans_pb)?;
            eprintln!("  warm-up {:<14} {:>7.3}s", c.short(), took.as_secs_f64());
        }
        if let Some(filter) = squall_log {
            let (took, _, out) = self.run_squall(wl, &sq_pb, Some(filter))?;
            eprintln!(
                "--- squall run with SQUALL_LOG={filter} (untimed, {:.3}s):\n{}\n--- end of squall log",
                took.as_secs_f64(),
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        for round in 0..runs {
            let mut line = format!("  round {}/{runs}:", round + 1);
            for k in 0..CONTENDERS.len() {
                let idx = (round + k) % CONTENDERS.len();
                let c = CONTENDERS[idx];
                let (took, ph) = self.run_one(c, wl, &sq_pb, &ans_pb)?;
                samples[idx].push(took.as_secs_f64());
                phases.extend(ph);
                write!(line, " {} {:.3}s", c.short(), took.as_secs_f64())?;
                if k + 1 < CONTENDERS.len() {
                    line.push(',');
                }
            }
            eprintln!("{line}");
        }
        Ok(Report {
            title: wl.title,
            samples,
            phases,
        })
    }

    /// One run of `c`; squall runs also return their phase timings.
    fn run_one(
        &self,
        c: Contender,
        wl: &Workload,
        sq_pb: &Path,
        ans_pb: &Path,
    ) -> Result<(Duration, Option<Phases>)> {
        let expected = wl.tasks.len();
        Ok(match c {
            Contender::Squall => {
                let (took, phases, _) = self.run_squall(wl, sq_pb, None)?;
                (took, Some(phases))
            }
            Contender::Ansible => (
                self.run_ansible(&self.cfg_linear, ans_pb, &[], expected)?,
                None,
            ),
            Contender::Mitogen => (
                self.run_ansible(&self.cfg_mitogen, ans_pb, &[], expected)?,
                None,
            ),
            Contender::Floor => (self.run_floor(wl, false)?, None),
            Contender::FloorConnect => (self.run_floor(wl, true)?, None),
        })
    }

    /// `squall run` with a fresh home and run id; checks exit code and `run.json`.
    fn run_squall(
        &self,
        wl: &Workload,
        playbook: &Path,
        log: Option<&str>,
    ) -> Result<(Duration, Phases, Output)> {
        let n = self.next_id();
        let run_id = format!("bench-{}-{n}", wl.key);
        let home = self.work.join(format!("sq{n}"));
        let mut cmd = Command::new(&self.squall);
        cmd.arg("run")
            .arg(playbook)
            .arg("--inventory")
            .arg(&self.squall_inventory)
            .arg("--home")
            .arg(&home)
            .arg("--no-progress")
            .arg("--run-id")
            .arg(&run_id)
            .arg("--agent")
            .arg(&self.agent)
            .env_remove("SQUALL_HOME")
            .env_remove("SQUALL_WORKER_BIN")
            .current_dir(&self.work);
        match log {
            Some(filter) => cmd.env("SQUALL_LOG", filter),
            None => cmd.env_remove("SQUALL_LOG"),
        };
        let spawned_ms = epoch_ms();
        let (out, took) = timed(&mut cmd, "squall run")?;
        let exited_ms = epoch_ms();
        ensure!(
            out.status.success(),
            "squall run {run_id} failed:\n{}",
            squall_tests::text(&out)
        );
        let record = home.join("store/runs").join(&run_id).join("run.json");
        let rec: serde_json::Value = serde_json::from_slice(
            &fs::read(&record).with_context(|| format!("reading {}", record.display()))?,
        )
        .with_context(|| format!("parsing {}", record.display()))?;
        ensure!(
            rec["status"] == "succeeded",
            "squall run {run_id} exited 0 but run.json says status {} ({})",
            rec["status"],
            rec["reason"]
        );
        let ok = rec["tasks"].as_array().map_or(0, |t| {
            t.iter().filter(|t| t["outcome"] == "succeeded").count()
        });
        ensure!(
            ok == HOSTS * wl.tasks.len(),
            "squall run {run_id}: {ok} succeeded task(s) in run.json, expected {}",
            HOSTS * wl.tasks.len()
        );
        let phases = phase_times(&rec, spawned_ms, exited_ms);
        fs::remove_dir_all(&home).with_context(|| format!("removing {}", home.display()))?;
        Ok((took, phases, out))
    }

    /// `ansible-playbook` with `cfg`, a fresh control_path_dir (so every run makes its own
    /// connections, as squall does), checking the exit code and that PLAY RECAP shows
    /// `ok=expected_ok`, no failure and nothing unreachable on every host. The control
    /// masters it leaves persisting are stopped afterwards, off the clock.
    fn run_ansible(
        &self,
        cfg: &Path,
        playbook: &Path,
        extra: &[&str],
        expected_ok: usize,
    ) -> Result<Duration> {
        let n = self.next_id();
        let control_dir = self.work.join(format!("cp{n}"));
        fs::create_dir_all(&control_dir)?;
        let mut cmd = Command::new(self.venv.bin("ansible-playbook"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ANSIBLE_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg(playbook)
            .args(extra)
            .env("ANSIBLE_CONFIG", cfg)
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", &control_dir)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOME", self.work.join("ansible-home"))
            .current_dir(&self.work);
        let result = timed(&mut cmd, "ansible-playbook");
        let closed = self.close_masters(&control_dir);
        let (out, took) = result?;
        ensure!(
            out.status.success(),
            "ansible-playbook {} ({}) failed:\n{}",
            playbook.display(),
            cfg.display(),
            squall_tests::text(&out)
        );
        check_recap(
            &String::from_utf8_lossy(&out.stdout),
            self.fleet.hosts.iter().map(|h| h.name.as_str()),
            expected_ok,
        )
        .with_context(|| format!("ansible-playbook output:\n{}", squall_tests::text(&out)))?;
        closed?;
        Ok(took)
    }

    /// Stops every control master with a socket in `dir` and removes `dir`.
    fn close_masters(&self, dir: &Path) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let sock = entry?.path();
            stop_master(&sock);
        }
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
    }

    /// `ssh` to host `i` with `pre` options before the fleet's own, running `remote`.
    fn ssh(&self, i: usize, pre: &[&str], remote: &[&str]) -> Command {
        let argv = self.fleet.ssh_argv(i, remote);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(pre).args(&argv[1..]).stdin(Stdio::null());
        cmd
    }

    /// `ssh -M -S SOCK -o ControlPersist=60s -N -f host`: returns once logged in, the
    /// master in the background.
    fn start_master(&self, i: usize, sock: &Path) -> Result<()> {
        let sock = sock.to_str().context("a UTF-8 socket path")?;
        let out = self
            .ssh(
                i,
                &["-M", "-S", sock, "-o", CONTROL_PERSIST, "-N", "-f"],
                &[],
            )
            .stdout(Stdio::null())
            .output()
            .context("running ssh -M")?;
        ensure!(
            out.status.success(),
            "ssh -M to {} failed:\n{}",
            self.fleet.hosts[i].name,
            squall_tests::text(&out)
        );
        Ok(())
    }

    /// The raw floor: per host in parallel, the workload's commands one after another
    /// through a ControlMaster, set up before the clock starts (`connect == false`, and
    /// checked to answer) or inside the timed region (`connect == true`).
    fn run_floor(&self, wl: &Workload, connect: bool) -> Result<Duration> {
        let n = self.next_id();
        let socks: Vec<PathBuf> = (0..HOSTS)
            .map(|i| self.work.join(format!("m{n}-{i}")))
            .collect();
        let socks = &socks;
        let result = (|| {
            if !connect {
                per_host(|i| {
                    self.start_master(i, &socks[i])?;
                    let sock = socks[i].to_str().context("a UTF-8 socket path")?;
                    let out = self.ssh(i, &["-S", sock, "-O", "check"], &[]).output()?;
                    ensure!(
                        out.status.success(),
                        "no control master answers at {sock}: {}",
                        squall_tests::text(&out)
                    );
                    Ok(())
                })?;
            }
            let start = Instant::now();
            per_host(|i| {
                if connect {
                    self.start_master(i, &socks[i])?;
                }
                let sock = socks[i].to_str().context("a UTF-8 socket path")?;
                for argv in &wl.tasks {
                    let out = self
                        .ssh(i, &["-S", sock, "-o", "ControlMaster=no"], argv)
                        .output()
                        .context("running ssh")?;
                    ensure!(
                        out.status.success(),
                        "ssh -S to {} running {argv:?} failed:\n{}",
                        self.fleet.hosts[i].name,
                        squall_tests::text(&out)
                    );
                }
                Ok(())
            })?;
            Ok(start.elapsed())
        })();
        for sock in socks {
            stop_master(sock);
        }
        result
    }
}

/// Asks the control master at `sock` to exit (if there is one).
fn stop_master(sock: &Path) {
    if !sock.exists() {
        return;
    }
    let _ = Command::new("ssh")
        .args(["-F", "/dev/null", "-S"])
        .arg(sock)
        .args(["-O", "exit", "placeholder"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `f(i)` for every host index on its own thread; the first error, if any.
fn per_host<F>(f: F) -> Result<()>
where
    F: Fn(usize) -> Result<()> + Sync,
{
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..HOSTS).map(|i| s.spawn(move || f(i))).collect();
        let mut first = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a per-host thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
}

/// Runs `cmd` to the end (stdin null, output captured) in its own process group, which is
/// killed after [`RUN_TIMEOUT`]; returns the output and the wall time from spawn to exit.
fn timed(cmd: &mut Command, what: &str) -> Result<(Output, Duration)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let pgid = child.id();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(RUN_TIMEOUT) == Err(RecvTimeoutError::Timeout) {
            // Our child's own group: it and whatever it started that stayed in it.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            return true;
        }
        false
    });
    let out = child.wait_with_output();
    let took = start.elapsed();
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(false);
    let out = out.with_context(|| format!("waiting for {what}"))?;
    ensure!(
        !killed,
        "{what} did not finish within {RUN_TIMEOUT:?} and was killed:\n{}",
        squall_tests::text(&out)
    );
    Ok((out, took))
}

/// Checks that PLAY RECAP has every host with `ok=expected_ok`, `unreachable=0`,
/// `failed=0`.
fn check_recap<'h>(
    stdout: &str,
    hosts: impl Iterator<Item = &'h str>,
    expected_ok: usize,
) -> Result<()> {
    let recap = stdout
        .split_once("PLAY RECAP")
        .map(|(_, r)| r)
        .context("no PLAY RECAP in ansible-playbook's output")?;
    let mut counts: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for line in recap.lines() {
        let mut words = line.split_whitespace();
        let (Some(host), Some(":")) = (words.next(), words.next()) else {
            continue;
        };
        let fields = words
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        counts.insert(host, fields);
    }
    for host in hosts {
        let c = counts
            .get(host)
            .with_context(|| format!("{host} missing from PLAY RECAP"))?;
        let get = |k: &str| c.get(k).copied().unwrap_or(usize::MAX);
        ensure!(
            get("ok") == expected_ok && get("failed") == 0 && get("unreachable") == 0,
            "{host}: PLAY RECAP {c:?}, expected ok={expected_ok}, failed=0, unreachable=0"
        );
    }
    Ok(())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where a squall run's wall time went, from `run.json`'s phase marks: process start to
/// the run's start, each phase to the next mark (the last to the run's end), and the
/// run's end to process exit.
fn phase_times(rec: &serde_json::Value, spawned_ms: u64, exited_ms: u64) -> Phases {
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
struct Report {
    title: &'static str,
    samples: Vec<Vec<f64>>,
    phases: Vec<Phases>,
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

impl Report {
    fn med(&self, c: Contender) -> f64 {
        let i = CONTENDERS.iter().position(|x| *x == c).unwrap_or_default();
        median(&self.samples[i])
    }

    fn markdown(&self) -> String {
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
