//! Starts and stops a whole engine: backends, timely workers and the API, drained in order on
//! shutdown so that everything acknowledged is processed and committed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;

use crate::api::server::ConnectionLimits;
use crate::api::{self, AppState, signed::UrlSigner};
use crate::backends::{BackendError, Backends};
use crate::config::Config;
use crate::dataflow::cluster::{self, Cluster};
use crate::dataflow::live::sink::LiveSink;
use crate::dataflow::live::thumbnails::Thumbnails;
use crate::dataflow::offsets::OffsetCommitter;
use crate::dataflow::vod::VodContext;
use crate::dataflow::{WorkerContext, WorkerError, run_worker};
use crate::ingest::{Ingest, Limits};
use crate::log::Rewound;
use crate::metrics::Metrics;
use crate::model::Topic;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("signing key in {path}: {source}")]
    SigningKey {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Auth(#[from] api::auth::AdoptError),
    /// timely could not start its workers, or one of them panicked (timely's own message).
    #[error("timely workers: {0}")]
    Timely(String),
}

/// Runs segflow until `shutdown` resolves: [`Engine::start`], then [`Engine::serve`].
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    Engine::start(config).await?.serve(listener, shutdown).await
}

/// An engine whose backends answered and whose workers have restored their streams: ready
/// to serve. Dropped without [`Engine::serve`], it stops its workers.
pub struct Engine {
    state: AppState,
    stop: StopWorkersOnDrop,
    workers: Workers,
    offsets_committed: tokio::task::JoinHandle<()>,
    thumbnails: Arc<Thumbnails>,
    first_admin_token: Option<String>,
}

/// What timely's workers returned: each worker's own result, or timely's message of a panic.
type WorkerResults = Vec<Result<Result<(), WorkerError>, String>>;

/// A worker that has returned: its index, and why if it failed or panicked.
type WorkerExit = (usize, Option<String>);

/// How long the other workers may take to stop once one has failed. They may never: their
/// dataflows wait for the failed worker's progress.
const PEERS_STOP_WAIT: Duration = Duration::from_secs(5);

/// The running workers: each one's exit as it happens, and all their results at the end
/// (joined on a thread of their own, which the runtime's shutdown never waits for).
struct Workers {
    exits: tokio::sync::mpsc::UnboundedReceiver<WorkerExit>,
    results: tokio::sync::oneshot::Receiver<WorkerResults>,
}

/// Every worker's result; after a failure, `None` if they did not all stop in time.
async fn join(
    results: tokio::sync::oneshot::Receiver<WorkerResults>,
    after_failure: bool,
) -> Result<Option<WorkerResults>, EngineError> {
    let results = async { results.await.map_err(|_| EngineError::Timely("the workers' join failed".into())) };
    if !after_failure {
        return results.await.map(Some);
    }
    match tokio::time::timeout(PEERS_STOP_WAIT, results).await {
        Ok(results) => results.map(Some),
        Err(_) => {
            tracing::error!("the other workers did not stop within {PEERS_STOP_WAIT:?}; leaving them");
            Ok(None)
        }
    }
}

/// Why a worker stopped before the engine told it to (`when`, e.g. " while starting"), with
/// the peer whose connection broke if that is the cause.
fn early_exit((index, reason): WorkerExit, when: &str) -> String {
    let reason = format!("worker {index} stopped{when}: {}", reason.as_deref().unwrap_or("it returned early"));
    match cluster::lost_connection() {
        Some(lost) => format!("{lost} ({reason})"),
        None => reason,
    }
}

/// Starts timely's workers on a thread of its own: on a cluster, timely connects to every peer
/// first, retrying for ever, so the wait is bounded here and the thread left behind on timeout.
async fn execute<F>(cluster: &Cluster, connect_timeout: Duration, work: F) -> Result<WorkerGuards, EngineError>
where
    F: Fn(&mut timely::worker::Worker) -> Result<(), WorkerError> + Send + Sync + 'static,
{
    let config = cluster.timely_config();
    let (started, guards) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("segflow-start-workers".into())
        .spawn(move || {
            let _ = started.send(timely::execute(config, work));
        })
        .map_err(|e| EngineError::Timely(e.to_string()))?;
    match tokio::time::timeout(connect_timeout, guards).await {
        Ok(Ok(guards)) => guards.map_err(EngineError::Timely),
        Ok(Err(_)) => Err(EngineError::Timely("timely's start panicked".into())),
        Err(_) => Err(EngineError::Timely(format!(
            "not every peer of the cluster connected within {connect_timeout:?}: is each of {} running with \
             --processes {} and its own --process?",
            cluster.addresses.join(", "),
            cluster.processes
        ))),
    }
}

type WorkerGuards = timely::communication::initialize::WorkerGuards<Result<(), WorkerError>>;

/// Resolves with the reason once this process cannot go on without a lost peer.
async fn peer_lost(cluster: &Cluster) -> String {
    if !cluster.is_cluster() {
        std::future::pending::<()>().await;
    }
    loop {
        tokio::time::sleep(cluster::BEAT_INTERVAL).await;
        if let Some(lost) = cluster.lost() {
            return lost;
        }
    }
}

