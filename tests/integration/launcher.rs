//! The launcher's handler called directly, against moto (S3 + EC2), with AWS's sample
//! S3 put and scheduled-event payloads and a direct invocation: exactly one master per
//! trigger however often (and however concurrently) it is delivered, a master launched
//! with the right subnet, tags, user-data, IMDSv2 and shutdown behaviour, and a broken
//! playbook rejected with zero instances and a failed run record.
//!
//! The Lambda runtime around the handler and the master's life on EC2 are not tested
//! here.

mod failures;
mod watch;

use crate::aws::{network, runtime};
use serde_json::{Value, json};
use squall::backend::aws::ec2::{Ec2Compute, Ec2Settings};
use squall::backend::aws::s3::S3Store;
use squall::record::{RunRecord, RunStatus};
use squall::seam::Store;
use squall::seam::compute::{Compute, InstanceState, tags};
use squall_launcher::{LaunchError, Launcher, Outcome, Settings, Trigger, parse_event, run_id};
use squall_tests::moto::{self, Moto};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const BUCKET: &str = "squall-launcher-test";

fn s3_put_event(key: &str, etag: &str) -> Value {
    moto::s3_put_event(BUCKET, key, etag, "0A1B2C3D4E5F678901")
}

fn scheduled_event(time: &str) -> Value {
    // AWS's sample "cloudwatch-scheduled-event".
    json!({"version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
           "source": "aws.events", "account": "123456789012", "time": time, "region": "us-east-1",
           "resources": ["arn:aws:events:us-east-1:123456789012:rule/squall-nightly"], "detail": {}})
}

const GOOD: &str = "name: nightly\ndeadline: 2h\nvars: { model: m1 }\nfleet: { workers: { count: 2 } }\nstages:\n  - name: s\n    hosts: workers\n    tasks:\n      - shell: echo {{ vars.model }} {{ trigger.kind }}\n";
const BROKEN: &str = "name: nightly\nfleet: { workers: { count: 2 } }\nstages:\n  - name: s\n    hosts: wrokers\n    tasks:\n      - shell: echo hi\n";

struct Setup {
    launcher: Launcher,
    compute: Ec2Compute,
    store: S3Store,
}

async fn setup(moto: &Moto) -> Setup {
    let conf = moto.sdk_config().await;
    let store = moto.bucket(BUCKET).await;
    store
        .put("playbooks/nightly.yml", GOOD.as_bytes().to_vec())
        .await
        .expect("put");
    store
        .put("playbooks/broken.yml", BROKEN.as_bytes().to_vec())
        .await
        .expect("put");
    let ec2 = squall::backend::aws::ec2_client(&conf);
    let net = network(&ec2).await;
    let settings = Settings {
        uploads: vec![("inbox/".into(), "playbooks/nightly.yml".into())],
        schedules: BTreeMap::from([("squall-nightly".into(), "playbooks/nightly.yml".into())]),
        ..moto::launch_settings(BUCKET, &net)
    };
    let compute = Ec2Compute::new(
        ec2,
        Ec2Settings {
            subnet: Some(net.subnet),
            security_groups: vec![net.security_group],
            image: Some(net.image),
            instance_type: Some("t3.small".into()),
            running_deadline: Duration::from_secs(60),
        },
    );
    Setup {
        launcher: Launcher {
            control: None,
            settings,
            store: Arc::new(store.clone()),
            compute: Arc::new(compute.clone()),
        },
        compute,
        store,
    }
}

/// The launcher's answer for each trigger of an event (with its sweep).
async fn handle(l: &Launcher, event: &Value, now: u64) -> Result<Vec<Outcome>, LaunchError> {
    squall_launcher::handle(l, event, now).await.map(|h| h.runs)
}

/// Every instance a run ever had, in any state: a master launched and then terminated
/// still counts.
async fn masters(compute: &Ec2Compute, run: &str) -> Vec<squall::seam::compute::Instance> {
    compute.list_by_tag(tags::RUN, run).await.expect("list")
}

/// The instances of a run that are not terminated.
async fn live(compute: &Ec2Compute, run: &str) -> Vec<squall::seam::compute::Instance> {
    masters(compute, run)
        .await
        .into_iter()
        .filter(|i| i.state != InstanceState::Terminated)
        .collect()
}

