//! VOD speed: the transcoding real-time factor of a 1080p source on this machine, and
//! segflow's upload-to-`ready` time as a ratio against running the very same FFmpeg ladder
//! command by hand on the same file in the same run. Also measures the two ways to run the
//! ladder (one FFmpeg decoding once for every rung, or one FFmpeg per rung) against each other.
//!
//! `cargo bench --bench vod_transcode` (env `SECONDS` = source length, `ROUNDS`)
//!
//! `cargo bench --bench vod_transcode -- playable`: how soon an upload plays. A 10-minute
//! 1080p source (`SECONDS`, 600), uploaded; from the upload's answer to the video's first
//! `playable` and to `ready`, beside FFmpeg alone on the same file: its first segment of every
//! rung, and its end; and the CPU seconds of each side (FFmpeg alone; segflow's FFmpeg and
//! ffprobe runs, and segflow itself), which vary far less than the wall clock on a shared
//! machine. The source is kept in `~/.cache/segflow/bench`. `READY=0` measures only
//! the first-playable side: each upload is deleted once it plays, FFmpeg stopped once it has
//! its first segments, so that many rounds take minutes.

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use segflow::media::ladder::ladder;
use segflow::media::probe::probe;
use segflow::media::transcode::{TranscodeJob, ffmpeg_command};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A 1080p30 source with audio, encoded the way a camera or editor exports (x264, CRF 20).
fn source(dir: &Path, seconds: u64) -> std::path::PathBuf {
    let path = dir.join(format!("source-1080p-{seconds}s.mp4"));
    if path.exists() {
        return path;
    }
    let partial = dir.join(format!("source-1080p-{seconds}s.partial.mp4"));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i", "sine=frequency=440"])
        .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"])
        .arg(&partial)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// Runs FFmpeg command lines at once, as processes; returns the seconds until all are done.
fn run_by_hand(commands: &[Vec<std::ffi::OsString>]) -> f64 {
    let started = Instant::now();
    let children: Vec<_> = commands
        .iter()
        .map(|args| Command::new("ffmpeg").args(args).stdout(Stdio::null()).spawn().expect("ffmpeg runs"))
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; there is nothing to list
    }
    if std::env::args().any(|a| a == "playable") {
        return playable().await;
    }
    let (seconds, rounds) = (env("SECONDS", 20), env("ROUNDS", 3));
    let media = tempfile::tempdir().unwrap();
    let source = source(media.path(), seconds);
    let info = probe(&source).await.unwrap();
    let rungs = ladder(&info);
    let out_dir = media.path().join("by-hand");
    let job = |rungs| TranscodeJob { source: &source, out_dir: &out_dir, info: &info, rungs, segment_seconds: 2 };
    // One FFmpeg for the ladder (`split`), and one per rung, all at once (`per_rung`).
    let split = vec![ffmpeg_command(&job(&rungs))];
    let per_rung: Vec<_> = rungs.chunks(1).map(|rung| ffmpeg_command(&job(rung))).collect();
    for rung in &rungs {
        std::fs::create_dir_all(out_dir.join(&rung.name)).unwrap();
    }

    let data = tempfile::tempdir().unwrap();
    let (mut engine, base) = common::spawn_segflow(data.path());
    let client = common::admin_client(data.path());
    let (mut by_hand, mut per_rung_times, mut segflow, mut server_side) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        // Alternate the order so that drift of the machine does not favour one side.
        let segflow_first = round % 2 == 1;
        if segflow_first {
            let (total, server) = upload_to_ready(&client, &base, &source).await;
            segflow.push(total);
            server_side.push(server);
        }
        by_hand.push(run_by_hand(&split));
        per_rung_times.push(run_by_hand(&per_rung));
        if !segflow_first {
            let (total, server) = upload_to_ready(&client, &base, &source).await;
            segflow.push(total);
            server_side.push(server);
        }
        eprintln!(
            "round {round}: ffmpeg split {:.2} s, ffmpeg per-rung {:.2} s, segflow upload->ready {:.2} s (ratio {:.3})",
            by_hand[round as usize],
            per_rung_times[round as usize],
            segflow[round as usize],
            segflow[round as usize] / by_hand[round as usize]
        );
    }
    engine.terminate();

    let (hand, rung, flow, server) = (median(by_hand), median(per_rung_times), median(segflow), median(server_side));
    let names: Vec<_> = rungs.iter().map(|r| r.name.as_str()).collect();
    println!("source: {seconds} s of 1080p30 + AAC; ladder {names:?}; {rounds} rounds, medians");
    println!("ffmpeg by hand, one process, split:  {hand:.2} s  (real-time factor {:.2}x)", seconds as f64 / hand);
    println!("ffmpeg by hand, one process per rung: {rung:.2} s  (split is {:.2}x faster)", rung / hand);
    println!("segflow upload -> ready (client):   {flow:.2} s  (ratio to ffmpeg alone {:.3})", flow / hand);
    println!("segflow processing_latency_ms:      {server:.2} s  (ratio {:.3})", server / hand);
}

