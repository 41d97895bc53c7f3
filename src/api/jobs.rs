//! Media jobs over HTTP, seed 004's MediaFlow API: submit (`POST /jobs`, or `/process`), follow
//! (`GET /jobs/{id}`, or `/status/{id}`), download (`/jobs/{id}/download`, or `/download/{id}`),
//! list (`GET /jobs`, or `GET /process`) and cancel (`DELETE /jobs/{id}`).

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::live::rfc3339;
use super::vod::{field_stream, find_vod};
use super::{ApiError, AppState, parse_json, public_base, query_number, refuse_declared_over};
use crate::model::auth::Scope;
use crate::model::jobs::{Container, JobDoc, JobOperation, JobParams, JobStatus};
use crate::model::now_ms;

/// Jobs in a list when `limit` is not given, and at most.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;
/// Bytes of a multipart job's fields besides its file.
const MULTIPART_FIELDS_BYTES: u64 = 64 * 1024;

/// `POST /jobs`'s JSON body: an operation, its parameters, and one source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    /// Seed 004 calls it `method_name`.
    #[serde(alias = "method_name")]
    operation: JobOperation,
    #[serde(default)]
    params: JobParams,
    /// A video of the library.
    video_id: Option<String>,
    /// An object in the store (seed 004's `source`).
    #[serde(alias = "source")]
    source_key: Option<String>,
    /// Seed 004's container of `convert_format`.
    output_format: Option<Container>,
}

/// `POST /jobs` (or `/process`; a `publish` token): JSON naming a video (`video_id`) or a
/// stored object (`source_key`), or multipart with the `file`; 202 `queued`.
pub async fn submit(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    state.auth.require(request.headers(), Scope::Publish).await?;
    let headers = request.headers().clone();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let doc = if content_type.starts_with("multipart/form-data") {
        let limit = state.config.max_upload_bytes.saturating_add(MULTIPART_FIELDS_BYTES);
        refuse_declared_over(&headers, limit, "upload")?;
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?;
        multipart_job(&state, multipart).await?
    } else {
        let limit = state.config.max_json_bytes;
        refuse_declared_over(&headers, limit as u64, "JSON body")?;
        let body = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(format!("JSON body is over {limit} bytes")))?;
        let request: JobRequest = parse_json(&body, None)?;
        let params = with_output_format(request.params, request.output_format)?;
        let source_key = match (request.video_id, request.source_key) {
            (Some(video_id), None) => find_vod(&state, &video_id).await?.source_key,
            (None, Some(key)) => key,
            _ => return Err(ApiError::BadRequest("name one source: video_id, source_key, or a multipart file".into())),
        };
        let job_id = state.ingest.new_job_id();
        state.ingest.submit_job(job_id, request.operation, params, source_key).await?
    };
    Ok((StatusCode::ACCEPTED, Json(job_view(&state, &headers, &doc))).into_response())
}

/// Seed 004's `output_format` is `params.container`.
fn with_output_format(mut params: JobParams, output_format: Option<Container>) -> Result<JobParams, ApiError> {
    if output_format.is_some() && params.container.is_some() {
        return Err(ApiError::BadRequest("give output_format or params.container, not both".into()));
    }
    params.container = params.container.or(output_format);
    Ok(params)
}

/// Multipart fields `operation` (or `method_name`), `params` (JSON), `output_format`, and the
/// `file` (or `video`), streamed to the job's folder as it arrives.
async fn multipart_job(state: &AppState, mut multipart: Multipart) -> Result<JobDoc, ApiError> {
    let job_id = state.ingest.new_job_id();
    let (mut operation, mut params, mut output_format, mut stored) = (None, JobParams::default(), None, None);
    let result = async {
        while let Some(field) =
            multipart.next_field().await.map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {e}")))?
        {
            let name = field.name().unwrap_or_default().to_string();
            match name.as_str() {
                "operation" | "method_name" => operation = Some(parse_text::<JobOperation>(field, &name).await?),
                "output_format" => output_format = Some(parse_text::<Container>(field, &name).await?),
                "params" => {
                    let text = field.bytes().await.map_err(|e| ApiError::BadRequest(format!("invalid params: {e}")))?;
                    params = parse_json(&text, None)?;
                }
                "file" | "video" if stored.is_none() => {
                    let key = state.ingest.job_source_key(&job_id, field.file_name());
                    let (body, pump) = field_stream(field);
                    let (written, ()) = tokio::join!(state.ingest.store_source(&key, body), pump);
                    stored = Some(key);
                    written?;
                }
                other => return Err(ApiError::BadRequest(format!("unexpected multipart field {other:?}"))),
            }
        }
        let operation = operation.ok_or_else(|| ApiError::BadRequest("multipart body has no `operation`".into()))?;
        let source_key = stored.clone().ok_or_else(|| ApiError::BadRequest("multipart body has no `file`".into()))?;
        let params = with_output_format(params, output_format)?;
        Ok(state.ingest.submit_job(job_id.clone(), operation, params, source_key).await?)
    }
    .await;
    if let (Err(_), Some(key)) = (&result, &stored) {
        state.ingest.discard_source(key).await; // a refused job leaves nothing behind
    }
    result
}

