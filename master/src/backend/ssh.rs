//! SSH `Transport`: the system `ssh` through the `openssh` crate, one multiplexed
//! connection (ControlMaster, native mux) per host.
//!
//! Host keys are pinned: `StrictHostKeyChecking=yes` against a known_hosts file the
//! caller supplies (written by the master from keys it knows), never the user's own.
//! Connecting retries with backoff until a deadline, since a booting host refuses
//! connections for a while; authentication and host-key failures are final at once. A
//! command that fails because the connection dropped reconnects and is retried once.
//! Every error names the host, user, address and the tail of ssh's (or the remote
//! command's) stderr. Which commands run is not decided here.

use crate::error::{BoxError, Message};
use crate::seam::compute::{Instance, tags};
use crate::seam::transport::{Output, Transport, TransportError, streamed, tail_lines};
use async_trait::async_trait;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use std::collections::BTreeMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

/// Seconds an idle control master stays up; see `connect_once`.
const CONTROL_PERSIST_IDLE: NonZeroUsize = NonZeroUsize::new(120).expect("non-zero");

/// How to reach one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// For messages: the host's name in the run or inventory.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// The private key to log in with.
    pub key: PathBuf,
    /// known_hosts holding the host's key; checked strictly.
    pub known_hosts: PathBuf,
}

impl SshTarget {
    fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

/// Connection settings shared by all hosts.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// How long to keep retrying a connection that is refused or times out.
    pub connect_deadline: Duration,
    /// `ConnectTimeout` of each attempt.
    pub attempt_timeout: Duration,
    /// Where control sockets live (short paths: sockets have a length limit).
    pub control_dir: PathBuf,
    /// Hosts are still booting and get their keys from user-data, after sshd started:
    /// host-key and authentication failures are then retried until the deadline too
    /// (a wrong key is never accepted, only waited out). Only until a host was reached.
    pub booting_hosts: bool,
    /// How long to keep reconnecting to a host that was reached before (a dropped or
    /// cut-off connection); after that the host is unreachable, i.e. lost.
    pub reconnect_deadline: Duration,
    /// Keep-alive probes on an idle connection; three unanswered ones drop it, so a
    /// host cut off from the network is noticed within three intervals.
    pub keepalive: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            connect_deadline: Duration::from_secs(180),
            attempt_timeout: Duration::from_secs(10),
            control_dir: std::env::temp_dir(),
            booting_hosts: false,
            reconnect_deadline: Duration::from_secs(60),
            keepalive: Duration::from_secs(5),
        }
    }
}

/// Runs commands over SSH. Targets are looked up by instance id; an instance without
/// a registered target uses `defaults` with the instance's address (and its group's
/// login user, when one is set).
#[derive(Debug)]
pub struct SshTransport {
    targets: std::sync::RwLock<BTreeMap<String, SshTarget>>,
    defaults: Option<SshTarget>,
    group_users: BTreeMap<String, String>,
    options: SshOptions,
    /// Hosts reached at least once: they reconnect within `reconnect_deadline`.
    reached: std::sync::Mutex<std::collections::BTreeSet<String>>,
    sessions: Mutex<BTreeMap<String, Arc<Session>>>,
}

/// Why a connection attempt failed.
enum ConnectFailure {
    /// Worth retrying (refused, timed out, reset).
    Transient(String),
    /// Retrying cannot help (authentication, host key, bad configuration).
    Final(String),
}

impl SshTransport {
    pub fn new(options: SshOptions, defaults: Option<SshTarget>) -> Self {
        SshTransport {
            targets: std::sync::RwLock::new(BTreeMap::new()),
            defaults,
            group_users: BTreeMap::new(),
            options,
            reached: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            sessions: Mutex::new(BTreeMap::new()),
        }
    }

    /// Login users by fleet group (the `squall:group` tag), overriding the default's.
    pub fn with_group_users(mut self, users: BTreeMap<String, String>) -> Self {
        self.group_users = users;
        self
    }

    /// Registers how to reach instance `id`.
    pub fn register(&self, id: &str, target: SshTarget) {
        if let Ok(mut t) = self.targets.write() {
            t.insert(id.to_owned(), target);
        }
    }

    fn target(&self, host: &Instance) -> Result<SshTarget, TransportError> {
        let known = self
            .targets
            .read()
            .ok()
            .and_then(|t| t.get(&host.id).cloned());
        known
            .or_else(|| {
                self.defaults.as_ref().map(|d| SshTarget {
                    name: host.tag(tags::NAME).unwrap_or(&host.id).to_owned(),
                    address: host.address.clone(),
                    user: host
                        .tag(tags::GROUP)
                        .and_then(|g| self.group_users.get(g))
                        .unwrap_or(&d.user)
                        .clone(),
                    ..d.clone()
                })
            })
            .ok_or_else(|| TransportError::Unreachable {
                host: host.id.clone(),
                address: host.address.clone(),
                source: Message::boxed("no SSH settings for this host"),
            })
    }