impl Engine {
    /// Opens every backend (one that does not answer fails this, naming it) and starts the
    /// workers; resolves once every worker has restored its streams, and once the live log is
    /// replayed when the metadata is being rebuilt from it. A worker that fails fails this.
    pub async fn start(config: Config) -> Result<Engine, EngineError> {
        config.validate()?;
        let cluster = Arc::new(Cluster::new(&config)?);
        if cluster.is_cluster() {
            cluster::watch_network_threads(cluster.addresses.clone());
        }
        let data_dir = config.data_dir.clone();
        let (backends, rebuilding) = Backends::open(&config).await?;
        let first_admin_token = if config.no_auth {
            tracing::warn!(listen = config.listen, "authentication is off (--no-auth): loopback only");
            None
        } else if cluster.process != 0 {
            None // the first process makes or adopts the admin token in the shared store
        } else {
            api::auth::bootstrap(backends.metadata.as_ref(), config.admin_token.as_ref().map(|t| t.0.as_str())).await?
        };
        let configured_key = config.signing_key.as_ref().map(|key| key.0.as_str());
        let signer = UrlSigner::from_config(configured_key, &data_dir, config.signed_url_ttl_secs)
            .map_err(|source| EngineError::SigningKey { path: data_dir.clone(), source })?;
        let metrics = Arc::new(Metrics::new());
        let (notices, _) = tokio::sync::broadcast::channel(4096);
        let (store, metadata) = (backends.store.clone(), backends.metadata.clone());
        let thumbnails = Thumbnails::start(store.clone(), metadata.clone(), data_dir.join("work"));
        let live_sink = LiveSink::start(
            backends.log.clone(),
            store,
            metadata,
            metrics.clone(),
            notices.clone(),
            thumbnails.clone(),
        );

        let stop = StopWorkersOnDrop(Arc::new(AtomicBool::new(false)));
        let (ready, mut workers_ready) = tokio::sync::mpsc::unbounded_channel();
        let (offsets, offsets_committed) =
            OffsetCommitter::start(backends.log.clone(), backends.metadata.clone(), metrics.clone());
        let context = WorkerContext {
            backends: backends.clone(),
            live_sink,
            vod: VodContext::new(
                backends.clone(),
                metrics.clone(),
                config.transcode_jobs,
                config.transcode_mode,
                data_dir.join("work"),
            ),
            metrics: metrics.clone(),
            runtime: tokio::runtime::Handle::current(),
            clock: Instant::now(),
            stop: stop.0.clone(),
            ready,
            offsets,
            cluster: cluster.clone(),
        };
        let (exited, exits) = tokio::sync::mpsc::unbounded_channel();
        let connect_timeout = Duration::from_secs(config.peer_connect_timeout_secs);
        let guards = execute(&cluster, connect_timeout, move |worker| {
            let index = worker.index();
            // A panic becomes the worker's error, and the engine hears of it at once: the
            // other workers may never stop, so it cannot wait for them all.
            let result = crate::panics::caught(|| run_worker(worker, &context)).unwrap_or_else(|panic| {
                tracing::error!(worker = index, panic, "a timely worker panicked");
                Err(WorkerError::Panicked(panic))
            });
            let _ = exited.send((index, result.as_ref().err().map(ToString::to_string)));
            result
        })
        .await?;
        let (joined, results) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("segflow-join-workers".into())
            .spawn(move || {
                // timely's join panics when a network thread did (a peer lost): that is a result too.
                let results = crate::panics::caught(|| guards.join()).unwrap_or_else(|panic| vec![Err(panic)]);
                let _ = joined.send(results);
            })
            .map_err(|e| EngineError::Timely(e.to_string()))?;
        let mut workers = Workers { exits, results };
        let started = async {
            for _ in 0..config.workers {
                if workers_ready.recv().await.is_none() {
                    std::future::pending::<()>().await; // the workers stopped: their exits say why
                }
            }
            if let Some(rewound) = &rebuilding {
                replayed(&backends, rewound).await;
            }
        };
        tokio::select! {
            _ = started => {}
            exit = workers.exits.recv() => {
                // A worker failed to start: report why.
                stop.now();
                let reason = exit.map_or_else(|| "the workers stopped".into(), |e| early_exit(e, " while starting"));
                let results = join(workers.results, true).await?;
                backends.log.close();
                if let Some(results) = results {
                    check(results)?;
                }
                return Err(EngineError::Timely(reason));
            }
        }
        let limits = Limits {
            max_segment_bytes: config.max_segment_bytes,
            max_upload_bytes: config.max_upload_bytes,
            default_target_duration_s: config.target_duration,
            default_dvr_window: config.dvr_window,
            max_sequence_jump: config.max_sequence_jump,
        };
        let ingest = Arc::new(Ingest::new(backends.clone(), metrics.clone(), limits, notices, cluster.is_cluster()));
        let token_ttl = if cluster.is_cluster() { Duration::ZERO } else { api::auth::TOKEN_CACHE_TTL };
        let auth = Arc::new(api::auth::Auth::new(!config.no_auth, backends.metadata.clone(), token_ttl));
        let config = Arc::new(config);
        let state = AppState { config, backends, ingest, signer: Arc::new(signer), auth, metrics, cluster };
        Ok(Engine { state, stop, workers, offsets_committed, thumbnails, first_admin_token })
    }

