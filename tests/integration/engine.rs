//! The run state machine as data: playbook + events in, actions and the run record out.
//!
//! No process, file or clock is involved: time is a number the test advances. What a
//! real run does with the actions is tested in `local_run`. Workers that come and go
//! (replacements, spot notices, early release) are in [`fleet`].

mod fleet;
mod journal;

use squall::engine::{
    Action, Engine, EngineOptions, Event, Failure, HostId, LaunchedInstance, TaskCommand, TaskKey,
    TaskResult,
};
use squall::plan;
use squall::plan::url::DataUrl;
use squall::record::{Phase, RunStatus, TaskOutcome};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// An engine under test, with the clock and the actions it asked for.
struct Sim {
    e: Engine,
    now: u64,
    /// Tasks started and not yet reported: key -> (host, argv or copy).
    running: BTreeMap<TaskKey, (HostId, TaskCommand)>,
    cancelled: Vec<TaskKey>,
    collects: Vec<HostId>,
    torn_down: bool,
    /// Data actions (listings, stores, cache lookups and writes), in order.
    data: Vec<Action>,
    /// Replacements asked for: (the host replaced, the new name), in order.
    replacements: Vec<(HostId, String)>,
    /// Whether a replacement launch is answered at once (with a new instance).
    auto_replace: bool,
    /// Hosts released early, in order (each answered at once: collected, terminated).
    released: Vec<HostId>,
    /// Tasks asked to stop for a spot notice, with their grace.
    interrupts: Vec<(TaskKey, u64)>,
    snapshots: Vec<HostId>,
    /// Hosts asked to bootstrap (or be adopted), in order.
    bootstraps: Vec<HostId>,
    /// The journal's batches, in order.
    journal: Vec<squall::record::journal::Batch>,
    /// Every task started, in order.
    started: Vec<TaskKey>,
}

impl Sim {
    fn new(yaml: &str) -> Sim {
        Sim::with_options(yaml, EngineOptions::default())
    }

    fn with_options(yaml: &str, options: EngineOptions) -> Sim {
        let pb = plan::parse(Path::new("t.yml"), yaml, Path::new("."), &BTreeMap::new())
            .unwrap_or_else(|e| panic!("test playbook is invalid:\n{e}"));
        let trigger = BTreeMap::from([("kind".to_owned(), serde_json::json!("manual"))]);
        let e = Engine::with_options(Arc::new(pb), "run-1".into(), trigger, 0, options);
        Sim::from_engine(e, 0)
    }

    /// A sim of an engine made elsewhere (a resumed one), started at `now`.
    fn from_engine(mut e: Engine, now: u64) -> Sim {
        let first = e.start();
        let mut sim = Sim {
            e,
            now,
            running: BTreeMap::new(),
            cancelled: Vec::new(),
            collects: Vec::new(),
            torn_down: false,
            data: Vec::new(),
            replacements: Vec::new(),
            auto_replace: true,
            released: Vec::new(),
            interrupts: Vec::new(),
            snapshots: Vec::new(),
            bootstraps: Vec::new(),
            journal: Vec::new(),
            started: Vec::new(),
        };
        sim.absorb(first);
        sim
    }

    /// Launches every group as asked and bootstraps every host: the run reaches Stages.
    fn boot(yaml: &str) -> Sim {
        Sim::boot_with(yaml, EngineOptions::default())
    }

    fn boot_with(yaml: &str, options: EngineOptions) -> Sim {
        let mut sim = Sim::with_options(yaml, options);
        assert_eq!(sim.e.phase(), Phase::Bootstrap);
        let hosts = sim.e.progress().hosts_total;
        for h in 0..hosts {
            sim.send(Event::Bootstrapped { host: h });
        }
        assert_eq!(sim.e.phase(), Phase::Stages);
        sim
    }

    fn send(&mut self, ev: Event) -> Vec<Action> {
        let actions = self.e.handle(self.now, ev);
        self.absorb(actions.clone());
        actions
    }

