//! Joins a video's transcoded rungs back together: once every rung of its plan is done, the
//! video moves on as one record; the first failure moves on instead, and later rungs of a
//! failed video are dropped.

use std::collections::{HashMap, HashSet};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::dataflow::vod::{RungDone, Step, VodPlan};
use crate::media::transcode::RungOutput;

pub type Joined = Step<(VodPlan, Vec<RungOutput>)>;

/// Extension trait: `rungs.join_rungs(route_by_video)`.
pub trait JoinRungs<'s> {
    fn join_rungs(self, route: impl Fn(&Step<RungDone>) -> u64 + 'static) -> StreamVec<'s, u64, Joined>;
}

impl<'s> JoinRungs<'s> for StreamVec<'s, u64, Step<RungDone>> {
    fn join_rungs(self, route: impl Fn(&Step<RungDone>) -> u64 + 'static) -> StreamVec<'s, u64, Joined> {
        self.unary::<CapacityContainerBuilder<Vec<Joined>>, _, _, _>(Exchange::new(route), "JoinRungs", |_, _| {
            // Per video: the capability of its first rung, and the rungs done so far by name.
            let mut pending: HashMap<String, (Capability<u64>, HashMap<String, RungDone>)> = HashMap::new();
            let mut failed: HashSet<String> = HashSet::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    for step in data.drain(..) {
                        match step {
                            Err(failure) => {
                                let held = pending.remove(&failure.stream_id).map(|(held, _)| held);
                                if failed.insert(failure.stream_id.clone()) {
                                    output.session(held.as_ref().unwrap_or(&cap)).give(Err(failure));
                                }
                            }
                            Ok(done) => {
                                let id = done.plan.stream_id.clone();
                                if failed.contains(&id) {
                                    continue;
                                }
                                let (_, rungs) =
                                    pending.entry(id.clone()).or_insert_with(|| (cap.clone(), HashMap::new()));
                                rungs.insert(done.output.rung.name.clone(), done);
                                let complete = rungs.values().next().is_some_and(|any| {
                                    any.plan.rungs.iter().all(|rung| rungs.contains_key(&rung.name))
                                });
                                if complete {
                                    let (held, rungs) = pending.remove(&id).expect("entry exists");
                                    let mut rungs = rungs.into_values();
                                    let first = rungs.next().expect("at least one rung");
                                    let outputs =
                                        std::iter::once(first.output).chain(rungs.map(|r| r.output)).collect();
                                    output.session(&held).give(Ok((first.plan, outputs)));
                                }
                            }
                        }
                    }
                });
            }
        })
    }
}
