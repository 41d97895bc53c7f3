//! Where the dataflow's events come from: the embedded partitioned log, or Apache Kafka, behind
//! one `EventLog` so the API, the workers and the offset committer never tell them apart.

pub mod embedded;
pub mod kafka;

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

use crate::model::Topic;
use embedded::{EmbeddedLog, PartitionReader};
use kafka::{KafkaLog, KafkaReader};

/// Largest record the log accepts; events are ~500 bytes of JSON.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum LogError {
    #[error("event log I/O at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("record of {0} bytes is over the {MAX_RECORD_BYTES} byte limit")]
    TooLarge(usize),
    #[error("event log writer has stopped")]
    Closed,
    /// Partition files lost records their offsets say were processed; the text names them
    /// and says what to do.
    #[error("event log is damaged: {0}")]
    Damaged(String),
    /// A broker refused or did not answer; `source` is librdkafka's error, when there is one.
    #[error("Kafka at {brokers}: {message}")]
    Kafka {
        brokers: String,
        message: String,
        #[source]
        source: Option<Box<rdkafka::error::KafkaError>>,
    },
    /// A blocking Kafka request did not finish (it panicked, or the runtime is stopping).
    #[error("Kafka request task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why a record could not be read back; it becomes a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("record checksum mismatch")]
    Checksum,
    /// The length in its header cannot be true (zero, over the limit, or past the end).
    #[error("unreadable record length")]
    Length,
    #[error("record has no payload")]
    NoPayload,
}

/// Where a record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub offset: u64,
}

/// One record read back from a partition.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    pub partition: u32,
    pub offset: u64,
    /// Offset of the record after this one: what to commit once this one is durable.
    pub next_offset: u64,
    /// The payload, or why the record could not be read.
    pub payload: Result<Vec<u8>, RecordError>,
}

/// `(topic, partition, next offset)`: everything before it is durably processed.
pub type OffsetCommit = (Topic, u32, u64);

/// What [`EventLog::rewind`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewound {
    /// The committed offsets set back, summed (bytes on the embedded log, records on Kafka):
    /// 0 when segflow had processed nothing.
    pub processed: u64,
    /// Each partition's first and end offset when rewound: what a replay reads.
    pub spans: BTreeMap<(Topic, u32), (u64, u64)>,
}

impl Rewound {
    /// Whether any partition holds a record to replay.
    pub fn holds_records(&self) -> bool {
        self.spans.values().any(|(first, end)| end > first)
    }
}

/// The event log the engine was started with; cheap to clone.
#[derive(Clone)]
pub enum EventLog {
    Embedded(EmbeddedLog),
    Kafka(KafkaLog),
}

impl EventLog {
    /// Appends a record keyed by `key` (the stream id); resolves once it is durable.
    pub async fn append(&self, topic: Topic, key: &str, payload: Vec<u8>) -> Result<Appended, LogError> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(LogError::TooLarge(payload.len()));
        }
        match self {
            EventLog::Embedded(log) => log.append(topic, key, payload).await,
            EventLog::Kafka(log) => log.append(topic, key, payload).await,
        }
    }

    /// How many partitions `topic` has.
    pub fn partitions(&self, topic: Topic) -> u32 {
        match self {
            EventLog::Embedded(_) => topic.partitions(),
            EventLog::Kafka(log) => log.partitions(topic),
        }
    }

    /// A reader of `partitions` of `topic`, from their committed offsets.
    pub fn reader(&self, topic: Topic, partitions: &[u32]) -> Result<TopicReader, LogError> {
        Ok(match self {
            EventLog::Embedded(log) => TopicReader::Embedded {
                log: log.clone(),
                topic,
                readers: partitions.iter().map(|p| log.reader(topic, *p)).collect::<Result<_, _>>()?,
            },
            EventLog::Kafka(log) => TopicReader::Kafka(log.reader(topic, partitions)?),
        })
    }

    /// Records that everything before each offset has been durably processed (blocking I/O).
    pub fn commit(&self, offsets: &[OffsetCommit]) -> Result<(), LogError> {
        match self {
            EventLog::Embedded(log) => {
                offsets.iter().try_for_each(|(topic, partition, offset)| log.commit(*topic, *partition, *offset))
            }
            EventLog::Kafka(log) => log.commit(offsets),
        }
    }

    /// Sets every committed offset back to the partition's first record, before any reader is
    /// made, so the dataflow replays the whole log (see `backends.rs` for when). Durable when it
    /// returns: on Kafka one commit of the group's offsets, on the embedded log one offset file
    /// after another (a crash part-way leaves some set back, and the next start does the rest).
    pub async fn rewind(&self) -> Result<Rewound, LogError> {
        match self {
            EventLog::Embedded(log) => log.rewind(),
            EventLog::Kafka(log) => log.rewind().await,
        }
    }

    /// The offset last committed for a partition of `topic` by this process (or found at start).
    pub fn committed(&self, topic: Topic, partition: u32) -> Option<u64> {
        match self {
            EventLog::Embedded(log) => log.committed(topic, partition).ok(),
            EventLog::Kafka(log) => log.committed(topic, partition),
        }
    }

    /// Whether the log answers (for `/health`).
    pub async fn health(&self) -> Result<(), LogError> {
        match self {
            EventLog::Embedded(log) if log.writer_stopped() => Err(LogError::Closed),
            EventLog::Embedded(_) => Ok(()),
            EventLog::Kafka(log) => log.health().await,
        }
    }

    /// What keeps the log from working besides not answering (for `/health`): embedded
    /// partitions that cannot be read; Kafka topics missing or with another partition count,
    /// and partitions whose log ends before what segflow committed (found by a check every few
    /// seconds, never waited for here).
    pub fn problems(&self) -> Vec<String> {
        match self {
            EventLog::Embedded(log) => log.stopped_partitions(),
            EventLog::Kafka(log) => log.problems(),
        }
    }

    /// `embedded` or `kafka`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventLog::Embedded(_) => "embedded",
            EventLog::Kafka(_) => "kafka",
        }
    }

    /// Flushes and stops; called once the workers have finished.
    pub fn close(&self) {
        match self {
            EventLog::Embedded(log) => log.close(),
            EventLog::Kafka(log) => log.close(),
        }
    }
}

/// One worker's partitions of one topic; `poll` never blocks.
pub enum TopicReader {
    Embedded { log: EmbeddedLog, topic: Topic, readers: Vec<PartitionReader> },
    Kafka(KafkaReader),
}

impl TopicReader {
    /// Calls `wake` whenever new records may be there to read.
    pub fn on_data(&mut self, wake: impl Fn() + Send + Sync + 'static) {
        match self {
            TopicReader::Embedded { log, topic, readers } => {
                let partitions: Vec<u32> = readers.iter().map(|r| r.partition).collect();
                log.on_append(*topic, &partitions, wake)
            }
            TopicReader::Kafka(reader) => reader.on_data(wake),
        }
    }

    /// Appends up to `max` records to `out`; returns how many. Read errors are logged and
    /// retried on the next poll.
    pub fn poll(&mut self, max: usize, out: &mut Vec<LogRecord>) -> usize {
        match self {
            TopicReader::Embedded { readers, .. } => {
                let mut read = 0;
                for reader in readers.iter_mut() {
                    match reader.poll(max - read, out) {
                        Ok(n) => read += n,
                        Err(error) => {
                            tracing::error!(partition = reader.partition, %error, "log read failed; retrying")
                        }
                    }
                    if read >= max {
                        break;
                    }
                }
                read
            }
            TopicReader::Kafka(reader) => reader.poll(max, out),
        }
    }
}