    fn absorb(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Launch { group, spec } => {
                    let instances = (0..spec.count)
                        .map(|i| LaunchedInstance {
                            id: format!("i-{group}-{i}"),
                            address: format!("127.0.0.{i}"),
                            instance_type: None,
                        })
                        .collect();
                    let more = self
                        .e
                        .handle(self.now, Event::Launched { group, instances });
                    self.absorb(more);
                }
                Action::LaunchReplacement { replaces, name, .. } => {
                    self.replacements.push((replaces, name.clone()));
                    if self.auto_replace {
                        let instance = LaunchedInstance {
                            id: format!("i-{name}"),
                            address: "127.0.0.9".into(),
                            instance_type: None,
                        };
                        let more = self
                            .e
                            .handle(self.now, Event::Replaced { replaces, instance });
                        self.absorb(more);
                    }
                }
                Action::Release { host } => {
                    self.released.push(host);
                    let more = self.e.handle(
                        self.now,
                        Event::Released {
                            host,
                            archive: Ok(format!("runs/run-1/logs/{host}.tar.gz")),
                            terminated: Ok(()),
                        },
                    );
                    self.absorb(more);
                }
                Action::InterruptTask { key, grace_ms, .. } => {
                    self.interrupts.push((key, grace_ms))
                }
                Action::Bootstrap { host } => self.bootstraps.push(host),
                Action::Journal(batch) => self.journal.push(*batch),
                Action::StartTask {
                    key, host, command, ..
                } => {
                    assert!(
                        self.running.insert(key, (host, command)).is_none(),
                        "{key:?} started twice"
                    );
                    self.started.push(key);
                }
                Action::CancelTask { key, .. } => self.cancelled.push(key),
                Action::CollectLogs { host } => self.collects.push(host),
                Action::SnapshotLogs { host } => self.snapshots.push(host),
                Action::Heartbeat(_) => {}
                Action::Teardown => self.torn_down = true,
                Action::WriteRecord(_) => {}
                a @ (Action::ResolveShards { .. }
                | Action::StoreFiles { .. }
                | Action::LookupCache { .. }
                | Action::WriteCache { .. }) => self.data.push(a),
            }
        }
    }

    /// The running tasks as (host, stage, unit, task, try) sorted.
    fn running(&self) -> Vec<(HostId, usize, usize, usize, u32)> {
        self.running
            .iter()
            .map(|(k, (h, _))| (*h, k.stage, k.unit, k.task, k.try_no))
            .collect()
    }

    fn running_on(&self, host: HostId) -> TaskKey {
        let keys: Vec<TaskKey> = self
            .running
            .iter()
            .filter(|(_, (h, _))| *h == host)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(keys.len(), 1, "expected one task on host {host}: {keys:?}");
        keys[0]
    }

    fn argv(&self, host: HostId) -> Vec<String> {
        match &self.running[&self.running_on(host)].1 {
            TaskCommand::Exec(spec) => spec.argv.clone(),
            other => panic!("not an exec: {other:?}"),
        }
    }

    fn finish(&mut self, host: HostId, outcome: TaskOutcome, code: Option<i32>) -> Vec<Action> {
        let key = self.running_on(host);
        self.running.remove(&key);
        self.send(Event::TaskFinished {
            key,
            host,
            result: TaskResult {
                outcome,
                exit_code: code,
                signal: None,
                error: None,
                started_at_ms: self.now,
                ended_at_ms: self.now,
            },
        })
    }

    fn ok(&mut self, host: HostId) -> Vec<Action> {
        self.finish(host, TaskOutcome::Succeeded, Some(0))
    }

    fn lose(&mut self, host: HostId) -> Vec<Action> {
        self.running.retain(|_, (h, _)| *h != host);
        self.send(Event::HostLost {
            host,
            reason: "killed".into(),
        })
    }

    /// From a failure: cancels answered, then collection, teardown and the record.
    fn wind_down_from_stopping(&mut self) -> RunStatus {
        for key in std::mem::take(&mut self.cancelled) {
            if let Some((host, _)) = self.running.remove(&key) {
                self.send(Event::TaskFinished {
                    key,
                    host,
                    result: TaskResult::without_exit(
                        TaskOutcome::Cancelled,
                        None,
                        self.now,
                        self.now,
                    ),
                });
            }
        }
        self.wind_down()
    }

    /// Answers collection and teardown and the record; returns the final status.
    fn wind_down(&mut self) -> RunStatus {
        assert_eq!(
            self.e.phase(),
            Phase::CollectLogs,
            "{:?}",
            self.e.progress()
        );
        for h in std::mem::take(&mut self.collects) {
            self.send(Event::LogsCollected {
                host: h,
                result: Ok(format!("runs/run-1/logs/{h}.tar.gz")),
            });
        }
        assert!(self.torn_down, "teardown follows collection");
        let actions = self.send(Event::TornDown { result: Ok(2) });
        assert!(matches!(actions.as_slice(), [Action::WriteRecord(_)]));
        self.send(Event::RecordWritten);
        assert!(self.e.is_done());
        self.e.status()
    }
}

const PLAIN: &str = r#"
name: t
fleet: { w: { count: 2 } }
stages:
  - name: one
    hosts: w
    tasks:
      - shell: echo {{ host.name }} {{ host.index }}/{{ host.count }} {{ run.id }}
      - command: [echo, "{{ trigger.kind }}"]
  - name: two
    hosts: all
    tasks:
      - shell: echo two
"#;

#[test]
fn a_plain_run_goes_through_every_phase_in_order() {
    let mut s = Sim::boot(PLAIN);
    assert_eq!(s.running(), [(0, 0, 0, 0, 0), (1, 0, 1, 0, 0)]);
    assert_eq!(s.argv(0), ["/bin/sh", "-c", "echo w-0 0/2 run-1"]);
    assert_eq!(s.argv(1), ["/bin/sh", "-c", "echo w-1 1/2 run-1"]);
    s.ok(0);
    // Host 0 goes on with its next task without waiting for host 1.
    assert_eq!(s.running(), [(0, 0, 0, 1, 0), (1, 0, 1, 0, 0)]);
    assert_eq!(s.argv(0), ["echo", "manual"]);
    s.ok(0);
    // Stage two waits for stage one everywhere.
    assert_eq!(s.running(), [(1, 0, 1, 0, 0)]);
    s.ok(1);
    s.ok(1);
    assert_eq!(s.running(), [(0, 1, 0, 0, 0), (1, 1, 1, 0, 0)]);
    s.ok(1);
    // w-1 is done with the last stage: it is released early (collected, terminated).
    assert_eq!(s.released, [1]);
    s.ok(0);
    assert_eq!(s.collects, [0]);
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let rec = s.e.record();
    assert_eq!(rec.tasks.len(), 6);
    assert!(
        rec.tasks
            .iter()
            .all(|t| t.outcome == TaskOutcome::Succeeded)
    );
    let phases: Vec<Phase> = rec.phases.iter().map(|p| p.phase).collect();
    assert_eq!(
        phases,
        [
            Phase::Provision,
            Phase::Bootstrap,
            Phase::Stages,
            Phase::CollectLogs,
            Phase::Teardown,
            Phase::Record,
            Phase::Done
        ]
    );
    assert_eq!(
        rec.tasks[0].task, "echo w-0 0/2 run-1",
        "tasks are named by their rendered command"
    );
}

