//! The transcode stage: one FFmpeg run from the pool for a task's rungs, its progress written
//! to the video's document, the poster made alongside, the outputs moved into the store.

use std::path::Path;
use std::sync::Arc;

use super::context::{VodContext, report_each_percent};
use super::records::{RungDone, TranscodeTask, VodError, VodPlan, VodResult};
use crate::media::probe::MediaError;
use crate::media::transcode::{RungOutput, TranscodeJob, poster, poster_time, storyboard, transcode};
use crate::model::Storyboard;
use crate::model::keys::{self, VOD_POSTER_FILE, VOD_STORYBOARD_FILE, VOD_STORYBOARD_VTT_FILE};

/// Seconds per segment, and between keyframes, in every rung.
pub const SEGMENT_SECONDS: u32 = 2;

pub async fn transcode_stage(ctx: Arc<VodContext>, task: VodResult<TranscodeTask>) -> Vec<VodResult<RungDone>> {
    let task = match task {
        Ok(task) => task,
        Err(failure) => return vec![Err(failure)],
    };
    // A deletion stops the work where it is (FFmpeg is killed); what it stored is swept.
    let outcome = tokio::select! {
        outcome = run(&ctx, &task) => outcome,
        () = ctx.deleted(&task.plan.stream_id) => Err(VodError::Deleted),
    };
    match outcome {
        Ok(outputs) => outputs.into_iter().map(|output| Ok(RungDone { plan: task.plan.clone(), output })).collect(),
        Err(error) => vec![Err(task.plan.failure(&task.rungs, error.to_string()))],
    }
}

async fn run(ctx: &Arc<VodContext>, task: &TranscodeTask) -> Result<Vec<RungOutput>, VodError> {
    let plan = &task.plan;
    let _permit = ctx.pool.acquire().await.map_err(|_| VodError::PoolClosed)?;
    let source = ctx.source_file(&plan.stream_id, &plan.source_key).await.map_err(VodError::Source)?;
    let out_dir = ctx.output_dir(&plan.stream_id);
    let (progress, reporter) = report_progress(ctx.clone(), plan, task.rungs.len());
    let job = TranscodeJob {
        source: &source,
        out_dir: &out_dir,
        info: &plan.info,
        rungs: &task.rungs,
        segment_seconds: SEGMENT_SECONDS,
    };
    let transcoded = transcode(&job, |pct| {
        let _ = progress.send(pct);
    });
    // The task with the top rung also makes the poster, while FFmpeg encodes.
    let poster_made =
        async { if task.rungs[0] == plan.rungs[0] { make_poster(ctx, plan, &source, &out_dir).await } else { Ok(()) } };
    let (outputs, poster_made) = tokio::join!(transcoded, poster_made);
    drop(progress);
    let _ = reporter.await;
    let outputs = outputs?;
    poster_made?;
    for output in &outputs {
        let files = output.segments.iter().map(|s| s.file.as_str()).chain([output.playlist.as_str()]);
        for file in files {
            let (key, path) = (keys::vod_variant(&plan.stream_id, file), out_dir.join(file));
            let stored = ctx.backends.store.put_file(&key, &path).await;
            stored.map_err(|source| VodError::Store { file: file.to_string(), source })?;
        }
        ctx.metrics.vod_rungs_transcoded_total.inc();
    }
    Ok(outputs)
}

/// Progress goes to the document at most once per percent; a task of `rungs` of the plan's
/// rungs counts for its share of the video.
fn report_progress(
    ctx: Arc<VodContext>,
    plan: &VodPlan,
    rungs: usize,
) -> (tokio::sync::watch::Sender<f64>, tokio::task::JoinHandle<()>) {
    let id = plan.stream_id.clone();
    let share = rungs as f64 / plan.rungs.len() as f64;
    report_each_percent(move |last, pct| {
        let (ctx, id) = (ctx.clone(), id.clone());
        async move {
            let delta = (pct - last) * share;
            ctx.update(&id, |doc| doc.set_progress((doc.progress_pct + delta).min(99.0))).await;
        }
    })
}

/// The poster, and the storyboard's sprite sheet and WebVTT track.
async fn make_poster(ctx: &VodContext, plan: &VodPlan, source: &Path, out_dir: &Path) -> Result<(), VodError> {
    let file = out_dir.join(VOD_POSTER_FILE);
    poster(source, &file, poster_time(&plan.info)).await.map_err(VodError::Poster)?;
    let info = &plan.info;
    let board = Storyboard::plan(info.duration_s, info.width, info.height);
    let sprite = out_dir.join(VOD_STORYBOARD_FILE);
    storyboard(source, &sprite, &board).await.map_err(VodError::Poster)?;
    let track = out_dir.join(VOD_STORYBOARD_VTT_FILE);
    let vtt = board.vtt(info.duration_s, VOD_STORYBOARD_FILE);
    tokio::fs::write(&track, vtt)
        .await
        .map_err(|e| VodError::Poster(MediaError::io("writing the storyboard track", e)))?;
    for (name, path) in [(VOD_POSTER_FILE, &file), (VOD_STORYBOARD_FILE, &sprite), (VOD_STORYBOARD_VTT_FILE, &track)] {
        let stored = ctx.backends.store.put_file(&keys::vod_variant(&plan.stream_id, name), path).await;
        stored.map_err(|source| VodError::Store { file: name.into(), source })?;
    }
    Ok(())
}
