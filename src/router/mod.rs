//! The router: the reverse proxy in front of the fleet.
//!
//! A request's Host (and nothing else) picks its tenant in the in-memory
//! [`RouteTable`](route_table::RouteTable); the decision is a plain function
//! there, and the rest of the router moves the bytes: it rewrites Host to the
//! tenement mapping (`{tenant}.{process}.{server domain}`), streams bodies both
//! ways without buffering, passes `Upgrade` (WebSocket) through, keeps a pool of
//! keep-alive connections per server, and answers its own failures with a status
//! and a one-line body that says what went wrong.
//!
//! - [`serve`] (here): the entry point; it accepts connections and hands each
//!   to the least busy of the router's [`threads`].
//! - [`threads`]: one single-threaded runtime per thread, owning its
//!   connections, pools and timers; [`shutdown`] tells their connections to
//!   finish.
//! - [`proxy`]: a request from its Host to the server's answer; [`headers`]:
//!   what the request and the answer carry on their way; [`answers`]: the
//!   router's own answers when a server cannot give one.
//! - [`wake`]: a tenant without an instance is spawned on its home server by
//!   its first request; concurrent first requests wait for that one spawn.
//! - [`route_table`]: the pure decision of where a request goes;
//!   [`route_sync`] keeps the table in step with the fleet database.
//! - [`upstream_pool`]: each thread's keep-alive connections to the servers.
//! - [`limits`]: the caps on what clients may hold (connections, requests in
//!   flight), counted as connections are accepted and requests sent on.
//! - [`tls`]: HTTPS. The fleet's certificates in memory, chosen by SNI, and
//!   the TLS handshake, done on the router thread a connection is handed to;
//!   [`http2`]: HTTP/2 to clients that negotiate it (servers are spoken to
//!   in HTTP/1.1 whatever the client speaks); [`plain`]: what the plain
//!   listener answers itself (ACME HTTP-01 challenges, redirects to HTTPS).

mod answers;
mod control;
mod headers;
mod http2;
mod limits;
mod plain;
mod proxy;
pub mod route_sync;
pub mod route_table;
mod shutdown;
mod threads;
pub mod tls;
pub mod upstream_pool;
mod wake;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::tls::ServerRoots;
pub(crate) use answers::ROUTER_MARK;
pub use control::ControlPlane;
use limits::{Clients, InFlightCaps, Throttle};
use plain::PlainHttp;
use proxy::Common;
pub use slum_http1::MinRate;
use threads::{start_thread, Listener};
use tls::Certificates;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The router's settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Threads that proxy requests (at least one is started).
    pub threads: usize,
    /// Time allowed to read a request's head (and an idle keep-alive
    /// connection's next one).
    pub header_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most options a request's `Connection` header(s) may list.
    pub max_connection_options: usize,
    /// Time a client may leave a body standing still.
    pub body_timeout: Duration,
    /// The slowest a request body may come, over the time it was waited
    /// for, after a grace period; `None`: no lower bound.
    pub min_body_rate: Option<MinRate>,
    /// Client connections open at once, in all; one more is answered 503
    /// and closed.
    pub max_connections: usize,
    /// Client connections open at once from one client address (an IPv6
    /// /64); one more is answered 429 and closed.
    pub max_connections_per_client: usize,
    /// Requests in flight to one server (sent on, and their answer not yet
    /// passed whole; a WebSocket for its life); one more is answered 503.
    pub max_in_flight_per_server: usize,
    /// Requests in flight from one client address; one more is answered 429.
    pub max_in_flight_per_client: usize,
    /// Time allowed for a server's response head, counted from the last
    /// bytes of the request it was sent.
    pub upstream_timeout: Duration,
    /// Time allowed to connect to a server.
    pub connect_timeout: Duration,
    /// Largest response body (by its `Content-Length`) to a bodiless GET
    /// that is read whole before the response head goes to the client, so
    /// that a server failing between the two fails the exchange (and the
    /// GET can go to a backup) instead of leaving the client a head with no
    /// body; 0 passes every head on at once.
    pub whole_response_bytes: u64,
    /// Time in-flight requests get to finish once the router stops.
    pub shutdown_grace: Duration,
    /// A private CA's certificates, trusted for `https://` servers besides
    /// the public roots.
    pub server_roots: Option<ServerRoots>,
    /// HTTP/2 streams a client connection may have open at once.
    pub h2_max_streams: u32,
    /// Whether a plain request for a host with a valid certificate is
    /// redirected to HTTPS when the certificate does not say (only with an
    /// HTTPS listener).
    pub https_redirect: bool,
    /// The `max-age` of the `Strict-Transport-Security` header on HTTPS
    /// answers; `None`: no such header.
    pub hsts: Option<Duration>,
}

