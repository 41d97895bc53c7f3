//! Oracle test: random chunk sequences (gaps, duplicates, reordering, bad checksums, chunks
//! after the end) go through the live dataflow with 1 and 3 workers, and 2 timely processes of
//! 2 workers over loopback TCP; every playlist it emits
//! must equal a plain recomputation from the same events, and the gap counts differential
//! dataflow derives from the gap set must match the final playlists' gap slots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segflow::dataflow::cluster::cluster_config;
use segflow::dataflow::live::SinkOp;
use segflow::dataflow::live::decode::DecodeEvents;
use segflow::dataflow::live::gaps::GapDocuments;
use segflow::dataflow::live::window::LiveWindowOp;
use segflow::log::LogRecord;
use segflow::metrics::Metrics;
use segflow::model::{LiveEvent, LiveEventType, LiveGapsDoc, Topic};
use timely::dataflow::operators::{Concat, Input, Inspect, Probe};

const STREAMS: usize = 7;
const EVENTS_PER_STREAM: usize = 60;

fn sha(n: u64) -> String {
    format!("{n:064x}")
}

/// A random live session per stream: start, chunks with gaps, duplicates, reordering and bad
/// checksums, maybe an end followed by stragglers.
fn random_events(rng: &mut StdRng) -> Vec<LiveEvent<'static>> {
    let mut per_stream = Vec::new();
    for s in 0..STREAMS {
        let stream_id = format!("live-oracle{s}");
        let target = rng.random_range(2..=4u64);
        let mut events = vec![LiveEvent {
            event_type: LiveEventType::StreamStarted,
            stream_id: stream_id.clone().into(),
            target_duration_s: Some(target),
            dvr_window_size: Some(rng.random_range(1..=6u64)),
            ..Default::default()
        }];
        let mut next = rng.random_range(0..5u64);
        let mut pending: Vec<u64> = Vec::new();
        for i in 0..EVENTS_PER_STREAM {
            let seq = match rng.random_range(0..10) {
                0 if !pending.is_empty() => pending.swap_remove(rng.random_range(0..pending.len())), // late
                1 => next.saturating_sub(rng.random_range(1..4)),                                    // duplicate-ish
                2 => {
                    pending.push(next); // hold back: arrives later, or never (a gap)
                    next += 1;
                    continue;
                }
                _ => {
                    next += 1;
                    next - 1
                }
            };
            if i == EVENTS_PER_STREAM - 5 && rng.random_bool(0.5) {
                events.push(LiveEvent {
                    event_type: LiveEventType::StreamEnded,
                    stream_id: stream_id.clone().into(),
                    ..Default::default()
                });
            }
            let stored = sha(seq);
            let claimed = if rng.random_bool(0.1) { sha(seq + 1_000_000) } else { stored.clone() };
            let max_ms = target * 1000 + 499;
            let duration_ms = if rng.random_bool(0.05) { max_ms + 1 } else { rng.random_range(500..=max_ms) };
            events.push(LiveEvent {
                stream_id: stream_id.clone().into(),
                sequence_number: Some(seq),
                chunk_index: Some(seq),
                duration_ms: Some(duration_ms),
                checksum: Some(claimed.into()),
                stored_sha256: Some(stored.into()),
                ingested_at_us: Some(1_700_000_000_000_000 + seq * 2_000_000 + rng.random_range(0..1000u64)),
                // Some encoders send their own clock; most leave it to segflow.
                program_date_time: rng.random_bool(0.1).then(|| {
                    let ms = 1_700_000_000_000 + seq as i64 * 2_000 - 1_500;
                    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339().into()
                }),
                ..Default::default()
            });
        }
        per_stream.push(events);
    }
    // Interleave the streams at random, keeping each stream's own order.
    let mut all = Vec::new();
    let mut cursors = [0; STREAMS];
    while let Some(s) = {
        let open: Vec<usize> = (0..STREAMS).filter(|s| cursors[*s] < per_stream[*s].len()).collect();
        (!open.is_empty()).then(|| open[rng.random_range(0..open.len())])
    } {
        all.push(per_stream[s][cursors[s]].clone());
        cursors[s] += 1;
    }
    all
}

/// The plain recomputation: a stream's playlist after its first `k` non-start events.
struct Naive {
    target_s: u64,
    window: u64,
    accepted: Vec<(u64, u64, u64)>, // (seq, duration_ms, pdt_ms)
    start: Option<u64>,
    head: Option<u64>,
    ended: bool,
    gaps: u64,
}