#[test]
fn a_failed_task_is_retried_on_its_host_then_fails_the_run_and_stops_the_rest() {
    let yaml = PLAIN.replace("    hosts: w\n", "    hosts: w\n    retries: 1\n");
    let mut s = Sim::boot(&yaml);
    s.finish(0, TaskOutcome::Failed, Some(7));
    assert_eq!(
        s.running(),
        [(0, 0, 0, 0, 1), (1, 0, 1, 0, 0)],
        "retried as try 1, same host"
    );
    assert_eq!(s.e.status(), RunStatus::Running);
    s.finish(0, TaskOutcome::Failed, Some(7));
    assert_eq!(s.e.status(), RunStatus::Failed);
    assert_eq!(s.e.phase(), Phase::Stopping);
    assert_eq!(s.cancelled.len(), 1, "the other host's task is cancelled");
    assert!(
        s.collects.is_empty(),
        "logs are collected once nothing runs"
    );
    s.finish(1, TaskOutcome::Cancelled, None);
    assert_eq!(s.wind_down(), RunStatus::Failed);
    let reason = s.e.record().reason.unwrap_or_default();
    assert!(
        reason.contains("failed on w-0")
            && reason.contains("after 2 attempts")
            && reason.contains("exit code 7"),
        "{reason}"
    );
}

const SHARDED: &str = r#"
name: t
fleet: { w: { count: 2 } }
stages:
  - name: score
    hosts: w
    retries: 1
    shards: [a, b, c, d]
    tasks:
      - shell: prep {{ item }}
      - shell: score {{ item }} on {{ host.name }}
"#;

#[test]
fn shards_go_to_whichever_host_is_free() {
    let mut s = Sim::boot(SHARDED);
    assert_eq!(s.argv(0)[2], "prep a");
    assert_eq!(s.argv(1)[2], "prep b");
    s.ok(0);
    assert_eq!(
        s.argv(0)[2],
        "score a on w-0",
        "an item's tasks stay on its host"
    );
    s.ok(0);
    assert_eq!(s.argv(0)[2], "prep c", "a free host takes the next item");
    s.ok(0);
    s.ok(0);
    assert_eq!(s.argv(0)[2], "prep d");
    for _ in 0..2 {
        s.ok(0);
        s.ok(1);
    }
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let rec = s.e.record();
    assert_eq!(
        (rec.stages[0].shards_done, rec.stages[0].shards_total),
        (4, 4)
    );
    let on_w0 = rec.tasks.iter().filter(|t| t.host == "w-0").count();
    assert_eq!(on_w0, 6, "the faster host did three items");
}

#[test]
fn a_dead_hosts_shards_finish_on_the_others_without_counting_as_failures() {
    // `replace: 0`: today's behaviour, no replacement (see `fleet` for replacements).
    let yaml = SHARDED
        .replace("retries: 1", "retries: 0")
        .replace("count: 2 }", "count: 2, replace: 0 }");
    let mut s = Sim::boot(&yaml);
    s.ok(0); // w-0 is into item a's second task
    s.lose(0);
    assert_eq!(
        s.e.status(),
        RunStatus::Running,
        "losing a host is not a failure"
    );
    // w-1 finishes b and then takes a (from its first task), then c and d.
    s.ok(1);
    s.ok(1);
    assert_eq!(s.argv(1)[2], "prep a");
    for _ in 0..6 {
        s.ok(1);
    }
    assert_eq!(s.collects, [0, 1]);
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let rec = s.e.record();
    assert!(rec.hosts[0].lost.is_some());
    assert_eq!(rec.stages[0].shards_done, 4);
    let lost: Vec<_> = rec
        .tasks
        .iter()
        .filter(|t| t.outcome == TaskOutcome::HostLost)
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].host.as_str(), lost[0].item), ("w-0", Some(0)));
    assert!(
        rec.hosts.iter().all(|h| h.archive.is_some()),
        "a lost host's logs are still asked for"
    );
}

#[test]
fn a_failed_shard_is_retried_on_another_host() {
    let mut s = Sim::boot(SHARDED);
    s.finish(0, TaskOutcome::Failed, Some(1)); // item a fails on w-0
    assert_eq!(
        s.argv(0)[2],
        "prep c",
        "w-0 takes a new item, not the one it failed"
    );
    s.ok(1);
    s.ok(1); // w-1 is done with b and takes a
    assert_eq!(s.argv(1)[2], "prep a");
    let key = s.running_on(1);
    assert_eq!(key.try_no, 1);
}

#[test]
fn a_failed_shard_goes_back_to_the_same_host_when_it_is_the_only_one() {
    let mut s = Sim::boot(&SHARDED.replace("count: 2", "count: 1"));
    s.finish(0, TaskOutcome::Failed, Some(1));
    assert_eq!(
        s.argv(0)[2],
        "prep a",
        "no other host can take it: retried first"
    );
    assert_eq!(s.running_on(0).try_no, 1);
    s.ok(0);
    s.ok(0);
    assert_eq!(s.argv(0)[2], "prep b");
}

#[test]
fn losing_every_host_of_a_sharded_stage_fails_the_run() {
    let mut s = Sim::boot(&SHARDED.replace("count: 2 }", "count: 2, replace: 0 }"));
    s.lose(0);
    s.lose(1);
    assert_eq!(s.e.status(), RunStatus::Failed);
    assert_eq!(s.wind_down(), RunStatus::Failed);
    let reason = s.e.record().reason.unwrap_or_default();
    assert!(
        reason.contains("no live hosts left for stage `score`"),
        "{reason}"
    );
}

#[test]
fn losing_a_host_that_owes_a_plain_stage_fails_the_run() {
    let mut s = Sim::boot(&PLAIN.replace("count: 2 }", "count: 2, replace: 0 }"));
    s.lose(1);
    assert_eq!(s.e.status(), RunStatus::Failed);
    assert_eq!(s.cancelled.len(), 1);
    s.finish(0, TaskOutcome::Cancelled, None);
    assert_eq!(s.wind_down(), RunStatus::Failed);
    assert!(
        s.e.record()
            .reason
            .unwrap_or_default()
            .contains("host w-1 was lost during stage `one`")
    );
}

