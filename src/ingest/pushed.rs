//! Segments FFmpeg's HLS muxer pushes bare (`-method PUT`), between their upload and the
//! playlist that names them.
//!
//! FFmpeg PUTs its playlist the moment it has sent a segment's last byte, without waiting for
//! the answer, so a playlist can be handled while a segment it names is still uploading, or
//! before that segment's request has even started. A pushed segment is therefore announced
//! when its request starts, stored under `incoming/`, and claimed by the first playlist that
//! names it; a playlist waits for its segments, woken by every change, within bounds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::keys;
use crate::storage::object::{ObjectStore, StoreError, StoredObject};

/// How long a playlist waits for the segments it names that are still uploading; also how
/// long ending a stream waits for its requests in flight.
pub const UPLOAD_WAIT: Duration = Duration::from_secs(10);

/// How long a playlist waits for a segment it names whose request has not started yet.
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

/// The next sequence number a stream's playlists may emit, behind a lock that takes the
/// stream's playlists one at a time (FFmpeg sends them in order); `None` until the first
/// playlist since start-up has read it from the stream's document.
pub type PlaylistCursor = Arc<tokio::sync::Mutex<Option<u64>>>;

#[derive(Default)]
pub struct PushedSegments {
    state: Mutex<State>,
    /// Marked on every change of `state`: waiters are woken instead of polling.
    changed: watch::Sender<()>,
}

#[derive(Default)]
struct State {
    /// By incoming key: `None` while the upload is being written.
    segments: HashMap<String, Option<StoredObject>>,
    /// Ingest requests running, per stream.
    in_flight: HashMap<String, usize>,
    cursors: HashMap<String, PlaylistCursor>,
}

impl PushedSegments {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn change<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let changed = change(&mut self.state());
        self.changed.send_replace(());
        changed
    }

    /// Calls `ready` now and after every change until it answers, at most until `deadline`;
    /// also at `recheck`, for answers that change with time alone.
    async fn wait_for<T>(
        &self,
        deadline: Instant,
        recheck: Option<Instant>,
        mut ready: impl FnMut(&mut State, Instant) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.changed.subscribe();
        loop {
            let now = Instant::now();
            if let Some(answer) = ready(&mut self.state(), now) {
                return Some(answer);
            }
            if now >= deadline {
                return None;
            }
            let wake = recheck.filter(|at| *at > now).map_or(deadline, |at| at.min(deadline));
            let _ = tokio::time::timeout_at(wake, changes.changed()).await;
        }
    }

    /// Counts a request of `stream_id` while the returned guard lives, so that ending the
    /// stream can wait for it. A request that pushes a segment to `incoming` announces it.
    pub fn request(self: &Arc<Self>, stream_id: &str, incoming: Option<String>) -> RequestInFlight {
        self.change(|state| {
            *state.in_flight.entry(stream_id.to_string()).or_default() += 1;
            if let Some(key) = &incoming {
                state.segments.insert(key.clone(), None);
            }
        });
        RequestInFlight { pushed: self.clone(), stream_id: stream_id.to_string(), incoming }
    }

    /// A segment's upload to `key` has ended: stored, or failed (`None`).
    pub fn finished(&self, key: &str, stored: Option<StoredObject>) {
        self.change(|state| match stored {
            Some(stored) => state.segments.insert(key.to_string(), Some(stored)),
            None => state.segments.remove(key),
        });
    }

    /// The cursor of `stream_id`'s playlists.
    pub fn cursor(&self, stream_id: &str) -> PlaylistCursor {
        let mut state = self.state();
        state.cursors.entry(stream_id.to_string()).or_default().clone()
    }

    /// Waits (up to [`UPLOAD_WAIT`]) until no request of the stream is running: FFmpeg does
    /// not wait for answers, so its last playlist may still be in flight when the stream ends.
    pub async fn drain_stream(&self, stream_id: &str) {
        let deadline = Instant::now() + UPLOAD_WAIT;
        self.wait_for(deadline, None, |state, _| (!state.in_flight.contains_key(stream_id)).then_some(())).await;
    }

    /// Drops what is kept for an ended stream.
    pub fn forget_stream(&self, stream_id: &str) {
        let prefix = keys::live_incoming_prefix(stream_id);
        self.change(|state| {
            state.cursors.remove(stream_id);
            state.segments.retain(|key, _| !key.starts_with(&prefix));
        });
    }

    /// The stored segment at `key` once its upload is complete, taken out of the waiting ones;
    /// `None` if it never arrives by `deadline` (one for all the segments of a playlist, so
    /// that a playlist naming many that never come is given up on within [`UPLOAD_WAIT`]).
    pub async fn claim(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<StoredObject>, StoreError> {
        let known = self.state().segments.contains_key(key);
        if !known && let Some(stored) = store.stat_sha256(key).await? {
            return Ok(Some(stored)); // pushed before a restart
        }
        let announced_by = (Instant::now() + ANNOUNCE_WAIT).min(deadline);
        let claimed = self
            .wait_for(deadline, Some(announced_by), |state, now| match state.segments.get(key) {
                Some(None) => None, // still uploading
                Some(Some(_)) => Some(state.segments.remove(key).flatten()),
                None if now < announced_by => None,
                None => Some(None),
            })
            .await;
        Ok(claimed.flatten())
    }
}