/// Uploads the source and polls until `ready`: (seconds seen by the client, the document's
/// own `processing_latency_ms` in seconds).
async fn upload_to_ready(client: &reqwest::Client, base: &str, source: &Path) -> (f64, f64) {
    let started = Instant::now();
    let (status, reply) = common::upload_video(client, base, source, "bench").await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["stream_id"].as_str().unwrap();
    let doc = common::wait_video_final(client, base, id).await;
    let total = started.elapsed().as_secs_f64();
    assert_eq!(doc["status"], "ready", "{doc}");
    (total, doc["processing_latency_ms"].as_f64().unwrap() / 1000.0)
}

/// Seconds from `started` until `done` holds, looking every 50 ms.
async fn until(started: Instant, mut done: impl FnMut() -> bool) -> f64 {
    while !done() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    started.elapsed().as_secs_f64()
}

/// Whether FFmpeg's playlist in `dir` lists a segment.
fn lists_a_segment(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("index.m3u8")).is_ok_and(|text| text.contains("#EXTINF"))
}

async fn playable() {
    let (seconds, rounds, to_ready) = (env("SECONDS", 600), env("ROUNDS", 1), env("READY", 1) == 1);
    let cache = std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/segflow/bench");
    std::fs::create_dir_all(&cache).unwrap();
    let source = source(&cache, seconds);
    let info = probe(&source).await.unwrap();
    let rungs = ladder(&info);
    let media = tempfile::tempdir().unwrap();
    let out_dir = media.path().join("by-hand");
    let job = TranscodeJob { source: &source, out_dir: &out_dir, info: &info, rungs: &rungs, segment_seconds: 2 };
    let split = ffmpeg_command(&job);
    let data = tempfile::tempdir().unwrap();
    let (mut engine, base) = common::spawn_segflow(data.path());
    let client = common::admin_client(data.path());
    let mut rows = Vec::new();
    for round in 0..rounds {
        let segflow_first = round % 2 == 1;
        let mut flow = None;
        if segflow_first {
            flow = Some(upload_to_playable(&engine, &client, &base, &source, to_ready).await);
        }
        let _ = std::fs::remove_dir_all(&out_dir);
        for rung in &rungs {
            std::fs::create_dir_all(out_dir.join(&rung.name)).unwrap();
        }
        let (started, (_, cpu_before)) = (Instant::now(), common::cpu_seconds_of("self"));
        let mut ffmpeg = Command::new("ffmpeg").args(&split).stdout(Stdio::null()).spawn().expect("ffmpeg runs");
        let first = until(started, || rungs.iter().all(|r| lists_a_segment(&out_dir.join(&r.name)))).await;
        let done = if to_ready {
            let mut exited = None;
            let done = until(started, || {
                exited = ffmpeg.try_wait().unwrap();
                exited.is_some()
            })
            .await;
            assert!(exited.unwrap().success());
            done
        } else {
            ffmpeg.kill().unwrap();
            ffmpeg.wait().unwrap();
            f64::NAN
        };
        let ffmpeg_cpu = common::cpu_seconds_of("self").1 - cpu_before;
        if !segflow_first {
            flow = Some(upload_to_playable(&engine, &client, &base, &source, to_ready).await);
        }
        let flow = flow.unwrap();
        eprintln!(
            "round {round}: ffmpeg first segments {first:.2} s, done {done:.2} s ({ffmpeg_cpu:.1} CPU s); segflow \
             playable {:.2} s (server {:.2} s), ready {:.2} s (server {:.2} s; {:.1} CPU s in FFmpeg and ffprobe, \
             {:.1} in segflow); ratios playable/first {:.2}, ready/done {:.3}",
            flow.playable,
            flow.server_playable,
            flow.ready,
            flow.server_ready,
            flow.media_cpu,
            flow.engine_cpu,
            flow.playable / first,
            flow.ready / done
        );
        rows.push((first, done, ffmpeg_cpu, flow));
    }
    engine.terminate();
    let names: Vec<_> = rungs.iter().map(|r| r.name.as_str()).collect();
    println!("source: {seconds} s of 1080p30 + AAC; ladder {names:?}; {rounds} rounds");
    println!(
        "| round | FFmpeg alone: first segment of every rung | segflow: upload answered -> playable | FFmpeg alone: done | segflow: upload answered -> ready | ready / FFmpeg done | CPU s: FFmpeg alone | CPU s: segflow's FFmpeg, ffprobe | CPU s: segflow |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (round, (first, done, ffmpeg_cpu, flow)) in rows.iter().enumerate() {
        println!(
            "| {round} | {first:.2} s | {:.2} s (server {:.2} s) | {done:.1} s | {:.1} s (server {:.1} s) | {:.3} | {ffmpeg_cpu:.1} | {:.1} | {:.1} |",
            flow.playable,
            flow.server_playable,
            flow.ready,
            flow.server_ready,
            flow.ready / done,
            flow.media_cpu,
            flow.engine_cpu,
        );
    }
}

