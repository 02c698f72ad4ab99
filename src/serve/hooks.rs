//! What the parts of `slum serve` ask of each other, answered over the
//! others: the orchestrator's [`Routing`] over the router's route table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::fleet::db::FleetDb;
use crate::fleet::model::ServerStatus;
use crate::orchestrate::routing::{RoutedServer, Routing};
use crate::router::route_sync::Routes;

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
                status: u.status,
            })
            .collect()
    }

    fn status(&self, server: &str) -> Option<ServerStatus> {
        self.routes.current().upstream(server).map(|u| u.status)
    }

    async fn fleet_changed(&self) {
        if let Err(e) = self.routes.reload(&self.db).await {
            tracing::warn!(error = %e, "route table reload after a change failed");
        }
    }

    async fn hold_offline(&self, server: &str, how_long: Duration) {
        self.routes
            .mark_offline_locally(&self.db, server, how_long)
            .await;
    }
}
