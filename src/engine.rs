//! Starts and stops a whole engine: backends, timely workers and the API, drained in order on
//! shutdown so that everything acknowledged is processed and committed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use thiserror::Error;
use tokio::net::TcpListener;

use crate::api::server::ConnectionLimits;
use crate::api::{self, AppState, signed::UrlSigner};
use crate::backends::{BackendError, Backends};
use crate::config::Config;
use crate::dataflow::live::sink::LiveSink;
use crate::dataflow::offsets::OffsetCommitter;
use crate::dataflow::vod::VodContext;
use crate::dataflow::{WorkerContext, WorkerError, run_worker};
use crate::ingest::{Ingest, Limits};
use crate::metrics::Metrics;

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
    workers: tokio::task::JoinHandle<WorkerResults>,
    workers_done: tokio::sync::oneshot::Receiver<()>,
    offsets_committed: tokio::task::JoinHandle<()>,
    first_admin_token: Option<String>,
}

/// What timely's workers returned: each worker's own result, or timely's message of a panic.
type WorkerResults = Vec<Result<Result<(), WorkerError>, String>>;

impl Engine {
    /// Opens every backend (one that does not answer fails this, naming it) and starts the
    /// workers; resolves once every worker has restored its streams.
    pub async fn start(config: Config) -> Result<Engine, EngineError> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        let backends = Backends::open(&config).await?;
        let first_admin_token = if config.no_auth {
            tracing::warn!(listen = config.listen, "authentication is off (--no-auth): loopback only");
            None
        } else {
            api::auth::bootstrap(backends.metadata.as_ref(), config.admin_token.as_ref().map(|t| t.0.as_str())).await?
        };
        let signer = UrlSigner::load_or_create(&data_dir, config.signed_url_ttl_secs)
            .map_err(|source| EngineError::SigningKey { path: data_dir.clone(), source })?;
        let metrics = Arc::new(Metrics::new());
        let (notices, _) = tokio::sync::broadcast::channel(4096);
        let (store, metadata) = (backends.store.clone(), backends.metadata.clone());
        let live_sink = LiveSink::start(store, metadata, metrics.clone(), notices.clone());

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
        };
        let workers =
            timely::execute(timely::Config::process(config.workers), move |worker| run_worker(worker, &context))
                .map_err(EngineError::Timely)?;
        let (workers_done_tx, mut workers_done) = tokio::sync::oneshot::channel::<()>();
        let workers = tokio::task::spawn_blocking(move || {
            let results = workers.join();
            let _ = workers_done_tx.send(());
            results
        });
        for _ in 0..config.workers {
            tokio::select! {
                _ = workers_ready.recv() => {}
                _ = &mut workers_done => {
                    // A worker failed to start: report why.
                    stop.now();
                    let results = workers.await.map_err(|e| EngineError::Timely(e.to_string()))?;
                    backends.log.close();
                    check(results)?;
                    return Err(EngineError::Timely("a worker stopped while starting".into()));
                }
            }
        }
        let limits = Limits {
            max_segment_bytes: config.max_segment_bytes,
            max_upload_bytes: config.max_upload_bytes,
            default_target_duration_s: config.target_duration,
            default_dvr_window: config.dvr_window,
            max_sequence_jump: config.max_sequence_jump,
        };
        let ingest = Arc::new(Ingest::new(backends.clone(), metrics.clone(), limits, notices));
        let auth = Arc::new(api::auth::Auth::new(!config.no_auth, backends.metadata.clone()));
        let state = AppState { config: Arc::new(config), backends, ingest, signer: Arc::new(signer), auth, metrics };
        Ok(Engine { state, stop, workers, workers_done, offsets_committed, first_admin_token })
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
        let Engine { state, stop, workers, workers_done, offsets_committed, .. } = self;
        let backends = state.backends.clone();
        let stopping = stop.0.clone();
        let limits = ConnectionLimits::from_config(&state.config);
        api::server::serve(listener, api::router(state), limits, async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutting down: draining in-flight work"),
                _ = workers_done => tracing::error!("timely workers stopped; shutting down"),
            }
            stopping.store(true, Ordering::SeqCst);
        })
        .await;
        stop.now();
        let results = workers.await.map_err(|e| EngineError::Timely(e.to_string()))?;
        let _ = offsets_committed.await; // the workers' last offsets, after a final sync
        backends.log.close();
        check(results)?;
        tracing::info!("drained; bye");
        Ok(())
    }
}

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
