//! The management API: the fleet's control plane over HTTP, as described in
//! `docs/management-api.md`.
//!
//! It is a thin layer over [`SlumDb`](crate::SlumDb): each handler parses its
//! input, makes one library call and answers with the library's own types as
//! JSON. Three things are decided here and nowhere else:
//!
//! - who may call: every `/v1` route needs a bearer token that
//!   [`SlumDb::verify_api_token`](crate::FleetDb::verify_api_token) accepts;
//!   `/health` and `/metrics` are open, for probes and scrapers;
//! - what a failure looks like: one JSON shape, and one status per
//!   [`Error`] kind (`impl IntoResponse for Error`), including for bodies
//!   that are not JSON or name fields that do not exist;
//! - when the router learns of a change: every call that may alter routing
//!   reloads the route table before it answers, so the next request already
//!   sees the change.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{async_trait, Json, Router};
use futures::future::join_all;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::net::TcpListener;

use crate::route_table::{Decision, RouteTable};
use crate::serve::AppState;
use crate::{
    ApiToken, DrainProgress, Error, FailoverPolicy, Kind, PlacementRequest, Server, ServerStats,
    ServerStatus, SpawnOptions, Tenant,
};

/// Time in-flight requests get after `stop`, beyond the spawn timeout: a spawn
/// or move already under way may finish, but shutdown is never held forever.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// Serves the management API on `listener` until `stop` turns true (or its
/// sender is gone), then stops accepting and lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let grace = state.db.options().spawn_timeout + SHUTDOWN_SLACK;
    let app = router(state);
    let mut signal = stop.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        // A dropped sender can never say "stop" any more: the process is ending.
        let _ = signal.wait_for(|stopped| *stopped).await;
    });
    let mut deadline = stop;
    tokio::select! {
        served = server => served?,
        _ = async move {
            let _ = deadline.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("management API: grace period over; dropping requests in flight"),
    }
    Ok(())
}

/// Every route of the API, with authentication, over `state`.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/servers", get(list_servers).post(create_server))
        .route(
            "/v1/servers/:id",
            get(get_server).patch(update_server).delete(delete_server),
        )
        .route("/v1/servers/:id/stats", get(server_stats))
        .route(
            "/v1/servers/:id/drain",
            get(drain_progress).post(drain_server),
        )
        .route("/v1/servers/:id/undrain", post(undrain_server))
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/v1/tenants/:domain",
            get(get_tenant).patch(update_tenant).delete(delete_tenant),
        )
        .route("/v1/tenants/:domain/move", post(move_tenant))
        .route("/v1/instances", get(list_instances).post(spawn_instance))
        .route(
            "/v1/instances/:key",
            get(get_instance).delete(stop_instance),
        )
        .route("/v1/status", get(fleet_status))
        .route("/v1/reconcile", post(reconcile))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/:id", delete(revoke_token))
        // Before the auth layer: once layered, routes no longer take a fallback.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(v1)
        .fallback(no_route)
        .with_state(state)
}

// ----- errors -----

/// The JSON of every failure: `{"error": Problem}`.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: Problem,
}

#[derive(Debug, Default, Serialize)]
struct Problem {
    kind: &'static str,
    message: String,
    field: Option<String>,
    server: Option<String>,
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenants: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_mb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    free_mb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity_mb: Option<i64>,
}

fn problem(status: StatusCode, problem: Problem) -> Response {
    (status, Json(ErrorBody { error: problem })).into_response()
}

/// A failure of the request itself (not of the library call).
fn request_problem(status: StatusCode, kind: &'static str, message: String) -> Response {
    problem(
        status,
        Problem {
            kind,
            message,
            ..Default::default()
        },
    )
}

