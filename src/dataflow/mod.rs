//! The timely dataflow at segflow's core: log records in, durable playlists and documents out.
//!
//! ```text
//! log_source (partitions p % peers == index)
//!   -> decode_events           JSON -> checked command, or dead letter
//!   -> live_window (exchange by stream id)   dedupe, order, gaps, checksums, DVR window
//!   -> durable_sink            async writes on tokio; holds capabilities until durable
//!   -> probe                   "durable up to" frontier -> offset commits
//! ```

pub mod live;
pub mod offsets;
pub mod operators;
pub mod records;
mod retry;
pub mod vod;
mod worker;

use serde::{Deserialize, Serialize};

pub use retry::retry;
pub use worker::{WorkerContext, WorkerError, run_worker};

use crate::model::{DeadLetterDoc, LiveChunkDoc, LiveCommand, LiveStreamDoc, stream_hash};

/// What the live operator receives: a checked command for one stream, or a dead letter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LiveInput {
    /// `partition` and `offset` locate the command's log record.
    Command {
        stream_id: String,
        partition: u32,
        offset: u64,
        command: LiveCommand,
    },
    Dead(DeadLetterDoc),
}

impl LiveInput {
    /// Exchange key: a stream's events all go to the worker `stream_hash % peers`.
    pub fn route(&self) -> u64 {
        match self {
            LiveInput::Command { stream_id, .. } => stream_hash(stream_id),
            LiveInput::Dead(dead) => dead.partition as u64,
        }
    }
}

/// What the sinks must write (documents boxed: the enum moves through several containers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SinkOp {
    /// The stream's live playlist, after `events_applied` events of the stream.
    Playlist {
        stream_id: String,
        body: String,
        events_applied: u64,
        ended: bool,
    },
    Stream(Box<LiveStreamDoc>),
    /// A chunk document; a `late` one must not overwrite an existing document.
    Chunk {
        doc: Box<LiveChunkDoc>,
        overwrite: bool,
    },
    DeadLetter(DeadLetterDoc),
}
