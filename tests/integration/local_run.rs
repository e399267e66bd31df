//! The real `squall` binary end to end on the embedded local backend, with faults: a
//! host crashed mid-stage, a failing task, the deadline, Ctrl-C, and the master itself
//! killed while a task runs.
//!
//! Every test asserts on what the run left behind (run.json, the archives as GNU tar
//! reads them, the instances' recorded state and their processes), not on log text
//! alone. The engine's decisions in isolation are tested in `engine`.

use squall::backend::local::LocalCompute;
use squall::record::{RunStatus, TaskOutcome};
use squall::seam::compute::{Compute, InstanceState, tags};
use squall_tests::{
    Scratch, archive, gnu_tar_cat, gnu_tar_list, run_record, squall, squall_command, text,
    wait_until, workspace,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every instance of the run is terminated and none of their processes is left.
fn assert_nothing_left(home: &Path, run: &str) {
    let compute = LocalCompute::new(home.join("instances"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let instances = rt
        .block_on(compute.list_by_tag(tags::RUN, run))
        .expect("listing instances");
    assert!(!instances.is_empty(), "the run launched instances");
    for i in &instances {
        assert_eq!(
            i.state,
            InstanceState::Terminated,
            "{} is left running",
            i.id
        );
        assert_eq!(compute.crash(&i.id), 0, "{} still had processes", i.id);
    }
}

fn write_playbook(dir: &Scratch, yaml: &str) -> PathBuf {
    dir.file("pb.yml", yaml)
}

#[test]
fn hello_runs_end_to_end_and_leaves_archives_gnu_tar_reads() {
    let home = Scratch::new("hello");
    let home_str = home.path.to_str().expect("utf-8");
    let out = squall(
        &home.path,
        &[
            "run",
            "playbooks/hello.yml",
            "--run-id",
            "hello-1",
            "--var",
            "greeting=bonjour",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("run hello-1 succeeded"), "{stdout}");
    assert!(
        stdout.contains(&format!("record:  {home_str}/store/runs/hello-1/run.json")),
        "{stdout}"
    );

    let rec = run_record(&home.path, "hello-1");
    assert_eq!(rec.status, RunStatus::Succeeded);
    assert_eq!(rec.hosts.len(), 3);
    assert_eq!(rec.tasks.len(), 6);
    assert!(
        rec.tasks
            .iter()
            .all(|t| t.exit_code == Some(0) && t.ended_at_ms >= t.started_at_ms)
    );
    assert_eq!(rec.vars["greeting"], "bonjour");
    // Hosts done with the last stage before the others were released early (and
    // terminated then); teardown ends the rest.
    let released = rec
        .hosts
        .iter()
        .filter(|h| h.released_at_ms.is_some())
        .count();
    assert_eq!(
        rec.teardown.as_ref().map(|t| t.terminated + released),
        Some(3)
    );
    for (i, host) in rec.hosts.iter().enumerate() {
        let path = archive(&home.path, "hello-1", &host.name);
        assert_eq!(
            host.archive.as_deref(),
            Some(format!("runs/hello-1/logs/{}.tar.gz", host.name).as_str())
        );
        let members = gnu_tar_list(&path);
        let task = rec
            .tasks
            .iter()
            .find(|t| t.host == host.name)
            .expect("a task per host");
        assert!(
            members.contains(&format!("tasks/{}/stdout.log", task.id)),
            "{members:?}"
        );
        let said = gnu_tar_cat(&path, &format!("tasks/{}/stdout.log", task.id));
        assert_eq!(
            said,
            format!("bonjour from workers-{i} ({} of 3) in run hello-1\n", i + 1)
        );
    }
    let master = gnu_tar_cat(&archive(&home.path, "hello-1", "master"), "master.log");
    assert!(master.contains("run ended"), "{master}");
    assert_nothing_left(&home.path, "hello-1");
}

#[test]
fn the_sharded_example_spreads_its_items_and_aggregates() {
    let home = Scratch::new("inference");
    let out = squall(
        &home.path,
        &["run", "playbooks/inference.yml", "--run-id", "inf-1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let rec = run_record(&home.path, "inf-1");
    assert_eq!(rec.status, RunStatus::Succeeded);
    let score = rec
        .stages
        .iter()
        .find(|s| s.name == "score")
        .expect("score stage");
    // One item per shipped input, listed from the folder.
    assert_eq!((score.shards_done, score.shards_total), (12, 12));
    let items = score
        .items
        .clone()
        .and_then(|i| i.listed)
        .expect("listed items");
    assert_eq!(items[0]["url"], "files/inputs/batch-01.csv", "{items:?}");
    let workers: std::collections::BTreeSet<&str> = rec
        .tasks
        .iter()
        .filter(|t| t.stage == "score")
        .map(|t| t.host.as_str())
        .collect();
    assert_eq!(workers.len(), 4, "every worker took items: {workers:?}");
    // Exactly the expected outputs, byte for byte, and each recorded with its digest.
    let inputs = workspace().join("playbooks/files/inputs");
    let expected = crate::data::expected_outputs(&inputs, "resnet50");
    assert_eq!(crate::data::run_files(&home.path, "inf-1"), expected);
    assert_eq!(rec.files.len(), 13);
    crate::data::assert_files_recorded(&home.path, &rec);
    // The aggregator saw every score (gathered from the run's files).
    let agg = rec
        .tasks
        .iter()
        .find(|t| t.stage == "aggregate" && t.task == "summarize")
        .expect("aggregate ran");
    let said = gnu_tar_cat(
        &archive(&home.path, "inf-1", "aggregator-0"),
        &format!("tasks/{}/stdout.log", agg.id),
    );
    assert_eq!(
        said,
        format!(
            "resnet50 over 12 inputs:\n{}",
            expected["summary/summary.txt"]
        )
    );
    // The copied script ran on each worker: its output is in their archives.
    let scored = rec
        .tasks
        .iter()
        .find(|t| t.task == "score batch-03.csv")
        .expect("batch-03 was scored");
    let out = gnu_tar_cat(
        &archive(&home.path, "inf-1", &scored.host),
        &format!("tasks/{}/stdout.log", scored.id),
    );
    assert!(
        out.contains("scored 13 rows of in/batch-03.csv into out/batch-03.csv.scores"),
        "{out}"
    );
    assert_nothing_left(&home.path, "inf-1");
}

#[test]
fn a_failing_task_fails_the_run_but_logs_are_shipped_and_nothing_is_left() {
    let home = Scratch::new("fail");
    let pb = write_playbook(
        &home,
        r#"
name: failing
fleet: { w: { count: 2 } }
stages:
  - name: work
    hosts: w
    retries: 1
    tasks:
      - shell: echo "attempt on {{ host.name }}"; echo "disk full" >&2; exit 3
"#,
    );
    let out = squall(
        &home.path,
        &["run", pb.to_str().expect("utf-8"), "--run-id", "fail-1"],
    );
    assert_eq!(
        out.status.code(),
        Some(i32::from(squall::exit::RUN_FAILED)),
        "{}",
        text(&out)
    );
    let rec = run_record(&home.path, "fail-1");
    assert_eq!(rec.status, RunStatus::Failed);
    let reason = rec.reason.unwrap_or_default();
    assert!(reason.contains("after 2 attempts: exit code 3"), "{reason}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&reason));
    let failed = rec
        .tasks
        .iter()
        .find(|t| t.outcome == TaskOutcome::Failed)
        .expect("a failure");
    let host = rec
        .hosts
        .iter()
        .find(|h| h.name == failed.host)
        .expect("its host");
    let stderr = gnu_tar_cat(
        &archive(&home.path, "fail-1", &host.name),
        &format!("tasks/{}/stderr.log", failed.id),
    );
    assert_eq!(stderr, "disk full\n");
    // Every host's logs were shipped: each archive holds every attempt of its task.
    for h in &rec.hosts {
        assert_eq!(
            h.archive.as_deref(),
            Some(format!("runs/fail-1/logs/{}.tar.gz", h.name).as_str())
        );
        let path = archive(&home.path, "fail-1", &h.name);
        let attempts: Vec<_> = rec.tasks.iter().filter(|t| t.host == h.name).collect();
        assert!(!attempts.is_empty(), "{} ran its task", h.name);
        // An attempt the run's stop cancelled before it started (the other host failed
        // first, under load) has no output to ship; every other attempt does.
        for t in attempts.into_iter().filter(|t| {
            t.outcome != TaskOutcome::Cancelled || t.exit_code.is_some() || t.signal.is_some()
        }) {
            let said = gnu_tar_cat(&path, &format!("tasks/{}/stdout.log", t.id));
            assert_eq!(said, format!("attempt on {}\n", h.name));
        }
    }
    assert_nothing_left(&home.path, "fail-1");
}

#[test]
fn a_run_whose_record_cannot_be_written_still_stores_its_master_log_and_report() {
    let home = Scratch::new("unrecorded");
    let pb = write_playbook(
        &home,
        r#"
name: unrecorded
fleet: { w: { count: 1 } }
stages:
  - name: work
    hosts: w
    tasks:
      - shell: echo done
"#,
    );
    // A folder where run.json goes: the store cannot write the record.
    let runs = home.path.join("store/runs/unrecorded-1");
    std::fs::create_dir_all(runs.join("run.json")).expect("a folder in the record's place");
    let out = squall(
        &home.path,
        &[
            "run",
            pb.to_str().expect("utf-8"),
            "--run-id",
            "unrecorded-1",
        ],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("failed to write the run record"), "{shown}");
    // The evidence is there all the same: the master's log (saying why) and the report.
    let log = runs.join("logs/master.tar.gz");
    assert!(log.is_file(), "the master's log is stored: {shown}");
    let members = gnu_tar_list(&log);
    let master_log = members
        .iter()
        .find(|m| m.ends_with(".log"))
        .unwrap_or_else(|| panic!("a log in {members:?}"));
    let said = gnu_tar_cat(&log, master_log);
    assert!(said.contains("failed to write the run record"), "{said}");
    let report = std::fs::read_to_string(runs.join("report.html")).expect("the report is stored");
    assert!(report.contains("unrecorded-1"), "{report}");
    assert_nothing_left(&home.path, "unrecorded-1");
}

#[test]
fn a_task_writing_past_its_log_limit_keeps_its_head_and_tail_in_the_archive() {
    let home = Scratch::new("loglimit");
    let pb = write_playbook(
        &home,
        r#"
name: loglimit
log_limit: 64KiB
fleet: { w: { count: 1 } }
stages:
  - name: work
    hosts: w
    tasks:
      - shell: seq 1 300000
"#,
    );
    let out = squall(
        &home.path,
        &["run", pb.to_str().expect("utf-8"), "--run-id", "loglimit-1"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let archive = home.path.join("store/runs/loglimit-1/logs/w-0.tar.gz");
    let members = gnu_tar_list(&archive);
    let stdout = members
        .iter()
        .find(|m| m.ends_with("/stdout.log"))
        .unwrap_or_else(|| panic!("a stdout log in {members:?}"));
    let log = gnu_tar_cat(&archive, stdout);
    assert!(log.starts_with("1\n2\n3\n"), "the head");
    assert!(log.ends_with("299999\n300000\n"), "the tail");
    assert!(
        log.contains("bytes of this stream were skipped here"),
        "the marker"
    );
    assert!(log.len() < 64 * 1024 + 200, "{} bytes kept", log.len());
    assert!(
        !members.iter().any(|m| m.ends_with(".tail")),
        "no ring left: {members:?}"
    );
}

#[test]
fn a_run_that_reaches_its_budget_is_stopped_collected_torn_down_and_recorded() {
    let home = Scratch::new("budget");
    // A p3.2xlarge is billed a minute at least ($0.051): a $0.01 budget is reached at
    // once, while the task sleeps.
    let pb = write_playbook(
        &home,
        r#"
name: budget
budget_usd: 0.01
fleet: { w: { count: 1, instance_type: p3.2xlarge } }
stages:
  - name: work
    hosts: w
    tasks:
      - shell: echo started; sleep 30
"#,
    );
    let started = Instant::now();
    let out = squall(
        &home.path,
        &["run", pb.to_str().expect("utf-8"), "--run-id", "budget-1"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "stopped, not run out"
    );
    let rec: squall::record::RunRecord = serde_json::from_slice(
        &std::fs::read(home.path.join("store/runs/budget-1/run.json")).expect("run.json"),
    )
    .expect("a record");
    assert_eq!(rec.status, RunStatus::BudgetExceeded);
    assert!(
        rec.reason
            .as_deref()
            .unwrap_or_default()
            .contains("budget of $0.01"),
        "{:?}",
        rec.reason
    );
    for h in &rec.hosts {
        assert!(h.archive.is_some(), "{} has its logs collected", h.name);
    }
    assert_nothing_left(&home.path, "budget-1");
}

#[test]
fn an_invalid_playbook_launches_nothing() {
    let home = Scratch::new("invalid");
    let pb = write_playbook(
        &home,
        "name: bad\nfleet: { w: { count: 1 } }\nstages:\n  - name: s\n    hosts: nope\n    tasks: [{ shell: 'true' }]\n",
    );
    let out = squall(&home.path, &["run", pb.to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(squall::exit::USAGE)),
        "{}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pb.yml:5:12: unknown group `nope`"),
        "{stderr}"
    );
    assert!(
        !home.path.join("instances").exists(),
        "nothing was launched"
    );
}

#[test]
fn the_deadline_kills_running_tasks_collects_and_tears_down() {
    let home = Scratch::new("deadline");
    let pb = write_playbook(
        &home,
        "name: slow\ndeadline: 2s\nfleet: { w: { count: 2 } }\nstages:\n  - name: s\n    hosts: w\n    tasks:\n      - shell: echo started; sleep 60\n",
    );
    let started = Instant::now();
    let out = squall(
        &home.path,
        &["run", pb.to_str().expect("utf-8"), "--run-id", "dl-1"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(i32::from(squall::exit::DEADLINE_EXCEEDED)),
        "{}",
        text(&out)
    );
    let rec = run_record(&home.path, "dl-1");
    assert_eq!(rec.status, RunStatus::DeadlineExceeded);
    assert_eq!(rec.tasks.len(), 2);
    assert!(
        rec.tasks
            .iter()
            .all(|t| t.outcome == TaskOutcome::Cancelled),
        "{:?}",
        rec.tasks
    );
    let t = &rec.tasks[0];
    let said = gnu_tar_cat(
        &archive(&home.path, "dl-1", &t.host),
        &format!("tasks/{}/stdout.log", t.id),
    );
    assert_eq!(said, "started\n", "output up to the cut-off is kept");
    assert_nothing_left(&home.path, "dl-1");
}

/// Starts `squall run` in the background on a playbook whose stage runs `sleep`s.
fn spawn_run(home: &Scratch, yaml: &str, run_id: &str) -> std::process::Child {
    let pb = write_playbook(home, yaml);
    squall_command(
        &home.path,
        &["run", pb.to_str().expect("utf-8"), "--run-id", run_id],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting squall")
}

/// Task folders (on any instance) whose status says running.
fn running_tasks(home: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(instances) = std::fs::read_dir(home.join("instances")) else {
        return out;
    };
    for inst in instances.flatten() {
        let runs = inst.path().join("home/.squall/runs");
        let task_dirs = std::fs::read_dir(&runs)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|run| {
                std::fs::read_dir(run.path().join(inst.file_name()).join("tasks"))
                    .into_iter()
                    .flatten()
                    .flatten()
            });
        for task in task_dirs {
            let status =
                std::fs::read_to_string(task.path().join("status.json")).unwrap_or_default();
            if status.contains(r#""state":"running""#) {
                out.push((inst.file_name().to_string_lossy().into_owned(), task.path()));
            }
        }
    }
    out
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("running kill")
        .success();
    assert!(ok, "kill {sig} {}", child.id());
}

fn finish(child: std::process::Child, limit: Duration) -> std::process::Output {
    squall_tests::finish_within(child, limit, "squall run")
}

#[test]
fn ctrl_c_cancels_the_run_but_still_collects_and_tears_down() {
    let home = Scratch::new("ctrlc");
    let child = spawn_run(
        &home,
        "name: slow\nfleet: { w: { count: 2 } }\nstages:\n  - name: s\n    hosts: w\n    tasks:\n      - shell: echo working; sleep 60\n",
        "cc-1",
    );
    wait_until(Duration::from_secs(20), "both tasks to run", || {
        running_tasks(&home.path).len() == 2
    });
    signal(&child, "-INT");
    let out = finish(child, Duration::from_secs(40));
    assert_eq!(
        out.status.code(),
        Some(i32::from(squall::exit::CANCELLED)),
        "{}",
        text(&out)
    );
    let rec = run_record(&home.path, "cc-1");
    assert_eq!(rec.status, RunStatus::Cancelled);
    assert_eq!(rec.reason.as_deref(), Some("cancelled by Ctrl-C"));
    assert!(
        rec.tasks
            .iter()
            .all(|t| t.outcome == TaskOutcome::Cancelled)
    );
    // Every host's logs were shipped, with the output of the task that was cancelled.
    for h in &rec.hosts {
        let t = rec
            .tasks
            .iter()
            .find(|t| t.host == h.name)
            .expect("a task per host");
        let said = gnu_tar_cat(
            &archive(&home.path, "cc-1", &h.name),
            &format!("tasks/{}/stdout.log", t.id),
        );
        assert_eq!(said, "working\n", "{}", h.name);
    }
    assert_nothing_left(&home.path, "cc-1");
}

#[test]
fn a_host_killed_mid_stage_has_its_shards_finished_by_the_others() {
    let home = Scratch::new("hostkill");
    let child = spawn_run(
        &home,
        r#"
name: shards
fleet: { w: { count: 3, replace: 0 } }
stages:
  - name: work
    hosts: w
    shards: [1, 2, 3, 4, 5, 6, 7, 8, 9]
    tasks:
      - shell: echo "item {{ item }} on {{ host.name }}"; sleep 1
  - name: after
    hosts: w
    tasks:
      - shell: echo "after on {{ host.name }}"
"#,
        "hk-1",
    );
    wait_until(Duration::from_secs(20), "tasks to run", || {
        !running_tasks(&home.path).is_empty()
    });
    let (victim, _) = running_tasks(&home.path).remove(0);
    let compute = LocalCompute::new(home.path.join("instances"));
    assert!(compute.crash(&victim) > 0, "the victim had processes");
    let out = finish(child, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    let rec = run_record(&home.path, "hk-1");
    assert_eq!(rec.status, RunStatus::Succeeded);
    let lost: Vec<_> = rec.hosts.iter().filter(|h| h.lost.is_some()).collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].instance_id, victim);
    let work = &rec.stages[0];
    assert_eq!((work.shards_done, work.shards_total), (9, 9));
    let mut done: Vec<usize> = rec
        .tasks
        .iter()
        .filter(|t| t.stage == "work" && t.outcome == TaskOutcome::Succeeded)
        .filter_map(|t| t.item)
        .collect();
    done.sort_unstable();
    assert_eq!(
        done,
        (0..9).collect::<Vec<_>>(),
        "each item succeeded exactly once"
    );
    let interrupted = rec
        .tasks
        .iter()
        .find(|t| t.outcome == TaskOutcome::HostLost)
        .expect("the interrupted item is recorded");
    assert!(
        rec.tasks.iter().any(|t| t.item == interrupted.item
            && t.outcome == TaskOutcome::Succeeded
            && t.host != lost[0].name),
        "the interrupted item finished on another host"
    );
    // The stage after runs on the survivors only.
    let after: Vec<_> = rec.tasks.iter().filter(|t| t.stage == "after").collect();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|t| t.host != lost[0].name));
    assert_nothing_left(&home.path, "hk-1");
}

#[test]
fn a_worker_crashed_in_a_plain_stage_is_replaced_and_its_replacement_replays_setup() {
    let home = Scratch::new("replace");
    let child = spawn_run(
        &home,
        r#"
name: replace
fleet: { w: { count: 2 } }
stages:
  - name: setup
    hosts: w
    tasks:
      - shell: echo "set up by {{ host.name }} as {{ host.index }}/{{ host.count }}" > setup.txt
  - name: work
    hosts: w
    tasks:
      - shell: sleep 2; cat setup.txt
"#,
        "rp-1",
    );
    wait_until(Duration::from_secs(30), "a work task to run", || {
        running_tasks(&home.path).iter().any(|(_, t)| {
            t.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("s1-"))
        })
    });
    let (victim, _) = running_tasks(&home.path)
        .into_iter()
        .find(|(_, t)| {
            t.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("s1-"))
        })
        .expect("a work task");
    let compute = LocalCompute::new(home.path.join("instances"));
    assert!(compute.crash(&victim) > 0, "the victim had processes");
    let out = finish(child, Duration::from_secs(90));
    assert!(out.status.success(), "{}", text(&out));
    let rec = run_record(&home.path, "rp-1");
    assert_eq!(rec.status, RunStatus::Succeeded);
    let lost = rec
        .hosts
        .iter()
        .find(|h| h.lost.is_some())
        .expect("the victim is recorded lost");
    assert_eq!(lost.instance_id, victim);
    let new = rec
        .hosts
        .iter()
        .find(|h| h.replaces.is_some())
        .expect("a replacement is recorded");
    assert_eq!(new.name, format!("{}-r1", lost.name));
    assert_eq!(
        new.replaces.as_ref().map(|r| r.host.as_str()),
        Some(lost.name.as_str())
    );
    // It replayed setup on its own (fresh) disk, then did the lost host's work there.
    let index = &lost.name["w-".len()..];
    for (stage, want) in [
        ("setup", String::new()),
        ("work", format!("set up by {} as {index}/2\n", new.name)),
    ] {
        let t = rec
            .tasks
            .iter()
            .find(|t| t.host == new.name && t.stage == stage)
            .unwrap_or_else(|| panic!("{} ran no {stage} task", new.name));
        assert_eq!(t.outcome, TaskOutcome::Succeeded, "{t:?}");
        let said = gnu_tar_cat(
            &archive(&home.path, "rp-1", &new.name),
            &format!("tasks/{}/stdout.log", t.id),
        );
        assert_eq!(said, want, "{stage} on {}", new.name);
    }
    assert_eq!(
        rec.tasks
            .iter()
            .filter(|t| t.stage == "work" && t.outcome == TaskOutcome::Succeeded)
            .count(),
        2,
        "each host's unit of work succeeded once"
    );
    assert_nothing_left(&home.path, "rp-1");
}

#[test]
fn a_task_outlives_the_master_that_started_it_and_sweep_ends_it() {
    let home = Scratch::new("orphan");
    let child = spawn_run(
        &home,
        "name: orphan\nfleet: { w: { count: 1 } }\nstages:\n  - name: s\n    hosts: w\n    tasks:\n      - shell: sleep 1; echo survived\n",
        "or-1",
    );
    wait_until(Duration::from_secs(20), "the task to run", || {
        !running_tasks(&home.path).is_empty()
    });
    let (_, task_dir) = running_tasks(&home.path).remove(0);
    signal(&child, "-KILL");
    let _ = finish(child, Duration::from_secs(10));
    wait_until(
        Duration::from_secs(20),
        "the orphaned task to finish",
        || {
            std::fs::read_to_string(task_dir.join("status.json"))
                .is_ok_and(|s| s.contains(r#""state":"exited""#))
        },
    );
    let status = std::fs::read_to_string(task_dir.join("status.json")).expect("status");
    assert!(status.contains(r#""exit_code":0"#), "{status}");
    assert_eq!(
        std::fs::read_to_string(task_dir.join("stdout.log")).expect("stdout"),
        "survived\n"
    );
    // The master is gone: teardown from the tags alone, in a fresh process.
    let out = squall(&home.path, &["sweep", "--run", "or-1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("terminated 1 instance(s) of run or-1"));
    assert_nothing_left(&home.path, "or-1");
    let again = squall(&home.path, &["sweep", "--run", "or-1"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("terminated 0 instance(s)"),
        "sweep is idempotent"
    );
}

#[test]
fn the_workspace_has_the_required_top_level() {
    for entry in [
        "Cargo.toml",
        "launcher",
        "master",
        "worker",
        "playbooks",
        "infra",
        "tests",
        "README.md",
        "ARCHITECTURE.md",
    ] {
        assert!(workspace().join(entry).exists(), "{entry} is missing");
    }
}
