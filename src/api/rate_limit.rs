//! Per-credential rate limits on the control plane (starting and ending streams, rotating
//! keys, tokens, uploads), so that one token or stream key cannot flood it: token buckets of
//! tower_governor, keyed by the credential a request carries.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use governor::clock::QuantaInstant;
use governor::middleware::NoOpMiddleware;
use tower_governor::GovernorError;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

use super::auth::{STREAM_KEY_HEADER, bearer};
use super::error::json_error;
use crate::model::auth::{sha256_hex, token_id};

pub type ControlPlaneLimit = tower_governor::GovernorLayer<CredentialKey, NoOpMiddleware<QuantaInstant>, Body>;

/// How often buckets back at full are dropped: keys come from outside, so the map is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The bucket of a request: its API token's id, its stream key's hash, or one bucket shared by
/// every request without a well-formed credential.
#[derive(Clone, Debug)]
pub struct CredentialKey;

impl KeyExtractor for CredentialKey {
    type Key = String;

    fn extract<T>(&self, request: &Request<T>) -> Result<String, GovernorError> {
        let headers = request.headers();
        let presented = bearer(headers).or_else(|| headers.get(STREAM_KEY_HEADER).and_then(|v| v.to_str().ok()));
        Ok(match presented {
            Some(text) => match token_id(text) {
                Some(id) => format!("token {id}"),
                None => format!("key {}", &sha256_hex(text)[..16]),
            },
            None => "anonymous".to_string(),
        })
    }
}

/// `burst` requests at once per credential, then one every `1 / per_second` s; beyond that
/// 429 with `Retry-After`.
pub fn layer(per_second: u32, burst: u32) -> ControlPlaneLimit {
    let period = Duration::from_secs(1) / per_second.max(1);
    let config = GovernorConfigBuilder::default()
        .key_extractor(CredentialKey)
        .period(period)
        .burst_size(burst.max(1))
        .finish()
        .expect("a period and burst above zero");
    let limiter = config.limiter().clone();
    tokio::spawn(async move {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            prune.tick().await;
            limiter.retain_recent();
        }
    });
    tower_governor::GovernorLayer::new(config).error_handler(too_many)
}

fn too_many(error: GovernorError) -> Response<Body> {
    let wait_s = match &error {
        GovernorError::TooManyRequests { wait_time, .. } => *wait_time,
        _ => 1,
    };
    let message = format!("too many control-plane requests with this credential: retry in {wait_s} s");
    let mut response = json_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", &message);
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(wait_s.max(1)));
    response
}
