//! End to end through the public API with real FFmpeg segments: a gap, a late fill, a
//! corrupted segment, signed playback decoded by `ffmpeg`, `ENDLIST` after the end.

on_both_backends!(
    live_stream_with_gap_late_fill_and_corruption_plays_in_ffmpeg,
    ffmpeg_pushing_with_method_put_is_ingested_and_plays_back,
    ffmpeg_pushing_fragmented_mp4_gets_an_init_map_and_plays_back,
    producers_that_store_bytes_themselves_post_chunk_events,
    a_playlist_that_overtakes_its_segment_still_gets_it,
    accepted_media_is_never_replaced,
);

use crate::common::{Backends, Player, TestEngine, ffmpeg_decode, ffmpeg_segments, sha256_hex};
use segflow::api::signed::UrlSigner;

async fn live_stream_with_gap_late_fill_and_corruption_plays_in_ffmpeg(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let segments = ffmpeg_segments(media.path(), 16);
    assert_eq!(segments.len(), 8, "16 s in 2 s segments");
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let id = engine.start_stream(2).await;

    let put = |seq: usize, corrupt: bool| {
        let segment = &segments[seq];
        let mut bytes = segment.bytes.clone();
        if corrupt {
            bytes[1000] ^= 0xff;
        }
        engine
            .client
            .put(engine.url(&format!("/ingest/{id}/seg{seq}.ts")))
            .header("X-Sequence-Number", seq.to_string())
            .header("X-Duration-Ms", segment.duration_ms.to_string())
            .header("X-Checksum-Sha256", sha256_hex(&segment.bytes))
            .body(bytes)
            .send()
    };
    // 0 1 3 (gap at 2) 2 (late, fills it) 4 (corrupted) 5 7 (gap at 6)
    for (seq, corrupt) in [(0, false), (1, false), (3, false), (2, false), (4, true), (5, false), (7, false)] {
        let response = put(seq, corrupt).await.unwrap();
        assert_eq!(response.status(), 201, "segment {seq}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["checksum_matches"], !corrupt, "segment {seq}: {body}");
    }
    // A date that is not RFC 3339 is refused before anything is stored.
    let bad_date = engine
        .client
        .put(engine.url(&format!("/ingest/{id}/seg6.ts")))
        .header("X-Sequence-Number", "6")
        .header("X-Duration-Ms", "2000")
        .header("X-Program-Date-Time", "yesterday")
        .body(segments[6].bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bad_date.status(), 400);
    // Re-sending an accepted segment with its own bytes is a retry (201); other bytes are
    // refused (409). Neither changes anything below.
    engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 6).await;
    assert_eq!(put(1, false).await.unwrap().status(), 201);
    assert_eq!(put(1, true).await.unwrap().status(), 409);

    // The window's gap slots now, counted from the gap set: 2 was filled, 4 failed, 6 missing.
    // The count follows the stream document once each time is complete: waited for.
    let final_slots = serde_json::json!({"missing": 1, "checksum_failed": 1});
    let doc = engine.wait_stream(&id, |doc| doc["gap_slots"] == final_slots).await;
    assert_eq!(doc["health"], "gaps");
    assert_eq!(engine.metric(r#"segflow_live_gap_slots{cause="missing"}"#).await, 1.0);
    assert_eq!(engine.metric(r#"segflow_live_gap_slots{cause="checksum_failed"}"#).await, 1.0);
    assert_eq!(doc["gaps_total"], 3, "{doc}"); // 2, 4 (after the corrupt copy) and 6
    assert_eq!(doc["checksum_failures"], 1, "{doc}");
    assert_eq!(engine.metric("live_chunk_gaps_total").await, 3.0);
    assert_eq!(engine.metric("chunk_checksum_failures_total").await, 1.0);
    assert_eq!(engine.metric("segflow_live_gaps_filled_total").await, 1.0);
    assert!(engine.metric("chunk_processing_latency_seconds_count").await >= 6.0);
    let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
    let statuses: Vec<(u64, String)> = chunks["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["chunk_index"].as_u64().unwrap(), c["status"].as_str().unwrap().to_string()))
        .collect();
    let live = |i| (i, "live".to_string());
    assert_eq!(statuses, vec![live(0), live(1), live(2), live(3), (4, "checksum_failed".into()), live(5), live(7)]);
    for chunk in chunks["chunks"].as_array().unwrap().iter().filter(|c| c["status"] == "live") {
        assert!(chunk["processing_latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{chunk}");
    }

    // The signed live URL, its segments, Range, and refusals.
    let (_, live_url) = engine.get_json(&format!("/streams/{id}/live")).await;
    let manifest_url = live_url["manifest_url"].as_str().unwrap().to_string();
    let playlist = engine.client.get(&manifest_url).send().await.unwrap();
    assert_eq!(playlist.headers()["content-type"], "application/vnd.apple.mpegurl");
    let text = playlist.text().await.unwrap();
    assert!(!text.contains("PLAYLIST-TYPE"), "a sliding window is not an EVENT playlist:\n{text}");
    assert_eq!(text.matches("#EXT-X-GAP").count(), 2, "{text}");
    assert_eq!(text.matches("#EXT-X-PROGRAM-DATE-TIME").count(), 6, "{text}");
    assert!(!text.contains("ENDLIST"));
    let segment_url = manifest_url.replace("live.m3u8", "chunks/3.ts");
    let segment = engine.client.get(&segment_url).send().await.unwrap();
    assert_eq!(segment.status(), 200);
    assert_eq!(segment.headers()["content-type"], "video/mp2t");
    assert_eq!(sha256_hex(&segment.bytes().await.unwrap()), sha256_hex(&segments[3].bytes));
    let range = engine.client.get(&segment_url).header("Range", "bytes=188-375").send().await.unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap().as_ref(), &segments[3].bytes[188..376]);
    let altered = manifest_url.replacen("/play/", "/play/1", 1);
    assert_eq!(engine.client.get(&altered).send().await.unwrap().status(), 403);
    let signer = UrlSigner::load_or_create(data.path(), 60).unwrap();
    let past = segflow::model::now_ms() / 1000 - 10;
    let expired = format!("{}/play/{past}/{}/{id}/live.m3u8", engine.base, signer.sign(&id, past));
    assert_eq!(engine.client.get(&expired).send().await.unwrap().status(), 403);
    for missing in [
        format!("/play/{id}/live.m3u8"),
        format!("/play/{past}/{id}/live.m3u8"),
        format!("/play/{past}//{id}/live.m3u8"),
    ] {
        assert_eq!(
            engine.client.get(format!("{}{missing}", engine.base)).send().await.unwrap().status(),
            403,
            "{missing}"
        );
    }
    let unsigned = format!("{}/play/{past}/{}/{id}/../../signing.key", engine.base, signer.sign(&id, past));
    assert_ne!(engine.client.get(&unsigned).send().await.unwrap().status(), 200);

    // End: ENDLIST and status vod; chunks for the ended stream are refused.
    let (status, ended) = engine.post_json("/streams/end", &format!(r#"{{"stream_id":"{id}"}}"#)).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["status"], "vod");
    let text = engine.client.get(&manifest_url).send().await.unwrap().text().await.unwrap();
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    assert_dates_add_up(&text);
    assert_eq!(put(6, false).await.unwrap().status(), 409);

    // A real player reads the signed URL alone and decodes every segment in the playlist:
    // 6 accepted segments of 2 s at 25 fps.
    let (_ok, frames, stderr) = ffmpeg_decode(&manifest_url);
    assert_eq!(frames, 6 * 50, "decoded frames; ffmpeg said:\n{stderr}");

    engine.shutdown().await;
}

async fn ffmpeg_pushing_with_method_put_is_ingested_and_plays_back(backends: Backends) {
    ffmpeg_push_round_trip(backends, "mpegts").await;
}

async fn ffmpeg_pushing_fragmented_mp4_gets_an_init_map_and_plays_back(backends: Backends) {
    let playlist = ffmpeg_push_round_trip(backends, "fmp4").await;
    // On S3 the URIs are presigned URLs of the same objects.
    assert!(playlist.contains("#EXT-X-MAP:URI=\"") && playlist.contains("init.mp4"), "{playlist}");
    assert!(playlist.contains("#EXT-X-VERSION:6"), "{playlist}");
    assert!(playlist.contains("chunks/0.m4s"), "{playlist}");
}

/// FFmpeg's HLS muxer pushes 6 s of video with `-method PUT` in `segment_type`; the stream is
/// ended and decoded back through its signed URL. Returns the final playlist.
async fn ffmpeg_push_round_trip(backends: Backends, segment_type: &str) -> String {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(backends, data.path(), 1).await;
    let (id, key) = engine.start_stream_keyed(2).await;
    // An encoder has no API token, only the stream's key: in the URL path (whose folder
    // FFmpeg puts the segments in too), or in a header FFmpeg's `-headers` sends.
    let (key_header, playlist_url) = match segment_type {
        "fmp4" => (String::new(), engine.url(&format!("/ingest/{id}/{key}/live.m3u8"))),
        _ => (format!("X-Stream-Key: {key}\r\n"), engine.url(&format!("/ingest/{id}/live.m3u8"))),
    };
    let headers: &[&str] = if key_header.is_empty() { &[] } else { &["-headers", &key_header] };
    let mut push = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440"])
        .args(["-t", "6", "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-keyint_min", "50"])
        .args(["-sc_threshold", "0", "-c:a", "aac", "-f", "hls", "-hls_time", "2", "-hls_list_size", "4"])
        .args(["-hls_segment_type", segment_type, "-method", "PUT"])
        // FFmpeg dates the fMP4 run's segments itself; segflow dates the other run's.
        .args(if segment_type == "fmp4" { &["-hls_flags", "program_date_time"][..] } else { &[] })
        .args(headers)
        .arg(playlist_url)
        .spawn()
        .unwrap();
    // A viewer joins once the first segment is in: hls.js in a browser, live, to the end.
    engine.wait_stream(&id, |doc| doc["chunks_accepted"].as_u64() >= Some(1)).await;
    let (_, live) = engine.get_json(&format!("/streams/{id}/live")).await;
    let viewer = Player::start(live["manifest_url"].as_str().unwrap(), 1.0);
    assert!(push.wait().unwrap().success());
    // FFmpeg exits without waiting for answers: its last playlist may still be on the wire.
    engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 3).await;
    let (status, ended) = engine.post_json("/streams/end", &format!(r#"{{"stream_id":"{id}"}}"#)).await;
    assert_eq!(status, 200, "{ended}");
    let seen = viewer.report();
    eprintln!("hls.js, live {segment_type}: {seen}");
    assert!(seen["ended"] == true && seen["fatal"].is_null(), "{seen}");
    let kinds = seen["kinds"].as_array().unwrap();
    assert_eq!((kinds.first(), kinds.last()), (Some(&"none:live".into()), Some(&"none:ended".into())), "{seen}");
    assert!((seen["duration"].as_f64().unwrap() - 6.0).abs() < 0.5, "{seen}");
    assert!(seen["decoded_frames"].as_u64().unwrap() >= 150 * 9 / 10, "{seen}");
    assert_eq!(ended["chunks_accepted"], 3, "{ended}");
    assert_eq!(ended["gaps_total"], 0);
    let manifest_url = ended["manifest_url"].as_str().unwrap();
    let (ok, frames, stderr) = ffmpeg_decode(manifest_url);
    assert!(ok, "{stderr}");
    assert_eq!(frames, 150, "{stderr}");
    let playlist = engine.client.get(manifest_url).send().await.unwrap().text().await.unwrap();
    assert_dates_add_up(&playlist);
    engine.shutdown().await;
    playlist
}

/// Each segment's `EXT-X-PROGRAM-DATE-TIME` is the first one plus the `EXTINF`s listed before
/// it, gap slots included (to the millisecond FFmpeg rounds its own dates to).
fn assert_dates_add_up(text: &str) {
    let playlist = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
    let mut elapsed_ms = 0.0;
    let mut first = None;
    for segment in &playlist.segments {
        if let Some(date) = segment.program_date_time {
            let first = *first.get_or_insert(date.timestamp_millis() as f64 - elapsed_ms);
            let expected = first + elapsed_ms;
            assert!((date.timestamp_millis() as f64 - expected).abs() <= 1.0, "{}: {text}", segment.uri);
        }
        elapsed_ms += (segment.duration as f64 * 1000.0).round();
    }
    assert!(first.is_some(), "no dates in {text}");
}

async fn producers_that_store_bytes_themselves_post_chunk_events(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let id = engine.start_stream(4).await;
    // The producer writes the bytes into the engine's object store itself.
    for seq in 0..3u64 {
        let key = segflow::model::keys::live_chunk(&id, seq, "ts");
        engine.store.put_bytes(&key, format!("bytes of {seq}").into_bytes().into()).await.unwrap();
    }
    let good = sha256_hex(b"bytes of 0");
    let wrong = sha256_hex(b"something else");
    for (seq, checksum) in [(0, &good), (1, &wrong)] {
        let body = format!(
            r#"{{"stream_id":"{id}","chunk_index":{seq},"sequence_number":{seq},"duration_ms":3000,
                "keyframe_aligned":true,"checksum":"{checksum}","audio_track_id":"a","video_track_id":"v"}}"#
        );
        let (status, reply) = engine.post_json(&format!("/streams/{id}/chunks"), &body).await;
        assert_eq!(status, 202, "{reply}");
    }
    // No checksum claimed: the stored bytes' own hash is recorded.
    let (status, _) =
        engine.post_json(&format!("/streams/{id}/chunks"), r#"{"sequence_number":2,"duration_ms":3000}"#).await;
    assert_eq!(status, 202);
    let doc = engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 2).await;
    assert_eq!(doc["checksum_failures"], 1, "{doc}");
    let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
    let statuses: Vec<&str> =
        chunks["chunks"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["live", "checksum_failed", "live"]);
    assert_eq!(chunks["chunks"][2]["stored_sha256"], sha256_hex(b"bytes of 2"));
    engine.shutdown().await;
}

/// FFmpeg PUTs the playlist right after a segment on another connection, so the server may see
/// the playlist first: the segment it names is still taken once its upload arrives.
async fn a_playlist_that_overtakes_its_segment_still_gets_it(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(backends, data.path(), 1).await;
    let id = engine.start_stream(2).await;
    let playlist =
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.000,\nlive0.ts\n";
    let put_playlist = engine.client.put(engine.url(&format!("/ingest/{id}/live.m3u8"))).body(playlist).send();
    let put_segment = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        engine.client.put(engine.url(&format!("/ingest/{id}/live0.ts"))).body(vec![0x47u8; 188]).send().await
    };
    let (playlist_reply, segment_reply) = tokio::join!(put_playlist, put_segment);
    assert_eq!(segment_reply.unwrap().status(), 201);
    let reply: serde_json::Value = playlist_reply.unwrap().json().await.unwrap();
    assert_eq!(reply["chunks_emitted"], serde_json::json!([0]), "{reply}");
    let doc = engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 1).await;
    assert_eq!(doc["gaps_total"], 0, "{doc}");
    engine.shutdown().await;
}

/// Stored media is write-once: a re-PUT of a number, sent after it or racing it, of a `late`
/// chunk or of the init section, with other bytes, is refused; what players get always hashes
/// to the chunk's `stored_sha256`. Only the file names encoders use are taken.
async fn accepted_media_is_never_replaced(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let (client, base) = (&engine.client, engine.base.as_str());
    let id = crate::common::start_stream_at(client, base, r#"{"target_duration":2,"dvr_window_size":5}"#).await;
    let put = |seq: u64, bytes: Vec<u8>| {
        client
            .put(format!("{base}/ingest/{id}/{seq}.ts"))
            .header("X-Sequence-Number", seq.to_string())
            .header("X-Duration-Ms", "2000")
            .body(bytes)
            .send()
    };
    let bytes = |seq: u64, version: u8| format!("segment {seq} version {version}").repeat(200).into_bytes();
    assert_eq!(put(0, bytes(0, 0)).await.unwrap().status(), 201);
    // Pairs of uploads of one number with different bytes, at once (number 5 is left a gap).
    let mut winners = std::collections::HashMap::new();
    for seq in (1..=20).filter(|seq| *seq != 5) {
        let (a, b) = tokio::join!(put(seq, bytes(seq, 1)), put(seq, bytes(seq, 2)));
        let (a, b) = (a.unwrap(), b.unwrap());
        let statuses = [a.status().as_u16(), b.status().as_u16()];
        let created: Vec<_> = [a, b].into_iter().filter(|r| r.status() == 201).collect();
        assert_eq!(created.len(), 1, "seq {seq}: {statuses:?}");
        assert!(statuses.contains(&409), "seq {seq}: {statuses:?}");
        let reply: serde_json::Value = created.into_iter().next().unwrap().json().await.unwrap();
        winners.insert(seq, reply["sha256"].as_str().unwrap().to_string());
    }
    engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 20).await;
    // After it: refused too. A late chunk is stored once, then refused like any other.
    assert_eq!(put(3, bytes(3, 3)).await.unwrap().status(), 409);
    assert_eq!(put(5, bytes(5, 1)).await.unwrap().status(), 201);
    engine.wait_stream(&id, |doc| doc["late_chunks"] == 1).await;
    assert_eq!(put(5, bytes(5, 2)).await.unwrap().status(), 409);
    // A chunk in the playlist sent again with its own bytes (its answer was lost): a retry.
    assert_eq!(put(0, bytes(0, 0)).await.unwrap().status(), 201, "the same bytes again: a retry");
    let store = crate::common::open_store(backends, data.path()).await;
    let (_, listed) = engine.get_json(&format!("/streams/{id}/chunks?limit=100")).await;
    let chunks = listed["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 21, "{listed}");
    for chunk in chunks {
        let stored = store.get_bytes(chunk["object_key"].as_str().unwrap()).await.unwrap().unwrap();
        assert_eq!(sha256_hex(&stored), chunk["stored_sha256"].as_str().unwrap(), "{chunk}");
        if let Some(winner) = winners.get(&chunk["sequence_number"].as_u64().unwrap()) {
            assert_eq!(winner, chunk["stored_sha256"].as_str().unwrap(), "{chunk}");
        }
    }
    assert_eq!(chunks[0]["status"], "live", "the retried chunk stays in the playlist: {}", chunks[0]);
    // The init section: stored once; a replacement under live players is refused.
    let init = |body: &'static str| client.put(format!("{base}/ingest/{id}/init.mp4")).body(body).send();
    assert_eq!(init("an init section").await.unwrap().status(), 201);
    assert_eq!(init("an init section").await.unwrap().status(), 201, "the same bytes again: a retry");
    assert_eq!(init("another init section").await.unwrap().status(), 409);
    for name in ["movie.mp4", "a.b.ts", "x.TS"] {
        let response = client.put(format!("{base}/ingest/{id}/{name}")).body("x").send().await.unwrap();
        assert_eq!(response.status(), 400, "{name}");
    }
    engine.shutdown().await;
}
