//! Moving an instance to another server without losing a request: the
//! building block of `tenant move`, drain and respawn failover.
//!
//! 1. **prepare**: reserve the instance's memory on the target (atomically, like
//!    a spawn), spawn it there and wait until tenement reports it healthy. The
//!    route still points at the old server.
//! 2. **switch**: one database write points the instance (and the domains routed
//!    to it) at the target and records the old copy as to-be-stopped. Routers
//!    route to the target from here on (this process at once when it reloads,
//!    others within their poll).
//! 3. **complete**: after a grace period for requests already on their way to the
//!    old server, stop the old copy. When the old server cannot be reached (it is
//!    dead, the failover case) the stop stays pending and reconcile completes it
//!    once the server answers.
//!
//! A failure in step 1 leaves everything as it was.

#[cfg(feature = "serve")]
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fleet::events::{EventKind, NewEvent};
use crate::fleet::model::{Instance, Server};
use crate::fleet::validation;
use crate::orchestrate::placement;
#[cfg(feature = "serve")]
use crate::orchestrate::routing::Routing;
use crate::orchestrate::slum_db::SlumDb;

/// An instance prepared on its target, not yet switched.
#[derive(Debug, Clone)]
pub struct PreparedMove {
    pub instance: Instance,
    pub from: String,
    pub to: String,
}

/// Why an instance moves: what its event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MoveWhy {
    /// A caller of [`SlumDb::relocate`] or [`SlumDb::move_instance`].
    Requested,
    /// The move of a tenant (its domain) to a new home.
    TenantMove(String),
    /// The drain of the server.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    Drain(String),
    /// Respawn failover of the server, offline.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    Failover(String),
}

impl MoveWhy {
    /// The event of the move of `key` from `from` to `to`: switched (`Ok`,
    /// its old copy stopped after `grace`) or failed before it switched.
    fn event(
        &self,
        key: &str,
        from: Option<&str>,
        to: &str,
        grace: Duration,
        switched: std::result::Result<(), &Error>,
    ) -> NewEvent {
        let from_text = from.unwrap_or("its server");
        let (kind, cause) = match (self, switched) {
            (MoveWhy::Failover(dead), Ok(())) => (
                EventKind::Respawned,
                format!(
                    "server {dead} is offline: respawned on {to} (failover policy respawn); \
                     its old copy is stopped once {dead} answers"
                ),
            ),
            (MoveWhy::Failover(dead), Err(e)) => (
                EventKind::RespawnFailed,
                format!("server {dead} is offline: could not respawn it on {to}: {e}"),
            ),
            (why, Ok(())) => (
                EventKind::Moved,
                format!(
                    "{}moved from {from_text} to {to}; its old copy stops after a grace of {}s",
                    why.prefix(),
                    grace.as_secs_f64()
                ),
            ),
            (why, Err(e)) => (
                EventKind::MoveFailed,
                format!(
                    "{}could not move it from {from_text} to {to}: {e}",
                    why.prefix()
                ),
            ),
        };
        let event = NewEvent::new(kind, cause).instance(key);
        match from {
            Some(server) => event.server(server),
            None => event,
        }
    }

    fn prefix(&self) -> String {
        match self {
            MoveWhy::Requested => String::new(),
            MoveWhy::TenantMove(domain) => format!("move of tenant {domain}: "),
            MoveWhy::Drain(server) => format!("drain of {server}: "),
            MoveWhy::Failover(server) => format!("failover of {server}: "),
        }
    }
}

/// How much of a move is done, for callers that report progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveOutcome {
    pub instance: String,
    pub from: String,
    pub to: String,
    /// False when the old copy could not be stopped yet (its server did not
    /// answer); reconcile completes it.
    pub old_stopped: bool,
}

impl SlumDb {
    /// Step 1: reserves room on `target`, spawns the instance there and waits
    /// until it is healthy. Nothing routes to it yet.
    pub async fn prepare_move(&self, key: &str, target: &str) -> Result<PreparedMove> {
        let (tenant, id) = validation::instance_key(key)?;
        validation::dns_label("server_id", target)?;
        let instance = self.store.get_instance(&tenant, &id).await?;
        crate::fleet::store::check_movable(&instance, target)?;
        let server = self.store.get_server(target).await?;
        self.store.begin_move(&tenant, &id, target).await?;
        let mut on_target = instance.clone();
        on_target.server_id = target.to_owned();
        if let Err(e) = self.start_on_server(&server, &on_target).await {
            if let Err(undo) = self.store.abort_move(&tenant, &id).await {
                tracing::warn!(instance = %key, error = %undo, "could not release the target's reservation");
            }
            return Err(e);
        }
        Ok(PreparedMove {
            from: instance.server_id.clone(),
            to: target.to_owned(),
            instance,
        })
    }

