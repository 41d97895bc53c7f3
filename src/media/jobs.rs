//! Seed 004's media operations as FFmpeg runs, and the ffprobe checks an output passes before
//! its job is `completed`: an audio job yields only audio, a resize the asked size, black and
//! white no chroma, a compress fewer bytes than its source.

use std::ffi::OsString;
use std::path::Path;

use serde::Deserialize;

use super::probe::{MediaError, ffprobe_json};
use crate::model::jobs::{Container, JobOperation, JobOutput, JobParams};

/// The CRF of a compress that names none (seed 004's), and of the other re-encodes.
pub const COMPRESS_CRF: u8 = 28;
const REENCODE_CRF: u8 = 23;
/// The height a resize that names no size goes to, keeping the aspect ratio.
pub const RESIZE_HEIGHT: u32 = 720;
/// Audio kept by a compress aimed at a size, in bits per second.
const COMPRESS_AUDIO_BPS: u64 = 96_000;
/// A chroma plane within this of 128 everywhere is neutral: the picture is gray.
const CHROMA_TOLERANCE: f64 = 2.0;
/// How much of a black-and-white output is decoded to check it.
const CHROMA_CHECK_SECONDS: u32 = 60;

/// What ffprobe reports of a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Streams {
    pub duration_s: f64,
    pub format_name: String,
    pub video: Option<VideoStream>,
    pub audio_codec: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VideoStream {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub pixel_format: String,
}

#[derive(Deserialize)]
struct Report {
    #[serde(default)]
    streams: Vec<StreamReport>,
    format: Option<FormatReport>,
}

#[derive(Deserialize)]
struct FormatReport {
    format_name: Option<String>,
    duration: Option<String>,
}

#[derive(Deserialize)]
struct StreamReport {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    pix_fmt: Option<String>,
    #[serde(default)]
    disposition: Disposition,
}

#[derive(Default, Deserialize)]
struct Disposition {
    #[serde(default)]
    attached_pic: u8,
}

/// The streams of `path` (cover art is not a video stream).
pub async fn streams(path: &Path) -> Result<Streams, MediaError> {
    let output = ffprobe_json(&["-show_format", "-show_streams"], path).await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(MediaError::Unreadable(stderr.lines().next().unwrap_or("ffprobe failed").to_string()));
    }
    let report: Report = serde_json::from_slice(&output.stdout)
        .map_err(|e| MediaError::Unreadable(format!("ffprobe's report did not parse: {e}")))?;
    let is = |s: &StreamReport, kind: &str| s.codec_type.as_deref() == Some(kind);
    let video =
        report.streams.iter().find(|s| is(s, "video") && s.disposition.attached_pic == 0).map(|s| VideoStream {
            codec: s.codec_name.clone().unwrap_or_default(),
            width: s.width.unwrap_or(0),
            height: s.height.unwrap_or(0),
            pixel_format: s.pix_fmt.clone().unwrap_or_default(),
        });
    let audio_codec = report.streams.iter().find(|s| is(s, "audio")).map(|s| s.codec_name.clone().unwrap_or_default());
    let format = report.format.as_ref();
    let duration_s = format.and_then(|f| f.duration.as_deref()).and_then(|d| d.parse().ok()).unwrap_or(0.0);
    let format_name = format.and_then(|f| f.format_name.clone()).unwrap_or_default();
    Ok(Streams { duration_s, format_name, video, audio_codec })
}

/// Why a source cannot take the operation: it needs a video stream (or, for audio, an audio one).
pub fn check_source(operation: JobOperation, source: &Streams) -> Result<(), String> {
    match operation {
        JobOperation::ExtractAudio if source.audio_codec.is_none() => Err("the source has no audio stream".into()),
        JobOperation::ExtractAudio => Ok(()),
        _ if source.video.is_none() => Err("the source has no video stream".into()),
        _ if !(source.duration_s.is_finite() && source.duration_s > 0.0) => {
            Err("the source's duration is unknown".into())
        }
        _ => Ok(()),
    }
}

fn push<const N: usize>(args: &mut Vec<OsString>, items: [&str; N]) {
    args.extend(items.map(OsString::from));
}

/// H.264 at `crf`, AAC audio if the source has any, the index first for the web.
fn h264(args: &mut Vec<OsString>, crf: u8, source: &Streams) {
    push(args, ["-map", "0:v:0", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]);
    args.extend(["-crf".into(), crf.to_string().into()]);
    if source.audio_codec.is_some() {
        push(args, ["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k"]);
    }
}

