//! What happens to a server's tenants when it goes offline.
//!
//! A tenant with another instance of its process on a live server (the seed
//! page's backup) needs nothing here: the route table already sends its traffic
//! there, and back when the server returns. A tenant without one follows its
//! policy: `none` waits (503 until the server returns), `respawn` gets a new
//! copy on the usable server with the most free room, in the dead server's region
//! when one there has room, and its route moves once the copy is healthy.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::fleet::model::{FailoverPolicy, Instance, ServerStatus, Tenant};
use crate::orchestrate::routing::Routing;
use crate::orchestrate::slum_db::SlumDb;

/// Respawns running at once after a server failure.
const PARALLEL_RESPAWNS: usize = 4;

/// The instances to respawn when `server` is offline: the routed instance of
/// every `respawn` tenant whose instance is on `server` and has no sibling of
/// the same process on a server that is not offline. Pure, for testing.
pub fn respawn_candidates(
    server: &str,
    tenants: &[Tenant],
    instances: &[Instance],
    status_of: impl Fn(&str) -> ServerStatus,
) -> Vec<Instance> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in tenants
        .iter()
        .filter(|t| t.failover == FailoverPolicy::Respawn)
    {
        let Some(primary) = instances.iter().find(|i| {
            i.tenant == t.name && i.instance_id == t.instance_id && i.process == t.process
        }) else {
            continue;
        };
        if primary.server_id != server || primary.moving_to.is_some() {
            continue;
        }
        let has_live_sibling = instances.iter().any(|i| {
            i.tenant == t.name
                && i.process == t.process
                && i.instance_id != t.instance_id
                && status_of(&i.server_id) != ServerStatus::Offline
        });
        if !has_live_sibling && seen.insert(primary.key()) {
            out.push(primary.clone());
        }
    }
    out
}

/// Respawns elsewhere the `respawn` tenants of a server that just went offline.
/// `routing` gives the servers' status, and is told of each move.
pub async fn server_went_offline(db: &SlumDb, routing: &Arc<dyn Routing>, server: &str) {
    let (tenants, instances, dead) = match tokio::try_join!(
        db.list_tenants(),
        db.list_instance_records(),
        db.get_server(server),
    ) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(server, error = %e, "failover: cannot read the fleet");
            return;
        }
    };
    // One snapshot of routing for the whole decision.
    let status: HashMap<String, ServerStatus> = routing
        .servers()
        .into_iter()
        .map(|s| (s.id, s.status))
        .collect();
    let status_of = |id: &str| status.get(id).copied().unwrap_or(ServerStatus::Unknown);
    let todo = respawn_candidates(server, &tenants, &instances, status_of);
    if todo.is_empty() {
        return;
    }
    tracing::warn!(
        server,
        tenants = todo.len(),
        "respawning tenants of an offline server"
    );
    let region = dead.region.clone();
    futures::stream::iter(todo)
        .for_each_concurrent(PARALLEL_RESPAWNS, |inst| {
            let region = region.clone();
            async move {
                let key = inst.key();
                // The old server is down: no requests can still be on their way.
                let result = db
                    .move_elsewhere(&inst, region.as_deref(), Duration::ZERO, routing)
                    .await;
                match result {
                    Ok(o) => {
                        tracing::info!(instance = %key, from = %o.from, to = %o.to, "respawned")
                    }
                    Err(e) => tracing::warn!(instance = %key, error = %e, "respawn failed"),
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(domain: &str, name: &str, policy: FailoverPolicy) -> Tenant {
        Tenant {
            domain: domain.into(),
            name: name.into(),
            server_id: "a".into(),
            process: "api".into(),
            instance_id: "prod".into(),
            failover: policy,
            ..Default::default()
        }
    }

    fn inst(tenant: &str, id: &str, server: &str) -> Instance {
        Instance {
            tenant: tenant.into(),
            instance_id: id.into(),
            process: "api".into(),
            server_id: server.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_respawn_tenants_without_a_live_backup_are_respawned_once() {
        use FailoverPolicy::*;
        let tenants = [
            tenant("solo.com", "solo", Respawn),
            tenant("www.solo.com", "solo", Respawn),
            tenant("patient.com", "patient", None),
            tenant("backed.com", "backed", Respawn),
            tenant("backup-dead.com", "bd", Respawn),
            tenant("elsewhere.com", "far", Respawn),
        ];
        let instances = [
            inst("solo", "prod", "a"),
            inst("patient", "prod", "a"),
            inst("backed", "prod", "a"),
            inst("backed", "backup", "b"),
            inst("bd", "prod", "a"),
            inst("bd", "backup", "c"),
            inst("far", "prod", "b"),
        ];
        let status = |s: &str| match s {
            "a" | "c" => ServerStatus::Offline,
            _ => ServerStatus::Online,
        };
        let keys: Vec<String> = respawn_candidates("a", &tenants, &instances, status)
            .iter()
            .map(Instance::key)
            .collect();
        assert_eq!(keys, ["solo:prod", "bd:prod"]);
    }
}
