//! Log records into typed events, or into dead letters: shared by the live and VOD paths.

use serde::Deserialize;

use crate::log::LogRecord;
use crate::model::{DeadLetterDoc, DeadLetterReason, Topic, now_ms};

/// A record's JSON event, or the dead letter of a corrupt record or malformed JSON. The text
/// is checked as UTF-8 once, up front, so the event's strings can borrow from it unchecked.
pub fn parse_record<'a, T: Deserialize<'a>>(topic: Topic, record: &'a LogRecord) -> Result<T, DeadLetterDoc> {
    let malformed = |error: String| dead_letter(topic, record, DeadLetterReason::MalformedJson, error);
    match &record.payload {
        Err(error) => {
            let skipped = format!("{error}: bytes {}..{} of the partition skipped", record.offset, record.next_offset);
            Err(dead_letter(topic, record, DeadLetterReason::CorruptRecord, skipped))
        }
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