    /// Step 2: routes the instance (and the domains that route to it) to the
    /// target, and records the old copy as to-be-stopped once `grace` has
    /// passed (reconcile leaves it alone until then).
    pub async fn switch_move(&self, prepared: &PreparedMove, grace: Duration) -> Result<()> {
        let i = &prepared.instance;
        self.store
            .finish_move(&i.tenant, &i.instance_id, grace)
            .await
    }

    /// Step 3: after `grace`, stops the old copy (or leaves the stop pending for
    /// reconcile when its server does not answer).
    pub async fn complete_move(&self, prepared: &PreparedMove, grace: Duration) -> MoveOutcome {
        tokio::time::sleep(grace).await;
        let i = &prepared.instance;
        let name = i.tenement_name();
        let outcome = |old_stopped| MoveOutcome {
            instance: i.key(),
            from: prepared.from.clone(),
            to: prepared.to.clone(),
            old_stopped,
        };
        match self
            .stop_old_copy(&prepared.from, &name, &i.process, &i.tenant, None)
            .await
        {
            Ok(_) => outcome(true),
            Err(e) => {
                tracing::warn!(instance = %i.key(), server = %prepared.from, error = %e,
                    "old copy not stopped yet; reconcile will complete it");
                outcome(false)
            }
        }
    }

