//! Live streams: the events of the `live-chunks` topic, and the documents kept per stream and
//! per chunk.
//!
//! # The chunk event
//!
//! A `live-chunks` record is one flat JSON object (~500 bytes), a [`LiveEvent`]. Its chunk
//! fields are the ones the legacy pipeline's producers send, so such a producer publishes to
//! segflow's Kafka topic unchanged:
//!
//! ```json
//! {"stream_id":"live-54390fa408","chunk_index":42,"sequence_number":42,"duration_ms":3000,
//!  "size_bytes":1628000,"checksum":"<sha-256 hex>","keyframe_aligned":true,
//!  "audio_track_id":"audio-live-54390fa408","video_track_id":"video-live-54390fa408"}
//! ```
//!
//! The segment's bytes are in the object store already, at `object_key` (by default
//! `live-streams/{stream_id}/chunks/{sequence_number}.ts`). segflow adds `event_type` (absent
//! means `chunk`), the SHA-256 it computed of the stored bytes (`stored_sha256`), when it
//! accepted the event (`ingested_at_us`), the encoder's wall clock (`program_date_time`), and
//! the settings of a `stream_started` event. Unknown fields (the legacy `stream_type`) are
//! ignored.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::auth::PlaybackPolicy;
use super::checks::{
    DATE_RANGE_MS, DEFAULT_MAX_SEQUENCE_JUMP, DVR_WINDOW_SIZE, MAX_CLOCK_SKEW_MS, MAX_SEQUENCE_NUMBER,
    SEGMENT_DURATION_MS, TARGET_DURATION_S, ValidationError, check_range, validate_sha256_hex, validate_stream_id,
};
use super::keys;

/// What a live event says happened. Legacy producers send no `event_type`: `chunk`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveEventType {
    #[default]
    Chunk,
    StreamStarted,
    /// The stream's fMP4 initialization section is stored.
    InitSegment,
    StreamEnded,
    /// The stream's key was replaced: the old one stops working.
    StreamKeyRotated,
}

/// One record of the `live-chunks` topic (see the module's doc). Fields a kind does not use
/// stay `None`; [`LiveEvent::validate`] checks the rest. Text borrows from the record being
/// decoded where it can: most of it is checked, not kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveEvent<'a> {
    #[serde(default)]
    pub event_type: LiveEventType,
    #[serde(default, borrow)]
    pub stream_id: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// SHA-256 (hex) claimed by the encoder.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Cow<'a, str>>,
    /// SHA-256 (hex) of the stored bytes, computed by segflow while storing them.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub stored_sha256: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyframe_aligned: Option<bool>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub audio_track_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub video_track_id: Option<Cow<'a, str>>,
    /// When segflow accepted the event (µs since epoch); latency is measured from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_at_us: Option<u64>,
    /// The encoder's wall-clock start of the segment (RFC 3339), for `EXT-X-PROGRAM-DATE-TIME`.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub program_date_time: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub title: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_duration_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dvr_window_size: Option<u64>,
    /// How far ahead of the head a chunk of the stream may jump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sequence_jump: Option<u64>,
    /// SHA-256 (hex) of the stream's key (`stream_started`, `stream_key_rotated`).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub stream_key_sha256: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback_policy: Option<PlaybackPolicy>,
    /// How the stream's recording is kept (`stream_started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordOptions>,
}

/// What becomes of a live stream's recording when it ends: it is always published as a video
/// of the library; with `transcode`, it is also encoded into the ABR ladder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordOptions {
    #[serde(default)]
    pub transcode: bool,
}

/// A live event checked for the fields its kind needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LiveCommand {
    Start {
        title: String,
        target_duration_s: u64,
        dvr_window_size: u64,
        max_sequence_jump: u64,
        stream_key_sha256: Option<String>,
        playback_policy: PlaybackPolicy,
        record: RecordOptions,
        at_ms: u64,
    },
    RotateKey {
        stream_key_sha256: String,
    },
    /// Boxed: chunks are most of the traffic, and a small enum is cheap to move.
    Chunk(Box<Chunk>),
    Init {
        object_key: String,
    },
    End {
        at_ms: u64,
    },
}

