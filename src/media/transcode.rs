//! Encodes a source into keyframe-aligned H.264/AAC HLS renditions (one per ladder rung) with
//! one FFmpeg, and reports what it wrote: segments, measured bitrates and RFC 6381 codec
//! strings. Which rungs share an FFmpeg is the caller's choice (`transcode_mode`).

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::ladder::Rung;
use super::probe::{MediaError, ffprobe_json};
use crate::model::{MediaInfo, Storyboard};

/// One source to encode into `out_dir/<rung>/`.
pub struct TranscodeJob<'a> {
    pub source: &'a Path,
    pub out_dir: &'a Path,
    pub info: &'a MediaInfo,
    /// The rungs this FFmpeg encodes: one output each, from one decode (`split`).
    pub rungs: &'a [Rung],
    pub segment_seconds: u32,
}

/// What was written for one rung.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RungOutput {
    pub rung: Rung,
    /// Relative to `out_dir`: `720p/index.m3u8`.
    pub playlist: String,
    pub segments: Vec<SegmentInfo>,
    /// Bits/s: the peak over segments of bytes * 8 / duration.
    pub bandwidth: u64,
    /// Bits/s: total bytes * 8 / total duration.
    pub average_bandwidth: u64,
    /// RFC 6381, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    pub frame_rate: f64,
}

/// One written segment.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentInfo {
    /// Relative to `out_dir`: `720p/seg_00000.ts`.
    pub file: String,
    pub duration_s: f64,
    pub bytes: u64,
}

const PLAYLIST: &str = "index.m3u8";

/// A rung's media playlist, relative to the output folder: `720p/index.m3u8`.
pub fn rung_playlist(rung: &Rung) -> String {
    format!("{}/{PLAYLIST}", rung.name)
}
const STDERR_TAIL_LINES: usize = 5;

/// Encodes `job`, calling `progress` with 0..=100 as FFmpeg advances and 100 at the end.
/// Dropping the future kills the FFmpeg process.
pub async fn transcode(job: &TranscodeJob<'_>, progress: impl Fn(f64) + Send) -> Result<Vec<RungOutput>, MediaError> {
    prepare(job).await?;
    let progress = encode(job, progress).await?;
    let outputs = outputs(job).await?;
    progress(100.0);
    Ok(outputs)
}

/// Checks `job`, and clears its rungs' folders of an earlier run's files.
pub async fn prepare(job: &TranscodeJob<'_>) -> Result<(), MediaError> {
    if job.rungs.is_empty() {
        return Err(MediaError::Output("the ladder has no rungs".into()));
    }
    if job.segment_seconds == 0 {
        return Err(MediaError::Output("the segment duration is zero".into()));
    }
    for rung in job.rungs {
        clear_rung_dir(&job.out_dir.join(&rung.name)).await?;
    }
    Ok(())
}

/// Runs the FFmpeg of a [`prepare`]d `job`, calling `progress` with 0..<100; hands `progress`
/// back. Each rung's playlist lists a segment once FFmpeg has finished it ([`RungRead`]).
pub async fn encode<F: Fn(f64)>(job: &TranscodeJob<'_>, progress: F) -> Result<F, MediaError> {
    let args = ffmpeg_command(job);
    tracing::debug!(?args, "running ffmpeg");
    run_reporting(args, job.info.duration_s, progress).await
}

/// What an [`encode`]d `job` wrote for each of its rungs.
pub async fn outputs(job: &TranscodeJob<'_>) -> Result<Vec<RungOutput>, MediaError> {
    let mut outputs = Vec::with_capacity(job.rungs.len());
    for rung in job.rungs {
        let mut rung_read = RungRead::default();
        rung_read.read_rest(job.out_dir, rung, job.info.has_audio()).await?;
        outputs.push(rung_read.output(rung, job.info.frame_rate)?);
    }
    Ok(outputs)
}

/// The poster's time in a video: min(1 s, duration / 2).
pub fn poster_time(info: &MediaInfo) -> f64 {
    (info.duration_s / 2.0).min(1.0)
}

/// Writes a JPEG of the frame at `at` seconds, at most 640 pixels wide.
pub async fn poster(source: &Path, out: &Path, at: f64) -> Result<(), MediaError> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| MediaError::io(format!("creating {}", parent.display()), e))?;
    }
    let mut args: Vec<OsString> = Vec::new();
    push(&mut args, ["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-ss"]);
    args.push(format!("{at:.3}").into());
    args.push("-i".into());
    args.push(source.into());
    push(&mut args, ["-frames:v", "1", "-vf", "scale='min(640,iw)':-2", "-c:v", "mjpeg", "-q:v", "3"]);
    push(&mut args, ["-f", "image2", "-update", "1"]);
    args.push(out.into());
    run_to_file(&args, out, || format!("FFmpeg wrote no poster frame at {at:.3} s")).await
}

