//! Moving a tenant to another home server, and its running instance with it,
//! without losing a request: the instance is prepared on the new home, the
//! route switches, and only then is the old copy stopped (see
//! [`crate::orchestrate::relocation`]).

use crate::error::Result;
use crate::fleet::model::{DesiredState, Tenant};
use crate::fleet::validation;
use crate::orchestrate::relocation::MoveWhy;
use crate::orchestrate::slum_db::SlumDb;

impl SlumDb {
    /// Makes `server_id` the home of the tenant routed by `domain`.
    ///
    /// When the tenant's instance `{name}:{instance_id}` runs on another server,
    /// it is started on the new home (same process, same `memory_mb`), the route
    /// switches once it is healthy, and the old copy is stopped after the fleet's
    /// move grace (or later by reconcile when its server does not answer). Without
    /// an instance only the home changes; the first request starts it there.
    /// Moving to the current home changes nothing.
    ///
    /// Refused before anything changes when the target is unknown, offline or
    /// draining, lacks the instance's memory, or already holds another instance of
    /// the tenant's process; when the new home cannot start the instance, nothing
    /// changes either.
    pub async fn move_tenant(&self, domain: &str, server_id: &str) -> Result<Tenant> {
        validation::dns_label("server_id", server_id)?;
        let tenant = self.get_tenant_by_domain(domain).await?;
        let target = self.store.get_server(server_id).await?;
        let instance = match self
            .store
            .get_instance(&tenant.name, &tenant.instance_id)
            .await
        {
            Ok(i) => Some(i),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let movable =
            instance.filter(|i| i.process == tenant.process && i.desired == DesiredState::Running);
        match movable {
            Some(inst) if inst.server_id != target.id => {
                let why = MoveWhy::TenantMove(tenant.domain.clone());
                self.move_instance_for(&inst.key(), &target.id, self.options.move_grace, why)
                    .await?;
            }
            _ if tenant.server_id == target.id => return Ok(tenant),
            _ => {
                target.ensure_usable()?;
                let mut moved = tenant.clone();
                moved.server_id = target.id.clone();
                self.store.update_tenant(&moved).await?;
                self.record_tenant_changes(&tenant, &moved).await;
            }
        }
        self.store.get_tenant(&tenant.domain).await
    }
}