#[test]
fn the_deadline_cancels_running_tasks_then_collects_and_tears_down() {
    let mut s = Sim::boot(&format!("deadline: 10s\n{PLAIN}"));
    s.now = 9_999;
    s.send(Event::Tick);
    assert_eq!(s.e.status(), RunStatus::Running);
    s.now = 10_000;
    s.send(Event::Tick);
    assert_eq!(s.e.status(), RunStatus::DeadlineExceeded);
    assert_eq!(s.cancelled.len(), 2);
    s.finish(0, TaskOutcome::Cancelled, None);
    assert!(s.collects.is_empty());
    s.finish(1, TaskOutcome::Cancelled, None);
    assert_eq!(s.wind_down(), RunStatus::DeadlineExceeded);
    let reason = s.e.record().reason.unwrap_or_default();
    assert!(
        reason.contains("deadline of 10s") && reason.contains("stage `one`"),
        "{reason}"
    );
}

#[test]
fn the_budget_stops_the_run_once_the_estimated_spend_reaches_it() {
    // Two p3.2xlarge workers at $3.06 an hour: billed a minute at least ($0.102), then
    // $0.0017 a second together, so a $0.20 budget is reached at 117.6 s. The hosts'
    // instances report no type: the group's is priced.
    let pb = PLAIN.replace("{ count: 2 }", "{ count: 2, instance_type: p3.2xlarge }");
    let mut s = Sim::boot(&format!("budget_usd: 0.2\n{pb}"));
    s.now = 30_000;
    assert!(
        (s.e.spend_usd() - 0.102).abs() < 1e-9,
        "{}",
        s.e.spend_usd()
    );
    s.now = 117_000;
    s.send(Event::Tick);
    assert_eq!(s.e.status(), RunStatus::Running);
    s.now = 118_000;
    s.send(Event::Tick);
    assert_eq!(s.e.status(), RunStatus::BudgetExceeded);
    assert_eq!(s.cancelled.len(), 2, "running tasks are cancelled");
    s.finish(0, TaskOutcome::Cancelled, None);
    s.finish(1, TaskOutcome::Cancelled, None);
    assert_eq!(s.wind_down(), RunStatus::BudgetExceeded);
    let rec = s.e.record();
    let reason = rec.reason.unwrap_or_default();
    assert!(reason.contains("budget of $0.20"), "{reason}");
    assert_eq!(
        squall::exit::for_status(rec.status),
        squall::exit::RUN_FAILED
    );
    // Without a budget the same run goes on.
    let mut s = Sim::boot(&pb);
    s.now = 3_000_000;
    s.send(Event::Tick);
    assert_eq!(s.e.status(), RunStatus::Running);
}

#[test]
fn tasks_that_never_answer_a_cancel_do_not_hold_the_run_forever() {
    let mut s = Sim::boot(PLAIN);
    s.send(Event::Cancel {
        reason: "cancelled by Ctrl-C".into(),
    });
    assert_eq!(s.e.status(), RunStatus::Cancelled);
    s.now = plan::STOP_GRACE_MS - 1;
    s.send(Event::Tick);
    assert_eq!(s.e.phase(), Phase::Stopping);
    s.now = plan::STOP_GRACE_MS;
    s.send(Event::Tick);
    assert_eq!(s.wind_down(), RunStatus::Cancelled);
    let rec = s.e.record();
    assert_eq!(rec.reason.as_deref(), Some("cancelled by Ctrl-C"));
    assert!(
        rec.tasks
            .iter()
            .all(|t| t.outcome == TaskOutcome::Cancelled)
    );
}

#[test]
fn a_stage_timeout_fails_the_run() {
    let yaml = PLAIN.replace("  - name: one\n", "  - name: one\n    timeout: 30s\n");
    let mut s = Sim::boot(&yaml);
    s.now = 30_000;
    s.send(Event::Tick);
    assert_eq!(s.e.status(), RunStatus::Failed);
    s.finish(0, TaskOutcome::Cancelled, None);
    s.finish(1, TaskOutcome::Cancelled, None);
    assert_eq!(s.wind_down(), RunStatus::Failed);
    assert!(
        s.e.record()
            .reason
            .unwrap_or_default()
            .contains("exceeded its timeout of 30s")
    );
}

#[test]
fn a_failed_launch_waits_for_the_other_launches_then_tears_down() {
    let yaml = r#"
name: t
fleet: { a: { count: 1 }, b: { count: 1 } }
stages: [{ name: s, hosts: all, tasks: [{ shell: "true" }] }]
"#;
    let pb =
        plan::parse(Path::new("t.yml"), yaml, Path::new("."), &BTreeMap::new()).expect("valid");
    let mut e = Engine::new(Arc::new(pb), "r".into(), BTreeMap::new(), 0);
    let launches = e.start();
    assert_eq!(launches.len(), 2, "one launch per group");
    let acts = e.handle(
        0,
        Event::LaunchFailed {
            group: "a".into(),
            error: "InsufficientInstanceCapacity".into(),
        },
    );
    assert!(
        acts.is_empty(),
        "nothing to collect or tear down while b is launching: {acts:?}"
    );
    let acts = e.handle(
        1,
        Event::Launched {
            group: "b".into(),
            instances: vec![LaunchedInstance {
                id: "i-b".into(),
                address: "x".into(),
                instance_type: None,
            }],
        },
    );
    assert_eq!(
        acts,
        [Action::Teardown],
        "no bootstrap after a failure, straight to teardown"
    );
    assert_eq!(e.status(), RunStatus::Failed);
}

