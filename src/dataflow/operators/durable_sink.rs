//! Hands sink operations to an async writer on tokio and holds a capability for each batch
//! until the writer reports it durable. Probing the (empty) output therefore gives a
//! "durable up to" frontier, which decides when log offsets may be committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::dataflow::SinkOp;
use crate::sinks::{LiveSink, SinkError};

/// Batches allowed in flight per worker before the operator waits for acknowledgements.
const MAX_IN_FLIGHT: usize = 64;

/// Extension trait: `ops.durable_sink(sink, runtime)`.
pub trait DurableSink<'s> {
    fn durable_sink(self, sink: Arc<LiveSink>, runtime: tokio::runtime::Handle) -> StreamVec<'s, u64, ()>;
}

impl<'s> DurableSink<'s> for StreamVec<'s, u64, SinkOp> {
    fn durable_sink(self, sink: Arc<LiveSink>, runtime: tokio::runtime::Handle) -> StreamVec<'s, u64, ()> {
        let scope = self.scope();
        self.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "DurableSink", move |_cap, info| {
            let activator = scope.worker().sync_activator_for(info.address.to_vec());
            let (batches, mut to_write) = tokio::sync::mpsc::channel::<(u64, Vec<SinkOp>)>(MAX_IN_FLIGHT);
            let (acks, acked) = std::sync::mpsc::channel::<u64>();
            // Two stages, so a batch's playlists are written while the previous batch's
            // documents commit: playlists first, then documents, then the acknowledgement.
            let (to_commit, mut committing) = tokio::sync::mpsc::channel(MAX_IN_FLIGHT);
            let playlist_sink = sink.clone();
            runtime.spawn(async move {
                while let Some((id, ops)) = to_write.recv().await {
                    let written = retry(&playlist_sink, || playlist_sink.write_playlists(&ops)).await;
                    let writes = playlist_sink.documents(ops, &written);
                    if to_commit.send((id, writes, written)).await.is_err() {
                        break;
                    }
                }
            });
            runtime.spawn(async move {
                while let Some((id, writes, written)) = committing.recv().await {
                    retry(&sink, || sink.write_documents(Arc::clone(&writes), &written)).await;
                    if acks.send(id).is_err() {
                        break;
                    }
                    let _ = activator.activate();
                }
            });
            let mut next_id = 0u64;
            let mut in_flight: HashMap<u64, Capability<u64>> = HashMap::new();
            // Batches waiting for room in the channel, oldest first.
            let mut waiting: Vec<(Capability<u64>, Vec<SinkOp>)> = Vec::new();
            move |input, _output| {
                while let Ok(id) = acked.try_recv() {
                    in_flight.remove(&id);
                }
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    match waiting.last_mut() {
                        Some((last, ops)) if last.time() == cap.time() => ops.append(data),
                        _ => waiting.push((cap, std::mem::take(data))),
                    }
                });
                let mut sent = 0;
                for (cap, ops) in waiting.iter_mut() {
                    let Ok(permit) = batches.try_reserve() else { break }; // an ack re-activates us
                    permit.send((next_id, std::mem::take(ops)));
                    in_flight.insert(next_id, cap.clone());
                    next_id += 1;
                    sent += 1;
                }
                waiting.drain(..sent);
            }
        })
    }
}

/// Retries a sink write with backoff until it succeeds: offsets stay uncommitted meanwhile,
/// so nothing is lost while a backend is down.
async fn retry<T, F: Future<Output = Result<T, SinkError>>>(sink: &LiveSink, mut write: impl FnMut() -> F) -> T {
    let mut backoff = Duration::from_millis(50);
    loop {
        match write().await {
            Ok(done) => return done,
            Err(error) => {
                tracing::error!(%error, "sink write failed; retrying (offsets stay uncommitted)");
                sink.metrics.sink_retries_total.inc();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
