//! Moving a run's data through the seams: `copy` (store -> master -> host) and `fetch`
//! (the host's matches listed by the agent, then each file host -> master -> store).
//! Listing a stage's items is [`super::listing`]'s, the cache [`super::cache`]'s.
//!
//! Bytes stream: a file is never whole in memory or on the master's disk. A fetch pipes
//! `cat` on the host into the store's streaming put through a bounded pipe, hashing and
//! counting on the way; a short or overlong stream fails the put, so a partial object
//! never appears. Where things go, and whether a match may be stored at all, is the
//! engine's decision; this module does it and reports back.

use super::{Ctx, agent, now_ms};
use crate::digest;
use crate::engine::{Dest, Event, HostId, TaskKey, TaskResult, Transfer};
use crate::error::chain;
use crate::plan::url::{self, DataUrl, with_slash};
use crate::record::{StoredFile, TaskOutcome};
use crate::seam::data::{self, Located};
use crate::seam::store::{ObjectInfo, Store, StoreError};
use crate::seam::{Instance, TransportError};
use squall_worker::{GlobMatch, Request, exit as agent_exit};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// The longest line a `lines` manifest may have.
pub(super) const MAX_LINE: usize = 64 * 1024;

/// The pipe between a host's `cat` and the store's put: what may be in flight between
/// them (the store buffers its own part on top).
pub(super) const PIPE_BYTES: usize = 256 * 1024;

/// Why data could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A source that must exist does not.
    #[error("`{0}` does not exist (`optional: true` allows that)")]
    Missing(String),
    /// A folder source with nothing in it.
    #[error("no file under `{0}` (`optional: true` allows that)")]
    Empty(String),
    /// A listed object whose name would leave the destination folder.
    #[error(
        "`{0}` is not a plain relative name under its prefix (it has an empty, `.` or `..` part)"
    )]
    UnsafeName(String),
    /// A local folder to list is not there.
    #[error("`{0}` is not a folder")]
    NotAFolder(String),
    /// A manifest line over [`MAX_LINE`].
    #[error("line {line} of `{url}` is longer than {MAX_LINE} bytes (is it a manifest?)")]
    LineTooLong { url: String, line: usize },
    /// A manifest line that is not UTF-8.
    #[error("line {line} of `{url}` is not UTF-8 text (is it a manifest?)")]
    NotText { url: String, line: usize },
    /// A listing of lines names a folder.
    #[error("`{0}` is a folder: `lines` reads one file or object")]
    LinesOfFolder(String),
    /// Reading the listed object failed.
    #[error("reading `{url}` failed")]
    Read {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl DataError {
    fn host_lost(&self) -> bool {
        matches!(self, DataError::Transport(e) if e.is_unreachable())
    }
}

/// What a finished copy or store means for its task.
fn task_event(key: TaskKey, host: HostId, started: u64, r: Result<(), DataError>) -> Event {
    match r {
        Err(e) if e.host_lost() => Event::HostLost {
            host,
            reason: chain(&e),
        },
        r => Event::TaskFinished {
            key,
            host,
            result: TaskResult::without_exit(
                if r.is_ok() {
                    TaskOutcome::Succeeded
                } else {
                    TaskOutcome::Failed
                },
                r.err().map(|e| chain(&e)),
                started,
                now_ms(),
            ),
        },
    }
}

/// A rendered `copy` task.
#[derive(Debug, Clone, Copy)]
pub struct CopyOrder<'a> {
    pub src: &'a DataUrl,
    pub dest: &'a str,
    pub mode: u32,
    pub optional: bool,
}

/// Runs a `copy` task: a file, or every file under a folder or prefix, onto the host.
pub async fn copy_task(
    ctx: &Ctx,
    key: TaskKey,
    host: HostId,
    inst: &Instance,
    order: CopyOrder<'_>,
) -> Event {
    let _slot = ctx.transfer().await;
    let started = now_ms();
    let r = copy(ctx, inst, order.src, order.dest, order.mode, order.optional).await;
    task_event(key, host, started, r)
}

