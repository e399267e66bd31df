//! AWS calls under injected faults (`squall_tests::faults`, real HTTP between the SDK
//! and moto): one retry layer, so an operation that keeps failing is tried
//! `MAX_ATTEMPTS` times in all (never attempts times attempts), within its time bound,
//! and ends in a typed, retryable error; dropped connections and 500s are retried like
//! throttling; a conditional create is never retried blindly; and a store under 30%
//! faults still does all its work.

use crate::aws::runtime;
use squall::backend::aws::retry::{self, MAX_ATTEMPTS, Mode};
use squall::backend::aws::s3::S3Store;
use squall::seam::Store;
use squall_tests::faults::{Fault, FaultProxy, Faults, Service};
use squall_tests::moto::{self, Moto};
use std::time::{Duration, Instant};

const BUCKET: &str = "squall-throttling-test";

/// A store reaching moto through `proxy`, configured as squall configures its clients
/// (only the first backoff is shortened, so that the test stays short).
async fn store_via(moto: &Moto, proxy: &FaultProxy) -> S3Store {
    moto.bucket(BUCKET).await;
    let conf = proxy
        .sdk_config_for(moto)
        .await
        .to_builder()
        .retry_config(
            retry::retry_config(Mode::Standard).with_initial_backoff(Duration::from_millis(5)),
        )
        .build();
    S3Store::new(squall::backend::aws::s3_client(&conf), BUCKET, "")
}

fn always(op: &str, kind: Fault) -> Faults {
    Faults {
        fraction: 1.0,
        only: vec![op.into()],
        kinds: vec![kind],
        ..Faults::none()
    }
}

#[test]
fn an_operation_that_keeps_failing_is_tried_max_attempts_times_in_all() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        for (op, kind) in [
            ("PutObject", Fault::Throttle),
            ("GetObject", Fault::ServerError),
            ("HeadObject", Fault::Drop),
        ] {
            let proxy = FaultProxy::start(Service::S3, always(op, kind));
            let store = store_via(&moto, &proxy).await;
            let started = Instant::now();
            let err = match op {
                "PutObject" => store.put("k", b"v".to_vec()).await.expect_err("fails"),
                "GetObject" => store.get("k").await.expect_err("fails"),
                _ => store.head("k").await.expect_err("fails"),
            };
            let took = started.elapsed();
            let c = proxy.counts()[op];
            eprintln!("{op} under {kind:?}: {c:?} in {took:?}: {err}");
            // One layer: the SDK's attempts, none stacked on them (6 x 3 = 18 before).
            assert_eq!(c.calls, u64::from(MAX_ATTEMPTS), "{op}: {c:?}");
            assert_eq!(c.failed, c.calls);
            assert_eq!(c.retried, c.calls - 1, "{op}: {c:?}");
            assert!(took < retry::OPERATION_TIMEOUT, "{op} took {took:?}");
            let text = squall::error::chain(&err);
            match kind {
                Fault::Throttle => assert!(text.contains("SlowDown"), "{text}"),
                Fault::ServerError => assert!(text.contains("InternalError"), "{text}"),
                Fault::Drop | Fault::LoseAnswer => assert!(!text.is_empty()),
            }
        }
    });
}

#[test]
fn a_conditional_create_is_not_retried_by_the_sdk_and_is_never_mistaken_for_a_loss() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        // Half the creates fail: throttled (nothing done), or done with the answer lost
        // (the next attempt finds the object there: its body says it is ours). squall's
        // own loop retries, one call per attempt, and every claim is its creator's.
        let proxy = FaultProxy::start(
            Service::S3,
            Faults {
                fraction: 0.5,
                only: vec!["PutObject".into()],
                kinds: vec![Fault::Throttle, Fault::LoseAnswer],
                seed: 11,
                capacity_marker: None,
            },
        );
        let store = store_via(&moto, &proxy).await;
        let mut won = 0;
        for i in 0..20 {
            if store
                .create_if_absent(&format!("claims/{i}"), format!("mine-{i}").into_bytes())
                .await
                .expect("created within the attempts")
            {
                won += 1;
            }
        }
        assert_eq!(won, 20, "every first create is its creator's");
        let c = proxy.counts()["PutObject"];
        eprintln!("creates at 50% throttling: {c:?}");
        assert!(c.failed > 0, "the faults fired: {c:?}");
        assert_eq!(c.retried, 0, "no SDK retry of a conditional create: {c:?}");
        // And a create of an existing key is refused, not retried into a false win.
        assert!(
            !store
                .create_if_absent("claims/0", b"someone else".to_vec())
                .await
                .expect("answered")
        );
    });
}

#[test]
fn a_store_under_thirty_percent_faults_still_does_all_its_work() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let proxy = FaultProxy::start(Service::S3, Faults::fraction(0.3, 5));
        let store = store_via(&moto, &proxy).await;
        let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut reader: &[u8] = &big;
        let n = store
            .put_stream("big.bin", &mut reader)
            .await
            .expect("multipart");
        assert_eq!(n, big.len() as u64);
        for i in 0..40 {
            store
                .put(&format!("small/{i}"), format!("{i}").into_bytes())
                .await
                .expect("put");
        }
        assert_eq!(store.list("small/").await.expect("list").len(), 40);
        for i in 0..40 {
            let got = store.get(&format!("small/{i}")).await.expect("get");
            assert_eq!(got, Some(format!("{i}").into_bytes()));
        }
        assert_eq!(
            store.get("big.bin").await.expect("get").as_deref(),
            Some(&big[..])
        );
        let t = proxy.total();
        eprintln!("30% faults: {t:?} by operation {:?}", proxy.counts());
        assert!(t.failed * 100 >= t.calls * 15, "faults fired: {t:?}");
        // Every failed call was retried once, and nothing else was.
        assert_eq!(t.retried, t.failed, "{t:?}");
    });
}

#[test]
fn a_capacity_error_is_not_retried_the_ladder_moves_on_at_once() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        // Spot launches of this run fail for capacity (HTTP 500, as EC2 answers): the
        // SDK must not back off on that rung; the on-demand rung goes through at once.
        let proxy = FaultProxy::start(
            Service::Ec2,
            Faults {
                capacity_marker: Some("capacity-test".into()),
                ..Faults::none()
            },
        );
        let conf = proxy.sdk_config_for(&moto).await;
        let ec2 = squall::backend::aws::ec2_client(&conf);
        let net = moto::network(&ec2).await;
        let compute = squall::backend::aws::ec2::Ec2Compute::new(
            ec2,
            squall::backend::aws::ec2::Ec2Settings {
                subnet: Some(net.subnet.clone()),
                security_groups: vec![net.security_group.clone()],
                image: Some(net.image.clone()),
                instance_type: Some("t3.micro".into()),
                running_deadline: Duration::ZERO,
            },
        );
        let spec = squall::plan::FleetGroup {
            market: squall::plan::Market::SpotOrOnDemand,
            volume_gb: None,
            ..crate::aws::group(1)
        };
        let started = Instant::now();
        let launched = squall::seam::compute::Compute::launch(
            &compute,
            &crate::aws::request("capacity-test", spec),
        )
        .await
        .expect("on demand after the spot rung");
        let took = started.elapsed();
        assert_eq!(launched.len(), 1);
        let c = proxy.counts()["RunInstances"];
        eprintln!("RunInstances with a spot rung out of capacity: {c:?} in {took:?}");
        assert_eq!((c.calls, c.failed, c.retried), (2, 1, 0), "{c:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    });
}
