//! The three backends an engine runs on, chosen once at start from the config: each one
//! embedded under the data dir by default, or a shared service (Kafka, S3, MongoDB) by flag.

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::config::Config;
use crate::log::embedded::EmbeddedLog;
use crate::log::kafka::{KafkaLog, KafkaSettings};
use crate::log::{EventLog, LogError, Rewound};
use crate::storage::metadata::embedded::EmbeddedMetadata;
use crate::storage::metadata::mongodb::MongoMetadata;
use crate::storage::metadata::{Marker, MetadataError, MetadataStore};
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
    /// With it, what the dataflow replays to rebuild the metadata, when it does (see
    /// [`rebuild_if_metadata_lost`]): the engine waits for that before the API opens.
    pub async fn open(config: &Config) -> Result<(Backends, Option<Rewound>), BackendError> {
        let path = config.data_dir.clone();
        std::fs::create_dir_all(&path).map_err(|source| BackendError::DataDir { path, source })?;
        let backends = Backends {
            log: open_log(config).await?,
            store: open_store(config).await?,
            metadata: open_metadata(config).await?,
        };
        let rebuild = rebuild_if_metadata_lost(&backends, &metadata_place(config)).await?;
        Ok((backends, rebuild))
    }
}

/// The log is the source of truth, whichever log and metadata store segflow runs on (embedded
/// or Kafka; redb or MongoDB). A store without its marker ([`Marker`]) is new or lost (the file
/// deleted, the database dropped): the log's committed offsets are set back to the first records
/// and the dataflow replays everything into it. Returns what the replay reads, when there is
/// anything to replay.
///
/// Order: the offsets are set back, durably, before the marker is written. A crash in between
/// leaves an unmarked store over offsets already at the start: the next start finds the same,
/// sets back nothing more and replays all. Marking first, a crash before the rewind would leave
/// a marked, empty store over offsets past records that are then never replayed: lost silently.
async fn rebuild_if_metadata_lost(backends: &Backends, place: &str) -> Result<Option<Rewound>, BackendError> {
    let Backends { log, metadata, .. } = backends;
    match metadata.marker().await? {
        Marker::Present => return Ok(None),
        Marker::Unmarked => {
            tracing::info!(
                metadata = place,
                "the metadata store has documents but no marker (an older segflow made it): marking it"
            );
            metadata.write_marker().await?;
            return Ok(None);
        }
        Marker::Absent => {}
    }
    let rewound = log.rewind().await?;
    metadata.write_marker().await?;
    if rewound.processed > 0 {
        tracing::warn!(
            metadata = place,
            event_log = log.kind(),
            processed = rewound.processed,
            "the metadata store is new or was lost (a deleted file, a dropped database), but the event log holds \
             processed records: rebuilding every document from the log (its committed offsets are set back to the \
             first records and every record is replayed; videos are transcoded again)"
        );
    } else if rewound.holds_records() {
        tracing::info!(metadata = place, event_log = log.kind(), "replaying the event log into a new metadata store");
    }
    Ok(rewound.holds_records().then_some(rewound))
}

/// Where the metadata lives, for messages: its file, or its MongoDB database.
fn metadata_place(config: &Config) -> String {
    match &config.mongo_uri {
        Some(_) => format!("MongoDB database {}", config.mongo_database),
        None => config.data_dir.join("metadata.redb").display().to_string(),
    }
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
