//! The event log's topics, and how a stream's events find their partition and worker.

use serde::{Deserialize, Serialize};

/// A topic of the event log; partitions as the legacy pipeline created them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Topic {
    /// Live events ([`super::LiveEvent`]), keyed by stream id.
    LiveChunks,
    /// Upload events ([`super::VodEvent`]), keyed by video id.
    VodChunks,
}

impl Topic {
    pub const ALL: [Topic; 2] = [Topic::LiveChunks, Topic::VodChunks];

    pub fn name(self) -> &'static str {
        match self {
            Topic::LiveChunks => "live-chunks",
            Topic::VodChunks => "vod-chunks",
        }
    }

    /// The partitions the embedded log has, and Kafka gets when segflow creates the topic.
    pub fn partitions(self) -> u32 {
        match self {
            Topic::LiveChunks => 6,
            Topic::VodChunks => 3,
        }
    }
}

/// Stable hash of a stream id: picks its log partition and its timely worker, in every process.
pub fn stream_hash(stream_id: &str) -> u64 {
    crc32fast::hash(stream_id.as_bytes()) as u64
}
