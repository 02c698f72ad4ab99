//! The HTTP client of the management API: where the API is (`--api`), which
//! token to send (`--token`, else the file `slum serve` writes), one typed
//! method per route, and the decoding of every failure (transport, 401, the
//! API's JSON error, an answer that is not what the route promises) into one
//! [`CliError`]. Bodies are the API's own [`wire`](crate::api::wire) types.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use url::Url;

use super::args::Secret;
use super::error::CliError;
use crate::api::wire::{
    ApiToken, CertificateInfo, CreatedToken, DrainProgress, ErrorBody, Event, EventsQuery,
    FleetStatus, Instance, InstanceStatus, ListQuery, LogLine, LogsQuery, MoveTo, MovedTenant,
    NewInstance, NewServer, NewTenant, NewToken, PutCertificate, ReconcileReport, Server,
    ServerPatch, ServerStats, ServersTraffic, StopPending, Tenant, TenantPatch, TenantTraffic,
    TrafficTop, NEXT_AFTER,
};
use crate::serve::{default_token_file, DEFAULT_API};

#[cfg(test)]
mod tests;

/// How long the CLI waits to connect to the API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one API call may take; spawns, moves and reconcile wait for tenement
/// servers, so this is generous.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a followed answer (`slum logs -f`) may last: as long as the
/// operator watches.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(366 * 86_400);

// ----- where the API is, and the token -----

/// The API's base URL from `--api`/`SLUM_API`; `host:port` without a scheme
/// means `http://host:port`.
pub(super) fn api_base(arg: Option<&str>) -> Result<Url, CliError> {
    let raw = arg.map(str::trim).filter(|s| !s.is_empty());
    let raw = match raw {
        Some(s) if s.contains("://") => s.to_owned(),
        Some(s) => format!("http://{s}"),
        None => format!("http://{DEFAULT_API}"),
    };
    let url =
        Url::parse(&raw).map_err(|e| CliError::Local(format!("invalid --api URL '{raw}': {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(CliError::Local(format!(
            "invalid --api URL '{raw}': use http:// or https://"
        )));
    }
    Ok(url)
}

/// The token file the CLI falls back to: `$SLUM_TOKEN_FILE` (the variable
/// `slum serve --token-file` reads too), else [`default_token_file`].
pub(super) fn token_file_path() -> PathBuf {
    std::env::var_os("SLUM_TOKEN_FILE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_token_file)
}

/// The API token: the flag (or `SLUM_TOKEN`), else the contents of `file`
/// (trimmed), else none. A file that does not exist is not an error: the API then
/// says 401 and the message points at the ways to give a token.
pub(super) fn resolve_token(flag: Option<Secret>, file: &Path) -> Result<Option<Secret>, CliError> {
    if let Some(t) = flag.filter(|t| !t.expose().is_empty()) {
        return Ok(Some(t));
    }
    match std::fs::read_to_string(file) {
        Ok(s) => Ok(Some(Secret::from(s)).filter(|t| !t.expose().is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Local(format!(
            "cannot read the token file {}: {e}",
            file.display()
        ))),
    }
}

// ----- errors -----

/// The error of a non-success answer (401 is handled before this).
pub(super) fn api_error(status: StatusCode, body: &[u8]) -> CliError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => CliError::Api {
            status: status.as_u16(),
            kind: b.error.kind,
            message: b.error.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(200).collect();
            if text.is_empty() {
                CliError::Unexpected(format!("the API answered {status}"))
            } else {
                CliError::Unexpected(format!("the API answered {status}: {text}"))
            }
        }
    }
}

// The innermost cause of a transport error ("Connection refused (os error
// 111)"), which says more than reqwest's "error sending request for url".
use crate::error::innermost_cause as root_cause;

// ----- the client -----

/// A decoded answer together with the JSON it came from (printed by `--json`).
#[derive(Debug)]
pub(super) struct Reply<T> {
    pub(super) value: T,
    pub(super) json: Value,
    /// A paged list's `Slum-Next-After`: more records follow this key.
    pub(super) next: Option<String>,
}

/// What `DELETE /v1/instances/{key}` did.
#[derive(Debug)]
pub(super) enum Stop {
    Done,
    /// The server could not be reached; reconcile completes the stop.
    Pending {
        json: Value,
        message: String,
    },
}

