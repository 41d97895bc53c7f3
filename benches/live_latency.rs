//! End-to-end live latency on the embedded backends: chunk events at a steady 1,000/s over
//! HTTP (`POST /streams/{id}/chunks`, each object stored a second before its event), measured
//! from ingest to the stream's playlist being written (each chunk document's
//! `processing_latency_ms`).
//!
//! Two baselines in the same run: the acknowledgement time of the same requests (HTTP, hashing,
//! the fsync'd log append), the floor any pipeline behind it adds to; and the disk's own floor
//! just before and after, the same appends written and synced with nothing else running.
//!
//! Also printed: the engine's CPU time per event over the measured window.
//!
//! `cargo bench --bench live_latency` (env `RATE`, `SECONDS`, `STREAMS` override the defaults;
//! `DISK_STRESS_MBPS=N` adds a competing writer of N MiB/s, each 8 MiB `fsync`ed, for the
//! whole run, floors included)

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use segflow::model::keys;

/// The same allocator as the `segflow` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The disk's floor at this moment: `rate` appends/s of 500 bytes over 6 preallocated files
/// (the live topic's partitions), one writer that writes every append due so far and syncs
/// each file it touched, as the embedded log does. Latency runs from an append's due time to
/// its sync: no HTTP, no hashing, no dataflow.
fn disk_floor(dir: &std::path::Path, rate: u64, seconds: u64) -> Vec<f64> {
    use std::os::unix::fs::FileExt;
    const PARTITIONS: usize = 6;
    let paths: Vec<_> = (0..PARTITIONS).map(|p| dir.join(format!("floor-{p}.log"))).collect();
    let files: Vec<std::fs::File> = paths
        .iter()
        .map(|path| {
            let file = std::fs::File::options().create(true).truncate(true).read(true).write(true).open(path).unwrap();
            file.write_all_at(&vec![0; 8 << 20], 0).unwrap();
            file.sync_all().unwrap();
            file
        })
        .collect();
    let (total, record) = (rate * seconds, [b'x'; 500]);
    let mut ends = [0u64; PARTITIONS];
    let mut latencies = Vec::with_capacity(total as usize);
    let due_at = |i: u64| Duration::from_secs_f64(i as f64 / rate as f64);
    let started = Instant::now();
    let mut next = 0;
    while next < total {
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        if due <= next {
            std::thread::sleep(due_at(next).saturating_sub(started.elapsed()));
            continue;
        }
        let mut touched = [false; PARTITIONS];
        for i in next..due {
            let p = i as usize % PARTITIONS;
            files[p].write_all_at(&record, ends[p]).unwrap();
            ends[p] += record.len() as u64;
            touched[p] = true;
        }
        for (file, _) in files.iter().zip(touched).filter(|(_, t)| *t) {
            file.sync_data().unwrap();
        }
        let synced = started.elapsed();
        latencies.extend((next..due).map(|i| (synced - due_at(i)).as_secs_f64() * 1e3));
        next = due;
    }
    for path in paths {
        std::fs::remove_file(path).unwrap();
    }
    latencies
}

