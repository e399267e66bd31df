//! Workers that come and go, as data: a lost worker replaced (replaying the setup it
//! missed), `replace: 0` keeping today's behaviour, spot notices and rebalance
//! recommendations, replacement launches that fail, a poison item, and workers
//! released early.

use super::{Sim, glob_match};
use squall::engine::{Event, Notice};
use squall::record::{RunStatus, TaskOutcome};

const SETUP_THEN_WORK: &str = r#"
name: t
fleet: { w: { count: 2 } }
stages:
  - name: setup
    hosts: w
    tasks:
      - shell: echo setup {{ host.name }} {{ host.index }}/{{ host.count }}
      - fetch: { src: "out/{{ host.index }}.txt", dest: "setup/" }
  - name: work
    hosts: w
    tasks:
      - shell: echo work {{ host.index }}
      - shell: echo more
"#;

/// Runs the setup stage to its end on both hosts (each task, then each fetch).
fn through_setup(s: &mut Sim) {
    for h in [0, 1] {
        s.ok(h);
        s.listed(
            h,
            vec![glob_match(&format!("out/{h}.txt"), &format!("{h}.txt"))],
        );
        store_fetched(s, h);
    }
}

/// Answers the (optional) fetch running on `host`: it matched nothing.
fn nothing_fetched(s: &mut Sim, host: usize) {
    let key = s.running_on(host);
    s.running.remove(&key);
    s.send(Event::FetchListed {
        key,
        host,
        files: Vec::new(),
    });
}

/// Answers the fetch running on `host` (listed already): its files stored, then done.
fn store_fetched(s: &mut Sim, host: usize) {
    let key = s.running_on(host);
    let stored = s.take_data();
    let files = stored
        .iter()
        .filter_map(|a| match a {
            squall::engine::Action::StoreFiles { key: k, files, .. } if *k == key => Some(files),
            _ => None,
        })
        .flat_map(|fs| fs.iter())
        .map(|t| squall::record::StoredFile {
            key: t.to.label(),
            size: t.size,
            sha256: "00".into(),
        })
        .collect();
    s.send(Event::FilesStored { key, host, files });
    s.ok(host);
}

#[test]
fn a_host_lost_in_a_plain_stage_is_replaced_and_its_replacement_replays_setup_first() {
    let mut s = Sim::boot(SETUP_THEN_WORK);
    through_setup(&mut s);
    assert_eq!(s.running(), [(0, 1, 0, 0, 0), (1, 1, 1, 0, 0)]);
    s.ok(0);
    s.lose(1);
    assert_eq!(s.replacements, [(1, "w-1-r1".to_owned())]);
    let r = 2;
    assert!(
        s.running().iter().all(|t| t.0 != r),
        "nothing runs on a replacement before its agent is installed"
    );
    s.send(Event::Bootstrapped { host: r });
    // It replays setup as w-1 did, with w-1's index and count, and takes no work
    // meanwhile.
    assert_eq!(s.running(), [(r, 0, 1, 0, 0), (0, 1, 0, 1, 0)]);
    assert_eq!(s.argv(r), ["/bin/sh", "-c", "echo setup w-1-r1 1/2"]);
    s.ok(r);
    // Its fetch writes w-1's keys again: the same unit, not a collision.
    s.listed(r, vec![glob_match("out/1.txt", "1.txt")]);
    store_fetched(&mut s, r);
    // Then it runs w-1's unit of the current stage from its first task.
    assert_eq!(s.running(), [(0, 1, 0, 1, 0), (r, 1, 1, 0, 1)]);
    assert_eq!(s.argv(r), ["/bin/sh", "-c", "echo work 1"]);
    s.ok(r);
    s.ok(r);
    s.ok(0);
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let rec = s.e.record();
    let h = &rec.hosts[r];
    assert_eq!(h.name, "w-1-r1");
    let replaced = h.replaces.as_ref().expect("it says whom it replaced");
    assert_eq!(
        (replaced.host.as_str(), replaced.reason.as_str()),
        ("w-1", "killed")
    );
    assert_eq!(rec.replacements.len(), 1);
    assert_eq!(rec.replacements[0].instance_id.as_deref(), Some("i-w-1-r1"));
    assert_eq!(rec.files.len(), 2, "{:?}", rec.files);
}

