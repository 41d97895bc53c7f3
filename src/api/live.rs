//! Live control plane: start and end streams, read their metadata and signed playback URLs,
//! and accept chunk events for bytes a producer stored itself.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, find_live_stream, find_stream, parse_json, public_base};
use crate::media::live_playlist::rounded_seconds;
use crate::model::{LiveCommand, LiveEvent, LiveEventType, LiveStreamDoc, Topic, now_ms, now_us};
use crate::storage::metadata::MetaWrite;

/// How long a control call waits for the dataflow to write the stream's playlist.
const PLAYLIST_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartStream {
    title: Option<String>,
    /// Seconds; defaults to the engine's `target_duration`.
    target_duration: Option<u64>,
    dvr_window_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndStream {
    stream_id: String,
}

/// Appends a live event and waits until the dataflow has written the stream's playlist
/// accordingly (`ended` as asked). Returns false on timeout: the event is in the log anyway.
pub(super) async fn append_and_wait(state: &AppState, event: &LiveEvent<'_>, ended: bool) -> Result<bool, ApiError> {
    let mut notices = state.notices.subscribe();
    append_live(state, event).await?;
    let wait = async {
        loop {
            match notices.recv().await {
                Ok(n) if n.stream_id == event.stream_id && n.ended == ended => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
    };
    Ok(tokio::time::timeout(PLAYLIST_WAIT, wait).await.unwrap_or(false))
}

pub(super) async fn append_live(state: &AppState, event: &LiveEvent<'_>) -> Result<(), ApiError> {
    let payload = serde_json::to_vec(event).map_err(|e| ApiError::Internal(e.to_string()))?;
    state.backends.log.append(Topic::LiveChunks, &event.stream_id, payload).await?;
    state.metrics.log_appends_total.with_label_values(&[Topic::LiveChunks.name()]).inc();
    Ok(())
}

fn stream_view(state: &AppState, headers: &HeaderMap, doc: &LiveStreamDoc) -> Value {
    let mut view = serde_json::to_value(doc).unwrap_or_default();
    let (url, expires) = state.signer.url(&public_base(state, headers), &doc.stream_id, "live.m3u8", now_ms() / 1000);
    view["manifest_url"] = json!(url);
    view["expires_at"] = json!(rfc3339(expires));
    view["ingest_url"] = json!(format!("{}/ingest/{}/", public_base(state, headers), doc.stream_id));
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
    let request: StartStream = parse_json(&body, Some(StartStream::default()))?;
    let title = request.title.unwrap_or_default();
    if title.chars().count() > 256 {
        return Err(ApiError::Unprocessable("title is longer than 256 characters".into()));
    }
    let target = request.target_duration.unwrap_or(state.config.target_duration);
    if !(1..=60).contains(&target) {
        return Err(ApiError::Unprocessable("target_duration must be 1 to 60 seconds".into()));
    }
    let window = request.dvr_window_size.unwrap_or(state.config.dvr_window);
    if !(1..=100_000).contains(&window) {
        return Err(ApiError::Unprocessable("dvr_window_size must be 1 to 100000".into()));
    }
    let stream_id = format!("live-{}", hex::encode(rand::random::<[u8; 6]>()));
    let at_us = now_us();
    let doc = LiveStreamDoc::new(&stream_id, &title, target, window, at_us / 1000);
    state.backends.metadata.apply(std::sync::Arc::new(vec![MetaWrite::Stream(doc.clone())])).await?;
    state.live_streams.insert(&doc);
    let event = LiveEvent {
        event_type: LiveEventType::StreamStarted,
        stream_id: stream_id.as_str().into(),
        title: Some(title.into()),
        target_duration_s: Some(target),
        dvr_window_size: Some(window),
        ingested_at_us: Some(at_us),
        ..Default::default()
    };
    if !append_and_wait(&state, &event, false).await? {
        tracing::warn!(stream_id, "stream started, but its first playlist was not written within {PLAYLIST_WAIT:?}");
    }
    tracing::info!(stream_id, "live stream started");
    Ok((StatusCode::CREATED, Json(stream_view(&state, &headers, &doc))))
}

/// `POST /streams/end` `{"stream_id"}`: the playlist gets `#EXT-X-ENDLIST`, status `vod`.
pub async fn end(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: EndStream = parse_json(&body, None)?;
    find_live_stream(&state, &request.stream_id).await?;
    state.live_streams.remove(&request.stream_id); // from now on, lookups read the document
    state.pushed.drain_stream(&request.stream_id).await;
    let event = LiveEvent {
        event_type: LiveEventType::StreamEnded,
        stream_id: request.stream_id.as_str().into(),
        ingested_at_us: Some(now_us()),
        ..Default::default()
    };
    if !append_and_wait(&state, &event, true).await? {
        return Err(ApiError::Unavailable(format!(
            "stream {} is ending, but its final playlist was not written within {PLAYLIST_WAIT:?}",
            request.stream_id
        )));
    }
    state.pushed.forget_stream(&request.stream_id);
    let doc = find_stream(&state, &request.stream_id).await?;
    tracing::info!(stream_id = request.stream_id, "live stream ended");
    Ok(Json(stream_view(&state, &headers, &doc)))
}

/// `GET /streams/{id}/metadata`.
pub async fn metadata(State(state): State<AppState>, Path(stream_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let doc = find_stream(&state, &stream_id).await?;
    Ok(Json(serde_json::to_value(doc).unwrap_or_default()))
}

/// `GET /streams/{id}/live`: a signed URL of the live playlist.
pub async fn live_url(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let doc = find_stream(&state, &stream_id).await?;
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
    find_stream(&state, &stream_id).await?;
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let chunks = state.backends.metadata.chunks(&stream_id, page.from, limit).await?;
    Ok(Json(json!({ "stream_id": stream_id, "chunks": chunks })))
}

/// `GET /dead-letters`: log records that could not be processed.
pub async fn dead_letters(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "dead_letters": state.backends.metadata.dead_letters(1000).await? })))
}