#[test]
fn an_s3_upload_starts_exactly_one_master_however_often_it_is_delivered() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        let event = s3_put_event("inbox/batch+1.csv", "0123456789abcdef0123456789abcdef");
        let first = handle(&s.launcher, &event, 1_795_400_000)
            .await
            .expect("handled");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].status, "launched", "{first:?}");
        let run = first[0].run_id.clone().expect("a run id");

        // Delivered again, 4 times in a row and 5 times at once.
        for _ in 0..4 {
            let again = handle(&s.launcher, &event, 1_795_400_100)
                .await
                .expect("handled");
            assert_eq!(again[0].status, "duplicate");
            assert_eq!(again[0].run_id.as_deref(), Some(run.as_str()));
        }
        let concurrent: Vec<_> = (0..5)
            .map(|_| {
                let l = s.launcher.clone();
                let ev = event.clone();
                tokio::spawn(async move { handle(&l, &ev, 1_795_400_200).await })
            })
            .collect();
        for h in concurrent {
            let out = h.await.expect("joined").expect("handled");
            assert_eq!(out[0].status, "duplicate");
        }

        let found = masters(&s.compute, &run).await;
        assert_eq!(found.len(), 1, "exactly one master: {found:?}");

        // A new upload delivered 5 times at once, before any delivery is recorded: the
        // deliveries race for the claim, and exactly one launches.
        let event = s3_put_event("inbox/batch+2.csv", "fedcba9876543210fedcba9876543210");
        let racing: Vec<_> = (0..5)
            .map(|_| {
                let l = s.launcher.clone();
                let ev = event.clone();
                tokio::spawn(async move { handle(&l, &ev, 1_795_400_300).await })
            })
            .collect();
        let mut launched = Vec::new();
        for h in racing {
            match h.await.expect("joined") {
                Ok(out) if out[0].status == "launched" => launched.push(out[0].clone()),
                Ok(out) => assert_eq!(out[0].status, "duplicate", "{out:?}"),
                Err(e) => assert!(e.retryable && e.message.contains("being launched"), "{e}"),
            }
        }
        assert_eq!(
            launched.len(),
            1,
            "exactly one delivery launches: {launched:?}"
        );
        let second = launched[0].run_id.clone().expect("a run id");
        assert_ne!(second, run);
        let found2 = masters(&s.compute, &second).await;
        assert_eq!(found2.len(), 1, "exactly one master: {found2:?}");
        let master = &found[0];
        assert_eq!(master.tag(tags::ROLE), Some("master"));
        assert_eq!(
            master.tag(tags::STACK),
            Some(moto::TEST_STACK),
            "tagged with its stack, which alone may end it"
        );
        assert!(
            master
                .tag(tags::DEADLINE)
                .is_some_and(|d| d.parse::<u64>().is_ok_and(|d| d > 1_795_400_000 + 7200))
        );
        assert_eq!(first[0].master.as_deref(), Some(master.id.as_str()));

        // The launch as EC2 reports it.
        let ec2 = squall::backend::aws::ec2_client(&moto.sdk_config().await);
        let d = ec2
            .describe_instances()
            .instance_ids(&master.id)
            .send()
            .await
            .expect("describe");
        let inst = &d.reservations()[0].instances()[0];
        assert_eq!(inst.subnet_id(), Some(s.launcher.settings.subnet.as_str()));
        assert_eq!(
            inst.metadata_options()
                .and_then(|m| m.http_tokens())
                .map(|t| t.as_str()),
            Some("required")
        );
        let sd = ec2
            .describe_instance_attribute()
            .instance_id(&master.id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .send()
            .await
            .expect("attribute");
        assert_eq!(
            sd.instance_initiated_shutdown_behavior()
                .and_then(|v| v.value()),
            Some("terminate")
        );
        let ud = ec2
            .describe_instance_attribute()
            .instance_id(&master.id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .expect("attribute");
        let script = String::from_utf8(
            aws_smithy_types::base64::decode(
                ud.user_data().and_then(|v| v.value()).expect("user data"),
            )
            .expect("base64"),
        )
        .expect("utf-8");
        assert!(
            script.contains(&format!(
                "squall master --run \"s3://{BUCKET}/runs/{run}/\""
            )),
            "{script}"
        );
        assert!(
            script.contains("poweroff"),
            "the dead-man's switch is scheduled: {script}"
        );

        // What the run's prefix holds: the claim (with the trigger) and the playbook.
        let claim: Value = serde_json::from_slice(
            &s.store
                .get(&format!("runs/{run}/claim.json"))
                .await
                .expect("get")
                .expect("claimed"),
        )
        .expect("json");
        assert_eq!(
            claim["trigger"]["key"], "inbox/batch 1.csv",
            "the key is URL-decoded"
        );
        assert_eq!(claim["trigger"]["etag"], "0123456789abcdef0123456789abcdef");
        assert_eq!(
            s.store
                .get(&format!("runs/{run}/playbook.yml"))
                .await
                .expect("get")
                .as_deref(),
            Some(GOOD.as_bytes())
        );
    });
}

