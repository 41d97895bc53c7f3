//! VOD events and documents: an uploaded video on its way to an adaptive-bitrate ladder.

use serde::{Deserialize, Serialize};

use super::{bucket, validate_file_name, validate_stream_id};
use crate::media::probe::MediaInfo;

/// Where a VOD's life stands; it only moves forward, and `failed` is final for an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VodStatus {
    Uploaded,
    Processing,
    Transcoding,
    Ready,
    Failed,
}

impl VodStatus {
    pub fn is_final(self) -> bool {
        matches!(self, VodStatus::Ready | VodStatus::Failed)
    }
}

/// The event on `vod-chunks`: a source video is in the object store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VodEvent {
    #[serde(default = "vod_uploaded")]
    pub event_type: String,
    pub stream_id: String,
    pub source_key: String,
    pub size_bytes: u64,
    pub source_sha256: String,
    pub uploaded_at_us: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
}

fn vod_uploaded() -> String {
    "vod_uploaded".into()
}

impl VodEvent {
    pub fn validate(&self) -> Result<(), String> {
        if self.event_type != "vod_uploaded" {
            return Err(format!("unknown VOD event type {:?}", self.event_type));
        }
        validate_vod_id(&self.stream_id)?;
        validate_vod_source_key(&self.stream_id, &self.source_key)
    }
}

/// One status change, kept in order: the document's processing timestamps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: VodStatus,
    pub at_ms: u64,
}

/// One rendition of the ladder, as the master playlist announces it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantDoc {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub codecs: String,
    pub frame_rate: f64,
    /// Key of the variant's media playlist in the object store.
    pub playlist_path: String,
    pub segments: usize,
}

/// `vod_metadata`: one document per video (seed 003's fields, and what a player UI needs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VodDoc {
    pub stream_id: String,
    pub title: String,
    pub description: String,
    pub status: VodStatus,
    pub source_key: String,
    pub size_bytes: u64,
    pub source_sha256: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub status_history: Vec<StatusChange>,
    /// What `ffprobe` found in the source.
    pub source: Option<MediaInfo>,
    /// The ladder chosen for this source, best first.
    pub rungs_planned: Vec<String>,
    pub progress_pct: f64,
    pub variants_generated: Vec<String>,
    pub variants: Vec<VariantDoc>,
    pub manifest_path: Option<String>,
    pub poster_path: Option<String>,
    /// Upload acknowledged to `ready` (or `failed`).
    pub processing_latency_ms: Option<f64>,
    pub error: Option<String>,
    pub keyframe_aligned: bool,
    pub audio_track_id: Option<String>,
}

impl VodDoc {
    pub fn new(stream_id: &str, title: &str, description: &str, source_key: &str, at_ms: u64) -> VodDoc {
        VodDoc {
            stream_id: stream_id.to_string(),
            title: title.to_string(),
            description: description.to_string(),
            status: VodStatus::Uploaded,
            source_key: source_key.to_string(),
            size_bytes: 0,
            source_sha256: String::new(),
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
            status_history: vec![StatusChange { status: VodStatus::Uploaded, at_ms }],
            source: None,
            rungs_planned: Vec::new(),
            progress_pct: 0.0,
            variants_generated: Vec::new(),
            variants: Vec::new(),
            manifest_path: None,
            poster_path: None,
            processing_latency_ms: None,
            error: None,
            keyframe_aligned: false,
            audio_track_id: None,
        }
    }

    /// The document of a video whose event arrived without one.
    pub fn from_event(event: &VodEvent) -> VodDoc {
        let at_ms = event.uploaded_at_us / 1000;
        let mut doc = VodDoc::new(&event.stream_id, &event.title, &event.description, &event.source_key, at_ms);
        doc.size_bytes = event.size_bytes;
        doc.source_sha256 = event.source_sha256.clone();
        doc
    }

    pub fn set_status(&mut self, status: VodStatus, at_ms: u64) {
        if self.status != status {
            self.status = status;
            self.status_history.push(StatusChange { status, at_ms });
        }
        self.updated_at_ms = at_ms;
    }
}

/// VOD ids are `vod-` followed by a safe name.
pub fn validate_vod_id(id: &str) -> Result<(), String> {
    validate_stream_id(id)?;
    if !id.starts_with("vod-") {
        return Err(format!("{id:?} is not a VOD id (vod-…)"));
    }
    Ok(())
}

/// `vod-raw/{stream_id}/source.{ext}`.
pub fn vod_source_key(stream_id: &str, ext: &str) -> String {
    format!("{}/{stream_id}/source.{ext}", bucket::VOD_RAW)
}

/// A source named by a producer must sit under `vod-raw/{stream_id}/`.
pub fn validate_vod_source_key(stream_id: &str, key: &str) -> Result<(), String> {
    let prefix = format!("{}/{stream_id}/", bucket::VOD_RAW);
    match key.strip_prefix(&prefix) {
        Some(file) if validate_file_name(file).is_ok() => Ok(()),
        _ => Err(format!("source object key {key:?} must be {prefix}<file name>")),
    }
}

/// Prefix of a video's renditions and poster: `vod-variants/{stream_id}/`.
pub fn vod_variants_prefix(stream_id: &str) -> String {
    format!("{}/{stream_id}/", bucket::VOD_VARIANTS)
}

/// The master playlist, under the seed's name: `manifests/{stream_id}/vod_manifest.m3u8`.
pub fn vod_manifest_key(stream_id: &str) -> String {
    format!("{}/{stream_id}/{VOD_MANIFEST_FILE}", bucket::MANIFESTS)
}

pub const VOD_MANIFEST_FILE: &str = "vod_manifest.m3u8";

/// The poster's file name, under the video's renditions.
pub const VOD_POSTER_FILE: &str = "poster.jpg";

/// `vod-variants/{stream_id}/poster.jpg`.
pub fn vod_poster_key(stream_id: &str) -> String {
    format!("{}{VOD_POSTER_FILE}", vod_variants_prefix(stream_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_keys_stay_under_the_video() {
        assert!(validate_vod_source_key("vod-a", "vod-raw/vod-a/source.mp4").is_ok());
        assert!(validate_vod_source_key("vod-a", "vod-raw/vod-b/source.mp4").is_err());
        assert!(validate_vod_source_key("vod-a", "vod-raw/vod-a/../x.mp4").is_err());
        assert!(validate_vod_source_key("vod-a", "vod-raw/vod-a/dir/x.mp4").is_err());
        assert!(validate_vod_id("live-a").is_err());
    }

    #[test]
    fn status_changes_are_recorded_once() {
        let mut doc = VodDoc::new("vod-a", "t", "", "vod-raw/vod-a/source.mp4", 1);
        doc.set_status(VodStatus::Processing, 2);
        doc.set_status(VodStatus::Processing, 3);
        doc.set_status(VodStatus::Ready, 4);
        let statuses: Vec<_> = doc.status_history.iter().map(|c| (c.status, c.at_ms)).collect();
        assert_eq!(statuses, [(VodStatus::Uploaded, 1), (VodStatus::Processing, 2), (VodStatus::Ready, 4)]);
        assert!(doc.status.is_final());
    }
}
