//! The API's extractors: a JSON body, path parameters and query parameters,
//! like axum's own but rejected in the API's error shape (a 400 `bad_request`
//! naming the problem, 413 `too_large`), never as axum's plain-text answers.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{request::Parts, StatusCode};
use axum::response::Response;
use axum::{async_trait, Json};
use serde::de::DeserializeOwned;

use super::rejected;

/// A JSON object body. Unlike `axum::Json`, a body that does not parse (or
/// names a field the request does not have) is a 400 in the API's error shape,
/// and the Content-Type is not insisted on (`curl -d` sends a form type).
pub(super) struct ApiJson<T>(pub T);

#[async_trait]
impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| rejected(e.status(), e.body_text()))?;
        // `from_bytes` puts the path of the offending field in its message.
        let Json(value) =
            Json::<T>::from_bytes(&bytes).map_err(|e| rejected(e.status(), e.body_text()))?;
        // serde also reads a struct from an array of its fields in order
        // (`["west"]`); every body of this API is an object, so that is a mistake.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(rejected(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object".to_owned(),
            ));
        }
        Ok(ApiJson(value))
    }
}

/// Path parameters, rejected as JSON.
pub(super) struct ApiPath<T>(pub T);

#[async_trait]
impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| rejected(e.status(), e.body_text()))
    }
}

/// Query parameters, rejected as JSON.
pub(super) struct ApiQuery<T>(pub T);

#[async_trait]
impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| rejected(e.status(), e.body_text()))
    }
}
