//! Where segment and playlist bytes live: a small trait, so the dataflow and the API work the
//! same on a local directory or on S3 / MinIO.

pub mod local;
pub mod s3;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use thiserror::Error;

use super::BoxError;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("object is larger than {0} bytes")]
    TooLarge(u64),
    #[error("object is empty")]
    Empty,
    /// The bytes being stored stopped coming: the client's upload broke off.
    #[error("reading the upload failed: {0}")]
    Upload(#[source] std::io::Error),
    /// An object an operation needs is not there.
    #[error("no object {0}")]
    NotFound(String),
    /// A write-once key holds other bytes already: stored media is never replaced.
    #[error("{0} is stored already with other bytes; stored media is never replaced")]
    Exists(String),
    #[error("object store I/O on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The store's own blocking work did not finish (it panicked, or the runtime is stopping).
    #[error("object store task on {key} failed: {source}")]
    Task {
        key: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("object store ({backend}) on {key}: {message}")]
    Backend {
        backend: &'static str,
        key: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

/// How a player gets an object's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playback {
    /// From this file, which the API serves (with `Range`).
    File(PathBuf),
    /// From this URL, which serves the object itself for a while (an S3 presigned GET).
    Redirect(String),
}

/// The HTTP `Content-Type` of an object, from its key's extension.
pub fn content_type(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, ext)| ext) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("aac") => "audio/aac",
        Some("mov") => "video/quicktime",
        Some("mkv") => "video/x-matroska",
        Some("webm") => "video/webm",
        Some("mp3") => "audio/mpeg",
        Some("m4a") => "audio/mp4",
        Some("wav") => "audio/wav",
        Some("flac") => "audio/flac",
        Some("opus") => "audio/ogg",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("vtt") => "text/vtt",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// `Content-Disposition` of a download saved as `file_name` (a name segflow made: plain ASCII).
pub fn attachment(file_name: &str) -> String {
    format!("attachment; filename=\"{file_name}\"")
}

/// Writes the objects at `keys` one after the other into a file at `path`, which appears
/// whole: how MPEG-TS chunks, or an fMP4 init section and its fragments, become one file.
pub async fn concatenate(store: &dyn ObjectStore, keys: &[String], path: &Path) -> Result<(), StoreError> {
    use tokio::io::AsyncWriteExt;
    let shown = path.display().to_string();
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io(&shown))?;
    }
    let partial = path.with_extension("partial");
    let mut out = tokio::fs::File::create(&partial).await.map_err(io(&shown))?;
    for key in keys {
        let bytes = store.get_bytes(key).await?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
        out.write_all(&bytes).await.map_err(io(&shown))?;
    }
    out.sync_all().await.map_err(io(&shown))?;
    tokio::fs::rename(&partial, path).await.map_err(io(&shown))
}

/// Maps an I/O error on `key`.
fn io(key: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { key: key.to_string(), source }
}

/// Maps a failed blocking task working on `key`.
fn task(key: &str) -> impl FnOnce(tokio::task::JoinError) -> StoreError + '_ {
    move |source| StoreError::Task { key: key.to_string(), source }
}

/// Size and SHA-256 (lower-case hex, as decoded checksums are) of stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub size: u64,
    pub sha256: String,
}

/// A write-once `key` was found taken while storing `ours`: the same bytes are the upload
/// retried, and taken; other bytes are refused.
fn same_bytes_or_exists(key: &str, existing: Option<StoredObject>, ours: &StoredObject) -> Result<(), StoreError> {
    match existing {
        Some(existing) if existing == *ours => Ok(()),
        _ => Err(StoreError::Exists(key.to_string())),
    }
}

pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A new version of a small object that is rewritten often.
pub struct Rewrite {
    pub key: String,
    pub bytes: Bytes,
    /// No further version follows (the stream ended).
    pub last: bool,
}

/// Rewrites in flight at once on stores that write each over the network.
const REWRITES_AT_ONCE: usize = 4;

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// `local` or `s3`, as `/health` reports it.
    fn kind(&self) -> &'static str;
    /// Writes `bytes` at `key`, replacing it atomically.
    async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<(), StoreError>;
    /// Replaces small objects that are rewritten often (live playlists), each atomically like
    /// [`put_bytes`](Self::put_bytes), several at once. A store may keep spare copies to make
    /// rewrites cheap, and drops an object's once its [`Rewrite::last`] says none follows.
    async fn rewrite_all(&self, rewrites: Vec<Rewrite>) -> Result<(), StoreError> {
        futures_util::stream::iter(rewrites.into_iter().map(|r| async move { self.put_bytes(&r.key, r.bytes).await }))
            .buffer_unordered(REWRITES_AT_ONCE)
            .try_collect()
            .await
    }
    /// Streams `body` to `key`, hashing it on the way; refuses more than `max_bytes` or none,
    /// leaving nothing behind. The object appears atomically and durably, and is write-once:
    /// if `key` holds other bytes already (however close two uploads race) it is refused with
    /// [`StoreError::Exists`]; the same bytes again are taken (a retried upload).
    async fn put_stream(&self, key: &str, body: ByteStream, max_bytes: u64) -> Result<StoredObject, StoreError>;
    /// Whether an object is there (cheaper than [`stat_sha256`](Self::stat_sha256)).
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Size and SHA-256 of an object, `None` if absent.
    async fn stat_sha256(&self, key: &str) -> Result<Option<StoredObject>, StoreError>;
    /// Moves an object to a write-once key, as [`put_stream`](Self::put_stream) stores one.
    async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError>;
    /// Moves a finished local file (FFmpeg output) into the store at `key`, durably.
    async fn put_file(&self, key: &str, file: &std::path::Path) -> Result<(), StoreError>;
    /// Like [`put_file`](Self::put_file), leaving the file where it is (FFmpeg's segments are
    /// published while it still writes their rendition).
    async fn put_copy(&self, key: &str, file: &std::path::Path) -> Result<(), StoreError>;
    /// Removes an object; absent is fine.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Removes every object whose key starts with `prefix` (`{bucket}/{folder}/`); none is
    /// fine. Returns how many went.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;
    /// A file FFmpeg can read the object from: the object itself on a local store, else a
    /// download into the directory `scratch`.
    async fn read_path(&self, key: &str, scratch: &Path) -> Result<PathBuf, StoreError>;
    /// The whole object (playlists and other small objects), `None` if absent.
    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    /// Where a player gets the object from, for at least `ttl`.
    async fn playback(&self, key: &str, ttl: Duration) -> Result<Playback, StoreError>;
    /// Like [`playback`](Self::playback), for a download saved as `file_name`: a redirect then
    /// asks the store to answer with that `Content-Disposition`.
    async fn download(&self, key: &str, ttl: Duration, _file_name: &str) -> Result<Playback, StoreError> {
        self.playback(key, ttl).await
    }
    /// Whether the store answers (for `/health`).
    async fn health(&self) -> Result<(), StoreError>;
}
