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

/// Whether moto is installed; if not, the test is skipped ([`crate::skip`]: a failure
/// under CI) and this is false.
pub fn available() -> bool {
    if server_binary().is_file() {
        return true;
    }
    crate::skip(&format!(
        "moto is not installed at {} (run scripts/install-test-deps)",
        server_binary().display()
    ));
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

    /// SDK configuration for this server (built without touching the environment), with
    /// squall's retries and timeouts.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        squall::backend::aws::with_squall_defaults(aws_config::defaults(
            aws_config::BehaviorVersion::latest(),
        ))
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

impl Moto {
    /// A fresh bucket in this server, as a squall store.
    pub async fn bucket(&self, name: &str) -> squall::backend::aws::s3::S3Store {
        let s3 = squall::backend::aws::s3_client(&self.sdk_config().await);
        s3.create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("CreateBucket");
        squall::backend::aws::s3::S3Store::new(s3, name, "")
    }

    /// An instance's user-data as the EC2 API reports it (decoded).
    pub async fn user_data(&self, id: &str) -> String {
        let ec2 = squall::backend::aws::ec2_client(&self.sdk_config().await);
        let ud = ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .expect("DescribeInstanceAttribute");
        let b64 = ud.user_data().and_then(|v| v.value()).unwrap_or_default();
        String::from_utf8(aws_smithy_types::base64::decode(b64).expect("base64")).expect("utf-8")
    }
}

/// The launcher's settings for `bucket` in `net` (master and workers in its subnet and
/// security group, moto's image, no profile); uploads and schedules start empty.
pub fn launch_settings(bucket: &str, net: &Network) -> squall::cloud::launch::Settings {
    squall::cloud::launch::Settings {
        bucket: bucket.into(),
        subnet: net.subnet.clone(),
        security_groups: vec![net.security_group.clone()],
        worker_security_groups: vec![net.security_group.clone()],
        master_profile: None,
        image: net.image.clone(),
        master_type: "t3.small".into(),
        uploads: Vec::new(),
        schedules: std::collections::BTreeMap::new(),
        binary_key: "bin/squall".into(),
        agent_key: "bin/squall-worker".into(),
        stale_after: squall::cloud::settings::DEFAULT_STALE_AFTER,
        stale_claim: Duration::from_secs(squall::cloud::launch::STALE_CLAIM_SECS),
        launch_budget: None,
        watch_target: Some(WATCH_TARGET.into()),
        watch_role: Some(WATCH_ROLE.into()),
        stack: Some(TEST_STACK.into()),
        secrets_prefix: Some(TEST_SECRETS_PREFIX.into()),
    }
}

/// The launcher function a test run's watchdog schedule names (moto never fires it).
pub const WATCH_TARGET: &str = "arn:aws:lambda:us-east-1:123456789012:function:squall-launcher";
/// The stack test launchers say they belong to.
pub const TEST_STACK: &str = "squall-test";
/// The SSM path the test stack's master may read secrets under.
pub const TEST_SECRETS_PREFIX: &str = "/squall/secrets/";
/// The role the schedule would assume.
pub const WATCH_ROLE: &str = "arn:aws:iam::123456789012:role/squall-scheduler";

/// AWS's sample "s3-put" Lambda test event, for one object of `bucket`.
pub fn s3_put_event(bucket: &str, key: &str, etag: &str, sequencer: &str) -> serde_json::Value {
    serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-22T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "EXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "EXAMPLE123456789", "x-amz-id-2": "EXAMPLE123/5678abcdefghijklambdaisawesome/mnopqrstuvwxyzABCDEFGH"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "testConfigRule",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": format!("arn:aws:s3:::{bucket}")},
               "object": {"key": key, "size": 1024, "eTag": etag, "sequencer": sequencer}}
    }]})
}
