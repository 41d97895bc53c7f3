//! One timely operator per file, each an extension trait on streams.

pub mod decode_events;
pub mod durable_sink;
pub mod live_window;
pub mod log_source;
