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

/// The rungs for `source`, named by their short side as players and other platforms label
/// them (a 720x1280 phone video's top rung is `720p`): the standard ones no bigger than it, or
/// one at its own size when its short side is under 360.
pub fn ladder(source: &MediaInfo) -> Vec<Rung> {
    let short = source.width.min(source.height);
    let rungs: Vec<Rung> = STANDARD
        .iter()
        .filter(|(side, _, _)| *side <= short)
        .map(|&(side, video_kbps, audio_kbps)| rung(source, side, video_kbps, audio_kbps))
        .collect();
    if !rungs.is_empty() {
        return rungs;
    }
    // Below 360p: the 360p rate scaled by pixel count.
    let (_, base_kbps, audio_kbps) = STANDARD[STANDARD.len() - 1];
    let mut rung = rung(source, even_floor(short).max(2), base_kbps, audio_kbps);
    let share = f64::from(rung.width) * f64::from(rung.height) / (640.0 * 360.0);
    rung.video_kbps = ((f64::from(base_kbps) * share).round() as u32).max(MIN_VIDEO_KBPS);
    rung.max_kbps = max_kbps(rung.video_kbps);
    vec![rung]
}

/// The rung whose short side is `side`.
fn rung(source: &MediaInfo, side: u32, video_kbps: u32, audio_kbps: u32) -> Rung {
    let (width, height) = size_for(source, side);
    Rung { name: format!("{side}p"), width, height, video_kbps, max_kbps: max_kbps(video_kbps), audio_kbps }
}

fn max_kbps(video_kbps: u32) -> u32 {
    (f64::from(video_kbps) * 1.07).round() as u32
}

/// The source's shape with `side` as its short side, the long side even (H.264 4:2:0 needs even
/// sizes) and never longer than the source's.
fn size_for(source: &MediaInfo, side: u32) -> (u32, u32) {
    let (short, long) = (source.width.min(source.height), source.width.max(source.height));
    let exact = f64::from(long) * f64::from(side) / f64::from(short.max(1));
    let long = (((exact / 2.0).round() as u32) * 2).max(2).min(even_floor(long).max(2));
    if source.height > source.width { (side, long) } else { (long, side) }
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
            rotation_degrees: 0,
            variable_frame_rate: false,
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

    #[test]
    fn a_portrait_phone_video_is_laddered_by_its_short_side() {
        let rungs = ladder(&source(720, 1280));
        assert_eq!(sizes(&rungs), [("720p", 720, 1280), ("480p", 480, 854), ("360p", 360, 640)]);
        assert_eq!(rungs[0].video_kbps, 2800, "the rate of a 1280x720 rung: the same pixels");
        let full_hd = ladder(&source(1080, 1920));
        assert_eq!(sizes(&full_hd)[0], ("1080p", 1080, 1920));
        assert_eq!(sizes(&ladder(&source(1080, 1080)))[0], ("1080p", 1080, 1080));
    }
}
