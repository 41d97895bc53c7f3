//! Live data plane over HTTP: `PUT /ingest/{stream_id}/{file}` as an encoder uses it.
//!
//! Two ways a segment gets its sequence number and duration:
//! - headers `X-Sequence-Number` and `X-Duration-Ms` (and `X-Checksum-Sha256`,
//!   `X-Program-Date-Time`) on the PUT;
//! - FFmpeg's HLS muxer with `-method PUT`: segments arrive bare, then the playlist it PUTs
//!   after each one names them (`EXT-X-MEDIA-SEQUENCE`, `EXTINF`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use futures_util::TryStreamExt;
use serde_json::{Value, json};

use super::live::{append_live, check_duration};
use super::{ApiError, AppState, find_live_stream};
use crate::model::checks::{validate_file_name, validate_sha256_hex};
use crate::model::{ChunkStatus, LiveEvent, LiveEventType, LiveStreamDoc, keys, now_us, parse_program_date_time};
use crate::storage::object::{ByteStream, ObjectStore, StoredObject};

/// How long a playlist waits for a segment it names that is still uploading.
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a playlist waits for a newer segment it names whose request has not started yet.
const ANNOUNCE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Largest playlist FFmpeg may PUT.
const MAX_PLAYLIST_BYTES: usize = 1 << 20;

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

/// `PUT /ingest/{stream_id}/{file}`.
///
/// The work runs in its own task: FFmpeg closes the connection right after the last byte
/// without waiting for the answer, which would otherwise cancel the handler mid-write.
pub async fn put_file(
    State(state): State<AppState>,
    Path((stream_id, file)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let in_flight = InFlight::new(state.pushed.clone(), &stream_id);
    // A bare segment is announced before anything awaits, so that the playlist FFmpeg PUTs
    // right after it finds it even when its request is handled first.
    let bare = is_bare_segment(&file, &headers).then(|| incoming_key(&stream_id, &file));
    if let Some(key) = &bare {
        state.pushed.uploading(key);
    }
    let pushed = state.pushed.clone();
    let work = store_file(state, stream_id, file, headers, body);
    tokio::spawn(async move {
        let _in_flight = in_flight; // held by the task, which outlives a dropped connection
        let reply = work.await;
        if let (Some(key), Err(_)) = (&bare, &reply) {
            pushed.finished(key, None);
        }
        reply
    })
    .await
    .map_err(|e| ApiError::Internal(format!("ingest task failed: {e}")))?
}

fn extension(file: &str) -> String {
    file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

/// A media segment without a sequence number: FFmpeg's playlist will name it.
fn is_bare_segment(file: &str, headers: &HeaderMap) -> bool {
    matches!(extension(file).as_str(), "ts" | "m4s" | "aac") && !headers.contains_key("x-sequence-number")
}

fn incoming_key(stream_id: &str, file: &str) -> String {
    keys::live_incoming(stream_id, file)
}

/// Counts a stream's ingest requests while they run, so ending a stream can wait for them.
struct InFlight {
    pushed: Arc<PushedSegments>,
    stream_id: String,
}

impl InFlight {
    fn new(pushed: Arc<PushedSegments>, stream_id: &str) -> Self {
        *pushed.in_flight.lock().expect("in-flight lock").entry(stream_id.to_string()).or_default() += 1;
        InFlight { pushed, stream_id: stream_id.to_string() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self.pushed.in_flight.lock().expect("in-flight lock");
        if let Some(count) = in_flight.get_mut(&self.stream_id) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.stream_id);
            }
        }
    }
}

