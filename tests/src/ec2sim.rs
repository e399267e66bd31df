//! An EC2 simulator on loopback: it makes moto's EC2 instances real enough to run
//! squall exactly as in production.
//!
//! moto holds the API state; its VPC and subnet use a loopback CIDR (127.200.0.0/16),
//! so every instance's `PrivateIpAddress` is a loopback address. A background thread
//! watches moto (DescribeInstances, every [`POLL`]) and **boots** each new instance:
//!
//! - a sandbox (bubblewrap, as root) with its own PID, UTS and IPC namespaces and its own
//!   view of every path an instance writes: `/etc/ssh`, `/home`, `/root`, `/tmp`, `/opt`,
//!   `/var/log`, `/var/lib` are bound to the instance's folder under the simulator's
//!   root, `/run` is a fresh tmpfs, and the rest of the host is mounted read-only. The
//!   sandbox keeps only the capabilities sshd and cloud-init-style scripts need (no
//!   CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_SYS_MODULE), and a
//!   `reboot(2)` from inside a PID namespace only ends that namespace;
//! - `poweroff`, `halt`, `reboot`, `shutdown` and `systemctl poweroff|halt|reboot` are a
//!   shim (bound over the host's `systemctl`, which the others link to, and first on
//!   `PATH`) that only tells the simulator "this instance shut down"; the simulator
//!   then terminates it in moto (shutdown behaviour terminate) and ends its processes.
//!   `systemctl reload ssh|sshd` signals the instance's own sshd;
//! - "boot": an initial host key, the instance's sshd listening on its private IP port
//!   22 (the dedicated login user [`LOGIN_USER`] only), then the user-data run as root
//!   as cloud-init would (output in `/var/log/cloud-init-output.log`), with the AWS
//!   SDK's environment (`AWS_ENDPOINT_URL` and credentials for moto, and
//!   `AWS_EC2_METADATA_SERVICE_ENDPOINT` for a per-instance IMDSv2, [`crate::imds`]) and
//!   the AWS CLI on `PATH`.
//!
//! An instance terminated in moto (by anyone) has every process ended: the sandbox's
//! PID namespace dies with its first process. Faults for tests: [`Simulator::crash`]
//! (processes killed at once, the instance terminated in moto as a hardware loss would
//! leave it), [`Simulator::cut_off`] (its traffic dropped by an nftables rule, processes
//! alive), [`Simulator::delay_boot`] (a group boots late). Dropping the simulator stops
//! the watcher, kills every sandbox it started (by PID; `--die-with-parent` covers a
//! test process that dies) and removes its nftables table.

use aws_sdk_ec2::types::InstanceStateName;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The one login user of every simulated instance's sshd (created by
/// scripts/install-test-deps).
pub const LOGIN_USER: &str = "squall-sim";
/// How often moto is polled.
pub const POLL: Duration = Duration::from_millis(250);
/// The longest a simulator runs, whatever the test does.
const MAX_LIFETIME: Duration = Duration::from_secs(1200);
/// Environment marker on every process of a simulated instance.
pub const INSTANCE_ENV: &str = "SQUALL_SIM_INSTANCE";

/// The venv scripts/install-test-deps installs the AWS CLI into.
pub fn awscli_venv() -> PathBuf {
    std::env::var_os("SQUALL_AWSCLI_VENV").map_or_else(
        || PathBuf::from("/var/tmp/squall-awscli-venv"),
        PathBuf::from,
    )
}

/// Whether the simulator can run here (bubblewrap, nft, the login user, the AWS CLI).
/// A missing piece skips the test ([`crate::skip`]: a failure under CI).
pub fn available() -> bool {
    let missing: Vec<String> = [
        ("/usr/bin/bwrap", "bubblewrap"),
        ("/usr/sbin/nft", "nftables"),
        ("/usr/sbin/sshd", "openssh-server"),
    ]
    .iter()
    .filter(|(p, _)| !Path::new(p).exists())
    .map(|(_, what)| (*what).to_owned())
    .chain(
        (!awscli_venv().join("bin/aws").is_file())
            .then(|| format!("the AWS CLI at {}", awscli_venv().display())),
    )
    .chain(
        uid_of(LOGIN_USER)
            .is_none()
            .then(|| format!("the user {LOGIN_USER}")),
    )
    .collect();
    if missing.is_empty() {
        return true;
    }
    crate::skip(&format!(
        "the EC2 simulator needs {} (run scripts/install-test-deps)",
        missing.join(", ")
    ));
    false
}

