//! The event log on Apache Kafka (`--kafka`): topics created when missing, each timely worker
//! `assign`ed its own partitions (no group rebalancing), offsets committed to the consumer
//! group only after the sinks are durable. A check every few seconds finds what `/health`
//! reports besides a broker that does not answer: topics missing or with another partition
//! count, and partitions whose log ends before the offsets segflow committed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Appended, LogError, LogRecord, OffsetCommit, RecordError, Rewound};
use crate::model::Topic;

/// How long a start-up or health request to the brokers may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a health check waits for a metadata answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an offset commit waits for the group coordinator before it is given up (and
/// retried with the next offsets, on a fresh connection).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an append waits for the brokers (retrying) before the API answers 503.
const APPEND_TIMEOUT_MS: &str = "30000";
/// How often the health check looks at the topics and their watermarks. Each request in it
/// waits at most [`HEALTH_TIMEOUT`]; `/health` only reads what the last one found.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Where the brokers are and how this engine's topics and consumer group are named.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]` (`KAFKA_BOOTSTRAP_SERVERS`).
    pub brokers: String,
    /// Prepended to `live-chunks` / `vod-chunks` (empty by default).
    pub topic_prefix: String,
    /// Consumer group the committed offsets belong to.
    pub group_id: String,
}

#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    settings: KafkaSettings,
    producer: FutureProducer,
    committer: Arc<Mutex<Committer>>,
    partitions: BTreeMap<Topic, u32>,
    /// Where each partition's reading starts: the group's committed offset, read once at start
    /// (or its first record, once rewound).
    start: Mutex<BTreeMap<(Topic, u32), Offset>>,
    /// Each partition's committed offset: found at start, then each commit of this process.
    committed: Mutex<BTreeMap<(Topic, u32), Committed>>,
    /// What the last health check found wrong (see [`watch`]).
    problems: Mutex<Vec<String>>,
}

