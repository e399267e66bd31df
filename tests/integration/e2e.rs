//! Whole runs end to end on the EC2 simulator (`squall_tests::ec2sim`): a launcher
//! invocation -> the master instance booted from its user-data -> workers launched and
//! booted -> the playbook over SSH -> logs and record in S3 -> every instance
//! terminated, the master last. Faults: a worker crashing or cut off mid-stage, the
//! master crashing, a failing task, duplicate events. Each test asserts on moto and S3
//! state, and ends with zero live instances of its run and no simulator process left.
//!
//! The product runs exactly as in production (the real launcher handler, the real
//! `squall` and `squall-worker` binaries fetched from the bucket by the user-data);
//! only tuning knobs an image could set are given to the instances' environment.

use crate::aws::runtime;
use serde_json::{Value, json};
use squall::backend::aws::ec2::{Ec2Compute, Ec2Settings};
use squall::backend::aws::s3::S3Store;
use squall::cloud::launch::{Launcher, Outcome, Settings};
use squall::record::{RunRecord, RunStatus, TaskOutcome};
use squall::seam::Store;
use squall::seam::compute::{Compute, InstanceState, tags};
use squall_tests::ec2sim::{self, LOGIN_USER, SimEvent, Simulator};
use squall_tests::moto::{self, Moto, Network, network};
use squall_tests::{Scratch, binary};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod faults;
mod fleet;
mod succession;

const BUCKET: &str = "squall-e2e";

/// Three workers: setup on each, then six shards spread over them, then a summary.
fn playbook(deadline: &str, shard_sleep: u32, fail_shard: Option<&str>) -> String {
    let fail = fail_shard.map_or(String::new(), |s| {
        format!("\n      - shell: test {{{{ item }}}} != {s} || {{ echo 'shard {s} is broken' >&2; exit 7; }}")
    });
    format!(
        r#"name: e2e
deadline: {deadline}
vars: {{ sleep: "{shard_sleep}" }}
fleet:
  workers: {{ count: 3, user: {LOGIN_USER}, instance_type: t3.micro }}
stages:
  - name: setup
    hosts: workers
    tasks:
      - copy: {{ src: files/job.sh, dest: job.sh, mode: "0755" }}
  - name: score
    hosts: workers
    retries: 2
    shards: [a, b, c, d, e, f]
    tasks:{fail}
      - shell: ./job.sh {{{{ item }}}} {{{{ vars.sleep }}}} {{{{ trigger.kind }}}}
  - name: summary
    hosts: workers
    tasks:
      - shell: ls scored-* 2>/dev/null | wc -l
"#
    )
}

const JOB: &str = "#!/bin/sh\n# job.sh ITEM SLEEP KIND\nsleep \"$2\"\necho \"scored $1 ($3) on $(hostname) as $(id -un)\" | tee \"scored-$1\"\n";

/// Fields drop in order: the simulator (and its instances) before moto.
struct E2e {
    sim: Simulator,
    _moto: Moto,
    net: Network,
    store: S3Store,
    compute: Ec2Compute,
    launcher: Launcher,
    _root: Scratch,
}