fn uid_of(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user) && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

/// What happened to an instance, in order, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    Booted {
        id: String,
        ip: String,
    },
    /// The instance ran a power-off command (the shim's line).
    PoweredOff {
        id: String,
        how: String,
    },
    /// A spot interruption notice is served on its metadata service.
    SpotNotice {
        id: String,
    },
    /// Terminated in moto, by anyone: its processes were ended.
    Ended {
        id: String,
    },
    Crashed {
        id: String,
    },
    /// Some of its processes were frozen (SIGSTOP).
    Frozen {
        id: String,
    },
    CutOff {
        id: String,
    },
}

#[derive(Debug)]
struct SimInstance {
    ip: String,
    dir: PathBuf,
    group: String,
    sandbox: Child,
    imds: crate::imds::Imds,
    ended: bool,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, SimInstance>,
    /// Instances seen but not booted yet, with when they were first seen.
    seen: BTreeMap<String, Instant>,
    boot_delays: BTreeMap<String, Duration>,
    events: Vec<(Instant, SimEvent)>,
    cut: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    moto_env: Vec<(&'static str, String)>,
    /// Used by the watcher thread only (its connections live on its runtime).
    ec2: aws_sdk_ec2::Client,
    /// For clients of other runtimes (the test's).
    ec2_conf: aws_sdk_ec2::Config,
    state: Mutex<State>,
    nft_table: String,
    error: Mutex<Option<String>>,
}

/// A running simulator. See the module docs.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Simulator {
    /// Starts watching `moto`; instances live under `root`.
    pub fn start(moto: &crate::moto::Moto, root: &Path) -> Simulator {
        Simulator::start_with_env(moto, root, &[])
    }

