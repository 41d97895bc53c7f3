//! Writes a VOD video's master playlist: one `EXT-X-STREAM-INF` per transcoded rung, so players
//! can pick and switch renditions.

use std::collections::HashMap;

use m3u8_rs::{MasterPlaylist, QuotedOrUnquoted, Resolution, VariantStream};

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
}
