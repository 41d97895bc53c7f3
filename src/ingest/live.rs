//! Live streams: start and end them, and turn their segments into chunk events, whether they
//! come with their sequence number in headers, bare from FFmpeg's HLS muxer (their numbers in
//! the playlist it PUTs after each), or stored by a producer that posts the chunk event.

use std::time::Duration;

use bytes::Bytes;

use super::pushed::RequestInFlight;
use super::{Ingest, IngestError, MAX_TITLE_CHARS, check_length};
use crate::model::auth::{self, PlaybackPolicy};
use crate::model::checks::{
    DVR_WINDOW_SIZE, LIVE_ID_PREFIX, MAX_SEQUENCE_NUMBER, TARGET_DURATION_S, check_duration, check_range,
    validate_file_name, validate_sha256_hex, validate_stream_id,
};
use crate::model::live::RecordOptions;
use crate::model::pushed_playlist::{PushedSegment, pushed_segments};
use crate::model::{
    ChunkStatus, LiveCommand, LiveEvent, LiveEventType, LiveStreamDoc, StreamStatus, Topic, keys, now_ms, now_us,
    program_date_time_at,
};
use crate::storage::metadata::MetaWrite;
use crate::storage::object::{ByteStream, StoreError, StoredObject};

/// How long a control call waits for the dataflow to write the stream's playlist.
const PLAYLIST_WAIT: Duration = Duration::from_secs(10);

/// How often a process of a cluster reads a stream's document while it waits for a playlist
/// another process writes.
const DOCUMENT_POLL: Duration = Duration::from_millis(25);

/// The settings a stream starts with; `None` takes the engine's default.
#[derive(Debug, Default)]
pub struct StartStream {
    pub title: Option<String>,
    pub target_duration: Option<u64>,
    pub dvr_window_size: Option<u64>,
    pub playback_policy: Option<PlaybackPolicy>,
    pub record: RecordOptions,
}

/// A stream started, and its key: shown this once, only its hash is kept.
#[derive(Debug)]
pub struct StartedStream {
    pub doc: LiveStreamDoc,
    pub stream_key: String,
}

/// What an encoder says of a segment besides its bytes.
#[derive(Debug)]
pub struct SegmentInfo {
    pub sequence_number: u64,
    pub duration_ms: u64,
    /// The encoder's SHA-256 of the bytes, checked by the dataflow.
    pub checksum: Option<String>,
    /// The encoder's wall-clock start of the segment (RFC 3339).
    pub program_date_time: Option<String>,
}

/// A segment stored and its chunk event in the log.
#[derive(Debug)]
pub struct ChunkAccepted {
    pub stream_id: String,
    pub sequence_number: u64,
    pub duration_ms: u64,
    pub object_key: String,
    pub stored: StoredObject,
    /// Whether the stored bytes hash to the encoder's checksum (true without one).
    pub checksum_matches: bool,
}

