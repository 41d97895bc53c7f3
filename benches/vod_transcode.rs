//! VOD speed: the transcoding real-time factor of a 1080p source on this machine, and
//! segflow's upload-to-`ready` time as a ratio against running the very same FFmpeg ladder
//! command by hand on the same file in the same run. Also measures the two ways to run the
//! ladder (one FFmpeg decoding once for every rung, or one FFmpeg per rung) against each other.
//!
//! `cargo bench --bench vod_transcode` (env `SECONDS` = source length, `ROUNDS`)

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
    let path = dir.join("source-1080p.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i", "sine=frequency=440"])
        .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
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
