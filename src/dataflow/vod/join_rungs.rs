//! Joins a video's transcoded rungs back together: once every rung of its plan is done, the
//! video moves on as one record; the first failure moves on instead, and the other rungs of a
//! failed video are dropped as they come in.

use std::collections::{HashMap, HashSet};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::records::{Joined, RungDone, VodResult};

/// Extension trait: `rungs.join_rungs(route_by_video)`.
pub trait JoinRungs<'s> {
    fn join_rungs(self, route: impl Fn(&VodResult<RungDone>) -> u64 + 'static)
    -> StreamVec<'s, u64, VodResult<Joined>>;
}

impl<'s> JoinRungs<'s> for StreamVec<'s, u64, VodResult<RungDone>> {
    fn join_rungs(
        self,
        route: impl Fn(&VodResult<RungDone>) -> u64 + 'static,
    ) -> StreamVec<'s, u64, VodResult<Joined>> {
        self.unary::<CapacityContainerBuilder<Vec<VodResult<Joined>>>, _, _, _>(
            Exchange::new(route),
            "JoinRungs",
            |_, _| {
                // Per video: the capability of its first rung, and the rungs done so far by name.
                let mut pending: HashMap<String, (Capability<u64>, HashMap<String, RungDone>)> = HashMap::new();
                // Per failed video: the rungs not heard of yet. Forgotten once all are.
                let mut failed: HashMap<String, HashSet<String>> = HashMap::new();
                let heard = |failed: &mut HashMap<String, HashSet<String>>, id: &str, rungs: &[String]| {
                    let Some(outstanding) = failed.get_mut(id) else { return false };
                    for rung in rungs {
                        outstanding.remove(rung);
                    }
                    if outstanding.is_empty() {
                        failed.remove(id);
                    }
                    true
                };
                move |input, output| {
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(0) else { return };
                        for result in data.drain(..) {
                            match result {
                                Err(failure) => {
                                    let id = failure.stream_id.clone();
                                    if heard(&mut failed, &id, &failure.rungs) {
                                        continue; // the video has failed already
                                    }
                                    let (held, done) = pending.remove(&id).unzip();
                                    let done = done.unwrap_or_default();
                                    let outstanding: HashSet<String> = failure
                                        .planned
                                        .iter()
                                        .filter(|rung| !failure.rungs.contains(rung) && !done.contains_key(*rung))
                                        .cloned()
                                        .collect();
                                    if !outstanding.is_empty() {
                                        failed.insert(id, outstanding);
                                    }
                                    output.session(held.as_ref().unwrap_or(&cap)).give(Err(failure));
                                }
                                Ok(done) => {
                                    let id = done.plan.stream_id.clone();
                                    if heard(&mut failed, &id, std::slice::from_ref(&done.output.rung.name)) {
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
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use timely::dataflow::operators::{Inspect, ToStream};

    use super::*;
    use crate::dataflow::vod::records::VodPlan;
    use crate::media::ladder::ladder;
    use crate::media::transcode::RungOutput;
    use crate::model::MediaInfo;

    fn plan(id: &str) -> VodPlan {
        let info = MediaInfo {
            duration_s: 4.0,
            width: 1280,
            height: 720,
            frame_rate: 30.0,
            video_codec: "h264".into(),
            audio_codec: None,
        };
        VodPlan { stream_id: id.into(), source_key: String::new(), uploaded_at_us: 0, rungs: ladder(&info), info }
    }

    fn done(id: &str, rung: usize) -> VodResult<RungDone> {
        let plan = plan(id);
        let rung = plan.rungs[rung].clone();
        let output = RungOutput {
            playlist: format!("{}/index.m3u8", rung.name),
            rung,
            segments: Vec::new(),
            bandwidth: 1,
            average_bandwidth: 1,
            codecs: "avc1.64001f".into(),
            frame_rate: 30.0,
        };
        Ok(RungDone { plan, output })
    }

    fn failed(id: &str, rung: usize) -> VodResult<RungDone> {
        let plan = plan(id);
        Err(plan.failure(&plan.rungs[rung..=rung], format!("rung {rung} failed")))
    }

    /// The join's output for `inputs`, as `(video, Ok(rungs) | Err(error))`.
    fn join(inputs: Vec<VodResult<RungDone>>) -> Vec<(String, Result<usize, String>)> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let seen = out.clone();
        timely::example(move |scope| {
            inputs.to_stream(scope).container::<Vec<_>>().join_rungs(|_| 0).inspect(move |joined| {
                seen.lock().unwrap().push(match joined {
                    Ok((plan, outputs)) => (plan.stream_id.clone(), Ok(outputs.len())),
                    Err(failure) => (failure.stream_id.clone(), Err(failure.error.clone())),
                })
            });
        });
        let mut out = out.lock().unwrap().clone();
        out.sort();
        out
    }

    #[test]
    fn a_video_moves_on_once_every_rung_is_done_or_the_first_fails() {
        let joined = join(vec![
            done("vod-a", 0),
            done("vod-b", 0),
            done("vod-a", 1),
            failed("vod-b", 1),
            done("vod-a", 2),
            done("vod-b", 2), // after its video failed: dropped
        ]);
        assert_eq!(joined, [("vod-a".into(), Ok(3)), ("vod-b".into(), Err("rung 1 failed".into()))]);
    }
}
