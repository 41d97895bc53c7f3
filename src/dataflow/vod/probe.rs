//! The probe stage: a video becomes `processing`, `ffprobe` reads its source, the ladder is
//! planned, and the video becomes `transcoding` with one transcode task per FFmpeg run. The
//! library's edits and deletions of a video are applied here too, in the order of its events,
//! and so are an ended stream's recording and the media jobs.

use std::future::Future;
use std::sync::Arc;

use super::context::{Turn, VodContext};
use super::records::{TranscodeTask, VodError, VodFailure, VodInput, VodPlan, VodResult};
use super::transcode::storyboard_plan;
use crate::config::TranscodeMode;
use crate::dataflow::retry;
use crate::media::ladder::{Rung, ladder};
use crate::media::probe::probe;
use crate::model::library::{VodDeleted, VodEdit};
use crate::model::{VodDoc, VodEvent, VodStatus, keys, now_ms};
use crate::storage::metadata::MetaWrite;

/// Claims a video and takes its turn as the record arrives (on the worker, so in log order),
/// then does the work off it.
pub fn probe_stage(
    ctx: Arc<VodContext>,
    input: VodInput,
) -> impl Future<Output = Vec<VodResult<TranscodeTask>>> + Send + use<> {
    let (claimed, turn) = match &input {
        VodInput::Upload(event) => (ctx.begin(&event.stream_id), Some(ctx.turn(&event.stream_id))),
        VodInput::Record(event) => (ctx.begin(&event.stream_id), Some(ctx.turn(&event.stream_id))),
        VodInput::Job(job) => (ctx.begin(&job.job_id), Some(ctx.turn(&job.job_id))),
        VodInput::CancelJob(cancelled) => (false, Some(ctx.turn(&cancelled.job_id))),
        VodInput::Edit(edit) => (false, Some(ctx.turn(&edit.stream_id))),
        VodInput::Delete(deleted) => (false, Some(ctx.turn(&deleted.stream_id))),
        VodInput::Dead(_) => (false, None),
    };
    async move {
        match (input, turn) {
            (VodInput::Upload(event), Some(turn)) if claimed => upload(ctx, event, turn).await,
            (VodInput::Record(event), Some(turn)) if claimed => super::record::record(ctx, event, turn).await,
            (VodInput::Job(job), Some(turn)) if claimed => {
                super::jobs::run_job(ctx, job, turn).await;
                Vec::new()
            }
            (VodInput::CancelJob(cancelled), Some(turn)) => {
                super::jobs::cancel_job(&ctx, cancelled, turn).await;
                Vec::new()
            }
            (VodInput::Edit(edit), Some(turn)) => {
                apply_edit(&ctx, edit, turn).await;
                Vec::new()
            }
            (VodInput::Delete(deleted), Some(turn)) => {
                delete(&ctx, deleted, turn).await;
                Vec::new()
            }
            (VodInput::Dead(dead), _) => {
                ctx.metrics.dead_letters_total.with_label_values(&[dead.reason.as_str()]).inc();
                let writes = Arc::new(vec![MetaWrite::DeadLetter(dead)]);
                retry(&ctx.metrics, || ctx.backends.metadata.apply(writes.clone())).await;
                Vec::new()
            }
            _ => Vec::new(), // the same video is already on its way
        }
    }
}

/// An edit changes the document, unless the video is gone or going.
async fn apply_edit(ctx: &VodContext, edit: VodEdit, mut turn: Turn) {
    turn.wait().await;
    ctx.update(&edit.stream_id, |doc| {
        if doc.status != VodStatus::Deleting {
            edit.apply(doc);
        }
    })
    .await;
}

/// A deletion marks the video `deleting`; its objects and document go now, or, while its work
/// is under way, once that stops (the transcodes see the mark and stop early).
async fn delete(ctx: &VodContext, deleted: VodDeleted, mut turn: Turn) {
    turn.wait().await;
    let id = &deleted.stream_id;
    let under_way = ctx.mark_deleted(id);
    ctx.update(id, |doc| doc.set_status(VodStatus::Deleting, now_ms())).await;
    if !under_way {
        ctx.sweep(id).await;
        let _swept = ctx.end(id);
    }
}

/// A replayed event of a finished (or deleted) video changes nothing; an unfinished one is
/// redone.
pub(super) fn settled(doc: &VodDoc) -> bool {
    doc.status.is_final() || doc.status == VodStatus::Deleting
}

/// A video failed before its ladder was planned: nothing else of it follows.
pub(super) fn failure(id: &str, uploaded_at_us: u64, error: VodError) -> Vec<VodResult<TranscodeTask>> {
    let (stream_id, error) = (id.to_string(), error.to_string());
    vec![Err(VodFailure { stream_id, uploaded_at_us, error, rungs: Vec::new(), time: None })]
}

async fn upload(ctx: Arc<VodContext>, event: VodEvent, mut turn: Turn) -> Vec<VodResult<TranscodeTask>> {
    turn.wait().await;
    let id = event.stream_id.clone();
    let started = ctx
        .upsert(&id, Some(VodDoc::from_event(&event)), |doc| {
            if !settled(doc) {
                doc.set_status(VodStatus::Processing, now_ms());
                doc.set_progress(0.0);
            }
        })
        .await;
    match started {
        None => return failure(&id, event.uploaded_at_us, VodError::NoDocument(id.clone())),
        Some(doc) if settled(&doc) => {
            ctx.end_and_sweep_if_deleted(&id).await;
            return Vec::new();
        }
        Some(_) => {}
    }
    drop(turn); // the document is there: later events of the video may go on
    plan_ladder(&ctx, &id, &event.source_key, event.uploaded_at_us).await
}

/// Probes a video's source and plans its ladder: the video becomes `transcoding`, and its
/// transcode tasks go out (or its failure, with the reason).
pub(super) async fn plan_ladder(
    ctx: &VodContext,
    id: &str,
    source_key: &str,
    uploaded_at_us: u64,
) -> Vec<VodResult<TranscodeTask>> {
    let fail = |error: VodError| failure(id, uploaded_at_us, error);
    let source = match ctx.source_file(id, source_key).await {
        Ok(path) => path,
        Err(e) => return fail(VodError::Source(e)),
    };
    let info = match probe(&source).await {
        Ok(info) => info,
        Err(e) => return fail(e.into()),
    };
    if ctx.is_deleted_here(id) {
        return fail(VodError::Deleted);
    }
    let rungs = ladder(&info);
    let _ = tokio::fs::remove_dir_all(ctx.output_dir(id)).await; // an interrupted attempt's files
    let names: Vec<String> = rungs.iter().map(|r| r.name.clone()).collect();
    let has_audio = info.has_audio();
    ctx.update(id, |doc| {
        doc.source = Some(info.clone());
        doc.rungs_planned = names;
        doc.poster_path = Some(keys::vod_poster(id));
        doc.storyboard = Some(storyboard_plan(&info));
        doc.keyframe_aligned = true;
        doc.audio_track_id = has_audio.then(|| format!("audio-{id}"));
        doc.set_status(VodStatus::Transcoding, now_ms());
    })
    .await;
    let plan = VodPlan {
        stream_id: id.to_string(),
        source_key: source_key.to_string(),
        uploaded_at_us,
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
