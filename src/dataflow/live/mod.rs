//! The live path of the dataflow: chunk events become each stream's DVR-window playlist and
//! documents, written durably before their log offsets are committed.
//!
//! ```text
//! log_source (live-chunks)
//!   -> decode_events     JSON -> checked command, or dead letter
//!   -> verify_checksums  (exchange by stream) hashes stored bytes a producer did not hash with us
//!   -> live_window       (exchange by stream) dedupe, order, gaps, checksums, DVR window, playlist
//!        \-> gap set changes -> gap_documents  (differential: counts per stream) --\
//!   -> durable_sink      <------------------------------------------------------/
//!                        playlist writer thread; capabilities held until documents are durable
//!   -> durable frontier -> offset commits
//! ```

pub mod decode;
pub mod durable_sink;
pub mod gaps;
pub mod sink;
pub mod stream;
pub mod thumbnails;
pub mod verify_checksums;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::Concat;
use timely::dataflow::{Scope, StreamVec};

use crate::dataflow::operators::log_source::{LogSourceConfig, log_source};
use crate::metrics::Metrics;
use crate::model::{
    DeadLetterDoc, LiveChunkDoc, LiveCommand, LiveGapsDoc, LiveStreamDoc, StreamStatus, Topic, stream_hash,
};
use crate::storage::metadata::{MetadataError, MetadataStore};
use crate::storage::object::ObjectStore;
use decode::DecodeEvents;
use durable_sink::DurableSink;
use gaps::GapDocuments;
use sink::LiveSink;
use stream::LiveStream;
use verify_checksums::VerifyChecksums;
use window::LiveWindowOp;

/// What the live operator receives: a checked command for one stream, or a dead letter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LiveInput {
    /// `partition` and `offset` locate the command's log record.
    Command {
        stream_id: String,
        partition: u32,
        offset: u64,
        command: LiveCommand,
    },
    Dead(DeadLetterDoc),
}

impl LiveInput {
    /// Exchange key: a stream's events all go to the worker `stream_hash % peers`.
    pub fn route(&self) -> u64 {
        match self {
            LiveInput::Command { stream_id, .. } => stream_hash(stream_id),
            LiveInput::Dead(dead) => dead.partition as u64,
        }
    }
}

/// What the sinks must write (documents boxed: the enum moves through several containers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SinkOp {
    /// The stream's live playlist, after `events_applied` events of the stream.
    Playlist {
        stream_id: String,
        body: String,
        events_applied: u64,
        ended: bool,
    },
    Stream(Box<LiveStreamDoc>),
    /// A chunk document; a `late` one must not overwrite an existing document.
    Chunk {
        doc: Box<LiveChunkDoc>,
        overwrite: bool,
    },
    DeadLetter(DeadLetterDoc),
    /// A stream's gap counts, from the gap set ([`gaps`]).
    Gaps(LiveGapsDoc),
}

/// Builds the live stages on this worker's partitions of `live-chunks`, starting from the
/// streams it owns as restored; the output only carries progress.
pub fn live_pipeline<'s>(
    scope: Scope<'s, u64>,
    source: LogSourceConfig,
    restored: HashMap<String, LiveStream>,
    store: Arc<dyn ObjectStore>,
    sink: Arc<LiveSink>,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
) -> StreamVec<'s, u64, ()> {
    let (sink_ops, gap_updates) = log_source(scope, source)
        .decode_events(Topic::LiveChunks)
        .verify_checksums(store, metrics.clone(), runtime.clone())
        .live_window(restored, metrics.clone());
    sink_ops.concat(gap_updates.gap_documents(metrics)).durable_sink(sink, runtime)
}

/// Rebuilds the state of the streams worker `index` of `peers` owns from their documents.
pub async fn restore_streams(
    metadata: &dyn MetadataStore,
    index: usize,
    peers: usize,
) -> Result<HashMap<String, LiveStream>, MetadataError> {
    let mut streams = HashMap::new();
    for doc in metadata.list_streams().await? {
        if stream_hash(&doc.stream_id) as usize % peers != index {
            continue;
        }
        let empty = LiveStream::new(doc);
        let chunks = match (empty.doc.status, empty.slots()) {
            (StreamStatus::Live, Some((start, head))) => {
                let slots = usize::try_from(head - start + 1).unwrap_or(usize::MAX);
                metadata.chunks(&empty.doc.stream_id, start, slots).await?
            }
            _ => Vec::new(),
        };
        streams.insert(empty.doc.stream_id.clone(), LiveStream::restore(empty.doc, chunks));
    }
    Ok(streams)
}
