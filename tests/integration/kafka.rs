//! Kafka mode end to end: a producer publishes the legacy pipeline's chunk events straight to
//! `live-chunks` (no API call per chunk) after putting the bytes in S3; segflow hashes the
//! stored bytes itself, and the playlist plays. Then the broker goes down and comes back mid-stream.

use std::time::Duration;

use crate::common::{Backends, TestEngine, ffmpeg_decode, ffmpeg_segments, sha256_hex};
use rdkafka::producer::{FutureProducer, FutureRecord};
use segflow::model::keys;
use serde_json::json;

/// A producer of the test engine's own `live-chunks` topic, and that topic's name.
fn producer(engine: &TestEngine) -> (FutureProducer, String) {
    let config = Backends::Services.config(&engine.data_dir);
    let producer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", config.kafka.as_deref().unwrap())
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    (producer, format!("{}live-chunks", config.kafka_topic_prefix))
}

async fn publish(producer: &FutureProducer, topic: &str, id: &str, event: serde_json::Value) {
    let payload = event.to_string();
    let record = FutureRecord::to(topic).key(id).payload(&payload);
    producer.send(record, Duration::from_secs(30)).await.expect("the broker takes the event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn chunk_events_published_straight_to_kafka_are_verified_and_play() {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let segments = ffmpeg_segments(media.path(), 8);
    let engine = TestEngine::start_on(Backends::Services, data.path(), 2).await;
    let id = engine.start_stream(2).await;
    let (producer, topic) = producer(&engine);
    for (seq, segment) in segments.iter().enumerate() {
        let seq = seq as u64;
        engine.store.put_bytes(&keys::live_chunk(&id, seq, "ts"), segment.bytes.clone().into()).await.unwrap();
        // Segment 3 claims a checksum its bytes do not have.
        let claimed = if seq == 3 { sha256_hex(b"not these bytes") } else { sha256_hex(&segment.bytes) };
        let event = json!({
            "stream_id": id, "chunk_index": seq, "sequence_number": seq, "duration_ms": segment.duration_ms,
            "size_bytes": segment.bytes.len(), "checksum": claimed, "keyframe_aligned": true,
            "audio_track_id": format!("audio-{id}"), "video_track_id": format!("video-{id}"),
        });
        publish(&producer, &topic, &id, event).await;
    }
    let doc = engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 3 && doc["checksum_failures"] == 1).await;
    assert_eq!(doc["head_sequence"], 2, "the rejected last segment does not move the head: {doc}");
    let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
    assert_eq!(chunks["chunks"][0]["stored_sha256"], sha256_hex(&segments[0].bytes), "{chunks}");
    assert_eq!(chunks["chunks"][3]["status"], "checksum_failed", "{chunks}");

    let (status, ended) = engine.post_json("/streams/end", &format!(r#"{{"stream_id":"{id}"}}"#)).await;
    assert_eq!(status, 200, "{ended}");
    let (_ok, frames, stderr) = ffmpeg_decode(ended["manifest_url"].as_str().unwrap());
    assert_eq!(frames, 3 * 50, "three 2 s segments at 25 fps; ffmpeg said:\n{stderr}");
    engine.shutdown().await;
}