    async fn connect_once(&self, t: &SshTarget, booting: bool) -> Result<Session, ConnectFailure> {
        let mut b = SessionBuilder::default();
        b.user(t.user.clone())
            .port(t.port)
            .keyfile(&t.key)
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(&t.known_hosts)
            .config_file("/dev/null")
            .connect_timeout(self.options.attempt_timeout)
            .server_alive_interval(self.options.keepalive)
            // The master connection outlives a crashed squall by at most this idle time
            // (squall itself talks to every host at least every wait poll).
            .control_persist(ControlPersist::IdleFor(CONTROL_PERSIST_IDLE))
            .control_directory(&self.options.control_dir);
        b.connect_mux(&t.address).await.map_err(|e| {
            let text = error_text(&e);
            let lower = text.to_lowercase();
            let final_ = [
                "permission denied",
                "host key verification failed",
                "remote host identification has changed",
                "no such file",
                "bad configuration",
                "could not resolve",
            ]
            .iter()
            .any(|m| lower.contains(m));
            let waited_out = booting
                && [
                    "permission denied",
                    "host key verification failed",
                    "remote host identification has changed",
                ]
                .iter()
                .any(|m| lower.contains(m));
            if final_ && !waited_out {
                ConnectFailure::Final(text)
            } else {
                ConnectFailure::Transient(text)
            }
        })
    }

    /// The cached session to `host`, or a new one (retrying until the deadline).
    async fn session(
        &self,
        host: &Instance,
        t: &SshTarget,
    ) -> Result<Arc<Session>, TransportError> {
        if let Some(s) = self.sessions.lock().await.get(&host.id) {
            return Ok(s.clone());
        }
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let reached_before = self
            .reached
            .lock()
            .map(|r| r.contains(&host.id))
            .unwrap_or(false);
        let (deadline, booting) = if reached_before {
            (self.options.reconnect_deadline, false)
        } else {
            (self.options.connect_deadline, self.options.booting_hosts)
        };
        loop {
            match self.connect_once(t, booting).await {
                Ok(s) => {
                    if let Ok(mut r) = self.reached.lock() {
                        r.insert(host.id.clone());
                    }
                    let s = Arc::new(s);
                    self.sessions
                        .lock()
                        .await
                        .insert(host.id.clone(), s.clone());
                    return Ok(s);
                }
                Err(ConnectFailure::Final(detail)) => {
                    return Err(unreachable(host, t, detail));
                }
                Err(ConnectFailure::Transient(detail)) => {
                    if started.elapsed() + delay > deadline {
                        return Err(unreachable(
                            host,
                            t,
                            format!(
                                "gave up after {:.0}s of retries: {detail}",
                                started.elapsed().as_secs_f64()
                            ),
                        ));
                    }
                    tracing::debug!(host = %t.name, "ssh connect failed, retrying: {detail}");
                    tokio::time::sleep(delay).await;
                    // A booting host is polled at least every second: its sshd comes up
                    // (and its keys arrive) at a moment nobody announces.
                    let cap = if booting { 1 } else { 5 };
                    delay = (delay * 2).min(Duration::from_secs(cap));
                }
            }
        }
    }

    /// A session known to be up: the cached one if its control master still answers
    /// (it may have idled out, see ControlPersist), else a new one.
    async fn live_session(
        &self,
        host: &Instance,
        t: &SshTarget,
    ) -> Result<Arc<Session>, TransportError> {
        let session = self.session(host, t).await?;
        if session.check().await.is_ok() {
            return Ok(session);
        }
        self.drop_session(host).await;
        self.session(host, t).await
    }

    /// Forgets a session that failed, so the next call reconnects.
    async fn drop_session(&self, host: &Instance) {
        self.sessions.lock().await.remove(&host.id);
    }

    /// Closes every connection (their control masters exit).
    pub async fn close_all(&self) {
        let sessions: Vec<Arc<Session>> = std::mem::take(&mut *self.sessions.lock().await)
            .into_values()
            .collect();
        for s in sessions {
            if let Ok(s) = Arc::try_unwrap(s) {
                let _ = s.close().await;
            }
        }
    }

    /// Runs `f` with a session, reconnecting once if the connection turns out dead.
    async fn with_session<T, F, Fut>(
        &self,
        host: &Instance,
        argv: &[String],
        f: F,
    ) -> Result<T, TransportError>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, openssh::Error>>,
    {
        let t = self.target(host)?;
        let mut last = String::new();
        for attempt in 0..2 {
            let session = self.session(host, &t).await?;
            match f(session.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    last = error_text(&e);
                    // The mux cannot tell a dropped connection from a killed command:
                    // ask the control master.
                    if session.check().await.is_ok() {
                        return Err(command_err(&t, argv, Message(last)));
                    }
                    tracing::info!(host = %t.name, attempt, "ssh connection lost, reconnecting: {last}");
                    self.drop_session(host).await;
                }
            }
        }
        Err(command_err(
            &t,
            argv,
            Message(format!("connection lost twice: {last}")),
        ))
    }
}

fn error_text(e: &openssh::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    tail_lines(text.as_bytes(), 5)
}

