//! Where documents live: live stream and chunk metadata, VOD documents and dead letters, behind
//! one trait so the embedded database and MongoDB are interchangeable.

pub mod embedded;
pub mod mongodb;

use async_trait::async_trait;
use thiserror::Error;

use super::BoxError;
use crate::model::auth::TokenDoc;
use crate::model::{DeadLetterDoc, LiveChunkDoc, LiveStreamDoc, VodDoc};

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
    Vod(VodDoc),
    /// Upsert keyed by `token_id`.
    Token(TokenDoc),
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
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterDoc>, MetadataError>;
    async fn get_token(&self, token_id: &str) -> Result<Option<TokenDoc>, MetadataError>;
    async fn list_tokens(&self) -> Result<Vec<TokenDoc>, MetadataError>;
    /// Whether the store answers (for `/health`).
    async fn health(&self) -> Result<(), MetadataError> {
        Ok(())
    }
}
