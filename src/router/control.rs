//! What the router asks of the control plane, as hooks (the way Pingora's
//! `ProxyHttp` gives a proxy its decisions): the route table in force, waking
//! a tenant, the servers it could not reach, a server's going offline, and a
//! domain asked for over HTTPS that has no certificate.
//!
//! The router moves bytes and decides nothing else: it never reads the fleet
//! database, spawns an instance or judges a server's health itself. `slum
//! serve` answers these hooks over its fleet database, orchestrator and health
//! monitor; the router's tests answer them with a fake, so that they need
//! neither a database nor a tenement server.

use std::sync::Arc;

use async_trait::async_trait;

use super::route_table::{DomainRoute, RouteTable};

/// The control plane, as the router sees it.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// The route table in force now.
    fn table(&self) -> Arc<RouteTable>;

    /// Whether `table` is still the table in force. Every request asks, so
    /// that a router thread keeps its own reference to the table and takes a
    /// new one only when the table changed: this must be cheap.
    fn is_current(&self, table: &Arc<RouteTable>) -> bool;

    /// Starts the instance a [`Decision::Spawn`](super::route_table::Decision)
    /// names on its home server and makes it routable: once this returns Ok,
    /// [`table`](ControlPlane::table) routes the domain. An error is the reason,
    /// for the client's 503. The router asks once per instance at a time, and
    /// on the runtime it was started from.
    async fn wake(&self, route: &DomainRoute) -> Result<(), String>;

    /// `server` refused a connection, or did not take one in time: the
    /// passive health signal. Asked on the runtime the router was started
    /// from.
    async fn server_unreachable(&self, server: &str);

    /// Resolves once the table in force says `server` is offline: a request
    /// that can go to a backup stops waiting on a server declared offline
    /// meanwhile.
    async fn until_offline(&self, server: &str);

    /// A client asked for `domain`, a tenant domain, over HTTPS, and there is
    /// no certificate for it: one may be ordered. Asked from within a TLS
    /// handshake, on a router thread: it must not wait. The router asks once
    /// per domain for a while (see [`Certificates`](super::tls::Certificates));
    /// by default nothing is done.
    fn certificate_wanted(&self, domain: &str) {
        let _ = domain;
    }
}
