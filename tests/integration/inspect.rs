//! `squall runs`, `status`, `logs`, `report` and the CloudWatch metrics, against the
//! local store and moto S3, over runs of every shape: succeeded, failed, deadline
//! exceeded, abandoned (recorded by a sweep) and stale (a heartbeat, no run.json).
//! The report is checked in a real headless browser (Debian's chromium).

use crate::aws::runtime;
use serde_json::Value;
use squall::backend::aws::s3::S3Store;
use squall::record::{Heartbeat, Phase, RunRecord, RunStatus};
use squall::seam::Store;
use squall_tests::moto::{self, Moto};
use squall_tests::{Scratch, binary, squall, text};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const FAILING: &str = "name: broken\nfleet: { w: { count: 2 } }\nstages:\n  - name: s\n    hosts: w\n    tasks:\n      - shell: echo working on $SQUALL_HOST; echo bad thing on $SQUALL_HOST >&2; test $SQUALL_HOST != w-0 || { sleep 0.5; exit 3; }\n";
const SLOW: &str = "name: slow\ndeadline: 2s\nfleet: { w: { count: 1 } }\nstages:\n  - name: s\n    hosts: w\n    tasks:\n      - shell: echo started; sleep 30\n";

/// The runs of every shape in a local store; returns (succeeded, failed, deadline,
/// abandoned, stale) run ids.
struct Runs {
    ok: String,
    failed: String,
    deadline: String,
    abandoned: String,
    stale: String,
}

fn run_id_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id: {}", text(out)))
        .to_owned()
}