/// Writes the storyboard's sprite sheet from a finished rendition (its playlist) that has a
/// keyframe every `keyframe_s`: only keyframes are decoded, and one every `interval_s` is
/// scaled to a tile and tiled row by row into one JPEG. Decoding the source instead would
/// take a core from the encode for minutes.
pub async fn storyboard(rendition: &Path, out: &Path, plan: &Storyboard, keyframe_s: u32) -> Result<(), MediaError> {
    let Storyboard { interval_s, columns, rows, tile_width, tile_height, .. } = plan;
    let every = (interval_s / keyframe_s.max(1)).max(1);
    let mut args: Vec<OsString> = Vec::new();
    push(&mut args, ["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-skip_frame", "nokey", "-i"]);
    args.push(rendition.into());
    args.push("-an".into());
    args.push("-vf".into());
    args.push(format!("select='not(mod(n\\,{every}))',scale={tile_width}:{tile_height},tile={columns}x{rows}").into());
    push(&mut args, ["-fps_mode", "passthrough", "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "4"]);
    push(&mut args, ["-f", "image2", "-update", "1"]);
    args.push(out.into());
    run_to_file(&args, out, || "FFmpeg wrote no storyboard".into()).await
}

/// Runs FFmpeg with `args` (killed if dropped), which must leave a non-empty file at `out`;
/// `empty` says what is missing when it does not.
pub(super) async fn run_to_file(
    args: &[OsString],
    out: &Path,
    empty: impl FnOnce() -> String,
) -> Result<(), MediaError> {
    let output = Command::new("ffmpeg")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| MediaError::Spawn { program: "ffmpeg", source })?;
    if !output.status.success() {
        return Err(ffmpeg_failed(&output.status, &output.stderr));
    }
    match tokio::fs::metadata(out).await {
        Ok(meta) if meta.len() > 0 => Ok(()),
        _ => Err(MediaError::Output(empty())),
    }
}

/// The output frame rate: the source's, as FFmpeg should read it (`30000/1001`, not `29.97`).
struct FrameRate {
    expr: String,
    value: f64,
}

impl FrameRate {
    fn of(fps: f64) -> Self {
        for base in [24u32, 30, 48, 60, 120] {
            let ntsc = f64::from(base) * 1000.0 / 1001.0;
            if (fps - ntsc).abs() < 0.005 {
                return FrameRate { expr: format!("{}/1001", base * 1000), value: ntsc };
            }
        }
        if (fps - fps.round()).abs() < 0.01 {
            return FrameRate { expr: format!("{}", fps.round()), value: fps.round() };
        }
        let rounded = (fps * 1000.0).round() / 1000.0;
        FrameRate { expr: format!("{rounded:.3}"), value: rounded }
    }

    /// Frames per `seconds`: the GOP length.
    fn frames_in(&self, seconds: u32) -> u32 {
        ((self.value * f64::from(seconds)).round() as u32).max(1)
    }
}

fn push<const N: usize>(args: &mut Vec<OsString>, items: [&str; N]) {
    args.extend(items.into_iter().map(OsString::from));
}

/// The FFmpeg arguments `transcode` runs for `job` (a benchmark runs the very same by hand).
pub fn ffmpeg_command(job: &TranscodeJob<'_>) -> Vec<OsString> {
    let (rate, rungs) = (FrameRate::of(job.info.frame_rate), job.rungs);
    let seconds = job.segment_seconds;
    let gop = rate.frames_in(seconds).to_string();
    let mut args: Vec<OsString> = Vec::new();
    push(&mut args, ["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-progress", "pipe:1", "-nostats"]);
    args.push("-i".into());
    args.push(job.source.into());
    args.push("-filter_complex".into());
    args.push(filter_graph(rungs, &rate).into());
    for (k, rung) in rungs.iter().enumerate() {
        args.push("-map".into());
        args.push(format!("[v{k}]").into());
        if job.info.has_audio() {
            push(&mut args, ["-map", "0:a:0?"]);
        }
        let profile = if rung.height >= 720 { "high" } else { "main" };
        push(&mut args, ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", profile, "-pix_fmt", "yuv420p"]);
        for (flag, value) in [
            ("-b:v", format!("{}k", rung.video_kbps)),
            ("-maxrate", format!("{}k", rung.max_kbps)),
            ("-bufsize", format!("{}k", rung.buffer_kbps())),
            ("-g", gop.clone()),
            ("-keyint_min", gop.clone()),
            ("-sc_threshold", "0".into()),
            ("-force_key_frames", format!("expr:gte(t,n_forced*{seconds})")),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        if job.info.has_audio() {
            push(&mut args, ["-c:a", "aac", "-profile:a", "aac_low", "-ac", "2", "-b:a"]);
            args.push(format!("{}k", rung.audio_kbps).into());
        }
        push(&mut args, ["-f", "hls", "-hls_time"]);
        args.push(seconds.to_string().into());
        // `event`: the playlist grows a segment at a time, so the video plays while it encodes.
        push(&mut args, ["-hls_playlist_type", "event", "-hls_segment_type", "mpegts"]);
        push(&mut args, ["-hls_flags", "independent_segments", "-hls_segment_filename"]);
        let dir = job.out_dir.join(&rung.name);
        // The segment name is a printf pattern: a literal `%` in the directory must be doubled.
        let dir_text = dir.to_string_lossy();
        if dir_text.contains('%') {
            args.push(format!("{}/seg_%05d.ts", dir_text.replace('%', "%%")).into());
        } else {
            args.push(dir.join("seg_%05d.ts").into());
        }
        args.push(dir.join(PLAYLIST).into());
    }
    args
}

/// `[0:v]fps=R,split=N[s0]..;[s0]scale=W:H,setsar=1[v0];..` (no split for one rung).
fn filter_graph(rungs: &[Rung], rate: &FrameRate) -> String {
    let scale = |r: &Rung| format!("scale={}:{},setsar=1", r.width, r.height);
    if let [rung] = rungs {
        return format!("[0:v]fps={},{}[v0]", rate.expr, scale(rung));
    }
    let mut graph = format!("[0:v]fps={},split={}", rate.expr, rungs.len());
    for k in 0..rungs.len() {
        graph.push_str(&format!("[s{k}]"));
    }
    for (k, rung) in rungs.iter().enumerate() {
        graph.push_str(&format!(";[s{k}]{}[v{k}]", scale(rung)));
    }
    graph
}

/// Removes a previous run's segments and playlist, so only this run's files remain.
async fn clear_rung_dir(dir: &Path) -> Result<(), MediaError> {
    let context = || format!("preparing {}", dir.display());
    tokio::fs::create_dir_all(dir).await.map_err(|e| MediaError::io(context(), e))?;
    let mut entries = tokio::fs::read_dir(dir).await.map_err(|e| MediaError::io(context(), e))?;
    while let Some(entry) = entries.next_entry().await.map_err(|e| MediaError::io(context(), e))? {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == PLAYLIST || (name.starts_with("seg_") && name.ends_with(".ts")) {
            tokio::fs::remove_file(entry.path()).await.map_err(|e| MediaError::io(context(), e))?;
        }
    }
    Ok(())
}

/// Runs FFmpeg with `args` (which send `-progress pipe:1`), calling `progress` with 0..<100 as
/// it advances through `duration_s` of input; hands `progress` back for the caller's last word.
pub async fn run_reporting<F: Fn(f64)>(args: Vec<OsString>, duration_s: f64, progress: F) -> Result<F, MediaError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let run = run_ffmpeg(args, duration_s, tx);
    tokio::pin!(run);
    let mut reported = f64::NEG_INFINITY;
    loop {
        tokio::select! {
            // `biased`: the progress lines are all read before the exit is seen.
            biased;
            Some(pct) = rx.recv() => {
                // 100 waits until the outputs are read.
                let pct = pct.min(99.9);
                if pct > reported {
                    reported = pct;
                    progress(pct);
                }
            }
            done = &mut run => return done.map(|()| progress),
        }
    }
}

/// Runs one FFmpeg, sending its progress (0..=100) as it goes.
async fn run_ffmpeg(
    args: Vec<OsString>,
    duration_s: f64,
    progress: mpsc::UnboundedSender<f64>,
) -> Result<(), MediaError> {
    let mut child = Command::new("ffmpeg")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| MediaError::Spawn { program: "ffmpeg", source })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Both pipes at once, so neither can fill up and stall FFmpeg.
    let read_progress = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(us) = out_time_us(&line) {
                let pct = (us as f64 / 1e6 / duration_s * 100.0).clamp(0.0, 100.0);
                let _ = progress.send(pct);
            }
        }
    };
    let read_errors = async {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        buf
    };
    let ((), errors) = tokio::join!(read_progress, read_errors);
    let status = child.wait().await.map_err(|e| MediaError::io("waiting for FFmpeg", e))?;
    if status.success() { Ok(()) } else { Err(ffmpeg_failed(&status, &errors)) }
}

