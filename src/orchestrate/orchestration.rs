//! Running tenants on the fleet: spawn, stop, live listings and reconcile, through
//! each server's tenement API.
//!
//! The mapping: slum instance `{tenant}:{instance_id}` of process `P` on server `S`
//! is tenement instance `P:{tenant}` on `S`, reached with Host
//! `{tenant}.P.{S.domain}`. A server therefore holds at most one instance per
//! (tenant, process); the store refuses a second one.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::fleet::events::{EventKind, NewEvent};
use crate::fleet::model::{
    DesiredState, Instance, InstanceState, InstanceStatus, PendingStop, Server, ServerStats,
};
use crate::fleet::paging::{Page, PageRequest};
use crate::fleet::validation;
use crate::orchestrate::reconcile::{self, Action, Observation, ReconcileReport};
use crate::orchestrate::slum_db::SlumDb;
use crate::orchestrate::tenement::{TenementClient, TenementInstance};

/// What became of [`SlumDb::stop_instance`]: done, or recorded and pending
/// because the instance's server could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// The server stopped the instance, and slum forgot it.
    Stopped,
    /// The server could not be reached. The instance is recorded as
    /// to-be-stopped and takes no more traffic; reconcile completes the stop
    /// once `server` answers.
    Pending { server: String, reason: String },
}

/// Options of [`SlumDb::spawn_instance_with`].
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Memory to reserve on the server, in MB; the fleet default when `None`.
    pub memory_mb: Option<i64>,
}

/// Servers reconciled at once.
const PARALLEL_RECONCILES: usize = 32;

/// Fleet database calls a reconcile round makes at once (a server's records,
/// the states it observed): its 32 servers at a time kept every connection of
/// the pool (8 on SQLite) busy with reads of a thousand records each at a
/// million instances, and the management API's and the router's calls queued
/// behind them (a route change took seconds while the round ran,
/// scripts/bench-scale.sh).
const RECONCILE_DB_CALLS: usize = 2;

/// Actions (respawns, stops) carried out at once on one server during
/// reconcile.
const PARALLEL_ACTIONS: usize = 4;

/// How often a spawn asks tenement whether the new instance is healthy. Each ask
/// costs the server an Argon2 token check, so not too often.
const READY_POLL: Duration = Duration::from_millis(200);

impl SlumDb {
    /// Spawns `{tenant}:{instance_id}` of `process` on `server_id`, reserving the
    /// fleet's default memory, and waits until tenement reports it healthy.
    pub async fn spawn_instance(
        &self,
        tenant: &str,
        process: &str,
        instance_id: &str,
        server_id: &str,
    ) -> Result<Instance> {
        self.spawn_instance_with(
            tenant,
            process,
            instance_id,
            server_id,
            &SpawnOptions::default(),
        )
        .await
    }

