//! timely cluster mode across real processes: one computation over two `segflow` processes on
//! the test servers, either API serving any request, a video's rungs transcoded on both, and
//! a lost peer ending the other.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    StderrOnPanic, admin_client, clip, fetch_json, ffmpeg_decode, ffmpeg_segments, free_addresses, metric, sha256_hex,
    spawn_cluster, spawn_cluster_with, try_put_segment, upload_video, wait_video_final,
};

#[test]
fn a_cluster_on_embedded_backends_is_refused_naming_the_flags() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_segflow"))
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--processes", "2", "--process", "0", "--peers", "127.0.0.1:2101,127.0.0.1:2102"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success());
    assert!(!stdout.contains("listening"), "{stdout}");
    for needed in ["needs backends every process reaches", "--kafka", "--s3-endpoint", "--mongo-uri"] {
        assert!(stderr.contains(needed), "{needed:?} in {stderr}");
    }
}

/// Polls `base`'s document of stream `id` until `done`.
async fn wait_stream(client: &reqwest::Client, base: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let doc = fetch_json(client, &format!("{base}/streams/{id}/metadata")).await;
        if done(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "stream {id} never got there on {base}: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a live stream through `base`; its id and key.
async fn start(client: &reqwest::Client, base: &str) -> (String, String) {
    let response = client.post(format!("{base}/streams/start")).body(r#"{"target_duration":2}"#).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let started: Value = response.json().await.unwrap();
    (started["stream_id"].as_str().unwrap().into(), started["stream_key"].as_str().unwrap().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_run_one_live_computation_and_a_lost_peer_ends_the_other() {
    let (shared, media) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let segments = ffmpeg_segments(media.path(), 12);
    assert_eq!(segments.len(), 6);
    let peers = free_addresses(2);
    let mut cluster = spawn_cluster(shared.path(), &peers, 2);
    let _shown = StderrOnPanic(cluster.iter().map(|(_, _, stderr)| stderr.clone()).collect());
    let client = admin_client(shared.path());
    let bases: Vec<String> = cluster.iter().map(|(_, base, _)| base.clone()).collect();

    // Each process shows the cluster and hears its peer.
    for (process, base) in bases.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let health = loop {
            let health = fetch_json(&client, &format!("{base}/health")).await;
            if health["cluster"]["peers_connected"] == 1 || Instant::now() > deadline {
                break health;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let cluster = &health["cluster"];
        assert_eq!((cluster["processes"].as_u64(), cluster["process"].as_u64()), (Some(2), Some(process as u64)));
        assert_eq!(cluster["workers_per_process"], 2, "{health}");
        assert_eq!(cluster["peers_connected"], 1, "{health}");
        assert_eq!(cluster["peers"][0]["address"], peers[1 - process].as_str(), "{health}");
    }

    // A token made through process 0 works on process 1, and once revoked through process 0
    // it works on neither, at once: no process caches tokens on a cluster.
    let made = client.post(format!("{}/tokens", bases[0])).body(r#"{"name":"viewer","scopes":["read"]}"#).send();
    let made: Value = made.await.unwrap().json().await.unwrap();
    let viewer = format!("Bearer {}", made["token"].as_str().unwrap());
    let read_with = |base: &str, token: &str| {
        reqwest::Client::new().get(format!("{base}/dead-letters")).header("authorization", token).send()
    };
    assert_eq!(read_with(&bases[1], &viewer).await.unwrap().status(), 200);
    let token_id = made["token_id"].as_str().unwrap();
    let revoked = client.delete(format!("{}/tokens/{token_id}", bases[0])).send().await.unwrap();
    assert_eq!(revoked.status(), 200);
    for base in &bases {
        assert_eq!(read_with(base, &viewer).await.unwrap().status(), 401, "a revoked token on {base}");
    }

    // One stream, its segments sent to either process: 0 1 3 2 (late, fills 2) 4 (corrupted) 5.
    let (id, key) = start(&client, &bases[0]).await;
    for (turn, (seq, corrupt)) in
        [(0, false), (1, false), (3, false), (2, false), (4, true), (5, false)].into_iter().enumerate()
    {
        let mut bytes = segments[seq].bytes.clone();
        let checksum = sha256_hex(&bytes);
        if corrupt {
            bytes[1000] ^= 0xff;
        }
        let response = client
            .put(format!("{}/ingest/{id}/{key}/seg{seq}.ts", bases[turn % 2]))
            .header("X-Sequence-Number", seq.to_string())
            .header("X-Duration-Ms", segments[seq].duration_ms.to_string())
            .header("X-Checksum-Sha256", checksum)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "segment {seq} through process {}", turn % 2);
    }
    let mut docs = Vec::new();
    for base in &bases {
        // Counted from the gap set wherever its worker is: 2 was filled, 4 failed its checksum.
        let doc = wait_stream(&client, base, &id, |doc| {
            doc["chunks_accepted"] == 5 && doc["gap_slots"]["checksum_failed"] == 1
        })
        .await;
        assert_eq!((doc["gaps_total"].as_u64(), doc["checksum_failures"].as_u64()), (Some(2), Some(1)), "{doc}");
        assert_eq!(doc["gap_slots"]["missing"], 0, "{doc}");
        docs.push(doc);
    }
    assert_eq!(docs[0], docs[1], "both APIs give the same document");
    // Ended through the process that did not start it, at once, and seen by both.
    let began = Instant::now();
    let ended = client
        .post(format!("{}/streams/end", bases[1]))
        .body(format!(r#"{{"stream_id":"{id}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    assert!(began.elapsed() < Duration::from_secs(5), "the end waited {:?}", began.elapsed());
    wait_stream(&client, &bases[0], &id, |doc| doc["status"] == "vod").await;
    // Each process signs a URL of the ended playlist that ffmpeg decodes (one signing secret).
    for base in &bases {
        let live = fetch_json(&client, &format!("{base}/streams/{id}/live")).await;
        let url = live["manifest_url"].as_str().unwrap();
        let playlist = reqwest::get(url).await.unwrap().text().await.unwrap();
        assert_eq!(playlist.matches("#EXT-X-GAP").count(), 1, "{playlist}");
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        let (ok, frames, stderr) = ffmpeg_decode(url);
        assert!(ok && frames >= 100, "{frames} frames from {url}: {stderr}");
    }

    // Segments sent to either process while process 1 is killed: process 0 exits, naming it,
    // and once both are started again every acknowledged segment is there.
    let (second, _) = start(&client, &bases[1]).await;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let (client, bases, second, acknowledged) =
            (client.clone(), bases.clone(), second.clone(), acknowledged.clone());
        tokio::spawn(async move {
            let mut unanswered = 0;
            for seq in 0..1000u64 {
                match try_put_segment(&client, &bases[(seq % 2) as usize], &second, seq).await {
                    Some(201) => acknowledged.lock().unwrap().push(seq),
                    Some(_) => {}
                    None if unanswered == 4 => break, // both are gone
                    None => unanswered += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    while acknowledged.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster[1].0.kill();
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = cluster[0].0.exited() {
            break status;
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "process 0 still runs without its peer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = cluster[0].2.text();
    assert!(!status.success(), "{status}");
    assert!(stderr.contains(&format!("lost peer process 1 ({})", peers[1])), "{stderr}");
    println!("process 0 exited {:?} after its peer was killed", killed.elapsed());
    sender.await.unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    drop(cluster);

    let mut cluster = spawn_cluster(shared.path(), &peers, 2);
    let _shown = StderrOnPanic(cluster.iter().map(|(_, _, stderr)| stderr.clone()).collect());
    let bases: Vec<String> = cluster.iter().map(|(_, base, _)| base.clone()).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (process, _, stderr) in &mut cluster {
        assert!(process.exited().is_none(), "a restarted process exited: {}", stderr.text());
    }
    let count = acknowledged.len() as u64;
    for base in &bases {
        wait_stream(&client, base, &second, |doc| doc["chunks_accepted"].as_u64() >= Some(count)).await;
        let chunks = fetch_json(&client, &format!("{base}/streams/{second}/chunks?limit=1000")).await;
        let stored: Vec<u64> =
            chunks["chunks"].as_array().unwrap().iter().map(|c| c["chunk_index"].as_u64().unwrap()).collect();
        let lost: Vec<&u64> = acknowledged.iter().filter(|seq| !stored.contains(seq)).collect();
        assert!(lost.is_empty(), "acknowledged but lost: {lost:?} of {acknowledged:?}");
        // Nothing doubled: the playlist lists each stored segment of its window once.
        let live = fetch_json(&client, &format!("{base}/streams/{second}/live")).await;
        let playlist = reqwest::get(live["manifest_url"].as_str().unwrap()).await.unwrap().text().await.unwrap();
        let entries: Vec<&str> = playlist.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
        let unique: std::collections::HashSet<&&str> = entries.iter().collect();
        assert_eq!(unique.len(), entries.len(), "{playlist}");
        assert!(!entries.is_empty(), "{playlist}");
        let first = fetch_json(&client, &format!("{base}/streams/{id}/metadata")).await;
        assert_eq!((first["status"].as_str(), first["chunks_accepted"].as_u64()), (Some("vod"), Some(5)), "{first}");
    }
    println!("{count} segments acknowledged around the kill, 0 lost");
}

/// The process of a 2 x 2 cluster whose worker gets a transcode task of `rung` of video `id`
/// in per-rung mode (timely routes by the task's hash modulo the 4 workers).
fn process_of_rung(id: &str, rung: &str) -> usize {
    (segflow::model::stream_hash(&format!("{id}/{rung}")) % 4 / 2) as usize
}

async fn rungs_transcoded(client: &reqwest::Client, base: &str) -> u64 {
    metric(client, base, "segflow_vod_rungs_transcoded_total").await as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_videos_rungs_are_transcoded_on_both_processes_and_it_plays_from_either() {
    let (shared, media) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = clip(media.path(), "talk.mp4", "1920x1080", 4, true);
    let peers = free_addresses(2);
    let settings = [("SEGFLOW_TRANSCODE_MODE", "per_rung"), ("SEGFLOW_TRANSCODE_JOBS", "2")];
    let cluster = spawn_cluster_with(shared.path(), &peers, 2, &settings);
    let _shown = StderrOnPanic(cluster.iter().map(|(_, _, stderr)| stderr.clone()).collect());
    let client = admin_client(shared.path());
    let bases: Vec<String> = cluster.iter().map(|(_, base, _)| base.clone()).collect();

    // Two videos, uploaded through process 1, followed through process 0.
    let mut expected = [0u64; 2];
    for title in ["first", "second"] {
        let (status, reply) = upload_video(&client, &bases[1], &source, title).await;
        assert_eq!(status, 201, "{reply}");
        let id = reply["stream_id"].as_str().unwrap().to_string();
        let doc = wait_video_final(&client, &bases[0], &id).await;
        assert_eq!(doc["status"], "ready", "{doc}");
        assert_eq!(doc["variants_generated"], serde_json::json!(["1080p", "720p", "480p", "360p"]), "{doc}");
        for rung in ["1080p", "720p", "480p", "360p"] {
            expected[process_of_rung(&id, rung)] += 1;
        }
        // Either process signs a master playlist that plays every rung.
        for base in &bases {
            let manifest = fetch_json(&client, &format!("{base}/vod/{id}/manifest")).await;
            let (ok, frames, stderr) = ffmpeg_decode(manifest["manifest_url"].as_str().unwrap());
            assert!(ok && frames == 4 * 4 * 30, "every rung's 4 s at 30 fps from {base}: {frames}; {stderr}");
        }
    }
    // Each rung was encoded by the process timely routed its task to.
    let done = [rungs_transcoded(&client, &bases[0]).await, rungs_transcoded(&client, &bases[1]).await];
    assert_eq!(done, expected, "rungs encoded by process 0 and 1");
    println!("rungs encoded by process 0 and 1: {done:?}");
}