#[test]
fn a_host_that_fails_to_bootstrap_is_left_out_when_the_group_minimum_allows() {
    let yaml = PLAIN.replace("count: 2", "count: 2, min_count: 1, replace: 0");
    let mut s = Sim::new(&yaml);
    s.send(Event::BootstrapFailed {
        host: 0,
        error: "no route".into(),
    });
    s.send(Event::Bootstrapped { host: 1 });
    assert_eq!(s.e.phase(), Phase::Stages);
    assert_eq!(s.running(), [(1, 0, 0, 0, 0)]);
    let mut s = Sim::new(&PLAIN.replace("count: 2", "count: 2, replace: 0"));
    s.send(Event::BootstrapFailed {
        host: 0,
        error: "no route".into(),
    });
    s.send(Event::Bootstrapped { host: 1 });
    assert_eq!(s.e.status(), RunStatus::Failed, "below the group's minimum");
}

#[test]
fn shard_items_reach_tasks_as_templates_and_environment() {
    let yaml = r#"
name: t
vars: { model: m1 }
fleet: { w: { count: 1 } }
stages:
  - name: s
    hosts: w
    shards: [{ file: x.csv, n: 3 }]
    tasks:
      - command: [run, "{{ vars.model }}", "{{ item.file }}", "{{ item.n * 2 }}"]
        environment: { WHERE: "{{ host.group }}" }
        timeout: 90s
"#;
    let s = Sim::boot(yaml);
    let TaskCommand::Exec(spec) = &s.running[&s.running_on(0)].1 else {
        panic!("exec expected")
    };
    assert_eq!(spec.argv, ["run", "m1", "x.csv", "6"]);
    assert_eq!(spec.env["WHERE"], "w");
    assert_eq!(spec.env["SQUALL_ITEM"], r#"{"file":"x.csv","n":3}"#);
    assert_eq!(spec.env["SQUALL_RUN_ID"], "run-1");
    assert_eq!(spec.timeout_secs, Some(90));
    assert_eq!(spec.id, "s0-u0-t0-a0");
}

#[test]
fn a_sharded_retry_never_reuses_a_task_id() {
    // One host, so the failed item comes back to it: its second task must get a new id,
    // or the agent would report the failed attempt again instead of running it.
    let mut s = Sim::boot(&SHARDED.replace("count: 2", "count: 1"));
    s.ok(0); // prep a
    s.finish(0, TaskOutcome::Failed, Some(1)); // score a fails
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        if s.running.is_empty() {
            break;
        }
        let key = s.running_on(0);
        assert!(
            seen.insert(key.agent_id()),
            "task id {} reused",
            key.agent_id()
        );
        s.ok(0);
    }
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let ids: Vec<String> = s.e.record().tasks.iter().map(|t| t.id.clone()).collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "every attempt has its own id: {ids:?}"
    );
}

#[test]
fn each_task_of_a_plain_stage_has_its_own_retries() {
    let yaml = PLAIN.replace("    hosts: w\n", "    hosts: w\n    retries: 1\n");
    let mut s = Sim::boot(&yaml);
    s.finish(0, TaskOutcome::Failed, Some(1)); // task 0 fails once
    s.ok(0); // and passes on retry
    s.finish(0, TaskOutcome::Failed, Some(1)); // task 1 fails once
    assert_eq!(
        s.e.status(),
        RunStatus::Running,
        "task 1 still has its own retry"
    );
    assert_eq!(s.running_on(0).task, 1);
}

/// The hosts a batch of actions asks to snapshot.
fn snapshots(actions: &[Action]) -> Vec<HostId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SnapshotLogs { host } => Some(*host),
            _ => None,
        })
        .collect()
}

#[test]
fn live_hosts_logs_are_snapshotted_at_the_interval_one_snapshot_per_host_at_a_time() {
    let options = EngineOptions {
        snapshot_every_ms: Some(30_000),
        ..EngineOptions::default()
    };
    let mut s = Sim::boot_with(&SHARDED.replace("count: 2", "count: 3"), options);
    s.now = 29_999;
    assert!(
        snapshots(&s.send(Event::Tick)).is_empty(),
        "not before the interval"
    );
    s.now = 30_000;
    assert_eq!(snapshots(&s.send(Event::Tick)), [0, 1, 2]);
    s.now = 31_000;
    s.send(Event::LogsSnapshotted {
        host: 0,
        result: Ok("runs/run-1/logs/snapshots/w-0.tar.gz".into()),
    });
    s.send(Event::LogsSnapshotted {
        host: 1,
        result: Err(Failure("timed out".into())),
    });
    s.lose(2);
    s.now = 59_999;
    assert!(snapshots(&s.send(Event::Tick)).is_empty());
    s.now = 60_000;
    // Host 1's snapshot failed, so it has gone longest without one: it comes first.
    assert_eq!(
        snapshots(&s.send(Event::Tick)),
        [1, 0],
        "a lost host is not snapshotted; a failed snapshot does not stop the next"
    );
    s.now = 90_000;
    assert!(
        snapshots(&s.send(Event::Tick)).is_empty(),
        "hosts whose snapshot has not answered get no second one"
    );
    let rec = s.e.record();
    let snap = rec.hosts[0]
        .snapshot
        .as_ref()
        .expect("w-0's snapshot is recorded");
    assert_eq!(
        (snap.key.as_str(), snap.at_ms),
        ("runs/run-1/logs/snapshots/w-0.tar.gz", 31_000)
    );
    assert!(rec.hosts[1].snapshot.is_none());
}

