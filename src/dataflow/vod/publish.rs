//! Publishes a video while FFmpeg encodes it: each segment a rung's playlist lists goes into
//! the store, then that rung's `EVENT` playlist of the stored segments, and once every rung of
//! the task has one, the master. The video plays from its first segments; when its rung is
//! whole, the playlist becomes `VOD` with `ENDLIST`.

use std::path::Path;
use std::time::Duration;

use futures_util::future::{join_all, try_join_all};
use tokio::sync::Notify;

use super::context::VodContext;
use super::finish::variant_doc;
use super::records::{VodError, VodPlan, ms_since};
use super::transcode::SEGMENT_SECONDS;
use crate::media::ladder::Rung;
use crate::media::transcode::{RungOutput, RungRead, rung_playlist};
use crate::media::vod_playlist::{master_playlist, rendition_playlist};
use crate::model::{keys, now_ms};

/// How often the rungs' playlists are read for new segments.
const POLL: Duration = Duration::from_millis(100);

/// One transcode task's rungs, as far as they are in the store.
pub struct Publisher<'a> {
    ctx: &'a VodContext,
    plan: &'a VodPlan,
    rungs: &'a [Rung],
    out_dir: &'a Path,
    /// Per rung, what of it is read and in the store.
    stored: Vec<RungRead>,
    /// Per rung, how many segments the stored playlist of an earlier, cut run lists: a playlist
    /// is rewritten once it lists more, so that it never shrinks under a player.
    listed_before: Vec<usize>,
    announced: bool,
}

impl<'a> Publisher<'a> {
    pub async fn new(ctx: &'a VodContext, plan: &'a VodPlan, rungs: &'a [Rung], out_dir: &'a Path) -> Publisher<'a> {
        let mut listed_before = Vec::with_capacity(rungs.len());
        for rung in rungs {
            let stored = ctx.backends.store.get_bytes(&playlist_key(plan, rung)).await;
            let listed = stored.ok().flatten().and_then(|bytes| m3u8_rs::parse_media_playlist_res(&bytes).ok());
            listed_before.push(listed.map_or(0, |playlist| playlist.segments.len()));
        }
        Publisher {
            ctx,
            plan,
            rungs,
            out_dir,
            stored: vec![RungRead::default(); rungs.len()],
            listed_before,
            announced: false,
        }
    }

    /// Publishes what FFmpeg finishes until `encoded` is told (FFmpeg is done) or a write
    /// fails. A look under way is finished first, so that none of its writes can land after
    /// [`finish`](Self::finish)'s.
    pub async fn follow(&mut self, encoded: &Notify) -> Result<(), VodError> {
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => self.publish_new().await?,
                () = encoded.notified() => return Ok(()),
            }
        }
    }

    /// Stores the segments FFmpeg listed since the last look, and the playlists naming them;
    /// the rungs' are handled at once.
    async fn publish_new(&mut self) -> Result<(), VodError> {
        let (out_dir, has_audio) = (self.out_dir, self.plan.info.has_audio());
        // A rung that cannot be read now is read again at the next look, and at the end.
        let looks = self.stored.iter_mut().zip(self.rungs).map(|(read, rung)| async move {
            read.read_more(out_dir, rung, has_audio).await.map_or(0, |(count, _)| count)
        });
        let counts = join_all(looks).await;
        let this = &*self;
        let grown = counts.iter().enumerate().filter(|(_, count)| **count > 0).map(|(k, &count)| async move {
            for segment in this.stored[k].last(count) {
                this.store(&segment.file, false).await?;
            }
            if this.stored[k].segments.len() > this.listed_before[k] {
                let playlist = rendition_playlist(&this.output(k)?, SEGMENT_SECONDS, false);
                this.put_playlist(&this.rungs[k], playlist).await?;
            }
            Ok::<_, VodError>(())
        });
        try_join_all(grown).await?;
        if !self.announced && self.stored.iter().all(|read| !read.segments.is_empty()) {
            let outputs = (0..self.rungs.len()).map(|k| self.output(k)).collect::<Result<Vec<_>, _>>()?;
            announce_playable(self.ctx, self.plan, outputs).await?;
            self.announced = true;
        }
        Ok(())
    }

    /// Once FFmpeg is done: the rest of each rung's segments, and its playlist as `VOD`; gives
    /// each rung's whole output, measured.
    pub async fn finish(&mut self) -> Result<Vec<RungOutput>, VodError> {
        let (out_dir, has_audio) = (self.out_dir, self.plan.info.has_audio());
        let mut outputs = Vec::with_capacity(self.rungs.len());
        for k in 0..self.rungs.len() {
            let (rung, read) = (&self.rungs[k], &mut self.stored[k]);
            let count = read.read_rest(out_dir, rung, has_audio).await?;
            for segment in self.stored[k].last(count) {
                self.store(&segment.file, true).await?;
            }
            let output = self.stored[k].output(rung, self.plan.info.frame_rate)?;
            self.put_playlist(rung, rendition_playlist(&output, SEGMENT_SECONDS, true)).await?;
            outputs.push(output);
        }
        Ok(outputs)
    }

    /// Rung `k` as far as it is stored; its peak bandwidth is at least what its encoder may
    /// reach, as the rest of it is not measured yet.
    fn output(&self, k: usize) -> Result<RungOutput, VodError> {
        let rung = &self.rungs[k];
        let mut output = self.stored[k].output(rung, self.plan.info.frame_rate)?;
        let audio_kbps = if self.plan.info.has_audio() { rung.audio_kbps } else { 0 };
        output.bandwidth = output.bandwidth.max(u64::from(rung.max_kbps + audio_kbps) * 1000);
        Ok(output)
    }

    /// Moves a finished file into the store, or copies it while FFmpeg still writes beside it.
    async fn store(&self, file: &str, last: bool) -> Result<(), VodError> {
        let (key, path) = (keys::vod_variant(&self.plan.stream_id, file), self.out_dir.join(file));
        let store = &self.ctx.backends.store;
        let stored = if last { store.put_file(&key, &path).await } else { store.put_copy(&key, &path).await };
        stored.map_err(|source| VodError::Store { file: file.to_string(), source })
    }

    async fn put_playlist(&self, rung: &Rung, playlist: String) -> Result<(), VodError> {
        let stored =
            self.ctx.backends.store.put_bytes(&playlist_key(self.plan, rung), playlist.into_bytes().into()).await;
        stored.map_err(|source| VodError::Store { file: rung_playlist(rung), source })
    }
}

