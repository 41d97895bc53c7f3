//! The video library end to end: real uploads listed, searched, edited and deleted through
//! `/videos`, on both backend sets, with the object store looked at behind the API's back.

on_both_backends!(
    the_library_pages_filters_searches_and_edits_videos,
    a_deleted_video_leaves_no_object_or_document,
    a_video_deleted_while_it_transcodes_stops_and_leaves_nothing,
    a_deletion_replayed_after_a_crash_ends_with_nothing_stored,
    a_video_streams_and_downloads_by_quality,
);

use std::path::Path;
use std::time::Duration;

use crate::common::{Backends, TestEngine, clip, forget_offsets, list_keys, upload_video, wait_video_final};
use segflow::model::Topic;
use serde_json::{Value, json};

/// Stores one small clip as the source of each id (the producer path) and posts it.
async fn add_videos(engine: &TestEngine, source: &Path, titles: &[(&str, &str)]) {
    let bytes = std::fs::read(source).unwrap();
    for (id, title) in titles {
        let key = format!("vod-raw/{id}/source.mp4");
        engine.store.put_bytes(&key, bytes.clone().into()).await.unwrap();
        let body = json!({ "source_key": key, "title": title, "description": "made by ffmpeg's testsrc2" });
        let (status, reply) = engine.post_json("/vod/upload", &body.to_string()).await;
        assert_eq!(status, 201, "{reply}");
        // Distinct creation times, so the order is the upload order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (id, _) in titles {
        assert_eq!(wait_video_final(&engine.client, &engine.base, id).await["status"], "ready");
    }
}

fn ids(page: &Value) -> Vec<&str> {
    page["videos"].as_array().unwrap().iter().map(|v| v["stream_id"].as_str().unwrap()).collect()
}

