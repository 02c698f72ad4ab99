//! A typed client of one tenement server's HTTP API (tenement-cli 0.2.1).
//!
//! One shared `reqwest::Client` keeps a keep-alive pool per server; a
//! [`TenementClient`] is a cheap view of it bound to one server's URL and token.
//! Every error names the server and quotes what it answered; the token is only
//! ever put in the `Authorization` header, never in a message.
//!
//! Facts of tenement 0.2.1 this client relies on: `POST /api/instances/spawn`
//! returns after ~0.5 s without waiting for the process, answers 200 for an instance
//! it already has, and (after a failed spawn) 200 with `"port": null` without
//! spawning anything until the name is DELETEd; `DELETE` answers 204, or 404 for an
//! instance it does not have; `GET /api/instances/{p}:{id}/health` runs a live probe.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{innermost_cause, Error, Result};
use crate::fleet::db::FleetOptions;
use crate::fleet::model::{InstanceState, Server};

/// The shared HTTP client behind every [`TenementClient`].
#[derive(Debug, Clone)]
pub struct TenementClients {
    http: reqwest::Client,
    request_timeout: Duration,
}

impl TenementClients {
    pub fn new(options: &FleetOptions) -> Self {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(options.connect_timeout)
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(8)
                .tcp_nodelay(true)
                .no_proxy()
        };
        let configured = match &options.server_roots {
            Some(roots) => builder().use_preconfigured_tls(roots.client_config()),
            None => builder(),
        };
        // Building fails only for a TLS configuration reqwest cannot take,
        // which `ServerRoots` checks when it is loaded.
        let http = configured.build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot build the tenement API client with its TLS configuration; using the public roots");
            builder().build().unwrap_or_default()
        });
        TenementClients {
            http,
            request_timeout: options.request_timeout,
        }
    }

    /// Whether the tenement server at `url` answers `GET /health` with a success
    /// within `timeout` (no token needed).
    pub async fn probe(&self, url: &str, timeout: Duration) -> bool {
        let url = format!("{}/health", url.trim_end_matches('/'));
        matches!(
            self.http.get(url).timeout(timeout).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// A client of `server`'s tenement API.
    pub fn for_server<'a>(&'a self, server: &'a Server) -> TenementClient<'a> {
        TenementClient {
            server,
            http: &self.http,
            timeout: self.request_timeout,
        }
    }
}

/// One instance as tenement lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TenementInstance {
    /// `"{process}:{id}"`.
    pub id: String,
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub uptime_secs: u64,
    #[serde(default)]
    pub idle_secs: u64,
    #[serde(default)]
    pub restarts: u64,
}

impl TenementInstance {
    /// slum's reading of tenement's health.
    pub fn state(&self) -> InstanceState {
        match self.health.as_str() {
            "unhealthy" | "failed" => InstanceState::Unhealthy,
            _ => InstanceState::Running,
        }
    }
}

/// What a spawn answered.
#[derive(Debug, Clone, Deserialize)]
pub struct SpawnReply {
    pub instance: String,
    pub port: Option<u16>,
}

/// One line of an instance's output.
#[derive(Debug, Clone, Deserialize)]
pub struct LogEntry {
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Deserialize)]
struct HealthReply {
    health: String,
}

#[derive(Deserialize)]
struct ErrorReply {
    error: String,
}

/// A view of the shared client bound to one server.
#[derive(Debug, Clone, Copy)]
pub struct TenementClient<'a> {
    server: &'a Server,
    http: &'a reqwest::Client,
    timeout: Duration,
}

impl<'a> TenementClient<'a> {
    /// The same client with another request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url.trim_end_matches('/'), path)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, self.url(path))
            .timeout(self.timeout);
        if let Some(token) = &self.server.token {
            rb = rb.bearer_auth(token);
        }
        rb
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        let reason = if e.is_timeout() {
            format!("no answer within {:.1}s", self.timeout.as_secs_f64())
        } else {
            innermost_cause(e)
        };
        Error::ServerUnreachable {
            server: self.server.id.clone(),
            reason,
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| self.unreachable(&e))?;
        Ok(resp)
    }

    /// Turns a non-success answer into `Error::Tenement`, quoting the body.
    async fn refusal(&self, resp: reqwest::Response) -> Error {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ErrorReply>(&body) {
            Ok(e) => e.error,
            Err(_) if body.trim().is_empty() => match status {
                401 => "unauthorized: the server's token is missing or wrong".to_owned(),
                429 => "too many failed authentications; retry in a few seconds".to_owned(),
                _ => "empty answer".to_owned(),
            },
            Err(_) => body.trim().chars().take(500).collect(),
        };
        Error::Tenement {
            server: self.server.id.clone(),
            status,
            message,
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        if !resp.status().is_success() {
            return Err(self.refusal(resp).await);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        serde_json::from_slice(&body).map_err(|e| Error::Tenement {
            server: self.server.id.clone(),
            status,
            message: format!(
                "unexpected answer ({e}): {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        })
    }

    /// `GET /health`: Ok when the server answers 200.
    pub async fn health(&self) -> Result<()> {
        let resp = self
            .send(self.request(reqwest::Method::GET, "/health"))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.refusal(resp).await)
        }
    }

    /// `GET /api/instances`.
    pub async fn list(&self) -> Result<Vec<TenementInstance>> {
        let resp = self
            .send(self.request(reqwest::Method::GET, "/api/instances"))
            .await?;
        self.json(resp).await
    }

    /// `POST /api/instances/spawn`.
    pub async fn spawn(&self, process: &str, id: &str) -> Result<SpawnReply> {
        let rb = self
            .request(reqwest::Method::POST, "/api/instances/spawn")
            .json(&serde_json::json!({ "process": process, "id": id }));
        let resp = self.send(rb).await?;
        self.json(resp).await
    }

    /// `DELETE /api/instances/{process}:{id}`. Ok(true) when it stopped an
    /// instance, Ok(false) when the server did not have it.
    pub async fn stop(&self, process: &str, id: &str) -> Result<bool> {
        let resp = self
            .send(self.request(
                reqwest::Method::DELETE,
                &format!("/api/instances/{process}:{id}"),
            ))
            .await?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.refusal(resp).await),
        }
    }

    /// `GET /api/instances/{process}:{id}/health` (a live probe): "healthy",
    /// "degraded", "unhealthy", "failed" or "unknown".
    pub async fn instance_health(&self, process: &str, id: &str) -> Result<String> {
        let resp = self
            .send(self.request(
                reqwest::Method::GET,
                &format!("/api/instances/{process}:{id}/health"),
            ))
            .await?;
        Ok(self.json::<HealthReply>(resp).await?.health)
    }

    /// The newest `limit` lines an instance wrote (`GET /api/logs`).
    pub async fn logs(&self, process: &str, id: &str, limit: usize) -> Result<Vec<LogEntry>> {
        let rb = self.request(reqwest::Method::GET, "/api/logs").query(&[
            ("process", process),
            ("id", id),
            ("limit", &limit.to_string()),
        ]);
        let resp = self.send(rb).await?;
        self.json(resp).await
    }
}
