//! A live stream's recording: once its end is durable, every stored chunk becomes a VOD
//! playlist and the stream a video of the library, under the stream's own id. Played as it
//! was recorded, or (`record.transcode`) also encoded into the ladder from the stored chunks,
//! through the same plan as an upload.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::context::{Turn, VodContext};
use super::finish::variant_doc;
use super::probe::{failure, plan_ladder, settled};
use super::records::{TranscodeTask, VodError, VodResult};
use crate::dataflow::retry;
use crate::media::live_playlist::{WindowSegment, render_recording};
use crate::media::probe::probe;
use crate::media::transcode::{RungOutput, video_codec_string};
use crate::media::vod_playlist::master_playlist;
use crate::model::{
    ChunkStatus, LiveStreamDoc, MediaInfo, RecordingEvent, StreamStatus, VariantDoc, VodDoc, VodKind, VodStatus, keys,
    now_ms,
};
use crate::storage::object::concatenate;

/// Chunk documents read at once.
const CHUNK_PAGE: usize = 4096;

/// Chunks a recording lists at most: four days of 2-second chunks.
pub const MAX_RECORDED_CHUNKS: usize = 200_000;

/// The stored chunks of a stream, in order, with their total size.
struct Recorded {
    segments: BTreeMap<u64, WindowSegment>,
    bytes: u64,
    /// The first chunk's key, probed for what the recording is.
    first_key: Option<String>,
}

pub async fn record(ctx: Arc<VodContext>, event: RecordingEvent, mut turn: Turn) -> Vec<VodResult<TranscodeTask>> {
    turn.wait().await;
    let id = event.stream_id.clone();
    let ended_at_us = event.ended_at_ms.saturating_mul(1000);
    let metadata = &ctx.backends.metadata;
    let stream = retry(&ctx.metrics, || metadata.get_stream(&id)).await;
    let existing = retry(&ctx.metrics, || metadata.get_vod(&id)).await;
    let skip = match (&stream, &existing) {
        (None, _) => Some("no such stream"),
        (Some(stream), _) if stream.status != StreamStatus::Ended => Some("the stream has not ended"),
        (_, Some(doc)) if doc.kind != VodKind::Recording => Some("a video of another kind has its id"),
        (_, Some(doc)) if settled(doc) => Some("recorded already"),
        _ => None,
    };
    let (Some(stream), None) = (stream, skip) else {
        tracing::info!(stream_id = id, reason = skip, "no recording made");
        ctx.end_and_sweep_if_deleted(&id).await;
        return Vec::new();
    };
    let recorded = recorded_chunks(&ctx, &stream).await;
    let playlist_key = keys::recording_playlist(&id);
    let init_uri = stream.init_object_key.as_deref().map(|k| keys::live_playback_path(&id, k));
    let body = Bytes::from(render_recording(stream.target_duration_s, &recorded.segments, init_uri).into_bytes());
    retry(&ctx.metrics, || ctx.backends.store.put_bytes(&playlist_key, body.clone())).await;
    let mut doc = VodDoc::new(&id, &stream.title, "", &playlist_key, stream.created_at_ms);
    doc.kind = VodKind::Recording;
    doc.size_bytes = recorded.bytes;
    doc.playback_policy = stream.playback_policy;
    // The live thumbnail, if one was made, is the recording's poster.
    let poster = keys::vod_poster(&id);
    if retry(&ctx.metrics, || ctx.backends.store.exists(&poster)).await {
        doc.poster_path = Some(poster);
    }
    doc.set_status(VodStatus::Processing, now_ms());
    ctx.upsert(&id, Some(doc), |_| {}).await;
    drop(turn);
    tracing::info!(stream_id = id, chunks = recorded.segments.len(), "recording published");
    if stream.record.transcode {
        return plan_ladder(&ctx, &id, &playlist_key, ended_at_us).await;
    }
    let init_key = stream.init_object_key.as_deref();
    let (info, variant) = match publish_as_recorded(&ctx, &id, init_key, &recorded).await {
        Ok(published) => published,
        Err(error) => return failure(&id, ended_at_us, error), // the finish stage records it
    };
    ctx.update(&id, |doc| {
        let now = now_ms();
        doc.processing_latency_ms = Some(now.saturating_sub(event.ended_at_ms) as f64);
        doc.source = Some(info);
        doc.variants_generated = vec![variant.name.clone()];
        doc.variants = vec![variant];
        doc.manifest_path = Some(keys::vod_manifest(&id));
        doc.set_progress(100.0);
        doc.playable = true;
        doc.playable_latency_ms = doc.processing_latency_ms;
        doc.set_status(VodStatus::Ready, now);
    })
    .await;
    ctx.metrics.vod_videos_total.with_label_values(&["ready"]).inc();
    ctx.end_and_sweep_if_deleted(&id).await;
    Vec::new()
}

