//! The management API: the fleet's control plane over HTTP, as described in
//! `docs/management-api.md`.
//!
//! It is a thin layer over [`SlumDb`](crate::SlumDb): each handler parses its
//! input, makes one library call and answers with the library's own types as
//! JSON. The handlers live by resource (`servers`, `tenants`, `instances`,
//! `fleet`, `tokens`, `certificates`, `events`, `logs` (an instance's
//! output), and `traffic`, the router's own figures); every body they take
//! or give is a type of `wire`, which
//! the CLI shares. Three things are decided here and nowhere else:
//!
//! - who may call: every `/v1` route needs a bearer token that
//!   [`SlumDb::verify_api_token`](crate::FleetDb::verify_api_token) accepts,
//!   or, for a GET, the cookie of a [`dashboard`] session opened with one;
//!   `/health` and `/metrics` are open, for probes and scrapers, and so are
//!   the dashboard's page and its sign-in;
//! - what a failure looks like: one JSON shape (`wire::ErrorBody`), and one
//!   status per [`Error`] kind (`impl IntoResponse for Error`), including for
//!   bodies that are not JSON or name fields that do not exist (`extract`);
//! - when the router learns of a change: every call that may alter routing
//!   reloads the route table before it answers, so the next request already
//!   sees the change.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use tokio::net::TcpListener;

use crate::serve::AppState;
use crate::{Error, Kind};

mod certificates;
pub mod dashboard;
mod events;
mod extract;
mod fleet;
mod instances;
mod logs;
mod paging;
mod placing;
mod servers;
mod tenants;
mod tokens;
mod traffic;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

use wire::{ErrorBody, Problem};

/// Turns true when `slum serve` stops: what ends the API's endless streams.
#[derive(Clone)]
pub(crate) struct Stopping(pub(crate) tokio::sync::watch::Receiver<bool>);

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
    // Streams that would last for ever (followed logs) end when told.
    let app = router(state).layer(Extension(Stopping(stop.clone())));
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
fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/servers",
            get(servers::list_servers).post(servers::create_server),
        )
        .route(
            "/v1/servers/:id",
            get(servers::get_server)
                .patch(servers::update_server)
                .delete(servers::delete_server),
        )
        .route("/v1/servers/:id/stats", get(servers::server_stats))
        .route(
            "/v1/servers/:id/drain",
            get(servers::drain_progress).post(servers::drain_server),
        )
        .route("/v1/servers/:id/undrain", post(servers::undrain_server))
        .route("/v1/servers/:id/cordon", post(servers::cordon_server))
        .route("/v1/servers/:id/uncordon", post(servers::uncordon_server))
        .route("/v1/drains", get(servers::list_drains))
        .route(
            "/v1/tenants",
            get(tenants::list_tenants).post(tenants::create_tenant),
        )
        .route(
            "/v1/tenants/:domain",
            get(tenants::get_tenant)
                .patch(tenants::update_tenant)
                .delete(tenants::delete_tenant),
        )
        .route("/v1/tenants/:domain/move", post(tenants::move_tenant))
        .route("/v1/tenants/:domain/logs", get(logs::instance_logs))
        .route("/v1/events", get(events::list_events))
        .route(
            "/v1/instances",
            get(instances::list_instances).post(instances::spawn_instance),
        )
        .route(
            "/v1/instances/:key",
            get(instances::get_instance).delete(instances::stop_instance),
        )
        .route("/v1/status", get(fleet::fleet_status))
        .route("/v1/traffic/top", get(traffic::top))
        .route("/v1/traffic/servers", get(traffic::servers))
        .route("/v1/traffic/tenants/:name", get(traffic::tenant))
        .route("/v1/reconcile", post(fleet::reconcile))
        .route(
            "/v1/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/v1/tokens/:id", delete(tokens::revoke_token))
        .route("/v1/certificates", get(certificates::list_certificates))
        .route(
            "/v1/certificates/:name",
            get(certificates::get_certificate)
                .put(certificates::put_certificate)
                .delete(certificates::delete_certificate),
        )
        .route(
            "/v1/certificates/:name/order",
            post(certificates::order_certificate),
        )
        // Before the auth layer: once layered, routes no longer take a fallback.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(dashboard::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .merge(v1)
        .fallback(no_route)
        .with_state(state)
}

