//! A router thread's connections to tenement servers: HTTP/1 keep-alive pools,
//! one per server URL.
//!
//! A connection goes back to its pool when the response body it carried has
//! been read to the end (or had none), by the body itself: no task per request
//! waits for it. A pooled connection the server closed meanwhile is passed over;
//! a request it could not even start goes out on the next one, or a new one.
//! Each pool is used by one router thread only, so its lock is never contended.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::coarse_timer::CoarseTimer;
use crate::lock;
use crate::quick_ack::QuickAckConnector;

/// What a request sends upstream.
pub type RequestBody = BoxBody<Bytes, hyper::Error>;

type Connector = hyper_rustls::HttpsConnector<QuickAckConnector>;

/// How a request to a server failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (the cause, and whether it timed out).
    Connect {
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The connection broke before a response head arrived.
    Request(hyper::Error),
}

/// Idle connections per server URL, for one router thread.
pub struct UpstreamPool {
    connector: Connector,
    servers: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    idle_timeout: Duration,
    max_idle: usize,
    /// The router thread's clock, to the tick: idle times need no more.
    clock: CoarseTimer,
}

/// One server's idle connections. A response's [`Ticket`] holds the slot its
/// connection goes back to: giving it back needs no lookup, and touches no
/// reference count another router thread does.
#[derive(Default)]
struct Slot {
    idle: Mutex<Vec<Idle>>,
}

/// A connection waiting for its next request.
struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

impl Idle {
    /// Still open, and not idle longer than `timeout`.
    fn usable(&self, now: Instant, timeout: Duration) -> bool {
        !self.sender.is_closed() && now - self.since < timeout
    }
}

impl UpstreamPool {
    /// A pool whose connections take at most `connect_timeout` to open, and
    /// are closed after `idle_timeout` unused (told by `clock`); at most
    /// `max_idle` per server.
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        clock: CoarseTimer,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        // https servers get TLS (webpki roots); plain http ones none.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(QuickAckConnector(http));
        UpstreamPool {
            connector,
            servers: Mutex::default(),
            idle_timeout,
            max_idle,
            clock,
        }
    }

    /// Sends `req` (origin-form URI, Host set) to the server at `url`, whose
    /// origin is `origin`, on an idle connection or a new one. The response's
    /// body is to be read through [`Ticket::attach`], which gives the
    /// connection back when it is done.
    ///
    /// A request to switch protocols (`upgrade`) goes on a connection of its
    /// own, which the switch consumes: pooled connections are spared hyper's
    /// upgrade handling, which costs on every request.
    pub async fn send(
        &self,
        url: &Arc<str>,
        origin: &Uri,
        mut req: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, Ticket), UpstreamError> {
        // A switch of protocols never goes back to the pool.
        let slot = (!upgrade).then(|| self.slot(url));
        if let Some(slot) = &slot {
            while let Some(mut sender) = self.checkout(slot) {
                if sender.ready().await.is_err() {
                    continue; // closed by the server while idle
                }
                match sender.try_send_request(req).await {
                    Ok(resp) => return Ok((resp, self.ticket(Some(Arc::clone(slot)), sender))),
                    Err(mut e) => match e.take_message() {
                        // Not sent at all: the next connection takes it.
                        Some(unsent) => req = unsent,
                        None => return Err(UpstreamError::Request(e.into_error())),
                    },
                }
            }
        }
        // Boxed: with keep-alive, few requests make a connection, and the
        // future of every request would otherwise be as large as this one.
        let mut sender = Box::pin(self.connect(origin, upgrade)).await?;
        match sender.send_request(req).await {
            Ok(resp) => Ok((resp, self.ticket(slot, sender))),
            Err(e) => Err(UpstreamError::Request(e)),
        }
    }

    /// Drops idle connections that are closed or unused for too long, and the
    /// slots of servers left with none (and no response out).
    pub fn sweep(&self) {
        let now = self.clock.now();
        lock(&self.servers).retain(|_, slot| {
            let mut idle = lock(&slot.idle);
            idle.retain(|c| c.usable(now, self.idle_timeout));
            !idle.is_empty() || Arc::strong_count(slot) > 1
        });
    }

    /// Idle connections kept now, over all servers.
    #[cfg(test)]
    fn idle(&self) -> usize {
        lock(&self.servers)
            .values()
            .map(|slot| lock(&slot.idle).len())
            .sum()
    }

    fn slot(&self, url: &Arc<str>) -> Arc<Slot> {
        let mut servers = lock(&self.servers);
        match servers.get(url) {
            Some(slot) => Arc::clone(slot),
            None => Arc::clone(servers.entry(Arc::clone(url)).or_default()),
        }
    }

    fn checkout(&self, slot: &Slot) -> Option<SendRequest<RequestBody>> {
        let now = self.clock.now();
        let mut idle = lock(&slot.idle);
        // Most recently used first: the likeliest to be still open.
        while let Some(c) = idle.pop() {
            if c.usable(now, self.idle_timeout) {
                return Some(c.sender);
            }
        }
        None
    }

    /// The way back to `slot`, if any, for the connection `sender` sends on.
    fn ticket(&self, slot: Option<Arc<Slot>>, sender: SendRequest<RequestBody>) -> Ticket {
        Ticket {
            back: slot.map(|slot| Return {
                slot,
                max_idle: self.max_idle,
                clock: self.clock.clone(),
                sender,
            }),
        }
    }

    /// A new connection to `origin`, driven by a task of its own; one that
    /// `upgrades` can switch protocols.
    async fn connect(
        &self,
        origin: &Uri,
        upgrades: bool,
    ) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let mut connector = self.connector.clone();
        let io = tower_service::Service::call(&mut connector, origin.clone())
            .await
            .map_err(|cause| UpstreamError::Connect { cause })?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Request)?;
        let ended = |result: hyper::Result<()>| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        };
        let exec = TokioExecutor::new();
        if upgrades {
            hyper::rt::Executor::execute(
                &exec,
                Box::pin(async move { ended(conn.with_upgrades().await) }),
            );
        } else {
            hyper::rt::Executor::execute(&exec, Box::pin(async move { ended(conn.await) }));
        }
        Ok(sender)
    }
}

