//! The state of one live stream inside the dataflow: dedupe, ordering, gap detection,
//! checksum verdicts and the DVR window, as plain code the timely operator drives.

use std::collections::{BTreeMap, BTreeSet};

use crate::media::live_playlist::{self, LiveWindow, WindowSegment};
use crate::model::checks::{DVR_WINDOW_SIZE, MAX_SEQUENCE_NUMBER, check_duration};
use crate::model::{Chunk, ChunkStatus, GapCause, LiveChunkDoc, LiveStreamDoc, StreamStatus, keys};

/// What became of one chunk event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Entered the window; `new_gaps` sequence numbers were skipped over, `filled_gap` if it
    /// took the place of a missing one.
    Accepted {
        new_gaps: u64,
        filled_gap: bool,
    },
    /// Its sequence number is already in the window: nothing changes.
    Duplicate,
    Late,
    ChecksumFailed,
    TooLong,
    AfterEnd,
    /// Further ahead of the head than the stream's `max_sequence_jump`.
    TooFarAhead,
}

impl ChunkOutcome {
    pub fn label(self) -> &'static str {
        match self {
            ChunkOutcome::Accepted { .. } => "accepted",
            ChunkOutcome::Duplicate => "duplicate",
            ChunkOutcome::Late => "late",
            ChunkOutcome::ChecksumFailed => "checksum_failed",
            ChunkOutcome::TooLong => "too_long",
            ChunkOutcome::AfterEnd => "after_end",
            ChunkOutcome::TooFarAhead => "too_far_ahead",
        }
    }

    fn status(self) -> Option<ChunkStatus> {
        match self {
            ChunkOutcome::Accepted { .. } => Some(ChunkStatus::Live),
            ChunkOutcome::Duplicate => None,
            ChunkOutcome::Late => Some(ChunkStatus::Late),
            ChunkOutcome::ChecksumFailed => Some(ChunkStatus::ChecksumFailed),
            ChunkOutcome::TooLong => Some(ChunkStatus::TooLong),
            ChunkOutcome::AfterEnd => Some(ChunkStatus::AfterEnd),
            ChunkOutcome::TooFarAhead => Some(ChunkStatus::TooFarAhead),
        }
    }
}

/// One live stream: its document and the accepted segments of its current window.
#[derive(Clone, Debug)]
pub struct LiveStream {
    pub doc: LiveStreamDoc,
    window: BTreeMap<u64, WindowSegment>,
    /// The window's gap slots, and why each is one.
    gaps: BTreeMap<u64, GapCause>,
    /// Sequence numbers from the window's start on whose chunk failed its checksum and no
    /// good one replaced (past the head too: a gap of that cause once the head passes).
    failed: BTreeSet<u64>,
    /// Changes to `gaps` not yet taken by [`Self::take_gap_changes`].
    gap_changes: Vec<(u64, GapCause, isize)>,
    /// Events applied since this state was created; lets tests line outputs up with inputs.
    pub events_applied: u64,
}

impl LiveStream {
    pub fn new(doc: LiveStreamDoc) -> Self {
        LiveStream {
            doc,
            window: BTreeMap::new(),
            gaps: BTreeMap::new(),
            failed: BTreeSet::new(),
            gap_changes: Vec::new(),
            events_applied: 0,
        }
    }

    /// Rebuilds the state from stored documents (after a restart): the stream document and the
    /// chunk documents inside its window. Its gaps come out of the next
    /// [`Self::take_gap_changes`], as the dataflow's gap set starts empty.
    pub fn restore(doc: LiveStreamDoc, chunks: impl IntoIterator<Item = LiveChunkDoc>) -> Self {
        let mut stream = LiveStream::new(doc);
        if let (Some((start, head)), false) = (stream.slots(), stream.ended()) {
            for chunk in chunks {
                let seq = chunk.chunk.sequence_number;
                match chunk.status {
                    ChunkStatus::Live if (start..=head).contains(&seq) => {
                        let segment = stream.window_segment(&chunk.chunk, chunk.program_date_time_ms);
                        stream.window.insert(seq, segment);
                    }
                    ChunkStatus::ChecksumFailed if seq >= start => {
                        stream.failed.insert(seq);
                    }
                    _ => {}
                }
            }
            for seq in start..=head {
                if !stream.window.contains_key(&seq) {
                    stream.set_gap(seq, Some(stream.gap_cause(seq)));
                }
            }
        }
        stream
    }

