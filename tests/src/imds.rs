//! A minimal instance metadata service (IMDSv2) on 127.0.0.1 for tests: it hands out a
//! session token and answers `/latest/meta-data/instance-id` for one instance, only
//! with that token, as EC2's does; once told to ([`Imds::notify`]), it also serves a
//! spot interruption notice (`spot/instance-action`) or a rebalance recommendation
//! (`events/recommendations/rebalance`), 404 before, as EC2 does. Point a process at it
//! with `AWS_EC2_METADATA_SERVICE_ENDPOINT` (see [`Imds::env`]). Dropping it stops it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a test IMDS lives, whatever the test does.
const MAX_LIFETIME: Duration = Duration::from_secs(900);
const TOKEN: &str = "squall-test-imds-token";

/// What the metadata announces: path -> JSON body.
type Notices = Arc<Mutex<std::collections::BTreeMap<&'static str, String>>>;

/// The spot interruption notice's path.
pub const INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";
/// The rebalance recommendation's path.
pub const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";

#[derive(Debug)]
pub struct Imds {
    addr: std::net::SocketAddr,
    notices: Notices,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Imds {
    /// Serves `instance_id` until dropped.
    pub fn start(instance_id: &str) -> Imds {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the test IMDS");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let id = instance_id.to_owned();
        let flag = stop.clone();
        let notices: Notices = Arc::default();
        let served = notices.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
                match listener.accept() {
                    Ok((stream, _)) => {
                        // A thread per connection: the SDK keeps connections open.
                        let id = id.clone();
                        let notices = served.clone();
                        std::thread::spawn(move || serve(stream, &id, &notices));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Imds {
            addr,
            notices,
            stop,
            thread: Some(thread),
        }
    }

    /// From now on, serves `body` at `path` ([`INSTANCE_ACTION`] or [`REBALANCE`]).
    pub fn notify(&self, path: &'static str, body: String) {
        if let Ok(mut n) = self.notices.lock() {
            n.insert(path, body);
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment variable that points the AWS SDK's IMDS client here.
    pub fn env(&self) -> (&'static str, String) {
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", self.endpoint())
    }
}

/// Answers every request on one connection (the SDK keeps connections alive).
fn serve(stream: TcpStream, instance_id: &str, notices: &Notices) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    for _ in 0..100 {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut token = None;
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "x-aws-ec2-metadata-token" => token = Some(v.trim().to_owned()),
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        std::io::Read::read_exact(&mut reader, &mut body)?;
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, answer) = match (method, path) {
            ("PUT", "/latest/api/token") => ("200 OK", TOKEN.to_owned()),
            ("GET", "/latest/meta-data/instance-id") if token.as_deref() == Some(TOKEN) => {
                ("200 OK", instance_id.to_owned())
            }
            ("GET", _) if token.as_deref() != Some(TOKEN) => ("401 Unauthorized", String::new()),
            ("GET", p) => match notices.lock().ok().and_then(|n| n.get(p).cloned()) {
                Some(body) => ("200 OK", body),
                None => ("404 Not Found", String::new()),
            },
            _ => ("404 Not Found", String::new()),
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n{answer}",
            answer.len()
        )?;
        out.flush()?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
