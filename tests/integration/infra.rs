//! infra/template.yaml: cfn-lint finds nothing, and the stack deploys to moto's
//! CloudFormation with every resource found through the services' own APIs
//! (infra/check-deploy.py: bucket with encryption, TLS-only policy and the notification
//! to the function; the function and its settings; roles and the master's instance
//! profile; the nightly rule targeting the function; security groups with SSH to
//! workers only from the master's group; IAM statements without `*` on `*`).

use squall_tests::moto::{self, Moto};
use squall_tests::{text, workspace};
use std::path::PathBuf;
use std::process::Command;

fn cfn_lint() -> Option<PathBuf> {
    let venv = std::env::var_os("SQUALL_CFN_LINT_VENV").map_or_else(
        || PathBuf::from("/var/tmp/squall-cfn-lint-venv"),
        PathBuf::from,
    );
    let bin = venv.join("bin/cfn-lint");
    if bin.is_file() {
        return Some(bin);
    }
    let msg = format!(
        "cfn-lint is not installed at {} (run scripts/install-test-deps)",
        bin.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

#[test]
fn the_template_passes_cfn_lint() {
    let Some(lint) = cfn_lint() else { return };
    let out = Command::new(lint)
        .arg(workspace().join("infra/template.yaml"))
        .output()
        .expect("running cfn-lint");
    assert!(
        out.status.success(),
        "cfn-lint found problems: {}",
        text(&out)
    );
}

#[test]
fn the_template_deploys_to_moto_cloudformation() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let out = Command::new(moto::venv().join("bin/python"))
        .arg(workspace().join("infra/check-deploy.py"))
        .arg(moto.endpoint())
        .arg(workspace().join("infra/template.yaml"))
        .output()
        .expect("running infra/check-deploy.py");
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("checks passed"), "{log}");
}
