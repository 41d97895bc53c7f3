//! Reads an uploaded file's duration, picture size, frame rate and codecs with `ffprobe`, so the
//! ladder and the transcoder can be planned before any encoding starts.

use std::path::Path;
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::Command;

use crate::model::MediaInfo;

/// Why probing, transcoding or reading FFmpeg's output failed; messages are meant for users.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("could not run {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("not a media file ffprobe can read: {0}")]
    Unreadable(String),
    #[error("the file has no video stream")]
    NoVideo,
    #[error("the file's {0} is zero or unknown")]
    Unknown(&'static str),
    #[error("FFmpeg failed ({status}): {stderr}")]
    Ffmpeg { status: String, stderr: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("FFmpeg's output is unusable: {0}")]
    Output(String),
}

impl MediaError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        MediaError::Io { context: context.into(), source }
    }
}

#[derive(Deserialize)]
struct ProbeOutput {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    duration: Option<String>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    disposition: Disposition,
    /// FFmpeg 5's display matrix (`rotation`, counterclockwise).
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    /// Older muxers' `rotate` tag (clockwise).
    #[serde(default)]
    tags: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct Disposition {
    #[serde(default)]
    attached_pic: u8,
}

/// Runs `ffprobe -v error -print_format json <args> <path>` and collects its output.
pub(super) async fn ffprobe_json(args: &[&str], path: &Path) -> Result<std::process::Output, MediaError> {
    Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json"])
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| MediaError::Spawn { program: "ffprobe", source })
}

/// Probes `path` with `ffprobe`.
pub async fn probe(path: &Path) -> Result<MediaInfo, MediaError> {
    let output = ffprobe_json(&["-show_format", "-show_streams"], path).await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(MediaError::Unreadable(first_lines(&stderr, path, &output.status)));
    }
    let parsed: ProbeOutput = serde_json::from_slice(&output.stdout)
        .map_err(|e| MediaError::Unreadable(format!("ffprobe's report did not parse: {e}")))?;
    media_info(parsed)
}

fn media_info(parsed: ProbeOutput) -> Result<MediaInfo, MediaError> {
    let is = |s: &ProbeStream, kind: &str| s.codec_type.as_deref() == Some(kind);
    // Cover art shows up as a one-frame video stream; it is not the picture.
    let video =
        parsed.streams.iter().find(|s| is(s, "video") && s.disposition.attached_pic == 0).ok_or(MediaError::NoVideo)?;
    let audio = parsed.streams.iter().find(|s| is(s, "audio"));
    let duration_s = [parsed.format.as_ref().and_then(|f| f.duration.as_deref()), video.duration.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|d| d.parse::<f64>().ok())
        .find(|d| d.is_finite() && *d > 0.0)
        .ok_or(MediaError::Unknown("duration"))?;
    let rotation_degrees = rotation(video);
    let (width, height) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 && rotation_degrees % 180 == 90 => (h, w),
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(MediaError::Unknown("picture size")),
    };
    let average = video.avg_frame_rate.as_deref().and_then(parse_rate);
    let nominal = video.r_frame_rate.as_deref().and_then(parse_rate);
    let (frame_rate, variable_frame_rate) = constant_rate(average, nominal).ok_or(MediaError::Unknown("frame rate"))?;
    Ok(MediaInfo {
        duration_s,
        width,
        height,
        frame_rate,
        rotation_degrees,
        variable_frame_rate,
        video_codec: video.codec_name.clone().unwrap_or_else(|| "unknown".into()),
        audio_codec: audio.map(|a| a.codec_name.clone().unwrap_or_else(|| "unknown".into())),
    })
}

/// The source's clockwise rotation in whole quarter turns; anything else is shown unrotated.
fn rotation(video: &ProbeStream) -> u16 {
    let matrix = video.side_data_list.iter().find_map(|d| d.get("rotation")?.as_f64()).map(|ccw| -ccw);
    let tag = video.tags.get("rotate").and_then(|t| t.as_str()?.trim().parse::<f64>().ok());
    let Some(clockwise) = matrix.or(tag).filter(|d| d.is_finite()) else { return 0 };
    let quarter_turns = (clockwise / 90.0).round();
    if (clockwise - quarter_turns * 90.0).abs() > 0.5 {
        return 0;
    }
    // In 0..4, so the cast is exact.
    (quarter_turns.rem_euclid(4.0) as u16) * 90
}

