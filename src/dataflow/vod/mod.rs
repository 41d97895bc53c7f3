//! The VOD path of the dataflow: an upload event is probed, fanned out into transcode tasks
//! for its ladder, transcoded by the FFmpeg pool off the workers, joined back per video, and
//! finished with a master playlist and the status `ready` (or `failed`, with the reason).
//!
//! ```text
//! log_source (vod-chunks) -> decode_vod
//!   -> async_stage Probe      (exchange by video)  ffprobe, ladder -> transcode tasks
//!   -> async_stage Transcode  (exchange by task)   FFmpeg pool (and the poster) -> one result per rung
//!   -> join_rungs             (exchange by video)  every rung done, or the first failure
//!   -> async_stage Finish     (exchange by video)  master playlist, status ready | failed
//!   -> probe                  durable frontier -> offset commits
//! ```

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;
use tokio::sync::{Mutex, Semaphore};

pub mod join_rungs;

use crate::config::TranscodeMode;
use crate::dataflow::live::decode::{dead_letter, parse_record};
use crate::dataflow::live::sink::retry;
use crate::dataflow::operators::async_stage::AsyncStage;
use crate::log::LogRecord;
use crate::media::ladder::{Rung, ladder};
use crate::media::master_playlist::master_playlist;
use crate::media::probe::probe;
use crate::media::transcode::{RungOutput, TranscodeJob, poster, transcode};
use crate::metrics::Metrics;
use crate::model::keys::{self, VOD_POSTER_FILE};
use crate::model::{
    DeadLetterDoc, DeadLetterReason, MediaInfo, Topic, VariantDoc, VodDoc, VodEvent, VodStatus, now_ms, stream_hash,
};
use crate::storage::metadata::{MetaWrite, MetadataStore};
use crate::storage::object::ObjectStore;
use join_rungs::JoinRungs;

/// Seconds per segment, and between keyframes, in every rung.
pub const SEGMENT_SECONDS: u32 = 2;

/// A decoded `vod-chunks` record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum VodInput {
    Upload(VodEvent),
    Dead(DeadLetterDoc),
}

/// Why a video failed, carried to the finish stage, which records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VodFailure {
    pub stream_id: String,
    pub uploaded_at_us: u64,
    pub error: String,
}

/// What the later stages know about a probed video.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VodPlan {
    pub stream_id: String,
    pub source_key: String,
    pub uploaded_at_us: u64,
    pub info: MediaInfo,
    pub rungs: Vec<Rung>,
}

/// One FFmpeg run: every rung (split mode) or one (per-rung mode).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TranscodeTask {
    pub plan: VodPlan,
    pub rungs: Vec<Rung>,
}

/// One finished rung, already in the object store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RungDone {
    pub plan: VodPlan,
    pub output: RungOutput,
}

pub type Step<T> = Result<T, VodFailure>;

impl VodFailure {
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }
}

fn video_route<T>(step: &Step<T>, id: impl Fn(&T) -> &str) -> u64 {
    stream_hash(step.as_ref().map_or_else(VodFailure::stream_id, id))
}

/// Shared by the VOD stages of every worker in a process.
pub struct VodJobs {
    pub store: Arc<dyn ObjectStore>,
    pub metadata: Arc<dyn MetadataStore>,
    pub metrics: Arc<Metrics>,
    /// Bounds the FFmpeg transcodes running at once.
    pub pool: Semaphore,
    pub mode: TranscodeMode,
    /// FFmpeg writes here before outputs move into the object store.
    pub work_dir: PathBuf,
    /// Serialises read-modify-write of VOD documents.
    docs: Mutex<()>,
    /// Videos between probe and finish: a duplicate event meanwhile is not run twice.
    active: std::sync::Mutex<HashSet<String>>,
}

