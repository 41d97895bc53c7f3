//! Uploads: a video's source is stored (streamed and hashed on the way) or named where a
//! producer stored it, its document is written as `uploaded`, and its event goes to
//! `vod-chunks`, where the dataflow takes over.

use std::sync::Arc;

use super::{Ingest, IngestError, MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS, check_length};
use crate::model::auth::PlaybackPolicy;
use crate::model::checks::{VOD_ID_PREFIX, validate_vod_id};
use crate::model::library::{VodDeleted, VodEdit};
use crate::model::{Topic, VOD_UPLOADED, VodDoc, VodEvent, VodStatus, keys, now_ms, now_us};
use crate::storage::metadata::MetaWrite;
use crate::storage::object::{ByteStream, StoreError, StoredObject};

/// A video whose source is stored, as the upload describes it.
#[derive(Debug)]
pub struct Upload {
    pub stream_id: String,
    pub title: String,
    pub description: String,
    pub source_key: String,
    pub stored: StoredObject,
    pub playback_policy: PlaybackPolicy,
}

impl Ingest {
    /// A new video id, and the key its source is stored at (the upload's own extension when
    /// it is a plain one, else `bin`: ffprobe reads the container from the bytes either way).
    pub fn new_upload(&self, file_name: Option<&str>) -> (String, String) {
        let stream_id = format!("{VOD_ID_PREFIX}{}", hex::encode(rand::random::<[u8; 6]>()));
        let key = keys::vod_source(&stream_id, &upload_extension(file_name));
        (stream_id, key)
    }

    /// Streams an upload's source to `key`; refused over `max_upload_bytes`, or empty.
    pub async fn store_source(&self, key: &str, body: ByteStream) -> Result<StoredObject, IngestError> {
        match self.backends.store.put_stream(key, body, self.limits.max_upload_bytes).await {
            Err(StoreError::Empty) => Err(IngestError::EmptyUpload),
            stored => Ok(stored?),
        }
    }

    /// Removes the source of an upload that was refused: it leaves nothing behind.
    pub async fn discard_source(&self, key: &str) {
        if let Err(error) = self.backends.store.delete(key).await {
            tracing::warn!(key, %error, "removing a refused upload failed");
        }
    }

    /// A video whose source a producer stored itself at `source_key` (`vod-raw/{id}/{file}`;
    /// the id is taken from it unless given).
    pub async fn stored_upload(
        &self,
        source_key: String,
        stream_id: Option<String>,
        title: String,
        description: String,
        playback_policy: PlaybackPolicy,
    ) -> Result<VodEvent, IngestError> {
        let stream_id = stream_id.unwrap_or_else(|| source_key.split('/').nth(1).unwrap_or_default().to_string());
        validate_vod_id(&stream_id)?;
        keys::validate_vod_source(&stream_id, &source_key)?;
        check_text(&title, &description)?;
        if self.backends.metadata.get_vod(&stream_id).await?.is_some() {
            return Err(IngestError::VideoExists(stream_id));
        }
        let stored = self
            .backends
            .store
            .stat_sha256(&source_key)
            .await?
            .ok_or_else(|| IngestError::NoObject(source_key.clone()))?;
        self.accept_upload(Upload { stream_id, title, description, source_key, stored, playback_policy }).await
    }

    /// Records the video as `uploaded` and appends its event to `vod-chunks`.
    pub async fn accept_upload(&self, upload: Upload) -> Result<VodEvent, IngestError> {
        check_text(&upload.title, &upload.description)?;
        let event = VodEvent {
            event_type: VOD_UPLOADED.into(),
            stream_id: upload.stream_id,
            source_key: upload.source_key,
            size_bytes: upload.stored.size,
            source_sha256: upload.stored.sha256,
            uploaded_at_us: now_us(),
            title: upload.title,
            description: upload.description,
            playback_policy: upload.playback_policy,
        };
        let doc = VodDoc::from_event(&event);
        self.backends.metadata.apply(Arc::new(vec![MetaWrite::Vod(Box::new(doc.clone()))])).await?;
        if let Err(e) = self.append(Topic::VodChunks, &event.stream_id, &event).await {
            let mut failed = doc;
            failed.error = Some(format!("the upload event could not be logged: {e}"));
            failed.set_status(VodStatus::Failed, now_ms());
            self.backends.metadata.apply(Arc::new(vec![MetaWrite::Vod(Box::new(failed))])).await?;
            return Err(e);
        }
        tracing::info!(stream_id = event.stream_id, size_bytes = event.size_bytes, "video uploaded");
        Ok(event)
    }

    /// Appends a checked edit of a video to `vod-chunks` (the dataflow applies it).
    pub async fn edit_video(&self, edit: &VodEdit) -> Result<(), IngestError> {
        edit.validate()?;
        self.append(Topic::VodChunks, &edit.stream_id, edit).await?;
        tracing::info!(stream_id = edit.stream_id, "video edit logged");
        Ok(())
    }

    /// Appends a video's deletion to `vod-chunks` (the dataflow removes it).
    pub async fn delete_video(&self, stream_id: &str) -> Result<(), IngestError> {
        let deleted = VodDeleted::new(stream_id, now_us());
        deleted.validate()?;
        self.append(Topic::VodChunks, stream_id, &deleted).await?;
        tracing::info!(stream_id, "video deletion logged");
        Ok(())
    }
}

/// An upload's own extension when it is a plain one, else `bin`.
pub(super) fn upload_extension(file_name: Option<&str>) -> String {
    file_name
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| !ext.is_empty() && ext.len() <= 8 && ext.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "bin".into())
}

/// Refused when the title or the description is too long.
fn check_text(title: &str, description: &str) -> Result<(), IngestError> {
    check_length("title", title, MAX_TITLE_CHARS)?;
    check_length("description", description, MAX_DESCRIPTION_CHARS)
}
