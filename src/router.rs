//! The router: the reverse proxy in front of the fleet.
//!
//! A request's Host (and nothing else) picks its tenant in the in-memory
//! [`RouteTable`](crate::route_table::RouteTable); the decision is a plain
//! function there, and this module moves the bytes: it rewrites Host to the
//! tenement mapping (`{tenant}.{process}.{server domain}`), streams bodies both
//! ways without buffering, passes `Upgrade` (WebSocket) through, keeps a pool of
//! keep-alive connections per server, and answers its own failures with a status
//! and a one-line body that says what went wrong.
//!
//! A tenant without an instance is spawned on its home server by its first
//! request; concurrent first requests wait for that one spawn.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri};
use slum_http1::timer::{self as coarse_timer, CoarseTimer, Elapsed};
use slum_http1::{
    tokens, BodyProgress, ClientConn, Ended, ExchangeError, Limits, RawHeaders, RequestBody,
    RequestHead, ResponseHead,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
// The coarse timer's clock is tokio's, which tests can pause.
use tokio::time::Instant;

use crate::error::Error;
use crate::lock;
use crate::metrics::RouterShard;
use crate::route_table::{normalize_host, BadHost, Decision, DomainRoute, RouteTable, Target};
use crate::serve::{AppState, ServeConfig};
use crate::supervisor::AbortOnDrop;
use crate::tenement::innermost_cause;
use crate::upstream_pool::{PooledBody, UpstreamError, UpstreamPool};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the router answers with: a server's answer passed on (its header
/// lines as the server sent them, its body as it comes), or a response the
/// router made (its own answers, and what hyper's client brought back for an
/// upgrade).
enum Answer {
    Passed {
        status: StatusCode,
        headers: RawHeaders,
        body: PooledBody,
    },
    Made(Response<BoxBody<Bytes, BoxError>>),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Passed { status, .. } => *status,
            Answer::Made(resp) => resp.status(),
        }
    }
}

/// A server's response: from the pool, or, for an upgrade, from hyper's client.
enum Sent {
    Pooled(ResponseHead, PooledBody),
    Upgrade(Response<Incoming>),
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), by
/// their lower-case names: looking a name up among them is a comparison of
/// lengths, mostly, where comparing header names is not.
static HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A spawn in progress, shared by every request waiting for it.
type PendingSpawn = Shared<BoxFuture<'static, Result<(), Arc<String>>>>;

/// How long a tenant whose spawn failed is answered 503 at once before its
/// next request tries again.
const WAKE_HOLD_DOWN: Duration = Duration::from_secs(5);

/// When a wake failed, and why.
type FailedWake = (Instant, Arc<String>);

/// How often a router thread's clock moves: its timeouts end to within this.
const TICK: Duration = Duration::from_millis(100);

/// A connection handed to a router thread.
type Handoff = (std::net::TcpStream, SocketAddr);

/// What every router thread shares.
struct Common {
    state: AppState,
    upstream_timeout: Duration,
    connect_timeout: Duration,
    spawning: Arc<Mutex<HashMap<String, PendingSpawn>>>,
    /// Instances whose wake failed lately: when, and why. Requests for them
    /// are answered at once until [`WAKE_HOLD_DOWN`] has passed, rather than
    /// each starting a spawn that fails the same way.
    failed_wakes: Arc<Mutex<HashMap<String, FailedWake>>>,
    /// The runtime of the control plane. Work on the fleet database (spawns,
    /// health reports) runs there: its connections then belong to a runtime
    /// that outlives the router threads.
    control: tokio::runtime::Handle,
}

/// One router thread's proxy: the shared part and its own connection pools.
struct Proxy {
    common: Arc<Common>,
    pool: UpstreamPool,
    metrics: Arc<RouterShard>,
    /// The thread's timeouts.
    timer: CoarseTimer,
    /// The thread's own handle on the route table in force.
    table: Mutex<Arc<ThreadTable>>,
}

/// A router thread's handle on a route table (see [`Proxy::table`]).
struct ThreadTable(Arc<RouteTable>);

impl std::ops::Deref for ThreadTable {
    type Target = RouteTable;

    fn deref(&self) -> &RouteTable {
        &self.0
    }
}

/// The client at the other end of a connection.
struct Peer {
    /// Its address as the `X-Forwarded-For` entry, made once per connection.
    ip: HeaderValue,
}

impl Peer {
    fn new(addr: SocketAddr) -> Peer {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer { ip }
    }
}

/// A router thread as the acceptor sees it.
struct RouterThread {
    connections: mpsc::UnboundedSender<Handoff>,
    /// Its open connections, for handing the next one to the least busy.
    open: Arc<AtomicUsize>,
    done: tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
}