async fn setup(pb: &str, instance_env: &[(&'static str, String)]) -> E2e {
    let moto = Moto::start();
    let conf = moto.sdk_config().await;
    let store = moto.bucket(BUCKET).await;
    for (key, path) in [
        ("bin/squall", "squall"),
        ("bin/squall-worker", "squall-worker"),
    ] {
        let mut f = tokio::fs::File::open(binary(path)).await.expect("binary");
        store.put_stream(key, &mut f).await.expect("upload");
    }
    store
        .put("playbooks/e2e.yml", pb.as_bytes().to_vec())
        .await
        .expect("put");
    store
        .put("playbooks/files/job.sh", JOB.as_bytes().to_vec())
        .await
        .expect("put");
    let ec2 = squall::backend::aws::ec2_client(&conf);
    let net = network(&ec2).await;
    let compute = Ec2Compute::new(
        ec2,
        Ec2Settings {
            running_deadline: Duration::ZERO,
            ..Ec2Settings::default()
        },
    );
    let settings = Settings {
        uploads: vec![("inbox/".into(), "playbooks/e2e.yml".into())],
        schedules: BTreeMap::from([("squall-nightly".into(), "playbooks/e2e.yml".into())]),
        ..moto::launch_settings(BUCKET, &net)
    };
    let launcher = Launcher {
        control: None,
        settings,
        store: Arc::new(store.clone()),
        compute: Arc::new(compute.clone()),
    };
    let root = Scratch::new("ec2sim");
    let sim = Simulator::start_with_env(&moto, &root.path, instance_env);
    E2e {
        sim,
        _moto: moto,
        net,
        store,
        compute,
        launcher,
        _root: root,
    }
}

fn s3_event(key: &str) -> Value {
    moto::s3_put_event(
        BUCKET,
        key,
        "0123456789abcdef0123456789abcdef",
        "0A1B2C3D4E5F678901",
    )
}

fn now() -> u64 {
    squall::runner::now_ms() / 1000
}

impl E2e {
    async fn deliver(&self, event: &Value) -> Outcome {
        let mut h = squall_launcher::handle(&self.launcher, event, now())
            .await
            .expect("handled");
        h.runs.remove(0)
    }

    /// Delivers an S3 upload of `key`; returns the run it starts.
    async fn start(&self, key: &str) -> String {
        self.deliver(&s3_event(key)).await.run_id.expect("run id")
    }

    fn assert_succeeded(&self, rec: &RunRecord) {
        assert_eq!(
            rec.status,
            RunStatus::Succeeded,
            "{:?}\n{}",
            rec.reason,
            self.diagnostics()
        );
    }

    async fn instances(&self, run: &str) -> Vec<squall::seam::compute::Instance> {
        self.compute
            .list_by_tag(tags::RUN, run)
            .await
            .expect("list")
    }

    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.store.get(key).await.expect("get")
    }

    /// Waits (bounded) for the run's record.
    async fn record(&self, run: &str, limit: Duration) -> RunRecord {
        let started = Instant::now();
        loop {
            if let Some(body) = self.get(&format!("runs/{run}/run.json")).await {
                return serde_json::from_slice(&body).expect("a run record");
            }
            if let Some(e) = self.sim.error() {
                panic!("the simulator failed: {e}");
            }
            for id in self.sim.booted().keys() {
                let exit =
                    std::fs::read_to_string(self.sim.instance_dir(id).join("ctl/user-data.exit"));
                if exit.is_ok_and(|c| c.trim() != "0") {
                    panic!("the user-data of {id} failed\n{}", self.diagnostics());
                }
            }
            assert!(
                started.elapsed() < limit,
                "no run.json after {limit:?}; simulator: {:?}\n{}",
                self.sim.events(),
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits (bounded) until no instance of the run is alive in moto, then checks no
    /// process of a simulated instance is left.
    async fn assert_all_ended(&self, run: &str, limit: Duration) {
        let started = Instant::now();
        loop {
            let live: Vec<_> = self
                .instances(run)
                .await
                .into_iter()
                .filter(|i| i.state != InstanceState::Terminated)
                .collect();
            if live.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < limit,
                "instances of {run} still alive after {limit:?}: {live:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let started = Instant::now();
        while !self.sim.live_processes().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "processes of simulated instances left: {}\nevents: {:?}",
                self.sim
                    .live_processes()
                    .iter()
                    .map(|p| {
                        let stat =
                            std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                        let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                        let ns =
                            std::fs::read_link(format!("/proc/{p}/ns/pid")).unwrap_or_default();
                        format!(
                            "\n  {stat:.60} | {} | {}",
                            String::from_utf8_lossy(&cmd).replace('\0', " "),
                            ns.display()
                        )
                    })
                    .collect::<String>(),
                self.sim.events()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the instances logged, for failure messages.
    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (id, (ip, group)) in self.sim.booted() {
            let dir = self.sim.instance_dir(&id);
            for f in [
                "var-log/cloud-init-output.log",
                "var-log/squall-master.log",
                "var-lib/squall/master.log",
                "sandbox.log",
                "ctl/boot.env",
                "ctl/sandbox.command",
            ] {
                if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    out.push_str(&format!(
                        "--- {id} {ip} {group} {f}\n{}\n",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ));
                }
            }
        }
        out
    }

    async fn archive(&self, run: &str, host: &str) -> Vec<(String, String)> {
        let body = self
            .get(&format!("runs/{run}/logs/{host}.tar.gz"))
            .await
            .unwrap_or_else(|| panic!("no archive for {host}"));
        members(&body)
    }

    /// The master's id and the run's worker ids (any state).
    async fn fleet(&self, run: &str) -> (String, Vec<String>) {
        let all = self.instances(run).await;
        let masters: Vec<_> = all
            .iter()
            .filter(|i| i.tag(tags::ROLE) == Some("master"))
            .collect();
        assert_eq!(masters.len(), 1, "exactly one master ever: {all:?}");
        assert!(
            all.iter()
                .all(|i| i.tag(tags::STACK) == Some(moto::TEST_STACK)),
            "every instance, workers too, is tagged with its stack: {all:?}"
        );
        let workers = all
            .iter()
            .filter(|i| i.tag(tags::ROLE) == Some("worker"))
            .map(|i| i.id.clone())
            .collect();
        (masters[0].id.clone(), workers)
    }

    /// Waits (bounded) until the run has `n` booted workers; returns their ids.
    async fn booted_workers(&self, run: &str, n: usize, limit: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let booted = self.sim.booted();
            let ids: Vec<String> = self
                .instances(run)
                .await
                .into_iter()
                .filter(|i| i.tag(tags::ROLE) == Some("worker") && booted.contains_key(&i.id))
                .map(|i| i.id)
                .collect();
            if ids.len() >= n {
                return ids;
            }
            assert!(
                started.elapsed() < limit,
                "{n} workers of {run} not booted after {limit:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits (bounded) until `n` workers' logs were snapshotted: the stages are going.
    async fn snapshots(&self, run: &str, n: usize) {
        let started = Instant::now();
        loop {
            let keys = self
                .store
                .list(&format!("runs/{run}/logs/snapshots/"))
                .await
                .expect("list");
            if keys.len() >= n {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no snapshots of {n} workers: {keys:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits (bounded) until the worker `id` runs a task of the `score` stage (stage 1)
    /// of `run`, as its agent's status file there says; returns the task's item.
    async fn running_item(&self, run: &str, id: &str, limit: Duration) -> usize {
        let tasks = self
            .sim
            .instance_dir(id)
            .join(format!("home/{LOGIN_USER}/.squall/runs/{run}/{id}/tasks"));
        let started = Instant::now();
        loop {
            let running = std::fs::read_dir(&tasks)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("status.json"))
                        .is_ok_and(|s| s.contains(r#""state":"running""#))
                })
                .find_map(|t| {
                    // s1-u<ITEM>-t<TASK>-a<TRY>
                    let name = t.file_name().to_string_lossy().into_owned();
                    let unit = name.strip_prefix("s1-u")?.split('-').next()?.to_owned();
                    unit.parse::<usize>().ok()
                });
            if let Some(item) = running {
                return item;
            }
            assert!(
                started.elapsed() < limit,
                "{id} ran no score item within {limit:?} (looked in {})\n{}",
                tasks.display(),
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The master's own log (kept in its instance folder), for ordering checks.
    fn master_log(&self, master: &str) -> String {
        std::fs::read_to_string(
            self.sim
                .instance_dir(master)
                .join("var-lib/squall/master.log"),
        )
        .unwrap_or_default()
    }
}

/// (path, content) of every member of a tar.gz, read with GNU tar (valid for it).
fn members(tgz: &[u8]) -> Vec<(String, String)> {
    let dir = Scratch::new("e2e-archive");
    let file = dir.path.join("a.tar.gz");
    std::fs::write(&file, tgz).expect("write");
    squall_tests::gnu_tar_list(&file)
        .into_iter()
        .filter(|m| !m.ends_with('/'))
        .map(|m| {
            let text = squall_tests::gnu_tar_cat(&file, &m);
            (m, text)
        })
        .collect()
}

/// The instance-environment knobs that keep fault tests short: snapshots every 3 s, a
/// lost connection given up after 10 s.
fn quick_faults() -> Vec<(&'static str, String)> {
    vec![
        ("SQUALL_SNAPSHOT_EVERY", "3s".into()),
        ("SQUALL_RECONNECT_DEADLINE", "10s".into()),
    ]
}

/// `pb` with `replace: 0`: lost workers are not replaced (today's behaviour before
/// replacements; the replacement cases are in `fleet`).
fn no_replacement(pb: &str) -> String {
    pb.replace("count: 3, ", "count: 3, replace: 0, ")
}

/// The items of the `score` stage, in order.
const ITEMS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// Checks a succeeded run: every shard item succeeded exactly once (in the record), and
/// its output is in the final archive of the worker that ran it, exactly once; plus the
/// master's log.
async fn assert_outputs(e: &E2e, run: &str, rec: &RunRecord) {
    let mut succeeded: Vec<usize> = rec
        .tasks
        .iter()
        .filter(|t| t.stage == "score" && t.outcome == TaskOutcome::Succeeded)
        .filter_map(|t| t.item)
        .collect();
    succeeded.sort_unstable();
    assert_eq!(
        succeeded,
        (0..ITEMS.len()).collect::<Vec<_>>(),
        "each item succeeded exactly once"
    );
    let mut scored = Vec::new();
    for h in rec.hosts.iter().filter(|h| h.archive.is_some()) {
        for (path, text) in e.archive(run, &h.name).await {
            if path.ends_with("stdout.log") && text.starts_with("scored ") {
                assert!(text.contains(&format!("as {LOGIN_USER}")), "{text}");
                scored.push(text.split_whitespace().nth(1).unwrap_or("").to_owned());
            }
        }
    }
    scored.sort();
    assert_eq!(scored, ITEMS, "every shard's output is archived, once");
    let master = e
        .get(&format!("runs/{run}/logs/master.tar.gz"))
        .await
        .expect("master log");
    assert!(
        members(&master)
            .iter()
            .any(|(p, t)| p.ends_with("master.log") && t.contains("run started"))
    );
}

#[test]
fn an_upload_runs_the_playbook_on_booted_instances_and_leaves_nothing_running() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        let e = setup(&playbook("5m", 1, None), &[]).await;
        let started = Instant::now();
        // The same S3 event delivered 5 times at once: one run, one master.
        let event = s3_event("inbox/batch-1.csv");
        // Deliveries that find the run being launched answer a retryable error (Lambda
        // would deliver them again); none launches a second master.
        let mut deliveries = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let (launcher, event) = (e.launcher.clone(), event.clone());
            deliveries
                .spawn(async move { squall_launcher::handle(&launcher, &event, now()).await });
        }
        let answers = deliveries.join_all().await;
        let mut outcomes = Vec::new();
        for a in answers {
            match a {
                Ok(mut h) => outcomes.push(h.runs.remove(0)),
                Err(err) => assert!(
                    err.retryable && err.message.contains("being launched"),
                    "{err}"
                ),
            }
        }
        let launched: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == "launched").collect();
        assert_eq!(launched.len(), 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| o.run_id == launched[0].run_id));
        // Redelivered once the launch is recorded: a duplicate.
        let again = e.deliver(&event).await;
        assert_eq!(
            (again.status.as_str(), &again.run_id),
            ("duplicate", &launched[0].run_id)
        );
        let run = launched[0].run_id.clone().expect("run id");

        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        assert_eq!(rec.trigger.get("kind"), Some(&Value::from("s3")));
        assert_eq!(
            rec.trigger.get("key"),
            Some(&Value::from("inbox/batch-1.csv"))
        );
        assert_eq!(rec.hosts.len(), 3);
        for h in &rec.hosts {
            assert!(
                h.address.starts_with(e.net.cidr.trim_end_matches("0/24")),
                "{h:?}"
            );
        }
        assert_outputs(&e, &run, &rec).await;
        let beat: squall::record::Heartbeat = serde_json::from_slice(
            &e.get(&format!("runs/{run}/status.json"))
                .await
                .expect("status.json"),
        )
        .expect("heartbeat");
        assert_eq!(beat.shards_done, 6);

        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        let (master, workers) = e.fleet(&run).await;
        assert_eq!(workers.len(), 3);
        let teardown = rec.teardown.clone().expect("teardown recorded");
        // Workers done with the last stage before the others were released early.
        let released = rec
            .hosts
            .iter()
            .filter(|h| h.released_at_ms.is_some())
            .count();
        assert_eq!(
            (teardown.terminated + released, teardown.error),
            (3, None),
            "the workers, not the master"
        );
        let log = e.master_log(&master);
        let recorded = log
            .find("run recorded")
            .expect("the master recorded the run");
        let ended = log
            .find("terminating this master instance")
            .expect("then ended itself");
        assert!(recorded < ended, "{log}");
        // The master's added latency: from the slowest worker being ready for SSH (its
        // user-data done: the run's keys installed, sshd reloaded) to the master having
        // bootstrapped every worker (connected, agent installed).
        let ssh_ready_ms = workers
            .iter()
            .map(|w| {
                let done = e.sim.instance_dir(w).join("ctl/user-data.exit");
                let at = std::fs::metadata(&done)
                    .and_then(|m| m.modified())
                    .expect("the user-data ran");
                at.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            })
            .max()
            .expect("workers");
        let bootstrapped_ms = rec
            .hosts
            .iter()
            .filter_map(|h| h.ready_at_ms)
            .max()
            .expect("bootstrapped hosts");
        eprintln!(
            "master latency beyond the slowest worker's SSH readiness: {} ms",
            bootstrapped_ms as i64 - ssh_ready_ms as i64
        );
        eprintln!(
            "e2e happy path (s3): {:.1}s",
            started.elapsed().as_secs_f64()
        );
    });
}

#[test]
fn a_nightly_schedule_runs_the_playbook_too() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        let e = setup(&playbook("5m", 0, None), &[]).await;
        let started = Instant::now();
        let tick = json!({"version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-23T02:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/squall-nightly"], "detail": {}});
        let out = e.deliver(&tick).await;
        assert_eq!(out.status, "launched", "{out:?}");
        let run = out.run_id.expect("run id");
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        assert_eq!(rec.trigger.get("kind"), Some(&Value::from("schedule")));
        assert_outputs(&e, &run, &rec).await;
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        eprintln!("e2e happy path (schedule): {:.1}s", started.elapsed().as_secs_f64());
    });
}

#[test]
fn a_failing_task_fails_the_run_with_its_reason_and_every_log_shipped() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        // The failing item echoes a secret the master reads from SSM Parameter Store.
        let pb = playbook("5m", 0, Some("d"))
            .replace(
                "name: e2e\n",
                "name: e2e\nsecrets: { TOKEN: \"ssm:/squall/secrets/e2e-token\" }\n",
            )
            .replace(
                "echo 'shard d is broken' >&2;",
                "echo \"shard d is broken, token={{ secrets.TOKEN }}\" >&2;",
            );
        let e = setup(&pb, &[]).await;
        const TOKEN: &str = "e2e-t0ken-from-ssm";
        {
            use squall::seam::control::Control;
            let ssm = squall::backend::aws::control::AwsControl::new(
                &e._moto.sdk_config().await,
                Default::default(),
            );
            ssm.put_secret("/squall/secrets/e2e-token", TOKEN)
                .await
                .expect("put parameter");
        }
        let started = Instant::now();
        let out = e.deliver(&s3_event("inbox/broken-shard.csv")).await;
        let run = out.run_id.expect("run id");
        let rec = e.record(&run, Duration::from_secs(240)).await;
        assert_eq!(rec.status, RunStatus::Failed, "{}", e.diagnostics());
        let reason = rec.reason.clone().unwrap_or_default();
        assert!(reason.contains("score"), "{reason}");
        let failed: Vec<_> = rec
            .tasks
            .iter()
            .filter(|t| t.outcome == TaskOutcome::Failed)
            .collect();
        assert_eq!(
            failed.len(),
            3,
            "shard d failed on its first try and both retries: {failed:?}"
        );
        assert!(failed.iter().all(|t| t.exit_code == Some(7)));
        // Every worker's logs are shipped, with the failure's stderr.
        let mut stderr = String::new();
        for h in &rec.hosts {
            assert!(h.archive.is_some(), "{h:?}");
            for (path, text) in e.archive(&run, &h.name).await {
                if path.ends_with("stderr.log") {
                    stderr.push_str(&text);
                }
            }
        }
        assert!(stderr.contains("shard d is broken, token=***"), "{stderr}");
        // The secret is nowhere in the bucket: records, status, report, journal, every
        // archive unpacked (the master's log with them).
        let mut leaks = Vec::new();
        let keys = e.store.list("").await.expect("list");
        for key in keys.iter().filter(|k| !k.starts_with("bin/")) {
            let body = e.get(key).await.unwrap_or_default();
            if String::from_utf8_lossy(&body).contains(TOKEN) {
                leaks.push(key.clone());
            }
            if key.ends_with(".tar.gz") {
                for (m, text) in members(&body) {
                    if text.contains(TOKEN) {
                        leaks.push(format!("{key}!{m}"));
                    }
                }
            }
        }
        assert_eq!(leaks, Vec::<String>::new(), "the secret's value was stored");
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        eprintln!("e2e failing task: {:.1}s", started.elapsed().as_secs_f64());
    });
}

