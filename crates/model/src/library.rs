//! The video library: edits and deletions of videos, which travel through `vod-chunks` like
//! uploads (so documents rebuilt from the log keep them), and the one definition of what a list
//! query matches, which both metadata stores follow.

use serde::{Deserialize, Serialize};

use super::auth::PlaybackPolicy;
use super::checks::{ValidationError, validate_stream_id};
use super::vod::{VodDoc, VodKind, VodStatus, vod_uploaded};

/// `event_type` of an edit of a video's title, description, tags or playback policy.
pub const VOD_UPDATED: &str = "vod_updated";
/// `event_type` of a video's deletion.
pub const VOD_DELETED: &str = "vod_deleted";

/// Longest title and description of a stream or video.
pub const MAX_TITLE_CHARS: usize = 256;
pub const MAX_DESCRIPTION_CHARS: usize = 4096;
/// Tags of one video, and characters of one tag.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_CHARS: usize = 64;
/// Videos in one page of `GET /videos`, and words in its `q`.
pub const MAX_PAGE_SIZE: u64 = 100;
pub const MAX_QUERY_WORDS: usize = 16;

/// What every `vod-chunks` event says first: which kind it is (an upload when it does not say).
#[derive(Debug, Deserialize)]
pub struct VodEventType {
    #[serde(default = "vod_uploaded")]
    pub event_type: String,
}

/// `vod_updated`: the fields given replace the video's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VodEdit {
    pub event_type: String,
    pub stream_id: String,
    pub at_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback_policy: Option<PlaybackPolicy>,
}

