//! What the VOD stages of every worker in a process share: the backends, the FFmpeg pool, the
//! work directory, and the videos under way.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Mutex, Semaphore};

use crate::backends::Backends;
use crate::config::TranscodeMode;
use crate::dataflow::retry;
use crate::metrics::Metrics;
use crate::model::VodDoc;
use crate::storage::metadata::MetaWrite;
use crate::storage::object::StoreError;

pub struct VodContext {
    pub backends: Backends,
    pub metrics: Arc<Metrics>,
    /// Bounds the FFmpeg transcodes running at once.
    pub pool: Semaphore,
    pub mode: TranscodeMode,
    /// FFmpeg writes here before outputs move into the object store.
    work_dir: PathBuf,
    /// Taken for every read-modify-write of a VOD document, so that two never interleave
    /// (a stage and a progress report, say).
    doc_writes: Mutex<()>,
    /// Videos between probe and finish: a duplicate event meanwhile is not run twice.
    active: std::sync::Mutex<HashSet<String>>,
}

impl VodContext {
    pub fn new(
        backends: Backends,
        metrics: Arc<Metrics>,
        transcodes_at_once: usize,
        mode: TranscodeMode,
        work_dir: PathBuf,
    ) -> Arc<VodContext> {
        Arc::new(VodContext {
            backends,
            metrics,
            pool: Semaphore::new(transcodes_at_once),
            mode,
            work_dir,
            doc_writes: Mutex::new(()),
            active: Default::default(),
        })
    }

    /// Marks a video under way; false if it already is.
    pub fn begin(&self, stream_id: &str) -> bool {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).insert(stream_id.to_string())
    }

    /// Marks a video no longer under way.
    pub fn end(&self, stream_id: &str) {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).remove(stream_id);
    }

    /// Where FFmpeg writes a video's renditions.
    pub fn output_dir(&self, stream_id: &str) -> PathBuf {
        self.work_dir.join(stream_id)
    }

    /// Where a remote store's source is downloaded to, once per video and process.
    fn source_dir(&self, stream_id: &str) -> PathBuf {
        self.work_dir.join(format!("{stream_id}.source"))
    }

    /// Removes a video's work files (an interrupted attempt's, or a finished one's).
    pub async fn clean_up(&self, stream_id: &str) {
        let _ = tokio::fs::remove_dir_all(self.output_dir(stream_id)).await;
        let _ = tokio::fs::remove_dir_all(self.source_dir(stream_id)).await;
    }

    /// The source as a file FFmpeg reads: the object itself on a local store, else the
    /// download the probe made (or a new one after a restart).
    pub async fn source_file(&self, stream_id: &str, key: &str) -> Result<PathBuf, StoreError> {
        let dir = self.source_dir(stream_id);
        let downloaded = dir.join(key.rsplit('/').next().unwrap_or(key));
        if tokio::fs::try_exists(&downloaded).await.unwrap_or(false) {
            return Ok(downloaded);
        }
        self.backends.store.read_path(key, &dir).await
    }

    /// Applies `change` to a video's document and writes it (retrying until it is stored).
    pub async fn update(&self, stream_id: &str, change: impl FnOnce(&mut VodDoc)) -> Option<VodDoc> {
        self.upsert(stream_id, None, change).await
    }

    /// Like `update`, starting from `new` when the video has no document yet (an event a
    /// producer put in the log itself).
    pub async fn upsert(
        &self,
        stream_id: &str,
        new: Option<VodDoc>,
        change: impl FnOnce(&mut VodDoc),
    ) -> Option<VodDoc> {
        let _one_writer = self.doc_writes.lock().await;
        let metadata = &self.backends.metadata;
        let mut doc = retry(&self.metrics, || metadata.get_vod(stream_id)).await.or(new)?;
        change(&mut doc);
        let writes = Arc::new(vec![MetaWrite::Vod(doc.clone())]);
        retry(&self.metrics, || metadata.apply(writes.clone())).await;
        Some(doc)
    }
}