    /// [`SlumDb::spawn_instance`] with options.
    ///
    /// Refuses without calling the server when the server is unknown, offline or
    /// draining, when the reservation exceeds its free capacity, or when the server
    /// already holds this tenant's process. A spawn tenement rejects, or that does
    /// not become healthy within the spawn timeout, leaves no record behind.
    pub async fn spawn_instance_with(
        &self,
        tenant: &str,
        process: &str,
        instance_id: &str,
        server_id: &str,
        options: &SpawnOptions,
    ) -> Result<Instance> {
        validation::dns_label("tenant", tenant)?;
        validation::dns_label("process", process)?;
        validation::dns_label("instance_id", instance_id)?;
        validation::dns_label("server_id", server_id)?;
        let memory_mb = options.memory_mb.unwrap_or(self.options.default_memory_mb);
        if memory_mb < 0 {
            return Err(Error::invalid(
                "memory_mb",
                format!("{memory_mb} is negative"),
            ));
        }
        let server = self.store.get_server(server_id).await?;
        let mut instance = Instance {
            tenant: tenant.to_owned(),
            instance_id: instance_id.to_owned(),
            process: process.to_owned(),
            server_id: server_id.to_owned(),
            memory_mb,
            desired: DesiredState::Running,
            observed: InstanceState::Starting,
            ..Default::default()
        };
        self.store.reserve_instance(&instance).await?;
        match self.start_on_server(&server, &instance).await {
            Ok(()) => {
                let now = Utc::now();
                self.store
                    .set_instance_observed(tenant, instance_id, InstanceState::Running, now)
                    .await?;
                instance = self.store.get_instance(tenant, instance_id).await?;
                tracing::info!(instance = %instance.key(), server = %server.id, "spawned");
                self.record_event(
                    NewEvent::new(
                        EventKind::Spawned,
                        format!("spawned on {} with {memory_mb} MB", server.id),
                    )
                    .server(&server.id)
                    .instance(instance.key()),
                )
                .await;
                Ok(instance)
            }
            Err(e) => {
                if let Err(cleanup) = self.store.delete_instance(tenant, instance_id).await {
                    tracing::warn!(instance = %instance.key(), error = %cleanup,
                        "could not remove the record of a failed spawn");
                }
                self.record_event(
                    NewEvent::new(EventKind::SpawnFailed, e.to_string())
                        .server(&server.id)
                        .instance(instance.key()),
                )
                .await;
                Err(e)
            }
        }
    }

    /// Asks tenement to run `instance` and waits until it is healthy. On failure
    /// tenement is told to forget the instance (best effort), so that neither an
    /// orphan process nor tenement's stuck-spawn state is left behind.
    pub(crate) async fn start_on_server(&self, server: &Server, instance: &Instance) -> Result<()> {
        let client = self.client(server);
        let result = self.spawn_and_wait(client, instance).await;
        if result.is_err() {
            if let Err(e) = client.stop(&instance.process, &instance.tenant).await {
                tracing::warn!(instance = %instance.key(), server = %server.id, error = %e,
                    "could not clean up a failed spawn on the server");
            }
        }
        result
    }

    async fn spawn_and_wait(&self, client: TenementClient<'_>, instance: &Instance) -> Result<()> {
        let spawner = client.with_timeout(self.options.spawn_timeout);
        let mut reply = spawner.spawn(&instance.process, &instance.tenant).await?;
        if reply.port.is_none() {
            // tenement 0.2.1 keeps a failed spawn's name reserved and answers later
            // spawns with no port until the name is deleted; clear it and retry once.
            client.stop(&instance.process, &instance.tenant).await?;
            reply = spawner.spawn(&instance.process, &instance.tenant).await?;
        }
        if reply.port.is_none() {
            return Err(self
                .spawn_failed(client, instance, "tenement started nothing (no port)")
                .await);
        }
        let deadline = tokio::time::Instant::now() + self.options.spawn_timeout;
        let mut health = String::from("unknown");
        while tokio::time::Instant::now() < deadline {
            health = client
                .instance_health(&instance.process, &instance.tenant)
                .await?;
            if health == "healthy" {
                return Ok(());
            }
            if health == "failed" {
                break;
            }
            tokio::time::sleep(READY_POLL).await;
        }
        let reason = format!(
            "not healthy within {:.0}s (tenement health: {health}; does the service config set `health`?)",
            self.options.spawn_timeout.as_secs_f64()
        );
        Err(self.spawn_failed(client, instance, &reason).await)
    }

    /// A `SpawnFailed` error quoting the instance's last output lines.
    async fn spawn_failed(
        &self,
        client: TenementClient<'_>,
        instance: &Instance,
        why: &str,
    ) -> Error {
        let logs = match client.logs(&instance.process, &instance.tenant, 10).await {
            Ok(lines) if !lines.is_empty() => lines
                .iter()
                .map(|l| format!("[{}] {}", l.level, l.message))
                .collect::<Vec<_>>()
                .join(" | "),
            Ok(_) => "no output".to_owned(),
            Err(e) => format!("logs unavailable: {e}"),
        };
        Error::SpawnFailed {
            instance: instance.key(),
            server: instance.server_id.clone(),
            reason: format!("{why}; last output: {logs}"),
        }
    }

