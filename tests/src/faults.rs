//! A fault-injecting HTTP proxy in front of one of moto's AWS APIs, on 127.0.0.1: real
//! HTTP between the SDK (or the AWS CLI) and moto. Point a process at it with
//! [`FaultProxy::env`] (`AWS_ENDPOINT_URL_EC2` or `AWS_ENDPOINT_URL_S3`). It forwards
//! every request unchanged, except those its [`Faults`] pick:
//!
//! - a seeded fraction of the calls (of every operation, or of the ones named), each
//!   answered as the service answers when it is unwell: throttling (EC2's
//!   `RequestLimitExceeded`, S3's `SlowDown`, both HTTP 503), an HTTP 500
//!   (`InternalError`), or a dropped connection (read, then closed unanswered). A picked
//!   call never reaches moto, so nothing it would have done happens, except with
//!   [`Fault::LoseAnswer`] (asked for by name): the call is done, and its answer lost.
//! - spot `RunInstances` calls whose parameters contain a marker (e.g. a replacement's
//!   `-r1` name): answered `InsufficientInstanceCapacity`, as EC2 does, so that the first
//!   rung of a capacity ladder fails and the on-demand rung goes through.
//!
//! It counts, per operation, the calls it saw, the ones it failed, and the retries
//! among them (the SDK's `amz-sdk-request: attempt=N` header). Dropping it stops it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a proxy lives, whatever the test does.
const MAX_LIFETIME: Duration = Duration::from_secs(1800);

/// The API a proxy stands in front of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ec2,
    S3,
}

/// How a picked call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `RequestLimitExceeded` (EC2) or `SlowDown` (S3), HTTP 503.
    Throttle,
    /// HTTP 500 `InternalError`.
    ServerError,
    /// The request is read, then the connection closed without an answer.
    Drop,
    /// The request is forwarded and done, then its answer lost (the connection closed):
    /// the caller cannot tell it from [`Fault::Drop`].
    LoseAnswer,
}

/// Which calls fail, and how.
#[derive(Debug, Clone)]
pub struct Faults {
    /// The fraction of calls failed, 0.0 to 1.0.
    pub fraction: f64,
    /// Only these operations (all when empty).
    pub only: Vec<String>,
    /// The ways picked calls fail, taken in turn by the same seeded draw.
    pub kinds: Vec<Fault>,
    pub seed: u64,
    /// Spot launches whose parameters contain this fail for capacity.
    pub capacity_marker: Option<String>,
}

impl Faults {
    /// No fault at all.
    pub fn none() -> Faults {
        Faults {
            fraction: 0.0,
            only: Vec::new(),
            kinds: vec![Fault::Throttle, Fault::ServerError, Fault::Drop],
            seed: 1,
            capacity_marker: None,
        }
    }

    /// `fraction` of every call, throttled, 500 or dropped in equal parts.
    pub fn fraction(fraction: f64, seed: u64) -> Faults {
        Faults {
            fraction,
            seed,
            ..Faults::none()
        }
    }
}

/// What a proxy saw of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls that reached the proxy (attempts, retries included).
    pub calls: u64,
    /// Calls it failed.
    pub failed: u64,
    /// Calls that were retries of an earlier attempt.
    pub retried: u64,
}

#[derive(Debug, Default)]
struct State {
    upstream: Option<SocketAddr>,
    counts: BTreeMap<String, Counts>,
}

#[derive(Debug)]
pub struct FaultProxy {
    service: Service,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy for `service` failing what `faults` says, forwarding once told where
    /// ([`FaultProxy::forward_to`]).
    pub fn start(service: Service, faults: Faults) -> FaultProxy {
        let state: Arc<Mutex<State>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, shared) = (stop.clone(), state.clone());
        let draws = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(faults);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Some(upstream) = shared.lock().ok().and_then(|s| s.upstream) else {
                            continue; // not forwarding yet: the client sees a reset
                        };
                        let (shared, faults, draws) =
                            (shared.clone(), faults.clone(), draws.clone());
                        std::thread::spawn(move || {
                            let call = Call {
                                service,
                                upstream,
                                faults: &faults,
                                draws: &draws,
                                state: &shared,
                            };
                            let _ = call.serve(client);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            service,
            addr,
            stop,
            state,
            thread: Some(thread),
        }
    }

    /// Forwards to `endpoint` (moto's `http://127.0.0.1:PORT`) from now on.
    pub fn forward_to(&self, endpoint: &str) {
        let addr: SocketAddr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("moto's endpoint is host:port");
        if let Ok(mut s) = self.state.lock() {
            s.upstream = Some(addr);
        }
    }

    /// Forwards to `moto` from now on, and returns the SDK configuration (squall's, as
    /// `Moto::sdk_config` gives it) whose calls go through this proxy.
    pub async fn sdk_config_for(&self, moto: &crate::moto::Moto) -> aws_config::SdkConfig {
        self.forward_to(&moto.endpoint());
        moto.sdk_config()
            .await
            .to_builder()
            .endpoint_url(self.endpoint())
            .build()
    }

