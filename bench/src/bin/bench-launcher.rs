//! `bench-launcher`: how long the launcher takes from an event to RunInstances being
//! issued, against moto on loopback. A benchmark, not a test.
//!
//! The handler is the one the Lambda serves (`squall_launcher::handle`: parse, claim
//! with If-None-Match, read and validate the playbook from the bucket, check copy
//! sources, write the playbook and request, RunInstances; a sweep runs alongside). Each
//! of `--runs` S3 ObjectCreated events (AWS's sample payload, distinct etags, so each
//! is a new run) is timed from the call to the moment the SDK is about to transmit the
//! RunInstances request (an interceptor at the client's edge records it), and to the
//! handler's return. Every invocation must launch exactly one master (checked).
//!
//! ```text
//! scripts/install-test-deps      # moto
//! cargo run -p squall-bench --profile bench-fast --bin bench-launcher -- [--runs 20]
//! ```

use anyhow::{Context, Result, ensure};
use clap::Parser;
use squall::backend::aws::ec2::{Ec2Compute, Ec2Settings};
use squall::seam::Store;
use squall_bench::stats::{max, median, min};
use squall_launcher::{Launcher, Settings};
use squall_tests::moto::{Moto, network};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUCKET: &str = "squall-bench-launcher";
const PLAYBOOK: &str = "name: nightly\ndeadline: 2h\nfleet: { workers: { count: 4, instance_type: [c7i.large, c6i.large] } }\nstages:\n  - name: score\n    hosts: workers\n    shards: [1, 2, 3, 4, 5, 6, 7, 8]\n    tasks:\n      - copy: { src: files/score.sh, dest: score.sh, mode: \"0755\" }\n      - shell: ./score.sh {{ item }} {{ trigger.key }}\n";

#[derive(Debug, Parser)]
#[command(
    name = "bench-launcher",
    about = "The launcher's handler, event to RunInstances, against moto"
)]
struct Args {
    /// Timed S3 events (each a new run), after one untimed warm-up.
    #[arg(long, value_name = "N", default_value_t = 20)]
    runs: usize,
}

/// When RunInstances was about to be transmitted, last.
#[derive(Debug, Clone, Default)]
struct RunInstancesAt(Arc<Mutex<Option<Instant>>>);

impl aws_sdk_ec2::config::Intercept for RunInstancesAt {
    fn name(&self) -> &'static str {
        "RunInstancesAt"
    }

    fn read_before_transmit(
        &self,
        ctx: &aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_sdk_ec2::config::RuntimeComponents,
        _cfg: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        let body = ctx.request().body().bytes().unwrap_or_default();
        if body.starts_with(b"Action=RunInstances")
            && let Ok(mut at) = self.0.lock()
        {
            *at = Some(Instant::now());
        }
        Ok(())
    }
}

fn event(n: usize) -> serde_json::Value {
    squall_tests::moto::s3_put_event(
        BUCKET,
        &format!("inbox/batch-{n}.csv"),
        &format!("{n:032x}"),
        &format!("{n:018X}"),
    )
}

fn main() -> Result<()> {
    let runs = Args::parse().runs;
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let conf = moto.sdk_config().await;
        let store = moto.bucket(BUCKET).await;
        store
            .put("playbooks/nightly.yml", PLAYBOOK.as_bytes().to_vec())
            .await?;
        store
            .put("playbooks/files/score.sh", b"#!/bin/sh\necho $1\n".to_vec())
            .await?;
        let net = network(&squall::backend::aws::ec2_client(&conf)).await;
        let at = RunInstancesAt::default();
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&conf)
                .interceptor(at.clone())
                .build(),
        );
        let settings = Settings {
            uploads: vec![("inbox/".into(), "playbooks/nightly.yml".into())],
            ..squall_tests::moto::launch_settings(BUCKET, &net)
        };
        let launcher = Launcher {
            control: None,
            compute: Arc::new(Ec2Compute::new(
                ec2,
                Ec2Settings {
                    subnet: Some(net.subnet.clone()),
                    security_groups: vec![net.security_group.clone()],
                    image: Some(net.image.clone()),
                    instance_type: Some("t3.small".into()),
                    running_deadline: Duration::ZERO,
                },
            )),
            store: Arc::new(store),
            settings,
        };
        let now = squall::runner::now_ms() / 1000;
        let mut to_run_instances = Vec::new();
        let mut to_return = Vec::new();
        // One untimed warm-up (connections, moto's first-call costs).
        squall_launcher::handle(&launcher, &event(usize::MAX / 2), now).await?;
        for n in 0..runs {
            if let Ok(mut a) = at.0.lock() {
                *a = None;
            }
            let start = Instant::now();
            let handled = squall_launcher::handle(&launcher, &event(n), now).await?;
            let total = start.elapsed();
            ensure!(
                handled.runs.len() == 1 && handled.runs[0].status == "launched",
                "invocation {n} did not launch: {:?}",
                handled.runs
            );
            let issued =
                at.0.lock()
                    .ok()
                    .and_then(|a| *a)
                    .context("RunInstances was not issued")?;
            to_run_instances.push(issued.duration_since(start).as_secs_f64() * 1000.0);
            to_return.push(total.as_secs_f64() * 1000.0);
        }
        let stats = |v: &[f64]| {
            format!(
                "median {:.1} ms, min {:.1}, max {:.1}",
                median(v),
                min(v),
                max(v)
            )
        };
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        println!("launcher, {runs} S3 events against moto on loopback ({build} build):");
        println!(
            "  event -> RunInstances issued: {}",
            stats(&to_run_instances)
        );
        println!("  event -> handler returned:    {}", stats(&to_return));
        Ok(())
    })
}
