//! HTTP/2 to clients (negotiated by ALPN on the HTTPS listener), through
//! hyper's server, adapted to the proxy: each stream is a request that goes
//! through the same routing and forwarding as an HTTP/1.1 one, to the server
//! over HTTP/1.1 on the thread's pool. Bodies stream both ways; a stream's
//! place among its client's requests in flight is held by its answer's body
//! until that is sent whole (or the stream is reset).
//!
//! What HTTP/1.1's own core bounds, hyper's HTTP/2 bounds here: the streams a
//! connection may have open at once (`--h2-max-streams`), a request body that
//! stands still for the body timeout, a connection with no stream open for
//! the header timeout (closed, as an idle keep-alive connection is), and a
//! client that stops answering pings. Upgrades (WebSocket) are HTTP/1.1's:
//! an HTTP/2 request that asks for one is sent on as a plain request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::Either;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use slum_http1::timer::{after, CoarseSleep, CoarseTimer};
use slum_http1::{BodyProgress, RawHeaders, RequestHead};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::answers::{made, Answer};
use super::headers::Peer;
use super::limits::{Client, InFlight};
use super::proxy::{ClientBody, Proxy};
use super::shutdown::ClosingWatch;
use super::upstream_pool::PooledBody;
use super::BoxError;

/// How often an HTTP/2 client is pinged while its connection is open, and
/// how long it has to answer.
const PING_EVERY: Duration = Duration::from_secs(20);
const PING_ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// What an HTTP/2 connection is held to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Http2Limits {
    /// Streams open at once on one connection.
    pub(super) max_streams: u32,
    /// A connection with no stream open this long is closed.
    pub(super) idle: Duration,
    /// A request body that stands still this long fails.
    pub(super) body_timeout: Duration,
    /// Largest request head (HPACK-decoded header list), in bytes.
    pub(super) max_header_bytes: u32,
}

/// The streams of one connection: open now, and begun in all (to tell an
/// idle connection from a busy one between two looks).
#[derive(Default)]
struct Streams {
    open: AtomicUsize,
    begun: AtomicU64,
}

/// Serves an HTTP/2 connection until the client closes it, it stays idle, or
/// the router shuts down (streams in flight finish first).
pub(super) async fn serve_connection<I>(
    proxy: Arc<Proxy>,
    io: I,
    peer: Peer,
    client: Arc<Client>,
    mut closing: ClosingWatch,
    limits: Http2Limits,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let streams = Arc::new(Streams::default());
    let service = {
        let streams = Arc::clone(&streams);
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            let peer = peer.clone();
            let client = Arc::clone(&client);
            let open = Opened::new(&streams);
            // Boxed: hyper spawns each stream as a task, and the future,
            // whose state is all of routing and forwarding, was moved
            // (copied) several times on the way, which cost more than the
            // allocation does; a box moves as a pointer.
            Box::pin(async move {
                let resp = answer_stream(&proxy, req, &peer, client, open, limits).await;
                Ok::<_, Infallible>(resp)
            })
        })
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(limits.max_header_bytes)
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_ANSWER_WITHIN);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut seen = streams.begun.load(Relaxed);
    let mut idle_check = tokio::time::interval(limits.idle);
    idle_check.reset();
    let mut shutting = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => return done,
            () = std::future::poll_fn(|cx| match closing.closed(cx) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }), if !shutting => {
                shutting = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = idle_check.tick(), if !shutting => {
                let begun = streams.begun.load(Relaxed);
                if begun == seen && streams.open.load(Relaxed) == 0 {
                    shutting = true;
                    conn.as_mut().graceful_shutdown();
                }
                seen = begun;
            }
        }
    }
}

/// A stream counted open until dropped (with its answer's body).
struct Opened(Arc<Streams>);

