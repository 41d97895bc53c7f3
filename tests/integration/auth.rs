//! Authentication as a client meets it: secure by default, scoped API tokens made, used and
//! revoked, a key per live stream for its encoder (in the URL, a header or as a bearer),
//! rotated, and a playback policy per stream; the first start's admin token and the CLI.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::{EngineProcess, TestEngine, client_with, sha256_hex};

/// A request's status and JSON body.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn segment(client: &reqwest::Client, url: String, seq: u64) -> reqwest::RequestBuilder {
    let bytes = format!("segment {seq}").repeat(100).into_bytes();
    client
        .put(url)
        .header("X-Sequence-Number", seq.to_string())
        .header("X-Duration-Ms", "2000")
        .header("X-Checksum-Sha256", sha256_hex(&bytes))
        .body(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_health_and_signed_playback_needs_credentials() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start(data.path(), 1).await;
    let id = engine.start_stream(2).await;
    let anonymous = reqwest::Client::new();
    let url = |path: &str| engine.url(path);
    let refused = [
        anonymous.post(url("/streams/start")).body("{}"),
        anonymous.post(url("/streams/end")).body(format!(r#"{{"stream_id":"{id}"}}"#)),
        anonymous.get(url(&format!("/streams/{id}/metadata"))),
        anonymous.get(url(&format!("/streams/{id}/live"))),
        anonymous.get(url(&format!("/streams/{id}/chunks"))),
        anonymous.post(url(&format!("/streams/{id}/key"))),
        anonymous.post(url(&format!("/streams/{id}/chunks"))).body(r#"{"sequence_number":0,"duration_ms":2000}"#),
        segment(&anonymous, url(&format!("/ingest/{id}/0.ts")), 0),
        anonymous.get(url("/dead-letters")),
        anonymous.post(url("/vod/upload")).body(r#"{"source_key":"vod-raw/vod-x/a.mp4"}"#),
        anonymous.get(url("/vod/vod-x/metadata")),
        anonymous.get(url("/tokens")),
        anonymous.post(url("/tokens")).body(r#"{"name":"n","scopes":["admin"]}"#),
        anonymous.delete(url("/tokens/000000000000")),
    ];
    for request in refused {
        let response = request.send().await.unwrap();
        let what = format!("{} {}", response.status(), response.url().path());
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"segflow\"", "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{what}: {body}");
    }
    let made_up = client_with("sft_000000000000_0000000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(send(made_up.get(url(&format!("/streams/{id}/metadata")))).await.0, 401);
    assert_eq!(send(anonymous.get(url("/health"))).await.0, 200);
    // Nothing was written by any of them.
    let (_, doc) = engine.get_json(&format!("/streams/{id}/metadata")).await;
    assert_eq!((doc["status"].as_str(), doc["chunks_accepted"].as_u64()), (Some("live"), Some(0)), "{doc}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_have_scopes_and_a_revoked_one_stops_working() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start(data.path(), 1).await;
    let make = |name: &str, scopes: Value| {
        let body = json!({ "name": name, "scopes": scopes }).to_string();
        engine.client.post(engine.url("/tokens")).body(body)
    };
    let (status, read) = send(make("dashboard", json!(["read"]))).await;
    assert_eq!(status, 201, "{read}");
    let (_, publish) = send(make("encoder farm", json!(["publish"]))).await;
    let token = |made: &Value| client_with(made["token"].as_str().unwrap());
    let (reader, publisher) = (token(&read), token(&publish));
    assert!(read["token"].as_str().unwrap().starts_with("sft_"));
    assert_eq!(send(make("", json!(["read"]))).await.0, 422);
    assert_eq!(send(make("x", json!([]))).await.0, 422);
    assert_eq!(send(make("x", json!(["root"]))).await.0, 400);

    // publish starts streams and reads; read only reads; neither manages tokens.
    let (status, started) = send(publisher.post(engine.url("/streams/start")).body("{}")).await;
    assert_eq!(status, 201, "{started}");
    let id = started["stream_id"].as_str().unwrap();
    assert_eq!(send(reader.post(engine.url("/streams/start")).body("{}")).await.0, 403);
    assert_eq!(send(reader.get(engine.url(&format!("/streams/{id}/metadata")))).await.0, 200);
    assert_eq!(send(publisher.get(engine.url(&format!("/streams/{id}/metadata")))).await.0, 200);
    let (status, body) = send(publisher.get(engine.url("/tokens"))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("lacks the admin scope"), "{body}");

    // Listed without their text or hash; revoked, refused at once.
    let (_, listed) = engine.get_json("/tokens").await;
    let text = listed.to_string();
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 3, "{listed}"); // with the admin token
    assert!(!text.contains(read["token"].as_str().unwrap()) && !text.contains("sha256"), "{listed}");
    let read_id = read["token_id"].as_str().unwrap();
    let (status, revoked) = send(engine.client.delete(engine.url(&format!("/tokens/{read_id}")))).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at_ms"].is_u64());
    assert_eq!(send(reader.get(engine.url(&format!("/streams/{id}/metadata")))).await.0, 401);
    assert_eq!(send(engine.client.delete(engine.url(&format!("/tokens/{read_id}")))).await.0, 200, "idempotent");
    assert_eq!(send(engine.client.delete(engine.url("/tokens/nope"))).await.0, 404);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_takes_segments_only_with_its_key_and_a_rotated_key_replaces_the_old() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start(data.path(), 1).await;
    let (id, key) = engine.start_stream_keyed(2).await;
    let (other, other_key) = engine.start_stream_keyed(2).await;
    let encoder = reqwest::Client::new(); // no API token: only the stream's key
    let at = |path: String| engine.url(&path);
    // Wrong keys change nothing.
    let wrong = [
        segment(&encoder, at(format!("/ingest/{id}/{other_key}/0.ts")), 0),
        segment(&encoder, at(format!("/ingest/{id}/0.ts")), 0).header("X-Stream-Key", &other_key),
        segment(&encoder, at(format!("/ingest/{id}/0.ts")), 0).bearer_auth("sk_00"),
        encoder.post(at("/streams/end".into())).bearer_auth(&other_key).body(format!(r#"{{"stream_id":"{id}"}}"#)),
    ];
    for request in wrong {
        let (status, body) = send(request).await;
        assert_eq!(status, 403, "{body}");
    }
    let (_, chunks) = engine.get_json(&format!("/streams/{id}/chunks")).await;
    assert_eq!(chunks["chunks"], json!([]), "a wrong key stored nothing");
    assert!(!engine.data_dir.join(format!("objects/live-streams/{id}")).exists());
    // The key in the URL path, in X-Stream-Key, or as the bearer.
    assert_eq!(send(segment(&encoder, at(format!("/ingest/{id}/{key}/0.ts")), 0)).await.0, 201);
    assert_eq!(send(segment(&encoder, at(format!("/ingest/{id}/1.ts")), 1).header("X-Stream-Key", &key)).await.0, 201);
    assert_eq!(send(segment(&encoder, at(format!("/ingest/{id}/2.ts")), 2).bearer_auth(&key)).await.0, 201);
    engine.wait_stream(&id, |doc| doc["chunks_accepted"] == 3).await;

    // Rotation: with the key itself; the old one stops, the new one works.
    let (status, rotated) = send(encoder.post(at(format!("/streams/{id}/key"))).bearer_auth(&key)).await;
    assert_eq!(status, 200, "{rotated}");
    let new_key = rotated["stream_key"].as_str().unwrap();
    assert_ne!(new_key, key);
    assert_eq!(send(segment(&encoder, at(format!("/ingest/{id}/{key}/3.ts")), 3)).await.0, 403);
    assert_eq!(send(segment(&encoder, at(format!("/ingest/{id}/{new_key}/3.ts")), 3)).await.0, 201);
    let (_, doc) = engine.get_json(&format!("/streams/{id}/metadata")).await;
    assert!(!doc.to_string().contains("stream_key"), "the API never shows a key or its hash: {doc}");
    let end =
        |key: &str| encoder.post(at("/streams/end".into())).bearer_auth(key).body(format!(r#"{{"stream_id":"{id}"}}"#));
    assert_eq!(send(end(&key)).await.0, 403);
    let (status, ended) = send(end(new_key)).await;
    assert_eq!((status, ended["status"].as_str()), (200, Some("vod")), "{ended}");
    // The other stream is untouched, and an admin (publish) token ends it without its key.
    let (status, _) = engine.post_json("/streams/end", &format!(r#"{{"stream_id":"{other}"}}"#)).await;
    assert_eq!(status, 200);
    engine.shutdown().await;

    // After a restart the rotated key still holds (it is in the log and the stream's document).
    let engine = TestEngine::start(data.path(), 1).await;
    let (live, live_key) = engine.start_stream_keyed(2).await;
    let (_, rotated) = send(engine.client.post(engine.url(&format!("/streams/{live}/key")))).await;
    engine.shutdown().await;
    let engine = TestEngine::start(data.path(), 1).await;
    let new_key = rotated["stream_key"].as_str().unwrap();
    assert_eq!(send(segment(&encoder, engine.url(&format!("/ingest/{live}/{live_key}/0.ts")), 0)).await.0, 403);
    assert_eq!(send(segment(&encoder, engine.url(&format!("/ingest/{live}/{new_key}/0.ts")), 0)).await.0, 201);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_stream_mints_playback_urls_for_anyone_a_signed_one_for_readers() {
    let data = tempfile::tempdir().unwrap();
    let engine = TestEngine::start(data.path(), 1).await;
    let anonymous = reqwest::Client::new();
    let start = |policy: &'static str| {
        let body = json!({ "playback_policy": policy }).to_string();
        let engine = &engine;
        async move { engine.post_json("/streams/start", &body).await }
    };
    let (status, public) = start("public").await;
    assert_eq!((status, public["playback_policy"].as_str()), (201, Some("public")), "{public}");
    let (_, signed) = start("signed").await;
    assert_eq!(start("everyone").await.0, 400);
    let live = |doc: &Value| engine.url(&format!("/streams/{}/live", doc["stream_id"].as_str().unwrap()));
    let (status, minted) = send(anonymous.get(live(&public))).await;
    assert_eq!(status, 200, "{minted}");
    // The URL it minted plays without a token: a page can embed it.
    let playlist = anonymous.get(minted["manifest_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(playlist.status(), 200);
    assert!(playlist.text().await.unwrap().starts_with("#EXTM3U"));
    assert_eq!(send(anonymous.get(live(&signed))).await.0, 401);
    let (_, reader) = engine.post_json("/tokens", r#"{"name":"player backend","scopes":["read"]}"#).await;
    let reader = client_with(reader["token"].as_str().unwrap());
    let (status, minted) = send(reader.get(live(&signed))).await;
    assert_eq!(status, 200, "{minted}");
    assert_eq!(anonymous.get(minted["manifest_url"].as_str().unwrap()).send().await.unwrap().status(), 200);
    engine.shutdown().await;
}

/// `segflow run` with the environment of nothing but a data dir; stderr is returned to be read.
fn spawn(data_dir: &Path, args: &[&str]) -> (EngineProcess, std::io::BufReader<std::process::ChildStderr>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segflow"))
        .args(["run", "--workers", "1", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SEGFLOW_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_default().to_string();
    (EngineProcess::from(child), stderr, base)
}

/// `segflow token …` on a data dir: its exit status and stdout.
fn token_cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_segflow"))
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SEGFLOW_ADMIN_TOKEN")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_prints_an_admin_token_once_and_the_cli_makes_more() {
    let data = tempfile::tempdir().unwrap();
    let (mut first, stderr, base) = spawn(data.path(), &["--listen", "127.0.0.1:0"]);
    let printed: String = stderr.lines().map_while(Result::ok).take_while(|l| !l.contains("token create")).collect();
    let token = printed.split_whitespace().find(|w| w.starts_with("sft_")).expect("the admin token, printed");
    assert!(printed.contains("shown only now"), "{printed}");
    let admin = client_with(token);
    assert_eq!(send(admin.post(format!("{base}/streams/start")).body("{}")).await.0, 201);
    // The CLI needs the data dir to itself (the embedded store is locked while segflow runs).
    let (ok, _, said) = token_cli(data.path(), &["create"]);
    assert!(!ok && said.contains("stop it first"), "{said}");
    assert!(first.terminate().success());

    let (ok, made, said) = token_cli(data.path(), &["create", "--name", "ops", "--scopes", "publish,read"]);
    assert!(ok, "{said}");
    let made = made.trim().to_string();
    let (ok, listed, _) = token_cli(data.path(), &["list"]);
    assert!(
        ok && listed.lines().count() == 2 && listed.contains("publish,read") && !listed.contains("sft_"),
        "{listed}"
    );
    assert!(!token_cli(data.path(), &["create", "--scopes", "root"]).0);

    // A second start prints no token; both work, and a revoked one stops.
    let (second, stderr, base) = spawn(data.path(), &["--listen", "127.0.0.1:0"]);
    let ops = client_with(&made);
    assert_eq!(send(ops.post(format!("{base}/streams/start")).body("{}")).await.0, 201);
    assert_eq!(send(admin.get(format!("{base}/tokens"))).await.0, 200);
    drop(second);
    let rest: String = stderr.lines().map_while(Result::ok).collect();
    assert!(!rest.contains("sft_"), "{rest}");
    let ops_id = &made[4..16];
    let (ok, _, said) = token_cli(data.path(), &["revoke", ops_id]);
    assert!(ok, "{said}");
    let (_third, _, base) = spawn(data.path(), &["--listen", "127.0.0.1:0"]);
    assert_eq!(send(ops.post(format!("{base}/streams/start")).body("{}")).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_is_an_explicit_flag_refused_off_loopback() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_segflow"))
        .args(["run", "--no-auth", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && said.contains("no_auth is refused on 0.0.0.0:0"), "{said}");
    let (_engine, _, base) = spawn(data.path(), &["--no-auth", "--listen", "127.0.0.1:0"]);
    let anonymous = reqwest::Client::new();
    assert_eq!(send(anonymous.post(format!("{base}/streams/start")).body("{}")).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_requests_are_rate_limited_per_credential() {
    let data = tempfile::tempdir().unwrap();
    let config = segflow::config::Config {
        control_plane_rate_per_s: 1,
        control_plane_burst: 3,
        ..crate::common::Backends::Embedded.config(data.path())
    };
    let engine = TestEngine::start_with(config).await;
    let (_, publish) = engine.post_json("/tokens", r#"{"name":"farm","scopes":["publish"]}"#).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = engine.client.post(engine.url("/streams/start")).body("{}").send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "too_many_requests", "{body}");
        }
    }
    // The admin token had made a token already: two more starts, then refused.
    assert_eq!(statuses, [201, 201, 429, 429, 429]);
    // Another credential has its own bucket; reads are not limited.
    let farm = client_with(publish["token"].as_str().unwrap());
    assert_eq!(send(farm.post(engine.url("/streams/start")).body("{}")).await.0, 201);
    assert_eq!(engine.get_json("/dead-letters").await.0, 200);
    engine.shutdown().await;
}
