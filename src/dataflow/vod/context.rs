//! What the VOD stages of every worker in a process share: the backends, the FFmpeg pool, the
//! work directory, the videos under way, and the order of each video's events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore, oneshot};

use crate::backends::Backends;
use crate::config::TranscodeMode;
use crate::dataflow::retry;
use crate::media::live_playlist::object_uris;
use crate::media::transcode::RungOutput;
use crate::metrics::Metrics;
use crate::model::jobs::JobDoc;
use crate::model::{VodDoc, VodStatus, keys};
use crate::storage::metadata::{MetaWrite, MetadataError};
use crate::storage::object::{StoreError, concatenate};

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
    /// Videos between probe and finish: a duplicate event meanwhile is not run twice. `true`
    /// once the video is deleted: whoever ends its work removes it.
    active: std::sync::Mutex<HashMap<String, bool>>,
    turns: Arc<std::sync::Mutex<Turns>>,
    /// Per video being encoded, the rungs published so far: its master lists them until the
    /// video is ready.
    pub(super) playable: Mutex<HashMap<String, Vec<RungOutput>>>,
}

/// Per video, the newest job's ticket and the end of its turn.
#[derive(Default)]
struct Turns {
    next_ticket: u64,
    last: HashMap<String, (u64, oneshot::Receiver<()>)>,
}

/// A job's place among the jobs of one video: [`Turn::wait`] returns once every job taken
/// before it has dropped its turn, so documents change in the order of the video's events.
pub struct Turn {
    before: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
    ticket: u64,
    stream_id: String,
    turns: Arc<std::sync::Mutex<Turns>>,
}

impl Turn {
    pub async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            let _ = before.await; // a dropped turn ends it too
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        if turns.last.get(&self.stream_id).is_some_and(|(ticket, _)| *ticket == self.ticket) {
            turns.last.remove(&self.stream_id);
        }
    }
}

/// Spawns a task that calls `step(last, pct)` each time the progress sent on the returned
/// sender has moved a whole percent past the `last` one reported; once the sender is dropped,
/// the task ends.
pub fn report_each_percent<F, Fut>(mut step: F) -> (tokio::sync::watch::Sender<f64>, tokio::task::JoinHandle<()>)
where
    F: FnMut(f64, f64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (progress, mut reports) = tokio::sync::watch::channel(0.0f64);
    let reporter = tokio::spawn(async move {
        let mut reported = 0.0;
        while reports.changed().await.is_ok() {
            let pct = *reports.borrow_and_update();
            if pct - reported >= 1.0 {
                step(reported, pct).await;
                reported = pct;
            }
        }
    });
    (progress, reporter)
}

