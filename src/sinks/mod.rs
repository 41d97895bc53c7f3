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

impl LiveSink {
    /// Writes playlists first (the newest per stream), then every document in one
    /// transaction. Idempotent, so a batch may be retried or replayed.
    pub async fn write_batch(&self, ops: &[SinkOp]) -> Result<(), SinkError> {
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
        let written_us = now_us();
        let written_ms = written_us / 1000;
        let mut writes = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                SinkOp::Playlist { .. } => {}
                SinkOp::Stream(doc) => {
                    let mut doc = doc.clone();
                    if playlists.contains_key(doc.stream_id.as_str()) {
                        doc.manifest_updated_at_ms = Some(written_ms);
                    }
                    writes.push(MetaWrite::Stream(doc));
                }
                SinkOp::Chunk { doc, overwrite } => {
                    let mut doc = doc.clone();
                    if doc.status == ChunkStatus::Live && playlists.contains_key(doc.stream_id.as_str()) {
                        let latency_us = written_us.saturating_sub(doc.ingested_at_us);
                        self.metrics.chunk_processing_latency_seconds.observe(latency_us as f64 / 1e6);
                        doc.processing_latency_ms = Some(latency_us as f64 / 1e3);
                        doc.manifest_updated_at_ms = Some(written_ms);
                    }
                    writes.push(MetaWrite::Chunk { doc, overwrite: *overwrite });
                }
                SinkOp::DeadLetter(doc) => writes.push(MetaWrite::DeadLetter(doc.clone())),
            }
        }
        self.metadata.apply(writes).await?;
        for (stream_id, (_, ended)) in playlists {
            let _ = self.notices.send(PlaylistWritten { stream_id: stream_id.to_string(), ended });
        }
        Ok(())
    }
}
