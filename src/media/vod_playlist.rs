//! Writes a VOD video's playlists: the master, one `EXT-X-STREAM-INF` per transcoded rung so
//! players can pick and switch renditions, and each rendition's, which grows while FFmpeg
//! encodes it.

use std::collections::HashMap;

use m3u8_rs::{
    MasterPlaylist, MediaPlaylist, MediaPlaylistType, MediaSegment, QuotedOrUnquoted, Resolution, Start, VariantStream,
};

use super::transcode::RungOutput;

/// The master playlist for `outputs`, highest bandwidth first; URIs are the rungs' playlists.
pub fn master_playlist(outputs: &[RungOutput]) -> String {
    let mut sorted: Vec<&RungOutput> = outputs.iter().collect();
    sorted.sort_by_key(|output| std::cmp::Reverse(output.bandwidth));
    let variants = sorted
        .into_iter()
        .map(|output| VariantStream {
            uri: output.playlist.clone(),
            bandwidth: output.bandwidth,
            average_bandwidth: Some(output.average_bandwidth),
            codecs: Some(output.codecs.clone()),
            resolution: Some(Resolution { width: output.rung.width.into(), height: output.rung.height.into() }),
            // m3u8-rs prints an f64 in full; FRAME-RATE is written here with 3 decimals instead.
            other_attributes: Some(HashMap::from([(
                "FRAME-RATE".to_string(),
                QuotedOrUnquoted::Unquoted(format!("{:.3}", output.frame_rate)),
            )])),
            ..VariantStream::default()
        })
        .collect();
    let playlist = MasterPlaylist { version: Some(3), independent_segments: true, variants, ..Default::default() };
    let mut out = Vec::new();
    playlist.write_to(&mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("m3u8-rs writes UTF-8")
}

/// The media playlist of a rendition's segments: `EVENT` while it is encoded (players reload
/// it as it grows), `VOD` with `ENDLIST` once `whole`. `EXT-X-START` at 0 has players start at
/// the beginning even while it grows, where an `EVENT` playlist would start at its live edge.
/// Segment URIs are relative to the rendition's folder; the target duration is at least
/// `segment_seconds`, so that it does not change as segments are added.
pub fn rendition_playlist(output: &RungOutput, segment_seconds: u32, whole: bool) -> String {
    super::live_playlist::set_float_precision();
    let folder = format!("{}/", output.rung.name);
    let longest = output.segments.iter().map(|s| s.duration_s.round() as u64).max().unwrap_or(0);
    let playlist = MediaPlaylist {
        version: Some(3),
        target_duration: longest.max(segment_seconds.into()),
        media_sequence: 0,
        playlist_type: Some(if whole { MediaPlaylistType::Vod } else { MediaPlaylistType::Event }),
        start: Some(Start { time_offset: 0.0, precise: None, other_attributes: HashMap::new() }),
        independent_segments: true,
        end_list: whole,
        segments: output
            .segments
            .iter()
            .map(|segment| MediaSegment {
                uri: segment.file.strip_prefix(&folder).unwrap_or(&segment.file).to_string(),
                duration: segment.duration_s as f32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(128 + playlist.segments.len() * 32);
    playlist.write_to(&mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("m3u8-rs writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ladder::Rung;

    fn output(name: &str, width: u32, height: u32, bandwidth: u64, audio: bool) -> RungOutput {
        RungOutput {
            rung: Rung { name: name.into(), width, height, video_kbps: 1000, max_kbps: 1070, audio_kbps: 128 },
            playlist: format!("{name}/index.m3u8"),
            segments: Vec::new(),
            bandwidth,
            average_bandwidth: bandwidth * 4 / 5,
            codecs: if audio { "avc1.64001f,mp4a.40.2".into() } else { "avc1.4d401e".into() },
            frame_rate: 30000.0 / 1001.0,
        }
    }

    #[test]
    fn lists_every_rung_highest_first() {
        let outputs = [
            output("360p", 640, 360, 1_000_000, false),
            output("720p", 1280, 720, 3_500_000, true),
            output("480p", 854, 480, 1_800_000, false),
        ];
        let text = master_playlist(&outputs);
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"), "{text}");
        assert!(text.contains(",FRAME-RATE=29.970"), "{text}");

        let parsed = m3u8_rs::parse_master_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.version, Some(3));
        assert!(parsed.independent_segments);
        let expected = [&outputs[1], &outputs[2], &outputs[0]];
        assert_eq!(parsed.variants.len(), expected.len());
        for (variant, want) in parsed.variants.iter().zip(expected) {
            assert!(!variant.is_i_frame);
            assert_eq!(variant.uri, want.playlist);
            assert_eq!(variant.bandwidth, want.bandwidth);
            assert_eq!(variant.average_bandwidth, Some(want.average_bandwidth));
            assert_eq!(variant.codecs.as_deref(), Some(want.codecs.as_str()));
            let resolution = variant.resolution.unwrap();
            assert_eq!((resolution.width, resolution.height), (want.rung.width.into(), want.rung.height.into()));
            assert_eq!(variant.frame_rate, Some(29.97));
            assert_eq!(variant.other_attributes, None);
        }
    }

    #[test]
    fn a_rendition_grows_as_an_event_and_ends_as_vod() {
        use crate::media::transcode::SegmentInfo;
        let mut rung = output("720p", 1280, 720, 3_500_000, true);
        rung.segments = (0..2)
            .map(|k| SegmentInfo { file: format!("720p/seg_{k:05}.ts"), duration_s: 2.002, bytes: 1000 })
            .collect();
        let growing = rendition_playlist(&rung, 2, false);
        let parsed = m3u8_rs::parse_media_playlist_res(growing.as_bytes()).unwrap();
        assert_eq!(parsed.playlist_type, Some(MediaPlaylistType::Event), "{growing}");
        assert!(!parsed.end_list);
        assert_eq!(parsed.target_duration, 2);
        assert_eq!(parsed.start.as_ref().map(|start| start.time_offset), Some(0.0), "{growing}");
        let uris: Vec<&str> = parsed.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["seg_00000.ts", "seg_00001.ts"]);
        assert!(growing.contains("#EXTINF:2.002,"), "{growing}");

        rung.segments.push(SegmentInfo { file: "720p/seg_00002.ts".into(), duration_s: 0.5, bytes: 300 });
        let whole = rendition_playlist(&rung, 2, true);
        let parsed = m3u8_rs::parse_media_playlist_res(whole.as_bytes()).unwrap();
        assert_eq!(parsed.playlist_type, Some(MediaPlaylistType::Vod));
        assert!(parsed.end_list && parsed.independent_segments);
        assert_eq!(parsed.segments.len(), 3);
        assert!(whole.starts_with(growing.split("#EXT-X-PLAYLIST-TYPE").next().unwrap()), "{whole}");
    }
}