/// The router's listeners, and the certificates they serve with.
pub struct Listeners {
    /// The plain HTTP listener.
    pub plain: TcpListener,
    /// The HTTPS listener, if any.
    pub tls: Option<TcpListener>,
    /// The fleet's certificates and ACME challenges (kept current by
    /// [`route_sync`]).
    pub certificates: Arc<Certificates>,
}

impl Listeners {
    /// A plain listener alone.
    #[cfg(test)]
    pub fn plain(listener: TcpListener) -> Listeners {
        Listeners {
            plain: listener,
            tls: None,
            certificates: Arc::new(Certificates::new()),
        }
    }
}

/// Serves the router on its `listeners` until `stop` turns true, then lets
/// in-flight requests finish within the configured grace period. `control`
/// answers what the router asks of the control plane (see [`ControlPlane`]),
/// on the runtime this is called from; `metrics` counts requests and
/// latencies.
///
/// Connections are accepted here, from the plain listener and the HTTPS one
/// alike, counted under the same caps, and handed to `config.threads`
/// threads, the least busy first; each runs a single-threaded runtime that
/// owns its connections and its keep-alive pools, so that a request never
/// changes threads on its way through (nginx's worker model). A thread does
/// the TLS handshake of the HTTPS listener's connections.
pub async fn serve(
    listeners: Listeners,
    control: Arc<dyn ControlPlane>,
    metrics: Arc<Metrics>,
    config: &RouterConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Listeners {
        plain: listener,
        tls: tls_listener,
        certificates,
    } = listeners;
    let https_port = match &tls_listener {
        Some(l) => Some(l.local_addr()?.port()),
        None => None,
    };
    let tls = match tls_listener {
        Some(_) => Some(tls::server_config(
            Arc::clone(&certificates),
            Arc::clone(&control),
        )?),
        None => None,
    };
    let hsts = config
        .hsts
        .and_then(|age| HeaderValue::try_from(format!("max-age={}", age.as_secs())).ok());
    let common = Arc::new(Common {
        control,
        metrics,
        upstream_timeout: config.upstream_timeout,
        connect_timeout: config.connect_timeout,
        whole_response_bytes: config.whole_response_bytes,
        wakes: Default::default(),
        control_runtime: tokio::runtime::Handle::current(),
        in_flight: InFlightCaps {
            per_client: config.max_in_flight_per_client,
            per_server: config.max_in_flight_per_server,
        },
        plain: PlainHttp {
            certificates,
            https_port,
            redirect_by_default: config.https_redirect,
            hsts,
        },
    });
    let clients = Clients::new(config.max_connections, config.max_connections_per_client);
    let mut accept_errors = Throttle::new(Duration::from_secs(1));
    let mut threads = Vec::with_capacity(config.threads);
    for n in 0..config.threads.max(1) {
        threads.push(start_thread(n, &common, config, tls.clone(), stop.clone())?);
    }
    loop {
        let (accepted, from) = tokio::select! {
            accepted = listener.accept() => (accepted, Listener::Plain),
            accepted = accept_tls(tls_listener.as_ref()) => (accepted, Listener::Tls),
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep
                // serving, and say so once a second at most.
                if let Some(held_back) = accept_errors.allow(tokio::time::Instant::now()) {
                    tracing::warn!(error = %e, held_back, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot hand over a connection");
                continue;
            }
        };
        let permit = match clients.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refused) => {
                common.metrics.connection_refused(refused.reason());
                tracing::debug!(%peer, cap = refused.reason(), "connection refused");
                // Told in one write that does not wait (the socket is
                // non-blocking), and closed. What the client sent already is
                // read off first, once: a close with bytes unread resets the
                // connection, and the client could lose the answer.
                // A TLS client is not written to: it would read no HTTP
                // before its handshake.
                let _ = std::io::Read::read(&mut &stream, &mut [0u8; 4096]);
                if from == Listener::Plain {
                    let _ = std::io::Write::write(&mut &stream, refused.answer());
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(thread) = threads
            .iter()
            .min_by_key(|t| t.open.load(Ordering::Relaxed))
        else {
            break;
        };
        thread.open.fetch_add(1, Ordering::Relaxed);
        if thread
            .connections
            .send((stream, peer, permit, from))
            .is_err()
        {
            // The thread is gone; its result says why.
            break;
        }
    }
    drop((listener, tls_listener));
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

/// The next connection of the HTTPS listener; never, without one.
async fn accept_tls(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
