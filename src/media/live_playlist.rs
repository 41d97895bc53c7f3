//! Renders a live stream's sliding DVR window as an RFC 8216 media playlist.
//!
//! Gaps are `EXT-X-GAP` slots rather than `EXT-X-DISCONTINUITY` cuts: a slot keeps its media
//! sequence number, so when a late chunk fills it the playlist keeps the RFC's rule that a
//! sequence number always names the same segment, and players skip the slot instead of stalling.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use m3u8_rs::{ExtTag, Map, MediaPlaylist, MediaSegment};

/// One accepted segment of the window.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSegment {
    pub duration_ms: u64,
    /// URI relative to the playlist (`chunks/42.ts`).
    pub uri: String,
    pub program_date_time_ms: u64,
}

/// What a live playlist shows: slots `start..=head`, the accepted ones in `segments`.
pub struct LiveWindow<'a> {
    pub target_duration_s: u64,
    /// First and last slot; `None` before the first chunk.
    pub slots: Option<(u64, u64)>,
    pub segments: &'a BTreeMap<u64, WindowSegment>,
    pub init_uri: Option<&'a str>,
    pub ended: bool,
}

/// `EXTINF` values are written with millisecond precision (set once, process-wide).
fn set_float_precision() {
    m3u8_rs::WRITE_OPT_FLOAT_PRECISION.store(3, std::sync::atomic::Ordering::Relaxed);
}

fn pdt(ms: u64) -> Option<DateTime<FixedOffset>> {
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?).map(|t| t.fixed_offset())
}

/// Renders the window. A missing slot takes the duration of the first segment after it (the
/// window's head always is one): unlike the one before it, that segment does not slide out of
/// the window first, so the slot's `EXTINF` does not change while it is listed (RFC 8216
/// 6.2.1).
pub fn render(window: &LiveWindow) -> String {
    set_float_precision();
    let mut playlist = MediaPlaylist {
        version: Some(if window.init_uri.is_some() { 6 } else { 3 }),
        target_duration: window.target_duration_s,
        end_list: window.ended,
        ..Default::default()
    };
    if let Some((start, head)) = window.slots {
        playlist.media_sequence = start;
        for seq in start..=head {
            let mut segment = match window.segments.get(&seq) {
                Some(s) => MediaSegment {
                    uri: s.uri.clone(),
                    duration: s.duration_ms as f32 / 1000.0,
                    program_date_time: pdt(s.program_date_time_ms),
                    ..Default::default()
                },
                None => {
                    let estimate = window
                        .segments
                        .range(seq..)
                        .next()
                        .map_or(window.target_duration_s.saturating_mul(1000), |(_, s)| s.duration_ms);
                    MediaSegment {
                        uri: format!("gap/{seq}.ts"),
                        duration: estimate as f32 / 1000.0,
                        unknown_tags: vec![ExtTag { tag: "X-GAP".into(), rest: None }],
                        ..Default::default()
                    }
                }
            };
            if seq == start {
                segment.map = window.init_uri.map(|uri| Map { uri: uri.to_string(), ..Default::default() });
            }
            playlist.segments.push(segment);
        }
    }
    let mut out = Vec::with_capacity(64 + playlist.segments.len() * 96);
    playlist.write_to(&mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("m3u8-rs writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u64, ms: u64) -> (u64, WindowSegment) {
        (
            seq,
            WindowSegment { duration_ms: ms, uri: format!("chunks/{seq}.ts"), program_date_time_ms: 1_700_000_000_000 },
        )
    }

    #[test]
    fn renders_gap_slot_and_endlist() {
        let segments: BTreeMap<u64, WindowSegment> = [seg(5, 2000), seg(7, 1960)].into_iter().collect();
        let text = render(&LiveWindow {
            target_duration_s: 2,
            slots: Some((5, 7)),
            segments: &segments,
            init_uri: None,
            ended: true,
        });
        let expected = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n\
            #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXTINF:2.000,\nchunks/5.ts\n\
            #EXT-X-GAP\n#EXTINF:1.960,\ngap/6.ts\n\
            #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXTINF:1.960,\nchunks/7.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(text, expected);
        // The crate's own parser reads it back.
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
        assert_eq!(parsed.segments.len(), 3);
        assert!(parsed.end_list);
    }

    #[test]
    fn a_gap_keeps_its_duration_when_the_segment_before_it_slides_out() {
        let gap_extinf = |segments: &[(u64, WindowSegment)], slots| {
            let segments: BTreeMap<u64, WindowSegment> = segments.iter().cloned().collect();
            let window = LiveWindow {
                target_duration_s: 2,
                slots: Some(slots),
                segments: &segments,
                init_uri: None,
                ended: false,
            };
            let parsed = m3u8_rs::parse_media_playlist_res(render(&window).as_bytes()).expect("parses");
            parsed.segments.iter().find(|s| s.uri == "gap/6.ts").expect("the gap slot").duration
        };
        let before = gap_extinf(&[seg(5, 1500), seg(7, 1960)], (5, 7));
        let after = gap_extinf(&[seg(7, 1960), seg(8, 2000)], (6, 8));
        assert_eq!((before, after), (1.96, 1.96));
    }
}
