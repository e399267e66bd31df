//! Workers that come and go on the EC2 simulator, each asserted on moto and S3: a
//! crashed worker replaced, a spot notice acted on before the instance dies (with the
//! first rung of the replacement's ladder failing for capacity), and a group released
//! early. Each prints the figure it measures.

use super::{E2e, ITEMS, assert_outputs, members, playbook, quick_faults, setup};
use crate::aws::runtime;
use squall::record::{RunRecord, TaskOutcome};
use squall::seam::Store;
use squall_tests::ec2sim::{self, LOGIN_USER, SimEvent};
use squall_tests::faults::{FaultProxy, Faults, Service};
use squall_tests::moto;
use std::time::{Duration, Instant};

/// Unix milliseconds now.
fn now_ms() -> u64 {
    squall::runner::now_ms()
}

/// The score attempts of item `item` that succeeded, by host.
fn successes(rec: &RunRecord, item: usize) -> Vec<String> {
    rec.tasks
        .iter()
        .filter(|t| t.stage == "score" && t.item == Some(item))
        .filter(|t| t.outcome == TaskOutcome::Succeeded)
        .map(|t| t.host.clone())
        .collect()
}

#[test]
fn a_worker_crashed_mid_stage_is_replaced_and_every_item_completes_exactly_once() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        let e = setup(&playbook("5m", 6, None), &quick_faults()).await;
        let started = Instant::now();
        let run = e.start("inbox/replace.csv").await;
        let workers = e.booted_workers(&run, 3, Duration::from_secs(120)).await;
        let victim = workers[0].clone();
        let item = e.running_item(&run, &victim, Duration::from_secs(90)).await;
        let crashed_at = now_ms();
        e.sim.crash(&victim).await;
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        let lost = rec
            .hosts
            .iter()
            .find(|h| h.instance_id == victim)
            .expect("the victim is recorded");
        assert!(lost.lost.is_some(), "{lost:?}");
        let new = rec
            .hosts
            .iter()
            .find(|h| h.replaces.as_ref().is_some_and(|r| r.host == lost.name))
            .unwrap_or_else(|| panic!("no replacement of {}: {:?}", lost.name, rec.hosts));
        assert_eq!(new.name, format!("{}-r1", lost.name));
        assert_eq!(rec.replacements.len(), 1, "{:?}", rec.replacements);
        // It replayed setup (the copy of job.sh) before it took items.
        let first = rec
            .tasks
            .iter()
            .filter(|t| t.host == new.name)
            .min_by_key(|t| t.started_at_ms)
            .expect("the replacement ran tasks");
        assert_eq!(first.stage, "setup", "{first:?}");
        for (i, _) in ITEMS.iter().enumerate() {
            assert_eq!(successes(&rec, i).len(), 1, "item {i}: {:?}", rec.tasks);
        }
        assert!(
            rec.tasks.iter().any(|t| t.item == Some(item) && t.outcome == TaskOutcome::HostLost),
            "item {item} was lost with its host"
        );
        assert_outputs(&e, &run, &rec).await;
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        let boot = new.ready_at_ms.unwrap_or(0).saturating_sub(new.launched_at_ms);
        let to_task = first.started_at_ms.saturating_sub(crashed_at);
        eprintln!(
            "e2e replacement: crash -> replacement's first task {to_task} ms, of which launch -> ready {boot} ms; whole test {:.1}s",
            started.elapsed().as_secs_f64()
        );
    });
}

/// Items run 60 s (the other worker stays busy until the replacement is up); on SIGTERM
/// with the interrupt file present the job leaves a checkpoint, which the
/// `on_interrupt` fetch saves.
const SPOT_JOB: &str = r#"#!/bin/sh
# spot.sh ITEM SLEEP
echo "started $1 on $(hostname)"
trap '[ -f "$SQUALL_INTERRUPT_FILE" ] && echo "checkpoint of $1" > "ckpt-$1"; exit 143' TERM
sleep "$2" &
wait $!
echo "scored $1" | tee "scored-$1"
"#;

