//! What the orchestrator asks of routing, and tells it.
//!
//! Health checks probe the servers traffic goes to, and failover reads their
//! status, as the route table in force has them (no query per check); every
//! change the orchestrator makes (a health transition, a move, a drain) is
//! applied to routing at once rather than at the next poll. [`Routing`] is
//! that much and no more: `slum serve` implements it over its router's table,
//! so that nothing here needs the router.

use std::time::Duration;

use async_trait::async_trait;

use crate::fleet::model::ServerStatus;

/// A server as routing has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedServer {
    pub id: String,
    pub url: String,
    /// The domain the router sends its tenants' Hosts under.
    pub domain: String,
    pub status: ServerStatus,
    /// Why routing sends it nothing whatever its status, if it does not.
    pub routing_problem: Option<String>,
}

/// Routing as the orchestrator sees it.
#[async_trait]
pub trait Routing: Send + Sync + 'static {
    /// Every server routing knows, with its URL and status now.
    fn servers(&self) -> Vec<RoutedServer>;

    /// `server`'s status as routing has it now; `None` for a server it does
    /// not know.
    fn status(&self, server: &str) -> Option<ServerStatus>;

    /// Applies a change this process made to the fleet database at once.
    async fn fleet_changed(&self);

    /// Routes around `server` in this process alone for `how_long`, whatever
    /// the database says: what a process that does not lead the fleet does
    /// with a server it saw failing, since deciding for the fleet is the
    /// leader's.
    async fn hold_offline(&self, server: &str, how_long: Duration);
}
