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
        self.store.insert_server(&server).await
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
        self.store.update_server(&server, true).await
    }

    /// Replaces a server's url, region, capacity, token and domain, leaving its
    /// status to whoever else changes it meanwhile (health checks, drains);
    /// unchecked, as [`FleetDb::update_server`] is.
    pub async fn update_server_settings(&self, server: &Server) -> Result<()> {
        let server = validation::server(server)?;
        self.store.update_server(&server, false).await
    }

    /// Removes a server that no tenant or instance points at.
    pub async fn delete_server(&self, id: &str) -> Result<()> {
        self.store.delete_server(id).await
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
        self.store.insert_tenant(&tenant).await
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
        self.store.update_tenant(&tenant).await
    }

    /// Removes a domain's route.
    pub async fn delete_tenant(&self, domain: &str) -> Result<()> {
        let domain = validation::domain("tenant.domain", domain)?;
        self.store.delete_tenant(&domain).await
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
