//! The EC2 `Compute` and S3 `Store` against moto server, which speaks the real APIs on
//! loopback: one RunInstances call per group, every launch attribute visible through
//! the API, idempotent launches, teardown by tag, multipart round trips and
//! create-if-absent claims.
//!
//! moto does not run instances; booting them is the EC2 simulator's job (a later
//! issue). Known moto 5.2 limits the tests do not depend on: it reads only MinCount, and
//! attaches an instance profile to the first instance of a multi-count launch only.

use squall::backend::aws::ec2::{Ec2Compute, Ec2Settings};
use squall::backend::aws::s3::S3Store;
use squall::plan::{FleetGroup, Market};
use squall::seam::Store;
use squall::seam::compute::{self, Compute, InstanceState, LaunchRequest, tags};
use squall_tests::moto::{self, Moto};
pub(crate) use squall_tests::moto::{Network, network};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Counts the SDK operations a client sends, by name: proof of how many API calls a
/// launch makes, taken at the SDK's edge rather than from a mock.
#[derive(Debug, Default, Clone)]
struct CallCounter(Arc<std::sync::Mutex<BTreeMap<String, usize>>>);

impl CallCounter {
    fn get(&self, op: &str) -> usize {
        self.0
            .lock()
            .map(|m| m.get(op).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl aws_sdk_ec2::config::Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_execution(
        &self,
        ctx: &aws_sdk_ec2::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        use aws_sdk_ec2::operation::{
            describe_instances::DescribeInstancesInput, run_instances::RunInstancesInput,
            terminate_instances::TerminateInstancesInput,
        };
        let input = ctx.input();
        let op = if input.downcast_ref::<RunInstancesInput>().is_some() {
            "RunInstances"
        } else if input.downcast_ref::<DescribeInstancesInput>().is_some() {
            "DescribeInstances"
        } else if input.downcast_ref::<TerminateInstancesInput>().is_some() {
            "TerminateInstances"
        } else {
            "other"
        };
        if let Ok(mut m) = self.0.lock() {
            *m.entry(op.to_owned()).or_default() += 1;
        }
        Ok(())
    }
}

pub(crate) fn group(count: u32) -> FleetGroup {
    FleetGroup {
        count,
        min_count: None,
        instance_type: None,
        image: None,
        market: Market::OnDemand,
        volume_gb: Some(30),
        user: None,
        subnet: None,
        security_groups: None,
        public_ip: false,
        instance_profile: None,
        replace: None,
    }
}

pub(crate) fn request(run: &str, spec: FleetGroup) -> LaunchRequest {
    LaunchRequest {
        run_id: run.to_owned(),
        group: "workers".into(),
        tags: BTreeMap::from([
            (tags::RUN.to_owned(), run.to_owned()),
            (tags::ROLE.to_owned(), "worker".to_owned()),
            (tags::GROUP.to_owned(), "workers".to_owned()),
            (tags::DEADLINE.to_owned(), "1900000000".to_owned()),
        ]),
        user_data: "#!/bin/sh\necho booted > /tmp/booted\n".into(),
        client_token: compute::client_token(run, "workers"),
        instance_profile: None,
        spec,
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn a_group_is_one_run_instances_call_with_every_launch_attribute() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let conf = moto.sdk_config().await;
        let counter = CallCounter::default();
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&conf)
                .interceptor(counter.clone())
                .build(),
        );
        let net = network(&ec2).await;
        let compute = Ec2Compute::new(
            ec2.clone(),
            Ec2Settings {
                subnet: Some(net.subnet.clone()),
                security_groups: vec![net.security_group.clone()],
                image: Some(net.image.clone()),
                instance_type: Some("t3.micro".into()),
                running_deadline: Duration::from_secs(60),
            },
        );
        let req = request("aws-run-1", group(5));
        let launched = compute.launch(&req).await.expect("launch");
        assert_eq!(launched.len(), 5);
        assert_eq!(
            counter.get("RunInstances"),
            1,
            "a group of 5 is ONE RunInstances call"
        );
        for i in &launched {
            assert_eq!(i.state, InstanceState::Running);
            assert!(
                i.address.starts_with(net.cidr.trim_end_matches("0/24")),
                "a loopback private IP: {}",
                i.address
            );
        }

        // Every attribute, as the API reports it.
        let ids: Vec<String> = launched.iter().map(|i| i.id.clone()).collect();
        let described = ec2
            .describe_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await
            .expect("describe");
        let all: Vec<_> = described
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .collect();
        assert_eq!(all.len(), 5);
        for inst in &all {
            let tag = |k: &str| {
                inst.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .map(str::to_owned)
            };
            assert_eq!(tag(tags::RUN).as_deref(), Some("aws-run-1"));
            assert_eq!(tag(tags::ROLE).as_deref(), Some("worker"));
            assert_eq!(tag(tags::GROUP).as_deref(), Some("workers"));
            assert_eq!(tag(tags::DEADLINE).as_deref(), Some("1900000000"));
            assert_eq!(inst.subnet_id(), Some(net.subnet.as_str()));
            assert_eq!(inst.instance_type().map(|t| t.as_str()), Some("t3.micro"));
            assert!(
                inst.public_ip_address().is_none(),
                "no public IP unless asked"
            );
            // Given through the network interface spec (moto reports them on the ENI).
            let groups: Vec<&str> = inst
                .security_groups()
                .iter()
                .chain(inst.network_interfaces().iter().flat_map(|n| n.groups()))
                .filter_map(|g| g.group_id())
                .collect();
            assert!(groups.contains(&net.security_group.as_str()), "{groups:?}");
            let md = inst.metadata_options().expect("metadata options");
            assert_eq!(
                md.http_tokens().map(|t| t.as_str()),
                Some("required"),
                "IMDSv2 required"
            );
            assert_eq!(
                md.http_put_response_hop_limit(),
                Some(1),
                "a worker's metadata answers the instance only, not its containers"
            );
            let id = inst.instance_id().expect("id");
            let ud = ec2
                .describe_instance_attribute()
                .instance_id(id)
                .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
                .send()
                .await
                .expect("user data");
            let encoded = ud
                .user_data()
                .and_then(|v| v.value())
                .expect("user data is set");
            assert_eq!(
                aws_smithy_types::base64::decode(encoded).expect("base64"),
                req.user_data.as_bytes()
            );
            let sd = ec2
                .describe_instance_attribute()
                .instance_id(id)
                .attribute(
                    aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior,
                )
                .send()
                .await
                .expect("shutdown behaviour");
            assert_eq!(
                sd.instance_initiated_shutdown_behavior()
                    .and_then(|v| v.value()),
                Some("terminate")
            );
        }
        let volumes = ec2
            .describe_volumes()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:squall:run")
                    .values("aws-run-1")
                    .build(),
            )
            .send()
            .await
            .expect("volumes");
        assert!(!volumes.volumes().is_empty(), "volumes carry the run tag");