/// The FFmpeg arguments of the job, reading `input`, writing `output`, reporting progress.
pub fn job_args(
    operation: JobOperation,
    params: &JobParams,
    source: &Streams,
    input: &Path,
    output: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    push(&mut args, ["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-progress", "pipe:1", "-nostats", "-i"]);
    args.push(input.into());
    match operation {
        JobOperation::Compress => match params.target_size_bytes {
            Some(target) => {
                // Bits for the whole file over its duration, less the audio's.
                let audio = if source.audio_codec.is_some() { COMPRESS_AUDIO_BPS } else { 0 };
                let total_bps = (target as f64 * 8.0 / source.duration_s.max(0.1)) as u64;
                let video_bps = total_bps.saturating_sub(audio).max(20_000) * 9 / 10;
                push(&mut args, ["-map", "0:v:0", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]);
                for (flag, value) in [("-b:v", video_bps), ("-maxrate", video_bps * 5 / 4), ("-bufsize", video_bps * 2)]
                {
                    args.extend([flag.into(), value.to_string().into()]);
                }
                if source.audio_codec.is_some() {
                    push(&mut args, ["-map", "0:a:0", "-c:a", "aac"]);
                    args.extend(["-b:a".into(), audio.to_string().into()]);
                }
            }
            None => h264(&mut args, params.crf.unwrap_or(COMPRESS_CRF), source),
        },
        JobOperation::ExtractAudio => {
            let format = params.audio_format.unwrap_or_default();
            let encoder = match format.codec() {
                "mp3" => "libmp3lame",
                "opus" => "libopus",
                codec => codec,
            };
            push(&mut args, ["-vn", "-map", "0:a:0", "-c:a", encoder]);
            if matches!(encoder, "libmp3lame" | "aac" | "libopus") {
                push(&mut args, ["-b:a", "192k"]);
            }
        }
        JobOperation::Resize => {
            let scale = match (params.width, params.height) {
                (Some(w), Some(h)) => format!("scale={w}:{h},setsar=1"),
                (Some(w), None) => format!("scale={w}:-2,setsar=1"),
                (None, Some(h)) => format!("scale=-2:{h},setsar=1"),
                (None, None) => format!("scale=-2:{RESIZE_HEIGHT},setsar=1"),
            };
            args.extend(["-vf".into(), scale.into()]);
            h264(&mut args, REENCODE_CRF, source);
        }
        JobOperation::ConvertFormat => match params.container.unwrap_or_default() {
            Container::Webm => {
                push(&mut args, ["-map", "0:v:0", "-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "33"]);
                push(&mut args, ["-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1"]);
                if source.audio_codec.is_some() {
                    push(&mut args, ["-map", "0:a:0", "-c:a", "libopus", "-b:a", "128k"]);
                }
            }
            _ => h264(&mut args, REENCODE_CRF, source),
        },
        JobOperation::BlackAndWhite => {
            push(&mut args, ["-vf", "hue=s=0"]);
            h264(&mut args, REENCODE_CRF, source);
        }
    }
    let container = params.extension(operation);
    if matches!(container, "mp4" | "mov" | "m4a") {
        push(&mut args, ["-movflags", "+faststart"]);
    }
    args.push(output.into());
    args
}

/// Checks an output against its job and source; the error is the job's reason to fail.
pub async fn check_output(
    operation: JobOperation,
    params: &JobParams,
    source_bytes: u64,
    output: &Path,
    key: &str,
) -> Result<JobOutput, String> {
    let size_bytes = tokio::fs::metadata(output).await.map_err(|e| format!("no output: {e}"))?.len();
    let found = streams(output).await.map_err(|e| format!("the output does not read back: {e}"))?;
    let video = found.video.as_ref();
    match operation {
        JobOperation::ExtractAudio => {
            let codec = params.audio_format.unwrap_or_default().codec();
            if video.is_some() {
                return Err("the audio output has a video stream".into());
            }
            if found.audio_codec.as_deref() != Some(codec) {
                return Err(format!("the audio output is {:?}, not {codec}", found.audio_codec));
            }
        }
        _ => {
            let video = video.ok_or("the output has no video stream")?;
            if video.width == 0 || video.height == 0 {
                return Err("the output's picture size is unknown".into());
            }
        }
    }
    match operation {
        JobOperation::Compress if size_bytes >= source_bytes => {
            return Err(format!(
                "the output ({size_bytes} bytes) is not smaller than the source ({source_bytes} bytes)"
            ));
        }
        JobOperation::Compress => {
            if let Some(target) = params.target_size_bytes.filter(|t| size_bytes > t.saturating_mul(3) / 2) {
                return Err(format!("the output ({size_bytes} bytes) missed the target size of {target} bytes"));
            }
        }
        JobOperation::Resize => {
            let video = video.expect("checked above");
            let wanted_height = match (params.width, params.height) {
                (None, None) => Some(RESIZE_HEIGHT),
                (_, height) => height,
            };
            let wrong =
                params.width.is_some_and(|w| w != video.width) || wanted_height.is_some_and(|h| h != video.height);
            if wrong {
                return Err(format!("the output is {}x{}, not the size asked", video.width, video.height));
            }
        }
        JobOperation::ConvertFormat => {
            let container = params.container.unwrap_or_default();
            let family = match container {
                Container::Mp4 | Container::Mov => "mp4",
                Container::Mkv => "matroska",
                Container::Webm => "webm",
            };
            if !found.format_name.split(',').any(|f| f == family) {
                return Err(format!("the output is {:?}, not {}", found.format_name, container.extension()));
            }
        }
        JobOperation::BlackAndWhite => gray(output).await?,
        JobOperation::ExtractAudio => {}
    }
    let video = found.video;
    Ok(JobOutput {
        key: key.to_string(),
        size_bytes,
        duration_s: found.duration_s,
        video_codec: video.as_ref().map(|v| v.codec.clone()),
        width: video.as_ref().map(|v| v.width),
        height: video.as_ref().map(|v| v.height),
        pixel_format: video.map(|v| v.pixel_format),
        audio_codec: found.audio_codec,
    })
}

/// Fails unless both chroma planes stay neutral in every frame of the first minute (ffprobe's
/// `signalstats`).
async fn gray(output: &Path) -> Result<(), String> {
    let source = format!("movie={},trim=duration={CHROMA_CHECK_SECONDS},signalstats", output.display());
    let entries =
        "frame_tags=lavfi.signalstats.UMIN,lavfi.signalstats.UMAX,lavfi.signalstats.VMIN,lavfi.signalstats.VMAX";
    let probed = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-f", "lavfi", "-show_entries", entries, "-of", "csv=p=0", "-i", &source])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("could not run ffprobe: {e}"))?;
    if !probed.status.success() {
        return Err(format!("ffprobe could not read the output's chroma: {}", String::from_utf8_lossy(&probed.stderr)));
    }
    let text = String::from_utf8_lossy(&probed.stdout);
    let mut frames = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        frames += 1;
        let colored =
            line.split(',').filter_map(|v| v.trim().parse::<f64>().ok()).any(|v| (v - 128.0).abs() > CHROMA_TOLERANCE);
        if colored {
            return Err(format!("frame {frames} of the output has chroma ({line})"));
        }
    }
    if frames == 0 { Err("ffprobe read no frame of the output".into()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::transcode::run_reporting;

    fn clip(dir: &Path, audio: bool) -> std::path::PathBuf {
        let path = dir.join("clip.mp4");
        let mut ffmpeg = std::process::Command::new("ffmpeg");
        ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"]);
        if audio {
            ffmpeg.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac"]);
        }
        ffmpeg.args(["-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "10", "-pix_fmt", "yuv420p"]);
        assert!(ffmpeg.arg(&path).status().unwrap().success());
        path
    }

    async fn run_job(operation: JobOperation, params: JobParams, audio: bool) -> Result<JobOutput, String> {
        let dir = tempfile::tempdir().unwrap();
        let input = clip(dir.path(), audio);
        let source = streams(&input).await.unwrap();
        check_source(operation, &source)?;
        let output = dir.path().join(format!("output.{}", params.extension(operation)));
        run_reporting(job_args(operation, &params, &source, &input, &output), source.duration_s, |_| {})
            .await
            .map(drop)
            .unwrap();
        let bytes = std::fs::metadata(&input).unwrap().len();
        check_output(operation, &params, bytes, &output, "k").await
    }

    #[tokio::test]
    async fn each_operation_makes_an_output_that_passes_its_check() {
        let audio = run_job(JobOperation::ExtractAudio, JobParams::default(), true).await.unwrap();
        assert_eq!((audio.video_codec, audio.audio_codec.as_deref()), (None, Some("mp3")));
        let resized = JobParams { width: Some(160), height: Some(90), ..Default::default() };
        let resized = run_job(JobOperation::Resize, resized, false).await.unwrap();
        assert_eq!((resized.width, resized.height), (Some(160), Some(90)));
        let gray = run_job(JobOperation::BlackAndWhite, JobParams::default(), false).await.unwrap();
        assert_eq!(gray.pixel_format.as_deref(), Some("yuv420p"));
        let compressed = run_job(JobOperation::Compress, JobParams::default(), true).await.unwrap();
        assert_eq!(compressed.video_codec.as_deref(), Some("h264"));
        let webm = JobParams { container: Some(Container::Webm), ..Default::default() };
        assert_eq!(run_job(JobOperation::ConvertFormat, webm, true).await.unwrap().video_codec.as_deref(), Some("vp9"));
        let refused = run_job(JobOperation::ExtractAudio, JobParams::default(), false).await.unwrap_err();
        assert_eq!(refused, "the source has no audio stream");
    }

    #[tokio::test]
    async fn a_colored_output_fails_the_black_and_white_check() {
        let dir = tempfile::tempdir().unwrap();
        let input = clip(dir.path(), false);
        let error = check_output(JobOperation::BlackAndWhite, &JobParams::default(), u64::MAX, &input, "k").await;
        assert!(error.unwrap_err().contains("has chroma"));
    }
}
