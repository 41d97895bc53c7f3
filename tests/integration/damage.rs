//! Damage to the data dir between runs: the data dir heals or segflow refuses to start, naming
//! the file and what to do; it never starts healthy with acknowledged data gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use segflow::config::Config;
use segflow::log::embedded::EmbeddedLog;
use segflow::model::Topic;
use serde_json::Value;

use crate::common::{Backends, TestEngine, put_segment, topic_offsets};

const CHUNKS: u64 = 6;

/// Starts `streams` streams with [`CHUNKS`] chunks each through the API, then stops the engine
/// (every offset committed); returns their ids.
async fn write_streams(data: &Path, streams: usize) -> Vec<String> {
    let engine = TestEngine::start(data, 2).await;
    let ids = put_streams(&engine, streams).await;
    engine.shutdown().await;
    ids
}

/// Starts `streams` streams with [`CHUNKS`] chunks each on `engine`, and waits until the
/// dataflow has accepted them all; returns their ids.
async fn put_streams(engine: &TestEngine, streams: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..streams {
        let id = engine.start_stream(2).await;
        for seq in 0..CHUNKS {
            assert_eq!(put_segment(&engine.client, &engine.base, &id, seq).await, 201);
        }
        ids.push(id);
    }
    for id in &ids {
        engine.wait_stream(id, |doc| doc["chunks_accepted"] == CHUNKS).await;
    }
    ids
}

/// Each stream's document and chunk documents as the API serves them, and its playlist,
/// without the times the sinks stamp when they write.
async fn snapshot(engine: &TestEngine, ids: &[String]) -> Vec<(Value, Value, String)> {
    let unstamped = |mut doc: Value| {
        for field in ["manifest_updated_at_ms", "processing_latency_ms"] {
            doc.as_object_mut().unwrap().remove(field);
        }
        doc
    };
    let mut streams = Vec::new();
    for id in ids {
        let (_, doc) = engine.get_json(&format!("/streams/{id}/metadata")).await;
        let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
        let chunks: Vec<Value> = chunks["chunks"].as_array().unwrap().iter().cloned().map(unstamped).collect();
        let (_, live) = engine.get_json(&format!("/streams/{id}/live")).await;
        let playlist = engine.client.get(live["manifest_url"].as_str().unwrap()).send().await.unwrap();
        streams.push((unstamped(doc), Value::from(chunks), unsigned(&playlist.text().await.unwrap())));
    }
    streams
}

