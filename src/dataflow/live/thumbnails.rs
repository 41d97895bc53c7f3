//! A live stream's thumbnail, refreshed from the first frame (a keyframe) of its newest chunk
//! while it is live: at most every [`REFRESH`] per stream, one FFmpeg run at a time per
//! process, off the playlist path (a refresh that finds the queue full is dropped).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::media::transcode::poster;
use crate::model::{StreamStatus, keys};
use crate::storage::metadata::MetadataStore;
use crate::storage::object::{ObjectStore, concatenate};

/// How often a stream's thumbnail is refreshed at most.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Refreshes waiting for FFmpeg at most.
const QUEUED: usize = 64;

/// Streams remembered at most; older entries go first when it is full.
const MAX_STREAMS: usize = 100_000;

pub struct Thumbnails {
    queue: mpsc::Sender<(String, String)>,
    /// When each stream's thumbnail was last asked for.
    offered: Mutex<HashMap<String, Instant>>,
    /// The thumbnailer: it holds the stores, so the engine stops it before it returns.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Thumbnails {
    /// Starts the process's thumbnailer, which writes each JPEG under `work_dir` first.
    pub fn start(store: Arc<dyn ObjectStore>, metadata: Arc<dyn MetadataStore>, work_dir: PathBuf) -> Arc<Thumbnails> {
        let (queue, mut asked) = mpsc::channel::<(String, String)>(QUEUED);
        let task = tokio::spawn(async move {
            while let Some((stream_id, chunk_key)) = asked.recv().await {
                if let Err(error) = refresh(&*store, &*metadata, &work_dir, &stream_id, &chunk_key).await {
                    tracing::warn!(stream_id, error, "live thumbnail not refreshed");
                }
            }
        });
        Arc::new(Thumbnails { queue, offered: Mutex::default(), task: Mutex::new(Some(task)) })
    }

    /// Stops the thumbnailer (FFmpeg killed if it runs) and waits until it has let go of the
    /// stores.
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Offers a stream's newest accepted chunk; taken if the stream's thumbnail is older than
    /// [`REFRESH`] and the queue has room.
    pub fn offer(&self, stream_id: &str, chunk_key: &str) {
        let now = Instant::now();
        let mut offered = self.offered.lock().unwrap_or_else(|e| e.into_inner());
        if offered.get(stream_id).is_some_and(|at| now.duration_since(*at) < REFRESH) {
            return;
        }
        if offered.len() >= MAX_STREAMS {
            offered.retain(|_, at| now.duration_since(*at) < REFRESH);
        }
        if self.queue.try_send((stream_id.to_string(), chunk_key.to_string())).is_ok() {
            offered.insert(stream_id.to_string(), now);
        }
    }
}

impl Drop for Thumbnails {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// The chunk (after the stream's init section, if it has one) in a scratch file, its first
/// frame as the stream's poster.
async fn refresh(
    store: &dyn ObjectStore,
    metadata: &dyn MetadataStore,
    work_dir: &std::path::Path,
    stream_id: &str,
    chunk_key: &str,
) -> Result<(), String> {
    let stream = metadata.get_stream(stream_id).await.map_err(|e| e.to_string())?;
    let Some(stream) = stream.filter(|s| s.status == StreamStatus::Live) else { return Ok(()) };
    let parts: Vec<String> = stream.init_object_key.into_iter().chain([chunk_key.to_string()]).collect();
    let scratch = work_dir.join(format!("thumbnail-{stream_id}"));
    let made = async {
        let chunk = scratch.join("chunk");
        concatenate(store, &parts, &chunk).await.map_err(|e| e.to_string())?;
        let jpeg = scratch.join(keys::VOD_POSTER_FILE);
        poster(&chunk, &jpeg, 0.0).await.map_err(|e| e.to_string())?;
        store.put_file(&keys::vod_poster(stream_id), &jpeg).await.map_err(|e| e.to_string())
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    made
}
