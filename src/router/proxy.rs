//! The proxy: one router thread's way of answering a request, from its Host
//! to the server's answer passed back (or the router's own, when the server
//! cannot give one).

use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use slum_http1::timer::{self as coarse_timer, CoarseTimer, Elapsed};
use slum_http1::{
    BodyProgress, ClientConn, ClientStream, Ended, HeaderLines, RawHeaders, RequestBody,
    RequestHead, ResponseHead,
};
// The coarse timer's clock is tokio's, which tests can pause.
use tokio::time::Instant;

use super::answers::{answer, public_error, Answer, Failure};
use super::control::ControlPlane;
use super::headers::{
    is_upgrade, prepare_request_headers, request_host, routed_host, strip_hop_by_hop,
    strip_passed_hop_by_hop, upstream_uri, Peer,
};
use super::limits::{Client, InFlight, InFlightCaps};
use super::plain::PlainHttp;
use super::route_table::{BadHost, Decision, Pick, RouteTable};
use super::shutdown::ClosingWatch;
use super::upstream_pool::{PooledBody, UpstreamError, UpstreamPool};
use super::wake::{Wakes, WAKE_HOLD_DOWN};
use crate::lock;
use crate::metrics::{Metrics, RouterShard};

/// What every router thread shares.
pub(super) struct Common {
    pub(super) control: Arc<dyn ControlPlane>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) upstream_timeout: Duration,
    pub(super) connect_timeout: Duration,
    /// Largest response body to a bodiless GET read whole before its head
    /// goes to the client (see [`Proxy::send`]).
    pub(super) whole_response_bytes: u64,
    pub(super) wakes: Wakes,
    /// The runtime of the control plane. What the router asks of it that may
    /// reach the fleet database (wakes, health reports) runs there: its
    /// connections then belong to a runtime that outlives the router threads.
    pub(super) control_runtime: tokio::runtime::Handle,
    /// The caps on requests in flight.
    pub(super) in_flight: InFlightCaps,
    /// What the plain listener answers itself (ACME challenges, redirects
    /// to HTTPS), and the HSTS header of HTTPS answers.
    pub(super) plain: PlainHttp,
}

/// A client's request body as the proxy sends it on: read off an HTTP/1.1
/// connection, or an HTTP/2 stream's.
pub(super) trait ClientBody:
    Body<Data = Bytes, Error = std::io::Error> + Unpin + Send + Sync + 'static
{
    /// How the body moves, while it is read; `None` for no body.
    fn progress(&self) -> Option<Arc<BodyProgress>>;
}

impl<S: ClientStream> ClientBody for RequestBody<S> {
    fn progress(&self) -> Option<Arc<BodyProgress>> {
        RequestBody::progress(self)
    }
}

/// A server's header lines with the router's `Strict-Transport-Security`
/// after them (unless the server sent its own).
struct WithHsts<'a> {
    headers: &'a RawHeaders,
    hsts: &'a HeaderValue,
}

