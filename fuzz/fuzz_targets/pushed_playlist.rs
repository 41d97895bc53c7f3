//! Any bytes as the HLS playlist an encoder pushes, for a stream of any target duration: no
//! panic, and every segment taken has a sequence number, duration and file name in range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segflow_model::LiveStreamDoc;
use segflow_model::checks::{MAX_SEQUENCE_NUMBER, check_duration, validate_file_name};
use segflow_model::pushed_playlist::pushed_segments;

fuzz_target!(|input: (u8, &[u8])| {
    let (target, playlist) = input;
    let target_duration_s = u64::from(target % 60) + 1;
    let stream = LiveStreamDoc::new("live-fuzz", "", target_duration_s, 5, 0);
    let Ok(segments) = pushed_segments(&stream, playlist) else { return };
    for pair in segments.windows(2) {
        assert!(pair[0].seq < pair[1].seq, "numbers increase");
    }
    for segment in segments {
        assert!(segment.seq <= MAX_SEQUENCE_NUMBER);
        assert!(check_duration(segment.duration_ms, target_duration_s).is_ok(), "{}", segment.duration_ms);
        assert!(validate_file_name(&segment.name).is_ok(), "{:?}", segment.name);
    }
});
