//! VOD control plane: uploads in (multipart, streamed to the object store, or a JSON body
//! naming an object a producer stored itself), status and the signed master playlist out.

use std::future::Future;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::live::rfc3339;
use super::{ApiError, AppState, parse_json, public_base, refuse_declared_over};
use crate::ingest::{MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS, Upload, check_length};
use crate::model::auth::{PlaybackPolicy, Scope};
use crate::model::checks::validate_stream_id;
use crate::model::keys::{VOD_MANIFEST_FILE, VOD_POSTER_FILE};
use crate::model::{VodDoc, VodEvent, VodStatus, now_ms};
use crate::storage::object::{ByteStream, StoredObject};

/// Room in a multipart upload besides the video, for its other fields and the part headers:
/// a body declared larger than `max_upload_bytes` and this is refused before it is read.
const MULTIPART_FIELDS_BYTES: u64 = 64 * 1024;

/// `POST /vod/upload` with a JSON body: the source is already in the store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredUpload {
    /// `vod-raw/{stream_id}/{file}`; the id is taken from it unless given.
    source_key: String,
    stream_id: Option<String>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    playback_policy: PlaybackPolicy,
}

/// `POST /vod/upload` (a `publish` token): multipart (`video`, `title`, `description`,
/// `playback_policy`) or JSON ([`StoredUpload`]).
pub async fn upload(State(state): State<AppState>, request: Request) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.auth.require(request.headers(), Scope::Publish).await?;
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let event = if content_type.starts_with("multipart/form-data") {
        let limit = state.config.max_upload_bytes.saturating_add(MULTIPART_FIELDS_BYTES);
        refuse_declared_over(request.headers(), limit, "upload")?;
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
        multipart_upload(&state, multipart).await?
    } else {
        // This route has no body limit (uploads are large): a JSON body stops at `max_json_bytes`.
        let limit = state.config.max_json_bytes;
        refuse_declared_over(request.headers(), limit as u64, "JSON body")?;
        let body = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(format!("JSON body is over {limit} bytes")))?;
        let upload: StoredUpload = parse_json(&body, None)?;
        let StoredUpload { source_key, stream_id, title, description, playback_policy } = upload;
        state.ingest.stored_upload(source_key, stream_id, title, description, playback_policy).await?
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "stream_id": event.stream_id,
            "status": "uploaded",
            "title": event.title,
            "source_key": event.source_key,
            "size_bytes": event.size_bytes,
            "sha256": event.source_sha256,
            "playback_policy": event.playback_policy,
        })),
    ))
}

/// Streams the `video` part to `vod-raw/{id}/source.{ext}` as it arrives.
async fn multipart_upload(state: &AppState, mut multipart: Multipart) -> Result<VodEvent, ApiError> {
    let (mut title, mut description) = (String::new(), String::new());
    let mut playback_policy = PlaybackPolicy::default();
    let mut source: Option<(String, String, StoredObject)> = None;
    let mut stored_key = None;
    let result = async {
        while let Some(field) =
            multipart.next_field().await.map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?
        {
            match field.name().unwrap_or_default() {
                "title" => title = field_text(field, "title", MAX_TITLE_CHARS).await?,
                "description" => description = field_text(field, "description", MAX_DESCRIPTION_CHARS).await?,
                "playback_policy" => {
                    let text = field_text(field, "playback_policy", 16).await?;
                    playback_policy = serde_json::from_value(json!(text)).map_err(|_| {
                        ApiError::BadRequest(format!("playback_policy {text:?} is not public or signed"))
                    })?;
                }
                "video" if source.is_none() => {
                    let (stream_id, key) = state.ingest.new_upload(field.file_name());
                    let (body, pump) = field_stream(field);
                    let (stored, ()) = tokio::join!(state.ingest.store_source(&key, body), pump);
                    let stored = stored?; // a refused upload left nothing behind
                    stored_key = Some(key.clone());
                    source = Some((stream_id, key, stored));
                }
                other => return Err(ApiError::BadRequest(format!("unexpected multipart field {other:?}"))),
            }
        }
        let Some((stream_id, source_key, stored)) = source.take() else {
            return Err(ApiError::BadRequest("multipart body has no `video` file".into()));
        };
        let upload = Upload { stream_id, title, description, source_key, stored, playback_policy };
        Ok(state.ingest.accept_upload(upload).await?)
    }
    .await;
    if let (Err(_), Some(key)) = (&result, &stored_key) {
        state.ingest.discard_source(key).await; // a refused upload leaves nothing behind
    }
    result
}