async fn copy(
    ctx: &Ctx,
    inst: &Instance,
    src: &DataUrl,
    dest: &str,
    mode: u32,
    optional: bool,
) -> Result<(), DataError> {
    let at = data::open(ctx.b.data.as_ref(), src).await?;
    if src.is_folder() {
        let mut found = Vec::new();
        at.store
            .list_each(&at.key, &mut |o| keep_object(&mut found, o))
            .await?;
        if found.is_empty() {
            return if optional {
                Ok(())
            } else {
                Err(DataError::Empty(src.to_string()))
            };
        }
        let dir = with_slash(dest);
        for o in &found {
            let name = o.key.strip_prefix(&at.key).unwrap_or(&o.key);
            // An S3 key may hold `..`: it must not pick a place outside `dest`.
            if !url::plain_name(name) {
                return Err(DataError::UnsafeName(at.store.locate(&o.key)));
            }
            send_one(ctx, inst, &at, o, &format!("{dir}{name}"), mode).await?;
        }
        return Ok(());
    }
    let Some(o) = at.store.head(&at.key).await? else {
        return if optional {
            Ok(())
        } else {
            Err(DataError::Missing(src.to_string()))
        };
    };
    // `dest/` (or nothing) takes the source's name.
    let dest = if dest.is_empty() || dest.ends_with('/') {
        let base = at.key.rsplit('/').next().unwrap_or(&at.key);
        format!("{dest}{base}")
    } else {
        dest.to_owned()
    };
    send_one(ctx, inst, &at, &o, &dest, mode).await
}

/// A zero-byte key ending in `/` (what S3 consoles make for "folders"): not a file.
pub(super) fn is_folder_marker(o: &ObjectInfo) -> bool {
    o.key.ends_with('/')
}

/// Keeps `o` unless it is a folder marker.
pub(super) fn keep_object(into: &mut Vec<ObjectInfo>, o: ObjectInfo) {
    if !is_folder_marker(&o) {
        into.push(o);
    }
}

/// Streams one object onto the host.
async fn send_one(
    ctx: &Ctx,
    inst: &Instance,
    at: &Located,
    o: &ObjectInfo,
    dest: &str,
    mode: u32,
) -> Result<(), DataError> {
    let Some(mut body) = at.store.get_stream(&o.key).await? else {
        return Err(DataError::Missing(at.store.locate(&o.key)));
    };
    ctx.b
        .transport
        .put_stream(inst, &mut body, o.size, dest, mode)
        .await?;
    Ok(())
}

/// Runs the first half of a `fetch` task: the agent lists the matches, the engine
/// decides where they go.
pub async fn list_fetch(
    ctx: &Ctx,
    key: TaskKey,
    host: HostId,
    inst: &Instance,
    pattern: &str,
) -> Event {
    let started = now_ms();
    let argv = agent::agent_argv(
        ctx,
        inst,
        &Request::Glob {
            pattern: pattern.to_owned(),
        },
    );
    let failed = |why: String| Event::TaskFinished {
        key,
        host,
        result: TaskResult::without_exit(TaskOutcome::Failed, Some(why), started, now_ms()),
    };
    let out = match ctx.b.transport.run(inst, &argv).await {
        Err(e) if e.is_unreachable() => {
            return Event::HostLost {
                host,
                reason: chain(&e),
            };
        }
        Err(e) => return failed(chain(&e)),
        Ok(out) => out,
    };
    if out.code != Some(agent_exit::OK) {
        return failed(format!(
            "listing `{pattern}` on {}: {}",
            inst.id,
            out.stderr_tail()
        ));
    }
    let mut files = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<GlobMatch>(line) {
            Ok(m) => files.push(m),
            Err(e) => {
                return failed(format!(
                    "the agent's glob answer `{line}` does not parse: {e}"
                ));
            }
        }
    }
    Event::FetchListed { key, host, files }
}

