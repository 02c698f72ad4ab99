//! `/v1/events`: the fleet's events (health transitions, spawns, stops,
//! moves, drains, failovers, reconcile actions, token and certificate
//! changes), a page at a time by id: the newest by default, or those after
//! an id, which is how a follower polls (`slum events -f`).

use axum::extract::State;
use axum::response::Response;

use super::extract::ApiQuery;
use super::paging::paged;
use super::wire::{parse_since, EventsQuery};
use super::ApiResult;
use crate::events::{EventQuery, DEFAULT_EVENT_LIMIT};
use crate::fleet::validation::quoted;
use crate::serve::AppState;
use crate::Error;

/// A page of events, oldest first; the next page's `after` in the
/// `Slum-Next-After` header when more follow.
pub(super) async fn list_events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let number = |field: &str, text: &str| {
        text.trim().parse::<i64>().map_err(|_| {
            Error::invalid(
                field,
                format!("must be a whole number, not {}", quoted(text)),
            )
        })
    };
    let limit = match &query.limit {
        None => DEFAULT_EVENT_LIMIT,
        Some(text) => usize::try_from(number("limit", text)?).unwrap_or(0),
    };
    let after = query
        .after
        .as_deref()
        .map(|text| number("after", text))
        .transpose()?;
    let since = query
        .since
        .as_deref()
        .map(|text| parse_since(text, chrono::Utc::now()).map_err(|e| Error::invalid("since", e)))
        .transpose()?;
    // A tenant by one of its domains is the tenant of that domain.
    let tenant = match query.tenant {
        Some(t) if t.contains('.') => Some(state.db.get_tenant_by_domain(&t).await?.name),
        other => other,
    };
    let page = state
        .db
        .events(&EventQuery {
            server: query.server,
            tenant,
            after,
            since,
            limit,
        })
        .await?;
    Ok(paged(page))
}
