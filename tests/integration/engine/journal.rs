//! The journal as data: a run journaled as it goes, cut at every point (a master dying
//! at any moment), rebuilt, and resumed by a successor engine to the end.

use super::Sim;
use squall::engine::resume::Rebuilt;
use squall::engine::{Engine, EngineOptions, Event, TaskKey, TaskResult};
use squall::plan;
use squall::record::journal::{Entry, MasterRecord};
use squall::record::{Phase, RunStatus, TaskOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// A plain stage, a sharded stage with retries, and a last plain stage over another
/// group: units of every kind, a failure and a retry, tasks of several steps.
const RUN: &str = r#"
name: t
fleet:
  w: { count: 2 }
  agg: { count: 1 }
stages:
  - name: setup
    hosts: w
    tasks:
      - shell: echo setup one
      - shell: echo setup two
  - name: score
    hosts: w
    retries: 1
    shards: [a, b, c, d, e]
    tasks:
      - shell: echo score {{ item }}
      - shell: echo keep {{ item }}
  - name: sum
    hosts: agg
    tasks:
      - shell: echo sum
"#;

fn options() -> EngineOptions {
    EngineOptions {
        journal_every_ms: Some(0),
        ..EngineOptions::default()
    }
}

fn plan() -> Arc<plan::Plan> {
    Arc::new(
        plan::parse(Path::new("t.yml"), RUN, Path::new("."), &BTreeMap::new())
            .unwrap_or_else(|e| panic!("test playbook is invalid:\n{e}")),
    )
}

fn trigger() -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([("kind".to_owned(), serde_json::json!("manual"))])
}

/// Every unit of the run: 2 hosts of setup, 5 items, 1 host of sum.
fn all_units() -> BTreeSet<(usize, usize)> {
    let mut all = BTreeSet::from([(0, 0), (0, 1), (2, 0)]);
    all.extend((0..5).map(|i| (1, i)));
    all
}

/// The world both masters see: every bootstrap answers, the oldest running task ends
/// first, item 2's first attempt fails. Steps until the run is done (bounded); after
/// each event, `seen` gets the journal's length so far and the completed units.
fn drive(s: &mut Sim, seen: impl FnMut(&Sim)) {
    drive_losing(s, None, seen)
}

/// [`drive`], losing the host that runs `lose` = (stage, unit, task) at its first
/// attempt (the sim answers its replacement at once).
fn drive_losing(s: &mut Sim, lose: Option<(usize, usize, usize)>, seen: impl FnMut(&Sim)) {
    drive_with(s, Lose::Running(lose), seen)
}

/// Which host [`drive_with`] loses, once.
#[derive(Clone, Copy)]
enum Lose {
    /// The host that runs (stage, unit, task).
    Running(Option<(usize, usize, usize)>),
    /// Host `.1` as soon as unit `.0` (stage, unit) is complete.
    After((usize, usize), usize),
}

fn drive_with(s: &mut Sim, lose: Lose, mut seen: impl FnMut(&Sim)) {
    let lose_running = match lose {
        Lose::Running(l) => l,
        Lose::After(..) => None,
    };
    let mut lost = false;
    for _ in 0..500 {
        if s.e.is_done() {
            return;
        }
        s.now += 1000;
        if let Lose::After(unit, host) = lose
            && !lost
            && s.e.completed_units().contains(&unit)
        {
            lost = true;
            s.lose(host);
        } else if let Some(host) = s.bootstraps.first().copied() {
            s.bootstraps.remove(0);
            s.send(Event::Bootstrapped { host });
        } else if let Some((&key, &(host, _))) = s.running.iter().next()
            && !lost
            && lose_running == Some((key.stage, key.unit, key.task))
        {
            lost = true;
            s.lose(host);
        } else if let Some((&key, &(host, _))) = s.running.iter().next() {
            let fail = key.stage == 1 && key.unit == 2 && key.try_no == 0 && key.task == 0;
            s.running.remove(&key);
            let outcome = if fail {
                TaskOutcome::Failed
            } else {
                TaskOutcome::Succeeded
            };
            let result = TaskResult {
                outcome,
                exit_code: Some(i32::from(fail)),
                signal: None,
                error: None,
                started_at_ms: s.now - 500,
                ended_at_ms: s.now,
            };
            s.send(Event::TaskFinished { key, host, result });
        } else if s.e.phase() == Phase::CollectLogs {
            for host in std::mem::take(&mut s.collects) {
                s.send(Event::LogsCollected {
                    host,
                    result: Ok(format!("runs/run-1/logs/{host}.tar.gz")),
                });
            }
        } else if s.e.phase() == Phase::Teardown {
            s.send(Event::TornDown { result: Ok(3) });
        } else if s.e.phase() == Phase::Record {
            s.send(Event::RecordWritten);
        } else {
            s.send(Event::Tick);
        }
        seen(s);
    }
    panic!("the run did not end: {:?}", s.e.progress());
}

