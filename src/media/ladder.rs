//! Picks the adaptive-bitrate ladder (the renditions to encode) for a source, never upscaling.

use crate::model::MediaInfo;

/// One rendition of the ladder.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rung {
    /// `"1080p"`, `"720p"`, ...
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub video_kbps: u32,
    /// The encoder's `-maxrate`.
    pub max_kbps: u32,
    pub audio_kbps: u32,
}

impl Rung {
    /// The encoder's VBV buffer (`-bufsize`), 1.5x the target rate.
    pub fn buffer_kbps(&self) -> u32 {
        self.video_kbps * 3 / 2
    }
}

/// Standard rungs: height, video kbit/s, audio kbit/s.
const STANDARD: [(u32, u32, u32); 4] = [(1080, 5000, 128), (720, 2800, 128), (480, 1400, 128), (360, 800, 96)];

/// The smallest video bitrate a rung gets, for sources below 360p.
const MIN_VIDEO_KBPS: u32 = 200;

/// The rungs for `source`: the standard ones no taller than it, or one at its own height when it
/// is smaller than 360p.
pub fn ladder(source: &MediaInfo) -> Vec<Rung> {
    let rungs: Vec<Rung> = STANDARD
        .iter()
        .filter(|(height, _, _)| *height <= source.height)
        .map(|&(height, video_kbps, audio_kbps)| rung(source, height, video_kbps, audio_kbps))
        .collect();
    if !rungs.is_empty() {
        return rungs;
    }
    // Below 360p: the 360p rate scaled by pixel count.
    let height = even_floor(source.height).max(2);
    let width = width_for(source, height);
    let (_, base_kbps, audio_kbps) = STANDARD[STANDARD.len() - 1];
    let share = f64::from(width) * f64::from(height) / (640.0 * 360.0);
    let video_kbps = ((f64::from(base_kbps) * share).round() as u32).max(MIN_VIDEO_KBPS);
    vec![rung(source, height, video_kbps, audio_kbps)]
}

fn rung(source: &MediaInfo, height: u32, video_kbps: u32, audio_kbps: u32) -> Rung {
    Rung {
        name: format!("{height}p"),
        width: width_for(source, height),
        height,
        video_kbps,
        max_kbps: (f64::from(video_kbps) * 1.07).round() as u32,
        audio_kbps,
    }
}

/// The source's aspect ratio at `height`, even (H.264 4:2:0 needs even sizes), never wider than
/// the source.
fn width_for(source: &MediaInfo, height: u32) -> u32 {
    let exact = f64::from(source.width) * f64::from(height) / f64::from(source.height);
    let even = ((exact / 2.0).round() as u32 * 2).max(2);
    even.min(even_floor(source.width).max(2))
}

fn even_floor(n: u32) -> u32 {
    n & !1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(width: u32, height: u32) -> MediaInfo {
        MediaInfo {
            duration_s: 10.0,
            width,
            height,
            frame_rate: 30.0,
            video_codec: "h264".into(),
            audio_codec: Some("aac".into()),
        }
    }

    fn sizes(rungs: &[Rung]) -> Vec<(&str, u32, u32)> {
        rungs.iter().map(|r| (r.name.as_str(), r.width, r.height)).collect()
    }

    #[test]
    fn full_hd_gets_four_rungs() {
        let rungs = ladder(&source(1920, 1080));
        assert_eq!(sizes(&rungs), [("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]);
        assert_eq!(rungs[0].video_kbps, 5000);
        assert_eq!(rungs[0].max_kbps, 5350);
        assert_eq!(rungs[0].buffer_kbps(), 7500);
        assert_eq!(rungs[0].audio_kbps, 128);
        assert_eq!(rungs[3].video_kbps, 800);
        assert_eq!(rungs[3].audio_kbps, 96);
    }

    #[test]
    fn hd_is_not_upscaled() {
        assert_eq!(sizes(&ladder(&source(1280, 720))), [("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]);
    }

    #[test]
    fn four_by_three_keeps_its_shape() {
        assert_eq!(sizes(&ladder(&source(640, 480))), [("480p", 640, 480), ("360p", 480, 360)]);
    }

    #[test]
    fn a_tiny_source_gets_one_rung_at_its_own_size() {
        let rungs = ladder(&source(320, 240));
        assert_eq!(sizes(&rungs), [("240p", 320, 240)]);
        // 800k scaled by a third of the pixels, still at least the floor.
        assert_eq!(rungs[0].video_kbps, 267);
        assert_eq!(rungs[0].audio_kbps, 96);
        assert_eq!(ladder(&source(160, 90))[0].video_kbps, MIN_VIDEO_KBPS);
    }

    #[test]
    fn odd_sizes_become_even() {
        let rungs = ladder(&source(333, 241));
        assert_eq!(sizes(&rungs), [("240p", 332, 240)]);
        let rungs = ladder(&source(1279, 719));
        assert!(rungs.iter().all(|r| r.width % 2 == 0 && r.height % 2 == 0 && r.width <= 1279));
    }
}
