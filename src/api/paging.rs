//! The paged lists' query (`?limit=N&after=KEY`) and answer: a JSON array of
//! the page's records, in key order, and the next page's `after` in the
//! `Slum-Next-After` header when more records follow.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::wire::NEXT_AFTER;
use crate::fleet::validation::quoted;
use crate::{Error, Page, PageRequest, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};

/// The page asked for. A `limit` that is not a number is refused here, one
/// out of range and a malformed `after` by the library, each as a 422 naming
/// its field, before the database is read.
pub(super) fn page_request(
    limit: Option<String>,
    after: Option<String>,
) -> Result<PageRequest, Error> {
    let limit = match limit {
        None => DEFAULT_PAGE_LIMIT,
        Some(text) => text.trim().parse().map_err(|_| {
            Error::invalid(
                "limit",
                format!(
                    "must be a whole number from 1 to {MAX_PAGE_LIMIT}, not {}",
                    quoted(&text)
                ),
            )
        })?,
    };
    Ok(PageRequest { limit, after })
}

/// A page as the API answers it.
pub(super) fn paged<T: Serialize>(page: Page<T>) -> Response {
    let mut resp = Json(page.items).into_response();
    with_next(&mut resp, page.next);
    resp
}

/// Adds the next page's `after`, if any, to an answer.
pub(super) fn with_next(resp: &mut Response, next: Option<String>) {
    // Keys are validated domains, labels and `tenant:id`: always a valid value.
    if let Some(value) = next.and_then(|n| HeaderValue::try_from(n).ok()) {
        resp.headers_mut().insert(NEXT_AFTER, value);
    }
}