// ----- errors -----

/// What every handler returns: its answer, or a library error that
/// `impl IntoResponse for Error` turns into one status and one body.
type ApiResult<T> = Result<T, Error>;

fn problem(status: StatusCode, problem: Problem) -> Response {
    (status, Json(ErrorBody { error: problem })).into_response()
}

/// A failure of the request itself (not of the library call).
fn request_problem(status: StatusCode, kind: &str, message: String) -> Response {
    problem(
        status,
        Problem {
            kind: kind.to_owned(),
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
        let (status, kind) = match self {
            Error::NotFound { kind, key } => {
                p.server = (kind == Kind::Server).then(|| key.clone());
                p.key = Some(key);
                (StatusCode::NOT_FOUND, "not_found")
            }
            Error::AlreadyExists { kind, key, .. } => {
                p.server = (kind == Kind::Server).then(|| key.clone());
                p.key = Some(key);
                (StatusCode::CONFLICT, "already_exists")
            }
            Error::HasDependents {
                kind,
                key,
                tenants,
                instances,
            } => {
                p.server = (kind == Kind::Server).then(|| key.clone());
                p.key = Some(key);
                p.tenants = Some(tenants);
                p.instances = Some(instances);
                (StatusCode::CONFLICT, "has_dependents")
            }
            Error::Invalid { field, .. } => {
                p.field = Some(field);
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            }
            Error::NoRoom { needed_mb, .. } => {
                p.requested_mb = Some(needed_mb);
                (StatusCode::INSUFFICIENT_STORAGE, "no_room")
            }
            Error::ServerUnavailable { server, .. } => {
                p.server = Some(server);
                (StatusCode::CONFLICT, "server_unavailable")
            }
            Error::InsufficientCapacity {
                server,
                requested_mb,
                free_mb,
                capacity_mb,
            } => {
                p.server = Some(server);
                p.requested_mb = Some(requested_mb);
                p.free_mb = Some(free_mb);
                p.capacity_mb = Some(capacity_mb);
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_capacity")
            }
            Error::ServerUnreachable { server, .. } => {
                p.server = Some(server);
                (StatusCode::BAD_GATEWAY, "server_unreachable")
            }
            Error::Tenement { server, .. } => {
                p.server = Some(server);
                (StatusCode::BAD_GATEWAY, "tenement")
            }
            Error::SpawnFailed {
                instance, server, ..
            } => {
                p.server = Some(server);
                p.key = Some(instance);
                (StatusCode::BAD_GATEWAY, "spawn_failed")
            }
            Error::DomainMismatch { server, domain, .. } => {
                p.field = Some("server.domain".to_owned());
                p.server = Some(server);
                p.domain = Some(domain);
                (StatusCode::UNPROCESSABLE_ENTITY, "domain_mismatch")
            }
            Error::Database(_) | Error::Migration(_) => {
                // The caller cannot act on these; whoever runs slum must see them.
                tracing::error!(error = %p.message, "management API: fleet database failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "database")
            }
        };
        p.kind = kind.to_owned();
        problem(status, p)
    }
}

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

// ----- authentication -----

/// The secret of an `Authorization: Bearer <secret>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.trim().split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

/// Lets a request through only with a valid token: a bearer token, or, for
/// a GET or HEAD, the token a dashboard session was opened with (still
/// valid: revoking it ends its sessions). The secret is never logged; the
/// token's public id is.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let verdict = match bearer(req.headers()) {
        Some(secret) => state.db.verify_api_token(secret).await,
        None => match dashboard::session_token(&state, req.method(), req.headers()) {
            Some(token_id) => state.db.valid_api_token(&token_id).await,
            None => {
                return unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
            }
        },
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
    certificates::refresh_metrics(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