/// A short multipart field read as the JSON string of an enum value.
async fn parse_text<T: serde::de::DeserializeOwned>(
    field: axum::extract::multipart::Field<'_>,
    name: &str,
) -> Result<T, ApiError> {
    let text = field.text().await.map_err(|e| ApiError::BadRequest(format!("invalid multipart field: {e}")))?;
    serde_json::from_value(json!(text.trim()))
        .map_err(|e| ApiError::BadRequest(format!("{name} {:?}: {e}", text.chars().take(64).collect::<String>())))
}

/// A job as the API shows it: its document, seed 004's field names, and its links.
fn job_view(state: &AppState, headers: &HeaderMap, doc: &JobDoc) -> Value {
    let mut view = serde_json::to_value(doc).unwrap_or_default();
    let base = public_base(state, headers);
    view["progress"] = json!(doc.progress_pct);
    view["created_at"] = json!(rfc3339(doc.created_at_ms / 1000));
    view["completed_at"] = json!(doc.completed_at_ms.map(|ms| rfc3339(ms / 1000)));
    view["output_path"] = json!(doc.output.as_ref().map(|o| o.key.clone()));
    view["status_url"] = json!(format!("{base}/jobs/{}", doc.job_id));
    if doc.status == JobStatus::Completed {
        let (url, expires) = state.signer.url(&base, &doc.job_id, &doc.output_file(), now_ms() / 1000);
        view["download_url"] = json!(url);
        view["download_expires_at"] = json!(rfc3339(expires));
    }
    view
}

async fn find_job(state: &AppState, job_id: &str) -> Result<JobDoc, ApiError> {
    crate::model::checks::validate_stream_id(job_id).map_err(|e| ApiError::NotFound(e.to_string()))?;
    state.backends.metadata.get_job(job_id).await?.ok_or_else(|| ApiError::NotFound(format!("no job {job_id:?}")))
}

/// `GET /jobs/{id}` (or `/status/{id}`; a `read` token): where the job stands.
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.auth.require(&headers, Scope::Read).await?;
    let doc = find_job(&state, &job_id).await?;
    Ok(Json(job_view(&state, &headers, &doc)))
}

/// `GET /jobs/{id}/download` (or `/download/{id}`; a `read` token): the output file, with
/// `Range` (on S3 a redirect to it); 409 until the job is `completed`.
pub async fn download(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    state.auth.require(request.headers(), Scope::Read).await?;
    let doc = find_job(&state, &job_id).await?;
    if doc.status != JobStatus::Completed {
        return Err(ApiError::Conflict(format!("job {job_id} is {}, not completed", doc.status.as_str())));
    }
    let file = doc.output_file();
    let name = file.rsplit('/').next().unwrap_or("output");
    super::play::serve_download(&state, &job_id, &file, name, request).await
}

/// `GET /jobs?limit=&skip=` parameters, as text: each is checked with a message of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<String>,
    skip: Option<String>,
}

/// `GET /jobs?limit=&skip=` (or `GET /process`; a `read` token): jobs newest first.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    state.auth.require(&headers, Scope::Read).await?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query_number("limit", params.limit, DEFAULT_LIMIT, 1..=MAX_LIMIT)?;
    let skip = query_number("skip", params.skip, 0, 0..=u64::from(u32::MAX))?;
    let (jobs, total) = state.backends.metadata.list_jobs(limit, skip).await?;
    let views: Vec<Value> = jobs.iter().map(|doc| job_view(&state, &headers, doc)).collect();
    Ok(Json(json!({ "jobs": views, "count": views.len(), "total": total, "limit": limit, "skip": skip })))
}

/// `DELETE /jobs/{id}` (a `publish` token): cancels a job that has not finished (FFmpeg is
/// stopped); 202 `cancelling`, 409 for a finished job.
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.require(&headers, Scope::Publish).await?;
    let doc = find_job(&state, &job_id).await?;
    if doc.status.is_final() {
        return Err(ApiError::Conflict(format!("job {job_id} is {} already", doc.status.as_str())));
    }
    state.ingest.cancel_job(&job_id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job_id, "status": "cancelling" }))).into_response())
}