    /// The admin token this start made because none existed: to be shown once, now.
    pub fn first_admin_token(&self) -> Option<&str> {
        self.first_admin_token.as_deref()
    }

    /// Serves the API on `listener` until `shutdown` resolves, then drains: the API stops
    /// taking requests, the workers read what is left in the log, the sinks write it, offsets
    /// are committed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), EngineError> {
        let Engine { state, stop, workers: Workers { mut exits, results }, offsets_committed, thumbnails, .. } = self;
        let backends = state.backends.clone();
        let stopping = stop.0.clone();
        let (failed, mut failure) = tokio::sync::oneshot::channel();
        let limits = ConnectionLimits::from_config(&state.config);
        let metrics = state.metrics.clone();
        let cluster = state.cluster.clone();
        api::server::serve(listener, api::router(state), limits, metrics, async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutting down: draining in-flight work"),
                peer = cluster.peer_stopping() => {
                    tracing::info!(peer, "a peer process is stopping, and a timely cluster stops together: draining");
                }
                reason = peer_lost(&cluster) => {
                    tracing::error!(reason, "a peer process is lost; timely cannot go on without it: exiting");
                    let _ = failed.send(reason);
                }
                Some(exit) = exits.recv() => {
                    let reason = early_exit(exit, "");
                    tracing::error!(reason, "a timely worker stopped; shutting down");
                    let _ = failed.send(reason);
                }
            }
            stopping.store(true, Ordering::SeqCst);
        })
        .await;
        stop.now();
        let failure = failure.try_recv().ok();
        let results = join(results, failure.is_some()).await;
        if let Ok(Some(_)) = results {
            let _ = offsets_committed.await; // the workers' last offsets, after a final sync
        }
        thumbnails.stop().await;
        backends.log.close();
        if let Some(reason) = failure {
            return Err(EngineError::Timely(reason)); // the first failure says more than what followed
        }
        if let Some(results) = results? {
            check(results)?;
        }
        tracing::info!("drained; bye");
        Ok(())
    }
}

/// Resolves once the dataflow has processed the whole `live-chunks` log as it was when
/// rewound, rebuilding the metadata from it: the API opens with every stream back. (Videos are
/// transcoded again meanwhile, and after.) Should the committed offsets stop moving for
/// [`REPLAY_STALL`] before the end (a record a partition cannot get past), the API opens anyway
/// and the replay goes on.
async fn replayed(backends: &Backends, rewound: &Rewound) {
    let (log, topic) = (&backends.log, Topic::LiveChunks);
    let ends: Vec<(u32, u64)> = rewound
        .spans
        .iter()
        .filter(|((t, _), (first, end))| *t == topic && end > first)
        .map(|((_, partition), (_, end))| (*partition, *end))
        .collect();
    tracing::info!(partitions = ends.len(), event_log = log.kind(), "replaying the live event log");
    let behind = || -> Vec<(u32, u64, u64)> {
        let committed = |p: u32| log.committed(topic, p).unwrap_or(0);
        ends.iter().map(|(p, end)| (*p, committed(*p), *end)).filter(|(_, at, end)| at < end).collect()
    };
    let (mut last, mut moved) = (behind(), Instant::now());
    while !last.is_empty() {
        tokio::time::sleep(REPLAY_POLL).await;
        let now = behind();
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() > REPLAY_STALL {
            tracing::warn!(
                behind = ?last,
                "the replay has not moved for {REPLAY_STALL:?}: opening the API before it is over (it goes on); \
                 (partition, committed, end) listed"
            );
            return;
        }
    }
    let streams = backends.metadata.list_streams().await.map_or(0, |streams| streams.len());
    tracing::warn!(streams, "the metadata is rebuilt from the event log: every live stream is back");
}

/// How often the rebuild's progress (the committed offsets) is looked at.
const REPLAY_POLL: Duration = Duration::from_millis(100);
/// How long the rebuild's committed offsets may stand still before the API opens anyway.
const REPLAY_STALL: Duration = Duration::from_secs(60);

/// The first error among the workers' results.
fn check(results: WorkerResults) -> Result<(), EngineError> {
    for result in results {
        result.map_err(EngineError::Timely)??;
    }
    Ok(())
}

/// Tells the workers to drain and stop however `run` ends, by an error or a panic included,
/// so their threads never outlive it (and a runtime shutting down never waits for them forever).
struct StopWorkersOnDrop(Arc<AtomicBool>);

impl StopWorkersOnDrop {
    fn now(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Drop for StopWorkersOnDrop {
    fn drop(&mut self) {
        self.now();
    }
}
