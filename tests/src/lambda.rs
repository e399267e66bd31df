//! `cargo lambda watch` (PyPI cargo-lambda) serving the workspace's real
//! `squall-launcher` binary on 127.0.0.1, as the Lambda service would: the function is
//! started on the first invocation with the Lambda runtime API environment, and answers
//! `POST /2015-03-31/functions/squall-launcher/invocations`, so the AWS SDK's Lambda
//! client can target it with `AWS_ENDPOINT_URL_LAMBDA`. Dropping it stops it (SIGTERM to
//! its process group; it stops its function instances itself).
//!
//! Behaviours of cargo-lambda 1.9.2 worth knowing: a handler error answers 500 without
//! `X-Amz-Function-Error`; a crashed function is not restarted (later invocations time
//! out after `--timeout`); a busy port makes it exit 0 at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The venv scripts/install-test-deps installs cargo-lambda into.
pub fn venv() -> PathBuf {
    std::env::var_os("SQUALL_CARGO_LAMBDA_VENV").map_or_else(
        || PathBuf::from("/var/tmp/squall-cargo-lambda-venv"),
        PathBuf::from,
    )
}

/// Whether cargo-lambda is installed; if not, the test is skipped ([`crate::skip`]:
/// a failure under CI) and this is false.
pub fn available() -> bool {
    let bin = venv().join("bin/cargo-lambda");
    if bin.is_file() {
        return true;
    }
    crate::skip(&format!(
        "cargo-lambda is not installed at {} (run scripts/install-test-deps)",
        bin.display()
    ));
    false
}

/// A running `cargo lambda watch`.
#[derive(Debug)]
pub struct LambdaWatch {
    pub addr: SocketAddr,
    child: Child,
    pub log: PathBuf,
}

impl LambdaWatch {
    /// Starts watch on a free port of 127.0.0.1, serving the workspace's binaries
    /// built in the same target dir as the tests (so nothing is rebuilt), with `env`
    /// added to the functions' environment.
    pub fn start(env: &[(&str, String)]) -> LambdaWatch {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // target/debug/squall-launcher -> target
        let launcher = crate::binary("squall-launcher");
        let target_dir = launcher
            .parent()
            .and_then(|p| p.parent())
            .expect("the binary lives in TARGET/PROFILE")
            .to_path_buf();
        let log = std::env::temp_dir().join(format!(
            "squall-lambda-watch-{}-{port}.log",
            std::process::id()
        ));
        let log_file = std::fs::File::create(&log).expect("creating the watch log");
        let path = format!(
            "{}:{}",
            venv().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(venv().join("bin/cargo-lambda"));
        cmd.args([
            "lambda",
            "watch",
            "--ignore-changes",
            "--offline",
            "--quiet",
        ])
        .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
        .arg(port.to_string())
        .args(["--timeout", "60"])
        .current_dir(crate::workspace())
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", &target_dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log handle"))
        .stderr(log_file)
        .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting cargo lambda watch");
        let mut watch = LambdaWatch { addr, child, log };
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            watch.assert_alive();
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "cargo lambda watch did not listen on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A busy port makes it exit 0 right after listening failed: check it is alive.
        std::thread::sleep(Duration::from_millis(200));
        watch.assert_alive();
        watch
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "cargo lambda watch exited ({status}): {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// The endpoint for `AWS_ENDPOINT_URL_LAMBDA`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Invokes `function` with `payload` over the Lambda Invoke API; (status, body).
    pub fn invoke(&self, function: &str, payload: &str) -> (u16, String) {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .expect("connecting to cargo lambda watch");
        s.set_read_timeout(Some(Duration::from_secs(90)))
            .expect("a read timeout");
        write!(
            s,
            "POST /2015-03-31/functions/{function}/invocations HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
            self.addr,
            payload.len()
        )
        .expect("sending the invocation");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("reading the answer");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, body)
    }
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for LambdaWatch {
    fn drop(&mut self) {
        // SIGTERM to its process group: it stops its function instances, then exits.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
