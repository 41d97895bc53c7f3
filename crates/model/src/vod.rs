//! Videos on demand: the event of the `vod-chunks` topic, and the document of an uploaded video
//! on its way to an adaptive-bitrate ladder.

use serde::{Deserialize, Serialize};

use super::auth::PlaybackPolicy;
use super::checks::{ValidationError, validate_stream_id, validate_vod_id};
use super::keys;

/// Where a video's processing stands; it only moves forward, and `failed` is final for an attempt.
/// `deleting` follows any other and is never left: the video and its objects are on their way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VodStatus {
    Uploaded,
    Processing,
    Transcoding,
    Ready,
    Failed,
    Deleting,
}

impl VodStatus {
    pub const ALL: [VodStatus; 6] = [
        VodStatus::Uploaded,
        VodStatus::Processing,
        VodStatus::Transcoding,
        VodStatus::Ready,
        VodStatus::Failed,
        VodStatus::Deleting,
    ];

    pub fn is_final(self) -> bool {
        matches!(self, VodStatus::Ready | VodStatus::Failed)
    }

    /// The status as the API spells it, e.g. `ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            VodStatus::Uploaded => "uploaded",
            VodStatus::Processing => "processing",
            VodStatus::Transcoding => "transcoding",
            VodStatus::Ready => "ready",
            VodStatus::Failed => "failed",
            VodStatus::Deleting => "deleting",
        }
    }
}

/// Where a video came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VodKind {
    /// `POST /vod/upload`, or an event a producer logged.
    #[default]
    Upload,
    /// A live stream's recording.
    Recording,
}

impl VodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VodKind::Upload => "upload",
            VodKind::Recording => "recording",
        }
    }
}

/// The `event_type` of a new video on `vod-chunks`; the library's edits have their own
/// ([`crate::library`]).
pub const VOD_UPLOADED: &str = "vod_uploaded";

/// The event on `vod-chunks`: a source video is in the object store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VodEvent {
    #[serde(default = "vod_uploaded")]
    pub event_type: String,
    pub stream_id: String,
    pub source_key: String,
    pub size_bytes: u64,
    pub source_sha256: String,
    pub uploaded_at_us: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub playback_policy: PlaybackPolicy,
}

pub(crate) fn vod_uploaded() -> String {
    VOD_UPLOADED.into()
}

impl VodEvent {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.event_type != VOD_UPLOADED {
            return Err(ValidationError::UnknownEventType(self.event_type.clone()));
        }
        validate_vod_id(&self.stream_id)?;
        keys::validate_vod_source(&self.stream_id, &self.source_key)
    }
}

/// `event_type` of a live stream's recording, logged once its end is durable.
pub const STREAM_RECORDED: &str = "stream_recorded";

/// `stream_recorded`: a live stream ended; its stored chunks become a video of the library,
/// with the stream's id ([`VodKind::Recording`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingEvent {
    pub event_type: String,
    pub stream_id: String,
    pub ended_at_ms: u64,
}

impl RecordingEvent {
    pub fn new(stream_id: &str, ended_at_ms: u64) -> RecordingEvent {
        RecordingEvent { event_type: STREAM_RECORDED.into(), stream_id: stream_id.into(), ended_at_ms }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.event_type != STREAM_RECORDED {
            return Err(ValidationError::UnknownEventType(self.event_type.clone()));
        }
        validate_stream_id(&self.stream_id)
    }
}

/// What `ffprobe` found in a source: what the ladder and the transcoder are planned from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub duration_s: f64,
    /// The picture as it is shown: after `rotation_degrees`, which FFmpeg applies when decoding.
    pub width: u32,
    pub height: u32,
    /// The constant rate the ladder is encoded at, e.g. 29.97: the source's own, or for a source
    /// whose rate varies, its nominal one.
    pub frame_rate: f64,
    /// Clockwise, 0, 90, 180 or 270: the source's display matrix (phones record sideways).
    #[serde(default)]
    pub rotation_degrees: u16,
    /// The source's frames come at a varying rate (phones); the ladder's do not.
    #[serde(default)]
    pub variable_frame_rate: bool,
    /// FFmpeg's codec name, e.g. `h264`.
    pub video_codec: String,
    /// `None` when the source has no audio stream.
    pub audio_codec: Option<String>,
}

impl MediaInfo {
    pub fn has_audio(&self) -> bool {
        self.audio_codec.is_some()
    }
}

/// One status change, kept in order: the document's processing timestamps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: VodStatus,
    pub at_ms: u64,
}

/// One rendition of the ladder, as the master playlist announces it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantDoc {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub codecs: String,
    pub frame_rate: f64,
    /// Key of the variant's media playlist in the object store.
    pub playlist_path: String,
    pub segments: usize,
}

