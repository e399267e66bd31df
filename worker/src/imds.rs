//! Watching the instance metadata service (IMDSv2) for a spot interruption notice
//! (`spot/instance-action`) and a rebalance recommendation
//! (`events/recommendations/rebalance`), while a task runs.
//!
//! The endpoint is whatever the worker's boot script wrote to [`ENDPOINT_FILE`] (the
//! standard `http://169.254.169.254`, or the SDK's `AWS_EC2_METADATA_SERVICE_ENDPOINT`
//! when the instance has one); without that file nothing is polled (a local or
//! inventory host). What is found goes to `interruption.json` in the agent's root,
//! which every answer of the agent carries ([`read`]).
//!
//! The HTTP is hand-written: two plain-HTTP requests to a link-local endpoint with
//! short timeouts do not justify an HTTP client crate in a binary copied to every host.

use squall_worker::Interruption;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the worker's boot script records the metadata endpoint for the agent.
pub const ENDPOINT_FILE: &str = "/var/lib/squall/imds";
/// How often the metadata is read.
const POLL: Duration = Duration::from_secs(2);
/// Connect and read timeout of one request.
const TIMEOUT: Duration = Duration::from_secs(2);
const NOTICE_FILE: &str = "interruption.json";

/// The notice recorded under `root`, if any.
pub fn read(root: &Path) -> Option<Interruption> {
    let bytes = std::fs::read(root.join(NOTICE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The metadata endpoint (`host:port`), when this host has one.
fn endpoint() -> Option<String> {
    let text = std::fs::read_to_string(ENDPOINT_FILE).ok()?;
    let url = text.trim();
    let rest = url.strip_prefix("http://")?;
    let host_port = rest.split('/').next()?.to_owned();
    if host_port.is_empty() {
        return None;
    }
    // `[fd00:ec2::254]` (IPv6) has colons of its own: a port follows its `]`.
    let has_port = match host_port.rfind(']') {
        Some(end) => host_port[end..].contains(':'),
        None => host_port.contains(':'),
    };
    Some(if has_port {
        host_port
    } else {
        format!("{host_port}:80")
    })
}

/// Starts watching in the background when this host has an endpoint; the watch ends
/// with the process.
pub fn spawn_watch(root: &Path) {
    let Some(endpoint) = endpoint() else { return };
    let root: PathBuf = root.to_owned();
    std::thread::spawn(move || watch(&root, &endpoint));
}

fn watch(root: &Path, endpoint: &str) {
    loop {
        if read(root).is_some_and(|n| n.kind == "termination") {
            return; // nothing more to learn
        }
        if let Some(notice) = poll(endpoint) {
            let known = read(root);
            if known.as_ref() != Some(&notice) && known.is_none_or(|k| k.kind != "termination") {
                write(root, &notice);
            }
        }
        std::thread::sleep(POLL);
    }
}

/// One look at the metadata: a termination notice first, else a recommendation.
fn poll(endpoint: &str) -> Option<Interruption> {
    let token = request(
        endpoint,
        "PUT",
        "/latest/api/token",
        "X-aws-ec2-metadata-token-ttl-seconds: 300",
    )?;
    let auth = format!("X-aws-ec2-metadata-token: {}", token.trim());
    let field = |body: &str, name: &str| {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get(name).and_then(|t| t.as_str()).map(str::to_owned))
    };
    if let Some(body) = request(
        endpoint,
        "GET",
        "/latest/meta-data/spot/instance-action",
        &auth,
    ) {
        return Some(Interruption {
            kind: "termination".into(),
            time: field(&body, "time"),
        });
    }
    let path = "/latest/meta-data/events/recommendations/rebalance";
    request(endpoint, "GET", path, &auth).map(|body| Interruption {
        kind: "rebalance".into(),
        time: field(&body, "noticeTime"),
    })
}

/// The body of a 200 answer; `None` for anything else (404: no notice).
fn request(endpoint: &str, method: &str, path: &str, header: &str) -> Option<String> {
    let addr = endpoint.to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.set_write_timeout(Some(TIMEOUT)).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\n{header}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    // Up to the end of the body its Content-Length announces (or of the stream).
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 || answer.len() > 64 * 1024 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n")
            && let Some(len) = content_length(head)
            && body.len() >= len
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let ok = head
        .lines()
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"));
    ok.then(|| body.to_owned())
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// Records `notice` (written whole, then renamed into place).
fn write(root: &Path, notice: &Interruption) {
    let Ok(bytes) = serde_json::to_vec(notice) else {
        return;
    };
    let tmp = root.join(format!("{NOTICE_FILE}.{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() {
        let _ = std::fs::rename(&tmp, root.join(NOTICE_FILE));
    }
}