/// Rates players and encoders expect: the ladder of a variable-rate source is encoded at one.
const STANDARD_RATES: [f64; 8] = [24000.0 / 1001.0, 24.0, 25.0, 30000.0 / 1001.0, 30.0, 50.0, 60000.0 / 1001.0, 60.0];

/// The constant rate to encode at and whether the source's varies, from ffprobe's average
/// (`avg_frame_rate`) and nominal (`r_frame_rate`) rates. They differ by more than 1 % when the
/// frames come unevenly: the nominal rate is then kept if it is a plausible capture rate (at
/// least the average, at most 60), else the average is raised to the next standard rate.
fn constant_rate(average: Option<f64>, nominal: Option<f64>) -> Option<(f64, bool)> {
    match (average, nominal) {
        (Some(average), Some(nominal)) if (average - nominal).abs() > 0.01 * nominal => {
            if (average..=60.0).contains(&nominal) {
                return Some((nominal, true));
            }
            let standard = STANDARD_RATES.into_iter().find(|r| *r >= average * 0.995).unwrap_or(60.0);
            Some((standard, true))
        }
        (Some(rate), _) | (None, Some(rate)) => Some((rate, false)),
        (None, None) => None,
    }
}

/// `"30000/1001"` -> 29.97..; `"0/0"` and nonsense -> `None`.
fn parse_rate(rate: &str) -> Option<f64> {
    let value = match rate.split_once('/') {
        Some((n, d)) => n.trim().parse::<f64>().ok()? / d.trim().parse::<f64>().ok()?,
        None => rate.trim().parse::<f64>().ok()?,
    };
    (value.is_finite() && value > 0.0 && value <= 1000.0).then_some(value)
}

/// ffprobe's verdict (its `<path>: ` lines), else its first lines without `[demuxer @ 0x..] `.
fn first_lines(stderr: &str, path: &Path, status: &std::process::ExitStatus) -> String {
    let prefix = format!("{}: ", path.display());
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let verdict: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix(prefix.as_str())).collect();
    let chosen: Vec<&str> = if verdict.is_empty() {
        lines.iter().take(3).map(|l| strip_context(l)).collect()
    } else {
        verdict.into_iter().take(3).collect()
    };
    if chosen.is_empty() { format!("ffprobe exited with {status}") } else { chosen.join("; ") }
}

