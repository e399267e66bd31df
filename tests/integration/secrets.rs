//! Secrets end to end with the real `squall` binary on the local backend: a task that
//! echoes its secrets and fails leaves their values nowhere (the store: records, status,
//! report, every archive unpacked; the master's log; the workers' disks; the CLI's own
//! output), its output is there masked, and no process's argv held a value while it
//! ran (read from `/proc`). Values are read from the environment, a file, and SSM
//! Parameter Store (moto); one too short, or missing, launches nothing; `squall launch`
//! refuses sources only a local run can read.

use squall::record::RunStatus;
use squall_tests::moto::{self, Moto};
use squall_tests::{Scratch, archive, run_record, squall_command, text, wait_until};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Quotes, `'`, `!`, `$` and `\`: shell quoting (`| quote`) splits such a value into
/// differently quoted pieces, and JSON escapes it.
const TOKEN: &str = "tok3n-\"q'u!o$t\\ed\"-v4lue";
/// A multi-line value (masked line by line).
const PEM: &str = "-----BEGIN TEST KEY-----\nMIIEpAIBAAKCAQEAsecretline\n-----END TEST KEY-----\n";
const SSM_VALUE: &str = "ssm-s3cr3t-from-moto";

/// The needles searched for: each value, and each long line of the multi-line one.
fn needles() -> Vec<&'static str> {
    vec![
        TOKEN,
        "tok3n-",
        "v4lue",
        "MIIEpAIBAAKCAQEAsecretline",
        "-----BEGIN TEST KEY-----",
    ]
}

fn playbook(dir: &Scratch, with_ssm: bool) -> std::path::PathBuf {
    dir.file("secret.pem", PEM);
    let ssm = if with_ssm {
        "\n  FROM_SSM: ssm:/squall/test/token"
    } else {
        ""
    };
    let echo_ssm = if with_ssm {
        "; echo \"ssm={{ secrets.FROM_SSM }}\""
    } else {
        ""
    };
    dir.file(
        "pb.yml",
        &format!(
            r#"name: secrets
secrets:
  TOKEN: env:SQUALL_TEST_TOKEN
  KEY: file:secret.pem{ssm}
fleet:
  w: {{ count: 1 }}
stages:
  - name: leak
    hosts: w
    tasks:
      - shell: |
          printf 'token=%s\n' "$TOKEN"
          printf 'inline=%s\n' {{{{ secrets.TOKEN | quote }}}}{echo_ssm}
          printf '%s\n' "$KEY"
          printf 'to stderr %s\n' "$TOKEN" >&2
          touch "$HOME/task-running"
          sleep 2
          exit 5
        environment:
          TOKEN: "{{{{ secrets.TOKEN }}}}"
          KEY: "{{{{ secrets.KEY }}}}"
"#
        ),
    )
}

/// Every file under `dir` whose bytes (or, for a `.tar.gz`, an unpacked member's)
/// hold a needle, as `path: needle`.
fn leaks(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let mut bodies = vec![(path.display().to_string(), bytes)];
            if path.to_string_lossy().ends_with(".tar.gz") {
                // Every member, unpacked by GNU tar, one after the other.
                let members = std::process::Command::new("tar")
                    .arg("-xzOf")
                    .arg(&path)
                    .output()
                    .expect("running tar");
                assert!(members.status.success(), "{} unpacks", path.display());
                bodies.push((format!("{} (unpacked)", path.display()), members.stdout));
            }
            for (name, body) in bodies {
                let text = String::from_utf8_lossy(&body);
                for n in needles {
                    if text.contains(n) {
                        found.push(format!("{name}: {n}"));
                    }
                }
            }
        }
    }
    found
}

/// The command lines (from `/proc`) holding a needle.
fn argv_leaks(needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        for n in needles {
            if line.contains(n) {
                found.push(line.clone());
            }
        }
    }
    found
}

/// Runs the playbook, checking `/proc` while the task runs; the run's output.
/// Local instance ids derive from the run id, and a local instance's processes are
/// found by it: each test has its own.
fn run_checking_argv(home: &Scratch, pb: &Path, run: &str, extra_env: &[(&str, String)]) -> String {
    let mut cmd = squall_command(
        &home.path,
        &[
            "run",
            pb.to_str().expect("utf-8"),
            "--run-id",
            run,
            "--no-progress",
        ],
    );
    cmd.env("SQUALL_TEST_TOKEN", TOKEN)
        .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("starting squall");
    let marker = || {
        std::fs::read_dir(home.path.join("instances"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|i| i.path().join("home/task-running").exists())
    };
    wait_until(Duration::from_secs(60), "the task to run", marker);
    // The task is running now: no process holds a value in its argv. (The test's own
    // process got the token in its environment only.)
    let mut all = needles();
    all.push(SSM_VALUE);
    assert_eq!(argv_leaks(&all), Vec::<String>::new());
    let out = squall_tests::finish_within(child, Duration::from_secs(60), "squall run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    text(&out)
}

#[test]
fn a_task_that_echoes_its_secrets_and_fails_leaves_them_nowhere_but_masked_output_everywhere() {
    let home = Scratch::new("secrets");
    let pbdir = Scratch::new("secrets-pb");
    let pb = playbook(&pbdir, false);
    let out = run_checking_argv(&home, &pb, "secrets-env", &[]);
    let rec = run_record(&home.path, "secrets-env");
    assert_eq!(rec.status, RunStatus::Failed, "{:?}", rec.reason);
    // Nowhere: the store (run.json, status.json, report.html, every archive unpacked),
    // the master's log, the workers' disks, the CLI's output.
    assert_eq!(leaks(&home.path, &needles()), Vec::<String>::new());
    for n in needles() {
        assert!(!out.contains(n), "the CLI printed `{n}`:\n{out}");
    }
    // The output is there, masked, line by line for the multi-line value. (The task
    // prints with `printf '%s'`: dash's `echo` would interpret the value's `\`.)
    let logs = archive(&home.path, "secrets-env", "w-0");
    let stdout = squall_tests::gnu_tar_cat(&logs, "tasks/s0-u0-t0-a0/stdout.log");
    assert_eq!(
        stdout, "token=***\ninline=***\n***\n***\n***\n",
        "the task's stdout"
    );
    let stderr = squall_tests::gnu_tar_cat(&logs, "tasks/s0-u0-t0-a0/stderr.log");
    assert_eq!(stderr, "to stderr ***\n");
    let spec = squall_tests::gnu_tar_cat(&logs, "tasks/s0-u0-t0-a0/spec.json");
    assert!(spec.contains(r#""TOKEN": "***""#), "{spec}");
    assert!(
        !squall_tests::gnu_tar_list(&logs)
            .iter()
            .any(|m| m.ends_with("private.json")),
        "the private file is never archived"
    );
    // The record still tells what failed.
    let reason = rec.reason.unwrap_or_default();
    assert!(reason.contains("exit code 5"), "{reason}");
}

#[test]
fn a_secret_read_from_ssm_is_masked_as_well() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let rt = crate::aws::runtime();
    rt.block_on(async {
        use squall::seam::control::Control;
        let ssm = squall::backend::aws::control::AwsControl::new(
            &moto.sdk_config().await,
            Default::default(),
        );
        ssm.put_secret("/squall/test/token", SSM_VALUE)
            .await
            .expect("put parameter");
    });
    let home = Scratch::new("secrets-ssm");
    let pbdir = Scratch::new("secrets-ssm-pb");
    let pb = playbook(&pbdir, true);
    let env: Vec<(&str, String)> = moto.env();
    let out = run_checking_argv(&home, &pb, "secrets-ssm", &env);
    let mut all = needles();
    all.push(SSM_VALUE);
    assert_eq!(leaks(&home.path, &all), Vec::<String>::new());
    assert!(!out.contains(SSM_VALUE), "{out}");
    let stdout = squall_tests::gnu_tar_cat(
        &archive(&home.path, "secrets-ssm", "w-0"),
        "tasks/s0-u0-t0-a0/stdout.log",
    );
    assert!(stdout.contains("ssm=***\n"), "{stdout}");
}

#[test]
fn a_secret_that_is_missing_or_too_short_launches_nothing_and_launch_refuses_local_sources() {
    let pbdir = Scratch::new("secrets-bad-pb");
    let pb = playbook(&pbdir, false);
    let pb = pb.to_str().expect("utf-8");
    for (value, want) in [
        (
            None,
            "secret `TOKEN` cannot be read: the environment variable `SQUALL_TEST_TOKEN` is not set",
        ),
        (
            Some("abc"),
            "secret `TOKEN` is 3 byte(s) long: expected at least 4",
        ),
    ] {
        let home = Scratch::new("secrets-bad");
        let mut cmd = squall_command(&home.path, &["run", pb, "--run-id", "secrets-bad"]);
        cmd.env_remove("SQUALL_TEST_TOKEN");
        if let Some(v) = value {
            cmd.env("SQUALL_TEST_TOKEN", v);
        }
        let out = squall_tests::output_within(&mut cmd, Duration::from_secs(60));
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{shown}");
        assert!(shown.contains(want), "{shown}");
        assert!(
            shown.contains("pb.yml:3:10"),
            "the secret's position: {shown}"
        );
        assert!(
            !home.path.join("instances").exists(),
            "nothing was launched: {shown}"
        );
    }
    // `squall launch` runs the master on EC2, which reads SSM only.
    let home = Scratch::new("secrets-launch");
    let mut cmd = squall_command(
        &home.path,
        &[
            "launch",
            pb,
            "--bucket",
            "b",
            "--subnet",
            "subnet-1",
            "--image",
            "ami-1",
            "--security-groups",
            "sg-1",
        ],
    );
    let out = squall_tests::output_within(&mut cmd, Duration::from_secs(60));
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("secret `TOKEN` is read from `env:SQUALL_TEST_TOKEN` where squall runs")
            && shown.contains("secret `KEY` is read from `file:secret.pem`"),
        "{shown}"
    );
}
