//! The API's one error type and its single mapping onto a JSON body and status code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use thiserror::Error;

use crate::api::server::BodyStalled;
use crate::ingest::IngestError;
use crate::log::LogError;
use crate::model::ValidationError;
use crate::model::pushed_playlist::PushedPlaylistError;
use crate::storage::metadata::MetadataError;
use crate::storage::object::StoreError;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No credentials, or ones segflow does not know: 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client stopped sending its request body.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    /// The disk (or quota) is full.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::InsufficientStorage(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Maps a rejection status from an axum extractor onto the matching variant.
    pub fn from_status(status: StatusCode, message: String) -> ApiError {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(message),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(message),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(message),
            s if s.is_server_error() => ApiError::Internal(message),
            _ => ApiError::BadRequest(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = json_error(status, code, &self.to_string());
        if status == StatusCode::UNAUTHORIZED {
            let challenge = axum::http::HeaderValue::from_static("Bearer realm=\"segflow\"");
            response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// The one error body shape: `{"error": {"code", "message"}}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response()
}

/// Middleware: errors produced outside the handlers (extractor rejections, unknown routes,
/// wrong methods) get the same JSON body as [`ApiError`], keeping their status.
pub async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let sent_a_body = has_body(request.headers());
    let mut response = next.run(request).await;
    let status = response.status();
    if sent_a_body && (status.is_client_error() || status.is_server_error()) {
        // A refused body may be left unread, and the connection cannot carry another request:
        // say so, or a client reusing it races the close (hyper's `IncompleteMessage`).
        response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error");
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let code = reason.to_ascii_lowercase().replace(' ', "_");
    let mut json = json_error(status, &code, if message.is_empty() { reason } else { &message });
    // The answer's other headers stay: a 416's `Content-Range`, a 405's `Allow`.
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    for (name, value) in &parts.headers {
        json.headers_mut().append(name, value.clone());
    }
    json
}

/// Whether a request carries a body: a non-zero `Content-Length`, or a chunked one.
fn has_body(headers: &axum::http::HeaderMap) -> bool {
    let length = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    headers.contains_key(axum::http::header::TRANSFER_ENCODING) || length.is_some_and(|v| v.trim() != "0")
}

/// Whether an error, or one it wraps, is a full disk or quota: answered 507, not 500.
fn storage_full(mut error: &(dyn std::error::Error + 'static)) -> bool {
    /// `ENOSPC`, for an error made from a raw OS code on a target that does not name it.
    const ENOSPC: i32 = 28;
    loop {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{QuotaExceeded, StorageFull};
            if matches!(io.kind(), StorageFull | QuotaExceeded) || io.raw_os_error() == Some(ENOSPC) {
                return true;
            }
            // An `io::Error` wrapping another error hides it from `source()`.
            if let Some(inner) = io.get_ref() {
                error = inner;
                continue;
            }
        }
        match error.source() {
            Some(source) => error = source,
            None => return false,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // An upload's own I/O errors are the client's stream breaking, never the disk.
        if !matches!(e, StoreError::Upload(_)) && storage_full(&e) {
            return ApiError::InsufficientStorage(e.to_string());
        }
        match e {
            StoreError::TooLarge(_) => ApiError::PayloadTooLarge(e.to_string()),
            StoreError::Exists(_) => ApiError::Conflict(e.to_string()),
            StoreError::Empty => ApiError::BadRequest("segment is empty".into()),
            StoreError::Upload(io) if BodyStalled::caused(&io) => ApiError::RequestTimeout(io.to_string()),
            StoreError::InvalidKey(_) | StoreError::Upload(_) => ApiError::BadRequest(e.to_string()),
            StoreError::NotFound(_) | StoreError::Io { .. } | StoreError::Task { .. } => {
                ApiError::Internal(e.to_string())
            }
            StoreError::Backend { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let message = e.to_string();
        match e {
            IngestError::Invalid(
                ValidationError::OutOfRange { .. }
                | ValidationError::ClockSkew { .. }
                | ValidationError::TooLong { .. }
                | ValidationError::Parameter(_),
            ) => ApiError::Unprocessable(message),
            IngestError::Playlist(PushedPlaylistError::Invalid(invalid)) => IngestError::Invalid(invalid).into(),
            IngestError::Invalid(invalid) => ApiError::Invalid(invalid),
            IngestError::NotAChunk
            | IngestError::OtherStream(_)
            | IngestError::Playlist(PushedPlaylistError::Malformed(_))
            | IngestError::EmptyUpload => ApiError::BadRequest(message),
            IngestError::NoStream(_) => ApiError::NotFound(message),
            IngestError::Ended(_) | IngestError::AlreadyAccepted { .. } | IngestError::VideoExists(_) => {
                ApiError::Conflict(message)
            }
            IngestError::InvalidChunk(_) | IngestError::OutOfRange(_) | IngestError::NoObject(_) => {
                ApiError::Unprocessable(message)
            }
            IngestError::EndNotWritten(..) => ApiError::Unavailable(message),
            IngestError::Encode(_) => ApiError::Internal(message),
            IngestError::Store(e) => e.into(),
            IngestError::Log(e) => e.into(),
            IngestError::Metadata(e) => e.into(),
        }
    }
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> Self {
        let full = match &e {
            // redb's errors name no source.
            MetadataError::Embedded(error) => matches!(&**error, redb::Error::Io(io) if storage_full(io)),
            other => storage_full(other),
        };
        if full { ApiError::InsufficientStorage(e.to_string()) } else { ApiError::Internal(e.to_string()) }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        if storage_full(&e) {
            return ApiError::InsufficientStorage(e.to_string());
        }
        match e {
            LogError::TooLarge(_) => ApiError::PayloadTooLarge(e.to_string()),
            LogError::Closed => ApiError::Unavailable("the engine is shutting down".into()),
            LogError::Io { .. } | LogError::Task(_) | LogError::Damaged(_) => ApiError::Internal(e.to_string()),
            LogError::Kafka { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(error: impl Into<ApiError>) -> StatusCode {
        error.into().into_response().status()
    }

    #[tokio::test]
    async fn the_stores_own_failures_are_5xx_and_the_clients_4xx() {
        let panicked = tokio::spawn(async { panic!("a blocking store task panicked") }).await.unwrap_err();
        let key = || "live-streams/s/chunks/0.ts".to_string();
        assert_eq!(status(StoreError::Task { key: key(), source: panicked }), StatusCode::INTERNAL_SERVER_ERROR);
        let disk = std::io::Error::other("no space left on device");
        assert_eq!(status(StoreError::Io { key: key(), source: disk }), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(StoreError::NotFound(key())), StatusCode::INTERNAL_SERVER_ERROR);
        let down = StoreError::Backend { backend: "S3", key: key(), message: "refused".into(), source: None };
        assert_eq!(status(down), StatusCode::SERVICE_UNAVAILABLE);
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(status(StoreError::Upload(broken)), StatusCode::BAD_REQUEST);
        assert_eq!(status(StoreError::TooLarge(5)), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(StoreError::Exists(key())), StatusCode::CONFLICT);
        assert_eq!(status(LogError::Closed), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn a_full_disk_is_507() {
        use std::io::{Error, ErrorKind};
        let full = || Error::from_raw_os_error(28); // ENOSPC
        let key = || "vod-raw/v/source.mp4".to_string();
        let cases: Vec<Error> = vec![
            full(),
            Error::from(ErrorKind::StorageFull),
            Error::from(ErrorKind::QuotaExceeded),
            Error::other(full()), // wrapped, as a blocking task's error is
        ];
        for source in cases {
            let shown = source.to_string();
            assert_eq!(status(StoreError::Io { key: key(), source }), StatusCode::INSUFFICIENT_STORAGE, "{shown}");
        }
        let log = LogError::Io { path: "log/live-chunks/0.log".into(), source: full() };
        assert_eq!(status(log), StatusCode::INSUFFICIENT_STORAGE);
        let redb = MetadataError::Embedded(Box::new(redb::Error::Io(full())));
        assert_eq!(status(redb), StatusCode::INSUFFICIENT_STORAGE);
        let mongo = MetadataError::Mongo { message: "write failed".into(), source: Some(Box::new(full())) };
        assert_eq!(status(mongo), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(
            status(IngestError::Store(StoreError::Io { key: key(), source: full() })),
            StatusCode::INSUFFICIENT_STORAGE
        );
        // Other I/O failures stay 500; a client's broken upload stays 400.
        let denied = Error::from(ErrorKind::PermissionDenied);
        assert_eq!(status(StoreError::Io { key: key(), source: denied }), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            status(MetadataError::Embedded(Box::new(redb::Error::PreviousIo))),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(status(StoreError::Upload(full())), StatusCode::BAD_REQUEST);
        let response = ApiError::from(StoreError::Io { key: key(), source: full() }).into_response();
        assert_eq!(response.headers()["content-type"], "application/json");
    }

    #[tokio::test]
    async fn an_error_to_a_request_with_a_body_closes_the_connection() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/", axum::routing::post(|| async { StatusCode::PAYLOAD_TOO_LARGE }).get(|| async { "ok" }))
            .route("/fine", axum::routing::post(|| async { "ok" }))
            .layer(axum::middleware::from_fn(json_errors));
        let send = |method: &str, path: &str, length: &str| {
            let request = axum::http::Request::builder().method(method).uri(path).header("content-length", length);
            app.clone().oneshot(request.body(axum::body::Body::from(vec![0u8; length.parse().unwrap()])).unwrap())
        };
        let refused = send("POST", "/", "10").await.unwrap();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(refused.headers()["connection"], "close");
        assert_eq!(refused.headers()["content-type"], "application/json");
        for (method, path, length) in [("POST", "/fine", "10"), ("GET", "/", "0")] {
            let kept = send(method, path, length).await.unwrap();
            assert!(kept.headers().get("connection").is_none(), "{method} {path}");
        }
        let unknown = send("GET", "/nowhere", "0").await.unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert!(unknown.headers().get("connection").is_none(), "no body sent, the connection stays");
    }
}
