//! The HTTP API: control plane (streams), data plane (segment ingest), signed playback,
//! health and metrics, on one axum router.

pub mod auth;
mod error;
mod ingest;
mod jobs;
mod library;
mod live;
mod play;
mod quality;
mod range;
mod rate_limit;
pub mod server;
pub mod signed;
pub mod tokens;
mod vod;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use http_body_util::LengthLimitError;
use serde::Deserialize;
use serde_json::json;

pub use error::ApiError;

use crate::api::server::BodyStalled;
use crate::backends::Backends;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use signed::UrlSigner;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub backends: Backends,
    pub ingest: Arc<Ingest>,
    pub signer: Arc<UrlSigner>,
    pub auth: Arc<auth::Auth>,
    pub metrics: Arc<Metrics>,
    pub cluster: Arc<crate::dataflow::cluster::Cluster>,
}

pub fn router(state: AppState) -> Router {
    let json_limit = state.config.max_json_bytes;
    let limit = rate_limit::layer(state.config.control_plane_rate_per_s, state.config.control_plane_burst);
    // A job's body may carry its file: no body limit here, a JSON body stops at `max_json_bytes`.
    let submit_job =
        post(jobs::submit).layer::<_, std::convert::Infallible>(limit.clone()).layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/streams/start", post(live::start).layer(limit.clone()))
        .route("/streams/end", post(live::end).layer(limit.clone()))
        .route("/streams/{stream_id}/metadata", get(live::metadata))
        .route("/streams/{stream_id}/live", get(live::live_url))
        .route("/streams/{stream_id}/chunks", post(live::post_chunk).get(live::list_chunks))
        .route("/streams/{stream_id}/key", post(live::rotate_key).layer(limit.clone()))
        .route("/tokens", post(tokens::create).get(tokens::list).layer(limit.clone()))
        .route("/tokens/{token_id}", axum::routing::delete(tokens::revoke).layer(limit.clone()))
        .route("/dead-letters", get(live::dead_letters))
        .route("/vod/{stream_id}/metadata", get(library::get))
        .route("/vod/{stream_id}/manifest", get(vod::manifest))
        .route("/videos", get(library::list))
        .route("/videos/{stream_id}/stream", get(quality::stream))
        .route("/videos/{stream_id}/download", get(quality::download))
        .route(
            "/videos/{stream_id}",
            get(library::get).merge(patch(library::edit).delete(library::delete).layer(limit.clone())),
        )
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(middleware::from_fn_with_state(json_limit, read_json_body))
        .route("/ingest/{stream_id}/{file}", put(ingest::put_file).layer(DefaultBodyLimit::disable()))
        .route(
            "/ingest/{stream_id}/{stream_key}/{file}",
            put(ingest::put_file_with_key).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/vod/upload",
            post(vod::upload).layer::<_, std::convert::Infallible>(limit.clone()).layer(DefaultBodyLimit::disable()),
        )
        .route("/jobs", get(jobs::list).merge(submit_job.clone()))
        .route("/process", get(jobs::list).merge(submit_job))
        .route("/jobs/{job_id}", get(jobs::status).merge(axum::routing::delete(jobs::cancel).layer(limit)))
        .route("/status/{job_id}", get(jobs::status))
        .route("/jobs/{job_id}/download", get(jobs::download))
        .route("/download/{job_id}", get(jobs::download))
        .route("/play/{*signed_path}", get(play::play))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), run_to_end_and_count))
        .with_state(state)
}

/// Middleware: every request runs to its end in a task of its own, and is counted with its
/// status then. FFmpeg closes the connection right after a segment's last byte without
/// waiting for the answer; the upload must still be stored, its event logged and counted.
async fn run_to_end_and_count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched".into(), |p| p.as_str().to_string());
    let count = move |response: &Response| {
        let status = response.status();
        state.metrics.api_requests_total.with_label_values(&[&method, &route, status.as_str()]).inc();
    };
    let counted = count.clone();
    let handled = tokio::spawn(async move {
        let response = next.run(request).await;
        counted(&response);
        response
    });
    handled.await.unwrap_or_else(|e| {
        let response = ApiError::Internal(format!("the request's task failed: {e}")).into_response();
        count(&response);
        response
    })
}