/// A partition's committed offset.
#[derive(Clone, Copy, Debug, Default)]
struct Committed {
    last: u64,
    /// The highest seen since start: a log that ends before it has lost records segflow
    /// processed, even once the consumer has fallen back to the first record and commits anew.
    highest: u64,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl KafkaLog {
    /// Connects, creates the topics when missing and learns their partition counts; a broker
    /// that does not answer is an error naming it.
    pub async fn connect(settings: KafkaSettings) -> Result<KafkaLog, LogError> {
        let brokers = settings.brokers.clone();
        let err = kafka_error(&brokers);
        let committer = Arc::new(Mutex::new(Committer::new(&settings).map_err(&err)?));
        on_committer(&committer, |c| c.fetch_metadata(None, REQUEST_TIMEOUT))
            .await?
            .map_err(|e| unreachable(&brokers, &e.to_string()))?;
        let admin: AdminClient<DefaultClientContext> = client_config(&settings).create().map_err(&err)?;
        let names: Vec<String> = Topic::ALL.iter().map(|t| topic_name(&settings, *t)).collect();
        let new_topics: Vec<NewTopic> = Topic::ALL
            .iter()
            .zip(&names)
            .map(|(topic, name)| NewTopic::new(name, topic.partitions() as i32, TopicReplication::Fixed(-1)))
            .collect();
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let created = tokio::time::timeout(REQUEST_TIMEOUT, admin.create_topics(&new_topics, &options))
            .await
            .map_err(|_| unreachable(&brokers, "creating topics timed out"))?
            .map_err(&err)?;
        for result in created {
            match result {
                Ok(name) => tracing::info!(topic = name, "created Kafka topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(err(KafkaError::AdminOp(code)).context(&format!("creating {name}"))),
            }
        }
        let mut partitions = BTreeMap::new();
        for (topic, name) in Topic::ALL.iter().zip(names) {
            let count = created_partition_count(&committer, name, &settings.brokers).await?;
            if count != topic.partitions() {
                tracing::info!(topic = topic.name(), count, "Kafka topic has its own partition count; using it");
            }
            partitions.insert(*topic, count);
        }
        let start = committed_offsets(&committer, &settings, &partitions).await?;
        let committed = start
            .iter()
            .map(|(key, offset)| {
                let at = offset.to_raw().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                (*key, Committed { last: at, highest: at })
            })
            .collect();
        let producer: FutureProducer = client_config(&settings)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set("message.timeout.ms", APPEND_TIMEOUT_MS)
            // Java's partitioner, so outside producers keyed by stream id agree with ours.
            .set("partitioner", "murmur2_random")
            .create()
            .map_err(&err)?;
        let inner = Arc::new(Inner {
            settings,
            producer,
            committer,
            partitions,
            start: Mutex::new(start),
            committed: Mutex::new(committed),
            problems: Mutex::default(),
        });
        tokio::spawn(watch(Arc::downgrade(&inner)));
        Ok(KafkaLog { inner })
    }

    pub fn partitions(&self, topic: Topic) -> u32 {
        self.inner.partitions.get(&topic).copied().unwrap_or_else(|| topic.partitions())
    }

    /// Produces a record keyed by `key`; resolves once every in-sync replica has it.
    pub async fn append(&self, topic: Topic, key: &str, payload: Vec<u8>) -> Result<Appended, LogError> {
        let name = topic_name(&self.inner.settings, topic);
        let record = FutureRecord::to(&name).key(key).payload(&payload);
        match self.inner.producer.send(record, Duration::from_secs(5)).await {
            Ok(delivery) => Ok(Appended { partition: delivery.partition as u32, offset: delivery.offset as u64 }),
            Err((error, _)) => Err(kafka_error(&self.inner.settings.brokers)(error)),
        }
    }

    /// A consumer assigned `partitions` of `topic` from the group's committed offsets (the
    /// beginning where none is committed yet). The offsets are explicit: librdkafka's own
    /// lookup (`Offset::Stored`) gives up on a group coordinator that is still loading.
    pub fn reader(&self, topic: Topic, partitions: &[u32]) -> Result<KafkaReader, LogError> {
        let settings = &self.inner.settings;
        let err = kafka_error(&settings.brokers);
        let consumer: BaseConsumer = consumer_config(settings).create().map_err(&err)?;
        let name = topic_name(settings, topic);
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            let offset = locked(&self.inner.start).get(&(topic, *partition)).copied().unwrap_or(Offset::Beginning);
            assignment.add_partition_offset(&name, *partition as i32, offset).map_err(&err)?;
        }
        consumer.assign(&assignment).map_err(&err)?;
        Ok(KafkaReader { consumer, brokers: settings.brokers.clone(), last_error: None })
    }

    /// Commits the offsets to the consumer group, synchronously.
    pub fn commit(&self, offsets: &[OffsetCommit]) -> Result<(), LogError> {
        let err = kafka_error(&self.inner.settings.brokers);
        let mut list = TopicPartitionList::new();
        for (topic, partition, offset) in offsets {
            let name = topic_name(&self.inner.settings, *topic);
            list.add_partition_offset(&name, *partition as i32, Offset::Offset(*offset as i64)).map_err(&err)?;
        }
        self.inner.committer.lock().expect("committer lock").commit(&list, &self.inner.settings)?;
        let mut committed = locked(&self.inner.committed);
        for (topic, partition, offset) in offsets {
            let entry = committed.entry((*topic, *partition)).or_default();
            entry.last = *offset;
            entry.highest = entry.highest.max(*offset);
        }
        Ok(())
    }

    /// The offset last committed for a partition (or found committed at start).
    pub fn committed(&self, topic: Topic, partition: u32) -> Option<u64> {
        locked(&self.inner.committed).get(&(topic, partition)).map(|c| c.last)
    }

    /// Commits each partition's first offset for the group where its committed offset is past
    /// it, in one request, before any reader is made. A partition whose first offset is above 0
    /// has lost records to retention: the replay goes on without them, with a warning naming it.
    pub async fn rewind(&self) -> Result<Rewound, LogError> {
        let (inner, brokers) = (&self.inner, &self.inner.settings.brokers);
        let err = kafka_error(brokers);
        let mut rewound = Rewound::default();
        let (mut list, mut moved) = (TopicPartitionList::new(), Vec::new());
        for (topic, count) in &inner.partitions {
            let name = topic_name(&inner.settings, *topic);
            for p in 0..*count {
                let (low, high) = watermarks(&inner.committer, &name, p, brokers).await?;
                let committed = self.committed(*topic, p).unwrap_or(0);
                if committed > 0 && low > 0 {
                    tracing::warn!(
                        topic = name,
                        partition = p,
                        records_gone = low.min(committed),
                        "the broker no longer holds the first records of this partition (retention deleted them): \
                         the rebuild goes on from offset {low} without them"
                    );
                }
                if committed > low {
                    let offset = Offset::Offset(i64::try_from(low).unwrap_or(i64::MAX));
                    list.add_partition_offset(&name, p as i32, offset).map_err(&err)?;
                    moved.push(((*topic, p), low));
                }
                rewound.processed = rewound.processed.saturating_add(committed);
                rewound.spans.insert((*topic, p), (low, high));
            }
        }
        if moved.is_empty() {
            return Ok(rewound);
        }
        let (committer, settings) = (inner.committer.clone(), inner.settings.clone());
        tokio::task::spawn_blocking(move || committer.lock().expect("committer lock").commit(&list, &settings))
            .await?
            .map_err(|e| e.context("setting the group's offsets back to the first records"))?;
        let (mut start, mut committed) = (locked(&inner.start), locked(&inner.committed));
        for (key, low) in moved {
            start.insert(key, Offset::Offset(i64::try_from(low).unwrap_or(i64::MAX)));
            committed.entry(key).or_default().last = low;
        }
        Ok(rewound)
    }

    /// What the last health check found wrong with the topics (empty before the first one).
    pub fn problems(&self) -> Vec<String> {
        locked(&self.inner.problems).clone()
    }

    /// The brokers answer a metadata request. Asked through the producer, so a commit that
    /// waits for the group coordinator never makes the brokers look down.
    pub async fn health(&self) -> Result<(), LogError> {
        let (producer, brokers) = (self.inner.producer.clone(), &self.inner.settings.brokers);
        let name = topic_name(&self.inner.settings, Topic::LiveChunks);
        let topic = name.clone();
        let metadata = off_async(move || producer.client().fetch_metadata(Some(&topic), HEALTH_TIMEOUT))
            .await?
            .map_err(kafka_error(brokers))?;
        topic_partitions(&metadata, &name, brokers).map(|_| ())
    }

    /// Waits for produced records to be delivered.
    pub fn close(&self) {
        if let Err(error) = self.inner.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(%error, "Kafka producer flush at shutdown failed");
        }
    }
}

