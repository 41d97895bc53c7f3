//! Hands sink operations to a writer thread and holds a capability for each batch
//! until the writer reports it durable. Probing the (empty) output therefore gives a
//! "durable up to" frontier, which decides when log offsets may be committed.

use std::collections::HashMap;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use tokio::sync::mpsc::error::TrySendError;

use crate::dataflow::live::SinkOp;
use crate::dataflow::live::sink::LiveSink;
use crate::dataflow::retry;

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
            // Playlists are written here, every batch queued meanwhile together (each stream's
            // newest playlist once); documents go to the shared committer, so these playlists
            // are written while earlier documents are being synced. The writer has a thread of
            // its own, so a playlist never waits behind HTTP handlers for a runtime thread.
            let writer = async move {
                let mut queued = Vec::new();
                while to_write.recv_many(&mut queued, MAX_IN_FLIGHT).await > 0 {
                    let ids: Vec<u64> = queued.iter().map(|(id, _)| *id).collect();
                    let ops: Vec<SinkOp> = queued.drain(..).flat_map(|(_, ops)| ops).collect();
                    let written = retry(&sink.metrics, || sink.write_playlists(&ops)).await;
                    let writes = sink.documents(ops, &written);
                    let (acks, activator) = (acks.clone(), activator.clone());
                    sink.commit(writes, written, move || {
                        if ids.into_iter().all(|id| acks.send(id).is_ok()) {
                            let _ = activator.activate();
                        }
                    })
                    .await;
                }
            };
            let thread = std::thread::Builder::new()
                .name(format!("playlist-writer-{}", scope.index()))
                .spawn(move || runtime.block_on(writer))
                .expect("spawning the playlist writer thread");
            let writer = WriterThread { batches: Some(batches), thread: Some(thread) };
            let mut next_id = 0u64;
            let mut in_flight: HashMap<u64, Capability<u64>> = HashMap::new();
            // What arrived and is not yet sent, under the earliest capability among it: one
            // batch keeps a stream's documents with the playlist rendered in the same activation.
            let mut waiting: Option<(Capability<u64>, Vec<SinkOp>)> = None;
            move |input, _output| {
                while let Ok(id) = acked.try_recv() {
                    in_flight.remove(&id);
                }
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    match &mut waiting {
                        Some((held, ops)) => {
                            if cap.time() < held.time() {
                                *held = cap;
                            }
                            ops.append(data);
                        }
                        None => waiting = Some((cap, std::mem::take(data))),
                    }
                });
                if waiting.is_some() {
                    let permit = match writer.batches().try_reserve() {
                        Ok(permit) => permit,
                        Err(TrySendError::Full(())) => return, // an ack re-activates us
                        // Nothing would be written again: the worker stops, and the engine with it.
                        Err(TrySendError::Closed(())) => panic!("the playlist writer thread has stopped"),
                    };
                    let (cap, ops) = waiting.take().expect("checked above");
                    permit.send((next_id, ops));
                    in_flight.insert(next_id, cap);
                    next_id += 1;
                }
            }
        })
    }
}

/// The playlist writer's queue and thread. Dropped with the operator, it closes the queue and
/// waits for the thread to finish: no writer outlives its worker, nor the stores it holds.
struct WriterThread {
    batches: Option<tokio::sync::mpsc::Sender<(u64, Vec<SinkOp>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriterThread {
    fn batches(&self) -> &tokio::sync::mpsc::Sender<(u64, Vec<SinkOp>)> {
        self.batches.as_ref().expect("open until dropped")
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        drop(self.batches.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
