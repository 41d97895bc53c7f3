//! The write path: how encoders' segments, producers' chunk events and uploads become events
//! in the log. Bytes are stored first (hashed on the way), then their event is appended; an
//! upload is acknowledged once both are durable.
//!
//! Documents are the dataflow's to write, with one exception made here: the first version of
//! a stream's or a video's document, written before its first event, so that it can be found
//! the moment its id is returned. Every later version comes from the dataflow.

mod jobs;
mod live;
mod pushed;
mod vod;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::broadcast;

pub use live::{ChunkAccepted, SegmentInfo, StartStream, StartedStream, extension};
pub use pushed::RequestInFlight;
pub use vod::Upload;

use crate::backends::Backends;
use crate::log::LogError;
use crate::metrics::Metrics;
use crate::model::pushed_playlist::PushedPlaylistError;
use crate::model::{LiveStreamDoc, PlaylistNotice, Topic, ValidationError};
use crate::storage::metadata::MetadataError;
use crate::storage::object::StoreError;
use pushed::PushedSegments;

/// Why an upload or a control call was refused, or failed.
#[derive(Debug, Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A chunk event that is JSON, but not a chunk the stream can take.
    #[error("{0}")]
    InvalidChunk(#[source] ValidationError),
    #[error("only chunk events are accepted here")]
    NotAChunk,
    #[error("body stream_id {0:?} differs from the URL's")]
    OtherStream(String),
    #[error(transparent)]
    Playlist(#[from] PushedPlaylistError),
    #[error("the uploaded video is empty")]
    EmptyUpload,
    #[error("no stream {0:?}")]
    NoStream(String),
    #[error("stream {0} has ended")]
    Ended(String),
    #[error("chunk {seq} of {stream_id} is already accepted")]
    AlreadyAccepted { stream_id: String, seq: u64 },
    #[error("video {0} already exists")]
    VideoExists(String),
    /// A value of the request outside what segflow takes; the message says the rule.
    #[error("{0}")]
    OutOfRange(String),
    #[error("object {0:?} is not in the object store")]
    NoObject(String),
    #[error("stream {0} is ending, but its final playlist was not written within {1:?}")]
    EndNotWritten(String, std::time::Duration),
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

pub use crate::model::library::{MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS};

/// Refused when `text` is longer than `max_chars`.
pub fn check_length(what: &str, text: &str, max_chars: usize) -> Result<(), IngestError> {
    if text.chars().count() > max_chars {
        return Err(IngestError::OutOfRange(format!("{what} is longer than {max_chars} characters")));
    }
    Ok(())
}

/// The limits and defaults of the write path, from the config.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_segment_bytes: u64,
    pub max_upload_bytes: u64,
    pub default_target_duration_s: u64,
    pub default_dvr_window: u64,
    pub max_sequence_jump: u64,
}

/// The write path of one engine, shared by every request.
pub struct Ingest {
    backends: Backends,
    metrics: Arc<Metrics>,
    limits: Limits,
    pushed: Arc<PushedSegments>,
    live: LiveStreams,
    /// Told once the dataflow has written a stream's playlist: control calls wait for it.
    notices: broadcast::Sender<PlaylistNotice>,
    /// One process of a cluster: another one's workers may own a stream, so its notices never
    /// come here and nothing about a stream is cached; the documents are read instead.
    clustered: bool,
}

impl Ingest {
    pub fn new(
        backends: Backends,
        metrics: Arc<Metrics>,
        limits: Limits,
        notices: broadcast::Sender<PlaylistNotice>,
        clustered: bool,
    ) -> Ingest {
        let live = LiveStreams { cache: !clustered, ..Default::default() };
        Ingest { backends, metrics, limits, pushed: Arc::default(), live, notices, clustered }
    }

    /// Appends an event to `topic`, keyed by `key`; resolves once it is durable.
    async fn append(&self, topic: Topic, key: &str, event: &impl serde::Serialize) -> Result<(), IngestError> {
        let payload = serde_json::to_vec(event)?;
        self.backends.log.append(topic, key, payload).await?;
        self.metrics.log_appends_total.with_label_values(&[topic.name()]).inc();
        Ok(())
    }
}

/// Live streams known to take chunks: their documents as of start (status and target
/// duration do not change while live), with their newest key and a head that lags the real
/// one, so that a segment costs no metadata read; an ended stream is dropped and read afresh.
/// Off (`cache` false) on a cluster, where another process may end the stream or change its key.
#[derive(Default)]
struct LiveStreams {
    docs: Mutex<HashMap<String, LiveStreamDoc>>,
    cache: bool,
}

impl LiveStreams {
    fn docs(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveStreamDoc>> {
        self.docs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, stream_id: &str) -> Option<LiveStreamDoc> {
        self.docs().get(stream_id).cloned()
    }

    fn insert(&self, doc: &LiveStreamDoc) {
        if self.cache {
            self.docs().insert(doc.stream_id.clone(), doc.clone());
        }
    }

    /// Moves a cached stream's head up to `head` (only that: its key may be newer here).
    fn advance_head(&self, stream_id: &str, head: u64) {
        if let Some(doc) = self.docs().get_mut(stream_id) {
            doc.head_sequence = Some(doc.head_sequence.map_or(head, |h| h.max(head)));
        }
    }

    fn remove(&self, stream_id: &str) {
        self.docs().remove(stream_id);
    }
}
