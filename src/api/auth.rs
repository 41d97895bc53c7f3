//! Who is asking: API tokens (`Authorization: Bearer sft_…`) checked against their hashes,
//! with their scopes, and stream keys (`sk_…`) for encoders; each handler says what it needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use super::ApiError;
use crate::model::auth::{self, NewSecret, PlaybackPolicy, STREAM_KEY_PREFIX, Scope, TokenDoc};
use crate::model::{LiveStreamDoc, now_ms};
use crate::storage::metadata::{MetaWrite, MetadataError, MetadataStore};

/// How long a token read from the metadata store is trusted before it is read again, by a
/// process of its own: a revocation by `segflow token revoke` takes effect within this. A
/// cluster reads every time, so that a revocation through one process holds on all at once.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

/// The header an encoder that cannot send `Authorization` (FFmpeg's `-headers`) may use.
pub const STREAM_KEY_HEADER: &str = "x-stream-key";

pub struct Auth {
    /// False only with `--no-auth` (loopback only): every request is let through.
    enabled: bool,
    metadata: Arc<dyn MetadataStore>,
    cache: Mutex<HashMap<String, (Option<TokenDoc>, Instant)>>,
    /// [`TOKEN_CACHE_TTL`], or zero: no cache.
    cache_ttl: Duration,
}

impl Auth {
    pub fn new(enabled: bool, metadata: Arc<dyn MetadataStore>, cache_ttl: Duration) -> Auth {
        Auth { enabled, metadata, cache: Mutex::default(), cache_ttl }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Refused unless the request carries a token granting `scope`: 401 without a known
    /// token, 403 with one that lacks the scope.
    pub async fn require(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(presented) = bearer(headers) else {
            return Err(ApiError::Unauthorized(format!(
                "this needs an API token with the {} scope: send Authorization: Bearer <token>",
                scope.as_str()
            )));
        };
        let token = self
            .token(presented)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the API token is not known to segflow, or was revoked".into()))?;
        if token.grants(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("token {} lacks the {} scope", token.token_id, scope.as_str())))
        }
    }

    /// Refused unless the request carries the stream's key (in the URL path, `X-Stream-Key`,
    /// or `Authorization: Bearer`), or a token granting `publish`.
    pub async fn stream_access(
        &self,
        headers: &HeaderMap,
        path_key: Option<&str>,
        stream: &LiveStreamDoc,
    ) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let header_key = headers.get(STREAM_KEY_HEADER).and_then(|v| v.to_str().ok());
        let (bearer_key, bearer_token) = match bearer(headers) {
            Some(b) if b.starts_with(STREAM_KEY_PREFIX) => (Some(b), false),
            other => (None, other.is_some()),
        };
        let presented: Vec<&str> = [path_key, header_key, bearer_key].into_iter().flatten().collect();
        if let Some(expected) = &stream.stream_key_sha256
            && presented.iter().any(|key| auth::matches(key, expected))
        {
            return Ok(());
        }
        if presented.is_empty() || bearer_token {
            return self.require(headers, Scope::Publish).await.map_err(|e| match e {
                ApiError::Unauthorized(_) => ApiError::Unauthorized(format!(
                    "stream {} needs its stream key (in the ingest URL, X-Stream-Key or Authorization: Bearer) \
                     or a token with the publish scope",
                    stream.stream_id
                )),
                other => other,
            });
        }
        Err(ApiError::Forbidden(format!("wrong stream key for stream {}", stream.stream_id)))
    }

    /// Refused unless a playback URL may be minted for the caller: anyone for `public`, a
    /// `read` token for `signed`.
    pub async fn require_to_play(&self, headers: &HeaderMap, policy: PlaybackPolicy) -> Result<(), ApiError> {
        match policy {
            PlaybackPolicy::Public => Ok(()),
            PlaybackPolicy::Signed => self.require(headers, Scope::Read).await,
        }
    }

    /// The token `presented` is, if segflow knows it and it is not revoked.
    async fn token(&self, presented: &str) -> Result<Option<TokenDoc>, ApiError> {
        let Some(id) = auth::token_id(presented) else { return Ok(None) };
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        let doc = match cached {
            Some((doc, at)) if at.elapsed() < self.cache_ttl => doc,
            _ => {
                let doc = self.metadata.get_token(id).await?;
                if !self.cache_ttl.is_zero() {
                    let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    if cache.len() > 10_000 {
                        cache.clear(); // bounded: ids from outside are made up at will
                    }
                    cache.insert(id.to_string(), (doc.clone(), Instant::now()));
                }
                doc
            }
        };
        Ok(doc.filter(|doc| doc.revoked_at_ms.is_none() && auth::matches(presented, &doc.sha256)))
    }

    /// Forgets a token at once in this process (after a revocation).
    pub fn forget(&self, token_id: &str) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(token_id);
    }
}

