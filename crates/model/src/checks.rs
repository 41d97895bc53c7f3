//! The checks on every name and number that reaches segflow from outside: ids and file names
//! become path components, checksums are compared as text, so each has a small alphabet.

use std::ops::RangeInclusive;

use thiserror::Error;

/// Largest sequence number: JavaScript players (hls.js) read it as a double, exact below 2^53.
pub const MAX_SEQUENCE_NUMBER: u64 = (1 << 53) - 1;
/// How far ahead of a stream's head a chunk may jump, unless the stream says otherwise.
pub const DEFAULT_MAX_SEQUENCE_JUMP: u64 = 10_000;
/// A stream's `EXT-X-TARGETDURATION`, in seconds.
pub const TARGET_DURATION_S: RangeInclusive<u64> = 1..=60;
/// Slots of a stream's DVR window.
pub const DVR_WINDOW_SIZE: RangeInclusive<u64> = 1..=100_000;
/// A segment's duration: above zero, and rounding to at most the largest target duration.
pub const SEGMENT_DURATION_MS: RangeInclusive<u64> = 1..=60_499;
/// How far an encoder's clock may be from segflow's when a segment arrives.
pub const MAX_CLOCK_SKEW_MS: u64 = 24 * 3600 * 1000;
/// Dates before 2000 or from 2100 on are refused outright (epoch milliseconds).
pub const DATE_RANGE_MS: RangeInclusive<u64> = 946_684_800_000..=4_102_444_799_999;

/// Why a value from outside was refused; the message names the value and the rule it broke.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("invalid stream id {0:?}: use 1-64 characters of [A-Za-z0-9_-]")]
    StreamId(String),
    #[error("{0:?} is not a VOD id ({VOD_ID_PREFIX}…)")]
    VodId(String),
    #[error("invalid file name {0:?}: use 1-128 characters of [A-Za-z0-9._-], not starting with '.'")]
    FileName(String),
    #[error(
        "file name {0:?} is not one an encoder sends: <name>.ts|.m4s|.aac segments, init.mp4 or init_<name>.mp4, \
         <name>.m3u8 playlists, <name> of 1-64 characters of [A-Za-z0-9_-]"
    )]
    IngestFile(String),
    #[error("checksum {0:?} is not a hex SHA-256 (64 hex digits)")]
    Sha256(String),
    #[error("program_date_time {0:?} is not an RFC 3339 date-time between 2000 and 2100")]
    ProgramDateTime(String),
    #[error("program_date_time {date:?} is more than {MAX_CLOCK_SKEW_MS} ms from the arrival at {arrival_ms} ms")]
    ClockSkew { date: String, arrival_ms: u64 },
    /// A number outside the range segflow takes; `field` names it, `range` the rule.
    #[error("{field} {value} is out of range: {range}")]
    OutOfRange { field: &'static str, value: String, range: String },
    #[error("object_key {key:?} must start with \"{prefix}\"")]
    ForeignObjectKey { key: String, prefix: String },
    #[error("object_key {0:?} is nested too deep")]
    NestedObjectKey(String),
    #[error("source object key {key:?} must be {prefix}<file name>")]
    SourceKey { key: String, prefix: String },
    /// An event without a field its kind needs (`field` may say the range it needs).
    #[error("{event} needs {field}")]
    MissingField { event: &'static str, field: &'static str },
    #[error("duration {duration_ms} ms does not fit the stream's target duration of {target_s} s")]
    TooLong { duration_ms: u64, target_s: u64 },
    #[error("chunk_index {index} differs from sequence_number {seq}")]
    IndexMismatch { index: u64, seq: u64 },
    #[error("unknown VOD event type {0:?}")]
    UnknownEventType(String),
    #[error("object key {0:?} is not one of the store's: <bucket>/<id>/<file>, with one folder at most between")]
    StoredObjectKey(String),
    /// A job's parameter that its operation does not take, or out of its range.
    #[error("{0}")]
    Parameter(String),
}

/// Live stream ids made by segflow start with this.
pub const LIVE_ID_PREFIX: &str = "live-";
/// Video ids start with this.
pub const VOD_ID_PREFIX: &str = "vod-";

/// Refused unless `range` holds `value`.
pub fn check_range(field: &'static str, value: u64, range: &RangeInclusive<u64>) -> Result<u64, ValidationError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        let range = format!("{} to {}", range.start(), range.end());
        Err(ValidationError::OutOfRange { field, value: value.to_string(), range })
    }
}

/// Seconds as HLS rounds a duration to compare it with `EXT-X-TARGETDURATION` (RFC 8216
/// 4.3.3.1: the EXTINF duration, rounded to the nearest integer).
pub fn rounded_seconds(duration_ms: u64) -> u64 {
    duration_ms.saturating_add(500) / 1000
}