impl Ingest {
    /// Starts a stream: its document, then its `stream_started` event; waits (bounded) until
    /// the dataflow has written its first playlist.
    pub async fn start_stream(&self, request: StartStream) -> Result<StartedStream, IngestError> {
        let title = request.title.unwrap_or_default();
        check_length("title", &title, MAX_TITLE_CHARS)?;
        let target = request.target_duration.unwrap_or(self.limits.default_target_duration_s);
        check_range("target_duration", target, &TARGET_DURATION_S)?;
        let window = request.dvr_window_size.unwrap_or(self.limits.default_dvr_window);
        check_range("dvr_window_size", window, &DVR_WINDOW_SIZE)?;
        let stream_id = format!("{LIVE_ID_PREFIX}{}", hex::encode(rand::random::<[u8; 6]>()));
        let at_us = now_us();
        let mut doc = LiveStreamDoc::new(&stream_id, &title, target, window, at_us / 1000);
        doc.max_sequence_jump = self.limits.max_sequence_jump;
        let key = auth::new_stream_key();
        doc.stream_key_sha256 = Some(key.sha256.clone());
        doc.playback_policy = request.playback_policy.unwrap_or_default();
        doc.record = request.record;
        self.backends.metadata.apply(std::sync::Arc::new(vec![MetaWrite::Stream(doc.clone())])).await?;
        self.live.insert(&doc);
        let event = LiveEvent {
            event_type: LiveEventType::StreamStarted,
            stream_id: stream_id.as_str().into(),
            title: Some(title.into()),
            target_duration_s: Some(target),
            dvr_window_size: Some(window),
            max_sequence_jump: Some(doc.max_sequence_jump),
            stream_key_sha256: Some(key.sha256.as_str().into()),
            playback_policy: Some(doc.playback_policy),
            record: Some(doc.record),
            ingested_at_us: Some(at_us),
            ..Default::default()
        };
        if !self.append_and_wait(&event, false).await? {
            tracing::warn!(
                stream_id,
                "stream started, but its first playlist was not written within {PLAYLIST_WAIT:?}"
            );
        }
        tracing::info!(stream_id, "live stream started");
        Ok(StartedStream { doc, stream_key: key.text })
    }

    /// Gives a live stream a new key; the old one stops working at once here (and in other
    /// processes once the dataflow has written the stream's document). Returns the new key.
    pub async fn rotate_stream_key(&self, stream: &LiveStreamDoc) -> Result<String, IngestError> {
        let key = auth::new_stream_key();
        let event = LiveEvent {
            event_type: LiveEventType::StreamKeyRotated,
            stream_id: stream.stream_id.as_str().into(),
            stream_key_sha256: Some(key.sha256.as_str().into()),
            ingested_at_us: Some(now_us()),
            ..Default::default()
        };
        self.append(Topic::LiveChunks, &stream.stream_id, &event).await?;
        let mut rotated = stream.clone();
        rotated.stream_key_sha256 = Some(key.sha256);
        self.live.insert(&rotated);
        tracing::info!(stream_id = stream.stream_id, "stream key rotated");
        Ok(key.text)
    }

    /// Ends a stream once its requests in flight are done: its playlist gets `EXT-X-ENDLIST`.
    pub async fn end_stream(&self, stream_id: &str) -> Result<LiveStreamDoc, IngestError> {
        self.live_stream(stream_id).await?;
        self.live.remove(stream_id); // from now on, lookups read the document
        self.pushed.drain_stream(stream_id).await;
        let event = LiveEvent {
            event_type: LiveEventType::StreamEnded,
            stream_id: stream_id.into(),
            ingested_at_us: Some(now_us()),
            ..Default::default()
        };
        if !self.append_and_wait(&event, true).await? {
            return Err(IngestError::EndNotWritten(stream_id.to_string(), PLAYLIST_WAIT));
        }
        self.pushed.forget_stream(stream_id);
        tracing::info!(stream_id, "live stream ended");
        self.stream(stream_id).await
    }

    /// A stream's document: 400 for a malformed id, 404 for an unknown one.
    pub async fn stream(&self, stream_id: &str) -> Result<LiveStreamDoc, IngestError> {
        validate_stream_id(stream_id)?;
        self.backends.metadata.get_stream(stream_id).await?.ok_or_else(|| IngestError::NoStream(stream_id.into()))
    }

    /// Like [`Ingest::stream`], refused unless the stream takes chunks; cached while live.
    pub async fn live_stream(&self, stream_id: &str) -> Result<LiveStreamDoc, IngestError> {
        if let Some(doc) = self.live.get(stream_id) {
            return Ok(doc);
        }
        let doc = self.stream(stream_id).await?;
        if doc.status != StreamStatus::Live {
            return Err(IngestError::Ended(stream_id.to_string()));
        }
        self.live.insert(&doc);
        Ok(doc)
    }

