//! Damage to the data dir between runs: the data dir heals or segflow refuses to start, naming
//! the file and what to do; it never starts healthy with acknowledged data gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use segflow::config::Config;
use segflow::log::embedded::EmbeddedLog;
use segflow::model::Topic;

use crate::common::{TestEngine, put_segment};

const CHUNKS: u64 = 6;

/// Starts `streams` streams with [`CHUNKS`] chunks each through the API, then stops the engine
/// (every offset committed); returns their ids.
async fn write_streams(data: &Path, streams: usize) -> Vec<String> {
    let engine = TestEngine::start(data, 2).await;
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
    engine.shutdown().await;
    ids
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