/// Commits offsets for every worker; assigned nothing, so it never joins the group.
/// librdkafka's commit blocks until the group coordinator answers, forever when its cached
/// coordinator never comes back (it can, after a broker restart), so each commit runs on a
/// thread of its own and is given up after [`COMMIT_TIMEOUT`].
struct Committer {
    consumer: Arc<BaseConsumer>,
}

impl Committer {
    fn new(settings: &KafkaSettings) -> KafkaResult<Committer> {
        Ok(Committer { consumer: Arc::new(consumer_config(settings).create()?) })
    }

    /// Commits `list`; one given up leaves its thread waiting on the old consumer, and the
    /// next commit starts afresh on a new one. Should the old one land late, it can only move
    /// an offset back, and replaying from there changes nothing.
    fn commit(&mut self, list: &TopicPartitionList, settings: &KafkaSettings) -> Result<(), LogError> {
        let failed = |message: String| LogError::Kafka { brokers: settings.brokers.clone(), message, source: None };
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let (consumer, list) = (self.consumer.clone(), list.clone());
        std::thread::Builder::new()
            .name("kafka-commit".into())
            .spawn(move || done.send(consumer.commit(&list, CommitMode::Sync)))
            .map_err(|e| failed(format!("starting a commit thread: {e}")))?;
        match result.recv_timeout(COMMIT_TIMEOUT) {
            Ok(committed) => committed.map_err(kafka_error(&settings.brokers)),
            Err(_) => {
                *self = Committer::new(settings).map_err(kafka_error(&settings.brokers))?;
                Err(failed(format!(
                    "the group coordinator did not answer a commit within {}s",
                    COMMIT_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

/// One worker's Kafka consumer for one topic.
pub struct KafkaReader {
    consumer: BaseConsumer,
    brokers: String,
    /// When the last error was logged: a broker that is down is logged every few seconds.
    last_error: Option<Instant>,
}

impl KafkaReader {
    pub fn on_data(&mut self, wake: impl Fn() + Send + Sync + 'static) {
        self.consumer.set_nonempty_callback(wake);
    }

    /// Takes up to `max` records that librdkafka has already fetched; never waits.
    pub fn poll(&mut self, max: usize, out: &mut Vec<LogRecord>) -> usize {
        let mut read = 0;
        while read < max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => {
                    let offset = message.offset() as u64;
                    out.push(LogRecord {
                        partition: message.partition() as u32,
                        offset,
                        next_offset: offset + 1,
                        payload: message.payload().map(<[u8]>::to_vec).ok_or(RecordError::NoPayload),
                    });
                    read += 1;
                }
                Some(Err(error)) => {
                    if self.last_error.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(brokers = self.brokers, %error, "Kafka consumer error; retrying");
                        self.last_error = Some(Instant::now());
                    }
                    break;
                }
            }
        }
        read
    }
}

fn topic_name(settings: &KafkaSettings, topic: Topic) -> String {
    format!("{}{}", settings.topic_prefix, topic.name())
}

fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers).set("log_level", "4");
    config
}

fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(settings);
    config
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    config
}

/// Runs a blocking Kafka request off the async threads; the outer error is the blocking
/// task's, the inner one Kafka's.
async fn off_async<T: Send + 'static>(
    request: impl FnOnce() -> KafkaResult<T> + Send + 'static,
) -> Result<KafkaResult<T>, LogError> {
    Ok(tokio::task::spawn_blocking(request).await?)
}

