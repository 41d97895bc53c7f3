//! `/tokens`: API tokens made, listed and revoked by an admin; a token's text is shown once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{create_token, revoke_token};
use super::{ApiError, AppState, parse_json};
use crate::model::auth::{Scope, TokenDoc};

/// `POST /tokens`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    scopes: Vec<Scope>,
}

/// A token as the API shows it: never its hash.
pub fn token_view(doc: &TokenDoc) -> Value {
    json!({
        "token_id": doc.token_id,
        "name": doc.name,
        "scopes": doc.scopes,
        "created_at_ms": doc.created_at_ms,
        "revoked_at_ms": doc.revoked_at_ms,
    })
}

/// Refused unless the name is 1-64 characters and at least one scope is given.
pub fn check_request(name: &str, scopes: &[Scope]) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 64 {
        return Err(ApiError::Unprocessable("a token's name must be 1 to 64 characters".into()));
    }
    if scopes.is_empty() {
        return Err(ApiError::Unprocessable("a token needs at least one scope: admin, publish or read".into()));
    }
    Ok(())
}

/// `POST /tokens` `{"name", "scopes": ["admin"|"publish"|"read", …]}` -> 201 with the token.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.auth.require(&headers, Scope::Admin).await?;
    let request: CreateRequest = parse_json(&body, None)?;
    check_request(&request.name, &request.scopes)?;
    let (doc, token) = create_token(state.backends.metadata.as_ref(), &request.name, request.scopes).await?;
    let mut view = token_view(&doc);
    view["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /tokens`.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    state.auth.require(&headers, Scope::Admin).await?;
    let tokens = state.backends.metadata.list_tokens().await?;
    Ok(Json(json!({ "tokens": tokens.iter().map(token_view).collect::<Vec<_>>() })))
}

/// `DELETE /tokens/{id}`: revoked at once in this process (on a cluster, in all of them),
/// within [`super::auth::TOKEN_CACHE_TTL`] in another segflow on the same store.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.auth.require(&headers, Scope::Admin).await?;
    let doc = revoke_token(state.backends.metadata.as_ref(), &token_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no token {token_id:?}")))?;
    state.auth.forget(&token_id);
    Ok(Json(token_view(&doc)))
}