    /// What changed in the window's gap set since the last call: `(sequence number, cause, +1
    /// or -1)`.
    pub fn take_gap_changes(&mut self) -> Vec<(u64, GapCause, isize)> {
        std::mem::take(&mut self.gap_changes)
    }

    fn gap_cause(&self, seq: u64) -> GapCause {
        if self.failed.contains(&seq) { GapCause::ChecksumFailed } else { GapCause::Missing }
    }

    /// Makes slot `seq` a gap of `cause`, or no gap (`None`), noting the change.
    fn set_gap(&mut self, seq: u64, cause: Option<GapCause>) {
        let old = match cause {
            Some(cause) => self.gaps.insert(seq, cause),
            None => self.gaps.remove(&seq),
        };
        if old == cause {
            return;
        }
        self.gap_changes.extend(old.map(|old| (seq, old, -1)));
        self.gap_changes.extend(cause.map(|cause| (seq, cause, 1)));
    }

    /// Moves the window's start to `start`: the slots before it are no longer gaps of it.
    fn slide_to(&mut self, start: u64) {
        while let Some(gap) = self.gaps.first_entry().filter(|gap| *gap.key() < start) {
            let (seq, cause) = gap.remove_entry();
            self.gap_changes.push((seq, cause, -1));
        }
        while self.failed.first().is_some_and(|seq| *seq < start) {
            self.failed.pop_first();
        }
    }

    /// Notes a chunk of `seq` that failed its checksum: its slot's gap, if in the window, is
    /// now of that cause.
    fn checksum_failed(&mut self, seq: u64) {
        let slots = self.slots();
        if slots.is_some_and(|(start, _)| seq < start) {
            return;
        }
        self.failed.insert(seq);
        // Bounded: the oldest are dropped first (they would leave the window first).
        while self.failed.len() as u64 > self.window_size() {
            self.failed.pop_first();
        }
        if slots.is_some_and(|(_, head)| seq <= head) {
            self.set_gap(seq, Some(GapCause::ChecksumFailed));
        }
    }

    /// First and last slot of the window; never more slots than the window has, whatever a
    /// stored document says.
    pub fn slots(&self) -> Option<(u64, u64)> {
        let (start, head) = self.doc.dvr_window_start.zip(self.doc.head_sequence)?;
        Some((start.max(head.saturating_sub(self.window_size() - 1)).min(head), head))
    }

    fn window_size(&self) -> u64 {
        self.doc.dvr_window_size.clamp(1, *DVR_WINDOW_SIZE.end())
    }

    pub fn ended(&self) -> bool {
        self.doc.status == StreamStatus::Ended
    }

    fn window_segment(&self, chunk: &Chunk, program_date_time_ms: u64) -> WindowSegment {
        let uri = keys::live_playback_path(&self.doc.stream_id, &chunk.object_key).to_string();
        WindowSegment { duration_ms: chunk.duration_ms, uri, program_date_time_ms }
    }

