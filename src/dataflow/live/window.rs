//! The keyed live operator: exchanges commands by stream id, applies them to each stream's
//! state and emits what the sinks must write (chunk and stream documents, playlists), and the
//! changes to each stream's gap set that [`super::gaps`] counts.
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
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::gaps::GapUpdate;

use crate::dataflow::live::stream::{ChunkOutcome, LiveStream};
use crate::dataflow::live::{LiveInput, SinkOp};
use crate::metrics::Metrics;
use crate::model::{DeadLetterDoc, DeadLetterReason, LiveCommand, LiveStreamDoc, Topic, now_ms};

/// Extension trait: `inputs.live_window(restored, metrics)`: what the sinks write, and the
/// gap set's changes.
///
/// ```
/// use std::{collections::HashMap, sync::Arc};
/// use segflow::dataflow::live::{LiveInput, SinkOp, window::LiveWindowOp};
/// use segflow::model::LiveCommand;
/// use timely::dataflow::operators::{Inspect, ToStream};
///
/// timely::example(|scope| {
///     let start = LiveCommand::Start { title: "t".into(), target_duration_s: 2, dvr_window_size: 3, max_sequence_jump: 10,
///     stream_key_sha256: None, playback_policy: Default::default(), record: Default::default(), at_ms: 0 };
///     vec![LiveInput::Command { stream_id: "s1".into(), partition: 0, offset: 0, command: start }]
///         .to_stream(scope).container::<Vec<_>>()
///         .live_window(HashMap::new(), Arc::default())
///         .0
///         .inspect(|op| if let SinkOp::Playlist { body, .. } = op { assert!(body.starts_with("#EXTM3U")) });
/// });
/// ```
pub trait LiveWindowOp<'s> {
    fn live_window(self, restored: HashMap<String, LiveStream>, metrics: Arc<Metrics>) -> WindowStreams<'s>;
}

/// The live operator's two outputs: sink work, and changes to the streams' gap sets.
pub type WindowStreams<'s> = (StreamVec<'s, u64, SinkOp>, StreamVec<'s, u64, GapUpdate>);