fn make_runs(home: &Path, dir: &Scratch) -> Runs {
    let ok = squall(home, &["run", "playbooks/hello.yml", "--no-progress"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let failing = dir.file("broken.yml", FAILING);
    let failed = squall(home, &["run", &failing.to_string_lossy(), "--no-progress"]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed));
    let slow = dir.file("slow.yml", SLOW);
    let deadline = squall(home, &["run", &slow.to_string_lossy(), "--no-progress"]);
    assert_eq!(deadline.status.code(), Some(4), "{}", text(&deadline));
    let store = home.join("store/runs");
    // Abandoned: what a sweep records for a run whose master died.
    let abandoned = "nightly-00000000000000aa";
    let rec = RunRecord::ended_before_start(
        abandoned,
        "playbooks/nightly.yml",
        RunStatus::Abandoned,
        "the run's master stopped without recording the run".into(),
        squall::runner::now_ms() - 3_600_000,
    );
    std::fs::create_dir_all(store.join(abandoned)).expect("mkdir");
    std::fs::write(
        store.join(abandoned).join("run.json"),
        serde_json::to_vec(&rec).expect("json"),
    )
    .expect("write");
    // Stale: a heartbeat ten minutes old and no record.
    let stale = "nightly-00000000000000bb";
    let beat = Heartbeat {
        run_id: stale.into(),
        phase: Phase::Stages,
        stage: Some("score".into()),
        hosts_live: 2,
        hosts_total: 3,
        shards_done: 4,
        shards_total: 12,
        updated_at_ms: squall::runner::now_ms() - 600_000,
        started_at_ms: squall::runner::now_ms() - 900_000,
        playbook: "nightly".into(),
        stages: Vec::new(),
        hosts: vec![squall::record::HostBeat {
            name: "workers-0".into(),
            instance_id: "i-0abc".into(),
            state: "ready".into(),
            running: vec!["s1-u4-t0-a0".into()],
        }],
    };
    std::fs::create_dir_all(store.join(stale)).expect("mkdir");
    std::fs::write(
        store.join(stale).join("status.json"),
        serde_json::to_vec(&beat).expect("json"),
    )
    .expect("write");
    Runs {
        ok: run_id_of(&ok),
        failed: run_id_of(&failed),
        deadline: run_id_of(&deadline),
        abandoned: abandoned.into(),
        stale: stale.into(),
    }
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every command against one store (`--store SPEC`, or the local one under `home`).
fn check_commands(home: &Path, store: &[&str], env: &[(&'static str, String)], r: &Runs) {
    let run = |args: &[&str]| {
        let mut cmd = squall_tests::squall_command(home, args);
        cmd.args(store);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // `status --watch` and `logs --follow` end with the run; a regression that
        // makes them wait forever fails here, naming the command.
        squall_tests::output_within(&mut cmd, Duration::from_secs(60))
    };
    // `squall runs`: every shape, newest first, with its status.
    let table = stdout(&run(&["runs"]));
    for (id, status) in [
        (&r.ok, "succeeded"),
        (&r.failed, "failed"),
        (&r.deadline, "deadline_exceeded"),
        (&r.abandoned, "abandoned"),
        (&r.stale, "stale"),
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} missing:\n{table}"));
        assert!(line.contains(status), "{line}");
    }
    let hello = table
        .lines()
        .find(|l| l.starts_with(r.ok.as_str()))
        .unwrap_or("");
    assert!(
        hello.contains("hello") && hello.contains("manual"),
        "{hello}"
    );
    let json = stdout(&run(&["runs", "--json"]));
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 5, "{json}");
    let started: Vec<u64> = rows
        .iter()
        .map(|r| r["started_at_ms"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        started.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {started:?}"
    );
    let failed_row = rows
        .iter()
        .find(|row| row["run_id"] == r_str(&r.failed))
        .expect("failed row");
    assert_eq!(failed_row["hosts"], 2);
    let only_failed = stdout(&run(&["runs", "--status", "failed", "--json"]));
    assert_eq!(only_failed.lines().count(), 1, "{only_failed}");
    assert!(only_failed.contains(&r.failed));
    let recent = stdout(&run(&["runs", "--since", "30m", "--json"]));
    assert_eq!(
        recent.lines().count(),
        4,
        "the abandoned run started an hour ago: {recent}"
    );

    // `squall status`.
    let st = stdout(&run(&["status", &r.failed]));
    assert!(st.contains("failed") && st.contains("reason: task"), "{st}");
    assert!(
        st.contains("w-0") && st.contains("w-1") && st.contains("1 not succeeded"),
        "{st}"
    );
    let st = stdout(&run(&["status", &r.stale]));
    assert!(st.contains("WARNING: stale"), "{st}");
    assert!(st.contains("running s1-u4-t0-a0"), "{st}");
    assert!(st.contains("shards 4/12"), "{st}");
    let st = stdout(&run(&["status", &r.deadline, "--watch"]));
    assert!(
        st.contains("deadline_exceeded"),
        "--watch ends with the run: {st}"
    );
    assert_eq!(run(&["status", "no-such-run"]).status.code(), Some(2));

    // `squall logs`: straight from the archives, prefixed and filtered.
    let logs = stdout(&run(&["logs", &r.failed, "--grep", "bad thing on w"]));
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(
        lines.contains(&"w-0 s0-u0-t0-a0 stderr| bad thing on w-0"),
        "{logs}"
    );
    let one = stdout(&run(&[
        "logs", &r.failed, "--host", "w-1", "--task", "s0-u1",
    ]));
    assert!(
        one.contains("w-1 s0-u1-t0-a0 stdout| working on w-1"),
        "{one}"
    );
    assert!(!one.contains("w-0"), "{one}");
    let master = stdout(&run(&["logs", &r.ok, "--host", "master"]));
    assert!(master.contains("run started"), "{master}");
    let followed = stdout(&run(&["logs", &r.deadline, "--follow"]));
    assert!(followed.contains("stdout| started"), "{followed}");
    let out = Scratch::new("extract");
    let ex = stdout(&run(&[
        "logs",
        &r.failed,
        "--extract",
        &out.path.to_string_lossy(),
    ]));
    assert!(ex.contains("extracted 3 archive(s)"), "{ex}");
    let err = std::fs::read_to_string(out.path.join("w-0/tasks/s0-u0-t0-a0/stderr.log"))
        .expect("extracted");
    assert_eq!(err, "bad thing on w-0\n");

    // The report, for every run that ended with a record.
    let rep = stdout(&run(&["report", &r.failed]));
    assert!(rep.trim_end().ends_with("report.html"), "{rep}");
}

fn r_str(s: &str) -> Value {
    Value::from(s)
}

#[test]
fn every_command_reads_every_shape_of_run_from_the_local_store_and_from_s3() {
    let home = Scratch::new("inspect");
    let dir = Scratch::new("inspect-pb");
    let runs = make_runs(&home.path, &dir);
    check_commands(&home.path, &[], &[], &runs);

    // Each finished run left a report: one timeline row per host, one bar per task.
    for id in [&runs.ok, &runs.failed, &runs.deadline] {
        let rec = squall_tests::run_record(&home.path, id);
        let html =
            std::fs::read_to_string(home.path.join("store/runs").join(id).join("report.html"))
                .expect("report.html");
        assert_eq!(
            html.matches("class=\"host-row\"").count(),
            rec.hosts.len(),
            "{id}"
        );
        assert_eq!(
            html.matches("<rect class=\"bar ").count(),
            rec.tasks.len(),
            "{id}"
        );
        // Self-contained: nothing is fetched (the SVG namespace URI is a name, not a fetch).
        for fetch in [
            "src=",
            "href=\"http",
            "url(",
            "@import",
            "fetch(",
            "XMLHttpRequest",
        ] {
            assert!(!html.contains(fetch), "{id}: {fetch}");
        }
    }
    let failed = std::fs::read_to_string(
        home.path
            .join("store/runs")
            .join(&runs.failed)
            .join("report.html"),
    )
    .expect("report");
    assert!(
        failed.contains("bad thing on w-0"),
        "the failure's stderr tail"
    );
    assert!(
        failed.contains("href=\"logs/w-0.tar.gz\""),
        "links to the archives"
    );

    // The CloudWatch metrics of the failed run.
    let rec = squall_tests::run_record(&home.path, &runs.failed);
    let emf: Value = serde_json::from_str(&squall::inspect::report::emf(
        &rec,
        squall::runner::now_ms(),
    ))
    .expect("json");
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "squall");
    // w-0 fails (after w-1 has succeeded: deterministic).
    assert_eq!(emf["TasksFailed"], 1);
    assert_eq!(emf["RunSucceeded"], 0);
    assert_eq!(emf["Playbook"], "broken");

    // The same runs in a bucket.
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let conf = moto.sdk_config().await;
        let s3 = squall::backend::aws::s3_client(&conf);
        s3.create_bucket()
            .bucket("squall-runs")
            .send()
            .await
            .expect("bucket");
        let store = S3Store::new(s3, "squall-runs", "");
        upload_tree(&store, &home.path.join("store"), &home.path.join("store")).await;
    });
    check_commands(
        &home.path,
        &["--store", "s3://squall-runs"],
        &moto.env(),
        &runs,
    );
}