/// The way back to the pool for the connection a response came on.
pub struct Ticket {
    back: Option<Return>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("returns", &self.back.is_some())
            .finish()
    }
}

struct Return {
    slot: Arc<Slot>,
    max_idle: usize,
    clock: CoarseTimer,
    sender: SendRequest<RequestBody>,
}

impl Return {
    fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.slot.idle);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender: self.sender,
                since: self.clock.now(),
            });
        }
    }
}

impl Ticket {
    /// The response body, which gives the connection back once read to the
    /// end. A body dropped before its end takes the connection with it.
    pub fn attach(self, body: Incoming) -> PooledBody {
        let mut pooled = PooledBody {
            body,
            back: self.back,
        };
        if pooled.body.is_end_stream() {
            pooled.give_back();
        }
        pooled
    }
}

/// A response body from a pooled connection.
pub struct PooledBody {
    body: Incoming,
    back: Option<Return>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some(back) = self.back.take() {
            back.give_back();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.give_back(),
            // A broken body leaves the connection unusable.
            Some(Err(_)) => this.back = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to the end without the final poll (its length was known).
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An HTTP/1 server on loopback answering `body` to everything; counts the
    /// connections it accepted.
    async fn server(body: &'static str) -> (Uri, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(body.as_bytes()),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (origin, accepted)
    }

    fn get(host: &str) -> Request<RequestBody> {
        Request::builder()
            .uri("/")
            .header("host", host)
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .unwrap()
    }

    fn pool() -> UpstreamPool {
        UpstreamPool::new(
            Duration::from_secs(1),
            Duration::from_secs(90),
            8,
            CoarseTimer::new(),
        )
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let (origin, accepted) = server("hello").await;
        let url: Arc<str> = origin.to_string().into();
        let pool = pool();
        for _ in 0..5 {
            let (resp, ticket) = pool.send(&url, &origin, get("a"), false).await.unwrap();
            let body = ticket.attach(resp.into_body()).collect().await.unwrap();
            assert_eq!(body.to_bytes(), "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_upgrade_goes_on_a_connection_of_its_own() {
        let (origin, accepted) = server("hello").await;
        let url: Arc<str> = origin.to_string().into();
        let pool = pool();
        for upgrade in [false, true, false] {
            let (resp, ticket) = pool.send(&url, &origin, get("a"), upgrade).await.unwrap();
            ticket.attach(resp.into_body()).collect().await.unwrap();
        }
        // The first connection carried both plain requests; the upgrade had
        // its own, which never went to the pool.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle(), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_takes_its_connection_along() {
        let (origin, accepted) = server("hello").await;
        let url: Arc<str> = origin.to_string().into();
        let pool = pool();
        let (resp, ticket) = pool.send(&url, &origin, get("a"), false).await.unwrap();
        drop(ticket.attach(resp.into_body()));
        let (resp, ticket) = pool.send(&url, &origin, get("a"), false).await.unwrap();
        let body = ticket.attach(resp.into_body()).collect().await.unwrap();
        assert_eq!(body.to_bytes(), "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_past_their_time_are_closed() {
        let (origin, accepted) = server("hello").await;
        let url: Arc<str> = origin.to_string().into();
        // Idle connections expire at once: the sweep closes them.
        let pool = UpstreamPool::new(
            Duration::from_secs(1),
            Duration::ZERO,
            8,
            CoarseTimer::new(),
        );
        let (resp, ticket) = pool.send(&url, &origin, get("a"), false).await.unwrap();
        ticket.attach(resp.into_body()).collect().await.unwrap();
        assert_eq!(pool.idle(), 1);
        pool.sweep();
        assert_eq!(pool.idle(), 0);
        assert!(lock(&pool.servers).is_empty(), "the slot goes too");
        let (resp, ticket) = pool.send(&url, &origin, get("a"), false).await.unwrap();
        ticket.attach(resp.into_body()).collect().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let origin: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let err = pool()
            .send(&origin.to_string().into(), &origin, get("a"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
    }
}
