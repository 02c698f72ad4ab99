//! What the parts of `slum serve` ask of each other, answered over the
//! others: the router's [`ControlPlane`] over the fleet database, the
//! orchestrator and the health monitor; the orchestrator's [`Routing`] over
//! the router's route table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::AppState;
use crate::error::Error;
use crate::fleet::db::FleetDb;
use crate::fleet::model::ServerStatus;
use crate::orchestrate::routing::{RoutedServer, Routing};
use crate::router::route_sync::Routes;
use crate::router::route_table::{DomainRoute, RouteTable};
use crate::router::ControlPlane;

#[async_trait]
impl ControlPlane for AppState {
    fn table(&self) -> Arc<RouteTable> {
        self.routes.current()
    }

    fn is_current(&self, table: &Arc<RouteTable>) -> bool {
        self.routes.is_current(table)
    }

    /// Spawns the instance on its home server, then reloads the route table
    /// (whether the spawn worked or not: someone else may have placed it).
    async fn wake(&self, route: &DomainRoute) -> Result<(), String> {
        let key = format!("{}:{}", route.tenant, route.instance_id);
        let spawned = self
            .db
            .spawn_instance(
                &route.tenant,
                &route.process,
                &route.instance_id,
                &route.home_server,
            )
            .await;
        let result = match spawned {
            Ok(_) => Ok(()),
            // Someone else (another router) may have spawned it meanwhile;
            // anything else holding the name is an error.
            Err(e @ Error::AlreadyExists { .. }) => match self.db.get_instance(&key).await {
                Ok(i) if i.process == route.process => Ok(()),
                Ok(i) => Err(format!(
                    "instance '{key}' runs process '{}', not '{}'",
                    i.process, route.process
                )),
                Err(_) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        self.fleet_changed().await;
        result
    }

    async fn server_unreachable(&self, server: &str) {
        self.health.report_failure(server).await
    }

    async fn until_offline(&self, server: &str) {
        self.routes.until_offline(server).await
    }

    fn certificate_wanted(&self, domain: &str) {
        (self.certificate_wanted)(domain)
    }
}

/// Routing as the orchestrator sees it: this process's route table, reloaded
/// from the fleet database.
pub(super) struct TableRouting {
    pub(super) routes: Arc<Routes>,
    pub(super) db: FleetDb,
}

#[async_trait]
impl Routing for TableRouting {
    fn servers(&self) -> Vec<RoutedServer> {
        self.routes
            .current()
            .upstreams()
            .map(|u| RoutedServer {
                id: u.server_id.clone(),
                url: u.url.to_string(),
                domain: u.domain.clone(),
                status: u.status,
                routing_problem: u.routing_problem.as_deref().map(str::to_owned),
            })
            .collect()
    }

    fn status(&self, server: &str) -> Option<ServerStatus> {
        self.routes.current().upstream(server).map(|u| u.status)
    }

    async fn fleet_changed(&self) {
        if let Err(e) = self.routes.catch_up(&self.db).await {
            tracing::warn!(error = %e, "applying a change to the route table failed");
        }
    }

    async fn hold_offline(&self, server: &str, how_long: Duration) {
        self.routes
            .mark_offline_locally(&self.db, server, how_long)
            .await;
    }
}