/// The typed client of the management API.
pub(super) struct ApiClient {
    base: Url,
    token: Option<Secret>,
    token_file: PathBuf,
    http: reqwest::Client,
}

impl ApiClient {
    /// `token_file` is only named in the message when no token was found.
    pub(super) fn new(
        base: Url,
        token: Option<Secret>,
        token_file: PathBuf,
    ) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("slum-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Local(format!("cannot build the HTTP client: {e}")))?;
        Ok(ApiClient {
            base,
            token,
            token_file,
            http,
        })
    }

    /// The API's address as the user gave it, for messages.
    fn shown_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // Never fails: `api_base` accepts only URLs that can be a base.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        url
    }

    /// One request. Returns the status and JSON of a success (`Null` when the
    /// body is empty); every failure becomes one [`CliError`].
    async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&ListQuery>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), CliError> {
        self.request_page(method, segments, query, body)
            .await
            .map(|(status, json, _)| (status, json))
    }

    /// [`request`](Self::request), with the next page's key of a paged list.
    async fn request_page(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&ListQuery>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value, Option<String>), CliError> {
        self.request_query(method, segments, query, body).await
    }

    /// A request with a query of any shape.
    fn builder<Q: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&Q>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, self.endpoint(segments));
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        req
    }

    /// The failure of an answer that is not a success, if it is not.
    fn refusal(&self, status: StatusCode, body: &[u8]) -> Option<CliError> {
        if status == StatusCode::UNAUTHORIZED {
            return Some(match self.token {
                Some(_) => CliError::Refused,
                None => CliError::NoToken {
                    token_file: self.token_file.clone(),
                },
            });
        }
        (!status.is_success()).then(|| api_error(status, body))
    }

    /// [`request_page`](Self::request_page) with a query of any shape.
    async fn request_query<Q: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&Q>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value, Option<String>), CliError> {
        let mut req = self.builder(method, segments, query);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        // The router answers any Host it does not know with its own 404:
        // whatever the route, this is not the API.
        if resp.headers().contains_key(crate::router::ROUTER_MARK) {
            return Err(CliError::RouterNotApi {
                url: self.shown_url(),
            });
        }
        let status = resp.status();
        let next = resp
            .headers()
            .get(NEXT_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if let Some(e) = self.refusal(status, &bytes) {
            return Err(e);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, Value::Null, next));
        }
        let json = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Unexpected(format!("the API's answer is not JSON ({status}): {e}"))
        })?;
        Ok((status, json, next))
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        if e.is_timeout() && !e.is_connect() {
            CliError::Timeout {
                url: self.shown_url(),
                secs: REQUEST_TIMEOUT.as_secs(),
            }
        } else {
            CliError::Unreachable {
                url: self.shown_url(),
                reason: root_cause(e),
            }
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&ListQuery>,
        body: Option<Value>,
    ) -> Result<Reply<T>, CliError> {
        self.call_query(method, segments, query, body).await
    }

    /// [`call`](Self::call) with a query of any shape.
    async fn call_query<T: DeserializeOwned, Q: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&Q>,
        body: Option<Value>,
    ) -> Result<Reply<T>, CliError> {
        let what = format!("{method} /v1/{}", segments.join("/"));
        let (_, json, next) = self.request_query(method, segments, query, body).await?;
        let value = T::deserialize(&json).map_err(|e| {
            CliError::Unexpected(format!("cannot read the API's answer to {what}: {e}"))
        })?;
        Ok(Reply { value, json, next })
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<Reply<T>, CliError> {
        self.call(Method::GET, segments, None, None).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<Reply<T>, CliError> {
        let body = serde_json::to_value(body)
            .map_err(|e| CliError::Local(format!("cannot encode the request: {e}")))?;
        self.call(method, segments, None, Some(body)).await
    }

    async fn delete(&self, segments: &[&str]) -> Result<(StatusCode, Value), CliError> {
        self.request(Method::DELETE, segments, None, None).await
    }

    pub(super) async fn list_servers(
        &self,
        page: &ListQuery,
    ) -> Result<Reply<Vec<Server>>, CliError> {
        self.call(Method::GET, &["servers"], Some(page), None).await
    }

    pub(super) async fn server(&self, id: &str) -> Result<Reply<Server>, CliError> {
        self.get(&["servers", id]).await
    }

    pub(super) async fn server_stats(&self, id: &str) -> Result<Reply<ServerStats>, CliError> {
        self.get(&["servers", id, "stats"]).await
    }

    pub(super) async fn add_server(&self, s: &NewServer) -> Result<Reply<Server>, CliError> {
        self.send(Method::POST, &["servers"], s).await
    }

    pub(super) async fn update_server(
        &self,
        id: &str,
        p: &ServerPatch,
    ) -> Result<Reply<Server>, CliError> {
        self.send(Method::PATCH, &["servers", id], p).await
    }

    pub(super) async fn remove_server(&self, id: &str) -> Result<(), CliError> {
        self.delete(&["servers", id]).await.map(drop)
    }

    pub(super) async fn drain(&self, id: &str) -> Result<Reply<DrainProgress>, CliError> {
        self.call(Method::POST, &["servers", id, "drain"], None, None)
            .await
    }

    pub(super) async fn drain_progress(&self, id: &str) -> Result<Reply<DrainProgress>, CliError> {
        self.get(&["servers", id, "drain"]).await
    }

    pub(super) async fn undrain(&self, id: &str) -> Result<Reply<Server>, CliError> {
        self.call(Method::POST, &["servers", id, "undrain"], None, None)
            .await
    }

    pub(super) async fn cordon(&self, id: &str, cordoned: bool) -> Result<Reply<Server>, CliError> {
        let action = if cordoned { "cordon" } else { "uncordon" };
        self.call(Method::POST, &["servers", id, action], None, None)
            .await
    }

    /// A page of the tenants (`page.server`: only those homed there).
    pub(super) async fn list_tenants(
        &self,
        page: &ListQuery,
    ) -> Result<Reply<Vec<Tenant>>, CliError> {
        self.call(Method::GET, &["tenants"], Some(page), None).await
    }

    pub(super) async fn tenant(&self, domain: &str) -> Result<Reply<Tenant>, CliError> {
        self.get(&["tenants", domain]).await
    }

    /// The `limit` busiest tenants of the router's last minute.
    pub(super) async fn traffic_top(&self, limit: u32) -> Result<Reply<TrafficTop>, CliError> {
        let query = ListQuery {
            limit: Some(limit.to_string()),
            ..Default::default()
        };
        self.call(Method::GET, &["traffic", "top"], Some(&query), None)
            .await
    }

    /// The router's last minute to each server.
    pub(super) async fn traffic_servers(&self) -> Result<Reply<ServersTraffic>, CliError> {
        self.get(&["traffic", "servers"]).await
    }

    /// One tenant's traffic, by its name.
    pub(super) async fn tenant_traffic(
        &self,
        name: &str,
    ) -> Result<Reply<TenantTraffic>, CliError> {
        self.get(&["traffic", "tenants", name]).await
    }

    pub(super) async fn add_tenant(&self, t: &NewTenant) -> Result<Reply<Tenant>, CliError> {
        self.send(Method::POST, &["tenants"], t).await
    }

    pub(super) async fn update_tenant(
        &self,
        domain: &str,
        p: &TenantPatch,
    ) -> Result<Reply<Tenant>, CliError> {
        self.send(Method::PATCH, &["tenants", domain], p).await
    }

    pub(super) async fn move_tenant(
        &self,
        domain: &str,
        to: &str,
    ) -> Result<Reply<MovedTenant>, CliError> {
        let body = MoveTo {
            server_id: to.to_owned(),
        };
        self.send(Method::POST, &["tenants", domain, "move"], &body)
            .await
    }

    pub(super) async fn remove_tenant(&self, domain: &str) -> Result<(), CliError> {
        self.delete(&["tenants", domain]).await.map(drop)
    }

    /// A page of the instances (`page.server`: only those placed there).
    pub(super) async fn list_instances(
        &self,
        page: &ListQuery,
    ) -> Result<Reply<Vec<InstanceStatus>>, CliError> {
        self.call(Method::GET, &["instances"], Some(page), None)
            .await
    }

    /// One instance with its live state; `None` when there is none.
    pub(super) async fn instance(
        &self,
        key: &str,
    ) -> Result<Option<Reply<InstanceStatus>>, CliError> {
        match self.get(&["instances", key]).await {
            Ok(r) => Ok(Some(r)),
            Err(CliError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn spawn(&self, i: &NewInstance) -> Result<Reply<Instance>, CliError> {
        self.send(Method::POST, &["instances"], i).await
    }

    pub(super) async fn stop(&self, key: &str) -> Result<Stop, CliError> {
        let (status, json) = self.delete(&["instances", key]).await?;
        if status != StatusCode::ACCEPTED {
            return Ok(Stop::Done);
        }
        let message = serde_json::from_value::<StopPending>(json.clone())
            .map(|p| p.message)
            .unwrap_or_else(|_| format!("the stop of {key} is pending"));
        Ok(Stop::Pending { json, message })
    }

    /// The fleet's status with a page of its servers.
    pub(super) async fn status(&self, page: &ListQuery) -> Result<Reply<FleetStatus>, CliError> {
        self.call(Method::GET, &["status"], Some(page), None).await
    }

    pub(super) async fn reconcile(&self) -> Result<Reply<ReconcileReport>, CliError> {
        self.call(Method::POST, &["reconcile"], None, None).await
    }

    pub(super) async fn list_tokens(&self) -> Result<Reply<Vec<ApiToken>>, CliError> {
        self.get(&["tokens"]).await
    }

    pub(super) async fn create_token(&self, name: &str) -> Result<Reply<CreatedToken>, CliError> {
        let body = NewToken {
            name: name.to_owned(),
        };
        self.send(Method::POST, &["tokens"], &body).await
    }

    pub(super) async fn revoke_token(&self, id: &str) -> Result<(), CliError> {
        self.delete(&["tokens", id]).await.map(drop)
    }

    /// A page of the certificates (never a key).
    pub(super) async fn list_certificates(
        &self,
        page: &ListQuery,
    ) -> Result<Reply<Vec<CertificateInfo>>, CliError> {
        self.call(Method::GET, &["certificates"], Some(page), None)
            .await
    }

    pub(super) async fn certificate(&self, name: &str) -> Result<Reply<CertificateInfo>, CliError> {
        self.get(&["certificates", name]).await
    }

    pub(super) async fn put_certificate(
        &self,
        name: &str,
        body: &PutCertificate,
    ) -> Result<Reply<CertificateInfo>, CliError> {
        self.send(Method::PUT, &["certificates", name], body).await
    }

    pub(super) async fn remove_certificate(&self, name: &str) -> Result<(), CliError> {
        self.delete(&["certificates", name]).await.map(drop)
    }

    pub(super) async fn order_certificate(
        &self,
        domain: &str,
    ) -> Result<Reply<CertificateInfo>, CliError> {
        self.call(Method::POST, &["certificates", domain, "order"], None, None)
            .await
    }

    /// A page of the fleet's events, oldest first.
    pub(super) async fn events(&self, query: &EventsQuery) -> Result<Reply<Vec<Event>>, CliError> {
        self.call_query(Method::GET, &["events"], Some(query), None)
            .await
    }

    /// The lines an instance wrote, oldest first.
    pub(super) async fn logs(
        &self,
        tenant: &str,
        query: &LogsQuery,
    ) -> Result<Reply<Vec<LogLine>>, CliError> {
        self.call_query(Method::GET, &["tenants", tenant, "logs"], Some(query), None)
            .await
    }

    /// An instance's output followed: the answer, whose body is JSON lines
    /// (each a [`LogEvent`](crate::api::wire::LogEvent)) for as long as it
    /// lasts.
    pub(super) async fn follow_logs(
        &self,
        tenant: &str,
        query: &LogsQuery,
    ) -> Result<reqwest::Response, CliError> {
        let resp = self
            .builder(Method::GET, &["tenants", tenant, "logs"], Some(query))
            .timeout(FOLLOW_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        Err(self
            .refusal(status, &bytes)
            .unwrap_or_else(|| api_error(status, &bytes)))
    }

    /// The error of a followed answer that broke off.
    pub(super) fn stream_error(&self, e: &reqwest::Error) -> CliError {
        CliError::Unreachable {
            url: self.shown_url(),
            reason: format!("the stream broke: {}", root_cause(e)),
        }
    }
}
