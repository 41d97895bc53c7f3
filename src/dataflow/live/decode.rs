//! Turns raw log records into checked live commands, or dead letters, before they are
//! exchanged by stream id.

use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;

use crate::dataflow::live::LiveInput;
use crate::dataflow::records::{dead_letter, parse_record};
use crate::log::LogRecord;
use crate::model::{DeadLetterReason, LiveEvent, Topic};

/// Decodes one record; pure, so the oracle test and the bench share it with the engine.
pub fn decode_record(topic: Topic, record: LogRecord) -> LiveInput {
    let event: LiveEvent = match parse_record(topic, &record) {
        Ok(event) => event,
        Err(dead) => return LiveInput::Dead(dead),
    };
    match event.into_command() {
        Ok((stream_id, command)) => {
            LiveInput::Command { stream_id, partition: record.partition, offset: record.offset, command }
        }
        Err(error) => LiveInput::Dead(dead_letter(topic, &record, DeadLetterReason::InvalidEvent, error.to_string())),
    }
}

/// Extension trait: `records.decode_events(topic)`.
///
/// ```
/// use segflow::dataflow::live::decode::DecodeEvents;
/// use segflow::dataflow::live::LiveInput;
/// use segflow::model::{DeadLetterReason, Topic};
/// use segflow::log::LogRecord;
/// use timely::dataflow::operators::{Inspect, ToStream};
///
/// timely::example(|scope| {
///     let bad = LogRecord { partition: 0, offset: 0, next_offset: 3, payload: Ok(b"{x".to_vec()) };
///     vec![bad].to_stream(scope).container::<Vec<_>>()
///         .decode_events(Topic::LiveChunks)
///         .inspect(|input| assert!(matches!(input, LiveInput::Dead(d) if d.reason == DeadLetterReason::MalformedJson)));
/// });
/// ```
pub trait DecodeEvents<'s> {
    fn decode_events(self, topic: Topic) -> StreamVec<'s, u64, LiveInput>;
}

impl<'s> DecodeEvents<'s> for StreamVec<'s, u64, LogRecord> {
    fn decode_events(self, topic: Topic) -> StreamVec<'s, u64, LiveInput> {
        self.map(move |record| decode_record(topic, record))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::LiveCommand;
    use crate::model::checks::{DATE_RANGE_MS, MAX_SEQUENCE_NUMBER, SEGMENT_DURATION_MS};

    fn decode(payload: Vec<u8>) -> LiveInput {
        decode_record(Topic::LiveChunks, LogRecord { partition: 0, offset: 0, next_offset: 1, payload: Ok(payload) })
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_command_or_a_dead_letter(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            decode(payload);
        }

        #[test]
        fn a_decoded_chunk_has_its_numbers_in_range(
            seq in prop_oneof![any::<u64>(), 0u64..10],
            duration in prop_oneof![any::<u64>(), 0u64..70_000],
            at_us in any::<u64>(),
            date in prop_oneof![Just(None), any::<i64>().prop_map(Some), (946_684_800_000i64..4_102_444_800_000).prop_map(Some)],
        ) {
            let date = date.and_then(chrono::DateTime::from_timestamp_millis).map(|d| d.to_rfc3339());
            let event = serde_json::json!({
                "stream_id": "s", "sequence_number": seq, "duration_ms": duration,
                "ingested_at_us": at_us, "program_date_time": date,
            });
            if let LiveInput::Command { command: LiveCommand::Chunk(chunk), .. } = decode(event.to_string().into_bytes()) {
                prop_assert!(chunk.sequence_number <= MAX_SEQUENCE_NUMBER);
                prop_assert!(SEGMENT_DURATION_MS.contains(&chunk.duration_ms));
                prop_assert!(chunk.encoder_program_date_time_ms.is_none_or(|ms| DATE_RANGE_MS.contains(&ms)));
            }
        }
    }
}