/// A multipart field's bytes as a body the store reads: the field borrows the request, so its
/// chunks cross a small channel to a `'static` stream.
pub(super) fn field_stream(
    mut field: axum::extract::multipart::Field<'_>,
) -> (ByteStream, impl Future<Output = ()> + '_) {
    let (chunks, body) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let body =
        Box::pin(futures_util::stream::unfold(
            body,
            |mut body| async move { body.recv().await.map(|chunk| (chunk, body)) },
        ));
    let pump = async move {
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => break,
                Err(e) => Err(std::io::Error::other(e)),
            };
            let failed = chunk.is_err();
            if chunks.send(chunk).await.is_err() || failed {
                break; // the store stopped reading (too large), or the upload broke
            }
        }
    };
    (body, pump)
}

async fn field_text(
    field: axum::extract::multipart::Field<'_>,
    what: &str,
    max_chars: usize,
) -> Result<String, ApiError> {
    let text = field.text().await.map_err(|e| ApiError::BadRequest(format!("invalid multipart field: {e}")))?;
    check_length(what, &text, max_chars)?;
    Ok(text)
}

pub(super) async fn find_vod(state: &AppState, stream_id: &str) -> Result<VodDoc, ApiError> {
    validate_stream_id(stream_id).map_err(|e| ApiError::NotFound(e.to_string()))?;
    state
        .backends
        .metadata
        .get_vod(stream_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no video {stream_id:?}")))
}

/// How far along a video must be for a request.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Needs {
    /// Its master plays, though its renditions may still grow (`EVENT` playlists).
    Playable,
    /// Every rendition is whole (a download).
    Ready,
}

/// Whether a video's playlists are still growing (`event`) or whole (`vod`), once it plays.
pub(super) fn playlist_type(doc: &VodDoc) -> Option<&'static str> {
    match doc.status {
        VodStatus::Ready => Some("vod"),
        VodStatus::Failed | VodStatus::Deleting => None,
        _ => doc.playable.then_some("event"),
    }
}

/// A video these headers may play, if it is as far along as `needs`; else the answer to give,
/// a 409 that says where the video stands. Unknown, or not to be played with these headers:
/// the error.
pub(super) async fn video_to_play(
    state: &AppState,
    headers: &HeaderMap,
    stream_id: &str,
    needs: Needs,
) -> Result<Result<VodDoc, Response>, ApiError> {
    let doc = find_vod(state, stream_id).await?;
    state.auth.require_to_play(headers, doc.playback_policy).await?;
    let (far_enough, not_yet) = match needs {
        Needs::Ready => (doc.status == VodStatus::Ready, "not ready"),
        Needs::Playable => (playlist_type(&doc).is_some(), "not playable yet"),
    };
    if far_enough {
        return Ok(Ok(doc));
    }
    let message = format!("video {stream_id} is {}, {not_yet}", doc.status.as_str());
    let body = json!({
        "error": { "code": "conflict", "message": message },
        "stream_id": stream_id,
        "status": doc.status,
        "progress_pct": doc.progress_pct,
        "reason": doc.error,
    });
    Ok(Err((StatusCode::CONFLICT, Json(body)).into_response()))
}

/// `GET /vod/{id}/manifest`: a signed URL of the master playlist once the video plays (its
/// renditions `EVENT` playlists that grow while it is processed, `VOD` once `ready`); 409
/// before. A `signed` video needs a `read` token.
pub async fn manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
) -> Result<Response, ApiError> {
    let doc = match video_to_play(&state, &headers, &stream_id, Needs::Playable).await? {
        Ok(doc) => doc,
        Err(not_yet) => return Ok(not_yet),
    };
    let base = public_base(&state, &headers);
    let now_s = now_ms() / 1000;
    let (url, expires) = state.signer.url(&base, &stream_id, VOD_MANIFEST_FILE, now_s);
    let mut answer = json!({
        "stream_id": stream_id,
        "status": doc.status,
        "playlist_type": playlist_type(&doc),
        "manifest_url": url,
        "expires_at": rfc3339(expires),
        "variants_generated": doc.variants_generated,
    });
    if doc.poster_path.is_some() {
        answer["poster_url"] = state.signer.url(&base, &stream_id, VOD_POSTER_FILE, now_s).0.into();
    }
    Ok(Json(answer).into_response())
}
