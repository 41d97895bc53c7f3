//! Where documents live: live stream and chunk metadata, VOD documents and dead letters, behind
//! one trait so the embedded database and MongoDB are interchangeable.

pub mod embedded;
pub mod mongodb;

use async_trait::async_trait;
use thiserror::Error;

use super::BoxError;
use crate::model::auth::TokenDoc;
use crate::model::jobs::JobDoc;
use crate::model::library::VodQuery;
use crate::model::{DeadLetterDoc, LiveChunkDoc, LiveGapsDoc, LiveStreamDoc, VodDoc};

#[derive(Debug, Error)]
pub enum MetadataError {
    /// The embedded database failed: its file, or a transaction.
    #[error("embedded metadata store: {0}")]
    Embedded(#[source] Box<redb::Error>),
    /// MongoDB failed a request; the message names the server, never a password.
    #[error("{message}")]
    Mongo {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("metadata document is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The embedded database's file is damaged: redb refused it, or panicked reading it.
    #[error(
        "metadata file {path} is damaged ({problem}); stop segflow and move the file away: the next start \
         rebuilds it from the event log"
    )]
    Damaged { path: std::path::PathBuf, problem: String },
    /// The store's own blocking work did not finish (it panicked, or the runtime is stopping).
    #[error("metadata store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Whether a metadata store is the one the event log's committed offsets were processed into.
/// The marker is one small record (the `segflow_marker` table or collection) that segflow
/// writes once, when it has made sure the store will hold everything the log has: a store
/// without it is new or lost, and is filled from the log (`backends.rs` decides, for every pair
/// of log and store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Marked: it holds what the committed offsets say was processed.
    Present,
    /// No marker but documents of the dataflow (streams, chunks, videos, dead letters): made by
    /// a segflow from before the marker. API tokens do not count: `segflow token create` writes
    /// them into a new store too.
    Unmarked,
    /// No marker and no documents of the dataflow: new, or lost (a deleted file, a dropped
    /// database).
    Absent,
}

/// The marker's one record: when it was written, and by which segflow.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MarkerDoc {
    pub marked_at_ms: u64,
    pub segflow_version: String,
}

impl MarkerDoc {
    pub fn now() -> MarkerDoc {
        MarkerDoc { marked_at_ms: crate::model::now_ms(), segflow_version: env!("CARGO_PKG_VERSION").into() }
    }
}

/// Name of the marker's table (embedded) or collection (MongoDB).
pub const MARKER_TABLE: &str = "segflow_marker";
/// Key (embedded) or `_id` (MongoDB) of the marker's one record.
pub const MARKER_KEY: &str = "marker";

/// One write of a batch; a batch is applied in one transaction.
#[derive(Clone, Debug)]
pub enum MetaWrite {
    Stream(LiveStreamDoc),
    /// Upsert keyed by `(stream_id, chunk_index)`; with `overwrite: false`, only if absent.
    Chunk {
        doc: LiveChunkDoc,
        overwrite: bool,
    },
    /// Keyed by `(topic, partition, offset)`, so a replay writes it once.
    DeadLetter(DeadLetterDoc),
    /// Upsert keyed by `stream_id`.
    Vod(Box<VodDoc>),
    /// Removes a video's document, and a recording's stream, chunk and gap documents (absent
    /// is fine).
    DeleteVod(String),
    /// Upsert keyed by `stream_id`.
    Gaps(LiveGapsDoc),
    /// Upsert keyed by `token_id`.
    Token(TokenDoc),
    /// Upsert keyed by `job_id`.
    Job(Box<JobDoc>),
}

#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// `embedded` or `mongodb`, as `/health` reports it.
    fn kind(&self) -> &'static str;
    /// Applies a batch in one transaction (shared, so a failed batch can be retried as is).
    async fn apply(&self, writes: std::sync::Arc<Vec<MetaWrite>>) -> Result<(), MetadataError>;
    /// Like `apply`, visible at once but durable only after the next [`Self::sync`]: the
    /// dataflow's documents, made durable together before log offsets are committed.
    async fn apply_buffered(&self, writes: std::sync::Arc<Vec<MetaWrite>>) -> Result<(), MetadataError> {
        self.apply(writes).await
    }
    /// Makes every batch applied so far durable.
    async fn sync(&self) -> Result<(), MetadataError> {
        Ok(())
    }
    async fn get_stream(&self, stream_id: &str) -> Result<Option<LiveStreamDoc>, MetadataError>;
    async fn list_streams(&self) -> Result<Vec<LiveStreamDoc>, MetadataError>;
    async fn get_chunk(&self, stream_id: &str, chunk_index: u64) -> Result<Option<LiveChunkDoc>, MetadataError>;
    /// Chunks of a stream with `chunk_index >= from`, in order, at most `limit`.
    async fn chunks(&self, stream_id: &str, from: u64, limit: usize) -> Result<Vec<LiveChunkDoc>, MetadataError>;
    async fn get_vod(&self, stream_id: &str) -> Result<Option<VodDoc>, MetadataError>;
    async fn get_job(&self, job_id: &str) -> Result<Option<JobDoc>, MetadataError>;
    /// A page of the jobs, newest first, and how many there are in all.
    async fn list_jobs(&self, limit: u64, skip: u64) -> Result<(Vec<JobDoc>, u64), MetadataError>;
    /// A page of the videos `query` matches, in its order, and how many it matches in all.
    async fn list_vods(&self, query: &VodQuery) -> Result<(Vec<VodDoc>, u64), MetadataError>;
    /// The gap slots of a live stream's window (none until it had one).
    async fn get_gaps(&self, stream_id: &str) -> Result<Option<LiveGapsDoc>, MetadataError>;
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterDoc>, MetadataError>;
    async fn get_token(&self, token_id: &str) -> Result<Option<TokenDoc>, MetadataError>;
    async fn list_tokens(&self) -> Result<Vec<TokenDoc>, MetadataError>;
    /// Whether the store carries its marker, or else holds documents of the dataflow.
    async fn marker(&self) -> Result<Marker, MetadataError>;
    /// Writes the marker durably (idempotent); see [`Marker`] for when.
    async fn write_marker(&self) -> Result<(), MetadataError>;
    /// Whether the store answers (for `/health`).
    async fn health(&self) -> Result<(), MetadataError> {
        Ok(())
    }
}
