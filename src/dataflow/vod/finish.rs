//! The finish stage: the master playlist of every rung, measured, and `ready`; or `failed` with
//! the reason. The video's work files go.

use std::sync::Arc;

use super::context::VodContext;
use super::records::{Joined, VodError, VodResult, ms_since};
use crate::media::transcode::RungOutput;
use crate::media::vod_playlist::master_playlist;
use crate::model::{VariantDoc, VodStatus, keys, now_ms};

pub async fn finish_stage(ctx: Arc<VodContext>, joined: VodResult<Joined>) -> Vec<()> {
    let (id, uploaded_at_us) = match &joined {
        Ok((plan, _)) => (plan.stream_id.clone(), plan.uploaded_at_us),
        Err(failure) => (failure.stream_id.clone(), failure.uploaded_at_us),
    };
    let result = match joined {
        Err(failure) => Err(failure.error),
        Ok((_, mut outputs)) => {
            outputs.sort_by_key(|o| std::cmp::Reverse(o.rung.height));
            let body = master_playlist(&outputs);
            match ctx.backends.store.put_bytes(&keys::vod_manifest(&id), body.into_bytes().into()).await {
                Ok(()) => Ok(outputs),
                Err(e) => Err(VodError::MasterPlaylist(e).to_string()),
            }
        }
    };
    ctx.clean_up(&id).await;
    if ctx.end(&id) {
        ctx.sweep(&id).await; // deleted while it was processed
        return vec![()];
    }
    let finished = ctx
        .update(&id, |doc| {
            let now = now_ms();
            doc.processing_latency_ms = Some(ms_since(uploaded_at_us, now));
            match result {
                Ok(outputs) => {
                    doc.variants_generated = outputs.iter().map(|o| o.rung.name.clone()).collect();
                    doc.variants =
                        outputs.iter().map(|o| variant_doc(o, keys::vod_variant(&id, &o.playlist))).collect();
                    doc.manifest_path = Some(keys::vod_manifest(&id));
                    doc.set_progress(100.0);
                    doc.playable = true;
                    doc.error = None;
                    doc.set_status(VodStatus::Ready, now);
                }
                Err(error) => {
                    doc.playable = false;
                    doc.variants.clear(); // what was playable while it was processed
                    doc.error = Some(error);
                    doc.set_status(VodStatus::Failed, now);
                }
            }
        })
        .await;
    if let Some(doc) = finished {
        let outcome = if doc.status == VodStatus::Ready { "ready" } else { "failed" };
        ctx.metrics.vod_videos_total.with_label_values(&[outcome]).inc();
        if let Some(ms) = doc.processing_latency_ms.filter(|_| doc.status == VodStatus::Ready) {
            ctx.metrics.vod_processing_seconds.observe(ms / 1000.0);
        }
        tracing::info!(stream_id = id, status = outcome, error = doc.error, "video finished");
    }
    vec![()]
}

/// A rung's entry in the video's document; its media playlist is at `playlist_path`.
pub(super) fn variant_doc(output: &RungOutput, playlist_path: String) -> VariantDoc {
    VariantDoc {
        name: output.rung.name.clone(),
        width: output.rung.width,
        height: output.rung.height,
        bandwidth: output.bandwidth,
        average_bandwidth: output.average_bandwidth,
        codecs: output.codecs.clone(),
        frame_rate: output.frame_rate,
        playlist_path,
        segments: output.segments.len(),
    }
}