#[test]
fn with_replace_0_a_host_lost_in_a_plain_stage_fails_the_run_as_before() {
    let yaml = SETUP_THEN_WORK.replace("count: 2 }", "count: 2, replace: 0 }");
    let mut s = Sim::boot(&yaml);
    through_setup(&mut s);
    s.lose(1);
    assert!(s.replacements.is_empty());
    assert_eq!(s.wind_down_from_stopping(), RunStatus::Failed);
    let reason = s.e.record().reason.unwrap_or_default();
    assert!(
        reason.contains("host w-1 was lost during stage `work`"),
        "{reason}"
    );
}

const SPOT: &str = r#"
name: t
fleet: { w: { count: 2, market: spot } }
stages:
  - name: score
    hosts: w
    interrupt_grace: 30s
    shards: [a, b, c]
    tasks:
      - shell: ./score {{ item }}
      - fetch: { src: "ckpt/*", dest: "ckpt/{{ item }}/", optional: true }
        on_interrupt: true
"#;

#[test]
fn a_spot_notice_stops_the_item_for_its_checkpoint_requeues_it_uncounted_and_replaces_the_host() {
    let mut s = Sim::boot(SPOT);
    assert_eq!(s.running(), [(0, 0, 0, 0, 0), (1, 0, 1, 0, 0)]);
    let key = s.running_on(0);
    s.send(Event::Interrupted {
        host: 0,
        notice: Notice::Termination,
    });
    assert_eq!(
        s.interrupts,
        [(key, 30_000)],
        "stopped with the stage's grace"
    );
    assert_eq!(s.snapshots, [0], "its logs up to the notice are kept");
    assert_eq!(
        s.replacements,
        [(0, "w-0-r1".to_owned())],
        "replaced at once"
    );
    // The agent stopped it: reported cancelled, recorded as interrupted.
    s.finish(0, TaskOutcome::Cancelled, None);
    // Its checkpoint fetch runs on the old host before the item goes back.
    assert_eq!(s.running(), [(0, 0, 0, 1, 0), (1, 0, 1, 0, 0)]);
    nothing_fetched(&mut s, 0);
    assert!(
        s.running().iter().all(|t| t.0 != 0),
        "the interrupted host takes no new item: {:?}",
        s.running()
    );
    assert!(
        s.released.is_empty(),
        "not while its snapshot is being taken"
    );
    s.send(Event::LogsSnapshotted {
        host: 0,
        result: Ok("runs/run-1/logs/snapshots/w-0.tar.gz".into()),
    });
    assert_eq!(
        s.released,
        [0],
        "idle, replaced: its final logs are collected before it is reclaimed"
    );
    s.ok(1);
    nothing_fetched(&mut s, 1);
    // The next free host takes the requeued item first (it never failed).
    let on_1 = s.running_on(1);
    assert_eq!(on_1.unit, 0, "the requeued item comes first");
    s.send(Event::Bootstrapped { host: 2 });
    assert_eq!(s.running_on(2).unit, 2, "the replacement takes items");
    s.lose(0);
    assert_eq!(s.replacements.len(), 1, "a host is replaced once");
    for h in [1, 2] {
        s.ok(h);
        nothing_fetched(&mut s, h);
    }
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let rec = s.e.record();
    let item0: Vec<TaskOutcome> = rec
        .tasks
        .iter()
        .filter(|t| t.item == Some(0) && t.task.starts_with("./score"))
        .map(|t| t.outcome)
        .collect();
    assert_eq!(item0, [TaskOutcome::Interrupted, TaskOutcome::Succeeded]);
    assert_eq!(
        rec.hosts[0].interruption.as_ref().map(|i| i.kind.as_str()),
        Some("termination")
    );
    assert_eq!(rec.stages[0].shards_done, 3);
}

