//! One timely operator per file, each an extension trait on streams.

pub mod async_stage;
pub mod log_source;