/// A competing writer for the run's length: `mb_per_s` of 8 MiB writes, each `fsync`ed, over a
/// 128 MiB file in `dir`, to measure the engine while the disk is busy (`DISK_STRESS_MBPS`).
fn stress_disk(
    dir: &std::path::Path,
    mb_per_s: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("stress.bin");
    std::thread::spawn(move || {
        let file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5a; 8 << 20];
        let (started, mut written) = (Instant::now(), 0u64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            file.write_all_at(&chunk, written % (128 << 20)).unwrap();
            file.sync_data().unwrap();
            written += chunk.len() as u64;
            let due = Duration::from_secs_f64(written as f64 / (mb_per_s << 20) as f64);
            std::thread::sleep(due.saturating_sub(started.elapsed()));
        }
        std::fs::remove_file(path).unwrap();
        written >> 20
    })
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; there is nothing to list
    }
    let (rate, seconds, streams) = (env("RATE", 1000), env("SECONDS", 10), env("STREAMS", 100));
    let data = tempfile::tempdir().unwrap();
    let stop_stress = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stress = match env("DISK_STRESS_MBPS", 0) {
        0 => None,
        mb_per_s => Some(stress_disk(data.path(), mb_per_s, stop_stress.clone())),
    };
    let floor_seconds = seconds.div_ceil(2);
    let mut floor = disk_floor(data.path(), rate, floor_seconds);
    // The engine runs as its own process, as deployed; this process is only the client.
    let (mut engine, base) = common::spawn_segflow(data.path());
    let client = common::admin_client(data.path());
    let mut ids = Vec::new();
    for _ in 0..streams {
        ids.push(common::start_stream_at(&client, &base, r#"{"target_duration":2,"dvr_window_size":10}"#).await);
    }
    // Producers that store bytes themselves: each object is written a second before its event,
    // as a producer uploads a segment then announces it (not all up front: on a host that
    // pages out cold page cache, objects stored long before would be read back from disk).
    // Their files are created empty during setup and filled in place then: creating 1,000
    // files/s on this host's file system (ext4 without a journal, which skips inodes freed in
    // the last minutes, such as a previous run's) took the client a whole core, from the two
    // the engine it measures runs on.
    let per_stream = rate * seconds / streams;
    let objects = data.path().join("objects");
    let object_path = move |id: &str, seq: u64| objects.join(keys::live_chunk(id, seq, "ts"));
    for id in &ids {
        for seq in 0..per_stream {
            let path = object_path(id, seq);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::File::create(path).unwrap();
        }
    }
    let store_objects = move |ids: &[String], seq: u64| {
        use std::io::Write;
        for id in ids {
            let mut file = std::fs::File::options().write(true).open(object_path(id, seq)).unwrap();
            file.write_all(format!("{id}:{seq}").repeat(64).as_bytes()).unwrap();
        }
    };
    let lead = (rate / streams).max(1); // sequence numbers per second
    for seq in 0..lead.min(per_stream) {
        store_objects(&ids, seq);
    }
    // Setup writes must not land in the measured window: flush them to disk now.
    std::process::Command::new("sync").status().unwrap();
    // The sequence numbers stored so far: a late store (the disk stalled) holds its events back.
    let (stored, mut stored_rx) = tokio::sync::watch::channel(lead.min(per_stream));
    let ahead = std::thread::spawn({
        let ids = ids.clone();
        move || {
            let started = Instant::now();
            for seq in lead..per_stream {
                let due = Duration::from_secs_f64((seq - lead) as f64 / lead as f64);
                std::thread::sleep(due.saturating_sub(started.elapsed()));
                store_objects(&ids, seq);
                stored.send_replace(seq + 1);
            }
        }
    });

    let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (started, cpu_before) = (Instant::now(), engine.cpu_seconds());
    let mut sent = Vec::new();
    for seq in 0..per_stream {
        stored_rx.wait_for(|stored| *stored > seq).await.unwrap();
        for id in &ids {
            tick.tick().await;
            let (client, acks) = (client.clone(), acks.clone());
            let url = format!("{base}/streams/{id}/chunks");
            let body = format!(r#"{{"sequence_number":{seq},"duration_ms":2000}}"#);
            sent.push(tokio::spawn(async move {
                let t = Instant::now();
                let status = client.post(url).body(body).send().await.unwrap().status();
                assert_eq!(status, 202);
                acks.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
            }));
        }
    }
    for task in sent {
        task.await.unwrap();
    }
    ahead.join().unwrap();
    let achieved = (per_stream * streams) as f64 / started.elapsed().as_secs_f64();

    // Wait for every chunk's document, then read the measured latencies. A chunk that a stall
    // held back past its stream's window is `late`: counted, with no latency.
    let (mut latencies, mut late) = (Vec::new(), 0);
    for id in &ids {
        loop {
            let chunks = common::fetch_json(&client, &format!("{base}/streams/{id}/chunks?limit=1000")).await;
            let chunks = chunks["chunks"].as_array().unwrap();
            if chunks.len() as u64 == per_stream {
                latencies.extend(chunks.iter().filter_map(|c| c["processing_latency_ms"].as_f64()));
                late += chunks.iter().filter(|c| c["status"] == "late").count();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let cpu_ms_per_event = (engine.cpu_seconds() - cpu_before) * 1e3 / (per_stream * streams) as f64;
    assert!(engine.terminate().success(), "segflow drained and exited 0");
    floor.extend(disk_floor(data.path(), rate, floor_seconds));
    stop_stress.store(true, std::sync::atomic::Ordering::Relaxed);
    let stressed_mb = stress.map(|s| s.join().unwrap());

    let mut acks = acks.lock().unwrap().clone();
    acks.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    let (a50, a99) = (percentile(&acks, 0.50), percentile(&acks, 0.99));
    floor.sort_by(f64::total_cmp);
    let (f50, f99) = (percentile(&floor, 0.50), percentile(&floor, 0.99));
    println!("live_latency: {} events over {streams} streams at {achieved:.0} events/s", per_stream * streams);
    if let Some(mb) = stressed_mb {
        println!("  disk stress: {mb} MiB written and fsynced alongside");
    }
    if late > 0 {
        println!("  late (held back past their window, not in a playlist): {late}");
    }
    println!(
        "  ingest -> playlist written   p50 {p50:.2} ms   p99 {p99:.2} ms   max {:.2} ms",
        latencies.last().unwrap()
    );
    println!("  baseline: request ack        p50 {a50:.2} ms   p99 {a99:.2} ms");
    println!("  ratio to baseline            p50 {:.2}x    p99 {:.2}x", p50 / a50, p99 / a99);
    println!("  disk floor (before + after)  p50 {f50:.2} ms   p99 {f99:.2} ms   max {:.2} ms", floor.last().unwrap());
    println!("  ratio to the disk floor      p50 {:.2}x    p99 {:.2}x", p50 / f50, p99 / f99);
    println!("  engine CPU (user + kernel)   {:.0} µs per event", cpu_ms_per_event * 1e3);
}