#[test]
fn a_schedule_and_a_direct_invocation_each_start_their_own_run() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        let tick = scheduled_event("2026-11-23T02:00:00Z");
        let a = handle(&s.launcher, &tick, 1_795_400_000).await.expect("handled");
        assert_eq!(a[0].status, "launched");
        let again = handle(&s.launcher, &tick, 1_795_400_001).await.expect("handled");
        assert_eq!(again[0].status, "duplicate", "the same firing twice is one run");
        let direct = json!({"playbook": "playbooks/nightly.yml", "vars": {"model": "m2"}, "request_id": "r-1"});
        let d = handle(&s.launcher, &direct, 1_795_400_002).await.expect("handled");
        assert_eq!(d[0].status, "launched");
        for out in [&a[0], &d[0]] {
            let run = out.run_id.as_deref().expect("run id");
            assert_eq!(masters(&s.compute, run).await.len(), 1);
            assert!(run.starts_with("nightly-"), "{run}");
        }
        // The next night is another run; its invocation's sweep ends last night's
        // masters, a day past their deadline.
        let next_night = handle(&s.launcher, &scheduled_event("2026-11-24T02:00:00Z"), 1_795_486_400).await.expect("handled");
        assert_eq!(next_night[0].status, "launched");
        assert_ne!(next_night[0].run_id, a[0].run_id);
        let run = next_night[0].run_id.as_deref().expect("run id");
        assert_eq!(masters(&s.compute, run).await.len(), 1);
        for out in [&a[0], &d[0]] {
            let run = out.run_id.as_deref().expect("run id");
            assert!(live(&s.compute, run).await.is_empty(), "swept");
            assert_eq!(masters(&s.compute, run).await.len(), 1, "one master, terminated");
        }
        let unrelated = s3_put_event("elsewhere/x.csv", "aa");
        let ignored = handle(&s.launcher, &unrelated, 1_795_400_003).await.expect("handled");
        assert_eq!(ignored[0].status, "ignored", "uploads outside the configured prefixes start nothing");
    });
}

