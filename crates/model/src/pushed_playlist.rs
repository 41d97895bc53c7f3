//! The segments of the HLS playlist an encoder pushes (FFmpeg's `-method PUT` sends one after
//! each segment), every number in it checked before any of it is taken.

use thiserror::Error;

use crate::checks::{IngestFile, MAX_SEQUENCE_NUMBER, ValidationError, check_duration, check_range, ingest_file};
use crate::live::{LiveStreamDoc, parse_program_date_time, program_date_time_at};
use crate::now_ms;

/// A segment a pushed playlist names, its numbers checked.
#[derive(Debug, PartialEq)]
pub struct PushedSegment {
    pub seq: u64,
    /// The segment's file name, without the playlist's folders or query.
    pub name: String,
    pub duration_ms: u64,
    /// The encoder's `EXT-X-PROGRAM-DATE-TIME`, if it is within the clock skew of now.
    pub date: Option<String>,
}

/// Why a pushed playlist was refused whole.
#[derive(Debug, Error)]
pub enum PushedPlaylistError {
    #[error("not an HLS media playlist: {0}")]
    Malformed(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// The segments of the playlist: refused whole if a sequence number or `EXTINF` is out of
/// range, or a segment's file name (its URI without folders or query) is not one an encoder
/// can upload as a segment (`passwd`, `a.mp4`).
pub fn pushed_segments(stream: &LiveStreamDoc, bytes: &[u8]) -> Result<Vec<PushedSegment>, PushedPlaylistError> {
    let malformed = PushedPlaylistError::Malformed;
    let playlist = m3u8_rs::parse_media_playlist_res(bytes).map_err(|e| malformed(format!("{e:?}")))?;
    let count = playlist.segments.len() as u64;
    let last = playlist.media_sequence.checked_add(count.saturating_sub(1)).filter(|l| *l <= MAX_SEQUENCE_NUMBER);
    if last.is_none() {
        check_range("EXT-X-MEDIA-SEQUENCE", playlist.media_sequence, &(0..=MAX_SEQUENCE_NUMBER - count))?;
    }
    // m3u8-rs reads `1e30` as 1 and `-5` as -5: the durations are read from the text instead.
    let extinfs: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| line.strip_prefix(b"#EXTINF:"))
        .map(|rest| rest.split(|b| *b == b',').next().unwrap_or_default())
        .collect();
    if extinfs.len() != playlist.segments.len() {
        return Err(malformed("every segment needs one #EXTINF".into()));
    }
    let now = now_ms();
    let mut segments = Vec::with_capacity(playlist.segments.len());
    for ((seq, segment), extinf) in (playlist.media_sequence..).zip(&playlist.segments).zip(extinfs) {
        let text = String::from_utf8_lossy(extinf);
        let seconds = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| malformed(format!("segment {seq}: EXTINF {text:?} is not a positive duration")))?;
        let duration_ms = (seconds * 1000.0).round().max(1.0) as u64; // `as` saturates
        check_duration(duration_ms, stream.target_duration_s)?;
        let name = segment.uri.rsplit('/').next().unwrap_or_default();
        let name = name.split('?').next().unwrap_or_default();
        if ingest_file(name, false)? != IngestFile::Segment {
            return Err(ValidationError::IngestFile(name.to_string()).into());
        }
        let date = encoder_date(segment).filter(|text| {
            let fits = program_date_time_at(text, Some(now)).is_ok();
            if !fits {
                tracing::warn!(stream_id = stream.stream_id, seq, text, "segment date ignored: too far from now");
            }
            fits
        });
        segments.push(PushedSegment { seq, name: name.to_string(), duration_ms, date });
    }
    Ok(segments)
}

