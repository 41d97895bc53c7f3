//! The timely dataflow at segflow's core: log records in, durable playlists and documents out.
//!
//! Each worker reads its own partitions of the log and runs two dataflows, one per topic:
//! [`live`] (`live-chunks`) and [`vod`] (`vod-chunks`). Records are exchanged by stream or
//! video id, so one worker owns each stream's state. On a cluster of processes, worker
//! indices count over the whole cluster, and a third dataflow carries heartbeats ([`cluster`]). Every stage that writes holds its
//! records' capabilities until the write is durable, so the frontier of its (empty) output,
//! the *durable frontier*, says which log offsets may be committed ([`offsets`]).

pub mod cluster;
pub mod live;
pub mod offsets;
pub mod operators;
pub mod records;
mod retry;
pub mod vod;
mod worker;

pub use retry::retry;
pub use worker::{WorkerContext, WorkerError, run_worker};
