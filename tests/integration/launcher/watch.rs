//! The watchdog's decisions, as the run's schedule invokes the handler, against moto
//! (S3, EC2, SSM, Scheduler) with the clock passed in: the schedule made at launch and
//! removed once the run is recorded, a beating run left alone, a silent one fenced and
//! succeeded once however many watchdogs look at once, a later generation's master
//! never fenced by a watchdog that saw an earlier one, `max_masters` ending in an
//! `abandoned` record, and the sweep holding back `abandoned` while a successor may
//! still come.

use super::{handle, live, masters, s3_put_event, setup};
use crate::aws::runtime;
use serde_json::json;
use squall::backend::aws::control::{AwsControl, ScheduleTarget};
use squall::cloud::watch::{WatchReport, Watched};
use squall::record::journal::Generation;
use squall::record::{RunRecord, RunStatus};
use squall::seam::Store;
use squall::seam::compute::tags;
use squall::seam::control::{Control, schedule_name};
use squall_launcher::Launcher;
use squall_tests::moto::{self, Moto};
use std::sync::Arc;

const T: u64 = 1_795_400_000;

async fn watched(moto: &Moto) -> (super::Setup, Arc<AwsControl>) {
    let mut s = setup(moto).await;
    let control = Arc::new(AwsControl::new(
        &moto.sdk_config().await,
        ScheduleTarget {
            function_arn: moto::WATCH_TARGET.into(),
            role_arn: moto::WATCH_ROLE.into(),
        },
    ));
    s.launcher.control = Some(control.clone());
    s.launcher.settings.watch_target = Some(moto::WATCH_TARGET.into());
    s.launcher.settings.watch_role = Some(moto::WATCH_ROLE.into());
    (s, control)
}

async fn watch(l: &Launcher, run: &str, now: u64) -> WatchReport {
    squall_launcher::handle(l, &json!({ "squall_watch": run }), now)
        .await
        .expect("handled")
        .watch
        .expect("a watch report")
}

async fn start(s: &super::Setup, key: &str) -> String {
    let out = handle(
        &s.launcher,
        &s3_put_event(key, "0123456789abcdef0123456789abcdef"),
        T,
    )
    .await
    .expect("handled");
    assert_eq!(out[0].status, "launched", "{out:?}");
    out[0].run_id.clone().expect("a run id")
}