/// The journal's entries in the order a successor reads them (by batch sequence: the
/// sim answers some actions inside others, so batches may reach it out of order).
fn entries(s: &Sim) -> Vec<Entry> {
    let mut batches = s.journal.clone();
    batches.sort_by_key(|b| (b.generation, b.seq));
    batches.into_iter().flat_map(|b| b.entries).collect()
}

/// The original run, with what the engine had completed each time the journal grew.
/// After how many journal entries the engine had completed which units.
type Points = Vec<(usize, BTreeSet<(usize, usize)>)>;

fn original() -> (Sim, Points) {
    original_losing(None)
}

fn original_losing(lose: Option<(usize, usize, usize)>) -> (Sim, Points) {
    original_with(Lose::Running(lose))
}

fn original_with(lose: Lose) -> (Sim, Points) {
    let e = Engine::with_options(plan(), "run-1".into(), trigger(), 0, options());
    let mut s = Sim::from_engine(e, 0);
    let mut points = vec![(0, BTreeSet::new())];
    points.push((entries(&s).len(), s.e.completed_units().clone()));
    drive_with(&mut s, lose, |s| {
        let n: usize = s.journal.iter().map(|b| b.entries.len()).sum();
        if points.last().is_none_or(|(m, _)| *m != n) {
            points.push((n, s.e.completed_units().clone()));
        }
    });
    assert_eq!(s.e.status(), RunStatus::Succeeded);
    assert_eq!(*s.e.completed_units(), all_units());
    (s, points)
}

fn rebuilt(all: &[Entry], cut: usize) -> Rebuilt {
    let mut r = Rebuilt::default();
    for e in &all[..cut] {
        r.apply(e.clone());
    }
    r
}

/// A successor engine resumed from `r` (the journal cut after `cut` entries), with
/// `masters` for its record, driven to the end; it must succeed.
fn resumed(r: Rebuilt, cut: usize, masters: Vec<MasterRecord>) -> Sim {
    let mut e = Engine::resume(plan(), "run-1".into(), trigger(), 600_000, options(), r);
    e.set_masters(masters);
    let mut next = Sim::from_engine(e, 600_000);
    drive(&mut next, |_| {});
    assert_eq!(
        next.e.status(),
        RunStatus::Succeeded,
        "cut {cut}: {:?}",
        next.e.record().reason
    );
    next
}

/// No unit complete at the cut was started again by the successor.
fn never_reran(next: &Sim, completed: &BTreeSet<(usize, usize)>, cut: usize) {
    for key in &next.started {
        assert!(
            !completed.contains(&(key.stage, key.unit)),
            "cut {cut}: completed unit {:?} ran again as {key:?}",
            (key.stage, key.unit)
        );
    }
}

#[test]
fn a_journal_cut_at_any_entry_rebuilds_the_completed_units_of_that_moment() {
    let (s, points) = original();
    let all = entries(&s);
    assert!(points.len() > 20, "the run journals as it goes: {points:?}");
    for cut in 0..=all.len() {
        let r = rebuilt(&all, cut);
        // The engine's state at the last flush at or before the cut, and at the next.
        let before = points.iter().rev().find(|(n, _)| *n <= cut).map(|p| &p.1);
        let after = points.iter().find(|(n, _)| *n >= cut).map(|p| &p.1);
        let (Some(before), Some(after)) = (before, after) else {
            panic!("cut {cut} outside the run");
        };
        if points.iter().any(|(n, _)| *n == cut) {
            assert_eq!(&r.completed, before, "cut at a flush ({cut} entries)");
        } else {
            assert!(
                before.is_subset(&r.completed) && r.completed.is_subset(after),
                "cut inside a flush ({cut} entries): {:?} not between {before:?} and {after:?}",
                r.completed
            );
        }
    }
    // Batches, as stored, rebuild the same; a missing batch ends what is read.
    let whole = Rebuilt::from_batches(s.journal.clone());
    assert_eq!(whole.completed, all_units());
    let mut gap = s.journal.clone();
    let third = gap.len() / 3;
    gap.remove(third);
    let cut: usize = s.journal[..third].iter().map(|b| b.entries.len()).sum();
    assert_eq!(
        Rebuilt::from_batches(gap).completed,
        rebuilt(&all, cut).completed
    );
}

