//! Live recordings end to end: a stream of real FFmpeg segments ends, and every stored chunk
//! (its gap kept) becomes a VOD playlist and a video of the library, played, downloaded and
//! deleted through the API; on request the recording is also transcoded from its chunks.

on_both_backends!(
    an_ended_stream_becomes_a_video_of_every_chunk_with_its_gap,
    a_recording_asked_to_be_transcoded_becomes_a_ladder_made_from_its_chunks,
    a_live_streams_thumbnail_follows_its_newest_chunk,
);

use serde_json::Value;

use crate::common::{
    Backends, Player, TestEngine, ffmpeg_decode, ffmpeg_segments, list_keys, sha256_hex, wait_video_final,
};

/// 30 s of segments pushed to a stream with a 5-slot window, all but `skipped`; then the end.
/// Returns the stream's id and the end's answer.
async fn record(engine: &TestEngine, media: &std::path::Path, start: &str, skipped: usize) -> (String, Value) {
    let segments = ffmpeg_segments(media, 30);
    assert_eq!(segments.len(), 15);
    let (status, started) = engine.post_json("/streams/start", start).await;
    assert_eq!(status, 201, "{started}");
    let id = started["stream_id"].as_str().unwrap().to_string();
    for (seq, segment) in segments.iter().enumerate().filter(|(seq, _)| *seq != skipped) {
        let response = engine
            .client
            .put(engine.url(&format!("/ingest/{id}/seg{seq}.ts")))
            .header("X-Sequence-Number", seq.to_string())
            .header("X-Duration-Ms", segment.duration_ms.to_string())
            .header("X-Checksum-Sha256", sha256_hex(&segment.bytes))
            .body(segment.bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "segment {seq}");
    }
    engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 14).await;
    new_thumbnail(engine, started["thumbnail_url"].as_str().unwrap(), &[]).await;
    let (status, ended) = engine.post_json("/streams/end", &format!(r#"{{"stream_id":"{id}"}}"#)).await;
    assert_eq!(status, 200, "{ended}");
    (id, ended)
}

async fn text(engine: &TestEngine, url: &str) -> String {
    let response = engine.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.text().await.unwrap()
}

async fn an_ended_stream_becomes_a_video_of_every_chunk_with_its_gap(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let body = r#"{"title":"Match day","target_duration":2,"dvr_window_size":5}"#;
    let (id, ended) = record(&engine, media.path(), body, 7).await;
    assert_eq!(ended["video_url"], format!("{}/videos/{id}", engine.base));

    // The live playlist keeps its window of 5; the recording has all 15 slots.
    let live = text(&engine, ended["manifest_url"].as_str().unwrap()).await;
    assert_eq!(live.matches("#EXTINF").count(), 5, "{live}");
    let video = wait_video_final(&engine.client, &engine.base, &id).await;
    assert_eq!(video["status"], "ready", "{video}");
    assert_eq!((video["kind"].as_str(), video["title"].as_str()), (Some("recording"), Some("Match day")));
    assert_eq!(video["variants_generated"], serde_json::json!(["240p"]), "played as recorded, 320x240");
    assert_eq!(video["source"]["duration_s"], 28.0, "14 chunks of 2 s");
    assert_eq!(video["poster_path"], format!("vod-variants/{id}/poster.jpg"), "the live thumbnail");
    let (_, listed) = engine.get_json("/videos?kind=recording").await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["videos"][0]["stream_id"], id.as_str());
    let (_, uploads) = engine.get_json("/videos?kind=upload").await;
    assert_eq!(uploads["total"], 0);

    let (status, doc) = engine.get_json(&format!("/videos/{id}")).await;
    assert_eq!(status, 200);
    let recording = text(&engine, doc["recording_url"].as_str().unwrap()).await;
    assert!(recording.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{recording}");
    assert!(recording.ends_with("#EXT-X-ENDLIST\n"), "{recording}");
    assert_eq!(recording.matches("#EXTINF").count(), 15, "{recording}");
    assert_eq!(recording.matches("#EXT-X-GAP").count(), 1, "{recording}");
    assert!(recording.contains("#EXT-X-GAP\n#EXTINF:2.000,\ngap/7.ts\n"), "{recording}");
    // The master names the recording; a player decodes every chunk through it: 14 x 2 s at 25 fps.
    let master = text(&engine, doc["manifest_url"].as_str().unwrap()).await;
    assert!(master.contains("RESOLUTION=320x240") && master.contains("\nrecording.m3u8\n"), "{master}");
    let (_ok, frames, stderr) = ffmpeg_decode(doc["manifest_url"].as_str().unwrap());
    assert_eq!(frames, 14 * 50, "ffmpeg said:\n{stderr}");
    // hls.js, in a browser, plays it to the end over the gap's 2 s.
    let seen = Player::start(doc["manifest_url"].as_str().unwrap(), 8.0).report();
    eprintln!("hls.js: {seen}");
    assert!(seen["ended"] == true && seen["fatal"].is_null(), "{seen}");
    assert!((seen["duration"].as_f64().unwrap() - 30.0).abs() < 0.5, "{seen}");
    assert!(seen["decoded_frames"].as_u64().unwrap() >= 14 * 50 * 9 / 10, "{seen}");
    let (status, stream) = engine.get_json(&format!("/videos/{id}/stream?quality=240p")).await;
    assert_eq!(status, 200, "{stream}");
    assert!(stream["url"].as_str().unwrap().ends_with(&format!("/{id}/recording.m3u8")), "{stream}");
    let (status, _) = engine.get_json(&format!("/videos/{id}/stream?quality=720p")).await;
    assert_eq!(status, 404);

    // One MP4 of the recording, remuxed from its chunks, with Range.
    let download = engine.client.get(engine.url(&format!("/videos/{id}/download"))).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let mp4 = download.bytes().await.unwrap();
    assert_eq!(&mp4[4..8], b"ftyp");
    let file = media.path().join("recording.mp4");
    std::fs::write(&file, &mp4).unwrap();
    let (_ok, frames, stderr) = ffmpeg_decode(file.to_str().unwrap());
    assert_eq!(frames, 14 * 50, "ffmpeg said:\n{stderr}");
    let range = engine.client.get(engine.url(&format!("/videos/{id}/download"))).header("Range", "bytes=0-99");
    assert_eq!(range.send().await.unwrap().status(), 206);

    // A media job takes the recording as its source, read from its chunks.
    let body = serde_json::json!({"operation": "extract_audio", "video_id": id}).to_string();
    let (status, job) = engine.post_json("/jobs", &body).await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap();
    let mut job = Value::Null;
    for _ in 0..600 {
        job = engine.get_json(&format!("/jobs/{job_id}")).await.1;
        if job["status"] == "completed" || job["status"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        (job["status"].as_str(), job["output"]["audio_codec"].as_str()),
        (Some("completed"), Some("mp3")),
        "{job}"
    );
    assert!(job["output"]["duration_s"].as_f64().is_some_and(|s| (27.0..29.5).contains(&s)), "14 chunks: {job}");

    // Deleting the video removes the stream's chunks and playlists with it.
    let chunks = list_keys(backends, &engine.data_dir, &format!("live-streams/{id}/")).await;
    assert_eq!(chunks.len(), 14, "{chunks:?}");
    let deleted = engine.client.delete(engine.url(&format!("/videos/{id}"))).send().await.unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    for _ in 0..200 {
        if engine.get_json(&format!("/videos/{id}")).await.0 == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(engine.get_json(&format!("/videos/{id}")).await.0, 404);
    for bucket in ["live-streams", "manifests", "vod-variants"] {
        let left = list_keys(backends, &engine.data_dir, &format!("{bucket}/{id}/")).await;
        assert!(left.is_empty(), "{bucket}: {left:?}");
    }
    // Its live documents went too: the stream, its chunks.
    assert_eq!(engine.get_json(&format!("/streams/{id}/metadata")).await.0, 404);
    let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
    assert!(chunks["chunks"].as_array().is_none_or(|c| c.is_empty()), "{chunks}");
    engine.shutdown().await;
}

async fn a_recording_asked_to_be_transcoded_becomes_a_ladder_made_from_its_chunks(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let body = r#"{"target_duration":2,"dvr_window_size":5,"record":{"transcode":true}}"#;
    let (status, refused) = engine.post_json("/streams/start", r#"{"record":{"transcode":"yes"}}"#).await;
    assert_eq!(status, 400, "{refused}");
    let (id, _) = record(&engine, media.path(), body, 7).await;
    let video = wait_video_final(&engine.client, &engine.base, &id).await;
    assert_eq!(video["status"], "ready", "{video}");
    assert_eq!(video["kind"], "recording");
    assert_eq!(video["variants"][0]["playlist_path"], format!("vod-variants/{id}/240p/index.m3u8"));
    let (_, doc) = engine.get_json(&format!("/videos/{id}")).await;
    let master = text(&engine, doc["manifest_url"].as_str().unwrap()).await;
    assert!(master.contains("\n240p/index.m3u8\n"), "{master}");
    // Made from the chunks: nothing was uploaded as a source. FFmpeg keeps the gap's 2 s (its
    // frames repeated, as a constant rate needs): 30 s at 25 fps decode, give or take a frame.
    assert!(list_keys(backends, &engine.data_dir, &format!("vod-raw/{id}/")).await.is_empty());
    let (_ok, frames, stderr) = ffmpeg_decode(doc["manifest_url"].as_str().unwrap());
    assert!((15 * 50 - 1..=15 * 50 + 1).contains(&frames), "{frames} frames; ffmpeg said:\n{stderr}");
    let recording = text(&engine, doc["recording_url"].as_str().unwrap()).await;
    assert_eq!(recording.matches("#EXTINF").count(), 15, "the recording stays: {recording}");
    assert!(doc["poster_url"].is_string() && doc["storyboard_url"].is_string(), "{doc}");
    engine.shutdown().await;
}

/// The thumbnail's JPEG once it differs from `before`, within 10 s.
async fn new_thumbnail(engine: &TestEngine, url: &str, before: &[u8]) -> Vec<u8> {
    for _ in 0..200 {
        let response = engine.client.get(url).send().await.unwrap();
        if response.status() == 200 {
            assert_eq!(response.headers()["content-type"], "image/jpeg");
            let bytes = response.bytes().await.unwrap().to_vec();
            if bytes != before {
                return bytes;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no new thumbnail at {url}");
}

async fn a_live_streams_thumbnail_follows_its_newest_chunk(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let segments = ffmpeg_segments(media.path(), 6);
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let (status, started) = engine.post_json("/streams/start", r#"{"target_duration":2}"#).await;
    assert_eq!(status, 201);
    let id = started["stream_id"].as_str().unwrap().to_string();
    let url = started["thumbnail_url"].as_str().unwrap().to_string();
    assert_eq!(engine.client.get(&url).send().await.unwrap().status(), 404, "none before a chunk");
    let put = |seq: usize| {
        let segment = &segments[seq];
        engine
            .client
            .put(engine.url(&format!("/ingest/{id}/seg{seq}.ts")))
            .header("X-Sequence-Number", seq.to_string())
            .header("X-Duration-Ms", segment.duration_ms.to_string())
            .body(segment.bytes.clone())
            .send()
    };
    assert_eq!(put(0).await.unwrap().status(), 201);
    let first = new_thumbnail(&engine, &url, &[]).await;
    let frame = media.path().join("first.jpg");
    std::fs::write(&frame, &first).unwrap();
    let probed = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(&frame)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probed.stdout).trim(), "320,240");
    // A newer chunk, once the refresh interval has passed, gives a new picture (the test
    // pattern's clock moved on).
    tokio::time::sleep(segflow::dataflow::live::thumbnails::REFRESH).await;
    assert_eq!(put(2).await.unwrap().status(), 201);
    let newer = new_thumbnail(&engine, &url, &first).await;
    assert_ne!(newer, first);
    engine.shutdown().await;
}
