//! The transcode stage: one FFmpeg run from the pool for a task's rungs, its progress written
//! to the video's document, the poster made alongside and the storyboard after, the outputs
//! published into the store as FFmpeg writes them.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::Notify;

use super::context::{VodContext, report_each_percent};
use super::publish::Publisher;
use super::records::{RungDone, TranscodeTask, VodError, VodPlan, VodResult};
use crate::media::ladder::Rung;
use crate::media::probe::MediaError;
use crate::media::transcode::{
    RungOutput, TranscodeJob, encode, poster, poster_time, prepare, rung_playlist, storyboard,
};
use crate::model::keys::{self, VOD_POSTER_FILE, VOD_STORYBOARD_FILE, VOD_STORYBOARD_VTT_FILE};
use crate::model::{MediaInfo, Storyboard};

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
    prepare(&job).await?;
    let mut publisher = Publisher::new(ctx, plan, &task.rungs, &out_dir).await;
    // The segments go into the store as FFmpeg finishes them.
    let ffmpeg_done = Notify::new();
    let encoding = async {
        let done = encode(&job, |pct| {
            let _ = progress.send(pct);
        })
        .await;
        ffmpeg_done.notify_one();
        done.map(drop).map_err(VodError::from)
    };
    // A failed write stops FFmpeg; a failed FFmpeg stops the publishing.
    let encoded = async { tokio::try_join!(encoding, publisher.follow(&ffmpeg_done)).map(drop) };
    // The task with the top rung also makes the poster, while FFmpeg encodes.
    let poster_made =
        async { if task.rungs[0] == plan.rungs[0] { make_poster(ctx, plan, &source, &out_dir).await } else { Ok(()) } };
    let (encoded, poster_made) = tokio::join!(encoded, poster_made);
    drop(progress);
    let _ = reporter.await;
    encoded?;
    poster_made?;
    // The task with the smallest rung makes the storyboard from it, before its last segments
    // move into the store.
    if let Some(smallest) = plan.rungs.last().filter(|smallest| task.rungs.contains(smallest)) {
        make_storyboard(ctx, plan, &out_dir, smallest).await?;
    }
    let outputs = publisher.finish().await?;
    ctx.metrics.vod_rungs_transcoded_total.inc_by(outputs.len() as u64);
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

/// The storyboard planned for a video of `info`: its tiles fall on the renditions' keyframes.
pub fn storyboard_plan(info: &MediaInfo) -> Storyboard {
    Storyboard::plan(info.duration_s, info.width, info.height, SEGMENT_SECONDS)
}

/// The poster: one frame of the source, made at once.
async fn make_poster(ctx: &VodContext, plan: &VodPlan, source: &Path, out_dir: &Path) -> Result<(), VodError> {
    let file = out_dir.join(VOD_POSTER_FILE);
    poster(source, &file, poster_time(&plan.info)).await.map_err(VodError::Poster)?;
    store(ctx, plan, VOD_POSTER_FILE, &file).await
}

/// The storyboard's sprite sheet, from the keyframes of the finished `smallest` rung, and its
/// WebVTT track.
async fn make_storyboard(ctx: &VodContext, plan: &VodPlan, out_dir: &Path, smallest: &Rung) -> Result<(), VodError> {
    let board = storyboard_plan(&plan.info);
    let sprite = out_dir.join(VOD_STORYBOARD_FILE);
    let rendition = out_dir.join(rung_playlist(smallest));
    storyboard(&rendition, &sprite, &board, SEGMENT_SECONDS).await.map_err(VodError::Poster)?;
    let track = out_dir.join(VOD_STORYBOARD_VTT_FILE);
    let vtt = board.vtt(plan.info.duration_s, VOD_STORYBOARD_FILE);
    tokio::fs::write(&track, vtt)
        .await
        .map_err(|e| VodError::Poster(MediaError::io("writing the storyboard track", e)))?;
    store(ctx, plan, VOD_STORYBOARD_FILE, &sprite).await?;
    store(ctx, plan, VOD_STORYBOARD_VTT_FILE, &track).await
}

/// Moves a made file into the store as the video's `name`.
async fn store(ctx: &VodContext, plan: &VodPlan, name: &str, file: &Path) -> Result<(), VodError> {
    let stored = ctx.backends.store.put_file(&keys::vod_variant(&plan.stream_id, name), file).await;
    stored.map_err(|source| VodError::Store { file: name.into(), source })
}
