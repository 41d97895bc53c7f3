//! VOD control plane: uploads in (multipart, streamed to the object store, or a JSON body
//! naming an object a producer stored itself), status and the signed master playlist out.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::live::rfc3339;
use super::{ApiError, AppState, parse_json, public_base};
use crate::model::checks::validate_vod_id;
use crate::model::keys::{self, VOD_MANIFEST_FILE, VOD_POSTER_FILE};
use crate::model::{Topic, VOD_UPLOADED, VodDoc, VodEvent, VodStatus, now_ms, now_us};
use crate::storage::metadata::MetaWrite;
use crate::storage::object::{StoreError, StoredObject};

/// Longest title and description accepted.
const MAX_TITLE_CHARS: usize = 256;
const MAX_DESCRIPTION_CHARS: usize = 4096;

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
}

/// `POST /vod/upload`: multipart (`video`, `title`, `description`) or JSON ([`StoredUpload`]).
pub async fn upload(State(state): State<AppState>, request: Request) -> Result<(StatusCode, Json<Value>), ApiError> {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
        return multipart_upload(&state, multipart).await;
    }
    // This route has no body limit (uploads are large): a JSON body stops at `max_json_bytes`.
    let limit = state.config.max_json_bytes;
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(format!("JSON body is over {limit} bytes")))?;
    let upload: StoredUpload = parse_json(&body, None)?;
    let stream_id = match upload.stream_id {
        Some(id) => id,
        None => upload.source_key.split('/').nth(1).unwrap_or_default().to_string(),
    };
    validate_vod_id(&stream_id)?;
    keys::validate_vod_source(&stream_id, &upload.source_key)?;
    check_text(&upload.title, &upload.description)?;
    if state.backends.metadata.get_vod(&stream_id).await?.is_some() {
        return Err(ApiError::Conflict(format!("video {stream_id} already exists")));
    }
    let stored =
        state.backends.store.stat_sha256(&upload.source_key).await?.ok_or_else(|| {
            ApiError::Unprocessable(format!("object {:?} is not in the object store", upload.source_key))
        })?;
    accept(&state, &stream_id, &upload.title, &upload.description, &upload.source_key, &stored).await
}

/// Streams the `video` part to `vod-raw/{id}/source.{ext}` as it arrives.
async fn multipart_upload(state: &AppState, mut multipart: Multipart) -> Result<(StatusCode, Json<Value>), ApiError> {
    let stream_id = format!("vod-{}", hex::encode(rand::random::<[u8; 6]>()));
    let (mut title, mut description) = (String::new(), String::new());
    let mut source: Option<(String, StoredObject)> = None;
    let result = async {
        while let Some(field) =
            multipart.next_field().await.map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?
        {
            match field.name().unwrap_or_default() {
                "title" => title = field_text(field, MAX_TITLE_CHARS).await?,
                "description" => description = field_text(field, MAX_DESCRIPTION_CHARS).await?,
                "video" if source.is_none() => {
                    let key = keys::vod_source(&stream_id, &source_extension(field.file_name()));
                    let stored = store_field(state, &key, field).await;
                    source = Some((key, stored.map_err(upload_error)?));
                }
                other => return Err(ApiError::BadRequest(format!("unexpected multipart field {other:?}"))),
            }
        }
        let Some((key, stored)) = &source else {
            return Err(ApiError::BadRequest("multipart body has no `video` file".into()));
        };
        check_text(&title, &description)?;
        accept(state, &stream_id, &title, &description, key, stored).await
    }
    .await;
    if let (Err(_), Some((key, _))) = (&result, &source) {
        let _ = state.backends.store.delete(key).await; // a refused upload leaves nothing behind
    }
    result
}

/// Streams a multipart field into the store: the field borrows the request, so its chunks
/// cross a small channel to the store's `'static` body stream.
async fn store_field(
    state: &AppState,
    key: &str,
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<StoredObject, StoreError> {
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
    let (stored, ()) = tokio::join!(state.backends.store.put_stream(key, body, state.config.max_upload_bytes), pump);
    stored
}

async fn field_text(field: axum::extract::multipart::Field<'_>, max_chars: usize) -> Result<String, ApiError> {
    let text = field.text().await.map_err(|e| ApiError::BadRequest(format!("invalid multipart field: {e}")))?;
    if text.chars().count() > max_chars {
        return Err(ApiError::Unprocessable(format!("a text field is longer than {max_chars} characters")));
    }
    Ok(text)
}

fn upload_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Empty => ApiError::BadRequest("the uploaded video is empty".into()),
        other => other.into(),
    }
}

