//! Keeps the router's [`RouteTable`] in step with the fleet database through
//! the route change feed.
//!
//! Every change that matters to routing is recorded in the feed, numbered, in
//! the transaction that makes it (see `migrations/*/0009_route_change_feed.sql`).
//! A router applies the entries after the number its table is at, reading only
//! what they name (a server, a domain, a tenant's instances), and swaps in a
//! new table that shares everything else with the last (see
//! [`route_table`](super::route_table)): a change costs what it touches, not
//! the fleet. This process applies its own changes before its API answers;
//! the others' when PostgreSQL notifies, or at the next poll of the routing
//! version. A router that finds a gap (the feed trimmed past its number)
//! rebuilds its table from the database, routing on the last one meanwhile.
//!
//! The same feed carries the fleet's certificates and ACME challenges, by
//! name: each change is read and applied to the router's
//! [`Certificates`] by itself (a renewal replaces one entry, and no other is
//! read), and a rebuild streams them all in again.
//!
//! Tables are swapped atomically (readers never wait). A table replaced is
//! kept here until no router thread holds it any more and then freed on a
//! blocking thread: a router thread never frees a table between requests.
//! What is freed is then given back to the system, at most once a second
//! (see [`give_back_freed_memory`]): under a stream of changes the RSS stays
//! where it was before them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::error::Result;
use crate::fleet::certificate::CertificateMaterial;
use crate::fleet::db::FleetDb;
use crate::fleet::model::ServerStatus;
use crate::fleet::store::{Change, RouteKey, RouteScope, ROUTE_CHANGES_KEPT};
use crate::metrics::Metrics;
use crate::router::route_table::{DomainRows, RouteTable, TableBuilder};
use crate::router::tls::Certificates;
use crate::AbortOnDrop;

/// How many feed entries are read at a time.
const FEED_BATCH: i64 = 10_000;

/// Past this many distinct things named in one catch-up, the table is built
/// again whole: cheaper than reading each.
const REBUILD_PAST: usize = 50_000;

/// How often the feed is trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// How often, at most, the memory freed with replaced tables is given back
/// to the system (see [`give_back_freed_memory`]); and how often it is
/// anyway, for what the rest of the process freed (server connections'
/// buffers, health check rounds, API requests).
const GIVE_BACK_EVERY: Duration = Duration::from_secs(1);
const GIVE_BACK_ANYWAY: Duration = Duration::from_secs(5);

/// The current route table and the means to keep it current.
pub struct Routes {
    table: ArcSwap<RouteTable>,
    /// Bumped after every swap, for requests waiting on a server's fate.
    swapped: tokio::sync::watch::Sender<u64>,
    /// Serialises changes to the table, so that an older view never replaces
    /// a newer one.
    updating: Mutex<()>,
    /// Servers this router saw failing, taken as offline until the deadline
    /// whatever the database says (a router that does not lead cannot record
    /// it; the leader's own checks decide for the fleet meanwhile).
    local_offline: std::sync::Mutex<HashMap<String, Instant>>,
    /// Tables replaced, until no router thread holds them.
    retired: std::sync::Mutex<Vec<Arc<RouteTable>>>,
    /// The fleet's certificates and ACME challenges, kept current by the
    /// same feed.
    certificates: Arc<Certificates>,
    /// When freed memory was last given back, and whether tables were freed
    /// since.
    given_back: std::sync::Mutex<(Option<Instant>, bool)>,
    metrics: Arc<Metrics>,
}

impl Routes {
    pub fn new(metrics: Arc<Metrics>) -> Routes {
        Routes {
            table: ArcSwap::from_pointee(RouteTable::default()),
            swapped: tokio::sync::watch::Sender::new(0),
            updating: Mutex::new(()),
            local_offline: std::sync::Mutex::default(),
            retired: std::sync::Mutex::default(),
            certificates: Arc::new(Certificates::new()),
            given_back: std::sync::Mutex::default(),
            metrics,
        }
    }

