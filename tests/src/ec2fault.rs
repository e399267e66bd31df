//! A fault-injecting proxy in front of moto's EC2 API, on 127.0.0.1, for the
//! simulator's masters (point them at it with [`Ec2Fault::env`]): it forwards every
//! request unchanged, except that it answers `InsufficientInstanceCapacity` (as EC2
//! does, HTTP 500 with the EC2 error document) to spot `RunInstances` calls whose
//! parameters contain a marker, e.g. a replacement's `-r1` name: the first rung of its
//! capacity ladder fails, the on-demand rung goes through. Dropping it stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a proxy lives, whatever the test does.
const MAX_LIFETIME: Duration = Duration::from_secs(1200);

#[derive(Debug)]
pub struct Ec2Fault {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU32>,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ec2Fault {
    /// Fails spot launches whose parameters contain `marker`, and forwards the rest
    /// once told where ([`Ec2Fault::forward_to`]).
    pub fn start(marker: &str) -> Ec2Fault {
        let upstream: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let to = upstream.clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the EC2 fault proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU32::new(0));
        let (flag, count, marker) = (stop.clone(), failed.clone(), marker.to_owned());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (count, marker) = (count.clone(), marker.clone());
                        let Some(upstream) = to.lock().ok().and_then(|u| *u) else {
                            continue; // not forwarding yet: the client sees a reset
                        };
                        std::thread::spawn(move || {
                            let _ = serve(client, upstream, &marker, &count);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ec2Fault {
            addr,
            stop,
            failed,
            upstream,
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
        if let Ok(mut u) = self.upstream.lock() {
            *u = Some(addr);
        }
    }

    /// The environment variable that points the AWS SDK's EC2 client here.
    pub fn env(&self) -> (&'static str, String) {
        ("AWS_ENDPOINT_URL_EC2", format!("http://{}", self.addr))
    }

    /// How many launches it failed.
    pub fn failed(&self) -> u32 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// One client connection: each request forwarded on a fresh upstream connection.
fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    marker: &str,
    failed: &AtomicU32,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut out = client;
    for _ in 0..1000 {
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
            let end = line.trim().is_empty();
            if !line.to_ascii_lowercase().starts_with("connection:") {
                head.push_str(&line);
            }
            if end {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let text = String::from_utf8_lossy(&body);
        let spot = text.contains("Action=RunInstances")
            && text.contains("InstanceMarketOptions")
            && text.contains(marker);
        if spot {
            failed.fetch_add(1, Ordering::Relaxed);
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                <Code>InsufficientInstanceCapacity</Code><Message>We currently do not have \
                sufficient spot capacity in the Availability Zone you requested.</Message>\
                </Error></Errors><RequestID>squall-test-fault</RequestID></Response>";
            write!(
                out,
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{xml}",
                xml.len()
            )?;
            out.flush()?;
            continue;
        }
        // `head` ends with its blank line; ask moto to close, so its answer ends there.
        let head = head.trim_end_matches("\r\n").trim_end_matches('\n');
        let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
        up.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(up, "{head}\r\nConnection: close\r\n\r\n")?;
        up.write_all(&body)?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer)?;
        out.write_all(&answer)?;
        out.flush()?;
        // The answer says `Connection: close`: the client reconnects for its next one.
        return Ok(());
    }
    Ok(())
}

impl Drop for Ec2Fault {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