/// A request of a stream in flight; see [`PushedSegments::request`].
pub struct RequestInFlight {
    pushed: Arc<PushedSegments>,
    stream_id: String,
    incoming: Option<String>,
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.pushed.change(|state| {
            // A segment announced by a request that ended before storing it never arrives.
            if let Some(key) = &self.incoming
                && state.segments.get(key).is_some_and(Option::is_none)
            {
                state.segments.remove(key);
            }
            if let Some(count) = state.in_flight.get_mut(&self.stream_id) {
                *count -= 1;
                if *count == 0 {
                    state.in_flight.remove(&self.stream_id);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(size: u64) -> StoredObject {
        StoredObject { size, sha256: "ab".repeat(32) }
    }

    /// A store that holds nothing: every segment must come through `PushedSegments`.
    fn empty_store() -> (tempfile::TempDir, crate::storage::object::local::LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::object::local::LocalStore::new(dir.path()).unwrap();
        (dir, store)
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_is_woken_by_the_upload_it_waits_for() {
        let (_dir, store) = empty_store();
        let pushed = Arc::new(PushedSegments::default());
        let key = keys::live_incoming("s", "out3.ts");
        let request = pushed.request("s", Some(key.clone()));
        let finisher = {
            let (pushed, key) = (pushed.clone(), key.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                pushed.finished(&key, Some(stored(7)));
                drop(request);
            })
        };
        let began = Instant::now();
        assert_eq!(pushed.claim(&store, &key, began + UPLOAD_WAIT).await.unwrap(), Some(stored(7)));
        // Woken by the change itself (the clock is paused: no polling tick elapses).
        assert_eq!(began.elapsed(), Duration::from_millis(1500));
        finisher.await.unwrap();
        let deadline = Instant::now() + UPLOAD_WAIT;
        assert_eq!(pushed.claim(&store, &key, deadline).await.unwrap(), None, "a segment is claimed once");
    }

    #[tokio::test(start_paused = true)]
    async fn claims_and_drains_are_bounded() {
        let (_dir, store) = empty_store();
        let pushed = Arc::new(PushedSegments::default());
        // Never announced: given up after the announce wait.
        let claim = |key: String| {
            let (pushed, store) = (&pushed, &store);
            async move { pushed.claim(store, &key, Instant::now() + UPLOAD_WAIT).await.unwrap() }
        };
        let began = Instant::now();
        assert_eq!(claim(keys::live_incoming("s", "never.ts")).await, None);
        assert_eq!(began.elapsed(), ANNOUNCE_WAIT);
        // Announced, never finished: given up after the upload wait.
        let key = keys::live_incoming("s", "stuck.ts");
        let stuck = pushed.request("s", Some(key.clone()));
        let began = Instant::now();
        assert_eq!(claim(key).await, None);
        assert_eq!(began.elapsed(), UPLOAD_WAIT);
        // Announced by a request that ended without storing it: not waited for.
        let key = keys::live_incoming("s", "refused.ts");
        drop(pushed.request("s", Some(key.clone())));
        let began = Instant::now();
        assert_eq!(claim(key).await, None);
        assert_eq!(began.elapsed(), ANNOUNCE_WAIT);
        drop(stuck);
        // Many segments that never come, under one deadline: given up on once it passes.
        let began = Instant::now();
        let deadline = began + UPLOAD_WAIT;
        for n in 0..2_000 {
            let key = keys::live_incoming("s", &format!("missing{n}.ts"));
            assert_eq!(pushed.claim(&store, &key, deadline).await.unwrap(), None);
        }
        assert_eq!(began.elapsed(), UPLOAD_WAIT);
        // A request in flight holds a drain until it ends.
        let request = pushed.request("s", None);
        let drained = {
            let pushed = pushed.clone();
            tokio::spawn(async move {
                let began = Instant::now();
                pushed.drain_stream("s").await;
                began.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(request);
        assert_eq!(drained.await.unwrap(), Duration::from_millis(300));
    }
}
