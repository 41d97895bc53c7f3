//! Every object key segflow writes or reads, built and read back in one place.
//!
//! A key is `{bucket}/{stream_id}/{path}`. A bucket is a folder of the local store, or an S3
//! bucket (named with the configured prefix):
//!
//! | bucket | what it holds, below `{stream_id}/` |
//! | --- | --- |
//! | `live-streams` | live segments `chunks/{seq}.{ext}`, an fMP4 init section, `incoming/` segments FFmpeg pushed |
//! | `manifests` | the live playlist `live.m3u8`, an ended stream's `recording.m3u8`, a video's master playlist `vod_manifest.m3u8` |
//! | `vod-raw` | an uploaded source, `source.{ext}` |
//! | `vod-variants` | renditions `{rung}/index.m3u8` and `{rung}/seg_NNNNN.ts`, the poster `poster.jpg` |
//!
//! The bucket names are those of the legacy pipeline, so its tools find the objects.

use super::checks::{ValidationError, validate_file_name};

/// The top-level namespaces of the object store.
pub mod bucket {
    pub const LIVE_STREAMS: &str = "live-streams";
    pub const MANIFESTS: &str = "manifests";
    pub const VOD_RAW: &str = "vod-raw";
    pub const VOD_VARIANTS: &str = "vod-variants";
    /// Every bucket, as a store creates them.
    pub const ALL: [&str; 4] = [VOD_RAW, VOD_VARIANTS, LIVE_STREAMS, MANIFESTS];
}

/// A live stream's media playlist, in its playback folder.
pub const LIVE_PLAYLIST_FILE: &str = "live.m3u8";
/// An ended live stream's recording: a VOD playlist of every stored chunk, in its playback folder.
pub const RECORDING_PLAYLIST_FILE: &str = "recording.m3u8";
/// A video's master playlist, in its playback folder.
pub const VOD_MANIFEST_FILE: &str = "vod_manifest.m3u8";
/// A video's poster, in its playback folder.
pub const VOD_POSTER_FILE: &str = "poster.jpg";
/// A video's storyboard: a sprite sheet of frames, and the WebVTT track that maps times onto it.
pub const VOD_STORYBOARD_FILE: &str = "storyboard.jpg";
pub const VOD_STORYBOARD_VTT_FILE: &str = "storyboard.vtt";

/// A live segment, keyed by `(stream_id, sequence_number)`: a replay writes the same key.
pub fn live_chunk(stream_id: &str, seq: u64, ext: &str) -> String {
    format!("{}/{stream_id}/chunks/{seq}.{ext}", bucket::LIVE_STREAMS)
}

/// A file directly in a live stream's folder (its fMP4 init section).
pub fn live_file(stream_id: &str, file: &str) -> String {
    format!("{}/{stream_id}/{file}", bucket::LIVE_STREAMS)
}

/// Where a segment FFmpeg pushed waits until its playlist names its sequence number.
pub fn live_incoming(stream_id: &str, file: &str) -> String {
    format!("{}{file}", live_incoming_prefix(stream_id))
}

/// The folder of [`live_incoming`].
pub fn live_incoming_prefix(stream_id: &str) -> String {
    format!("{}/{stream_id}/incoming/", bucket::LIVE_STREAMS)
}

/// A live stream's media playlist.
pub fn live_playlist(stream_id: &str) -> String {
    format!("{}/{stream_id}/{LIVE_PLAYLIST_FILE}", bucket::MANIFESTS)
}

/// The part of `key` below `{bucket}/{stream_id}/`, if it is there.
fn below<'k>(bucket: &str, stream_id: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(bucket)?.strip_prefix('/')?.strip_prefix(stream_id)?.strip_prefix('/')
}

/// A live stream's recording ([`RECORDING_PLAYLIST_FILE`]).
pub fn recording_playlist(stream_id: &str) -> String {
    format!("{}/{stream_id}/{RECORDING_PLAYLIST_FILE}", bucket::MANIFESTS)
}

/// The stream whose recording's playlist `key` is, if it is one.
pub fn recording_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(bucket::MANIFESTS)?.strip_prefix('/')?;
    rest.strip_suffix(RECORDING_PLAYLIST_FILE)?.strip_suffix('/').filter(|id| !id.is_empty() && !id.contains('/'))
}

