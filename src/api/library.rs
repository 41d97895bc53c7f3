//! The video library (seed 002's `/videos`): uploads and recordings listed a page at a time,
//! read, edited and deleted. Edits and deletions are events on `vod-chunks` that the dataflow
//! applies, so they reach every process of a cluster and survive a rebuild from the log.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::live::rfc3339;
use super::vod::{find_vod, playlist_type};
use super::{ApiError, AppState, parse_json, public_base, query_number};
use crate::model::auth::{PlaybackPolicy, Scope};
use crate::model::keys::{
    RECORDING_PLAYLIST_FILE, VOD_MANIFEST_FILE, VOD_POSTER_FILE, VOD_STORYBOARD_FILE, VOD_STORYBOARD_VTT_FILE,
};
use crate::model::library::{
    MAX_PAGE_SIZE, MAX_QUERY_WORDS, MAX_TITLE_CHARS, VodEdit, VodQuery, VodSort, normalize_tags, words,
};
use crate::model::{VodDoc, VodKind, VodStatus, now_ms, now_us};

/// Videos in a page when `page_size` is not given.
const DEFAULT_PAGE_SIZE: u64 = 20;
/// How long `PATCH` waits for its edit to be applied, and `DELETE` for the video to be gone,
/// before answering 202 (the change is logged, and happens).
const EDIT_WAIT: Duration = Duration::from_secs(5);
const DELETE_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// `GET /videos` parameters, as text: each is checked with a message of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    page: Option<String>,
    page_size: Option<String>,
    status: Option<String>,
    kind: Option<String>,
    q: Option<String>,
    sort: Option<String>,
}

impl ListParams {
    fn query(self) -> Result<(VodQuery, u64, u64), ApiError> {
        let page = query_number("page", self.page, 1, 1..=u64::MAX)?;
        let page_size = query_number("page_size", self.page_size, DEFAULT_PAGE_SIZE, 1..=MAX_PAGE_SIZE)?;
        let skip = (page - 1)
            .checked_mul(page_size)
            .ok_or_else(|| ApiError::BadRequest(format!("page {page} is past any library")))?;
        let status = match self.status {
            None => None,
            Some(text) => Some(VodStatus::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
                let known: Vec<_> = VodStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::BadRequest(format!("status {text:?} is not one of {}", known.join(", ")))
            })?),
        };
        let kind = match self.kind.as_deref() {
            None => None,
            Some("upload") => Some(VodKind::Upload),
            Some("recording") => Some(VodKind::Recording),
            Some(other) => return Err(ApiError::BadRequest(format!("kind {other:?} is not upload or recording"))),
        };
        let q = self.q.unwrap_or_default();
        if q.chars().count() > MAX_TITLE_CHARS {
            return Err(ApiError::BadRequest(format!("q is longer than {MAX_TITLE_CHARS} characters")));
        }
        let mut words: Vec<String> = words(&q).collect();
        words.sort_unstable();
        words.dedup();
        if words.len() > MAX_QUERY_WORDS {
            return Err(ApiError::BadRequest(format!("q has more than {MAX_QUERY_WORDS} words")));
        }
        let sort = match self.sort.as_deref() {
            None | Some("created_desc") => VodSort::CreatedDesc,
            Some("created_asc") => VodSort::CreatedAsc,
            Some(other) => {
                return Err(ApiError::BadRequest(format!("sort {other:?} is not created_desc or created_asc")));
            }
        };
        Ok((VodQuery { status, kind, words, sort, skip, limit: page_size }, page, page_size))
    }
}

/// `GET /videos?page=&page_size=&status=&kind=&q=&sort=` (a `read` token): a page of the
/// library, newest first unless `sort=created_asc`, with the count of every match.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    state.auth.require(&headers, Scope::Read).await?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (query, page, page_size) = params.query()?;
    let (docs, total) = state.backends.metadata.list_vods(&query).await?;
    let links = Links::new(&state, &headers);
    let videos: Vec<Value> = docs.iter().map(|doc| summary(doc, &links)).collect();
    Ok(Json(json!({
        "videos": videos,
        "total": total,
        "page": page,
        "page_size": page_size,
        "pages": total.div_ceil(page_size),
    })))
}

/// `GET /videos/{id}`, also `GET /vod/{id}/metadata` (a `read` token): the video's document,
/// with signed links once ready.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.auth.require(&headers, Scope::Read).await?;
    let doc = find_vod(&state, &stream_id).await?;
    Ok(Json(document(&doc, &Links::new(&state, &headers))))
}

/// `PATCH /videos/{id}` body: the fields to change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    title: Option<String>,
    description: Option<String>,
    tags: Option<Vec<String>>,
    playback_policy: Option<PlaybackPolicy>,
}