    /// Like [`Simulator::start`], with extra environment variables for every instance's
    /// boot (as an image could set them).
    pub fn start_with_env(
        moto: &crate::moto::Moto,
        root: &Path,
        env: &[(&'static str, String)],
    ) -> Simulator {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        // Built without a runtime: the simulator may start inside a test's.
        let ec2_conf = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .endpoint_url(moto.endpoint())
            .region(aws_sdk_ec2::config::Region::new(crate::moto::REGION))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .build();
        let ec2 = aws_sdk_ec2::Client::from_conf(ec2_conf.clone());
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            moto_env: moto.env().into_iter().chain(env.iter().cloned()).collect(),
            ec2,
            ec2_conf,
            state: Mutex::new(State::default()),
            nft_table: format!(
                "squall_sim_{}_{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
            error: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || watch(&shared, &stop))
        };
        Simulator {
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// Instances of `group` (their `squall:group` tag) boot `delay` after they appear.
    pub fn delay_boot(&self, group: &str, delay: Duration) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.boot_delays.insert(group.to_owned(), delay);
        }
    }

    /// Everything that happened so far, in order.
    pub fn events(&self) -> Vec<SimEvent> {
        self.shared
            .state
            .lock()
            .map(|s| s.events.iter().map(|(_, e)| e.clone()).collect())
            .unwrap_or_default()
    }

    /// When each event happened.
    pub fn timed_events(&self) -> Vec<(Instant, SimEvent)> {
        self.shared
            .state
            .lock()
            .map(|s| s.events.clone())
            .unwrap_or_default()
    }

    /// The booted instances: id -> (private IP, squall:group).
    pub fn booted(&self) -> BTreeMap<String, (String, String)> {
        self.shared
            .state
            .lock()
            .map(|s| {
                s.instances
                    .iter()
                    .map(|(id, i)| (id.clone(), (i.ip.clone(), i.group.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The folder holding an instance's own view of its writable paths.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.shared.root.join(id)
    }

    /// Why the watcher failed, if it did.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().ok().and_then(|e| e.clone())
    }

    /// Kills every process of `id` at once and terminates it in moto, as the loss of
    /// its hardware would.
    pub async fn crash(&self, id: &str) {
        if let Ok(mut s) = self.shared.state.lock() {
            if let Some(i) = s.instances.get_mut(id) {
                kill_sandbox(i);
            }
            s.events
                .push((Instant::now(), SimEvent::Crashed { id: id.to_owned() }));
        }
        aws_sdk_ec2::Client::from_conf(self.shared.ec2_conf.clone())
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .expect("terminating the crashed instance in moto");
    }

    /// Serves a spot interruption notice on `id`'s metadata service now, then (as EC2
    /// does two minutes later) ends it `terminate_after` from now: processes killed,
    /// the instance terminated in moto. A background thread does the second part.
    pub fn spot_interrupt(&self, id: &str, terminate_after: Duration) {
        let time = jiff::Timestamp::now()
            + jiff::SignedDuration::try_from(terminate_after).unwrap_or_default();
        if let Ok(mut s) = self.shared.state.lock() {
            let Some(i) = s.instances.get(id) else {
                panic!("{id} is not a booted instance");
            };
            let body = format!(
                r#"{{"action": "terminate", "time": "{}"}}"#,
                time.strftime("%Y-%m-%dT%H:%M:%SZ")
            );
            i.imds.notify(crate::imds::INSTANCE_ACTION, body);
            s.events
                .push((Instant::now(), SimEvent::SpotNotice { id: id.to_owned() }));
        }
        let shared = self.shared.clone();
        let id = id.to_owned();
        std::thread::spawn(move || {
            std::thread::sleep(terminate_after);
            if let Ok(mut s) = shared.state.lock() {
                if let Some(i) = s.instances.get_mut(&id) {
                    kill_sandbox(i);
                }
                s.events
                    .push((Instant::now(), SimEvent::Crashed { id: id.clone() }));
            }
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let ec2 = aws_sdk_ec2::Client::from_conf(shared.ec2_conf.clone());
            let _ = rt.block_on(ec2.terminate_instances().instance_ids(&id).send());
        });
    }

    /// Drops every packet to or from `id`'s private IP; its processes stay alive.
    pub fn cut_off(&self, id: &str) {
        let Some(ip) = self
            .shared
            .state
            .lock()
            .ok()
            .and_then(|s| s.instances.get(id).map(|i| i.ip.clone()))
        else {
            panic!("{id} is not a booted instance");
        };
        let table = &self.shared.nft_table;
        let first = self
            .shared
            .state
            .lock()
            .map(|s| s.cut.is_empty())
            .unwrap_or(true);
        if first {
            nft(&["add", "table", "inet", table]);
            nft(&[
                "add",
                "chain",
                "inet",
                table,
                "out",
                "{ type filter hook output priority 0; policy accept; }",
            ]);
        }
        nft(&[
            "add", "rule", "inet", table, "out", "ip", "daddr", &ip, "drop",
        ]);
        nft(&[
            "add", "rule", "inet", table, "out", "ip", "saddr", &ip, "drop",
        ]);
        if let Ok(mut s) = self.shared.state.lock() {
            s.cut.push(ip);
            s.events
                .push((Instant::now(), SimEvent::CutOff { id: id.to_owned() }));
        }
    }

    /// Freezes (SIGSTOP) the processes of instance `id` whose command line contains
    /// `needle`, as a hung process would be: the instance stays running, its process
    /// answers nothing. Returns their PIDs (the simulator's own descendants).
    pub fn freeze(&self, id: &str, needle: &str) -> Vec<u32> {
        let dir = self.instance_dir(id).to_string_lossy().into_owned();
        let pids: Vec<u32> = self
            .live_processes()
            .into_iter()
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.contains(needle)
                    && std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                        .is_ok_and(|m| m.contains(&dir))
            })
            .collect();
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status();
        }
        if let Ok(mut s) = self.shared.state.lock() {
            s.events
                .push((Instant::now(), SimEvent::Frozen { id: id.to_owned() }));
        }
        pids
    }

    /// Live processes (PIDs) of the instances this simulator booted: zero once every
    /// instance ended. A process is an instance's when its mount table holds this
    /// simulator's root (every sandbox binds its folders from there); namespace ids are
    /// not used, since the kernel reuses them once a namespace is gone.
    pub fn live_processes(&self) -> Vec<u32> {
        let marker = self
            .shared
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if marker.is_empty() {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let own = std::process::id();
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != own)
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                    .is_ok_and(|m| m.contains(&marker))
                    && squall_worker::pid_alive(*pid)
            })
            .collect()
    }
}