#[test]
fn a_run_resumed_from_any_cut_never_reruns_a_completed_unit_and_reattaches_what_ran() {
    let (s, points) = original();
    let all = entries(&s);
    let original_keys: BTreeSet<TaskKey> = s.started.iter().copied().collect();
    let mut reattached_total = 0;
    for &(cut, ref completed) in &points {
        let r = rebuilt(&all, cut);
        assert_eq!(&r.completed, completed);
        let in_flight: BTreeSet<(usize, usize, usize, u32, usize)> = r
            .started
            .values()
            .filter(|(a, _)| !r.completed.contains(&(a.stage, a.unit)))
            .filter(|(a, host)| {
                let name = &r.hosts[host].rec.name;
                let id = squall::engine::resume::agent_id(*a);
                !r.tasks.iter().any(|t| t.id == id && &t.host == name)
            })
            .map(|(a, h)| (a.stage, a.unit, a.task, a.try_no, *h))
            .collect();
        let journaled: Vec<_> = r.tasks.clone();
        let master = MasterRecord {
            generation: 2,
            claimed_at_ms: 600_000,
            reason: "test".into(),
            instance_id: None,
            fenced: Vec::new(),
            takeover: None,
        };
        let next = resumed(r, cut, vec![master]);
        assert_eq!(*next.e.completed_units(), all_units(), "cut {cut}");
        never_reran(&next, completed, cut);
        // What ran when the master died is started again with the same key on the
        // same host: the agent re-attaches to it.
        for (stage, unit, task, try_no, host) in &in_flight {
            let key = TaskKey {
                stage: *stage,
                unit: *unit,
                task: *task,
                try_no: *try_no,
            };
            assert!(original_keys.contains(&key));
            assert!(
                next.started.contains(&key),
                "cut {cut}: {key:?} on host {host} was not re-attached: {:?}",
                next.started
            );
            reattached_total += 1;
        }
        let rec = next.e.record();
        let takeover = rec.masters[0].takeover.clone().expect("the takeover");
        assert_eq!(takeover.completed, completed.len());
        assert_eq!(takeover.reattached.len(), in_flight.len(), "cut {cut}");
        // The record keeps every attempt of both masters: the journaled ones first.
        assert_eq!(rec.tasks[..journaled.len()], journaled[..], "cut {cut}");
        assert!(
            rec.tasks.len() >= journaled.len() + next.started.len(),
            "cut {cut}"
        );
    }
    assert!(reattached_total > 5, "cuts fell while tasks ran");
}

#[test]
fn a_run_cut_while_winding_down_finishes_the_teardown_and_records_the_first_fate() {
    let (s, _) = original();
    let all = entries(&s);
    let fate_at = all
        .iter()
        .position(|e| matches!(e, Entry::Fate { .. }))
        .expect("the fate is journaled");
    let r = rebuilt(&all, all.len());
    assert!(r.torn_down.is_some());
    let mut e = Engine::resume(plan(), "run-1".into(), trigger(), 600_000, options(), r);
    let first = e.start();
    assert!(
        first
            .iter()
            .any(|a| matches!(a, squall::engine::Action::Teardown)),
        "a torn-down run is torn down again (by tag), then recorded: {first:?}"
    );
    let mut next = Sim::from_engine(
        Engine::resume(
            plan(),
            "run-1".into(),
            trigger(),
            600_000,
            options(),
            rebuilt(&all, fate_at + 1),
        ),
        600_000,
    );
    drive(&mut next, |_| {});
    assert_eq!(next.e.status(), RunStatus::Succeeded);
    assert!(
        next.started.is_empty(),
        "nothing runs again: {:?}",
        next.started
    );
    assert!(next.torn_down);
}

