//! The router's threads: each runs a single-threaded runtime that owns the
//! connections it is handed and its own keep-alive pools, so that a request
//! never changes threads on its way through (nginx's worker model).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::headers::Peer;
use super::http2::{self, Http2Limits};
use super::limits::ConnectionPermit;
use super::proxy::{Common, Proxy, ThreadTable};
use super::shutdown::{Closing, ClosingWatch};
use super::tls::{self, Negotiated, TlsSettings};
use super::upstream_pool::UpstreamPool;
use super::RouterConfig;
use crate::AbortOnDrop;
use slum_http1::CoarseTimer;
use slum_http1::{ClientConn, Limits, Locked};

/// How often a router thread's clock moves: its timeouts end to within this.
const TICK: Duration = Duration::from_millis(100);

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    Plain,
    Tls,
}

/// A connection handed to a router thread, with its place in the
/// connection counts (given back when the connection ends) and the listener
/// it came from.
pub(super) type Handoff = (std::net::TcpStream, SocketAddr, ConnectionPermit, Listener);

/// A router thread as the acceptor sees it.
pub(super) struct RouterThread {
    pub(super) connections: mpsc::UnboundedSender<Handoff>,
    /// Its open connections, for handing the next one to the least busy.
    pub(super) open: Arc<AtomicUsize>,
    pub(super) done: tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
}

/// Starts router thread `n`: a single-threaded runtime serving the connections
/// the acceptor hands it.
pub(super) fn start_thread(
    n: usize,
    common: &Arc<Common>,
    config: &RouterConfig,
    tls: Option<TlsSettings>,
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
                    runtime.block_on(run_thread(common, &config, tls, handed, thread_open, stop));
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
    config: &RouterConfig,
    tls: Option<TlsSettings>,
    mut handed: mpsc::UnboundedReceiver<Handoff>,
    open: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let timer = CoarseTimer::new();
    let pool = UpstreamPool::new(
        config.connect_timeout,
        Duration::from_secs(90),
        256,
        timer.clone(),
        config.server_roots.as_ref(),
    );
    let metrics = common.metrics.router_shard();
    let table = Mutex::new(Arc::new(ThreadTable(common.control.table())));
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
        max_connection_options: config.max_connection_options,
        body_timeout: config.body_timeout,
        min_body_rate: config.min_body_rate,
    };
    let h2_limits = Http2Limits {
        max_streams: config.h2_max_streams,
        idle: config.header_timeout,
        body_timeout: config.body_timeout,
        max_header_bytes: u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX),
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
        let (stream, peer, permit, from) = tokio::select! {
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
        let closing = Closing::watch(&closing);
        let alive = alive.clone();
        let open = Arc::clone(&open);
        let tls = tls.clone().filter(|_| from == Listener::Tls);
        let settings = (limits, h2_limits);
        tokio::spawn(async move {
            let _alive = alive;
            let served = match tls {
                None => {
                    let conn = ClientConn::new(stream, limits, proxy.timer.clone());
                    let served =
                        proxy.serve_connection(conn, Peer::new(peer), permit.client(), closing);
                    served.await.map_err(BoxError::from)
                }
                // Boxed: the plain connections' futures stay as they were.
                Some(tls) => {
                    Box::pin(serve_tls(
                        &proxy, &tls, stream, peer, &permit, closing, settings,
                    ))
                    .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves a connection of the HTTPS listener: its TLS handshake within the
/// header timeout, then HTTP/1.1 or HTTP/2 as the client chose by ALPN (a
/// TLS-ALPN-01 validation wants nothing after the handshake).
async fn serve_tls(
    proxy: &Arc<Proxy>,
    tls: &TlsSettings,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: &ConnectionPermit,
    closing: ClosingWatch,
    (limits, h2_limits): (Limits, Http2Limits),
) -> Result<(), BoxError> {
    let (stream, negotiated) =
        tls::handshake(tls, stream, &proxy.timer, limits.header_timeout).await?;
    match negotiated {
        Negotiated::Http1 => {
            let conn = ClientConn::new(Locked(stream), limits, proxy.timer.clone());
            let served =
                proxy.serve_connection(conn, Peer::over_tls(peer), permit.client(), closing);
            Ok(served.await?)
        }
        Negotiated::Http2 => {
            let served = http2::serve_connection(
                Arc::clone(proxy),
                stream,
                Peer::over_tls(peer),
                permit.shared_client(),
                closing,
                h2_limits,
            );
            Ok(served.await?)
        }
        Negotiated::AcmeChallenge => {
            let mut stream = stream;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            Ok(())
        }
    }
}
