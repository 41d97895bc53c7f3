//! Media jobs in the VOD path: a `job_submitted` event runs its FFmpeg in the pool, checks
//! the output with ffprobe and stores it, holding its record until then (a crash runs it again
//! into the same output key); `job_cancelled` stops it, killing FFmpeg.

use std::sync::Arc;

use tokio::sync::watch;

use super::context::{Turn, VodContext, report_each_percent};
use crate::media::jobs::{check_output, check_source, job_args, streams};
use crate::media::transcode::run_reporting;
use crate::model::jobs::{JobCancelled, JobDoc, JobOutput, JobStatus, JobSubmitted};
use crate::model::now_ms;

/// Why a job did not complete.
enum Stopped {
    Cancelled,
    Failed(String),
}

pub async fn run_job(ctx: Arc<VodContext>, event: JobSubmitted, mut turn: Turn) {
    turn.wait().await;
    let id = event.job_id.clone();
    let started = ctx
        .upsert_job(&id, Some(JobDoc::from_event(&event)), |doc| {
            if !doc.status.is_final() {
                doc.status = JobStatus::Processing;
                doc.started_at_ms = Some(now_ms());
                doc.set_progress(0.0);
            }
        })
        .await;
    if started.is_none_or(|doc| doc.status.is_final()) {
        let _cancelled = ctx.end(&id);
        return; // a replay of a finished job
    }
    drop(turn); // a cancellation may now be applied
    let outcome = tokio::select! {
        outcome = execute(&ctx, &event) => outcome,
        () = ctx.deleted_here(&id) => Err(Stopped::Cancelled),
    };
    let cancelled = ctx.end(&id);
    ctx.clean_up(&id).await;
    let finished = ctx
        .upsert_job(&id, None, |doc| {
            let now = now_ms();
            match outcome {
                _ if cancelled => doc.finish(JobStatus::Cancelled, now),
                Ok(output) => {
                    doc.set_progress(100.0);
                    doc.output = Some(output);
                    doc.finish(JobStatus::Completed, now);
                }
                Err(Stopped::Cancelled) => doc.finish(JobStatus::Cancelled, now),
                Err(Stopped::Failed(reason)) => {
                    doc.error = Some(reason);
                    doc.finish(JobStatus::Failed, now);
                }
            }
        })
        .await;
    if let Some(doc) = finished {
        ctx.metrics.media_jobs_total.with_label_values(&[doc.status.as_str()]).inc();
        tracing::info!(job_id = id, ?doc.status, error = doc.error, "media job finished");
    }
}

/// The job's FFmpeg run in the pool, its output checked and stored.
async fn execute(ctx: &Arc<VodContext>, event: &JobSubmitted) -> Result<JobOutput, Stopped> {
    let failed = |what: &str, e: &dyn std::fmt::Display| Stopped::Failed(format!("{what}: {e}"));
    let _permit = ctx.pool.acquire().await.map_err(|e| failed("the FFmpeg pool is closed", &e))?;
    let id = &event.job_id;
    let input = ctx.source_file(id, &event.source_key).await.map_err(|e| failed("reading the source", &e))?;
    let source = streams(&input).await.map_err(|e| failed("reading the source", &e))?;
    check_source(event.operation, &source).map_err(Stopped::Failed)?;
    let out_dir = ctx.output_dir(id);
    tokio::fs::create_dir_all(&out_dir).await.map_err(|e| failed("preparing the output", &e))?;
    let key = event.output_key();
    let output = out_dir.join(key.rsplit('/').next().unwrap_or("output"));
    let args = job_args(event.operation, &event.params, &source, &input, &output);
    let (progress, reporter) = report_progress(ctx.clone(), id.clone());
    let ran = run_reporting(args, source.duration_s, |pct| {
        let _ = progress.send(pct);
    })
    .await
    .map(drop);
    drop(progress);
    let _ = reporter.await;
    ran.map_err(|e| Stopped::Failed(e.to_string()))?;
    let source_bytes = tokio::fs::metadata(&input).await.map(|m| m.len()).unwrap_or(u64::MAX);
    let checked = check_output(event.operation, &event.params, source_bytes, &output, &key).await;
    let checked = checked.map_err(|reason| Stopped::Failed(format!("the output failed its check: {reason}")))?;
    ctx.backends.store.put_file(&key, &output).await.map_err(|e| failed("storing the output", &e))?;
    Ok(checked)
}

/// Progress goes to the job's document at most once per percent.
fn report_progress(ctx: Arc<VodContext>, id: String) -> (watch::Sender<f64>, tokio::task::JoinHandle<()>) {
    report_each_percent(move |_, pct| {
        let (ctx, id) = (ctx.clone(), id.clone());
        async move {
            ctx.upsert_job(&id, None, |doc| {
                if doc.status == JobStatus::Processing {
                    doc.set_progress(pct.min(99.0));
                }
            })
            .await;
        }
    })
}

/// A cancellation stops the job if it runs (whoever runs it records `cancelled`), else marks a
/// queued one `cancelled` now; a finished job stays as it is.
pub async fn cancel_job(ctx: &VodContext, cancelled: JobCancelled, mut turn: Turn) {
    turn.wait().await;
    let id = &cancelled.job_id;
    if !ctx.mark_deleted(id) {
        let _ = ctx.end(id);
        ctx.upsert_job(id, None, |doc| doc.finish(JobStatus::Cancelled, now_ms())).await;
    }
}
