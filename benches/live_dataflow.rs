//! Live dataflow throughput: chunk events per second through decode -> live_window at 1 and 2
//! workers over 1,000 concurrent streams (JSON in, playlists rendered, sink I/O excluded),
//! against a bare timely job that only parses the same JSON, in the same run.
//!
//! `cargo bench --bench live_dataflow`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use segflow::dataflow::live::SinkOp;
use segflow::dataflow::live::decode::DecodeEvents;
use segflow::dataflow::live::window::LiveWindowOp;
use segflow::log::LogRecord;
use segflow::metrics::Metrics;
use segflow::model::{LiveEvent, LiveEventType, Topic, stream_hash};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Input, Inspect, Probe};

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
        for s in 0..STREAMS {
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

/// Runs `records` through a dataflow built by `build` on `workers` threads; each worker
/// feeds the partitions it would read (`p % peers == index`). Returns what `count` counted.
fn run(records: Arc<Vec<LogRecord>>, workers: usize, segflow: bool) -> u64 {
    let counted = Arc::new(AtomicU64::new(0));
    let total = counted.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let counted = counted.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<LogRecord>>();
            let probe = if segflow {
                let metrics = Arc::new(Metrics::new());
                stream
                    .decode_events(Topic::LiveChunks)
                    .live_window(HashMap::new(), metrics)
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
    total.load(Ordering::Relaxed)
}

fn throughput(c: &mut Criterion) {
    let records = Arc::new(records());
    let mut group = c.benchmark_group("live_dataflow");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(1));
    for workers in [1, 2] {
        group.bench_with_input(BenchmarkId::new("bare_json_parse", workers), &workers, |b, &w| {
            b.iter(|| assert_eq!(run(records.clone(), w, false), records.len() as u64))
        });
        group.bench_with_input(BenchmarkId::new("segflow_live", workers), &workers, |b, &w| {
            b.iter(|| assert!(run(records.clone(), w, true) >= STREAMS))
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