impl Naive {
    fn apply(&mut self, e: &LiveEvent) {
        if e.event_type == LiveEventType::StreamEnded {
            self.ended = true;
            return;
        }
        let (seq, duration_ms) = (e.sequence_number.unwrap(), e.duration_ms.unwrap());
        let in_window = self.accepted.iter().any(|a| a.0 == seq) && self.start.is_some_and(|s| seq >= s);
        let too_long = (duration_ms + 500) / 1000 > self.target_s;
        if self.ended || in_window || too_long || e.checksum != e.stored_sha256 {
            return;
        }
        let pdt = self.program_date_time(e, seq, duration_ms);
        match (self.start, self.head) {
            (Some(start), _) if seq < start => return, // late
            (Some(_), Some(head)) if seq < head => {}
            (Some(start), Some(head)) => {
                self.gaps += seq - head - 1;
                self.head = Some(seq);
                self.start = Some(start.max((seq + 1).saturating_sub(self.window)));
            }
            _ => {
                self.start = Some(seq);
                self.head = Some(seq);
            }
        }
        self.accepted.push((seq, duration_ms, pdt));
    }

    /// The engine's rule, restated over the accepted segments still in the window.
    fn program_date_time(&self, e: &LiveEvent, seq: u64, duration_ms: u64) -> u64 {
        if let Some(text) = &e.program_date_time {
            return segflow::model::parse_program_date_time(text).unwrap();
        }
        let received = e.ingested_at_us.unwrap() / 1000 - duration_ms;
        let in_window = |a: &&(u64, u64, u64)| self.start.is_some_and(|s| a.0 >= s);
        let before = self.accepted.iter().filter(in_window).filter(|a| a.0 < seq).max_by_key(|a| a.0);
        let after = self.accepted.iter().filter(in_window).filter(|a| a.0 > seq).min_by_key(|a| a.0);
        // Where the segment before ends, and where this one follows it counting missing slots.
        let before = before.map(|&(p, ms, pdt)| (pdt + ms, pdt + ms + (seq - p - 1) * duration_ms));
        let precedes = after.map(|&(n, ms, pdt)| pdt.saturating_sub((n - seq - 1) * ms + duration_ms));
        match (before, precedes) {
            (Some((end, f)), Some(p)) => f.min(p).max(end),
            (None, Some(p)) => p,
            (Some((end, f)), None)
                if received > f + self.target_s * 1000 || f > received + self.window * self.target_s * 1000 =>
            {
                received.max(end)
            }
            (Some((_, f)), None) => f,
            (None, None) => received,
        }
    }

    fn render(&self) -> String {
        let mut out = format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n", self.target_s);
        let secs = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
        if let (Some(start), Some(head)) = (self.start, self.head) {
            if start != 0 {
                out += &format!("#EXT-X-MEDIA-SEQUENCE:{start}\n");
            }
            let find = |seq: u64| self.accepted.iter().find(|a| a.0 == seq);
            for seq in start..=head {
                match find(seq) {
                    Some(&(_, ms, pdt)) => {
                        let time = chrono::DateTime::from_timestamp_millis(pdt as i64).unwrap();
                        out += &format!(
                            "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{},\nchunks/{seq}.ts\n",
                            time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            secs(ms)
                        );
                    }
                    None => {
                        // The duration of the next segment: it stays listed as long as the gap.
                        let ms = (seq..=head).find_map(find).map_or(self.target_s * 1000, |a| a.1);
                        out += &format!("#EXT-X-GAP\n#EXTINF:{},\ngap/{seq}.ts\n", secs(ms));
                    }
                }
            }
        }
        if self.ended {
            out += "#EXT-X-ENDLIST\n";
        }
        out
    }
}

/// The oracle's playlist of every stream after each of its events.
fn oracle(events: &[LiveEvent]) -> (HashMap<String, Vec<String>>, u64) {
    let mut naive: HashMap<String, Naive> = HashMap::new();
    let mut playlists: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        if e.event_type == LiveEventType::StreamStarted {
            let n = Naive {
                target_s: e.target_duration_s.unwrap(),
                window: e.dvr_window_size.unwrap(),
                accepted: Vec::new(),
                start: None,
                head: None,
                ended: false,
                gaps: 0,
            };
            playlists.insert(e.stream_id.to_string(), vec![n.render()]);
            naive.insert(e.stream_id.to_string(), n);
            continue;
        }
        let n = naive.get_mut(e.stream_id.as_ref()).unwrap();
        n.apply(e);
        playlists.get_mut(e.stream_id.as_ref()).unwrap().push(n.render());
    }
    (playlists, naive.values().map(|n| n.gaps).sum())
}

type Captured = Arc<Mutex<Vec<(String, u64, String)>>>;

/// What the dataflow emitted: playlists (stream, events applied, body), gap documents in the
/// order each stream's were written, and `live_chunk_gaps_total`.
type Emitted = (Vec<(String, u64, String)>, Vec<LiveGapsDoc>, u64);

/// How the oracle's dataflow runs: threads of one process, or timely processes over loopback
/// TCP (each on a thread of this test, its records crossing as bincode as between machines).
#[derive(Clone, Copy, Debug)]
enum Layout {
    Threads(usize),
    Processes { processes: usize, workers: usize },
}

