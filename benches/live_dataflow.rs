//! Live dataflow throughput: chunk events per second through decode -> live_window ->
//! gap_documents at 1 and 2 workers over 1,000 concurrent streams, one chunk in 25 skipped
//! (JSON in, playlists rendered, gap sets counted by differential, sink I/O excluded),
//! against a bare timely job that only parses the same JSON, in the same run. Each also runs as
//! 2 processes x 1 worker over loopback TCP (this bench starts a copy of itself as process 1),
//! against 1 process x 2 workers: the cost of crossing processes. A run is timed from its
//! workers' start (for 2 processes: once timely has connected them) to its end.
//!
//! `cargo bench --bench live_dataflow`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use segflow::dataflow::cluster::cluster_config;
use segflow::dataflow::live::SinkOp;
use segflow::dataflow::live::decode::DecodeEvents;
use segflow::dataflow::live::gaps::GapDocuments;
use segflow::dataflow::live::window::LiveWindowOp;
use segflow::log::LogRecord;
use segflow::metrics::Metrics;
use segflow::model::{LiveEvent, LiveEventType, Topic, stream_hash};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Input, Inspect, Probe};

/// The same allocator as the `segflow` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STREAMS: u64 = 1_000;
const CHUNKS_PER_STREAM: u64 = 200;
/// Records handed to the dataflow per timely time, as the log source reads them.
const BATCH: usize = 8_192;
/// Batches a worker feeds ahead of what the dataflow has finished.
const IN_FLIGHT: u64 = 4;

/// Start events, then chunk events round-robin over the streams, as JSON log records.
fn records() -> Vec<LogRecord> {
    let mut events = Vec::new();
    for s in 0..STREAMS {
        events.push(LiveEvent {
            event_type: LiveEventType::StreamStarted,
            stream_id: format!("live-{s:012x}").into(),
            target_duration_s: Some(2),
            dvr_window_size: Some(10),
            ..Default::default()
        });
    }
    for seq in 0..CHUNKS_PER_STREAM {
        // One chunk in 25 never comes: a gap that enters the window and later leaves it.
        for s in (0..STREAMS).filter(|s| seq == 0 || (seq + s) % 25 != 0) {
            let id = format!("live-{s:012x}");
            let sum = format!("{:064x}", s * 1_000_000 + seq);
            events.push(LiveEvent {
                stream_id: id.clone().into(),
                chunk_index: Some(seq),
                sequence_number: Some(seq),
                duration_ms: Some(2000),
                size_bytes: Some(1_628_000),
                checksum: Some(sum.clone().into()),
                stored_sha256: Some(sum.into()),
                object_key: Some(format!("live-streams/{id}/chunks/{seq}.ts").into()),
                keyframe_aligned: Some(true),
                audio_track_id: Some(format!("audio-{id}").into()),
                video_track_id: Some(format!("video-{id}").into()),
                ingested_at_us: Some(1_795_000_000_000_000 + seq * 2_000_000),
                ..Default::default()
            });
        }
    }
    events
        .iter()
        .enumerate()
        .map(|(i, e)| LogRecord {
            partition: (stream_hash(&e.stream_id) % 6) as u32,
            offset: i as u64,
            next_offset: i as u64 + 1,
            payload: Ok(serde_json::to_vec(e).unwrap()),
        })
        .collect()
}

/// How the workers are laid out: one process, or this process (0) of two over loopback TCP.
#[derive(Clone, Copy)]
enum Layout {
    Threads(usize),
    /// Two processes of one worker each: this one, and a copy of this bench it starts.
    Processes,
}

/// Set in the copy a 2-process run starts: its process index and the cluster's addresses.
const PEER_ENV: &str = "LIVE_DATAFLOW_PEER";

