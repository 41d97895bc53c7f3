//! Crash and restart of the real binary: `kill -9` after acknowledged ingests loses nothing and
//! duplicates no playlist entry; SIGTERM drains, commits every offset and exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sha256_hex;

struct Segflow {
    child: Child,
    base: String,
}

fn spawn(data_dir: &Path) -> Segflow {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segflow"))
        .args(["run", "--listen", "127.0.0.1:0", "-w", "2", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).expect("address printed").to_string();
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
    client.get(format!("{base}/streams/{id}/metadata")).send().await.unwrap().json().await.unwrap()
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
    let live: serde_json::Value =
        client.get(format!("{base}/streams/{id}/live")).send().await.unwrap().json().await.unwrap();
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
    let started: serde_json::Value = client
        .post(format!("{}/streams/start", first.base))
        .body(r#"{"target_duration":2,"dvr_window_size":20}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["stream_id"].as_str().unwrap().to_string();
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
    let status = Command::new("kill").args(["-TERM", &second.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = second.child.wait().unwrap();
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
