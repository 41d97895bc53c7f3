//! What each timely worker runs: restore its streams, build the live and VOD dataflows, step
//! them, and hand on the log offsets the durable frontier passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::operators::Probe;
use timely::worker::Worker;

use super::cluster::{Cluster, Heartbeat};
use super::live::sink::LiveSink;
use super::live::{live_pipeline, restore_streams};
use super::offsets::{OffsetCommitter, TopicOffsets};
use super::operators::log_source::LogSourceConfig;
use super::vod::{VodContext, vod_pipeline};
use crate::backends::Backends;
use crate::log::LogError;
use crate::metrics::Metrics;
use crate::model::Topic;
use crate::storage::metadata::MetadataError;

/// How often a worker hands the offsets its sinks have made durable to the committer: they
/// are only a restart point, and a few times a second keeps that work off the hot path.
const OFFSET_HANDOFF_INTERVAL: Duration = Duration::from_millis(200);

/// Stop reading live events while the durable frontier lags this far (ms) behind.
const LIVE_MAX_DURABLE_LAG_MS: u64 = 10_000;

/// Why a worker could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("restoring live streams: {0}")]
    Restore(#[source] MetadataError),
    #[error("reading the event log: {0}")]
    Log(#[from] LogError),
    #[error("a worker panicked: {0}")]
    Panicked(String),
}

/// Everything a worker shares with the rest of the engine.
#[derive(Clone)]
pub struct WorkerContext {
    pub backends: Backends,
    pub live_sink: Arc<LiveSink>,
    pub vod: Arc<VodContext>,
    pub metrics: Arc<Metrics>,
    pub runtime: tokio::runtime::Handle,
    /// Time zero of the dataflows' timestamps (milliseconds since).
    pub clock: Instant,
    /// Set at shutdown: read what is left in the log, then finish.
    pub stop: Arc<AtomicBool>,
    /// Told once this worker has restored its streams and built its dataflows: the API opens
    /// only when every worker has, so no request races a restore.
    pub ready: tokio::sync::mpsc::UnboundedSender<usize>,
    pub offsets: OffsetCommitter,
    pub cluster: Arc<Cluster>,
}

/// Runs one worker until the engine stops and the dataflows have drained.
pub fn run_worker(worker: &mut Worker, ctx: &WorkerContext) -> Result<(), WorkerError> {
    let (index, peers) = (worker.index(), worker.peers());
    let restored = ctx
        .runtime
        .block_on(restore_streams(ctx.backends.metadata.as_ref(), index, peers))
        .map_err(WorkerError::Restore)?;
    tracing::debug!(worker = index, streams = restored.len(), "worker starting");

    let live = TopicOffsets::new(Topic::LiveChunks);
    let source = log_source_config(ctx, &live, index, peers, LIVE_MAX_DURABLE_LAG_MS)?;
    let (store, sink) = (ctx.backends.store.clone(), ctx.live_sink.clone());
    let (metrics, runtime) = (ctx.metrics.clone(), ctx.runtime.clone());
    worker.dataflow::<u64, _, _>(|scope| {
        live_pipeline(scope, source, restored, store, sink, metrics, runtime).probe_with(&live.durable_frontier);
    });
    // Transcodes take minutes: the VOD source never pauses for the durable frontier.
    let vod = TopicOffsets::new(Topic::VodChunks);
    let source = log_source_config(ctx, &vod, index, peers, u64::MAX)?;
    let (context, runtime) = (ctx.vod.clone(), ctx.runtime.clone());
    worker.dataflow::<u64, _, _>(|scope| {
        vod_pipeline(scope, source, context, runtime).probe_with(&vod.durable_frontier);
    });
    // Built on every worker or none: the cluster's size is the same everywhere.
    let mut heartbeat = ctx.cluster.is_cluster().then(|| Heartbeat::build(worker, ctx.cluster.clone()));
    let _ = ctx.ready.send(index);
    let mut last_handoff = Instant::now();
    while worker.step_or_park(Some(Duration::from_millis(100))) {
        if let Some(heartbeat) = &mut heartbeat {
            heartbeat.tick(ctx.stop.load(Ordering::SeqCst));
        }
        if last_handoff.elapsed() >= OFFSET_HANDOFF_INTERVAL {
            live.commit_durable(&ctx.offsets);
            vod.commit_durable(&ctx.offsets);
            last_handoff = Instant::now();
        }
    }
    live.commit_durable(&ctx.offsets);
    vod.commit_durable(&ctx.offsets);
    Ok(())
}

/// The log source of this worker's partitions of `offsets.topic`.
fn log_source_config(
    ctx: &WorkerContext,
    offsets: &TopicOffsets,
    index: usize,
    peers: usize,
    max_durable_lag_ms: u64,
) -> Result<LogSourceConfig, WorkerError> {
    let log = &ctx.backends.log;
    let topic = offsets.topic;
    let partitions: Vec<u32> = (0..log.partitions(topic)).filter(|p| *p as usize % peers == index).collect();
    Ok(LogSourceConfig {
        reader: log.reader(topic, &partitions)?,
        clock: ctx.clock,
        stop: ctx.stop.clone(),
        durable_frontier: offsets.durable_frontier.clone(),
        pending: offsets.pending.clone(),
        max_durable_lag_ms,
    })
}
