//! `GET /play/…`: serves a stream's playlists and media behind a signed URL. On S3 the API
//! serves only playlists, their media URIs rewritten into presigned S3 URLs: the bytes go
//! straight from the object store to the player.

use std::time::Duration;

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::error::json_error;
use super::range::{self, Requested};
use super::{ApiError, AppState};
use crate::media::live_playlist::object_uris;
use crate::model::checks::{validate_file_name, validate_stream_id};
use crate::model::keys;
use crate::storage::object::{Playback, attachment, content_type};

fn forbidden() -> ApiError {
    ApiError::Forbidden("missing, invalid or expired signature".into())
}

/// `GET /play/{expires}/{sig}/{stream_id}/{*path}`: serves a playlist or segment, with
/// `Range` support ([`range`]), once the signature checks out. One catch-all route, so that a URL
/// missing its expiry or signature gets 403 like a wrong one, not 404. A signed URL is taken
/// only as [`UrlSigner::url`](super::signed::UrlSigner::url) writes it.
pub async fn play(
    State(state): State<AppState>,
    UrlPath(signed_path): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let mut fields = signed_path.splitn(4, '/');
    let (Some(expires), Some(signature), Some(stream_id)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(forbidden());
    };
    if !state.signer.check(stream_id, expires, signature, crate::model::now_ms() / 1000) {
        return Err(forbidden());
    }
    // The signed fields as sent, not percent-decoded: a signed URL has one form.
    let signed = format!("/play/{expires}/{signature}/{stream_id}");
    let sent = request.uri().path();
    if sent != signed && !sent.strip_prefix(&signed).is_some_and(|rest| rest.starts_with('/')) {
        return Err(forbidden());
    }
    let path = fields.next().unwrap_or_default();
    validate_stream_id(stream_id).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 3 {
        return Err(ApiError::NotFound(format!("no object {path:?}")));
    }
    for part in &parts {
        validate_file_name(part).map_err(|e| ApiError::NotFound(e.to_string()))?;
    }
    serve(&state, stream_id, path, request).await
}

/// Serves the object behind `path` of a stream's playback folder: a file here with `Range`, or
/// on S3 a redirect to a presigned URL (a playlist is served here, its media URIs presigned).
pub(super) async fn serve(
    state: &AppState,
    stream_id: &str,
    path: &str,
    mut request: Request,
) -> Result<Response, ApiError> {
    let key = keys::playback_object(stream_id, path);
    let ttl = Duration::from_secs(state.signer.ttl_secs);
    let not_found = || ApiError::NotFound(format!("no object {path:?} for stream {stream_id}"));
    let playback = state.backends.store.playback(&key, ttl).await?;
    // A playlist is served whole, read once: a growing one changes between two reads (a
    // range of one version would cut the next), and on S3 its media URIs are presigned.
    if path.ends_with(".m3u8") {
        let playlist = state.backends.store.get_bytes(&key).await?.ok_or_else(not_found)?;
        let body = match playback {
            Playback::File(_) => playlist.to_vec(),
            Playback::Redirect(_) => presign_media_uris(state, stream_id, path, &playlist, ttl).await?,
        };
        let headers = [
            (header::CONTENT_TYPE, content_type(path)),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ];
        return Ok((headers, body).into_response());
    }
    let file = match playback {
        Playback::File(file) => file,
        Playback::Redirect(url) => return Ok(Redirect::temporary(&url).into_response()),
    };
    let len = match tokio::fs::metadata(&file).await {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(ApiError::Internal(format!("reading {}: {e}", file.display()))),
    };
    match request.headers().get(header::RANGE).map(|v| range::requested(v.as_bytes(), len)) {
        None | Some(Requested::Full) => drop(request.headers_mut().remove(header::RANGE)),
        // Handed to ServeFile in the one form it reads the same way.
        Some(Requested::Part(part)) => {
            let value = HeaderValue::from_str(&format!("bytes={}-{}", part.start(), part.end())).expect("ASCII");
            request.headers_mut().insert(header::RANGE, value);
        }
        Some(Requested::Unsatisfiable) => {
            let message = format!("the range is past the object's {len} bytes");
            let mut response = json_error(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable", &message);
            let content_range = HeaderValue::from_str(&format!("bytes */{len}")).expect("ASCII");
            response.headers_mut().insert(header::CONTENT_RANGE, content_range);
            return Ok(response);
        }
    }
    let mime: mime::Mime = content_type(path).parse().expect("static MIME types parse");
    let mut response = ServeFile::new_with_mime(file, &mime)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .into_response();
    if response.status() == StatusCode::NOT_FOUND {
        return Err(not_found());
    }
    let cache = "public, max-age=86400, immutable";
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    Ok(response)
}

/// Serves `path` of a stream's playback folder as a download saved as `file_name`, with
/// `Range`; on S3 a redirect that the store answers with the same `Content-Disposition`.
pub(super) async fn serve_download(
    state: &AppState,
    stream_id: &str,
    path: &str,
    file_name: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let key = keys::playback_object(stream_id, path);
    let ttl = Duration::from_secs(state.signer.ttl_secs);
    if let Playback::Redirect(url) = state.backends.store.download(&key, ttl, file_name).await? {
        return Ok(Redirect::temporary(&url).into_response());
    }
    let mut response = serve(state, stream_id, path, request).await?;
    if let Ok(value) = HeaderValue::from_str(&attachment(file_name)) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A media playlist with each relative segment (and init section) URI replaced by a presigned
/// URL of its object; a master playlist is left as is (its variants come back through here).
async fn presign_media_uris(
    state: &AppState,
    stream_id: &str,
    path: &str,
    playlist: &[u8],
    ttl: Duration,
) -> Result<Vec<u8>, ApiError> {
    let mut media = match m3u8_rs::parse_playlist_res(playlist) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(media)) => media,
        Ok(m3u8_rs::Playlist::MasterPlaylist(_)) => return Ok(playlist.to_vec()),
        Err(e) => return Err(ApiError::Internal(format!("stored playlist {path} does not parse: {e}"))),
    };
    let dir = path.rsplit_once('/').map(|(dir, _)| format!("{dir}/")).unwrap_or_default();
    // A gap slot's URI names no object: it stays as it is.
    for uri in object_uris(&mut media).filter(|uri| !uri.contains("://")) {
        let key = keys::playback_object(stream_id, &format!("{dir}{uri}"));
        if let Playback::Redirect(url) = state.backends.store.playback(&key, ttl).await? {
            *uri = url;
        }
    }
    let mut out = Vec::new();
    media.write_to(&mut out).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(out)
}