fn unauthorized(message: &str) -> Response {
    let mut resp = request_problem(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned());
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// A rejected body, path or query: 400 naming the problem (413 when too large).
fn rejected(status: StatusCode, message: String) -> Response {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        request_problem(status, "too_large", message)
    } else {
        request_problem(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

/// One status per kind of library error, and a body naming what it is about.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut p = Problem {
            message: self.to_string(),
            ..Default::default()
        };
        let status = match self {
            Error::NotFound { kind, key } => {
                p.kind = "not_found";
                p.server = (kind == Kind::Server).then(|| key.clone());
                p.key = Some(key);
                StatusCode::NOT_FOUND
            }
            Error::AlreadyExists { kind, key, .. } => {
                p.kind = "already_exists";
                p.server = (kind == Kind::Server).then(|| key.clone());
                p.key = Some(key);
                StatusCode::CONFLICT
            }
            Error::HasDependents {
                kind,
                key,
                tenants,
                instances,
            } => {
                p.kind = "has_dependents";
                p.server = (kind == Kind::Server).then(|| key.clone());
                p.key = Some(key);
                p.tenants = Some(tenants);
                p.instances = Some(instances);
                StatusCode::CONFLICT
            }
            Error::Invalid { field, .. } => {
                p.kind = "invalid";
                p.field = Some(field);
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Error::NoRoom { needed_mb, .. } => {
                p.kind = "no_room";
                p.requested_mb = Some(needed_mb);
                StatusCode::INSUFFICIENT_STORAGE
            }
            Error::ServerUnavailable { server, .. } => {
                p.kind = "server_unavailable";
                p.server = Some(server);
                StatusCode::CONFLICT
            }
            Error::InsufficientCapacity {
                server,
                requested_mb,
                free_mb,
                capacity_mb,
            } => {
                p.kind = "insufficient_capacity";
                p.server = Some(server);
                p.requested_mb = Some(requested_mb);
                p.free_mb = Some(free_mb);
                p.capacity_mb = Some(capacity_mb);
                StatusCode::INSUFFICIENT_STORAGE
            }
            Error::ServerUnreachable { server, .. } => {
                p.kind = "server_unreachable";
                p.server = Some(server);
                StatusCode::BAD_GATEWAY
            }
            Error::Tenement { server, .. } => {
                p.kind = "tenement";
                p.server = Some(server);
                StatusCode::BAD_GATEWAY
            }
            Error::SpawnFailed {
                instance, server, ..
            } => {
                p.kind = "spawn_failed";
                p.server = Some(server);
                p.key = Some(instance);
                StatusCode::BAD_GATEWAY
            }
            Error::StopPending {
                instance, server, ..
            } => {
                p.kind = "stop_pending";
                p.server = Some(server);
                p.key = Some(instance);
                StatusCode::ACCEPTED
            }
            Error::Database(_) | Error::Migration(_) => {
                // The caller cannot act on these; whoever runs slum must see them.
                tracing::error!(error = %p.message, "management API: fleet database failed");
                p.kind = "database";
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        problem(status, p)
    }
}

type ApiResult<T> = Result<T, Error>;

async fn no_route(method: Method, uri: Uri) -> Response {
    request_problem(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    request_problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

// ----- extractors whose rejections are JSON -----

/// A JSON object body. Unlike `axum::Json`, a body that does not parse (or
/// names a field the request does not have) is a 400 in the API's error shape,
/// and the Content-Type is not insisted on (`curl -d` sends a form type).
struct ApiJson<T>(T);

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
struct ApiPath<T>(T);

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
struct ApiQuery<T>(T);

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

// ----- authentication -----

/// The secret of an `Authorization: Bearer <secret>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.trim().split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

/// Lets a request through only with a valid token. The secret is never logged;
/// the token's public id is.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let verdict = match bearer(req.headers()) {
        None => return unauthorized("missing bearer token: send 'Authorization: Bearer <token>'"),
        Some(secret) => state.db.verify_api_token(secret).await,
    };
    match verdict {
        Ok(Some(token)) => {
            tracing::debug!(token = %token.id, method = %req.method(), path = %req.uri().path(),
                "management API request");
            next.run(req).await
        }
        Ok(None) => unauthorized("invalid or revoked token"),
        Err(e) => e.into_response(),
    }
}

// ----- open routes -----

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

// ----- request bodies -----

/// `?server=ID`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFilter {
    server: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewServer {
    id: String,
    url: String,
    region: Option<String>,
    capacity_mb: i64,
    token: Option<String>,
    domain: Option<String>,
}

/// Absent fields keep their values; `null` clears the optional ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerChanges {
    url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    region: Option<Option<String>>,
    capacity_mb: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    token: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    domain: Option<Option<String>>,
    status: Option<ServerStatus>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A tenant on a given `server_id`, or (`"auto": true`) on the usable server
/// with the most free room, in `region` when given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    domain: String,
    name: Option<String>,
    server_id: Option<String>,
    process: String,
    instance_id: String,
    #[serde(default)]
    auto: bool,
    region: Option<String>,
    failover: Option<FailoverPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantChanges {
    name: Option<String>,
    server_id: Option<String>,
    process: Option<String>,
    instance_id: Option<String>,
    failover: Option<FailoverPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveTo {
    server_id: String,
}

/// An instance on a given `server_id`, or (`"auto": true`) placed by slum.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInstance {
    tenant: String,
    process: String,
    instance_id: String,
    server_id: Option<String>,
    memory_mb: Option<i64>,
    #[serde(default)]
    auto: bool,
    region: Option<String>,
    #[serde(default)]
    distinct_region: bool,
}

/// Where a new tenant or instance goes, as the body asked.
#[derive(Debug, PartialEq, Eq)]
enum Placing {
    On(String),
    Auto(PlacementRequest),
}

/// Checks that a body names exactly one way to place: a `server_id`, or
/// `"auto": true` (which alone may carry the placement hints).
fn placing(
    server_id: Option<String>,
    auto: bool,
    request: PlacementRequest,
) -> Result<Placing, Error> {
    match (server_id, auto) {
        (Some(_), true) => Err(Error::invalid(
            "server_id",
            "give either server_id or \"auto\": true, not both",
        )),
        (None, true) => Ok(Placing::Auto(request)),
        (None, false) => Err(Error::invalid(
            "server_id",
            "is required unless \"auto\": true lets slum choose the server",
        )),
        (Some(id), false) => {
            if request.region.is_some() {
                return Err(Error::invalid("region", "only applies with \"auto\": true"));
            }
            if request.distinct_region {
                return Err(Error::invalid(
                    "distinct_region",
                    "only applies with \"auto\": true",
                ));
            }
            Ok(Placing::On(id))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

// ----- answers -----

#[derive(Serialize)]
struct FleetStatus {
    servers: Vec<ServerStats>,
    tenants: usize,
    instances: usize,
    /// Domains the router cannot serve now: every server that could hold their
    /// instance is offline.
    down_tenants: Vec<DownTenant>,
}

/// A domain whose instance (and every backup) is on an offline server.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct DownTenant {
    domain: String,
    tenant: String,
    /// The offline servers its instances are on (its home, when it has none).
    servers: Vec<String>,
}

/// Of `domains`, those the route table says are down, sorted by domain.
fn down_tenants<'a>(table: &RouteTable, domains: impl Iterator<Item = &'a str>) -> Vec<DownTenant> {
    let mut down: Vec<DownTenant> = domains
        .filter_map(|domain| match table.route(domain) {
            Decision::ServerDown { tenant, servers } => Some(DownTenant {
                domain: domain.to_owned(),
                tenant: tenant.clone(),
                servers: servers.clone(),
            }),
            _ => None,
        })
        .collect();
    down.sort_by(|a, b| a.domain.cmp(&b.domain));
    down
}

#[derive(Serialize)]
struct CreatedToken {
    token: ApiToken,
    /// Shown this once; only its hash is stored.
    secret: String,
}

// ----- servers -----

async fn list_servers(State(state): State<AppState>) -> ApiResult<Json<Vec<Server>>> {
    Ok(Json(state.db.list_servers().await?))
}

async fn create_server(
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

async fn get_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Server>> {
    Ok(Json(state.db.get_server(&id).await?))
}

async fn update_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(changes): ApiJson<ServerChanges>,
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
            server.status = status;
            state.db.update_server(&server).await?;
        }
        None => state.db.update_server_settings(&server).await?,
    }
    state.fleet_changed().await;
    Ok(Json(state.db.get_server(&id).await?))
}

async fn delete_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.db.delete_server(&id).await?;
    state.fleet_changed().await;
    Ok(StatusCode::NO_CONTENT)
}

async fn server_stats(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ServerStats>> {
    Ok(Json(state.db.get_server_stats(&id).await?))
}

/// Starts draining the server (or reports the drain already running): 202, as
/// the moves go on after the answer.
async fn drain_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<DrainProgress>)> {
    // `start` reloads the route table when it marks the server.
    let progress = state.drains.start(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(progress)))
}