    /// The proxy's URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment variable that points the AWS SDK's (and CLI's) client here.
    pub fn env(&self) -> (&'static str, String) {
        let name = match self.service {
            Service::Ec2 => "AWS_ENDPOINT_URL_EC2",
            Service::S3 => "AWS_ENDPOINT_URL_S3",
        };
        (name, self.endpoint())
    }

    /// What it saw, per operation.
    pub fn counts(&self) -> BTreeMap<String, Counts> {
        self.state
            .lock()
            .map(|s| s.counts.clone())
            .unwrap_or_default()
    }

    /// What it saw of every operation together.
    pub fn total(&self) -> Counts {
        self.counts()
            .values()
            .fold(Counts::default(), |a, c| Counts {
                calls: a.calls + c.calls,
                failed: a.failed + c.failed,
                retried: a.retried + c.retried,
            })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request as read off the client.
struct Request {
    /// Request line and headers, without `Connection` and `Expect`, ending in a blank line.
    head: String,
    /// The body as sent (chunked bodies kept chunked).
    body: Vec<u8>,
    operation: String,
    attempt: u32,
}

/// One client connection's context.
struct Call<'a> {
    service: Service,
    upstream: SocketAddr,
    faults: &'a Faults,
    draws: &'a AtomicU64,
    state: &'a Mutex<State>,
}

impl Call<'_> {
    /// Serves the connection's requests, each forwarded on a fresh upstream connection.
    fn serve(&self, client: TcpStream) -> std::io::Result<()> {
        client.set_nonblocking(false)?;
        client.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut reader = BufReader::new(client.try_clone()?);
        let mut out = client;
        for _ in 0..10_000 {
            let Some(req) = read_request(&mut reader, self.service)? else {
                return Ok(());
            };
            let fault = self.pick(&req);
            self.count(&req, fault.is_some());
            match fault {
                Some(Picked::Drop) => return Ok(()), // closed unanswered
                Some(Picked::LoseAnswer) => {
                    self.forward(&req, &mut std::io::sink())?;
                    return Ok(()); // done upstream, closed unanswered here
                }
                Some(Picked::Answer(status, xml)) => {
                    write!(
                        out,
                        "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{xml}",
                        xml.len()
                    )?;
                    out.flush()?;
                }
                None => {
                    self.forward(&req, &mut out)?;
                    out.flush()?;
                    // The answer says `Connection: close`: the client reconnects.
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Sends `req` to moto on a fresh connection and copies its answer into `answer`.
    fn forward(&self, req: &Request, answer: &mut impl Write) -> std::io::Result<()> {
        let mut up = TcpStream::connect_timeout(&self.upstream, Duration::from_secs(5))?;
        up.set_read_timeout(Some(Duration::from_secs(120)))?;
        // Ask moto to close, so that its answer ends there.
        let head = req.head.trim_end_matches("\r\n").trim_end_matches('\n');
        write!(up, "{head}\r\nConnection: close\r\n\r\n")?;
        up.write_all(&req.body)?;
        std::io::copy(&mut up, answer)?;
        Ok(())
    }

    fn pick(&self, req: &Request) -> Option<Picked> {
        if let Some(marker) = &self.faults.capacity_marker
            && req.operation == "RunInstances"
            && String::from_utf8_lossy(&req.body).contains("InstanceMarketOptions")
            && String::from_utf8_lossy(&req.body).contains(marker.as_str())
        {
            return Some(Picked::Answer(
                "500 Internal Server Error",
                ec2_error(
                    "InsufficientInstanceCapacity",
                    "We currently do not have sufficient spot capacity in the Availability Zone you requested.",
                ),
            ));
        }
        let f = self.faults;
        if f.fraction <= 0.0 || f.kinds.is_empty() {
            return None;
        }
        if !f.only.is_empty() && !f.only.contains(&req.operation) {
            return None;
        }
        let draw = splitmix(f.seed ^ self.draws.fetch_add(1, Ordering::Relaxed));
        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
        if unit >= f.fraction {
            return None;
        }
        let kind = f.kinds[(draw % f.kinds.len() as u64) as usize];
        Some(match (kind, self.service) {
            (Fault::Drop, _) => Picked::Drop,
            (Fault::LoseAnswer, _) => Picked::LoseAnswer,
            (Fault::Throttle, Service::Ec2) => Picked::Answer(
                "503 Service Unavailable",
                ec2_error("RequestLimitExceeded", "Request limit exceeded."),
            ),
            (Fault::Throttle, Service::S3) => Picked::Answer(
                "503 Slow Down",
                s3_error("SlowDown", "Please reduce your request rate."),
            ),
            (Fault::ServerError, Service::Ec2) => Picked::Answer(
                "500 Internal Server Error",
                ec2_error("InternalError", "An internal error has occurred."),
            ),
            (Fault::ServerError, Service::S3) => Picked::Answer(
                "500 Internal Server Error",
                s3_error(
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                ),
            ),
        })
    }

    fn count(&self, req: &Request, failed: bool) {
        if let Ok(mut s) = self.state.lock() {
            let c = s.counts.entry(req.operation.clone()).or_default();
            c.calls += 1;
            c.failed += u64::from(failed);
            c.retried += u64::from(req.attempt > 1);
        }
    }
}

enum Picked {
    Drop,
    LoseAnswer,
    Answer(&'static str, String),
}

fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>squall-test-fault</RequestID></Response>"
    )
}

fn s3_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>squall-test-fault</RequestId></Error>"
    )
}

/// splitmix64: a seeded, well-spread draw per call.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Reads one request; `None` when the client closed the connection.
fn read_request(reader: &mut impl BufRead, service: Service) -> std::io::Result<Option<Request>> {
    let mut head = String::new();
    let (mut length, mut chunked, mut attempt, mut copy) = (0usize, false, 1u32, false);
    let mut first = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if first.is_empty() {
            first = line.clone();
        }
        let end = line.trim().is_empty();
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => length = v.parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "amz-sdk-request" => {
                    attempt = v
                        .split(';')
                        .find_map(|p| p.trim().strip_prefix("attempt=")?.parse().ok())
                        .unwrap_or(1);
                }
                "x-amz-copy-source" => copy = true,
                "connection" | "expect" => continue,
                _ => {}
            }
        }
        head.push_str(&line);
        if end {
            break;
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        body
    };
    let operation = match service {
        Service::Ec2 => ec2_operation(&body),
        Service::S3 => s3_operation(&first, copy),
    };
    Ok(Some(Request {
        head,
        body,
        operation,
        attempt,
    }))
}