fn nft(args: &[&str]) {
    let out = Command::new("/usr/sbin/nft")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running nft");
    assert!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kill_sandbox(i: &mut SimInstance) {
    if !i.ended {
        // The sandbox's PID-namespace init dies with it (--die-with-parent), and every
        // process of the namespace with that init.
        let _ = i.sandbox.kill();
        let _ = i.sandbox.wait();
        i.ended = true;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Even after a panic elsewhere (a poisoned lock): every sandbox ends, and the
        // nftables table goes if it was ever made.
        let mut s = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for i in s.instances.values_mut() {
            kill_sandbox(i);
        }
        drop(s);
        let _ = Command::new("/usr/sbin/nft")
            .args(["delete", "table", "inet", &self.shared.nft_table])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The watcher: polls moto, boots, ends and powers off instances until stopped.
fn watch(shared: &Arc<Shared>, stop: &AtomicBool) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            record_error(shared, format!("no runtime: {e}"));
            return;
        }
    };
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
        if let Err(e) = rt.block_on(step(shared)) {
            record_error(shared, e);
        }
        std::thread::sleep(POLL);
    }
    // The sandboxes were spawned by this thread (their --die-with-parent follows it):
    // end them here, on the record, rather than by its exit.
    if let Ok(mut s) = shared.state.lock() {
        let now = Instant::now();
        let ids: Vec<String> = s.instances.keys().cloned().collect();
        for id in ids {
            if let Some(i) = s.instances.get_mut(&id)
                && !i.ended
            {
                kill_sandbox(i);
                s.events.push((now, SimEvent::Ended { id }));
            }
        }
    }
}

fn record_error(shared: &Shared, e: String) {
    eprintln!("ec2 simulator: {e}");
    if let Ok(mut slot) = shared.error.lock() {
        slot.get_or_insert(e);
    }
}

/// One look at moto.
async fn step(shared: &Arc<Shared>) -> Result<(), String> {
    let mut found = Vec::new();
    let mut pages = shared.ec2.describe_instances().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("DescribeInstances: {e:?}"))?;
        for r in page.reservations() {
            for i in r.instances() {
                let (Some(id), Some(state)) = (i.instance_id(), i.state().and_then(|s| s.name()))
                else {
                    continue;
                };
                let group = i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("squall:group"))
                    .and_then(|t| t.value())
                    .unwrap_or("")
                    .to_owned();
                found.push((
                    id.to_owned(),
                    state.clone(),
                    i.private_ip_address().unwrap_or("").to_owned(),
                    group,
                ));
            }
        }
    }
    let mut power_offs = Vec::new();
    let mut to_boot = Vec::new();
    {
        let mut s = shared.state.lock().map_err(|e| e.to_string())?;
        let now = Instant::now();
        for (id, state, ip, group) in &found {
            let live = matches!(
                state,
                InstanceStateName::Pending | InstanceStateName::Running
            );
            match s.instances.get_mut(id) {
                Some(inst) if !live && !inst.ended => {
                    kill_sandbox(inst);
                    s.events.push((now, SimEvent::Ended { id: id.clone() }));
                }
                Some(inst) if !inst.ended => {
                    // A power-off from inside, or an init that died by itself.
                    let power = inst.dir.join("ctl/power");
                    let exited = matches!(inst.sandbox.try_wait(), Ok(Some(_)));
                    if power.exists() || exited {
                        let how = std::fs::read_to_string(&power)
                            .map(|t| t.lines().next().unwrap_or("").to_owned())
                            .unwrap_or_else(|_| "the instance's init exited".to_owned());
                        kill_sandbox(inst);
                        s.events.push((
                            now,
                            SimEvent::PoweredOff {
                                id: id.clone(),
                                how,
                            },
                        ));
                        power_offs.push(id.clone());
                    }
                }
                Some(_) => {}
                None if live && !ip.is_empty() => {
                    let first_seen = *s.seen.entry(id.clone()).or_insert(now);
                    let delay = s.boot_delays.get(group).copied().unwrap_or_default();
                    if now.duration_since(first_seen) >= delay {
                        to_boot.push((id.clone(), ip.clone(), group.clone()));
                    }
                }
                None => {}
            }
        }
    }
    for id in power_offs {
        // Shutdown behaviour terminate (squall launches everything so).
        shared
            .ec2
            .terminate_instances()
            .instance_ids(&id)
            .send()
            .await
            .map_err(|e| format!("TerminateInstances {id}: {e:?}"))?;
    }
    for (id, ip, group) in to_boot {
        let user_data = user_data(shared, &id).await?;
        let inst = boot(shared, &id, &ip, &group, &user_data)?;
        let mut s = shared.state.lock().map_err(|e| e.to_string())?;
        s.instances.insert(id.clone(), inst);
        s.events.push((Instant::now(), SimEvent::Booted { id, ip }));
    }
    Ok(())
}