async fn store_file(
    state: AppState,
    stream_id: String,
    file: String,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_file_name(&file)?;
    let stream = find_live_stream(&state, &stream_id).await?;
    let ext = extension(&file);
    match ext.as_str() {
        "m3u8" => {
            let bytes = axum::body::to_bytes(body, MAX_PLAYLIST_BYTES)
                .await
                .map_err(|_| ApiError::PayloadTooLarge(format!("playlist is over {MAX_PLAYLIST_BYTES} bytes")))?;
            pushed_playlist(&state, &stream, &bytes).await
        }
        "ts" | "m4s" | "mp4" | "aac" => match header::<u64>(&headers, "x-sequence-number")? {
            Some(seq) => segment_with_headers(&state, &stream, seq, &ext, &headers, body).await,
            None if ext == "mp4" => init_segment(&state, &stream, &file, body).await,
            None => {
                let key = incoming_key(&stream_id, &file);
                let stored =
                    state.backends.store.put_stream(&key, body_stream(body), state.config.max_segment_bytes).await;
                state.pushed.finished(&key, stored.as_ref().ok().cloned());
                let stored = stored?;
                Ok((
                    StatusCode::CREATED,
                    Json(json!({ "object_key": key, "size_bytes": stored.size, "sha256": stored.sha256 })),
                ))
            }
        },
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "unsupported file type {file:?}: send .ts, .m4s or .mp4 segments and .m3u8 playlists"
        ))),
    }
}

/// A segment whose sequence number and duration come in headers.
async fn segment_with_headers(
    state: &AppState,
    stream: &LiveStreamDoc,
    seq: u64,
    ext: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let duration_ms = header::<u64>(headers, "x-duration-ms")?
        .ok_or_else(|| ApiError::BadRequest("X-Duration-Ms is required with X-Sequence-Number".into()))?;
    check_duration(stream, duration_ms)?;
    let claimed = header::<String>(headers, "x-checksum-sha256")?;
    if let Some(sum) = &claimed {
        validate_sha256_hex(sum)?;
    }
    let existing = state.backends.metadata.get_chunk(&stream.stream_id, seq).await?;
    if existing.is_some_and(|chunk| chunk.status == ChunkStatus::Live) {
        return Err(ApiError::Conflict(format!("chunk {seq} of {} is already accepted", stream.stream_id)));
    }
    let program_date_time = header::<String>(headers, "x-program-date-time")?;
    if let Some(text) = &program_date_time {
        parse_program_date_time(text)?;
    }
    let key = keys::live_chunk(&stream.stream_id, seq, ext);
    let stored = state.backends.store.put_stream(&key, body_stream(body), state.config.max_segment_bytes).await?;
    let mut event = chunk_event(&stream.stream_id, seq, duration_ms, &key, &stored, claimed);
    event.program_date_time = program_date_time.map(Into::into);
    append_live(state, &event).await?;
    Ok((StatusCode::CREATED, Json(chunk_reply(&event, &stored))))
}

fn chunk_event<'a>(
    stream_id: &'a str,
    seq: u64,
    duration_ms: u64,
    key: &'a str,
    stored: &'a StoredObject,
    claimed: Option<String>,
) -> LiveEvent<'a> {
    LiveEvent {
        event_type: LiveEventType::Chunk,
        stream_id: stream_id.into(),
        chunk_index: Some(seq),
        sequence_number: Some(seq),
        duration_ms: Some(duration_ms),
        size_bytes: Some(stored.size),
        checksum: claimed.map(Into::into),
        stored_sha256: Some(stored.sha256.as_str().into()),
        object_key: Some(key.into()),
        keyframe_aligned: Some(true),
        audio_track_id: Some(format!("audio-{stream_id}").into()),
        video_track_id: Some(format!("video-{stream_id}").into()),
        ingested_at_us: Some(now_us()),
        ..Default::default()
    }
}

fn chunk_reply(event: &LiveEvent<'_>, stored: &StoredObject) -> Value {
    json!({
        "stream_id": event.stream_id,
        "chunk_index": event.chunk_index,
        "sequence_number": event.sequence_number,
        "duration_ms": event.duration_ms,
        "object_key": event.object_key,
        "size_bytes": stored.size,
        "sha256": stored.sha256,
        "checksum_matches": event.checksum.as_ref().is_none_or(|c| c.eq_ignore_ascii_case(&stored.sha256)),
        "status": "queued",
    })
}