fn spot_playbook() -> String {
    format!(
        r#"name: spot
deadline: 5m
fleet:
  workers: {{ count: 2, user: {LOGIN_USER}, instance_type: t3.micro, market: spot-or-on-demand }}
stages:
  - name: setup
    hosts: workers
    tasks:
      - copy: {{ src: files/spot.sh, dest: spot.sh, mode: "0755" }}
  - name: score
    hosts: workers
    interrupt_grace: 5s
    shards: [{{ name: a, sleep: 60 }}, {{ name: b, sleep: 60 }}]
    tasks:
      - shell: ./spot.sh {{{{ item.name }}}} {{{{ item.sleep }}}}
      - fetch: {{ src: "ckpt-{{{{ item.name }}}}", dest: "ckpt/{{{{ item.name }}}}/", optional: true }}
        on_interrupt: true
      - fetch: {{ src: "scored-{{{{ item.name }}}}", dest: "scored/" }}
"#
    )
}

#[test]
fn a_spot_notice_moves_the_item_to_a_replacement_before_the_old_instance_dies() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        // The master's EC2 calls go through a proxy that fails the replacement's spot
        // rung with InsufficientInstanceCapacity: its ladder falls back to on-demand.
        let fault = FaultProxy::start(
            Service::Ec2,
            Faults {
                capacity_marker: Some("-r1".into()),
                ..Faults::none()
            },
        );
        let mut env = quick_faults();
        env.push(fault.env());
        let e: E2e = setup(&spot_playbook(), &env).await;
        fault.forward_to(&e._moto.endpoint());
        e.store
            .put("playbooks/files/spot.sh", SPOT_JOB.as_bytes().to_vec())
            .await
            .expect("put");
        let run = e.start("inbox/spot.csv").await;
        let workers = e.booted_workers(&run, 2, Duration::from_secs(120)).await;
        // The worker running item a (60 s) gets the notice; it dies 30 s later.
        let mut victim = None;
        let limit = Instant::now() + Duration::from_secs(90);
        while victim.is_none() && Instant::now() < limit {
            for w in &workers {
                if e.running_item(&run, w, Duration::from_secs(90)).await == 0 {
                    victim = Some(w.clone());
                }
            }
        }
        let victim = victim.expect("a worker runs item a");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let notice_at = now_ms();
        e.sim.spot_interrupt(&victim, Duration::from_secs(30));
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        let old = rec
            .hosts
            .iter()
            .find(|h| h.instance_id == victim)
            .expect("the victim is recorded");
        assert_eq!(
            old.interruption.as_ref().map(|i| i.kind.as_str()),
            Some("termination"),
            "{old:?}"
        );
        let a: Vec<_> = rec
            .tasks
            .iter()
            .filter(|t| t.item == Some(0) && t.task.starts_with("./spot.sh"))
            .collect();
        let outcomes: Vec<TaskOutcome> = a.iter().map(|t| t.outcome).collect();
        assert_eq!(outcomes, [TaskOutcome::Interrupted, TaskOutcome::Succeeded], "{a:?}");
        assert!(
            rec.tasks.iter().all(|t| t.outcome != TaskOutcome::Failed),
            "no retry counted: {:?}",
            rec.tasks
        );
        let again = a[1];
        assert_eq!(again.host, format!("{}-r1", old.name), "it restarted on the replacement");
        let dies_at = notice_at + 30_000;
        assert!(
            again.started_at_ms < dies_at,
            "item a restarted at {} ms, after its old instance died ({dies_at} ms)",
            again.started_at_ms
        );
        // Once idle (its checkpoint saved, its replacement launched) the old host was
        // released: its final logs collected before the reclaim.
        let released = old.released_at_ms.expect("the old host was released once idle");
        assert!(released < dies_at, "released at {released}, reclaimed at {dies_at}");
        assert!(old.archive.is_some(), "{old:?}");
        // The replacement's spot rung failed for capacity; on-demand went through.
        let capacity_failures = fault.counts().get("RunInstances").map_or(0, |c| c.failed);
        assert!(capacity_failures >= 1, "the fault never fired");
        let replacement = rec
            .replacements
            .first()
            .expect("a replacement was launched");
        assert_eq!(replacement.reason, "a spot interruption notice");
        assert!(replacement.instance_id.is_some(), "{replacement:?}");
        // Its checkpoint was fetched before the item went back, and the interrupted
        // attempt's logs up to the notice are in S3 (the snapshot taken at the notice).
        let Some(ckpt) = e.get(&format!("runs/{run}/files/ckpt/a/ckpt-a")).await else {
            let item_a: Vec<_> = rec.tasks.iter().filter(|t| t.item == Some(0)).collect();
            panic!(
                "the checkpoint was not fetched: item a's attempts {item_a:#?}\nfiles {:?}\n{}",
                rec.files,
                e.diagnostics()
            );
        };
        assert_eq!(String::from_utf8_lossy(&ckpt), "checkpoint of a\n");
        let snapshot = old.snapshot.clone().expect("a snapshot of the old host");
        let body = e.get(&snapshot.key).await.expect("the snapshot is in S3");
        let said: String = members(&body)
            .into_iter()
            .filter(|(m, _)| m.contains(&a[0].id) && m.ends_with("stdout.log"))
            .map(|(_, text)| text)
            .collect();
        assert!(said.starts_with("started a on "), "{said:?}");
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        eprintln!(
            "e2e spot notice: notice -> item a running again on {} in {} ms (its old instance died {} ms after the notice)",
            again.host,
            again.started_at_ms.saturating_sub(notice_at),
            30_000
        );
    });
}