/// Runs a blocking request of the committer consumer off the async threads.
async fn on_committer<T: Send + 'static>(
    committer: &Arc<Mutex<Committer>>,
    request: impl FnOnce(&BaseConsumer) -> KafkaResult<T> + Send + 'static,
) -> Result<KafkaResult<T>, LogError> {
    let committer = committer.clone();
    off_async(move || request(&committer.lock().expect("committer lock").consumer)).await
}

/// Partition count of `topic` from the brokers' metadata, asked off the async threads.
async fn partition_count(
    committer: &Arc<Mutex<Committer>>,
    topic: String,
    brokers: &str,
    timeout: Duration,
) -> Result<u32, LogError> {
    let name = topic.clone();
    let metadata = on_committer(committer, move |c| c.fetch_metadata(Some(&name), timeout))
        .await?
        .map_err(kafka_error(brokers))?;
    topic_partitions(&metadata, &topic, brokers)
}

/// The partition count of `topic` in a metadata answer.
fn topic_partitions(metadata: &Metadata, topic: &str, brokers: &str) -> Result<u32, LogError> {
    match metadata.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len() as u32),
        _ => Err(LogError::Kafka {
            brokers: brokers.into(),
            message: format!("topic {topic} has no partitions"),
            source: None,
        }),
    }
}

/// The group's committed offset of every partition (`Beginning` where none is), retried while
/// the group coordinator is still loading.
async fn committed_offsets(
    committer: &Arc<Mutex<Committer>>,
    settings: &KafkaSettings,
    partitions: &BTreeMap<Topic, u32>,
) -> Result<BTreeMap<(Topic, u32), Offset>, LogError> {
    let mut list = TopicPartitionList::new();
    for (topic, count) in partitions {
        for p in 0..*count {
            list.add_partition(&topic_name(settings, *topic), p as i32);
        }
    }
    let deadline = Instant::now() + 3 * REQUEST_TIMEOUT;
    let committed = loop {
        let list = list.clone();
        let fetched = on_committer(committer, move |c| c.committed_offsets(list, REQUEST_TIMEOUT));
        match fetched.await? {
            Ok(committed) => break committed,
            Err(error) if Instant::now() < deadline => {
                tracing::info!(%error, "waiting for the Kafka group coordinator");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(kafka_error(&settings.brokers)(error).context("reading committed offsets")),
        }
    };
    let mut start = BTreeMap::new();
    for (topic, count) in partitions {
        for p in 0..*count {
            let element = committed.find_partition(&topic_name(settings, *topic), p as i32);
            let offset = element.map(|e| e.offset()).filter(|o| matches!(o, Offset::Offset(n) if *n >= 0));
            start.insert((*topic, p), offset.unwrap_or(Offset::Beginning));
        }
    }
    Ok(start)
}

/// Like [`partition_count`], waiting for a topic just created to reach the brokers' metadata.
async fn created_partition_count(
    committer: &Arc<Mutex<Committer>>,
    topic: String,
    brokers: &str,
) -> Result<u32, LogError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        match partition_count(committer, topic.clone(), brokers, REQUEST_TIMEOUT).await {
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            result => return result,
        }
    }
}

