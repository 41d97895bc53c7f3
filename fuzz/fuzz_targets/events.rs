//! Any bytes as a log record's payload, decoded as the dataflow decodes a record (UTF-8, then
//! JSON, then the checks): no panic, and whatever is taken is within segflow's ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segflow_model::checks::{
    DATE_RANGE_MS, DVR_WINDOW_SIZE, MAX_SEQUENCE_NUMBER, SEGMENT_DURATION_MS, TARGET_DURATION_S, validate_stream_id,
};
use segflow_model::keys::bucket;
use segflow_model::library::{
    MAX_DESCRIPTION_CHARS, MAX_TAG_CHARS, MAX_TAGS, MAX_TITLE_CHARS, VodDeleted, VodEdit, search_terms,
};
use segflow_model::{LiveCommand, LiveEvent, RecordingEvent, VodDoc, VodEvent};

fuzz_target!(|payload: &[u8]| {
    let Ok(text) = std::str::from_utf8(payload) else { return };
    if let Ok(event) = serde_json::from_str::<LiveEvent>(text)
        && let Ok((stream_id, command)) = event.into_command()
    {
        assert!(validate_stream_id(&stream_id).is_ok(), "{stream_id:?}");
        match command {
            LiveCommand::Start { target_duration_s, dvr_window_size, max_sequence_jump, .. } => {
                assert!(TARGET_DURATION_S.contains(&target_duration_s));
                assert!(DVR_WINDOW_SIZE.contains(&dvr_window_size));
                assert!((1..=MAX_SEQUENCE_NUMBER).contains(&max_sequence_jump));
            }
            LiveCommand::Chunk(chunk) => {
                assert!(chunk.sequence_number <= MAX_SEQUENCE_NUMBER);
                assert!(SEGMENT_DURATION_MS.contains(&chunk.duration_ms));
                assert!(chunk.encoder_program_date_time_ms.is_none_or(|ms| DATE_RANGE_MS.contains(&ms)));
                let key = &chunk.object_key;
                assert!(key.starts_with(&format!("{}/{stream_id}/", bucket::LIVE_STREAMS)), "{key}");
                assert!(key.split('/').all(|part| !part.is_empty() && !part.starts_with('.')), "{key}");
            }
            LiveCommand::RotateKey { .. } | LiveCommand::Init { .. } | LiveCommand::End { .. } => {}
        }
    }
    if let Ok(event) = serde_json::from_str::<VodEvent>(text) {
        let _ = event.validate();
    }
    if let Ok(edit) = serde_json::from_str::<VodEdit>(text)
        && edit.validate().is_ok()
    {
        assert!(edit.title.as_ref().is_none_or(|t| t.chars().count() <= MAX_TITLE_CHARS));
        assert!(edit.description.as_ref().is_none_or(|d| d.chars().count() <= MAX_DESCRIPTION_CHARS));
        let tags = edit.tags.as_deref().unwrap_or_default();
        assert!(tags.len() <= MAX_TAGS && tags.iter().all(|t| (1..=MAX_TAG_CHARS).contains(&t.chars().count())));
        let mut doc = VodDoc::new(&edit.stream_id, "", "", "vod-raw/x/source.mp4", 0);
        edit.apply(&mut doc);
        let _ = search_terms(&doc);
    }
    if let Ok(deleted) = serde_json::from_str::<VodDeleted>(text) {
        let _ = deleted.validate();
    }
    if let Ok(recorded) = serde_json::from_str::<RecordingEvent>(text)
        && recorded.validate().is_ok()
    {
        assert!(validate_stream_id(&recorded.stream_id).is_ok());
    }
});