/// `PATCH /videos/{id}` `{"title"?, "description"?, "tags"?, "playback_policy"?}` (a
/// `publish` token): 200 with the edited document once applied, 202 if that takes longer.
pub async fn edit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Scope::Publish).await?;
    let body: EditBody = parse_json(&body, None)?;
    let doc = find_vod(&state, &stream_id).await?;
    if doc.status == VodStatus::Deleting {
        return Err(ApiError::Conflict(format!("video {stream_id} is being deleted")));
    }
    let mut edit = VodEdit::new(&stream_id, now_us());
    edit.title = body.title;
    edit.description = body.description;
    edit.tags = body.tags.map(normalize_tags);
    edit.playback_policy = body.playback_policy;
    edit.validate()?; // 400 here; the write path's own check would answer 422
    state.ingest.edit_video(&edit).await?;
    let applied =
        wait_for(&state, &stream_id, EDIT_WAIT, |doc| doc.is_none_or(|d| d.edited_at_us >= edit.at_us)).await?;
    match applied {
        Some(Some(doc)) => Ok(Json(document(&doc, &Links::new(&state, &headers))).into_response()),
        _ => Ok(accepted(&stream_id, "editing")),
    }
}

/// `DELETE /videos/{id}` (a `publish` token): every object and the document go, and work
/// under way for it stops. 204 once gone, 202 `deleting` if that takes longer; again on a
/// video being deleted waits for the same deletion.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Scope::Publish).await?;
    let doc = find_vod(&state, &stream_id).await?;
    if doc.status != VodStatus::Deleting {
        state.ingest.delete_video(&stream_id).await?;
    }
    match wait_for(&state, &stream_id, DELETE_WAIT, |doc| doc.is_none()).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Ok(accepted(&stream_id, "deleting")),
    }
}

fn accepted(stream_id: &str, status: &str) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "stream_id": stream_id, "status": status }))).into_response()
}

/// The video's document once `done` holds for it (`None` when it is gone), or `None` after
/// `within`.
async fn wait_for(
    state: &AppState,
    stream_id: &str,
    within: Duration,
    done: impl Fn(Option<&VodDoc>) -> bool,
) -> Result<Option<Option<VodDoc>>, ApiError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let doc = state.backends.metadata.get_vod(stream_id).await?;
        if done(doc.as_ref()) {
            return Ok(Some(doc));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Signed links of a video's playback folder, as of this request.
struct Links<'a> {
    state: &'a AppState,
    base: String,
    now_s: u64,
}

impl Links<'_> {
    fn new<'a>(state: &'a AppState, headers: &HeaderMap) -> Links<'a> {
        Links { state, base: public_base(state, headers), now_s: now_ms() / 1000 }
    }

    /// `manifest_url`, `poster_url` and their expiry once the video plays (with `playlist_type`:
    /// `event` while its renditions grow, `vod` once ready); the storyboard once it is ready.
    fn of(&self, doc: &VodDoc) -> Value {
        let url = |file| self.state.signer.url(&self.base, &doc.stream_id, file, self.now_s).0;
        let mut links = json!({});
        // A recording plays as recorded while its ladder is made.
        if doc.kind == VodKind::Recording
            && matches!(doc.status, VodStatus::Processing | VodStatus::Transcoding | VodStatus::Ready)
        {
            links["recording_url"] = url(RECORDING_PLAYLIST_FILE).into();
        }
        let Some(playlist_type) = playlist_type(doc) else { return links };
        let (manifest, expires) = self.state.signer.url(&self.base, &doc.stream_id, VOD_MANIFEST_FILE, self.now_s);
        links["manifest_url"] = manifest.into();
        links["expires_at"] = rfc3339(expires).into();
        links["playlist_type"] = playlist_type.into();
        if doc.poster_path.is_some() {
            links["poster_url"] = url(VOD_POSTER_FILE).into();
        }
        if doc.storyboard.is_some() && doc.status == VodStatus::Ready {
            links["storyboard_url"] = url(VOD_STORYBOARD_VTT_FILE).into();
            links["storyboard_sprite_url"] = url(VOD_STORYBOARD_FILE).into();
        }
        links
    }
}

/// A video in a list: what a library page shows.
fn summary(doc: &VodDoc, links: &Links) -> Value {
    let source = doc.source.as_ref();
    let mut summary = json!({
        "stream_id": doc.stream_id,
        "kind": doc.kind,
        "title": doc.title,
        "description": doc.description,
        "tags": doc.tags,
        "status": doc.status,
        "progress_pct": doc.progress_pct,
        "playback_policy": doc.playback_policy,
        "created_at": rfc3339(doc.created_at_ms / 1000),
        "created_at_ms": doc.created_at_ms,
        "duration_s": source.map(|s| s.duration_s),
        "width": source.map(|s| s.width),
        "height": source.map(|s| s.height),
        "variants_generated": doc.variants_generated,
    });
    merge(&mut summary, links.of(doc));
    summary
}

/// A video's whole document, with its links.
fn document(doc: &VodDoc, links: &Links) -> Value {
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    merge(&mut value, links.of(doc));
    value
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}
