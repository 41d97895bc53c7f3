//! The VOD path of the dataflow: an upload event is probed, fanned out into transcode tasks
//! for its ladder, transcoded by the FFmpeg pool off the workers, joined back per video, and
//! finished with a master playlist and the status `ready` (or `failed`, with the reason).
//!
//! ```text
//! log_source (vod-chunks) -> VodInput::decode
//!   -> async_stage VodProbe      (exchange by video)        ffprobe, ladder -> transcode tasks; edits, deletions;
//!                                                           an ended stream's recording; media jobs
//!   -> async_stage VodTranscode  (exchange by video, rung)  FFmpeg pool (and the poster) -> one result per rung
//!   -> join_rungs                (exchange by video)        differential: every rung done, or a failure
//!   -> async_stage VodFinish     (exchange by video)        master playlist, status ready | failed
//!   -> durable frontier -> offset commits
//! ```
//!
//! Each stage holds its record's capability until its job is done, so a `vod-chunks` offset
//! is committed only once the video is `ready` or `failed`: a restart redoes unfinished work.
//!
//! The library's edits and deletions of a video travel the same topic and meet its upload in
//! the probe stage, in log order: an edit changes the document; a deletion removes every
//! object and the document, at once or, while the video is being processed, once its work has
//! stopped (its transcodes watch for it), and its offset too waits until that is done.

mod context;
mod finish;
mod jobs;
mod join_rungs;
mod probe;
mod publish;
mod record;
pub mod records;
mod transcode;

use std::sync::Arc;

use timely::dataflow::operators::vec::Map;
use timely::dataflow::{Scope, StreamVec};

pub use context::VodContext;
use join_rungs::{JoinRungs, StampPlanTime};
use records::{Joined, RungDone, VodInput, VodResult, by_task, by_video};
pub use transcode::SEGMENT_SECONDS;

use crate::dataflow::operators::async_stage::AsyncStage;
use crate::dataflow::operators::log_source::{LogSourceConfig, log_source};

/// Builds the VOD stages on this worker's partitions of `vod-chunks`; the output only carries
/// progress.
pub fn vod_pipeline<'s>(
    scope: Scope<'s, u64>,
    source: LogSourceConfig,
    ctx: Arc<VodContext>,
    runtime: tokio::runtime::Handle,
) -> StreamVec<'s, u64, ()> {
    let (probing, transcoding, finishing) = (ctx.clone(), ctx.clone(), ctx);
    log_source(scope, source)
        .map(VodInput::decode)
        .async_stage("VodProbe", VodInput::route, runtime.clone(), move |input| {
            probe::probe_stage(probing.clone(), input)
        })
        .stamp_plan_time()
        .async_stage("VodTranscode", by_task, runtime.clone(), move |task| {
            transcode::transcode_stage(transcoding.clone(), task)
        })
        .join_rungs(|done: &VodResult<RungDone>| by_video(done, |d| &d.plan.stream_id))
        .async_stage(
            "VodFinish",
            |joined: &VodResult<Joined>| by_video(joined, |(plan, _)| &plan.stream_id),
            runtime,
            move |joined| finish::finish_stage(finishing.clone(), joined),
        )
}