/// An fMP4 initialization segment (`init.mp4`).
async fn init_segment(
    state: &AppState,
    stream: &LiveStreamDoc,
    file: &str,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = keys::live_file(&stream.stream_id, file);
    let stored = state.backends.store.put_stream(&key, body_stream(body), state.config.max_segment_bytes).await?;
    let event = LiveEvent {
        event_type: LiveEventType::InitSegment,
        stream_id: stream.stream_id.as_str().into(),
        object_key: Some(key.as_str().into()),
        ingested_at_us: Some(now_us()),
        ..Default::default()
    };
    append_live(state, &event).await?;
    Ok((StatusCode::CREATED, Json(json!({ "object_key": key, "size_bytes": stored.size, "sha256": stored.sha256 }))))
}

/// FFmpeg's playlist: emits a chunk event for every pushed segment it names for the first time.
async fn pushed_playlist(
    state: &AppState,
    stream: &LiveStreamDoc,
    bytes: &Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let playlist = m3u8_rs::parse_media_playlist_res(bytes)
        .map_err(|e| ApiError::BadRequest(format!("not an HLS media playlist: {e:?}")))?;
    // One playlist of a stream at a time: FFmpeg sends them in order, and a segment is emitted once.
    let stream_lock = state.pushed.stream_lock(&stream.stream_id);
    let mut next_seq = stream_lock.lock().await;
    if next_seq.is_none() {
        // The first playlist since start-up: continue after what the dataflow accepted.
        let head = state.backends.metadata.get_stream(&stream.stream_id).await?.and_then(|doc| doc.head_sequence);
        *next_seq = Some(head.map_or(0, |head| head + 1));
    }
    let next_seq = next_seq.as_mut().expect("set above");
    let mut emitted = Vec::new();
    for (i, segment) in playlist.segments.iter().enumerate() {
        let seq = playlist.media_sequence + i as u64;
        let name = segment.uri.rsplit('/').next().unwrap_or_default();
        let name = name.split('?').next().unwrap_or_default();
        if seq < *next_seq || validate_file_name(name).is_err() {
            continue; // already emitted
        }
        let incoming = incoming_key(&stream.stream_id, name);
        let Some(stored) = state.pushed.claim(state.backends.store.as_ref(), &incoming).await? else {
            tracing::warn!(stream_id = stream.stream_id, seq, name, "playlist names a segment that never arrived");
            continue;
        };
        let key = keys::live_chunk(&stream.stream_id, seq, &extension(name));
        state.backends.store.rename(&incoming, &key).await?;
        let duration_ms = (segment.duration as f64 * 1000.0).round() as u64;
        let mut event = chunk_event(&stream.stream_id, seq, duration_ms.max(1), &key, &stored, None);
        event.program_date_time = encoder_date(segment).map(Into::into);
        append_live(state, &event).await?;
        *next_seq = seq + 1;
        emitted.push(seq);
    }
    Ok((StatusCode::OK, Json(json!({ "stream_id": stream.stream_id, "chunks_emitted": emitted }))))
}

/// The segment's `EXT-X-PROGRAM-DATE-TIME` (FFmpeg writes one with `-hls_flags
/// program_date_time`). FFmpeg's `+0000` offsets are not RFC 3339, so m3u8-rs leaves those
/// among the unknown tags.
fn encoder_date(segment: &m3u8_rs::MediaSegment) -> Option<String> {
    segment.program_date_time.map(|t| t.to_rfc3339()).or_else(|| {
        let tag = segment.unknown_tags.iter().find(|t| t.tag == "X-PROGRAM-DATE-TIME")?;
        tag.rest.clone().filter(|text| parse_program_date_time(text).is_ok())
    })
}

