//! Checking that an upload arrived whole: the object's size against what the producer
//! makes (and what squall's upload child says it sent), and, for the warm-ups, the
//! object downloaded and streamed through `tar tvzf -`, every member's name and size
//! compared with the generated files. A failed check aborts the benchmark.
//!
//! It times nothing; the uploads themselves are run by `run.rs`.

use crate::BUCKET;
use crate::data::Dataset;
use crate::pipeline::Finished;
use crate::run::Contender;
use crate::upload_child::parse_child_report;
use anyhow::{Context, Result, bail, ensure};
use std::fs::{self, File};
use std::path::Path;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// The object is there with exactly the bytes the producer makes; squall's child
/// also says it uploaded that many.
pub async fn check_upload(
    client: &aws_sdk_s3::Client,
    c: Contender,
    key: &str,
    expected: u64,
    f: &Finished,
) -> Result<()> {
    let head = client
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .with_context(|| format!("{}: HEAD s3://{BUCKET}/{key} after the upload", c.short()))?;
    let size = head.content_length().unwrap_or(-1);
    ensure!(
        u64::try_from(size).ok() == Some(expected),
        "{}: s3://{BUCKET}/{key} has {size} bytes, the producer makes {expected}: a short or failed upload",
        c.short()
    );
    if c == Contender::Squall {
        let (n, _, _) = parse_child_report(&f.captured)?;
        ensure!(
            n == expected,
            "squall: put_stream uploaded {n} bytes, the producer makes {expected}"
        );
    }
    Ok(())
}

pub async fn delete(client: &aws_sdk_s3::Client, key: &str) -> Result<()> {
    client
        .delete_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .with_context(|| format!("deleting s3://{BUCKET}/{key}"))?;
    Ok(())
}

/// Streams the object into `tar tvzf -` (and into `save`), never holding it in memory;
/// returns its size and tar's listing.
pub async fn download_and_list(
    client: &aws_sdk_s3::Client,
    key: &str,
    save: &Path,
    dir: &Path,
) -> Result<(u64, String)> {
    let out = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .with_context(|| format!("GET s3://{BUCKET}/{key}"))?;
    let err_path = dir.join("tar-list.err");
    let mut tar = tokio::process::Command::new("tar")
        .args(["tvzf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&err_path)?)
        .spawn()
        .context("running tar tvzf -")?;
    let mut stdin = tar.stdin.take().context("tar's stdin")?;
    let mut stdout = tar.stdout.take().context("tar's stdout")?;
    let listing = tokio::spawn(async move {
        let mut s = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut s)
            .await
            .map(|_| s)
    });
    let mut file = tokio::fs::File::create(save).await?;
    let mut body = out.body;
    let mut n = 0u64;
    while let Some(chunk) = body
        .try_next()
        .await
        .with_context(|| format!("downloading s3://{BUCKET}/{key}"))?
    {
        n += chunk.len() as u64;
        file.write_all(&chunk).await?;
        stdin
            .write_all(&chunk)
            .await
            .context("writing to tar tvzf -")?;
    }
    file.flush().await?;
    drop(stdin);
    let listing = listing.await?.context("reading tar's listing")?;
    let status = tar.wait().await?;
    ensure!(
        status.success(),
        "`tar tvzf -` rejects s3://{BUCKET}/{key} ({status}): {}",
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    Ok((n, listing))
}

/// Every generated file, and nothing else, with its size, in `tar tvzf`'s listing
/// (`-rw-r--r-- root/root 123 2026-11-22 10:00 tasks/ID/stdout.log`).
pub fn check_listing(c: Contender, listing: &str, data: &Dataset) -> Result<()> {
    let mut files = Vec::new();
    let mut dirs = 0;
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            fields.len() >= 6,
            "{}: unexpected listing line `{line}`",
            c.short()
        );
        match fields[0].chars().next() {
            Some('d') => dirs += 1,
            Some('-') => {
                let size: u64 = fields[2]
                    .parse()
                    .with_context(|| format!("size in `{line}`"))?;
                files.push((fields[5..].join(" "), size));
            }
            _ => bail!("{}: unexpected member `{line}`", c.short()),
        }
    }
    files.sort();
    ensure!(
        files == data.files,
        "{}: the archive's files differ from the generated ones ({} listed, {} generated)",
        c.short(),
        files.len(),
        data.files.len()
    );
    ensure!(
        dirs == data.files.len() / 2 + 1,
        "{}: {dirs} directories in the archive",
        c.short()
    );
    Ok(())
}