/// A partition's first and end offsets (`low`, `high` watermarks), asked off the async threads;
/// retried for up to [`REQUEST_TIMEOUT`] while the brokers settle (a topic just created has no
/// leader for a moment).
async fn watermarks(
    committer: &Arc<Mutex<Committer>>,
    topic: &str,
    partition: u32,
    brokers: &str,
) -> Result<(u64, u64), LogError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let name = topic.to_string();
        match on_committer(committer, move |c| c.fetch_watermarks(&name, partition as i32, REQUEST_TIMEOUT)).await? {
            Ok((low, high)) => return Ok((u64::try_from(low).unwrap_or(0), u64::try_from(high).unwrap_or(0))),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(topic, partition, %error, "reading a partition's offsets; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => {
                let what = format!("reading the offsets of {topic} partition {partition}");
                return Err(kafka_error(brokers)(error).context(&what));
            }
        }
    }
}

/// Checks the topics every [`CHECK_EVERY`] while the log is in use; each finding is logged
/// once, when it first appears. A check that fails (a broker down: `/health` says so apart)
/// leaves the last findings as they were.
async fn watch(inner: Weak<Inner>) {
    loop {
        let Some(log) = inner.upgrade() else { return };
        let producer = log.producer.clone();
        let topics: Vec<TopicToCheck> = {
            let committed = locked(&log.committed);
            log.partitions
                .iter()
                .map(|(topic, count)| {
                    let highest = (0..*count).map(|p| (p, committed.get(&(*topic, p)).map_or(0, |c| c.highest)));
                    (topic_name(&log.settings, *topic), *count, highest.collect())
                })
                .collect()
        };
        drop(log);
        let seen = tokio::task::spawn_blocking(move || look(producer.client(), &topics)).await;
        let Some(log) = inner.upgrade() else { return };
        match seen {
            Ok(Ok(seen)) => {
                let found = problems(&seen);
                let mut known = locked(&log.problems);
                for problem in found.iter().filter(|p| !known.contains(p)) {
                    tracing::error!(brokers = log.settings.brokers, problem, "Kafka topic problem");
                }
                *known = found;
            }
            Ok(Err(error)) => tracing::debug!(%error, "Kafka topic check failed; keeping its last findings"),
            Err(_) => return, // the runtime is stopping
        }
        drop(log);
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// A topic for the health check to look at: its name, the partitions segflow reads, and each
/// partition's highest committed offset.
type TopicToCheck = (String, u32, Vec<(u32, u64)>);

/// One of segflow's topics as a health check saw it.
#[derive(Debug)]
struct TopicSeen {
    name: String,
    /// The partitions segflow reads (learned at start).
    expected: u32,
    /// The partitions on the brokers; `None`: no such topic.
    found: Option<u32>,
    /// `(partition, highest offset segflow committed, high watermark)` of each partition with
    /// a committed offset whose watermark was read.
    offsets: Vec<(u32, u64, u64)>,
}

/// Asks the brokers for every topic (a request for all never creates one) and, for each
/// partition segflow has committed an offset of, its high watermark; each request waits at
/// most [`HEALTH_TIMEOUT`].
fn look<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &[TopicToCheck],
) -> KafkaResult<Vec<TopicSeen>> {
    let metadata = client.fetch_metadata(None, HEALTH_TIMEOUT)?;
    let mut seen = Vec::new();
    for (name, expected, committed) in topics {
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as u32);
        let mut offsets = Vec::new();
        for (partition, highest) in
            committed.iter().filter(|(p, highest)| *highest > 0 && found.is_some_and(|n| *p < n))
        {
            // A watermark that cannot be read now says nothing: the next check asks again.
            if let Ok((_, high)) = client.fetch_watermarks(name, *partition as i32, HEALTH_TIMEOUT) {
                offsets.push((*partition, *highest, u64::try_from(high).unwrap_or(0)));
            }
        }
        seen.push(TopicSeen { name: name.clone(), expected: *expected, found, offsets });
    }
    Ok(seen)
}

