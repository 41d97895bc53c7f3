//! Each live stream's gap set as a differential-dataflow collection: the live operator adds a
//! slot when it becomes a gap (skipped, or its chunk failed its checksum) and retracts it when
//! a late chunk fills it or it leaves the window. What the API and `/metrics` show of a
//! stream's gaps is counted from that collection, and written as its `live_gaps` document.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use differential_dataflow::AsCollection;
use prometheus::IntGauge;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::SinkOp;
use crate::metrics::Metrics;
use crate::model::{GapCause, LiveGapsDoc};

/// One change to the gap set: `((stream id, (sequence number, cause)), time, +1 or -1)`.
pub type GapUpdate = ((String, (u64, GapCause)), u64, isize);

/// A stream's gap counts: `(missing, checksum_failed)`.
type Counts = (u64, u64);

/// Extension trait: `gap_updates.gap_documents(metrics)`.
pub trait GapDocuments<'s> {
    fn gap_documents(self, metrics: Arc<Metrics>) -> StreamVec<'s, u64, SinkOp>;
}

impl<'s> GapDocuments<'s> for StreamVec<'s, u64, GapUpdate> {
    /// The `live_gaps` document of every stream whose counts changed, once per completed time.
    fn gap_documents(self, metrics: Arc<Metrics>) -> StreamVec<'s, u64, SinkOp> {
        let gauges = GapCause::ALL.map(|cause| metrics.live_gap_slots.with_label_values(&[cause.as_str()]));
        self.as_collection()
            .reduce_named(
                "GapCounts",
                |_stream, gaps: &[(&(u64, GapCause), isize)], counts: &mut Vec<(Counts, isize)>| {
                    counts.push((count(gaps), 1))
                },
            )
            .inner
            .unary_frontier::<CapacityContainerBuilder<Vec<SinkOp>>, _, _, _>(Pipeline, "GapDocuments", move |_, _| {
                // Per time not yet complete: its capability and each changed stream's counts.
                let mut pending: BTreeMap<u64, (Capability<u64>, HashMap<String, Counts>)> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for ((stream_id, counts), time, diff) in data.drain(..) {
                            track(&gauges, counts, diff);
                            let (_, changed) =
                                pending.entry(time).or_insert_with(|| (cap.delayed(&time, 0), HashMap::new()));
                            // A change retracts the old counts and adds the new ones; only a
                            // retraction means none are left.
                            if diff > 0 {
                                changed.insert(stream_id, counts);
                            } else {
                                changed.entry(stream_id).or_insert((0, 0));
                            }
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (cap, changed) = entry.remove();
                        let docs = changed.into_iter().map(|(stream_id, (missing, checksum_failed))| {
                            SinkOp::Gaps(LiveGapsDoc { stream_id, missing, checksum_failed })
                        });
                        output.session(&cap).give_iterator(docs);
                    }
                }
            })
    }
}

/// The counts of one stream's gap set.
fn count(gaps: &[(&(u64, GapCause), isize)]) -> Counts {
    let (mut missing, mut checksum_failed) = (0u64, 0u64);
    for ((_, cause), n) in gaps {
        let n = u64::try_from(*n).unwrap_or(0);
        match cause {
            GapCause::Missing => missing += n,
            GapCause::ChecksumFailed => checksum_failed += n,
        }
    }
    (missing, checksum_failed)
}

/// Moves this process's gauges by a change of one stream's counts.
fn track(gauges: &[IntGauge; 2], (missing, checksum_failed): Counts, diff: isize) {
    let by = |n: u64| i64::try_from(n).unwrap_or(i64::MAX).saturating_mul(diff as i64);
    gauges[0].add(by(missing));
    gauges[1].add(by(checksum_failed));
}