/// Serves the router on `listener` until `stop` turns true, then lets in-flight
/// requests finish within the configured grace period.
///
/// Connections are accepted here and handed to `config.router_threads`
/// threads, the least busy first; each runs a single-threaded runtime that
/// owns its connections and its keep-alive pools, so that a request never
/// changes threads on its way through (nginx's worker model).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    config: &ServeConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let common = Arc::new(Common {
        state,
        upstream_timeout: config.upstream_timeout,
        connect_timeout: config.fleet.connect_timeout,
        spawning: Arc::default(),
        failed_wakes: Arc::default(),
        control: tokio::runtime::Handle::current(),
    });
    let mut threads = Vec::with_capacity(config.router_threads);
    for n in 0..config.router_threads.max(1) {
        threads.push(start_thread(n, &common, config, stop.clone())?);
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot hand over a connection");
                continue;
            }
        };
        let Some(thread) = threads
            .iter()
            .min_by_key(|t| t.open.load(Ordering::Relaxed))
        else {
            break;
        };
        thread.open.fetch_add(1, Ordering::Relaxed);
        if thread.connections.send((stream, peer)).is_err() {
            // The thread is gone; its result says why.
            break;
        }
    }
    drop(listener);
    tracing::info!("router stopped accepting; finishing in-flight requests");
    let mut result = Ok(());
    for (n, thread) in threads.into_iter().enumerate() {
        drop(thread.connections);
        let ended = thread
            .done
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("router thread {n} panicked")));
        if let Err(e) = ended {
            tracing::error!(error = %e, "router thread {n} failed");
            result = result.and(Err(e));
        }
    }
    result
}

/// Starts router thread `n`: a single-threaded runtime serving the connections
/// the acceptor hands it.
fn start_thread(
    n: usize,
    common: &Arc<Common>,
    config: &ServeConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<RouterThread> {
    let (connections, handed) = mpsc::unbounded_channel();
    let open = Arc::new(AtomicUsize::new(0));
    let (finished, done) = tokio::sync::oneshot::channel();
    let common = Arc::clone(common);
    let config = config.clone();
    let thread_open = Arc::clone(&open);
    std::thread::Builder::new()
        .name(format!("slum-router-{n}"))
        .spawn(move || {
            let ended = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .map(|runtime| {
                    runtime.block_on(run_thread(common, &config, handed, thread_open, stop));
                });
            let _ = finished.send(ended);
        })?;
    Ok(RouterThread {
        connections,
        open,
        done,
    })
}

/// A router thread's loop: serves each connection it is handed until `stop`,
/// then waits for them to finish within the grace period.
async fn run_thread(
    common: Arc<Common>,
    config: &ServeConfig,
    mut handed: mpsc::UnboundedReceiver<Handoff>,
    open: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let timer = CoarseTimer::new();
    let pool = UpstreamPool::new(
        config.fleet.connect_timeout,
        Duration::from_secs(90),
        256,
        timer.clone(),
        config.fleet.server_roots.as_ref(),
    );
    let metrics = common.state.metrics.router_shard();
    let table = Mutex::new(Arc::new(ThreadTable(common.state.routes.current())));
    let proxy = Arc::new(Proxy {
        common,
        pool,
        metrics,
        timer: timer.clone(),
        table,
    });
    let limits = Limits {
        header_timeout: config.header_timeout,
        max_header_bytes: config.max_header_bytes,
        body_timeout: config.body_timeout,
    };
    // The thread's tick: it ends the timeouts that are due, and every fifth
    // closes idle upstream connections that are past their time.
    let _tick = {
        let proxy = Arc::clone(&proxy);
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0u64.. {
                tick.tick().await;
                proxy.timer.tick();
                if n % 5 == 0 {
                    proxy.pool.sweep();
                }
            }
        }))
    };
    let closing = Arc::new(Closing::default());
    // Every connection task holds a sender; when all are gone, so are the
    // connections.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            handed = handed.recv() => match handed {
                Some(h) => h,
                None => break,
            },
            _ = stop.changed() => break,
        };
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, %peer, "cannot take over a connection");
                continue;
            }
        };
        let proxy = Arc::clone(&proxy);
        let conn = ClientConn::new(stream, limits, timer.clone());
        let closing = Closing::watch(&closing);
        let alive = alive.clone();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let _alive = alive;
            if let Err(e) = proxy.serve_connection(conn, Peer::new(peer), closing).await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    closing.close();
    drop(alive);
    if tokio::time::timeout(config.shutdown_grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; dropping the remaining connections");
    }
}

/// A router thread's word to its connections that it is shutting down. A
/// connection registers its task's waker once, and then reads one flag each
/// time it is polled (a watch channel would register the waker at every poll).
#[derive(Default)]
struct Closing {
    closed: AtomicBool,
    /// Wakers of the connections waiting for the word, by connection.
    waiting: Mutex<HashMap<u64, Waker>>,
    next: AtomicU64,
}

