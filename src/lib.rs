//! segflow: a video streaming backend in one binary. Live segments and VOD uploads enter an
//! event log, an embedded timely dataflow processes every event, and an axum API serves HLS
//! through signed URLs.
//!
//! # Layout
//!
//! - [`config`]: one `Config`, layered defaults < file < `SEGFLOW_*` env < flags.
//! - [`model`]: events, documents and id validation shared by every module.
//! - [`sources`]: the event log the dataflow reads (embedded, partitioned like Kafka).
//! - [`dataflow`]: the timely graph; one operator per file under `dataflow/operators/`.
//! - [`sinks`]: object store and metadata backends, and the durable live sink.
//! - [`media`]: HLS playlist writing.
//! - [`api`]: the axum router, handlers, errors and signed URLs.
//! - [`engine`]: wires it all together; `engine::run` is what `segflow run` calls.
//! - [`metrics`]: every Prometheus metric, defined once.
//! - [`files`]: files replaced atomically, small ones without creating a file per version.

pub mod api;
pub mod backends;
pub mod config;
pub mod dataflow;
pub mod engine;
pub mod files;
pub mod ingest;
pub mod log;
pub mod media;
pub mod metrics;
pub mod model;
pub mod storage;
