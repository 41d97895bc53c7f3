//! The timely dataflow at segflow's core: log records in, durable playlists and documents out.
//!
//! Each worker reads its own partitions of the log and runs two dataflows, one per topic:
//! [`live`] (`live-chunks`) and [`vod`] (`vod-chunks`). Records are exchanged by stream or
//! video id, so one worker owns each stream's state. On a cluster of processes, worker
//! indices count over the whole cluster, records cross processes as bincode, and a third
//! dataflow carries heartbeats ([`cluster`]). Every stage that writes holds its records'
//! capabilities until the write is durable, so the frontier of its (empty) output, the
//! *durable frontier*, says which log offsets may be committed ([`offsets`]).

pub mod cluster;
pub mod live;
pub mod offsets;
pub mod operators;
pub mod records;
mod retry;
pub mod vod;
mod worker;

pub use retry::retry;
pub use worker::{WorkerContext, WorkerError, run_worker};

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::live::LiveInput;
    use super::vod::records::{RungDone, TranscodeTask, VodFailure, VodInput, VodPlan, VodResult};
    use crate::media::ladder::Rung;
    use crate::media::transcode::{RungOutput, SegmentInfo};
    use crate::model::auth::PlaybackPolicy;
    use crate::model::{Chunk, DeadLetterDoc, DeadLetterReason, LiveCommand, MediaInfo, VodEvent};

    /// bincode is not self-describing: a field serde skips when empty breaks what follows.
    fn crosses_processes<T: Serialize + DeserializeOwned + Debug>(value: T) {
        let bytes = bincode::serialize(&value).unwrap();
        let back: T = bincode::deserialize(&bytes).unwrap_or_else(|e| panic!("{value:?} does not come back: {e}"));
        assert_eq!(format!("{back:?}"), format!("{value:?}"));
    }

    fn chunk(full: bool) -> Chunk {
        let some = |text: &str| full.then(|| text.to_string());
        Chunk {
            chunk_index: 7,
            sequence_number: 7,
            duration_ms: 2000,
            size_bytes: 1000,
            checksum: some("ab"),
            stored_sha256: some("ab"),
            object_key: "live/x/chunks/7.ts".into(),
            keyframe_aligned: true,
            audio_track_id: some("a"),
            video_track_id: some("v"),
            ingested_at_us: 1,
            encoder_program_date_time_ms: full.then_some(5),
        }
    }

    fn plan(audio: bool) -> VodPlan {
        VodPlan {
            stream_id: "vod-1".into(),
            source_key: "vod/vod-1/source.mp4".into(),
            uploaded_at_us: 1,
            info: MediaInfo {
                duration_s: 2.5,
                width: 640,
                height: 360,
                frame_rate: 25.0,
                rotation_degrees: 0,
                variable_frame_rate: false,
                video_codec: "h264".into(),
                audio_codec: audio.then(|| "aac".into()),
            },
            rungs: vec![rung()],
            time: 3,
        }
    }

    fn rung() -> Rung {
        Rung { name: "360p".into(), width: 640, height: 360, video_kbps: 800, max_kbps: 856, audio_kbps: 96 }
    }

    fn failure() -> VodFailure {
        VodFailure { stream_id: "vod-1".into(), uploaded_at_us: 1, error: "no".into(), rungs: vec![], time: None }
    }

    #[test]
    fn every_record_a_dataflow_exchanges_crosses_processes_whole() {
        let dead = DeadLetterDoc {
            topic: "live-chunks".into(),
            partition: 1,
            offset: 2,
            reason: DeadLetterReason::MalformedJson,
            error: "e".into(),
            payload_preview: "{".into(),
            at_ms: 3,
        };
        let command = |command| LiveInput::Command { stream_id: "live-1".into(), partition: 0, offset: 9, command };
        for key in [None, Some("k".to_string())] {
            let record = crate::model::live::RecordOptions { transcode: key.is_some() };
            crosses_processes(vec![command(LiveCommand::Start {
                title: "t".into(),
                target_duration_s: 2,
                dvr_window_size: 5,
                max_sequence_jump: 10,
                stream_key_sha256: key,
                playback_policy: PlaybackPolicy::Public,
                record,
                at_ms: 1,
            })]);
        }
        for full in [false, true] {
            crosses_processes(vec![
                command(LiveCommand::Chunk(Box::new(chunk(full)))),
                command(LiveCommand::End { at_ms: 2 }),
            ]);
        }
        crosses_processes(vec![command(LiveCommand::Init { object_key: "i".into() }), LiveInput::Dead(dead.clone())]);
        crosses_processes(vec![command(LiveCommand::RotateKey { stream_key_sha256: "k".into() })]);

        let upload = VodEvent {
            event_type: "vod_uploaded".into(),
            stream_id: "vod-1".into(),
            source_key: "s".into(),
            size_bytes: 1,
            source_sha256: "ab".into(),
            uploaded_at_us: 1,
            title: String::new(),
            description: String::new(),
            playback_policy: PlaybackPolicy::Signed,
        };
        crosses_processes(vec![VodInput::Upload(upload), VodInput::Dead(dead)]);
        let output = RungOutput {
            rung: rung(),
            playlist: "360p/index.m3u8".into(),
            segments: vec![SegmentInfo { file: "360p/seg_00000.ts".into(), duration_s: 2.0, bytes: 10 }],
            bandwidth: 8,
            average_bandwidth: 8,
            codecs: "avc1.64001f".into(),
            frame_rate: 25.0,
        };
        for audio in [false, true] {
            let tasks: Vec<VodResult<TranscodeTask>> =
                vec![Ok(TranscodeTask { plan: plan(audio), rungs: vec![rung()] }), Err(failure())];
            crosses_processes(tasks);
            let done: Vec<VodResult<RungDone>> =
                vec![Ok(RungDone { plan: plan(audio), output: output.clone() }), Err(failure())];
            crosses_processes(done);
            crosses_processes(vec![Ok((plan(audio), vec![output.clone()])), Err(failure())]);
        }
    }
}
