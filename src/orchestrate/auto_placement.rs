//! Automatic placement: tenants and instances put on the usable server with the
//! most free room, without ever overbooking one.
//!
//! The choice is made on a snapshot ([`crate::orchestrate::placement`]); the reservation is
//! then written atomically by the store, which re-checks capacity. When a
//! concurrent placement took the room first, the placement retries on a fresh
//! snapshot, so concurrent placements fill the fleet exactly and the surplus is
//! refused with [`Error::NoRoom`].

use crate::error::{Error, Kind, Result};
use crate::fleet::model::{Instance, Server, Tenant};
use crate::fleet::validation;
use crate::orchestrate::orchestration::SpawnOptions;
use crate::orchestrate::placement::{self, PlacementRequest};
use crate::orchestrate::slum_db::SlumDb;

/// Fresh snapshots tried before a placement gives up on a busy fleet.
const ATTEMPTS: usize = 8;

impl SlumDb {
    /// Spawns `{tenant}:{instance_id}` of `process` on the usable server with
    /// the most free room that holds no other instance of the tenant's process
    /// (nor, with `distinct_region`, one in the same region).
    pub async fn spawn_instance_auto(
        &self,
        tenant: &str,
        process: &str,
        instance_id: &str,
        request: &PlacementRequest,
    ) -> Result<Instance> {
        validation::dns_label("tenant", tenant)?;
        validation::dns_label("process", process)?;
        validation::dns_label("instance_id", instance_id)?;
        if let Some(region) = &request.region {
            validation::text("region", region)?;
        }
        let memory_mb = request.memory_mb.unwrap_or(self.options.default_memory_mb);
        let options = SpawnOptions {
            memory_mb: Some(memory_mb),
        };
        let no_room = || Error::NoRoom {
            needed_mb: memory_mb,
            region: request.region.clone(),
        };
        for _ in 0..ATTEMPTS {
            let allowed = self
                .placement_candidates(tenant, process, request.distinct_region)
                .await?;
            let Some(target) = placement::most_free(&allowed, request.region.as_deref(), memory_mb)
            else {
                return Err(no_room());
            };
            match self
                .spawn_instance_with(tenant, process, instance_id, &target.id, &options)
                .await
            {
                // Someone else took the room (or the server) first: look again.
                Err(Error::InsufficientCapacity { .. } | Error::ServerUnavailable { .. }) => {
                    continue
                }
                other => return other,
            }
        }
        Err(no_room())
    }

    /// Of the usable servers (neither offline nor draining) in `region`, the one
    /// with the most free capacity; `NotFound` when there is none.
    pub async fn find_server_in_region(&self, region: &str) -> Result<Server> {
        validation::text("region", region)?;
        let servers = self.store.list_servers().await?;
        placement::most_free(&servers, Some(region), 0)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: Kind::Server,
                key: format!("usable server in region '{region}'"),
            })
    }

    /// The servers a new instance of `tenant`'s `process` may go to now (see
    /// [`placement::candidates`]).
    pub(crate) async fn placement_candidates(
        &self,
        tenant: &str,
        process: &str,
        distinct_region: bool,
    ) -> Result<Vec<Server>> {
        let servers = self.store.list_servers().await?;
        let instances = self.store.list_instances_of_tenant(tenant).await?;
        Ok(placement::candidates(
            &servers,
            &instances,
            tenant,
            process,
            distinct_region,
        ))
    }

    /// Adds a tenant on the usable server with the most free room (in
    /// `request.region` when given) and starts its instance there. The tenant's
    /// `server_id` is chosen here and ignored on input. Returns the tenant as
    /// stored.
    pub async fn add_tenant_auto(
        &self,
        tenant: &Tenant,
        request: &PlacementRequest,
    ) -> Result<Tenant> {
        // Everything but the server first, so bad input costs no spawn.
        let derived = tenant.name.is_empty();
        let mut tenant = validation::tenant_to_place(tenant)?;
        if let Some(region) = &request.region {
            validation::text("region", region)?;
        }
        match self.store.get_tenant(&tenant.domain).await {
            Ok(_) => return Err(Error::already_exists(Kind::Tenant, &tenant.domain)),
            Err(e) if !e.is_not_found() => return Err(e),
            Err(_) => {}
        }
        if derived {
            self.check_derived_name(&tenant).await?;
        }
        // Another domain of a tenant that runs already routes to its instance.
        if let Ok(existing) = self
            .store
            .get_instance(&tenant.name, &tenant.instance_id)
            .await
        {
            tenant.server_id = existing.server_id;
            self.store.insert_tenant(&tenant).await?;
            self.record_event(crate::fleet::db::tenant_added(&tenant))
                .await;
            return self.store.get_tenant(&tenant.domain).await;
        }
        let instance = self
            .spawn_instance_auto(&tenant.name, &tenant.process, &tenant.instance_id, request)
            .await?;
        tenant.server_id = instance.server_id.clone();
        if let Err(e) = self.store.insert_tenant(&tenant).await {
            // The domain was taken meanwhile: give the room back. A stop that
            // fails is said, as the instance would then hold its room.
            if let Err(stop) = self.stop_instance(&instance.key()).await {
                tracing::warn!(instance = %instance.key(), error = %stop,
                    "the tenant could not be added, and its new instance could not be stopped");
            }
            return Err(e);
        }
        self.record_event(crate::fleet::db::tenant_added(&tenant))
            .await;
        self.store.get_tenant(&tenant.domain).await
    }
}