#[test]
fn a_worker_crashing_mid_stage_hands_its_shards_over_and_its_snapshot_is_kept() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        // Items of 8 s: two rounds of the stage outlast the first snapshots.
        let e = setup(&no_replacement(&playbook("5m", 8, None)), &quick_faults()).await;
        let started = Instant::now();
        let run = e.start("inbox/crash.csv").await;
        let workers = e.booted_workers(&run, 3, Duration::from_secs(120)).await;
        // Once every worker's logs were snapshotted at least once, crash one while it
        // is known to run a shard item (its task's status on the instance says so).
        e.snapshots(&run, 3).await;
        let victim_id = workers[0].clone();
        let item = e
            .running_item(&run, &victim_id, Duration::from_secs(60))
            .await;
        e.sim.crash(&victim_id).await;
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        let lost: Vec<_> = rec.hosts.iter().filter(|h| h.lost.is_some()).collect();
        assert_eq!(lost.len(), 1, "{:?}", rec.hosts);
        assert_eq!(lost[0].instance_id, victim_id);
        // The item it ran was lost there and completed on another worker.
        let attempts: Vec<_> = rec
            .tasks
            .iter()
            .filter(|t| t.stage == "score" && t.item == Some(item))
            .collect();
        assert!(
            attempts
                .iter()
                .any(|t| t.host == lost[0].name && t.outcome == TaskOutcome::HostLost),
            "item {item} was lost with its host: {attempts:?}"
        );
        assert!(
            attempts
                .iter()
                .any(|t| t.host != lost[0].name && t.outcome == TaskOutcome::Succeeded),
            "item {item} completed elsewhere: {attempts:?}"
        );
        let snapshot = lost[0]
            .snapshot
            .clone()
            .expect("the lost worker's last snapshot is recorded");
        assert!(e.get(&snapshot.key).await.is_some(), "and kept in S3");
        assert_outputs(&e, &run, &rec).await;
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        eprintln!("e2e worker crash: {:.1}s", started.elapsed().as_secs_f64());
    });
}

