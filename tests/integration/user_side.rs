//! Small things on the user's side: `squall runs` lists run ids with one delimiter
//! listing (not every key of every run), a profile whose credentials come from
//! `credential_process` works against moto (SSO itself cannot be tested here: it needs
//! AWS's identity center), and shell completion scripts that the shells accept.

use crate::aws::runtime;
use squall::seam::Store;
use squall_tests::faults::{FaultProxy, Faults, Service};
use squall_tests::moto::{self, Moto};
use squall_tests::{Scratch, squall_command, text};
use std::time::Duration;

#[test]
fn runs_are_listed_with_one_delimiter_listing_however_many_objects_they_hold() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        let proxy = FaultProxy::start(Service::S3, Faults::none());
        moto.bucket("squall-list-test").await;
        let conf = proxy.sdk_config_for(&moto).await;
        let store = std::sync::Arc::new(squall::backend::aws::s3::S3Store::new(
            squall::backend::aws::s3_client(&conf),
            "squall-list-test",
            "",
        ));
        // One run of 1100 objects (two pages of a plain listing), and two small ones.
        let mut puts = tokio::task::JoinSet::new();
        for i in 0..1100 {
            let s = store.clone();
            puts.spawn(async move { s.put(&format!("runs/big-1/files/{i}"), vec![1]).await });
            if puts.len() >= 16
                && let Some(r) = puts.join_next().await
            {
                r.expect("no panic").expect("put");
            }
        }
        while let Some(r) = puts.join_next().await {
            r.expect("no panic").expect("put");
        }
        for run in ["small-1", "small-2"] {
            store
                .put(&format!("runs/{run}/claim.json"), b"{}".to_vec())
                .await
                .expect("put");
        }
        let before = proxy.counts().get("ListObjectsV2").map_or(0, |c| c.calls);
        let ids = squall::inspect::run_ids(store.as_ref())
            .await
            .expect("listed");
        let listings = proxy.counts().get("ListObjectsV2").map_or(0, |c| c.calls) - before;
        assert_eq!(ids, ["big-1", "small-1", "small-2"]);
        assert_eq!(listings, 1, "one delimiter listing, not every key");
    });
}

#[test]
fn a_profile_with_credential_process_reaches_aws() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    runtime().block_on(async {
        moto.bucket("squall-profile-test").await;
    });
    let home = Scratch::new("profile");
    // The profile's credentials come from a program, as `aws sso` and most credential
    // helpers give them; nothing else in the environment holds any.
    let config = home.file(
        "aws-config",
        "[profile helper]\nregion = us-east-1\ncredential_process = /bin/echo '{\"Version\": 1, \"AccessKeyId\": \"testing\", \"SecretAccessKey\": \"testing\"}'\n",
    );
    let out = squall_tests::output_within(
        squall_command(&home.path, &["runs", "--store", "s3://squall-profile-test"])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_PROFILE", "helper")
            .env("AWS_CONFIG_FILE", &config)
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                home.path.join("no-credentials"),
            )
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_EC2_METADATA_DISABLED", "true"),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn completion_scripts_are_printed_for_each_shell_and_bash_accepts_its_own() {
    let home = Scratch::new("completions");
    for (shell, says) in [
        ("bash", "_squall()"),
        ("zsh", "#compdef squall"),
        ("fish", "complete -c squall"),
    ] {
        let out = squall_tests::squall(&home.path, &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(script.contains(says), "{shell}: {script:.300}");
        for sub in ["run", "validate", "launch", "logs", "runs"] {
            assert!(script.contains(sub), "{shell} completes `{sub}`");
        }
        if shell == "bash" {
            let path = home.file("squall.bash", &script);
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .expect("bash");
            assert!(check.status.success(), "{}", text(&check));
        }
    }
    let bad = squall_tests::squall(&home.path, &["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}
