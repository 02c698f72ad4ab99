//! A router thread's connections to tenement servers: HTTP/1 keep-alive pools,
//! one per server URL.
//!
//! Requests are spoken by the HTTP/1.1 core ([`slum_http1::Conn`]) in the
//! request's own task. A connection goes back to its pool when the response
//! body it carried has been read to the end (or had none), by the body itself:
//! no task per request waits for it. A pooled connection the server closed
//! meanwhile is passed over; a bodiless GET, HEAD or OPTIONS that finds its
//! reused connection closed before any answer goes out once more on a new one.
//! Upgrades (WebSocket) go through hyper's client, each on a connection of its
//! own. Each pool is used by one router thread only, so its lock is never
//! contended.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioExecutor;
use slum_http1::{CoarseTimer, ExchangeError, RequestHead, ResponseHead};
use tokio::time::Instant;

use crate::lock;
use crate::server_conn::{self, Connector, Io, ServerIo};
use crate::tls::ServerRoots;

type Conn = slum_http1::Conn<ServerIo>;
type Reader = slum_http1::Reader<ServerIo>;

/// What an upgrade request sends upstream.
pub type RequestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How long a connection waits in the pool before its buffers are freed: a
/// server with steady traffic reuses its connections well within it, and
/// allocating them again after a quiet second costs nothing that shows.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// How a request to a server failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (the cause, and whether it timed out).
    Connect {
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The exchange failed before a response head arrived: the connection
    /// broke, the server's answer was not HTTP, or the client's request body
    /// failed on its way.
    Exchange(ExchangeError),
    /// An upgrade's request through hyper's client failed.
    Upgrade(hyper::Error),
}

/// Idle connections per server URL, for one router thread.
pub struct UpstreamPool {
    connector: Connector,
    /// Looked up for each request: foldhash, as the route table.
    servers: Mutex<foldhash::HashMap<Arc<str>, Arc<Slot>>>,
    idle_timeout: Duration,
    max_idle: usize,
    /// The router thread's clock, to the tick: idle times need no more.
    clock: CoarseTimer,
}

/// One server's idle connections. A response's body holds the slot its
/// connection goes back to: giving it back needs no lookup, and touches no
/// reference count another router thread does.
#[derive(Default)]
struct Slot {
    idle: Mutex<Vec<Idle>>,
}

/// A connection waiting for its next request.
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl Idle {
    /// Still open, and not idle longer than `timeout`.
    fn usable(&mut self, now: Instant, timeout: Duration) -> bool {
        now - self.since < timeout && self.conn.is_open()
    }
}

