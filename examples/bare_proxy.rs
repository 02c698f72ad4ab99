//! The least a reverse proxy on hyper does, as a baseline for the router
//! benchmark: what slum costs beyond the HTTP stack it is built on.
//!
//! `bare_proxy LISTEN UPSTREAM HOST`: one thread (a single-threaded tokio
//! runtime), every request sent to `UPSTREAM` with Host set to `HOST` over one
//! upstream connection per client connection; no routing table, no forwarding
//! headers, no timeouts, no metrics. Not a proxy to use: scripts/bench-router.sh
//! starts it.

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
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream, host))
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