/// Segments FFmpeg pushed without a sequence number, until its playlist names them.
#[derive(Default)]
pub struct PushedSegments {
    /// `None` while the upload is still being written.
    segments: std::sync::Mutex<HashMap<String, Option<StoredObject>>>,
    /// Per stream: the next sequence number its playlists may emit, behind a lock that
    /// serialises the stream's playlists.
    streams: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<u64>>>>>,
    /// Ingest requests running per stream.
    in_flight: std::sync::Mutex<HashMap<String, usize>>,
}

impl PushedSegments {
    fn uploading(&self, key: &str) {
        self.segments.lock().expect("pushed lock").insert(key.to_string(), None);
    }

    fn finished(&self, key: &str, stored: Option<StoredObject>) {
        let mut segments = self.segments.lock().expect("pushed lock");
        match stored {
            Some(stored) => segments.insert(key.to_string(), Some(stored)),
            None => segments.remove(key),
        };
    }

    fn stream_lock(&self, stream_id: &str) -> Arc<tokio::sync::Mutex<Option<u64>>> {
        self.streams.lock().expect("pushed lock").entry(stream_id.to_string()).or_default().clone()
    }

    /// Waits (up to a bound) until no ingest request of the stream is running: FFmpeg does not
    /// wait for answers, so its last playlist may still be in flight when the stream is ended.
    pub async fn drain_stream(&self, stream_id: &str) {
        poll_until(UPLOAD_WAIT, || {
            (!self.in_flight.lock().expect("in-flight lock").contains_key(stream_id)).then_some(())
        })
        .await;
    }

    /// Drops what is kept for an ended stream.
    pub fn forget_stream(&self, stream_id: &str) {
        self.streams.lock().expect("pushed lock").remove(stream_id);
        let prefix = incoming_key(stream_id, "");
        self.segments.lock().expect("pushed lock").retain(|key, _| !key.starts_with(&prefix));
    }

    /// The stored segment at `key`, once its upload is complete. FFmpeg PUTs the playlist the
    /// moment it has sent a segment's last byte, so the segment's own request may still be
    /// running, or not even have started.
    async fn claim(&self, store: &dyn ObjectStore, key: &str) -> Result<Option<StoredObject>, ApiError> {
        if !self.segments.lock().expect("pushed lock").contains_key(key)
            && let Some(stored) = store.stat_sha256(key).await?
        {
            self.segments.lock().expect("pushed lock").remove(key);
            return Ok(Some(stored)); // pushed before a restart
        }
        let announced_by = tokio::time::Instant::now() + ANNOUNCE_WAIT;
        Ok(poll_until(UPLOAD_WAIT, || {
            let mut segments = self.segments.lock().expect("pushed lock");
            match segments.get(key) {
                Some(None) => None, // still uploading: ask again
                Some(Some(_)) => Some(segments.remove(key).flatten()),
                None if tokio::time::Instant::now() < announced_by => None,
                None => Some(None),
            }
        })
        .await
        .flatten())
    }
}

/// Calls `ready` every few milliseconds until it answers, for at most `wait`; `None` on timeout.
async fn poll_until<T>(wait: std::time::Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(answer) = ready() {
            return Some(answer);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_segment(date_line: &str) -> m3u8_rs::MediaSegment {
        let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000000,\n{date_line}\nout0.ts\n");
        m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap().segments.remove(0)
    }

    #[test]
    fn encoder_dates_are_read_in_ffmpegs_format_and_rfc_3339() {
        let ms = |segment| encoder_date(&segment).map(|d| parse_program_date_time(&d).unwrap());
        // FFmpeg 5.1 writes `+0000`.
        assert_eq!(ms(first_segment("#EXT-X-PROGRAM-DATE-TIME:2026-11-22T11:48:07.945+0000")), Some(1795348087945));
        assert_eq!(ms(first_segment("#EXT-X-PROGRAM-DATE-TIME:2026-11-22T12:48:07.945+01:00")), Some(1795348087945));
        assert_eq!(ms(first_segment("#EXT-X-PROGRAM-DATE-TIME:yesterday")), None);
        assert_eq!(ms(first_segment("#EXT-X-DISCONTINUITY")), None);
    }
}
