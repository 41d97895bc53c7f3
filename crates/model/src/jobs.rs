//! Media jobs (seed 004's operations): one FFmpeg run on one source into one output file,
//! submitted and cancelled through `vod-chunks` like the library's events, so a job cut by a
//! crash runs again from the log.

use serde::{Deserialize, Serialize};

use super::checks::{ValidationError, validate_stream_id};
use super::keys;

/// `event_type` of a submitted job, and of its cancellation.
pub const JOB_SUBMITTED: &str = "job_submitted";
pub const JOB_CANCELLED: &str = "job_cancelled";

/// A job's id: `job-` and 12 hex digits from the API, or any stream id a producer picks.
pub const JOB_ID_PREFIX: &str = "job-";

/// What a job does to its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOperation {
    /// H.264 at a CRF (28 by default), or at the bitrate that meets `target_size_bytes`.
    Compress,
    /// The audio track alone, as `audio_format` (mp3 by default).
    ExtractAudio,
    /// To `width` x `height` (1280x720 by default); one of them alone keeps the aspect ratio.
    Resize,
    /// Into `container` (mp4 by default), H.264/AAC (VP9/Opus for webm), for the web.
    ConvertFormat,
    /// Gray: the chroma planes dropped.
    BlackAndWhite,
}

impl JobOperation {
    pub const ALL: [JobOperation; 5] = [
        JobOperation::Compress,
        JobOperation::ExtractAudio,
        JobOperation::Resize,
        JobOperation::ConvertFormat,
        JobOperation::BlackAndWhite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobOperation::Compress => "compress",
            JobOperation::ExtractAudio => "extract_audio",
            JobOperation::Resize => "resize",
            JobOperation::ConvertFormat => "convert_format",
            JobOperation::BlackAndWhite => "black_and_white",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioFormat {
    #[default]
    Mp3,
    Aac,
    Wav,
    Flac,
    Opus,
}

impl AudioFormat {
    /// The output file's extension, and the codec FFmpeg names (and ffprobe reports).
    pub fn extension(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Aac => "m4a",
            AudioFormat::Wav => "wav",
            AudioFormat::Flac => "flac",
            AudioFormat::Opus => "opus",
        }
    }

    pub fn codec(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Aac => "aac",
            AudioFormat::Wav => "pcm_s16le",
            AudioFormat::Flac => "flac",
            AudioFormat::Opus => "opus",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    #[default]
    Mp4,
    Mkv,
    Mov,
    Webm,
}

impl Container {
    pub fn extension(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Mkv => "mkv",
            Container::Mov => "mov",
            Container::Webm => "webm",
        }
    }
}

/// Bounds of a job's parameters.
pub const CRF: std::ops::RangeInclusive<u8> = 0..=51;
pub const DIMENSION: std::ops::RangeInclusive<u32> = 16..=7680;
/// The smallest target size a compress takes: below it no useful video fits.
pub const MIN_TARGET_SIZE_BYTES: u64 = 16 * 1024;

/// An operation's parameters; each is checked against the operation it is given with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crf: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_format: Option<AudioFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

impl JobParams {
    /// Refuses a parameter the operation does not take, or one out of its range.
    pub fn check(&self, operation: JobOperation) -> Result<(), ValidationError> {
        use JobOperation::*;
        let given: [(&'static str, bool, &[JobOperation]); 6] = [
            ("crf", self.crf.is_some(), &[Compress]),
            ("target_size_bytes", self.target_size_bytes.is_some(), &[Compress]),
            ("audio_format", self.audio_format.is_some(), &[ExtractAudio]),
            ("width", self.width.is_some(), &[Resize]),
            ("height", self.height.is_some(), &[Resize]),
            ("container", self.container.is_some(), &[ConvertFormat]),
        ];
        for (field, present, takes) in given {
            if present && !takes.contains(&operation) {
                return Err(ValidationError::Parameter(format!("{} takes no {field}", operation.as_str())));
            }
        }
        if self.crf.is_some() && self.target_size_bytes.is_some() {
            return Err(ValidationError::Parameter("compress takes crf or target_size_bytes, not both".into()));
        }
        if let Some(crf) = self.crf.filter(|c| !CRF.contains(c)) {
            return Err(ValidationError::Parameter(format!("crf {crf} is not in {CRF:?}")));
        }
        if let Some(size) = self.target_size_bytes.filter(|s| *s < MIN_TARGET_SIZE_BYTES) {
            return Err(ValidationError::Parameter(format!(
                "target_size_bytes {size} is under {MIN_TARGET_SIZE_BYTES}"
            )));
        }
        for (field, value) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = value.filter(|v| !DIMENSION.contains(v) || v % 2 != 0) {
                return Err(ValidationError::Parameter(format!("{field} {v} is not an even number in {DIMENSION:?}")));
            }
        }
        Ok(())
    }

    /// The output file's extension.
    pub fn extension(&self, operation: JobOperation) -> &'static str {
        match operation {
            JobOperation::ExtractAudio => self.audio_format.unwrap_or_default().extension(),
            JobOperation::ConvertFormat => self.container.unwrap_or_default().extension(),
            _ => "mp4",
        }
    }
}

/// `job_submitted`: run `operation` on the object at `source_key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSubmitted {
    pub event_type: String,
    pub job_id: String,
    pub operation: JobOperation,
    #[serde(default)]
    pub params: JobParams,
    pub source_key: String,
    pub submitted_at_us: u64,
}