impl Layout {
    /// One timely config per process.
    fn configs(self) -> Vec<timely::Config> {
        match self {
            Layout::Threads(workers) => vec![timely::Config::process(workers)],
            Layout::Processes { processes, workers } => {
                let addresses = crate::common::free_addresses(processes);
                (0..processes).map(|process| cluster_config(workers, process, addresses.clone())).collect()
            }
        }
    }
}

/// Runs the events through decode -> live_window -> gap_documents laid out as `layout`.
fn run_dataflow(events: &[LiveEvent], layout: Layout) -> Emitted {
    let records: Vec<LogRecord> = events
        .iter()
        .enumerate()
        .map(|(i, e)| LogRecord {
            partition: 0,
            offset: i as u64,
            next_offset: i as u64 + 1,
            payload: Ok(serde_json::to_vec(e).unwrap()),
        })
        .collect();
    let captured: Captured = Arc::default();
    let gap_docs: Arc<Mutex<Vec<LiveGapsDoc>>> = Arc::default();
    let metrics = Arc::new(Metrics::new());
    let (out, gaps_out, m) = (captured.clone(), gap_docs.clone(), metrics.clone());
    let work = move |worker: &mut timely::worker::Worker| {
        let (out, gaps_out, m) = (out.clone(), gaps_out.clone(), m.clone());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<LogRecord>>();
            let (ops, gap_updates) = stream.decode_events(Topic::LiveChunks).live_window(HashMap::new(), m.clone());
            let (probe, _) = ops
                .concat(gap_updates.gap_documents(m))
                .inspect(move |op| match op {
                    SinkOp::Playlist { stream_id, body, events_applied, .. } => {
                        out.lock().unwrap().push((stream_id.clone(), *events_applied, body.clone()))
                    }
                    SinkOp::Gaps(doc) => gaps_out.lock().unwrap().push(doc.clone()),
                    _ => {}
                })
                .probe();
            (input, probe)
        });
        if worker.index() == 0 {
            // Feed in uneven batches, one time each, so coalescing inside a batch is exercised.
            let mut time = 0;
            for batch in records.chunks(17) {
                for r in batch {
                    input.send(r.clone());
                }
                time += 1;
                input.advance_to(time);
                worker.step_or_park_while(None, || probe.less_than(input.time()));
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    };
    let processes: Vec<_> = layout
        .configs()
        .into_iter()
        .map(|config| {
            let work = work.clone();
            std::thread::spawn(move || timely::execute(config, work).map(drop))
        })
        .collect();
    for process in processes {
        process.join().unwrap().unwrap();
    }
    let playlists = captured.lock().unwrap().clone();
    let gap_docs = gap_docs.lock().unwrap().clone();
    (playlists, gap_docs, metrics.live_chunk_gaps_total.get())
}

fn check(seed: u64, layout: Layout) {
    let mut rng = StdRng::seed_from_u64(seed);
    let events = random_events(&mut rng);
    let (expected, expected_gaps) = oracle(&events);
    let (emitted, gap_docs, gaps) = run_dataflow(&events, layout);
    assert!(emitted.len() > STREAMS, "seed {seed}: the dataflow emitted playlists");
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (stream_id, applied, body) in &emitted {
        let want = &expected[stream_id][*applied as usize];
        assert_eq!(body, want, "seed {seed}, {layout:?}, {stream_id} after {applied} events");
        let seen = last.entry(stream_id).or_default();
        assert!(*applied >= *seen, "playlists of a stream arrive in order");
        *seen = *applied;
    }
    // The newest playlist of each stream is the oracle's final one, unless the last
    // events changed nothing visible.
    for (stream_id, versions) in &expected {
        let final_emitted = emitted.iter().rev().find(|(id, ..)| id == stream_id).unwrap();
        assert_eq!(&final_emitted.2, versions.last().unwrap(), "seed {seed}: final playlist of {stream_id}");
    }
    assert_eq!(gaps, expected_gaps, "seed {seed}: live_chunk_gaps_total");
    // Each stream's newest gap document counts the gap slots of its final playlist.
    for (stream_id, versions) in &expected {
        let slots = versions.last().unwrap().matches("#EXT-X-GAP").count() as u64;
        let newest = gap_docs.iter().rev().find(|doc| &doc.stream_id == stream_id);
        let counted = newest.map_or(0, |doc| doc.missing + doc.checksum_failed);
        assert_eq!(counted, slots, "seed {seed}, {layout:?}: gap slots of {stream_id} ({newest:?})");
    }
}

#[test]
fn one_worker_matches_plain_recomputation() {
    for seed in 0..20 {
        check(seed, Layout::Threads(1));
    }
}

#[test]
fn three_workers_match_plain_recomputation() {
    for seed in 100..120 {
        check(seed, Layout::Threads(3));
    }
}

#[test]
fn two_processes_of_two_workers_match_plain_recomputation() {
    for seed in 200..210 {
        check(seed, Layout::Processes { processes: 2, workers: 2 });
    }
}
