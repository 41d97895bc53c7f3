//! The probe stage: a video becomes `processing`, `ffprobe` reads its source, the ladder is
//! planned, and the video becomes `transcoding` with one transcode task per FFmpeg run.

use std::sync::Arc;

use super::context::VodContext;
use super::records::{TranscodeTask, VodError, VodFailure, VodInput, VodPlan, VodResult};
use crate::config::TranscodeMode;
use crate::dataflow::retry;
use crate::media::ladder::{Rung, ladder};
use crate::media::probe::probe;
use crate::model::{VodDoc, VodStatus, keys, now_ms};
use crate::storage::metadata::MetaWrite;

pub async fn probe_stage(ctx: Arc<VodContext>, input: VodInput) -> Vec<VodResult<TranscodeTask>> {
    let event = match input {
        VodInput::Dead(dead) => {
            ctx.metrics.dead_letters_total.with_label_values(&[dead.reason.as_str()]).inc();
            let writes = Arc::new(vec![MetaWrite::DeadLetter(dead)]);
            retry(&ctx.metrics, || ctx.backends.metadata.apply(writes.clone())).await;
            return Vec::new();
        }
        VodInput::Upload(event) => event,
    };
    let id = event.stream_id.clone();
    if !ctx.begin(&id) {
        return Vec::new(); // the same video is already on its way
    }
    // Nothing of the video is planned yet, so nothing else of it follows a failure.
    let fail = |error: VodError| {
        let (stream_id, uploaded_at_us, error) = (id.clone(), event.uploaded_at_us, error.to_string());
        vec![Err(VodFailure { stream_id, uploaded_at_us, error, rungs: Vec::new(), time: None })]
    };
    // A replayed event of a finished video changes nothing; an unfinished one is redone.
    let started = ctx
        .upsert(&id, Some(VodDoc::from_event(&event)), |doc| {
            if !doc.status.is_final() {
                doc.set_status(VodStatus::Processing, now_ms());
                doc.set_progress(0.0);
            }
        })
        .await;
    match started {
        None => return fail(VodError::NoDocument(id.clone())),
        Some(doc) if doc.status.is_final() => {
            ctx.end(&id);
            return Vec::new();
        }
        Some(_) => {}
    }
    let source = match ctx.source_file(&id, &event.source_key).await {
        Ok(path) => path,
        Err(e) => return fail(VodError::Source(e)),
    };
    let info = match probe(&source).await {
        Ok(info) => info,
        Err(e) => return fail(e.into()),
    };
    let rungs = ladder(&info);
    let _ = tokio::fs::remove_dir_all(ctx.output_dir(&id)).await; // an interrupted attempt's files
    let names: Vec<String> = rungs.iter().map(|r| r.name.clone()).collect();
    let has_audio = info.has_audio();
    ctx.update(&id, |doc| {
        doc.source = Some(info.clone());
        doc.rungs_planned = names;
        doc.poster_path = Some(keys::vod_poster(&id));
        doc.keyframe_aligned = true;
        doc.audio_track_id = has_audio.then(|| format!("audio-{id}"));
        doc.set_status(VodStatus::Transcoding, now_ms());
    })
    .await;
    let plan = VodPlan {
        stream_id: id.clone(),
        source_key: event.source_key.clone(),
        uploaded_at_us: event.uploaded_at_us,
        info,
        rungs,
        time: 0, // stamped as it leaves the stage
    };
    // The fan-out: one task for the whole ladder, or one per rung (spread over workers).
    let groups: Vec<Vec<Rung>> = match ctx.mode {
        TranscodeMode::Split => vec![plan.rungs.clone()],
        TranscodeMode::PerRung => plan.rungs.iter().map(|r| vec![r.clone()]).collect(),
    };
    groups.into_iter().map(|rungs| Ok(TranscodeTask { plan: plan.clone(), rungs })).collect()
}
