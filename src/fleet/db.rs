//! [`FleetDb`]: the fleet database's records (servers, tenants, instances),
//! validated before the [`Store`] is touched.
//!
//! It is the half of [`SlumDb`](crate::SlumDb) that never reaches a tenement
//! server: `SlumDb` adds the calls that do (spawn, stop, live listings,
//! reconcile, moves) and dereferences to this, so that every call of the seed
//! page is a method of `SlumDb`. The router keeps its table in step with a
//! `FleetDb` alone. Cheap to clone and safe to share between tasks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fleet::events::{EventKind, NewEvent};
use crate::fleet::model::{Instance, Server, Tenant};
use crate::fleet::store::is_postgres_url;
#[cfg(feature = "postgres")]
use crate::fleet::store::postgres::PostgresStore;
#[cfg(feature = "sqlite")]
use crate::fleet::store::sqlite::SqliteStore;
use crate::fleet::store::Store;
use crate::fleet::{tenant_name, validation};
use crate::tls::ServerRoots;

/// Fleet-wide settings of a [`SlumDb`](crate::SlumDb): the database's, and
/// those of the calls to tenement servers.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Memory reserved for an instance when the spawn does not say, in MB.
    pub default_memory_mb: i64,
    /// Time allowed to open a connection to a tenement server.
    pub connect_timeout: Duration,
    /// Time allowed for a tenement call (listings, stops, health).
    pub request_timeout: Duration,
    /// Time allowed for a spawn, which waits for the process to start.
    pub spawn_timeout: Duration,
    /// Time a move leaves the old copy running after the route switched, for
    /// requests already on their way to it (and routers that poll).
    pub move_grace: Duration,
    /// A private CA's certificates, trusted for `https://` servers besides
    /// the public roots.
    pub server_roots: Option<ServerRoots>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            default_memory_mb: 128,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            spawn_timeout: Duration::from_secs(30),
            move_grace: Duration::from_secs(2),
            server_roots: None,
        }
    }
}

/// The fleet database: its records, and the settings of the fleet.
#[derive(Clone)]
pub struct FleetDb {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) options: Arc<FleetOptions>,
    /// The management API's token hashes, shared by the clones.
    pub(crate) tokens: Arc<crate::fleet::api_tokens::TokenCache>,
    /// The name of this process in the events it records.
    pub(crate) router_name: Arc<crate::fleet::events::RouterName>,
}

