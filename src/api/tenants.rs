//! `/v1/tenants`: customer domains, where they are homed, and moving one to
//! another server.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::paging::{page_request, paged};
use super::placing::{placing, Placing};
use super::wire::{ListQuery, MoveTo, MovedTenant, NewTenant, Tenant, TenantPatch};
use super::ApiResult;
use crate::serve::AppState;
use crate::PlacementRequest;

/// A page of the domains, by domain.
pub(super) async fn list_tenants(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let page = page_request(query.limit, query.after)?;
    let tenants = state
        .db
        .list_tenants_page(query.server.as_deref(), &page)
        .await?;
    Ok(paged(tenants))
}

pub(super) async fn create_tenant(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let request = PlacementRequest {
        region: body.region,
        ..Default::default()
    };
    let placing = placing(body.server_id, body.auto, request)?;
    let mut tenant = Tenant {
        domain: body.domain,
        name: body.name.unwrap_or_default(),
        process: body.process,
        instance_id: body.instance_id,
        failover: body.failover.unwrap_or_default(),
        ..Default::default()
    };
    let created = match placing {
        Placing::On(server_id) => {
            tenant.server_id = server_id;
            state.db.add_tenant(&tenant).await?;
            state.db.get_tenant_by_domain(&tenant.domain).await?
        }
        Placing::Auto(request) => state.db.add_tenant_auto(&tenant, &request).await?,
    };
    state.fleet_changed().await;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(super) async fn get_tenant(
    State(state): State<AppState>,
    ApiPath(domain): ApiPath<String>,
) -> ApiResult<Json<Tenant>> {
    Ok(Json(state.db.get_tenant_by_domain(&domain).await?))
}

pub(super) async fn update_tenant(
    State(state): State<AppState>,
    ApiPath(domain): ApiPath<String>,
    ApiJson(changes): ApiJson<TenantPatch>,
) -> ApiResult<Json<Tenant>> {
    let mut tenant = state.db.get_tenant_by_domain(&domain).await?;
    if let Some(name) = changes.name {
        tenant.name = name;
    }
    if let Some(server_id) = changes.server_id {
        tenant.server_id = server_id;
    }
    if let Some(process) = changes.process {
        tenant.process = process;
    }
    if let Some(instance_id) = changes.instance_id {
        tenant.instance_id = instance_id;
    }
    if let Some(failover) = changes.failover {
        tenant.failover = failover;
    }
    state.db.update_tenant(&tenant).await?;
    state.fleet_changed().await;
    Ok(Json(state.db.get_tenant_by_domain(&domain).await?))
}

pub(super) async fn move_tenant(
    State(state): State<AppState>,
    ApiPath(domain): ApiPath<String>,
    ApiJson(to): ApiJson<MoveTo>,
) -> ApiResult<Json<MovedTenant>> {
    let result = state.db.move_tenant_reporting(&domain, &to.server_id).await;
    // Even a failed move may have stopped or restored an instance.
    state.fleet_changed().await;
    let (tenant, moved) = result?;
    Ok(Json(MovedTenant { tenant, moved }))
}

pub(super) async fn delete_tenant(
    State(state): State<AppState>,
    ApiPath(domain): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.db.delete_tenant(&domain).await?;
    state.fleet_changed().await;
    Ok(StatusCode::NO_CONTENT)
}
