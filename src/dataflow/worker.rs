//! What each timely worker runs: restore its streams, build the dataflow, step it, and commit
//! log offsets as the durable frontier passes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::Probe;
use timely::worker::Worker;

use super::live::decode::DecodeEvents;
use super::live::durable_sink::DurableSink;
use super::live::stream::LiveStream;
use super::live::verify_checksums::VerifyChecksums;
use super::live::window::LiveWindowOp;
use super::operators::log_source::{LogSourceConfig, PendingCommits, log_source};
use super::vod::{VodContext, vod_pipeline};
use crate::backends::Backends;
use crate::dataflow::live::sink::LiveSink;
use crate::dataflow::offsets::OffsetCommitter;
use crate::log::LogError;
use crate::metrics::Metrics;
use crate::model::{StreamStatus, Topic, stream_hash};
use crate::storage::metadata::{MetadataError, MetadataStore};

/// How often a worker hands on the offsets its sinks have made durable.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("restoring live streams: {0}")]
    Restore(#[source] MetadataError),
    #[error("reading the event log: {0}")]
    Log(#[from] LogError),
}

/// Everything a worker shares with the rest of the engine.
#[derive(Clone)]
pub struct WorkerContext {
    pub backends: Backends,
    pub sink: Arc<LiveSink>,
    pub metrics: Arc<Metrics>,
    pub runtime: tokio::runtime::Handle,
    pub clock: Instant,
    pub stop: Arc<AtomicBool>,
    /// Told once this worker has restored its streams and built its dataflow: the API opens
    /// only when every worker has, so no request races a restore.
    pub ready: tokio::sync::mpsc::UnboundedSender<usize>,
    pub vod: Arc<VodContext>,
    pub offsets: OffsetCommitter,
}

/// Runs one worker until the engine stops and the dataflow has drained.
pub fn run_worker(worker: &mut Worker, ctx: &WorkerContext) -> Result<(), WorkerError> {
    let (index, peers) = (worker.index(), worker.peers());
    let restored = ctx
        .runtime
        .block_on(restore_streams(ctx.backends.metadata.as_ref(), index, peers))
        .map_err(WorkerError::Restore)?;
    tracing::debug!(worker = index, streams = restored.len(), "worker starting");

    let (live_source, live) = TopicInput::open(ctx, Topic::LiveChunks, index, peers, LIVE_MAX_DURABLE_LAG_MS)?;
    let (metrics, sink, runtime) = (ctx.metrics.clone(), ctx.sink.clone(), ctx.runtime.clone());
    let store = ctx.backends.store.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        log_source(scope, live_source)
            .decode_events(Topic::LiveChunks)
            .verify_checksums(store, metrics.clone(), runtime.clone())
            .live_window(restored, metrics)
            .durable_sink(sink, runtime)
            .probe_with(&live.durable);
    });
    // Transcodes take minutes: the VOD source never pauses for the durable frontier.
    let (vod_source, vod) = TopicInput::open(ctx, Topic::VodChunks, index, peers, u64::MAX)?;
    let (jobs, runtime) = (ctx.vod.clone(), ctx.runtime.clone());
    worker.dataflow::<u64, _, _>(|scope| {
        vod_pipeline(log_source(scope, vod_source), jobs, runtime).probe_with(&vod.durable);
    });
    let _ = ctx.ready.send(index);
    let mut last_commit = Instant::now();
    while worker.step_or_park(Some(Duration::from_millis(100))) {
        // Offsets are only a restart point: committing a few times a second keeps file I/O
        // off the worker's hot path.
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            live.commit_durable(&ctx.offsets);
            vod.commit_durable(&ctx.offsets);
            last_commit = Instant::now();
        }
    }
    live.commit_durable(&ctx.offsets);
    vod.commit_durable(&ctx.offsets);
    Ok(())
}

/// Stop reading live events while the durable frontier lags this far (ms) behind.
const LIVE_MAX_DURABLE_LAG_MS: u64 = 10_000;

/// One topic's partitions of this worker: what to commit once the sinks are durable.
struct TopicInput {
    topic: Topic,
    durable: ProbeHandle<u64>,
    pending: PendingCommits,
}

impl TopicInput {
    /// The source settings for this worker's partitions of `topic`, and their committer.
    fn open(
        ctx: &WorkerContext,
        topic: Topic,
        index: usize,
        peers: usize,
        lag_ms: u64,
    ) -> Result<(LogSourceConfig, TopicInput), WorkerError> {
        let log = &ctx.backends.log;
        let partitions: Vec<u32> = (0..log.partitions(topic)).filter(|p| *p as usize % peers == index).collect();
        let reader = log.reader(topic, &partitions)?;
        let (durable, pending) = (ProbeHandle::new(), PendingCommits::default());
        let source = LogSourceConfig {
            reader,
            clock: ctx.clock,
            stop: ctx.stop.clone(),
            durable: durable.clone(),
            pending: pending.clone(),
            max_durable_lag_ms: lag_ms,
        };
        Ok((source, TopicInput { topic, durable, pending }))
    }

    /// Hands the offsets of every time the sinks are durable past to the committer.
    fn commit_durable(&self, committer: &OffsetCommitter) {
        let mut ready: BTreeMap<u32, u64> = BTreeMap::new();
        let mut pending = self.pending.borrow_mut();
        while let Some(entry) = pending.first_entry() {
            if self.durable.less_equal(entry.key()) {
                break;
            }
            ready.extend(entry.remove());
        }
        committer.send(ready.into_iter().map(|(partition, offset)| (self.topic, partition, offset)).collect());
    }
}

/// Rebuilds the state of the streams this worker owns from their documents.
pub async fn restore_streams(
    metadata: &dyn MetadataStore,
    index: usize,
    peers: usize,
) -> Result<HashMap<String, LiveStream>, MetadataError> {
    let mut streams = HashMap::new();
    for doc in metadata.list_streams().await? {
        if stream_hash(&doc.stream_id) as usize % peers != index {
            continue;
        }
        let chunks = match (doc.status, doc.dvr_window_start, doc.head_sequence) {
            (StreamStatus::Live, Some(start), Some(head)) => {
                metadata.chunks(&doc.stream_id, start, (head - start + 1) as usize).await?
            }
            _ => Vec::new(),
        };
        streams.insert(doc.stream_id.clone(), LiveStream::restore(doc, chunks));
    }
    Ok(streams)
}
