//! The vocabulary every other module speaks: the events that travel through the log, the
//! documents the metadata store keeps, every object key, and the checks on what comes from
//! outside. A crate of its own, without I/O: it depends on nothing else of segflow's, and the
//! fuzz targets (`fuzz/`) build it alone.

pub mod auth;
pub mod checks;
mod dead_letter;
pub mod jobs;
pub mod keys;
pub mod library;
pub mod live;
pub mod pushed_playlist;
mod topic;
pub mod vod;

pub use checks::ValidationError;
pub use dead_letter::{DeadLetterDoc, DeadLetterReason};
pub use live::{
    Chunk, ChunkStatus, GapCause, LiveChunkDoc, LiveCommand, LiveEvent, LiveEventType, LiveGapsDoc, LiveStreamDoc,
    PlaylistNotice, StreamStatus, parse_program_date_time, program_date_time_at,
};
pub use topic::{Topic, stream_hash};
pub use vod::{
    MediaInfo, RecordingEvent, STREAM_RECORDED, StatusChange, Storyboard, VOD_UPLOADED, VariantDoc, VodDoc, VodEvent,
    VodKind, VodStatus,
};

/// Milliseconds since the Unix epoch, the one clock every event and document uses.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Microseconds since the Unix epoch, for latencies.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