fn two_groups_playbook() -> String {
    format!(
        r#"name: release
deadline: 5m
fleet:
  prep: {{ count: 1, user: {LOGIN_USER}, instance_type: t3.micro }}
  workers: {{ count: 2, user: {LOGIN_USER}, instance_type: t3.micro }}
stages:
  - name: prepare
    hosts: prep
    tasks:
      - shell: echo prepared
  - name: score
    hosts: workers
    shards: [a, b, c, d]
    tasks:
      - shell: sleep 8; echo scored {{{{ item }}}}
"#
    )
}

#[test]
fn a_group_no_later_stage_needs_is_terminated_before_the_run_ends() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        let e = setup(&two_groups_playbook(), &quick_faults()).await;
        let run = e.start("inbox/release.csv").await;
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        let prep = rec
            .hosts
            .iter()
            .find(|h| h.group == "prep")
            .expect("the prep host");
        let released = prep.released_at_ms.expect("prep was released early");
        let ended = rec.ended_at_ms.expect("the run ended");
        assert!(released < ended, "released {released}, ended {ended}");
        let last_task = rec
            .tasks
            .iter()
            .filter(|t| t.host == prep.name)
            .map(|t| t.ended_at_ms)
            .max()
            .expect("prep ran its task");
        // Its logs were collected before it went, and moto had it terminated while the
        // score stage still ran (the simulator saw it end before the run's teardown).
        assert!(e.get(&format!("runs/{run}/logs/{}.tar.gz", prep.name)).await.is_some());
        let teardown_at = rec.teardown.as_ref().map(|t| t.at_ms).unwrap_or(ended);
        assert!(released < teardown_at);
        // The simulator saw prep end before any worker of the score stage did.
        let events = e.sim.events();
        let ended_at = |id: &str| {
            events
                .iter()
                .position(|ev| matches!(ev, SimEvent::Ended { id: x } if x == id))
        };
        let prep_end = ended_at(&prep.instance_id).expect("prep ended");
        for w in rec.hosts.iter().filter(|h| h.group == "workers") {
            let w_end = ended_at(&w.instance_id).unwrap_or(usize::MAX);
            assert!(prep_end < w_end, "prep ended after {}: {events:?}", w.name);
        }
        assert!(rec.instance_hours_saved > 0.0, "{}", rec.instance_hours_saved);
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        eprintln!(
            "e2e early release: prep's last task -> terminated {} ms; {:.4} instance-hours saved ({} s before the run's end)",
            released.saturating_sub(last_task),
            rec.instance_hours_saved,
            (ended - released) / 1000
        );
    });
}
