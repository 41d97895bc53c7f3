//! segflow: a video streaming backend in one binary. Live segments and VOD uploads enter an
//! event log, an embedded timely dataflow processes every event, and an axum API serves HLS
//! through signed URLs.
//!
//! # Layout
//!
//! The modules follow the data, and import only downwards:
//! `api -> ingest | dataflow -> log | storage | media -> model`.
//!
//! - [`api`]: thin axum handlers, [`api::ApiError`], signed playback URLs.
//! - [`ingest`]: the write path: segments, chunk events and uploads into the log.
//! - [`dataflow`]: the timely workers; [`dataflow::live`] and [`dataflow::vod`] hold each
//!   path's operators and state, [`dataflow::operators`] the ones they share.
//! - [`log`]: the event log: embedded partition files, or Kafka.
//! - [`storage`]: the object store (local directory, or S3) and the metadata store (embedded
//!   redb, or MongoDB).
//! - [`media`]: `ffprobe`, the ladder, FFmpeg, HLS playlists.
//! - [`model`]: events, documents, object keys, and the checks on what comes from outside.
//! - [`backends`]: opens the three backends from the config; [`engine`] starts the workers
//!   and the API on them and drains on shutdown; [`config`], [`metrics`], [`files`], [`panics`]
//!   serve all.
//!
//! # Words
//!
//! - **stream**: a live stream (`live-…`); **video**: an upload (`vod-…`). Both have a
//!   `stream_id`.
//! - **chunk**: one media segment of a live stream, numbered by its **sequence number**
//!   (`chunk_index`, the same number); **chunk event**: the log record saying it is stored.
//! - **DVR window**: the newest `dvr_window_size` sequence numbers, which the live playlist
//!   lists; a missing one is a **gap** (an `EXT-X-GAP` slot); a chunk older than the window is
//!   **late**.
//! - **ladder**, **rung**: the renditions a video is transcoded into (1080p, 720p, …).
//! - **durable frontier**: the timely frontier up to which every write of the dataflow is
//!   durable; log offsets are committed behind it, so a restart replays what is not.
//! - **dead letter**: a log record that cannot be processed, kept for an operator.
//! - **legacy pipeline**: the Kafka → Spark → MinIO/MongoDB pipeline segflow replaces. Its
//!   chunk event JSON, topic, bucket and collection names and environment variables are kept,
//!   so its producers and tools work against segflow unchanged ([`model::live`]).

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
pub mod panics;
pub mod storage;

/// The vocabulary, a crate of its own (`crates/model`): events, documents, object keys, checks.
pub use segflow_model as model;
