//! The checks on every name and number that reaches segflow from outside: ids and file names
//! become path components, checksums are compared as text, so each has a small alphabet.

use thiserror::Error;

/// Why a value from outside was refused; the message names the value and the rule it broke.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("invalid stream id {0:?}: use 1-64 characters of [A-Za-z0-9_-]")]
    StreamId(String),
    #[error("{0:?} is not a VOD id ({VOD_ID_PREFIX}…)")]
    VodId(String),
    #[error("invalid file name {0:?}: use 1-128 characters of [A-Za-z0-9._-], not starting with '.'")]
    FileName(String),
    #[error("checksum {0:?} is not a hex SHA-256 (64 hex digits)")]
    Sha256(String),
    #[error("program_date_time {0:?} is not an RFC 3339 date-time after 1970")]
    ProgramDateTime(String),
    #[error("object_key {key:?} must start with \"{prefix}\"")]
    ForeignObjectKey { key: String, prefix: String },
    #[error("object_key {0:?} is nested too deep")]
    NestedObjectKey(String),
    #[error("source object key {key:?} must be {prefix}<file name>")]
    SourceKey { key: String, prefix: String },
    /// An event without a field its kind needs (`field` may say the range it needs).
    #[error("{event} needs {field}")]
    MissingField { event: &'static str, field: &'static str },
    #[error("chunk_index {index} differs from sequence_number {seq}")]
    IndexMismatch { index: u64, seq: u64 },
    #[error("unknown VOD event type {0:?}")]
    UnknownEventType(String),
}

/// Live stream ids made by segflow start with this.
pub const LIVE_ID_PREFIX: &str = "live-";
/// Video ids start with this; the playback folder of an id depends on it.
pub const VOD_ID_PREFIX: &str = "vod-";

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
}
