//! `/v1/tokens`: the management API's own tokens. A secret is shown once, in
//! the answer that creates it; only its hash is stored, and only the token's
//! public id is ever logged.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::extract::{ApiJson, ApiPath};
use super::wire::{ApiToken, CreatedToken, NewToken};
use super::ApiResult;
use crate::serve::AppState;

pub(super) async fn list_tokens(State(state): State<AppState>) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(state.db.list_api_tokens().await?))
}

pub(super) async fn create_token(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let (token, secret) = state.db.create_api_token(&body.name).await?;
    tracing::info!(token = %token.id, name = %token.name, "management API token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.db.revoke_api_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
