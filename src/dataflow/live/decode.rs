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
