//! A run that outlives its master, on the EC2 simulator: the master crashed mid-stage
//! (a successor adopts the workers and re-attaches the running items; two watchdogs at
//! once start one successor), crashed while the run winds down, frozen (fenced before
//! the successor drives a worker), and masters that keep dying (the run stops at
//! `max_masters`). The tests invoke the launcher's watchdog as its schedule would
//! (moto never fires schedules), and check the schedule's life in moto. Each ends with
//! zero instances of its run and prints what it measures.

use super::{E2e, ITEMS, assert_outputs, playbook, quick_faults, setup};
use crate::aws::runtime;
use serde_json::json;
use squall::backend::aws::control::{AwsControl, ScheduleTarget};
use squall::cloud::watch::{WatchReport, Watched};
use squall::record::journal::{Batch, Entry};
use squall::record::{RunRecord, RunStatus, TaskOutcome};
use squall::seam::Store;
use squall::seam::compute::{Compute, InstanceState, tags};
use squall::seam::control::{Control, schedule_name};
use squall_tests::ec2sim::{self, SimEvent};
use squall_tests::moto;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a silent heartbeat takes to be stale in these tests.
const STALE: Duration = Duration::from_secs(6);

/// The instance knobs: quick faults, a heartbeat and a journal flush every second.
fn knobs() -> Vec<(&'static str, String)> {
    let mut k = quick_faults();
    k.push(("SQUALL_HEARTBEAT_EVERY", "1s".into()));
    k.push(("SQUALL_JOURNAL_EVERY", "1s".into()));
    k
}

/// The e2e setup with a watched launcher (SSM and Scheduler on moto) and a short stale
/// window.
async fn watched(pb: &str) -> (E2e, Arc<AwsControl>) {
    let mut e = setup(pb, &knobs()).await;
    let conf = e._moto.sdk_config().await;
    let control = Arc::new(AwsControl::new(
        &conf,
        ScheduleTarget {
            function_arn: moto::WATCH_TARGET.into(),
            role_arn: moto::WATCH_ROLE.into(),
        },
    ));
    e.launcher.control = Some(control.clone());
    e.launcher.settings.stale_after = STALE;
    (e, control)
}

impl E2e {
    /// One watchdog invocation, as the run's schedule sends it.
    async fn watch(&self, run: &str) -> WatchReport {
        let handled = squall_launcher::handle(
            &self.launcher,
            &json!({ "squall_watch": run }),
            super::now(),
        )
        .await
        .unwrap_or_else(|e| panic!("the watchdog failed: {e:?}"));
        handled.watch.expect("a watch report")
    }

