//! Adding and changing servers, checked: a server whose tenement would take
//! the Hosts slum sends it (`{tenant}.{process}.{domain}`) for its own
//! dashboard and API, or for the wrong process, is refused with a message
//! naming the `--domain` to use, and nothing is recorded.
//!
//! These are [`SlumDb`]'s `add_server`, `update_server` and
//! `update_server_settings`, which the management API calls; they stand in
//! front of [`FleetDb`](crate::FleetDb)'s calls of the same names, which
//! cannot reach a server and record it unchecked. The check itself is
//! [`TenementClients::check_routing`](crate::tenement::TenementClients::check_routing);
//! `slum serve`'s health checks run it again every round (see
//! [`health`](super::health)), so that a server that cannot be asked now, or
//! that is restarted with another `--domain` later, is judged too.

use crate::error::{Error, Kind, Result};
use crate::fleet::model::Server;
use crate::fleet::validation;
use crate::orchestrate::slum_db::SlumDb;
use crate::orchestrate::tenement::RoutingCheck;

impl SlumDb {
    /// Adds a tenement server to the fleet once its tenement is found routing
    /// by the server's domain (`domain`, or the host of `url`).
    ///
    /// Refused with [`Error::DomainMismatch`], recording nothing, when it
    /// routes by another. A server that cannot be asked (no answer within the
    /// request timeout, or not tenement's answers) is added as it always was:
    /// `slum serve`'s health checks judge it once it answers, and take it out
    /// of routing at once if it routes by another domain.
    pub async fn add_server(&self, server: &Server) -> Result<()> {
        let server = validation::server(server)?;
        // A taken id is refused as it always was, without asking the server.
        match self.store.get_server(&server.id).await {
            Ok(_) => return Err(Error::already_exists(Kind::Server, &server.id)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.check_routing(&server).await?;
        self.store.insert_server(&server).await?;
        self.record_event(crate::fleet::db::server_added(&server))
            .await;
        Ok(())
    }

    /// Replaces a server's url, region, capacity, token, domain and status;
    /// a new url or domain is checked as [`SlumDb::add_server`] checks it.
    pub async fn update_server(&self, server: &Server) -> Result<()> {
        self.update_checked(server, true).await
    }

    /// Replaces a server's url, region, capacity, token and domain, leaving
    /// its status to whoever else changes it meanwhile (health checks,
    /// drains); a new url or domain is checked as [`SlumDb::add_server`]
    /// checks it.
    pub async fn update_server_settings(&self, server: &Server) -> Result<()> {
        self.update_checked(server, false).await
    }

    async fn update_checked(&self, server: &Server, with_status: bool) -> Result<()> {
        let server = validation::server(server)?;
        let stored = self.store.get_server(&server.id).await?;
        // Only a new address can change where tenement routes what slum
        // sends; region, capacity, token and status are written unchecked.
        // (The store clears the routing problem when the address changes,
        // and keeps it otherwise.)
        if stored.url != server.url || stored.routing_domain() != server.routing_domain() {
            self.check_routing(&server).await?;
        }
        self.store.update_server(&server, with_status).await?;
        self.record_server_changes(&stored, &server, with_status)
            .await;
        Ok(())
    }

    /// Refuses `server` when its tenement routes by another domain than the
    /// one slum would send it; one that cannot be asked is let through.
    async fn check_routing(&self, server: &Server) -> Result<()> {
        let domain = server.routing_domain();
        let check = self
            .tenement
            .check_routing(&server.url, &domain, self.options.request_timeout)
            .await;
        match check {
            RoutingCheck::Routes => Ok(()),
            RoutingCheck::Mismatch(reason) => Err(Error::DomainMismatch {
                server: server.id.clone(),
                domain,
                reason,
            }),
            RoutingCheck::Unknown(why) => {
                tracing::warn!(server = %server.id, %why,
                    "could not check where the server routes; the health checks will");
                Ok(())
            }
        }
    }
}