/// What is wrong with the topics as seen, each said with what it means and what to do.
fn problems(seen: &[TopicSeen]) -> Vec<String> {
    let mut problems = Vec::new();
    for topic in seen {
        let (name, expected) = (&topic.name, topic.expected);
        match topic.found {
            None => problems.push(format!(
                "Kafka topic {name} is missing: segflow can neither append to it nor read it; restart segflow \
                 to create it with {expected} partitions (what it held is gone)"
            )),
            Some(found) if found < expected => problems.push(format!(
                "Kafka topic {name} has a partition count of {found}, below the {expected} segflow reads: it was \
                 recreated or changed behind segflow's back; restart segflow to read it as it is"
            )),
            Some(found) if found > expected => problems.push(format!(
                "Kafka topic {name} has {found} partitions, more than the {expected} segflow reads: records on \
                 partitions {expected} and up are not processed until segflow restarts"
            )),
            Some(_) => {}
        }
        for (partition, committed, high) in &topic.offsets {
            if let Some(lost) = committed.checked_sub(*high).filter(|lost| *lost > 0) {
                problems.push(format!(
                    "Kafka topic {name} partition {partition} ends at offset {high}, before the offset {committed} \
                     segflow committed: the broker lost {lost} records segflow had processed (an unclean leader \
                     election, a wiped broker, or the topic recreated); the metadata keeps what they produced"
                ));
            }
        }
    }
    problems
}

fn kafka_error(brokers: &str) -> impl Fn(KafkaError) -> LogError + '_ {
    move |error| LogError::Kafka {
        brokers: brokers.to_string(),
        message: error.to_string(),
        source: Some(Box::new(error)),
    }
}

fn unreachable(brokers: &str, error: &str) -> LogError {
    let message = format!("no broker answered within {}s ({error})", REQUEST_TIMEOUT.as_secs());
    LogError::Kafka { brokers: brokers.to_string(), message, source: None }
}

impl LogError {
    fn context(self, what: &str) -> LogError {
        match self {
            LogError::Kafka { brokers, message, source } => {
                LogError::Kafka { brokers, message: format!("{what}: {message}"), source }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(found: Option<u32>, offsets: Vec<(u32, u64, u64)>) -> TopicSeen {
        TopicSeen { name: "p-live-chunks".into(), expected: 6, found, offsets }
    }

    #[test]
    fn topics_as_expected_are_no_problem() {
        assert_eq!(problems(&[seen(Some(6), vec![(0, 10, 10), (3, 4, 90)])]), Vec::<String>::new());
    }

    #[test]
    fn a_missing_topic_or_another_partition_count_is_a_problem() {
        let missing = problems(&[seen(None, vec![])]);
        assert!(missing.len() == 1 && missing[0].starts_with("Kafka topic p-live-chunks is missing"), "{missing:?}");
        let fewer = problems(&[seen(Some(2), vec![])]);
        assert!(fewer.len() == 1 && fewer[0].contains("a partition count of 2, below the 6"), "{fewer:?}");
        let more = problems(&[seen(Some(8), vec![])]);
        assert!(more.len() == 1 && more[0].contains("8 partitions, more than the 6"), "{more:?}");
    }

    #[test]
    fn a_log_ending_before_the_committed_offset_is_a_problem_naming_the_partition() {
        let found = problems(&[seen(Some(6), vec![(1, 10, 10), (4, 1005, 5)])]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "Kafka topic p-live-chunks partition 4 ends at offset 5, before the offset 1005 segflow committed: \
                 the broker lost 1000 records"
            ),
            "{found:?}"
        );
    }
}
