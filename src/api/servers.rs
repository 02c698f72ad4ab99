//! `/v1/servers`: the fleet's tenement servers, their live stats, draining
//! one (moving its tenants elsewhere) or taking it back, and cordoning one
//! (no new placements, its tenants left where they are).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::paging::{page_request, paged};
use super::wire::{DrainProgress, NewServer, PageQuery, Problem, Server, ServerPatch, ServerStats};
use super::{problem, ApiResult};
use crate::serve::AppState;

/// A page of the servers, by id, with their used capacity.
pub(super) async fn list_servers(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let page = page_request(query.limit, query.after)?;
    let mut servers = state.db.list_servers_page(&page).await?;
    for s in &mut servers.items {
        s.last_seen = state.health.last_seen(&s.id, s.last_seen);
    }
    Ok(paged(servers))
}

pub(super) async fn create_server(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewServer>,
) -> ApiResult<(StatusCode, Json<Server>)> {
    let server = Server {
        id: body.id,
        url: body.url,
        region: body.region,
        capacity_mb: body.capacity_mb,
        token: body.token,
        domain: body.domain,
        ..Default::default()
    };
    state.db.add_server(&server).await?;
    state.fleet_changed().await;
    let created = state.db.get_server(&server.id).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(super) async fn get_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Server>> {
    let mut server = state.db.get_server(&id).await?;
    server.last_seen = state.health.last_seen(&id, server.last_seen);
    Ok(Json(server))
}

pub(super) async fn update_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(changes): ApiJson<ServerPatch>,
) -> ApiResult<Json<Server>> {
    let mut server = state.db.get_server(&id).await?;
    if let Some(url) = changes.url {
        server.url = url;
    }
    if let Some(region) = changes.region {
        server.region = region;
    }
    if let Some(capacity_mb) = changes.capacity_mb {
        server.capacity_mb = capacity_mb;
    }
    if let Some(token) = changes.token {
        server.token = token;
    }
    if let Some(domain) = changes.domain {
        server.domain = domain;
    }
    // Without a status in the patch, the status health checks keep writing is
    // left alone rather than overwritten with the one read above.
    match changes.status {
        Some(status) => {
            let from = server.status;
            server.status = status;
            state.db.update_server(&server).await?;
            if from != status {
                // Health checks take it from here (online and offline are
                // theirs to decide); a cordon or a drain is what lasts.
                tracing::info!(server = %id, %from, to = %status, cause = "operator",
                    "server status set by an operator");
            }
        }
        None => state.db.update_server_settings(&server).await?,
    }
    state.fleet_changed().await;
    Ok(Json(state.db.get_server(&id).await?))
}

pub(super) async fn delete_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.db.delete_server(&id).await?;
    state.fleet_changed().await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn server_stats(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ServerStats>> {
    let mut stats = state.db.get_server_stats(&id).await?;
    stats.last_seen = state.health.last_seen(&id, stats.last_seen);
    Ok(Json(stats))
}

/// Starts draining the server (or reports the drain already running): 202, as
/// the moves go on after the answer.
pub(super) async fn drain_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<DrainProgress>)> {
    // `start` reloads the route table when it marks the server.
    let progress = state.drains.start(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(progress)))
}

pub(super) async fn drain_progress(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    // An unknown server is the usual 404 naming it.
    state.db.get_server(&id).await?;
    Ok(match state.drains.progress(&id) {
        Some(progress) => Json(progress).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            Problem {
                kind: "not_found".to_owned(),
                message: format!("no drain has run on server '{id}' since slum serve started"),
                server: Some(id.clone()),
                key: Some(id),
                ..Default::default()
            },
        ),
    })
}

pub(super) async fn undrain_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Server>> {
    // `undrain` reloads the route table when it changes the server.
    state.drains.undrain(&id).await?;
    Ok(Json(state.db.get_server(&id).await?))
}

/// Cordons the server: no new placements; its instances stay, routed.
pub(super) async fn cordon_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Server>> {
    Ok(Json(state.db.set_cordoned(&id, true).await?))
}

/// Lifts the server's cordon: it takes placements again.
pub(super) async fn uncordon_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Server>> {
    Ok(Json(state.db.set_cordoned(&id, false).await?))
}

/// `GET /v1/drains`: the last drain of each server this `slum serve` ran,
/// running or done, by server id.
pub(super) async fn list_drains(State(state): State<AppState>) -> Json<Vec<DrainProgress>> {
    Json(state.drains.all())
}