/// `out_time_us=4017044` (or `out_time_ms=`, also microseconds) -> 4017044.
fn out_time_us(line: &str) -> Option<u64> {
    let (key, value) = line.trim().split_once('=')?;
    matches!(key, "out_time_us" | "out_time_ms").then(|| value.parse().ok()).flatten()
}

fn ffmpeg_failed(status: &std::process::ExitStatus, stderr: &[u8]) -> MediaError {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
    let stderr = if tail.is_empty() { "no error output".to_string() } else { tail.join("; ") };
    MediaError::Ffmpeg { status: status.to_string(), stderr }
}

/// The segments of `rung` FFmpeg has finished so far, from the `from`th on (those its playlist
/// lists; none before it writes one), and whether the playlist is ended.
async fn listed_segments(out_dir: &Path, rung: &Rung, from: usize) -> Result<(Vec<SegmentInfo>, bool), MediaError> {
    let playlist = rung_playlist(rung);
    let text = match tokio::fs::read(out_dir.join(&playlist)).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(MediaError::io(format!("reading {playlist}"), e)),
    };
    let parsed = m3u8_rs::parse_media_playlist_res(&text)
        .map_err(|_| MediaError::Output(format!("{playlist} is not a media playlist")))?;
    let mut segments = Vec::with_capacity(parsed.segments.len().saturating_sub(from));
    for segment in parsed.segments.iter().skip(from) {
        let file = format!("{}/{}", rung.name, segment.uri);
        let bytes = tokio::fs::metadata(out_dir.join(&file))
            .await
            .map_err(|e| MediaError::io(format!("reading {file}"), e))?
            .len();
        // EXTINF is an f32 in m3u8-rs: keep milliseconds.
        let duration_s = (f64::from(segment.duration) * 1000.0).round() / 1000.0;
        segments.push(SegmentInfo { file, duration_s, bytes });
    }
    Ok((segments, parsed.end_list))
}

