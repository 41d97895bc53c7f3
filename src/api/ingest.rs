//! `PUT /ingest/{stream_id}/{file}`, as an encoder uses it: a segment with its sequence number
//! and duration in headers (`X-Sequence-Number`, `X-Duration-Ms`, and optionally
//! `X-Checksum-Sha256` and `X-Program-Date-Time`), or FFmpeg's HLS muxer with `-method PUT`
//! (bare segments, then the playlist that names them), or an fMP4 init section.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use futures_util::TryStreamExt;
use serde_json::{Value, json};

use super::{ApiError, AppState, refuse_declared_over};
use crate::ingest::{ChunkAccepted, SegmentInfo};
use crate::model::checks::{IngestFile, ingest_file};
use crate::storage::object::ByteStream;

/// Largest playlist FFmpeg may PUT.
const MAX_PLAYLIST_BYTES: usize = 1 << 20;

/// A header parsed as `T`; 400 when it is there but does not parse.
fn header<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Result<Option<T>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest(format!("header {name} is not valid"))),
    }
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

/// `PUT /ingest/{stream_id}/{file}`, the stream's key in a header.
pub async fn put_file(
    State(state): State<AppState>,
    Path((stream_id, file)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    put(state, stream_id, None, file, headers, body).await
}

/// `PUT /ingest/{stream_id}/{stream_key}/{file}`: for encoders that send no headers (FFmpeg's
/// HLS muxer puts its segments beside the playlist URL, so the key rides along).
pub async fn put_file_with_key(
    State(state): State<AppState>,
    Path((stream_id, key, file)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    put(state, stream_id, Some(key), file, headers, body).await
}

async fn put(
    state: AppState,
    stream_id: String,
    path_key: Option<String>,
    file: String,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ext = crate::ingest::extension(&file);
    let limit = if ext == "m3u8" { MAX_PLAYLIST_BYTES as u64 } else { state.config.max_segment_bytes };
    refuse_declared_over(&headers, limit, "upload")?;
    let sequence_number = header::<u64>(&headers, "x-sequence-number");
    let numbered = headers.contains_key("x-sequence-number");
    let kind = ingest_file(&file, numbered).map_err(|e| match ext.as_str() {
        "ts" | "m4s" | "aac" | "mp4" | "m3u8" => ApiError::Invalid(e),
        _ => ApiError::UnsupportedMediaType(format!(
            "unsupported file type {file:?}: send .ts, .m4s or .aac segments, an init.mp4 and .m3u8 playlists"
        )),
    });
    let bare = kind.as_ref().is_ok_and(|k| *k == IngestFile::Segment) && !numbered;
    let _in_flight = state.ingest.request(&stream_id, bare.then_some(file.as_str()));
    let kind = kind?;
    let ingest = &state.ingest;
    let stream = ingest.live_stream(&stream_id).await?;
    state.auth.stream_access(&headers, path_key.as_deref(), &stream).await?;
    match kind {
        IngestFile::Playlist => {
            let bytes = axum::body::to_bytes(body, MAX_PLAYLIST_BYTES)
                .await
                .map_err(|_| ApiError::PayloadTooLarge(format!("playlist is over {MAX_PLAYLIST_BYTES} bytes")))?;
            let emitted = ingest.pushed_playlist(&stream, &bytes).await?;
            Ok((StatusCode::OK, Json(json!({ "stream_id": stream.stream_id, "chunks_emitted": emitted }))))
        }
        IngestFile::Segment | IngestFile::Init => match sequence_number? {
            Some(sequence_number) => {
                let segment = SegmentInfo {
                    sequence_number,
                    duration_ms: header::<u64>(&headers, "x-duration-ms")?.ok_or_else(|| {
                        ApiError::BadRequest("X-Duration-Ms is required with X-Sequence-Number".into())
                    })?,
                    checksum: header(&headers, "x-checksum-sha256")?,
                    program_date_time: header(&headers, "x-program-date-time")?,
                };
                let accepted = ingest.put_segment(&stream, segment, &ext, body_stream(body)).await?;
                Ok((StatusCode::CREATED, Json(chunk_reply(&accepted))))
            }
            None => {
                let (key, stored) = match kind {
                    IngestFile::Init => ingest.put_init(&stream, &file, body_stream(body)).await?,
                    _ => ingest.put_pushed_segment(&stream, &file, body_stream(body)).await?,
                };
                let reply = json!({ "object_key": key, "size_bytes": stored.size, "sha256": stored.sha256 });
                Ok((StatusCode::CREATED, Json(reply)))
            }
        },
    }
}

fn chunk_reply(chunk: &ChunkAccepted) -> Value {
    json!({
        "stream_id": chunk.stream_id,
        "chunk_index": chunk.sequence_number,
        "sequence_number": chunk.sequence_number,
        "duration_ms": chunk.duration_ms,
        "object_key": chunk.object_key,
        "size_bytes": chunk.stored.size,
        "sha256": chunk.stored.sha256,
        "checksum_matches": chunk.checksum_matches,
        "status": "queued",
    })
}
