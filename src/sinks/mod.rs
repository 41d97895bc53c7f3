//! Sinks: the object store and metadata backends, and [`LiveSink`], which applies one batch of
//! the dataflow's output to them and reports when it is durable.

pub mod metadata;
pub mod object_store;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::broadcast;

use crate::dataflow::SinkOp;
use crate::metrics::Metrics;
use crate::model::{ChunkStatus, live_manifest_key, now_us};
use metadata::{MetaWrite, MetadataError, MetadataStore};
use object_store::{ObjectStore, StoreError};

#[derive(Debug, Error)]
pub enum SinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Told to the API after a batch is durable: a stream's playlist was written.
#[derive(Clone, Debug, PartialEq)]
pub struct PlaylistWritten {
    pub stream_id: String,
    pub ended: bool,
}

pub struct LiveSink {
    pub store: Arc<dyn ObjectStore>,
    pub metadata: Arc<dyn MetadataStore>,
    pub metrics: Arc<Metrics>,
    pub notices: broadcast::Sender<PlaylistWritten>,
}

/// A batch's playlists, written: when, and which streams (with their `ended` flag).
pub struct PlaylistsWritten {
    pub at_us: u64,
    pub streams: HashMap<String, bool>,
}

impl LiveSink {
    /// Writes the newest playlist of each stream in the batch. Idempotent.
    pub async fn write_playlists(&self, ops: &[SinkOp]) -> Result<PlaylistsWritten, SinkError> {
        let mut playlists: HashMap<&str, (&str, bool)> = HashMap::new();
        for op in ops {
            if let SinkOp::Playlist { stream_id, body, ended, .. } = op {
                playlists.insert(stream_id, (body, *ended));
            }
        }
        for (stream_id, (body, _)) in &playlists {
            self.store.put_bytes(&live_manifest_key(stream_id), Bytes::copy_from_slice(body.as_bytes())).await?;
            self.metrics.playlists_written_total.inc();
        }
        let streams = playlists.into_iter().map(|(id, (_, ended))| (id.to_string(), ended)).collect();
        Ok(PlaylistsWritten { at_us: now_us(), streams })
    }

    /// The batch's documents, stamped with when their playlists were written; latencies are
    /// observed here.
    pub fn documents(&self, ops: Vec<SinkOp>, written: &PlaylistsWritten) -> Arc<Vec<MetaWrite>> {
        let written_ms = written.at_us / 1000;
        let mut writes = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                SinkOp::Playlist { .. } => {}
                SinkOp::Stream(mut doc) => {
                    if written.streams.contains_key(&doc.stream_id) {
                        doc.manifest_updated_at_ms = Some(written_ms);
                    }
                    writes.push(MetaWrite::Stream(doc));
                }
                SinkOp::Chunk { mut doc, overwrite } => {
                    if doc.status == ChunkStatus::Live && written.streams.contains_key(&doc.stream_id) {
                        let latency_us = written.at_us.saturating_sub(doc.ingested_at_us);
                        self.metrics.chunk_processing_latency_seconds.observe(latency_us as f64 / 1e6);
                        doc.processing_latency_ms = Some(latency_us as f64 / 1e3);
                        doc.manifest_updated_at_ms = Some(written_ms);
                    }
                    writes.push(MetaWrite::Chunk { doc, overwrite });
                }
                SinkOp::DeadLetter(doc) => writes.push(MetaWrite::DeadLetter(doc)),
            }
        }
        Arc::new(writes)
    }

    /// Commits documents in one transaction, then tells the API which playlists are durable.
    pub async fn write_documents(
        &self,
        writes: Arc<Vec<MetaWrite>>,
        written: &PlaylistsWritten,
    ) -> Result<(), SinkError> {
        self.metadata.apply(writes).await?;
        for (stream_id, ended) in &written.streams {
            let _ = self.notices.send(PlaylistWritten { stream_id: stream_id.clone(), ended: *ended });
        }
        Ok(())
    }
}