/// `GET /health`: each backend's kind and state, and the problems that keep segflow from
/// working (disk almost full, a log partition that cannot be read); 503 while a backend is
/// down or there is a problem.
async fn health(State(state): State<AppState>) -> Response {
    let Backends { log, store, metadata } = &state.backends;
    let (log_state, store_state, metadata_state) =
        tokio::join!(check(log.health()), check(store.health()), check(metadata.health()));
    let backends = json!({
        "event_log": backend_state(log.kind(), log_state),
        "object_store": backend_state(store.kind(), store_state),
        "metadata": backend_state(metadata.kind(), metadata_state),
    });
    let mut problems = log.problems();
    problems.extend(disk_space(&state.config));
    let up = backends.as_object().expect("an object").values().all(|b| b["state"] == "up");
    let ok = up && problems.is_empty();
    let status = if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "workers": state.config.workers,
        "cluster": state.cluster.health(),
        "backends": backends,
        "problems": problems,
    });
    (status, axum::Json(body)).into_response()
}

/// The data dir's file system almost full, as a problem: free space below the configured
/// bytes or share of its size.
fn disk_space(config: &Config) -> Option<String> {
    let dir = config.data_dir.display();
    let stats = match rustix::fs::statvfs(&config.data_dir) {
        Ok(stats) => stats,
        Err(e) => return Some(format!("the free space of data dir {dir} cannot be read: {e}")),
    };
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    let size = stats.f_blocks.saturating_mul(stats.f_frsize);
    let percent = if size == 0 { 100.0 } else { free as f64 * 100.0 / size as f64 };
    (free < config.min_free_disk_bytes || percent < config.min_free_disk_percent).then(|| {
        format!(
            "disk almost full: {free} bytes ({percent:.1}%) free on the file system of data dir {dir}, below \
             min_free_disk_bytes {} or min_free_disk_percent {}",
            config.min_free_disk_bytes, config.min_free_disk_percent
        )
    })
}

/// A backend's health check, bounded so `/health` answers even while one hangs; the error,
/// if any.
async fn check<E: std::fmt::Display>(health: impl std::future::Future<Output = Result<(), E>>) -> Option<String> {
    match tokio::time::timeout(std::time::Duration::from_secs(5), health).await {
        Ok(result) => result.err().map(|e| e.to_string()),
        Err(_) => Some("no answer within 5 s".into()),
    }
}

fn backend_state(kind: &str, error: Option<String>) -> serde_json::Value {
    match error {
        None => json!({ "kind": kind, "state": "up" }),
        Some(error) => json!({ "kind": kind, "state": "down", "error": error }),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// Middleware of the JSON routes: reads the body before the handler, 413 at once for one
/// declared over the limit (or as soon as it is), 408 for one that stops coming.
async fn read_json_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    if let Err(e) = refuse_declared_over(request.headers(), limit as u64, "JSON body") {
        return e.into_response();
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(e) => {
            let e = e.into_inner();
            let e: &(dyn std::error::Error + 'static) = e.as_ref();
            let error = if BodyStalled::caused(e) {
                ApiError::RequestTimeout(e.to_string())
            } else if std::iter::successors(Some(e), |e| e.source()).any(|e| e.is::<LengthLimitError>()) {
                ApiError::PayloadTooLarge(format!("JSON body is over the {limit} byte limit"))
            } else {
                ApiError::BadRequest(format!("the request body could not be read: {e}"))
            };
            error.into_response()
        }
    }
}

/// 413 before any of the body is read, when its declared `Content-Length` is over `limit`.
fn refuse_declared_over(headers: &HeaderMap, limit: u64, what: &str) -> Result<(), ApiError> {
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(declared) if declared > limit => {
            Err(ApiError::PayloadTooLarge(format!("{what} of {declared} bytes is over the {limit} byte limit")))
        }
        _ => Ok(()),
    }
}

/// A whole number query parameter in `range`, `default` when absent; else a 400 naming it.
fn query_number(
    name: &str,
    text: Option<String>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let Some(text) = text else { return Ok(default) };
    match text.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ if *range.end() == u64::MAX => {
            Err(ApiError::BadRequest(format!("{name} {text:?} is not a whole number from {}", range.start())))
        }
        _ => Err(ApiError::BadRequest(format!(
            "{name} {text:?} is not a whole number from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

/// Parses a JSON body; an empty body means `T::default()` where `T` allows it.
fn parse_json<'a, T: Deserialize<'a>>(body: &'a Bytes, empty: Option<T>) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return empty.ok_or_else(|| ApiError::BadRequest("request body is empty; JSON expected".into()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Base URL for links in responses: the configured public URL, or the request's host.
fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}