/// A media segment of a live stream, as the dataflow sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub chunk_index: u64,
    pub sequence_number: u64,
    pub duration_ms: u64,
    pub size_bytes: u64,
    pub checksum: Option<String>,
    pub stored_sha256: Option<String>,
    pub object_key: String,
    pub keyframe_aligned: bool,
    pub audio_track_id: Option<String>,
    pub video_track_id: Option<String>,
    pub ingested_at_us: u64,
    /// The encoder's own wall-clock start of the segment, when it sent one. Always written:
    /// a chunk crosses processes as bincode, which cannot skip a field.
    #[serde(default)]
    pub encoder_program_date_time_ms: Option<u64>,
}

impl Chunk {
    /// True when the stored bytes hash to what the encoder claimed (or no claim was made).
    pub fn checksum_ok(&self) -> bool {
        match (&self.stored_sha256, &self.checksum) {
            (Some(stored), Some(claimed)) => stored == claimed, // both lower case
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

impl LiveEvent<'_> {
    /// Checks the event's fields; the error goes into a dead letter, or a 4xx answer.
    pub fn validate(&self) -> Result<LiveCommand, ValidationError> {
        self.clone().into_command().map(|(_, command)| command)
    }

    /// Like [`LiveEvent::validate`], moving the fields out: `(stream_id, command)`.
    pub fn into_command(self) -> Result<(String, LiveCommand), ValidationError> {
        validate_stream_id(&self.stream_id)?;
        let mut event = self;
        let stream_id = std::mem::take(&mut event.stream_id).into_owned();
        event.command(&stream_id).map(|command| (stream_id, command))
    }

    fn command(self, stream_id: &str) -> Result<LiveCommand, ValidationError> {
        let missing = |event, field| ValidationError::MissingField { event, field };
        let at_us = self.ingested_at_us.unwrap_or(0);
        let at_ms = at_us / 1000;
        match self.event_type {
            LiveEventType::StreamStarted => {
                let target = self.target_duration_s.ok_or(missing("stream_started", "target_duration_s"))?;
                let window = self.dvr_window_size.ok_or(missing("stream_started", "dvr_window_size"))?;
                let jump = self.max_sequence_jump.unwrap_or(DEFAULT_MAX_SEQUENCE_JUMP);
                Ok(LiveCommand::Start {
                    title: self.title.unwrap_or_default().into_owned(),
                    target_duration_s: check_range("target_duration_s", target, &TARGET_DURATION_S)?,
                    dvr_window_size: check_range("dvr_window_size", window, &DVR_WINDOW_SIZE)?,
                    max_sequence_jump: check_range("max_sequence_jump", jump, &(1..=MAX_SEQUENCE_NUMBER))?,
                    stream_key_sha256: self.stream_key_sha256.map(sha256_hex).transpose()?,
                    playback_policy: self.playback_policy.unwrap_or_default(),
                    record: self.record.unwrap_or_default(),
                    at_ms,
                })
            }
            LiveEventType::StreamKeyRotated => {
                let sum = self.stream_key_sha256.ok_or(missing("stream_key_rotated", "stream_key_sha256"))?;
                Ok(LiveCommand::RotateKey { stream_key_sha256: sha256_hex(sum)? })
            }
            LiveEventType::StreamEnded => Ok(LiveCommand::End { at_ms }),
            LiveEventType::InitSegment => {
                let key = self.object_key.ok_or(missing("init_segment", "object_key"))?;
                keys::validate_live_object(stream_id, &key)?;
                Ok(LiveCommand::Init { object_key: key.into_owned() })
            }
            LiveEventType::Chunk => {
                let seq = self.sequence_number.or(self.chunk_index).ok_or(missing("chunk", "sequence_number"))?;
                let index = self.chunk_index.unwrap_or(seq);
                if index != seq {
                    return Err(ValidationError::IndexMismatch { index, seq });
                }
                check_range("sequence_number", seq, &(0..=MAX_SEQUENCE_NUMBER))?;
                let duration_ms = self.duration_ms.ok_or(missing("chunk", "duration_ms"))?;
                check_range("duration_ms", duration_ms, &SEGMENT_DURATION_MS)?;
                let object_key =
                    self.object_key.map_or_else(|| keys::live_chunk(stream_id, seq, "ts"), Cow::into_owned);
                keys::validate_live_object(stream_id, &object_key)?;
                let [checksum, stored_sha256] = [self.checksum, self.stored_sha256].map(|sum| sum.map(sha256_hex));
                let arrival_ms = (at_us > 0).then_some(at_ms);
                let encoder_program_date_time_ms =
                    self.program_date_time.as_deref().map(|text| program_date_time_at(text, arrival_ms)).transpose()?;
                Ok(LiveCommand::Chunk(Box::new(Chunk {
                    chunk_index: index,
                    sequence_number: seq,
                    duration_ms,
                    size_bytes: self.size_bytes.unwrap_or(0),
                    checksum: checksum.transpose()?,
                    stored_sha256: stored_sha256.transpose()?,
                    object_key,
                    keyframe_aligned: self.keyframe_aligned.unwrap_or(true),
                    audio_track_id: self.audio_track_id.map(Cow::into_owned),
                    video_track_id: self.video_track_id.map(Cow::into_owned),
                    ingested_at_us: at_us,
                    encoder_program_date_time_ms,
                })))
            }
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 date-time, as HLS writes them; FFmpeg's
/// offsets without a colon (`+0000`) are accepted too. Dates outside 2000-2100 are refused.
pub fn parse_program_date_time(text: &str) -> Result<u64, ValidationError> {
    let text = text.trim();
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .filter(|ms| DATE_RANGE_MS.contains(ms))
        .ok_or_else(|| ValidationError::ProgramDateTime(text.to_string()))
}

/// Like [`parse_program_date_time`], refused when more than [`MAX_CLOCK_SKEW_MS`] from the
/// segment's arrival (when it is known).
pub fn program_date_time_at(text: &str, arrival_ms: Option<u64>) -> Result<u64, ValidationError> {
    let ms = parse_program_date_time(text)?;
    match arrival_ms {
        Some(arrival_ms) if ms.abs_diff(arrival_ms) > MAX_CLOCK_SKEW_MS => {
            Err(ValidationError::ClockSkew { date: text.trim().to_string(), arrival_ms })
        }
        _ => Ok(ms),
    }
}

/// A checked hex SHA-256 in lower case, so checksums compare as plain strings.
fn sha256_hex(sum: Cow<'_, str>) -> Result<String, ValidationError> {
    validate_sha256_hex(&sum)?;
    let mut sum = sum.into_owned();
    if sum.bytes().fold(false, |upper, b| upper | b.is_ascii_uppercase()) {
        sum.make_ascii_lowercase();
    }
    Ok(sum)
}

/// Whether a live stream still takes chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    Live,
    /// Ended: its playlist has `EXT-X-ENDLIST`. Written `vod`, the legacy pipeline's word for
    /// a stream that is now watched on demand.
    #[serde(rename = "vod")]
    Ended,
}

/// One document per live stream (`live_streams`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveStreamDoc {
    pub stream_id: String,
    pub title: String,
    pub status: StreamStatus,
    pub created_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub dvr_window_size: u64,
    pub target_duration_s: u64,
    /// How far ahead of the head a chunk may jump (further is `too_far_ahead`).
    #[serde(default = "default_max_sequence_jump")]
    pub max_sequence_jump: u64,
    /// SHA-256 (hex) of the key its encoder must present; never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_key_sha256: Option<String>,
    #[serde(default)]
    pub playback_policy: PlaybackPolicy,
    #[serde(default)]
    pub record: RecordOptions,
    pub manifest_path: String,
    pub init_object_key: Option<String>,
    /// Highest sequence number accepted, and the first one the playlist shows.
    pub head_sequence: Option<u64>,
    pub dvr_window_start: Option<u64>,
    pub chunks_accepted: u64,
    pub gaps_total: u64,
    pub checksum_failures: u64,
    pub late_chunks: u64,
    pub duplicate_chunks: u64,
    pub rejected_chunks: u64,
    pub manifest_updated_at_ms: Option<u64>,
}

impl LiveStreamDoc {
    pub fn new(stream_id: &str, title: &str, target_duration_s: u64, dvr_window_size: u64, at_ms: u64) -> Self {
        LiveStreamDoc {
            stream_id: stream_id.to_string(),
            title: title.to_string(),
            status: StreamStatus::Live,
            created_at_ms: at_ms,
            ended_at_ms: None,
            dvr_window_size,
            target_duration_s,
            max_sequence_jump: DEFAULT_MAX_SEQUENCE_JUMP,
            stream_key_sha256: None,
            playback_policy: PlaybackPolicy::default(),
            record: RecordOptions::default(),
            manifest_path: keys::live_playlist(stream_id),
            init_object_key: None,
            head_sequence: None,
            dvr_window_start: None,
            chunks_accepted: 0,
            gaps_total: 0,
            checksum_failures: 0,
            late_chunks: 0,
            duplicate_chunks: 0,
            rejected_chunks: 0,
            manifest_updated_at_ms: None,
        }
    }
}

/// Why a slot of a live stream's DVR window is a gap (an `EXT-X-GAP` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapCause {
    /// No chunk of that sequence number arrived (yet).
    Missing,
    /// Its chunk arrived with bytes that do not hash to its checksum.
    ChecksumFailed,
}

impl GapCause {
    pub const ALL: [GapCause; 2] = [GapCause::Missing, GapCause::ChecksumFailed];

    /// Its serde name, as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            GapCause::Missing => "missing",
            GapCause::ChecksumFailed => "checksum_failed",
        }
    }
}

