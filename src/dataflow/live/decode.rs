//! Turns raw log records into checked live commands, or dead letters, before they are
//! exchanged by stream id.

use serde::Deserialize;
use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;

use crate::dataflow::LiveInput;
use crate::log::LogRecord;
use crate::model::{DeadLetterDoc, DeadLetterReason, LiveEvent, Topic, now_ms};

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

/// A record's JSON event, or the dead letter of a corrupt record or malformed JSON. The text
/// is checked as UTF-8 once, up front, so the event's strings can borrow from it unchecked.
pub fn parse_record<'a, T: Deserialize<'a>>(topic: Topic, record: &'a LogRecord) -> Result<T, DeadLetterDoc> {
    let malformed = |error: String| dead_letter(topic, record, DeadLetterReason::MalformedJson, error);
    match &record.payload {
        Err(error) => Err(dead_letter(topic, record, DeadLetterReason::CorruptRecord, error.clone())),
        Ok(payload) => {
            let text = std::str::from_utf8(payload).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
            serde_json::from_str(text).map_err(|e| malformed(e.to_string()))
        }
    }
}

/// The dead letter of a record that cannot be processed, with the start of its payload.
pub fn dead_letter(topic: Topic, record: &LogRecord, reason: DeadLetterReason, error: String) -> DeadLetterDoc {
    let payload = record.payload.as_deref().unwrap_or_default();
    DeadLetterDoc {
        topic: topic.name().to_string(),
        partition: record.partition,
        offset: record.offset,
        reason,
        error,
        payload_preview: String::from_utf8_lossy(&payload[..payload.len().min(256)]).into_owned(),
        at_ms: now_ms(),
    }
}

/// Extension trait: `records.decode_events(topic)`.
///
/// ```
/// use segflow::dataflow::live::decode::DecodeEvents;
/// use segflow::dataflow::LiveInput;
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