    /// Stops the old copy `name` (`{process}:{tenant}`) whose stop is pending
    /// on `server_id` (`server`, when the caller has it at hand). The pending
    /// stop is claimed first: when it is gone, the name came back to that server
    /// meanwhile (a move or spawn back onto it) and must keep running, and the
    /// answer is `Ok(false)`. A stop the server does not take is recorded as
    /// pending again, for reconcile.
    pub(crate) async fn stop_old_copy(
        &self,
        server_id: &str,
        name: &str,
        process: &str,
        tenant: &str,
        server: Option<&Server>,
    ) -> Result<bool> {
        if !self.store.delete_pending_stop(server_id, name).await? {
            return Ok(false);
        }
        let stopped = match server {
            Some(s) => self.client(s).stop(process, tenant).await.map(drop),
            None => match self.store.get_server(server_id).await {
                Ok(s) => self.client(&s).stop(process, tenant).await.map(drop),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = stopped {
            if let Err(lost) = self.store.add_pending_stop(server_id, name).await {
                tracing::warn!(server = %server_id, copy = %name, error = %lost,
                    "lost track of an old copy");
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Moves `"{tenant}:{instance_id}"` to `target` in all three steps:
    /// prepare, switch, then `on_switched` (a router in this process reloads its
    /// table there), then, after `grace`, the stop of the old copy.
    ///
    /// The move runs in a task of its own: a caller that gives up (a client that
    /// disconnects, a drain that is stopped) never leaves it half-way, with room
    /// reserved on the target and a copy running there that nothing routes to.
    pub async fn relocate<F, Fut>(
        &self,
        key: &str,
        target: &str,
        grace: Duration,
        on_switched: F,
    ) -> Result<MoveOutcome>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        self.relocate_for(key, target, grace, on_switched, MoveWhy::Requested)
            .await
    }

    /// [`SlumDb::relocate`], recording the move (or its failure) as an event
    /// saying `why`, once the move is over: by the move's own task, so even
    /// for a caller that gave up.
    pub(crate) async fn relocate_for<F, Fut>(
        &self,
        key: &str,
        target: &str,
        grace: Duration,
        on_switched: F,
        why: MoveWhy,
    ) -> Result<MoveOutcome>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let db = self.clone();
        let (key, target) = (key.to_owned(), target.to_owned());
        tokio::spawn(async move {
            // Where it was, for the event of a move that fails (a bad key
            // fails below all the same).
            let from = match validation::instance_key(&key) {
                Ok((tenant, id)) => db.store.get_instance(&tenant, &id).await.ok(),
                Err(_) => None,
            }
            .map(|i| i.server_id);
            // Recorded when the route switches (or the move fails before):
            // what reconcile or the stop of the old copy do later comes after.
            let switched = async {
                let prepared = db.prepare_move(&key, &target).await?;
                db.switch_move(&prepared, grace).await?;
                Ok(prepared)
            }
            .await;
            let event = why.event(
                &key,
                from.as_deref(),
                &target,
                grace,
                switched.as_ref().map(drop),
            );
            db.record_event(event).await;
            let prepared = switched?;
            on_switched().await;
            Ok(db.complete_move(&prepared, grace).await)
        })
        .await
        .map_err(|e| Error::invalid("instance", format!("the move stopped: {e}")))?
    }

    /// [`SlumDb::relocate`] for callers without a router in the process: other
    /// processes' routers pick the switch up within their poll, which `grace`
    /// should exceed.
    pub async fn move_instance(
        &self,
        key: &str,
        target: &str,
        grace: Duration,
    ) -> Result<MoveOutcome> {
        self.relocate(key, target, grace, || async {}).await
    }

    /// [`SlumDb::move_instance`] as part of a tenant's move to a new home.
    pub(crate) async fn move_instance_for(
        &self,
        key: &str,
        target: &str,
        grace: Duration,
        why: MoveWhy,
    ) -> Result<MoveOutcome> {
        self.relocate_for(key, target, grace, || async {}, why)
            .await
    }

    /// Moves an instance to the best server for it (see
    /// [`SlumDb::choose_target`]), applying the switch to `routing` right
    /// after it: the move behind drains and respawn failover.
    #[cfg(feature = "serve")]
    pub(crate) async fn move_elsewhere(
        &self,
        instance: &Instance,
        region: Option<&str>,
        grace: Duration,
        routing: &Arc<dyn Routing>,
        why: MoveWhy,
    ) -> Result<MoveOutcome> {
        let target = match self.choose_target(instance, region).await {
            Ok(target) => target,
            Err(e) => {
                let event = why.event(
                    &instance.key(),
                    Some(&instance.server_id),
                    "another server",
                    grace,
                    Err(&e),
                );
                self.record_event(event).await;
                return Err(e);
            }
        };
        let routing = Arc::clone(routing);
        self.relocate_for(
            &instance.key(),
            &target.id,
            grace,
            move || async move { routing.fleet_changed().await },
            why,
        )
        .await
    }

    /// Where an instance of `instance`'s tenant and process could move: the usable
    /// server with the most free room for it, in `region` when one there has
    /// room, anywhere otherwise, never on a server that already holds the
    /// tenant's process.
    pub async fn choose_target(&self, instance: &Instance, region: Option<&str>) -> Result<Server> {
        let (servers, instances) = self.placement_snapshot(&instance.tenant).await?;
        let candidates = placement::candidates(
            &servers,
            &instances,
            &instance.tenant,
            &instance.process,
            false,
        );
        placement::most_free_preferring(&candidates, region, instance.memory_mb)
            .cloned()
            .ok_or_else(|| {
                // The region is a preference here, not a rule: no server
                // anywhere could take it.
                let ask = placement::Ask {
                    tenant: &instance.tenant,
                    process: &instance.process,
                    instance_id: &instance.instance_id,
                    needed_mb: instance.memory_mb,
                    region: None,
                    distinct_region: false,
                };
                crate::orchestrate::auto_placement::no_room(&servers, &instances, &ask)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moves_event_says_why_where_to_and_when_its_old_copy_stops() {
        let grace = Duration::from_secs(2);
        let drain = MoveWhy::Drain("s1".into()).event("acme:prod", Some("s1"), "s2", grace, Ok(()));
        assert_eq!(drain.kind, EventKind::Moved);
        assert_eq!(
            drain.cause,
            "drain of s1: moved from s1 to s2; its old copy stops after a grace of 2s"
        );
        assert_eq!(drain.server.as_deref(), Some("s1"));
        assert_eq!(drain.tenant.as_deref(), Some("acme"));
        let e = Error::NoRoom {
            placing: "acme:prod (api, 128 MB)".into(),
            needed_mb: 128,
            region: None,
            reasons: vec!["s2 is offline".into()],
        };
        let failover = MoveWhy::Failover("s1".into()).event(
            "acme:prod",
            Some("s1"),
            "another server",
            grace,
            Err(&e),
        );
        assert_eq!(failover.kind, EventKind::RespawnFailed);
        assert!(
            failover
                .cause
                .starts_with("server s1 is offline: could not respawn it on another server: "),
            "{}",
            failover.cause
        );
        let respawned =
            MoveWhy::Failover("s1".into()).event("acme:prod", Some("s1"), "s2", grace, Ok(()));
        assert_eq!(respawned.kind, EventKind::Respawned);
        let failed = MoveWhy::Requested.event("acme:prod", None, "s2", grace, Err(&e));
        assert_eq!(failed.kind, EventKind::MoveFailed);
        assert!(failed
            .cause
            .starts_with("could not move it from its server to s2: "));
    }
}