#[test]
fn a_run_whose_host_was_lost_and_replaced_resumes_from_any_cut_without_rerunning_a_unit() {
    // w-1 is lost during its second setup task; its replacement takes the unit over
    // (from the first task) and then works like the others.
    let (s, points) = original_losing(Some((0, 1, 1)));
    assert_eq!(s.replacements.len(), 1, "{:?}", s.replacements);
    let all = entries(&s);
    for &(cut, ref completed) in &points {
        let next = resumed(rebuilt(&all, cut), cut, Vec::new());
        assert_eq!(*next.e.completed_units(), all_units(), "cut {cut}");
        never_reran(&next, completed, cut);
        // The unit the replacement took over starts from its first task there.
        let rec = next.e.record();
        let first_on_replacement = rec
            .tasks
            .iter()
            .filter(|t| t.host == "w-1-r1" && t.stage == "setup")
            .map(|t| t.id.clone())
            .next();
        if let Some(id) = first_on_replacement {
            assert!(id.starts_with("s0-u1-t0-"), "cut {cut}: {id}");
        }
        assert!(
            rec.hosts.iter().filter(|h| h.replaces.is_some()).count() <= 1,
            "cut {cut}: one replacement in all: {:?}",
            rec.hosts
        );
    }
}

#[test]
fn a_replacement_of_a_host_that_had_done_its_unit_replays_it_in_a_resumed_run() {
    // w-0 (host 1) is lost right after its setup unit completed, while w-1 still runs
    // setup: its replacement must replay w-0's setup before it takes work, whatever the
    // cut at which the master died.
    let (s, points) = original_with(Lose::After((0, 0), 1));
    assert_eq!(s.replacements.len(), 1, "{:?}", s.replacements);
    let all = entries(&s);
    let mut replayed_in_resume = 0;
    for &(cut, _) in &points {
        let r = rebuilt(&all, cut);
        let replaced = r.hosts.values().any(|h| h.rec.name == "w-0-r1");
        let joined = r
            .joined
            .iter()
            .any(|id| r.hosts.get(id).is_some_and(|h| h.rec.name == "w-0-r1"));
        let next = resumed(r, cut, Vec::new());
        let rec = next.e.record();
        let on_new: Vec<&squall::record::TaskRecord> =
            rec.tasks.iter().filter(|t| t.host == "w-0-r1").collect();
        // Whoever launched it (either master), the replacement ran setup before score.
        if let Some(first) = on_new.iter().min_by_key(|t| t.started_at_ms) {
            assert_eq!(first.stage, "setup", "cut {cut}: {on_new:?}");
        }
        if replaced && !joined {
            replayed_in_resume += 1;
            assert!(
                next.started.iter().any(|k| k.stage == 0 && k.unit == 0),
                "cut {cut}: the adopted replacement replays setup: {:?}",
                next.started
            );
        }
    }
    assert!(
        replayed_in_resume > 0,
        "some cut fell before the replacement had replayed"
    );
}

/// The start actions of `actions` each preceded, in the same list, by a journal batch
/// holding that attempt's `Started` entry; how many starts there were.
fn starts_journaled_ahead(actions: &[squall::engine::Action]) -> usize {
    use squall::engine::Action;
    let mut journaled = BTreeSet::new();
    let mut starts = 0;
    for a in actions {
        match a {
            Action::Journal(batch) => {
                for e in &batch.entries {
                    if let Entry::Started { attempt, .. } = e {
                        journaled.insert((
                            attempt.stage,
                            attempt.unit,
                            attempt.task,
                            attempt.try_no,
                        ));
                    }
                }
            }
            Action::StartTask { key, .. } => {
                assert!(
                    journaled.contains(&(key.stage, key.unit, key.task, key.try_no)),
                    "{key:?} starts before the journal holds it: {actions:?}"
                );
                starts += 1;
            }
            _ => {}
        }
    }
    starts
}

#[test]
fn every_attempt_is_journaled_before_it_starts_even_between_flushes() {
    // Flushes fall due once a minute: only the write-ahead rule journals the starts.
    let options = EngineOptions {
        journal_every_ms: Some(60_000),
        ..EngineOptions::default()
    };
    let e = Engine::with_options(plan(), "run-1".into(), trigger(), 0, options);
    let mut s = Sim::from_engine(e, 0);
    let mut starts = 0;
    for h in 0..s.e.progress().hosts_total {
        starts += starts_journaled_ahead(&s.send(Event::Bootstrapped { host: h }));
    }
    for _ in 0..200 {
        let Some(&(host, ..)) = s.running().first() else {
            break;
        };
        starts += starts_journaled_ahead(&s.ok(host));
    }
    assert!(
        s.e.is_done() || s.running().is_empty(),
        "the run was driven to its end"
    );
    assert!(starts >= 8, "every unit's tasks started: {starts}");
}
