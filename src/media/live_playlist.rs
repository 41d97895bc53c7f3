//! Renders a live stream's sliding DVR window as an RFC 8216 media playlist, and once it ended,
//! its recording: every stored chunk, as a VOD playlist.
//!
//! Gaps are `EXT-X-GAP` slots rather than `EXT-X-DISCONTINUITY` cuts: a slot keeps its media
//! sequence number, so when a late chunk fills it the playlist keeps the RFC's rule that a
//! sequence number always names the same segment, and players skip the slot instead of stalling.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use m3u8_rs::{ExtTag, Map, MediaPlaylist, MediaPlaylistType, MediaSegment};

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
pub(super) fn set_float_precision() {
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
                Some(s) => media_segment(s),
                None => {
                    let estimate = window
                        .segments
                        .range(seq..)
                        .next()
                        .map_or(window.target_duration_s.saturating_mul(1000), |(_, s)| s.duration_ms);
                    gap_slot(seq, estimate)
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

fn media_segment(segment: &WindowSegment) -> MediaSegment {
    MediaSegment {
        uri: segment.uri.clone(),
        duration: segment.duration_ms as f32 / 1000.0,
        program_date_time: pdt(segment.program_date_time_ms),
        ..Default::default()
    }
}

/// Whether a listed segment is a gap slot (`EXT-X-GAP`): its URI names no object.
pub fn is_gap(segment: &MediaSegment) -> bool {
    segment.unknown_tags.iter().any(|tag| tag.tag == "X-GAP")
}

/// The URIs of the objects a media playlist names, in order: each segment's init section (if
/// it has one) before it, gap slots left out.
pub fn object_uris(media: &mut MediaPlaylist) -> impl Iterator<Item = &mut String> {
    media
        .segments
        .iter_mut()
        .filter(|segment| !is_gap(segment))
        .flat_map(|segment| segment.map.as_mut().map(|map| &mut map.uri).into_iter().chain([&mut segment.uri]))
}

/// A missing slot: listed so that sequence numbers keep naming the same segments; players skip it.
fn gap_slot(seq: u64, duration_ms: u64) -> MediaSegment {
    MediaSegment {
        uri: format!("gap/{seq}.ts"),
        duration: duration_ms as f32 / 1000.0,
        unknown_tags: vec![ExtTag { tag: "X-GAP".into(), rest: None }],
        ..Default::default()
    }
}

/// Missing slots a recording lists as gaps, at most, between two chunks; a longer run (the
/// encoder's numbering jumped) is a discontinuity instead, so the playlist stays as long as
/// the chunks are many.
pub const MAX_RECORDED_GAP_SLOTS: u64 = 1000;

/// Renders a recording: every chunk of `segments` in order, the missing slots between them as
/// gaps (each as long as the chunk after it, as in the live playlist), `EXT-X-PLAYLIST-TYPE:VOD`
/// and `EXT-X-ENDLIST`.
pub fn render_recording(
    target_duration_s: u64,
    segments: &BTreeMap<u64, WindowSegment>,
    init_uri: Option<&str>,
) -> String {
    set_float_precision();
    let longest_s = segments.values().map(|s| s.duration_ms.div_ceil(1000)).max().unwrap_or(0);
    let mut playlist = MediaPlaylist {
        version: Some(if init_uri.is_some() { 6 } else { 3 }),
        target_duration: target_duration_s.max(longest_s),
        media_sequence: segments.keys().next().copied().unwrap_or(0),
        playlist_type: Some(MediaPlaylistType::Vod),
        end_list: true,
        ..Default::default()
    };
    let mut previous: Option<u64> = None;
    for (&seq, segment) in segments {
        let mut listed = media_segment(segment);
        match previous.map(|p| seq - p - 1) {
            Some(missing) if missing > MAX_RECORDED_GAP_SLOTS => listed.discontinuity = true,
            Some(missing) => {
                playlist.segments.extend((seq - missing..seq).map(|gap| gap_slot(gap, segment.duration_ms)));
            }
            None => listed.map = init_uri.map(|uri| Map { uri: uri.to_string(), ..Default::default() }),
        }
        playlist.segments.push(listed);
        previous = Some(seq);
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

    #[test]
    fn a_recording_lists_every_chunk_short_gaps_as_slots_and_a_jump_as_a_discontinuity() {
        let segments: BTreeMap<u64, WindowSegment> =
            [seg(0, 2000), seg(1, 2000), seg(3, 1500), seg(4 + MAX_RECORDED_GAP_SLOTS + 1, 2000)].into_iter().collect();
        let text = render_recording(2, &segments, Some("init.mp4"));
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
        assert_eq!(parsed.playlist_type, Some(MediaPlaylistType::Vod));
        assert!(parsed.end_list);
        let uris: Vec<&str> = parsed.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["chunks/0.ts", "chunks/1.ts", "gap/2.ts", "chunks/3.ts", "chunks/1005.ts"]);
        assert_eq!(parsed.segments[2].duration, 1.5, "a gap is as long as the chunk after it");
        assert!(parsed.segments[4].discontinuity);
        assert_eq!(parsed.segments[0].map.as_ref().map(|m| m.uri.as_str()), Some("init.mp4"));
        assert!(text.contains("#EXT-X-GAP\n#EXTINF:1.500,\ngap/2.ts\n"), "{text}");
    }
}