fn playlist_key(plan: &VodPlan, rung: &Rung) -> String {
    keys::vod_variant(&plan.stream_id, &rung_playlist(rung))
}

/// Adds a task's rungs to the video's playable ones: the master lists them all, and the
/// document says the video plays (`playable`), with which renditions so far.
async fn announce_playable(ctx: &VodContext, plan: &VodPlan, outputs: Vec<RungOutput>) -> Result<(), VodError> {
    let id = &plan.stream_id;
    let playable = {
        let mut videos = ctx.playable.lock().await;
        let playable = videos.entry(id.clone()).or_default();
        playable.retain(|had| outputs.iter().all(|new| new.rung.name != had.rung.name));
        playable.extend(outputs);
        playable.sort_by_key(|output| std::cmp::Reverse(output.rung.height));
        let master = master_playlist(playable);
        ctx.backends
            .store
            .put_bytes(&keys::vod_manifest(id), master.into_bytes().into())
            .await
            .map_err(VodError::MasterPlaylist)?;
        playable.clone()
    };
    let latency_ms = ms_since(plan.uploaded_at_us, now_ms());
    let mut first = false;
    ctx.update(id, |doc| {
        if doc.status.is_final() {
            return;
        }
        doc.variants = playable.iter().map(|o| variant_doc(o, keys::vod_variant(id, &o.playlist))).collect();
        first = !doc.playable;
        doc.playable = true;
        doc.playable_latency_ms.get_or_insert(latency_ms);
    })
    .await;
    if first {
        ctx.metrics.vod_playable_seconds.observe(latency_ms / 1000.0);
        tracing::info!(stream_id = id, latency_ms, rungs = playable.len(), "video playable");
    }
    Ok(())
}