#[test]
fn a_rebalance_recommendation_only_stops_new_items_and_brings_a_replacement() {
    let mut s = Sim::boot(SPOT);
    s.send(Event::Interrupted {
        host: 0,
        notice: Notice::Rebalance,
    });
    assert!(s.interrupts.is_empty(), "the running task goes on");
    assert_eq!(s.replacements, [(0, "w-0-r1".to_owned())]);
    s.ok(0);
    nothing_fetched(&mut s, 0);
    assert!(
        s.running().iter().all(|t| t.0 != 0),
        "no new item for a host at risk: {:?}",
        s.running()
    );
    assert_eq!(
        s.released,
        [0],
        "replaced and idle: released, not kept until the end"
    );
    s.send(Event::Bootstrapped { host: 2 });
    assert_eq!(s.running_on(2).unit, 2);
    for h in [1, 2] {
        s.ok(h);
        nothing_fetched(&mut s, h);
    }
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let rec = s.e.record();
    assert!(
        rec.tasks
            .iter()
            .all(|t| t.outcome == TaskOutcome::Succeeded)
    );
}

const SHARDED: &str = r#"
name: t
fleet: { w: { count: 2 } }
stages:
  - name: score
    hosts: w
    shards: [a, b, c, d]
    tasks:
      - shell: ./score {{ item }}
"#;

#[test]
fn replacement_launches_that_fail_leave_the_stage_to_the_survivors_and_say_so() {
    let mut s = Sim::boot(SHARDED);
    s.auto_replace = false;
    s.lose(0);
    assert_eq!(s.replacements.len(), 1);
    s.send(Event::ReplacementFailed {
        replaces: 0,
        error: "InsufficientInstanceCapacity".into(),
    });
    // The group may replace twice (its count): one more try, then none.
    assert_eq!(s.replacements.len(), 2);
    s.send(Event::ReplacementFailed {
        replaces: 0,
        error: "InsufficientInstanceCapacity".into(),
    });
    assert_eq!(s.replacements.len(), 2);
    for _ in 0..4 {
        s.ok(1);
    }
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let rec = s.e.record();
    assert!(rec.replacements.iter().all(|r| r.error.is_some()));
    let note = rec.stages[0].note.clone().unwrap_or_default();
    assert!(note.contains("could not be launched"), "{note}");
    assert!(note.contains("goes on with the hosts it has"), "{note}");
}

#[test]
fn an_item_that_loses_its_host_twice_counts_a_failed_attempt() {
    let yaml = SHARDED
        .replace("count: 2 }", "count: 3, replace: 0 }")
        .replace("[a, b, c, d]", "[a, b, c]");
    let mut s = Sim::boot(&yaml);
    assert_eq!(s.running_on(0).unit, 0);
    s.lose(0);
    // The next free host takes it: a first loss is not its fault.
    s.ok(1);
    assert_eq!(s.running_on(1).unit, 0);
    assert_eq!(s.e.status(), RunStatus::Running);
    s.lose(1);
    assert_eq!(s.wind_down_from_stopping(), RunStatus::Failed);
    let reason = s.e.record().reason.unwrap_or_default();
    assert!(
        reason.contains("item 0 of stage `score` lost its host"),
        "{reason}"
    );
}

const TWO_GROUPS: &str = r#"
name: t
fleet: { prep: { count: 1 }, w: { count: 2 } }
stages:
  - name: prepare
    hosts: prep
    tasks:
      - shell: echo prepare
  - name: score
    hosts: w
    shards: [a, b, c]
    tasks:
      - shell: ./score {{ item }}
"#;

#[test]
fn workers_no_later_stage_needs_are_released_early_and_the_hours_saved_recorded() {
    let mut s = Sim::boot(TWO_GROUPS);
    // prep is host 0; w are 1 and 2. Nothing of w's stage runs yet.
    assert_eq!(s.running(), [(0, 0, 0, 0, 0)]);
    assert!(s.released.is_empty(), "w is needed later, prep is working");
    s.now = 1_000;
    s.ok(0);
    assert_eq!(
        s.released,
        [0],
        "prep's stage is over and no later stage needs it"
    );
    s.ok(1);
    s.ok(2);
    // Host 1 takes the last item; host 2 has nothing left to take.
    assert_eq!(s.released, [0, 2]);
    s.now = 3_601_000;
    s.ok(1);
    assert_eq!(
        s.collects,
        [1],
        "released hosts were collected when released"
    );
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let rec = s.e.record();
    assert_eq!(rec.hosts[0].released_at_ms, Some(1_000));
    assert_eq!(
        rec.hosts[0].archive.as_deref(),
        Some("runs/run-1/logs/0.tar.gz")
    );
    assert!(
        (rec.instance_hours_saved - 2.0).abs() < 0.01,
        "about an hour each for prep-0 and w-1: {}",
        rec.instance_hours_saved
    );
}

