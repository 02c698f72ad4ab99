//! `/v1/traffic`: this router's traffic of the last minute, from the figures
//! its threads keep in fixed memory (see `crate::traffic`): the busiest
//! tenants, one tenant's figures, and each server's. Nothing here reads the
//! database; several routers each answer for their own traffic.

use axum::extract::State;
use axum::Json;

use super::extract::{ApiPath, ApiQuery};
use super::wire::{ServersTraffic, TenantTraffic, TopQuery, TrafficTop};
use super::ApiResult;
use crate::fleet::validation::quoted;
use crate::serve::AppState;
use crate::Error;

/// Tenants `GET /v1/traffic/top` lists without a `limit`.
pub const DEFAULT_TOP: usize = 20;
/// The most it lists: what the router threads count is a few hundred each.
pub const MAX_TOP: usize = 1000;

/// `GET /v1/traffic/top?limit=N`.
pub(super) async fn top(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TopQuery>,
) -> ApiResult<Json<TrafficTop>> {
    let limit = match query.limit {
        None => DEFAULT_TOP,
        Some(text) => match text.trim().parse() {
            Ok(n) if (1..=MAX_TOP).contains(&n) => n,
            _ => {
                return Err(Error::invalid(
                    "limit",
                    format!(
                        "must be a whole number from 1 to {MAX_TOP}, not {}",
                        quoted(&text)
                    ),
                ))
            }
        },
    };
    Ok(Json(state.metrics.traffic_top(limit)))
}

/// `GET /v1/traffic/tenants/{name}`: a tenant by its name (not a domain: a
/// tenant's domains share its instance and its figures).
pub(super) async fn tenant(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TenantTraffic>> {
    crate::fleet::validation::dns_label("tenant", &name)?;
    Ok(Json(state.metrics.traffic_tenant(&name)))
}

/// `GET /v1/traffic/servers`.
pub(super) async fn servers(State(state): State<AppState>) -> Json<ServersTraffic> {
    Json(state.metrics.traffic_servers())
}