impl VodJobs {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        metrics: Arc<Metrics>,
        jobs: usize,
        mode: TranscodeMode,
        work_dir: PathBuf,
    ) -> Arc<VodJobs> {
        Arc::new(VodJobs {
            store,
            metadata,
            metrics,
            pool: Semaphore::new(jobs),
            mode,
            work_dir,
            docs: Mutex::new(()),
            active: Default::default(),
        })
    }

    /// Where a remote store's source is downloaded to, once per video and process.
    fn source_dir(&self, stream_id: &str) -> PathBuf {
        self.work_dir.join(format!("{stream_id}.source"))
    }

    /// The source as a file FFmpeg reads: the object itself on a local store, else the
    /// download the probe made (or a new one after a restart).
    async fn source_file(&self, stream_id: &str, key: &str) -> Result<PathBuf, String> {
        let dir = self.source_dir(stream_id);
        let downloaded = dir.join(key.rsplit('/').next().unwrap_or(key));
        if tokio::fs::try_exists(&downloaded).await.unwrap_or(false) {
            return Ok(downloaded);
        }
        self.store.read_path(key, &dir).await.map_err(|e| format!("reading the source: {e}"))
    }

    /// Applies `change` to a video's document and writes it (retrying until it is stored).
    async fn update(&self, stream_id: &str, change: impl FnOnce(&mut VodDoc)) -> Option<VodDoc> {
        self.upsert(stream_id, None, change).await
    }

    /// Like `update`, starting from `new` when the video has no document yet (an event a
    /// producer put in the log itself).
    async fn upsert(&self, stream_id: &str, new: Option<VodDoc>, change: impl FnOnce(&mut VodDoc)) -> Option<VodDoc> {
        let _one_writer = self.docs.lock().await;
        let mut doc = retry(&self.metrics, || self.metadata.get_vod(stream_id)).await.or(new)?;
        change(&mut doc);
        let writes = Arc::new(vec![MetaWrite::Vod(doc.clone())]);
        retry(&self.metrics, || self.metadata.apply(writes.clone())).await;
        Some(doc)
    }
}

/// Builds the VOD stages on `records` read from `vod-chunks`; the output only carries progress.
pub fn vod_pipeline<'s>(
    records: StreamVec<'s, u64, LogRecord>,
    jobs: Arc<VodJobs>,
    runtime: tokio::runtime::Handle,
) -> StreamVec<'s, u64, ()> {
    let (probe_jobs, transcode_jobs, finish_jobs) = (jobs.clone(), jobs.clone(), jobs);
    records
        .map(decode_vod)
        .async_stage(
            "VodProbe",
            |input: &VodInput| match input {
                VodInput::Upload(event) => stream_hash(&event.stream_id),
                VodInput::Dead(dead) => dead.partition as u64,
            },
            runtime.clone(),
            move |input| probe_stage(probe_jobs.clone(), input),
        )
        .async_stage(
            "VodTranscode",
            |task: &Step<TranscodeTask>| match task {
                Ok(task) => stream_hash(&format!("{}/{}", task.plan.stream_id, task.rungs[0].name)),
                Err(failure) => stream_hash(&failure.stream_id),
            },
            runtime.clone(),
            move |task| transcode_stage(transcode_jobs.clone(), task),
        )
        .join_rungs(|done: &Step<RungDone>| video_route(done, |d| &d.plan.stream_id))
        .async_stage(
            "VodFinish",
            |joined: &Step<(VodPlan, Vec<RungOutput>)>| video_route(joined, |(plan, _)| &plan.stream_id),
            runtime,
            move |joined| finish_stage(finish_jobs.clone(), joined),
        )
}

/// Decodes one `vod-chunks` record.
pub fn decode_vod(record: LogRecord) -> VodInput {
    let topic = Topic::VodChunks;
    match parse_record::<VodEvent>(topic, &record) {
        Err(dead) => VodInput::Dead(dead),
        Ok(event) => match event.validate() {
            Ok(()) => VodInput::Upload(event),
            Err(error) => {
                VodInput::Dead(dead_letter(topic, &record, DeadLetterReason::InvalidEvent, error.to_string()))
            }
        },
    }
}