impl std::fmt::Debug for FleetDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetDb")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl FleetDb {
    /// Opens the fleet database at `path`, creating the file and schema when
    /// missing and applying pending migrations. A `postgres://` (or
    /// `postgresql://`) URL opens that PostgreSQL database instead, for fleets
    /// where several routers share one; any other path is a SQLite file.
    pub async fn open(path: impl AsRef<Path>, options: FleetOptions) -> Result<Self> {
        if options.default_memory_mb < 0 {
            return Err(Error::invalid("default_memory_mb", "is negative"));
        }
        let path = path.as_ref();
        let store: Arc<dyn Store> = match path.to_str() {
            #[cfg(feature = "postgres")]
            Some(url) if is_postgres_url(url) => Arc::new(PostgresStore::connect(url).await?),
            #[cfg(not(feature = "postgres"))]
            Some(url) if is_postgres_url(url) => {
                return Err(Error::invalid(
                    "database",
                    "is a PostgreSQL URL, and this build of slum has no PostgreSQL backend \
                     (cargo feature `postgres`)",
                ))
            }
            #[cfg(feature = "sqlite")]
            _ => Arc::new(SqliteStore::open(path).await?),
            #[cfg(not(feature = "sqlite"))]
            _ => {
                return Err(Error::invalid(
                    "database",
                    format!(
                        "'{}' is a SQLite file, and this build of slum has no SQLite backend \
                         (cargo feature `sqlite`); give a postgres:// URL",
                        path.display()
                    ),
                ))
            }
        };
        Ok(Self::with_store(store, options))
    }

    /// A `FleetDb` over any [`Store`] backend.
    pub fn with_store(store: Arc<dyn Store>, options: FleetOptions) -> Self {
        FleetDb {
            store,
            options: Arc::new(options),
            tokens: crate::fleet::api_tokens::TokenCache::new(),
            router_name: crate::fleet::events::RouterName::new(),
        }
    }

    /// Sends a [`Change`](crate::fleet::store::Change) whenever routing may
    /// have changed in the database (PostgreSQL notifications; never on
    /// SQLite). Runs until the receiver is dropped or the database connection
    /// fails.
    pub async fn follow_changes(
        &self,
        changes: tokio::sync::mpsc::Sender<crate::fleet::store::Change>,
    ) -> Result<()> {
        self.store.follow_changes(changes).await
    }

    /// The routing version of the fleet database (see
    /// [`Store::fleet_version`]).
    pub async fn fleet_version(&self) -> Result<i64> {
        self.store.fleet_version().await
    }

    /// Up to `limit` entries of the route change feed after number `after`
    /// (see [`Store::route_changes_after`]).
    pub async fn route_changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::fleet::store::RouteChange>> {
        self.store.route_changes_after(after, limit).await
    }

    /// Trims the route change feed to the newest `keep` entries.
    pub async fn trim_route_changes(&self, keep: i64) -> Result<u64> {
        self.store.trim_route_changes(keep).await
    }

    /// The route rows of a domain or of a tenant's domains.
    pub async fn route_rows(
        &self,
        scope: crate::fleet::store::RouteScope<'_>,
    ) -> Result<Vec<crate::fleet::store::RouteRow>> {
        self.store.route_rows(scope).await
    }

    /// Every route row, streamed (see [`Store::for_each_route_row`]).
    pub async fn for_each_route_row(
        &self,
        each: &mut (dyn for<'r> FnMut(crate::fleet::store::RouteRowRef<'r>) + Send),
    ) -> Result<()> {
        self.store.for_each_route_row(each).await
    }

    /// Holds the fleet's leadership while it can (see [`Store::lead`]).
    pub async fn lead(&self, leading: tokio::sync::watch::Sender<bool>) -> Result<()> {
        self.store.lead(leading).await
    }

    /// Records a server's health as decided by a health check: its status and,
    /// when it answered, the time it was seen; only if its status is still
    /// `expected`. Returns whether it was written.
    pub async fn record_server_health(
        &self,
        id: &str,
        expected: crate::fleet::model::ServerStatus,
        status: crate::fleet::model::ServerStatus,
        last_seen: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<bool> {
        self.store
            .set_server_health(id, expected, status, last_seen)
            .await
    }

    /// Records that the servers were seen at `at`, each only if its status is
    /// still the one given with it (see [`FleetDb::record_server_health`]),
    /// in one transaction. Returns how many were written.
    pub async fn record_servers_seen(
        &self,
        seen: &[(String, crate::fleet::model::ServerStatus)],
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64> {
        if seen.is_empty() {
            return Ok(0);
        }
        self.store.record_servers_seen(seen, at).await
    }

    /// Records what a routing check found of a server (see
    /// [`Server::routing_problem`]); returns whether it changed anything.
    pub async fn record_routing_problem(&self, id: &str, problem: Option<&str>) -> Result<bool> {
        self.store.set_server_routing_problem(id, problem).await
    }

    /// The fleet settings.
    pub fn options(&self) -> &FleetOptions {
        &self.options
    }

    // ----- servers -----
    //
    // `FleetDb` never reaches a server, so it cannot check where a server's
    // tenement routes; [`SlumDb`](crate::SlumDb)'s calls of the same names
    // check first. A server recorded here unchecked is checked by the health
    // checks of `slum serve`, as one that could not be asked is.

    /// Adds a tenement server to the fleet, unchecked (see
    /// [`SlumDb::add_server`](crate::SlumDb::add_server) for the checked call).
    pub async fn add_server(&self, server: &Server) -> Result<()> {
        let server = validation::server(server)?;
        self.store.insert_server(&server).await?;
        self.record_event(server_added(&server)).await;
        Ok(())
    }

    /// A server, with its used capacity.
    pub async fn get_server(&self, id: &str) -> Result<Server> {
        self.store.get_server(id).await
    }

    /// Replaces a server's url, region, capacity, token, domain and status,
    /// unchecked; a new url or domain clears its routing problem (the health
    /// checks judge the new address).
    pub async fn update_server(&self, server: &Server) -> Result<()> {
        let server = validation::server(server)?;
        let stored = self.store.get_server(&server.id).await?;
        self.store.update_server(&server, true).await?;
        self.record_server_changes(&stored, &server, true).await;
        Ok(())
    }

    /// Replaces a server's url, region, capacity, token and domain, leaving its
    /// status to whoever else changes it meanwhile (health checks, drains);
    /// unchecked, as [`FleetDb::update_server`] is.
    pub async fn update_server_settings(&self, server: &Server) -> Result<()> {
        let server = validation::server(server)?;
        let stored = self.store.get_server(&server.id).await?;
        self.store.update_server(&server, false).await?;
        self.record_server_changes(&stored, &server, false).await;
        Ok(())
    }

    /// Records what changed from `old` to `new` (settings, token and, with
    /// `with_status`, status) as events, one per kind of change.
    pub(crate) async fn record_server_changes(
        &self,
        old: &Server,
        new: &Server,
        with_status: bool,
    ) {
        for event in server_changes(old, new, with_status) {
            self.record_event(event).await;
        }
    }

    /// Cordons a server (`true`) or lifts its cordon (`false`): a cordoned
    /// server takes no new placements, while its instances keep running and
    /// routed; health checks never lift it. Returns the server as stored.
    /// Each change is logged with its cause.
    pub async fn set_cordoned(&self, id: &str, cordoned: bool) -> Result<Server> {
        validation::dns_label("server_id", id)?;
        if self.store.set_server_cordoned(id, cordoned).await? {
            if cordoned {
                tracing::info!(server = %id, cause = "operator",
                    "server cordoned: it takes no new placements");
            } else {
                tracing::info!(server = %id, cause = "operator",
                    "server uncordoned: it takes placements again");
            }
        }
        self.store.get_server(id).await
    }

    /// Removes a server that no tenant or instance points at.
    pub async fn delete_server(&self, id: &str) -> Result<()> {
        self.store.delete_server(id).await?;
        self.record_event(
            NewEvent::new(EventKind::ServerRemoved, "removed from the fleet").server(id),
        )
        .await;
        Ok(())
    }

    /// All servers with their used capacity, ordered by id.
    pub async fn list_servers(&self) -> Result<Vec<Server>> {
        self.store.list_servers().await
    }

    // ----- tenants -----

    /// Routes a customer domain to a tenant's instance on its home server.
    /// Without a `name`, the domain's first label is the name; when that is
    /// already the name of a tenant in another registrable domain (another
    /// customer), the call is refused and asks for the name (the rule is in
    /// `docs/library.md`).
    pub async fn add_tenant(&self, tenant: &Tenant) -> Result<()> {
        let derived = tenant.name.is_empty();
        let tenant = validation::tenant(tenant)?;
        if derived {
            self.check_derived_name(&tenant).await?;
        }
        self.store.insert_tenant(&tenant).await?;
        self.record_event(tenant_added(&tenant)).await;
        Ok(())
    }

    /// Refuses a tenant whose derived name would join another customer's
    /// tenant.
    pub(crate) async fn check_derived_name(&self, tenant: &Tenant) -> Result<()> {
        // The domains of that name only (an indexed read), not the fleet's.
        let mut existing: Vec<Tenant> = Vec::new();
        for row in self
            .store
            .route_rows(crate::fleet::store::RouteScope::Tenant(&tenant.name))
            .await?
        {
            if !existing.iter().any(|t| t.domain == row.domain) {
                existing.push(Tenant {
                    domain: row.domain,
                    name: row.tenant,
                    ..Default::default()
                });
            }
        }
        tenant_name::check_derived_name(tenant, &existing)
    }

    /// The tenant a domain routes to (the domain is matched case-insensitively,
    /// with or without a trailing dot).
    pub async fn get_tenant_by_domain(&self, domain: &str) -> Result<Tenant> {
        let domain = validation::domain("tenant.domain", domain)?;
        self.store.get_tenant(&domain).await
    }

    /// All tenants, ordered by domain.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.store.list_tenants(None).await
    }

    /// Tenants whose home is `server_id`; `NotFound` when the server does not exist.
    pub async fn list_tenants_on_server(&self, server_id: &str) -> Result<Vec<Tenant>> {
        self.store.get_server(server_id).await?;
        self.store.list_tenants(Some(server_id)).await
    }

    /// Replaces a tenant's name, home server, process and instance id (the domain
    /// is the key).
    pub async fn update_tenant(&self, tenant: &Tenant) -> Result<()> {
        let tenant = validation::tenant(tenant)?;
        let stored = self.store.get_tenant(&tenant.domain).await?;
        self.store.update_tenant(&tenant).await?;
        self.record_tenant_changes(&stored, &tenant).await;
        Ok(())
    }

    /// Records what changed from `old` to `new` as an event, if anything did.
    pub(crate) async fn record_tenant_changes(&self, old: &Tenant, new: &Tenant) {
        if let Some(event) = tenant_changes(old, new) {
            self.record_event(event).await;
        }
    }

    /// Removes a domain's route.
    pub async fn delete_tenant(&self, domain: &str) -> Result<()> {
        let domain = validation::domain("tenant.domain", domain)?;
        let stored = self.store.get_tenant(&domain).await?;
        self.store.delete_tenant(&domain).await?;
        self.record_event(
            NewEvent::new(
                EventKind::TenantRemoved,
                format!("domain {domain} removed; it routes nowhere now"),
            )
            .tenant(&stored.name)
            .server(&stored.server_id),
        )
        .await;
        Ok(())
    }

    // ----- instances (records) -----

    /// Every instance record as the database holds it (no server is asked).
    pub async fn list_instance_records(&self) -> Result<Vec<Instance>> {
        self.store.list_instances(None).await
    }

    /// The instance recorded under `"{tenant}:{instance_id}"`.
    pub async fn get_instance(&self, key: &str) -> Result<Instance> {
        let (tenant, id) = validation::instance_key(key)?;
        self.store.get_instance(&tenant, &id).await
    }
}