#[test]
fn a_silent_run_is_fenced_and_succeeded_once_up_to_max_masters_then_abandoned() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let (s, control) = watched(&moto).await;
        let run = start(&s, "inbox/watch.csv").await;
        let schedule = schedule_name(&run);
        assert!(control.schedule_exists(&schedule).await.expect("scheduler"));
        assert!(
            s.store
                .get(&format!("live/{run}"))
                .await
                .expect("get")
                .is_some()
        );
        let first = masters(&s.compute, &run).await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].tag(tags::GENERATION), Some("1"));

        // Within the stale window (3 minutes from the launch): left alone.
        assert_eq!(
            watch(&s.launcher, &run, T + 60).await.watched,
            Watched::Alive
        );

        // Silent: two watchdogs at once, one successor.
        let (a, b) = tokio::join!(
            watch(&s.launcher, &run, T + 400),
            watch(&s.launcher, &run, T + 400)
        );
        let mut got = [a.watched.clone(), b.watched.clone()];
        got.sort_by_key(|w| format!("{w:?}"));
        assert_eq!(got, [Watched::Contended, Watched::TookOver], "{a:?} {b:?}");
        // Both fenced before claiming (whichever terminated it first names it).
        let mut fenced: Vec<String> = a.fenced.iter().chain(&b.fenced).cloned().collect();
        fenced.dedup();
        assert_eq!(fenced, vec![first[0].id.clone()], "{a:?} {b:?}");
        let took = if a.watched == Watched::TookOver { a } else { b };
        assert_eq!(took.generation, 2);
        let all = masters(&s.compute, &run).await;
        assert_eq!(all.len(), 2, "one successor: {all:?}");
        let second = took.master.clone().expect("the successor's instance");
        let live_now: Vec<String> = live(&s.compute, &run)
            .await
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(
            live_now,
            vec![second.clone()],
            "the first master is fenced, the successor runs"
        );
        let claim: Generation = serde_json::from_slice(
            &s.store
                .get(&format!("runs/{run}/generation/0002"))
                .await
                .expect("get")
                .expect("the claim"),
        )
        .expect("a generation claim");
        assert_eq!(claim.instance_id.as_deref(), Some(second.as_str()));
        assert!(claim.reason.contains("heartbeat"), "{claim:?}");

        // The successor's claim makes the run fresh again: left alone.
        assert_eq!(
            watch(&s.launcher, &run, T + 450).await.watched,
            Watched::Alive
        );
        // A watchdog that still saw generation 1 fences generation 1 only: the
        // successor (tagged generation 2) is never touched.
        assert_eq!(
            s.launcher.fence(&run, 1).await.expect("fence"),
            Some(Vec::new())
        );
        assert_eq!(
            live(&s.compute, &run).await.len(),
            1,
            "the successor runs on"
        );

        // The successor falls silent too: generation 3, then (max_masters 3) the end.
        let third = watch(&s.launcher, &run, T + 1000).await;
        assert_eq!(
            (third.watched.clone(), third.generation),
            (Watched::TookOver, 3),
            "{third:?}"
        );
        assert_eq!(third.fenced, vec![second]);
        let end = watch(&s.launcher, &run, T + 1500).await;
        assert_eq!(end.watched, Watched::Abandoned, "{end:?}");
        let rec: RunRecord = serde_json::from_slice(
            &s.store
                .get(&format!("runs/{run}/run.json"))
                .await
                .expect("get")
                .expect("a record"),
        )
        .expect("a run record");
        assert_eq!(rec.status, RunStatus::Abandoned);
        assert!(
            rec.reason.as_deref().unwrap_or("").contains("3 master(s)"),
            "{:?}",
            rec.reason
        );
        assert!(
            live(&s.compute, &run).await.is_empty(),
            "every instance terminated"
        );
        assert_eq!(masters(&s.compute, &run).await.len(), 3, "no fourth master");
        assert!(
            !control.schedule_exists(&schedule).await.expect("scheduler"),
            "the watchdog is removed"
        );
        assert!(
            s.store
                .get(&format!("live/{run}"))
                .await
                .expect("get")
                .is_none()
        );
        assert_eq!(
            watch(&s.launcher, &run, T + 2000).await.watched,
            Watched::Finished
        );
    });
}

#[test]
fn a_recorded_run_loses_its_watch_and_the_sweep_waits_for_a_possible_successor() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let (s, control) = watched(&moto).await;
        // A recorded run: its watchdog, marker and login key go at the next look.
        let run = start(&s, "inbox/recorded.csv").await;
        control
            .put_secret(&format!("/squall/runs/{run}/login-key"), "not a real key")
            .await
            .expect("ssm");
        s.store
            .put(&format!("runs/{run}/run.json"), b"{}".to_vec())
            .await
            .expect("put");
        assert_eq!(
            watch(&s.launcher, &run, T + 10).await.watched,
            Watched::Finished
        );
        assert!(
            !control
                .schedule_exists(&schedule_name(&run))
                .await
                .expect("scheduler")
        );
        assert!(
            s.store
                .get(&format!("live/{run}"))
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            control
                .get_secret(&format!("/squall/runs/{run}/login-key"))
                .await
                .expect("ssm")
                .is_none()
        );

        // A live run whose master ended, within its deadline: the sweep leaves it to
        // its watchdog; without its live marker it is abandoned as before.
        let orphan = start(&s, "inbox/orphan.csv").await;
        let ids: Vec<String> = masters(&s.compute, &orphan)
            .await
            .into_iter()
            .map(|i| i.id)
            .collect();
        squall::seam::compute::Compute::terminate(&s.compute, &ids)
            .await
            .expect("terminate");
        let direct = json!({"playbook": "playbooks/none.yml"});
        let swept = squall_launcher::handle(&s.launcher, &direct, T + 20)
            .await
            .expect("handled");
        let sweep = swept.sweep.expect("a sweep");
        assert!(!sweep.abandoned.contains(&orphan), "{sweep:?}");
        assert!(
            s.store
                .get(&format!("runs/{orphan}/run.json"))
                .await
                .expect("get")
                .is_none()
        );
        s.store
            .delete(&format!("live/{orphan}"))
            .await
            .expect("delete");
        let swept = squall_launcher::handle(&s.launcher, &direct, T + 30)
            .await
            .expect("handled");
        assert!(swept.sweep.expect("a sweep").abandoned.contains(&orphan));
    });
}