    /// Counts a request of the stream while the guard lives; a bare segment's upload is
    /// announced at once, so that the playlist FFmpeg PUTs right after it finds it even when
    /// that playlist's request is handled first.
    pub fn request(&self, stream_id: &str, bare_segment: Option<&str>) -> RequestInFlight {
        self.pushed.request(stream_id, bare_segment.map(|file| keys::live_incoming(stream_id, file)))
    }

    /// A segment whose sequence number and duration came with it.
    pub async fn put_segment(
        &self,
        stream: &LiveStreamDoc,
        segment: SegmentInfo,
        ext: &str,
        body: ByteStream,
    ) -> Result<ChunkAccepted, IngestError> {
        let (stream_id, seq) = (stream.stream_id.as_str(), segment.sequence_number);
        check_duration(segment.duration_ms, stream.target_duration_s)?;
        if let Some(sum) = &segment.checksum {
            validate_sha256_hex(sum)?;
        }
        if let Some(text) = &segment.program_date_time {
            program_date_time_at(text, Some(now_ms()))?;
        }
        self.check_sequence(stream, seq).await?;
        let key = keys::live_chunk(stream_id, seq, ext);
        let existing = self.backends.metadata.get_chunk(stream_id, seq).await?;
        let processed = existing.as_ref().is_some_and(|chunk| chunk.status == ChunkStatus::Live);
        if processed && existing.is_some_and(|chunk| chunk.chunk.object_key != key) {
            return Err(IngestError::AlreadyAccepted { stream_id: stream_id.to_string(), seq });
        }
        // Write-once: other bytes at the key are refused (409), the same bytes are a retry.
        let stored = self.backends.store.put_stream(&key, body, self.limits.max_segment_bytes).await?;
        // A retry of a segment already in the playlist (its answer was lost, to a crash say)
        // is taken again with nothing new logged.
        if !processed {
            let mut event =
                chunk_event(stream_id, seq, segment.duration_ms, &key, &stored, segment.checksum.as_deref());
            event.program_date_time = segment.program_date_time.as_deref().map(Into::into);
            self.append(Topic::LiveChunks, stream_id, &event).await?;
        }
        let checksum_matches = segment.checksum.as_ref().is_none_or(|c| c.eq_ignore_ascii_case(&stored.sha256));
        Ok(ChunkAccepted {
            stream_id: stream_id.to_string(),
            sequence_number: seq,
            duration_ms: segment.duration_ms,
            object_key: key,
            stored,
            checksum_matches,
        })
    }

    /// An fMP4 initialization section (`init.mp4`); returns its key.
    pub async fn put_init(
        &self,
        stream: &LiveStreamDoc,
        file: &str,
        body: ByteStream,
    ) -> Result<(String, StoredObject), IngestError> {
        validate_file_name(file)?;
        let key = keys::live_file(&stream.stream_id, file);
        let stored = self.backends.store.put_stream(&key, body, self.limits.max_segment_bytes).await?;
        let event = LiveEvent {
            event_type: LiveEventType::InitSegment,
            stream_id: stream.stream_id.as_str().into(),
            object_key: Some(key.as_str().into()),
            ingested_at_us: Some(now_us()),
            ..Default::default()
        };
        self.append(Topic::LiveChunks, &stream.stream_id, &event).await?;
        Ok((key, stored))
    }

    /// A segment FFmpeg pushed bare (announced by [`Ingest::request`]): stored under
    /// `incoming/` until the playlist that names it; returns its key.
    pub async fn put_pushed_segment(
        &self,
        stream: &LiveStreamDoc,
        file: &str,
        body: ByteStream,
    ) -> Result<(String, StoredObject), IngestError> {
        let key = keys::live_incoming(&stream.stream_id, file);
        let stored = self.backends.store.put_stream(&key, body, self.limits.max_segment_bytes).await;
        self.pushed.finished(&key, stored.as_ref().ok().cloned());
        Ok((key, stored?))
    }

