//! Media jobs end to end (seed 004's operations): submitted as JSON naming a video or an
//! object, and as a multipart file, through the log and the FFmpeg pool; each output checked
//! here again with ffprobe, downloaded with `Range`; bad requests refused, a job cancelled.

on_both_backends!(each_operation_makes_the_output_it_names, bad_jobs_are_refused_and_a_running_job_is_cancelled,);

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{Backends, TestEngine, clip, list_keys, upload_video, wait_video_final};

/// Polls a job until `done` holds for it.
async fn wait_job(engine: &TestEngine, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..2400 {
        let (status, job) = engine.get_json(&format!("/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        last = job;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} never reached the expected state; last seen: {last}");
}

async fn finished(engine: &TestEngine, id: &str) -> Value {
    wait_job(engine, id, |job| ["completed", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or("")))
        .await
}

async fn submit(engine: &TestEngine, path: &str, body: Value) -> String {
    let (status, reply) = engine.post_json(path, &body.to_string()).await;
    assert_eq!(status, 202, "{body}: {reply}");
    assert_eq!(reply["status"], "queued");
    // Distinct creation times, so the list's order is the submission order.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    reply["job_id"].as_str().unwrap().to_string()
}

/// ffprobe's codec, type, width, height and pixel format of each stream of a file, a line each.
fn probe(file: &Path) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height,pix_fmt", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Downloads a completed job's output (checking `Range`) into `dir`.
async fn download(engine: &TestEngine, job: &Value, dir: &Path) -> std::path::PathBuf {
    let id = job["job_id"].as_str().unwrap();
    let response = engine.client.get(engine.url(&format!("/jobs/{id}/download"))).send().await.unwrap();
    assert_eq!(response.status(), 200, "{job}");
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_string();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, job["output"]["size_bytes"].as_u64().unwrap());
    let range = engine.client.get(engine.url(&format!("/download/{id}"))).header("Range", "bytes=0-9").send();
    let range = range.await.unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap().as_ref(), &bytes[..10]);
    // The signed link in the job's document serves the same bytes, with no token.
    let signed = reqwest::get(job["download_url"].as_str().unwrap()).await.unwrap().bytes().await.unwrap();
    assert_eq!(signed, bytes);
    let name = disposition.split('"').nth(1).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, &bytes).unwrap();
    file
}

