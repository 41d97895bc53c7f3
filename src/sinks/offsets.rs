//! Commits log offsets off the timely workers, each time after making the metadata they
//! depend on durable: documents are written buffered, and one sync covers them all.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::metadata::MetadataStore;
use super::retry;
use crate::metrics::Metrics;
use crate::sources::EventLog;
pub use crate::sources::OffsetCommit;

/// Where workers send offsets the durable frontier has passed.
#[derive(Clone)]
pub struct OffsetCommitter {
    commits: mpsc::UnboundedSender<Vec<OffsetCommit>>,
}

impl OffsetCommitter {
    /// Starts the committer; the task ends once every clone is dropped and all is committed.
    pub fn start(
        log: EventLog,
        metadata: Arc<dyn MetadataStore>,
        metrics: Arc<Metrics>,
    ) -> (OffsetCommitter, tokio::task::JoinHandle<()>) {
        let (commits, queue) = mpsc::unbounded_channel();
        (OffsetCommitter { commits }, tokio::spawn(commit_loop(log, metadata, metrics, queue)))
    }

    pub fn send(&self, offsets: Vec<OffsetCommit>) {
        if !offsets.is_empty() && self.commits.send(offsets).is_err() {
            tracing::warn!("offset committer has stopped; these offsets will be replayed");
        }
    }
}

/// At most one sync and offset commit per interval. A crash replays at most this much more,
/// and the replay changes nothing.
const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

async fn commit_loop(
    log: EventLog,
    metadata: Arc<dyn MetadataStore>,
    metrics: Arc<Metrics>,
    mut queue: mpsc::UnboundedReceiver<Vec<OffsetCommit>>,
) {
    let mut batches = Vec::new();
    while queue.recv_many(&mut batches, 1024).await > 0 {
        let began = tokio::time::Instant::now();
        retry(&metrics, || metadata.sync()).await;
        let offsets: Vec<OffsetCommit> = batches.drain(..).flatten().collect();
        let log = log.clone();
        let written = tokio::task::spawn_blocking(move || {
            if let Err(error) = log.commit(&latest(offsets)) {
                tracing::error!(%error, "committing log offsets failed; they will be replayed");
            }
        });
        let _ = written.await;
        tokio::time::sleep_until(began + SYNC_INTERVAL).await;
    }
}

/// The last offset per partition, in arrival order: a partition's later offsets win.
fn latest(offsets: Vec<OffsetCommit>) -> Vec<OffsetCommit> {
    let mut by_partition = std::collections::BTreeMap::new();
    for (topic, partition, offset) in offsets {
        by_partition.insert((topic, partition), offset);
    }
    by_partition.into_iter().map(|((topic, partition), offset)| (topic, partition, offset)).collect()
}