/// The event of a server added to the fleet.
pub(crate) fn server_added(server: &Server) -> NewEvent {
    NewEvent::new(
        EventKind::ServerAdded,
        format!(
            "added at {} with {} MB{}",
            server.url,
            server.capacity_mb,
            server
                .region
                .as_deref()
                .map(|r| format!(" in region {r}"))
                .unwrap_or_default()
        ),
    )
    .server(&server.id)
}

/// The events of a server's change: its settings, its token (never shown),
/// its status (with `with_status`).
fn server_changes(old: &Server, new: &Server, with_status: bool) -> Vec<NewEvent> {
    let shown = |v: Option<&str>| v.unwrap_or("none").to_owned();
    let mut settings = Vec::new();
    if old.url != new.url {
        settings.push(format!("url {} -> {}", old.url, new.url));
    }
    if old.region != new.region {
        settings.push(format!(
            "region {} -> {}",
            shown(old.region.as_deref()),
            shown(new.region.as_deref())
        ));
    }
    if old.capacity_mb != new.capacity_mb {
        settings.push(format!(
            "capacity {} MB -> {} MB",
            old.capacity_mb, new.capacity_mb
        ));
    }
    if old.domain != new.domain {
        settings.push(format!(
            "domain {} -> {}",
            shown(old.domain.as_deref()),
            shown(new.domain.as_deref())
        ));
    }
    let mut events = Vec::new();
    if !settings.is_empty() {
        events.push(NewEvent::new(EventKind::ServerUpdated, settings.join("; ")).server(&new.id));
    }
    let token = match (&old.token, &new.token) {
        (None, Some(_)) => Some("its tenement token was set"),
        (Some(_), None) => Some("its tenement token was cleared"),
        (Some(a), Some(b)) if a != b => Some("its tenement token was changed"),
        _ => None,
    };
    if let Some(cause) = token {
        events.push(NewEvent::new(EventKind::ServerTokenChanged, cause).server(&new.id));
    }
    if with_status && old.status != new.status {
        events.push(
            NewEvent::new(
                EventKind::ServerStatusSet,
                format!("status set to {} (was {})", new.status, old.status),
            )
            .server(&new.id),
        );
    }
    events
}