/// Runs the second half of a `fetch`: streams each file into its destination, reports
/// what was stored, then the task's end.
pub async fn store_files(
    ctx: &Ctx,
    key: TaskKey,
    host: HostId,
    inst: &Instance,
    files: Vec<Transfer>,
) {
    // One transfer slot for the task's files, stored one after the other.
    let _slot = ctx.transfer().await;
    let started = now_ms();
    let mut stored = Vec::new();
    let mut result = Ok(());
    for t in &files {
        match store_one(ctx, inst, t).await {
            Ok(f) => stored.push(f),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // What was stored is recorded even when a later file failed: it is in the store.
    ctx.send(Event::FilesStored {
        key,
        host,
        files: stored,
    });
    ctx.send(task_event(key, host, started, result));
}

/// Streams one host file into the store: `cat` on the host, piped into a streaming put.
async fn store_one(ctx: &Ctx, inst: &Instance, t: &Transfer) -> Result<StoredFile, DataError> {
    let (store, key): (Arc<dyn Store>, String) = match &t.to {
        Dest::Run(k) => (ctx.b.store.clone(), k.clone()),
        Dest::S3 { bucket, key } => (ctx.b.data.bucket(bucket).await?, key.clone()),
    };
    let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let mut checked = Checked::new(reader, t.size);
    let put = async {
        let r = store.put_stream(&key, &mut checked).await;
        // Ends the pipe's reading side.
        let seen = checked.finish();
        (r, seen)
    };
    let argv = ["cat".to_owned(), "--".to_owned(), t.from.clone()];
    let transport = ctx.b.transport.clone();
    let send = async move {
        let mut writer = writer;
        let r = transport.stream(inst, &argv, &mut writer).await;
        let _ = writer.shutdown().await;
        r
    };
    let mut send = std::pin::pin!(send);
    let mut put = std::pin::pin!(put);
    // The put ends after the sender (it needs the end of the stream) unless it fails;
    // then the sender is dropped, which ends the host's `cat` (its output has nowhere
    // to go), instead of waiting for a stream nobody reads.
    let ((put, seen), sent) = tokio::select! {
        sent = &mut send => (put.await, Some(sent)),
        done = &mut put => match done.0 {
            Ok(_) => {
                let sent = send.await;
                (done, Some(sent))
            }
            Err(_) => (done, None),
        },
    };
    match (put, sent) {
        (Ok(_), Some(Ok(_))) => Ok(StoredFile {
            key: t.to.label(),
            size: seen.bytes,
            sha256: seen.sha256,
        }),
        // The host side failed first (the short stream is only its echo).
        (Err(_), Some(Err(e))) if e.is_unreachable() || seen.short => Err(e.into()),
        (Err(e), _) => Err(e.into()),
        (Ok(_), Some(Err(e))) => Err(e.into()),
        (Ok(_), None) => unreachable_put(),
    }
}

/// A put that succeeded without its sender finishing cannot happen (it needs the end of
/// the stream); kept as an error, not a panic.
fn unreachable_put() -> Result<StoredFile, DataError> {
    Err(DataError::Read {
        url: String::new(),
        source: io::Error::other("the store finished before the host's stream ended"),
    })
}

/// What went through a [`Checked`] reader.
#[derive(Debug)]
struct Seen {
    bytes: u64,
    sha256: String,
    /// It ended before the expected size.
    short: bool,
}

/// Hashes and counts what it reads, and fails at the end unless exactly the expected
/// number of bytes went by (so a store put of a truncated or growing file fails).
struct Checked<R> {
    inner: Option<R>,
    expected: u64,
    seen: u64,
    short: bool,
    hash: digest::Running,
}

impl<R> Checked<R> {
    fn new(inner: R, expected: u64) -> Self {
        Checked {
            inner: Some(inner),
            expected,
            seen: 0,
            short: false,
            hash: digest::Running::default(),
        }
    }

    /// Drops the inner reader; what went by.
    fn finish(&mut self) -> Seen {
        self.inner = None;
        Seen {
            bytes: self.seen,
            sha256: std::mem::take(&mut self.hash).finish(),
            short: self.short,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Checked<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(io::Error::other("the reader was closed")));
        };
        let before = buf.filled().len();
        ready!(Pin::new(inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if new.is_empty() && buf.remaining() > 0 {
            if this.seen < this.expected {
                this.short = true;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("only {} of {} bytes arrived", this.seen, this.expected),
                )));
            }
            return Poll::Ready(Ok(()));
        }
        let total = this.seen + new.len() as u64;
        if total > this.expected {
            // An error hands back no bytes (AsyncRead's contract).
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the file grew past its {} bytes while it was fetched",
                    this.expected
                ),
            )));
        }
        this.seen = total;
        this.hash.update(new);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn read_all(body: &'static [u8], expected: u64) -> (io::Result<Vec<u8>>, Seen) {
        let mut checked = Checked::new(body, expected);
        let mut out = Vec::new();
        let r = checked.read_to_end(&mut out).await.map(|_| out);
        (r, checked.finish())
    }

    #[tokio::test]
    async fn a_checked_stream_passes_exactly_its_size_and_hashes_it() {
        let (r, seen) = read_all(b"abc", 3).await;
        assert_eq!(r.expect("exact").as_slice(), b"abc");
        assert_eq!(seen.sha256, digest::sha256_hex(b"abc"));
        assert!(!seen.short);
        let (r, seen) = read_all(b"ab", 3).await;
        assert_eq!(r.expect_err("short").kind(), io::ErrorKind::UnexpectedEof);
        assert!(seen.short);
        let (r, _) = read_all(b"abcd", 3).await;
        assert_eq!(r.expect_err("long").kind(), io::ErrorKind::InvalidData);
    }
}
