//! The live sink: [`LiveSink`] writes one batch of the live dataflow's output (playlists, then
//! documents through one shared committer) and reports when it is durable.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc};

use crate::dataflow::live::SinkOp;
use crate::dataflow::live::thumbnails::Thumbnails;
use crate::dataflow::retry;
use crate::log::EventLog;
use crate::metrics::Metrics;
use crate::model::{ChunkStatus, PlaylistNotice, RecordingEvent, Topic, keys, now_us};
use crate::storage::metadata::{MetaWrite, MetadataError, MetadataStore};
use crate::storage::object::{ObjectStore, Rewrite, StoreError};

#[derive(Debug, Error)]
pub enum SinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

pub struct LiveSink {
    /// Where an ended stream's recording is announced (`vod-chunks`).
    pub log: EventLog,
    pub store: Arc<dyn ObjectStore>,
    pub metadata: Arc<dyn MetadataStore>,
    pub metrics: Arc<Metrics>,
    pub notices: broadcast::Sender<PlaylistNotice>,
    thumbnails: Arc<Thumbnails>,
    commits: mpsc::Sender<Commit>,
}

/// A batch's playlists, written: per stream, whether it ended and when its playlist was written.
pub struct PlaylistsWritten {
    pub streams: HashMap<String, PlaylistWritten>,
}

#[derive(Clone, Copy)]
pub struct PlaylistWritten {
    pub ended: bool,
    pub at_us: u64,
}

/// Documents waiting for the committer, and whom to tell once they are durable.
struct Commit {
    writes: Vec<MetaWrite>,
    written: PlaylistsWritten,
    done: Box<dyn FnOnce() + Send>,
}

/// Commits gathered into one metadata transaction at most.
const MAX_COMMIT_GROUP: usize = 4096;

/// At most one metadata transaction per interval: documents that arrive meanwhile go out
/// together. Each transaction rewrites the pages it touches, so fewer, larger ones write far
/// less (BENCHMARKS.md). Playlists are written before this point, so chunk latency does not
/// include it.
const DOCUMENT_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(25);

impl LiveSink {
    /// Creates the sink and its committer task, shared by every worker: documents of batches
    /// that queue up while a transaction is written go out together in the next one.
    pub fn start(
        log: EventLog,
        store: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        metrics: Arc<Metrics>,
        notices: broadcast::Sender<PlaylistNotice>,
        thumbnails: Arc<Thumbnails>,
    ) -> Arc<LiveSink> {
        let (commits, queue) = mpsc::channel(4096);
        let sink = Arc::new(LiveSink { log, store, metadata, metrics, notices, thumbnails, commits });
        tokio::spawn(commit_loop(Arc::downgrade(&sink), queue));
        sink
    }

    /// Writes the newest playlist of each stream in the batch, all in one store call, and
    /// stamps them with when that call finished. Idempotent.
    pub async fn write_playlists(&self, ops: &[SinkOp]) -> Result<PlaylistsWritten, SinkError> {
        let mut playlists: HashMap<&str, (&str, bool)> = HashMap::new();
        for op in ops {
            if let SinkOp::Playlist { stream_id, body, ended, .. } = op {
                playlists.insert(stream_id, (body, *ended));
            }
        }
        let rewrites = playlists
            .iter()
            .map(|(stream_id, (body, ended))| Rewrite {
                key: keys::live_playlist(stream_id),
                bytes: Bytes::copy_from_slice(body.as_bytes()),
                last: *ended,
            })
            .collect();
        self.store.rewrite_all(rewrites).await?;
        self.metrics.playlists_written_total.inc_by(playlists.len() as u64);
        let at_us = now_us();
        let streams = playlists
            .into_iter()
            .map(|(stream_id, (_, ended))| (stream_id.to_string(), PlaylistWritten { ended, at_us }))
            .collect();
        Ok(PlaylistsWritten { streams })
    }

    /// The batch's documents, stamped with when their playlists were written; latencies are
    /// observed here.
    pub fn documents(&self, ops: Vec<SinkOp>, written: &PlaylistsWritten) -> Vec<MetaWrite> {
        let mut writes = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                SinkOp::Playlist { .. } => {}
                SinkOp::Stream(mut doc) => {
                    if let Some(playlist) = written.streams.get(&doc.stream_id) {
                        doc.manifest_updated_at_ms = Some(playlist.at_us / 1000);
                    }
                    writes.push(MetaWrite::Stream(*doc));
                }
                SinkOp::Chunk { mut doc, overwrite } => {
                    let playlist = written.streams.get(&doc.stream_id);
                    if let (ChunkStatus::Live, Some(playlist)) = (doc.status, playlist) {
                        let latency_us = playlist.at_us.saturating_sub(doc.chunk.ingested_at_us);
                        self.metrics.chunk_processing_latency_seconds.observe(latency_us as f64 / 1e6);
                        doc.processing_latency_ms = Some(latency_us as f64 / 1e3);
                        doc.manifest_updated_at_ms = Some(playlist.at_us / 1000);
                        self.thumbnails.offer(&doc.stream_id, &doc.chunk.object_key);
                    }
                    writes.push(MetaWrite::Chunk { doc: *doc, overwrite });
                }
                SinkOp::DeadLetter(doc) => writes.push(MetaWrite::DeadLetter(doc)),
                SinkOp::Gaps(doc) => writes.push(MetaWrite::Gaps(doc)),
            }
        }
        writes
    }

    /// Queues documents for the committer; `done` runs once they are durable (in queue order).
    pub async fn commit(
        &self,
        writes: Vec<MetaWrite>,
        written: PlaylistsWritten,
        done: impl FnOnce() + Send + 'static,
    ) {
        let commit = Commit { writes, written, done: Box::new(done) };
        if self.commits.send(commit).await.is_err() {
            tracing::warn!("metadata committer has stopped; batch left uncommitted (it will be replayed)");
        }
    }

    /// Logs `stream_recorded` for a stream whose end is durable, before its offsets may be
    /// committed: the VOD path makes the recording of the chunk documents now stored (a replay
    /// announces it again, which changes nothing).
    async fn announce_recording(&self, stream_id: &str, ended_at_ms: u64) {
        let event = RecordingEvent::new(stream_id, ended_at_ms);
        let payload = serde_json::to_vec(&event).expect("a recording event serializes");
        retry(&self.metrics, || self.log.append(Topic::VodChunks, stream_id, payload.clone())).await;
    }
}

async fn commit_loop(sink: std::sync::Weak<LiveSink>, mut queue: mpsc::Receiver<Commit>) {
    let mut group = Vec::new();
    while queue.recv_many(&mut group, MAX_COMMIT_GROUP).await > 0 {
        let began = tokio::time::Instant::now();
        let Some(sink) = sink.upgrade() else { break };
        let writes: Vec<MetaWrite> = group.iter_mut().flat_map(|c| std::mem::take(&mut c.writes)).collect();
        let writes = Arc::new(writes);
        retry(&sink.metrics, || sink.metadata.apply_buffered(Arc::clone(&writes))).await;
        for commit in group.drain(..) {
            for (stream_id, written) in commit.written.streams.iter().filter(|(_, w)| w.ended) {
                sink.announce_recording(stream_id, written.at_us / 1000).await;
            }
            for (stream_id, PlaylistWritten { ended, .. }) in commit.written.streams {
                let _ = sink.notices.send(PlaylistNotice { stream_id, ended });
            }
            (commit.done)();
        }
        drop(sink);
        tokio::time::sleep_until(began + DOCUMENT_COMMIT_INTERVAL).await;
    }
}