    /// Invokes the watchdog every second (bounded) until it reports `want`.
    async fn watch_until(&self, run: &str, want: Watched, limit: Duration) -> WatchReport {
        let started = Instant::now();
        loop {
            let r = self.watch(run).await;
            if r.watched == want {
                return r;
            }
            assert!(
                started.elapsed() < limit,
                "the watchdog did not report {want:?} within {limit:?}: {r:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Every journal entry of `generation` stored so far.
    async fn journal(&self, run: &str, generation: u32) -> Vec<Entry> {
        let mut out = Vec::new();
        for key in self
            .store
            .list(&format!("runs/{run}/journal/{generation:04}-"))
            .await
            .expect("list")
        {
            let body = self.get(&key).await.expect("a batch");
            let b: Batch = serde_json::from_slice(&body).expect("a journal batch");
            out.extend(b.entries);
        }
        out
    }

    /// Waits (bounded) until the first master's journal shows a completed score item
    /// and another running: the master dies with work done and work under way.
    async fn mid_stage(&self, run: &str) {
        self.score_progress(run, true).await;
    }

    /// Waits (bounded) until the first master's journal shows score items running
    /// (one per host) and, when `done`, one more started after a completed one.
    async fn score_progress(&self, run: &str, done: bool) {
        let started = Instant::now();
        loop {
            let j = self.journal(run, 1).await;
            let completed = j
                .iter()
                .any(|e| matches!(e, Entry::Completed { stage: 1, .. }));
            let running = j
                .iter()
                .filter(|e| matches!(e, Entry::Started { attempt, .. } if attempt.stage == 1))
                .count();
            if (completed && running >= 4) || (!done && running >= 3) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(150),
                "the first master journaled no score progress\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The run's master instances (any state), in launch order.
    async fn masters(&self, run: &str) -> Vec<squall::seam::compute::Instance> {
        self.instances(run)
            .await
            .into_iter()
            .filter(|i| i.tag(tags::ROLE) == Some("master"))
            .collect()
    }

    /// Waits (bounded) until generation `n`'s master has written a journal batch.
    async fn generation_started(&self, run: &str, n: u32, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let keys = self
                .store
                .list(&format!("runs/{run}/journal/{n:04}-"))
                .await
                .expect("list");
            if !keys.is_empty() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "generation {n} journaled nothing within {limit:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Each score item succeeded exactly once in the record, across masters.
fn once_each(rec: &RunRecord) {
    for i in 0..ITEMS.len() {
        let n = rec
            .tasks
            .iter()
            .filter(|t| {
                t.stage == "score" && t.item == Some(i) && t.outcome == TaskOutcome::Succeeded
            })
            .count();
        assert_eq!(n, 1, "item {i} succeeded {n} times: {:#?}", rec.tasks);
    }
}

#[test]
fn a_master_crashed_mid_stage_is_succeeded_by_one_that_adopts_the_workers_and_reattaches_their_items()
 {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        let (e, control) = watched(&playbook("5m", 5, None)).await;
        let started = Instant::now();
        let run = e.start("inbox/succession.csv").await;
        let schedule = schedule_name(&run);
        assert!(control.schedule_exists(&schedule).await.expect("scheduler"), "the launcher made the run's watchdog");
        assert!(e.get(&format!("live/{run}")).await.is_some(), "the run is marked live");
        e.booted_workers(&run, 3, Duration::from_secs(120)).await;
        assert_eq!(e.watch(&run).await.watched, Watched::Alive, "a beating master is left alone");
        e.mid_stage(&run).await;
        let param = format!("/squall/runs/{run}/login-key");
        let key = control.get_secret(&param).await.expect("ssm").expect("the login key is kept in SSM");
        assert!(key.expose().contains("PRIVATE KEY"));
        assert_eq!(format!("{key:?}"), "Secret(***)", "a secret never prints");
        let known = e.get(&format!("runs/{run}/known_hosts")).await.expect("the host keys are published");
        assert!(!String::from_utf8_lossy(&known).contains("PRIVATE"), "public keys only");
        let first = e.masters(&run).await.remove(0).id;
        let died = Instant::now();
        e.sim.crash(&first).await;
        // (c) Two watchdogs at once: one successor.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (a, b) = loop {
            let (a, b) = tokio::join!(e.watch(&run), e.watch(&run));
            if a.watched != Watched::Alive || b.watched != Watched::Alive {
                break (a, b);
            }
            assert!(Instant::now() < deadline, "no takeover: {a:?}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let took = [&a, &b].iter().filter(|r| r.watched == Watched::TookOver).count();
        assert_eq!(took, 1, "exactly one successor: {a:?} {b:?}");
        let detected = died.elapsed();
        assert_eq!(e.masters(&run).await.len(), 2, "two masters ever");
        let to_first = e.generation_started(&run, 2, Duration::from_secs(120)).await + detected;
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        once_each(&rec);
        assert_outputs(&e, &run, &rec).await;
        assert_eq!(rec.masters.len(), 2, "{:?}", rec.masters);
        let takeover = rec.masters[1].takeover.clone().expect("what the successor made of it");
        assert_eq!(takeover.adopted.len(), 3, "every worker adopted: {takeover:?}");
        assert!(takeover.completed >= 1, "{takeover:?}");
        assert!(!takeover.reattached.is_empty(), "running items re-attached: {takeover:?}");
        assert!(rec.hosts.iter().all(|h| h.replaces.is_none()), "nothing replaced: {:?}", rec.hosts);
        let report = e.get(&format!("runs/{run}/report.html")).await.expect("the report");
        let report = String::from_utf8_lossy(&report);
        assert!(
            report.contains(r#"id="masters""#) && report.contains("generation 2 at") && report.contains("re-attached s1-"),
            "the report tells of both masters"
        );
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        // Recorded: the watchdog, the marker and the login key are gone.
        assert!(!control.schedule_exists(&schedule).await.expect("scheduler"));
        assert!(e.get(&format!("live/{run}")).await.is_none());
        assert!(control.get_secret(&param).await.expect("ssm").is_none());
        eprintln!(
            "e2e succession: death -> takeover {:.1}s (stale window {}s), death -> successor's first journal {:.1}s, {} adopted, {} re-attached, {} completed before; whole test {:.1}s",
            detected.as_secs_f64(),
            STALE.as_secs(),
            to_first.as_secs_f64(),
            takeover.adopted.len(),
            takeover.reattached.len(),
            takeover.completed,
            started.elapsed().as_secs_f64()
        );
    });
}

#[test]
fn a_master_crashed_while_winding_down_is_succeeded_by_one_that_tears_down_and_records() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        // Each worker's logs are large, so that their collection takes a while.
        let pb = playbook("5m", 1, None).replace(
            "      - shell: ls scored-* 2>/dev/null | wc -l\n",
            "      - shell: ls scored-* 2>/dev/null | wc -l\n      - shell: head -c 40000000 /dev/urandom | od -An | head -c 60000000\n",
        );
        let (e, _) = watched(&pb).await;
        let run = e.start("inbox/winding.csv").await;
        let started = Instant::now();
        loop {
            let status = e.get(&format!("runs/{run}/status.json")).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&status);
            if text.contains(r#""phase": "collect_logs""#) || text.contains(r#""phase": "teardown""#) {
                break;
            }
            assert!(e.get(&format!("runs/{run}/run.json")).await.is_none(), "the run ended before the crash");
            assert!(started.elapsed() < Duration::from_secs(180), "the run never wound down\n{}", e.diagnostics());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first = e.masters(&run).await.remove(0).id;
        e.sim.crash(&first).await;
        assert!(e.journal(&run, 1).await.iter().any(|en| matches!(en, Entry::Fate { .. })), "the fate was journaled");
        e.watch_until(&run, Watched::TookOver, Duration::from_secs(60)).await;
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        once_each(&rec);
        assert_eq!(rec.masters.len(), 2);
        assert!(rec.teardown.is_some(), "the successor tore down");
        assert!(
            !rec.tasks.iter().any(|t| t.started_at_ms > rec.masters[1].claimed_at_ms),
            "nothing ran again"
        );
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        assert_eq!(e.watch(&run).await.watched, Watched::Finished);
    });
}

#[test]
fn a_frozen_master_is_fenced_before_its_successor_drives_the_workers() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        let (e, _) = watched(&playbook("5m", 5, None)).await;
        let run = e.start("inbox/frozen.csv").await;
        e.booted_workers(&run, 3, Duration::from_secs(120)).await;
        e.mid_stage(&run).await;
        let first = e.masters(&run).await.remove(0).id;
        let frozen = e.sim.freeze(&first, "squall master");
        assert!(!frozen.is_empty(), "the master's process was found");
        let report = e
            .watch_until(&run, Watched::TookOver, Duration::from_secs(60))
            .await;
        assert_eq!(
            report.fenced,
            vec![first.clone()],
            "the frozen master was fenced: {report:?}"
        );
        // Fenced means gone before the successor exists: terminated in moto, its
        // processes ended.
        let old = e
            .compute
            .describe(std::slice::from_ref(&first))
            .await
            .expect("describe");
        assert!(
            old.iter().all(|i| i.state == InstanceState::Terminated),
            "{old:?}"
        );
        let started = Instant::now();
        while frozen.iter().any(|p| squall_worker::pid_alive(*p)) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the frozen master still has processes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The successor booted only after the frozen master had ended: it never drove
        // a worker beside it.
        let successor = report.master.clone().expect("a successor");
        e.generation_started(&run, 2, Duration::from_secs(120))
            .await;
        let events = e.sim.timed_events();
        let ended = events
            .iter()
            .find(|(_, ev)| matches!(ev, SimEvent::Ended { id } if *id == first))
            .map(|(at, _)| *at)
            .expect("the frozen master ended");
        let booted = events
            .iter()
            .find(|(_, ev)| matches!(ev, SimEvent::Booted { id, .. } if *id == successor))
            .map(|(at, _)| *at)
            .expect("the successor booted");
        assert!(
            ended < booted,
            "fenced before the successor booted: {events:?}"
        );
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        once_each(&rec);
        assert_eq!(rec.masters[1].fenced, vec![first]);
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
    });
}

#[test]
fn masters_that_keep_dying_stop_at_max_masters_and_the_run_is_recorded_abandoned() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        // Items far longer than the test: no master can finish the run before it dies,
        // and nothing waits for an item to end.
        let pb = playbook("5m", 120, None).replace("name: e2e\n", "name: e2e\nmax_masters: 2\n");
        let (e, control) = watched(&pb).await;
        let run = e.start("inbox/dying.csv").await;
        e.booted_workers(&run, 3, Duration::from_secs(120)).await;
        e.score_progress(&run, false).await;
        let first = e.masters(&run).await.remove(0).id;
        e.sim.crash(&first).await;
        let took = e
            .watch_until(&run, Watched::TookOver, Duration::from_secs(60))
            .await;
        let second = took.master.expect("a successor");
        e.generation_started(&run, 2, Duration::from_secs(120))
            .await;
        e.sim.crash(&second).await;
        let gave_up = e
            .watch_until(&run, Watched::Abandoned, Duration::from_secs(60))
            .await;
        assert_eq!(gave_up.generation, 2);
        let rec = e.record(&run, Duration::from_secs(10)).await;
        assert_eq!(rec.status, RunStatus::Abandoned, "{:?}", rec.reason);
        assert!(
            rec.reason.as_deref().unwrap_or("").contains("2 master(s)"),
            "{:?}",
            rec.reason
        );
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        assert_eq!(e.masters(&run).await.len(), 2, "no third master");
        assert!(
            !control
                .schedule_exists(&schedule_name(&run))
                .await
                .expect("scheduler")
        );
    });
}