/// Runs `records` through the live dataflow (`segflow`) or a bare JSON parse; each worker
/// feeds the partitions it would read (`p % peers == index`). Returns what this process
/// counted and the time from its workers' start (timely connected) to the end.
fn run(records: Arc<Vec<LogRecord>>, config: timely::Config, segflow: bool) -> (u64, Duration) {
    let counted = Arc::new(AtomicU64::new(0));
    let total = counted.clone();
    let began = Arc::new(std::sync::OnceLock::new());
    let start = began.clone();
    timely::execute(config, move |worker| {
        start.get_or_init(Instant::now);
        let (index, peers) = (worker.index(), worker.peers());
        let counted = counted.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<LogRecord>>();
            let probe = if segflow {
                let metrics = Arc::new(Metrics::new());
                let (ops, gap_updates) =
                    stream.decode_events(Topic::LiveChunks).live_window(HashMap::new(), metrics.clone());
                ops.concat(gap_updates.gap_documents(metrics))
                    .inspect(move |op| {
                        if matches!(op, SinkOp::Playlist { .. }) {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .probe()
                    .0
            } else {
                stream
                    .map(|r: LogRecord| serde_json::from_slice::<LiveEvent>(r.payload.as_ref().unwrap()).is_ok())
                    .inspect(move |ok| {
                        if *ok {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .probe()
                    .0
            };
            (input, probe)
        });
        let mine = records.iter().filter(|r| r.partition as usize % peers == index);
        let mut time = 0;
        let mut in_batch = 0;
        for record in mine {
            input.send(record.clone());
            in_batch += 1;
            if in_batch == BATCH {
                in_batch = 0;
                time += 1;
                input.advance_to(time);
                // Like the log source: keep reading while a few batches are in flight.
                let behind = time.saturating_sub(IN_FLIGHT);
                worker.step_or_park_while(None, || probe.less_than(&behind));
            }
        }
        input.close();
        worker.step_or_park_while(None, || !probe.done());
    })
    .unwrap();
    let took = began.get().expect("a worker ran").elapsed();
    (total.load(Ordering::Relaxed), took)
}

/// One timed run in `layout`; with two processes, the copy of this bench is process 1.
fn run_in(records: Arc<Vec<LogRecord>>, layout: Layout, segflow: bool) -> (u64, Duration) {
    match layout {
        Layout::Threads(workers) => run(records, timely::Config::process(workers), segflow),
        Layout::Processes => {
            let addresses: Vec<String> = {
                let listeners: Vec<_> = (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
                listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect()
            };
            let mut peer = std::process::Command::new(std::env::current_exe().unwrap())
                .env(PEER_ENV, format!("{segflow} {}", addresses.join(",")))
                .spawn()
                .expect("the bench runs itself as process 1");
            let ran = run(records, cluster_config(1, 0, addresses), segflow);
            assert!(peer.wait().unwrap().success(), "process 1 failed");
            ran
        }
    }
}

fn throughput(c: &mut Criterion) {
    let records = Arc::new(records());
    let mut group = c.benchmark_group("live_dataflow");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(1));
    let layouts = [("1", Layout::Threads(1)), ("2", Layout::Threads(2)), ("2_processes", Layout::Processes)];
    for (name, layout) in layouts {
        group.bench_with_input(BenchmarkId::new("bare_json_parse", name), &layout, |b, &layout| {
            b.iter_custom(|iters| timed(iters, || run_in(records.clone(), layout, false), |n| n > 0))
        });
        group.bench_with_input(BenchmarkId::new("segflow_live", name), &layout, |b, &layout| {
            b.iter_custom(|iters| timed(iters, || run_in(records.clone(), layout, true), |n| n > 0))
        });
    }
    group.finish();
}

/// The summed time of `iters` runs, each checked by `ok` on what it counted.
fn timed(iters: u64, run: impl Fn() -> (u64, Duration), ok: impl Fn(u64) -> bool) -> Duration {
    (0..iters)
        .map(|_| {
            let (counted, took) = run();
            assert!(ok(counted), "counted {counted}");
            took
        })
        .sum()
}

criterion_group!(benches, throughput);

fn main() {
    // The copy a 2-process run starts: be process 1, then exit.
    if let Ok(peer) = std::env::var(PEER_ENV) {
        let (segflow, addresses) = peer.split_once(' ').expect("set by run_in");
        let addresses = addresses.split(',').map(String::from).collect();
        run(Arc::new(records()), cluster_config(1, 1, addresses), segflow == "true");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
