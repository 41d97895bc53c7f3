//! One MP4 file of a rendition, made from its HLS segments without re-encoding: what a
//! download of a video is.

use std::ffi::OsString;
use std::path::Path;

use super::probe::MediaError;
use super::transcode::run_to_file;

/// Copies the streams of the media playlist at `playlist` (its segments beside it) into an MP4
/// at `out`, its index first (`faststart`), so a player can start before the whole file is in.
pub async fn hls_to_mp4(playlist: &Path, out: &Path) -> Result<(), MediaError> {
    let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"].map(Into::into).into();
    args.push(playlist.into());
    args.extend(["-map", "0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4"].map(OsString::from));
    args.push(out.into());
    run_to_file(&args, out, || format!("FFmpeg wrote no MP4 from {}", playlist.display())).await
}