#[test]
fn a_worker_cut_off_from_the_network_is_given_up_and_the_run_completes() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        let e = setup(&no_replacement(&playbook("5m", 10, None)), &quick_faults()).await;
        let started = Instant::now();
        let run = e.start("inbox/cut.csv").await;
        let workers = e.booted_workers(&run, 3, Duration::from_secs(120)).await;
        // Cut one off once the sharded stage is going (every worker snapshotted).
        e.snapshots(&run, 3).await;
        let cut_at_ms = squall::runner::now_ms();
        e.sim.cut_off(&workers[0]);
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        let lost = rec
            .hosts
            .iter()
            .find(|h| h.instance_id == workers[0])
            .and_then(|h| h.lost.clone())
            .expect("the cut-off worker is recorded as lost");
        let detected = lost.at_ms.saturating_sub(cut_at_ms);
        eprintln!("cut-off worker given up {detected} ms after the cut");
        // Keep-alives (3 x 5 s) and the reconnect deadline (10 s here) bound it.
        assert!(detected < 90_000, "{detected} ms");
        assert_outputs(&e, &run, &rec).await;
        e.assert_all_ended(&run, Duration::from_secs(60)).await;
        eprintln!("e2e network cut: {:.1}s", started.elapsed().as_secs_f64());
    });
}

