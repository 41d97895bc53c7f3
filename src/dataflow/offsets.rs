//! Log offsets follow the durable frontier: each worker notes, per time its log source emits
//! at, the offsets that time's records end at, and hands them on once the frontier has passed
//! it; a committer task commits them off the workers, each time after making the metadata they
//! depend on durable (documents are written buffered, and one sync covers them all).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::ProbeHandle;
use tokio::sync::mpsc;

use crate::dataflow::retry;
use crate::log::EventLog;
pub use crate::log::OffsetCommit;
use crate::metrics::Metrics;
use crate::model::Topic;
use crate::storage::metadata::MetadataStore;

/// Offsets to commit per time: `time -> partition -> next offset`.
pub type PendingCommits = Rc<RefCell<BTreeMap<u64, BTreeMap<u32, u64>>>>;

/// One topic's partitions of one worker: the offsets waiting for the durable frontier.
pub struct TopicOffsets {
    pub topic: Topic,
    pub durable_frontier: ProbeHandle<u64>,
    pub pending: PendingCommits,
}

impl TopicOffsets {
    pub fn new(topic: Topic) -> TopicOffsets {
        TopicOffsets { topic, durable_frontier: ProbeHandle::new(), pending: PendingCommits::default() }
    }

    /// Hands the offsets of every time the durable frontier has passed to the committer.
    pub fn commit_durable(&self, committer: &OffsetCommitter) {
        let mut ready: BTreeMap<u32, u64> = BTreeMap::new();
        let mut pending = self.pending.borrow_mut();
        while let Some(entry) = pending.first_entry() {
            if self.durable_frontier.less_equal(entry.key()) {
                break;
            }
            ready.extend(entry.remove());
        }
        committer.send(ready.into_iter().map(|(partition, offset)| (self.topic, partition, offset)).collect());
    }
}

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
/// How long a failed commit waits before it is tried again.
const COMMIT_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

async fn commit_loop(
    log: EventLog,
    metadata: Arc<dyn MetadataStore>,
    metrics: Arc<Metrics>,
    mut queue: mpsc::UnboundedReceiver<Vec<OffsetCommit>>,
) {
    let (mut batches, mut unconfirmed) = (Vec::new(), Vec::new());
    loop {
        // Offsets whose commit failed are retried after a pause, with whatever came meanwhile.
        let closed = if unconfirmed.is_empty() {
            queue.recv_many(&mut batches, 1024).await == 0
        } else {
            matches!(tokio::time::timeout(COMMIT_RETRY, queue.recv_many(&mut batches, 1024)).await, Ok(0))
        };
        if closed && unconfirmed.is_empty() {
            return;
        }
        let began = tokio::time::Instant::now();
        retry(&metrics, || metadata.sync()).await;
        let offsets = latest(unconfirmed.drain(..).chain(batches.drain(..).flatten()).collect());
        let (log, to_commit) = (log.clone(), offsets.clone());
        let committed = tokio::task::spawn_blocking(move || log.commit(&to_commit)).await;
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(error)) if !closed => {
                tracing::warn!(%error, "committing log offsets failed; retrying");
                unconfirmed = offsets;
            }
            Ok(Err(error)) => tracing::error!(%error, "last offset commit failed; a restart replays from the last one"),
            Err(error) => tracing::error!(%error, "offset commit task failed; a restart replays from the last one"),
        }
        if closed {
            return;
        }
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
