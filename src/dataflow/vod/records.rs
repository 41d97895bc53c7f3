//! What flows between the VOD stages, and how each is routed to a worker.

use serde::{Deserialize, Serialize};

use crate::dataflow::records::{dead_letter, parse_record};
use crate::log::LogRecord;
use crate::media::ladder::Rung;
use crate::media::probe::MediaError;
use crate::media::transcode::RungOutput;
use crate::model::jobs::{JOB_CANCELLED, JOB_SUBMITTED, JobCancelled, JobSubmitted};
use crate::model::library::{VOD_DELETED, VOD_UPDATED, VodDeleted, VodEdit, VodEventType};
use crate::model::{
    DeadLetterDoc, DeadLetterReason, MediaInfo, RecordingEvent, STREAM_RECORDED, Topic, ValidationError, VodEvent,
    stream_hash,
};
use crate::storage::object::StoreError;

/// A decoded `vod-chunks` record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum VodInput {
    Upload(VodEvent),
    Record(RecordingEvent),
    Job(JobSubmitted),
    CancelJob(JobCancelled),
    Edit(VodEdit),
    Delete(VodDeleted),
    Dead(DeadLetterDoc),
}

impl VodInput {
    /// Decodes one `vod-chunks` record: its `event_type` says which event it is.
    pub fn decode(record: LogRecord) -> VodInput {
        let topic = Topic::VodChunks;
        let decoded = parse_record::<VodEventType>(topic, &record).and_then(|kind| match kind.event_type.as_str() {
            VOD_UPDATED => checked(&record, VodEdit::validate).map(VodInput::Edit),
            VOD_DELETED => checked(&record, VodDeleted::validate).map(VodInput::Delete),
            STREAM_RECORDED => checked(&record, RecordingEvent::validate).map(VodInput::Record),
            JOB_SUBMITTED => checked(&record, JobSubmitted::validate).map(VodInput::Job),
            JOB_CANCELLED => checked(&record, JobCancelled::validate).map(VodInput::CancelJob),
            _ => checked(&record, VodEvent::validate).map(VodInput::Upload),
        });
        decoded.unwrap_or_else(VodInput::Dead)
    }

    /// Exchange key: by video, so that every event of one meets the ones before it, in order.
    pub fn route(&self) -> u64 {
        match self {
            VodInput::Upload(event) => stream_hash(&event.stream_id),
            VodInput::Record(event) => stream_hash(&event.stream_id),
            VodInput::Job(job) => stream_hash(&job.job_id),
            VodInput::CancelJob(cancelled) => stream_hash(&cancelled.job_id),
            VodInput::Edit(edit) => stream_hash(&edit.stream_id),
            VodInput::Delete(deleted) => stream_hash(&deleted.stream_id),
            VodInput::Dead(dead) => dead.partition as u64,
        }
    }
}

/// A record parsed as `T` and validated, or its dead letter.
fn checked<'a, T: Deserialize<'a>>(
    record: &'a LogRecord,
    validate: impl Fn(&T) -> Result<(), ValidationError>,
) -> Result<T, DeadLetterDoc> {
    let topic = Topic::VodChunks;
    let event = parse_record::<T>(topic, record)?;
    match validate(&event) {
        Ok(()) => Ok(event),
        Err(error) => Err(dead_letter(topic, record, DeadLetterReason::InvalidEvent, error.to_string())),
    }
}

/// Why a video failed, carried to the finish stage, which records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VodFailure {
    pub stream_id: String,
    pub uploaded_at_us: u64,
    pub error: String,
    /// The rungs this failure stands for: none when it failed before its ladder was planned
    /// (then nothing else of it follows).
    pub rungs: Vec<String>,
    /// Its plan's [`VodPlan::time`], when it had one.
    pub time: Option<u64>,
}

/// The outcome of a VOD stage for one video: its work, or why the video failed.
pub type VodResult<T> = Result<T, VodFailure>;

/// Milliseconds from `at_us` (an upload's acknowledgement) to `now_ms`.
pub fn ms_since(at_us: u64, now_ms: u64) -> f64 {
    now_ms.saturating_mul(1000).saturating_sub(at_us) as f64 / 1000.0
}

/// What the later stages know about a probed video.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VodPlan {
    pub stream_id: String,
    pub source_key: String,
    pub uploaded_at_us: u64,
    pub info: MediaInfo,
    pub rungs: Vec<Rung>,
    /// The dataflow time its tasks went out at ([`stamp_plan_time`]): no result of the video
    /// is at a later one, so the join counts them all at it.
    pub time: u64,
}

impl VodPlan {
    /// The failure of `rungs` of this video.
    pub fn failure(&self, rungs: &[Rung], error: String) -> VodFailure {
        VodFailure {
            stream_id: self.stream_id.clone(),
            uploaded_at_us: self.uploaded_at_us,
            error,
            rungs: rungs.iter().map(|r| r.name.clone()).collect(),
            time: Some(self.time),
        }
    }
}

/// One FFmpeg run: every rung (`split`) or one (`per_rung`).
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

/// A video whose every rung is done: its plan and one output per rung.
pub type Joined = (VodPlan, Vec<RungOutput>);

/// Exchange key of a record of one video.
pub fn by_video<T>(result: &VodResult<T>, id: impl Fn(&T) -> &str) -> u64 {
    stream_hash(result.as_ref().map_or_else(|failure| failure.stream_id.as_str(), id))
}

/// Exchange key of a transcode task: by video and rung, so the rungs of one video spread.
pub fn by_task(task: &VodResult<TranscodeTask>) -> u64 {
    match task {
        Ok(task) => stream_hash(&format!("{}/{}", task.plan.stream_id, task.rungs[0].name)),
        Err(failure) => stream_hash(&failure.stream_id),
    }
}

/// Why a stage failed a video; its text becomes the document's `error`.
#[derive(Debug, thiserror::Error)]
pub enum VodError {
    #[error("no document for video {0}")]
    NoDocument(String),
    #[error("reading the source: {0}")]
    Source(#[source] StoreError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("making the poster or storyboard: {0}")]
    Poster(#[source] MediaError),
    #[error("storing {file}: {source}")]
    Store {
        file: String,
        #[source]
        source: StoreError,
    },
    #[error("writing the master playlist: {0}")]
    MasterPlaylist(#[source] StoreError),
    #[error("the FFmpeg pool is closed")]
    PoolClosed,
    #[error("the video was deleted")]
    Deleted,
    #[error("the stream stored no chunk to record")]
    NothingRecorded,
}
