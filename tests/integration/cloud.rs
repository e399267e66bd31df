//! The master's life on EC2 (`squall master`), `squall launch` and `squall sweep`, as
//! real `squall` processes against moto (S3 + EC2) and a test IMDS on 127.0.0.1.
//!
//! moto's instances do not boot, so the workers here never answer SSH: these tests pin
//! everything around the run (request and playbook from the bucket, worker user-data
//! with the run's keys, heartbeats, the record, the master's log, teardown of workers by
//! tag, the master terminating itself). Whole runs on booted instances are the EC2
//! simulator's tests.

use crate::aws::{Network, network, runtime};
use serde_json::Value;
use squall::backend::aws::ec2::{Ec2Compute, Ec2Settings};
use squall::backend::aws::s3::S3Store;
use squall::cloud::launch::{Launcher, Settings, Trigger};
use squall::plan::{FleetGroup, Market};
use squall::record::{Heartbeat, RunRecord, RunStatus};
use squall::seam::Store;
use squall::seam::compute::{Compute, InstanceState, LaunchRequest, tags};
use squall_tests::imds::Imds;
use squall_tests::moto::{self, Moto};
use squall_tests::{Scratch, binary, text};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const BUCKET: &str = "squall-cloud-test";

/// `replace: 0`: these workers never answer, and the tests are about the master's
/// cloud lifecycle, not replacements (those are in `e2e::fleet`).
const PLAYBOOK: &str = "name: work\ndeadline: 20m\nvars: { size: small }\nfleet:\n  workers: { count: 2, user: worker, replace: 0 }\nstages:\n  - name: prepare\n    hosts: workers\n    tasks:\n      - copy: { src: files/job.sh, dest: job.sh, mode: \"0755\" }\n      - shell: ./job.sh {{ vars.size }}\n";
const JOB: &str = "#!/bin/sh\necho working on \"$1\"\n";

struct Cloud {
    moto: Moto,
    net: Network,
    store: S3Store,
    compute: Ec2Compute,
}

async fn cloud() -> Cloud {
    let moto = Moto::start();
    let conf = moto.sdk_config().await;
    let store = moto.bucket(BUCKET).await;
    let ec2 = squall::backend::aws::ec2_client(&conf);
    let net = network(&ec2).await;
    let compute = Ec2Compute::new(
        ec2,
        Ec2Settings {
            running_deadline: Duration::from_secs(30),
            ..Ec2Settings::default()
        },
    );
    Cloud {
        moto,
        net,
        store,
        compute,
    }
}

