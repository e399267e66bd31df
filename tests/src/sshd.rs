//! Real OpenSSH `sshd` servers on loopback for tests, stopped by PID; it installs nothing and never touches the system sshd.
//!
//! [`SshFleet::start`] starts N of them on distinct loopback addresses, each logging in
//! only the dedicated user `squall-test` with one client key; stopping one kills its
//! listener and every connection/session process it spawned. Installing sshd and the user
//! is scripts/install-test-deps's job; the system sshd service and `/etc/ssh` are left
//! alone, and nothing here reaches an address outside 127.0.0.0/8.
//!
//! Use:
//! ```ignore
//! if !sshd::available() { return; }
//! let fleet = sshd::SshFleet::start(3);
//! std::fs::write(home.join("inventory.yaml"), fleet.inventory_yaml(&[("workers", 0..3)]))?;
//! ```
//! Needs root (sshd must switch to the login user), `/usr/sbin/sshd`, `ssh`, `ssh-keygen`
//! and the user `squall-test` with an unlocked account (sshd with `UsePAM no` refuses a
//! locked one, even for key logins).

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The login user every test sshd accepts, and the only one.
pub const TEST_USER: &str = "squall-test";

const SSHD: &str = "/usr/sbin/sshd";
const PRIVSEP_DIR: &str = "/run/sshd";
/// How long a started sshd may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports to try when a freshly picked free port was taken before sshd bound it.
const PORT_TRIES: u32 = 5;

/// Whether sshd, the ssh client tools and the test user are there (and we are root).
///
/// If anything is missing the test is skipped ([`crate::skip`]: under CI a failure
/// naming `scripts/install-test-deps`, so the tests never pass vacuously), and this is
/// false, so the caller can return early.
pub fn available() -> bool {
    static MISSING: OnceLock<Vec<String>> = OnceLock::new();
    let missing = MISSING.get_or_init(missing_requirements);
    if missing.is_empty() {
        return true;
    }
    crate::skip(&format!(
        "the SSH tests need: {}. Run scripts/install-test-deps (as root) to set the machine up",
        missing.join("; ")
    ));
    false
}

fn missing_requirements() -> Vec<String> {
    let mut missing = Vec::new();
    if !is_executable(Path::new(SSHD)) {
        missing.push(format!("{SSHD} (Debian package openssh-server)"));
    }
    for tool in ["ssh", "ssh-keygen"] {
        if !on_path(tool) {
            missing.push(format!("`{tool}` on PATH (Debian package openssh-client)"));
        }
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    if !passwd
        .lines()
        .any(|l| l.split(':').next() == Some(TEST_USER))
    {
        missing.push(format!("the user {TEST_USER}"));
    } else if let Ok(shadow) = fs::read_to_string("/etc/shadow") {
        let locked = shadow.lines().any(|l| {
            let mut f = l.split(':');
            f.next() == Some(TEST_USER) && f.next().is_some_and(|p| p.starts_with('!'))
        });
        if locked {
            missing.push(format!(
                "an unlocked account {TEST_USER} (its password field starts with '!': sshd refuses it)"
            ));
        }
    }
    if !is_root() {
        missing.push("root (sshd must switch to the login user)".to_string());
    }
    missing
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| is_executable(&d.join(tool))))
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// N sshd servers sharing one scratch dir, one client key and one known_hosts file.
///
/// Dropping it kills every sshd it started and all their descendants, and removes the
/// dir unless the thread is panicking (then the dir is kept, logs included, and printed).
#[derive(Debug)]
pub struct SshFleet {
    /// The scratch dir, `/tmp/sqsh-PID-N` (short: ssh control sockets have path limits).
    pub dir: PathBuf,
    /// The private key that logs in as [`TEST_USER`] on every host.
    pub client_key: PathBuf,
    /// `[ADDR]:PORT ssh-ed25519 ...` for every host.
    pub known_hosts: PathBuf,
    pub hosts: Vec<Sshd>,
}

/// One sshd of a fleet.
#[derive(Debug)]
pub struct Sshd {
    /// `h0`, `h1`, ...
    pub name: String,
    /// A loopback address of its own, e.g. `127.0.23.4`.
    pub address: String,
    pub port: u16,
    /// `ssh-ed25519 AAAA...` (no comment).
    pub host_public_key: String,
    /// The sshd config, `DIR/sshd_I.conf`.
    pub config: PathBuf,
    /// sshd's stderr (LogLevel VERBOSE), appended to across restarts: `DIR/sshd_I.log`.
    pub log: PathBuf,
    child: Option<Child>,
    /// The log's length when the current sshd was spawned (its own lines follow).
    log_mark: u64,
}

