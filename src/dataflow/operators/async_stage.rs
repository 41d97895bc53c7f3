//! Runs an async job per record on tokio, off the worker, and holds the record's capability
//! until the job is done: the durable frontier (and so the log offsets) cannot pass work that
//! is still running, which makes a restart redo it.

use std::collections::HashMap;
use std::future::Future;

use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// Extension trait: `records.async_stage("Probe", route, runtime, job)`.
///
/// ```
/// use segflow::dataflow::operators::async_stage::AsyncStage;
/// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
///
/// let runtime = tokio::runtime::Runtime::new().unwrap();
/// let handle = runtime.handle().clone();
/// let captured = timely::example(move |scope| {
///     vec![1u64, 2, 3].to_stream(scope).container::<Vec<_>>()
///         .async_stage("Double", |n| *n, handle, |n| async move { vec![n * 2] })
///         .capture()
/// });
/// let mut out: Vec<u64> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
/// out.sort();
/// assert_eq!(out, [2, 4, 6]);
/// ```
pub trait AsyncStage<'s, D> {
    fn async_stage<R, F, Fut>(
        self,
        name: &str,
        route: impl Fn(&D) -> u64 + 'static,
        runtime: tokio::runtime::Handle,
        job: F,
    ) -> StreamVec<'s, u64, R>
    where
        R: Send + Clone + 'static,
        F: Fn(D) -> Fut + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static;
}

impl<'s, D: ExchangeData + Clone> AsyncStage<'s, D> for StreamVec<'s, u64, D> {
    fn async_stage<R, F, Fut>(
        self,
        name: &str,
        route: impl Fn(&D) -> u64 + 'static,
        runtime: tokio::runtime::Handle,
        job: F,
    ) -> StreamVec<'s, u64, R>
    where
        R: Send + Clone + 'static,
        F: Fn(D) -> Fut + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let scope = self.scope();
        let stage = name.to_string();
        self.unary::<CapacityContainerBuilder<Vec<R>>, _, _, _>(Exchange::new(route), name, move |_cap, info| {
            let activator = scope.worker().sync_activator_for(info.address.to_vec());
            let (done, finished) = std::sync::mpsc::channel::<(u64, Vec<R>)>();
            let mut next_id = 0u64;
            let mut running: HashMap<u64, Capability<u64>> = HashMap::new();
            move |input, output| {
                while let Ok((id, results)) = finished.try_recv() {
                    if let Some(cap) = running.remove(&id) {
                        output.session(&cap).give_iterator(results.into_iter());
                    }
                }
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    for record in data.drain(..) {
                        let id = next_id;
                        next_id += 1;
                        running.insert(id, cap.clone());
                        let work = runtime.spawn(job(record));
                        let (done, activator, stage) = (done.clone(), activator.clone(), stage.clone());
                        runtime.spawn(async move {
                            // A job that panicked still releases its capability.
                            let results = work.await.unwrap_or_else(|error| {
                                tracing::error!(stage, %error, "async job panicked");
                                Vec::new()
                            });
                            if done.send((id, results)).is_ok() {
                                let _ = activator.activate();
                            }
                        });
                    }
                });
            }
        })
    }
}