async fn drain_progress(
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
                kind: "not_found",
                message: format!("no drain has run on server '{id}' since slum serve started"),
                server: Some(id.clone()),
                key: Some(id),
                ..Default::default()
            },
        ),
    })
}

async fn undrain_server(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Server>> {
    // `undrain` reloads the route table when it changes the server.
    state.drains.undrain(&id).await?;
    Ok(Json(state.db.get_server(&id).await?))
}

// ----- tenants -----

async fn list_tenants(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<ServerFilter>,
) -> ApiResult<Json<Vec<Tenant>>> {
    let tenants = match filter.server {
        Some(server) => state.db.list_tenants_on_server(&server).await?,
        None => state.db.list_tenants().await?,
    };
    Ok(Json(tenants))
}

async fn create_tenant(
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

async fn get_tenant(
    State(state): State<AppState>,
    ApiPath(domain): ApiPath<String>,
) -> ApiResult<Json<Tenant>> {
    Ok(Json(state.db.get_tenant_by_domain(&domain).await?))
}

async fn update_tenant(
    State(state): State<AppState>,
    ApiPath(domain): ApiPath<String>,
    ApiJson(changes): ApiJson<TenantChanges>,
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

async fn move_tenant(
    State(state): State<AppState>,
    ApiPath(domain): ApiPath<String>,
    ApiJson(to): ApiJson<MoveTo>,
) -> ApiResult<Json<Tenant>> {
    let moved = state.db.move_tenant(&domain, &to.server_id).await;
    // Even a failed move may have stopped or restored an instance.
    state.fleet_changed().await;
    Ok(Json(moved?))
}

async fn delete_tenant(
    State(state): State<AppState>,
    ApiPath(domain): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.db.delete_tenant(&domain).await?;
    state.fleet_changed().await;
    Ok(StatusCode::NO_CONTENT)
}

// ----- instances -----

async fn list_instances(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<ServerFilter>,
) -> ApiResult<Response> {
    let instances = match filter.server {
        Some(server) => state.db.list_instances_on_server(&server).await?,
        None => state.db.list_all_instances().await?,
    };
    Ok(Json(instances).into_response())
}

async fn spawn_instance(
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

async fn get_instance(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.db.get_instance_status(&key).await?).into_response())
}

async fn stop_instance(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let stopped = state.db.stop_instance(&key).await;
    // A pending stop takes the instance out of routing too.
    if matches!(stopped, Ok(()) | Err(Error::StopPending { .. })) {
        state.fleet_changed().await;
    }
    stopped?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- fleet -----

async fn fleet_status(State(state): State<AppState>) -> ApiResult<Json<FleetStatus>> {
    let servers = state.db.list_servers().await?;
    // Every server is asked at once, so one slow server costs one timeout.
    let asked = join_all(servers.iter().map(|s| state.db.get_server_stats(&s.id))).await;
    let mut stats = Vec::with_capacity(asked.len());
    for result in asked {
        match result {
            Ok(s) => stats.push(s),
            // Deleted since it was listed: it is not part of the fleet any more.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    let (tenants, instances) =
        tokio::try_join!(state.db.list_tenants(), state.db.list_instance_records())?;
    let down_tenants = down_tenants(
        &state.routes.current(),
        tenants.iter().map(|t| t.domain.as_str()),
    );
    Ok(Json(FleetStatus {
        servers: stats,
        tenants: tenants.len(),
        instances: instances.len(),
        down_tenants,
    }))
}

async fn reconcile(State(state): State<AppState>) -> ApiResult<Response> {
    let report = state.db.reconcile().await?;
    state.fleet_changed().await;
    Ok(Json(report).into_response())
}

// ----- tokens -----

async fn list_tokens(State(state): State<AppState>) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(state.db.list_api_tokens().await?))
}

async fn create_token(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let (token, secret) = state.db.create_api_token(&body.name).await?;
    tracing::info!(token = %token.id, name = %token.name, "management API token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

async fn revoke_token(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.db.revoke_api_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        for (value, want) in [
            ("Bearer slum_abc", Some("slum_abc")),
            ("bearer  slum_abc ", Some("slum_abc")),
            ("Basic dXNlcjpwYXNz", None),
            ("Bearer", None),
            ("Bearer ", None),
            ("slum_abc", None),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&h), want, "{value:?}");
        }
    }

    #[test]
    fn a_body_places_on_a_server_or_automatically_never_both() {
        let hints = PlacementRequest {
            region: Some("eu".into()),
            ..Default::default()
        };
        assert_eq!(
            placing(None, true, hints.clone()).ok(),
            Some(Placing::Auto(hints.clone()))
        );
        assert_eq!(
            placing(Some("east".into()), false, PlacementRequest::default()).ok(),
            Some(Placing::On("east".into()))
        );
        let field = |r: Result<Placing, Error>| match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(
            field(placing(None, false, PlacementRequest::default())),
            "server_id"
        );
        assert_eq!(
            field(placing(
                Some("east".into()),
                true,
                PlacementRequest::default()
            )),
            "server_id"
        );
        assert_eq!(field(placing(Some("east".into()), false, hints)), "region");
        let apart = PlacementRequest {
            distinct_region: true,
            ..Default::default()
        };
        assert_eq!(
            field(placing(Some("east".into()), false, apart)),
            "distinct_region"
        );
    }

    #[test]
    fn down_tenants_are_the_domains_whose_servers_are_all_offline() {
        let server = |id: &str, status| Server {
            id: id.into(),
            url: format!("http://{id}.test"),
            status,
            ..Default::default()
        };
        let tenant = |domain: &str, home: &str| Tenant {
            domain: domain.into(),
            name: domain.split('.').next().unwrap_or_default().into(),
            server_id: home.into(),
            process: "api".into(),
            instance_id: "prod".into(),
            ..Default::default()
        };
        let inst = |tenant: &str, id: &str, server: &str| crate::Instance {
            tenant: tenant.into(),
            instance_id: id.into(),
            process: "api".into(),
            server_id: server.into(),
            ..Default::default()
        };
        let table = RouteTable::build(
            1,
            &[
                server("east", ServerStatus::Offline),
                server("west", ServerStatus::Online),
            ],
            &[
                tenant("b.test", "east"),
                tenant("a.test", "east"),
                tenant("backed.test", "east"),
                tenant("fine.test", "west"),
            ],
            &[
                inst("a", "prod", "east"),
                inst("backed", "prod", "east"),
                inst("backed", "backup", "west"),
                inst("fine", "prod", "west"),
            ],
        );
        let domains = ["b.test", "fine.test", "a.test", "backed.test", "gone.test"];
        assert_eq!(
            down_tenants(&table, domains.into_iter()),
            vec![
                DownTenant {
                    domain: "a.test".into(),
                    tenant: "a".into(),
                    servers: vec!["east".into()],
                },
                DownTenant {
                    domain: "b.test".into(),
                    tenant: "b".into(),
                    servers: vec!["east".into()],
                },
            ]
        );
    }

    #[test]
    fn patch_bodies_tell_null_from_absent() {
        let c: ServerChanges = serde_json::from_str(r#"{"region":null}"#).unwrap();
        assert_eq!(c.region, Some(None));
        assert_eq!(c.domain, None);
        let c: ServerChanges = serde_json::from_str(r#"{"domain":"x.test"}"#).unwrap();
        assert_eq!(c.domain, Some(Some("x.test".into())));
        let e = serde_json::from_str::<ServerChanges>(r#"{"regoin":"eu"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown field `regoin`"), "{e}");
    }
}
