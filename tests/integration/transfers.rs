//! One limit on the transfers a master makes at once: with eight hosts snapshotting
//! every 100 ms and then collected together, no more archives move at once than the run's
//! transfer slots, whatever the number of hosts; without the limit they all do.
//! A real run on the local backends, its store wrapped to count the uploads in flight.

use async_trait::async_trait;
use squall::runner::{RunOptions, run};
use squall::seam::store::{ByteReader, ObjectInfo, Store, StoreError};
use squall_tests::{Scratch, binary};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncRead;

/// A store that counts the streamed uploads in flight (each held a little longer, so
/// that overlaps show).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Store>,
    now: AtomicUsize,
    most: AtomicUsize,
    uploads: AtomicUsize,
}

#[async_trait]
impl Store for Counting {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put(key, body).await
    }
    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        self.uploads.fetch_add(1, Ordering::SeqCst);
        let r = self.inner.put_stream(key, body).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_stream(&self, key: &str) -> Result<Option<ByteReader>, StoreError> {
        self.inner.get_stream(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn list_each(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), StoreError> {
        self.inner.list_each(prefix, each).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.inner.head(key).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.inner.copy(from, to).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn create_if_absent(&self, key: &str, body: Vec<u8>) -> Result<bool, StoreError> {
        self.inner.create_if_absent(key, body).await
    }
    fn locate(&self, key: &str) -> String {
        self.inner.locate(key)
    }
}

const PLAYBOOK: &str = "name: transfers\nfleet: { workers: { count: 8 } }\nstages:\n  - name: s\n    hosts: workers\n    tasks:\n      - shell: for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.2; done\n";

/// Runs the playbook with `transfers` slots; the most uploads in flight, and how many.
fn most_in_flight(transfers: usize) -> (usize, usize) {
    let home = Scratch::new(&format!("transfers-{transfers}"));
    let pb = squall::plan::parse(
        Path::new("transfers.yml"),
        PLAYBOOK,
        &home.path,
        &BTreeMap::new(),
    )
    .expect("a valid playbook");
    let mut b = squall::backend::local::backends(&home.path);
    let counting = Arc::new(Counting {
        inner: b.store.clone(),
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        uploads: AtomicUsize::new(0),
    });
    b.store = counting.clone();
    let opts = RunOptions {
        run_id: format!("transfers-{transfers}-{}", std::process::id()),
        trigger: BTreeMap::new(),
        agent_binary: binary("squall-worker"),
        wait_poll_secs: 1,
        heartbeat_every: Duration::from_secs(5),
        progress_bar: false,
        master_log: None,
        handle_signals: false,
        worker_user_data: BTreeMap::new(),
        snapshot_every: Some(Duration::from_millis(100)),
        allow_absolute_sources: true,
        use_cache: false,
        journal: None,
        stack: None,
        secrets: Arc::default(),
        transfers: Some(transfers),
    };
    let rt = crate::aws::runtime();
    let summary = rt
        .block_on(run(Arc::new(pb), b, opts))
        .expect("the run ran");
    assert_eq!(
        summary.record.status,
        squall::record::RunStatus::Succeeded,
        "{:?}",
        summary.record.reason
    );
    assert_eq!(summary.archives.len(), 8, "every host's logs collected");
    (
        counting.most.load(Ordering::SeqCst),
        counting.uploads.load(Ordering::SeqCst),
    )
}

#[test]
fn no_more_archives_move_at_once_than_the_transfer_slots() {
    let (limited, uploads) = most_in_flight(2);
    let (unlimited, _) = most_in_flight(64);
    eprintln!(
        "uploads in flight at most: {limited} of 2 slots, {unlimited} of 64 ({uploads} uploads)"
    );
    assert!(uploads > 8, "snapshots and collections: {uploads}");
    assert!(limited <= 2, "{limited} at once with 2 slots");
    // The counter sees overlaps: without the limit, more move at once.
    assert!(unlimited > 2, "{unlimited} at once with 64 slots");
}
