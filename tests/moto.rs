//! moto server (PyPI `moto[server]`) on a free loopback port, for tests that speak the
//! real EC2 and S3 APIs without AWS. Started per test and stopped by PID on drop.
//!
//! Installing moto into its venv is `scripts/install-test-deps`'s job; this module only
//! finds and runs it. It never points anything at a non-loopback address.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// Where `scripts/install-test-deps` puts moto.
pub fn venv() -> PathBuf {
    std::env::var_os("SQUALL_MOTO_VENV")
        .map_or_else(|| PathBuf::from("/var/tmp/squall-moto-venv"), PathBuf::from)
}

fn server_binary() -> PathBuf {
    venv().join("bin/moto_server")
}

/// Whether moto is installed. Under `CI=true` a missing moto fails the test; locally it
/// prints a loud skip and returns false.
pub fn available() -> bool {
    if server_binary().is_file() {
        return true;
    }
    let msg = format!(
        "moto is not installed at {} (run scripts/install-test-deps)",
        server_binary().display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

/// A running moto server. Dropping it stops the server.
#[derive(Debug)]
pub struct Moto {
    pub addr: SocketAddr,
    child: Child,
    pub log: PathBuf,
}

impl Moto {
    /// Starts moto on a free port of 127.0.0.1 and waits until it answers.
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log =
            std::env::temp_dir().join(format!("squall-moto-{}-{port}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("creating the moto log");
        let child = Command::new(server_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("starting moto_server");
        let mut moto = Moto { addr, child, log };
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto_server exited ({status}): {}",
                    std::fs::read_to_string(&moto.log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not listen on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Environment variables that point the AWS SDK (in this process or a child) here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// SDK configuration for this server (built without touching the environment).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A VPC and subnet with a loopback CIDR (moto assigns 127.200.x.y private IPs), a
/// security group, and an image.
///
/// Each network gets a /24 of its own (`127.200.N.0/24`), held by a lock file while the
/// `Network` lives: tests run in parallel processes, each with its own moto, and two
/// simulated instances must never get the same private IP (their sshd would collide).
#[derive(Debug, Clone)]
pub struct Network {
    pub subnet: String,
    pub security_group: String,
    pub image: String,
    /// The subnet's CIDR, `127.200.N.0/24`.
    pub cidr: String,
    _lock: std::sync::Arc<std::fs::File>,
}

/// A /24 of 127.200.0.0/16 no other live test holds: (N, its lock).
fn claim_subnet() -> (u8, std::fs::File) {
    for n in 1..=254u8 {
        let path = std::env::temp_dir().join(format!("squall-test-subnet-127.200.{n}.lock"));
        let Ok(file) = std::fs::File::create(&path) else {
            continue;
        };
        if file.try_lock().is_ok() {
            return (n, file);
        }
    }
    panic!("every test subnet of 127.200.0.0/16 is in use");
}

pub async fn network(ec2: &aws_sdk_ec2::Client) -> Network {
    let (n, lock) = claim_subnet();
    let cidr = format!("127.200.{n}.0/24");
    let vpc = ec2
        .create_vpc()
        .cidr_block("127.200.0.0/16")
        .send()
        .await
        .expect("CreateVpc");
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("a vpc id")
        .to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block(&cidr)
        .send()
        .await
        .expect("CreateSubnet");
    let sg = ec2
        .create_security_group()
        .vpc_id(&vpc_id)
        .group_name("squall-workers")
        .description("squall workers")
        .send()
        .await
        .expect("CreateSecurityGroup");
    let images = ec2.describe_images().send().await.expect("DescribeImages");
    let image = images
        .images()
        .iter()
        .find(|i| i.root_device_name().is_some())
        .and_then(|i| i.image_id())
        .expect("moto has images")
        .to_owned();
    Network {
        subnet: subnet
            .subnet()
            .and_then(|s| s.subnet_id())
            .expect("subnet id")
            .to_owned(),
        security_group: sg.group_id().expect("group id").to_owned(),
        image,
        cidr,
        _lock: std::sync::Arc::new(lock),
    }
}
