//! The least a reverse proxy on hyper does, as a baseline for the router
//! benchmark: what slum costs beyond the HTTP stack it is built on.
//!
//! `bare_proxy LISTEN UPSTREAM HOST [raw]`: one thread (a single-threaded tokio
//! runtime), every request sent to `UPSTREAM` with Host set to `HOST` over one
//! upstream connection per client connection; no routing table, no forwarding
//! headers, no timeouts, no metrics. Not a proxy to use: scripts/bench-router.sh
//! starts it.
//!
//! With `raw`, the upstream side is not hyper's client but a few lines over the
//! socket, in the request's own task: the request head written as it came, the
//! response head parsed with httparse and its `Content-Length` body read whole.
//! Only bodiless requests and responses with a length (the benchmark's): what
//! hyper's client (a task per connection, reached through channels) costs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

type Body = BoxBody<Bytes, hyper::Error>;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut arg = |what: &str| args.next().with_context(|| format!("missing {what}"));
    let listen: SocketAddr = arg("LISTEN")?.parse()?;
    let upstream: SocketAddr = arg("UPSTREAM")?.parse()?;
    let host = HeaderValue::from_str(&arg("HOST")?)?;
    let raw = args.next().as_deref() == Some("raw");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if raw {
        runtime.block_on(raw::serve(listen, upstream, host))
    } else {
        runtime.block_on(serve(listen, upstream, host))
    }
}

async fn serve(listen: SocketAddr, upstream: SocketAddr, host: HeaderValue) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let host = host.clone();
        let sender: Arc<Mutex<Option<SendRequest<Body>>>> = Arc::default();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let sender = Arc::clone(&sender);
                let host = host.clone();
                async move {
                    let resp = forward(&sender, upstream, host, req).await;
                    Ok::<_, Infallible>(resp.unwrap_or_else(|_| {
                        let mut r = Response::new(Empty::new().map_err(|n| match n {}).boxed());
                        *r.status_mut() = StatusCode::BAD_GATEWAY;
                        r
                    }))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn forward(
    sender: &Mutex<Option<SendRequest<Body>>>,
    upstream: SocketAddr,
    host: HeaderValue,
    req: Request<Incoming>,
) -> anyhow::Result<Response<Body>> {
    let mut guard = sender.lock().await;
    let sender = match guard.take() {
        Some(s) if !s.is_closed() => guard.insert(s),
        _ => {
            let up = tokio::net::TcpStream::connect(upstream).await?;
            up.set_nodelay(true)?;
            let (s, conn) = http1::handshake(TokioIo::new(up)).await?;
            tokio::spawn(conn);
            guard.insert(s)
        }
    };
    sender.ready().await?;
    let (mut parts, body) = req.into_parts();
    parts.headers.insert(HOST, host);
    let resp = sender
        .send_request(Request::from_parts(parts, body.boxed()))
        .await?;
    Ok(resp.map(|b| b.boxed()))
}

/// The upstream side written by hand (see the module's documentation).
mod raw {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use anyhow::{bail, Context};
    use bytes::{BufMut, Bytes, BytesMut};
    use http_body_util::Full;
    use hyper::body::{Body as _, Incoming};
    use hyper::header::{HeaderValue, HOST};
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::Mutex;

    /// A client connection's upstream connection and its read buffer.
    type Upstream = Arc<Mutex<Option<(TcpStream, BytesMut)>>>;

    pub async fn serve(
        listen: SocketAddr,
        upstream: SocketAddr,
        host: HeaderValue,
    ) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let host = host.clone();
            let conn: Upstream = Arc::default();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let conn = Arc::clone(&conn);
                    let host = host.clone();
                    async move {
                        let resp = forward(&conn, upstream, &host, req).await;
                        Ok::<_, Infallible>(resp.unwrap_or_else(|_| {
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = StatusCode::BAD_GATEWAY;
                            r
                        }))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    async fn forward(
        conn: &Mutex<Option<(TcpStream, BytesMut)>>,
        upstream: SocketAddr,
        host: &HeaderValue,
        req: Request<Incoming>,
    ) -> anyhow::Result<Response<Full<Bytes>>> {
        if !req.body().is_end_stream() {
            bail!("raw mode sends no request bodies");
        }
        let mut conn = conn.lock().await;
        let (stream, buf) = match &mut *conn {
            Some(c) => c,
            None => {
                let s = TcpStream::connect(upstream).await?;
                s.set_nodelay(true)?;
                conn.insert((s, BytesMut::with_capacity(8192)))
            }
        };
        let mut head = BytesMut::with_capacity(256);
        head.put_slice(req.method().as_str().as_bytes());
        head.put_slice(b" ");
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        head.put_slice(path.as_bytes());
        head.put_slice(b" HTTP/1.1\r\nhost: ");
        head.put_slice(host.as_bytes());
        head.put_slice(b"\r\n");
        for (name, value) in req.headers().iter().filter(|(n, _)| *n != HOST) {
            head.put_slice(name.as_str().as_bytes());
            head.put_slice(b": ");
            head.put_slice(value.as_bytes());
            head.put_slice(b"\r\n");
        }
        head.put_slice(b"\r\n");
        stream.write_all(&head).await?;
        buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = parsed.parse(buf)? {
                let mut length = None;
                let mut resp = Response::builder().status(parsed.code.unwrap_or(502));
                for h in parsed.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = Some(std::str::from_utf8(h.value)?.trim().parse::<usize>()?);
                    }
                    resp = resp.header(h.name, h.value);
                }
                let end = head_len + length.context("raw mode reads only sized responses")?;
                while buf.len() < end {
                    if stream.read_buf(buf).await? == 0 {
                        bail!("upstream closed mid-response");
                    }
                }
                let body = buf.split_to(end).split_off(head_len).freeze();
                return Ok(resp.body(Full::new(body))?);
            }
            if stream.read_buf(buf).await? == 0 {
                bail!("upstream closed before a response head");
            }
        }
    }
}