/// A live object's path in the stream's playback folder (`chunks/42.ts`): what a live
/// playlist lists. `key` is one that [`validate_live_object`] accepted.
pub fn live_playback_path<'k>(stream_id: &str, key: &'k str) -> &'k str {
    below(bucket::LIVE_STREAMS, stream_id, key).unwrap_or(key)
}

/// An object key a live event may name: a file in the stream's own `live-streams/{id}/`
/// folder, or in one folder below it.
pub fn validate_live_object(stream_id: &str, key: &str) -> Result<(), ValidationError> {
    let rest = below(bucket::LIVE_STREAMS, stream_id, key).ok_or_else(|| ValidationError::ForeignObjectKey {
        key: key.to_string(),
        prefix: format!("{}/{stream_id}/", bucket::LIVE_STREAMS),
    })?;
    match rest.split_once('/') {
        Some((_, file)) if file.contains('/') => Err(ValidationError::NestedObjectKey(key.to_string())),
        Some((folder, file)) => validate_file_name(folder).and_then(|()| validate_file_name(file)),
        None => validate_file_name(rest),
    }
}

/// An uploaded video's source.
pub fn vod_source(stream_id: &str, ext: &str) -> String {
    format!("{}/{stream_id}/source.{ext}", bucket::VOD_RAW)
}

/// A source a producer stored itself must be a file directly under `vod-raw/{stream_id}/`.
pub fn validate_vod_source(stream_id: &str, key: &str) -> Result<(), ValidationError> {
    match below(bucket::VOD_RAW, stream_id, key) {
        Some(file) if validate_file_name(file).is_ok() => Ok(()),
        _ => Err(ValidationError::SourceKey {
            key: key.to_string(),
            prefix: format!("{}/{stream_id}/", bucket::VOD_RAW),
        }),
    }
}

/// A file of a video's renditions (`720p/index.m3u8`) or its poster.
pub fn vod_variant(stream_id: &str, file: &str) -> String {
    format!("{}/{stream_id}/{file}", bucket::VOD_VARIANTS)
}

/// A video's master playlist.
pub fn vod_manifest(stream_id: &str) -> String {
    format!("{}/{stream_id}/{VOD_MANIFEST_FILE}", bucket::MANIFESTS)
}

/// A video's poster.
pub fn vod_poster(stream_id: &str) -> String {
    vod_variant(stream_id, VOD_POSTER_FILE)
}

/// The MP4 of one rendition that `GET /videos/{id}/download` serves, beside the renditions.
pub fn vod_download(stream_id: &str, rung: &str) -> String {
    vod_variant(stream_id, &vod_download_file(rung))
}

/// [`vod_download`]'s path in the video's playback folder.
pub fn vod_download_file(rung: &str) -> String {
    format!("downloads/{rung}.mp4")
}

/// Every folder that holds objects of a video: its source, its renditions (and poster), its
/// playlists, and a recording's chunks.
pub fn vod_prefixes(stream_id: &str) -> [String; 4] {
    [bucket::VOD_RAW, bucket::VOD_VARIANTS, bucket::MANIFESTS, bucket::LIVE_STREAMS]
        .map(|bucket| format!("{bucket}/{stream_id}/"))
}

/// A media job's uploaded source.
pub fn job_source(job_id: &str, ext: &str) -> String {
    format!("{}/{job_id}/source.{ext}", bucket::VOD_RAW)
}

/// A media job's output, beside the videos' renditions (so it is served from the job's
/// playback folder, as `output/{job_id}.{ext}`).
pub fn job_output(job_id: &str, ext: &str) -> String {
    format!("{}/{job_id}/{}", bucket::VOD_VARIANTS, job_output_file(job_id, ext))
}

/// [`job_output`]'s path in the job's playback folder.
pub fn job_output_file(job_id: &str, ext: &str) -> String {
    format!("output/{job_id}.{ext}")
}