#[test]
fn an_instance_that_never_became_reachable_is_replaced_before_the_stages_start() {
    let mut s = Sim::new(SETUP_THEN_WORK);
    s.send(Event::BootstrapFailed {
        host: 0,
        error: "no route to host".into(),
    });
    assert_eq!(s.replacements, [(0, "w-0-r1".to_owned())]);
    s.send(Event::Bootstrapped { host: 1 });
    assert!(
        s.running().is_empty(),
        "the stages wait for the replacement"
    );
    s.send(Event::Bootstrapped { host: 2 });
    assert_eq!(s.running(), [(1, 0, 0, 0, 0), (2, 0, 1, 0, 0)]);
    assert_eq!(s.argv(2), ["/bin/sh", "-c", "echo setup w-0-r1 0/2"]);
}

#[test]
fn a_rebalance_with_no_replacement_left_keeps_the_host_working() {
    let yaml = SHARDED.replace("count: 2 }", "count: 2, replace: 0 }");
    let mut s = Sim::boot(&yaml);
    s.send(Event::Interrupted {
        host: 0,
        notice: Notice::Rebalance,
    });
    assert!(s.replacements.is_empty());
    s.ok(0);
    assert_eq!(
        s.running_on(0).unit,
        2,
        "no replacement comes: it goes on taking items"
    );
}

const SETUP_PREP_SCORE: &str = r#"
name: t
fleet: { w: { count: 2 } }
stages:
  - name: setup
    hosts: w
    tasks:
      - shell: echo setup
  - name: prep
    hosts: w
    tasks:
      - shell: echo prep {{ host.index }}
  - name: score
    hosts: w
    shards: [a, b, c]
    tasks:
      - shell: ./score {{ item }}
"#;

#[test]
fn a_replacement_also_replays_a_stage_its_slot_finished_before_the_host_was_lost() {
    let mut s = Sim::boot(SETUP_PREP_SCORE);
    s.ok(0);
    s.ok(1);
    // w-0 is done with prep, w-1 is not; then w-0 is lost.
    s.ok(0);
    s.lose(0);
    assert_eq!(s.replacements, [(0, "w-0-r1".to_owned())]);
    s.send(Event::Bootstrapped { host: 2 });
    assert_eq!(s.argv(2), ["/bin/sh", "-c", "echo setup"]);
    s.ok(2);
    // prep's effects were on w-0's disk: the replacement redoes w-0's unit there.
    assert_eq!(s.argv(2), ["/bin/sh", "-c", "echo prep 0"]);
    s.ok(1);
    assert!(
        s.running().iter().all(|t| t.0 != 2 || t.1 == 1),
        "it takes no item before it has replayed prep: {:?}",
        s.running()
    );
    s.ok(2);
    assert_eq!(s.running_on(2).stage, 2, "then it takes items");
}

#[test]
fn a_spot_notice_on_a_replaying_replacement_hands_its_slot_to_the_next() {
    let mut s = Sim::boot(SETUP_THEN_WORK);
    through_setup(&mut s);
    s.lose(1);
    s.send(Event::Bootstrapped { host: 2 });
    let replaying = s.running_on(2);
    assert_eq!(replaying.stage, 0);
    s.send(Event::Interrupted {
        host: 2,
        notice: Notice::Termination,
    });
    assert_eq!(s.interrupts.len(), 1);
    assert_eq!(
        s.replacements,
        [(1, "w-1-r1".to_owned()), (2, "w-1-r2".to_owned())]
    );
    s.finish(2, TaskOutcome::Cancelled, None);
    assert_eq!(
        s.e.status(),
        RunStatus::Running,
        "an interrupted replay is no failure"
    );
    s.lose(2);
    s.send(Event::Bootstrapped { host: 3 });
    assert_eq!(s.argv(3), ["/bin/sh", "-c", "echo setup w-1-r2 1/2"]);
}