#[test]
fn no_snapshot_is_asked_for_outside_the_stages() {
    let options = EngineOptions {
        snapshot_every_ms: Some(1_000),
        ..EngineOptions::default()
    };
    let mut s = Sim::with_options(PLAIN, options);
    s.now = 5_000;
    assert!(snapshots(&s.send(Event::Tick)).is_empty(), "bootstrapping");
    let mut s = Sim::boot_with(PLAIN, options);
    s.send(Event::Cancel {
        reason: "cancelled by Ctrl-C".into(),
    });
    s.now = 5_000;
    assert!(snapshots(&s.send(Event::Tick)).is_empty(), "stopping");
}

#[test]
fn heartbeats_come_at_every_phase_or_stage_change_and_at_the_interval() {
    let options = EngineOptions {
        heartbeat_every_ms: Some(15_000),
        ..EngineOptions::default()
    };
    let beats = |actions: &[Action]| -> Vec<(Phase, Option<String>, usize)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Heartbeat(b) => Some((b.phase, b.stage.clone(), b.shards_done)),
                _ => None,
            })
            .collect()
    };
    let pb = plan::parse(
        Path::new("t.yml"),
        SHARDED,
        Path::new("."),
        &BTreeMap::new(),
    )
    .expect("valid");
    let mut e = Engine::with_options(Arc::new(pb), "run-1".into(), BTreeMap::new(), 0, options);
    let first = e.start();
    assert!(
        matches!(first.first(), Some(Action::Heartbeat(b)) if b.phase == Phase::Provision),
        "the first heartbeat comes before the launches: {first:?}"
    );
    let mut s = Sim::boot_with(SHARDED, options);
    s.now = 1_000;
    assert!(beats(&s.send(Event::Tick)).is_empty(), "nothing changed");
    s.now = 15_000;
    let due = beats(&s.send(Event::Tick));
    assert_eq!(due, [(Phase::Stages, Some("score".into()), 0)]);
    assert_eq!(s.e.heartbeat().hosts.len(), 2);
    assert_eq!(s.e.heartbeat().hosts[0].running, ["s0-u0-t0-a0"]);
    // Finish every item: the run moves to collecting, which is a change.
    let mut last = Vec::new();
    for host in [0, 0, 1, 1, 0, 0, 1, 1] {
        last = s.ok(host);
    }
    assert_eq!(
        beats(&last),
        [(Phase::CollectLogs, None, 4)],
        "the change to collecting is told at once"
    );
    for h in std::mem::take(&mut s.collects) {
        s.send(Event::LogsCollected {
            host: h,
            result: Ok(format!("runs/run-1/logs/{h}.tar.gz")),
        });
    }
    let record = s.send(Event::TornDown { result: Ok(2) });
    assert!(
        beats(&record).is_empty(),
        "the record, being written, is the last word: {record:?}"
    );
    let done = s.send(Event::RecordWritten);
    assert_eq!(beats(&done), [(Phase::Done, None, 4)]);
}

// --- data: fetches, listed items, the cache ---

fn glob_match(path: &str, name: &str) -> squall_worker::GlobMatch {
    squall_worker::GlobMatch {
        path: path.into(),
        name: name.into(),
        size: 3,
    }
}

impl Sim {
    /// Reports host `host`'s running fetch as having matched `files`.
    fn listed(&mut self, host: HostId, files: Vec<squall_worker::GlobMatch>) -> Vec<Action> {
        let key = self.running_on(host);
        self.send(Event::FetchListed { key, host, files })
    }

    /// Takes the data actions asked for so far.
    fn take_data(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.data)
    }
}

const FETCHING: &str = r#"
name: t
fleet: { w: { count: 2 } }
stages:
  - name: grab
    hosts: w
    tasks:
      - fetch: { src: "out/*.csv", dest: "res/{{ host.name }}/" }
"#;

#[test]
fn a_fetch_stores_what_it_matched_under_its_destination_and_records_each_file() {
    let mut s = Sim::boot(FETCHING);
    let key = s.running_on(0);
    s.listed(
        0,
        vec![
            glob_match("./out/a.csv", "a.csv"),
            glob_match("./out/b.csv", "b.csv"),
        ],
    );
    let data = s.take_data();
    let [Action::StoreFiles { files, .. }] = data.as_slice() else {
        panic!("{data:?}");
    };
    let to: Vec<String> = files.iter().map(|f| f.to.label()).collect();
    assert_eq!(
        to,
        [
            "runs/run-1/files/res/w-0/a.csv",
            "runs/run-1/files/res/w-0/b.csv"
        ]
    );
    assert_eq!(files[0].from, "./out/a.csv");
    // The task is not done until its files are stored.
    assert_eq!(s.running_on(0), key);
    s.send(Event::FilesStored {
        key,
        host: 0,
        files: to
            .iter()
            .map(|k| squall::record::StoredFile {
                key: k.clone(),
                size: 3,
                sha256: "ab".into(),
            })
            .collect(),
    });
    s.ok(0);
    let rec = s.e.record();
    assert_eq!(rec.files.len(), 2);
    assert_eq!(
        (rec.files[0].host.as_str(), rec.files[0].stage.as_str()),
        ("w-0", "grab")
    );
}

#[test]
fn a_fetch_matching_nothing_fails_unless_optional() {
    let mut s = Sim::boot(FETCHING);
    s.listed(0, Vec::new());
    s.running.retain(|_, (h, _)| *h != 0);
    assert!(s.take_data().is_empty(), "nothing to store");
    let rec = s.e.record();
    let failed = rec
        .tasks
        .iter()
        .find(|t| t.outcome == TaskOutcome::Failed)
        .expect("failed");
    let why = failed.error.clone().unwrap_or_default();
    assert!(why.contains("no file matches `out/*.csv` on w-0"), "{why}");

    let optional = FETCHING.replace(
        "dest: \"res/{{ host.name }}/\" }",
        "dest: \"res/{{ host.name }}/\", optional: true }",
    );
    let mut s = Sim::boot(&optional);
    s.listed(0, Vec::new());
    s.listed(1, Vec::new());
    s.running.clear();
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
}