#[test]
fn a_crashed_master_leaves_instances_that_end_by_their_deadline_and_a_sweep_records_it() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        // A 30 s deadline: the workers' dead-man's switches fire 30 s + 5 s + 15 s (and
        // a 5 s margin) after the master started the run.
        let e = setup(&playbook("30s", 20, None), &[]).await;
        let started = Instant::now();
        let run = e.start("inbox/orphans.csv").await;
        let workers = e.booted_workers(&run, 3, Duration::from_secs(120)).await;
        let (master, _) = e.fleet(&run).await;
        assert!(
            e.sim.live_processes().len() > 4,
            "the process census sees the instances' processes"
        );
        e.sim.crash(&master).await;
        // Nobody terminates the workers now but their own dead-man's switches.
        let limit = Duration::from_secs(120);
        e.assert_all_ended(&run, limit).await;
        let powered_off: Vec<String> = e
            .sim
            .events()
            .into_iter()
            .filter_map(|ev| match ev {
                SimEvent::PoweredOff { id, how } if how.starts_with("poweroff") => Some(id),
                _ => None,
            })
            .collect();
        for w in &workers {
            assert!(
                powered_off.contains(w),
                "{w} powered itself off: {:?}",
                e.sim.events()
            );
        }
        assert!(e.get(&format!("runs/{run}/run.json")).await.is_none());
        // The next invocation's sweep records the run.
        let handled = squall_launcher::handle(
            &e.launcher,
            &json!({"playbook": "playbooks/none.yml"}),
            now(),
        )
        .await
        .expect("handled");
        let sweep = handled.sweep.expect("a sweep");
        assert!(sweep.abandoned.contains(&run), "{sweep:?}");
        let rec = e.record(&run, Duration::from_secs(5)).await;
        assert_eq!(rec.status, RunStatus::Abandoned);
        assert_eq!(
            rec.playbook.file, "playbooks/e2e.yml",
            "what is known: the request"
        );
        assert_eq!(rec.trigger.get("kind"), Some(&Value::from("s3")));
        eprintln!("e2e master crash: {:.1}s", started.elapsed().as_secs_f64());
    });
}