        // The same launch again (a retried call): no second fleet.
        let again = compute.launch(&req).await.expect("relaunch");
        let mut again_ids: Vec<String> = again.iter().map(|i| i.id.clone()).collect();
        let mut first_ids = ids.clone();
        again_ids.sort();
        first_ids.sort();
        assert_eq!(
            again_ids, first_ids,
            "the same client token gives the same instances"
        );
        assert_eq!(
            counter.get("RunInstances"),
            1,
            "a retried launch launches nothing"
        );
        assert_eq!(
            compute
                .list_by_tag(tags::RUN, "aws-run-1")
                .await
                .expect("list")
                .len(),
            5
        );

        // Teardown from the tags alone, with a fresh compute (as a fresh process would).
        let fresh = Ec2Compute::new(aws_sdk_ec2::Client::new(&conf), Ec2Settings::default());
        assert_eq!(
            compute::teardown_run(&fresh, "aws-run-1")
                .await
                .expect("teardown"),
            5
        );
        let left = fresh
            .list_by_tag(tags::RUN, "aws-run-1")
            .await
            .expect("list");
        assert!(
            left.iter().all(|i| i.state == InstanceState::Terminated),
            "{left:?}"
        );
        assert_eq!(
            compute::teardown_run(&fresh, "aws-run-1")
                .await
                .expect("again"),
            0,
            "idempotent"
        );
    });
}

#[test]
fn user_data_over_the_limit_is_refused_before_calling_ec2() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let conf = moto.sdk_config().await;
        let compute = Ec2Compute::new(
            aws_sdk_ec2::Client::new(&conf),
            Ec2Settings {
                image: Some("ami-any".into()),
                ..Ec2Settings::default()
            },
        );
        let mut req = request("aws-run-2", group(1));
        req.user_data = "x".repeat(squall::backend::aws::ec2::USER_DATA_LIMIT + 1);
        let e = squall::error::chain(&compute.launch(&req).await.expect_err("too big"));
        assert!(e.contains("over EC2's limit of 16384"), "{e}");
    });
}

/// Deterministic pseudo-random bytes (incompressible, so sizes are real).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn s3_multipart_round_trip_listing_and_claims() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let conf = moto.sdk_config().await;
        let client = squall::backend::aws::s3_client(&conf);
        client
            .create_bucket()
            .bucket("squall-runs")
            .send()
            .await
            .expect("CreateBucket");
        let store = S3Store::new(client, "squall-runs", "prefix/");

        let data = noise(20 * 1024 * 1024 + 12345);
        let mut reader = std::io::Cursor::new(data.clone());
        let n = store
            .put_stream("runs/r1/logs/w-0.tar.gz", &mut reader)
            .await
            .expect("multipart upload");
        assert_eq!(n, data.len() as u64);
        let back = store
            .get("runs/r1/logs/w-0.tar.gz")
            .await
            .expect("get")
            .expect("present");
        assert!(back == data, "the 20 MiB object round-trips byte for byte");

        store
            .put("runs/r1/run.json", b"{}".to_vec())
            .await
            .expect("put");
        assert_eq!(
            store.list("runs/r1/").await.expect("list"),
            ["runs/r1/logs/w-0.tar.gz", "runs/r1/run.json"]
        );
        assert_eq!(store.get("runs/r1/nope").await.expect("get"), None);
        assert_eq!(
            store.locate("runs/r1/run.json"),
            "s3://squall-runs/prefix/runs/r1/run.json"
        );

        assert!(
            store
                .create_if_absent("runs/r2/claim", b"first".to_vec())
                .await
                .expect("claim")
        );
        assert!(
            !store
                .create_if_absent("runs/r2/claim", b"second".to_vec())
                .await
                .expect("claim"),
            "a second claim is refused"
        );
        assert_eq!(
            store.get("runs/r2/claim").await.expect("get").as_deref(),
            Some(&b"first"[..])
        );
    });
}