impl Sshd {
    /// The listener's pid while it runs (it is this harness's child).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the listener was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `ADDR:PORT`.
    pub fn socket_addr(&self) -> SocketAddr {
        format!("{}:{}", self.address, self.port)
            .parse()
            .expect("a loopback address and port")
    }
}

impl SshFleet {
    /// Starts `n` sshd servers and waits until each accepts TCP connections. Panics with
    /// a clear message (sshd's config check or the tail of its log) on failure.
    pub fn start(n: usize) -> SshFleet {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/sqsh-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        // The login user must traverse it to read authorized_keys.
        set_mode(&dir, 0o755);
        fs::create_dir_all(PRIVSEP_DIR).unwrap_or_else(|e| panic!("creating {PRIVSEP_DIR}: {e}"));

        let client_key = dir.join("client_key");
        keygen(&client_key);
        let authorized_keys = dir.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized_keys)
            .unwrap_or_else(|e| panic!("writing {}: {e}", authorized_keys.display()));
        set_mode(&authorized_keys, 0o644);

        let mut fleet = SshFleet {
            known_hosts: dir.join("known_hosts"),
            client_key,
            dir,
            hosts: Vec::with_capacity(n),
        };
        for i in 0..n {
            let key = fleet.dir.join(format!("host_{i}"));
            keygen(&key);
            let host_public_key = public_key(&key.with_extension("pub"));
            let address = next_address();
            fleet.hosts.push(Sshd {
                name: format!("h{i}"),
                port: free_port(&address),
                address,
                host_public_key,
                config: fleet.dir.join(format!("sshd_{i}.conf")),
                log: fleet.dir.join(format!("sshd_{i}.log")),
                child: None,
                log_mark: 0,
            });
        }
        // Spawn all, then wait for all: the servers come up concurrently.
        for i in 0..n {
            fleet.write_config(i);
            check_config(&fleet.hosts[i].config);
            fleet.spawn(i);
        }
        for i in 0..n {
            let mut tries = 1;
            loop {
                match fleet.wait_ready(i) {
                    Ok(()) => break,
                    Err(Failure::AddrInUse(_)) if tries < PORT_TRIES => {
                        // Someone took the port between our probe and sshd's bind.
                        tries += 1;
                        let h = &mut fleet.hosts[i];
                        h.port = free_port(&h.address);
                        fleet.write_config(i);
                        fleet.spawn(i);
                    }
                    Err(Failure::AddrInUse(m) | Failure::Other(m)) => panic!("{m}"),
                }
            }
        }
        fleet.write_known_hosts();
        fleet
    }

    /// Kills host `i`'s sshd and every descendant (each open connection and session of
    /// that server), then starts it again on the same address, port and host key and
    /// waits until it accepts connections.
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        let mut tries = 1;
        loop {
            self.spawn(i);
            match self.wait_ready(i) {
                Ok(()) => return,
                Err(Failure::AddrInUse(_)) if tries < PORT_TRIES => {
                    // The same port is wanted: give whoever holds it a moment.
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(Failure::AddrInUse(m) | Failure::Other(m)) => panic!("{m}"),
            }
        }
    }

    /// Kills host `i`'s sshd and every descendant, and leaves it down (until
    /// [`SshFleet::restart`]).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.hosts[i].child.take() {
            kill_tree(&mut child);
        }
    }

    /// A squall static inventory with `defaults` (user, key, known_hosts) and one group
    /// per `(name, host index range)`.
    pub fn inventory_yaml(&self, groups: &[(&str, std::ops::Range<usize>)]) -> String {
        let mut y = format!(
            "defaults:\n  user: {TEST_USER}\n  key: {}\n  known_hosts: {}\ngroups:\n",
            self.client_key.display(),
            self.known_hosts.display()
        );
        for (group, range) in groups {
            y.push_str(&format!("  {group}:\n"));
            for h in &self.hosts[range.clone()] {
                y.push_str(&format!(
                    "    - {{ name: {}, address: {}, port: {} }}\n",
                    h.name, h.address, h.port
                ));
            }
        }
        y
    }

    /// A plain `ssh` command line (argv, `ssh` first) running `remote` on host `i` as
    /// [`TEST_USER`], with no user config, strict host key checking against this fleet's
    /// known_hosts and no prompts.
    ///
    /// ssh joins the remote words with spaces and hands the result to the login shell,
    /// so each word is shell-quoted here: the remote command gets exactly `remote` as its
    /// argv (`&["sh", "-c", "echo $USER"]` runs `sh -c 'echo $USER'`).
    pub fn ssh_argv(&self, i: usize, remote: &[&str]) -> Vec<String> {
        let h = &self.hosts[i];
        let mut argv: Vec<String> = vec![
            "ssh".into(),
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.client_key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "BatchMode=yes".into(),
            "-p".into(),
            h.port.to_string(),
            format!("{TEST_USER}@{}", h.address),
            "--".into(),
        ];
        argv.extend(remote.iter().map(|w| shell_quote(w)));
        argv
    }

    /// [`SshFleet::ssh_argv`] as a `Command`, not yet started, stdin null.
    pub fn ssh_command(&self, i: usize, remote: &[&str]) -> Command {
        let argv = self.ssh_argv(i, remote);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null());
        cmd
    }

    fn write_config(&self, i: usize) {
        let h = &self.hosts[i];
        let d = self.dir.display();
        let text = format!(
            "ListenAddress {addr}:{port}\n\
             HostKey {d}/host_{i}\n\
             PidFile {d}/sshd_{i}.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             AllowUsers {TEST_USER}\n\
             PermitRootLogin no\n\
             MaxSessions 64\n\
             MaxStartups 200\n\
             LogLevel VERBOSE\n\
             PrintMotd no\n\
             UseDNS no\n\
             Subsystem sftp internal-sftp\n",
            addr = h.address,
            port = h.port,
        );
        fs::write(&h.config, text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", h.config.display()));
    }

    fn spawn(&mut self, i: usize) {
        fs::create_dir_all(PRIVSEP_DIR).unwrap_or_else(|e| panic!("creating {PRIVSEP_DIR}: {e}"));
        let h = &mut self.hosts[i];
        assert!(h.child.is_none(), "{} is already running", h.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&h.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", h.log.display()));
        h.log_mark = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&h.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {SSHD}: {e}"));
        h.child = Some(child);
    }

    /// Polls until host `i` accepts a TCP connection; no fixed sleeps.
    fn wait_ready(&mut self, i: usize) -> Result<(), Failure> {
        let h = &mut self.hosts[i];
        let addr = h.socket_addr();
        let start = Instant::now();
        let log_start = h.log_mark;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let child = h.child.as_mut().expect("a started sshd");
            if let Ok(Some(status)) = child.try_wait() {
                h.child = None;
                let tail = log_tail(&h.log);
                let msg = format!(
                    "sshd for {} ({addr}) exited early with {status}; tail of {}:\n{tail}",
                    h.name,
                    h.log.display()
                );
                let new_text = fs::read(&h.log)
                    .map(|b| {
                        String::from_utf8_lossy(&b[(log_start as usize).min(b.len())..])
                            .into_owned()
                    })
                    .unwrap_or_default();
                return Err(if new_text.contains("Address already in use") {
                    Failure::AddrInUse(msg)
                } else {
                    Failure::Other(msg)
                });
            }
            if start.elapsed() > READY_TIMEOUT {
                let mut child = h.child.take().expect("a started sshd");
                kill_tree(&mut child);
                return Err(Failure::Other(format!(
                    "sshd for {} did not accept connections on {addr} within {READY_TIMEOUT:?}; tail of {}:\n{}",
                    h.name,
                    h.log.display(),
                    log_tail(&h.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn write_known_hosts(&self) {
        let text: String = self
            .hosts
            .iter()
            .map(|h| format!("[{}]:{} {}\n", h.address, h.port, h.host_public_key))
            .collect();
        fs::write(&self.known_hosts, text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.known_hosts.display()));
    }
}

impl Drop for SshFleet {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.stop(i);
        }
        if std::thread::panicking() {
            eprintln!(
                "kept sshd fleet dir {} (configs and logs)",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

enum Failure {
    /// sshd could not bind its address (the port was taken): worth another try.
    AddrInUse(String),
    Other(String),
}

/// Loopback addresses `127.0.A.B` (A, B in 1..=254, so never 127.0.0.x), spread by pid
/// so that concurrent test processes start far apart, then by a per-process counter.
fn next_address() -> String {
    const SPACE: u32 = 254 * 254;
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(97) % SPACE;
    let idx = (base + SEQ.fetch_add(1, Ordering::Relaxed) % SPACE) % SPACE;
    format!("127.0.{}.{}", 1 + idx / 254, 1 + idx % 254)
}

/// A port the kernel considers free on `address` right now (the probe is dropped at once,
/// just before sshd is started; a lost race is caught by sshd's bind error and retried).
fn free_port(address: &str) -> u16 {
    let l = TcpListener::bind((address, 0))
        .unwrap_or_else(|e| panic!("binding {address}:0 to find a free port: {e}"));
    l.local_addr().expect("a bound listener's address").port()
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running ssh-keygen: {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `TYPE BASE64` of a `.pub` file, without the comment.
fn public_key(pub_file: &Path) -> String {
    let text = fs::read_to_string(pub_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", pub_file.display()));
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_config(config: &Path) {
    let out = Command::new(SSHD)
        .arg("-t")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {SSHD} -t: {e}"));
    assert!(
        out.status.success(),
        "sshd rejects {}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Every process's parent, from `/proc/*/stat` (ppid is the 2nd field after the `)`
/// that closes the command name, which may itself contain spaces and parentheses).
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return map;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|p| p.parse().ok())) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// The fields of `/proc/PID/stat` after the command name: state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether `pid` is gone, a zombie counting as gone.
fn process_gone(pid: u32) -> bool {
    stat_fields(pid).is_none_or(|f| f.first().is_none_or(|s| s == "Z"))
}

/// All descendants of `root` (not `root` itself).
fn descendants(root: u32) -> BTreeSet<u32> {
    let parents = parents();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in &parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if found.insert(c) {
                todo.push(c);
            }
        }
    }
    found
}

fn signal(sig: &str, pids: &BTreeSet<u32>) {
    if pids.is_empty() {
        return;
    }
    // Some may have exited meanwhile: kill then complains and exits non-zero, but still
    // signals the others.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGKILLs `child` and every descendant, and waits until they are gone.
///
/// The tree is found while `child` is unreaped (so its pid cannot be reused) and alive
/// (so its descendants are still linked to it). Everything is SIGSTOPped first, walking
/// again until no new process shows up, so that nothing forks past the kill; then all are
/// SIGKILLed. A process that left the tree before (reparented away) is not touched.
fn kill_tree(child: &mut Child) {
    let root = child.id();
    let mut tree = BTreeSet::new();
    if matches!(child.try_wait(), Ok(None)) {
        tree.insert(root);
        signal("STOP", &tree);
        for _ in 0..50 {
            let new: BTreeSet<u32> = descendants(root)
                .into_iter()
                .filter(|p| !tree.contains(p))
                .collect();
            if new.is_empty() {
                break;
            }
            signal("STOP", &new);
            tree.extend(new);
        }
        signal("KILL", &tree);
    }
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tree.iter().all(|&p| process_gone(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fleet: &SshFleet, i: usize, remote: &[&str]) -> std::process::Output {
        fleet.ssh_command(i, remote).output().expect("running ssh")
    }

    /// Waits until a `sleep` runs under the sshd `listener` (an ssh session's command);
    /// returns the listener's descendants then.
    fn wait_for_sleep(listener: u32) -> BTreeSet<u32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = descendants(listener);
            let has_sleep = d.iter().any(|&p| {
                fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
            });
            if has_sleep {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "no ssh session's sleep started under sshd {listener}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn fleet_logs_in_as_the_test_user_and_restarts_kill_sessions() {
        if !available() {
            return;
        }
        let mut fleet = SshFleet::start(3);
        let addrs: BTreeSet<&str> = fleet.hosts.iter().map(|h| h.address.as_str()).collect();
        assert_eq!(addrs.len(), 3, "distinct addresses: {:?}", fleet.hosts);
        for i in 0..3 {
            let out = run(&fleet, i, &["sh", "-c", "echo $USER $PWD"]);
            assert!(out.status.success(), "ssh to h{i}: {}", crate::text(&out));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("{TEST_USER} /home/{TEST_USER}"),
                "h{i}"
            );
        }

        // A session open on h1 dies with the restart; h1 takes new logins afterwards.
        let mut session = fleet
            .ssh_command(1, &["sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ssh");
        let old_pid = fleet.hosts[1].pid().expect("h1 runs");
        let session_tree = wait_for_sleep(old_pid);
        let port = fleet.hosts[1].port;
        fleet.restart(1);
        assert_eq!(fleet.hosts[1].port, port, "same port after restart");
        assert_ne!(fleet.hosts[1].pid(), Some(old_pid));
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = session.try_wait().expect("polling ssh") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the ssh session survived restart(1)"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            !status.success(),
            "a killed session exits non-zero: {status}"
        );
        for p in session_tree.iter().chain([&old_pid]) {
            assert!(
                process_gone(*p),
                "pid {p} of the old h1 survived restart(1)"
            );
        }
        let out = run(&fleet, 1, &["sh", "-c", "echo $USER"]);
        assert!(
            out.status.success(),
            "ssh to h1 after restart: {}",
            crate::text(&out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), TEST_USER);

        // Drop kills every listener and every session.
        let mut session = fleet
            .ssh_command(0, &["sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ssh");
        wait_for_sleep(fleet.hosts[0].pid().expect("h0 runs"));
        let mut pids: BTreeSet<u32> = BTreeSet::new();
        for h in &fleet.hosts {
            let p = h.pid().expect("running");
            pids.insert(p);
            pids.extend(descendants(p));
        }
        let dir = fleet.dir.clone();
        drop(fleet);
        for p in &pids {
            assert!(process_gone(*p), "pid {p} survived the fleet's drop");
        }
        assert!(!dir.exists(), "{} removed", dir.display());
        let _ = session.wait();
    }

    #[test]
    fn stop_leaves_a_host_down_and_inventory_lists_hosts() {
        if !available() {
            return;
        }
        let mut fleet = SshFleet::start(2);
        let y = fleet.inventory_yaml(&[("workers", 0..2), ("one", 1..2)]);
        let h = &fleet.hosts;
        let expected = format!(
            "defaults:\n  user: squall-test\n  key: {d}/client_key\n  known_hosts: {d}/known_hosts\n\
             groups:\n  workers:\n    - {{ name: h0, address: {a0}, port: {p0} }}\n    \
             - {{ name: h1, address: {a1}, port: {p1} }}\n  one:\n    \
             - {{ name: h1, address: {a1}, port: {p1} }}\n",
            d = fleet.dir.display(),
            a0 = h[0].address,
            p0 = h[0].port,
            a1 = h[1].address,
            p1 = h[1].port,
        );
        assert_eq!(y, expected);
        let known = fs::read_to_string(&fleet.known_hosts).expect("known_hosts");
        assert_eq!(known.lines().count(), 2);
        assert!(known.starts_with(&format!(
            "[{}]:{} ssh-ed25519 AAAA",
            h[0].address, h[0].port
        )));

        let pid = fleet.hosts[0].pid().expect("running");
        fleet.stop(0);
        assert!(process_gone(pid));
        assert!(!fleet.hosts[0].is_running());
        assert!(
            TcpStream::connect_timeout(&fleet.hosts[0].socket_addr(), Duration::from_millis(200))
                .is_err()
        );
        let out = run(&fleet, 1, &["true"]);
        assert!(out.status.success(), "h1 still up: {}", crate::text(&out));
        fleet.restart(0);
        let out = run(&fleet, 0, &["true"]);
        assert!(out.status.success(), "h0 back up: {}", crate::text(&out));
    }

    #[test]
    fn ten_host_fleet_starts_in_seconds() {
        if !available() {
            return;
        }
        let start = Instant::now();
        let fleet = SshFleet::start(10);
        let took = start.elapsed();
        eprintln!("started a 10-host sshd fleet in {took:?}");
        let addrs: BTreeSet<&str> = fleet.hosts.iter().map(|h| h.address.as_str()).collect();
        assert_eq!(addrs.len(), 10);
        let out = run(&fleet, 9, &["true"]);
        assert!(out.status.success(), "ssh to h9: {}", crate::text(&out));
        assert!(
            took < Duration::from_secs(10),
            "a 10-host fleet took {took:?}"
        );
    }

    #[test]
    fn shell_quote_keeps_words_whole() {
        assert_eq!(shell_quote("echo"), "echo");
        assert_eq!(shell_quote("echo $USER"), "'echo $USER'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
