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

    /// Whether the tenement server at `url` routes the Hosts slum sends it
    /// for `domain` to its instances, and not to its own routes. Costs two
    /// `GET /health` without a token, never a spawn (see [`RoutingCheck`]).
    pub async fn check_routing(&self, url: &str, domain: &str, timeout: Duration) -> RoutingCheck {
        let url = format!("{}/health", url.trim_end_matches('/'));
        let ask = |host: String| {
            let request = self
                .http
                .get(&url)
                .header(reqwest::header::HOST, host)
                .timeout(timeout);
            async move {
                let resp = request.send().await.map_err(|e| {
                    if e.is_timeout() {
                        format!("no answer within {:.1}s", timeout.as_secs_f64())
                    } else {
                        innermost_cause(&e)
                    }
                })?;
                let status = resp.status().as_u16();
                // Both answers looked for are a few bytes; of anything else
                // only the start is kept, for the message.
                let body = resp.bytes().await.unwrap_or_default();
                let body = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
                Ok(Answer { status, body })
            }
        };
        let (instance, own) = futures::join!(ask(probe_host(domain)), ask(own_probe_host(domain)));
        RoutingCheck::judge(domain, instance, own)
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

/// The process label of the routing check's first Host: a name no tenement
/// config gives a service, so that tenement answers it `404 Not found`
/// rather than waking (spawning) an instance.
pub const PROBE_PROCESS: &str = "slum-routing-probe";

/// The Host of the routing check's first request, `{id}.{process}.{domain}`
/// like a tenant's but for a process no server has.
pub fn probe_host(domain: &str) -> String {
    format!("probe.{PROBE_PROCESS}.{domain}")
}

/// The Host of the routing check's second request, `probe..{domain}`: with
/// an empty label before `domain`, so that no server routes it to an
/// instance that could exist. tenement routing by `domain` finds an empty
/// process name in it and answers with its own routes; tenement routing by a
/// parent of `domain` (`example.com` for `x.example.com`) finds the process
/// `.x`, which no config has, and answers `404`; no request reaches an app.
pub fn own_probe_host(domain: &str) -> String {
    format!("probe..{domain}")
}

/// A status and the start of a body, as the routing check reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl Answer {
    /// tenement's own `GET /health`: 200 `{"status":"ok"}`.
    fn is_own_health(&self) -> bool {
        #[derive(Deserialize)]
        struct Health {
            status: String,
        }
        self.status == 200
            && serde_json::from_str::<Health>(&self.body).is_ok_and(|h| h.status == "ok")
    }

    /// tenement's instance routing for a process it lacks (404; 503 is its
    /// answer when a process has no instance to give the request).
    pub(crate) fn is_instance_routing(&self) -> bool {
        matches!(self.status, 404 | 503)
    }
}

/// What [`TenementClients::check_routing`] found.
///
/// Two requests tell tenement's instance routing from its own routes, with
/// no token (so no failed authentication counts against slum), no spawn and
/// nothing sent to an app:
/// - `GET /health` with Host [`probe_host`] (`probe.slum-routing-probe.{domain}`)
///   must be instance routing (404 for the unknown process). tenement's own
///   `{"status":"ok"}` means it does not take the Host as one of its
///   instances' (its `--domain` is not a suffix of it): the Hosts of slum's
///   tenants would be served tenement's dashboard and API.
/// - `GET /health` with Host [`own_probe_host`] (`probe..{domain}`) must be
///   tenement's own answer. Instance routing there means tenement routes by a
///   parent of `domain` (its `--domain` is `example.com`, slum's
///   `x.example.com`): a tenant's Host would name the wrong process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingCheck {
    /// Both answers are as they must be: the server routes by `domain`.
    Routes,
    /// The server answered, and routes by another domain: what it answered,
    /// and which `--domain` to use, for people.
    Mismatch(String),
    /// Nothing known: no answer, or an answer tenement would not give.
    Unknown(String),
}