    /// Stops `"{tenant}:{instance_id}"` on whichever server holds it and forgets it.
    ///
    /// When the server cannot be reached, the instance is recorded as
    /// to-be-stopped and [`StopOutcome::Pending`] is returned: not an error, as
    /// the stop will happen ([`SlumDb::reconcile`] completes it once the server
    /// answers) and the instance takes no more traffic meanwhile.
    pub async fn stop_instance(&self, key: &str) -> Result<StopOutcome> {
        let (tenant, id) = validation::instance_key(key)?;
        let instance = self.store.get_instance(&tenant, &id).await?;
        if let Some(to) = &instance.moving_to {
            return Err(Error::invalid(
                "instance",
                format!("'{key}' is moving to server '{to}'; stop it once the move is done"),
            ));
        }
        let server = self.store.get_server(&instance.server_id).await?;
        match self
            .client(&server)
            .stop(&instance.process, &instance.tenant)
            .await
        {
            Ok(_) => {
                self.store.delete_instance(&tenant, &id).await?;
                tracing::info!(instance = %key, server = %server.id, "stopped");
                self.record_event(
                    NewEvent::new(EventKind::Stopped, format!("stopped on {}", server.id))
                        .server(&server.id)
                        .instance(key),
                )
                .await;
                Ok(StopOutcome::Stopped)
            }
            // Only an unreachable server makes the stop pending; a server that
            // answered and refused (a wrong token, an error) is reported as it
            // is, and nothing changes.
            Err(Error::ServerUnreachable { reason, .. }) => {
                self.store
                    .set_instance_desired(&tenant, &id, DesiredState::Stopped)
                    .await?;
                tracing::warn!(instance = %key, server = %server.id, %reason,
                    "server unreachable: the stop is pending until reconcile completes it");
                self.record_event(
                    NewEvent::new(
                        EventKind::StopPending,
                        format!(
                            "server {} did not answer ({reason}); it takes no more traffic, \
                             and reconcile stops it once the server answers",
                            server.id
                        ),
                    )
                    .server(&server.id)
                    .instance(key),
                )
                .await;
                Ok(StopOutcome::Pending {
                    server: server.id,
                    reason,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Every instance of the fleet with its live state. All servers are asked at
    /// once, each within the request timeout; the instances of a server that does
    /// not answer are reported `Unknown`, with the reason.
    pub async fn list_all_instances(&self) -> Result<Vec<InstanceStatus>> {
        let servers = self.store.list_servers().await?;
        let instances = self.store.list_instances(None).await?;
        self.with_live_state(&servers, instances).await
    }

    /// The instances placed on `server_id`, with their live state.
    pub async fn list_instances_on_server(&self, server_id: &str) -> Result<Vec<InstanceStatus>> {
        let server = self.store.get_server(server_id).await?;
        let instances = self.store.list_instances(Some(server_id)).await?;
        self.with_live_state(std::slice::from_ref(&server), instances)
            .await
    }

    /// A page of the instances (by key; only those on `server_id` when
    /// given), with their live state. Only the servers holding the page's
    /// instances are asked, all at once.
    pub async fn list_instances_page(
        &self,
        server_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<InstanceStatus>> {
        let records = self.list_instance_records_page(server_id, page).await?;
        let mut ids: Vec<&str> = records.items.iter().map(|i| i.server_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut servers = Vec::with_capacity(ids.len());
        for found in join_all(ids.iter().map(|id| self.store.get_server(id))).await {
            match found {
                Ok(server) => servers.push(server),
                // Deleted since: its instances say so.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let items = self.with_live_state(&servers, records.items).await?;
        Ok(Page {
            items,
            next: records.next,
        })
    }

    /// The live status of `"{tenant}:{instance_id}"`.
    pub async fn get_instance_status(&self, key: &str) -> Result<InstanceStatus> {
        let (tenant, id) = validation::instance_key(key)?;
        let instance = self.store.get_instance(&tenant, &id).await?;
        let server = self.store.get_server(&instance.server_id).await?;
        let mut out = self
            .with_live_state(std::slice::from_ref(&server), vec![instance])
            .await?;
        out.pop()
            .ok_or_else(|| Error::not_found(crate::Kind::Instance, key))
    }

    /// A server's capacity and counts from the database, with whether it answers
    /// now and how many instances it reports.
    pub async fn get_server_stats(&self, server_id: &str) -> Result<ServerStats> {
        let server = self.store.get_server(server_id).await?;
        let deps = self.store.dependents(server_id).await?;
        let live = self.client(&server).list().await;
        Ok(ServerStats {
            server_id: server.id.clone(),
            status: server.status,
            capacity_mb: server.capacity_mb,
            used_mb: server.used_capacity_mb,
            free_mb: server.free_capacity_mb(),
            tenants: deps.tenants,
            instances: deps.instances,
            reachable: live.is_ok(),
            running: live.as_ref().ok().map(|l| l.len() as i64),
            error: live.err().map(|e| e.to_string()),
            last_seen: server.last_seen,
            routing_problem: server.routing_problem,
            cordoned: server.cordoned,
        })
    }

    /// Compares, for every server, the instances slum wants with what the server
    /// reports, and converges: spawns again what a server lost, completes pending
    /// stops, records observed states. Leaves alone what slum did not start and
    /// servers that do not answer (they are retried on the next run).
    ///
    /// Server by server, 32 at a time (`PARALLEL_RECONCILES`): each reads the
    /// records of its own instances (never the whole fleet's), asks its server
    /// for its list, and carries out its plan, a few actions at a time, the
    /// observed states it found written in one statement. Its reads and that
    /// write go two at a time (`RECONCILE_DB_CALLS`), leaving the rest of the
    /// database pool to the API and the router. The report lists
    /// the servers' findings in the order of their ids.
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let servers = self.store.list_servers().await?;
        let mut pending: HashMap<String, Vec<PendingStop>> = HashMap::new();
        for stop in self.store.list_pending_stops().await? {
            pending
                .entry(stop.server_id.clone())
                .or_default()
                .push(stop);
        }
        let grace = chrono::Duration::from_std(self.options.spawn_timeout)
            .unwrap_or_else(|_| chrono::Duration::seconds(30));
        let turns = tokio::sync::Semaphore::new(PARALLEL_RECONCILES);
        let db_calls = tokio::sync::Semaphore::new(RECONCILE_DB_CALLS);
        let reports: Vec<ReconcileReport> = join_all(servers.iter().map(|server| {
            let pending = pending.get(&server.id).map(Vec::as_slice).unwrap_or(&[]);
            let (turns, db_calls) = (&turns, &db_calls);
            async move {
                let _turn = turns.acquire().await;
                match self
                    .reconcile_server(server, pending, grace, db_calls)
                    .await
                {
                    Ok(report) => report,
                    Err(e) => ReconcileReport {
                        failed: vec![format!("{}: {e}", server.id)],
                        ..Default::default()
                    },
                }
            }
        }))
        .await;
        let mut report = ReconcileReport::default();
        for r in reports {
            report.respawned.extend(r.respawned);
            report.stopped.extend(r.stopped);
            report.unmanaged.extend(r.unmanaged);
            report.unreachable.extend(r.unreachable);
            report.failed.extend(r.failed);
        }
        if !report.respawned.is_empty() || !report.stopped.is_empty() || !report.failed.is_empty() {
            tracing::info!(?report, "reconciled");
        }
        Ok(report)
    }

    /// Reconciles one server: the instances placed on it or moving to it,
    /// against its list; `pending` are its old copies still to stop.
    async fn reconcile_server(
        &self,
        server: &Server,
        pending: &[PendingStop],
        grace: chrono::Duration,
        db_calls: &tokio::sync::Semaphore,
    ) -> Result<ReconcileReport> {
        let wanted = {
            let _call = db_calls.acquire().await;
            self.store.list_instances_touching(&server.id).await?
        };
        let observation = match self.client(server).list().await {
            Ok(list) => Observation::Reachable(
                list.into_iter()
                    .map(|t| (t.id.clone(), t.state()))
                    .collect(),
            ),
            Err(e) => Observation::Unreachable(e.to_string()),
        };
        let observed = HashMap::from([(server.id.clone(), observation)]);
        let plan = reconcile::plan(&wanted, pending, &observed, Utc::now(), grace);
        drop(wanted);

        let mut report = ReconcileReport {
            unmanaged: plan.unmanaged,
            unreachable: plan
                .unreachable
                .into_iter()
                .map(|(s, r)| format!("{s}: {r}"))
                .collect(),
            ..Default::default()
        };
        let (observations, actions): (Vec<Action>, Vec<Action>) = plan
            .actions
            .into_iter()
            .partition(|a| matches!(a, Action::Observe(..)));
        let observations: Vec<(String, String, InstanceState)> = observations
            .into_iter()
            .filter_map(|a| match a {
                Action::Observe(inst, state) => Some((inst.tenant, inst.instance_id, state)),
                _ => None,
            })
            .collect();
        let observed = match observations.is_empty() {
            true => Ok(0),
            false => {
                let _call = db_calls.acquire().await;
                self.store
                    .set_instances_observed(&observations, Utc::now())
                    .await
            }
        };
        if let Err(e) = observed {
            report.failed.extend(
                observations
                    .iter()
                    .map(|(tenant, id, _)| format!("{tenant}:{id}: {e}")),
            );
        }
        let outcomes: Vec<(String, Result<Option<bool>>)> = futures::stream::iter(actions)
            .map(|action| self.carry_out(server, action))
            .buffered(PARALLEL_ACTIONS)
            .collect()
            .await;
        for (key, result) in outcomes {
            match result {
                Ok(Some(true)) => report.respawned.push(key),
                Ok(Some(false)) => report.stopped.push(key),
                Ok(None) => {}
                Err(e) => report.failed.push(format!("{key}: {e}")),
            }
        }
        Ok(report)
    }

    /// Carries out one action of a server's plan; says what it did with the
    /// key it is reported under: `Some(true)` respawned, `Some(false)` stopped.
    async fn carry_out(&self, server: &Server, action: Action) -> (String, Result<Option<bool>>) {
        let (key, result, event) = self.carry_out_action(server, action).await;
        if let Some(event) = event {
            self.record_event(event.server(&server.id)).await;
        }
        (key, result)
    }

    /// [`SlumDb::carry_out`]'s work, and the event it makes, if any: a
    /// respawn, a stop, or a failure of either.
    async fn carry_out_action(
        &self,
        server: &Server,
        action: Action,
    ) -> (String, Result<Option<bool>>, Option<NewEvent>) {
        let failed = |what: &str, key: &str, e: &Error| {
            NewEvent::new(
                EventKind::ReconcileFailed,
                format!("reconcile could not {what} on {}: {e}", server.id),
            )
            .instance(key)
        };
        match action {
            Action::Observe(inst, state) => {
                let r = self
                    .store
                    .set_instance_observed(&inst.tenant, &inst.instance_id, state, Utc::now())
                    .await;
                (inst.key(), r.map(|_| None), None)
            }
            Action::CompleteStop(inst) => {
                let key = inst.key();
                let r = self.complete_stop(server, &inst).await;
                let event = match &r {
                    Ok(()) => NewEvent::new(
                        EventKind::ReconcileStopped,
                        format!(
                            "reconcile completed its pending stop on {}, which answers again",
                            server.id
                        ),
                    )
                    .instance(&key),
                    Err(e) => failed("complete its pending stop", &key, e),
                };
                (key, r.map(|_| Some(false)), Some(event))
            }
            Action::StopOldCopy {
                server: server_id,
                name,
            } => {
                let key = format!("{server_id}/{name}");
                let (r, tenant) = match name.split_once(':') {
                    // Claimed first: a move back may have taken the name
                    // over since the plan was made.
                    Some((process, tenant)) => (
                        self.stop_old_copy(&server_id, &name, process, tenant, Some(server))
                            .await,
                        Some(tenant),
                    ),
                    None => (
                        self.store
                            .delete_pending_stop(&server_id, &name)
                            .await
                            .map(|_| false),
                        None,
                    ),
                };
                let event = match (&r, tenant) {
                    (Ok(true), Some(tenant)) => Some(
                        NewEvent::new(
                            EventKind::ReconcileStopped,
                            format!(
                                "reconcile stopped {name}, the old copy a move left on {server_id}"
                            ),
                        )
                        .tenant(tenant),
                    ),
                    (Err(e), Some(tenant)) => Some(
                        NewEvent::new(
                            EventKind::ReconcileFailed,
                            format!(
                                "reconcile could not stop {name}, the old copy a move left on \
                                 {server_id}: {e}"
                            ),
                        )
                        .tenant(tenant),
                    ),
                    _ => None,
                };
                (key, r.map(|_| Some(false)), event)
            }
            Action::Respawn(inst) => {
                let key = inst.key();
                let r = self.respawn(server, &inst).await;
                let event = match &r {
                    Ok(true) => Some(
                        NewEvent::new(
                            EventKind::ReconcileRespawned,
                            format!("{} no longer ran it; reconcile started it again", server.id),
                        )
                        .instance(&key),
                    ),
                    Ok(false) => None,
                    Err(e) => Some(failed("start it again", &key, e)),
                };
                (key, r.map(|respawned| respawned.then_some(true)), event)
            }
        }
    }

    async fn complete_stop(&self, server: &Server, inst: &Instance) -> Result<()> {
        self.client(server)
            .stop(&inst.process, &inst.tenant)
            .await?;
        self.store
            .delete_instance(&inst.tenant, &inst.instance_id)
            .await
    }

    /// Starts a lost instance again, unless its record changed since the plan
    /// was made (stopped, moved or deleted meanwhile: whoever changed it owns
    /// it now). When the record changes while the spawn runs, the new copy is
    /// stopped again, so that none is left behind unmanaged. Returns whether
    /// the instance was respawned.
    async fn respawn(&self, server: &Server, planned: &Instance) -> Result<bool> {
        if !self.still_wanted(planned).await? {
            return Ok(false);
        }
        self.spawn_and_wait(self.client(server), planned).await?;
        if !self.still_wanted(planned).await? {
            if let Err(e) = self
                .client(server)
                .stop(&planned.process, &planned.tenant)
                .await
            {
                tracing::warn!(instance = %planned.key(), server = %server.id, error = %e,
                    "could not stop a copy respawned while its record changed");
            }
            return Ok(false);
        }
        self.store
            .set_instance_observed(
                &planned.tenant,
                &planned.instance_id,
                InstanceState::Running,
                Utc::now(),
            )
            .await?;
        Ok(true)
    }

    /// Whether the instance is still wanted running where the plan saw it.
    async fn still_wanted(&self, planned: &Instance) -> Result<bool> {
        match self
            .store
            .get_instance(&planned.tenant, &planned.instance_id)
            .await
        {
            Ok(now) => Ok(now.desired == DesiredState::Running
                && now.server_id == planned.server_id
                && now.process == planned.process),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The client of one server's tenement API.
    pub(crate) fn client<'a>(&'a self, server: &'a Server) -> TenementClient<'a> {
        self.tenement.for_server(server)
    }

    /// Asks every server for its instances, all at once.
    async fn observe(&self, servers: &[Server]) -> Vec<(String, Result<Vec<TenementInstance>>)> {
        join_all(
            servers
                .iter()
                .map(|s| async move { (s.id.clone(), self.client(s).list().await) }),
        )
        .await
    }

    async fn with_live_state(
        &self,
        servers: &[Server],
        instances: Vec<Instance>,
    ) -> Result<Vec<InstanceStatus>> {
        let wanted: std::collections::HashSet<&str> =
            instances.iter().map(|i| i.server_id.as_str()).collect();
        let asked: Vec<Server> = servers
            .iter()
            .filter(|s| wanted.contains(s.id.as_str()))
            .cloned()
            .collect();
        // Each server's list by tenement name: one lookup per instance.
        let live: HashMap<String, Result<HashMap<String, TenementInstance>>> = self
            .observe(&asked)
            .await
            .into_iter()
            .map(|(id, list)| {
                let list = list.map(|l| l.into_iter().map(|t| (t.id.clone(), t)).collect());
                (id, list)
            })
            .collect();
        let mut names: Vec<String> = instances.iter().map(|i| i.tenant.clone()).collect();
        names.sort_unstable();
        names.dedup();
        let mut domains: HashMap<(String, String), Vec<String>> = HashMap::new();
        for (tenant, process, domain) in self.store.domains_of_tenants(&names).await? {
            domains.entry((tenant, process)).or_default().push(domain);
        }
        let now = Utc::now();
        Ok(instances
            .into_iter()
            .map(|inst| {
                let mut status = InstanceStatus {
                    state: InstanceState::Unknown,
                    domains: domains
                        .get(&(inst.tenant.clone(), inst.process.clone()))
                        .cloned()
                        .unwrap_or_default(),
                    ..Default::default()
                };
                match live.get(&inst.server_id) {
                    Some(Ok(list)) => {
                        let name = inst.tenement_name();
                        match list.get(&name) {
                            Some(t) => {
                                status.state = t.state();
                                status.health = Some(t.health.clone());
                                status.uptime_secs = Some(t.uptime_secs);
                                status.restarts = Some(t.restarts);
                            }
                            None => status.state = InstanceState::Missing,
                        }
                    }
                    Some(Err(e)) => status.error = Some(e.to_string()),
                    None => status.error = Some(format!("server '{}' not found", inst.server_id)),
                }
                let mut inst = inst;
                if status.state != InstanceState::Unknown {
                    inst.observed = status.state;
                    inst.observed_at = Some(now);
                }
                status.instance = inst;
                status
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::Tenant;

    /// Reconcile respawns only what is still wanted where its plan saw it.
    #[tokio::test]
    async fn a_respawn_is_dropped_when_the_record_changed_since_the_plan() {
        let (_test_db, db) = crate::test_db::temp_db().await;
        for id in ["east", "west"] {
            db.add_server(&Server {
                id: id.into(),
                url: "http://127.0.0.1:9".into(),
                capacity_mb: 1024,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        db.add_tenant(&Tenant {
            domain: "acme.com".into(),
            server_id: "east".into(),
            process: "api".into(),
            instance_id: "prod".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let planned = Instance {
            tenant: "acme".into(),
            instance_id: "prod".into(),
            process: "api".into(),
            server_id: "east".into(),
            memory_mb: 64,
            ..Default::default()
        };
        db.store.reserve_instance(&planned).await.unwrap();
        assert!(db.still_wanted(&planned).await.unwrap(), "unchanged");

        // Moved meanwhile: the copy now belongs on west.
        db.store.begin_move("acme", "prod", "west").await.unwrap();
        assert!(
            db.still_wanted(&planned).await.unwrap(),
            "still east's until the switch"
        );
        db.store
            .finish_move("acme", "prod", std::time::Duration::ZERO)
            .await
            .unwrap();
        assert!(!db.still_wanted(&planned).await.unwrap(), "moved to west");

        let on_west = db.store.get_instance("acme", "prod").await.unwrap();
        assert!(db.still_wanted(&on_west).await.unwrap());
        // Stopped meanwhile.
        db.store
            .set_instance_desired("acme", "prod", DesiredState::Stopped)
            .await
            .unwrap();
        assert!(!db.still_wanted(&on_west).await.unwrap(), "stopped");
        // Gone meanwhile.
        db.store.delete_instance("acme", "prod").await.unwrap();
        assert!(!db.still_wanted(&on_west).await.unwrap(), "deleted");
    }
}
