//! Moving a tenant to another home server, and its running instance with it.
//!
//! A tenant's instance key `{name}:{instance_id}` is unique across the fleet, so
//! the copy on the old server must be stopped before the new one can be
//! recorded: a move is stop-then-spawn, with a short gap while the new copy
//! starts. Everything that can refuse the move without touching a server
//! (unknown or unusable target, no room, a clashing instance) is checked first,
//! and a move that fails half-way is rolled back as far as the fleet allows.

use crate::db::SlumDb;
use crate::error::{Error, Kind, Result};
use crate::model::{DesiredState, Instance, Server, Tenant};
use crate::orchestration::SpawnOptions;
use crate::validation;

impl SlumDb {
    /// Makes `server_id` the home of the tenant routed by `domain`.
    ///
    /// When the tenant's instance `{name}:{instance_id}` runs on another server,
    /// it is stopped there and spawned (same process, same `memory_mb`) on the new
    /// home. Without an instance only the home changes; the first request spawns
    /// it there. Moving to the current home changes nothing.
    ///
    /// Refused before anything changes when the target is unknown, offline or
    /// draining, lacks the instance's memory, or already holds another instance
    /// of the tenant's process. When the old server cannot stop the instance,
    /// nothing changes; when the new home cannot start it, it is spawned back on
    /// the old server (best effort) and the home stays where it was.
    pub async fn move_tenant(&self, domain: &str, server_id: &str) -> Result<Tenant> {
        validation::dns_label("server_id", server_id)?;
        let tenant = self.get_tenant_by_domain(domain).await?;
        let target = self.store.get_server(server_id).await?;
        if tenant.server_id == target.id {
            return Ok(tenant);
        }
        if !target.is_usable() {
            return Err(Error::ServerUnavailable {
                server: target.id,
                status: target.status.to_string(),
            });
        }
        let instance = match self
            .store
            .get_instance(&tenant.name, &tenant.instance_id)
            .await
        {
            Ok(i) => Some(i),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        // An instance already on the target needs no move, and one whose stop is
        // pending is on its way out: reconcile finishes it where it is.
        let to_move =
            instance.filter(|i| i.server_id != target.id && i.desired == DesiredState::Running);
        if let Some(inst) = &to_move {
            self.check_room(&target, inst).await?;
        }

        // The home changes first, so that a router waking the tenant during the
        // gap spawns it on the new home rather than back on the old one.
        let moved = Tenant {
            server_id: target.id.clone(),
            ..tenant.clone()
        };
        self.update_tenant(&moved).await?;
        if let Some(inst) = to_move {
            if let Err(e) = self.relocate(&inst, &target).await {
                if let Err(undo) = self.store.update_tenant(&tenant).await {
                    tracing::warn!(domain = %tenant.domain, error = %undo,
                        "could not restore the home server after a failed move");
                }
                return Err(e);
            }
            tracing::info!(domain = %tenant.domain, instance = %inst.key(),
                from = %inst.server_id, to = %target.id, "moved");
        }
        self.get_tenant_by_domain(&tenant.domain).await
    }

    /// Refuses, without calling any server, a relocation the target cannot take.
    /// The store checks the same again atomically when the spawn reserves.
    async fn check_room(&self, target: &Server, inst: &Instance) -> Result<()> {
        if target.free_capacity_mb() < inst.memory_mb {
            return Err(Error::InsufficientCapacity {
                server: target.id.clone(),
                requested_mb: inst.memory_mb,
                free_mb: target.free_capacity_mb(),
                capacity_mb: target.capacity_mb,
            });
        }
        let on_target = self.store.list_instances(Some(&target.id)).await?;
        if let Some(other) = on_target
            .iter()
            .find(|o| o.tenant == inst.tenant && o.process == inst.process)
        {
            return Err(Error::AlreadyExists {
                kind: Kind::Instance,
                key: inst.key(),
                detail: Some(format!(
                    "server '{}' already runs process '{}' for tenant '{}' as instance '{}'; \
                     tenement holds one instance per tenant and process on a server",
                    target.id,
                    inst.process,
                    inst.tenant,
                    other.key()
                )),
            });
        }
        Ok(())
    }

    /// Stops `inst` on its server and spawns it on `target`. A failed spawn puts
    /// it back on its old server.
    async fn relocate(&self, inst: &Instance, target: &Server) -> Result<()> {
        let old = self.store.get_server(&inst.server_id).await?;
        // Stopped directly rather than through `stop_instance`: an unreachable old
        // server must fail the move with nothing changed, not leave a pending stop.
        self.client(&old).stop(&inst.process, &inst.tenant).await?;
        // Should this fail, the record still wants the instance running on its
        // old server, and reconcile starts it there again.
        self.store
            .delete_instance(&inst.tenant, &inst.instance_id)
            .await?;
        let options = SpawnOptions {
            memory_mb: Some(inst.memory_mb),
        };
        let spawned = self
            .spawn_instance_with(
                &inst.tenant,
                &inst.process,
                &inst.instance_id,
                &target.id,
                &options,
            )
            .await;
        let error = match spawned {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if self.woken_on(inst, &target.id).await {
            // A router woke the tenant on its new home during the gap: the move
            // is done, by someone else's hand.
            return Ok(());
        }
        match self
            .spawn_instance_with(
                &inst.tenant,
                &inst.process,
                &inst.instance_id,
                &old.id,
                &options,
            )
            .await
        {
            Ok(_) => tracing::info!(instance = %inst.key(), server = %old.id,
                "move failed; instance restored on its old server"),
            Err(undo) => tracing::warn!(instance = %inst.key(), server = %old.id, error = %undo,
                "move failed and the instance could not be restored on its old server"),
        }
        Err(error)
    }

    /// Whether `inst`'s key is now recorded on `server_id`.
    async fn woken_on(&self, inst: &Instance, server_id: &str) -> bool {
        self.store
            .get_instance(&inst.tenant, &inst.instance_id)
            .await
            .is_ok_and(|now| now.server_id == server_id)
    }
}