    /// Applies a chunk; returns the outcome and the chunk document to store (none for a
    /// duplicate). A `late` document must not overwrite an existing one.
    pub fn apply_chunk(&mut self, chunk: Box<Chunk>) -> (ChunkOutcome, Option<LiveChunkDoc>) {
        self.events_applied += 1;
        let seq = chunk.sequence_number;
        let window_size = self.window_size();
        let program_date_time_ms = self.program_date_time(&chunk);
        let outcome = if self.ended() {
            ChunkOutcome::AfterEnd
        } else if self.window.contains_key(&seq) {
            ChunkOutcome::Duplicate
        } else if check_duration(chunk.duration_ms, self.doc.target_duration_s).is_err() {
            ChunkOutcome::TooLong
        } else if self.too_far_ahead(seq) {
            ChunkOutcome::TooFarAhead
        } else if !chunk.checksum_ok() {
            ChunkOutcome::ChecksumFailed
        } else {
            match self.slots() {
                Some((start, _)) if seq < start => ChunkOutcome::Late,
                Some((start, head)) if seq < head => {
                    debug_assert!(seq >= start);
                    ChunkOutcome::Accepted { new_gaps: 0, filled_gap: true }
                }
                Some((start, head)) => {
                    let new_start = start.max(seq.saturating_add(1).saturating_sub(window_size));
                    self.doc.head_sequence = Some(seq);
                    self.doc.dvr_window_start = Some(new_start);
                    while self.window.first_key_value().is_some_and(|(first, _)| *first < new_start) {
                        self.window.pop_first();
                    }
                    self.slide_to(new_start);
                    for skipped in head.saturating_add(1).max(new_start)..seq {
                        self.set_gap(skipped, Some(self.gap_cause(skipped)));
                    }
                    ChunkOutcome::Accepted { new_gaps: seq.saturating_sub(head).saturating_sub(1), filled_gap: false }
                }
                None => {
                    self.slide_to(seq);
                    self.doc.head_sequence = Some(seq);
                    self.doc.dvr_window_start = Some(seq);
                    ChunkOutcome::Accepted { new_gaps: 0, filled_gap: false }
                }
            }
        };
        match outcome {
            ChunkOutcome::Accepted { new_gaps, .. } => {
                let segment = self.window_segment(&chunk, program_date_time_ms);
                self.window.insert(seq, segment);
                self.doc.chunks_accepted += 1;
                self.doc.gaps_total += new_gaps;
                if !self.failed.is_empty() {
                    self.failed.remove(&seq);
                }
                if !self.gaps.is_empty() {
                    self.set_gap(seq, None);
                }
            }
            ChunkOutcome::Duplicate => self.doc.duplicate_chunks += 1,
            ChunkOutcome::Late => self.doc.late_chunks += 1,
            ChunkOutcome::ChecksumFailed => {
                self.doc.checksum_failures += 1;
                self.checksum_failed(seq);
            }
            ChunkOutcome::TooLong | ChunkOutcome::AfterEnd | ChunkOutcome::TooFarAhead => self.doc.rejected_chunks += 1,
        }
        let doc = outcome.status().map(|status| LiveChunkDoc {
            stream_id: self.doc.stream_id.clone(),
            chunk,
            status,
            dvr_window_start: self.doc.dvr_window_start.unwrap_or(seq),
            program_date_time_ms,
            processing_latency_ms: None,
            manifest_updated_at_ms: None,
        });
        (outcome, doc)
    }