impl RoutingCheck {
    /// The verdict on the answers for Host [`probe_host`] (`instance`) and
    /// Host [`own_probe_host`] (`own`) of `domain`, or why each did not come.
    pub(crate) fn judge(
        domain: &str,
        instance: std::result::Result<Answer, String>,
        own: std::result::Result<Answer, String>,
    ) -> RoutingCheck {
        let (instance_host, own_host) = (probe_host(domain), own_probe_host(domain));
        let fix = format!(
            "start it with `ten serve --domain {domain}`, or give the server the `--domain` \
             its `ten serve` runs with (tenement's default is localhost)"
        );
        let instance = match instance {
            Ok(a) => a,
            Err(e) => {
                return RoutingCheck::Unknown(format!("no answer for '{instance_host}': {e}"))
            }
        };
        if instance.is_own_health() {
            return RoutingCheck::Mismatch(format!(
                "tenement answered its own /health for '{instance_host}' instead of routing it \
                 to an instance (tenants would be served its dashboard and API); {fix}"
            ));
        }
        if !instance.is_instance_routing() {
            return RoutingCheck::Unknown(unexpected(&instance_host, &instance));
        }
        let own = match own {
            Ok(a) => a,
            Err(e) => return RoutingCheck::Unknown(format!("no answer for '{own_host}': {e}")),
        };
        if own.is_own_health() {
            RoutingCheck::Routes
        } else if own.is_instance_routing() {
            RoutingCheck::Mismatch(format!(
                "tenement routed '{own_host}' to an instance, so it routes by a parent domain \
                 of '{domain}' (tenants would reach the wrong process); {fix}"
            ))
        } else {
            RoutingCheck::Unknown(unexpected(&own_host, &own))
        }
    }
}

fn unexpected(host: &str, answer: &Answer) -> String {
    format!(
        "answered {} for '{host}', which tenement would not: {:?}",
        answer.status,
        answer.body.chars().take(80).collect::<String>()
    )
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LogEntry {
    /// When tenement read it, in Unix milliseconds.
    #[serde(default)]
    pub timestamp: u64,
    /// `stdout` or `stderr`.
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub message: String,
}

/// What [`TenementClient::query_logs`] asks for: an instance's lines, of
/// one stream (`stdout`, `stderr`) or both, containing a text, the newest
/// `limit`.
#[derive(Debug, Clone, Default)]
pub struct LogQuery<'a> {
    pub level: Option<&'a str>,
    pub search: Option<&'a str>,
    pub limit: usize,
}

/// How long a log stream may stay open before it is opened again.
const LOG_STREAM_TIMEOUT: Duration = Duration::from_secs(3600);

/// The lines of an instance's output as tenement streams them
/// (`GET /api/logs/stream`, server-sent events of one [`LogEntry`] each).
pub struct LogStream {
    response: reqwest::Response,
    server: String,
    /// What came and is not a whole event yet.
    pending: Vec<u8>,
}