/// A key a client may name as a job's source: `{bucket}/{id}/{file}` or one folder deeper,
/// each part a plain file name.
pub fn validate_stored_object(key: &str) -> Result<(), ValidationError> {
    let parts: Vec<&str> = key.split('/').collect();
    let ok = (3..=4).contains(&parts.len())
        && bucket::ALL.contains(&parts[0])
        && parts[1..].iter().all(|part| validate_file_name(part).is_ok());
    if ok { Ok(()) } else { Err(ValidationError::StoredObjectKey(key.to_string())) }
}

/// The object behind `path` in a stream's playback folder (`/play/…/{stream_id}/{path}`).
/// The folder spans three buckets, so that a playlist's relative URIs name its media: its
/// playlists (`live.m3u8`, `recording.m3u8`, `vod_manifest.m3u8`) are in `manifests/`; a live
/// stream's `chunks/` and init sections in `live-streams/`; a video's renditions (one folder
/// each), downloads, poster and storyboard in `vod-variants/`. A recording has all three.
pub fn playback_object(stream_id: &str, path: &str) -> String {
    let thumbnail = [VOD_POSTER_FILE, VOD_STORYBOARD_FILE, VOD_STORYBOARD_VTT_FILE].contains(&path);
    let bucket = match path.split_once('/') {
        None if path.ends_with(".m3u8") => bucket::MANIFESTS,
        None if thumbnail => bucket::VOD_VARIANTS,
        None => bucket::LIVE_STREAMS,
        Some(("chunks", _)) => bucket::LIVE_STREAMS,
        Some(_) => bucket::VOD_VARIANTS,
    };
    format!("{bucket}/{stream_id}/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_keys_stay_in_the_stream_folder() {
        assert!(validate_live_object("s1", "live-streams/s1/chunks/3.ts").is_ok());
        assert!(validate_live_object("s1", "live-streams/s2/chunks/3.ts").is_err());
        assert!(validate_live_object("s1", "live-streams/s1/../s2/3.ts").is_err());
        assert!(validate_live_object("s1", "live-streams/s1/a/b/3.ts").is_err());
        assert!(validate_live_object("s1", "live-streams/s10/chunks/3.ts").is_err());
    }

    #[test]
    fn source_keys_stay_under_the_video() {
        assert!(validate_vod_source("vod-a", "vod-raw/vod-a/source.mp4").is_ok());
        assert!(validate_vod_source("vod-a", "vod-raw/vod-b/source.mp4").is_err());
        assert!(validate_vod_source("vod-a", "vod-raw/vod-a/../x.mp4").is_err());
        assert!(validate_vod_source("vod-a", "vod-raw/vod-a/dir/x.mp4").is_err());
    }

    #[test]
    fn playback_paths_name_the_objects_the_playlists_list() {
        let id = "live-a";
        let chunk = live_chunk(id, 7, "ts");
        assert_eq!(live_playback_path(id, &chunk), "chunks/7.ts");
        assert_eq!(playback_object(id, live_playback_path(id, &chunk)), chunk);
        assert_eq!(playback_object(id, LIVE_PLAYLIST_FILE), live_playlist(id));
        assert_eq!(playback_object(id, "init.mp4"), live_file(id, "init.mp4"));
        let vod = "vod-a";
        assert_eq!(playback_object(vod, VOD_MANIFEST_FILE), vod_manifest(vod));
        assert_eq!(playback_object(vod, VOD_POSTER_FILE), vod_poster(vod));
        assert_eq!(playback_object(vod, "720p/index.m3u8"), vod_variant(vod, "720p/index.m3u8"));
        assert_eq!(playback_object(vod, "downloads/720p.mp4"), vod_download(vod, "720p"));
        // A recording: the live stream's chunks, its playlist, and a ladder made of them.
        assert_eq!(playback_object(id, RECORDING_PLAYLIST_FILE), recording_playlist(id));
        assert_eq!(recording_of(&recording_playlist(id)), Some(id));
        assert_eq!((recording_of("manifests/a/b/recording.m3u8"), recording_of("manifests/a/live.m3u8")), (None, None));
        assert_eq!(playback_object(id, VOD_MANIFEST_FILE), vod_manifest(id));
        assert_eq!(playback_object(id, "360p/seg_00001.ts"), vod_variant(id, "360p/seg_00001.ts"));
        assert_eq!(playback_object(id, VOD_POSTER_FILE), vod_poster(id));
    }
}