/// What of one rung FFmpeg has finished, read a look at a time while it encodes.
#[derive(Clone, Debug, Default)]
pub struct RungRead {
    /// Every segment its playlist listed so far, in order.
    pub segments: Vec<SegmentInfo>,
    /// From its first segment.
    pub codecs: Option<String>,
}

impl RungRead {
    /// Reads the segments the rung's playlist lists past those read before (their number is
    /// returned), and the codecs from its first; says whether the playlist is ended. A failed
    /// look changes nothing.
    pub async fn read_more(
        &mut self,
        out_dir: &Path,
        rung: &Rung,
        has_audio: bool,
    ) -> Result<(usize, bool), MediaError> {
        let (new, ended) = listed_segments(out_dir, rung, self.segments.len()).await?;
        if self.codecs.is_none()
            && let Some(first) = self.segments.first().or(new.first())
        {
            self.codecs = Some(rendition_codecs(&out_dir.join(&first.file), has_audio).await?);
        }
        let count = new.len();
        self.segments.extend(new);
        Ok((count, ended))
    }

    /// Reads the rest of a rung FFmpeg is done with: its playlist must be ended.
    pub async fn read_rest(&mut self, out_dir: &Path, rung: &Rung, has_audio: bool) -> Result<usize, MediaError> {
        match self.read_more(out_dir, rung, has_audio).await? {
            (count, true) => Ok(count),
            (_, false) => Err(MediaError::Output(format!("{} has no #EXT-X-ENDLIST", rung_playlist(rung)))),
        }
    }

    /// The `count` segments read last.
    pub fn last(&self, count: usize) -> &[SegmentInfo] {
        &self.segments[self.segments.len().saturating_sub(count)..]
    }

    /// The rung's output as far as it is read, for a source of `source_fps` frames a second.
    pub fn output(&self, rung: &Rung, source_fps: f64) -> Result<RungOutput, MediaError> {
        let codecs = self.codecs.clone().unwrap_or_default();
        RungOutput::of(rung, self.segments.clone(), codecs, FrameRate::of(source_fps).value)
    }
}