/// Every chunk of the stream that was stored and checked: accepted ones, and late ones (too
/// late for the live window, not for the recording).
async fn recorded_chunks(ctx: &VodContext, stream: &LiveStreamDoc) -> Recorded {
    let id = &stream.stream_id;
    let mut recorded = Recorded { segments: BTreeMap::new(), bytes: 0, first_key: None };
    let mut from = 0;
    loop {
        let page = retry(&ctx.metrics, || ctx.backends.metadata.chunks(id, from, CHUNK_PAGE)).await;
        let full = page.len() == CHUNK_PAGE;
        for doc in page {
            from = doc.chunk.sequence_number.saturating_add(1);
            if !matches!(doc.status, ChunkStatus::Live | ChunkStatus::Late) {
                continue;
            }
            if recorded.segments.len() >= MAX_RECORDED_CHUNKS {
                tracing::warn!(stream_id = id, "recording cut at {MAX_RECORDED_CHUNKS} chunks");
                return recorded;
            }
            let chunk = &doc.chunk;
            recorded.bytes = recorded.bytes.saturating_add(chunk.size_bytes);
            recorded.first_key.get_or_insert_with(|| chunk.object_key.clone());
            let uri = keys::live_playback_path(id, &chunk.object_key).to_string();
            let segment =
                WindowSegment { duration_ms: chunk.duration_ms, uri, program_date_time_ms: doc.program_date_time_ms };
            recorded.segments.insert(chunk.sequence_number, segment);
        }
        if !full {
            return recorded;
        }
    }
}

/// A recording played as recorded: a master playlist of one variant, the recording itself,
/// described from its first chunk (and its init section).
async fn publish_as_recorded(
    ctx: &VodContext,
    id: &str,
    init: Option<&str>,
    recorded: &Recorded,
) -> Result<(MediaInfo, VariantDoc), VodError> {
    let first = recorded.first_key.as_deref().ok_or(VodError::NothingRecorded)?;
    let sample = ctx.output_dir(id).join("first_chunk");
    let described = describe(ctx, init, first, &sample).await;
    ctx.clean_up(id).await;
    let (mut info, codecs) = described?;
    let total_ms: u64 = recorded.segments.values().map(|s| s.duration_ms).sum();
    info.duration_s = total_ms as f64 / 1000.0;
    let average = recorded.bytes.saturating_mul(8000).checked_div(total_ms).unwrap_or(0);
    let output = RungOutput {
        rung: crate::media::ladder::Rung {
            name: format!("{}p", info.width.min(info.height)),
            width: info.width,
            height: info.height,
            video_kbps: 0,
            max_kbps: 0,
            audio_kbps: 0,
        },
        playlist: keys::RECORDING_PLAYLIST_FILE.to_string(),
        segments: Vec::new(),
        // Chunk sizes vary little: the peak is estimated as 1.5x the average.
        bandwidth: average.saturating_mul(3) / 2,
        average_bandwidth: average,
        codecs,
        frame_rate: info.frame_rate,
    };
    let master = Bytes::from(master_playlist(std::slice::from_ref(&output)).into_bytes());
    let key = keys::vod_manifest(id);
    ctx.backends.store.put_bytes(&key, master).await.map_err(VodError::MasterPlaylist)?;
    let mut variant = variant_doc(&output, keys::recording_playlist(id));
    variant.segments = recorded.segments.len();
    Ok((info, variant))
}

/// What the first chunk holds, and its `CODECS`: read from the chunk behind the init section.
async fn describe(
    ctx: &VodContext,
    init: Option<&str>,
    first: &str,
    sample: &Path,
) -> Result<(MediaInfo, String), VodError> {
    let parts: Vec<String> = init.into_iter().chain([first]).map(String::from).collect();
    concatenate(ctx.backends.store.as_ref(), &parts, sample).await.map_err(VodError::Source)?;
    let info = probe(sample).await?;
    let mut codecs = video_codec_string(sample).await?;
    if info.audio_codec.as_deref() == Some("aac") {
        codecs.push_str(",mp4a.40.2");
    }
    Ok((info, codecs))
}
