//! The three backends an engine runs on, chosen once at start from the config: each one
//! embedded under the data dir by default, or a shared service (Kafka, S3, MongoDB) by flag.

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::config::Config;
use crate::log::embedded::EmbeddedLog;
use crate::log::kafka::{KafkaLog, KafkaSettings};
use crate::log::{EventLog, LogError};
use crate::storage::metadata::embedded::EmbeddedMetadata;
use crate::storage::metadata::mongodb::MongoMetadata;
use crate::storage::metadata::{MetadataError, MetadataStore};
use crate::storage::object::local::LocalStore;
use crate::storage::object::s3::{S3Settings, S3Store};
use crate::storage::object::{ObjectStore, StoreError};

/// The event log, object store and metadata store of one engine; cheap to clone.
#[derive(Clone)]
pub struct Backends {
    pub log: EventLog,
    pub store: Arc<dyn ObjectStore>,
    pub metadata: Arc<dyn MetadataStore>,
}

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

impl Backends {
    /// Opens every backend. One that does not answer fails this within seconds, naming it.
    /// With it, whether the metadata is to be rebuilt from the log: the embedded metadata file
    /// was missing while the embedded log held processed records, whose offsets are now forgotten.
    pub async fn open(config: &Config) -> Result<(Backends, bool), BackendError> {
        let path = config.data_dir.clone();
        std::fs::create_dir_all(&path).map_err(|source| BackendError::DataDir { path, source })?;
        let rebuild = forget_offsets_if_metadata_lost(config)?;
        Ok((
            Backends {
                log: open_log(config).await?,
                store: open_store(config).await?,
                metadata: open_metadata(config).await?,
            },
            rebuild,
        ))
    }
}

/// The log is the source of truth: with the embedded metadata file gone and the embedded log
/// holding processed records, their committed offsets are set back to 0, and the dataflow
/// replays every record into a new file. Returns whether it did.
fn forget_offsets_if_metadata_lost(config: &Config) -> Result<bool, BackendError> {
    let (file, log) = (config.data_dir.join("metadata.redb"), config.data_dir.join("log"));
    if config.mongo_uri.is_some() || config.kafka.is_some() || file.exists() || !log.exists() {
        return Ok(false);
    }
    let forgotten = EmbeddedLog::forget_offsets(&log)?;
    if forgotten > 0 {
        tracing::warn!(
            file = %file.display(),
            processed_bytes = forgotten,
            "the metadata file is missing, but the event log holds processed records: rebuilding every \
             document from the log (its offsets are reset, and every record is replayed; videos are transcoded again)"
        );
    }
    Ok(forgotten > 0)
}

/// The embedded log under the data dir, or Kafka with `--kafka`.
pub async fn open_log(config: &Config) -> Result<EventLog, LogError> {
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
pub async fn open_store(config: &Config) -> Result<Arc<dyn ObjectStore>, BackendError> {
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
            let store = LocalStore::new(&root).map_err(|source| BackendError::DataDir { path: root, source })?;
            Arc::new(store)
        }
    })
}

/// The embedded metadata file under the data dir, or MongoDB with `--mongo-uri`.
pub async fn open_metadata(config: &Config) -> Result<Arc<dyn MetadataStore>, MetadataError> {
    Ok(match &config.mongo_uri {
        Some(uri) => Arc::new(MongoMetadata::connect(uri, &config.mongo_database).await?),
        None => Arc::new(EmbeddedMetadata::open(&config.data_dir.join("metadata.redb"))?),
    })
}
