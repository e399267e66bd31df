//! The real `squall` binary driving real OpenSSH servers on loopback through a static
//! inventory: a sharded multi-stage run on five hosts, a task that survives its SSH
//! server being restarted mid-task, and each connection error (unreachable host,
//! refused key, host key mismatch, missing remote program) failing the run cleanly.
//!
//! Servers come from `squall_tests::sshd` (started and stopped by PID). The local backend
//! is tested in `local_run`; the engine's decisions in `engine`.

use squall::record::{RunStatus, TaskOutcome};
use squall_tests::sshd::{self, SshFleet, TEST_USER};
use squall_tests::{
    COMMAND_LIMIT, Scratch, archive, finish_within, gnu_tar_cat, gnu_tar_list, run_record, squall,
    squall_command, text, wait_until,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The test user's folder for one run on the hosts (all test hosts share one home).
fn run_dir_on_hosts(run: &str) -> PathBuf {
    Path::new("/home")
        .join(TEST_USER)
        .join(".squall/runs")
        .join(run)
}

/// Runs `squall run PLAYBOOK --inventory INV` to the end.
fn run_on(
    home: &Scratch,
    playbook: &Path,
    inventory: &str,
    run_id: &str,
    extra: &[&str],
) -> std::process::Output {
    let inv = home.file("inventory.yml", inventory);
    let mut args = vec![
        "run",
        playbook.to_str().expect("utf-8"),
        "--inventory",
        inv.to_str().expect("utf-8"),
        "--run-id",
        run_id,
    ];
    args.extend_from_slice(extra);
    squall(&home.path, &args)
}

#[test]
fn a_sharded_multi_stage_playbook_runs_over_ssh_on_five_hosts() {
    if !sshd::available() {
        return;
    }
    let fleet = SshFleet::start(5);
    let home = Scratch::new("ssh-inference");
    let playbook = squall_tests::workspace().join("playbooks/inference.yml");
    let inventory = fleet.inventory_yaml(&[("workers", 0..4), ("aggregator", 4..5)]);
    let run = format!("ssh-inf-{}", std::process::id());
    let out = run_on(&home, &playbook, &inventory, &run, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let rec = run_record(&home.path, &run);
    assert_eq!(rec.status, RunStatus::Succeeded);
    assert_eq!(rec.hosts.len(), 5);
    let score = rec
        .stages
        .iter()
        .find(|s| s.name == "score")
        .expect("score stage");
    assert_eq!((score.shards_done, score.shards_total), (12, 12));
    // Inputs went in and scores came back over SSH, byte for byte.
    let inputs = squall_tests::workspace().join("playbooks/files/inputs");
    assert_eq!(
        crate::data::run_files(&home.path, &run),
        crate::data::expected_outputs(&inputs, "resnet50")
    );
    crate::data::assert_files_recorded(&home.path, &rec);
    for (i, host) in rec.hosts.iter().enumerate() {
        assert_eq!(
            host.address,
            fleet.hosts[host.instance_id[1..].parse::<usize>().expect("hN")].address,
            "{i}"
        );
        // Each archive holds exactly its host's tasks, readable by GNU tar.
        let path = archive(&home.path, &run, &host.name);
        // (`copy` and `fetch` tasks do not run through the agent, so they have no
        // output files.)
        for t in rec.tasks.iter().filter(|t| {
            t.host == host.name
                && !["install", "copy", "keep", "gather"]
                    .iter()
                    .any(|p| t.task.starts_with(p))
        }) {
            let out = gnu_tar_cat(&path, &format!("tasks/{}/stdout.log", t.id));
            if let Some(name) = t.task.strip_prefix("score ") {
                let input = std::fs::read_to_string(
                    squall_tests::workspace()
                        .join("playbooks/files/inputs")
                        .join(name),
                )
                .expect("a shipped input");
                let rows = input.lines().count();
                assert!(
                    out.contains(&format!(
                        "scored {rows} rows of in/{name} into out/{name}.scores"
                    )),
                    "{out}"
                );
            }
        }
    }
    assert!(
        !run_dir_on_hosts(&run).exists(),
        "the run's folder is removed from the hosts"
    );
}

#[test]
fn a_task_survives_its_ssh_server_restarting_mid_task() {
    if !sshd::available() {
        return;
    }
    let mut fleet = SshFleet::start(2);
    let home = Scratch::new("ssh-restart");
    let run = format!("ssh-rs-{}", std::process::id());
    let pb = home.file(
        "pb.yml",
        "name: long\nfleet: { workers: { count: 2 } }\nstages:\n  - name: s\n    hosts: workers\n    tasks:\n      - shell: echo begin; sleep 4; echo end\n",
    );
    let inv = home.file("inventory.yml", &fleet.inventory_yaml(&[("workers", 0..2)]));
    let child = squall_command(
        &home.path,
        &[
            "run",
            pb.to_str().expect("utf-8"),
            "--inventory",
            inv.to_str().expect("utf-8"),
            "--run-id",
            &run,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting squall");
    let tasks = run_dir_on_hosts(&run).join("h0/tasks");
    wait_until(Duration::from_secs(30), "the task on h0 to run", || {
        std::fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| {
                std::fs::read_to_string(t.path().join("status.json"))
                    .is_ok_and(|s| s.contains(r#""state":"running""#))
            })
    });
    // Every connection to h0 dies with its server; the task must not.
    fleet.restart(0);
    let out = finish_within(child, COMMAND_LIMIT, "squall run");
    assert!(out.status.success(), "{}", text(&out));
    let rec = run_record(&home.path, &run);
    assert_eq!(rec.status, RunStatus::Succeeded);
    let on_h0: Vec<_> = rec.tasks.iter().filter(|t| t.host == "workers-0").collect();
    assert_eq!(on_h0.len(), 1, "re-attached, not re-run: {on_h0:?}");
    assert_eq!(on_h0[0].outcome, TaskOutcome::Succeeded);
    let said = gnu_tar_cat(
        &archive(&home.path, &run, "workers-0"),
        &format!("tasks/{}/stdout.log", on_h0[0].id),
    );
    assert_eq!(
        said, "begin\nend\n",
        "the whole output is in the host's archive"
    );
}

const TWO_HOSTS: &str = "name: two\nfleet: { workers: { count: 2 } }\nstages:\n  - name: s\n    hosts: workers\n    tasks:\n      - shell: echo hello from {{ host.name }}\n";

/// Runs TWO_HOSTS where host h1 is broken by `inventory` and checks the run failed
/// cleanly: the reason names h1's user and address and says `why`, h0's logs were
/// collected, and h0 was cleaned.
fn check_fails_cleanly(fleet: &SshFleet, inventory: &str, why: &str) {
    let home = Scratch::new("ssh-error");
    let run = format!("ssh-err-{}-{}", std::process::id(), why.len());
    let pb = home.file("pb.yml", TWO_HOSTS);
    let started = Instant::now();
    let out = run_on(&home, &pb, inventory, &run, &["--connect-deadline", "2s"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(i32::from(squall::exit::RUN_FAILED)),
        "{}",
        text(&out)
    );
    let rec = run_record(&home.path, &run);
    assert_eq!(rec.status, RunStatus::Failed);
    let reason = rec.reason.clone().unwrap_or_default();
    let h1 = &fleet.hosts[1];
    let who = format!("{TEST_USER}@{}:{}", h1.address, h1.port);
    assert!(
        reason.contains(&who),
        "the reason names user and address {who}: {reason}"
    );
    assert!(reason.contains(why), "the reason says `{why}`: {reason}");
    let h0 = rec
        .hosts
        .iter()
        .find(|h| h.instance_id == "h0")
        .expect("h0");
    // The run stopped at bootstrap (h1 never joined), so no task ran; the reachable
    // host's logs were still collected: its archive is in the store and GNU tar reads it.
    assert!(rec.tasks.is_empty(), "{:?}", rec.tasks);
    let key = h0
        .archive
        .as_deref()
        .expect("logs of the reachable host were collected");
    let path = home.path.join("store").join(key);
    assert!(path.is_file(), "{} is in the store", path.display());
    let members = gnu_tar_list(&path);
    assert!(
        members.iter().all(|m| m.ends_with('/')),
        "no task, so no task files: {members:?}"
    );
    // Teardown released both hosts and cleaned the one it can reach: no folder and no
    // process of the run is left there.
    let teardown = rec.teardown.clone().expect("teardown recorded");
    assert_eq!(
        (teardown.terminated, teardown.error.as_deref()),
        (2, None),
        "{teardown:?}"
    );
    assert!(
        !run_dir_on_hosts(&run).exists(),
        "the reachable host was cleaned"
    );
    assert_eq!(
        processes_of(&run),
        Vec::<String>::new(),
        "no process of the run is left"
    );
}

/// Command lines of the processes that name the run (its agent, tasks, supervisors).
fn processes_of(run: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|p| p.file_name().to_string_lossy() != me.as_str())
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(run) && !c.contains("--run-id"))
        .collect()
}

#[test]
fn an_unreachable_host_fails_the_run_cleanly() {
    if !sshd::available() {
        return;
    }
    let mut fleet = SshFleet::start(2);
    fleet.stop(1);
    let inventory = fleet.inventory_yaml(&[("workers", 0..2)]);
    check_fails_cleanly(&fleet, &inventory, "Connection refused");
}

#[test]
fn a_refused_key_fails_the_run_cleanly() {
    if !sshd::available() {
        return;
    }
    let fleet = SshFleet::start(2);
    let wrong = fleet.dir.join("wrong_key");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    let inventory = fleet.inventory_yaml(&[("workers", 0..2)]).replace(
        "{ name: h1,",
        &format!("{{ name: h1, key: {},", wrong.display()),
    );
    check_fails_cleanly(&fleet, &inventory, "Permission denied (publickey)");
}

#[test]
fn a_host_key_mismatch_fails_the_run_cleanly() {
    if !sshd::available() {
        return;
    }
    let fleet = SshFleet::start(2);
    // Pin h0's key for h1: a man in the middle, as far as ssh can tell.
    let inventory = fleet.inventory_yaml(&[("workers", 0..2)]).replace(
        "{ name: h1,",
        &format!(
            "{{ name: h1, host_key: \"{}\",",
            fleet.hosts[0].host_public_key.trim()
        ),
    );
    check_fails_cleanly(&fleet, &inventory, "host key verification failed");
}

#[test]
fn a_missing_remote_program_fails_the_run_with_the_host_and_the_error() {
    if !sshd::available() {
        return;
    }
    let fleet = SshFleet::start(2);
    let home = Scratch::new("ssh-missing");
    let run = format!("ssh-missing-{}", std::process::id());
    let pb = home.file(
        "pb.yml",
        "name: missing\nfleet: { workers: { count: 2 } }\nstages:\n  - name: s\n    hosts: workers\n    tasks:\n      - command: [squall-no-such-program, --flag]\n",
    );
    let out = run_on(
        &home,
        &pb,
        &fleet.inventory_yaml(&[("workers", 0..2)]),
        &run,
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(i32::from(squall::exit::RUN_FAILED)),
        "{}",
        text(&out)
    );
    let rec = run_record(&home.path, &run);
    let reason = rec.reason.clone().unwrap_or_default();
    assert!(reason.contains("failed on workers-"), "{reason}");
    assert!(reason.contains("No such file or directory"), "{reason}");
    assert!(reason.contains("squall-no-such-program"), "{reason}");
    // Every host's logs were collected: each archive holds its task's status, which says
    // why it could not start, or, for a host whose start the first failure overtook
    // (the run fails fast), that it was cancelled before it ever ran.
    let mut failed_to_start = 0;
    for h in &rec.hosts {
        let key = h
            .archive
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no archive", h.name));
        let path = home.path.join("store").join(key);
        let task = rec
            .tasks
            .iter()
            .find(|t| t.host == h.name)
            .expect("a task per host");
        let members = gnu_tar_list(&path);
        assert!(
            members.contains(&format!("tasks/{}/status.json", task.id)),
            "{members:?}"
        );
        let status = gnu_tar_cat(&path, &format!("tasks/{}/status.json", task.id));
        if status.contains("failed_to_start") {
            assert!(status.contains("squall-no-such-program"), "{status}");
            failed_to_start += 1;
        } else {
            assert!(
                status.contains(r#""state":"cancelled""#) && status.contains(r#""pid":null"#),
                "neither failed to start nor cancelled before it ran: {status}"
            );
        }
    }
    assert!(failed_to_start >= 1, "no host says why it could not start");
    assert!(!run_dir_on_hosts(&run).exists(), "hosts cleaned");
}

#[test]
fn an_inventory_run_asking_for_replacements_is_refused_before_anything_runs() {
    if !sshd::available() {
        return;
    }
    let fleet = SshFleet::start(1);
    let home = Scratch::new("ssh-replace");
    let pb = home.file(
        "pb.yml",
        "name: two\nfleet:\n  workers: { count: 1, replace: 2 }\nstages:\n  - name: s\n    hosts: workers\n    tasks:\n      - shell: echo hi\n",
    );
    let inventory = fleet.inventory_yaml(&[("workers", 0..1)]);
    let out = run_on(&home, &pb, &inventory, "ssh-replace-1", &[]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(squall::exit::USAGE)),
        "{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pb.yml:3:12: group `workers` asks for `replace: 2`, but an inventory run cannot launch hosts"),
        "{err}"
    );
    assert!(
        !home.path.join("store/runs/ssh-replace-1").exists(),
        "nothing ran"
    );
}

#[test]
fn an_inventory_host_name_address_or_user_that_could_be_a_path_or_an_option_is_refused() {
    // No sshd needed: the inventory is refused when it is read, before anything runs.
    let home = Scratch::new("inventory-words");
    let k = r#"key: k, host_key: "ssh-ed25519 AAAA""#;
    let inv = home.file(
        "inv.yml",
        &format!(
            "groups:\n  workers:\n    - {{ name: ../../.ssh, address: 127.0.0.1, user: u, {k} }}\n    - {{ name: ok-1, address: \"-oProxyCommand=touch /tmp/x\", user: u, {k} }}\n    - {{ name: ok-2, address: 127.0.0.2, user: \"-x\", {k} }}\n    - {{ name: ok-3, address: 127.0.0.3, user: u, {k} }}\n"
        ),
    );
    let state = home.path.join("state");
    let err = match squall::backend::inventory::load(&inv, &state) {
        Ok(_) => panic!("an unsafe inventory was accepted"),
        Err(e) => e.to_string(),
    };
    for want in [
        "inv.yml:3:7: host name `../../.ssh` must not start with `.`",
        "inv.yml:4:7: address `-oProxyCommand=touch /tmp/x` of host `ok-1` must not start with `-`",
        "inv.yml:5:7: user `-x` of host `ok-2` must not start with `-`",
    ] {
        assert!(err.contains(want), "{want}\nin:\n{err}");
    }
    assert!(!err.contains("ok-3"), "a sound host is not named: {err}");
}
