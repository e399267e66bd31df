//! Moving logs into the store: a host's `squall-worker pack` output streamed straight
//! into `Store::put_stream` (constant memory; an archive is stored whole or not at all),
//! for final collections and live snapshots, and the master's own log packed at the end.
//!
//! Each archive takes one of the run's transfer slots ([`super::Ctx::transfer`]) while it
//! moves (snapshots at most half of them, skipped when those are busy), and may take as
//! long as it keeps moving:
//! it is given up only after [`STALL_TIMEOUT`] without a byte (or past
//! [`COLLECT_CEILING`]), so a big archive is not cut off at a fixed time while a stuck
//! one still ends (the run's collect grace still bounds the final collection). A
//! snapshot that fails leaves the host's previous one in place (a store keeps an object
//! whole or not at all).
//!
//! Which hosts to collect or snapshot, and when, is the engine's decision.

use super::Ctx;
use super::agent::pack_argv;
use crate::engine::{Event, Failure, HostId};
use crate::error::chain;
use crate::record::keys;
use crate::seam::{Instance, Store, StoreError, TransportError};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// How long packing and storing one host's logs may go without a byte moving: longer
/// than one S3 part's upload may take under throttling (the stream is not read while
/// the parts in flight upload), so only a stuck archive is given up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(240);

/// The longest packing and storing one host's logs may take, moving or not.
pub const COLLECT_CEILING: Duration = Duration::from_secs(3600);

/// Why a host's archive was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("packing the logs")]
    Pull(#[source] TransportError),
    #[error("storing the archive")]
    Store(#[source] StoreError),
    #[error("no byte moved for {}s", .0.as_secs())]
    Stalled(Duration),
    #[error("timed out after {}s", .0.as_secs())]
    TimedOut(Duration),
}

/// Which archive of a host's logs: its final one, or a snapshot while the run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    Final,
    Snapshot,
}

impl Archive {
    fn key(self, run_id: &str, host: &str) -> String {
        match self {
            Archive::Final => keys::log_archive(run_id, host),
            Archive::Snapshot => keys::log_snapshot(run_id, host),
        }
    }

    /// The event that reports this archive stored at a key, or not.
    pub fn event(self, host: HostId, result: Result<String, Failure>) -> Event {
        match self {
            Archive::Final => Event::LogsCollected { host, result },
            Archive::Snapshot => Event::LogsSnapshotted { host, result },
        }
    }
}

/// Packs and stores a host's archive, then reports it.
pub async fn pack(ctx: &Ctx, archive: Archive, host: HostId, name: String, inst: Instance) {
    let key = archive.key(&ctx.opts.run_id, &name);
    // Snapshots hold at most half the transfer slots, so that final collections,
    // copies and fetches always find the rest; one without a turn now is skipped (the
    // host keeps its last one, and comes first next time) rather than queued, so that
    // it never holds up the host's release or a spot notice's snapshot.
    let _turn = match archive {
        Archive::Final => None,
        Archive::Snapshot => match ctx.snapshot_turn() {
            Some(turn) => Some(turn),
            None => {
                let busy = Failure("skipped: the snapshots' transfer slots are busy".into());
                ctx.send(archive.event(host, Err(busy)));
                return;
            }
        },
    };
    let _slot = ctx.transfer().await;
    let r = pipe_with_timeout(ctx, &inst, &key).await;
    if let (Archive::Snapshot, Err(e)) = (archive, &r) {
        tracing::debug!(host = %name, "log snapshot failed: {}", chain(e));
    }
    ctx.send(archive.event(host, r.map(|_| key).map_err(|e| Failure(pipe_text(&e)))));
}

/// Packs and stores a host's final archive; returns its key or why not.
pub async fn collect(ctx: &Ctx, name: &str, inst: &Instance) -> Result<String, Failure> {
    let key = Archive::Final.key(&ctx.opts.run_id, name);
    let _slot = ctx.transfer().await;
    pipe_with_timeout(ctx, inst, &key)
        .await
        .map(|_| key)
        .map_err(|e| Failure(pipe_text(&e)))
}

/// The text a failed collection leaves in the record: the cause itself (what failed
/// is clear from where it is recorded).
fn pipe_text(e: &PipeError) -> String {
    match e {
        PipeError::Pull(t) => chain(t),
        PipeError::Store(s) => chain(s),
        PipeError::Stalled(_) | PipeError::TimedOut(_) => e.to_string(),
    }
}

