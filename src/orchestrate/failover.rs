//! What happens to a server's tenants when it goes offline.
//!
//! A tenant with another instance of its process on a live server (the seed
//! page's backup) needs nothing here: the route table already sends its traffic
//! there, and back when the server returns. A tenant without one follows its
//! policy: `none` waits (503 until the server returns), `respawn` gets a new
//! copy on the usable server with the most free room, in the dead server's region
//! when one there has room, and its route moves once the copy is healthy.
//!
//! Respawning is level-triggered ([`Respawner`]): it happens when a server
//! goes offline, and again whenever the leader finds a server offline (when
//! it starts to lead, and on each reconcile round), so that a leader that
//! takes over a server that died before it led still respawns its tenants.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use crate::fleet::events::{EventKind, NewEvent};
use crate::fleet::model::{FailoverPolicy, Instance, ServerStatus, Tenant};
use crate::orchestrate::relocation::MoveWhy;
use crate::orchestrate::routing::Routing;
use crate::orchestrate::slum_db::SlumDb;

/// Respawns running at once after a server failure.
const PARALLEL_RESPAWNS: usize = 4;

/// The instances to respawn when `server` is offline: the routed instance of
/// every `respawn` tenant whose instance is on `server` and has no sibling of
/// the same process on a server that is not offline. Pure, for testing; linear
/// in the records given (the callers give those of one server's tenants, see
/// [`crate::store::Store::respawn_records`]).
pub fn respawn_candidates(
    server: &str,
    tenants: &[Tenant],
    instances: &[Instance],
    status_of: impl Fn(&str) -> ServerStatus,
) -> Vec<Instance> {
    let by_key: HashMap<(&str, &str), &Instance> = instances
        .iter()
        .map(|i| ((i.tenant.as_str(), i.instance_id.as_str()), i))
        .collect();
    // The instances of each tenant's process on a server that is not offline.
    let mut live: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for i in instances
        .iter()
        .filter(|i| status_of(&i.server_id) != ServerStatus::Offline)
    {
        live.entry((i.tenant.as_str(), i.process.as_str()))
            .or_default()
            .push(i.instance_id.as_str());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in tenants
        .iter()
        .filter(|t| t.failover == FailoverPolicy::Respawn)
    {
        let Some(primary) = by_key
            .get(&(t.name.as_str(), t.instance_id.as_str()))
            .filter(|i| i.process == t.process)
        else {
            continue;
        };
        if primary.server_id != server || primary.moving_to.is_some() {
            continue;
        }
        let has_live_sibling = live
            .get(&(t.name.as_str(), t.process.as_str()))
            .is_some_and(|ids| ids.iter().any(|id| *id != t.instance_id));
        if !has_live_sibling && seen.insert(primary.key()) {
            out.push((*primary).clone());
        }
    }
    out
}

/// Respawn failover, level-triggered: the `respawn` tenants of a server are
/// respawned when it goes offline, and again whenever the leader looks at the
/// fleet and finds it offline (a leader that takes over a server that died
/// before it led, or a respawn that failed for want of room). Looking twice
/// is harmless: a respawned instance is no longer on the dead server, and one
/// whose respawn is under way in this process is not started again.
pub struct Respawner {
    db: SlumDb,
    routing: Arc<dyn Routing>,
    /// Instances whose respawn is under way here, by key.
    busy: Mutex<HashSet<String>>,
}

/// An instance's claim on its respawn: given up when dropped.
struct Claim<'a> {
    busy: &'a Mutex<HashSet<String>>,
    key: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        crate::lock(self.busy).remove(&self.key);
    }
}

impl Respawner {
    /// Respawns over `db`, reading the servers' status from `routing` and
    /// telling it of each move.
    pub fn new(db: SlumDb, routing: Arc<dyn Routing>) -> Respawner {
        Respawner {
            db,
            routing,
            busy: Mutex::default(),
        }
    }

    /// Respawns the `respawn` tenants of `server`, offline now.
    pub async fn server_offline(&self, server: &str) {
        let region = match self.db.get_server(server).await {
            Ok(s) => s.region,
            Err(e) => {
                tracing::warn!(server, error = %e, "failover: cannot read the server");
                return;
            }
        };
        self.respawn_server(server, region.as_deref()).await;
    }

    /// Respawns the `respawn` tenants of every server the fleet database
    /// records offline and `failing` says is still failing (the leader's own
    /// checks: a server recorded offline that came back meanwhile is brought
    /// online by them, not emptied). Reads the records of those servers'
    /// tenants only, not the fleet's.
    pub async fn sweep(&self, failing: impl Fn(&str) -> bool) {
        let servers = match self.db.list_servers().await {
            Ok(servers) => servers,
            Err(e) => {
                tracing::warn!(error = %e, "failover: cannot read the servers");
                return;
            }
        };
        for dead in servers
            .iter()
            .filter(|s| s.status == ServerStatus::Offline && failing(&s.id))
        {
            self.respawn_server(&dead.id, dead.region.as_deref()).await;
        }
    }

    /// Reads what failover of `server` needs and respawns its candidates.
    async fn respawn_server(&self, server: &str, region: Option<&str>) {
        match self.db.store.respawn_records(server).await {
            Ok((tenants, instances)) => self.respawn(server, region, &tenants, &instances).await,
            Err(e) => {
                tracing::warn!(server, error = %e, "failover: cannot read the server's tenants")
            }
        }
    }

    /// Respawns the candidates of `server` (in `region`) that no respawn here
    /// is already working on.
    async fn respawn(
        &self,
        server: &str,
        region: Option<&str>,
        tenants: &[Tenant],
        instances: &[Instance],
    ) {
        // One snapshot of routing for the whole decision.
        let status: HashMap<String, ServerStatus> = self
            .routing
            .servers()
            .into_iter()
            .map(|s| (s.id, s.status))
            .collect();
        let status_of = |id: &str| status.get(id).copied().unwrap_or(ServerStatus::Unknown);
        let todo: Vec<(Instance, Claim<'_>)> =
            respawn_candidates(server, tenants, instances, status_of)
                .into_iter()
                .filter_map(|inst| {
                    let key = inst.key();
                    crate::lock(&self.busy).insert(key.clone()).then(|| {
                        let claim = Claim {
                            busy: &self.busy,
                            key,
                        };
                        (inst, claim)
                    })
                })
                .collect();
        if todo.is_empty() {
            return;
        }
        tracing::warn!(
            server,
            tenants = todo.len(),
            "respawning tenants of an offline server"
        );
        self.db
            .record_event(
                NewEvent::new(
                    EventKind::Failover,
                    format!(
                        "server {server} is offline: respawning {} instance(s) of tenants with \
                         failover policy respawn and no backup",
                        todo.len()
                    ),
                )
                .server(server),
            )
            .await;
        futures::stream::iter(todo)
            .for_each_concurrent(PARALLEL_RESPAWNS, |(inst, _claim)| async move {
                let key = inst.key();
                // The old server is down: no requests can still be on their way.
                let why = MoveWhy::Failover(server.to_owned());
                let result = self
                    .db
                    .move_elsewhere(&inst, region, Duration::ZERO, &self.routing, why)
                    .await;
                match result {
                    Ok(o) => {
                        tracing::info!(instance = %key, from = %o.from, to = %o.to, "respawned")
                    }
                    Err(e) => tracing::warn!(instance = %key, error = %e, "respawn failed"),
                }
            })
            .await;
    }
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
