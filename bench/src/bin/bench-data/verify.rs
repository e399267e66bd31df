//! Checking that every transferred copy is the generated data byte for byte: a host file
//! by `ssh HOST sha256sum FILE` (the host's own digest of what it holds), an object by
//! streaming it back from moto and hashing it here (never whole in memory); and removing
//! both afterwards, so neither the host's disk nor moto's memory fills up across runs.
//!
//! It times nothing; what was transferred and how is `run.rs`'s.

use crate::proc;
use anyhow::{Context, Result, ensure};
use squall::digest;
use squall_tests::sshd::SshFleet;
use std::process::Command;
use std::time::Duration;

/// How long a check (hashing 1 GiB on the host, say) may take.
const CHECK_LIMIT: Duration = Duration::from_secs(300);

/// `ssh HOST ARGV...` (the fleet's only host) to its end; its stdout.
pub fn ssh(fleet: &SshFleet, remote: &[&str]) -> Result<String> {
    let argv = fleet.ssh_argv(0, remote);
    let (program, args) = argv.split_first().context("an ssh command line")?;
    let what = format!("ssh {}", remote.join(" "));
    let out = proc::output(Command::new(program).args(args), &what, CHECK_LIMIT)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host file `path` (relative to the login home) has `size` bytes with sha256
/// `want`, by the host's `sha256sum`; `who` names the contender in the error.
pub fn host_file(fleet: &SshFleet, path: &str, size: u64, want: &str, who: &str) -> Result<()> {
    let out = ssh(
        fleet,
        &[
            "sh",
            "-c",
            "wc -c < \"$1\" && sha256sum -- \"$1\"",
            "sh",
            path,
        ],
    )?;
    let mut lines = out.lines();
    let got_size: u64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("{who}: no size in `{out}`"))?;
    let got = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .with_context(|| format!("{who}: no sha256sum in `{out}`"))?;
    ensure!(
        got_size == size && got == want,
        "{who}: MISMATCH: the host's {path} has {got_size} bytes with sha256 {got}, \
         the generated data {size} bytes with sha256 {want}"
    );
    Ok(())
}

/// Removes `path` (relative to the login home) on the host.
pub fn host_rm(fleet: &SshFleet, path: &str) -> Result<()> {
    ssh(fleet, &["rm", "-f", "--", path]).map(|_| ())
}

/// Streams s3://BUCKET/KEY back and checks its size and sha256; `who` names the
/// contender in the error.
pub async fn object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
    want: &str,
    who: &str,
) -> Result<()> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("{who}: GET s3://{bucket}/{key}"))?;
    let mut body = out.body;
    let mut hash = digest::Running::default();
    let mut n = 0u64;
    while let Some(chunk) = body
        .try_next()
        .await
        .with_context(|| format!("{who}: reading s3://{bucket}/{key}"))?
    {
        n += chunk.len() as u64;
        hash.update(&chunk);
    }
    let got = hash.finish();
    ensure!(
        n == size && got == want,
        "{who}: MISMATCH: s3://{bucket}/{key} has {n} bytes with sha256 {got}, \
         the generated data {size} bytes with sha256 {want}"
    );
    Ok(())
}

/// The object's size by HEAD.
pub async fn object_size(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<u64> {
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("HEAD s3://{bucket}/{key}"))?;
    let size = head.content_length().unwrap_or(-1);
    u64::try_from(size).with_context(|| format!("s3://{bucket}/{key}: size {size}"))
}

pub async fn delete(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<()> {
    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("deleting s3://{bucket}/{key}"))?;
    Ok(())
}