/// Probe: `processing`, ffprobe, ladder; then `transcoding` and the transcode tasks.
async fn probe_stage(jobs: Arc<VodJobs>, input: VodInput) -> Vec<Step<TranscodeTask>> {
    let event = match input {
        VodInput::Dead(dead) => {
            jobs.metrics.dead_letters_total.with_label_values(&[dead.reason.as_str()]).inc();
            let writes = Arc::new(vec![MetaWrite::DeadLetter(dead)]);
            retry(&jobs.metrics, || jobs.metadata.apply(writes.clone())).await;
            return Vec::new();
        }
        VodInput::Upload(event) => event,
    };
    let id = event.stream_id.clone();
    if !jobs.active.lock().expect("active lock").insert(id.clone()) {
        return Vec::new(); // the same video is already on its way
    }
    let fail =
        |error: String| vec![Err(VodFailure { stream_id: id.clone(), uploaded_at_us: event.uploaded_at_us, error })];
    // A replayed event of a finished video changes nothing; an unfinished one is redone.
    let new = VodDoc::from_event(&event);
    let started = jobs
        .upsert(&id, Some(new), |doc| {
            if !doc.status.is_final() {
                doc.set_status(VodStatus::Processing, now_ms());
                doc.progress_pct = 0.0;
            }
        })
        .await;
    match started {
        None => return fail(format!("no document for video {id}")),
        Some(doc) if doc.status.is_final() => {
            jobs.active.lock().expect("active lock").remove(&id);
            return Vec::new();
        }
        Some(_) => {}
    }
    let source = match jobs.source_file(&id, &event.source_key).await {
        Ok(path) => path,
        Err(e) => return fail(e),
    };
    let info = match probe(&source).await {
        Ok(info) => info,
        Err(e) => return fail(e.to_string()),
    };
    let rungs = ladder(&info);
    let _ = tokio::fs::remove_dir_all(jobs.work_dir.join(&id)).await; // an interrupted attempt's files
    let names: Vec<String> = rungs.iter().map(|r| r.name.clone()).collect();
    let has_audio = info.has_audio();
    jobs.update(&id, |doc| {
        doc.source = Some(info.clone());
        doc.rungs_planned = names;
        doc.poster_path = Some(keys::vod_poster(&id));
        doc.keyframe_aligned = true;
        doc.audio_track_id = has_audio.then(|| format!("audio-{id}"));
        doc.set_status(VodStatus::Transcoding, now_ms());
    })
    .await;
    let plan = VodPlan {
        stream_id: id.clone(),
        source_key: event.source_key.clone(),
        uploaded_at_us: event.uploaded_at_us,
        info,
        rungs,
    };
    // The fan-out: one task for the whole ladder, or one per rung (spread over workers).
    let groups: Vec<Vec<Rung>> = match jobs.mode {
        TranscodeMode::Split => vec![plan.rungs.clone()],
        TranscodeMode::PerRung => plan.rungs.iter().map(|r| vec![r.clone()]).collect(),
    };
    groups.into_iter().map(|rungs| Ok(TranscodeTask { plan: plan.clone(), rungs })).collect()
}

/// Transcode: one FFmpeg run from the pool; its rungs move into the object store.
async fn transcode_stage(jobs: Arc<VodJobs>, task: Step<TranscodeTask>) -> Vec<Step<RungDone>> {
    let task = match task {
        Ok(task) => task,
        Err(failure) => return vec![Err(failure)],
    };
    let plan = &task.plan;
    let fail = |error: String| {
        vec![Err(VodFailure { stream_id: plan.stream_id.clone(), uploaded_at_us: plan.uploaded_at_us, error })]
    };
    let Ok(_permit) = jobs.pool.acquire().await else { return fail("the FFmpeg pool is closed".into()) };
    let source = match jobs.source_file(&plan.stream_id, &plan.source_key).await {
        Ok(path) => path,
        Err(e) => return fail(e),
    };
    let out_dir = jobs.work_dir.join(&plan.stream_id);
    // Progress goes to the document at most once per percent, from a task of its own.
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(0.0f64);
    let reporter = {
        let (jobs, id) = (jobs.clone(), plan.stream_id.clone());
        let share = task.rungs.len() as f64 / plan.rungs.len() as f64;
        tokio::spawn(async move {
            let mut reported = 0.0;
            while progress_rx.changed().await.is_ok() {
                let pct = *progress_rx.borrow_and_update();
                if pct - reported >= 1.0 {
                    let delta = (pct - reported) * share;
                    reported = pct;
                    jobs.update(&id, |doc| doc.progress_pct = (doc.progress_pct + delta).min(99.0)).await;
                }
            }
        })
    };
    let job = TranscodeJob {
        source: &source,
        out_dir: &out_dir,
        info: &plan.info,
        rungs: &task.rungs,
        segment_seconds: SEGMENT_SECONDS,
        mode: TranscodeMode::Split, // this task's rungs in one FFmpeg: all, or the one
    };
    let transcoded = transcode(&job, |pct| {
        let _ = progress_tx.send(pct);
    });
    // The task with the top rung also makes the poster, while FFmpeg encodes.
    let poster_made = async {
        if task.rungs[0] != plan.rungs[0] {
            return Ok(());
        }
        let file = out_dir.join(VOD_POSTER_FILE);
        poster(&source, &file, &plan.info).await.map_err(|e| e.to_string())?;
        jobs.store.put_file(&keys::vod_poster(&plan.stream_id), &file).await.map_err(|e| e.to_string())
    };
    let (outputs, poster_made) = tokio::join!(transcoded, poster_made);
    drop(progress_tx);
    let _ = reporter.await;
    let outputs = match (outputs, poster_made) {
        (Ok(outputs), Ok(())) => outputs,
        (Err(e), _) => return fail(e.to_string()),
        (_, Err(e)) => return fail(format!("making the poster: {e}")),
    };
    for output in &outputs {
        let files = output.segments.iter().map(|s| s.file.as_str()).chain([output.playlist.as_str()]);
        for file in files {
            if let Err(e) = jobs.store.put_file(&keys::vod_variant(&plan.stream_id, file), &out_dir.join(file)).await {
                return fail(format!("storing {file}: {e}"));
            }
        }
    }
    outputs.into_iter().map(|output| Ok(RungDone { plan: plan.clone(), output })).collect()
}