/// One document per live stream (`live_gaps`): the gap slots of its DVR window now, as the
/// dataflow's gap set counts them. A late chunk takes its slot out; a checksum failure puts
/// one in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveGapsDoc {
    pub stream_id: String,
    pub missing: u64,
    pub checksum_failed: u64,
}

impl LiveGapsDoc {
    /// `ok` when the window has no gap, else `gaps`.
    pub fn health(&self) -> &'static str {
        if self.missing == 0 && self.checksum_failed == 0 { "ok" } else { "gaps" }
    }
}

fn default_max_sequence_jump() -> u64 {
    DEFAULT_MAX_SEQUENCE_JUMP
}

/// What the dataflow tells the write path once a batch is durable: a stream's playlist was
/// written (control calls wait for it).
#[derive(Clone, Debug, PartialEq)]
pub struct PlaylistNotice {
    pub stream_id: String,
    /// The playlist written has `EXT-X-ENDLIST`.
    pub ended: bool,
}

/// What became of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkStatus {
    /// In the stream's playlist (or was, before the window slid past it).
    Live,
    /// Arrived after the window had moved past its slot: stored, not in the playlist.
    Late,
    /// Its bytes do not hash to its checksum: stored, never in the playlist.
    ChecksumFailed,
    /// Longer than the stream's target duration allows.
    TooLong,
    /// Arrived after the stream ended.
    AfterEnd,
    /// Its sequence number jumped further ahead of the head than the stream allows.
    TooFarAhead,
}

