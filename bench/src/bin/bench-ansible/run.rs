//! Running every contender on the fleet: the inventories, ansible.cfg files and playbooks
//! they read, the probe that Mitogen really runs the tasks, the warm-ups and the timed
//! rounds in a rotating order, and the check of every run (squall's exit code and
//! `run.json`, ansible's PLAY RECAP, every floor `ssh`'s exit code).
//!
//! It starts no server (the fleet is `squall_tests::sshd`'s) and prints no report (that
//! is `report.rs`'s); progress goes to stderr.

use crate::contender::{CONTENDERS, Contender, Workload};
use crate::process::{epoch_ms, per_host, stop_master, timed};
use crate::report::{Phases, Report, phase_times};
use crate::venv::Venv;
use crate::{CONTROL_PERSIST, GROUP, HOSTS, SYSTEM_PYTHON};
use anyhow::{Context, Result, ensure};
use squall_tests::sshd::{SshFleet, TEST_USER};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The fleet, the files every contender reads, and the binaries.
pub struct Bench<'a> {
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

impl<'a> Bench<'a> {
    pub fn new(fleet: &'a SshFleet, squall: PathBuf, agent: PathBuf, venv: Venv) -> Result<Self> {
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
    pub fn probe_ansible(&self) -> Result<()> {
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

    pub fn run_workload(
        &self,
        wl: &Workload,
        runs: usize,
        squall_log: Option<&str>,
    ) -> Result<Report> {
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
