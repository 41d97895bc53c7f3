//! Crash and restart of the real binary: `kill -9` after acknowledged ingests loses nothing and
//! duplicates no playlist entry; SIGTERM drains, commits every offset and exits 0.

use std::path::Path;

use segflow::model::Topic;
use std::time::Duration;

use crate::common::{Backends, EngineProcess, fetch_json, put_segment, spawn_segflow_on, start_stream_at};

on_both_backends!(
    kill_9_loses_nothing_and_sigterm_drains,
    the_gap_set_is_whole_again_after_kill_9,
    a_transcode_killed_mid_way_is_redone_and_a_replay_changes_nothing,
    a_media_job_killed_mid_way_runs_again_into_the_same_output,
);

struct Segflow {
    child: EngineProcess,
    base: String,
}

fn spawn_on(backends: Backends, data_dir: &Path) -> Segflow {
    let (child, base) = spawn_segflow_on(backends, data_dir);
    Segflow { child, base }
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

/// The playlist's segment URIs, as paths below the stream (presigned S3 URLs included).
fn uris(playlist: &str, id: &str) -> Vec<String> {
    let below_stream = |uri: &str| {
        let path = uri.split('?').next().unwrap_or(uri);
        path.split_once(&format!("{id}/")).map_or(path, |(_, rest)| rest).to_string()
    };
    playlist.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(below_stream).collect()
}

async fn kill_9_loses_nothing_and_sigterm_drains(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let client = crate::common::admin_client(data.path());
    let spawn = |dir: &Path| spawn_on(backends, dir);
    let first = spawn(data.path());
    let id = start_stream_at(&client, &first.base, r#"{"target_duration":2,"dvr_window_size":20}"#).await;
    for seq in 0..5 {
        assert_eq!(put_segment(&client, &first.base, &id, seq).await, 201);
    }
    wait_accepted(&client, &first.base, &id, 5).await;
    // Acknowledged, then killed at once: maybe processed, maybe not, never lost.
    for seq in 5..12 {
        assert_eq!(put_segment(&client, &first.base, &id, seq).await, 201);
    }
    let mut first = first;
    first.child.kill(); // SIGKILL

    let second = spawn(data.path());
    let doc = wait_accepted(&client, &second.base, &id, 12).await;
    assert_eq!(doc["chunks_accepted"], 12, "{doc}");
    assert_eq!(doc["gaps_total"], 0, "{doc}");
    let expected: Vec<String> = (0..12).map(|s| format!("chunks/{s}.ts")).collect();
    assert_eq!(uris(&playlist(&client, &second.base, &id).await, &id), expected, "each entry exactly once");
    assert_eq!(put_segment(&client, &second.base, &id, 12).await, 201);
    wait_accepted(&client, &second.base, &id, 13).await;

    // SIGTERM: drains and exits 0, with every offset committed.
    let mut second = second;
    let exit = second.child.terminate();
    assert_eq!(exit.code(), Some(0), "SIGTERM exits 0");
    for (p, committed, end) in crate::common::topic_offsets(backends, data.path(), Topic::LiveChunks) {
        assert_eq!(committed, end, "partition {p} fully committed after a drain");
    }

    let third = spawn(data.path());
    let doc = stream_doc(&client, &third.base, &id).await;
    assert_eq!(doc["chunks_accepted"], 13, "{doc}");
    let expected: Vec<String> = (0..13).map(|s| format!("chunks/{s}.ts")).collect();
    assert_eq!(uris(&playlist(&client, &third.base, &id).await, &id), expected);
    let mut third = third;
    third.child.kill();
}

/// Waits until the stream's window has `missing` gap slots, as the gap set counts them.
async fn wait_missing(client: &reqwest::Client, base: &str, id: &str, missing: u64) {
    for _ in 0..400 {
        if stream_doc(client, base, id).await["gap_slots"]["missing"].as_u64() == Some(missing) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("stream {id} never had {missing} missing slots: {}", stream_doc(client, base, id).await);
}

/// The gap set lives in the dataflow: after `kill -9` the restored streams' gaps are counted
/// again, so a new gap adds to them and a late chunk takes its own out.
async fn the_gap_set_is_whole_again_after_kill_9(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let client = crate::common::admin_client(data.path());
    let mut first = spawn_on(backends, data.path());
    let id = start_stream_at(&client, &first.base, r#"{"target_duration":2,"dvr_window_size":20}"#).await;
    for seq in [0, 1, 3] {
        assert_eq!(put_segment(&client, &first.base, &id, seq).await, 201);
    }
    wait_missing(&client, &first.base, &id, 1).await;
    first.child.kill(); // SIGKILL

    let mut second = spawn_on(backends, data.path());
    assert_eq!(put_segment(&client, &second.base, &id, 5).await, 201);
    wait_missing(&client, &second.base, &id, 2).await; // 2 from before the crash, and 4
    assert_eq!(put_segment(&client, &second.base, &id, 2).await, 201);
    wait_missing(&client, &second.base, &id, 1).await;
    let doc = stream_doc(&client, &second.base, &id).await;
    assert_eq!(
        (doc["gap_slots"]["checksum_failed"].as_u64(), doc["health"].as_str()),
        (Some(0), Some("gaps")),
        "{doc}"
    );
    second.child.kill();
}

/// A transcode killed with `kill -9` is redone after the restart into the same files; a
/// replayed upload event of a finished video changes nothing.
async fn a_transcode_killed_mid_way_is_redone_and_a_replay_changes_nothing(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let spawn = |dir: &Path| spawn_on(backends, dir);
    let media = tempfile::tempdir().unwrap();
    let source = crate::common::clip(media.path(), "clip.mp4", "1280x720", 6, true);
    let client = crate::common::admin_client(data.path());
    let mut first = spawn(data.path());
    let (status, reply) = crate::common::upload_video(&client, &first.base, &source, "interrupted").await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["stream_id"].as_str().unwrap().to_string();
    let transcoding =
        |doc: &serde_json::Value| doc["status"] == "transcoding" && doc["progress_pct"].as_f64() > Some(0.0);
    crate::common::wait_video(&client, &first.base, &id, transcoding).await;
    first.child.kill(); // SIGKILL, mid-transcode

    let mut second = spawn(data.path());
    let doc = crate::common::wait_video_final(&client, &second.base, &id).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    let history: Vec<&str> =
        doc["status_history"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["uploaded", "processing", "transcoding", "processing", "transcoding", "ready"]);
    // Exactly the files the playlists name: nothing left over from the killed attempt.
    let store = crate::common::open_store(backends, data.path()).await;
    for rung in ["720p", "480p", "360p"] {
        let dir = format!("vod-variants/{id}/{rung}/");
        let text = store.get_bytes(&format!("{dir}index.m3u8")).await.unwrap().unwrap();
        let playlist = m3u8_rs::parse_media_playlist_res(&text).unwrap();
        let mut named: Vec<String> = playlist.segments.iter().map(|s| format!("{dir}{}", s.uri)).collect();
        named.push(format!("{dir}index.m3u8"));
        named.sort();
        assert_eq!(crate::common::list_keys(backends, data.path(), &dir).await, named, "{rung}");
    }
    let work = data.path().join("work");
    assert!(!work.join(&id).exists() && !work.join(format!("{id}.source")).exists(), "work files are cleaned up");
    let manifest = fetch_json(&client, &format!("{}/vod/{id}/manifest", second.base)).await;
    let (ok, frames, stderr) = crate::common::ffmpeg_decode(manifest["manifest_url"].as_str().unwrap());
    assert!(ok && frames == 3 * 6 * 30, "{frames} frames; {stderr}");
    assert!(second.child.terminate().success());

    // Forget the committed offsets: the upload event is read again, and changes nothing.
    let offsets_committed = || {
        let offsets = crate::common::topic_offsets(backends, data.path(), Topic::VodChunks);
        offsets.iter().any(|(_, _, end)| *end > 0) && offsets.iter().all(|(_, committed, end)| committed == end)
    };
    crate::common::forget_offsets(backends, data.path(), Topic::VodChunks);
    assert!(!offsets_committed());
    let mut third = spawn(data.path());
    for _ in 0..200 {
        if offsets_committed() {
            break; // the replayed event went through the whole VOD dataflow
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(offsets_committed(), "the replayed event was processed and its offset committed");
    let again = fetch_json(&client, &format!("{}/vod/{id}/metadata", third.base)).await;
    assert_eq!(again["status_history"], doc["status_history"], "a replay must not redo a finished video");
    assert!(third.child.terminate().success());
}

async fn a_media_job_killed_mid_way_runs_again_into_the_same_output(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = crate::common::clip(media.path(), "clip.mp4", "640x360", 10, true);
    let client = crate::common::admin_client(data.path());
    let mut first = spawn_on(backends, data.path());
    let form = reqwest::multipart::Form::new()
        .text("operation", "resize")
        .text("params", r#"{"height": 1080}"#)
        .part("file", reqwest::multipart::Part::bytes(std::fs::read(&source).unwrap()).file_name("clip.mp4"));
    let reply: serde_json::Value =
        client.post(format!("{}/jobs", first.base)).multipart(form).send().await.unwrap().json().await.unwrap();
    let id = reply["job_id"].as_str().unwrap().to_string();
    let job = |base: String| {
        let (client, id) = (client.clone(), id.clone());
        async move { fetch_json(&client, &format!("{base}/jobs/{id}")).await }
    };
    for _ in 0..1200 {
        if job(first.base.clone()).await["progress"].as_f64() > Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(job(first.base.clone()).await["status"], "processing");
    first.child.kill(); // SIGKILL, while FFmpeg runs

    let mut second = spawn_on(backends, data.path());
    let mut done = serde_json::Value::Null;
    for _ in 0..2400 {
        done = job(second.base.clone()).await;
        if done["status"] != "processing" && done["status"] != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!((done["output"]["width"].as_u64(), done["output"]["height"].as_u64()), (Some(1920), Some(1080)));
    let outputs = crate::common::list_keys(backends, data.path(), &format!("vod-variants/{id}/")).await;
    assert_eq!(outputs, [format!("vod-variants/{id}/output/{id}.mp4")], "one output, at the same key");
    assert!(!data.path().join("work").join(&id).exists(), "work files are cleaned up");
    assert!(second.child.terminate().success());
}