/// Packs and stores an archive (in the transfer slot its caller holds), given up once
/// it stalls.
async fn pipe_with_timeout(ctx: &Ctx, inst: &Instance, key: &str) -> Result<u64, PipeError> {
    let moved = Arc::new(AtomicU64::new(0));
    let pipe = pipe_to_store(ctx, inst, key, moved.clone());
    tokio::pin!(pipe);
    let started = tokio::time::Instant::now();
    let (mut last, mut since) = (0, started);
    loop {
        tokio::select! {
            r = &mut pipe => return r,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = tokio::time::Instant::now();
        let n = moved.load(Ordering::Relaxed);
        if n != last {
            (last, since) = (n, now);
        } else if now - since >= STALL_TIMEOUT {
            return Err(PipeError::Stalled(STALL_TIMEOUT));
        }
        if now - started >= COLLECT_CEILING {
            return Err(PipeError::TimedOut(COLLECT_CEILING));
        }
    }
}

/// Streams the agent's `pack` output straight into the store, in constant memory,
/// counting the bytes in `moved`. The object is only kept if the whole archive arrived.
async fn pipe_to_store(
    ctx: &Ctx,
    inst: &Instance,
    key: &str,
    moved: Arc<AtomicU64>,
) -> Result<u64, PipeError> {
    let (writer, reader) = tokio::io::duplex(1 << 16);
    let ok = Arc::new(AtomicBool::new(false));
    let mut reader = FailUnlessComplete {
        inner: reader,
        ok: ok.clone(),
        moved,
    };
    let argv = pack_argv(ctx, inst);
    let pull = async move {
        let mut writer = writer;
        let r = ctx.b.transport.stream(inst, &argv, &mut writer).await;
        if r.is_ok() {
            ok.store(true, Ordering::SeqCst);
        }
        let _ = writer.shutdown().await;
        r
    };
    // The reader is dropped as soon as the store gives up, so the producer sees a broken
    // pipe instead of blocking on a full buffer until the collect timeout.
    let store = async move { ctx.b.store.put_stream(key, &mut reader).await };
    let (pulled, stored) = tokio::join!(pull, store);
    pulled.map_err(PipeError::Pull)?;
    stored.map_err(PipeError::Store)
}

/// A reader that turns end-of-stream into an error unless the producer said it
/// finished, so a cut-off archive is never stored as if whole.
struct FailUnlessComplete<R> {
    inner: R,
    ok: Arc<AtomicBool>,
    /// Bytes read so far (the stall watch reads it).
    moved: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for FailUnlessComplete<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(()))
                if buf.filled().len() == before && !this.ok.load(Ordering::SeqCst) =>
            {
                Poll::Ready(Err(std::io::Error::other("the archive stream ended early")))
            }
            other => {
                let n = buf.filled().len() - before;
                this.moved.fetch_add(n as u64, Ordering::Relaxed);
                other
            }
        }
    }
}

/// The master's log could not be archived.
#[derive(Debug, thiserror::Error)]
pub enum MasterLogError {
    #[error("packing {}", .0.display())]
    Pack(std::path::PathBuf, #[source] std::io::Error),
    #[error("packing the master log")]
    Join(#[source] tokio::task::JoinError),
    #[error("storing the master log")]
    Store(#[source] StoreError),
}

/// Packs the master's log file as `master.log` in a tar.gz and stores it.
pub async fn put_master_log(
    store: &dyn Store,
    key: &str,
    log: &Path,
) -> Result<(), MasterLogError> {
    let path = log.to_owned();
    let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(enc);
        // The log as long as it is now: a line written while it is packed must not make
        // the member longer than its header says.
        let file = std::fs::File::open(&path)?;
        let meta = file.metadata()?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        header.set_size(meta.len());
        tar.append_data(
            &mut header,
            "master.log",
            std::io::Read::take(file, meta.len()),
        )?;
        tar.into_inner()?.finish()
    })
    .await
    .map_err(MasterLogError::Join)?
    .map_err(|e| MasterLogError::Pack(log.to_owned(), e))?;
    store.put(key, bytes).await.map_err(MasterLogError::Store)
}
