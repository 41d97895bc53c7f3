//! Live control plane: start and end streams, read their documents and signed playback URLs,
//! and take chunk events for bytes a producer stored itself.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, parse_json, public_base};
use crate::ingest::StartStream;
use crate::model::keys::LIVE_PLAYLIST_FILE;
use crate::model::{LiveEvent, LiveStreamDoc, now_ms};

/// `POST /streams/start`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    title: Option<String>,
    /// Seconds; defaults to the engine's `target_duration`.
    target_duration: Option<u64>,
    dvr_window_size: Option<u64>,
}

/// `POST /streams/end`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    stream_id: String,
}

fn stream_view(state: &AppState, headers: &HeaderMap, doc: &LiveStreamDoc) -> Value {
    let mut view = serde_json::to_value(doc).unwrap_or_default();
    let base = public_base(state, headers);
    let (url, expires) = state.signer.url(&base, &doc.stream_id, LIVE_PLAYLIST_FILE, now_ms() / 1000);
    view["manifest_url"] = json!(url);
    view["expires_at"] = json!(rfc3339(expires));
    view["ingest_url"] = json!(format!("{base}/ingest/{}/", doc.stream_id));
    view
}

pub(super) fn rfc3339(unix_s: u64) -> String {
    chrono::DateTime::from_timestamp(unix_s as i64, 0).map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// `POST /streams/start` `{"title"?, "target_duration"?, "dvr_window_size"?}` -> 201.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: StartRequest = parse_json(&body, Some(StartRequest::default()))?;
    let doc = state
        .ingest
        .start_stream(StartStream {
            title: request.title,
            target_duration: request.target_duration,
            dvr_window_size: request.dvr_window_size,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(stream_view(&state, &headers, &doc))))
}

/// `POST /streams/end` `{"stream_id"}`: the playlist gets `#EXT-X-ENDLIST`, status `vod`.
pub async fn end(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: EndRequest = parse_json(&body, None)?;
    let doc = state.ingest.end_stream(&request.stream_id).await?;
    Ok(Json(stream_view(&state, &headers, &doc)))
}

/// `GET /streams/{id}/metadata`.
pub async fn metadata(State(state): State<AppState>, Path(stream_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let doc = state.ingest.stream(&stream_id).await?;
    Ok(Json(serde_json::to_value(doc).unwrap_or_default()))
}

/// `GET /streams/{id}/live`: a signed URL of the live playlist.
pub async fn live_url(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let doc = state.ingest.stream(&stream_id).await?;
    let view = stream_view(&state, &headers, &doc);
    Ok(Json(json!({
        "stream_id": doc.stream_id,
        "status": doc.status,
        "manifest_url": view["manifest_url"],
        "expires_at": view["expires_at"],
        "dvr_window_size": doc.dvr_window_size,
        "target_duration": doc.target_duration_s,
    })))
}

#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
}

/// `GET /streams/{id}/chunks?from=&limit=`: chunk documents in sequence order.
pub async fn list_chunks(
    State(state): State<AppState>,
    Path(stream_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    state.ingest.stream(&stream_id).await?;
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let chunks = state.backends.metadata.chunks(&stream_id, page.from, limit).await?;
    Ok(Json(json!({ "stream_id": stream_id, "chunks": chunks })))
}

/// `GET /dead-letters`: log records that could not be processed.
pub async fn dead_letters(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "dead_letters": state.backends.metadata.dead_letters(1000).await? })))
}

/// `POST /streams/{id}/chunks`: a chunk event (the legacy pipeline's JSON) naming an object
/// already in the store.
pub async fn post_chunk(
    State(state): State<AppState>,
    Path(stream_id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let stream = state.ingest.live_stream(&stream_id).await?;
    let event: LiveEvent = parse_json(&body, None)?;
    let chunk = state.ingest.producer_chunk(&stream, event).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "stream_id": stream_id,
            "chunk_index": chunk.sequence_number,
            "sequence_number": chunk.sequence_number,
            "object_key": chunk.object_key,
            "sha256": chunk.stored.sha256,
            "status": "queued",
        })),
    ))
}