/// `vod_metadata`: one document per video (the legacy pipeline's fields, and what a player UI
/// needs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VodDoc {
    pub stream_id: String,
    pub title: String,
    pub description: String,
    pub status: VodStatus,
    pub source_key: String,
    pub size_bytes: u64,
    pub source_sha256: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub status_history: Vec<StatusChange>,
    /// What `ffprobe` found in the source.
    pub source: Option<MediaInfo>,
    /// The ladder chosen for this source, best first.
    pub rungs_planned: Vec<String>,
    /// 0 to 100, to one decimal.
    pub progress_pct: f64,
    pub variants_generated: Vec<String>,
    pub variants: Vec<VariantDoc>,
    pub manifest_path: Option<String>,
    pub poster_path: Option<String>,
    /// Upload acknowledged to `ready` (or `failed`).
    pub processing_latency_ms: Option<f64>,
    /// A master playlist plays: its renditions grow as `EVENT` playlists while the video is
    /// processed, and are `VOD` once it is `ready`.
    #[serde(default)]
    pub playable: bool,
    /// Upload acknowledged to `playable`.
    #[serde(default)]
    pub playable_latency_ms: Option<f64>,
    pub error: Option<String>,
    pub keyframe_aligned: bool,
    pub audio_track_id: Option<String>,
    #[serde(default)]
    pub playback_policy: PlaybackPolicy,
    #[serde(default)]
    pub kind: VodKind,
    /// Set with `PATCH /videos/{id}`; at most [`crate::library::MAX_TAGS`].
    #[serde(default)]
    pub tags: Vec<String>,
    /// `at_us` of the newest edit applied (0: never edited): how the API tells its edit is in.
    #[serde(default)]
    pub edited_at_us: u64,
    /// Scrubbing previews, planned with the ladder.
    #[serde(default)]
    pub storyboard: Option<Storyboard>,
}

/// Frames every `interval_s` seconds, `tile_width` x `tile_height` each, in one sprite sheet of
/// `columns` x `rows` tiles (row by row), and a WebVTT track of `#xywh=` cues onto it, the form
/// video.js and Shaka read scrubbing previews in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Storyboard {
    pub interval_s: u32,
    pub tiles: u32,
    pub columns: u32,
    pub rows: u32,
    pub tile_width: u32,
    pub tile_height: u32,
}

impl Storyboard {
    /// Tiles of a sheet at most, and a tile's width.
    pub const MAX_TILES: u32 = 100;
    pub const TILE_WIDTH: u32 = 160;

    /// The storyboard of a `duration_s` video shown at `width` x `height`, whose renditions have
    /// a keyframe every `keyframe_s`: a frame every `keyframe_s`, or every few keyframes so that
    /// at most [`Self::MAX_TILES`] fit one sheet, 10 to a row. Each tile is a keyframe.
    pub fn plan(duration_s: f64, width: u32, height: u32, keyframe_s: u32) -> Storyboard {
        let duration = if duration_s.is_finite() { duration_s.max(0.0) } else { 0.0 };
        let keyframe_s = keyframe_s.max(1);
        let fitting = (duration / f64::from(Self::MAX_TILES)).ceil() as u32;
        let interval_s = fitting.div_ceil(keyframe_s).max(1).saturating_mul(keyframe_s);
        let tiles = ((duration / f64::from(interval_s)).ceil() as u32).clamp(1, Self::MAX_TILES);
        let columns = tiles.min(10);
        let rows = tiles.div_ceil(columns);
        let shown = f64::from(Self::TILE_WIDTH) * f64::from(height.max(1)) / f64::from(width.max(1));
        let tile_height = (((shown / 2.0).round() as u32) * 2).clamp(2, 4 * Self::TILE_WIDTH);
        Storyboard { interval_s, tiles, columns, rows, tile_width: Self::TILE_WIDTH, tile_height }
    }

    /// The WebVTT track: one cue per tile, each naming its rectangle of `sprite`.
    pub fn vtt(&self, duration_s: f64, sprite: &str) -> String {
        let stamp =
            |ms: u64| format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let end_ms = (duration_s.max(0.0) * 1000.0) as u64;
        let mut vtt = String::from("WEBVTT\n");
        for tile in 0..self.tiles {
            let start = u64::from(tile) * u64::from(self.interval_s) * 1000;
            let end = (start + u64::from(self.interval_s) * 1000).min(end_ms.max(start + 1));
            let (x, y) = ((tile % self.columns) * self.tile_width, (tile / self.columns) * self.tile_height);
            vtt.push_str(&format!(
                "\n{} --> {}\n{sprite}#xywh={x},{y},{},{}\n",
                stamp(start),
                stamp(end),
                self.tile_width,
                self.tile_height
            ));
        }
        vtt
    }
}