/// The stored source's extension: the upload's own when it is a plain one, else `bin`
/// (ffprobe reads the container from the bytes either way).
fn source_extension(file_name: Option<&str>) -> String {
    file_name
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| !ext.is_empty() && ext.len() <= 8 && ext.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "bin".into())
}

fn check_text(title: &str, description: &str) -> Result<(), ApiError> {
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::Unprocessable(format!("title is longer than {MAX_TITLE_CHARS} characters")));
    }
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::Unprocessable(format!("description is longer than {MAX_DESCRIPTION_CHARS} characters")));
    }
    Ok(())
}

/// Records the video as `uploaded` and appends its event to `vod-chunks`.
async fn accept(
    state: &AppState,
    stream_id: &str,
    title: &str,
    description: &str,
    source_key: &str,
    stored: &StoredObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let uploaded_at_us = now_us();
    let event = VodEvent {
        event_type: VOD_UPLOADED.into(),
        stream_id: stream_id.to_string(),
        source_key: source_key.to_string(),
        size_bytes: stored.size,
        source_sha256: stored.sha256.clone(),
        uploaded_at_us,
        title: title.to_string(),
        description: description.to_string(),
    };
    let doc = VodDoc::from_event(&event);
    state.backends.metadata.apply(Arc::new(vec![MetaWrite::Vod(doc.clone())])).await?;
    let payload = serde_json::to_vec(&event).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Err(e) = state.backends.log.append(Topic::VodChunks, stream_id, payload).await {
        let mut failed = doc;
        failed.error = Some(format!("the upload event could not be logged: {e}"));
        failed.set_status(VodStatus::Failed, now_ms());
        state.backends.metadata.apply(Arc::new(vec![MetaWrite::Vod(failed)])).await?;
        return Err(e.into());
    }
    state.metrics.log_appends_total.with_label_values(&[Topic::VodChunks.name()]).inc();
    tracing::info!(stream_id, size_bytes = stored.size, "video uploaded");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "stream_id": stream_id,
            "status": "uploaded",
            "title": title,
            "source_key": source_key,
            "size_bytes": stored.size,
            "sha256": stored.sha256,
        })),
    ))
}

async fn find_vod(state: &AppState, stream_id: &str) -> Result<VodDoc, ApiError> {
    validate_vod_id(stream_id).map_err(|e| ApiError::NotFound(e.to_string()))?;
    state
        .backends
        .metadata
        .get_vod(stream_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no video {stream_id:?}")))
}

/// `GET /vod/{id}/metadata`.
pub async fn metadata(State(state): State<AppState>, Path(stream_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let doc = find_vod(&state, &stream_id).await?;
    Ok(Json(serde_json::to_value(doc).unwrap_or_default()))
}

/// `GET /vod/{id}/manifest`: a signed URL of the master playlist once `ready`; 409 before.
pub async fn manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
) -> Result<Response, ApiError> {
    let doc = find_vod(&state, &stream_id).await?;
    if doc.status != VodStatus::Ready {
        let status = json!(doc.status);
        let message = format!("video {stream_id} is {}, not ready", status.as_str().unwrap_or_default());
        let body = json!({
            "error": { "code": "conflict", "message": message },
            "stream_id": stream_id,
            "status": status,
            "progress_pct": doc.progress_pct,
            "reason": doc.error,
        });
        return Ok((StatusCode::CONFLICT, Json(body)).into_response());
    }
    let base = public_base(&state, &headers);
    let now_s = now_ms() / 1000;
    let (url, expires) = state.signer.url(&base, &stream_id, VOD_MANIFEST_FILE, now_s);
    let (poster_url, _) = state.signer.url(&base, &stream_id, VOD_POSTER_FILE, now_s);
    Ok(Json(json!({
        "stream_id": stream_id,
        "manifest_url": url,
        "expires_at": rfc3339(expires),
        "poster_url": poster_url,
        "variants_generated": doc.variants_generated,
    }))
    .into_response())
}
