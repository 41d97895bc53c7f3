//! VOD end to end: real uploads through the API, real FFmpeg transcodes, checked with
//! `ffprobe` and played back through the signed master playlist.

on_both_backends!(
    a_1080p_upload_with_audio_becomes_a_four_rung_ladder_that_plays,
    a_small_silent_upload_is_never_upscaled_and_has_no_audio,
    a_phone_video_comes_out_upright_at_a_constant_rate_laddered_by_its_short_side,
    a_corrupt_upload_fails_with_a_reason_and_bad_requests_change_nothing,
    producers_that_store_the_source_themselves_post_its_key,
    per_rung_mode_transcodes_each_rung_as_a_task_of_its_own,
    an_upload_plays_while_it_is_processed_and_its_playlists_end_as_vod,
);

use std::path::Path;
use std::process::Command;

use crate::common::{Backends, Player, TestEngine, clip, upload_video, wait_video, wait_video_final};
use serde_json::{Value, json};

fn ffprobe_json(args: &[&str], target: &str) -> Value {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json"])
        .args(args)
        .arg(target)
        .output()
        .expect("ffprobe runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Segment durations of a rung's media playlist in the store.
async fn segment_durations(engine: &TestEngine, playlist_key: &str) -> Vec<f32> {
    let text = engine.store.get_bytes(playlist_key).await.unwrap().expect("the playlist is stored");
    let playlist = m3u8_rs::parse_media_playlist_res(&text).unwrap();
    assert!(playlist.end_list, "VOD media playlists end with ENDLIST");
    playlist.segments.iter().map(|s| s.duration).collect()
}

async fn a_1080p_upload_with_audio_becomes_a_four_rung_ladder_that_plays(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "talk.mp4", "1920x1080", 4, true);
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let (status, reply) = upload_video(&engine.client, &engine.base, &source, "A talk").await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["status"], "uploaded");
    let id = reply["stream_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("vod-"));
    assert_eq!(reply["size_bytes"], std::fs::metadata(&source).unwrap().len());

    let doc = wait_video_final(&engine.client, &engine.base, &id).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    let history: Vec<&str> =
        doc["status_history"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["uploaded", "processing", "transcoding", "ready"]);
    assert_eq!(doc["variants_generated"], serde_json::json!(["1080p", "720p", "480p", "360p"]));
    assert_eq!(doc["progress_pct"], 100.0);
    assert!(doc["processing_latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(doc["manifest_path"], format!("manifests/{id}/vod_manifest.m3u8"));
    assert_eq!(doc["source"]["audio_codec"], "aac");

    // Every rung: the right size and codec, and the same segment boundaries.
    let mut boundaries = Vec::new();
    for (variant, height) in doc["variants"].as_array().unwrap().iter().zip([1080, 720, 480, 360]) {
        let playlist_key = variant["playlist_path"].as_str().unwrap();
        boundaries.push(segment_durations(&engine, playlist_key).await);
        let first_segment = first_segment(&engine, playlist_key, media.path()).await;
        let probed = ffprobe_json(&["-show_streams"], first_segment.to_str().unwrap());
        let streams = probed["streams"].as_array().unwrap();
        let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
        assert_eq!(video["codec_name"], "h264");
        assert_eq!(video["height"], height);
        assert!(streams.iter().any(|s| s["codec_type"] == "audio" && s["codec_name"] == "aac"));
    }
    assert!(boundaries.iter().all(|b| b == &boundaries[0]), "segment boundaries differ: {boundaries:?}");
    assert_eq!(boundaries[0], [2.0, 2.0]);

    // The signed master playlist alone: a player reaches every variant and segment.
    let (status, manifest) = engine.get_json(&format!("/vod/{id}/manifest")).await;
    assert_eq!(status, 200, "{manifest}");
    let url = manifest["manifest_url"].as_str().unwrap();
    let master_text = engine.client.get(url).send().await.unwrap().text().await.unwrap();
    let master = m3u8_rs::parse_master_playlist_res(master_text.as_bytes()).unwrap();
    assert_eq!(master.variants.len(), 4, "{master_text}");
    for variant in &master.variants {
        assert!(variant.average_bandwidth.unwrap() <= variant.bandwidth, "{master_text}");
        assert!(variant.codecs.as_deref().unwrap().contains("mp4a.40.2"), "{master_text}");
        assert!(variant.frame_rate.is_some() && variant.resolution.is_some(), "{master_text}");
    }
    let (ok, frames, stderr) = crate::common::ffmpeg_decode(url);
    assert!(ok, "{stderr}");
    assert_eq!(frames, 4 * 4 * 30, "every rung's 4 s at 30 fps; ffmpeg said:\n{stderr}");
    let poster = engine.client.get(manifest["poster_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(poster.headers()["content-type"], "image/jpeg");
    assert!(poster.bytes().await.unwrap().starts_with(&[0xFF, 0xD8]));
    engine.shutdown().await;
}

async fn a_small_silent_upload_is_never_upscaled_and_has_no_audio(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "small.mkv", "640x480", 2, false);
    let engine = TestEngine::start_on(backends, data.path(), 1).await;
    let (status, reply) = upload_video(&engine.client, &engine.base, &source, "small").await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["stream_id"].as_str().unwrap().to_string();
    // Not ready yet: the manifest is a 409 that says where the video stands.
    let (status, early) = engine.get_json(&format!("/vod/{id}/manifest")).await;
    if status != 200 {
        assert_eq!(status, 409, "{early}");
        assert!(early["status"].is_string(), "{early}");
    }
    let doc = wait_video_final(&engine.client, &engine.base, &id).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    assert_eq!(doc["variants_generated"], serde_json::json!(["480p", "360p"]));
    assert!(doc["source"]["audio_codec"].is_null());
    for variant in doc["variants"].as_array().unwrap() {
        assert!(!variant["codecs"].as_str().unwrap().contains("mp4a"), "{variant}");
        assert!(variant["height"].as_u64().unwrap() <= 480);
        let segment = first_segment(&engine, variant["playlist_path"].as_str().unwrap(), media.path()).await;
        let probed = ffprobe_json(&["-show_streams"], segment.to_str().unwrap());
        assert!(probed["streams"].as_array().unwrap().iter().all(|s| s["codec_type"] != "audio"));
    }
    engine.shutdown().await;
}

/// A phone's video (HEVC 10-bit, recorded sideways with a rotation, frames at a varying rate):
/// upright, unrotated, at a constant 30 fps, its rungs named and sized by the short side.
async fn a_phone_video_comes_out_upright_at_a_constant_rate_laddered_by_its_short_side(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = crate::common::phone_clip(media.path(), "phone.mp4");
    let engine = TestEngine::start_on(backends, data.path(), 1).await;
    let (status, reply) = upload_video(&engine.client, &engine.base, &source, "phone").await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["stream_id"].as_str().unwrap().to_string();
    let doc = wait_video_final(&engine.client, &engine.base, &id).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    let source_info = &doc["source"];
    assert_eq!((source_info["video_codec"].as_str(), source_info["width"].as_u64()), (Some("hevc"), Some(720)));
    assert_eq!(source_info["height"], 1280);
    assert_eq!(source_info["rotation_degrees"].as_u64().unwrap() % 180, 90, "{source_info}");
    assert_eq!(
        (source_info["variable_frame_rate"].as_bool(), source_info["frame_rate"].as_f64()),
        (Some(true), Some(30.0))
    );
    assert_eq!(doc["variants_generated"], serde_json::json!(["720p", "480p", "360p"]));
    for (variant, size) in doc["variants"].as_array().unwrap().iter().zip([(720, 1280), (480, 854), (360, 640)]) {
        let segment = first_segment(&engine, variant["playlist_path"].as_str().unwrap(), media.path()).await;
        let target = segment.to_str().unwrap();
        let probed = ffprobe_json(&["-show_streams"], target);
        let video = probed["streams"].as_array().unwrap().iter().find(|s| s["codec_type"] == "video").cloned().unwrap();
        assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(size.0), Some(size.1)), "{variant}");
        assert_eq!((video["codec_name"].as_str(), video["pix_fmt"].as_str()), (Some("h264"), Some("yuv420p")));
        assert!(video["side_data_list"].is_null(), "the rotation is applied, not passed on: {video}");
        // Constant rate: every frame 1/30 s after the one before (3000 ticks of 90 kHz).
        let frames = ffprobe_json(&["-select_streams", "v", "-show_entries", "frame=pts"], target);
        let mut pts: Vec<i64> =
            frames["frames"].as_array().unwrap().iter().map(|f| f["pts"].as_i64().unwrap()).collect();
        pts.sort_unstable();
        let steps: std::collections::BTreeSet<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(steps, [3000].into(), "{variant}: {} frames", pts.len());
    }
    let (_, manifest) = engine.get_json(&format!("/vod/{id}/manifest")).await;
    let (ok, frames, stderr) = crate::common::ffmpeg_decode(manifest["manifest_url"].as_str().unwrap());
    // The source's last frame is at 2.9 s: frames every 1/30 s from 0 to it are 88 per rung.
    assert!(ok && frames == 3 * 88, "three rungs' 88 frames: {frames} frames; {stderr}");
    engine.shutdown().await;
}

/// `transcode_mode = "per_rung"`: one FFmpeg per rung, each a task of its own on the workers;
/// the rungs still line up, and the master playlist plays.
async fn per_rung_mode_transcodes_each_rung_as_a_task_of_its_own(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "vga.mp4", "640x480", 4, true);
    let config = segflow::config::Config {
        workers: 2,
        transcode_jobs: 2,
        transcode_mode: segflow::config::TranscodeMode::PerRung,
        ..backends.config(data.path())
    };
    let engine = TestEngine::start_with(config).await;
    let (status, reply) = upload_video(&engine.client, &engine.base, &source, "per rung").await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["stream_id"].as_str().unwrap().to_string();
    let doc = wait_video_final(&engine.client, &engine.base, &id).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    assert_eq!(doc["variants_generated"], serde_json::json!(["480p", "360p"]));
    assert_eq!(doc["progress_pct"], 100.0);
    let mut boundaries = Vec::new();
    for variant in doc["variants"].as_array().unwrap() {
        boundaries.push(segment_durations(&engine, variant["playlist_path"].as_str().unwrap()).await);
    }
    assert_eq!(boundaries[0], boundaries[1], "rungs encoded apart share their segment boundaries");
    let (_, manifest) = engine.get_json(&format!("/vod/{id}/manifest")).await;
    let (ok, frames, stderr) = crate::common::ffmpeg_decode(manifest["manifest_url"].as_str().unwrap());
    assert!(ok && frames == 2 * 4 * 30, "both rungs' 4 s at 30 fps: {frames} frames; {stderr}");
    engine.shutdown().await;
}

async fn a_corrupt_upload_fails_with_a_reason_and_bad_requests_change_nothing(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let config = segflow::config::Config { workers: 1, max_upload_bytes: 100_000, ..backends.config(data.path()) };
    let engine = TestEngine::start_with(config).await;

    let garbage = media.path().join("broken.mp4");
    std::fs::write(&garbage, b"this is not a video at all, just some bytes".repeat(50)).unwrap();
    let (status, reply) = upload_video(&engine.client, &engine.base, &garbage, "broken").await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["stream_id"].as_str().unwrap().to_string();
    let doc = wait_video_final(&engine.client, &engine.base, &id).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("ffprobe"), "{doc}");
    let (status, body) = engine.get_json(&format!("/vod/{id}/manifest")).await;
    assert_eq!((status, body["status"].as_str()), (409, Some("failed")), "{body}");

    // Over the limit: 413, and no object left behind.
    let objects_before = count_objects(backends, &engine).await;
    let big = media.path().join("big.mp4");
    std::fs::write(&big, vec![7u8; 200_000]).unwrap();
    let (status, reply) = upload_video(&engine.client, &engine.base, &big, "too big").await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(count_objects(backends, &engine).await, objects_before);

    // A JSON upload must name an object that exists, under vod-raw/{id}/.
    let (status, _) = engine.post_json("/vod/upload", r#"{"source_key":"vod-raw/vod-x1/source.mp4"}"#).await;
    assert_eq!(status, 422);
    let (status, _) = engine.post_json("/vod/upload", r#"{"source_key":"vod-raw/../etc/passwd"}"#).await;
    assert_eq!(status, 400);
    let huge = format!(r#"{{"source_key":"vod-raw/vod-x1/a.mp4","title":"{}"}}"#, "x".repeat(100_000));
    let (status, _) = engine.post_json("/vod/upload", &huge).await;
    assert_eq!(status, 413, "a JSON body over max_json_bytes");
    let (status, _) = engine.get_json("/vod/vod-unknown/metadata").await;
    assert_eq!(status, 404);
    let (status, _) = engine.get_json("/vod/vod-unknown/manifest").await;
    assert_eq!(status, 404);
    engine.shutdown().await;
}

/// A producer that stored the source itself names it in a JSON body.
async fn producers_that_store_the_source_themselves_post_its_key(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "own.mp4", "320x240", 2, true);
    let engine = TestEngine::start_on(backends, data.path(), 1).await;
    let key = "vod-raw/vod-producer1/master.mp4";
    engine.store.put_bytes(key, std::fs::read(&source).unwrap().into()).await.unwrap();
    let (status, reply) = engine.post_json("/vod/upload", &format!(r#"{{"source_key":"{key}","title":"mine"}}"#)).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["stream_id"], "vod-producer1");
    let doc = wait_video_final(&engine.client, &engine.base, "vod-producer1").await;
    assert_eq!(doc["status"], "ready", "{doc}");
    assert_eq!(doc["variants_generated"], serde_json::json!(["240p"]));
    let (status, _) = engine.post_json("/vod/upload", &format!(r#"{{"source_key":"{key}"}}"#)).await;
    assert_eq!(status, 409, "the same video twice");
    engine.shutdown().await;
}

/// A rung's first segment as a file ffprobe reads (downloaded from S3 into `scratch`).
async fn first_segment(engine: &TestEngine, playlist_key: &str, scratch: &Path) -> std::path::PathBuf {
    let key = playlist_key.replace("index.m3u8", "seg_00000.ts");
    engine.store.read_path(&key, &scratch.join(playlist_key.replace('/', "_"))).await.unwrap()
}

/// Objects in the engine's store; on the local store every directory counts too (an upload
/// refused must not leave an empty one behind).
async fn count_objects(backends: Backends, engine: &TestEngine) -> usize {
    match backends {
        Backends::Embedded => count_entries(&engine.data_dir.join("objects")),
        Backends::Services => crate::common::list_keys(backends, &engine.data_dir, "").await.len(),
    }
}

/// Files and directories under `dir`.
fn count_entries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| 1 + if e.path().is_dir() { count_entries(&e.path()) } else { 0 }).sum()
}

/// A rendition playlist fetched through a signed URL: its type, whether it ended, and per
/// segment the file it names (a presigned S3 URL's too) and its duration.
async fn rendition(
    engine: &TestEngine,
    url: &reqwest::Url,
) -> (Option<m3u8_rs::MediaPlaylistType>, bool, Vec<(String, f32)>) {
    let text = engine.client.get(url.clone()).send().await.unwrap().bytes().await.unwrap();
    let playlist = m3u8_rs::parse_media_playlist_res(&text).unwrap();
    let file = |uri: &str| uri.split('?').next().unwrap().rsplit('/').next().unwrap().to_string();
    let segments = playlist.segments.iter().map(|s| (file(&s.uri), s.duration)).collect();
    (playlist.playlist_type, playlist.end_list, segments)
}

/// Playable while processing: the master and `EVENT` renditions of the segments FFmpeg has
/// finished are published as it works, play, and become `VOD` with `ENDLIST` once ready.
async fn an_upload_plays_while_it_is_processed_and_its_playlists_end_as_vod(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "long.mp4", "1280x720", 40, true);
    let engine = TestEngine::start_on(backends, data.path(), 1).await;
    let (status, reply) = upload_video(&engine.client, &engine.base, &source, "long").await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["stream_id"].as_str().unwrap().to_string();

    let doc = wait_video(&engine.client, &engine.base, &id, |doc| {
        doc["playable"] == true || doc["status"] == "ready" || doc["status"] == "failed"
    })
    .await;
    assert_ne!(doc["status"], "ready", "40 s of 720p is not encoded before its first segments play: {doc}");
    assert_eq!((doc["playable"].as_bool(), doc["playlist_type"].as_str()), (Some(true), Some("event")), "{doc}");
    let (status, manifest) = engine.get_json(&format!("/vod/{id}/manifest")).await;
    assert_eq!(status, 200, "{manifest}");
    assert_eq!(manifest["playlist_type"], "event", "{manifest}");
    let master_url = reqwest::Url::parse(manifest["manifest_url"].as_str().unwrap()).unwrap();
    let master_text = engine.client.get(master_url.clone()).send().await.unwrap().text().await.unwrap();
    let master = m3u8_rs::parse_master_playlist_res(master_text.as_bytes()).unwrap();
    let uris: Vec<&str> = master.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, ["720p/index.m3u8", "480p/index.m3u8", "360p/index.m3u8"], "{master_text}");
    assert!(master.variants.iter().all(|v| v.codecs.as_deref().is_some_and(|c| c.ends_with(",mp4a.40.2"))));

    // Each rendition lists what is stored so far, and its first segment decodes.
    let rung_url = master_url.join("480p/index.m3u8").unwrap();
    let (kind, ended, early) = rendition(&engine, &rung_url).await;
    assert_eq!((kind, ended), (Some(m3u8_rs::MediaPlaylistType::Event), false));
    assert!(!early.is_empty() && early.len() < 20, "{early:?}");
    let (status, stream) = engine.get_json(&format!("/videos/{id}/stream?quality=360p")).await;
    assert_eq!((status, stream["playlist_type"].as_str()), (200, Some("event")), "{stream}");
    let (status, not_yet) = engine.get_json(&format!("/videos/{id}/download?quality=360p")).await;
    assert_eq!(status, 409, "a download is of the whole rendition: {not_yet}");
    // hls.js starts once 8 s are listed, past its live edge of 3 segments: EXT-X-START has it
    // begin at 0 all the same.
    let growing = loop {
        let (kind, _, segments) = rendition(&engine, &rung_url).await;
        assert_eq!(kind, Some(m3u8_rs::MediaPlaylistType::Event), "encoded before 8 s were listed");
        if segments.len() >= 4 {
            break segments.len();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let player = Player::start(master_url.as_str(), 4.0);
    // FFmpeg follows the growing playlist (it starts a live one near its end) to ENDLIST.
    let (ok, frames, stderr) = crate::common::ffmpeg_decode(rung_url.as_str());
    assert!(ok && frames >= 60, "{frames} frames of the growing rendition: {stderr}");

    let doc = wait_video_final(&engine.client, &engine.base, &id).await;
    assert_eq!((doc["status"].as_str(), doc["playlist_type"].as_str()), (Some("ready"), Some("vod")), "{doc}");
    let (playable_ms, ready_ms) =
        (doc["playable_latency_ms"].as_f64().unwrap(), doc["processing_latency_ms"].as_f64().unwrap());
    assert!(playable_ms < ready_ms, "playable after {playable_ms} ms, ready after {ready_ms} ms");
    let (kind, ended, whole) = rendition(&engine, &rung_url).await;
    assert_eq!((kind, ended), (Some(m3u8_rs::MediaPlaylistType::Vod), true));
    assert_eq!(whole.len(), 20);
    assert_eq!(whole[..early.len()], early[..], "the growing playlist is the start of the whole one");
    let (ok, frames, stderr) = crate::common::ffmpeg_decode(master_url.as_str());
    assert!(ok && frames == 3 * 40 * 30, "{frames} frames: {stderr}");
    assert_eq!(engine.metric("segflow_vod_playable_seconds_count").await, 1.0);

    // hls.js played from the start, through the change from EVENT to VOD, to the end.
    let seen = player.report();
    eprintln!("hls.js, started with {growing} segments listed: {seen}");
    assert!(seen["ended"] == true && seen["fatal"].is_null(), "{growing} segments listed at its start: {seen}");
    assert!(seen["start"].as_f64().unwrap() < 1.0, "{seen}");
    assert_eq!(seen["kinds"].as_array().unwrap().first(), Some(&json!("EVENT:live")), "{seen}");
    assert_eq!(seen["kinds"].as_array().unwrap().last(), Some(&json!("VOD:ended")), "{seen}");
    assert!((seen["duration"].as_f64().unwrap() - 40.0).abs() < 0.5, "{seen}");
    assert!(seen["decoded_frames"].as_u64().unwrap() >= 40 * 30 * 9 / 10, "{seen}");
    engine.shutdown().await;
}
