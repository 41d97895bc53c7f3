//! Crash and restart of the real binary: `kill -9` after acknowledged ingests loses nothing and
//! duplicates no playlist entry; SIGTERM drains, commits every offset and exits 0.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{fetch_json, sha256_hex, spawn_segflow, start_stream_at, terminate};

struct Segflow {
    child: std::process::Child,
    base: String,
}

fn spawn(data_dir: &Path) -> Segflow {
    let (child, base) = spawn_segflow(data_dir);
    Segflow { child, base }
}

async fn put_chunk(client: &reqwest::Client, base: &str, id: &str, seq: u64) -> u16 {
    let bytes = format!("segment {seq} of {id}").repeat(100).into_bytes();
    client
        .put(format!("{base}/ingest/{id}/{seq}.ts"))
        .header("X-Sequence-Number", seq.to_string())
        .header("X-Duration-Ms", "2000")
        .header("X-Checksum-Sha256", sha256_hex(&bytes))
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn stream_doc(client: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    fetch_json(client, &format!("{base}/streams/{id}/metadata")).await
}

async fn wait_accepted(client: &reqwest::Client, base: &str, id: &str, n: u64) -> serde_json::Value {
    for _ in 0..400 {
        let doc = stream_doc(client, base, id).await;
        if doc["chunks_accepted"].as_u64() >= Some(n) {
            return doc;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("stream {id} never accepted {n} chunks");
}

async fn playlist(client: &reqwest::Client, base: &str, id: &str) -> String {
    let live = fetch_json(client, &format!("{base}/streams/{id}/live")).await;
    client.get(live["manifest_url"].as_str().unwrap()).send().await.unwrap().text().await.unwrap()
}

fn uris(playlist: &str) -> Vec<String> {
    playlist.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_sigterm_drains() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let first = spawn(data.path());
    let id = start_stream_at(&client, &first.base, r#"{"target_duration":2,"dvr_window_size":20}"#).await;
    for seq in 0..5 {
        assert_eq!(put_chunk(&client, &first.base, &id, seq).await, 201);
    }
    wait_accepted(&client, &first.base, &id, 5).await;
    // Acknowledged, then killed at once: maybe processed, maybe not, never lost.
    for seq in 5..12 {
        assert_eq!(put_chunk(&client, &first.base, &id, seq).await, 201);
    }
    let mut first = first;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();

    let second = spawn(data.path());
    let doc = wait_accepted(&client, &second.base, &id, 12).await;
    assert_eq!(doc["chunks_accepted"], 12, "{doc}");
    assert_eq!(doc["gaps_total"], 0, "{doc}");
    let expected: Vec<String> = (0..12).map(|s| format!("chunks/{s}.ts")).collect();
    assert_eq!(uris(&playlist(&client, &second.base, &id).await), expected, "each entry exactly once");
    assert_eq!(put_chunk(&client, &second.base, &id, 12).await, 201);
    wait_accepted(&client, &second.base, &id, 13).await;

    // SIGTERM: drains and exits 0, with every offset committed.
    let mut second = second;
    let exit = terminate(&mut second.child);
    assert_eq!(exit.code(), Some(0), "SIGTERM exits 0");
    for p in 0..6 {
        let log = std::fs::metadata(data.path().join(format!("log/live-chunks/{p}.log"))).unwrap().len();
        let committed = std::fs::read_to_string(data.path().join(format!("log/live-chunks/{p}.offset")))
            .map(|t| t.trim().parse::<u64>().unwrap())
            .unwrap_or(0);
        assert_eq!(committed, log, "partition {p} fully committed after a drain");
    }

    let third = spawn(data.path());
    let doc = stream_doc(&client, &third.base, &id).await;
    assert_eq!(doc["chunks_accepted"], 13, "{doc}");
    let expected: Vec<String> = (0..13).map(|s| format!("chunks/{s}.ts")).collect();
    assert_eq!(uris(&playlist(&client, &third.base, &id).await), expected);
    let mut third = third;
    third.child.kill().unwrap();
    third.child.wait().unwrap();
}