/// One connection's side of [`Closing`].
struct ClosingWatch {
    closing: Arc<Closing>,
    id: u64,
    /// The waker registered, if any.
    waker: Option<Waker>,
}

impl Closing {
    fn watch(closing: &Arc<Closing>) -> ClosingWatch {
        ClosingWatch {
            closing: Arc::clone(closing),
            id: closing.next.fetch_add(1, Ordering::Relaxed),
            waker: None,
        }
    }

    /// Tells every connection, and those that look later.
    fn close(&self) {
        let waiting = {
            let mut waiting = lock(&self.waiting);
            self.closed.store(true, Ordering::Relaxed);
            std::mem::take(&mut *waiting)
        };
        for waker in waiting.into_values() {
            waker.wake();
        }
    }
}

impl ClosingWatch {
    /// Whether the thread is shutting down, without waiting for it.
    fn is_closed(&self) -> bool {
        self.closing.closed.load(Ordering::Relaxed)
    }

    /// Whether the thread is shutting down; if not, the task polled with `cx`
    /// is woken when it does.
    fn closed(&mut self, cx: &Context<'_>) -> bool {
        if self.closing.closed.load(Ordering::Relaxed) {
            return true;
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return false;
        }
        let mut waiting = lock(&self.closing.waiting);
        // Read again under the lock `close` holds when it sets the flag.
        if self.closing.closed.load(Ordering::Relaxed) {
            return true;
        }
        waiting.insert(self.id, cx.waker().clone());
        self.waker = Some(cx.waker().clone());
        false
    }
}

impl Drop for ClosingWatch {
    fn drop(&mut self) {
        if self.waker.is_some() {
            lock(&self.closing.waiting).remove(&self.id);
        }
    }
}

/// A response the router makes itself: a status and a one-line reason.
fn answer(status: StatusCode, reason: String) -> Answer {
    Answer::Made(made(status, reason))
}

