//! The keyed live operator: exchanges commands by stream id, applies them to each stream's
//! state and emits what the sinks must write (chunk and stream documents, playlists).
//!
//! It works eagerly, without waiting for the frontier: every event of a stream comes from one
//! log partition, read by one worker, through one FIFO channel, so arrival order is log order.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::IntCounter;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::dataflow::live::stream::{ChunkOutcome, LiveStream};
use crate::dataflow::live::{LiveInput, SinkOp};
use crate::metrics::Metrics;
use crate::model::{DeadLetterDoc, DeadLetterReason, LiveCommand, LiveStreamDoc, Topic, now_ms};

/// Extension trait: `inputs.live_window(restored, metrics)`.
///
/// ```
/// use std::{collections::HashMap, sync::Arc};
/// use segflow::dataflow::live::{LiveInput, SinkOp, window::LiveWindowOp};
/// use segflow::model::LiveCommand;
/// use timely::dataflow::operators::{Inspect, ToStream};
///
/// timely::example(|scope| {
///     let start = LiveCommand::Start { title: "t".into(), target_duration_s: 2, dvr_window_size: 3, at_ms: 0 };
///     vec![LiveInput::Command { stream_id: "s1".into(), partition: 0, offset: 0, command: start }]
///         .to_stream(scope).container::<Vec<_>>()
///         .live_window(HashMap::new(), Arc::default())
///         .inspect(|op| if let SinkOp::Playlist { body, .. } = op { assert!(body.starts_with("#EXTM3U")) });
/// });
/// ```
pub trait LiveWindowOp<'s> {
    fn live_window(self, restored: HashMap<String, LiveStream>, metrics: Arc<Metrics>) -> StreamVec<'s, u64, SinkOp>;
}

impl<'s> LiveWindowOp<'s> for StreamVec<'s, u64, LiveInput> {
    fn live_window(self, restored: HashMap<String, LiveStream>, metrics: Arc<Metrics>) -> StreamVec<'s, u64, SinkOp> {
        self.unary::<CapacityContainerBuilder<Vec<SinkOp>>, _, _, _>(
            Exchange::new(|input: &LiveInput| input.route()),
            "LiveWindow",
            move |_cap, _info| {
                // Looked up several times per event: a fast hasher, seeded per map.
                let mut streams: FastMap<String, LiveStream> = restored.into_iter().collect();
                let counters = Counters::new(&metrics);
                // Streams changed in this activation, and whether their playlist did: each is
                // rendered once per activation, however many of its events arrived.
                let mut touched: FastMap<String, bool> = FastMap::default();
                move |input, output| {
                    // The earliest time seen: playlists go out at it, so the durable frontier
                    // cannot pass any of their events before they are written.
                    let mut earliest: Option<Capability<u64>> = None;
                    input.for_each(|cap, data| {
                        if earliest.as_ref().is_none_or(|e| cap.least().is_some_and(|t| t < e.time())) {
                            earliest = cap.retain_least(0);
                        }
                        let mut session = output.session(&cap);
                        for item in data.drain(..) {
                            let (stream_id, partition, offset, command) = match item {
                                LiveInput::Dead(dead) => {
                                    metrics.dead_letters_total.with_label_values(&[dead.reason.as_str()]).inc();
                                    session.give(SinkOp::DeadLetter(dead));
                                    continue;
                                }
                                LiveInput::Command { stream_id, partition, offset, command } => {
                                    (stream_id, partition, offset, command)
                                }
                            };
                            let changed = match command {
                                LiveCommand::Start { title, target_duration_s, dvr_window_size, at_ms } => {
                                    if streams.contains_key(&stream_id) {
                                        continue; // a replayed start changes nothing
                                    }
                                    let doc = LiveStreamDoc::new(
                                        &stream_id,
                                        &title,
                                        target_duration_s,
                                        dvr_window_size,
                                        at_ms,
                                    );
                                    streams.insert(stream_id.clone(), LiveStream::new(doc));
                                    true
                                }
                                other => {
                                    let Some(stream) = streams.get_mut(&stream_id) else {
                                        counters.unknown_stream.inc();
                                        session.give(SinkOp::DeadLetter(DeadLetterDoc {
                                            topic: Topic::LiveChunks.name().into(),
                                            partition,
                                            offset,
                                            reason: DeadLetterReason::UnknownStream,
                                            error: format!("no stream {stream_id:?} was started"),
                                            payload_preview: format!("{other:?}").chars().take(256).collect(),
                                            at_ms: now_ms(),
                                        }));
                                        continue;
                                    };
                                    apply(stream, other, &counters, &mut |op| session.give(op))
                                }
                            };
                            match touched.get_mut(&stream_id) {
                                Some(playlist) => *playlist |= changed,
                                None => {
                                    touched.insert(stream_id, changed);
                                }
                            }
                        }
                    });
                    let Some(cap) = earliest else { return };
                    let mut session = output.session(&cap);
                    for (stream_id, playlist_changed) in touched.drain() {
                        let stream = &streams[&stream_id];
                        if playlist_changed {
                            session.give(SinkOp::Playlist {
                                stream_id: stream_id.clone(),
                                body: stream.render(),
                                events_applied: stream.events_applied,
                                ended: stream.ended(),
                            });
                        }
                        session.give(SinkOp::Stream(Box::new(stream.doc.clone())));
                    }
                }
            },
        )
    }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The operator's counters, resolved once instead of by label on every event.
struct Counters {
    outcomes: HashMap<&'static str, IntCounter>,
    gaps: IntCounter,
    gaps_filled: IntCounter,
    checksum_failures: IntCounter,
    unknown_stream: IntCounter,
}

impl Counters {
    fn new(metrics: &Metrics) -> Counters {
        let outcomes = ["accepted", "duplicate", "late", "checksum_failed", "too_long", "after_end"]
            .into_iter()
            .map(|label| (label, metrics.live_chunks_total.with_label_values(&[label])))
            .collect();
        Counters {
            outcomes,
            gaps: metrics.live_chunk_gaps_total.clone(),
            gaps_filled: metrics.live_gaps_filled_total.clone(),
            checksum_failures: metrics.chunk_checksum_failures_total.clone(),
            unknown_stream: metrics.dead_letters_total.with_label_values(&["unknown_stream"]),
        }
    }
}

/// Applies a non-start command to a stream; returns whether its playlist changed.
fn apply(stream: &mut LiveStream, command: LiveCommand, counters: &Counters, give: &mut impl FnMut(SinkOp)) -> bool {
    match command {
        LiveCommand::Start { .. } => false,
        LiveCommand::Init { object_key } => stream.set_init(&object_key),
        LiveCommand::End { at_ms } => stream.end(at_ms),
        LiveCommand::Chunk(chunk) => {
            let (outcome, doc) = stream.apply_chunk(chunk);
            counters.outcomes[outcome.label()].inc();
            match outcome {
                ChunkOutcome::Accepted { new_gaps, filled_gap } => {
                    counters.gaps.inc_by(new_gaps);
                    if filled_gap {
                        counters.gaps_filled.inc();
                    }
                }
                ChunkOutcome::ChecksumFailed => counters.checksum_failures.inc(),
                _ => {}
            }
            if let Some(doc) = doc {
                let overwrite = outcome != ChunkOutcome::Late;
                give(SinkOp::Chunk { doc: Box::new(doc), overwrite });
            }
            matches!(outcome, ChunkOutcome::Accepted { .. })
        }
    }
}
