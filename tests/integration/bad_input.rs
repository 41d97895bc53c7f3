//! Bad input is data, not a crash: every malformed request gets a JSON 4xx, writes nothing,
//! and the engine keeps serving; a malformed event in the log becomes a dead letter.

use std::path::Path;

use crate::common::TestEngine;
use segflow::log::embedded::EmbeddedLog;
use segflow::model::Topic;

/// Every file under the data dir's objects, and the stream count: what a refused request
/// must leave as it was.
async fn snapshot(engine: &TestEngine) -> (Vec<String>, serde_json::Value) {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    let mut files = Vec::new();
    walk(&engine.data_dir.join("objects"), &mut files);
    files.sort();
    // The partitions' bytes, hashed (files are zero-filled ahead: their sizes say nothing).
    let log_contents: Vec<String> = (0..6)
        .map(|p| {
            crate::common::sha256_hex(&std::fs::read(engine.data_dir.join(format!("log/live-chunks/{p}.log"))).unwrap())
        })
        .collect();
    (files, serde_json::json!(log_contents))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors_and_change_nothing() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start(data.path(), 2).await;
    let id = engine.start_stream(2).await;
    let ended = engine.start_stream(2).await;
    let (status, _) = engine.post_json("/streams/end", &format!(r#"{{"stream_id":"{ended}"}}"#)).await;
    assert_eq!(status, 200);
    let before = snapshot(&engine).await;

    let big = "x".repeat(100 * 1024);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("malformed JSON", engine.client.post(engine.url("/streams/start")).body("{\"title\":"), 400),
        ("unknown field", engine.client.post(engine.url("/streams/start")).body(r#"{"titel":"x"}"#), 400),
        ("bad target", engine.client.post(engine.url("/streams/start")).body(r#"{"target_duration":0}"#), 422),
        (
            "oversized JSON",
            engine.client.post(engine.url("/streams/start")).body(format!(r#"{{"title":"{big}"}}"#)),
            413,
        ),
        ("end unknown", engine.client.post(engine.url("/streams/end")).body(r#"{"stream_id":"live-nope"}"#), 404),
        (
            "end twice",
            engine.client.post(engine.url("/streams/end")).body(format!(r#"{{"stream_id":"{ended}"}}"#)),
            409,
        ),
        ("end no body", engine.client.post(engine.url("/streams/end")), 400),
        ("metadata unknown", engine.client.get(engine.url("/streams/live-nope/metadata")), 404),
        ("live unknown", engine.client.get(engine.url("/streams/live-nope/live")), 404),
        ("id with dots", engine.client.get(engine.url("/streams/..%2F..%2Fetc/metadata")), 400),
        ("id with dots", engine.client.put(engine.url("/ingest/..%2Fx/seg.ts")).body("x"), 400),
        ("file with slash", engine.client.put(engine.url(&format!("/ingest/{id}/..%2F..%2Fx.ts"))).body("x"), 400),
        (
            "unknown stream",
            engine.client.put(engine.url("/ingest/live-nope/0.ts")).header("X-Sequence-Number", "0").body("x"),
            404,
        ),
        (
            "chunk for ended stream",
            engine
                .client
                .put(engine.url(&format!("/ingest/{ended}/0.ts")))
                .header("X-Sequence-Number", "0")
                .header("X-Duration-Ms", "2000")
                .body("x"),
            409,
        ),
        (
            "empty segment",
            engine
                .client
                .put(engine.url(&format!("/ingest/{id}/0.ts")))
                .header("X-Sequence-Number", "0")
                .header("X-Duration-Ms", "2000")
                .body(""),
            400,
        ),
        (
            "missing duration",
            engine.client.put(engine.url(&format!("/ingest/{id}/0.ts"))).header("X-Sequence-Number", "0").body("x"),
            400,
        ),
        (
            "too long for target",
            engine
                .client
                .put(engine.url(&format!("/ingest/{id}/0.ts")))
                .header("X-Sequence-Number", "0")
                .header("X-Duration-Ms", "2600")
                .body("x"),
            422,
        ),
        (
            "bad checksum header",
            engine
                .client
                .put(engine.url(&format!("/ingest/{id}/0.ts")))
                .header("X-Sequence-Number", "0")
                .header("X-Duration-Ms", "2000")
                .header("X-Checksum-Sha256", "abc")
                .body("x"),
            400,
        ),
        (
            "bad sequence header",
            engine.client.put(engine.url(&format!("/ingest/{id}/0.ts"))).header("X-Sequence-Number", "-1").body("x"),
            400,
        ),
        ("unsupported file", engine.client.put(engine.url(&format!("/ingest/{id}/x.exe"))).body("x"), 415),
        ("bad playlist", engine.client.put(engine.url(&format!("/ingest/{id}/live.m3u8"))).body("not a playlist"), 400),
        (
            "chunk JSON for missing object",
            engine
                .client
                .post(engine.url(&format!("/streams/{id}/chunks")))
                .body(r#"{"sequence_number":0,"duration_ms":2000}"#),
            422,
        ),
        (
            "chunk JSON with foreign key",
            engine
                .client
                .post(engine.url(&format!("/streams/{id}/chunks")))
                .body(r#"{"sequence_number":0,"duration_ms":2000,"object_key":"live-streams/other/chunks/0.ts"}"#),
            422,
        ),
        ("chunk JSON malformed", engine.client.post(engine.url(&format!("/streams/{id}/chunks"))).body("[1,2"), 400),
    ];
    for (name, request, expected) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, expected, "{name}: {body}");
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: JSON error body, got {body}"
        );
    }
    // An oversized segment: 413, and no partial object is left behind.
    let limit = segflow::config::Config::default().max_segment_bytes as usize;
    let response = engine
        .client
        .put(engine.url(&format!("/ingest/{id}/0.ts")))
        .header("X-Sequence-Number", "0")
        .header("X-Duration-Ms", "2000")
        .body(vec![0u8; limit + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    assert_eq!(snapshot(&engine).await, before, "refused requests wrote nothing");
    let (status, health) = engine.get_json("/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_log_events_become_dead_letters() {
    let data = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(&data.path().join("log")).unwrap();
        log.append(Topic::LiveChunks, "a", b"{not json".to_vec()).await.unwrap();
        log.append(Topic::LiveChunks, "b", br#"{"stream_id":"../x","sequence_number":1}"#.to_vec()).await.unwrap();
        log.append(
            Topic::LiveChunks,
            "c",
            br#"{"stream_id":"live-ghost","sequence_number":1,"duration_ms":1000}"#.to_vec(),
        )
        .await
        .unwrap();
        log.close();
    }
    let engine = TestEngine::start(data.path(), 2).await;
    let mut letters = serde_json::Value::Null;
    for _ in 0..200 {
        letters = engine.get_json("/dead-letters").await.1;
        if letters["dead_letters"].as_array().is_some_and(|a| a.len() == 3) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let mut reasons: Vec<&str> =
        letters["dead_letters"].as_array().unwrap().iter().map(|d| d["reason"].as_str().unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, ["invalid_event", "malformed_json", "unknown_stream"], "{letters}");
    let text = engine.client.get(engine.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"segflow_dead_letters_total{reason="malformed_json"} 1"#), "{text}");
    // The engine is still serving.
    engine.start_stream(2).await;
    engine.shutdown().await;
}

/// A failure of segflow's own is a 5xx, not the client's 4xx: the local store cannot create a
/// chunk's folder (a file sits where it goes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_is_answered_500_not_400() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start(data.path(), 1).await;
    let id = engine.start_stream(2).await;
    let stream_dir = engine.data_dir.join("objects/live-streams").join(&id);
    std::fs::create_dir_all(&stream_dir).unwrap();
    std::fs::write(stream_dir.join("chunks"), b"not a folder").unwrap();
    let response = engine
        .client
        .put(engine.url(&format!("/ingest/{id}/1.ts")))
        .header("X-Sequence-Number", "1")
        .header("X-Duration-Ms", "2000")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal", "{body}");
    engine.shutdown().await;
}

/// A client that sends a whole segment and hangs up without reading the answer, as FFmpeg's
/// HLS muxer does: the segment is still stored, logged, and counted with its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_client_hangs_up_is_still_taken_and_counted() {
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start(data.path(), 1).await;
    let (id, key) = engine.start_stream_keyed(2).await;
    let body = b"a segment FFmpeg pushed".repeat(1000);
    let head = format!(
        "PUT /ingest/{id}/{key}/0.ts HTTP/1.1\r\nHost: segflow\r\nX-Sequence-Number: 0\r\nX-Duration-Ms: 2000\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut connection = tokio::net::TcpStream::connect(engine.base.trim_start_matches("http://")).await.unwrap();
    connection.write_all(head.as_bytes()).await.unwrap();
    connection.write_all(&body).await.unwrap();
    drop(connection); // gone before the answer
    engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 1).await;
    let counted = r#"api_requests_total{method="PUT",route="/ingest/{stream_id}/{stream_key}/{file}",status="201"}"#;
    for _ in 0..200 {
        if engine.metric(counted).await == 1.0 {
            return engine.shutdown().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{counted} is {}", engine.metric(counted).await);
}

/// Numbers from outside that once took the process down (a sequence number near `u64::MAX`
/// made the playlist walk 2^64 slots): refused at the API with nothing changed, and set aside
/// by the dataflow when a producer writes them to the log itself, so a restart replays nothing
/// that fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_out_of_range_change_nothing_and_a_restart_replays_no_crash() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start(data.path(), 2).await;
    let id = engine.start_stream(2).await;
    assert_eq!(crate::common::put_segment(&engine.client, &engine.base, &id, 0).await, 201);
    engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 1).await;
    let before = snapshot(&engine).await;
    let segment = |seq: &str, duration: &str, date: Option<&str>| {
        let request = engine
            .client
            .put(engine.url(&format!("/ingest/{id}/x.ts")))
            .header("X-Sequence-Number", seq)
            .header("X-Duration-Ms", duration)
            .body("x");
        match date {
            Some(date) => request.header("X-Program-Date-Time", date),
            None => request,
        }
    };
    let playlist = |media_sequence: &str, extinf: &str| {
        let text = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{media_sequence}\n#EXTINF:{extinf},\nout.ts\n"
        );
        engine.client.put(engine.url(&format!("/ingest/{id}/live.m3u8"))).body(text)
    };
    let cases = vec![
        ("sequence u64::MAX", segment("18446744073709551615", "2000", None), 422),
        ("sequence 2^53", segment("9007199254740992", "2000", None), 422),
        ("jump past the limit", segment("10001", "2000", None), 422),
        ("duration u64::MAX", segment("1", "18446744073709551615", None), 422),
        ("date in 9999", segment("1", "2000", Some("9999-12-31T23:59:59Z")), 400),
        ("date a week off", segment("1", "2000", Some("2020-01-01T00:00:00Z")), 422),
        ("media sequence u64::MAX", playlist("18446744073709551615", "2.0"), 422),
        ("EXTINF -5", playlist("1", "-5"), 400),
        ("EXTINF NaN", playlist("1", "NaN"), 400),
        ("EXTINF 1e30", playlist("1", "1e30"), 422),
    ];
    for (name, request, expected) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, expected, "{name}: {body}");
    }
    assert_eq!(snapshot(&engine).await, before, "refused requests wrote nothing");
    engine.shutdown().await;

    // A producer writes what the API refuses straight to the log.
    {
        let log = EmbeddedLog::open(&data.path().join("log")).unwrap();
        let poison = [
            format!(r#"{{"stream_id":"{id}","sequence_number":18446744073709551615,"duration_ms":2000}}"#),
            format!(r#"{{"stream_id":"{id}","sequence_number":20000,"duration_ms":2000}}"#),
            format!(r#"{{"stream_id":"{id}","sequence_number":1,"duration_ms":18446744073709551615}}"#),
            r#"{"event_type":"stream_started","stream_id":"live-huge","target_duration_s":2,"dvr_window_size":18446744073709551615}"#.into(),
        ];
        for event in poison {
            log.append(Topic::LiveChunks, &id, event.into_bytes()).await.unwrap();
        }
        log.close();
    }
    for _ in 0..2 {
        // Twice: the first run sets them aside, the second finds nothing left to replay.
        let engine = TestEngine::start(data.path(), 2).await;
        let doc = engine.wait_stream(&id, |doc| doc["rejected_chunks"] == 1).await;
        assert_eq!((doc["head_sequence"].as_u64(), doc["chunks_accepted"].as_u64()), (Some(0), Some(1)), "{doc}");
        let (_, letters) = engine.get_json("/dead-letters").await;
        let reasons: Vec<&str> =
            letters["dead_letters"].as_array().unwrap().iter().map(|d| d["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["invalid_event"; 3], "{letters}");
        let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
        assert!(chunks.to_string().contains(r#""status":"too_far_ahead""#), "{chunks}");
        let (status, health) = engine.get_json("/health").await;
        assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
        engine.shutdown().await;
    }
    let engine = TestEngine::start(data.path(), 2).await;
    assert_eq!(crate::common::put_segment(&engine.client, &engine.base, &id, 1).await, 201);
    engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 2).await;
    engine.shutdown().await;
}