    /// FFmpeg's playlist: a chunk event for every pushed segment it names for the first time;
    /// returns their sequence numbers. A playlist with a number out of range changes nothing.
    pub async fn pushed_playlist(&self, stream: &LiveStreamDoc, bytes: &Bytes) -> Result<Vec<u64>, IngestError> {
        let segments = pushed_segments(stream, bytes)?;
        let stream_id = stream.stream_id.as_str();
        // One playlist of a stream at a time: FFmpeg sends them in order, and a segment is emitted once.
        let cursor = self.pushed.cursor(stream_id);
        let mut next_seq = cursor.lock().await;
        if next_seq.is_none() {
            // The first playlist since start-up: continue after what the dataflow accepted.
            let head = self.backends.metadata.get_stream(stream_id).await?.and_then(|doc| doc.head_sequence);
            *next_seq = Some(head.map_or(0, |head| head + 1));
        }
        let next_seq = next_seq.as_mut().expect("set above");
        let new: Vec<_> = segments.into_iter().filter(|s| s.seq >= *next_seq).collect();
        if new.len() > MAX_NEW_PUSHED_SEGMENTS {
            return Err(IngestError::OutOfRange(format!(
                "the playlist names {} new segments; at most {MAX_NEW_PUSHED_SEGMENTS} are taken at once",
                new.len()
            )));
        }
        if let Some(last) = new.last() {
            self.check_sequence(stream, last.seq).await?;
        }
        let deadline = tokio::time::Instant::now() + super::pushed::UPLOAD_WAIT;
        let mut emitted = Vec::new();
        for PushedSegment { seq, name, duration_ms, date } in new {
            let incoming = keys::live_incoming(stream_id, &name);
            let Some(stored) = self.pushed.claim(self.backends.store.as_ref(), &incoming, deadline).await? else {
                tracing::warn!(stream_id, seq, name, "playlist names a segment that never arrived");
                continue;
            };
            let key = keys::live_chunk(stream_id, seq, &extension(&name));
            match self.backends.store.rename(&incoming, &key).await {
                Err(StoreError::Exists(_)) => {
                    // Another upload holds the number (a numbered PUT of it): that one stays.
                    tracing::warn!(stream_id, seq, name, "pushed segment dropped: its number is stored already");
                    self.backends.store.delete(&incoming).await?;
                    *next_seq = seq + 1;
                    continue;
                }
                moved => moved?,
            }
            let mut event = chunk_event(stream_id, seq, duration_ms, &key, &stored, None);
            event.program_date_time = date.map(Into::into);
            self.append(Topic::LiveChunks, stream_id, &event).await?;
            *next_seq = seq + 1;
            emitted.push(seq);
        }
        Ok(emitted)
    }

    /// A chunk event whose bytes a producer stored itself: segflow hashes the stored object,
    /// and the dataflow compares that with the claimed checksum.
    pub async fn producer_chunk(
        &self,
        stream: &LiveStreamDoc,
        mut event: LiveEvent<'_>,
    ) -> Result<ChunkAccepted, IngestError> {
        let stream_id = stream.stream_id.as_str();
        if !event.stream_id.is_empty() && event.stream_id != stream_id {
            return Err(IngestError::OtherStream(event.stream_id.into_owned()));
        }
        if event.event_type != LiveEventType::Chunk {
            return Err(IngestError::NotAChunk);
        }
        event.stream_id = stream_id.into();
        event.stored_sha256 = None;
        event.ingested_at_us = Some(now_us());
        let LiveCommand::Chunk(chunk) = event.validate().map_err(IngestError::InvalidChunk)? else {
            unreachable!("a chunk event validates into a chunk command")
        };
        check_duration(chunk.duration_ms, stream.target_duration_s)?;
        self.check_sequence(stream, chunk.sequence_number).await?;
        let stored = self
            .backends
            .store
            .stat_sha256(&chunk.object_key)
            .await?
            .ok_or_else(|| IngestError::NoObject(chunk.object_key.clone()))?;
        event.object_key = Some(chunk.object_key.as_str().into());
        event.size_bytes = Some(event.size_bytes.unwrap_or(stored.size));
        event.stored_sha256 = Some(stored.sha256.as_str().into());
        self.append(Topic::LiveChunks, stream_id, &event).await?;
        Ok(ChunkAccepted {
            stream_id: stream_id.to_string(),
            sequence_number: chunk.sequence_number,
            duration_ms: chunk.duration_ms,
            checksum_matches: chunk.checksum.as_ref().is_none_or(|c| *c == stored.sha256),
            object_key: chunk.object_key,
            stored,
        })
    }

