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
use crate::model::auth::{PlaybackPolicy, Scope};
use crate::model::keys::{LIVE_PLAYLIST_FILE, VOD_POSTER_FILE};
use crate::model::live::RecordOptions;
use crate::model::{LiveEvent, LiveStreamDoc, StreamStatus, now_ms};

/// `POST /streams/start`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    title: Option<String>,
    /// Seconds; defaults to the engine's `target_duration`.
    target_duration: Option<u64>,
    dvr_window_size: Option<u64>,
    /// `signed` (default) or `public`.
    playback_policy: Option<PlaybackPolicy>,
    /// `{"transcode": true}`: the recording is also encoded into the ladder once the stream ends.
    record: Option<RecordOptions>,
}

/// `POST /streams/end`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    stream_id: String,
}

/// A stream's document as the API shows it: never its key's hash.
fn doc_view(doc: &LiveStreamDoc) -> Value {
    let mut view = serde_json::to_value(doc).unwrap_or_default();
    if let Some(fields) = view.as_object_mut() {
        fields.remove("stream_key_sha256");
    }
    view
}

fn stream_view(state: &AppState, headers: &HeaderMap, doc: &LiveStreamDoc) -> Value {
    let mut view = doc_view(doc);
    let base = public_base(state, headers);
    let (url, expires) = state.signer.url(&base, &doc.stream_id, LIVE_PLAYLIST_FILE, now_ms() / 1000);
    view["manifest_url"] = json!(url);
    view["expires_at"] = json!(rfc3339(expires));
    view["ingest_url"] = json!(format!("{base}/ingest/{}/", doc.stream_id));
    // Refreshed from the newest chunk while live (404 until the first is made).
    view["thumbnail_url"] = json!(state.signer.url(&base, &doc.stream_id, VOD_POSTER_FILE, now_ms() / 1000).0);
    if doc.status == StreamStatus::Ended {
        // Its recording becomes this video of the library, shortly after the end.
        view["video_url"] = json!(format!("{base}/videos/{}", doc.stream_id));
    }
    view
}

pub(super) fn rfc3339(unix_s: u64) -> String {
    chrono::DateTime::from_timestamp(unix_s as i64, 0).map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// `POST /streams/start` `{"title"?, "target_duration"?, "dvr_window_size"?, "playback_policy"?,
/// "record"?: {"transcode"}}`
/// (a `publish` token) -> 201, with the stream's key: shown this once.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.auth.require(&headers, Scope::Publish).await?;
    let request: StartRequest = parse_json(&body, Some(StartRequest::default()))?;
    let started = state
        .ingest
        .start_stream(StartStream {
            title: request.title,
            target_duration: request.target_duration,
            dvr_window_size: request.dvr_window_size,
            playback_policy: request.playback_policy,
            record: request.record.unwrap_or_default(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(started_view(&state, &headers, &started.doc, &started.stream_key))))
}

/// A stream with its key, and the ingest URL that carries it (for encoders that send no headers).
fn started_view(state: &AppState, headers: &HeaderMap, doc: &LiveStreamDoc, key: &str) -> Value {
    let mut view = stream_view(state, headers, doc);
    view["stream_key"] = json!(key);
    view["ingest_url_with_key"] = json!(format!("{}/ingest/{}/{key}/", public_base(state, headers), doc.stream_id));
    view
}

/// `POST /streams/end` `{"stream_id"}` (the stream's key, or a `publish` token): the playlist
/// gets `#EXT-X-ENDLIST`, status `vod`.
pub async fn end(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: EndRequest = parse_json(&body, None)?;
    let stream = state.ingest.live_stream(&request.stream_id).await?;
    state.auth.stream_access(&headers, None, &stream).await?;
    let doc = state.ingest.end_stream(&request.stream_id).await?;
    Ok(Json(stream_view(&state, &headers, &doc)))
}

/// `POST /streams/{id}/key` (the stream's key, or a `publish` token): a new stream key, shown
/// this once; the old one stops working.
pub async fn rotate_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let stream = state.ingest.live_stream(&stream_id).await?;
    state.auth.stream_access(&headers, None, &stream).await?;
    let key = state.ingest.rotate_stream_key(&stream).await?;
    Ok(Json(started_view(&state, &headers, &stream, &key)))
}

/// `GET /streams/{id}/metadata` (a `read` token): the stream's document, with the gap slots
/// of its window now (`gap_slots`, `health`), as the dataflow's gap set counts them.
pub async fn metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.auth.require(&headers, Scope::Read).await?;
    let doc = state.ingest.stream(&stream_id).await?;
    let gaps = state.backends.metadata.get_gaps(&stream_id).await?.unwrap_or_default();
    let mut view = doc_view(&doc);
    view["gap_slots"] = json!({ "missing": gaps.missing, "checksum_failed": gaps.checksum_failed });
    view["health"] = json!(gaps.health());
    Ok(Json(view))
}

/// `GET /streams/{id}/live`: a signed URL of the live playlist; a `signed` stream needs a
/// `read` token, a `public` one none.
pub async fn live_url(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let doc = state.ingest.stream(&stream_id).await?;
    state.auth.require_to_play(&headers, doc.playback_policy).await?;
    let view = stream_view(&state, &headers, &doc);
    Ok(Json(json!({
        "stream_id": doc.stream_id,
        "status": doc.status,
        "manifest_url": view["manifest_url"],
        "expires_at": view["expires_at"],
        "dvr_window_size": doc.dvr_window_size,
        "target_duration": doc.target_duration_s,
        "playback_policy": doc.playback_policy,
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
    headers: HeaderMap,
    Path(stream_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    state.auth.require(&headers, Scope::Read).await?;
    state.ingest.stream(&stream_id).await?;
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let chunks = state.backends.metadata.chunks(&stream_id, page.from, limit).await?;
    Ok(Json(json!({ "stream_id": stream_id, "chunks": chunks })))
}

/// `GET /dead-letters` (a `read` token): log records that could not be processed.
pub async fn dead_letters(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    state.auth.require(&headers, Scope::Read).await?;
    Ok(Json(json!({ "dead_letters": state.backends.metadata.dead_letters(1000).await? })))
}

/// `POST /streams/{id}/chunks` (the stream's key, or a `publish` token): a chunk event (the
/// legacy pipeline's JSON) naming an object already in the store.
pub async fn post_chunk(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let stream = state.ingest.live_stream(&stream_id).await?;
    state.auth.stream_access(&headers, None, &stream).await?;
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