impl Cloud {
    /// Puts `request` as the run's request.json and runs its master, which must fail
    /// to start it and record that: returns the failed record's reason.
    async fn master_refusing(&self, run: &str, master: &str, request: Vec<u8>) -> String {
        self.store
            .put(&format!("runs/{run}/request.json"), request)
            .await
            .expect("put");
        let imds = Imds::start(master);
        let work = Scratch::new("master-refusing");
        let out = self.master(run, &work, &imds, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let rec: RunRecord = self.json(&format!("runs/{run}/run.json")).await;
        assert_eq!(rec.status, RunStatus::Failed);
        rec.reason.unwrap_or_default()
    }

    fn settings(&self) -> Settings {
        moto::launch_settings(BUCKET, &self.net)
    }

    /// Launches a run's master as the launcher does; returns (run id, master id).
    async fn launch(&self, vars: &[(&str, &str)]) -> (String, String) {
        self.store
            .put("playbooks/work.yml", PLAYBOOK.as_bytes().to_vec())
            .await
            .expect("put");
        self.store
            .put("playbooks/files/job.sh", JOB.as_bytes().to_vec())
            .await
            .expect("put");
        let launcher = Launcher {
            control: None,
            settings: self.settings(),
            store: Arc::new(self.store.clone()),
            compute: Arc::new(self.compute.clone()),
        };
        let trigger = Trigger::Direct {
            playbook: "playbooks/work.yml".into(),
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            request: "test".into(),
            no_cache: false,
        };
        let out = launcher
            .handle_trigger(&trigger, squall::runner::now_ms() / 1000)
            .await
            .expect("launched");
        assert_eq!(out.status, "launched", "{out:?}");
        (out.run_id.expect("run id"), out.master.expect("a master"))
    }

    fn squall(&self, args: &[&str], extra_env: &[(&str, String)]) -> std::process::Output {
        let mut cmd = Command::new(binary("squall"));
        cmd.args(args)
            .env_remove("SQUALL_HOME")
            .env("SQUALL_WORKER_BIN", binary("squall-worker"))
            .env("SQUALL_LOG", "info")
            .stdin(std::process::Stdio::null());
        for (k, v) in self.moto.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        squall_tests::output_within(&mut cmd, squall_tests::COMMAND_LIMIT)
    }

    /// Runs `squall master` for `run` on this machine as the instance `imds` answers for,
    /// with `work` as its work dir and `extra` arguments.
    fn master(
        &self,
        run: &str,
        work: &Scratch,
        imds: &Imds,
        extra: &[&str],
    ) -> std::process::Output {
        let url = format!("s3://{BUCKET}/runs/{run}/");
        let work_dir = work.path.to_string_lossy();
        let mut args = vec!["master", "--run", &url, "--work-dir", &work_dir];
        args.extend_from_slice(extra);
        self.squall(&args, &[imds.env()])
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> T {
        let body = self
            .store
            .get(key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key} is missing"));
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    async fn user_data(&self, id: &str) -> String {
        self.moto.user_data(id).await
    }
}

#[test]
fn a_master_whose_workers_never_answer_records_why_and_terminates_every_instance() {
    if !moto::available() {
        return;
    }
    runtime().block_on(async {
        let c = cloud().await;
        let (run, master) = c.launch(&[("size", "large")]).await;
        let imds = Imds::start(&master);
        let work = Scratch::new("master");
        let out = c.master(
            &run,
            &work,
            &imds,
            &["--connect-deadline", "3s", "--heartbeat", "1s"],
        );
        let log = text(&out);
        assert_eq!(out.status.code(), Some(3), "the run failed: {log}");

        // The record says which worker could not be reached, and how.
        let rec: RunRecord = c.json(&format!("runs/{run}/run.json")).await;
        assert_eq!(rec.status, RunStatus::Failed, "{log}");
        let reason = rec.reason.clone().unwrap_or_default();
        assert!(reason.contains("worker@127.200."), "{reason}");
        assert_eq!(rec.hosts.len(), 2, "{rec:?}");
        assert_eq!(rec.trigger.get("kind"), Some(&Value::from("direct")));
        assert_eq!(
            rec.vars.get("size"),
            Some(&Value::from("large")),
            "the invocation's vars reach the run"
        );
        let beat: Heartbeat = c.json(&format!("runs/{run}/status.json")).await;
        assert_eq!(beat.phase, squall::record::Phase::Done);
        let archive = c
            .store
            .get(&format!("runs/{run}/logs/master.tar.gz"))
            .await
            .expect("get")
            .expect("the master's log is archived");
        assert!(archive.len() > 100);

        // Workers: launched with the run's keys in their user-data, then terminated.
        let all = c.compute.list_by_tag(tags::RUN, &run).await.expect("list");
        let workers: Vec<_> = all
            .iter()
            .filter(|i| i.tag(tags::ROLE) == Some("worker"))
            .collect();
        assert_eq!(workers.len(), 2, "{all:?}");
        for w in &workers {
            assert_eq!(w.state, InstanceState::Terminated, "{w:?}");
            assert!(w.tag(tags::DEADLINE).is_some());
        }
        let script = c.user_data(&workers[0].id).await;
        let host_public = std::fs::read_to_string(work.path.join("ssh/host_ed25519.pub"))
            .expect("the run's host key");
        let login_public =
            std::fs::read_to_string(work.path.join("ssh/id_ed25519.pub")).expect("login key");
        assert!(script.contains(host_public.trim()), "{script}");
        assert!(script.contains("BEGIN OPENSSH PRIVATE KEY"), "{script}");
        assert!(script.contains(login_public.trim()), "{script}");
        assert!(script.contains("getent passwd 'worker'"), "{script}");
        assert!(
            script.contains("poweroff"),
            "the dead-man's switch: {script}"
        );
        let known =
            std::fs::read_to_string(work.path.join("ssh/known_hosts")).expect("known_hosts");
        assert!(known.starts_with("* ssh-ed25519 "), "{known}");
        assert!(
            work.path.join("playbook/files/job.sh").is_file(),
            "copy sources are fetched from the playbook's folder"
        );

        // The master terminated itself, last.
        let me = c
            .compute
            .describe(std::slice::from_ref(&master))
            .await
            .expect("describe");
        assert_eq!(me[0].state, InstanceState::Terminated, "{log}");
        let master_log = std::fs::read_to_string(work.path.join("master.log")).expect("log");
        let record_at = master_log.find("run recorded").expect("recorded");
        let terminate_at = master_log
            .find("terminating this master instance")
            .expect("terminated itself");
        assert!(record_at < terminate_at, "{master_log}");
    });
}

#[test]
fn a_master_without_its_run_request_records_a_failure_and_terminates_itself() {
    if !moto::available() {
        return;
    }
    runtime().block_on(async {
        let c = cloud().await;
        let (run, master) = c.launch(&[]).await;
        let reason = c
            .master_refusing(&run, &master, b"{ not json".to_vec())
            .await;
        assert!(
            reason.contains("request.json is not a valid run request"),
            "{reason}"
        );
        let me = c.compute.describe(&[master]).await.expect("describe");
        assert_eq!(me[0].state, InstanceState::Terminated);
        assert!(
            c.compute
                .list_by_tag(tags::ROLE, "worker")
                .await
                .expect("list")
                .is_empty(),
            "no worker was launched"
        );

        // An instance that is not this run's master never terminates itself: a real
        // instance in moto, tagged as another run's master, runs `squall master` for
        // this run (it fails to start, as above) and is still running afterwards.
        let stranger = c
            .compute
            .launch(&LaunchRequest {
                run_id: "someone-else".into(),
                group: "master".into(),
                spec: FleetGroup {
                    count: 1,
                    min_count: None,
                    instance_type: None,
                    image: Some(c.net.image.clone()),
                    market: Market::OnDemand,
                    volume_gb: None,
                    user: None,
                    subnet: Some(c.net.subnet.clone()),
                    security_groups: None,
                    public_ip: false,
                    instance_profile: None,
                    replace: None,
                },
                tags: BTreeMap::from([
                    (tags::RUN.to_owned(), "someone-else".to_owned()),
                    (tags::ROLE.to_owned(), "master".to_owned()),
                ]),
                user_data: String::new(),
                client_token: "someone-else-master".into(),
                instance_profile: None,
            })
            .await
            .expect("launch")
            .remove(0);
        let other = Imds::start(&stranger.id);
        let work = Scratch::new("master-other");
        let out = c.master(&run, &work, &other, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let log = std::fs::read_to_string(work.path.join("master.log")).unwrap_or_default();
        assert!(log.contains("not terminating"), "{}", text(&out));
        let after = c
            .compute
            .describe(std::slice::from_ref(&stranger.id))
            .await
            .expect("describe");
        assert_eq!(after[0].state, InstanceState::Running, "{after:?}");
    });
}

#[test]
fn squall_launch_uploads_the_playbook_and_starts_one_master() {
    if !moto::available() {
        return;
    }
    runtime().block_on(async {
        let c = cloud().await;
        let dir = Scratch::new("launch");
        let pb = dir.file("work.yml", PLAYBOOK);
        dir.file("files/job.sh", JOB);
        let s = c.settings();
        let out = c.squall(
            &[
                "launch",
                &pb.to_string_lossy(),
                "--var",
                "size=huge",
                "--bucket",
                BUCKET,
                "--subnet",
                &s.subnet,
                "--security-groups",
                &s.security_groups[0],
                "--image",
                &s.image,
                "--upload-binaries",
            ],
            &[],
        );
        let log = text(&out);
        assert!(out.status.success(), "{log}");
        let run = log
            .lines()
            .find_map(|l| l.strip_prefix("run "))
            .and_then(|l| l.split_whitespace().next())
            .expect("the run id is printed")
            .to_owned();
        assert!(log.contains(&format!("run {run} launched")), "{log}");
        let request: squall::record::RunRequest = c.json(&format!("runs/{run}/request.json")).await;
        // Stored by content: `playbooks/launched/DIGEST/work.yml` and its files beside it.
        let stored = request
            .playbook
            .strip_suffix("work.yml")
            .expect("the playbook's key ends in its file name")
            .to_owned();
        assert!(
            stored.starts_with("playbooks/launched/")
                && stored.len() > "playbooks/launched/".len() + 8,
            "{stored}"
        );
        for key in [
            format!("{stored}work.yml"),
            format!("{stored}files/job.sh"),
            "bin/squall".to_owned(),
            "bin/squall-worker".to_owned(),
        ] {
            assert!(
                c.store.get(&key).await.expect("get").is_some(),
                "{key} was uploaded"
            );
        }
        assert!(
            c.store
                .get("playbooks/work.yml")
                .await
                .expect("get")
                .is_none(),
            "nothing is written where schedules and uploads name playbooks"
        );
        assert_eq!(request.vars.get("size").map(String::as_str), Some("huge"));
        assert_eq!(request.subnet, s.subnet);
        let masters: Vec<_> = c
            .compute
            .list_by_tag(tags::RUN, &run)
            .await
            .expect("list")
            .into_iter()
            .filter(|i| i.tag(tags::ROLE) == Some("master"))
            .collect();
        assert_eq!(masters.len(), 1, "{masters:?}");
        let script = c.user_data(&masters[0].id).await;
        assert!(script.contains(&format!(
            "squall master --run \"s3://{BUCKET}/runs/{run}/\""
        )));

        // Another project's `work.yml` (other content, same name) lands elsewhere: the
        // first run's playbook is untouched.
        let other = Scratch::new("launch-other");
        let pb2 = other.file(
            "work.yml",
            &PLAYBOOK.replace("deadline: 20m", "deadline: 25m"),
        );
        other.file("files/job.sh", JOB);
        let out = c.squall(
            &[
                "launch",
                &pb2.to_string_lossy(),
                "--bucket",
                BUCKET,
                "--subnet",
                &s.subnet,
                "--security-groups",
                &s.security_groups[0],
                "--image",
                &s.image,
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out));
        let first = c
            .store
            .get(&request.playbook)
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(first, std::fs::read(&pb).expect("read"), "not overwritten");
        assert_eq!(
            c.compute
                .list_by_tag(tags::ROLE, "master")
                .await
                .expect("list")
                .len(),
            2
        );

        // A copy source with no literal folder before its template would upload the
        // whole playbook folder: refused, nothing launched. One whose template only
        // names a var is rendered first, and uploads just what it names.
        let greedy = dir.file(
            "greedy.yml",
            &PLAYBOOK
                .replace("name: work", "name: greedy")
                .replace("src: files/job.sh", "src: \"./{{ host.name }}.sh\""),
        );
        let args = |pb: &std::path::Path| -> Vec<String> {
            vec![
                "launch".into(),
                pb.to_string_lossy().into_owned(),
                "--var".into(),
                "size=files".into(),
                "--bucket".into(),
                BUCKET.into(),
                "--subnet".into(),
                s.subnet.clone(),
                "--security-groups".into(),
                s.security_groups[0].clone(),
                "--image".into(),
                s.image.clone(),
            ]
        };
        let argv = args(&greedy);
        let out = c.squall(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("greedy.yml:10:")
                && text(&out).contains("has no literal folder before its template"),
            "{}",
            text(&out)
        );
        let rendered = dir.file(
            "rendered.yml",
            &PLAYBOOK
                .replace("name: work", "name: rendered")
                .replace("src: files/job.sh", "src: \"{{ vars.size }}/job.sh\""),
        );
        let argv = args(&rendered);
        let out = c.squall(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert!(out.status.success(), "{}", text(&out));
        // A master with a stack's role and no stack tag could launch and end nothing.
        let mut argv = args(&rendered);
        argv.extend(["--master-profile".to_owned(), "squall-master".to_owned()]);
        let out = c.squall(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("give --stack STACK_NAME"),
            "{}",
            text(&out)
        );

        // A broken playbook launches nothing and says where it is broken.
        let broken = dir.file(
            "broken.yml",
            &PLAYBOOK.replace("hosts: workers", "hosts: wrokers"),
        );
        let out = c.squall(
            &[
                "launch",
                &broken.to_string_lossy(),
                "--bucket",
                BUCKET,
                "--subnet",
                &s.subnet,
                "--security-groups",
                &s.security_groups[0],
                "--image",
                &s.image,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("broken.yml:8:12"), "{}", text(&out));
        assert_eq!(
            c.compute
                .list_by_tag(tags::ROLE, "master")
                .await
                .expect("list")
                .len(),
            3,
            "no fourth master"
        );
    });
}

fn expired_group() -> FleetGroup {
    FleetGroup {
        count: 2,
        min_count: None,
        instance_type: None,
        image: None,
        market: Market::OnDemand,
        volume_gb: None,
        user: None,
        subnet: None,
        security_groups: None,
        public_ip: false,
        instance_profile: None,
        replace: None,
    }
}

/// Launches `count` instances of `run` with role `role` and the given deadline.
async fn start(c: &Cloud, run: &str, role: &str, deadline: u64) -> Vec<String> {
    let req = LaunchRequest {
        run_id: run.to_owned(),
        group: role.to_owned(),
        spec: FleetGroup {
            image: Some(c.net.image.clone()),
            subnet: Some(c.net.subnet.clone()),
            ..expired_group()
        },
        tags: BTreeMap::from([
            (tags::RUN.to_owned(), run.to_owned()),
            (tags::ROLE.to_owned(), role.to_owned()),
            (tags::GROUP.to_owned(), role.to_owned()),
            (tags::DEADLINE.to_owned(), deadline.to_string()),
        ]),
        user_data: String::new(),
        client_token: squall::seam::compute::client_token(run, role),
        instance_profile: None,
    };
    c.compute
        .launch(&req)
        .await
        .expect("launch")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

#[test]
fn a_sweep_terminates_what_is_past_its_deadline_and_records_abandoned_runs() {
    if !moto::available() {
        return;
    }
    runtime().block_on(async {
        let c = cloud().await;
        let now = squall::runner::now_ms() / 1000;
        // A launched run (its claim is in this bucket) whose master died.
        c.store
            .put(
                "runs/dead-run/claim.json",
                br#"{"run_id":"dead-run"}"#.to_vec(),
            )
            .await
            .expect("put");
        let dead = start(&c, "dead-run", "worker", now - 60).await;
        // Another stack's run (no claim in this bucket): ended, but not recorded here.
        let foreign = start(&c, "foreign-run", "worker", now - 60).await;
        let dead_master = start(&c, "dead-run", "master", now - 60).await;
        let live = start(&c, "live-run", "worker", now + 3600).await;
        // A finished run whose workers outlived it: terminated, its record kept.
        let finished = start(&c, "done-run", "worker", now - 5).await;
        let done = RunRecord::ended_before_start(
            "done-run",
            "p.yml",
            RunStatus::Succeeded,
            "ok".into(),
            1,
        );
        c.store
            .put(
                "runs/done-run/run.json",
                serde_json::to_vec(&done).expect("json"),
            )
            .await
            .expect("put");

        let out = c.squall(&["sweep", "--store", &format!("s3://{BUCKET}")], &[]);
        let log = text(&out);
        assert!(out.status.success(), "{log}");
        assert!(
            log.contains("terminated 8 instance(s) past their deadline"),
            "{log}"
        );
        let compute = &c.compute;
        let state = |ids: Vec<String>| async move {
            compute
                .describe(&ids)
                .await
                .expect("describe")
                .into_iter()
                .map(|i| i.state)
                .collect::<Vec<_>>()
        };
        for ids in [dead.clone(), dead_master, finished] {
            assert!(
                state(ids)
                    .await
                    .iter()
                    .all(|s| *s == InstanceState::Terminated),
                "{log}"
            );
        }
        assert!(
            state(live.clone())
                .await
                .iter()
                .all(|s| *s == InstanceState::Running),
            "instances within their deadline are left alone"
        );
        let rec: RunRecord = c.json("runs/dead-run/run.json").await;
        assert_eq!(rec.status, RunStatus::Abandoned);
        assert!(rec.reason.unwrap_or_default().contains(&dead[0]));
        assert!(
            state(foreign)
                .await
                .iter()
                .all(|s| *s == InstanceState::Terminated),
            "{log}"
        );
        assert!(
            c.store
                .get("runs/foreign-run/run.json")
                .await
                .expect("get")
                .is_none(),
            "another stack's run is not recorded in this bucket"
        );
        let kept: RunRecord = c.json("runs/done-run/run.json").await;
        assert_eq!(
            kept.status,
            RunStatus::Succeeded,
            "a finished run's record is kept"
        );
        let notes = c.store.list("runs/done-run/sweeps/").await.expect("list");
        assert_eq!(notes.len(), 1, "the sweep is noted in the run: {notes:?}");

        // Every launcher invocation sweeps too.
        let late = start(&c, "late-run", "worker", now - 1).await;
        let launcher = Launcher {
            control: None,
            settings: c.settings(),
            store: Arc::new(c.store.clone()),
            compute: Arc::new(c.compute.clone()),
        };
        let handled = squall_launcher::handle(
            &launcher,
            &serde_json::json!({"playbook": "playbooks/missing.yml"}),
            now,
        )
        .await
        .expect("handled");
        assert_eq!(handled.runs[0].status, "rejected");
        let swept = handled.sweep.expect("a sweep report");
        assert_eq!(swept.terminated.get("late-run"), Some(&late), "{swept:?}");
        assert!(
            state(late)
                .await
                .iter()
                .all(|s| *s == InstanceState::Terminated)
        );
        assert!(
            state(live)
                .await
                .iter()
                .all(|s| *s == InstanceState::Running)
        );
    });
}

#[test]
fn the_real_launcher_binary_answers_invocations_under_cargo_lambda_watch() {
    if !moto::available() || !squall_tests::lambda::available() {
        return;
    }
    runtime().block_on(async {
        let c = cloud().await;
        let s = c.settings();
        c.store
            .put("playbooks/work.yml", PLAYBOOK.as_bytes().to_vec())
            .await
            .expect("put");
        c.store
            .put("playbooks/files/job.sh", JOB.as_bytes().to_vec())
            .await
            .expect("put");
        let mut env: Vec<(&str, String)> = c.moto.env();
        env.extend([
            ("SQUALL_BUCKET", BUCKET.to_owned()),
            ("SQUALL_SUBNET", s.subnet.clone()),
            ("SQUALL_SECURITY_GROUPS", s.security_groups[0].clone()),
            ("SQUALL_IMAGE", s.image.clone()),
            ("SQUALL_UPLOADS", "inbox/=playbooks/work.yml".to_owned()),
        ]);
        let watch = squall_tests::lambda::LambdaWatch::start(&env);

        // AWS's sample S3 put event, delivered twice: one run, one master.
        let event = moto::s3_put_event(
            BUCKET,
            "inbox/a.csv",
            "0123456789abcdef0123456789abcdef",
            "0A1B2C3D4E5F678901",
        )
        .to_string();
        let (status, body) = watch.invoke("squall-launcher", &event);
        assert_eq!(
            status,
            200,
            "{body}\n{}",
            std::fs::read_to_string(&watch.log).unwrap_or_default()
        );
        let first: Value = serde_json::from_str(&body).expect("a JSON answer");
        assert_eq!(first["runs"][0]["status"], "launched", "{first}");
        let run = first["runs"][0]["run_id"]
            .as_str()
            .expect("run id")
            .to_owned();
        let (_, body) = watch.invoke("squall-launcher", &event);
        let again: Value = serde_json::from_str(&body).expect("a JSON answer");
        assert_eq!(again["runs"][0]["status"], "duplicate", "{again}");
        let masters = c.compute.list_by_tag(tags::RUN, &run).await.expect("list");
        assert_eq!(masters.len(), 1, "{masters:?}");

        // A bad event is answered (not an error Lambda would retry) with the reason.
        let (status, body) = watch.invoke("squall-launcher", r#"{"hello": 1}"#);
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("unrecognised event") && body.contains("\"retryable\":false"),
            "{body}"
        );

        // `squall launch --via-lambda` goes through the AWS SDK's Lambda client.
        let dir = Scratch::new("via-lambda");
        let pb = dir.file("work.yml", PLAYBOOK);
        dir.file("files/job.sh", JOB);
        let out = c.squall(
            &[
                "launch",
                &pb.to_string_lossy(),
                "--bucket",
                BUCKET,
                "--via-lambda",
                "squall-launcher",
            ],
            &[("AWS_ENDPOINT_URL_LAMBDA", watch.endpoint())],
        );
        let log = text(&out);
        assert!(out.status.success(), "{log}");
        let answer: Value = serde_json::from_str(&String::from_utf8_lossy(&out.stdout))
            .expect("the function's answer is printed");
        assert_eq!(answer["runs"][0]["status"], "launched", "{log}");
        let run = answer["runs"][0]["run_id"].as_str().expect("run id");
        assert_eq!(
            c.compute
                .list_by_tag(tags::RUN, run)
                .await
                .expect("list")
                .len(),
            1
        );
    });
}

#[test]
fn a_master_refuses_a_request_that_names_another_run() {
    if !moto::available() {
        return;
    }
    runtime().block_on(async {
        let c = cloud().await;
        let (run, master) = c.launch(&[]).await;
        // A request.json rewritten to carry another run id (with a line break a boot
        // script would run) reaches no worker.
        let mut request: Value = c.json(&format!("runs/{run}/request.json")).await;
        request["run_id"] = Value::from("other-run\ntouch /tmp/owned");
        let reason = c
            .master_refusing(&run, &master, request.to_string().into_bytes())
            .await;
        assert!(
            reason.contains("names run \"other-run\\ntouch /tmp/owned\", not this run"),
            "{reason}"
        );
        assert!(
            c.compute
                .list_by_tag(tags::ROLE, "worker")
                .await
                .expect("list")
                .is_empty(),
            "no worker was launched"
        );
    });
}