    /// Where the chunk starts on the wall clock (`EXT-X-PROGRAM-DATE-TIME`), from the window as
    /// it is before the chunk enters it:
    /// - the encoder's own time, when it sent one;
    /// - else right after the nearest earlier segment in the window, counting any missing slots
    ///   in between as long as this chunk (the duration their gap slots are listed with), so the
    ///   dates add up like the `EXTINF`s; a chunk filling a gap is also kept before the nearest
    ///   later segment, unless that was dated too early to leave room (below), as dates never
    ///   go back;
    /// - a new head is dated by its arrival instead when that is more than a target duration
    ///   later (the encoder paused), or more than the window's length earlier (its numbering
    ///   jumped past the window), but never before the segment before it ends;
    /// - with no segment in the window: one duration before segflow received it.
    fn program_date_time(&self, chunk: &Chunk) -> u64 {
        if let Some(ms) = chunk.encoder_program_date_time_ms {
            return ms;
        }
        let (seq, duration_ms) = (chunk.sequence_number, chunk.duration_ms);
        let received = (chunk.ingested_at_us / 1000).saturating_sub(duration_ms);
        // Saturating: the numbers come from outside (checked, but this must not panic anyway).
        let before = self.window.range(..seq).next_back().map(|(&p, prev)| {
            let end = prev.program_date_time_ms.saturating_add(prev.duration_ms);
            (end, end.saturating_add((seq - p - 1).saturating_mul(duration_ms)))
        });
        let after = self.window.range(seq.saturating_add(1)..).next().map(|(&n, next)| {
            let room = (n - seq - 1).saturating_mul(next.duration_ms).saturating_add(duration_ms);
            next.program_date_time_ms.saturating_sub(room)
        });
        match (before, after) {
            (Some((prev_end, follows)), Some(precedes)) => follows.min(precedes).max(prev_end),
            (None, Some(precedes)) => precedes,
            (Some((prev_end, follows)), None) if self.off_the_clock(follows, received) => received.max(prev_end),
            (Some((_, follows)), None) => follows,
            (None, None) => received,
        }
    }

    /// True when a date computed from the durations is too far from the arrival clock.
    fn off_the_clock(&self, follows: u64, received: u64) -> bool {
        let target_ms = self.doc.target_duration_s.saturating_mul(1000);
        received > follows.saturating_add(target_ms)
            || follows > received.saturating_add(self.window_size().saturating_mul(target_ms))
    }

    /// True when `seq` is further ahead of the head than the stream allows (the first chunk
    /// may take any number).
    fn too_far_ahead(&self, seq: u64) -> bool {
        seq > MAX_SEQUENCE_NUMBER
            || self.doc.head_sequence.is_some_and(|head| seq > head.saturating_add(self.doc.max_sequence_jump))
    }

    /// Records the stream's fMP4 initialization segment; true if the playlist changes.
    pub fn set_init(&mut self, object_key: &str) -> bool {
        self.events_applied += 1;
        if self.ended() || self.doc.init_object_key.as_deref() == Some(object_key) {
            return false;
        }
        self.doc.init_object_key = Some(object_key.to_string());
        true
    }

    /// Ends the stream; true if it was live.
    pub fn end(&mut self, at_ms: u64) -> bool {
        self.events_applied += 1;
        if self.ended() {
            return false;
        }
        self.doc.status = StreamStatus::Ended;
        self.doc.ended_at_ms = Some(at_ms);
        true
    }