async fn send(engine: &TestEngine, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = engine.client.request(method, engine.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Every object a video has: its source, renditions, poster and master playlist.
async fn objects_of(backends: Backends, engine: &TestEngine, id: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for bucket in ["vod-raw", "vod-variants", "manifests"] {
        keys.extend(list_keys(backends, &engine.data_dir, &format!("{bucket}/{id}/")).await);
    }
    keys
}

async fn the_library_pages_filters_searches_and_edits_videos(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "small.mp4", "320x240", 1, false);
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let videos = [
        ("vod-lib1", "Sunset at the beach"),
        ("vod-lib2", "Morning run"),
        ("vod-lib3", "Beach volleyball final"),
        ("vod-lib4", "Cooking pasta"),
        ("vod-lib5", "Night sky timelapse"),
    ];
    add_videos(&engine, &source, &videos).await;

    // Seed 002's paging: newest first, a total, pages that never overlap.
    let (status, first) = engine.get_json("/videos?page=1&page_size=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!((first["total"].as_u64(), first["pages"].as_u64()), (Some(5), Some(3)), "{first}");
    assert_eq!(ids(&first), ["vod-lib5", "vod-lib4"]);
    let (_, second) = engine.get_json("/videos?page=2&page_size=2").await;
    assert_eq!(ids(&second), ["vod-lib3", "vod-lib2"]);
    let (_, third) = engine.get_json("/videos?page=3&page_size=2").await;
    assert_eq!(ids(&third), ["vod-lib1"]);
    let (_, past) = engine.get_json("/videos?page=4&page_size=2").await;
    assert_eq!((ids(&past).len(), past["total"].as_u64()), (0, Some(5)));
    let (_, oldest) = engine.get_json("/videos?sort=created_asc&page_size=1").await;
    assert_eq!(ids(&oldest), ["vod-lib1"]);
    let listed = &first["videos"][0];
    assert_eq!((listed["kind"].as_str(), listed["status"].as_str()), (Some("upload"), Some("ready")), "{listed}");
    assert!(listed["manifest_url"].as_str().unwrap().contains("/play/"), "{listed}");
    assert_eq!(listed["width"], 320);

    // Filters: status, kind, words of title and description (any case).
    let (_, ready) = engine.get_json("/videos?status=ready&page_size=100").await;
    assert_eq!(ready["total"], 5);
    let (_, none) = engine.get_json("/videos?status=failed").await;
    assert_eq!(none["total"], 0);
    let (_, uploads) = engine.get_json("/videos?kind=upload").await;
    assert_eq!(uploads["total"], 5);
    let (_, recordings) = engine.get_json("/videos?kind=recording").await;
    assert_eq!(recordings["total"], 0);
    let (_, beach) = engine.get_json("/videos?q=BEACH").await;
    assert_eq!(ids(&beach), ["vod-lib3", "vod-lib1"]);
    let (_, both) = engine.get_json("/videos?q=beach%20final&status=ready&kind=upload").await;
    assert_eq!(ids(&both), ["vod-lib3"]);
    let (_, described) = engine.get_json("/videos?q=testsrc2").await;
    assert_eq!(described["total"], 5, "words of the description match too");

    // PATCH: applied by the dataflow, visible at once in the answer, the document and search.
    let edit =
        json!({ "title": "Sunrise at the beach", "tags": ["holiday", " Portugal "], "playback_policy": "signed" });
    let (status, edited) = send(&engine, reqwest::Method::PATCH, "/videos/vod-lib1", Some(edit)).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["title"], "Sunrise at the beach");
    assert_eq!(edited["tags"], json!(["holiday", "Portugal"]));
    assert_eq!(edited["playback_policy"], "signed");
    assert_eq!(edited["description"], "made by ffmpeg's testsrc2", "fields not given stay");
    let (_, doc) = engine.get_json("/videos/vod-lib1").await;
    assert_eq!((doc["title"].as_str(), doc["status"].as_str()), (Some("Sunrise at the beach"), Some("ready")));
    let (_, tagged) = engine.get_json("/videos?q=portugal").await;
    assert_eq!(ids(&tagged), ["vod-lib1"]);
    let (_, old_title) = engine.get_json("/videos?q=sunset").await;
    assert_eq!(old_title["total"], 0);
    let (status, _) = engine.get_json("/vod/vod-lib1/manifest").await;
    assert_eq!(status, 200, "the admin token still plays a signed video");
    let anonymous = reqwest::Client::new();
    let status = anonymous.get(engine.url("/vod/vod-lib1/manifest")).send().await.unwrap().status();
    assert_eq!(status, 401, "a signed video needs a token to play");

    // Bad input: a clear 400 (or 404), and nothing changes.
    for bad in [
        "page=0",
        "page=x",
        "page_size=101",
        "page_size=0",
        "status=done",
        "kind=clip",
        "sort=title",
        "colour=red",
        "page=18446744073709551615&page_size=100",
    ] {
        let (status, body) = engine.get_json(&format!("/videos?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{bad}: {body}");
    }
    let patch = reqwest::Method::PATCH;
    let too_long = json!({ "title": "x".repeat(300) });
    let bad_edits =
        [json!({}), json!({ "colour": "red" }), too_long, json!({ "tags": ["a\u{7}b"] }), json!({ "tags": [""] })];
    for bad in bad_edits {
        let (status, body) = send(&engine, patch.clone(), "/videos/vod-lib2", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) =
        send(&engine, patch.clone(), "/videos/vod-lib2", Some(json!({ "playback_policy": "secret" }))).await;
    assert_eq!(status, 400);
    let (_, unchanged) = engine.get_json("/videos/vod-lib2").await;
    assert_eq!((unchanged["title"].as_str(), unchanged["edited_at_us"].as_u64()), (Some("Morning run"), Some(0)));
    for unknown in ["vod-nope", "live-abc", "..%2F..%2Fetc"] {
        let (status, _) = engine.get_json(&format!("/videos/{unknown}")).await;
        assert_eq!(status, 404, "{unknown}");
        let (status, _) =
            send(&engine, patch.clone(), &format!("/videos/{unknown}"), Some(json!({ "title": "t" }))).await;
        assert_eq!(status, 404, "{unknown}");
        let (status, _) = send(&engine, reqwest::Method::DELETE, &format!("/videos/{unknown}"), None).await;
        assert_eq!(status, 404, "{unknown}");
    }

    // Scopes: reading needs `read`, editing and deleting `publish`.
    let status = anonymous.get(engine.url("/videos")).send().await.unwrap().status();
    assert_eq!(status, 401);
    let (_, token) = engine.post_json("/tokens", r#"{"name":"viewer","scopes":["read"]}"#).await;
    let viewer = crate::common::client_with(token["token"].as_str().unwrap());
    assert_eq!(viewer.get(engine.url("/videos")).send().await.unwrap().status(), 200);
    let refused = viewer.patch(engine.url("/videos/vod-lib2")).json(&json!({ "title": "t" })).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(viewer.delete(engine.url("/videos/vod-lib2")).send().await.unwrap().status(), 403);
    engine.shutdown().await;
}

async fn a_deleted_video_leaves_no_object_or_document(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "talk.mp4", "640x360", 2, true);
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let (_, kept) = upload_video(&engine.client, &engine.base, &source, "kept").await;
    let (_, gone) = upload_video(&engine.client, &engine.base, &source, "gone").await;
    let (kept, gone) = (kept["stream_id"].as_str().unwrap(), gone["stream_id"].as_str().unwrap());
    for id in [kept, gone] {
        assert_eq!(wait_video_final(&engine.client, &engine.base, id).await["status"], "ready");
    }
    let before = objects_of(backends, &engine, gone).await;
    assert_eq!(
        before.len(),
        7,
        "source, poster, storyboard and its track, master, 360p playlist and segment: {before:?}"
    );
    let kept_before = objects_of(backends, &engine, kept).await;

    let (status, body) = send(&engine, reqwest::Method::DELETE, &format!("/videos/{gone}"), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(objects_of(backends, &engine, gone).await, Vec::<String>::new());
    assert_eq!(engine.get_json(&format!("/videos/{gone}")).await.0, 404);
    assert_eq!(engine.get_json(&format!("/vod/{gone}/manifest")).await.0, 404);
    let (_, page) = engine.get_json("/videos").await;
    assert_eq!(ids(&page), [kept]);
    // Again: the video is gone, so it is unknown; nothing else changed.
    let (status, _) = send(&engine, reqwest::Method::DELETE, &format!("/videos/{gone}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(objects_of(backends, &engine, kept).await, kept_before);
    assert_eq!(engine.metric("segflow_vod_videos_total{outcome=\"deleted\"}").await, 1.0);
    engine.shutdown().await;
}

/// FFmpeg processes working on `id` (their command lines name its work directory).
fn ffmpeg_running_for(id: &str) -> usize {
    let output = std::process::Command::new("pgrep").args(["-f", &format!("ffmpeg.*{id}")]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

async fn a_video_deleted_while_it_transcodes_stops_and_leaves_nothing(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "long.mp4", "1920x1080", 30, true);
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let (_, reply) = upload_video(&engine.client, &engine.base, &source, "long").await;
    let id = reply["stream_id"].as_str().unwrap().to_string();
    crate::common::wait_video(&engine.client, &engine.base, &id, |doc| doc["status"] == "transcoding").await;
    for _ in 0..200 {
        if ffmpeg_running_for(&id) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ffmpeg_running_for(&id) > 0, "FFmpeg transcodes the video");

    let (status, body) = send(&engine, reqwest::Method::DELETE, &format!("/videos/{id}"), None).await;
    assert!(status == 204 || status == 202, "{status} {body}");
    if status == 202 {
        assert_eq!(body["status"], "deleting");
        let (status, doc) = engine.get_json(&format!("/videos/{id}")).await;
        assert!(status == 404 || doc["status"] == "deleting", "{doc}");
        // A second DELETE waits for the same deletion.
        let (status, _) = send(&engine, reqwest::Method::DELETE, &format!("/videos/{id}"), None).await;
        assert!(status == 204 || status == 202 || status == 404);
    }
    for _ in 0..600 {
        if engine.get_json(&format!("/videos/{id}")).await.0 == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(engine.get_json(&format!("/videos/{id}")).await.0, 404);
    assert_eq!(ffmpeg_running_for(&id), 0, "FFmpeg was stopped");
    assert_eq!(objects_of(backends, &engine, &id).await, Vec::<String>::new());
    let work = data.path().join("work");
    let leftovers: Vec<_> =
        std::fs::read_dir(&work).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(leftovers.iter().all(|p| !p.to_string_lossy().contains(&id)), "{leftovers:?}");
    // The engine goes on: a new upload is processed as usual.
    let small = clip(media.path(), "small.mp4", "320x240", 1, false);
    let (_, next) = upload_video(&engine.client, &engine.base, &small, "next").await;
    let doc = wait_video_final(&engine.client, &engine.base, next["stream_id"].as_str().unwrap()).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    engine.shutdown().await;
}

/// A crash loses nothing a deletion did not commit: replayed from the start of the log (the
/// upload, then its deletion), the engine ends with the video gone again.
async fn a_deletion_replayed_after_a_crash_ends_with_nothing_stored(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "talk.mp4", "640x360", 2, true);
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let (_, reply) = upload_video(&engine.client, &engine.base, &source, "replayed").await;
    let id = reply["stream_id"].as_str().unwrap().to_string();
    assert_eq!(wait_video_final(&engine.client, &engine.base, &id).await["status"], "ready");
    let (status, _) = send(&engine, reqwest::Method::DELETE, &format!("/videos/{id}"), None).await;
    assert_eq!(status, 204);
    // Half of it back, as a crash in the middle of the sweep would leave it.
    let source_key = format!("vod-raw/{id}/source.mp4");
    engine.store.put_bytes(&source_key, std::fs::read(&source).unwrap().into()).await.unwrap();
    engine.store.put_bytes(&format!("manifests/{id}/vod_manifest.m3u8"), "#EXTM3U\n".into()).await.unwrap();
    engine.shutdown().await;

    forget_offsets(backends, data.path(), Topic::VodChunks);
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    for _ in 0..1200 {
        let gone = engine.get_json(&format!("/videos/{id}")).await.0 == 404;
        if gone && objects_of(backends, &engine, &id).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(engine.get_json(&format!("/videos/{id}")).await.0, 404);
    assert_eq!(objects_of(backends, &engine, &id).await, Vec::<String>::new());
    engine.shutdown().await;
}

/// MD5 of the decoded video frames of `input`: equal for a remux, different for a re-encode.
fn decoded_md5(input: &str) -> String {
    let output = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", input, "-map", "0:v", "-f", "md5", "-"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

async fn a_video_streams_and_downloads_by_quality(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let source = clip(media.path(), "talk.mp4", "1280x720", 5, true);
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let (_, reply) = upload_video(&engine.client, &engine.base, &source, "qualities").await;
    let id = reply["stream_id"].as_str().unwrap().to_string();
    assert_eq!(wait_video_final(&engine.client, &engine.base, &id).await["status"], "ready");

    // A rendition's own playlist, or the master for auto.
    let (status, chosen) = engine.get_json(&format!("/videos/{id}/stream?quality=480p")).await;
    assert_eq!(status, 200, "{chosen}");
    assert_eq!((chosen["height"].as_u64(), chosen["qualities"].clone()), (Some(480), json!(["720p", "480p", "360p"])));
    let url = chosen["url"].as_str().unwrap();
    let text = engine.client.get(url).send().await.unwrap().bytes().await.unwrap();
    let playlist = m3u8_rs::parse_media_playlist_res(&text).expect("a media playlist");
    assert_eq!(playlist.segments.len(), 3);
    let (ok, frames, stderr) = crate::common::ffmpeg_decode(url);
    assert!(ok && frames == 150, "480p alone: {frames} frames; {stderr}");
    let (_, auto) = engine.get_json(&format!("/videos/{id}/stream")).await;
    let master = engine.client.get(auto["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(m3u8_rs::parse_master_playlist_res(&master).unwrap().variants.len(), 3);

    // The storyboard: a frame every 2 s as 160x90 tiles of one sprite, and its WebVTT cues.
    let (_, doc) = engine.get_json(&format!("/videos/{id}")).await;
    assert_eq!(doc["storyboard"]["tiles"], 3, "{doc}");
    let track = engine.client.get(doc["storyboard_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(track.headers()["content-type"], "text/vtt");
    let track = track.text().await.unwrap();
    let cues: Vec<&str> = track.lines().filter(|l| l.contains("#xywh=")).collect();
    assert!(track.starts_with("WEBVTT"), "{track}");
    assert_eq!(
        cues,
        ["storyboard.jpg#xywh=0,0,160,90", "storyboard.jpg#xywh=160,0,160,90", "storyboard.jpg#xywh=320,0,160,90"]
    );
    assert!(track.contains("00:00:04.000 --> 00:00:05.000"), "{track}");
    let sprite = engine.client.get(doc["storyboard_sprite_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(sprite.headers()["content-type"], "image/jpeg");
    let sprite_file = media.path().join("storyboard.jpg");
    std::fs::write(&sprite_file, sprite.bytes().await.unwrap()).unwrap();
    let size = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(&sprite_file)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&size.stdout).trim(), "480,90", "three tiles in a row");

    // One MP4 of a rendition, remuxed: the same decoded frames as the rendition, with Range.
    let download = engine.client.get(engine.url(&format!("/videos/{id}/download?quality=480p"))).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let mp4 = download.bytes().await.unwrap();
    let file = media.path().join("download.mp4");
    std::fs::write(&file, &mp4).unwrap();
    let probed = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,height:format=format_name,duration",
            "-of",
            "json",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let probed: Value = serde_json::from_slice(&probed.stdout).unwrap();
    assert!(probed["format"]["format_name"].as_str().unwrap().contains("mp4"), "{probed}");
    let duration: f64 = probed["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 5.0).abs() < 0.2, "{probed}");
    let streams = probed["streams"].as_array().unwrap();
    assert!(streams.iter().any(|s| s["codec_name"] == "h264" && s["height"] == 480), "{probed}");
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "{probed}");
    assert_eq!(decoded_md5(file.to_str().unwrap()), decoded_md5(url), "a remux, not a re-encode");
    let part = engine
        .client
        .get(engine.url(&format!("/videos/{id}/download?quality=480p")))
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), mp4.slice(0..100), "the same file, made once");
    assert_eq!(list_keys(backends, &engine.data_dir, &format!("vod-variants/{id}/downloads/")).await.len(), 1);

    // Bad input: a rung the video lacks 404, a name no rung has 400, an unknown video 404.
    for (query, expected) in [("quality=1080p", 404), ("quality=hd", 400), ("quality=720", 400), ("colour=red", 400)] {
        for route in ["stream", "download"] {
            let (status, body) = engine.get_json(&format!("/videos/{id}/{route}?{query}")).await;
            assert_eq!(status, expected, "{route}?{query}: {body}");
        }
    }
    assert_eq!(engine.get_json("/videos/vod-nope/stream").await.0, 404);
    assert_eq!(engine.get_json("/videos/vod-nope/download").await.0, 404);
    // A signed video plays only with a token.
    let anonymous = reqwest::Client::new();
    let refused = anonymous.get(engine.url(&format!("/videos/{id}/download"))).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    // The download goes with the video.
    let (status, _) = send(&engine, reqwest::Method::DELETE, &format!("/videos/{id}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(objects_of(backends, &engine, &id).await, Vec::<String>::new());
    engine.shutdown().await;
}
