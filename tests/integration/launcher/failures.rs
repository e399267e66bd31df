//! A master launch that fails: refused for good (recorded `launch-failed` at once,
//! nothing launched), failing on every delivery (recorded when the attempts run out),
//! and failing once while the same event is delivered ten times over the stale-claim
//! window (exactly one run, one master, one launch record), and landing with its answer
//! lost (the master found and recorded as the launch, not a failure), and hanging past
//! the launcher's budget (noted, and the next delivery launches at once).

use super::{handle, masters, s3_put_event, setup};
use crate::aws::runtime;
use async_trait::async_trait;
use squall::cloud::claim::MAX_LAUNCH_ATTEMPTS;
use squall::record::{RunRecord, RunStatus};
use squall::seam::Store;
use squall::seam::compute::{Compute, ComputeError, Instance, LaunchRequest};
use squall_launcher::Launcher;
use squall_tests::moto::{self, Moto};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// EC2 (moto) whose first `fail` launches fail with passing trouble (after launching,
/// when `land` is set: the answer lost, as a timeout after the call landed would; or
/// after a minute without an answer, when `hang` is).
#[derive(Debug)]
struct FailingLaunches {
    inner: Arc<dyn Compute>,
    fail: u32,
    land: bool,
    hang: bool,
    launches: AtomicU32,
}

#[async_trait]
impl Compute for FailingLaunches {
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, ComputeError> {
        let n = self.launches.fetch_add(1, Ordering::SeqCst);
        if n < self.fail {
            if self.land {
                self.inner.launch(req).await?;
            }
            if self.hang {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            // As RunInstances throttled past every retry would.
            return Err(ComputeError::failed(
                "RunInstances",
                squall::error::Message("RequestLimitExceeded: Request limit exceeded.".into()),
            ));
        }
        self.inner.launch(req).await
    }
    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, ComputeError> {
        self.inner.describe(ids).await
    }
    async fn list_by_tag(&self, key: &str, value: &str) -> Result<Vec<Instance>, ComputeError> {
        self.inner.list_by_tag(key, value).await
    }
    async fn terminate(&self, ids: &[String]) -> Result<(), ComputeError> {
        self.inner.terminate(ids).await
    }
}

fn failing(l: &Launcher, fail: u32, stale_claim: Duration) -> (Launcher, Arc<FailingLaunches>) {
    failing_as(l, fail, false, stale_claim)
}

fn failing_as(
    l: &Launcher,
    fail: u32,
    land: bool,
    stale_claim: Duration,
) -> (Launcher, Arc<FailingLaunches>) {
    let compute = Arc::new(FailingLaunches {
        inner: l.compute.clone(),
        fail,
        land,
        hang: false,
        launches: AtomicU32::new(0),
    });
    let mut l = l.clone();
    l.compute = compute.clone();
    l.settings.stale_claim = stale_claim;
    (l, compute)
}

async fn record(store: &dyn Store, run: &str) -> Option<RunRecord> {
    store
        .get(&format!("runs/{run}/run.json"))
        .await
        .expect("get")
        .map(|b| serde_json::from_slice(&b).expect("a run record"))
}

/// How `squall runs` shows the run.
async fn listed_status(store: &dyn Store, run: &str) -> String {
    let k = squall::inspect::known(store, run)
        .await
        .expect("read")
        .expect("known");
    squall::inspect::row(run, &k, 0).status
}

#[test]
fn a_master_launch_refused_for_good_is_recorded_launch_failed_at_once() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        // A subnet that does not exist: EC2 refuses, and no retry or redelivery helps.
        let mut l = s.launcher.clone();
        l.settings.subnet = "subnet-0doesnotexist0000".into();
        let event = s3_put_event("inbox/refused.csv", "00000000000000000000000000000001");
        let out = handle(&l, &event, 1_795_400_000)
            .await
            .expect("answered normally: Lambda must not retry");
        assert_eq!(out[0].status, "launch-failed", "{out:?}");
        let run = out[0].run_id.clone().expect("run id");
        assert!(masters(&s.compute, &run).await.is_empty());
        let rec = record(&s.store, &run).await.expect("a record at once");
        assert_eq!(rec.status, RunStatus::LaunchFailed);
        let reason = rec.reason.unwrap_or_default();
        assert!(reason.contains("subnet-0doesnotexist0000"), "{reason}");
        assert_eq!(listed_status(&s.store, &run).await, "launch-failed");
        // A redelivery finds the record: nothing more is tried.
        let again = handle(&l, &event, 1_795_400_005).await.expect("handled");
        assert_eq!(again[0].status, "duplicate", "{again:?}");
    });
}

#[test]
fn a_launch_failing_on_every_delivery_ends_in_a_launch_failed_record() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        let (l, compute) = failing(&s.launcher, u32::MAX, Duration::from_secs(180));
        let event = s3_put_event("inbox/never.csv", "00000000000000000000000000000002");
        let now = 1_795_400_000;
        // Lambda's delivery and its two retries: each fails, the last one records.
        for attempt in 1..MAX_LAUNCH_ATTEMPTS {
            let e = handle(&l, &event, now + u64::from(attempt) * 60)
                .await
                .expect_err("passing trouble: Lambda retries");
            assert!(e.retryable, "{e}");
            assert!(e.message.contains("RequestLimitExceeded"), "{e}");
        }
        let last = handle(&l, &event, now + 600).await.expect("recorded");
        assert_eq!(last[0].status, "launch-failed", "{last:?}");
        let run = last[0].run_id.clone().expect("run id");
        assert_eq!(
            compute.launches.load(Ordering::SeqCst),
            MAX_LAUNCH_ATTEMPTS,
            "one launch per attempt, none more"
        );
        let rec = record(&s.store, &run).await.expect("a record");
        assert_eq!(rec.status, RunStatus::LaunchFailed);
        let reason = rec.reason.unwrap_or_default();
        assert!(reason.contains("in 3 attempts"), "{reason}");
        assert!(reason.contains("RequestLimitExceeded"), "{reason}");
        assert_eq!(listed_status(&s.store, &run).await, "launch-failed");
        assert!(masters(&s.compute, &run).await.is_empty());
    });
}