    pub fn render(&self) -> String {
        let init_uri = self.doc.init_object_key.as_deref().map(|k| keys::live_playback_path(&self.doc.stream_id, k));
        live_playlist::render(&LiveWindow {
            target_duration_s: self.doc.target_duration_s,
            slots: self.slots(),
            segments: &self.window,
            init_uri,
            ended: self.ended(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0_MS: u64 = 1_700_000_000_000;

    /// A 2 s target, 10-slot stream.
    fn stream() -> LiveStream {
        LiveStream::new(LiveStreamDoc::new("s", "", 2, 10, T0_MS))
    }

    fn chunk(seq: u64, duration_ms: u64, received_ms: u64) -> Chunk {
        Chunk {
            chunk_index: seq,
            sequence_number: seq,
            duration_ms,
            size_bytes: 1,
            checksum: None,
            stored_sha256: Some("ab".repeat(32)),
            object_key: keys::live_chunk("s", seq, "ts"),
            keyframe_aligned: true,
            audio_track_id: None,
            video_track_id: None,
            ingested_at_us: received_ms * 1000,
            encoder_program_date_time_ms: None,
        }
    }

    fn dated(stream: &mut LiveStream, chunk: Chunk) -> u64 {
        let (outcome, doc) = stream.apply_chunk(Box::new(chunk));
        assert!(matches!(outcome, ChunkOutcome::Accepted { .. }), "{outcome:?}");
        doc.unwrap().program_date_time_ms
    }

    #[test]
    fn dates_add_up_like_the_durations_despite_upload_jitter() {
        let mut s = stream();
        assert_eq!(dated(&mut s, chunk(0, 2000, T0_MS + 2000)), T0_MS);
        // Arrivals 300 ms late and 200 ms early: the dates follow the durations.
        assert_eq!(dated(&mut s, chunk(1, 1900, T0_MS + 4300)), T0_MS + 2000);
        assert_eq!(dated(&mut s, chunk(2, 2000, T0_MS + 5700)), T0_MS + 3900);
    }

    #[test]
    fn gaps_count_with_their_listed_duration_and_a_fill_takes_its_slot() {
        let mut s = stream();
        dated(&mut s, chunk(0, 2000, T0_MS + 2000));
        // Slot 1 is missing: it is listed with chunk 2's duration, 1.5 s.
        assert_eq!(dated(&mut s, chunk(2, 1500, T0_MS + 5500)), T0_MS + 3500);
        // The late chunk 1 is dated right after chunk 0, not by its late arrival.
        assert_eq!(dated(&mut s, chunk(1, 1500, T0_MS + 9000)), T0_MS + 2000);
    }

    #[test]
    fn a_paused_encoder_or_a_jump_in_numbering_is_dated_by_arrival() {
        let mut s = stream();
        dated(&mut s, chunk(0, 2000, T0_MS + 2000));
        // Paused for a minute: more than a target duration after chunk 0 ended.
        assert_eq!(dated(&mut s, chunk(1, 2000, T0_MS + 64_000)), T0_MS + 62_000);
        // Numbering jumps 1,000 ahead with no time passing: not dated 2,000 s into the future,
        // and not before chunk 1 ends.
        assert_eq!(dated(&mut s, chunk(1001, 2000, T0_MS + 65_000)), T0_MS + 64_000);
    }

    #[test]
    fn a_fill_is_never_dated_before_the_segment_before_it_ends() {
        let mut s = LiveStream::new(LiveStreamDoc::new("s", "", 2, 5, T0_MS));
        // A push far faster than real time, with gaps: by the durations chunk 6 would start
        // more than the 10 s window after its arrival, so it follows chunk 3 at once.
        dated(&mut s, chunk(0, 2000, T0_MS + 2000));
        assert_eq!(dated(&mut s, chunk(1, 2000, T0_MS + 2100)), T0_MS + 2000);
        assert_eq!(dated(&mut s, chunk(3, 2000, T0_MS + 2200)), T0_MS + 6000);
        assert_eq!(dated(&mut s, chunk(6, 2000, T0_MS + 2300)), T0_MS + 8000);
        // Chunk 5 cannot fit between them; it starts where chunk 3 ends, not with it.
        assert_eq!(dated(&mut s, chunk(5, 2000, T0_MS + 2400)), T0_MS + 8000);
    }

    #[test]
    fn a_jump_past_the_allowed_distance_is_refused_and_the_window_stays_small() {
        let mut s = stream();
        dated(&mut s, chunk(0, 2000, T0_MS + 2000));
        for seq in [u64::MAX, MAX_SEQUENCE_NUMBER + 1, 10_001] {
            let (outcome, doc) = s.apply_chunk(Box::new(chunk(seq, 2000, T0_MS + 4000)));
            assert_eq!(outcome, ChunkOutcome::TooFarAhead, "{seq}");
            assert_eq!(doc.unwrap().status, ChunkStatus::TooFarAhead);
        }
        assert_eq!(s.slots(), Some((0, 0)));
        dated(&mut s, chunk(10_000, 2000, T0_MS + 4000));
        assert_eq!((s.slots(), s.doc.gaps_total, s.doc.rejected_chunks), (Some((9991, 10_000)), 9999, 3));
        assert_eq!(s.render().matches("#EXTINF").count(), 10);
    }

    #[test]
    fn a_stored_document_cannot_make_the_window_larger_than_it_is() {
        let mut doc = LiveStreamDoc::new("s", "", 2, 10, T0_MS);
        (doc.dvr_window_start, doc.head_sequence) = (Some(0), Some(u64::MAX));
        let s = LiveStream::restore(doc, []);
        assert_eq!(s.slots(), Some((u64::MAX - 9, u64::MAX)));
        assert_eq!(s.render().matches("#EXTINF").count(), 10);
    }

    proptest::proptest! {
        #[test]
        fn any_chunks_keep_the_window_within_its_size(
            window in 1u64..40,
            jump in 1u64..500,
            chunks in proptest::collection::vec(
                (
                    proptest::prop_oneof![proptest::num::u64::ANY, 0u64..300],
                    proptest::prop_oneof![3 => 0u64..3000, 1 => proptest::num::u64::ANY],
                    proptest::num::u64::ANY,
                ),
                1..120,
            ),
        ) {
            let mut doc = LiveStreamDoc::new("s", "", 2, window, T0_MS);
            doc.max_sequence_jump = jump;
            let mut s = LiveStream::new(doc);
            for (seq, duration_ms, received_ms) in chunks {
                let head = s.doc.head_sequence;
                let (outcome, _) = s.apply_chunk(Box::new(chunk(seq, duration_ms, received_ms / 1000)));
                if matches!(outcome, ChunkOutcome::Accepted { .. }) {
                    proptest::prop_assert!(seq <= MAX_SEQUENCE_NUMBER);
                    proptest::prop_assert!(head.is_none_or(|head| seq <= head + jump));
                }
                if let Some((start, head)) = s.slots() {
                    proptest::prop_assert!(start <= head && head - start < window);
                }
                proptest::prop_assert!(s.render().matches("#EXTINF").count() as u64 <= window);
            }
        }
    }

    #[test]
    fn the_encoders_own_date_wins() {
        let mut s = stream();
        dated(&mut s, chunk(0, 2000, T0_MS + 2000));
        let mut own = chunk(1, 2000, T0_MS + 4000);
        own.encoder_program_date_time_ms = Some(T0_MS + 2345);
        assert_eq!(dated(&mut s, own), T0_MS + 2345);
        assert_eq!(dated(&mut s, chunk(2, 2000, T0_MS + 6000)), T0_MS + 4345);
    }

    #[test]
    fn the_gap_set_follows_skips_fills_checksum_failures_and_the_window() {
        use GapCause::{ChecksumFailed, Missing};
        let mut s = LiveStream::new(LiveStreamDoc::new("s", "", 2, 4, T0_MS));
        let apply = |s: &mut LiveStream, seq: u64, good: bool| {
            let mut c = chunk(seq, 2000, T0_MS + 2000 * (seq + 1));
            if !good {
                c.checksum = Some("cd".repeat(32));
            }
            s.apply_chunk(Box::new(c));
            s.take_gap_changes()
        };
        assert_eq!(apply(&mut s, 0, true), vec![]);
        assert_eq!(apply(&mut s, 3, true), vec![(1, Missing, 1), (2, Missing, 1)]);
        assert_eq!(apply(&mut s, 2, true), vec![(2, Missing, -1)], "a late chunk retracts its gap");
        assert_eq!(apply(&mut s, 1, false), vec![(1, Missing, -1), (1, ChecksumFailed, 1)]);
        assert_eq!(apply(&mut s, 5, false), vec![], "past the head: not a slot yet");
        assert_eq!(apply(&mut s, 6, true), vec![(1, ChecksumFailed, -1), (4, Missing, 1), (5, ChecksumFailed, 1)]);
        // Restored with no chunk documents, every slot of the window 3..=6 is a gap at once.
        let mut restored = LiveStream::restore(s.doc.clone(), []);
        assert_eq!(restored.take_gap_changes(), [3, 4, 5, 6].map(|seq| (seq, Missing, 1)));
        assert_eq!(apply(&mut s, 5, true), vec![(5, ChecksumFailed, -1)], "a good chunk replaces a failed one");
    }
}