    /// Refused when sequence number `last` (the highest of a request) is beyond the largest
    /// one, or further ahead of the stream's head than it allows (the dataflow checks again:
    /// this answers early).
    async fn check_sequence(&self, stream: &LiveStreamDoc, last: u64) -> Result<(), IngestError> {
        check_range("sequence_number", last, &(0..=MAX_SEQUENCE_NUMBER))?;
        let within = |head: Option<u64>| head.is_none_or(|head| last <= head.saturating_add(stream.max_sequence_jump));
        // The cached head is behind the real one: reading the document is needed only past it.
        if within(stream.head_sequence) && stream.head_sequence.is_some() {
            return Ok(());
        }
        let Some(fresh) = self.backends.metadata.get_stream(&stream.stream_id).await? else {
            return Err(IngestError::NoStream(stream.stream_id.clone()));
        };
        if let Some(head) = fresh.head_sequence {
            self.live.advance_head(&fresh.stream_id, head);
        }
        if within(fresh.head_sequence) {
            return Ok(());
        }
        let head = fresh.head_sequence.unwrap_or_default();
        Err(IngestError::OutOfRange(format!(
            "sequence number {last} is more than {} ahead of the stream's head {head}",
            stream.max_sequence_jump
        )))
    }

    /// Appends a live event and waits until the dataflow has written the stream's playlist
    /// accordingly (`ended` as asked). False on timeout: the event is in the log anyway.
    async fn append_and_wait(&self, event: &LiveEvent<'_>, ended: bool) -> Result<bool, IngestError> {
        let mut written = self.notices.subscribe();
        self.append(Topic::LiveChunks, &event.stream_id, event).await?;
        let written_here = async {
            loop {
                match written.recv().await {
                    Ok(n) if n.stream_id == event.stream_id && n.ended == ended => return true,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return false,
                }
            }
        };
        // On a cluster the stream's worker may be in another process: its document says.
        let written_anywhere = async {
            if !self.clustered {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(DOCUMENT_POLL).await;
                if let Ok(Some(doc)) = self.backends.metadata.get_stream(&event.stream_id).await {
                    let is_ended = doc.status == StreamStatus::Ended;
                    if doc.manifest_updated_at_ms.is_some() && is_ended == ended {
                        return true;
                    }
                }
            }
        };
        let wait = async {
            tokio::select! {
                written = written_here => written,
                written = written_anywhere => written,
            }
        };
        Ok(tokio::time::timeout(PLAYLIST_WAIT, wait).await.unwrap_or(false))
    }
}

/// Segments of one pushed playlist taken at most, beyond those already emitted (FFmpeg sends
/// one new segment per playlist).
const MAX_NEW_PUSHED_SEGMENTS: usize = 1000;

/// A file name's extension, in lower case.
pub fn extension(file: &str) -> String {
    file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

/// The chunk event of a stored segment.
fn chunk_event<'a>(
    stream_id: &'a str,
    seq: u64,
    duration_ms: u64,
    key: &'a str,
    stored: &'a StoredObject,
    claimed: Option<&'a str>,
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