#[test]
fn two_units_fetching_one_key_fail_the_run_naming_both() {
    // Validation flags a destination two sampled units share; one that differs between
    // them (hosts 0 and 1) but not between hosts 0 and 2 is only found when host 2
    // stores it.
    let yaml = FETCHING
        .replace("count: 2", "count: 3")
        .replace("res/{{ host.name }}/", "res/{{ host.index % 2 }}/");
    let mut s = Sim::boot(&yaml);
    s.listed(0, vec![glob_match("out/a.csv", "a.csv")]);
    let data = s.take_data();
    let key = s.running_on(0);
    let [Action::StoreFiles { files, .. }] = data.as_slice() else {
        panic!("{data:?}");
    };
    let stored = files
        .iter()
        .map(|f| squall::record::StoredFile {
            key: f.to.label(),
            size: 3,
            sha256: "x".into(),
        })
        .collect();
    s.send(Event::FilesStored {
        key,
        host: 0,
        files: stored,
    });
    s.ok(0);
    s.listed(2, vec![glob_match("out/a.csv", "a.csv")]);
    assert!(s.take_data().is_empty(), "the second is not stored");
    let rec = s.e.record();
    let reason = rec.reason.clone().unwrap_or_default();
    assert!(
        reason
            .contains("`runs/run-1/files/res/0/a.csv` was already fetched by w-0 in stage `grab`")
            && reason.contains("on w-2")
            && reason.contains("template `dest` with `{{ host.name }}`"),
        "{reason}"
    );
}

const LISTED: &str = r#"
name: t
fleet: { w: { count: 2 } }
stages:
  - name: work
    hosts: w
    shards: { lines: "{{ vars.manifest }}" }
    tasks:
      - shell: echo {{ item | quote }}
  - name: after
    hosts: w
    tasks:
      - shell: echo done
vars: { manifest: "s3://my-bucket/list.txt" }
"#;

fn resolve(s: &mut Sim, result: Result<Vec<serde_json::Value>, &str>) -> Vec<Action> {
    let data = s.take_data();
    let [Action::ResolveShards { stage, source }] = data.as_slice() else {
        panic!("{data:?}");
    };
    assert_eq!(
        source,
        &squall::engine::ShardSource::Lines(DataUrl::S3 {
            bucket: "my-bucket".into(),
            key: "list.txt".into()
        })
    );
    s.send(Event::ShardsResolved {
        stage: *stage,
        result: result
            .map(|items| squall::engine::Listed { items, file: None })
            .map_err(|e| Failure(e.into())),
    })
}

#[test]
fn listed_items_are_asked_for_when_their_stage_opens_and_then_run() {
    let mut s = Sim::boot(LISTED);
    assert!(
        s.running().is_empty(),
        "nothing runs before the items are known"
    );
    resolve(
        &mut s,
        Ok(vec![serde_json::json!("a b"), serde_json::json!("c")]),
    );
    assert_eq!(s.running().len(), 2);
    assert_eq!(s.argv(0), ["/bin/sh", "-c", "echo 'a b'"]);
    let rec = s.e.record();
    let items = rec.stages[0].items.clone().expect("items recorded");
    assert_eq!(
        (items.source.as_str(), items.count),
        ("s3://my-bucket/list.txt", 2)
    );
}

#[test]
fn an_empty_listing_runs_no_item_and_the_stage_succeeds_saying_so() {
    let mut s = Sim::boot(LISTED);
    resolve(&mut s, Ok(Vec::new()));
    // Straight to the next stage.
    assert_eq!(s.running(), [(0, 1, 0, 0, 0), (1, 1, 1, 0, 0)]);
    let rec = s.e.record();
    assert_eq!(rec.stages[0].succeeded, Some(true));
    let note = rec.stages[0].note.clone().unwrap_or_default();
    assert!(note.contains("empty: no item ran"), "{note}");
}

#[test]
fn a_failed_listing_fails_the_run_naming_the_url_and_the_cause() {
    let mut s = Sim::boot(LISTED);
    resolve(&mut s, Err("NoSuchBucket: the bucket does not exist"));
    assert_eq!(s.wind_down(), RunStatus::Failed);
    let reason = s.e.record().reason.unwrap_or_default();
    assert!(
        reason.contains(
            "listing the items of stage `work` from `s3://my-bucket/list.txt` failed: NoSuchBucket"
        ),
        "{reason}"
    );
}

const CACHED: &str = r#"
name: t
fleet: { w: { count: 1 } }
stages:
  - name: setup
    hosts: w
    tasks:
      - shell: echo setup {{ vars.model }}
  - name: work
    hosts: w
    cache: true
    shards: [a, b]
    tasks:
      - fetch: { src: "out/{{ item }}", dest: out/ }
vars: { model: m1 }
"#;