/// The event of a domain routed to a tenant.
pub(crate) fn tenant_added(tenant: &Tenant) -> NewEvent {
    NewEvent::new(
        EventKind::TenantAdded,
        format!(
            "domain {} routed to tenant {} (process {}, instance {}, home server {})",
            tenant.domain, tenant.name, tenant.process, tenant.instance_id, tenant.server_id
        ),
    )
    .tenant(&tenant.name)
    .server(&tenant.server_id)
}

/// The event of a domain's change, if anything changed.
fn tenant_changes(old: &Tenant, new: &Tenant) -> Option<NewEvent> {
    let mut changes = Vec::new();
    if old.name != new.name {
        changes.push(format!("tenant {} -> {}", old.name, new.name));
    }
    if old.server_id != new.server_id {
        changes.push(format!(
            "home server {} -> {}",
            old.server_id, new.server_id
        ));
    }
    if old.process != new.process {
        changes.push(format!("process {} -> {}", old.process, new.process));
    }
    if old.instance_id != new.instance_id {
        changes.push(format!(
            "instance {} -> {}",
            old.instance_id, new.instance_id
        ));
    }
    if old.failover != new.failover {
        changes.push(format!(
            "failover {} -> {}",
            old.failover.as_str(),
            new.failover.as_str()
        ));
    }
    (!changes.is_empty()).then(|| {
        NewEvent::new(
            EventKind::TenantUpdated,
            format!("domain {}: {}", new.domain, changes.join("; ")),
        )
        .tenant(&new.name)
        .server(&new.server_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::ServerStatus;

    #[test]
    fn a_servers_changes_are_told_by_kind_and_its_token_never_shown() {
        let old = Server {
            id: "s1".into(),
            url: "http://a".into(),
            capacity_mb: 1024,
            token: Some("old-secret".into()),
            status: ServerStatus::Online,
            ..Default::default()
        };
        let mut new = old.clone();
        assert!(
            server_changes(&old, &new, true).is_empty(),
            "nothing changed"
        );
        new.capacity_mb = 2048;
        new.token = Some("new-secret".into());
        new.status = ServerStatus::Draining;
        let events = server_changes(&old, &new, true);
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::ServerUpdated,
                EventKind::ServerTokenChanged,
                EventKind::ServerStatusSet
            ]
        );
        assert_eq!(events[0].cause, "capacity 1024 MB -> 2048 MB");
        assert_eq!(events[2].cause, "status set to draining (was online)");
        for e in &events {
            assert!(!e.cause.contains("secret"), "{}", e.cause);
            assert_eq!(e.server.as_deref(), Some("s1"));
        }
        assert_eq!(
            server_changes(&old, &new, false).len(),
            2,
            "a change of settings alone leaves the status out"
        );
    }
}