impl RungOutput {
    /// A rung's output of `segments` (all of them, or the first ones while it encodes).
    pub fn of(
        rung: &Rung,
        segments: Vec<SegmentInfo>,
        codecs: String,
        frame_rate: f64,
    ) -> Result<RungOutput, MediaError> {
        let playlist = rung_playlist(rung);
        let bits_per_s = |bytes: u64, seconds: f64| (bytes as f64 * 8.0 / seconds).ceil() as u64;
        let bandwidth = segments
            .iter()
            .filter(|s| s.duration_s > 0.0)
            .map(|s| bits_per_s(s.bytes, s.duration_s))
            .max()
            .unwrap_or(0);
        let total_bytes: u64 = segments.iter().map(|s| s.bytes).sum();
        let total_s: f64 = segments.iter().map(|s| s.duration_s).sum();
        if bandwidth == 0 || total_s <= 0.0 {
            return Err(MediaError::Output(format!("{playlist} lists only empty segments")));
        }
        Ok(RungOutput {
            rung: rung.clone(),
            playlist,
            average_bandwidth: bits_per_s(total_bytes, total_s),
            bandwidth,
            segments,
            codecs,
            frame_rate,
        })
    }
}

/// The RFC 6381 codecs of a rendition whose first segment is `segment`.
pub async fn rendition_codecs(segment: &Path, has_audio: bool) -> Result<String, MediaError> {
    let mut codecs = video_codec_string(segment).await?;
    if has_audio {
        codecs.push_str(",mp4a.40.2");
    }
    Ok(codecs)
}

#[derive(serde::Deserialize)]
struct StreamsReport {
    #[serde(default)]
    streams: Vec<ProfileReport>,
}

#[derive(serde::Deserialize)]
struct ProfileReport {
    codec_name: Option<String>,
    profile: Option<String>,
    level: Option<i64>,
}

/// `avc1.PPCCLL` of the H.264 stream in `segment`, from ffprobe's profile and level.
pub async fn video_codec_string(segment: &Path) -> Result<String, MediaError> {
    let args = ["-select_streams", "v:0", "-show_entries", "stream=codec_name,profile,level"];
    let output = ffprobe_json(&args, segment).await?;
    let unusable = |why: String| MediaError::Output(format!("{}: {why}", segment.display()));
    if !output.status.success() {
        return Err(unusable(String::from_utf8_lossy(&output.stderr).trim().to_string()));
    }
    let report: StreamsReport =
        serde_json::from_slice(&output.stdout).map_err(|e| unusable(format!("ffprobe's report: {e}")))?;
    let stream = report.streams.first().ok_or_else(|| unusable("no video stream".into()))?;
    if stream.codec_name.as_deref() != Some("h264") {
        return Err(unusable(format!("video is {:?}, not h264", stream.codec_name)));
    }
    avc1(stream.profile.as_deref().unwrap_or(""), stream.level.unwrap_or(0))
        .ok_or_else(|| unusable(format!("unexpected H.264 profile {:?} level {:?}", stream.profile, stream.level)))
}