#[test]
fn nothing_a_simulated_instance_does_reaches_the_host() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        let moto = Moto::start();
        let conf = moto.sdk_config().await;
        let ec2 = squall::backend::aws::ec2_client(&conf);
        let net = network(&ec2).await;
        let root = Scratch::new("ec2sim-safety");
        let sim = Simulator::start(&moto, &root.path);
        let compute = Ec2Compute::new(ec2.clone(), Ec2Settings::default());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        let marker = format!("squall-sim-escape-{}", std::process::id());
        let attempts = format!(
            r#"#!/bin/sh
echo inside >/opt/proof
for p in /etc/{marker} /usr/{marker} /var/tmp/{marker} /{marker}; do
  echo escape >"$p" 2>/dev/null && echo "wrote $p" >>/opt/proof
done
hostname escaped 2>/dev/null && echo "renamed the host" >>/opt/proof
echo 1 >/proc/sys/net/ipv4/ip_forward 2>/dev/null && echo "changed a sysctl" >>/opt/proof
date -s @0 >/dev/null 2>&1 && echo "set the clock" >>/opt/proof
nft add table inet {marker} 2>/dev/null && echo "changed the firewall" >>/opt/proof
mount -t tmpfs none /mnt 2>/dev/null && echo "mounted" >>/opt/proof
echo done >>/opt/proof
"#
        );
        let mut ids = BTreeMap::new();
        for (i, power) in [
            "poweroff",
            "shutdown -h now",
            "halt",
            "reboot",
            "systemctl poweroff",
            "/sbin/poweroff -f",
        ]
        .iter()
        .enumerate()
        {
            let group = format!("g{i}");
            let req = squall::seam::compute::LaunchRequest {
                run_id: "safety".into(),
                group: group.clone(),
                spec: squall::plan::FleetGroup {
                    count: 1,
                    min_count: None,
                    instance_type: None,
                    image: Some(net.image.clone()),
                    market: squall::plan::Market::OnDemand,
                    volume_gb: None,
                    user: None,
                    subnet: Some(net.subnet.clone()),
                    security_groups: None,
                    public_ip: false,
                    instance_profile: None,
                    replace: None,
                },
                tags: BTreeMap::from([
                    (tags::RUN.to_owned(), "safety".to_owned()),
                    (tags::ROLE.to_owned(), "worker".to_owned()),
                    (tags::GROUP.to_owned(), group.clone()),
                ]),
                user_data: format!("{attempts}{power}\n"),
                client_token: format!("safety-{i}"),
                instance_profile: None,
            };
            let launched = compute.launch(&req).await.expect("launch");
            ids.insert(launched[0].id.clone(), (*power).to_owned());
        }
        // Each instance powers itself off; the simulator terminates it in moto.
        let started = Instant::now();
        loop {
            let states = compute
                .describe(&ids.keys().cloned().collect::<Vec<_>>())
                .await
                .expect("describe");
            if states.iter().all(|i| i.state == InstanceState::Terminated) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{states:?} {:?}",
                sim.events()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for (id, power) in &ids {
            let proof =
                std::fs::read_to_string(sim.instance_dir(id).join("opt/proof")).expect("proof");
            assert_eq!(
                proof, "inside\ndone\n",
                "{id} ({power}) reached the host: {proof}"
            );
            let how = sim.events().into_iter().find_map(|ev| match ev {
                SimEvent::PoweredOff { id: i, how } if &i == id => Some(how),
                _ => None,
            });
            let expected = power.trim_start_matches("/sbin/");
            assert!(
                how.as_deref()
                    .is_some_and(|h| h.starts_with(expected.split(' ').next().unwrap_or(""))),
                "{id}: {how:?} for {power}"
            );
        }
        for p in [
            format!("/etc/{marker}"),
            format!("/usr/{marker}"),
            format!("/var/tmp/{marker}"),
            format!("/{marker}"),
        ] {
            assert!(
                !std::path::Path::new(&p).exists(),
                "{p} was written on the host"
            );
        }
        assert_eq!(
            std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname"),
            hostname
        );
        let tables = squall_tests::output_within(
            std::process::Command::new("/usr/sbin/nft").args(["list", "tables"]),
            Duration::from_secs(30),
        );
        assert!(!String::from_utf8_lossy(&tables.stdout).contains(&marker));
        assert!(
            sim.live_processes().is_empty(),
            "{:?}",
            sim.live_processes()
        );
    });
}

