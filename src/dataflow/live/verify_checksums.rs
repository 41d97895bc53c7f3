//! Hashes the stored bytes of chunk events that arrive without the store's SHA-256 (events a
//! producer published straight to Kafka), off the worker, keeping each stream's events in order.
//!
//! Events the API appended already carry the hash and pass straight through unless an earlier
//! event of the same stream is still being hashed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::dataflow::live::LiveInput;
use crate::dataflow::retry;
use crate::metrics::Metrics;
use crate::model::{LiveCommand, now_us};
use crate::storage::object::ObjectStore;

/// An event waiting behind a hash of its own stream; `job` is set while its own hash runs.
struct Waiting {
    cap: Capability<u64>,
    input: LiveInput,
    job: Option<u64>,
}

pub trait VerifyChecksums<'s> {
    fn verify_checksums(
        self,
        store: Arc<dyn ObjectStore>,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> StreamVec<'s, u64, LiveInput>;
}

impl<'s> VerifyChecksums<'s> for StreamVec<'s, u64, LiveInput> {
    fn verify_checksums(
        self,
        store: Arc<dyn ObjectStore>,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> StreamVec<'s, u64, LiveInput> {
        let scope = self.scope();
        self.unary::<CapacityContainerBuilder<Vec<LiveInput>>, _, _, _>(
            Exchange::new(|input: &LiveInput| input.route()),
            "VerifyChecksums",
            move |_cap, info| {
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                let (done, finished) = std::sync::mpsc::channel::<(u64, String, Option<(u64, String)>)>();
                let mut queues: HashMap<String, VecDeque<Waiting>> = HashMap::new();
                let mut next_job = 0u64;
                move |input, output| {
                    // Finished hashes fill in their events; each stream's ready head moves on.
                    while let Ok((job, stream_id, stored)) = finished.try_recv() {
                        let Some(queue) = queues.get_mut(&stream_id) else { continue };
                        if let Some(waiting) = queue.iter_mut().find(|w| w.job == Some(job)) {
                            waiting.job = None;
                            // A missing object stays unhashed: the window rejects the chunk.
                            if let (
                                LiveInput::Command { command: LiveCommand::Chunk(chunk), .. },
                                Some((size, sha256)),
                            ) = (&mut waiting.input, stored)
                            {
                                chunk.size_bytes = size;
                                chunk.stored_sha256 = Some(sha256);
                            }
                        }
                        while queue.front().is_some_and(|w| w.job.is_none()) {
                            let waiting = queue.pop_front().expect("a front");
                            output.session(&waiting.cap).give(waiting.input);
                        }
                        if queue.is_empty() {
                            queues.remove(&stream_id);
                        }
                    }
                    input.for_each(|cap, data| {
                        let mut passing = Vec::new();
                        for mut item in data.drain(..) {
                            let LiveInput::Command { stream_id, command, .. } = &mut item else {
                                passing.push(item);
                                continue;
                            };
                            let unhashed = match command {
                                LiveCommand::Chunk(chunk) if chunk.stored_sha256.is_none() => {
                                    if chunk.ingested_at_us == 0 {
                                        chunk.ingested_at_us = now_us(); // published without one
                                    }
                                    Some(chunk.object_key.clone())
                                }
                                _ => None,
                            };
                            let stream_id = stream_id.clone();
                            if unhashed.is_none() && !queues.contains_key(&stream_id) {
                                passing.push(item);
                                continue;
                            }
                            let job = unhashed.map(|key| {
                                let job = next_job;
                                next_job += 1;
                                let (store, metrics, done) = (store.clone(), metrics.clone(), done.clone());
                                let (stream_id, activator) = (stream_id.clone(), activator.clone());
                                runtime.spawn(async move {
                                    let stored = retry(&metrics, || store.stat_sha256(&key)).await;
                                    let _ = done.send((job, stream_id, stored.map(|s| (s.size, s.sha256))));
                                    let _ = activator.activate();
                                });
                                job
                            });
                            let cap = cap.retain_least(0).expect("a capability for data");
                            queues.entry(stream_id).or_default().push_back(Waiting { cap, input: item, job });
                        }
                        output.session(&cap).give_iterator(passing.into_iter());
                    });
                }
            },
        )
    }
}