async fn upload_tree(store: &S3Store, root: &Path, dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            Box::pin(upload_tree(store, root, &path)).await;
        } else {
            let key = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            store
                .put(&key, std::fs::read(&path).expect("read"))
                .await
                .expect("put");
        }
    }
}

/// Debian's chromium, installed by scripts/install-test-deps.
fn chromium() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/bin/chromium");
    if bin.is_file() {
        return Some(bin);
    }
    squall_tests::skip("chromium is not installed (run scripts/install-test-deps)");
    None
}

fn headless(chrome: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(chrome);
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--metrics-recording-only",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(std::process::Stdio::null());
    cmd
}

#[test]
fn the_report_renders_in_a_headless_browser_with_a_row_per_host_and_a_bar_per_task() {
    let Some(chrome) = chromium() else { return };
    let home = Scratch::new("report");
    let dir = Scratch::new("report-pb");
    // Shards over several hosts, with a failure: bars of two colours.
    let pb = dir.file(
        "mixed.yml",
        "name: mixed\nfleet: { w: { count: 3 } }\nstages:\n  - name: prep\n    hosts: w\n    tasks:\n      - shell: sleep 0.2\n  - name: score\n    hosts: w\n    retries: 1\n    shards: [a, b, c, d, e]\n    tasks:\n      - shell: sleep 0.1; test {{ item }} != e\n",
    );
    let out = squall(&home.path, &["run", &pb.to_string_lossy(), "--no-progress"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let id = run_id_of(&out);
    let rec = squall_tests::run_record(&home.path, &id);
    let report = home.path.join("store/runs").join(&id).join("report.html");
    let url = format!("file://{}", report.display());
    let profile = Scratch::new("chromium-profile");

    let dom = squall_tests::output_within(
        headless(&chrome, &profile.path).args(["--dump-dom", &url]),
        Duration::from_secs(120),
    );
    assert!(dom.status.success(), "{}", text(&dom));
    let html = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        html.matches("class=\"host-row\"").count(),
        3,
        "one row per host"
    );
    assert_eq!(
        html.matches("<rect class=\"bar ").count(),
        rec.tasks.len(),
        "one bar per task"
    );
    assert!(html.matches("<rect class=\"bar failed").count() >= 1);
    let log = String::from_utf8_lossy(&dom.stderr);
    for line in log.lines() {
        assert!(
            !line.contains("CONSOLE") && !line.contains("Uncaught"),
            "a console message while rendering: {line}"
        );
    }

    // A screenshot, kept as a test artefact next to the binaries.
    let artefacts = binary("squall")
        .parent()
        .expect("target dir")
        .join("test-artefacts");
    std::fs::create_dir_all(&artefacts).expect("mkdir");
    let shot = artefacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let png = squall_tests::output_within(
        headless(&chrome, &profile.path)
            .arg(format!("--screenshot={}", shot.display()))
            .args(["--window-size=1100,700", &url]),
        Duration::from_secs(120),
    );
    assert!(png.status.success(), "{}", text(&png));
    let bytes = std::fs::read(&shot).expect("the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
        "{} bytes",
        bytes.len()
    );
    eprintln!("report screenshot: {}", shot.display());
}