#[test]
fn a_cached_item_is_not_run_and_a_computed_one_writes_its_entry() {
    let mut s = Sim::boot(CACHED);
    s.ok(0); // setup
    let data = s.take_data();
    let queries: Vec<(usize, squall::engine::CacheQuery)> = data
        .into_iter()
        .map(|a| match a {
            Action::LookupCache { unit, query, .. } => (unit, query),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(queries.len(), 2);
    assert!(s.running().is_empty(), "items wait for their lookup");
    // The key covers the earlier setup and the item's own tasks.
    assert!(
        queries[0].1.material.contains("echo setup m1"),
        "{}",
        queries[0].1.material
    );
    assert!(
        queries[0].1.material.contains("fetch out/a"),
        "{}",
        queries[0].1.material
    );
    assert_ne!(queries[0].1.material, queries[1].1.material);
    s.send(Event::CacheAnswered {
        stage: 1,
        unit: 0,
        cache_key: "k-a".into(),
        hit: Some(squall::engine::CacheHit {
            from_run: "run-0".into(),
            files: vec![squall::record::StoredFile {
                key: "runs/run-1/files/out/a".into(),
                size: 1,
                sha256: "aa".into(),
            }],
        }),
    });
    s.send(Event::CacheAnswered {
        stage: 1,
        unit: 1,
        cache_key: "k-b".into(),
        hit: None,
    });
    // Only b runs.
    assert_eq!(s.running(), [(0, 1, 1, 0, 0)]);
    s.listed(0, vec![glob_match("out/b", "b")]);
    let key = s.running_on(0);
    let data = s.take_data();
    assert!(
        matches!(data.as_slice(), [Action::StoreFiles { .. }]),
        "{data:?}"
    );
    s.send(Event::FilesStored {
        key,
        host: 0,
        files: vec![squall::record::StoredFile {
            key: "runs/run-1/files/out/b".into(),
            size: 1,
            sha256: "bb".into(),
        }],
    });
    s.ok(0);
    let data = s.take_data();
    let [Action::WriteCache { entry }] = data.as_slice() else {
        panic!("{data:?}");
    };
    assert_eq!(
        (entry.key.as_str(), entry.item.as_str()),
        ("k-b", Some("b"))
    );
    assert_eq!(entry.files[0].rel.as_deref(), Some("out/b"));
    assert_eq!(s.wind_down(), RunStatus::Succeeded);
    let rec = s.e.record();
    assert_eq!(rec.stages[1].cached, [0]);
    assert_eq!(rec.stages[1].shards_done, 2);
    assert_eq!(rec.files.len(), 2);
    assert_eq!(rec.files[0].cached_from.as_deref(), Some("run-0"));
}

#[test]
fn a_fetch_listed_after_the_run_stopped_stores_nothing() {
    let mut s = Sim::boot(FETCHING);
    s.send(Event::Cancel {
        reason: "cancelled by Ctrl-C".into(),
    });
    s.listed(0, vec![glob_match("out/a.csv", "a.csv")]);
    assert!(
        !s.take_data()
            .iter()
            .any(|a| matches!(a, Action::StoreFiles { .. })),
        "nothing is moved once the run is stopping"
    );
    let rec = s.e.record();
    let t = rec
        .tasks
        .iter()
        .find(|t| t.host == "w-0")
        .expect("w-0's fetch is recorded");
    assert_eq!(t.outcome, TaskOutcome::Cancelled);
}

const SECRET_CACHED: &str = r#"
name: t
secrets: { TOKEN: "env:SQUALL_TEST_UNUSED" }
fleet: { w: { count: 1 } }
stages:
  - name: work
    hosts: w
    cache: true
    shards: [a]
    tasks:
      - shell: echo {{ item }} {{ secrets.TOKEN | quote }}
        environment: { TOKEN: "{{ secrets.TOKEN }}", PLAIN: "p" }
      - fetch: { src: "out/{{ item }}", dest: out/ }
"#;

/// A booted sim of `SECRET_CACHED` whose secret is `value`.
fn secret_sim(value: &str) -> Sim {
    let pb = plan::parse(
        Path::new("t.yml"),
        SECRET_CACHED,
        Path::new("."),
        &BTreeMap::new(),
    )
    .expect("valid");
    let trigger = BTreeMap::from([("kind".to_owned(), serde_json::json!("manual"))]);
    let secrets = plan::secrets::Secrets::new(BTreeMap::from([("TOKEN".into(), value.into())]));
    let e = Engine::with_options(
        Arc::new(pb),
        "run-1".into(),
        trigger,
        0,
        EngineOptions::default(),
    )
    .with_secrets(Arc::new(secrets));
    let mut s = Sim::from_engine(e, 0);
    s.send(Event::Bootstrapped { host: 0 });
    s
}

#[test]
fn a_secret_reaches_the_task_off_its_argv_masked_in_what_is_shown_and_never_in_the_cache_key() {
    let mut a = secret_sim("s3cr3t-one");
    let mut b = secret_sim("s3cr3t-two");
    let query = |s: &mut Sim| match s.take_data().remove(0) {
        Action::LookupCache { query, .. } => query,
        other => panic!("{other:?}"),
    };
    let (qa, qb) = (query(&mut a), query(&mut b));
    // A changed secret is the same item: the key holds no value, masked or not.
    assert_eq!(qa.material, qb.material);
    assert!(!qa.material.contains("s3cr3t"), "{}", qa.material);
    a.send(Event::CacheAnswered {
        stage: 0,
        unit: 0,
        cache_key: "k".into(),
        hit: None,
    });
    let (_, command) = a
        .running
        .values()
        .next()
        .expect("the item's first task runs");
    let TaskCommand::Exec(spec) = command else {
        panic!("{command:?}")
    };
    // The shell text travels in the environment; the argv holds no value.
    assert!(
        spec.argv.iter().all(|arg| !arg.contains("s3cr3t")),
        "{:?}",
        spec.argv
    );
    assert_eq!(spec.argv[2], squall::engine::render::SHELL_FROM_ENV);
    assert_eq!(
        spec.env[squall::engine::render::SHELL_SCRIPT_ENV],
        "echo a s3cr3t-one"
    );
    assert_eq!(spec.env["TOKEN"], "s3cr3t-one");
    assert_eq!(
        spec.masks,
        ["s3cr3t-one"],
        "the agent masks what the task uses"
    );
    // What the run shows of the task is masked: its name, from the rendered text.
    a.ok(0);
    let record = a.e.record();
    let task = record.tasks.first().expect("the task is recorded");
    assert_eq!(task.task, "echo a ***");
    let record = serde_json::to_string(&record).expect("json");
    assert!(!record.contains("s3cr3t"), "{record}");
}
