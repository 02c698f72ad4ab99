//! Keeps the router's [`RouteTable`] in step with the fleet database.
//!
//! The table is swapped atomically (readers never wait); this process reloads it
//! right after its own changes, and a poll of the database's routing version
//! picks up changes other processes made.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::error::Result;
use crate::fleet::db::FleetDb;
use crate::fleet::model::ServerStatus;
use crate::fleet::store::Change;
use crate::metrics::Metrics;
use crate::router::route_table::RouteTable;
use crate::AbortOnDrop;

/// The current route table and the means to refresh it.
pub struct Routes {
    table: ArcSwap<RouteTable>,
    /// Bumped after every swap, for requests waiting on a server's fate.
    swapped: tokio::sync::watch::Sender<u64>,
    /// Serialises reloads, so that an older snapshot never replaces a newer one.
    reloading: Mutex<()>,
    /// Servers this router saw failing, taken as offline until the deadline
    /// whatever the database says (a router that does not lead cannot record
    /// it; the leader's own checks decide for the fleet meanwhile).
    local_offline: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    metrics: Arc<Metrics>,
}

impl Routes {
    pub fn new(metrics: Arc<Metrics>) -> Routes {
        Routes {
            table: ArcSwap::from_pointee(RouteTable::default()),
            swapped: tokio::sync::watch::Sender::new(0),
            reloading: Mutex::new(()),
            local_offline: std::sync::Mutex::default(),
            metrics,
        }
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Whether `table` is the table in force now (without taking a reference).
    pub fn is_current(&self, table: &Arc<RouteTable>) -> bool {
        Arc::ptr_eq(&self.table.load(), table)
    }

    fn overrides(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::time::Instant>> {
        crate::lock(&self.local_offline)
    }

    /// Takes `server` as offline in this router for `how_long`, and applies it.
    pub async fn mark_offline_locally(&self, db: &FleetDb, server: &str, how_long: Duration) {
        self.overrides()
            .insert(server.to_owned(), std::time::Instant::now() + how_long);
        if let Err(e) = self.reload(db).await {
            tracing::warn!(error = %e, "route table reload failed; keeping the last one");
        }
    }

    /// Whether a local override ran out and the table still applies it.
    fn override_expired(&self) -> bool {
        let now = std::time::Instant::now();
        self.overrides().values().any(|until| *until <= now)
    }

    /// Resolves once the table in force says `server` is offline.
    pub async fn until_offline(&self, server: &str) {
        let mut swaps = self.swapped.subscribe();
        loop {
            let offline = self
                .current()
                .upstream(server)
                .is_some_and(|u| u.status == ServerStatus::Offline);
            if offline || swaps.changed().await.is_err() {
                return;
            }
        }
    }

    /// Rebuilds the table from the database.
    pub async fn reload(&self, db: &FleetDb) -> Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let version = db.fleet_version().await?;
        let mut servers = db.list_servers().await?;
        {
            let now = std::time::Instant::now();
            let mut local = self.overrides();
            local.retain(|_, until| *until > now);
            for s in servers.iter_mut().filter(|s| local.contains_key(&s.id)) {
                s.status = ServerStatus::Offline;
            }
        }
        let tenants = db.list_tenants().await?;
        let instances = db.list_instance_records().await?;
        // The servers' counts of requests in flight go on.
        let table =
            RouteTable::build_after(&self.current(), version, &servers, &tenants, &instances);
        self.metrics.route_table_domains.set(table.domains() as i64);
        let unroutable = servers
            .iter()
            .filter(|s| s.routing_problem.is_some())
            .count();
        self.metrics.unroutable_servers.set(unroutable as i64);
        for state in [
            ServerStatus::Unknown,
            ServerStatus::Online,
            ServerStatus::Offline,
            ServerStatus::Draining,
        ] {
            let n = servers.iter().filter(|s| s.status == state).count();
            self.metrics
                .servers
                .with_label_values(&[state.as_str()])
                .set(n as i64);
        }
        self.table.store(Arc::new(table));
        self.swapped.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Reloads whenever the database's routing version moves: at once when the
    /// database notifies (PostgreSQL), and by checking every `interval`
    /// otherwise (SQLite, or a notification channel that is down). After a broken
    /// notification channel comes back the whole table is reloaded. Errors are
    /// logged and the last table stays in force.
    pub async fn follow(self: Arc<Self>, db: FleetDb, interval: Duration) {
        let (tx, mut changes) = tokio::sync::mpsc::channel(16);
        let listener = {
            let db = db.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = db.follow_changes(tx.clone()).await {
                        tracing::warn!(error = %e, "route change notifications lost; retrying");
                        let _ = tx.send(Change::Resync).await;
                    }
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        let _stop_listener = AbortOnDrop(listener);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listening = true;
        loop {
            let resync = tokio::select! {
                _ = tick.tick() => false,
                change = changes.recv(), if listening => match change {
                    Some(c) => c == Change::Resync,
                    // The listener is gone: polling alone from here on.
                    None => {
                        listening = false;
                        false
                    }
                },
            };
            let seen = self.current().version;
            let moved = match db.fleet_version().await {
                Ok(v) => v != seen,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the fleet version");
                    continue;
                }
            };
            if moved || resync || self.override_expired() {
                if let Err(e) = self.reload(&db).await {
                    tracing::warn!(error = %e, "route table reload failed; keeping the last one");
                }
            }
        }
    }
}