impl Opened {
    fn new(streams: &Arc<Streams>) -> Opened {
        streams.open.fetch_add(1, Relaxed);
        streams.begun.fetch_add(1, Relaxed);
        Opened(Arc::clone(streams))
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// One stream's request, routed and forwarded as an HTTP/1.1 one is.
async fn answer_stream(
    proxy: &Proxy,
    req: Request<Incoming>,
    peer: &Peer,
    client: Arc<Client>,
    open: Opened,
    limits: Http2Limits,
) -> Response<Answered> {
    let (parts, body) = req.into_parts();
    // A tunnel is not a request to pass on, as over HTTP/1.1.
    if parts.method == Method::CONNECT {
        let resp = made(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served here".into(),
        );
        proxy.metrics.count(resp.status().as_u16());
        return resp.map(|body| Answered {
            body: Either::Right(body),
            _held: (InFlight::new(client), open),
        });
    }
    let mut head = RequestHead {
        method: parts.method,
        uri: parts.uri,
        // Towards the server: HTTP/1.1.
        version: Version::HTTP_11,
        headers: RawHeaders::from_map(&parts.headers),
        set: Vec::new(),
    };
    let body = StreamBody::new(body, proxy.timer.clone(), limits.body_timeout);
    let mut held = InFlight::new(client);
    let answer = proxy.route(&mut head, body, peer, &mut held).await;
    proxy.metrics.count(answer.status().as_u16());
    let hsts = proxy.common.plain.hsts.as_ref();
    let (mut resp, body) = match answer {
        Answer::Passed {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(());
            *resp.status_mut() = status;
            *resp.headers_mut() = header_map(&headers);
            (resp, Either::Left(body))
        }
        Answer::Made(resp) => {
            let (parts, body) = resp.into_parts();
            (Response::from_parts(parts, ()), Either::Right(body))
        }
    };
    if let Some(hsts) = hsts {
        resp.headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| hsts.clone());
    }
    resp.map(|()| Answered {
        body,
        _held: (held, open),
    })
}

/// A server's header lines as a header map, for hyper's HTTP/2 (which takes
/// out those HTTP/2 forbids). A line that is no valid header is left out.
fn header_map(headers: &RawHeaders) -> HeaderMap {
    // As many as there are lines: a larger map's allocation was among the
    // dearest steps of an HTTP/2 answer (glibc consolidates its free lists
    // for a request of that size).
    let mut map = HeaderMap::with_capacity(headers.iter().size_hint().0);
    for (name, value) in headers.iter() {
        let (Ok(name), Some(value)) = (HeaderName::from_bytes(name), headers.shared(value)) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// An answer's body on its way to an HTTP/2 client, holding the request's
/// place in flight (and its stream's count) until it is sent or dropped.
pub(super) struct Answered {
    body: Either<PooledBody, BoxBody<Bytes, BoxError>>,
    _held: (InFlight<Arc<Client>>, Opened),
}

impl Body for Answered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body from an HTTP/2 stream, held to the body timeout while the
/// client's bytes are waited for, its progress told as an HTTP/1.1 body's
/// is (so that a slow upload is not taken for a slow server).
pub(super) struct StreamBody {
    inner: Incoming,
    progress: Arc<BodyProgress>,
    timer: CoarseTimer,
    limit: Duration,
    sleep: Option<CoarseSleep>,
    /// When the present wait for the client began.
    waiting_since: Option<Instant>,
}

impl StreamBody {
    fn new(inner: Incoming, timer: CoarseTimer, limit: Duration) -> StreamBody {
        StreamBody {
            inner,
            progress: Arc::new(BodyProgress::new(timer.now())),
            timer,
            limit,
            sleep: None,
            waiting_since: None,
        }
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting_since = None;
                this.progress.moved(this.timer.now());
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.progress.waiting(false);
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                this.progress.waiting(false);
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.progress.waiting(true);
                let since = *this.waiting_since.get_or_insert(this.timer.now());
                let deadline = after(since, this.limit);
                std::task::ready!(this.timer.poll_until(&mut this.sleep, deadline, cx));
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no request body bytes for {:.1}s", this.limit.as_secs_f64()),
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ClientBody for StreamBody {
    fn progress(&self) -> Option<Arc<BodyProgress>> {
        Some(Arc::clone(&self.progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_lines_become_a_header_map_without_the_invalid_ones() {
        let head = slum_http1::ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ncontent-length: 2\r\n\r\n",
        );
        let map = header_map(&head.headers);
        assert_eq!(map.get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(map[header::CONTENT_TYPE], "text/plain");
        assert_eq!(map[header::CONTENT_LENGTH], "2");
    }
}
