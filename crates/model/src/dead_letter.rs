//! Dead letters: log records that could not be processed, kept for an operator to inspect
//! instead of stopping the dataflow.

use serde::{Deserialize, Serialize};

/// Why a record became a dead letter; also the `reason` label of `segflow_dead_letters_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The log could not read the record back (its checksum does not match).
    CorruptRecord,
    /// Not UTF-8 JSON of the topic's event.
    MalformedJson,
    /// JSON of the event, with a field missing or out of range.
    InvalidEvent,
    /// A live event for a stream that was never started.
    UnknownStream,
    /// Processing the event failed inside segflow (a bug): the record is set aside so that
    /// the dataflow goes on, and a restart does not replay the failure.
    ProcessingFailed,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 5] = [
        DeadLetterReason::CorruptRecord,
        DeadLetterReason::MalformedJson,
        DeadLetterReason::InvalidEvent,
        DeadLetterReason::UnknownStream,
        DeadLetterReason::ProcessingFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::CorruptRecord => "corrupt_record",
            DeadLetterReason::MalformedJson => "malformed_json",
            DeadLetterReason::InvalidEvent => "invalid_event",
            DeadLetterReason::UnknownStream => "unknown_stream",
            DeadLetterReason::ProcessingFailed => "processing_failed",
        }
    }
}

/// A log record that could not be processed (`dead_letters`), keyed by `(topic, partition,
/// offset)` so that a replay writes it once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterDoc {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub reason: DeadLetterReason,
    pub error: String,
    /// The record's first bytes, lossily decoded.
    pub payload_preview: String,
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_written_as_their_labels() {
        for reason in DeadLetterReason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }
}