/// The `Authorization: Bearer` credential, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credential.trim())
}

/// Makes a token and stores its hash; returns the document and the token's text (shown once).
pub async fn create_token(
    metadata: &dyn MetadataStore,
    name: &str,
    scopes: Vec<Scope>,
) -> Result<(TokenDoc, String), MetadataError> {
    let (token_id, NewSecret { text, sha256 }) = auth::new_token();
    Ok((store_token(metadata, token_id, name, scopes, sha256).await?, text))
}

/// Stores a new token's document, made now.
async fn store_token(
    metadata: &dyn MetadataStore,
    token_id: String,
    name: &str,
    scopes: Vec<Scope>,
    sha256: String,
) -> Result<TokenDoc, MetadataError> {
    let doc =
        TokenDoc { token_id, name: name.to_string(), scopes, sha256, created_at_ms: now_ms(), revoked_at_ms: None };
    metadata.apply(Arc::new(vec![MetaWrite::Token(doc.clone())])).await?;
    Ok(doc)
}

/// Revokes a token (once: a second revocation keeps the first date); `None` if unknown.
pub async fn revoke_token(metadata: &dyn MetadataStore, token_id: &str) -> Result<Option<TokenDoc>, MetadataError> {
    let Some(mut doc) = metadata.get_token(token_id).await? else { return Ok(None) };
    if doc.revoked_at_ms.is_none() {
        doc.revoked_at_ms = Some(now_ms());
        metadata.apply(Arc::new(vec![MetaWrite::Token(doc.clone())])).await?;
    }
    Ok(Some(doc))
}

/// At start: adopts the configured admin token, or, when no token exists at all, makes an
/// admin token and returns its text to be shown once.
pub async fn bootstrap(metadata: &dyn MetadataStore, configured: Option<&str>) -> Result<Option<String>, AdoptError> {
    if let Some(text) = configured {
        adopt_token(metadata, text).await?;
        return Ok(None);
    }
    if !metadata.list_tokens().await?.is_empty() {
        return Ok(None);
    }
    let (doc, text) = create_token(metadata, "first start", vec![Scope::Admin]).await?;
    tracing::info!(token_id = doc.token_id, "no API token existed: made an admin token");
    Ok(Some(text))
}

/// Stores the hash of a token given in the configuration (`admin_token`), so it works.
pub async fn adopt_token(metadata: &dyn MetadataStore, text: &str) -> Result<TokenDoc, AdoptError> {
    let token_id = auth::token_id(text).ok_or(AdoptError::Malformed)?.to_string();
    match metadata.get_token(&token_id).await? {
        Some(doc) if doc.revoked_at_ms.is_some() => return Err(AdoptError::Revoked(token_id)),
        Some(doc) if auth::matches(text, &doc.sha256) => return Ok(doc),
        Some(_) => return Err(AdoptError::Taken(token_id)),
        None => {}
    }
    let name = "admin_token (configuration)";
    Ok(store_token(metadata, token_id, name, vec![Scope::Admin], auth::sha256_hex(text)).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("admin_token is not a segflow token (sft_<12 hex>_<64 hex>); make one with `segflow token create`")]
    Malformed,
    #[error("admin_token {0} was revoked: remove it from the configuration")]
    Revoked(String),
    #[error("another token has the id of admin_token ({0}): make a new one with `segflow token create`")]
    Taken(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}