    /// The certificates this feed keeps current.
    pub fn certificates(&self) -> Arc<Certificates> {
        Arc::clone(&self.certificates)
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Whether `table` is the table in force now (without taking a reference).
    pub fn is_current(&self, table: &Arc<RouteTable>) -> bool {
        Arc::ptr_eq(&self.table.load(), table)
    }

    fn overrides(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        crate::lock(&self.local_offline)
    }

    /// Servers taken as offline here now (expired ones dropped).
    fn held_offline(&self) -> HashSet<String> {
        let now = Instant::now();
        let mut local = self.overrides();
        local.retain(|_, until| *until > now);
        local.keys().cloned().collect()
    }

    /// Takes `server` as offline in this router for `how_long`, and applies it.
    pub async fn mark_offline_locally(&self, db: &FleetDb, server: &str, how_long: Duration) {
        self.overrides()
            .insert(server.to_owned(), Instant::now() + how_long);
        let _one_at_a_time = self.updating.lock().await;
        let current = self.current();
        if let Err(e) = self.apply_servers(db, current, [server.to_owned()]).await {
            tracing::warn!(error = %e, server, "cannot take a server offline locally");
        }
    }

    /// The servers whose local override ran out, forgotten.
    fn expired_overrides(&self) -> Vec<String> {
        let now = Instant::now();
        let mut local = self.overrides();
        let gone: Vec<String> = local
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for s in &gone {
            local.remove(s);
        }
        gone
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

    /// Builds the table again from the database, whole: at start, and after
    /// a gap in the feed. Routing goes on with the last table meanwhile.
    pub async fn reload(&self, db: &FleetDb) -> Result<()> {
        let _one_at_a_time = self.updating.lock().await;
        self.rebuild(db).await
    }

    async fn rebuild(&self, db: &FleetDb) -> Result<()> {
        // The version first: changes made while the rows are read are in
        // the feed after it, and applying one again is harmless.
        let version = db.fleet_version().await?;
        self.reload_certificates(db).await?;
        let servers = db.list_servers().await?;
        let mut builder = TableBuilder::new(&self.current(), &servers, &self.held_offline());
        db.for_each_route_row(&mut |row| builder.add(row)).await?;
        // Made into a table off the runtime's threads: a million entries.
        let table = tokio::task::spawn_blocking(move || builder.finish(version))
            .await
            .map_err(|e| {
                crate::error::Error::Database(sqlx::Error::Protocol(format!(
                    "building the route table: {e}"
                )))
            })?;
        self.swap(table);
        Ok(())
    }

    /// Applies the route change feed after the table's number; a gap (or
    /// more changes than are worth reading one by one) rebuilds it whole.
    pub async fn catch_up(&self, db: &FleetDb) -> Result<()> {
        let _one_at_a_time = self.updating.lock().await;
        loop {
            let current = self.current();
            // The version first: every change up to it has committed, so the
            // feed read after it holds them all unless it was trimmed.
            let version = db.fleet_version().await?;
            let changes = db.route_changes_after(current.version, FEED_BATCH).await?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                // Nothing after this table's number: up to date, unless the
                // feed was trimmed to its very end past it.
                if version != current.version {
                    tracing::info!(
                        seen = current.version,
                        "the route change feed was trimmed past this router; rebuilding the route table"
                    );
                    return self.rebuild(db).await;
                }
                return Ok(());
            };
            let consecutive = changes
                .iter()
                .enumerate()
                .all(|(n, c)| c.seq == current.version + 1 + n as i64);
            if !consecutive {
                tracing::info!(
                    seen = current.version,
                    next = changes[0].seq,
                    "the route change feed has a gap here; rebuilding the route table"
                );
                return self.rebuild(db).await;
            }
            let mut servers = Vec::new();
            let mut domains = HashSet::new();
            let mut tenants = HashSet::new();
            let mut certificates = HashSet::new();
            let mut challenges = HashSet::new();
            for c in changes.iter() {
                match &c.key {
                    RouteKey::Server(s) => {
                        if !servers.contains(s) {
                            servers.push(s.clone());
                        }
                    }
                    RouteKey::Domain(d) => {
                        domains.insert(d.as_str());
                    }
                    RouteKey::Tenant(t) => {
                        tenants.insert(t.as_str());
                    }
                    // Certificates and challenges are the HTTPS listener's,
                    // not the route table's: applied below, each by itself.
                    RouteKey::Certificate(name) => {
                        certificates.insert(name.as_str());
                    }
                    RouteKey::Challenge(domain) => {
                        challenges.insert(domain.as_str());
                    }
                }
            }
            if servers.len() + domains.len() + tenants.len() > REBUILD_PAST
                || certificates.len() + challenges.len() > REBUILD_PAST
            {
                return self.rebuild(db).await;
            }
            for name in certificates {
                self.apply_certificate(db, name).await?;
            }
            for domain in challenges {
                self.apply_challenges(db, domain).await?;
            }
            let mut rows: HashMap<String, DomainRows> = HashMap::new();
            for d in domains {
                rows.entry(d.to_owned()).or_default();
                for row in db.route_rows(RouteScope::Domain(d)).await? {
                    rows.entry(row.domain.clone()).or_default().add(row);
                }
            }
            for t in tenants {
                for row in db.route_rows(RouteScope::Tenant(t)).await? {
                    rows.entry(row.domain.clone()).or_default().add(row);
                }
            }
            let table = match self.apply_servers_at(db, &current, last, servers).await? {
                Some(with_servers) => with_servers.with_domains(last, rows),
                None => current.with_domains(last, rows),
            };
            self.swap(table);
            if changes.len() < FEED_BATCH as usize {
                return Ok(());
            }
        }
    }

    /// Reads every certificate and challenge again, streamed (at start, and
    /// after a gap in the feed): each installed in place of the one it had,
    /// and those gone from the database dropped.
    async fn reload_certificates(&self, db: &FleetDb) -> Result<()> {
        let certificates = &self.certificates;
        let mut seen: HashSet<String> = HashSet::new();
        db.for_each_certificate_material(&mut |name, material| {
            install(certificates, &name, &material);
            seen.insert(name);
        })
        .await?;
        certificates.retain(|name| seen.contains(name));
        let domains = db.challenge_domains().await?;
        for domain in &domains {
            self.apply_challenges(db, domain).await?;
        }
        let domains: HashSet<String> = domains.into_iter().collect();
        certificates.retain_challenges(|domain| domains.contains(domain));
        Ok(())
    }

    /// Applies the certificate called `name` as the database has it now:
    /// installed, replaced, or removed.
    async fn apply_certificate(&self, db: &FleetDb, name: &str) -> Result<()> {
        match db.certificate_material(name).await? {
            Some(material) => install(&self.certificates, name, &material),
            None => self.certificates.remove(name),
        }
        Ok(())
    }

    /// Applies the ACME challenges of `domain` as the database has them now.
    async fn apply_challenges(&self, db: &FleetDb, domain: &str) -> Result<()> {
        let challenges = db.challenges_for(domain).await?;
        let alpn01 = challenges
            .alpn01
            .as_ref()
            .map(|m| (m.chain_pem.as_bytes(), m.key_pem.expose().as_bytes()));
        if let Err(e) = self
            .certificates
            .set_challenges(domain, challenges.http01, alpn01)
        {
            tracing::warn!(domain, error = %e, "an ACME challenge cannot be served");
        }
        Ok(())
    }

    /// Applies the servers as the database has them now (with this router's
    /// overrides) to `current`, and swaps the result in. The caller holds
    /// `updating`.
    async fn apply_servers(
        &self,
        db: &FleetDb,
        current: Arc<RouteTable>,
        servers: impl IntoIterator<Item = String>,
    ) -> Result<()> {
        let version = current.version;
        let servers: Vec<String> = servers.into_iter().collect();
        if let Some(table) = self
            .apply_servers_at(db, &current, version, servers)
            .await?
        {
            self.swap(table);
        }
        Ok(())
    }

    /// `current` with `servers` as the database has them, at `version`;
    /// `None` when there were none.
    async fn apply_servers_at(
        &self,
        db: &FleetDb,
        current: &RouteTable,
        version: i64,
        servers: Vec<String>,
    ) -> Result<Option<RouteTable>> {
        if servers.is_empty() {
            return Ok(None);
        }
        let offline = self.held_offline();
        let mut table: Option<RouteTable> = None;
        for id in servers {
            let base = table.as_ref().unwrap_or(current);
            let found = match db.get_server(&id).await {
                Ok(s) => Some(s),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            };
            table = Some(match &found {
                Some(s) => base.with_server(version, Ok(s), offline.contains(&id)),
                None => base.with_server(version, Err(&id), false),
            });
        }
        Ok(table)
    }

    /// Puts `table` in force, counts it, and keeps the one it replaces until
    /// no router thread holds it.
    fn swap(&self, table: RouteTable) {
        self.metrics.route_table_domains.set(table.domains() as i64);
        let mut by_state: HashMap<ServerStatus, i64> = HashMap::new();
        let mut unroutable = 0;
        for u in table.upstreams() {
            *by_state.entry(u.status).or_default() += 1;
            unroutable += i64::from(u.routing_problem.is_some());
        }
        self.metrics.unroutable_servers.set(unroutable);
        for state in [
            ServerStatus::Unknown,
            ServerStatus::Online,
            ServerStatus::Offline,
            ServerStatus::Draining,
        ] {
            self.metrics
                .servers
                .with_label_values(&[state.as_str()])
                .set(by_state.get(&state).copied().unwrap_or(0));
        }
        let old = self.table.swap(Arc::new(table));
        crate::lock(&self.retired).push(old);
        self.swapped.send_modify(|n| *n += 1);
        // Those no router thread holds go now, not at the next poll: changes
        // made one after the other (hundreds a second) would otherwise keep
        // as many tables, each with its own copy of the list of shards.
        self.free_retired();
    }

    /// Frees, on a blocking thread, the replaced tables no one holds any
    /// more, and gives the memory freed back to the system: at most every
    /// [`GIVE_BACK_EVERY`] after tables were freed (the follow loop's poll
    /// comes back for what is left pending), and every [`GIVE_BACK_ANYWAY`].
    fn free_retired(&self) {
        let dead: Vec<Arc<RouteTable>> = {
            let mut retired = crate::lock(&self.retired);
            let (dead, held) = retired.drain(..).partition(|t| Arc::strong_count(t) == 1);
            *retired = held;
            dead
        };
        let give_back = {
            let mut given_back = crate::lock(&self.given_back);
            let (last, pending) = &mut *given_back;
            *pending |= !dead.is_empty();
            let since = last.map(|t| t.elapsed());
            let due =
                since.is_none_or(|t| (*pending && t >= GIVE_BACK_EVERY) || t >= GIVE_BACK_ANYWAY);
            if due {
                (*last, *pending) = (Some(Instant::now()), false);
            }
            due
        };
        if !dead.is_empty() || give_back {
            tokio::task::spawn_blocking(move || {
                drop(dead);
                if give_back {
                    give_back_freed_memory();
                }
            });
        }
    }

    /// Follows the feed: at once when the database notifies (PostgreSQL),
    /// and by checking the routing version every `interval` otherwise
    /// (SQLite, or a notification channel that is down). Trims the feed now
    /// and then. Errors are logged and the last table stays in force.
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
        let mut trimmed = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                change = changes.recv(), if listening => {
                    if change.is_none() {
                        // The listener is gone: polling alone from here on.
                        listening = false;
                    }
                }
            }
            self.free_retired();
            let expired = self.expired_overrides();
            if !expired.is_empty() {
                let _one_at_a_time = self.updating.lock().await;
                if let Err(e) = self.apply_servers(&db, self.current(), expired).await {
                    tracing::warn!(error = %e, "cannot end a local offline override");
                }
            }
            let moved = match db.fleet_version().await {
                Ok(v) => v != self.current().version,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the fleet version");
                    continue;
                }
            };
            if moved {
                if let Err(e) = self.catch_up(&db).await {
                    tracing::warn!(error = %e, "applying route changes failed; keeping the last table");
                }
            }
            if trimmed.elapsed() >= TRIM_EVERY {
                trimmed = Instant::now();
                if let Err(e) = db.trim_route_changes(ROUTE_CHANGES_KEPT).await {
                    tracing::warn!(error = %e, "cannot trim the route change feed");
                }
            }
        }
    }
}