/// RFC 6381 `avc1.PPCCLL`: profile_idc, constraint flags, level_idc.
fn avc1(profile: &str, level: i64) -> Option<String> {
    let (profile_idc, constraints) = match profile {
        "High" => (0x64, 0x00),
        "Main" => (0x4D, 0x40),
        "Baseline" | "Constrained Baseline" => (0x42, 0xE0),
        _ => return None,
    };
    let level = u8::try_from(level).ok().filter(|l| *l > 0)?;
    Some(format!("avc1.{profile_idc:02x}{constraints:02x}{level:02x}"))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::media::ladder::ladder;
    use crate::media::probe::probe;
    use crate::media::probe::tests::make_source;

    /// ffprobe's stream list of `path`.
    async fn streams(path: &Path) -> Vec<serde_json::Value> {
        let output = Command::new("ffprobe")
            .args(["-v", "error", "-show_streams", "-print_format", "json"])
            .arg(path)
            .output()
            .await
            .unwrap();
        assert!(output.status.success());
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        report["streams"].as_array().unwrap().clone()
    }

    fn recorder() -> (Arc<Mutex<Vec<f64>>>, impl Fn(f64) + Send) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (seen, move |pct| sink.lock().unwrap().push(pct))
    }

    #[tokio::test]
    async fn split_mode_encodes_an_aligned_ladder() {
        let dir = tempfile::tempdir().unwrap();
        let src = make_source(dir.path(), "src.mp4", "1280x720", true).await;
        let info = probe(&src).await.unwrap();
        let rungs = ladder(&info);
        let out_dir = dir.path().join("out");
        let job = TranscodeJob { source: &src, out_dir: &out_dir, info: &info, rungs: &rungs, segment_seconds: 2 };
        let (seen, progress) = recorder();
        let outputs = transcode(&job, progress).await.unwrap();

        let names: Vec<&str> = outputs.iter().map(|o| o.rung.name.as_str()).collect();
        assert_eq!(names, ["720p", "480p", "360p"]);
        let durations = |o: &RungOutput| o.segments.iter().map(|s| s.duration_s).collect::<Vec<_>>();
        for output in &outputs {
            assert_eq!(output.playlist, format!("{}/index.m3u8", output.rung.name));
            assert_eq!(output.segments.len(), 2, "{output:?}");
            assert!(durations(output).iter().all(|d| (d - 2.0).abs() < 0.05), "{output:?}");
            assert_eq!(durations(output), durations(&outputs[0]), "boundaries differ between rungs");
            assert_eq!(output.segments[0].file, format!("{}/seg_00000.ts", output.rung.name));
            assert!(output.segments.iter().all(|s| s.bytes > 0));
            assert!(output.bandwidth >= output.average_bandwidth && output.average_bandwidth > 0);
            assert!(output.codecs.starts_with("avc1."), "{}", output.codecs);
            assert!(output.codecs.ends_with(",mp4a.40.2"), "{}", output.codecs);
            assert_eq!(output.frame_rate, 30.0);
            let playlist = std::fs::read_to_string(out_dir.join(&output.playlist)).unwrap();
            assert!(playlist.trim_end().ends_with("#EXT-X-ENDLIST"), "{playlist}");
        }
        assert!(outputs[0].codecs.starts_with("avc1.6400"), "720p is High: {}", outputs[0].codecs);
        assert!(outputs[1].codecs.starts_with("avc1.4d40"), "480p is Main: {}", outputs[1].codecs);

        let segment = streams(&out_dir.join(&outputs[1].segments[0].file)).await;
        let video = segment.iter().find(|s| s["codec_type"] == "video").unwrap();
        assert_eq!(
            (&video["codec_name"], &video["width"], &video["height"]),
            (&"h264".into(), &854.into(), &480.into())
        );
        let audio = segment.iter().find(|s| s["codec_type"] == "audio").expect("audio in the segment");
        assert_eq!(audio["codec_name"], "aac");
        assert_eq!(audio["channels"], 2);

        let seen = seen.lock().unwrap();
        assert_eq!(seen.last(), Some(&100.0));
        assert_eq!(seen.iter().filter(|p| **p == 100.0).count(), 1, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "progress went backwards: {seen:?}");
    }

    #[tokio::test]
    async fn one_rung_without_audio() {
        let dir = tempfile::tempdir().unwrap();
        let src = make_source(dir.path(), "small.mp4", "320x240", false).await;
        let info = probe(&src).await.unwrap();
        let rungs = ladder(&info);
        let out_dir = dir.path().join("out");
        // A previous run's leftover must not survive.
        std::fs::create_dir_all(out_dir.join("240p")).unwrap();
        std::fs::write(out_dir.join("240p/seg_00009.ts"), b"stale").unwrap();
        let job = TranscodeJob { source: &src, out_dir: &out_dir, info: &info, rungs: &rungs, segment_seconds: 2 };
        let (seen, progress) = recorder();
        let outputs = transcode(&job, progress).await.unwrap();

        assert_eq!(outputs.len(), 1);
        let output = &outputs[0];
        assert_eq!((output.rung.name.as_str(), output.rung.width, output.rung.height), ("240p", 320, 240));
        assert!(output.codecs.starts_with("avc1.4d40"), "{}", output.codecs);
        assert!(!output.codecs.contains("mp4a"), "{}", output.codecs);
        assert_eq!(output.segments.len(), 2);
        assert!(!out_dir.join("240p/seg_00009.ts").exists());
        let segment = streams(&out_dir.join(&output.segments[0].file)).await;
        assert!(segment.iter().all(|s| s["codec_type"] != "audio"), "{segment:?}");
        assert_eq!(seen.lock().unwrap().last(), Some(&100.0));
    }

    /// What `transcode_mode = "per_rung"` does: one FFmpeg per rung, at once, into one folder.
    #[tokio::test]
    async fn rungs_encoded_apart_at_once_line_up() {
        let dir = tempfile::tempdir().unwrap();
        let src = make_source(dir.path(), "vga.mp4", "640x480", true).await;
        let info = probe(&src).await.unwrap();
        let rungs = ladder(&info);
        let out_dir = dir.path().join("out");
        let jobs: Vec<TranscodeJob> = rungs
            .chunks(1)
            .map(|rung| TranscodeJob { source: &src, out_dir: &out_dir, info: &info, rungs: rung, segment_seconds: 2 })
            .collect();
        let (first, second) = tokio::join!(transcode(&jobs[0], |_| {}), transcode(&jobs[1], |_| {}));
        let outputs: Vec<RungOutput> = first.unwrap().into_iter().chain(second.unwrap()).collect();
        let durations: Vec<Vec<f64>> =
            outputs.iter().map(|o| o.segments.iter().map(|s| s.duration_s).collect()).collect();
        assert_eq!(durations.len(), 2);
        assert_eq!(durations[0], durations[1]);
        assert_eq!(outputs[1].rung.width, 480);
        assert!(outputs.iter().all(|o| o.codecs.ends_with(",mp4a.40.2")));
    }

    #[tokio::test]
    async fn a_failing_ffmpeg_gives_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("garbage.mp4");
        std::fs::write(&src, b"not video".repeat(50)).unwrap();
        let info = MediaInfo {
            duration_s: 4.0,
            width: 320,
            height: 240,
            frame_rate: 30.0,
            rotation_degrees: 0,
            variable_frame_rate: false,
            video_codec: "h264".into(),
            audio_codec: None,
        };
        let rungs = ladder(&info);
        let out_dir = dir.path().join("out");
        let job = TranscodeJob { source: &src, out_dir: &out_dir, info: &info, rungs: &rungs, segment_seconds: 2 };
        let err = transcode(&job, |_| {}).await.unwrap_err();
        assert!(matches!(err, MediaError::Ffmpeg { .. }), "{err:?}");
        assert!(err.to_string().contains("Invalid data found when processing input"), "{err}");
    }

    #[tokio::test]
    async fn poster_is_a_small_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        let src = make_source(dir.path(), "src.mp4", "1280x720", false).await;
        let info = probe(&src).await.unwrap();
        let out = dir.path().join("poster/poster.jpg");
        poster(&src, &out, poster_time(&info)).await.unwrap();
        let image = streams(&out).await;
        assert_eq!(image[0]["codec_name"], "mjpeg");
        assert_eq!((&image[0]["width"], &image[0]["height"]), (&640.into(), &360.into()));
    }

    /// Each tile of a storyboard is the rendition's frame at its time: a source that changes
    /// colour every 2 s, tiled every 4 s, shows every other colour.
    #[tokio::test]
    async fn a_storyboard_tiles_the_keyframes_at_its_interval() {
        let dir = tempfile::tempdir().unwrap();
        let colours = ["red", "green", "blue", "white", "yellow", "black"];
        let src = dir.path().join("colours.mp4");
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-nostdin", "-v", "error", "-y"]);
        for colour in colours {
            cmd.args(["-f", "lavfi", "-i"]).arg(format!("color=c={colour}:s=640x360:r=30:d=2"));
        }
        let inputs: String = (0..colours.len()).map(|k| format!("[{k}]")).collect();
        cmd.arg("-filter_complex").arg(format!("{inputs}concat=n={}:v=1:a=0", colours.len()));
        // A source keyframe every 8 s: the tiles come from the rendition's, every 2 s.
        cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "240", "-pix_fmt", "yuv420p"]).arg(&src);
        assert!(cmd.status().await.unwrap().success());
        let info = probe(&src).await.unwrap();
        let rungs = ladder(&info);
        let smallest = std::slice::from_ref(rungs.last().unwrap());
        let out_dir = dir.path().join("out");
        let job = TranscodeJob { source: &src, out_dir: &out_dir, info: &info, rungs: smallest, segment_seconds: 2 };
        transcode(&job, |_| {}).await.unwrap();

        let plan = Storyboard { interval_s: 4, tiles: 3, columns: 2, rows: 2, tile_width: 160, tile_height: 90 };
        let sheet = dir.path().join("board.jpg");
        storyboard(&out_dir.join(rung_playlist(&smallest[0])), &sheet, &plan, 2).await.unwrap();
        let tile = |x: u32, y: u32| {
            let output = std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-i"])
                .arg(&sheet)
                .args(["-vf", &format!("crop=120:60:{}:{},scale=1:1", x * 160 + 20, y * 90 + 15)])
                .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
                .output()
                .unwrap();
            let rgb = output.stdout;
            assert_eq!(rgb.len(), 3, "{}", String::from_utf8_lossy(&output.stderr));
            rgb.iter().map(|c| if *c > 128 { 'X' } else { '.' }).collect::<String>()
        };
        // red at 0 s, blue at 4 s, yellow at 8 s; the fourth tile is empty.
        assert_eq!([tile(0, 0), tile(1, 0), tile(0, 1), tile(1, 1)], ["X..", "..X", "XX.", "..."]);
    }

    #[test]
    fn the_future_is_send_with_a_progress_that_is_not_sync() {
        fn assert_send<T: Send>(_: &T) {}
        let info = MediaInfo {
            duration_s: 1.0,
            width: 2,
            height: 2,
            frame_rate: 1.0,
            rotation_degrees: 0,
            variable_frame_rate: false,
            video_codec: "h264".into(),
            audio_codec: None,
        };
        let job = TranscodeJob {
            source: Path::new("a"),
            out_dir: Path::new("b"),
            info: &info,
            rungs: &[],
            segment_seconds: 2,
        };
        let cell = std::cell::Cell::new(0.0);
        let future = transcode(&job, move |pct| cell.set(pct));
        assert_send(&future);
    }

    #[test]
    fn builds_codec_strings() {
        assert_eq!(avc1("High", 31).as_deref(), Some("avc1.64001f"));
        assert_eq!(avc1("Main", 30).as_deref(), Some("avc1.4d401e"));
        assert_eq!(avc1("Constrained Baseline", 30).as_deref(), Some("avc1.42e01e"));
        assert_eq!(avc1("High 10", 40), None);
        assert_eq!(avc1("High", 0), None);
    }

    #[test]
    fn reads_progress_lines() {
        assert_eq!(out_time_us("out_time_us=4017044"), Some(4017044));
        assert_eq!(out_time_us("out_time_ms=2000000"), Some(2000000));
        assert_eq!(out_time_us("out_time_us=N/A"), None);
        assert_eq!(out_time_us("out_time=00:00:04.017044"), None);
    }

    #[test]
    fn frame_rates_become_exact() {
        assert_eq!(FrameRate::of(30.0).expr, "30");
        assert_eq!(FrameRate::of(30000.0 / 1001.0).expr, "30000/1001");
        assert_eq!(FrameRate::of(23.976).expr, "24000/1001");
        assert_eq!(FrameRate::of(12.5).expr, "12.500");
        assert_eq!(FrameRate::of(29.97).frames_in(2), 60);
    }

    #[test]
    fn command_lines() {
        let info = MediaInfo {
            duration_s: 4.0,
            width: 1280,
            height: 720,
            frame_rate: 30.0,
            rotation_degrees: 0,
            variable_frame_rate: false,
            video_codec: "h264".into(),
            audio_codec: Some("aac".into()),
        };
        let rungs = ladder(&info);
        let job = TranscodeJob {
            source: Path::new("/in/src.mp4"),
            out_dir: Path::new("/out/v1"),
            info: &info,
            rungs: &rungs,
            segment_seconds: 2,
        };
        let line = |rungs: &[Rung]| {
            ffmpeg_command(&TranscodeJob { rungs, ..job })
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let split = line(&rungs);
        println!("split: ffmpeg {split}");
        assert!(split.contains(
            "-filter_complex [0:v]fps=30,split=3[s0][s1][s2];[s0]scale=1280:720,setsar=1[v0];\
             [s1]scale=854:480,setsar=1[v1];[s2]scale=640:360,setsar=1[v2]"
        ));
        assert!(split.contains("-map [v1] -map 0:a:0? -c:v libx264 -preset veryfast -profile:v main"));
        assert!(split.contains("-g 60 -keyint_min 60 -sc_threshold 0 -force_key_frames expr:gte(t,n_forced*2)"));
        assert!(split.contains("-hls_segment_filename /out/v1/480p/seg_%05d.ts /out/v1/480p/index.m3u8"));
        let single = line(&rungs[..1]);
        println!("per rung: ffmpeg {single}");
        assert!(single.contains("-filter_complex [0:v]fps=30,scale=1280:720,setsar=1[v0] -map [v0]"));
        let percent = TranscodeJob { out_dir: Path::new("/out/100%"), ..job };
        let odd = ffmpeg_command(&TranscodeJob { rungs: &rungs[..1], ..percent });
        assert!(odd.iter().any(|a| a == "/out/100%%/720p/seg_%05d.ts"));
    }
}