/// A playlist without its segment URLs' signatures (made when it is served: an S3 presigned
/// URL carries the time it was signed).
fn unsigned(playlist: &str) -> String {
    playlist.lines().map(|line| line.split('?').next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The log file of the `live-chunks` partition that holds `id`'s events.
fn partition_file(data: &Path, id: &str) -> PathBuf {
    let partition = EmbeddedLog::partition_for(Topic::LiveChunks, id);
    data.join("log").join("live-chunks").join(format!("{partition}.log"))
}

/// Starts an engine on `data` that must refuse to; its error (bounded: never a hang).
async fn refused_start(data: &Path) -> String {
    let config = Config { data_dir: data.to_path_buf(), workers: 2, ..Config::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = segflow::engine::run(config, listener, std::future::pending());
    match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(Err(error)) => error.to_string(),
        Ok(Ok(())) => panic!("the engine ran"),
        Err(_) => panic!("the engine neither started nor refused to"),
    }
}

/// A partition truncated below its committed offset is refused, naming the file and the way
/// out; once its offset file is removed (the loss accepted), segflow starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_partition_is_refused_with_the_file_named() {
    let data = tempfile::tempdir().unwrap();
    let ids = write_streams(data.path(), 2).await;
    let file = partition_file(data.path(), &ids[0]);
    let offset_file = file.with_extension("offset");
    let committed: u64 = std::fs::read_to_string(&offset_file).unwrap().trim().parse().unwrap();
    assert!(committed > 0);
    std::fs::File::options().write(true).open(&file).unwrap().set_len(committed / 2).unwrap();

    let error = refused_start(data.path()).await;
    assert!(error.contains(&format!("{} is {} bytes", file.display(), committed / 2)), "{error}");
    assert!(error.contains(&format!("remove {}", offset_file.display())), "{error}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), committed / 2, "the file is left as it was");

    std::fs::remove_file(&offset_file).unwrap();
    let engine = TestEngine::start(data.path(), 2).await;
    let (status, health) = engine.get_json("/health").await;
    assert_eq!(status, 200, "{health}");
    let (_, doc) = engine.get_json(&format!("/streams/{}/metadata", ids[1])).await;
    assert_eq!(doc["chunks_accepted"], CHUNKS, "{doc}");
    engine.shutdown().await;
}

/// A chunk document that cannot be read fails the one worker that restores its stream: the
/// start fails with that error instead of waiting forever for the worker to be ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_fails_to_start_fails_the_start() {
    let data = tempfile::tempdir().unwrap();
    let ids = write_streams(data.path(), 1).await;
    {
        const CHUNKS_TABLE: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("live_metadata");
        let db = redb::Database::create(data.path().join("metadata.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(CHUNKS_TABLE).unwrap().insert((ids[0].as_str(), 3), b"{not json".as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let error = refused_start(data.path()).await;
    assert!(error.contains("restoring live streams"), "{error}");
}

/// Overwrites with `fill` the pages of the metadata file that `chosen` picks, given each
/// page's bytes; returns how many it overwrote.
fn overwrite_pages(data: &Path, fill: u8, chosen: impl Fn(usize, &[u8]) -> bool) -> usize {
    const PAGE: usize = 4096;
    let path = data.join("metadata.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let pages: Vec<usize> = (0..bytes.len() / PAGE).filter(|&n| chosen(n, &bytes[n * PAGE..(n + 1) * PAGE])).collect();
    for n in &pages {
        bytes[n * PAGE..(n + 1) * PAGE].fill(fill);
    }
    std::fs::write(&path, bytes).unwrap();
    pages.len()
}

/// Overwritten pages of the metadata file, whether redb's own state or documents, are refused
/// at start with the file named and what to do: never a panic, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_metadata_file_is_refused_with_the_file_named() {
    let contains = |page: &[u8], text: &str| page.windows(text.len()).any(|w| w == text.as_bytes());
    type Choose = Box<dyn Fn(usize, &[u8], &str) -> bool>;
    let cases: [(&str, u8, Choose); 3] = [
        ("redb's region header", 0xa5, Box::new(|n, _, _| (1..=3).contains(&n))),
        ("the file header", 0x00, Box::new(|n, _, _| n == 0)),
        ("every page holding a stream's documents", 0x5a, Box::new(move |_, page, id| contains(page, id))),
    ];
    for (name, fill, chosen) in cases {
        let data = tempfile::tempdir().unwrap();
        let ids = write_streams(data.path(), 2).await;
        let overwritten = overwrite_pages(data.path(), fill, |n, page| chosen(n, page, &ids[0]));
        assert!(overwritten > 0, "{name}");
        let error = refused_start(data.path()).await;
        let file = data.path().join("metadata.redb");
        assert!(error.contains(&format!("metadata file {} is damaged", file.display())), "{name}: {error}");
        assert!(error.contains("move the file away"), "{name}: {error}");
    }
}

/// With the metadata file deleted, segflow rebuilds it from the log before it serves: every
/// stream, chunk and playlist is back as it was, an ended stream included, and a video is
/// transcoded again to `ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_metadata_file_is_rebuilt_from_the_log() {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let ids = write_streams(data.path(), 5).await;
    let engine = TestEngine::start(data.path(), 2).await;
    let (status, body) = engine.post_json("/streams/end", &format!(r#"{{"stream_id":"{}"}}"#, ids[0])).await;
    assert_eq!(status, 200, "{body}");
    let source = crate::common::clip(media.path(), "clip.mp4", "320x240", 2, false);
    let (status, reply) = crate::common::upload_video(&engine.client, &engine.base, &source, "rebuilt").await;
    assert_eq!(status, 201, "{reply}");
    let video = reply["stream_id"].as_str().unwrap().to_string();
    let ready = crate::common::wait_video_final(&engine.client, &engine.base, &video).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let before = snapshot(&engine, &ids).await;
    assert_eq!(before[0].0["status"], "vod", "ended");
    engine.shutdown().await;

    std::fs::remove_file(data.path().join("metadata.redb")).unwrap();
    let engine = TestEngine::start(data.path(), 2).await;
    assert_eq!(snapshot(&engine, &ids).await, before, "every stream, chunk and playlist is back");
    let (status, health) = engine.get_json("/health").await;
    assert_eq!(status, 200, "{health}");
    // Transcoded again (FFmpeg's output is not byte for byte the same: its rungs are compared).
    let again = crate::common::wait_video_final(&engine.client, &engine.base, &video).await;
    let rungs = |doc: &Value| (doc["status"].clone(), doc["title"].clone(), doc["variants_generated"].clone());
    assert_eq!(rungs(&again), rungs(&ready), "{again}");
    engine.shutdown().await;
}

/// A crash after the rewind and before the marker leaves no metadata and every offset at 0: the
/// next start still rebuilds everything before the API opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_rewind_and_the_marker_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let ids = write_streams(data.path(), 10).await;
    let engine = TestEngine::start(data.path(), 2).await;
    let before = snapshot(&engine, &ids).await;
    engine.shutdown().await;
    std::fs::remove_file(data.path().join("metadata.redb")).unwrap();
    for topic in Topic::ALL {
        crate::common::forget_offsets(Backends::Embedded, data.path(), topic);
    }
    let engine = TestEngine::start(data.path(), 2).await;
    assert_eq!(snapshot(&engine, &ids).await, before, "every stream, chunk and playlist is back");
    engine.shutdown().await;
}

/// A metadata file with documents but no marker (made by a segflow from before the marker) is
/// marked and kept: nothing is replayed into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmarked_metadata_file_with_documents_is_kept() {
    let data = tempfile::tempdir().unwrap();
    let ids = write_streams(data.path(), 2).await;
    let engine = TestEngine::start(data.path(), 2).await;
    let before = snapshot(&engine, &ids).await;
    engine.shutdown().await;
    let offsets = topic_offsets(Backends::Embedded, data.path(), Topic::LiveChunks);
    const MARKER: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("segflow_marker");
    {
        let db = redb::Database::create(data.path().join("metadata.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.open_table(MARKER).unwrap().remove("marker").unwrap().is_some(), "the store was marked");
        txn.commit().unwrap();
    }
    let engine = TestEngine::start(data.path(), 2).await;
    assert_eq!(snapshot(&engine, &ids).await, before, "no chunk counted again as a duplicate");
    engine.shutdown().await;
    assert_eq!(topic_offsets(Backends::Embedded, data.path(), Topic::LiveChunks), offsets);
    let db = redb::Database::create(data.path().join("metadata.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(txn.open_table(MARKER).unwrap().get("marker").unwrap().is_some(), "marked again");
}

/// `(offset, length)` of each record of a partition file: `[len u32][crc32 u32][payload]`.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(len) = bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize) {
        if len == 0 {
            break;
        }
        records.push((at, 8 + len));
        at += 8 + len;
    }
    records
}

/// One flipped bit in the length of a chunk event in the middle of a partition loses that
/// chunk alone: with the metadata rebuilt from the log, every other chunk is back, the
/// damaged record is a `corrupt_record` dead letter, and the log keeps every byte after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_loses_only_its_record() {
    let data = tempfile::tempdir().unwrap();
    let ids = write_streams(data.path(), 6).await;
    let engine = TestEngine::start(data.path(), 2).await;
    let before = snapshot(&engine, &ids).await;
    engine.shutdown().await;

    // The partition with the most records, and a chunk event in its middle.
    let files: Vec<PathBuf> = ids.iter().map(|id| partition_file(data.path(), id)).collect();
    let file = files.iter().max_by_key(|f| records(&std::fs::read(f).unwrap()).len()).unwrap().clone();
    let mut bytes = std::fs::read(&file).unwrap();
    let all = records(&bytes);
    let chunk_event = |(at, len): &(usize, usize)| {
        let event: Value = serde_json::from_slice(&bytes[at + 8..at + len]).unwrap();
        (event["sequence_number"].as_u64().is_some_and(|seq| seq > 0 && seq < CHUNKS - 1)).then_some(event)
    };
    let middle = all.len() / 2;
    let (index, event) =
        (middle..all.len()).chain(0..middle).find_map(|i| chunk_event(&all[i]).map(|e| (i, e))).unwrap();
    let (at, len) = all[index];
    assert!(index + 1 < all.len(), "valid records follow the damaged one");
    bytes[at] ^= 0x10; // the length's low byte: 16 bytes off
    std::fs::write(&file, &bytes).unwrap();
    std::fs::remove_file(data.path().join("metadata.redb")).unwrap();

    let engine = TestEngine::start(data.path(), 2).await;
    let (damaged_id, seq) = (event["stream_id"].as_str().unwrap(), event["sequence_number"].as_u64().unwrap());
    let after = snapshot(&engine, &ids).await;
    for (id, (was, now)) in ids.iter().zip(before.iter().zip(&after)) {
        if id != damaged_id {
            assert_eq!(now, was, "stream {id} lost nothing");
            continue;
        }
        let indexes: Vec<u64> = now.1.as_array().unwrap().iter().map(|c| c["chunk_index"].as_u64().unwrap()).collect();
        let expected: Vec<u64> = (0..CHUNKS).filter(|s| *s != seq).collect();
        assert_eq!(indexes, expected, "only chunk {seq} of {id} is lost");
        assert_eq!(
            (now.0["chunks_accepted"].as_u64(), now.0["gaps_total"].as_u64()),
            (Some(CHUNKS - 1), Some(1)),
            "{}",
            now.0
        );
    }
    let (_, letters) = engine.get_json("/dead-letters").await;
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0]["reason"].as_str(), letters[0]["offset"].as_u64()),
        (Some("corrupt_record"), Some(at as u64))
    );
    engine.shutdown().await;
    let kept = std::fs::read(&file).unwrap();
    assert_eq!(kept[..at + len + 4096], bytes[..at + len + 4096], "the log keeps the records after the damaged one");
}

/// `/health` is 503 with the reason while the data dir's disk has less free space than the
/// threshold (set above this disk's free space, rather than filling the disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_the_disk_is_almost_full() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start(data.path(), 2).await;
    let (status, health) = engine.get_json("/health").await;
    assert_eq!((status, &health["problems"]), (200, &serde_json::json!([])), "{health}");
    engine.shutdown().await;

    let config = Config { data_dir: data.path().to_path_buf(), min_free_disk_bytes: u64::MAX, ..Config::default() };
    let engine = TestEngine::start_with(config).await;
    let (status, health) = engine.get_json("/health").await;
    assert_eq!((status, health["status"].as_str()), (503, Some("degraded")), "{health}");
    let problems = health["problems"].as_array().unwrap();
    assert!(problems.len() == 1 && problems[0].as_str().unwrap().starts_with("disk almost full"), "{health}");
    assert_eq!(health["backends"]["event_log"]["state"], "up", "{health}");
    assert_eq!(health["workers"], 2, "{health}");
    engine.shutdown().await;

    let config = Config { data_dir: data.path().to_path_buf(), min_free_disk_percent: 100.0, ..Config::default() };
    let engine = TestEngine::start_with(config).await;
    assert_eq!(engine.get_json("/health").await.0, 503, "a share of the disk works as well");
    engine.shutdown().await;
}

/// The real servers' config of an engine on `data`, with Kafka, S3 or MongoDB left out as told
/// (their embedded backend instead).
fn services(data: &Path, kafka: bool, mongodb: bool) -> Config {
    let mut config = Config { workers: 2, ..Backends::Services.config(data) };
    if !kafka {
        config.kafka = None;
    }
    if !mongodb {
        config.mongo_uri = None;
    }
    config
}

/// The metadata store lost between two runs (`lose` deletes the file or drops the database)
/// is rebuilt from the event log before the API opens: every stream, chunk and playlist is back
/// as it was, an ended stream included. A third start, on the rebuilt (marked) store, replays
/// nothing: a replay into a full store would count every chunk again as a duplicate.
async fn lost_metadata_is_rebuilt(config: Config, lose: impl AsyncFnOnce(&Config)) {
    let engine = TestEngine::start_with(config.clone()).await;
    let ids = put_streams(&engine, 4).await;
    let (status, body) = engine.post_json("/streams/end", &format!(r#"{{"stream_id":"{}"}}"#, ids[0])).await;
    assert_eq!(status, 200, "{body}");
    engine.wait_stream(&ids[0], |doc| doc["status"] == "vod").await;
    let before = snapshot(&engine, &ids).await;
    engine.shutdown().await;
    let backends = if config.kafka.is_some() { Backends::Services } else { Backends::Embedded };
    let offsets = topic_offsets(backends, &config.data_dir, Topic::LiveChunks);
    let processed: i64 = offsets.iter().map(|(_, committed, _)| committed).sum();
    assert!(processed > 0 && offsets.iter().all(|(_, committed, end)| committed == end), "{offsets:?}");

    lose(&config).await;
    let engine = TestEngine::start_with(config.clone()).await;
    assert_eq!(snapshot(&engine, &ids).await, before, "every stream, chunk and playlist is back");
    let (status, health) = engine.get_json("/health").await;
    assert_eq!(status, 200, "{health}");
    engine.shutdown().await;
    assert_eq!(topic_offsets(backends, &config.data_dir, Topic::LiveChunks), offsets, "replayed to the end");

    let engine = TestEngine::start_with(config.clone()).await;
    assert_eq!(snapshot(&engine, &ids).await, before, "a marked store is not replayed into");
    engine.shutdown().await;
}

/// Drops the MongoDB database an engine with `config` uses.
async fn drop_database(config: &Config) {
    let client = mongodb::Client::with_uri_str(config.mongo_uri.as_deref().unwrap()).await.unwrap();
    let db = client.database(&config.mongo_database);
    assert!(!db.list_collection_names().await.unwrap().is_empty(), "the database exists before");
    db.drop().await.unwrap();
}

async fn delete_metadata_file(config: &Config) {
    std::fs::remove_file(config.data_dir.join("metadata.redb")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn a_dropped_mongodb_database_is_rebuilt_from_kafka() {
    let data = tempfile::tempdir().unwrap();
    lost_metadata_is_rebuilt(services(data.path(), true, true), drop_database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn a_deleted_metadata_file_is_rebuilt_from_kafka() {
    let data = tempfile::tempdir().unwrap();
    lost_metadata_is_rebuilt(services(data.path(), true, false), delete_metadata_file).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn a_dropped_mongodb_database_is_rebuilt_from_the_embedded_log() {
    let data = tempfile::tempdir().unwrap();
    lost_metadata_is_rebuilt(services(data.path(), false, true), drop_database).await;
}

/// A client of the test broker, and the name the engine on `data` gives `topic`.
fn kafka_admin(data: &Path, topic: Topic) -> (AdminClient<DefaultClientContext>, String) {
    let config = Backends::Services.config(data);
    let admin = rdkafka::ClientConfig::new().set("bootstrap.servers", config.kafka.unwrap()).create().unwrap();
    (admin, format!("{}{}", config.kafka_topic_prefix, topic.name()))
}

/// Polls `/health` until one of its problems contains `text`; the body then.
async fn wait_problem(engine: &TestEngine, text: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..120 {
        let (status, health) = engine.get_json("/health").await;
        let found = health["problems"].as_array().is_some_and(|p| p.iter().any(|p| p.as_str().unwrap().contains(text)));
        if found {
            assert_eq!((status, health["status"].as_str()), (503, Some("degraded")), "{health}");
            return health;
        }
        last = health;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("/health never reported {text:?}; last: {last}");
}

/// On Kafka, `/health` is 503 with the reason while a partition's log ends before the offset
/// segflow committed (records lost on the broker, made here by committing past the end), and
/// while a topic is missing or has fewer partitions than segflow reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn health_reports_kafka_partitions_behind_their_offsets_and_missing_topics() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(Backends::Services, data.path(), 2).await;
    put_streams(&engine, 1).await;
    let (status, health) = engine.get_json("/health").await;
    assert_eq!((status, &health["problems"]), (200, &serde_json::json!([])), "{health}");
    engine.shutdown().await;

    let offsets = topic_offsets(Backends::Services, data.path(), Topic::LiveChunks);
    let (partition, _, end) = *offsets.iter().find(|(_, committed, _)| *committed > 0).unwrap();
    let beyond = end + 1000;
    crate::common::commit_offset(Backends::Services, data.path(), Topic::LiveChunks, partition, beyond);
    let engine = TestEngine::start_on(Backends::Services, data.path(), 2).await;
    let (_, name) = kafka_admin(data.path(), Topic::LiveChunks);
    let lost = format!(
        "Kafka topic {name} partition {partition} ends at offset {end}, before the offset {beyond} segflow \
         committed: the broker lost 1000 records"
    );
    let health = wait_problem(&engine, &lost).await;
    assert_eq!(health["backends"]["event_log"]["state"], "up", "{health}");

    let (admin, vod) = kafka_admin(data.path(), Topic::VodChunks);
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    for result in admin.delete_topics(&[vod.as_str()], &options).await.unwrap() {
        result.unwrap();
    }
    wait_problem(&engine, &format!("Kafka topic {vod} is missing")).await;
    let fewer = NewTopic::new(&vod, 1, TopicReplication::Fixed(1));
    for result in admin.create_topics(&[fewer], &options).await.unwrap() {
        result.unwrap();
    }
    let health = wait_problem(&engine, &format!("Kafka topic {vod} has a partition count of 1, below the 3")).await;
    let missing = format!("Kafka topic {vod} is missing");
    assert!(!health["problems"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().contains(&missing)), "{health}");
}