impl VodEdit {
    /// An edit of `stream_id` at `at_us` that changes nothing yet.
    pub fn new(stream_id: &str, at_us: u64) -> VodEdit {
        VodEdit {
            event_type: VOD_UPDATED.into(),
            stream_id: stream_id.into(),
            at_us,
            title: None,
            description: None,
            tags: None,
            playback_policy: None,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.event_type != VOD_UPDATED {
            return Err(ValidationError::UnknownEventType(self.event_type.clone()));
        }
        validate_stream_id(&self.stream_id)?;
        if self.title.is_none() && self.description.is_none() && self.tags.is_none() && self.playback_policy.is_none() {
            return Err(ValidationError::MissingField {
                event: "an edit",
                field: "title, description, tags or playback_policy",
            });
        }
        if let Some(title) = &self.title {
            check_text("title", title, MAX_TITLE_CHARS)?;
        }
        if let Some(description) = &self.description {
            check_text("description", description, MAX_DESCRIPTION_CHARS)?;
        }
        if let Some(tags) = &self.tags {
            if tags.len() > MAX_TAGS {
                return Err(ValidationError::OutOfRange {
                    field: "tags",
                    value: format!("({} of them)", tags.len()),
                    range: format!("at most {MAX_TAGS}"),
                });
            }
            for tag in tags {
                let chars = tag.chars().count();
                if chars == 0 || chars > MAX_TAG_CHARS || tag.trim() != tag || tag.chars().any(char::is_control) {
                    return Err(ValidationError::OutOfRange {
                        field: "tag",
                        value: format!("{tag:?}"),
                        range: format!("1-{MAX_TAG_CHARS} characters, no control characters, no space at either end"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies the edit to a video's document (a replay applies it again, to the same effect).
    pub fn apply(&self, doc: &mut VodDoc) {
        if let Some(title) = &self.title {
            doc.title.clone_from(title);
        }
        if let Some(description) = &self.description {
            doc.description.clone_from(description);
        }
        if let Some(tags) = &self.tags {
            doc.tags.clone_from(tags);
        }
        if let Some(policy) = self.playback_policy {
            doc.playback_policy = policy;
        }
        doc.edited_at_us = doc.edited_at_us.max(self.at_us);
    }
}

/// Trims tags and drops repeats (the first spelling stays), as an edit stores them.
pub fn normalize_tags(tags: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    tags.into_iter().map(|tag| tag.trim().to_string()).filter(|tag| seen.insert(tag.to_lowercase())).collect()
}

fn check_text(field: &'static str, text: &str, max_chars: usize) -> Result<(), ValidationError> {
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(ValidationError::OutOfRange {
            field,
            value: format!("of {chars} characters"),
            range: format!("at most {max_chars} characters"),
        });
    }
    Ok(())
}

/// `vod_deleted`: the video, every object of it and its document go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VodDeleted {
    pub event_type: String,
    pub stream_id: String,
    pub at_us: u64,
}

impl VodDeleted {
    pub fn new(stream_id: &str, at_us: u64) -> VodDeleted {
        VodDeleted { event_type: VOD_DELETED.into(), stream_id: stream_id.into(), at_us }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.event_type != VOD_DELETED {
            return Err(ValidationError::UnknownEventType(self.event_type.clone()));
        }
        validate_stream_id(&self.stream_id)
    }
}

/// The words of a text as search matches them: runs of letters and digits, lower-cased.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// Every word of a video's title, description and tags, sorted, once each: what `q` is
/// matched against (MongoDB keeps it in the document, under a multikey index).
pub fn search_terms(doc: &VodDoc) -> Vec<String> {
    let texts = [doc.title.as_str(), doc.description.as_str()].into_iter().chain(doc.tags.iter().map(String::as_str));
    let mut terms: Vec<String> = texts.flat_map(words).collect();
    terms.sort_unstable();
    terms.dedup();
    terms
}

/// Newest or oldest first (by `created_at_ms`, then id, so pages never overlap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VodSort {
    #[default]
    CreatedDesc,
    CreatedAsc,
}

/// One page of `GET /videos`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VodQuery {
    pub status: Option<VodStatus>,
    pub kind: Option<VodKind>,
    /// Every one of these words is in the video's title, description or tags.
    pub words: Vec<String>,
    pub sort: VodSort,
    pub skip: u64,
    pub limit: u64,
}

/// What a list query reads of a video to tell whether it is in the result: a store can keep
/// it beside the document, in the list's order, and read only the page's documents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VodListing {
    pub status: VodStatus,
    pub kind: VodKind,
    /// [`search_terms`].
    pub terms: Vec<String>,
}

impl VodListing {
    pub fn of(doc: &VodDoc) -> VodListing {
        VodListing { status: doc.status, kind: doc.kind, terms: search_terms(doc) }
    }
}

impl VodQuery {
    /// Whether a video is in the query's result (before paging).
    pub fn matches(&self, video: &VodListing) -> bool {
        if self.status.is_some_and(|s| s != video.status) || self.kind.is_some_and(|k| k != video.kind) {
            return false;
        }
        self.words.iter().all(|w| video.terms.binary_search(w).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(id: &str, title: &str, created: u64) -> VodDoc {
        VodDoc::new(id, title, "", &format!("vod-raw/{id}/source.mp4"), created)
    }

    #[test]
    fn an_edit_is_checked_and_applied() {
        let mut edit = VodEdit::new("vod-a", 7);
        assert!(edit.validate().is_err(), "an edit of nothing");
        edit.title = Some("x".repeat(MAX_TITLE_CHARS + 1));
        assert!(edit.validate().unwrap_err().to_string().contains("at most 256 characters"));
        edit.title = Some("Sunset".into());
        edit.tags = Some(vec![" beach ".into()]);
        assert!(edit.validate().is_err(), "an untrimmed tag");
        edit.tags = Some(normalize_tags(vec![" beach ".into(), "Beach".into(), "4K".into()]));
        assert_eq!(edit.tags.as_deref().unwrap(), ["beach", "4K"]);
        edit.validate().unwrap();
        let mut doc = video("vod-a", "old", 1);
        edit.apply(&mut doc);
        assert_eq!(
            (doc.title.as_str(), doc.tags.len(), doc.edited_at_us, doc.description.as_str()),
            ("Sunset", 2, 7, "")
        );
        assert!(VodEdit { tags: Some(vec!["t".into(); MAX_TAGS + 1]), ..edit.clone() }.validate().is_err());
        assert!(VodEdit { stream_id: "live-a".into(), ..edit.clone() }.validate().is_ok(), "a recording's id");
        assert!(VodEdit { stream_id: "../a".into(), ..edit }.validate().is_err());
    }

    #[test]
    fn a_query_matches_whole_words_of_title_description_and_tags() {
        let mut doc = video("vod-a", "Sunset at the Beach", 1);
        doc.description = "Filmed on a phone, 4K.".into();
        doc.tags = vec!["Travel-Vlog".into()];
        assert_eq!(
            search_terms(&doc),
            ["4k", "a", "at", "beach", "filmed", "on", "phone", "sunset", "the", "travel", "vlog"]
        );
        let query = |q: &str| VodQuery { words: words(q).collect(), ..VodQuery::default() };
        let doc = VodListing::of(&doc);
        assert!(query("BEACH sunset").matches(&doc));
        assert!(query("vlog 4k").matches(&doc));
        assert!(!query("beach mountain").matches(&doc));
        assert!(!query("sun").matches(&doc), "whole words only");
        assert!(!VodQuery { status: Some(VodStatus::Ready), ..query("") }.matches(&doc));
        assert!(!VodQuery { kind: Some(VodKind::Recording), ..query("") }.matches(&doc));
    }
}