impl UpstreamPool {
    /// A pool whose connections take at most `connect_timeout` to open, and
    /// are closed after `idle_timeout` unused (told by `clock`); at most
    /// `max_idle` per server. `https://` servers are trusted by the public
    /// roots, and `roots` when given.
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        clock: CoarseTimer,
        roots: Option<&ServerRoots>,
    ) -> Self {
        let connector = server_conn::connector(connect_timeout, roots);
        UpstreamPool {
            connector,
            servers: Mutex::default(),
            idle_timeout,
            max_idle,
            clock,
        }
    }

    /// Sends the request (`parts`: origin-form URI, Host set; and its `body`)
    /// to the server at `url`, whose origin is `origin`, on an idle connection
    /// or a new one. The response's body gives the connection back once it is
    /// read to the end.
    pub async fn send<B>(
        &self,
        url: &Arc<str>,
        origin: &Uri,
        request: &RequestHead,
        body: Option<B>,
    ) -> Result<(ResponseHead, PooledBody), UpstreamError>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let slot = self.slot(url);
        // A request with no body to send can be sent whole again.
        let retriable = body.as_ref().is_none_or(|b| b.is_end_stream())
            && matches!(request.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let body = match self.checkout(&slot) {
            None => body,
            Some(conn) => match conn.exchange(request, body).await {
                Ok((head, reader)) => return Ok(self.response(slot, head, reader)),
                // The server closed the idle connection as the request went
                // out: a new connection takes it (it had no body to send).
                Err(e) if retriable && e.nothing_read() => {
                    tracing::debug!(error = %e, "pooled connection closed; sending on a new one");
                    None
                }
                Err(e) => return Err(UpstreamError::Exchange(e)),
            },
        };
        // Boxed: with keep-alive, few requests make a connection, and the
        // future of every request would otherwise be as large as this one.
        let conn = Conn::new(ServerIo(Box::pin(self.open(origin)).await?));
        match conn.exchange(request, body).await {
            Ok((head, reader)) => Ok(self.response(slot, head, reader)),
            Err(e) => Err(UpstreamError::Exchange(e)),
        }
    }

    /// Sends a request to switch protocols, through hyper's client on a
    /// connection of its own, which the switch consumes.
    pub async fn send_upgrade(
        &self,
        origin: &Uri,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let io = self.open(origin).await?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake(io.into_inner())
            .await
            .map_err(UpstreamError::Upgrade)?;
        hyper::rt::Executor::execute(
            &TokioExecutor::new(),
            Box::pin(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            }),
        );
        sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Upgrade)
    }

    /// Drops idle connections that are closed or unused for too long, and the
    /// slots of servers left with none (and no response out). Connections
    /// idle for [`RELEASE_AFTER`] give their buffers back (see
    /// [`slum_http1::Conn::release_buffers`]): one kept to each of a
    /// thousand servers would otherwise hold 32 MB a router thread.
    pub fn sweep(&self) {
        let now = self.clock.now();
        lock(&self.servers).retain(|_, slot| {
            let mut idle = lock(&slot.idle);
            idle.retain_mut(|c| {
                let usable = c.usable(now, self.idle_timeout);
                if usable && now - c.since >= RELEASE_AFTER {
                    c.conn.release_buffers();
                }
                usable
            });
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

    /// Bytes the idle connections' buffers hold allocated, over all servers.
    #[cfg(test)]
    fn idle_buffers(&self) -> usize {
        lock(&self.servers)
            .values()
            .flat_map(|slot| {
                lock(&slot.idle)
                    .iter()
                    .map(|c| c.conn.buffered_capacity())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    fn slot(&self, url: &Arc<str>) -> Arc<Slot> {
        let mut servers = lock(&self.servers);
        match servers.get(url) {
            Some(slot) => Arc::clone(slot),
            None => Arc::clone(servers.entry(Arc::clone(url)).or_default()),
        }
    }

    fn checkout(&self, slot: &Slot) -> Option<Box<Conn>> {
        let now = self.clock.now();
        let mut idle = lock(&slot.idle);
        // Most recently used first: the likeliest to be still open.
        while let Some(mut c) = idle.pop() {
            if c.usable(now, self.idle_timeout) {
                return Some(c.conn);
            }
        }
        None
    }

    fn response(
        &self,
        slot: Arc<Slot>,
        head: ResponseHead,
        reader: Reader,
    ) -> (ResponseHead, PooledBody) {
        let mut body = PooledBody {
            reader,
            back: Some(Return {
                slot,
                max_idle: self.max_idle,
                clock: self.clock.clone(),
            }),
        };
        body.give_back_if_read();
        (head, body)
    }

    /// A new connection to `origin`.
    async fn open(&self, origin: &Uri) -> Result<Io, UpstreamError> {
        server_conn::open(&self.connector, origin)
            .await
            .map_err(|cause| UpstreamError::Connect { cause })
    }
}

/// The way back to the pool for the connection a response came on.
struct Return {
    slot: Arc<Slot>,
    max_idle: usize,
    clock: CoarseTimer,
}

impl Return {
    fn give_back(self, conn: Box<Conn>) {
        let mut idle = lock(&self.slot.idle);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: self.clock.now(),
            });
        }
    }
}

/// A response body from a pooled connection. A body dropped before its end
/// takes the connection with it.
pub struct PooledBody {
    reader: Reader,
    back: Option<Return>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("read", &self.reader.is_end())
            .field("returns", &self.back.is_some())
            .finish()
    }
}

impl PooledBody {
    /// Reads the rest of the body (when framed by its length) into the
    /// connection's buffer before any of it is passed on: a body that breaks
    /// off is then the exchange's failure, told before anything of the answer
    /// went to the client (and a GET can go to a backup instead). For small
    /// bodies: they usually came with their head, and then this is a
    /// comparison; nothing is copied either way.
    pub fn poll_whole(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ExchangeError>> {
        self.reader.poll_buffered(cx)
    }

    /// [`PooledBody::poll_whole`], as a future.
    pub async fn read_whole(&mut self) -> Result<(), ExchangeError> {
        std::future::poll_fn(|cx| self.poll_whole(cx)).await
    }

    /// Gives the connection back if the body has been read to its end.
    fn give_back_if_read(&mut self) {
        if !self.reader.is_end() {
            return;
        }
        if let Some(back) = self.back.take() {
            if let Some(conn) = self.reader.take_reusable() {
                back.give_back(conn);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        let data = this.reader.poll_data(cx);
        if let Poll::Ready(Some(Ok(_)) | None) = &data {
            // Given back as soon as the end is read: a client that stops at a
            // known length never polls past it.
            this.give_back_if_read();
        }
        data.map(|d| d.map(|d| d.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.reader.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        self.reader.size_hint()
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

    const NO_BODY: Option<Empty<Bytes>> = None;

    fn get(host: &str) -> RequestHead {
        RequestHead::for_test(Method::GET, "/", &[("host", host)])
    }

    fn upgrade(host: &str) -> Request<RequestBody> {
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
            None,
        )
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let (origin, accepted) = server("hello").await;
        let url: Arc<str> = origin.to_string().into();
        let pool = pool();
        for _ in 0..5 {
            let resp = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
            let body = resp.1.collect().await.unwrap();
            assert_eq!(body.to_bytes(), "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_upgrade_goes_on_a_connection_of_its_own() {
        let (origin, accepted) = server("hello").await;
        let url: Arc<str> = origin.to_string().into();
        let pool = pool();
        for upgrades in [false, true, false] {
            match upgrades {
                true => {
                    let resp = pool.send_upgrade(&origin, upgrade("a")).await.unwrap();
                    resp.into_body().collect().await.unwrap();
                }
                false => {
                    let resp = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
                    resp.1.collect().await.unwrap();
                }
            }
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
        let resp = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
        drop(resp);
        let resp = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
        let body = resp.1.collect().await.unwrap();
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
            None,
        );
        let resp = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
        resp.1.collect().await.unwrap();
        assert_eq!(pool.idle(), 1);
        pool.sweep();
        assert_eq!(pool.idle(), 0);
        assert!(lock(&pool.servers).is_empty(), "the slot goes too");
        let resp = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
        resp.1.collect().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_idle_a_while_frees_its_buffers_and_is_reused() {
        let (origin, accepted) = server("hello").await;
        let url: Arc<str> = origin.to_string().into();
        let pool = pool();
        let resp = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
        resp.1.collect().await.unwrap();
        pool.sweep();
        assert!(pool.idle_buffers() > 0, "just used: kept as it is");
        // Idle for RELEASE_AFTER now.
        for slot in lock(&pool.servers).values() {
            for c in lock(&slot.idle).iter_mut() {
                c.since = c.since.checked_sub(RELEASE_AFTER).unwrap();
            }
        }
        pool.sweep();
        assert_eq!((pool.idle(), pool.idle_buffers()), (1, 0));
        let resp = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
        assert_eq!(resp.1.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the same connection");
    }

    /// A server that answers the first request on each connection, then reads
    /// the next request head and closes the connection without an answer: as
    /// a server does that closes an idle connection just as a request comes.
    async fn closing_server() -> (Uri, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    for answer in [&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..], b""] {
                        let mut head = Vec::new();
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = stream.write_all(answer).await;
                    }
                });
            }
        });
        (origin, accepted)
    }

    #[tokio::test]
    async fn a_bodiless_get_goes_again_on_a_new_connection_when_the_pooled_one_closes() {
        let (origin, accepted) = closing_server().await;
        let url: Arc<str> = origin.to_string().into();
        let pool = pool();
        for _ in 0..3 {
            // As the router sends it: a body, empty.
            let empty = Some(Empty::<Bytes>::new());
            let resp = pool.send(&url, &origin, &get("a"), empty).await.unwrap();
            let body = resp.1.collect().await.unwrap();
            assert_eq!(body.to_bytes(), "ok");
        }
        // Each request after the first found its pooled connection closing,
        // and went on a new one: three connections, one per request.
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_with_a_body_is_not_sent_twice() {
        let (origin, accepted) = closing_server().await;
        let url: Arc<str> = origin.to_string().into();
        let pool = pool();
        let resp = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
        resp.1.collect().await.unwrap();
        let mut post = get("a");
        post.method = Method::POST;
        let body = Some(Full::new(Bytes::from_static(b"once")));
        let err = pool.send(&url, &origin, &post, body).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Exchange(_)), "{err:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A server that answers each request with a head of `length` and the
    /// pieces of `body` that follow it, 50 ms apart (the first with the head),
    /// then keeps the connection open, or closes it when `close`.
    async fn late_body_server(length: usize, body: &'static [&'static str], close: bool) -> Uri {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        let mut head = Vec::new();
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let mut out =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");
                        for piece in body {
                            out.push_str(piece);
                            let _ = stream.write_all(out.as_bytes()).await;
                            out.clear();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        origin
    }

    #[tokio::test]
    async fn a_body_read_whole_is_passed_on_at_once_and_its_connection_goes_back() {
        use futures::FutureExt;
        let origin = late_body_server(11, &["hel", "lo ", "world"], false).await;
        let url: Arc<str> = origin.to_string().into();
        let pool = pool();
        for _ in 0..2 {
            let (_, mut body) = pool.send(&url, &origin, &get("a"), NO_BODY).await.unwrap();
            body.read_whole().await.unwrap();
            assert_eq!(body.size_hint().exact(), Some(11));
            let mut got = Vec::new();
            while let Some(frame) = body.frame().now_or_never().expect("no wait") {
                got.extend_from_slice(&frame.unwrap().into_data().unwrap());
            }
            assert_eq!(got, b"hello world");
            assert_eq!(pool.idle(), 1, "the connection went back");
        }
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_fails_its_whole_read() {
        let origin = late_body_server(11, &["hello"], true).await;
        let url: Arc<str> = origin.to_string().into();
        let (_, mut body) = pool()
            .send(&url, &origin, &get("a"), NO_BODY)
            .await
            .unwrap();
        let err = body.read_whole().await.unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
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
            .send(&origin.to_string().into(), &origin, &get("a"), NO_BODY)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
    }
}