#[test]
fn the_same_event_delivered_ten_times_with_the_first_launch_failing_makes_one_run() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        let window = Duration::from_secs(5);
        let (l, compute) = failing(&s.launcher, 1, window);
        let l = Arc::new(l);
        let event = s3_put_event("inbox/ten.csv", "00000000000000000000000000000003");
        let base = 1_795_400_000u64;
        let started = Instant::now();
        // Ten deliveries, concurrently, spread over the window, each with its own clock.
        let deliveries: Vec<_> = (0..10u64)
            .map(|i| {
                let (l, event) = (l.clone(), event.clone());
                tokio::spawn(async move {
                    let delay = Duration::from_millis(i * 500);
                    tokio::time::sleep(delay).await;
                    handle(&l, &event, base + delay.as_secs()).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for d in deliveries {
            answers.push(d.await.expect("no panic"));
        }
        assert!(started.elapsed() < Duration::from_secs(60));
        let launched: Vec<_> = answers
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .flatten()
            .filter(|o| o.status == "launched")
            .collect();
        assert_eq!(launched.len(), 1, "{answers:?}");
        let run = launched[0].run_id.clone().expect("run id");
        for a in &answers {
            match a {
                Ok(o) => assert!(
                    o.iter()
                        .all(|o| o.status == "launched" || o.status == "duplicate"),
                    "{o:?}"
                ),
                Err(e) => assert!(e.retryable, "only passing trouble: {e}"),
            }
        }
        // One late redelivery: the run exists.
        let late = handle(&l, &event, base + 60).await.expect("handled");
        assert_eq!(late[0].status, "duplicate", "{late:?}");
        assert_eq!(masters(&s.compute, &run).await.len(), 1, "one master");
        assert_eq!(
            compute.launches.load(Ordering::SeqCst),
            2,
            "failed once, then one"
        );
        assert!(
            s.store
                .get(&format!("runs/{run}/launch.json"))
                .await
                .expect("get")
                .is_some(),
            "one launch record"
        );
        assert!(record(&s.store, &run).await.is_none(), "no failed record");
        let claims = s
            .store
            .list(&format!("runs/{run}/claims/"))
            .await
            .expect("list");
        assert_eq!(
            claims,
            vec![
                format!("runs/{run}/claims/1.failed.json"),
                format!("runs/{run}/claims/2.json")
            ]
        );
        assert_eq!(listed_status(&s.store, &run).await, "launched");
    });
}

#[test]
fn a_launch_that_landed_though_its_answer_was_lost_is_the_run_s_launch_not_a_failure() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        // Every launch lands and then fails as a lost answer would: the launcher finds
        // the master it started and records that launch, never `launch-failed`.
        let (l, compute) = failing_as(&s.launcher, u32::MAX, true, Duration::from_secs(180));
        let event = s3_put_event("inbox/landed.csv", "00000000000000000000000000000004");
        let out = handle(&l, &event, 1_795_400_000).await.expect("handled");
        assert_eq!(out[0].status, "launched", "{out:?}");
        let run = out[0].run_id.clone().expect("run id");
        assert_eq!(masters(&s.compute, &run).await.len(), 1);
        assert_eq!(compute.launches.load(Ordering::SeqCst), 1);
        assert!(record(&s.store, &run).await.is_none(), "no failed record");
        assert_eq!(
            out[0].master,
            Some(masters(&s.compute, &run).await[0].id.clone())
        );
        let again = handle(&l, &event, 1_795_400_100).await.expect("handled");
        assert_eq!(again[0].status, "duplicate", "{again:?}");
    });
}

#[test]
fn a_launch_past_its_budget_is_noted_failed_and_the_next_delivery_takes_over_at_once() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        let mut hung = s.launcher.clone();
        hung.compute = Arc::new(FailingLaunches {
            inner: s.launcher.compute.clone(),
            fail: u32::MAX,
            land: false,
            hang: true,
            launches: AtomicU32::new(0),
        });
        hung.settings.launch_budget = Some(Duration::from_secs(2));
        let event = s3_put_event("inbox/hung.csv", "00000000000000000000000000000005");
        let started = Instant::now();
        let e = handle(&hung, &event, 1_795_400_000)
            .await
            .expect_err("passing trouble: Lambda retries");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert!(
            e.retryable && e.message.contains("SQUALL_LAUNCH_BUDGET"),
            "{e}"
        );
        // The failure is noted: the next delivery (a second later, well inside the stale
        // window) takes over as attempt 2 and launches.
        let next = handle(&s.launcher, &event, 1_795_400_001)
            .await
            .expect("handled");
        assert_eq!(next[0].status, "launched", "{next:?}");
        let run = next[0].run_id.clone().expect("run id");
        assert_eq!(masters(&s.compute, &run).await.len(), 1);
        let claims = s
            .store
            .list(&format!("runs/{run}/claims/"))
            .await
            .expect("list");
        assert!(
            claims.contains(&format!("runs/{run}/claims/1.failed.json")),
            "{claims:?}"
        );
    });
}