/// `[mov,mp4 @ 0x55..] moov atom not found` -> `moov atom not found`.
fn strip_context(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|rest| rest.split_once("] ")) {
        Some((context, message)) if context.contains(" @ ") => message,
        _ => line,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Makes a test source with real FFmpeg (`ultrafast` is for fixtures only).
    pub(crate) async fn make_source(dir: &Path, name: &str, size: &str, audio: bool) -> std::path::PathBuf {
        let out = dir.join(name);
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"]).arg(format!("testsrc2=size={size}:rate=30"));
        if audio {
            cmd.args(["-f", "lavfi", "-i", "sine=frequency=440", "-c:a", "aac"]);
        }
        cmd.args(["-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]).arg(&out);
        let status = cmd.status().await.expect("ffmpeg runs");
        assert!(status.success(), "making the test source failed");
        out
    }

    #[tokio::test]
    async fn probes_a_clip_with_audio() {
        let dir = tempfile::tempdir().unwrap();
        let src = make_source(dir.path(), "src.mp4", "1280x720", true).await;
        let info = probe(&src).await.unwrap();
        assert!((info.duration_s - 4.0).abs() < 0.1, "duration {}", info.duration_s);
        assert_eq!((info.width, info.height), (1280, 720));
        assert!((info.frame_rate - 30.0).abs() < 1e-9);
        assert_eq!(info.video_codec, "h264");
        assert_eq!(info.audio_codec.as_deref(), Some("aac"));
        assert!(info.has_audio());
    }

    #[tokio::test]
    async fn probes_a_clip_without_audio() {
        let dir = tempfile::tempdir().unwrap();
        let src = make_source(dir.path(), "small.mp4", "320x240", false).await;
        let info = probe(&src).await.unwrap();
        assert_eq!((info.width, info.height), (320, 240));
        assert_eq!(info.audio_codec, None);
        assert!(!info.has_audio());
    }

    #[tokio::test]
    async fn garbage_gives_a_readable_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.mp4");
        std::fs::write(&path, b"this is not a video, just some bytes".repeat(100)).unwrap();
        let err = probe(&path).await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, MediaError::Unreadable(_)), "{message}");
        assert_eq!(message, "not a media file ffprobe can read: Invalid data found when processing input");
    }

    #[test]
    fn strips_ffmpeg_context() {
        assert_eq!(strip_context("[mov,mp4 @ 0x55d] moov atom not found"), "moov atom not found");
        assert_eq!(strip_context("[plain] text"), "[plain] text");
    }

    #[test]
    fn reads_frame_rates() {
        assert_eq!(parse_rate("30/1"), Some(30.0));
        assert!((parse_rate("30000/1001").unwrap() - 29.97).abs() < 0.001);
        assert_eq!(parse_rate("0/0"), None);
        assert_eq!(parse_rate("25"), Some(25.0));
    }

    #[test]
    fn a_variable_rate_gets_a_constant_one() {
        // A constant source keeps its rate, however ffprobe rounds the two.
        assert_eq!(constant_rate(Some(29.97), Some(30000.0 / 1001.0)), Some((29.97, false)));
        assert_eq!(constant_rate(None, Some(25.0)), Some((25.0, false)));
        // Frames dropped from a 30 fps capture: its nominal rate.
        assert_eq!(constant_rate(Some(20.34), Some(30.0)), Some((30.0, true)));
        // A phone's 90 kHz time base as the nominal rate: the next standard rate above the average.
        assert_eq!(constant_rate(Some(29.6), Some(90000.0 / 1000.0)), Some((30000.0 / 1001.0, true)));
        assert_eq!(constant_rate(Some(24.5), Some(600.0)), Some((25.0, true)));
        assert_eq!(constant_rate(Some(75.0), Some(120.0)), Some((60.0, true)));
        assert_eq!(constant_rate(None, None), None);
    }

    #[test]
    fn rotation_swaps_the_shown_picture_size() {
        let stream = |extra: &str| {
            let json = format!(
                r#"{{"streams":[{{"codec_type":"video","codec_name":"hevc","width":1920,"height":1080,
                "avg_frame_rate":"30/1"{extra}}}],"format":{{"duration":"3.0"}}}}"#
            );
            media_info(serde_json::from_str(&json).unwrap()).unwrap()
        };
        let shown = |info: MediaInfo| (info.width, info.height, info.rotation_degrees);
        assert_eq!(shown(stream("")), (1920, 1080, 0));
        // ffprobe's display matrix turns counterclockwise: -90 is a quarter turn clockwise.
        assert_eq!(
            shown(stream(r#","side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]"#)),
            (1080, 1920, 90)
        );
        assert_eq!(shown(stream(r#","side_data_list":[{"rotation":90}]"#)), (1080, 1920, 270));
        assert_eq!(shown(stream(r#","side_data_list":[{"rotation":180}]"#)), (1920, 1080, 180));
        assert_eq!(shown(stream(r#","tags":{"rotate":"90"}"#)), (1080, 1920, 90));
        // Not a quarter turn, or nonsense: shown as coded.
        assert_eq!(shown(stream(r#","side_data_list":[{"rotation":45}]"#)), (1920, 1080, 0));
        assert_eq!(shown(stream(r#","tags":{"rotate":"sideways"}"#)), (1920, 1080, 0));
    }

    #[test]
    fn a_file_without_video_is_refused() {
        let json = r#"{"streams":[{"codec_type":"audio","codec_name":"mp3"}],"format":{"duration":"3.0"}}"#;
        let err = media_info(serde_json::from_str(json).unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "the file has no video stream");
        let json = r#"{"streams":[{"codec_type":"video","codec_name":"h264","width":0,"height":0,
            "avg_frame_rate":"25/1"}],"format":{"duration":"3.0"}}"#;
        let err = media_info(serde_json::from_str(json).unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "the file's picture size is zero or unknown");
        let json = r#"{"streams":[{"codec_type":"video","codec_name":"h264","width":8,"height":8,
            "avg_frame_rate":"25/1"}],"format":{"duration":"N/A"}}"#;
        let err = media_info(serde_json::from_str(json).unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "the file's duration is zero or unknown");
    }
}
