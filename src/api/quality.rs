//! Quality selection (seed 002's `?quality=`): a signed URL of one rendition's playlist (or the
//! master's, for `auto`), and a download of one rendition as an MP4 file, remuxed from its
//! segments without re-encoding the first time it is asked for.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::live::rfc3339;
use super::vod::{Needs, playlist_type, video_to_play};
use super::{ApiError, AppState, public_base};
use crate::media::live_playlist::{is_gap, object_uris};
use crate::media::remux::hls_to_mp4;
use crate::model::keys::{self, VOD_MANIFEST_FILE};
use crate::model::{VariantDoc, VodDoc, VodStatus, now_ms};

/// One remux at a time per process: each is a copy of a few seconds, and a second request for
/// the same file waits for the first rather than making it again.
static REMUXING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityParams {
    quality: Option<String>,
}

/// The rendition `quality` names (`None` for `auto`): 400 for a name that is no rung's, 404
/// for a rung this video does not have.
fn rendition<'a>(doc: &'a VodDoc, quality: &str) -> Result<Option<&'a VariantDoc>, ApiError> {
    if quality == "auto" {
        return Ok(None);
    }
    let digits =
        quality.strip_suffix('p').filter(|d| (2..=4).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    if digits.is_none() {
        return Err(ApiError::BadRequest(format!(
            "quality {quality:?} is not auto or a rendition such as 1080p, 720p, 480p or 360p"
        )));
    }
    match doc.variants.iter().find(|v| v.name == quality) {
        Some(variant) => Ok(Some(variant)),
        None => Err(ApiError::NotFound(format!(
            "video {} has no {quality} rendition; it has {}",
            doc.stream_id,
            doc.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The path of a variant's playlist in the video's playback folder (`720p/index.m3u8`, a
/// recording's `recording.m3u8`).
fn playback_path<'a>(doc: &VodDoc, variant: &'a VariantDoc) -> &'a str {
    let (renditions, playlists) = (keys::vod_variant(&doc.stream_id, ""), keys::vod_manifest(&doc.stream_id));
    let playlists = playlists.trim_end_matches(keys::VOD_MANIFEST_FILE);
    let path = &variant.playlist_path;
    path.strip_prefix(&renditions).or_else(|| path.strip_prefix(playlists)).unwrap_or(path)
}

/// `GET /videos/{id}/stream?quality=1080p|720p|480p|360p|auto` (read, none if `public`): a
/// signed URL of that rendition's playlist, or of the master for `auto` (the default).
pub async fn stream(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(stream_id): Path<String>,
    params: Result<Query<QualityParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let doc = match video_to_play(&state, &headers, &stream_id, Needs::Playable).await? {
        Ok(doc) => doc,
        Err(not_yet) => return Ok(not_yet),
    };
    let quality = params.quality.unwrap_or_else(|| "auto".into());
    let variant = rendition(&doc, &quality)?;
    let file = variant.map_or(VOD_MANIFEST_FILE, |v| playback_path(&doc, v));
    let (url, expires) = state.signer.url(&public_base(&state, &headers), &stream_id, file, now_ms() / 1000);
    Ok(Json(json!({
        "stream_id": stream_id,
        "quality": quality,
        "playlist_type": playlist_type(&doc),
        "url": url,
        "expires_at": rfc3339(expires),
        "width": variant.map(|v| v.width),
        "height": variant.map(|v| v.height),
        "bandwidth": variant.map(|v| v.bandwidth),
        "qualities": doc.variants.iter().map(|v| &v.name).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /videos/{id}/download?quality=` (read, none if `public`): one MP4 file of the
/// rendition (the best for `auto`, the default), with `Range`; on S3 a redirect to it.
pub async fn download(
    State(state): State<AppState>,
    Path(stream_id): Path<String>,
    params: Result<Query<QualityParams>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let doc = match video_to_play(&state, request.headers(), &stream_id, Needs::Ready).await? {
        Ok(doc) => doc,
        Err(not_ready) => return Ok(not_ready),
    };
    let quality = params.quality.unwrap_or_else(|| "auto".into());
    let variant = match rendition(&doc, &quality)? {
        Some(variant) => variant,
        None => {
            doc.variants.first().ok_or_else(|| ApiError::NotFound(format!("video {stream_id} has no rendition")))?
        }
    };
    make_download(&state, &doc, variant).await?;
    let file = keys::vod_download_file(&variant.name);
    let name = format!("{stream_id}-{}.mp4", variant.name);
    super::play::serve_download(&state, &stream_id, &file, &name, request).await
}

/// Stores the rendition's MP4 unless it is there: its playlist and segments fetched into a
/// scratch directory (on a local store, read where they are), remuxed by FFmpeg, moved in.
async fn make_download(state: &AppState, doc: &VodDoc, variant: &VariantDoc) -> Result<(), ApiError> {
    let key = keys::vod_download(&doc.stream_id, &variant.name);
    let store = &state.backends.store;
    if store.exists(&key).await? {
        return Ok(());
    }
    let _one_at_a_time = REMUXING.lock().await;
    if store.exists(&key).await? {
        return Ok(()); // made while this one waited
    }
    let work = state.config.data_dir.join("work");
    let scratch = work.join(format!("download-{}-{}-{:08x}", doc.stream_id, variant.name, rand::random::<u32>()));
    let made = async {
        tokio::fs::create_dir_all(&scratch)
            .await
            .map_err(|e| ApiError::Internal(format!("creating {}: {e}", scratch.display())))?;
        let text = store.get_bytes(&variant.playlist_path).await?.unwrap_or_default();
        let mut media = m3u8_rs::parse_media_playlist_res(&text)
            .map_err(|e| ApiError::Internal(format!("the stored {} playlist does not parse: {e}", variant.name)))?;
        // FFmpeg reads each segment where it is (or as fetched), a recording's gaps left out.
        media.segments.retain(|segment| !is_gap(segment));
        let folder = playback_path(doc, variant).rsplit_once('/').map_or(String::new(), |(f, _)| format!("{f}/"));
        for uri in object_uris(&mut media) {
            let key = keys::playback_object(&doc.stream_id, &format!("{folder}{uri}"));
            *uri = store.read_path(&key, &scratch).await?.to_string_lossy().into_owned();
        }
        let playlist = scratch.join("input.m3u8");
        let mut listed = Vec::new();
        media.write_to(&mut listed).map_err(|e| ApiError::Internal(format!("writing the input playlist: {e}")))?;
        tokio::fs::write(&playlist, listed)
            .await
            .map_err(|e| ApiError::Internal(format!("writing {}: {e}", playlist.display())))?;
        let mp4 = scratch.join("download.mp4");
        hls_to_mp4(&playlist, &mp4).await.map_err(|e| ApiError::Internal(format!("making the MP4: {e}")))?;
        store.put_file(&key, &mp4).await?;
        Ok::<(), ApiError>(())
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    made?;
    // Deleted meanwhile: the file is not left behind.
    if state.backends.metadata.get_vod(&doc.stream_id).await?.is_none_or(|d| d.status == VodStatus::Deleting) {
        store.delete(&key).await?;
        return Err(ApiError::NotFound(format!("video {} was deleted", doc.stream_id)));
    }
    tracing::info!(stream_id = doc.stream_id, rendition = variant.name, "download made");
    Ok(())
}
