//! One timely operator per file, each an extension trait on streams.

pub mod async_stage;
pub mod decode_events;
pub mod durable_sink;
pub mod join_rungs;
pub mod live_window;
pub mod log_source;
pub mod verify_checksums;