/// The `inbox.yml` example as the simulator runs it: its workers log in as the
/// simulator's user.
fn inbox_playbook() -> String {
    let text = std::fs::read_to_string(squall_tests::workspace().join("playbooks/inbox.yml"))
        .expect("playbooks/inbox.yml");
    let with_user = format!("    user: {LOGIN_USER}\n    instance_type: t3.micro\n");
    text.replace("    count: 2\n", &format!("    count: 2\n{with_user}"))
        .replace("    count: 1\n", &format!("    count: 1\n{with_user}"))
}

#[test]
fn a_manifest_upload_moves_its_inputs_and_outputs_through_s3_and_a_second_reuses_the_cache() {
    if !moto::available() || !ec2sim::available() {
        return;
    }
    runtime().block_on(async {
        let e = setup(&inbox_playbook(), &[]).await;
        let inputs = [
            ("data/a.txt", "one two three\n"),
            ("data/b b.txt", "four five\n"),
            ("data/c.txt", "six\nseven eight nine ten\n"),
        ];
        for (key, body) in inputs {
            e.store
                .put(key, body.as_bytes().to_vec())
                .await
                .expect("put");
        }
        let line = |key: &str| format!("s3://{BUCKET}/{key}\n");
        let manifest: String = inputs.iter().map(|(k, _)| line(k)).collect();
        e.store
            .put("inbox/m1.txt", manifest.clone().into_bytes())
            .await
            .expect("put");
        let run = e.start("inbox/m1.txt").await;
        let rec = e.record(&run, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        let count = rec
            .stages
            .iter()
            .find(|s| s.name == "count")
            .expect("count stage");
        assert_eq!((count.shards_done, count.shards_total), (3, 3));
        // Every output is in S3, byte for byte, and recorded with its digest.
        for (key, body) in inputs {
            let name = key.rsplit('/').next().expect("a name");
            let out = e
                .get(&format!("runs/{run}/files/counts/{name}/count.txt"))
                .await;
            let words = body.split_whitespace().count();
            assert_eq!(out, Some(format!("{words}\n").into_bytes()), "{name}");
        }
        let total = e.get(&format!("runs/{run}/files/total/total.txt")).await;
        assert_eq!(total, Some(b"10\n".to_vec()));
        for f in &rec.files {
            let body = e.get(&f.key).await.expect("a recorded file exists");
            assert_eq!(f.sha256, squall::digest::sha256_hex(&body), "{}", f.key);
        }
        e.assert_all_ended(&run, Duration::from_secs(60)).await;

        // One more line: only it runs; the total covers all four.
        e.store
            .put("data/d.txt", b"eleven twelve\n".to_vec())
            .await
            .expect("put");
        let manifest = format!("{manifest}{}", line("data/d.txt"));
        e.store
            .put("inbox/m2.txt", manifest.into_bytes())
            .await
            .expect("put");
        let run2 = e.start("inbox/m2.txt").await;
        assert_ne!(run2, run);
        let rec = e.record(&run2, Duration::from_secs(240)).await;
        e.assert_succeeded(&rec);
        let count = rec
            .stages
            .iter()
            .find(|s| s.name == "count")
            .expect("count stage");
        assert_eq!((count.shards_done, count.shards_total), (4, 4));
        assert_eq!(
            count.cached,
            [0, 1, 2],
            "the three known lines came from the cache"
        );
        let ran: std::collections::BTreeSet<usize> = rec
            .tasks
            .iter()
            .filter(|t| t.stage == "count")
            .filter_map(|t| t.item)
            .collect();
        assert_eq!(ran, [3].into(), "only the new line ran");
        let total = e.get(&format!("runs/{run2}/files/total/total.txt")).await;
        assert_eq!(total, Some(b"12\n".to_vec()));
        e.assert_all_ended(&run2, Duration::from_secs(60)).await;
    });
}
