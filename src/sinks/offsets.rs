//! Commits log offsets off the timely workers, each time after making the metadata they
//! depend on durable: documents are written buffered, and one sync covers them all.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::metadata::MetadataStore;
use super::retry;
use crate::metrics::Metrics;
use crate::model::Topic;
use crate::sources::embedded_log::EventLog;

/// `(topic, partition, next offset)`: everything before it is durably processed.
pub type OffsetCommit = (Topic, u32, u64);

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

async fn commit_loop(
    log: EventLog,
    metadata: Arc<dyn MetadataStore>,
    metrics: Arc<Metrics>,
    mut queue: mpsc::UnboundedReceiver<Vec<OffsetCommit>>,
) {
    let mut batches = Vec::new();
    while queue.recv_many(&mut batches, 64).await > 0 {
        retry(&metrics, || metadata.sync()).await;
        // In arrival order: a partition's later offsets overwrite its earlier ones.
        let offsets: Vec<OffsetCommit> = batches.drain(..).flatten().collect();
        let log = log.clone();
        let written = tokio::task::spawn_blocking(move || {
            for (topic, partition, offset) in offsets {
                if let Err(error) = log.commit(topic, partition, offset) {
                    tracing::error!(partition, %error, "committing a log offset failed; it will be replayed");
                }
            }
        });
        let _ = written.await;
    }
}