/// A chunked body, kept as sent (size lines, chunks and the trailer).
fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    for _ in 0..1_000_000 {
        let mut size_line = String::new();
        if reader.read_line(&mut size_line)? == 0 {
            break;
        }
        raw.extend_from_slice(size_line.as_bytes());
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .unwrap_or(0);
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let mut t = String::new();
                if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    raw.extend_from_slice(t.as_bytes());
                    break;
                }
                raw.extend_from_slice(t.as_bytes());
            }
            break;
        }
        let mut chunk = vec![0u8; size + 2]; // and its CRLF
        reader.read_exact(&mut chunk)?;
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}

fn ec2_operation(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .find_map(|p| p.strip_prefix("Action="))
        .unwrap_or("Unknown")
        .to_owned()
}

/// The S3 operation of a request line (`PUT /bucket/key?partNumber=1&uploadId=x HTTP/1.1`).
fn s3_operation(request_line: &str, copy: bool) -> String {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let has = |q: &str| {
        query
            .split('&')
            .any(|p| p == q || p.starts_with(&format!("{q}=")))
    };
    let is_bucket = path.trim_matches('/').split('/').count() <= 1;
    match method {
        "GET" if has("list-type") || is_bucket => "ListObjectsV2",
        "GET" => "GetObject",
        "HEAD" => "HeadObject",
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" if copy => "CopyObject",
        "PUT" if is_bucket => "CreateBucket",
        "PUT" => "PutObject",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "POST" if has("delete") => "DeleteObjects",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        _ => "Unknown",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_operations_are_named_from_the_request_line() {
        let cases = [
            (
                "GET /b?list-type=2&prefix=runs%2F HTTP/1.1",
                false,
                "ListObjectsV2",
            ),
            ("GET /b/runs/x/run.json HTTP/1.1", false, "GetObject"),
            ("HEAD /b/k HTTP/1.1", false, "HeadObject"),
            (
                "PUT /b/k?partNumber=2&uploadId=u HTTP/1.1",
                false,
                "UploadPart",
            ),
            ("PUT /b/k HTTP/1.1", true, "CopyObject"),
            ("PUT /b/k?x-id=PutObject HTTP/1.1", false, "PutObject"),
            ("POST /b/k?uploads HTTP/1.1", false, "CreateMultipartUpload"),
            (
                "POST /b/k?uploadId=u HTTP/1.1",
                false,
                "CompleteMultipartUpload",
            ),
            ("DELETE /b/k HTTP/1.1", false, "DeleteObject"),
        ];
        for (line, copy, op) in cases {
            assert_eq!(s3_operation(line, copy), op, "{line}");
        }
        assert_eq!(
            ec2_operation(b"Action=RunInstances&Version=2016-11-15"),
            "RunInstances"
        );
    }

    #[test]
    fn the_draw_fails_about_the_fraction_asked() {
        let f = Faults::fraction(0.3, 7);
        let failed = (0..10_000u64)
            .filter(|i| {
                let d = splitmix(f.seed ^ i);
                ((d >> 11) as f64 / (1u64 << 53) as f64) < f.fraction
            })
            .count();
        assert!((2_700..3_300).contains(&failed), "{failed}");
    }
}