async fn each_operation_makes_the_output_it_names(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let source = clip(media.path(), "source.mp4", "640x360", 4, true);
    let (status, uploaded) = upload_video(&engine.client, &engine.base, &source, "job source").await;
    assert_eq!(status, 201, "{uploaded}");
    let video_id = uploaded["stream_id"].as_str().unwrap();
    assert_eq!(wait_video_final(&engine.client, &engine.base, video_id).await["status"], "ready");
    let source_key = uploaded["source_key"].as_str().unwrap();

    let compress = submit(&engine, "/jobs", json!({"operation": "compress", "video_id": video_id})).await;
    // Seed 004's shape: `method_name`, `source`, `output_format`.
    let audio = submit(&engine, "/process", json!({"method_name": "extract_audio", "source": source_key})).await;
    let webm = json!({"method_name": "convert_format", "source": source_key, "output_format": "webm"});
    let webm = submit(&engine, "/process", webm).await;
    let gray = submit(&engine, "/jobs", json!({"operation": "black_and_white", "source_key": source_key})).await;
    let form = reqwest::multipart::Form::new()
        .text("operation", "resize")
        .text("params", r#"{"width": 320, "height": 180}"#)
        .part("file", reqwest::multipart::Part::bytes(std::fs::read(&source).unwrap()).file_name("phone.mp4"));
    let response = engine.client.post(engine.url("/jobs")).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let resize: Value = response.json().await.unwrap();
    let resize = resize["job_id"].as_str().unwrap().to_string();

    let expected = [
        (&compress, "h264,video,640,360,yuv420p\naac,audio"),
        (&audio, "mp3,audio"),
        (&webm, "vp9,video,640,360,yuv420p\nopus,audio"),
        (&gray, "h264,video,640,360,yuv420p\naac,audio"),
        (&resize, "h264,video,320,180,yuv420p\naac,audio"),
    ];
    for (id, streams) in expected {
        let job = finished(&engine, id).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!((job["progress"].as_f64(), job["progress_pct"].as_f64()), (Some(100.0), Some(100.0)));
        assert!(job["completed_at"].is_string() && job["created_at"].is_string(), "{job}");
        let file = download(&engine, &job, media.path()).await;
        assert_eq!(probe(&file), streams, "{job}");
        if id == &compress {
            assert!(std::fs::metadata(&file).unwrap().len() < std::fs::metadata(&source).unwrap().len());
        }
    }
    // The gray one has no chroma: both chroma planes stay at 128 (ffprobe's signalstats).
    let (_, job) = engine.get_json(&format!("/status/{gray}")).await;
    let file = download(&engine, &job, media.path()).await;
    let graph = format!("movie={},signalstats", file.display());
    let stats = Command::new("ffprobe")
        .args(["-v", "error", "-f", "lavfi", "-i", &graph, "-show_entries"])
        .args(["frame_tags=lavfi.signalstats.UMAX,lavfi.signalstats.VMIN", "-of", "csv=p=0"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.lines().count() >= 100, "{stats}");
    for line in stats.lines() {
        assert!(line.split(',').all(|v| (v.parse::<f64>().unwrap() - 128.0).abs() <= 2.0), "{line}");
    }

    // The list: newest first, paged, with the count of all.
    let (_, page) = engine.get_json("/jobs?limit=2").await;
    assert_eq!((page["total"].as_u64(), page["count"].as_u64()), (Some(5), Some(2)), "{page}");
    assert_eq!(page["jobs"][0]["job_id"], resize.as_str());
    let (_, rest) = engine.get_json("/process?limit=10&skip=2").await;
    let ids: Vec<&str> = rest["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [webm.as_str(), audio.as_str(), compress.as_str()]);
    assert!(engine.metric(r#"segflow_media_jobs_total{status="completed"}"#).await >= 5.0);
    engine.shutdown().await;
}

async fn bad_jobs_are_refused_and_a_running_job_is_cancelled(backends: Backends) {
    let data = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();
    let engine = TestEngine::start_on(backends, data.path(), 2).await;
    let silent = clip(media.path(), "silent.mp4", "320x240", 2, false);
    let key = "vod-raw/vod-jobsource/source.mp4";
    engine.store.put_bytes(key, std::fs::read(&silent).unwrap().into()).await.unwrap();

    for (body, status, says) in [
        (json!({"operation": "sharpen", "source_key": key}), 400, "unknown variant"),
        (json!({"operation": "compress"}), 400, "name one source"),
        (json!({"operation": "compress", "source_key": key, "params": {"crf": 99}}), 422, "crf 99"),
        (json!({"operation": "compress", "source_key": key, "params": {"width": 640}}), 422, "compress takes no width"),
        (json!({"operation": "resize", "source_key": key, "params": {"width": 641}}), 422, "even number"),
        (json!({"operation": "compress", "source_key": "vod-raw/../signing.key"}), 400, "not one of the store's"),
        (json!({"operation": "compress", "source_key": "vod-raw/vod-none/source.mp4"}), 422, "vod-none"),
        (json!({"operation": "compress", "video_id": "vod-unknown"}), 404, "vod-unknown"),
    ] {
        let (got, reply) = engine.post_json("/jobs", &body.to_string()).await;
        assert_eq!(got, status, "{body}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (_, page) = engine.get_json("/jobs").await;
    assert_eq!(page["total"], 0, "a refused job leaves no document: {page}");
    for path in ["/jobs/job-000000000000", "/status/job-000000000000", "/jobs/job-000000000000/download", "/jobs/../x"]
    {
        assert_eq!(engine.get_json(path).await.0, 404, "{path}");
    }
    let gone = engine.client.delete(engine.url("/jobs/job-000000000000")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(engine.get_json("/jobs?limit=0").await.0, 400);

    // A job on a file with no stream it needs fails with that reason.
    let audio = submit(&engine, "/jobs", json!({"operation": "extract_audio", "source_key": key})).await;
    let job = finished(&engine, &audio).await;
    assert_eq!(
        (job["status"].as_str(), job["error"].as_str()),
        (Some("failed"), Some("the source has no audio stream"))
    );
    assert_eq!(engine.get_json(&format!("/jobs/{audio}/download")).await.0, 409);
    let sound = media.path().join("tone.m4a");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440", "-t", "2"])
        .arg(&sound)
        .status()
        .unwrap();
    assert!(made.success());
    let form = reqwest::multipart::Form::new()
        .text("method_name", "black_and_white")
        .part("file", reqwest::multipart::Part::bytes(std::fs::read(&sound).unwrap()).file_name("tone.m4a"));
    let response = engine.client.post(engine.url("/process")).multipart(form).send().await.unwrap();
    let no_video: Value = response.json().await.unwrap();
    let job = finished(&engine, no_video["job_id"].as_str().unwrap()).await;
    assert_eq!(
        (job["status"].as_str(), job["error"].as_str()),
        (Some("failed"), Some("the source has no video stream"))
    );

    // A long job is cancelled while FFmpeg runs: it stops, and stores no output.
    let long = clip(media.path(), "long.mp4", "640x360", 30, false);
    engine.store.put_bytes("vod-raw/vod-long/source.mp4", std::fs::read(&long).unwrap().into()).await.unwrap();
    let body = json!({"operation": "resize", "source_key": "vod-raw/vod-long/source.mp4", "params": {"width": 3840, "height": 2160}});
    let id = submit(&engine, "/jobs", body).await;
    wait_job(&engine, &id, |job| job["status"] == "processing" && job["progress"].as_f64() > Some(0.0)).await;
    let response = engine.client.delete(engine.url(&format!("/jobs/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let job = finished(&engine, &id).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(job["progress"].as_f64().unwrap() < 100.0, "{job}");
    let again = engine.client.delete(engine.url(&format!("/jobs/{id}"))).send().await.unwrap();
    assert_eq!(again.status(), 409, "a finished job stays as it is");
    assert!(list_keys(backends, &engine.data_dir, &format!("vod-variants/{id}/")).await.is_empty());
    assert_eq!(engine.get_json(&format!("/jobs/{id}/download")).await.0, 409);
    engine.shutdown().await;
}
