//! `/v1/instances`: instances fleet-wide as their servers report them, and
//! starting or stopping one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::paging::{page_request, paged};
use super::placing::{placing, Placing};
use super::wire::{ListQuery, NewInstance, StopPending};
use super::ApiResult;
use crate::serve::AppState;
use crate::PlacementRequest;
use crate::{SpawnOptions, StopOutcome};

/// A page of the instances, by key, with their live state (only the servers
/// holding the page's instances are asked).
pub(super) async fn list_instances(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let page = page_request(query.limit, query.after)?;
    let instances = state
        .db
        .list_instances_page(query.server.as_deref(), &page)
        .await?;
    Ok(paged(instances))
}

pub(super) async fn spawn_instance(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewInstance>,
) -> ApiResult<Response> {
    let request = PlacementRequest {
        region: body.region,
        distinct_region: body.distinct_region,
        memory_mb: body.memory_mb,
    };
    let instance = match placing(body.server_id, body.auto, request)? {
        Placing::On(server_id) => {
            let options = SpawnOptions {
                memory_mb: body.memory_mb,
            };
            state
                .db
                .spawn_instance_with(
                    &body.tenant,
                    &body.process,
                    &body.instance_id,
                    &server_id,
                    &options,
                )
                .await?
        }
        Placing::Auto(request) => {
            state
                .db
                .spawn_instance_auto(&body.tenant, &body.process, &body.instance_id, &request)
                .await?
        }
    };
    state.fleet_changed().await;
    Ok((StatusCode::CREATED, Json(instance)).into_response())
}

pub(super) async fn get_instance(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.db.get_instance_status(&key).await?).into_response())
}

pub(super) async fn stop_instance(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Response> {
    let outcome = state.db.stop_instance(&key).await?;
    // A pending stop takes the instance out of routing too.
    state.fleet_changed().await;
    Ok(match outcome {
        StopOutcome::Stopped => StatusCode::NO_CONTENT.into_response(),
        StopOutcome::Pending { server, reason } => {
            let message = format!(
                "instance '{key}' could not be stopped now ({reason}); its stop is pending and \
                 will complete when server '{server}' answers"
            );
            let body = StopPending {
                key,
                server,
                reason,
                message,
            };
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
    })
}