async fn user_data(shared: &Shared, id: &str) -> Result<Vec<u8>, String> {
    let out = shared
        .ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .map_err(|e| format!("DescribeInstanceAttribute {id}: {e:?}"))?;
    match out.user_data().and_then(|v| v.value()) {
        Some(b64) => aws_smithy_types::base64::decode(b64).map_err(|e| e.to_string()),
        None => Ok(Vec::new()),
    }
}

/// The power-management shim (see the module docs).
const SHIM: &str = r#"#!/bin/sh
# squall EC2 simulator: power management inside a simulated instance. It never touches
# the host: it tells the simulator, which terminates the instance in moto.
name=$(basename "$0")
case "$name" in
  systemctl)
    case "${1:-}" in
      poweroff|halt|reboot|kexec|suspend|hibernate) echo "systemctl $*" >>/run/squall-sim/power ;;
      reload|restart|reload-or-restart|try-reload-or-restart)
        case "${2:-}" in
          ssh|sshd|ssh.service|sshd.service) kill -HUP "$(cat /run/sshd.pid)" ;;
          *) echo "simulated systemctl: unit ${2:-} not found" >&2; exit 5 ;;
        esac ;;
      *) echo "simulated systemctl: $* ignored" >&2 ;;
    esac ;;
  shutdown)
    case "${1:-}" in
      -c) ;;
      *) echo "shutdown $*" >>/run/squall-sim/power ;;
    esac ;;
  *) echo "$name $*" >>/run/squall-sim/power ;;
esac
"#;

/// What the instance runs as its first process: sshd, then the user-data, then it
/// waits (the instance lives until it is ended).
const BOOT: &str = r#"#!/bin/sh
echo "PATH=$PATH" >/run/squall-sim/boot.env
mkdir -p /run/sshd /var/log /var/lib
chmod 0755 /run/sshd
/usr/sbin/sshd -f /etc/ssh/sshd_config -E /var/log/sshd.log
if [ -s /run/squall-sim/user-data ]; then
  sh /run/squall-sim/user-data >/var/log/cloud-init-output.log 2>&1
  echo $? >/run/squall-sim/user-data.exit
fi
while :; do sleep 3600; done
"#;

/// Capabilities left to an instance: enough for sshd and root's boot scripts, nothing
/// that reconfigures the host.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
];

/// The instance's own writable paths: (folder under the instance dir, path inside).
const OWN_PATHS: &[(&str, &str)] = &[
    ("etc-ssh", "/etc/ssh"),
    ("home", "/home"),
    ("root", "/root"),
    ("tmp", "/tmp"),
    ("opt", "/opt"),
    ("var-log", "/var/log"),
    ("var-lib", "/var/lib"),
];

