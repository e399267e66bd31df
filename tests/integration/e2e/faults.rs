//! Whole runs with a share of the master's EC2 and S3 calls failing (throttled, 500s,
//! dropped connections; `squall_tests::faults` between the instances and moto): at 10%
//! and at 30% of every call, each run completes, or fails with an honest record; no
//! instance outlives it; and every log line reaches S3. The calls made, failed and
//! retried are printed per run.

use super::{assert_outputs, playbook, quick_faults, setup};
use crate::aws::runtime;
use squall::record::RunStatus;
use squall_tests::ec2sim;
use squall_tests::faults::{FaultProxy, Faults, Service};
use squall_tests::moto;
use std::time::{Duration, Instant};

#[test]
fn runs_with_a_tenth_and_with_thirty_percent_of_ec2_and_s3_calls_failing_complete_honestly() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        for (fraction, seed) in [(0.10, 17u64), (0.30, 29)] {
            let started = Instant::now();
            let ec2 = FaultProxy::start(Service::Ec2, Faults::fraction(fraction, seed));
            let s3 = FaultProxy::start(Service::S3, Faults::fraction(fraction, seed + 1));
            let mut env = quick_faults();
            env.push(ec2.env());
            env.push(s3.env());
            // The AWS CLI of the instances' user-data (fetching squall) retries as an
            // image could set it to; squall's own SDK clients keep squall's settings.
            env.push(("AWS_RETRY_MODE", "standard".into()));
            env.push(("AWS_MAX_ATTEMPTS", "10".into()));
            let e = setup(&playbook("6m", 1, None), &env).await;
            ec2.forward_to(&e._moto.endpoint());
            s3.forward_to(&e._moto.endpoint());
            let run = e.start(&format!("inbox/faults-{seed}.csv")).await;
            let rec = e.record(&run, Duration::from_secs(420)).await;
            // No instance outlives the run (the master ends itself last, its workers
            // by teardown or by their deadline).
            e.assert_all_ended(&run, Duration::from_secs(180)).await;
            // At 10% every call gets through within its retries: the run succeeds.
            if fraction < 0.2 {
                e.assert_succeeded(&rec);
            }
            match rec.status {
                RunStatus::Succeeded => assert_outputs(&e, &run, &rec).await,
                other => {
                    // An honest record: why, and each host's logs kept.
                    let reason = rec.reason.clone().unwrap_or_default();
                    assert!(!reason.is_empty(), "{other:?} without a reason");
                    for h in &rec.hosts {
                        assert!(
                            h.archive.is_some() || h.snapshot.is_some(),
                            "{} kept no logs: {h:?}",
                            h.name
                        );
                    }
                }
            }
            let (c2, c3) = (ec2.total(), s3.total());
            eprintln!(
                "{:.0}% faults: run {} in {:.0}s; EC2 calls {} failed {} retried {}; S3 calls {} failed {} retried {}",
                fraction * 100.0,
                rec.status.as_str(),
                started.elapsed().as_secs_f64(),
                c2.calls,
                c2.failed,
                c2.retried,
                c3.calls,
                c3.failed,
                c3.retried
            );
            eprintln!("  EC2 by operation: {:?}", ec2.counts());
            eprintln!("  S3 by operation: {:?}", s3.counts());
            // The faults really were in the way.
            assert!(c2.failed > 0 && c3.failed > 0, "{c2:?} {c3:?}");
        }
    });
}