impl LogStream {
    /// The next line: `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<LogEntry>> {
        loop {
            if let Some(entry) = self.next_buffered() {
                return Ok(Some(entry));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.pending.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(Error::ServerUnreachable {
                        server: self.server.clone(),
                        reason: innermost_cause(&e),
                    })
                }
            }
        }
    }

    /// The next whole event's entry, if one has come; comments (keep-alives)
    /// and events that are not an entry are passed over.
    fn next_buffered(&mut self) -> Option<LogEntry> {
        loop {
            let end = self.pending.windows(2).position(|w| w == b"\n\n")?;
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                continue;
            }
            if let Ok(entry) = serde_json::from_str(&data.join("\n")) {
                return Some(entry);
            }
        }
    }
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
        self.query_logs(
            process,
            id,
            &LogQuery {
                limit,
                ..Default::default()
            },
        )
        .await
    }

    /// An instance's lines as `query` asks for them, oldest first
    /// (`GET /api/logs`; tenement keeps the last 10,000 lines of the server).
    pub async fn query_logs(
        &self,
        process: &str,
        id: &str,
        query: &LogQuery<'_>,
    ) -> Result<Vec<LogEntry>> {
        let limit = query.limit.to_string();
        let mut params = vec![("process", process), ("id", id), ("limit", &limit)];
        if let Some(level) = query.level {
            params.push(("level", level));
        }
        if let Some(search) = query.search {
            params.push(("search", search));
        }
        let rb = self
            .request(reqwest::Method::GET, "/api/logs")
            .query(&params);
        let resp = self.send(rb).await?;
        self.json(resp).await
    }

    /// The lines an instance writes from now on, of one stream (`level`) or
    /// both (`GET /api/logs/stream`). Once this returns, every line the
    /// instance writes comes through it, until the server ends it (after an
    /// hour at most, to be opened again).
    pub async fn stream_logs(
        &self,
        process: &str,
        id: &str,
        level: Option<&str>,
    ) -> Result<LogStream> {
        let mut params = vec![("process", process), ("id", id)];
        if let Some(level) = level {
            params.push(("level", level));
        }
        let rb = self
            .request(reqwest::Method::GET, "/api/logs/stream")
            .query(&params)
            .timeout(LOG_STREAM_TIMEOUT);
        // The head is due within the usual timeout; only the body may last.
        let resp = tokio::time::timeout(self.timeout, self.send(rb))
            .await
            .map_err(|_| Error::ServerUnreachable {
                server: self.server.id.clone(),
                reason: format!("no answer within {:.1}s", self.timeout.as_secs_f64()),
            })??;
        if !resp.status().is_success() {
            return Err(self.refusal(resp).await);
        }
        Ok(LogStream {
            response: resp,
            server: self.server.id.clone(),
            pending: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> std::result::Result<Answer, String> {
        Ok(Answer {
            status,
            body: body.into(),
        })
    }

    /// The verdict on an answer for the probe Host and one for the bare domain.
    fn judge(
        instance: std::result::Result<Answer, String>,
        own: std::result::Result<Answer, String>,
    ) -> RoutingCheck {
        RoutingCheck::judge("x.example.com", instance, own)
    }

    #[test]
    fn the_routing_check_tells_instance_routing_from_tenements_own_routes() {
        let own = || answer(200, r#"{"status":"ok"}"#);
        let unknown_process = || answer(404, "Not found");
        assert_eq!(judge(unknown_process(), own()), RoutingCheck::Routes);

        // tenement's own /health for a tenant-shaped Host: its dashboard and
        // API would be public.
        let RoutingCheck::Mismatch(why) = judge(own(), own()) else {
            panic!("not a mismatch")
        };
        assert!(
            why.contains("its own /health for 'probe.slum-routing-probe.x.example.com'"),
            "{why}"
        );
        assert!(why.contains("`ten serve --domain x.example.com`"), "{why}");

        // The bare domain taken for an instance's (a process's, or one with
        // no instance running): tenement routes by a parent domain.
        for parent in [
            unknown_process(),
            answer(503, "Service temporarily unavailable"),
        ] {
            let RoutingCheck::Mismatch(why) = judge(unknown_process(), parent) else {
                panic!("not a mismatch")
            };
            assert!(why.contains("parent domain"), "{why}");
            assert!(why.contains("`ten serve --domain x.example.com`"), "{why}");
        }
    }

    #[test]
    fn no_answer_or_not_tenements_says_nothing_of_the_domain() {
        let own = || answer(200, r#"{"status":"ok"}"#);
        let unknown_process = || answer(404, "Not found");
        for (instance, bare) in [
            (Err("connection refused".to_owned()), own()),
            (unknown_process(), Err("no answer within 1.0s".to_owned())),
            // Something else answers for tenement: a 200 that is not its
            // health, a 502 of a proxy in front.
            (answer(200, "<html>hello</html>"), own()),
            (answer(502, "Bad Gateway"), own()),
            (unknown_process(), answer(200, r#"{"status":"degraded"}"#)),
        ] {
            assert!(
                matches!(judge(instance, bare), RoutingCheck::Unknown(_)),
                "judged"
            );
        }
    }
}