impl<'s> LiveWindowOp<'s> for StreamVec<'s, u64, LiveInput> {
    fn live_window(self, restored: HashMap<String, LiveStream>, metrics: Arc<Metrics>) -> WindowStreams<'s> {
        let mut builder = OperatorBuilder::new("LiveWindow".to_owned(), self.scope());
        let mut input = builder.new_input(self, Exchange::new(|input: &LiveInput| input.route()));
        let (sink_output, sink_ops) = builder.new_output::<Vec<SinkOp>>();
        let (gap_output, gap_changes) = builder.new_output::<Vec<GapUpdate>>();
        let mut sink_output: OutputBuilder<_, CapacityContainerBuilder<_>> = OutputBuilder::from(sink_output);
        let mut gap_output: OutputBuilder<_, CapacityContainerBuilder<_>> = OutputBuilder::from(gap_output);
        builder.build(move |mut caps| {
            // The restored streams' gaps go out first, at time 0: the gap set starts empty.
            let mut restored_gaps = caps.pop();
            drop(caps);
            // Looked up several times per event: a fast hasher, seeded per map.
            let mut streams: FastMap<String, LiveStream> = restored.into_iter().collect();
            let counters = Counters::new(&metrics);
            // Streams changed in this activation, and whether their playlist did: each is
            // rendered once per activation, however many of its events arrived.
            let mut touched: FastMap<String, bool> = FastMap::default();
            move |_frontiers| {
                let (mut sinks, mut gaps) = (sink_output.activate(), gap_output.activate());
                if let Some(cap) = restored_gaps.take() {
                    let mut session = gaps.session(&cap);
                    for (stream_id, stream) in streams.iter_mut() {
                        session.give_iterator(gap_updates(stream_id, stream, *cap.time()));
                    }
                }
                // The earliest time seen, for each output: playlists go out at it, so the
                // durable frontier cannot pass any of their events before they are written.
                let mut earliest: Option<(Capability<u64>, Capability<u64>)> = None;
                input.for_each(|cap, data| {
                    if earliest.as_ref().is_none_or(|(e, _)| cap.least().is_some_and(|t| t < e.time())) {
                        earliest = cap.retain_least(0).zip(cap.retain_least(1));
                    }
                    let mut session = sinks.session(&cap);
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
                        let applied = guarded(|| {
                            let stream = streams.get_mut(&stream_id);
                            apply(stream, &stream_id, command, &counters, &mut |op| session.give(op))
                        });
                        let changed = match applied {
                            Ok(Applied::Changed(changed)) => changed,
                            Ok(Applied::Started(stream)) => {
                                streams.insert(stream_id.clone(), *stream);
                                true
                            }
                            Ok(Applied::Unknown(preview)) => {
                                counters.unknown_stream.inc();
                                let error = format!("no stream {stream_id:?} was started");
                                let dead =
                                    dead_letter(partition, offset, DeadLetterReason::UnknownStream, error, preview);
                                session.give(SinkOp::DeadLetter(dead));
                                continue;
                            }
                            Ok(Applied::Nothing) => continue,
                            Err(error) => {
                                tracing::error!(
                                    stream_id,
                                    partition,
                                    offset,
                                    error,
                                    "a live event failed; set aside as a dead letter"
                                );
                                counters.processing_failed.inc();
                                let dead = dead_letter(
                                    partition,
                                    offset,
                                    DeadLetterReason::ProcessingFailed,
                                    error,
                                    String::new(),
                                );
                                session.give(SinkOp::DeadLetter(dead));
                                continue;
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
                let Some((cap, gap_cap)) = earliest else { return };
                let (mut session, mut gap_session) = (sinks.session(&cap), gaps.session(&gap_cap));
                for (stream_id, playlist_changed) in touched.drain() {
                    let Some(stream) = streams.get_mut(&stream_id) else { continue };
                    if playlist_changed {
                        session.give(SinkOp::Playlist {
                            stream_id: stream_id.clone(),
                            body: stream.render(),
                            events_applied: stream.events_applied,
                            ended: stream.ended(),
                        });
                    }
                    session.give(SinkOp::Stream(Box::new(stream.doc.clone())));
                    gap_session.give_iterator(gap_updates(&stream_id, stream, *gap_cap.time()));
                }
            }
        });
        (sink_ops, gap_changes)
    }
}

/// A stream's gap changes since the last call, as updates of the gap set at `time`.
fn gap_updates(stream_id: &str, stream: &mut LiveStream, time: u64) -> impl Iterator<Item = GapUpdate> {
    let stream_id = stream_id.to_string();
    stream.take_gap_changes().into_iter().map(move |(seq, cause, diff)| ((stream_id.clone(), (seq, cause)), time, diff))
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The operator's counters, resolved once instead of by label on every event.
struct Counters {
    outcomes: HashMap<&'static str, IntCounter>,
    gaps: IntCounter,
    gaps_filled: IntCounter,
    checksum_failures: IntCounter,
    unknown_stream: IntCounter,
    processing_failed: IntCounter,
}

impl Counters {
    fn new(metrics: &Metrics) -> Counters {
        let outcomes = ["accepted", "duplicate", "late", "checksum_failed", "too_long", "after_end", "too_far_ahead"]
            .into_iter()
            .map(|label| (label, metrics.live_chunks_total.with_label_values(&[label])))
            .collect();
        Counters {
            outcomes,
            gaps: metrics.live_chunk_gaps_total.clone(),
            gaps_filled: metrics.live_gaps_filled_total.clone(),
            checksum_failures: metrics.chunk_checksum_failures_total.clone(),
            unknown_stream: metrics.dead_letters_total.with_label_values(&["unknown_stream"]),
            processing_failed: metrics.dead_letters_total.with_label_values(&["processing_failed"]),
        }
    }
}

/// What applying one command did.
enum Applied {
    /// To a known stream; whether its playlist changed.
    Changed(bool),
    /// A new stream started.
    Started(Box<LiveStream>),
    /// A command for a stream never started (its debug text, shortened).
    Unknown(String),
    /// Nothing (a replayed start).
    Nothing,
}

/// Applies a command to its stream (`None` when that was never started).
fn apply(
    stream: Option<&mut LiveStream>,
    stream_id: &str,
    command: LiveCommand,
    counters: &Counters,
    give: &mut impl FnMut(SinkOp),
) -> Applied {
    let Some(stream) = stream else {
        return match command {
            LiveCommand::Start {
                title,
                target_duration_s,
                dvr_window_size,
                max_sequence_jump,
                stream_key_sha256,
                playback_policy,
                record,
                at_ms,
            } => {
                let mut doc = LiveStreamDoc::new(stream_id, &title, target_duration_s, dvr_window_size, at_ms);
                doc.max_sequence_jump = max_sequence_jump;
                doc.stream_key_sha256 = stream_key_sha256;
                doc.playback_policy = playback_policy;
                doc.record = record;
                Applied::Started(Box::new(LiveStream::new(doc)))
            }
            other => Applied::Unknown(format!("{other:?}").chars().take(256).collect()),
        };
    };
    Applied::Changed(match command {
        LiveCommand::Start { .. } => return Applied::Nothing, // a replayed start changes nothing
        LiveCommand::Init { object_key } => stream.set_init(&object_key),
        LiveCommand::End { at_ms } => stream.end(at_ms),
        LiveCommand::RotateKey { stream_key_sha256 } => {
            stream.doc.stream_key_sha256 = Some(stream_key_sha256);
            false
        }
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
    })
}

/// The dead letter of a live record the operator could not apply.
fn dead_letter(partition: u32, offset: u64, reason: DeadLetterReason, error: String, preview: String) -> DeadLetterDoc {
    DeadLetterDoc {
        topic: Topic::LiveChunks.name().into(),
        partition,
        offset,
        reason,
        error,
        payload_preview: preview,
        at_ms: now_ms(),
    }
}

/// Runs `work`; a panic in it becomes its message, so one bad event cannot stop the worker.
fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    crate::panics::caught(work).map_err(|text| format!("processing panicked: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(guarded(|| 7), Ok(7));
        assert_eq!(guarded(|| -> u8 { panic!("slot {} is bad", 3) }), Err("processing panicked: slot 3 is bad".into()));
    }
}