fn boot(
    shared: &Shared,
    id: &str,
    ip: &str,
    group: &str,
    user_data: &[u8],
) -> Result<SimInstance, String> {
    let io = |what: &str, e: std::io::Error| format!("booting {id}: {what}: {e}");
    let dir = shared.root.join(id);
    for (own, _) in OWN_PATHS {
        std::fs::create_dir_all(dir.join(own)).map_err(|e| io(own, e))?;
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| io("tmp", e))?;
    let ctl = dir.join("ctl");
    std::fs::create_dir_all(ctl.join("bin")).map_err(|e| io("ctl", e))?;
    // The login user's home, owned by it.
    let (uid, gid) = uid_of(LOGIN_USER).ok_or_else(|| format!("no user {LOGIN_USER}"))?;
    let home = dir.join("home").join(LOGIN_USER);
    std::fs::create_dir_all(&home).map_err(|e| io("home", e))?;
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).map_err(|e| io("chown", e))?;
    // sshd: the image's own host key (user-data may replace it), listening on the
    // private IP only.
    let etc_ssh = dir.join("etc-ssh");
    let key = etc_ssh.join("ssh_host_ed25519_key");
    if !key.exists() {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io("ssh-keygen", e))?;
        if !out.status.success() {
            return Err(format!(
                "ssh-keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let config = format!(
        "ListenAddress {ip}:22\nHostKey /etc/ssh/ssh_host_ed25519_key\nPidFile /run/sshd.pid\n\
         UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\nAuthorizedKeysFile .ssh/authorized_keys\n\
         AllowUsers {LOGIN_USER}\nMaxStartups 200\nMaxSessions 200\nLogLevel VERBOSE\n"
    );
    std::fs::write(etc_ssh.join("sshd_config"), config).map_err(|e| io("sshd_config", e))?;
    let write_exec = |path: PathBuf, text: &str| -> Result<(), String> {
        std::fs::write(&path, text).map_err(|e| io("write", e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("chmod", e))
    };
    for name in ["poweroff", "halt", "reboot", "shutdown", "systemctl"] {
        write_exec(ctl.join("bin").join(name), SHIM)?;
    }
    write_exec(ctl.join("boot.sh"), BOOT)?;
    std::fs::write(ctl.join("user-data"), user_data).map_err(|e| io("user-data", e))?;
    let imds = crate::imds::Imds::start(id);

    let mut cmd = Command::new("/usr/bin/bwrap");
    cmd.args(["--die-with-parent", "--new-session"])
        .args(["--unshare-pid", "--unshare-uts", "--unshare-ipc"])
        .args(["--hostname", &format!("ip-{}", ip.replace('.', "-"))])
        .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
        .args(["--tmpfs", "/run"]);
    for (own, inside) in OWN_PATHS {
        cmd.arg("--bind").arg(dir.join(own)).arg(inside);
    }
    cmd.arg("--bind").arg(&ctl).arg("/run/squall-sim");
    // The host's power commands are links to systemctl: the shim stands in for it
    // wherever it is.
    let mut covered = std::collections::BTreeSet::new();
    for p in [
        "/usr/bin/systemctl",
        "/bin/systemctl",
        "/usr/sbin/poweroff",
        "/usr/sbin/halt",
        "/usr/sbin/reboot",
        "/usr/sbin/shutdown",
        "/sbin/poweroff",
        "/sbin/halt",
        "/sbin/reboot",
        "/sbin/shutdown",
    ] {
        if let Ok(real) = std::fs::canonicalize(p)
            && covered.insert(real.clone())
        {
            cmd.arg("--ro-bind")
                .arg(ctl.join("bin/systemctl"))
                .arg(real);
        }
    }
    cmd.args(["--cap-drop", "ALL"]);
    for c in CAPS {
        cmd.args(["--cap-add", c]);
    }
    let path = format!(
        "/run/squall-sim/bin:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        awscli_venv().join("bin").display()
    );
    cmd.arg("--clearenv")
        .args(["--setenv", "PATH", &path])
        .args(["--setenv", "HOME", "/root"])
        .args(["--setenv", "LANG", "C.UTF-8"])
        .args(["--setenv", INSTANCE_ENV, id]);
    for (k, v) in &shared.moto_env {
        cmd.args(["--setenv", k, v]);
    }
    let (k, v) = imds.env();
    cmd.args(["--setenv", k, &v]);
    cmd.args(["/bin/sh", "/run/squall-sim/boot.sh"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join("sandbox.log"))
                .map(Stdio::from)
                .map_err(|e| io("sandbox.log", e))?,
        );
    std::fs::write(ctl.join("sandbox.command"), format!("{cmd:?}\n"))
        .map_err(|e| io("sandbox.command", e))?;
    let sandbox = cmd.spawn().map_err(|e| io("bwrap", e))?;
    Ok(SimInstance {
        ip: ip.to_owned(),
        dir,
        group: group.to_owned(),
        sandbox,
        imds,
        ended: false,
    })
}
