//! The upload child: this binary re-executed with the hidden `--upload-child KEY BUCKET`,
//! it streams its stdin into `S3Store::put_stream` as the master does with the agent's
//! stdout (`pipe_to_store` in master/src/runner.rs: the source copied into a 64 KiB
//! duplex that put_stream reads), and reports what it did on stdout.
//!
//! It runs in a process of its own so that its peak RSS is measured alone; starting it,
//! timing it and checking the object are the parent's (`run.rs`, `verify.rs`).

use anyhow::{Context, Result, bail, ensure};
use squall::backend::aws::s3::S3Store;
use squall::seam::Store;
use std::os::fd::AsFd;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

/// `--upload-child KEY BUCKET`: uploads stdin (a pipe) to s3://BUCKET/KEY with the SDK
/// configured from the environment, then prints `BYTES READY_US TOTAL_US` on stdout
/// (READY: process start to SDK configured; TOTAL: to upload complete), both counted
/// from `started`, the first thing `main` does.
pub fn upload_child(started: Instant, key: &str, bucket: &str) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let conf = squall::backend::aws::sdk_config(None).await;
        let store = S3Store::new(squall::backend::aws::s3_client(&conf), bucket, "");
        let stdin = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stdin")?;
        let mut input = tokio::net::unix::pipe::Receiver::from_owned_fd(stdin)
            .context("stdin must be a pipe")?;
        let ready = started.elapsed();
        let (writer, mut reader) = tokio::io::duplex(1 << 16);
        let pull = async move {
            let mut writer = writer;
            let r = tokio::io::copy(&mut input, &mut writer).await;
            let _ = writer.shutdown().await;
            r
        };
        let (pulled, stored) = tokio::join!(pull, store.put_stream(key, &mut reader));
        let pulled = pulled.context("reading stdin")?;
        let stored = stored.with_context(|| format!("uploading s3://{bucket}/{key}"))?;
        ensure!(
            pulled == stored,
            "read {pulled} bytes from stdin but uploaded {stored}"
        );
        println!(
            "{stored} {} {}",
            ready.as_micros(),
            started.elapsed().as_micros()
        );
        Ok(())
    })
}

/// `BYTES READY_US TOTAL_US` from the upload child; times in seconds.
pub fn parse_child_report(text: &str) -> Result<(u64, f64, f64)> {
    let nums: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("the upload child's report `{text}`"))?;
    let [bytes, ready, total] = nums[..] else {
        bail!("the upload child's report `{text}` is not `BYTES READY_US TOTAL_US`");
    };
    Ok((bytes, ready as f64 / 1e6, total as f64 / 1e6))
}