/// One document per live chunk (`live_metadata`), keyed by `(stream_id, chunk_index)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveChunkDoc {
    pub stream_id: String,
    /// The chunk's own fields (`chunk_index`, `sequence_number`, `checksum`, …), flattened.
    #[serde(flatten)]
    pub chunk: Box<Chunk>,
    pub status: ChunkStatus,
    pub dvr_window_start: u64,
    /// Start of the segment on the wall clock (`EXT-X-PROGRAM-DATE-TIME`).
    pub program_date_time_ms: u64,
    /// Ingest to playlist written; filled in by the sink when it writes.
    pub processing_latency_ms: Option<f64>,
    pub manifest_updated_at_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_causes_are_written_as_their_labels() {
        for cause in GapCause::ALL {
            assert_eq!(serde_json::to_value(cause).unwrap(), cause.as_str());
        }
    }

    #[test]
    fn a_legacy_chunk_event_parses_as_a_chunk() {
        let json = r#"{"stream_id":"live-54390fa408","chunk_index":42,"sequence_number":42,
            "size_bytes":1628000,"duration_ms":3000,"keyframe_aligned":true,
            "audio_track_id":"audio-live-54390fa408","video_track_id":"video-live-54390fa408",
            "checksum":"a3f8c2","stream_type":"live"}"#;
        let event: LiveEvent = serde_json::from_str(json).unwrap();
        assert_eq!(event.event_type, LiveEventType::Chunk);
        // "a3f8c2" is not a SHA-256: the event is refused with a readable reason.
        let err = event.validate().unwrap_err();
        assert!(err.to_string().contains("not a hex SHA-256"), "{err}");
    }

    #[test]
    fn checksum_compares_stored_with_claimed_in_any_case() {
        let chunk = |claimed: &str, stored: Option<&str>| {
            let event = LiveEvent {
                stream_id: "s".into(),
                sequence_number: Some(0),
                duration_ms: Some(2000),
                checksum: Some(claimed.into()),
                stored_sha256: stored.map(Into::into),
                ..Default::default()
            };
            let LiveCommand::Chunk(chunk) = event.validate().unwrap() else { panic!("a chunk") };
            chunk
        };
        assert!(chunk(&"AB".repeat(32), Some(&"ab".repeat(32))).checksum_ok());
        assert!(chunk(&"ab".repeat(32), Some(&"aB".repeat(32))).checksum_ok());
        assert!(!chunk(&"AB".repeat(32), Some(&"cd".repeat(32))).checksum_ok());
        assert!(!chunk(&"AB".repeat(32), None).checksum_ok());
    }

    #[test]
    fn numbers_out_of_range_are_refused_with_the_rule() {
        let at_us = 1_795_348_087_945_000;
        let chunk = |seq: u64, duration_ms: u64, date: Option<&'static str>| LiveEvent {
            stream_id: "s".into(),
            sequence_number: Some(seq),
            duration_ms: Some(duration_ms),
            program_date_time: date.map(Into::into),
            ingested_at_us: Some(at_us),
            ..Default::default()
        };
        let refused = |event: LiveEvent| event.validate().unwrap_err().to_string();
        assert!(refused(chunk(u64::MAX, 2000, None)).contains("sequence_number 18446744073709551615 is out of range"));
        assert!(refused(chunk(1, u64::MAX, None)).contains("duration_ms"));
        assert!(refused(chunk(1, 0, None)).contains("duration_ms 0 is out of range"));
        assert!(refused(chunk(1, 2000, Some("9999-12-31T23:59:59Z"))).contains("between 2000 and 2100"));
        assert!(refused(chunk(1, 2000, Some("2026-11-20T11:48:07Z"))).contains("from the arrival"));
        assert!(chunk(MAX_SEQUENCE_NUMBER, 2000, Some("2026-11-22T11:48:07.945+0000")).validate().is_ok());
        let start = |target: u64, window: u64| LiveEvent {
            event_type: LiveEventType::StreamStarted,
            stream_id: "s".into(),
            target_duration_s: Some(target),
            dvr_window_size: Some(window),
            ..Default::default()
        };
        assert!(refused(start(2, u64::MAX)).contains("dvr_window_size"));
        assert!(refused(start(u64::MAX, 5)).contains("target_duration_s"));
        assert!(start(60, 100_000).validate().is_ok());
    }

    #[test]
    fn an_ended_stream_is_written_vod() {
        assert_eq!(serde_json::to_string(&StreamStatus::Ended).unwrap(), r#""vod""#);
        assert_eq!(serde_json::from_str::<StreamStatus>(r#""vod""#).unwrap(), StreamStatus::Ended);
    }
}