#[test]
fn a_broken_playbook_launches_nothing_and_leaves_a_failed_run_record() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        let direct = json!({"playbook": "playbooks/broken.yml"});
        let out = handle(&s.launcher, &direct, 1_795_400_000)
            .await
            .expect("handled");
        assert_eq!(out[0].status, "rejected");
        let run = out[0].run_id.clone().expect("run id");
        assert!(masters(&s.compute, &run).await.is_empty(), "zero instances");
        assert!(
            s.compute
                .list_by_tag(tags::ROLE, "master")
                .await
                .expect("list")
                .is_empty()
        );
        let rec: RunRecord = serde_json::from_slice(
            &s.store
                .get(&format!("runs/{run}/run.json"))
                .await
                .expect("get")
                .expect("a record"),
        )
        .expect("a run record");
        assert_eq!(rec.status, RunStatus::Failed);
        let reason = rec.reason.unwrap_or_default();
        assert!(
            reason.contains("playbooks/broken.yml:5:12: unknown group `wrokers`"),
            "{reason}"
        );

        // Secrets the master could not read: from where squall runs, or outside the
        // stack's secrets prefix.
        for (source, want) in [
            (
                "env:TOKEN",
                "playbooks/secret-env.yml:2:19: secret `TOKEN` is read from `env:TOKEN` where squall runs",
            ),
            (
                "ssm:/elsewhere/token",
                "playbooks/secret-ssm.yml:2:19: secret `TOKEN` is `ssm:/elsewhere/token`, outside the stack's secrets prefix `/squall/secrets/`",
            ),
        ] {
            let pb = format!(
                "name: demo\nsecrets: {{ TOKEN: \"{source}\" }}\nfleet:\n  w: {{ count: 1 }}\nstages:\n  - name: s\n    hosts: w\n    tasks:\n      - shell: echo \"$T\"\n        environment: {{ T: \"{{{{ secrets.TOKEN }}}}\" }}\n"
            );
            let key = format!("playbooks/secret-{}.yml", &source[..3]);
            s.store.put(&key, pb.into_bytes()).await.expect("put");
            let out = handle(
                &s.launcher,
                &json!({ "playbook": key }),
                1_795_400_000,
            )
            .await
            .expect("handled");
            assert_eq!(out[0].status, "rejected", "{out:?}");
            let reason = out[0].reason.clone().unwrap_or_default();
            assert!(reason.contains(want), "{reason}");
            let run = out[0].run_id.clone().expect("run id");
            assert!(masters(&s.compute, &run).await.is_empty(), "zero instances");
        }

        let missing = json!({"playbook": "playbooks/nope.yml"});
        let out = handle(&s.launcher, &missing, 1_795_400_000)
            .await
            .expect("handled");
        assert_eq!(out[0].status, "rejected");
        assert!(
            out[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("not found"))
        );

        let e = handle(&s.launcher, &json!({"hello": 1}), 0)
            .await
            .expect_err("unrecognised");
        assert!(!e.retryable, "a bad event is not worth retrying");
    });
}

#[test]
fn run_ids_derive_from_the_trigger_alone() {
    let t = |etag: &str| {
        parse_event(&s3_put_event("inbox/a.csv", etag))
            .expect("parses")
            .remove(0)
    };
    assert_eq!(
        run_id("playbooks/nightly.yml", &t("e1")),
        run_id("playbooks/nightly.yml", &t("e1"))
    );
    assert_ne!(
        run_id("playbooks/nightly.yml", &t("e1")),
        run_id("playbooks/nightly.yml", &t("e2"))
    );
    let id = run_id("playbooks/Nightly Job.yml", &t("e1"));
    assert!(squall::record::runid::valid(&id), "{id}");
    assert!(id.starts_with("nightly-job-"), "{id}");
    let Trigger::S3 { key, .. } = parse_event(&s3_put_event("inbox/a%2Bb+c.csv", "e"))
        .expect("parses")
        .remove(0)
    else {
        panic!("an S3 trigger")
    };
    assert_eq!(key, "inbox/a+b c.csv");
}

#[test]
fn a_claim_whose_launcher_died_is_taken_over_but_a_fresh_one_is_not() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        let now = 1_795_400_000;
        let direct = |req: &str| json!({"playbook": "playbooks/nightly.yml", "request_id": req});
        // A launcher claimed each run and died before launching a master.
        for (req, age) in [
            ("stale", squall::cloud::launch::STALE_CLAIM_SECS + 1),
            ("fresh", 10),
        ] {
            let t = parse_event(&direct(req)).expect("parses").remove(0);
            let run = run_id("playbooks/nightly.yml", &t);
            let claim = json!({"run_id": run, "claimed_at": now - age});
            s.store
                .put(
                    &format!("runs/{run}/claim.json"),
                    claim.to_string().into_bytes(),
                )
                .await
                .expect("put");
        }
        // A fresh claim: its launcher may still be at work. The answer is a retryable
        // error (Lambda delivers again later), never a success that ends the retries.
        let fresh = handle(&s.launcher, &direct("fresh"), now)
            .await
            .expect_err("in progress");
        assert!(fresh.retryable, "{fresh}");
        assert!(fresh.message.contains("being launched"), "{fresh}");
        let t = parse_event(&direct("fresh")).expect("parses").remove(0);
        let run = run_id("playbooks/nightly.yml", &t);
        assert!(masters(&s.compute, &run).await.is_empty());

        let stale = handle(&s.launcher, &direct("stale"), now)
            .await
            .expect("handled");
        assert_eq!(stale[0].status, "launched", "{stale:?}");
        let run = stale[0].run_id.clone().expect("run id");
        assert_eq!(masters(&s.compute, &run).await.len(), 1);
        // Once launched, redeliveries are duplicates again, however old the claim.
        let again = handle(&s.launcher, &direct("stale"), now + 3600)
            .await
            .expect("handled");
        assert_eq!(again[0].status, "duplicate");
        assert_eq!(masters(&s.compute, &run).await.len(), 1);
    });
}