/// Installs a certificate from the database; one that cannot be served is
/// said once in the log (by name, never with its key), and the one in place,
/// if any, stays.
fn install(certificates: &Certificates, name: &str, material: &CertificateMaterial) {
    let installed = certificates.install(
        name,
        material.chain_pem.as_bytes(),
        material.key_pem.expose().as_bytes(),
        material.redirect,
    );
    if let Err(e) = installed {
        tracing::warn!(name, error = %e, "a certificate cannot be served");
    }
}

/// Gives the memory the allocator holds free back to the system. glibc
/// keeps what is freed in the arena of the thread that allocated it (one a
/// thread, up to eight a core), reused only by that arena and returned to
/// the system only from its top: the tables replaced change after change,
/// the buffers of new server connections and the rows read at start left
/// the arenas' heaps full of holes, and the router's RSS grew by several MB
/// each 1,000 changes (see docs/benchmarks.md). `malloc_trim` returns the
/// free pages of every arena, holes included: 1 to 15 ms at a million
/// domains, on a blocking thread. Nothing to do on other C libraries.
fn give_back_freed_memory() {
    let started = Instant::now();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only takes the arenas'
    // locks in turn.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::debug!(
        took_us = started.elapsed().as_micros() as u64,
        "freed memory given back to the system"
    );
}

#[cfg(test)]
mod tests;
