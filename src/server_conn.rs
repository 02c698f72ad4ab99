//! Connections to tenement servers, plain or TLS, as the router's keep-alive
//! pools and the health checks open them and speak HTTP/1.1 on them with
//! [`slum_http1`]: one connector (TCP options, the certificates trusted), and
//! the connection as the HTTP/1.1 core takes it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use slum_http1::Transport;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::ServerRoots;

/// A connection to a server, plain or TLS, as the connector opens it.
pub(crate) type Io = TokioIo<hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>>;

/// Opens connections to servers: `http://` plain, `https://` with TLS.
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// TCP keepalive on server connections: probes after this long quiet, this
/// often, and the connection ends after this many go unanswered. A server
/// that is there answers the probes from its kernel, also while its process
/// is slow.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 3;
/// How long bytes sent to a server may go unacknowledged (`TCP_USER_TIMEOUT`):
/// the kernel sends no keepalive probes while it has such bytes, so without
/// it a server that vanished while the router was still writing to it (an
/// upload, a WebSocket message) would hold the connection for the kernel's
/// retransmissions, about 15 minutes. It also bounds, above the probes, how
/// long a connection whose probes go unanswered lives: a server gone is
/// noticed within 25 s.
const UNACKNOWLEDGED_LIMIT: Duration = Duration::from_secs(25);

/// A connector whose connections take at most `connect_timeout` to open.
/// `https://` servers are trusted by the public roots, and `roots` when given.
pub(crate) fn connector(connect_timeout: Duration, roots: Option<&ServerRoots>) -> Connector {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // A server that vanishes (powered off, cut off) while a response is
    // quiet, as an event stream is, is noticed: the connection ends.
    http.set_keepalive(Some(KEEPALIVE_IDLE));
    http.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
    http.set_keepalive_retries(Some(KEEPALIVE_PROBES));
    http.set_tcp_user_timeout(Some(UNACKNOWLEDGED_LIMIT));
    // https servers get TLS; plain http ones none.
    http.enforce_http(false);
    let tls = hyper_rustls::HttpsConnectorBuilder::new();
    let tls = match roots {
        Some(roots) => tls.with_tls_config(roots.client_config()),
        None => tls.with_webpki_roots(),
    };
    tls.https_or_http().enable_http1().wrap_connector(http)
}

/// A new connection to `origin` (a URI with scheme and authority).
pub(crate) async fn open(
    connector: &Connector,
    origin: &Uri,
) -> Result<Io, Box<dyn std::error::Error + Send + Sync>> {
    let mut connector = connector.clone();
    let io = tower_service::Service::call(&mut connector, origin.clone()).await?;
    Ok(TokioIo::new(io))
}

/// A server connection as the HTTP/1.1 core speaks it: the connector's, with
/// its TCP socket reachable under any TLS (for quick acknowledgement).
pub(crate) struct ServerIo(pub(crate) Io);

impl Transport for ServerIo {
    fn tcp(&self) -> &TcpStream {
        match self.0.inner() {
            hyper_rustls::MaybeHttpsStream::Http(tcp) => tcp.inner(),
            hyper_rustls::MaybeHttpsStream::Https(tls) => tls.inner().get_ref().0.inner().inner(),
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