/// `POST /streams/{id}/chunks`: a seed-003 chunk event naming an object already stored.
pub async fn post_chunk(
    State(state): State<AppState>,
    Path(stream_id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let stream = find_live_stream(&state, &stream_id).await?;
    let mut event: LiveEvent = parse_json(&body, None)?;
    if !event.stream_id.is_empty() && event.stream_id != stream_id {
        return Err(ApiError::BadRequest(format!("body stream_id {:?} differs from the URL's", event.stream_id)));
    }
    if event.event_type != LiveEventType::Chunk {
        return Err(ApiError::BadRequest("only chunk events are accepted here".into()));
    }
    event.stream_id = stream_id.as_str().into();
    event.stored_sha256 = None;
    event.ingested_at_us = Some(now_us());
    let LiveCommand::Chunk(chunk) = event.validate().map_err(|e| ApiError::Unprocessable(e.to_string()))? else {
        unreachable!("a chunk event validates into a chunk command")
    };
    check_duration(&stream, chunk.duration_ms)?;
    let stored =
        state.backends.store.stat_sha256(&chunk.object_key).await?.ok_or_else(|| {
            ApiError::Unprocessable(format!("object {:?} is not in the object store", chunk.object_key))
        })?;
    event.object_key = Some(chunk.object_key.clone().into());
    event.size_bytes = Some(event.size_bytes.unwrap_or(stored.size));
    event.stored_sha256 = Some(stored.sha256.clone().into());
    append_live(&state, &event).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "stream_id": stream_id,
            "chunk_index": chunk.chunk_index,
            "sequence_number": chunk.sequence_number,
            "object_key": chunk.object_key,
            "sha256": stored.sha256,
            "status": "queued",
        })),
    ))
}

/// 422 unless the duration, rounded, fits the stream's target duration.
pub(super) fn check_duration(stream: &LiveStreamDoc, duration_ms: u64) -> Result<(), ApiError> {
    if duration_ms == 0 || rounded_seconds(duration_ms) > stream.target_duration_s {
        return Err(ApiError::Unprocessable(format!(
            "duration {duration_ms} ms does not fit the stream's target duration of {} s",
            stream.target_duration_s
        )));
    }
    Ok(())
}