#[test]
fn a_missing_copy_source_is_rejected_before_anything_is_launched() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        let pb = GOOD.replace(
            "      - shell:",
            "      - copy: { src: files/model.bin, dest: model.bin }\n      - shell:",
        );
        s.store
            .put("playbooks/copying.yml", pb.into_bytes())
            .await
            .expect("put");
        let direct = json!({"playbook": "playbooks/copying.yml"});
        let out = handle(&s.launcher, &direct, 1_795_400_000)
            .await
            .expect("handled");
        assert_eq!(out[0].status, "rejected");
        let reason = out[0].reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&format!(
                "playbooks/copying.yml:9:22: `copy` source `files/model.bin` (s3://{BUCKET}/playbooks/files/model.bin) does not exist"
            )),
            "{reason}"
        );
        let run = out[0].run_id.clone().expect("run id");
        assert!(masters(&s.compute, &run).await.is_empty());

        s.store
            .put("playbooks/files/model.bin", b"weights".to_vec())
            .await
            .expect("put");
        let retry = json!({"playbook": "playbooks/copying.yml", "request_id": "2"});
        let out = handle(&s.launcher, &retry, 1_795_400_000)
            .await
            .expect("handled");
        assert_eq!(out[0].status, "launched", "{out:?}");
    });
}

const READS_UPLOAD: &str = "name: inbox\nfleet: { workers: { count: 1 } }\nstages:\n  - name: s\n    hosts: workers\n    shards: { lines: \"{{ trigger.url }}\" }\n    tasks:\n      - shell: echo {{ item | quote }}\n";

#[test]
fn a_playbook_reading_the_upload_runs_on_uploads_and_is_refused_without_one() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let s = setup(&moto).await;
        for key in ["playbooks/nightly.yml", "playbooks/inbox.yml"] {
            s.store.put(key, READS_UPLOAD.as_bytes().to_vec()).await.expect("put");
        }
        // A schedule and a direct invocation have no upload: refused, nothing launched.
        for (event, kind) in [
            (scheduled_event("2026-11-25T02:00:00Z"), "schedule"),
            (json!({"playbook": "playbooks/inbox.yml"}), "direct"),
        ] {
            let out = handle(&s.launcher, &event, 1_795_400_000).await.expect("handled");
            assert_eq!(out[0].status, "rejected", "{out:?}");
            let reason = out[0].reason.clone().unwrap_or_default();
            assert!(
                reason.contains("playbooks/") && reason.contains(&format!("`trigger.url` is not set for a {kind} trigger")),
                "{reason}"
            );
            let run = out[0].run_id.clone().expect("run id");
            assert!(masters(&s.compute, &run).await.is_empty());
        }
        // An upload whose object is gone by the time the launcher looks: refused, at
        // the listing's line and column.
        let gone = s3_put_event("inbox/gone.txt", "cc");
        let out = handle(&s.launcher, &gone, 1_795_400_000).await.expect("handled");
        assert_eq!(out[0].status, "rejected", "{out:?}");
        let reason = out[0].reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&format!("playbooks/nightly.yml:6:22: `lines` manifest `{{{{ trigger.url }}}}` (s3://{BUCKET}/inbox/gone.txt) does not exist")),
            "{reason}"
        );
        // The upload itself: launched, with `trigger.url` in the request.
        s.store.put("inbox/list.txt", b"one\ntwo\n".to_vec()).await.expect("put");
        let out = handle(&s.launcher, &s3_put_event("inbox/list.txt", "dd"), 1_795_400_000)
            .await
            .expect("handled");
        assert_eq!(out[0].status, "launched", "{out:?}");
        let run = out[0].run_id.clone().expect("run id");
        assert_eq!(masters(&s.compute, &run).await.len(), 1);
        let request: Value = serde_json::from_slice(
            &s.store.get(&format!("runs/{run}/request.json")).await.expect("get").expect("the request"),
        )
        .expect("json");
        assert_eq!(request["trigger"]["url"], format!("s3://{BUCKET}/inbox/list.txt"));
    });
}