/// Refused unless the duration is above zero and, rounded, fits the stream's target duration.
pub fn check_duration(duration_ms: u64, target_s: u64) -> Result<u64, ValidationError> {
    if duration_ms == 0 || rounded_seconds(duration_ms) > target_s {
        return Err(ValidationError::TooLong { duration_ms, target_s });
    }
    Ok(duration_ms)
}

/// A stream or video id: 1-64 characters of `[A-Za-z0-9_-]`, not starting with `-`.
pub fn validate_stream_id(id: &str) -> Result<(), ValidationError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !id.starts_with('-');
    if ok { Ok(()) } else { Err(ValidationError::StreamId(id.to_string())) }
}

/// A video id: a stream id that starts with [`VOD_ID_PREFIX`].
pub fn validate_vod_id(id: &str) -> Result<(), ValidationError> {
    validate_stream_id(id)?;
    if id.starts_with(VOD_ID_PREFIX) { Ok(()) } else { Err(ValidationError::VodId(id.to_string())) }
}

/// A file name inside a stream's folder: one path component, no dot files, no traversal.
pub fn validate_file_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok { Ok(()) } else { Err(ValidationError::FileName(name.to_string())) }
}

/// What an encoder PUTs into a live stream, by its file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestFile {
    /// A media segment (`.ts`, `.m4s`, `.aac`; `.mp4` too when its number comes in a header).
    Segment,
    /// An fMP4 initialization section: `init.mp4`, or `init_<name>.mp4` (FFmpeg's `init_%v.mp4`).
    Init,
    /// FFmpeg's media playlist.
    Playlist,
}

/// Classifies a file name an encoder sends: one `<name>.<ext>` with a plain name (FFmpeg's
/// `out12.ts`, `stream_3.m4s`), a known extension in lower case; anything else is refused.
pub fn ingest_file(name: &str, numbered: bool) -> Result<IngestFile, ValidationError> {
    let refused = || ValidationError::IngestFile(name.to_string());
    let (stem, ext) = name.split_once('.').ok_or_else(refused)?;
    let plain =
        |s: &str| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain(stem) {
        return Err(refused());
    }
    match ext {
        "ts" | "m4s" | "aac" => Ok(IngestFile::Segment),
        "mp4" if numbered => Ok(IngestFile::Segment),
        "mp4" if stem == "init" || stem.strip_prefix("init_").is_some_and(plain) => Ok(IngestFile::Init),
        "m3u8" => Ok(IngestFile::Playlist),
        _ => Err(refused()),
    }
}

/// 64 hex digits, in either case.
pub fn validate_sha256_hex(s: &str) -> Result<(), ValidationError> {
    // `fold`, not `all`: no early exit, so the check runs on whole vectors.
    if s.len() == 64 && s.bytes().fold(true, |ok, b| ok & b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ValidationError::Sha256(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_as_rfc_8216_says() {
        assert_eq!(rounded_seconds(2499), 2);
        assert_eq!(rounded_seconds(2500), 3);
        assert_eq!(rounded_seconds(u64::MAX), u64::MAX / 1000);
        assert!(check_duration(2499, 2).is_ok());
        assert!(check_duration(2500, 2).is_err() && check_duration(0, 2).is_err());
    }

    #[test]
    fn ids_with_traversal_are_refused() {
        for bad in ["", "a/b", "..", "../x", "a b", "-x", &"x".repeat(65)] {
            assert!(validate_stream_id(bad).is_err(), "{bad:?}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a\\b"] {
            assert!(validate_file_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_stream_id("live-abc_1").is_ok());
        assert!(validate_file_name("seg00001.ts").is_ok());
        assert!(validate_vod_id("live-a").is_err());
        assert!(validate_vod_id("vod-a").is_ok());
    }

    #[test]
    fn only_the_file_names_encoders_use_are_taken() {
        for (name, kind) in [
            ("out12.ts", IngestFile::Segment),
            ("stream_3.m4s", IngestFile::Segment),
            ("init.mp4", IngestFile::Init),
            ("init_0.mp4", IngestFile::Init),
            ("live.m3u8", IngestFile::Playlist),
        ] {
            assert_eq!(ingest_file(name, false), Ok(kind), "{name}");
        }
        assert_eq!(ingest_file("7.mp4", true), Ok(IngestFile::Segment));
        for bad in ["movie.mp4", "a.b.ts", "x.TS", "x.exe", ".ts", "noext", "x.ts.m3u8", "init_.mp4", "a b.ts"] {
            assert!(ingest_file(bad, false).is_err(), "{bad}");
        }
    }
}