/// Finish: the master playlist and `ready`, or `failed` with the reason.
async fn finish_stage(jobs: Arc<VodJobs>, joined: Step<(VodPlan, Vec<RungOutput>)>) -> Vec<()> {
    let (id, uploaded_at_us) = match &joined {
        Ok((plan, _)) => (plan.stream_id.clone(), plan.uploaded_at_us),
        Err(failure) => (failure.stream_id.clone(), failure.uploaded_at_us),
    };
    let latency_ms = |now: u64| (now * 1000).saturating_sub(uploaded_at_us) as f64 / 1000.0;
    let result = match joined {
        Err(failure) => Err(failure.error),
        Ok((_, mut outputs)) => {
            outputs.sort_by_key(|o| std::cmp::Reverse(o.rung.height));
            let body = master_playlist(&outputs);
            match jobs.store.put_bytes(&keys::vod_manifest(&id), body.into_bytes().into()).await {
                Ok(()) => Ok(outputs),
                Err(e) => Err(format!("writing the master playlist: {e}")),
            }
        }
    };
    let _ = tokio::fs::remove_dir_all(jobs.work_dir.join(&id)).await;
    let _ = tokio::fs::remove_dir_all(jobs.source_dir(&id)).await;
    jobs.active.lock().expect("active lock").remove(&id);
    let finished = jobs
        .update(&id, |doc| {
            let now = now_ms();
            doc.processing_latency_ms = Some(latency_ms(now));
            match result {
                Ok(outputs) => {
                    doc.variants_generated = outputs.iter().map(|o| o.rung.name.clone()).collect();
                    doc.variants = outputs.iter().map(|o| variant_doc(&id, o)).collect();
                    doc.manifest_path = Some(keys::vod_manifest(&id));
                    doc.progress_pct = 100.0;
                    doc.error = None;
                    doc.set_status(VodStatus::Ready, now);
                }
                Err(error) => {
                    doc.error = Some(error);
                    doc.set_status(VodStatus::Failed, now);
                }
            }
        })
        .await;
    if let Some(doc) = finished {
        let outcome = if doc.status == VodStatus::Ready { "ready" } else { "failed" };
        jobs.metrics.vod_videos_total.with_label_values(&[outcome]).inc();
        if let Some(ms) = doc.processing_latency_ms.filter(|_| doc.status == VodStatus::Ready) {
            jobs.metrics.vod_processing_seconds.observe(ms / 1000.0);
        }
        tracing::info!(stream_id = id, status = outcome, error = doc.error, "video finished");
    }
    vec![()]
}

fn variant_doc(stream_id: &str, output: &RungOutput) -> VariantDoc {
    VariantDoc {
        name: output.rung.name.clone(),
        width: output.rung.width,
        height: output.rung.height,
        bandwidth: output.bandwidth,
        average_bandwidth: output.average_bandwidth,
        codecs: output.codecs.clone(),
        frame_rate: output.frame_rate,
        playlist_path: keys::vod_variant(stream_id, &output.playlist),
        segments: output.segments.len(),
    }
}