/// How often a transcode looks whether its video was deleted.
const DELETION_POLL: Duration = Duration::from_millis(500);

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
            turns: Default::default(),
            playable: Default::default(),
        })
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a video under way; false if it already is.
    pub fn begin(&self, stream_id: &str) -> bool {
        let mut active = self.active();
        if active.contains_key(stream_id) {
            return false;
        }
        active.insert(stream_id.to_string(), false);
        true
    }

    /// Marks a video no longer under way; true if it was deleted meanwhile, and the caller is
    /// to [`sweep`](Self::sweep) it.
    #[must_use]
    pub fn end(&self, stream_id: &str) -> bool {
        self.active().remove(stream_id).unwrap_or(false)
    }

    /// Ends a video's work here, and sweeps it if it was deleted meanwhile.
    pub async fn end_and_sweep_if_deleted(&self, stream_id: &str) {
        if self.end(stream_id) {
            self.sweep(stream_id).await;
        }
    }

    /// Marks a video deleted. True if its work is under way (and whoever ends it sweeps); else
    /// the video is now under way for the caller, who sweeps it and ends it.
    pub fn mark_deleted(&self, stream_id: &str) -> bool {
        let mut active = self.active();
        let under_way = active.contains_key(stream_id);
        active.insert(stream_id.to_string(), true);
        under_way
    }

    /// Whether this process marked the video deleted.
    pub fn is_deleted_here(&self, stream_id: &str) -> bool {
        self.active().get(stream_id).copied().unwrap_or(false)
    }

    /// Resolves once the video is deleted: marked here, or (its deletion ran in another process
    /// of a cluster) `deleting` or gone in the metadata store.
    pub async fn deleted(&self, stream_id: &str) {
        loop {
            tokio::time::sleep(DELETION_POLL).await;
            if self.is_deleted_here(stream_id) {
                return;
            }
            match self.backends.metadata.get_vod(stream_id).await {
                Ok(None) => return,
                Ok(Some(doc)) if doc.status == VodStatus::Deleting => return,
                _ => {}
            }
        }
    }

    /// The next turn among `stream_id`'s jobs: taken as its event arrives, on the worker, so
    /// turns follow the log's order.
    pub fn turn(&self, stream_id: &str) -> Turn {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let (done, end) = oneshot::channel();
        turns.next_ticket += 1;
        let ticket = turns.next_ticket;
        let before = turns.last.insert(stream_id.to_string(), (ticket, end)).map(|(_, before)| before);
        Turn { before, _done: done, ticket, stream_id: stream_id.to_string(), turns: self.turns.clone() }
    }

    /// Removes every object of a deleted video (source, renditions, poster, playlists), then its
    /// document and its work files. Retried until done: a crash meanwhile leaves the deletion's
    /// offset uncommitted, and the restart sweeps again.
    pub async fn sweep(&self, stream_id: &str) {
        let mut objects = 0;
        for prefix in keys::vod_prefixes(stream_id) {
            objects += retry(&self.metrics, || self.backends.store.delete_prefix(&prefix)).await;
        }
        let writes = Arc::new(vec![MetaWrite::DeleteVod(stream_id.to_string())]);
        retry(&self.metrics, || self.backends.metadata.apply(writes.clone())).await;
        self.clean_up(stream_id).await;
        self.metrics.vod_videos_total.with_label_values(&["deleted"]).inc();
        tracing::info!(stream_id, objects, "video deleted");
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
        self.playable.lock().await.remove(stream_id);
        let _ = tokio::fs::remove_dir_all(self.output_dir(stream_id)).await;
        let _ = tokio::fs::remove_dir_all(self.source_dir(stream_id)).await;
    }

    /// The source as a file FFmpeg reads: the object itself on a local store, else the
    /// download the probe made (or a new one after a restart); a recording's playlist (a
    /// recording's own source, or a job's) becomes the file of its chunks.
    pub async fn source_file(&self, stream_id: &str, key: &str) -> Result<PathBuf, StoreError> {
        let dir = self.source_dir(stream_id);
        if let Some(recorded) = keys::recording_of(key) {
            return self.recording_source(recorded, key, &dir).await;
        }
        let downloaded = dir.join(key.rsplit('/').next().unwrap_or(key));
        if tokio::fs::try_exists(&downloaded).await.unwrap_or(false) {
            return Ok(downloaded);
        }
        self.backends.store.read_path(key, &dir).await
    }

    /// A recording as one file FFmpeg reads: its chunks (after the init section, if any) one
    /// after the other; gaps are left out. Made once per process.
    async fn recording_source(&self, recorded: &str, key: &str, dir: &Path) -> Result<PathBuf, StoreError> {
        let playlist = self.backends.store.get_bytes(key).await?.ok_or_else(|| StoreError::NotFound(key.into()))?;
        let mut media = m3u8_rs::parse_media_playlist_res(&playlist)
            .map_err(|e| StoreError::Io { key: key.to_string(), source: std::io::Error::other(e.to_string()) })?;
        let fmp4 = media.segments.first().is_some_and(|s| s.map.is_some());
        let path = dir.join(if fmp4 { "recording.mp4" } else { "recording.ts" });
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let files: Vec<String> = object_uris(&mut media).map(|uri| keys::playback_object(recorded, uri)).collect();
        concatenate(self.backends.store.as_ref(), &files, &path).await?;
        Ok(path)
    }

    /// Applies `change` to a job's document (starting from `new` when it has none) and writes it.
    pub async fn upsert_job(
        &self,
        job_id: &str,
        new: Option<JobDoc>,
        change: impl FnOnce(&mut JobDoc),
    ) -> Option<JobDoc> {
        let metadata = &self.backends.metadata;
        self.read_modify_write(|| metadata.get_job(job_id), new, change, |doc| MetaWrite::Job(Box::new(doc))).await
    }

    /// Resolves once this process marked the video (or job) deleted.
    pub async fn deleted_here(&self, stream_id: &str) {
        while !self.is_deleted_here(stream_id) {
            tokio::time::sleep(DELETION_POLL).await;
        }
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
        let metadata = &self.backends.metadata;
        self.read_modify_write(|| metadata.get_vod(stream_id), new, change, |doc| MetaWrite::Vod(Box::new(doc))).await
    }

    /// One document read (else `new`), changed and written, retrying each until it is done;
    /// never two at once.
    async fn read_modify_write<D: Clone, F: Future<Output = Result<Option<D>, MetadataError>>>(
        &self,
        read: impl FnMut() -> F,
        new: Option<D>,
        change: impl FnOnce(&mut D),
        write: impl FnOnce(D) -> MetaWrite,
    ) -> Option<D> {
        let _one_writer = self.doc_writes.lock().await;
        let mut doc = retry(&self.metrics, read).await.or(new)?;
        change(&mut doc);
        let writes = Arc::new(vec![write(doc.clone())]);
        retry(&self.metrics, || self.backends.metadata.apply(writes.clone())).await;
        Some(doc)
    }
}