impl HeaderLines for WithHsts<'_> {
    fn content_length(&self) -> std::io::Result<Option<u64>> {
        HeaderLines::content_length(self.headers)
    }

    fn has_date(&self) -> bool {
        HeaderLines::has_date(self.headers)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        HeaderLines::encode(self.headers, out);
        out.extend_from_slice(b"strict-transport-security: ");
        out.extend_from_slice(self.hsts.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// One router thread's proxy: the shared part and its own connection pools.
pub(super) struct Proxy {
    pub(super) common: Arc<Common>,
    pub(super) pool: UpstreamPool,
    pub(super) metrics: Arc<RouterShard>,
    /// The thread's timeouts.
    pub(super) timer: CoarseTimer,
    /// The thread's own handle on the route table in force.
    pub(super) table: Mutex<Arc<ThreadTable>>,
}

/// A router thread's handle on a route table (see [`Proxy::table`]).
pub(super) struct ThreadTable(pub(super) Arc<RouteTable>);

impl std::ops::Deref for ThreadTable {
    type Target = RouteTable;

    fn deref(&self) -> &RouteTable {
        &self.0
    }
}

/// A server's response: from the pool, or, for an upgrade, from hyper's client.
enum Sent {
    Pooled(ResponseHead, PooledBody),
    Upgrade(Response<Incoming>),
}

impl Proxy {
    /// Answers the requests of one client connection, in order, until the
    /// client closes it or the thread shuts down (the request in flight is
    /// answered first, with `Connection: close`). `client`: the counts of
    /// the connection's client address.
    pub(super) async fn serve_connection<S: ClientStream>(
        &self,
        mut conn: ClientConn<S>,
        peer: Peer,
        client: &Client,
        mut closing: ClosingWatch,
    ) -> Result<(), Ended> {
        loop {
            let next = conn.read_request(|cx| closing.closed(cx)).await;
            // A request refused as it was read was answered too: counted.
            if let Err(Ended::Refused(status, _)) = &next {
                self.metrics.count(status.as_u16());
            }
            let Some((mut parts, body)) = next? else {
                break;
            };
            // Counted in flight once sent on, until its answer is written
            // whole (or its WebSocket closes, or its client leaves).
            let mut held = InFlight::new(client);
            // A client that leaves before its answer cancels the exchange.
            let route = self.route(&mut parts, body, &peer, &mut held);
            let Some(answer) = conn.unless_gone(route).await else {
                return Ok(());
            };
            self.metrics.count(answer.status().as_u16());
            let hsts = self.common.plain.hsts.as_ref().filter(|_| peer.https);
            let keep = match answer {
                Answer::Passed {
                    status,
                    headers,
                    body,
                } => match hsts {
                    Some(hsts) if !headers.contains("strict-transport-security") => {
                        let headers = WithHsts {
                            headers: &headers,
                            hsts,
                        };
                        conn.write_answer(status, &headers, body, closing.is_closed())
                            .await?
                    }
                    _ => {
                        conn.write_answer(status, &headers, body, closing.is_closed())
                            .await?
                    }
                },
                Answer::Made(mut resp) => {
                    if let Some(hsts) = hsts {
                        resp.headers_mut()
                            .entry(header::STRICT_TRANSPORT_SECURITY)
                            .or_insert_with(|| hsts.clone());
                    }
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(upstream) = resp.extensions_mut().remove::<OnUpgrade>() {
                            return Ok(conn.switch(resp, upstream).await?);
                        }
                    }
                    conn.write_response(resp, closing.is_closed()).await?
                }
            };
            if !keep {
                break;
            }
        }
        Ok(())
    }

    /// The route table in force. Taking it is one reference count this
    /// thread alone touches: router threads do not contend for the table's.
    fn table(&self) -> Arc<ThreadTable> {
        let mut mine = lock(&self.table);
        if !self.common.control.is_current(&mine.0) {
            *mine = Arc::new(ThreadTable(self.common.control.table()));
        }
        Arc::clone(&mine)
    }

    pub(super) async fn route<B: ClientBody, C: Deref<Target = Client>>(
        &self,
        parts: &mut RequestHead,
        body: B,
        peer: &Peer,
        held: &mut InFlight<C>,
    ) -> Answer {
        // The tenant's figures count from here to the answer's head.
        let started = Instant::now();
        let mut table = self.table();
        // The normalised host, as a header value: it goes on as X-Forwarded-Host.
        let (host, mut decision) = match routed_host(parts, &table) {
            Some(found) => found,
            None => {
                let host = match request_host(parts).map(HeaderValue::try_from) {
                    Ok(Ok(host)) => host,
                    Err(BadHost::Missing) => {
                        return answer(StatusCode::BAD_REQUEST, "missing Host header".into())
                    }
                    Ok(Err(_)) | Err(BadHost::Malformed) => {
                        return answer(StatusCode::BAD_REQUEST, "malformed Host header".into())
                    }
                    Err(BadHost::Conflicting) => {
                        return answer(
                            StatusCode::BAD_REQUEST,
                            "the Host header and the request target name different hosts".into(),
                        )
                    }
                };
                let decision = table.route(host.to_str().unwrap_or_default());
                (host, decision)
            }
        };
        let name = host.to_str().unwrap_or_default();
        // The plain listener's own answers, for tenant domains: an ACME
        // challenge, or a redirect to HTTPS.
        if !peer.https && !matches!(decision, Decision::UnknownHost) {
            if let Some(answer) = self.common.plain.answer(parts, name) {
                return answer;
            }
        }
        if let Decision::Spawn(route) = &decision {
            // Boxed: only a tenant's first request takes this path.
            if let Err(reason) = Box::pin(self.common.wakes.wake(
                &self.common.control,
                &self.common.control_runtime,
                route,
            ))
            .await
            {
                let mut resp = public_error(
                    &self.common.metrics,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this site could not be started; retry in a few seconds",
                    &route.home_server,
                    "not_started",
                    &format_args!(
                        "tenant '{}' could not be started on server '{}': {reason}",
                        route.tenant, route.home_server
                    ),
                );
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(WAKE_HOLD_DOWN.as_secs()),
                );
                return self.answered(&route.tenant, Answer::Made(resp), started);
            }
            table = self.table();
            decision = table.route(name);
        }
        match decision {
            Decision::Forward {
                primary, fallback, ..
            } => {
                let tenant = primary.tenant();
                let answer = self
                    .forward(parts, body, peer, &host, primary, fallback, held)
                    .await;
                self.answered(tenant, answer, started)
            }
            Decision::UnknownHost => answer(
                StatusCode::NOT_FOUND,
                format!("no tenant has the domain '{name}'"),
            ),
            Decision::ServerDown(down) => {
                let resp = public_error(
                    &self.common.metrics,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this site is unavailable: its servers are down",
                    down.servers().first().map_or("", String::as_str),
                    "server_down",
                    &format_args!(
                        "tenant '{}' is unavailable: its server {} is down",
                        down.tenant(),
                        down.servers()
                            .iter()
                            .map(|s| format!("'{s}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                self.answered(down.tenant(), Answer::Made(resp), started)
            }
            Decision::Spawn(route) => {
                let resp = public_error(
                    &self.common.metrics,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this site was started but cannot be reached yet; retry",
                    &route.home_server,
                    "not_routable",
                    &format_args!(
                        "tenant '{}' was started but is not routable yet",
                        route.tenant
                    ),
                );
                self.answered(&route.tenant, Answer::Made(resp), started)
            }
        }
    }

    /// Counts `answer` in `tenant`'s traffic figures, with the time since
    /// `started`.
    fn answered(&self, tenant: &str, answer: Answer, started: Instant) -> Answer {
        let now = Instant::now();
        self.metrics.tenant_answered(
            tenant,
            answer.status().as_u16(),
            now.saturating_duration_since(started),
            now,
        );
        answer
    }

    /// Sends the request to `primary`, unless its client or `primary` has
    /// reached its cap on requests in flight (429, 503). A GET or HEAD
    /// without a body whose connection to `primary` fails (refused, or broken
    /// before the answer went to the client), or that is still waiting when
    /// `primary` is declared offline, is sent once more to the first
    /// fallback, so that the client sees no error; a refused connection also
    /// counts against the server's health at once.
    #[allow(clippy::too_many_arguments)]
    async fn forward<B: ClientBody, C: Deref<Target = Client>>(
        &self,
        parts: &mut RequestHead,
        body: B,
        peer: &Peer,
        host: &HeaderValue,
        primary: Pick<'_>,
        fallback: Option<Pick<'_>>,
        held: &mut InFlight<C>,
    ) -> Answer {
        if let Err(busy) = held.take(&primary.upstream.load, self.common.in_flight) {
            self.common.metrics.request_refused(busy.reason());
            tracing::debug!(server = %primary.upstream.server_id, cap = busy.reason(),
                "request refused");
            return busy.answer();
        }
        let upgrade = is_upgrade(&parts.headers);
        let Some(upstream_host) = primary.host() else {
            let broken = Failure::Broken("the tenant's Host header cannot be made".into());
            return self.failure_answer(&primary.upstream.server_id, broken);
        };
        prepare_request_headers(parts, upgrade, peer, host, &upstream_host);
        let retry = fallback.filter(|_| {
            matches!(parts.method, Method::GET | Method::HEAD) && !upgrade && body.is_end_stream()
        });
        // Boxed: most requests have no backup to go to.
        let retry_parts = retry.map(|_| Box::new(parts.clone()));

        let sent = if retry.is_some() {
            // A request that can go to the backup does not wait out a server
            // that is declared offline meanwhile (hung, or cut off). Boxed,
            // as is every path but the common one: the request's future stays
            // small, and it is moved for each request.
            Box::pin(async {
                tokio::select! {
                    r = self.send(parts, Some(body), primary, false) => r,
                    _ = self.common.control.until_offline(&primary.upstream.server_id) => {
                        Err(Failure::Broken("the server went offline".into()))
                    }
                }
            })
            .await
        } else {
            self.send(parts, Some(body), primary, upgrade).await
        };
        match sent {
            Ok(resp) => self.respond(resp),
            Err(failure) => Box::pin(self.failed(failure, primary, retry.zip(retry_parts))).await,
        }
    }

    /// After `primary` failed a request: reports the server when it could not
    /// be reached, and sends the request to the backup when it can go there.
    async fn failed(
        &self,
        failure: Failure,
        primary: Pick<'_>,
        retry: Option<(Pick<'_>, Box<RequestHead>)>,
    ) -> Answer {
        if failure.server_unreachable() {
            // On the control plane's runtime: the report may write to the
            // fleet database.
            let control = Arc::clone(&self.common.control);
            let server = primary.upstream.server_id.clone();
            let reported = self
                .common
                .control_runtime
                .spawn(async move { control.server_unreachable(&server).await })
                .await;
            if let Err(e) = reported {
                tracing::error!(server = %primary.upstream.server_id, error = %e,
                    "the report of an unreachable server failed");
            }
        }
        if let (Some((backup, mut parts)), true) = (retry, failure.connection_failed()) {
            tracing::info!(server = %primary.upstream.server_id, backup = %backup.upstream.server_id,
                "retrying on the backup");
            self.common
                .metrics
                .backup_retries
                .with_label_values(&[&primary.upstream.server_id])
                .inc();
            let Some(backup_host) = backup.host() else {
                let broken = Failure::Broken("the tenant's Host header cannot be made".into());
                return self.failure_answer(&backup.upstream.server_id, broken);
            };
            parts.set(header::HOST, backup_host);
            match self
                .send::<RequestBody>(&mut parts, None, backup, false)
                .await
            {
                Ok(resp) => return self.respond(resp),
                Err(f) => return self.failure_answer(&backup.upstream.server_id, f),
            }
        }
        self.failure_answer(&primary.upstream.server_id, failure)
    }

    /// One exchange with one server, up to the response head; for a bodiless
    /// GET whose answer is small (a `Content-Length` up to the configured
    /// limit), up to the end of its body. Such a body is read whole before
    /// the head goes to the client, as nginx's response buffering does: a
    /// server that dies, hangs or is cut off between its head and its body
    /// then fails the exchange (502, 504, or the backup's answer) instead of
    /// leaving the client a head with no body, and the upstream timeout
    /// bounds the whole wait. Small bodies nearly always come with their head,
    /// and then cost one comparison: no wait, no timer, no copy.
    async fn send<B: ClientBody>(
        &self,
        parts: &mut RequestHead,
        body: Option<B>,
        target: Pick<'_>,
        upgrade: bool,
    ) -> Result<Sent, Failure> {
        let upstream = target.upstream;
        let origin = upstream
            .origin
            .as_ref()
            .ok_or_else(|| Failure::Broken(format!("unusable url '{}'", upstream.url)))?;
        parts.uri = upstream_uri(&upstream.path_prefix, &parts.uri)
            .map_err(|e| Failure::Broken(format!("unusable request path: {e}")))?;
        let started = Instant::now();
        let progress = body.as_ref().and_then(ClientBody::progress);
        let whole = parts.method == Method::GET
            && !upgrade
            && body.as_ref().is_none_or(|b| b.is_end_stream());
        let sent = match (upgrade, body) {
            (true, Some(body)) => {
                let mut req = Request::new(body.map_err(Into::into).boxed());
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = parts.header_map().map_err(Failure::Broken)?;
                let sent = self.pool.send_upgrade(origin, req);
                Box::pin(self.within_upstream_timeout(started, progress.as_deref(), sent))
                    .await
                    .map(|r| r.map(Sent::Upgrade))
            }
            (_, body) => {
                let sent = self.pool.send(&upstream.url, origin, parts, body);
                self.within_upstream_timeout(started, progress.as_deref(), sent)
                    .await
                    .map(|r| r.map(|(head, body)| Sent::Pooled(head, body)))
            }
        };
        match sent {
            Err(_) => {
                self.metrics
                    .upstream_failed(&upstream.server_id, Instant::now());
                Err(Failure::HeadTimeout)
            }
            Ok(Err(e)) => {
                let failure = Failure::of(e);
                // A request body the client broke off or held back is not
                // the server's failure.
                if !matches!(failure, Failure::BadBody(_) | Failure::BodyTimeout(_)) {
                    self.metrics
                        .upstream_failed(&upstream.server_id, Instant::now());
                }
                if let (Failure::BodyTimeout(_), Some(progress)) = (&failure, &progress) {
                    self.common
                        .metrics
                        .request_refused(match progress.too_slow() {
                            true => "body_too_slow",
                            false => "body_timeout",
                        });
                }
                Err(failure)
            }
            Ok(Ok(sent)) => {
                let status = match &sent {
                    Sent::Pooled(head, _) => head.status,
                    Sent::Upgrade(resp) => resp.status(),
                };
                let now = Instant::now();
                self.metrics.upstream_answered(
                    &upstream.server_id,
                    status.as_u16(),
                    now.saturating_duration_since(started),
                    now,
                );
                let (head, mut body) = match (sent, whole) {
                    (Sent::Pooled(head, body), true) if self.reads_whole(&body) => (head, body),
                    (sent, _) => return Ok(sent),
                };
                // Nearly always in already, with the head: a comparison, with
                // no timer and no future.
                let at_once = body.poll_whole(&mut Context::from_waker(std::task::Waker::noop()));
                match at_once {
                    Poll::Ready(Ok(())) => Ok(Sent::Pooled(head, body)),
                    Poll::Ready(Err(e)) => Err(Failure::of(UpstreamError::Exchange(e))),
                    // Boxed: seldom (and the answer then waits in that future
                    // alone, not in every request's).
                    Poll::Pending => Box::pin(self.read_rest(started, head, body)).await,
                }
            }
        }
    }

    /// Whether `body`, the answer to a bodiless GET, is read whole before its
    /// head goes on (see [`Proxy::send`]).
    fn reads_whole(&self, body: &PooledBody) -> bool {
        let size = body.size_hint().exact().unwrap_or(u64::MAX);
        size > 0 && size <= self.common.whole_response_bytes
    }

    /// The rest of a body to read whole (see [`Proxy::send`]), within what is
    /// left of the upstream timeout.
    async fn read_rest(
        &self,
        started: Instant,
        head: ResponseHead,
        mut body: PooledBody,
    ) -> Result<Sent, Failure> {
        match self
            .within_upstream_timeout(started, None, body.read_whole())
            .await
        {
            Ok(Ok(())) => Ok(Sent::Pooled(head, body)),
            Ok(Err(e)) => Err(Failure::of(UpstreamError::Exchange(e))),
            Err(_) => Err(Failure::HeadTimeout),
        }
    }

    /// `sent`, or [`Elapsed`] when the server has had the upstream timeout
    /// to answer: counted from `started`, or, while a request body goes out,
    /// from the last bytes it gave. A body that waits for its client is
    /// bounded by its own timeout instead (an upload slower than the upstream
    /// timeout is not cut off, nor blamed on the server).
    async fn within_upstream_timeout<F: Future>(
        &self,
        started: Instant,
        progress: Option<&BodyProgress>,
        sent: F,
    ) -> Result<F::Output, Elapsed> {
        let limit = self.common.upstream_timeout;
        let mut deadline = coarse_timer::after(started, limit);
        let mut sent = std::pin::pin!(sent);
        loop {
            match self.timer.timeout_at(deadline, sent.as_mut()).await {
                Ok(out) => return Ok(out),
                Err(elapsed) => {
                    let Some(progress) = progress else {
                        return Err(elapsed);
                    };
                    let now = self.timer.now();
                    deadline = match progress.waiting_for_client() {
                        true => coarse_timer::after(now, limit),
                        false => coarse_timer::after(progress.last_moved().max(started), limit),
                    };
                    if deadline <= now {
                        return Err(elapsed);
                    }
                }
            }
        }
    }

    /// Passes the server's answer on: hop-by-hop headers removed, body
    /// streamed. A switch of protocols keeps its headers, and the server's
    /// side of the switch in its extensions, for the client's connection to
    /// join.
    fn respond(&self, sent: Sent) -> Answer {
        let (mut parts, body) = match sent {
            Sent::Pooled(mut head, body) => {
                strip_passed_hop_by_hop(&mut head.headers);
                return Answer::Passed {
                    status: head.status,
                    headers: head.headers,
                    body,
                };
            }
            Sent::Upgrade(resp) => resp.into_parts(),
        };
        if parts.status == StatusCode::SWITCHING_PROTOCOLS
            && parts.extensions.get::<OnUpgrade>().is_some()
        {
            let empty = http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed();
            return Answer::Made(Response::from_parts(parts, empty));
        }
        strip_hop_by_hop(&mut parts.headers, false);
        Answer::Made(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ))
    }

    /// The router's answer for `server` failing so.
    fn failure_answer(&self, server: &str, failure: Failure) -> Answer {
        failure.answer(
            server,
            self.common.upstream_timeout,
            self.common.connect_timeout,
            &self.common.metrics,
        )
    }
}
