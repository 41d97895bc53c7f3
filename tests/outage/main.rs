//! A backend that fails while running: the Kafka broker stopped mid-stream makes `/health` say
//! so while reads keep working, and when it returns nothing acknowledged is lost. A test
//! binary of its own: it stops the broker every other real-service test uses.

#[path = "../integration/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::{Backends, TestEngine, put_segment};

/// `scripts/services.sh stop|start kafka`.
fn broker(action: &str) {
    let script = common::service_env("SERVICES_SCRIPT");
    let status = Command::new(script).args([action, "kafka"]).status().expect("the services script runs");
    assert!(status.success(), "services.sh {action} kafka failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "real-services"), ignore = "needs the test servers: scripts/test.sh")]
async fn the_broker_going_down_mid_stream_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(Backends::Services, data.path(), 2).await;
    let (status, health) = engine.get_json("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["backends"]["event_log"]["kind"], "kafka", "{health}");
    let id = engine.start_stream(2).await;
    for seq in 0..3 {
        assert_eq!(put_segment(&engine.client, &engine.base, &id, seq).await, 201);
    }
    engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 3).await;

    broker("stop");
    let (status, health) = engine.get_json("/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["backends"]["event_log"]["state"], "down", "{health}");
    assert_eq!(health["backends"]["object_store"]["state"], "up", "{health}");
    assert_eq!(health["backends"]["metadata"]["state"], "up", "{health}");
    // Reads keep being served: the document and the signed playlist.
    let (status, doc) = engine.get_json(&format!("/streams/{id}/metadata")).await;
    assert_eq!((status, doc["chunks_accepted"].as_u64()), (200, Some(3)), "{doc}");
    let (_, live) = engine.get_json(&format!("/streams/{id}/live")).await;
    let playlist = engine.client.get(live["manifest_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(playlist.status(), 200);

    // A segment sent while the broker is down is acknowledged once it is back, not before.
    let (client, base, stream) = (engine.client.clone(), engine.base.clone(), id.clone());
    let pending = tokio::spawn(async move { put_segment(&client, &base, &stream, 3).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!pending.is_finished(), "no acknowledgement while the broker is down");
    broker("start");
    assert_eq!(pending.await.unwrap(), 201);
    assert_eq!(put_segment(&engine.client, &engine.base, &id, 4).await, 201);
    let doc = engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 5).await;
    assert_eq!(doc["gaps_total"], 0, "{doc}");
    let (status, health) = engine.get_json("/health").await;
    assert_eq!(status, 200, "{health}");
    let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
    let indexes: Vec<u64> =
        chunks["chunks"].as_array().unwrap().iter().map(|c| c["chunk_index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4], "every acknowledged segment, once");
    engine.shutdown().await;
}