/// The response of [`answer`], before it is one.
fn made(status: StatusCode, reason: String) -> Response<BoxBody<Bytes, BoxError>> {
    let mut r = Response::new(
        Full::new(Bytes::from(reason + "\n"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Proxy {
    /// Answers the requests of one client connection, in order, until the
    /// client closes it or the thread shuts down (the request in flight is
    /// answered first, with `Connection: close`).
    async fn serve_connection(
        &self,
        mut conn: ClientConn,
        peer: Peer,
        mut closing: ClosingWatch,
    ) -> Result<(), Ended> {
        while let Some((mut parts, body)) = conn.read_request(|cx| closing.closed(cx)).await? {
            // A client that leaves before its answer cancels the exchange.
            let route = self.route(&mut parts, body, &peer);
            let Some(answer) = conn.unless_gone(route).await else {
                return Ok(());
            };
            self.metrics.count(answer.status().as_u16());
            let keep = match answer {
                Answer::Passed {
                    status,
                    headers,
                    body,
                } => {
                    conn.write_answer(status, &headers, body, closing.is_closed())
                        .await?
                }
                Answer::Made(mut resp) => {
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
        if !self.common.state.routes.is_current(&mine.0) {
            *mine = Arc::new(ThreadTable(self.common.state.routes.current()));
        }
        Arc::clone(&mine)
    }

    async fn route(&self, parts: &mut RequestHead, body: RequestBody, peer: &Peer) -> Answer {
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
                };
                let decision = table.route(host.to_str().unwrap_or_default());
                (host, decision)
            }
        };
        let name = host.to_str().unwrap_or_default();
        if let Decision::Spawn(route) = decision {
            // Boxed: only a tenant's first request takes this path.
            if let Err(reason) = Box::pin(self.wake(route)).await {
                let mut resp = made(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "tenant '{}' could not be started on server '{}': {reason}",
                        route.tenant, route.home_server
                    ),
                );
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(WAKE_HOLD_DOWN.as_secs()),
                );
                return Answer::Made(resp);
            }
            table = self.table();
            decision = table.route(name);
        }
        match decision {
            Decision::Forward {
                primary, fallbacks, ..
            } => {
                self.forward(parts, body, peer, &host, primary, fallbacks)
                    .await
            }
            Decision::UnknownHost => answer(
                StatusCode::NOT_FOUND,
                format!("no tenant has the domain '{name}'"),
            ),
            Decision::ServerDown { tenant, servers } => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "tenant '{tenant}' is unavailable: its server {} is down",
                    servers
                        .iter()
                        .map(|s| format!("'{s}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Decision::Spawn(route) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "tenant '{}' was started but is not routable yet; retry",
                    route.tenant
                ),
            ),
        }
    }

    /// Spawns a tenant's instance on its home server, once for all concurrent
    /// requests. The spawn runs in its own task so that a client giving up does
    /// not cancel it half-way. A spawn that failed less than
    /// [`WAKE_HOLD_DOWN`] ago is not tried again: its reason is the answer.
    async fn wake(&self, route: &DomainRoute) -> Result<(), Arc<String>> {
        let key = format!("{}:{}", route.tenant, route.instance_id);
        if let Some((at, reason)) = lock(&self.common.failed_wakes).get(&key) {
            let ago = at.elapsed();
            if ago < WAKE_HOLD_DOWN {
                return Err(Arc::new(format!(
                    "{reason} (that attempt was {:.1}s ago; the next is in {:.1}s)",
                    ago.as_secs_f64(),
                    (WAKE_HOLD_DOWN - ago).as_secs_f64()
                )));
            }
        }
        let pending = {
            lock(&self.common.spawning)
                .entry(key.clone())
                .or_insert_with(|| {
                    let state = self.common.state.clone();
                    let route = route.clone();
                    let spawning = Arc::clone(&self.common.spawning);
                    let failed_wakes = Arc::clone(&self.common.failed_wakes);
                    let key = key.clone();
                    let task = self.common.control.spawn(async move {
                        let spawned = state
                            .db
                            .spawn_instance(
                                &route.tenant,
                                &route.process,
                                &route.instance_id,
                                &route.home_server,
                            )
                            .await;
                        let result = match spawned {
                            Ok(_) => Ok(()),
                            // Someone else (another router) may have spawned it
                            // meanwhile; anything else holding the name is an error.
                            Err(e @ Error::AlreadyExists { .. }) => {
                                match state.db.get_instance(&key).await {
                                    Ok(i) if i.process == route.process => Ok(()),
                                    Ok(i) => Err(Arc::new(format!(
                                        "instance '{key}' runs process '{}', not '{}'",
                                        i.process, route.process
                                    ))),
                                    Err(_) => Err(Arc::new(e.to_string())),
                                }
                            }
                            Err(e) => Err(Arc::new(e.to_string())),
                        };
                        {
                            let mut failed = lock(&failed_wakes);
                            match &result {
                                Ok(()) => failed.remove(&key),
                                Err(reason) => {
                                    failed.insert(key.clone(), (Instant::now(), Arc::clone(reason)))
                                }
                            };
                        }
                        state.fleet_changed().await;
                        // Only the spawner removes the entry, once its result
                        // is routable: a late waiter never removes a newer one.
                        lock(&spawning).remove(&key);
                        result
                    });
                    async move {
                        task.await
                            .unwrap_or_else(|e| Err(Arc::new(format!("spawn task failed: {e}"))))
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        pending.await
    }

    /// Sends the request to `primary`. A GET or HEAD without a body whose
    /// connection to `primary` fails is sent once more to the first fallback, so
    /// that the client sees no error; the failure also counts against the
    /// server's health at once.
    async fn forward(
        &self,
        parts: &mut RequestHead,
        body: RequestBody,
        peer: &Peer,
        host: &HeaderValue,
        primary: &Target,
        fallbacks: &[Target],
    ) -> Answer {
        let upgrade = is_upgrade(&parts.headers);
        prepare_request_headers(parts, upgrade, &peer.ip, host, &primary.host);
        let retry = fallbacks.first().filter(|_| {
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
                    _ = self.common.state.routes.until_offline(&primary.upstream.server_id) => {
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
        primary: &Target,
        retry: Option<(&Target, Box<RequestHead>)>,
    ) -> Answer {
        if failure.server_unreachable() {
            // On the control plane's runtime: the report may write to the
            // fleet database.
            let state = self.common.state.clone();
            let server = primary.upstream.server_id.clone();
            let _ = self
                .common
                .control
                .spawn(async move { state.health.report_failure(&state, &server).await })
                .await;
        }
        if let (Some((backup, mut parts)), true) = (retry, failure.connection_failed()) {
            tracing::info!(server = %primary.upstream.server_id, backup = %backup.upstream.server_id,
                "retrying on the backup");
            parts.set(header::HOST, backup.host.clone());
            match self.send(&mut parts, None, backup, false).await {
                Ok(resp) => return self.respond(resp),
                Err(f) => return self.failure_answer(&backup.upstream.server_id, f),
            }
        }
        self.failure_answer(&primary.upstream.server_id, failure)
    }

    /// One exchange with one server, up to the response head.
    async fn send(
        &self,
        parts: &mut RequestHead,
        body: Option<RequestBody>,
        target: &Target,
        upgrade: bool,
    ) -> Result<Sent, Failure> {
        let upstream = &target.upstream;
        let origin = upstream
            .origin
            .as_ref()
            .ok_or_else(|| Failure::Broken(format!("unusable url '{}'", upstream.url)))?;
        parts.uri = upstream_uri(&upstream.path_prefix, &parts.uri)
            .map_err(|e| Failure::Broken(format!("unusable request path: {e}")))?;
        let started = Instant::now();
        let progress = body.as_ref().and_then(RequestBody::progress);
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
            Err(_) => Err(Failure::HeadTimeout),
            // The client stopped sending its body: its fault, not the server's.
            Ok(Err(UpstreamError::Request(e))) if body_timed_out(&*e) => {
                Err(Failure::BodyTimeout(innermost_cause(&*e)))
            }
            Ok(Err(UpstreamError::Connect { cause })) if is_timeout(&*cause) => {
                Err(Failure::ConnectTimeout)
            }
            Ok(Err(UpstreamError::Connect { cause })) => {
                Err(Failure::Refused(innermost_cause(&*cause)))
            }
            // The client's own body was at fault, not the server.
            Ok(Err(UpstreamError::Request(e)))
                if matches!(
                    e.downcast_ref::<ExchangeError>(),
                    Some(ExchangeError::RequestBody(_))
                ) =>
            {
                Err(Failure::BadBody(innermost_cause(&*e)))
            }
            Ok(Err(UpstreamError::Request(e))) => Err(Failure::Broken(innermost_cause(&*e))),
            Ok(Ok(sent)) => {
                self.metrics
                    .upstream_latency(&upstream.server_id, started.elapsed());
                Ok(sent)
            }
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

    /// 502 for a refused or broken connection, 504 for a connect or response
    /// head that took too long.
    fn failure_answer(&self, server: &str, failure: Failure) -> Answer {
        match failure {
            Failure::HeadTimeout => answer(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "server '{server}' did not answer within {:.1}s",
                    self.common.upstream_timeout.as_secs_f64()
                ),
            ),
            Failure::ConnectTimeout => answer(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "connecting to server '{server}' timed out after {:.1}s",
                    self.common.connect_timeout.as_secs_f64()
                ),
            ),
            Failure::Refused(cause) => answer(
                StatusCode::BAD_GATEWAY,
                format!("cannot connect to server '{server}': {cause}"),
            ),
            Failure::Broken(cause) => answer(
                StatusCode::BAD_GATEWAY,
                format!("server '{server}' failed the request: {cause}"),
            ),
            Failure::BadBody(cause) => answer(
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {cause}"),
            ),
            Failure::BodyTimeout(cause) => answer(StatusCode::REQUEST_TIMEOUT, cause),
        }
    }
}

/// How an exchange with a server failed.
#[derive(Debug)]
enum Failure {
    /// The connection was refused (or could not be made at once).
    Refused(String),
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The connection broke before a response head arrived.
    Broken(String),
    /// No response head within the upstream timeout.
    HeadTimeout,
    /// The client's request body was malformed or broke off.
    BadBody(String),
    /// The client stopped sending its request body for the body timeout.
    BodyTimeout(String),
}

/// Whether an exchange failed because the client's request body stood still
/// for its timeout (not the server's connection, whose errors can say
/// "timed out" too).
fn body_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(e.downcast_ref::<ExchangeError>(), Some(ExchangeError::RequestBody(body)) if is_timeout(&**body))
}

impl Failure {
    /// Whether the server itself could not be reached: the passive health
    /// signal. A connection that broke after it was made is more often one
    /// tenant's app, or a pooled connection the server closed, than the server.
    fn server_unreachable(&self) -> bool {
        matches!(self, Failure::Refused(_) | Failure::ConnectTimeout)
    }

    /// Whether the server failed at the connection level (the passive health
    /// signal, and the case a retry on the backup is safe for): not a slow
    /// answer, which may be the application's doing.
    fn connection_failed(&self) -> bool {
        matches!(
            self,
            Failure::Refused(_) | Failure::ConnectTimeout | Failure::Broken(_)
        )
    }
}

/// The request's Host header, if it has one, as text (visible ASCII); two,
/// or one that is not text, are malformed.
fn host_header(req: &RequestHead) -> Result<Option<&str>, BadHost> {
    let mut hosts = req.headers.get_all("host");
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(BadHost::Malformed),
        (None, _) => Ok(None),
        (Some(host), None) => match visible_ascii(host) {
            true => Ok(std::str::from_utf8(host).ok()),
            false => Err(BadHost::Malformed),
        },
    }
}

/// Whether a header value is text: visible ASCII, spaces and tabs (what
/// `HeaderValue::to_str` takes).
fn visible_ascii(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The request's Host header and its decision, when the header is a routed
/// domain as it stands (lower case, no port: domains are stored normalised):
/// the common case, which needs no normalising and no allocation.
fn routed_host<'t>(
    req: &RequestHead,
    table: &'t RouteTable,
) -> Option<(HeaderValue, &'t Decision)> {
    let host = host_header(req).ok()??;
    let decision = table.get(host)?;
    Some((req.headers.shared(host.as_bytes())?, decision))
}

/// The request's host: the Host header (exactly one), or the authority of an
/// absolute-form request target. Forwarding headers sent by the client are never
/// consulted.
fn request_host(req: &RequestHead) -> Result<String, BadHost> {
    let raw = match host_header(req)? {
        Some(h) => Some(h),
        None => req.uri.authority().map(|a| a.as_str()),
    };
    normalize_host(raw)
}

fn is_upgrade(headers: &RawHeaders) -> bool {
    headers.contains("upgrade")
        && headers
            .get_all("connection")
            .flat_map(tokens)
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The options the Connection header(s) list, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Removes hop-by-hop headers, including those the Connection header names. For
/// an upgrade, `Upgrade` and `Connection: upgrade` are kept.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One look over the names first: most messages carry none, and removing
    // each by name would cost a lookup apiece.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| !is_hop_by_hop(n))
        .collect();
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in &named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether `name` (any case) is in `list` (lower case). Inlined, loop and
/// all: it is called for each header line against constant lists, and once
/// the header code moved to crates/http1 the compiler left it (and its
/// `Iter::any`) out of line, for 600 more instructions a request.
#[inline(always)]
fn listed(name: &[u8], list: &[&str]) -> bool {
    for l in list {
        if name.eq_ignore_ascii_case(l.as_bytes()) {
            return true;
        }
    }
    false
}

/// The names the Connection header(s) list, but for the hop-by-hop ones:
/// these are hop-by-hop too.
fn connection_named(headers: &RawHeaders) -> Vec<String> {
    headers
        .get_all("connection")
        .flat_map(tokens)
        .filter(|t| !listed(t.as_bytes(), &HOP_BY_HOP))
        .map(str::to_owned)
        .collect()
}

/// Removes hop-by-hop headers from a server's header lines, including those
/// its `Connection` header names.
fn strip_passed_hop_by_hop(headers: &mut RawHeaders) {
    if !headers.iter().any(|(name, _)| listed(name, &HOP_BY_HOP)) {
        return;
    }
    let named = connection_named(headers);
    headers.retain(|name| {
        !listed(name, &HOP_BY_HOP)
            && !named
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
    });
}

/// Headers of the client's the router sets itself, or does not pass on.
const SET_BY_ROUTER: [&str; 6] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// Rewrites the client's headers for the tenement server: Host becomes the
/// mapping, `X-Forwarded-For` gets the client appended, `-Proto` and `-Host` are
/// set by the router (whatever the client sent), `Forwarded` and `X-Real-IP`
/// are not passed on, nor are hop-by-hop headers (those the Connection header
/// names too). For an upgrade, `Upgrade` and `Connection: upgrade` are kept.
fn prepare_request_headers(
    request: &mut RequestHead,
    upgrade: bool,
    client_ip: &HeaderValue,
    host: &HeaderValue,
    upstream_host: &HeaderValue,
) {
    let headers = &request.headers;
    let named = connection_named(headers);
    // The client's list (on one line or several) with the client appended;
    // not if the client named it in Connection, which makes it hop-by-hop.
    let prior: Vec<&str> = match named
        .iter()
        .any(|n| n.eq_ignore_ascii_case("x-forwarded-for"))
    {
        true => Vec::new(),
        false => headers
            .get_all("x-forwarded-for")
            .filter(|v| visible_ascii(v))
            .filter_map(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect(),
    };
    let forwarded_for = match prior.is_empty() {
        true => Some(client_ip.clone()),
        false => {
            let ip = client_ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{}, {ip}", prior.join(", "))).ok()
        }
    };
    request.headers.retain(|name| {
        let hop = listed(name, &HOP_BY_HOP) && !(upgrade && name.eq_ignore_ascii_case(b"upgrade"));
        !hop && !listed(name, &SET_BY_ROUTER)
            && !named
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
    });
    request.set.clear();
    request.set.reserve(5);
    if upgrade {
        request
            .set
            .push((header::CONNECTION, HeaderValue::from_static("upgrade")));
    }
    request.set.push((header::HOST, upstream_host.clone()));
    if let Some(v) = forwarded_for {
        request.set.push((X_FORWARDED_FOR, v));
    }
    request
        .set
        .push((X_FORWARDED_PROTO, HeaderValue::from_static("http")));
    request.set.push((X_FORWARDED_HOST, host.clone()));
}

/// The origin-form URI of a request sent upstream: the server URL's path
/// (usually none) followed by the request's path and query.
fn upstream_uri(prefix: &str, request: &Uri) -> Result<Uri, hyper::http::Error> {
    let path = request
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if prefix.is_empty() {
        return Ok(Uri::from(path));
    }
    Ok(format!("{prefix}{path}").parse::<Uri>()?)
}

/// Whether an error, or one of its causes, is running out of time: a
/// connect's (the connector's timeout, or the kernel's), or a request body's.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<tokio::time::error::Elapsed>()
            || err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// A GET with these header lines.
    fn get(pairs: &[(&str, &str)]) -> RequestHead {
        get_of("/", pairs)
    }

    fn get_of(uri: &str, pairs: &[(&str, &str)]) -> RequestHead {
        RequestHead::for_test(Method::GET, uri, pairs)
    }

    /// The lines `request` goes to the server with, as a header map.
    fn sent(request: &RequestHead) -> HeaderMap {
        request.header_map().unwrap()
    }

    /// The lines a GET to acme.com from 10.1.2.3 with `lines` goes to its
    /// server with (acme.api.east.fleet.test), as a header map.
    fn forwarded(lines: &[(&str, &str)]) -> HeaderMap {
        let mut r = get(lines);
        let peer = Peer::new("10.1.2.3:5555".parse().unwrap());
        prepare_request_headers(
            &mut r,
            false,
            &peer.ip,
            &HeaderValue::from_static("acme.com"),
            &HeaderValue::from_static("acme.api.east.fleet.test"),
        );
        sent(&r)
    }

    #[test]
    fn request_headers_are_rewritten_for_the_server() {
        let h = forwarded(&[
            ("host", "acme.com"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.8"),
            ("x-real-ip", "203.0.113.8"),
            ("accept", "text/html"),
        ]);
        assert_eq!(h["host"], "acme.api.east.fleet.test");
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["203.0.113.7, 198.51.100.2, 10.1.2.3"]
        );
        assert_eq!(h["x-forwarded-host"], "acme.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["accept"], "text/html");
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }

        // A request with none of them gets the router's own.
        let h = forwarded(&[("host", "acme.com"), ("accept", "text/html")]);
        assert_eq!(h["host"], "acme.api.east.fleet.test");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-host"], "acme.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h.len(), 5);
    }

    #[test]
    fn a_servers_hop_by_hop_headers_are_not_passed_on() {
        let mut head = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret-Hop\r\nX-Tenant: a\r\n\
              x-secret-hop: 1\r\nKeep-Alive: timeout=5\r\nTrailer: x-sum\r\nUpgrade: h2c\r\n\
              Proxy-Authenticate: Basic\r\nTE: trailers\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
              Content-Length: 2\r\n\r\n",
        );
        strip_passed_hop_by_hop(&mut head.headers);
        let kept = [
            ("X-Tenant", "a"),
            ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("Content-Length", "2"),
        ];
        let kept: Vec<_> = kept
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(head.headers.lines(), kept);
        // Chunked framing is the hop's: it goes, the length with it.
        let mut head = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n",
        );
        strip_passed_hop_by_hop(&mut head.headers);
        assert_eq!(head.headers.lines(), [("X-A".to_string(), "1".to_string())]);
        assert_eq!(head.headers.content_length(), None);
    }

    /// Passes `server_head` (with a `body` of its length) to a client as the
    /// router does: hop-by-hop lines taken out, then written by the client's
    /// connection, which stays open. Returns what the client read.
    async fn passed_to_client(server_head: &'static [u8], body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let limits = Limits {
                header_timeout: Duration::from_secs(5),
                max_header_bytes: 4096,
                body_timeout: Duration::from_secs(5),
            };
            let mut conn = ClientConn::new(stream, limits, CoarseTimer::new());
            let _request = conn.read_request(|_| false).await.unwrap().unwrap();
            let mut head = ResponseHead::parse(server_head);
            strip_passed_hop_by_hop(&mut head.headers);
            let body = Full::new(Bytes::from_static(body.as_bytes()));
            conn.write_answer(head.status, &head.headers, body, false)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.com\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A server that names Content-Length in its Connection header: the line
    /// goes as hop-by-hop, and the client is still told the body's length,
    /// or its kept-alive connection would have no framing at all.
    #[tokio::test]
    async fn a_length_named_in_connection_still_frames_the_answer() {
        let got = passed_to_client(
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n",
            "hello",
        )
        .await;
        assert!(
            got.to_ascii_lowercase()
                .contains("\r\ncontent-length: 5\r\n\r\nhello"),
            "the answer has no framing:\n{got}"
        );
        let mut head = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
        );
        strip_passed_hop_by_hop(&mut head.headers);
        assert_eq!(head.headers.content_length(), None);
    }

    /// A client's X-Forwarded-For named in Connection is hop-by-hop (RFC 9110
    /// §7.6.1): the server gets the client's address alone.
    #[test]
    fn a_forwarded_for_named_in_connection_is_not_passed_on() {
        let h = forwarded(&[
            ("Host", "acme.com"),
            ("Connection", "X-Forwarded-For"),
            ("X-Forwarded-For", "203.0.113.9"),
        ]);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["10.1.2.3"]
        );
    }

    #[test]
    fn closing_wakes_each_connection_once_it_has_looked() {
        struct Count(AtomicU64);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let closing = Arc::new(Closing::default());
        let count = Arc::new(Count(AtomicU64::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&waker);
        let mut watching = Closing::watch(&closing);
        let gone = Closing::watch(&closing);
        let mut dropped = Closing::watch(&closing);
        assert!(!watching.closed(&cx));
        assert!(!watching.closed(&cx), "looked twice");
        assert!(!dropped.closed(&cx));
        drop(dropped);
        assert_eq!(
            lock(&closing.waiting).len(),
            1,
            "registered once, dropped gone"
        );
        closing.close();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(watching.closed(&cx));
        let mut late = gone;
        assert!(late.closed(&cx), "a connection that looks later sees it");
    }

    #[test]
    fn hosts_routed_as_they_stand_take_the_short_way() {
        use crate::model::ServerStatus;
        use crate::route_table::tests::{server, tenant};
        let table = RouteTable::build(
            1,
            &[server("east", ServerStatus::Online)],
            &[tenant("acme.com", "acme", "east")],
            &[],
        );
        let with_hosts = |hosts: &[&str]| {
            let lines: Vec<_> = hosts.iter().map(|h| ("host", *h)).collect();
            routed_host(&get(&lines), &table).map(|(host, _)| host)
        };
        assert_eq!(with_hosts(&["acme.com"]).unwrap(), "acme.com");
        // Anything else is normalised (or refused) the long way.
        assert_eq!(with_hosts(&["Acme.com"]), None);
        assert_eq!(with_hosts(&["acme.com:8080"]), None);
        assert_eq!(with_hosts(&["acme.com", "acme.com"]), None);
        assert_eq!(with_hosts(&["nobody.com"]), None);
    }

    #[test]
    fn only_a_request_body_standing_still_is_the_clients_timeout() {
        let timed_out =
            || io::Error::new(io::ErrorKind::TimedOut, "no request body bytes for 1.0s");
        assert!(body_timed_out(&ExchangeError::RequestBody(Box::new(
            timed_out()
        ))));
        assert!(
            !body_timed_out(&ExchangeError::Io(timed_out())),
            "the server's connection timing out is not the client's doing"
        );
        let malformed = io::Error::new(io::ErrorKind::InvalidData, "malformed chunk size");
        assert!(!body_timed_out(&ExchangeError::RequestBody(Box::new(
            malformed
        ))));
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut r = get(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        assert!(is_upgrade(&r.headers));
        let peer = Peer::new("127.0.0.1:1".parse().unwrap());
        prepare_request_headers(
            &mut r,
            true,
            &peer.ip,
            &HeaderValue::from_static("a.com"),
            &HeaderValue::from_static("a.api.s.test"),
        );
        let h = sent(&r);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(
            h.get_all("connection").iter().collect::<Vec<_>>(),
            ["upgrade"]
        );
        assert!(!is_upgrade(&get(&[("upgrade", "websocket")]).headers));
    }

    #[test]
    fn upstream_uris_keep_the_request_path_and_query() {
        use crate::route_table::split_url;
        let request: Uri = "/a/b?c=d".parse().unwrap();
        let (origin, prefix) = split_url("http://10.0.0.1:8000");
        assert_eq!(origin.unwrap(), "http://10.0.0.1:8000/");
        assert_eq!(upstream_uri(&prefix, &request).unwrap(), "/a/b?c=d");
        // An absolute-form request target goes on in origin form.
        let absolute: Uri = "http://acme.com".parse().unwrap();
        assert_eq!(upstream_uri(&prefix, &absolute).unwrap(), "/");
        // A server behind a path prefix keeps it.
        let (origin, prefix) = split_url("https://edge.example.net/ten/");
        assert_eq!(origin.unwrap(), "https://edge.example.net/");
        assert_eq!(prefix, "/ten");
        assert_eq!(upstream_uri(&prefix, &request).unwrap(), "/ten/a/b?c=d");
        assert_eq!(split_url("not a url").0, None);
    }

    #[test]
    fn only_the_host_header_picks_the_tenant() {
        let req = get_of(
            "/x",
            &[("Host", "Acme.com:8080"), ("x-forwarded-host", "other.com")],
        );
        assert_eq!(request_host(&req), Ok("acme.com".into()));
        let req = get_of("/x", &[("x-forwarded-host", "other.com")]);
        assert_eq!(request_host(&req), Err(BadHost::Missing));
        let req = get_of("/x", &[("host", "a.com"), ("HOST", "b.com")]);
        assert_eq!(request_host(&req), Err(BadHost::Malformed));
        let req = get_of("/x", &[("host", "a.com\u{7f}")]);
        assert_eq!(request_host(&req), Err(BadHost::Malformed));
        let req = get_of("http://acme.com/x", &[]);
        assert_eq!(request_host(&req), Ok("acme.com".into()));
    }
}