impl JobSubmitted {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.event_type != JOB_SUBMITTED {
            return Err(ValidationError::UnknownEventType(self.event_type.clone()));
        }
        validate_stream_id(&self.job_id)?;
        keys::validate_stored_object(&self.source_key)?;
        self.params.check(self.operation)
    }

    /// Where the job's output goes: a replay writes the same key.
    pub fn output_key(&self) -> String {
        keys::job_output(&self.job_id, self.params.extension(self.operation))
    }
}

/// `job_cancelled`: stop the job (a finished one stays as it is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobCancelled {
    pub event_type: String,
    pub job_id: String,
    pub at_us: u64,
}

impl JobCancelled {
    pub fn new(job_id: &str, at_us: u64) -> JobCancelled {
        JobCancelled { event_type: JOB_CANCELLED.into(), job_id: job_id.into(), at_us }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.event_type != JOB_CANCELLED {
            return Err(ValidationError::UnknownEventType(self.event_type.clone()));
        }
        validate_stream_id(&self.job_id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] =
        [JobStatus::Queued, JobStatus::Processing, JobStatus::Completed, JobStatus::Failed, JobStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// What ffprobe found in a job's output, checked before the job is `completed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobOutput {
    pub key: String,
    pub size_bytes: u64,
    pub duration_s: f64,
    pub video_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub pixel_format: Option<String>,
    pub audio_codec: Option<String>,
}

/// `media_jobs`: one document per job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDoc {
    pub job_id: String,
    pub operation: JobOperation,
    pub params: JobParams,
    pub source_key: String,
    pub status: JobStatus,
    /// 0 to 100, to one decimal, from FFmpeg's own progress.
    pub progress_pct: f64,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub completed_at_ms: Option<u64>,
    pub error: Option<String>,
    pub output: Option<JobOutput>,
}

impl JobDoc {
    pub fn from_event(event: &JobSubmitted) -> JobDoc {
        JobDoc {
            job_id: event.job_id.clone(),
            operation: event.operation,
            params: event.params.clone(),
            source_key: event.source_key.clone(),
            status: JobStatus::Queued,
            progress_pct: 0.0,
            created_at_ms: event.submitted_at_us / 1000,
            started_at_ms: None,
            completed_at_ms: None,
            error: None,
            output: None,
        }
    }

    /// The output's path in the job's playback folder (`output/{job_id}.{ext}`).
    pub fn output_file(&self) -> String {
        keys::job_output_file(&self.job_id, self.params.extension(self.operation))
    }

    /// Ends the job: a final status is never changed.
    pub fn finish(&mut self, status: JobStatus, at_ms: u64) {
        if !self.status.is_final() {
            self.status = status;
            self.completed_at_ms = Some(at_ms);
        }
    }

    pub fn set_progress(&mut self, pct: f64) {
        self.progress_pct = (pct.clamp(0.0, 100.0) * 10.0).round() / 10.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(operation: JobOperation, params: JobParams) -> JobSubmitted {
        JobSubmitted {
            event_type: JOB_SUBMITTED.into(),
            job_id: "job-0123456789ab".into(),
            operation,
            params,
            source_key: "vod-raw/job-0123456789ab/source.mp4".into(),
            submitted_at_us: 1,
        }
    }

    #[test]
    fn parameters_fit_their_operation_and_range() {
        let ok = |op, params| submitted(op, params).validate().is_ok();
        assert!(ok(JobOperation::Compress, JobParams { crf: Some(30), ..Default::default() }));
        assert!(ok(JobOperation::Resize, JobParams { width: Some(640), ..Default::default() }));
        assert!(!ok(JobOperation::Resize, JobParams { width: Some(641), ..Default::default() }), "odd");
        assert!(!ok(JobOperation::Resize, JobParams { height: Some(u32::MAX), ..Default::default() }));
        assert!(!ok(JobOperation::Compress, JobParams { crf: Some(52), ..Default::default() }));
        assert!(!ok(
            JobOperation::Compress,
            JobParams { crf: Some(20), target_size_bytes: Some(1 << 20), ..Default::default() }
        ));
        assert!(!ok(JobOperation::Compress, JobParams { target_size_bytes: Some(10), ..Default::default() }));
        assert!(
            !ok(JobOperation::BlackAndWhite, JobParams { crf: Some(20), ..Default::default() }),
            "not its parameter"
        );
        let mut foreign = submitted(JobOperation::Compress, JobParams::default());
        foreign.source_key = "vod-raw/../signing.key".into();
        assert!(foreign.validate().is_err());
    }

    #[test]
    fn outputs_are_named_by_what_they_hold() {
        let audio = submitted(
            JobOperation::ExtractAudio,
            JobParams { audio_format: Some(AudioFormat::Aac), ..Default::default() },
        );
        assert_eq!(audio.output_key(), "vod-variants/job-0123456789ab/output/job-0123456789ab.m4a");
        let webm = submitted(
            JobOperation::ConvertFormat,
            JobParams { container: Some(Container::Webm), ..Default::default() },
        );
        assert_eq!(webm.output_key(), "vod-variants/job-0123456789ab/output/job-0123456789ab.webm");
        assert_eq!(
            submitted(JobOperation::BlackAndWhite, JobParams::default()).output_key(),
            "vod-variants/job-0123456789ab/output/job-0123456789ab.mp4"
        );
    }

    #[test]
    fn operations_are_spelled_as_serde_spells_them() {
        for op in JobOperation::ALL {
            assert_eq!(serde_json::to_value(op).unwrap(), op.as_str());
        }
        for status in JobStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
