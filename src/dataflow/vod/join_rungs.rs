//! Joins a video's transcoded rungs back together, in differential dataflow: each rung's
//! result joins the collection of its video's results at its plan's time and leaves it one
//! time later; a `reduce` per video says, once that time is complete, whether every planned
//! rung is done (the video moves on as one record) or one failed (the failure moves on).

use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;

use super::records::{Joined, RungDone, TranscodeTask, VodResult};

/// Extension trait: `rungs.join_rungs(route_by_video)`.
pub trait JoinRungs<'s> {
    fn join_rungs(self, route: impl Fn(&VodResult<RungDone>) -> u64 + 'static)
    -> StreamVec<'s, u64, VodResult<Joined>>;
}

/// One rung's result in the collection: `(video, (rung, result as bincode))`. Encoded, as the
/// collection's records must be ordered and a result holds floats; bincode, as timely uses it
/// for every record that crosses processes (its round trip is tested in `dataflow`).
type Report = (String, (String, Vec<u8>));

impl<'s> JoinRungs<'s> for StreamVec<'s, u64, VodResult<RungDone>> {
    fn join_rungs(
        self,
        route: impl Fn(&VodResult<RungDone>) -> u64 + 'static,
    ) -> StreamVec<'s, u64, VodResult<Joined>> {
        self.unary::<CapacityContainerBuilder<Vec<(Report, u64, isize)>>, _, _, _>(
            Exchange::new(route),
            "LadderReports",
            |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(0) else { return };
                        let mut session = output.session(&cap);
                        for result in data.drain(..) {
                            // At its plan's time, never before the capability's.
                            let planned =
                                result.as_ref().map_or_else(|failure| failure.time, |done| Some(done.plan.time));
                            let time = planned.unwrap_or(*cap.time()).max(*cap.time());
                            let report = report(&result);
                            session.give((report.clone(), time, 1));
                            session.give((report, time.saturating_add(1), -1));
                        }
                    });
                }
            },
        )
        .as_collection()
        .reduce_named(
            "JoinRungs",
            |_video, reports: &[(&(String, Vec<u8>), isize)], out: &mut Vec<(Vec<u8>, isize)>| {
                if let Some(joined) = joined(reports) {
                    out.push((bincode::serialize(&joined).expect("a joined video encodes"), 1));
                }
            },
        )
        .inner
        .unary::<CapacityContainerBuilder<Vec<VodResult<Joined>>>, _, _, _>(
            Pipeline,
            "LadderJoined",
            |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        // Only additions: the retraction one time later says nothing new.
                        for ((_video, joined), time, _) in data.drain(..).filter(|(_, _, diff)| *diff > 0) {
                            let joined: VodResult<Joined> =
                                bincode::deserialize(&joined).expect("encoded by the reduce");
                            output.session(&cap.delayed(&time, 0)).give(joined);
                        }
                    });
                }
            },
        )
    }
}

/// A result as a record of the collection.
fn report(result: &VodResult<RungDone>) -> Report {
    let (video, rung) = match result {
        Ok(done) => (done.plan.stream_id.clone(), done.output.rung.name.clone()),
        Err(failure) => (failure.stream_id.clone(), failure.rungs.join(",")),
    };
    (video, (rung, bincode::serialize(result).expect("a rung's result encodes")))
}

/// What a video's results at one time say: a failure (the first, by rung name), every planned
/// rung done (in the plan's order), or nothing yet.
fn joined(reports: &[(&(String, Vec<u8>), isize)]) -> Option<VodResult<Joined>> {
    let results: Vec<VodResult<RungDone>> = reports
        .iter()
        .filter(|(_, count)| *count > 0)
        .filter_map(|((_, encoded), _)| bincode::deserialize(encoded).ok())
        .collect();
    if let Some(failure) = results.iter().find_map(|result| result.as_ref().err()) {
        return Some(Err(failure.clone()));
    }
    let plan = &results.first()?.as_ref().ok()?.plan;
    let outputs: Option<Vec<_>> = plan
        .rungs
        .iter()
        .map(|rung| results.iter().filter_map(|r| r.as_ref().ok()).find(|done| done.output.rung.name == rung.name))
        .map(|done| done.map(|done| done.output.clone()))
        .collect();
    Some(Ok((plan.clone(), outputs?)))
}

/// Extension trait: `tasks.stamp_plan_time()` stamps each task's plan with the dataflow time
/// it goes out at, so that every result of a video can be joined at one time (a later stage
/// may carry a result at an earlier time, never a later one).
pub trait StampPlanTime<'s> {
    fn stamp_plan_time(self) -> StreamVec<'s, u64, VodResult<TranscodeTask>>;
}

impl<'s> StampPlanTime<'s> for StreamVec<'s, u64, VodResult<TranscodeTask>> {
    fn stamp_plan_time(self) -> StreamVec<'s, u64, VodResult<TranscodeTask>> {
        self.unary::<CapacityContainerBuilder<Vec<_>>, _, _, _>(Pipeline, "StampPlanTime", |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    let time = *cap.time();
                    let stamped = data.drain(..).map(|task| {
                        task.map(|mut task| {
                            task.plan.time = time;
                            task
                        })
                    });
                    output.session(&cap).give_iterator(stamped);
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use timely::dataflow::operators::{Input, Inspect, Probe, ToStream};

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
            rotation_degrees: 0,
            variable_frame_rate: false,
            video_codec: "h264".into(),
            audio_codec: None,
        };
        VodPlan {
            stream_id: id.into(),
            source_key: String::new(),
            uploaded_at_us: 0,
            rungs: ladder(&info),
            info,
            time: 0,
        }
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

    #[test]
    fn results_carried_at_earlier_times_than_their_plan_are_joined_once_at_it() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let seen = out.clone();
        timely::execute(timely::Config::thread(), move |worker| {
            let seen = seen.clone();
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, results) = scope.new_input::<Vec<VodResult<RungDone>>>();
                let joined = results.join_rungs(|_| 0).inspect_core(move |event| {
                    let Ok((stamp, joined)) = event else { return };
                    for joined in joined {
                        let rungs = joined.as_ref().map(|(_, outputs)| outputs.len()).map_err(|f| f.error.clone());
                        seen.lock().unwrap().push((*stamp.least().unwrap(), rungs));
                    }
                });
                (input, joined.probe().0)
            });
            let at = |rung| {
                let mut done = done("vod-a", rung);
                done.as_mut().unwrap().plan.time = 5;
                done
            };
            // Rung 0 reaches the join at time 3 (a container's least time), the others at 5.
            input.advance_to(3);
            input.send(at(0));
            input.advance_to(5);
            input.send(at(1));
            input.send(at(2));
            input.advance_to(10);
            worker.step_or_park_while(None, || probe.less_than(&10));
        })
        .unwrap();
        assert_eq!(*out.lock().unwrap(), [(5, Ok(3))], "one record, at the plan's time");
    }
}
