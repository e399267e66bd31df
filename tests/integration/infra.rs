//! infra/template.yaml, checked three ways, each saying only what it can prove:
//!
//! - cfn-lint finds nothing (the template's shape, properties and references).
//! - The stack deploys to moto's CloudFormation (infra/check-deploy.py), and what moto
//!   really creates is checked through the services' own APIs: the bucket and its
//!   encryption, the function and its settings, the roles and the master's instance
//!   profile, the nightly rule targeting the function, the security groups (SSH to
//!   workers only from the master's group), the IAM documents (no `*` action on `*`).
//!   moto's CloudFormation ignores the bucket policy, versioning, the public-access
//!   block, ownership controls and the notification: for those the script resolves the
//!   template's values itself and applies them through the S3 API ("replayed"), which
//!   proves they are valid S3 settings that mean the right thing, NOT that a deploy
//!   applies them. moto evaluates no IAM condition either.
//! - What only a reading can tell is checked on the template itself
//!   (infra/check-template.py): the notification targets the launcher function with the
//!   `UploadPrefix` parameter, S3 may invoke the function for this bucket only, and the
//!   launcher maps the same prefix to the upload playbook; the master and the launcher
//!   read the upload prefix and not the whole bucket; cache entries expire after
//!   `CacheDays`; the optional worker role exists only with `WorkerDataPrefix`, reaches
//!   that prefix only, and is the one role the master may pass; the prefix parameters
//!   refuse squall's own prefixes and `*`; the launcher keeps the events it gave up on
//!   in the stack's dead-letter queue (moto's CloudFormation drops `DeadLetterConfig`),
//!   Lambda retries an event twice, and the stale-claim window outlasts an invocation.

use squall_tests::moto::{self, Moto};
use squall_tests::{output_within, text, workspace};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn cfn_lint() -> Option<PathBuf> {
    let venv = std::env::var_os("SQUALL_CFN_LINT_VENV").map_or_else(
        || PathBuf::from("/var/tmp/squall-cfn-lint-venv"),
        PathBuf::from,
    );
    let bin = venv.join("bin/cfn-lint");
    if bin.is_file() {
        return Some(bin);
    }
    squall_tests::skip(&format!(
        "cfn-lint is not installed at {} (run scripts/install-test-deps)",
        bin.display()
    ));
    None
}

#[test]
fn the_template_passes_cfn_lint() {
    let Some(lint) = cfn_lint() else { return };
    let out = output_within(
        Command::new(lint).arg(workspace().join("infra/template.yaml")),
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "cfn-lint found problems: {}",
        text(&out)
    );
}

#[test]
fn a_reading_of_the_template_proves_the_notification_upload_read_cache_expiry_worker_role_and_prefixes()
 {
    let Some(lint) = cfn_lint() else { return };
    let python = lint.with_file_name("python");
    let out = output_within(
        Command::new(python)
            .arg(workspace().join("infra/check-template.py"))
            .arg(workspace().join("infra/template.yaml")),
        Duration::from_secs(120),
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    for check in [
        "notification",
        "upload-read",
        "cache-lifecycle",
        "worker-role",
        "succession",
        "stack-scope",
        "secrets-scope",
        "prefix-patterns",
        "dead-letters",
    ] {
        assert!(log.contains(&format!("ok {check}\n")), "{log}");
    }
}

#[test]
fn the_template_deploys_to_moto_cloudformation() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let out = output_within(
        Command::new(moto::venv().join("bin/python"))
            .arg(workspace().join("infra/check-deploy.py"))
            .arg(moto.endpoint())
            .arg(workspace().join("infra/template.yaml")),
        Duration::from_secs(300),
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("checks passed"), "{log}");
}