/// The segment's `EXT-X-PROGRAM-DATE-TIME` (FFmpeg writes one with `-hls_flags
/// program_date_time`). FFmpeg's `+0000` offsets are not RFC 3339, so m3u8-rs leaves those
/// among the unknown tags.
fn encoder_date(segment: &m3u8_rs::MediaSegment) -> Option<String> {
    segment.program_date_time.map(|t| t.to_rfc3339()).or_else(|| {
        let tag = segment.unknown_tags.iter().find(|t| t.tag == "X-PROGRAM-DATE-TIME")?;
        tag.rest.clone().filter(|text| parse_program_date_time(text).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_segment(date_line: &str) -> m3u8_rs::MediaSegment {
        let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000000,\n{date_line}\nout0.ts\n");
        m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap().segments.remove(0)
    }

    fn playlist(media_sequence: u64, extinfs: &[&str]) -> String {
        let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{media_sequence}\n");
        for (i, extinf) in extinfs.iter().enumerate() {
            text.push_str(&format!("#EXTINF:{extinf},\nout{i}.ts\n"));
        }
        text
    }

    fn stream() -> LiveStreamDoc {
        LiveStreamDoc::new("live-s", "", 2, 5, 0)
    }

    #[test]
    fn a_pushed_playlist_with_numbers_out_of_range_is_refused_whole() {
        let refused = |text: String| pushed_segments(&stream(), text.as_bytes()).unwrap_err().to_string();
        assert!(refused(playlist(u64::MAX, &["2.0"])).contains("EXT-X-MEDIA-SEQUENCE"));
        assert!(refused(playlist(MAX_SEQUENCE_NUMBER, &["2.0", "2.0"])).contains("EXT-X-MEDIA-SEQUENCE"));
        for bad in ["-5", "NaN", "inf", "0"] {
            assert!(refused(playlist(0, &["2.0", bad])).contains("is not a positive duration"), "{bad}");
        }
        assert!(refused(playlist(0, &["1e30"])).contains("does not fit the stream's target duration"));
        for uri in ["../../etc/passwd", "a0.mp4", "init.mp4", "a.b.ts", "live.m3u8"] {
            let text = playlist(0, &["2.0"]).replace("out0.ts", uri);
            assert!(refused(text).contains("is not one an encoder sends"), "{uri}");
        }
        // Folders and a query (FFmpeg's `-hls_base_url`) are not part of the name.
        let text = playlist(0, &["2.0"]).replace("out0.ts", "https://cdn/x/out0.ts?t=1");
        assert_eq!(pushed_segments(&stream(), text.as_bytes()).unwrap()[0].name, "out0.ts");
        let taken = pushed_segments(&stream(), playlist(7, &["2.0", "1.5"]).as_bytes()).unwrap();
        let numbers: Vec<_> = taken.iter().map(|s| (s.seq, s.duration_ms)).collect();
        assert_eq!(numbers, [(7, 2000), (8, 1500)]);
    }

    proptest::proptest! {
        #[test]
        fn any_pushed_playlist_is_refused_or_taken_in_range(
            media_sequence in proptest::prop_oneof![proptest::num::u64::ANY, 0u64..10],
            extinfs in proptest::collection::vec(proptest::num::f64::ANY, 0..8),
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let extinfs: Vec<String> = extinfs.iter().map(f64::to_string).collect();
            let extinfs: Vec<&str> = extinfs.iter().map(String::as_str).collect();
            let mut text = playlist(media_sequence, &extinfs).into_bytes();
            text.extend(noise);
            if let Ok(segments) = pushed_segments(&stream(), &text) {
                for segment in segments {
                    proptest::prop_assert!(segment.seq <= MAX_SEQUENCE_NUMBER);
                    proptest::prop_assert!((1..=2499).contains(&segment.duration_ms));
                }
            }
        }
    }

    #[test]
    fn encoder_dates_are_read_in_ffmpegs_format_and_rfc_3339() {
        let ms = |segment| encoder_date(&segment).map(|d| parse_program_date_time(&d).unwrap());
        // FFmpeg 5.1 writes `+0000`.
        assert_eq!(ms(first_segment("#EXT-X-PROGRAM-DATE-TIME:2026-11-22T11:48:07.945+0000")), Some(1795348087945));
        assert_eq!(ms(first_segment("#EXT-X-PROGRAM-DATE-TIME:2026-11-22T12:48:07.945+01:00")), Some(1795348087945));
        assert_eq!(ms(first_segment("#EXT-X-PROGRAM-DATE-TIME:yesterday")), None);
        assert_eq!(ms(first_segment("#EXT-X-DISCONTINUITY")), None);
    }
}