/// What a client saw of one upload, in seconds from the upload's answer; `server_*` are the
/// document's own latencies, from the upload's acknowledgement. CPU seconds from the upload's
/// start: of the FFmpeg and ffprobe runs segflow made (`media_cpu`), and of segflow itself.
struct Playable {
    playable: f64,
    server_playable: f64,
    ready: f64,
    server_ready: f64,
    media_cpu: f64,
    engine_cpu: f64,
}

/// Uploads the source; from its answer, polls until the video is playable, checks that it
/// plays (master, a rendition's `EVENT` playlist, its first segment), then polls until `ready`
/// and checks the rendition became `VOD`.
async fn upload_to_playable(
    engine: &common::EngineProcess,
    client: &reqwest::Client,
    base: &str,
    source: &Path,
    to_ready: bool,
) -> Playable {
    let cpu = || (engine.children_cpu_seconds(), engine.cpu_seconds());
    let (media_before, engine_before) = cpu();
    let (status, reply) = common::upload_video(client, base, source, "bench").await;
    assert_eq!(status, 201, "{reply}");
    let started = Instant::now();
    let id = reply["stream_id"].as_str().unwrap().to_string();
    let doc_url = format!("{base}/vod/{id}/metadata");
    let mut playable = None;
    let doc = loop {
        let doc = common::fetch_json(client, &doc_url).await;
        if playable.is_none() && doc["playable"] == true {
            playable = Some(started.elapsed().as_secs_f64());
            let manifest = common::fetch_json(client, &format!("{base}/vod/{id}/manifest")).await;
            assert_eq!(manifest["playlist_type"], "event", "{manifest}");
            let rendition = first_rendition(client, manifest["manifest_url"].as_str().unwrap()).await;
            assert!(rendition.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !rendition.contains("#EXT-X-ENDLIST"));
            if !to_ready {
                let deleted = client.delete(format!("{base}/videos/{id}")).send().await.unwrap();
                assert!(deleted.status().is_success(), "{}", deleted.status());
                let server_playable = doc["playable_latency_ms"].as_f64().unwrap() / 1000.0;
                let (ready, server_ready, media_cpu, engine_cpu) = (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
                let playable = playable.unwrap();
                return Playable { playable, server_playable, ready, server_ready, media_cpu, engine_cpu };
            }
        }
        if doc["status"] == "ready" || doc["status"] == "failed" {
            break doc;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let ready = started.elapsed().as_secs_f64();
    let (media_after, engine_after) = cpu();
    assert_eq!(doc["status"], "ready", "{doc}");
    let rendition = first_rendition(client, doc["manifest_url"].as_str().unwrap()).await;
    assert!(rendition.contains("#EXT-X-PLAYLIST-TYPE:VOD") && rendition.contains("#EXT-X-ENDLIST"));
    Playable {
        playable: playable.expect("playable before ready"),
        server_playable: doc["playable_latency_ms"].as_f64().unwrap() / 1000.0,
        ready,
        server_ready: doc["processing_latency_ms"].as_f64().unwrap() / 1000.0,
        media_cpu: media_after - media_before,
        engine_cpu: engine_after - engine_before,
    }
}

/// The first rendition's playlist of the master at `url`, once its first segment was fetched.
async fn first_rendition(client: &reqwest::Client, url: &str) -> String {
    let text = |url: reqwest::Url| async move { client.get(url).send().await.unwrap().text().await.unwrap() };
    let master_url = reqwest::Url::parse(url).unwrap();
    let master = text(master_url.clone()).await;
    let rendition = master.lines().find(|l| !l.starts_with('#') && !l.is_empty()).expect("a rendition");
    let rendition_url = master_url.join(rendition).unwrap();
    let playlist = text(rendition_url.clone()).await;
    let segment = playlist.lines().find(|l| !l.starts_with('#') && !l.is_empty()).expect("a segment");
    let fetched = client.get(rendition_url.join(segment).unwrap()).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(!fetched.bytes().await.unwrap().is_empty());
    playlist
}