fn unreachable(host: &Instance, t: &SshTarget, detail: String) -> TransportError {
    let lower = detail.to_lowercase();
    let detail = if lower.contains("host key verification failed")
        || lower.contains("offending")
        || lower.contains("identification has changed")
    {
        format!(
            "host key verification failed: the key {} offered is not the one pinned in {} (ssh: {detail})",
            t.address,
            t.known_hosts.display()
        )
    } else {
        detail
    };
    TransportError::Unreachable {
        host: if t.name == host.id {
            t.name.clone()
        } else {
            format!("{} ({})", t.name, host.id)
        },
        address: t.display(),
        source: Message::boxed(detail),
    }
}

fn command_err(t: &SshTarget, argv: &[String], source: impl Into<BoxError>) -> TransportError {
    TransportError::Command {
        host: format!("{} ({})", t.name, t.display()),
        argv: argv.join(" "),
        source: source.into(),
    }
}

/// The remote half of `put_file`: writes stdin to a temporary file next to `$1`, checks
/// it holds `$3` bytes, sets mode `$2`, and renames it into place; a short or failed
/// transfer leaves `$1` untouched. A constant script; paths arrive as arguments.
const PUT_SCRIPT: &str = r#"set -e
case "$1" in */*) mkdir -p -- "${1%/*}" ;; esac
tmp="$1.squall-tmp.$$"
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
got=$(wc -c < "$tmp")
if [ "$got" -ne "$3" ]; then echo "received $got of $3 bytes" >&2; exit 1; fi
chmod "$2" "$tmp"
mv -f -- "$tmp" "$1"
trap - EXIT"#;

#[async_trait]
impl Transport for SshTransport {
    async fn run_input(
        &self,
        host: &Instance,
        argv: &[String],
        input: &[u8],
    ) -> Result<Output, TransportError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(TransportError::Command {
                host: host.id.clone(),
                argv: String::new(),
                source: Message::boxed("empty command"),
            });
        };
        self.with_session(host, argv, |s| async move {
            let mut child = s
                .command(program.as_str())
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .await?;
            if let Some(mut stdin) = child.stdin().take() {
                // A command that exits without reading shows in its output.
                let _ = stdin.write_all(input).await;
            }
            let out = child.wait_with_output().await?;
            Ok(Output {
                code: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        })
        .await
    }

    async fn put_stream(
        &self,
        host: &Instance,
        body: &mut (dyn AsyncRead + Send + Unpin),
        size: u64,
        dest: &str,
        mode: u32,
    ) -> Result<(), TransportError> {
        let argv = [format!("put {dest}")];
        let t = self.target(host)?;
        // The body cannot be replayed once read: check the connection first (it may
        // have idled out), then make one attempt.
        let session = self.live_session(host, &t).await?;
        let mut child = session
            .command("sh")
            .arg("-c")
            .arg(PUT_SCRIPT)
            .arg("squall-put")
            .arg(dest)
            .arg(format!("{mode:o}"))
            .arg(size.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| command_err(&t, &argv, Message(error_text(&e))))?;
        let copied = match child.stdin().take() {
            Some(mut stdin) => {
                let r = tokio::io::copy(body, &mut stdin).await.map(|_| ());
                // Closing stdin ends the remote `cat`.
                drop(stdin);
                r
            }
            None => Err(std::io::Error::other("no stdin to the remote command")),
        };
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| command_err(&t, &argv, Message(error_text(&e))))?;
        if let Err(e) = copied {
            return Err(command_err(
                &t,
                &argv,
                Message(format!("sending the data: {e}")),
            ));
        }
        if !out.status.success() {
            return Err(command_err(
                &t,
                &argv,
                Message(format!(
                    "exit status {}: {}",
                    out.status,
                    tail_lines(&out.stderr, 5)
                )),
            ));
        }
        Ok(())
    }

    async fn stream(
        &self,
        host: &Instance,
        argv: &[String],
        sink: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<Output, TransportError> {
        let t = self.target(host)?;
        let Some((program, args)) = argv.split_first() else {
            return Err(command_err(&t, argv, Message::boxed("empty command")));
        };
        // The command is not retried once output may have reached the sink.
        let session = self.live_session(host, &t).await?;
        let mut child = session
            .command(program.as_str())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| command_err(&t, argv, Message(error_text(&e))))?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout().take(), child.stderr().take())
        else {
            return Err(command_err(
                &t,
                argv,
                Message::boxed("no pipes to the remote command"),
            ));
        };
        let mut err_buf = Vec::new();
        // A sink that fails ends the output at once (dropping it), so the command is not
        // left blocked on a full pipe while its stderr is awaited.
        let copy = async move {
            let copied = tokio::io::copy(&mut stdout, sink).await;
            drop(stdout);
            copied
        };
        let (copied, read) = tokio::join!(copy, stderr.read_to_end(&mut err_buf));
        let status = child
            .wait()
            .await
            .map_err(|e| command_err(&t, argv, Message(error_text(&e))))?;
        copied.map_err(|e| command_err(&t, argv, Message(format!("copying output: {e}"))))?;
        read.map_err(|e| command_err(&t, argv, e))?;
        streamed(status, err_buf).map_err(|e| command_err(&t, argv, e))
    }
}