impl VodDoc {
    pub fn new(stream_id: &str, title: &str, description: &str, source_key: &str, at_ms: u64) -> VodDoc {
        VodDoc {
            stream_id: stream_id.to_string(),
            title: title.to_string(),
            description: description.to_string(),
            status: VodStatus::Uploaded,
            source_key: source_key.to_string(),
            size_bytes: 0,
            source_sha256: String::new(),
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
            status_history: vec![StatusChange { status: VodStatus::Uploaded, at_ms }],
            source: None,
            rungs_planned: Vec::new(),
            progress_pct: 0.0,
            variants_generated: Vec::new(),
            variants: Vec::new(),
            manifest_path: None,
            poster_path: None,
            processing_latency_ms: None,
            playable: false,
            playable_latency_ms: None,
            error: None,
            keyframe_aligned: false,
            audio_track_id: None,
            playback_policy: PlaybackPolicy::default(),
            kind: VodKind::Upload,
            tags: Vec::new(),
            edited_at_us: 0,
            storyboard: None,
        }
    }

    /// The document of a video as its upload event describes it.
    pub fn from_event(event: &VodEvent) -> VodDoc {
        let at_ms = event.uploaded_at_us / 1000;
        let mut doc = VodDoc::new(&event.stream_id, &event.title, &event.description, &event.source_key, at_ms);
        doc.size_bytes = event.size_bytes;
        doc.source_sha256 = event.source_sha256.clone();
        doc.playback_policy = event.playback_policy;
        doc
    }

    /// Moves the status on; nothing moves a video out of `deleting`.
    pub fn set_status(&mut self, status: VodStatus, at_ms: u64) {
        if self.status != status && self.status != VodStatus::Deleting {
            self.status = status;
            self.status_history.push(StatusChange { status, at_ms });
        }
        self.updated_at_ms = at_ms;
    }

    /// Sets the progress, to one decimal.
    pub fn set_progress(&mut self, pct: f64) {
        self.progress_pct = (pct.clamp(0.0, 100.0) * 10.0).round() / 10.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_changes_are_recorded_once() {
        let mut doc = VodDoc::new("vod-a", "t", "", "vod-raw/vod-a/source.mp4", 1);
        doc.set_status(VodStatus::Processing, 2);
        doc.set_status(VodStatus::Processing, 3);
        doc.set_status(VodStatus::Ready, 4);
        let statuses: Vec<_> = doc.status_history.iter().map(|c| (c.status, c.at_ms)).collect();
        assert_eq!(statuses, [(VodStatus::Uploaded, 1), (VodStatus::Processing, 2), (VodStatus::Ready, 4)]);
        assert!(doc.status.is_final());
        doc.set_status(VodStatus::Deleting, 5);
        doc.set_status(VodStatus::Failed, 6);
        assert_eq!(doc.status, VodStatus::Deleting);
    }

    #[test]
    fn a_storyboard_fits_one_sheet_of_at_most_a_hundred_tiles() {
        let short = Storyboard::plan(5.0, 1920, 1080, 2);
        assert_eq!((short.interval_s, short.tiles, short.columns, short.rows, short.tile_height), (2, 3, 3, 1, 90));
        let hour = Storyboard::plan(3600.0, 720, 1280, 2);
        assert_eq!((hour.interval_s, hour.tiles, hour.columns, hour.rows, hour.tile_height), (36, 100, 10, 10, 284));
        // Tiles fall on keyframes: 7 s a tile would do, every fourth 2-second keyframe is taken.
        let odd_length = Storyboard::plan(700.0, 1920, 1080, 2);
        assert_eq!((odd_length.interval_s, odd_length.tiles, odd_length.rows), (8, 88, 9));
        let vtt = short.vtt(5.0, "storyboard.jpg");
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nstoryboard.jpg#xywh=0,0,160,90\n"), "{vtt}");
        assert!(vtt.ends_with("00:00:04.000 --> 00:00:05.000\nstoryboard.jpg#xywh=320,0,160,90\n"), "{vtt}");
        let odd = Storyboard::plan(f64::NAN, 0, 0, 0);
        assert_eq!((odd.tiles, odd.rows), (1, 1));
    }

    #[test]
    fn statuses_are_spelled_as_serde_spells_them() {
        for status in VodStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for kind in [VodKind::Upload, VodKind::Recording] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn progress_is_kept_to_one_decimal() {
        let mut doc = VodDoc::new("vod-a", "t", "", "vod-raw/vod-a/source.mp4", 1);
        doc.set_progress(26.006334999999996);
        assert_eq!(doc.progress_pct, 26.0);
        doc.set_progress(33.36);
        assert_eq!(doc.progress_pct, 33.4);
        doc.set_progress(120.0);
        assert_eq!(doc.progress_pct, 100.0);
    }
}
