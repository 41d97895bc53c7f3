//! Starts and stops a whole engine: backends, timely workers and the API, drained in order on
//! shutdown so that everything acknowledged is processed and committed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use thiserror::Error;
use tokio::net::TcpListener;

use crate::api::{self, AppState, signed::UrlSigner};
use crate::config::Config;
use crate::dataflow::live::sink::LiveSink;
use crate::dataflow::offsets::OffsetCommitter;
use crate::dataflow::vod::VodJobs;
use crate::dataflow::{WorkerContext, run_worker};
use crate::log::embedded::EmbeddedLog;
use crate::log::kafka::{KafkaLog, KafkaSettings};
use crate::log::{EventLog, LogError};
use crate::metrics::Metrics;
use crate::storage::metadata::embedded::EmbeddedMetadata;
use crate::storage::metadata::mongodb::MongoMetadata;
use crate::storage::metadata::{MetadataError, MetadataStore};
use crate::storage::object::local::LocalStore;
use crate::storage::object::s3::{S3Settings, S3Store};
use crate::storage::object::{ObjectStore, StoreError};

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("timely workers: {0}")]
    Workers(String),
}

/// Runs segflow until `shutdown` resolves, then drains: the API stops taking requests, the
/// workers read what is left in the log, the sinks write it, offsets are committed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    config.validate()?;
    let data_dir = config.data_dir.clone();
    let dir_err = |source| EngineError::DataDir { path: data_dir.display().to_string(), source };
    std::fs::create_dir_all(&data_dir).map_err(dir_err)?;
    let log = open_log(&config).await?;
    let store = open_store(&config).await?;
    let metadata = open_metadata(&config).await?;
    let signer = Arc::new(UrlSigner::load_or_create(&data_dir, config.signed_url_ttl_secs).map_err(dir_err)?);
    let metrics = Arc::new(Metrics::new());
    let (notices, _) = tokio::sync::broadcast::channel(4096);
    let sink = LiveSink::start(store.clone(), metadata.clone(), metrics.clone(), notices.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = StopWorkersOnDrop(stop.clone());
    let (ready, mut workers_ready) = tokio::sync::mpsc::unbounded_channel();
    let (offsets, offsets_committed) = OffsetCommitter::start(log.clone(), metadata.clone(), metrics.clone());
    let context = WorkerContext {
        log: log.clone(),
        sink,
        metrics: metrics.clone(),
        runtime: tokio::runtime::Handle::current(),
        clock: Instant::now(),
        stop: stop.clone(),
        ready,
        offsets,
        vod: VodJobs::new(
            store.clone(),
            metadata.clone(),
            metrics.clone(),
            config.transcode_jobs,
            config.transcode_mode,
            data_dir.join("work"),
        ),
    };
    let workers = timely::execute(timely::Config::process(config.workers), move |worker| run_worker(worker, &context))
        .map_err(EngineError::Workers)?;
    let (workers_done_tx, mut workers_done) = tokio::sync::oneshot::channel::<()>();
    let joined = tokio::task::spawn_blocking(move || {
        let results = workers.join();
        let _ = workers_done_tx.send(());
        results
    });
    // Requests wait in the listen backlog until every worker has restored its streams.
    let mut started = true;
    for _ in 0..config.workers {
        tokio::select! {
            _ = workers_ready.recv() => {}
            _ = &mut workers_done => {
                started = false; // a worker failed: its error is reported below
                break;
            }
        }
    }

    let state = AppState {
        config: Arc::new(config),
        log: log.clone(),
        store,
        metadata,
        signer,
        metrics,
        notices,
        pushed: Arc::default(),
        live_streams: Arc::default(),
    };
    let stopping = stop.clone();
    let served = if started {
        let serve = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutting down: draining in-flight work"),
                _ = workers_done => tracing::error!("timely workers stopped; shutting down"),
            }
            stopping.store(true, Ordering::SeqCst);
        });
        serve.await.map_err(EngineError::Http)
    } else {
        Ok(())
    };
    stop.store(true, Ordering::SeqCst);
    let results = joined.await.map_err(|e| EngineError::Workers(e.to_string()))?;
    let _ = offsets_committed.await; // the workers' last offsets, after a final sync
    log.close();
    served?;
    for result in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(EngineError::Workers(e)),
            Err(e) => return Err(EngineError::Workers(e)),
        }
    }
    tracing::info!("drained; bye");
    Ok(())
}

/// Tells the workers to drain and stop however `run` ends, by an error or a panic included,
/// so their threads never outlive it (and a runtime shutting down never waits for them forever).
struct StopWorkersOnDrop(Arc<AtomicBool>);

impl Drop for StopWorkersOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The embedded log under the data dir, or Kafka with `--kafka`.
async fn open_log(config: &Config) -> Result<EventLog, LogError> {
    Ok(match &config.kafka {
        Some(brokers) => EventLog::Kafka(
            KafkaLog::connect(KafkaSettings {
                brokers: brokers.clone(),
                topic_prefix: config.kafka_topic_prefix.clone(),
                group_id: config.kafka_group_id.clone(),
            })
            .await?,
        ),
        None => EventLog::Embedded(EmbeddedLog::open(&config.data_dir.join("log"))?),
    })
}

/// The local store under the data dir, or S3 / MinIO with `--s3-endpoint`.
pub async fn open_store(config: &Config) -> Result<Arc<dyn ObjectStore>, EngineError> {
    Ok(match &config.s3_endpoint {
        Some(endpoint) => Arc::new(
            S3Store::connect(S3Settings {
                endpoint: endpoint.clone(),
                public_endpoint: config.s3_public_endpoint.clone(),
                access_key: config.s3_access_key.clone().unwrap_or_default(),
                secret_key: config.s3_secret_key.clone().map(|s| s.0).unwrap_or_default(),
                region: config.s3_region.clone(),
                bucket_prefix: config.s3_bucket_prefix.clone(),
            })
            .await?,
        ),
        None => {
            let root = config.data_dir.join("objects");
            let store = LocalStore::new(&root)
                .map_err(|source| EngineError::DataDir { path: root.display().to_string(), source })?;
            Arc::new(store)
        }
    })
}

/// The embedded metadata file under the data dir, or MongoDB with `--mongo-uri`.
async fn open_metadata(config: &Config) -> Result<Arc<dyn MetadataStore>, MetadataError> {
    Ok(match &config.mongo_uri {
        Some(uri) => Arc::new(MongoMetadata::connect(uri, &config.mongo_database).await?),
        None => Arc::new(EmbeddedMetadata::open(&config.data_dir.join("metadata.redb"))?),
    })
}
