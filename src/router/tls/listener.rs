//! The TLS side of the HTTPS listener: rustls's configuration (TLS 1.2 and
//! 1.3, ALPN `h2` then `http/1.1`, and `acme-tls/1` for the TLS-ALPN-01
//! challenge) and the handshake, which a router thread does within the
//! header timeout.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use slum_http1::timer::{self as coarse_timer, CoarseTimer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{Certificates, SniResolver, ACME_TLS_ALPN};
use crate::router::control::ControlPlane;

/// Sessions a router remembers for resumption (TLS 1.2 session ids, TLS 1.3
/// stateful tickets), over all its threads.
const SESSIONS_KEPT: usize = 16 * 1024;

/// What the HTTPS listener serves with: rustls's configuration, shared by
/// the router threads.
#[derive(Clone)]
pub(crate) struct TlsSettings {
    pub(crate) acceptor: TlsAcceptor,
}

/// What a client negotiated by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negotiated {
    Http1,
    Http2,
    /// A TLS-ALPN-01 validation: the handshake was all it wanted.
    AcmeChallenge,
}

/// The HTTPS listener's TLS configuration: certificates chosen by SNI from
/// `certificates` for the tenant domains of `control`'s route table.
pub(crate) fn server_config(
    certificates: Arc<Certificates>,
    control: Arc<dyn ControlPlane>,
) -> anyhow::Result<TlsSettings> {
    let resolver = Arc::new(SniResolver {
        certificates,
        control,
    });
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    // The server's order wins: HTTP/2 for a client that speaks both.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSIONS_KEPT);
    Ok(TlsSettings {
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

/// The TLS handshake of an accepted connection, within `limit` (the header
/// timeout) by `timer`'s clock: the stream and what ALPN chose. A client
/// that offers no ALPN speaks HTTP/1.1.
pub(crate) async fn handshake(
    tls: &TlsSettings,
    stream: TcpStream,
    timer: &CoarseTimer,
    limit: Duration,
) -> std::io::Result<(TlsStream<TcpStream>, Negotiated)> {
    let deadline = coarse_timer::after(timer.now(), limit);
    let stream = timer
        .timeout_at(deadline, tls.acceptor.accept(stream))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {:.1}s", limit.as_secs_f64()),
            )
        })??;
    let negotiated = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Negotiated::Http2,
        Some(p) if p == ACME_TLS_ALPN => Negotiated::AcmeChallenge,
        _ => Negotiated::Http1,
    };
    Ok((stream, negotiated))
}
