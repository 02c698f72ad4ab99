//! The seam between slum and its fleet database.
//!
//! All SQL lives behind [`Store`]; [`crate::SlumDb`] and everything above it only
//! see this trait. Two backends implement it: [`sqlite`], the embedded default,
//! and [`postgres`], for fleets where several routers share one database. Each
//! enforces integrity in the database itself (foreign keys, unique keys, atomic
//! capacity checks) and maps its constraint failures to the same [`crate::Error`]
//! kinds with the same messages; the errors that need explaining (a refused
//! reservation, a duplicate instance) are built here, once, for both.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use crate::error::{Error, Kind, Result};
use crate::fleet::model::{
    ApiToken, DesiredState, Instance, InstanceState, Server, ServerStatus, Tenant,
};

/// An instance of the same tenant and process is moving to the server.
fn incoming_sibling(instance: &Instance, other: &Instance) -> Error {
    Error::AlreadyExists {
        kind: Kind::Instance,
        key: instance.key(),
        detail: Some(format!(
            "instance '{}' of tenant '{}' is moving to server '{}' with process '{}'",
            other.key(),
            instance.tenant,
            instance.server_id,
            instance.process
        )),
    }
}

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Whether `location` names a PostgreSQL database (a `postgres://` or
/// `postgresql://` URL) rather than a SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// `location` fit for logs: a PostgreSQL URL without its password (a SQLite
/// path as it is).
pub fn redacted(location: &str) -> String {
    if !is_postgres_url(location) {
        return location.to_owned();
    }
    match url::Url::parse(location) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have a password at all.
                let _ = url.set_password(Some("***"));
            }
            url.into()
        }
        Err(_) => "postgres://(unparsable URL)".to_owned(),
    }
}

/// What an entry of the route change feed names: the part of the fleet a
/// router reads again to apply it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    /// A server's url, domain, status or routing problem.
    Server(String),
    /// A customer domain's tenant row.
    Domain(String),
    /// The instances of a tenant (placed, moved, stopping, gone).
    Tenant(String),
}

impl RouteKey {
    fn from_row(kind: &str, key: String) -> Result<RouteKey> {
        match kind {
            "server" => Ok(RouteKey::Server(key)),
            "domain" => Ok(RouteKey::Domain(key)),
            "tenant" => Ok(RouteKey::Tenant(key)),
            other => Err(Error::Database(sqlx::Error::Protocol(format!(
                "route change feed: unknown kind '{other}'"
            )))),
        }
    }
}

/// One entry of the route change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    /// The routing version the change moved the fleet to: entries have
    /// consecutive numbers.
    pub seq: i64,
    pub key: RouteKey,
}

/// A customer domain as routing needs it, with one running instance of its
/// tenant's process (`None`: it has none). A domain whose tenant has several
/// such instances comes as one row per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub domain: String,
    pub tenant: String,
    pub process: String,
    /// The domain's own instance.
    pub instance_id: String,
    /// The server the domain's own instance is spawned on when it has none.
    pub home_server: String,
    /// A running instance of the tenant's process: its id and its server.
    pub placed: Option<(String, String)>,
}

impl RouteRow {
    /// The row, borrowed.
    pub fn as_ref(&self) -> RouteRowRef<'_> {
        RouteRowRef {
            domain: &self.domain,
            tenant: &self.tenant,
            process: &self.process,
            instance_id: &self.instance_id,
            home_server: &self.home_server,
            placed: self.placed.as_ref().map(|(i, s)| (i.as_str(), s.as_str())),
        }
    }
}

/// A [`RouteRow`] as it is read, borrowing its text from the database's row:
/// a table built at start takes a million of them without a string made for
/// each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRowRef<'r> {
    pub domain: &'r str,
    pub tenant: &'r str,
    pub process: &'r str,
    pub instance_id: &'r str,
    pub home_server: &'r str,
    pub placed: Option<(&'r str, &'r str)>,
}

impl<'r> RouteRowRef<'r> {
    /// The fields of a row as [`ROUTE_ROWS`] joins them.
    fn parse(joined: &'r str) -> Result<RouteRowRef<'r>> {
        let mut fields = joined.split(FIELD_SEPARATOR);
        let mut next = || fields.next();
        let row = match (
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
        ) {
            (Some(d), Some(t), Some(p), Some(i), Some(h), placed_id, placed_on, None) => {
                RouteRowRef {
                    domain: d,
                    tenant: t,
                    process: p,
                    instance_id: i,
                    home_server: h,
                    placed: match (placed_id, placed_on) {
                        (Some(id), Some(on)) => Some((id, on)),
                        (None, None) => None,
                        _ => return Err(malformed_route_row(joined)),
                    },
                }
            }
            _ => return Err(malformed_route_row(joined)),
        };
        Ok(row)
    }

    /// The row, owned.
    pub fn to_owned(&self) -> RouteRow {
        RouteRow {
            domain: self.domain.to_owned(),
            tenant: self.tenant.to_owned(),
            process: self.process.to_owned(),
            instance_id: self.instance_id.to_owned(),
            home_server: self.home_server.to_owned(),
            placed: self.placed.map(|(i, s)| (i.to_owned(), s.to_owned())),
        }
    }
}

fn malformed_route_row(joined: &str) -> Error {
    Error::Database(sqlx::Error::Protocol(format!(
        "a route row is not 5 or 7 fields: {:?}",
        joined.chars().take(300).collect::<String>()
    )))
}

/// Between the fields of a route row as [`ROUTE_ROWS`] joins them: the unit
/// separator, which no name or id holds (they are DNS labels).
const FIELD_SEPARATOR: char = '\u{1f}';

/// The domains [`Store::route_rows`] reads.
#[derive(Debug, Clone, Copy)]
pub enum RouteScope<'a> {
    Domain(&'a str),
    Tenant(&'a str),
}

/// The query of route rows, without its `WHERE` (the same on both backends).
/// Each row's fields come joined in one text (see [`FIELD_SEPARATOR`]; the
/// placed instance's two only when there is one): one value a row for the
/// driver to copy and hand over, not seven. At a million rows the seven cost
/// most of the start (sqlx copies each value SQLite gives it, behind an
/// `Arc`).
const ROUTE_ROWS: &str = "SELECT t.domain || '\u{1f}' || t.name || '\u{1f}' || t.process \
     || '\u{1f}' || t.instance_id || '\u{1f}' || t.server_id \
     || coalesce('\u{1f}' || i.instance_id || '\u{1f}' || i.server_id, '') \
     FROM tenants t LEFT JOIN instances i \
     ON i.tenant = t.name AND i.process = t.process AND i.desired = 'running'";

/// The tenants (with failover `respawn`) whose own instance is placed, not
/// moving, on the server bound as the first parameter: a `FROM`/`WHERE` tail
/// for `SELECT t.…`, the same on both backends (`$1` is `?1` to SQLite).
const RESPAWN_TENANTS_ON: &str = "FROM instances i JOIN tenants t \
     ON t.name = i.tenant AND t.instance_id = i.instance_id AND t.process = i.process \
     WHERE i.server_id = $1 AND i.moving_to IS NULL AND t.failover = 'respawn'";

/// How many feed entries are kept behind the newest: a router further behind
/// rebuilds its table.
pub const ROUTE_CHANGES_KEPT: i64 = 100_000;

/// What [`Store::follow_changes`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Something routing depends on changed.
    Changed,
    /// Notifications may have been lost: reload everything.
    Resync,
}

/// How many records point at a server (or, from [`Store::counts`], the
/// whole fleet holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dependents {
    pub tenants: i64,
    pub instances: i64,
}

/// Persistent fleet state. Inputs are already validated and normalised by the
/// caller; the store enforces what only the database can (existence, uniqueness,
/// references, capacity under concurrency).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a server; `AlreadyExists` when the id is taken.
    async fn insert_server(&self, server: &Server) -> Result<()>;
    /// A server with its used capacity.
    async fn get_server(&self, id: &str) -> Result<Server>;
    /// Replaces a server's settings (url, region, capacity, token, domain) and,
    /// with `with_status`, its status. When the url or the domain changes, its
    /// `routing_problem` is cleared: the routing check of the old address
    /// says nothing of the new one.
    async fn update_server(&self, server: &Server, with_status: bool) -> Result<()>;
    /// Records what a routing check found (see [`Server::routing_problem`]);
    /// returns whether it changed anything.
    async fn set_server_routing_problem(&self, id: &str, problem: Option<&str>) -> Result<bool>;
    /// Records a health observation if the server's status is still `expected`
    /// (compare-and-set, so that a check never writes back a status an operator
    /// or another router changed meanwhile). Returns whether it was written.
    async fn set_server_health(
        &self,
        id: &str,
        expected: ServerStatus,
        status: ServerStatus,
        last_seen: Option<DateTime<Utc>>,
    ) -> Result<bool>;
    /// [`Store::set_server_health`] with the same status, for many servers in
    /// one transaction: records `last_seen = at` on each server still in the
    /// status given with it. Returns how many were written.
    async fn record_servers_seen(
        &self,
        seen: &[(String, ServerStatus)],
        at: DateTime<Utc>,
    ) -> Result<u64>;
    /// Deletes a server; `HasDependents` while tenants or instances point at it.
    async fn delete_server(&self, id: &str) -> Result<()>;
    /// All servers, each with its used capacity, in one query, ordered by id.
    async fn list_servers(&self) -> Result<Vec<Server>>;
    /// At most `limit` servers whose id is after `after`, ordered by id
    /// (keyset paging on the primary key).
    async fn list_servers_page(&self, after: Option<&str>, limit: i64) -> Result<Vec<Server>>;
    /// Tenants and instances that point at a server.
    async fn dependents(&self, server_id: &str) -> Result<Dependents>;

    async fn insert_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn get_tenant(&self, domain: &str) -> Result<Tenant>;
    async fn update_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn delete_tenant(&self, domain: &str) -> Result<()>;
    /// Tenants ordered by domain; only those whose home is `server_id` when given.
    async fn list_tenants(&self, server_id: Option<&str>) -> Result<Vec<Tenant>>;
    /// At most `limit` tenants whose domain is after `after`, ordered by
    /// domain; only those whose home is `server_id` when given (keyset paging
    /// on the primary key, or on `tenants_server_domain`).
    async fn list_tenants_page(
        &self,
        server_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Tenant>>;
    /// The tenants that may be down: those whose home server is down
    /// (offline, or with a routing problem), and those of a tenant with a
    /// running instance on such a server; ordered by domain. Reads only what
    /// the down servers hold, none when no server is down.
    async fn list_tenants_near_down_servers(&self) -> Result<Vec<Tenant>>;
    /// How many tenants and instance records the fleet holds (SQL `COUNT`s).
    async fn counts(&self) -> Result<Dependents>;

    /// Records a new instance if, atomically, its server exists and is usable, the
    /// reservation fits the server's free capacity, its key is free and the server
    /// holds no other instance of the same tenant and process.
    async fn reserve_instance(&self, instance: &Instance) -> Result<()>;
    async fn get_instance(&self, tenant: &str, instance_id: &str) -> Result<Instance>;
    /// Instances ordered by key; only those on `server_id` when given.
    async fn list_instances(&self, server_id: Option<&str>) -> Result<Vec<Instance>>;
    /// At most `limit` instances whose key (tenant, instance id) is after
    /// `after`, ordered by key; only those on `server_id` when given (keyset
    /// paging on the primary key, or on `instances_server_key`).
    async fn list_instances_page(
        &self,
        server_id: Option<&str>,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<Instance>>;
    async fn set_instance_desired(
        &self,
        tenant: &str,
        instance_id: &str,
        desired: DesiredState,
    ) -> Result<()>;
    async fn set_instance_observed(
        &self,
        tenant: &str,
        instance_id: &str,
        observed: InstanceState,
        at: DateTime<Utc>,
    ) -> Result<()>;
    async fn delete_instance(&self, tenant: &str, instance_id: &str) -> Result<()>;
    /// The instances of one tenant, ordered by key (an index lookup, whatever
    /// the size of the fleet).
    async fn list_instances_of_tenant(&self, tenant: &str) -> Result<Vec<Instance>>;
    /// The instances placed on `server_id` or moving to it, ordered by key.
    async fn list_instances_touching(&self, server_id: &str) -> Result<Vec<Instance>>;
    /// What respawn failover of `server_id` reads: the tenants with failover
    /// `respawn` whose own instance is placed there and not moving, and every
    /// instance of those tenants (on any server).
    async fn respawn_records(&self, server_id: &str) -> Result<(Vec<Tenant>, Vec<Instance>)>;
    /// [`Store::set_instance_observed`] for many instances at once, in one
    /// transaction: `(tenant, instance_id, state)`. An instance gone
    /// meanwhile is skipped. Returns how many were written.
    async fn set_instances_observed(
        &self,
        observed: &[(String, String, InstanceState)],
        at: DateTime<Utc>,
    ) -> Result<u64>;

    /// Starts moving an instance to `target`: atomically, when the target exists,
    /// is usable, has room for the instance's memory (reserved there until the
    /// move ends) and holds no instance of the same tenant and process.
    async fn begin_move(&self, tenant: &str, instance_id: &str, target: &str) -> Result<()>;
    /// Releases the target's reservation of a move that failed.
    async fn abort_move(&self, tenant: &str, instance_id: &str) -> Result<()>;
    /// Completes a move in one transaction: the instance (and the domains that
    /// route to it) now live on the target, and the old copy is recorded as a
    /// pending stop on the old server.
    async fn finish_move(&self, tenant: &str, instance_id: &str) -> Result<()>;
    /// Old copies still to stop, as (server id, tenement name).
    async fn list_pending_stops(&self) -> Result<Vec<(String, String)>>;
    /// Removes a pending stop; returns whether it was there (whoever removes it
    /// owns the stop).
    async fn delete_pending_stop(&self, server_id: &str, name: &str) -> Result<bool>;
    /// Records (again) that `name` is to be stopped on `server_id`.
    async fn add_pending_stop(&self, server_id: &str, name: &str) -> Result<()>;

    /// Tells `changes` whenever the routing version may have moved, for as long
    /// as the receiver lives. A backend without notifications (SQLite: one router
    /// per file, which polls) never sends anything; a backend whose notification
    /// channel broke sends [`Change::Resync`] once it listens again, because
    /// changes may have been missed meanwhile.
    async fn follow_changes(&self, changes: tokio::sync::mpsc::Sender<Change>) -> Result<()> {
        let _ = changes;
        std::future::pending::<()>().await;
        Ok(())
    }

    /// Holds the fleet's leadership for this process for as long as it can:
    /// `leading` is set true while this process holds it. Background decisions
    /// (health transitions, reconcile, respawn failover) are made by the leader
    /// alone. A backend with one router per database (SQLite) leads at once and
    /// for ever; on PostgreSQL an advisory lock on a session of its own elects
    /// one leader among the routers, and returns (with an error) when that
    /// session dies, which also frees the lock for another router.
    async fn lead(&self, leading: tokio::sync::watch::Sender<bool>) -> Result<()> {
        leading.send_replace(true);
        std::future::pending::<()>().await;
        Ok(())
    }

    /// A counter that moves whenever something routing depends on changes
    /// (servers' url, domain, status or routing problem; tenants; instance
    /// placements).
    async fn fleet_version(&self) -> Result<i64>;

    /// Up to `limit` entries of the route change feed after number `after`,
    /// in order.
    async fn route_changes_after(&self, after: i64, limit: i64) -> Result<Vec<RouteChange>>;

    /// Deletes the feed entries more than `keep` behind the newest; says how
    /// many went.
    async fn trim_route_changes(&self, keep: i64) -> Result<u64>;

    /// The route rows of one domain, or of every domain of a tenant.
    async fn route_rows(&self, scope: RouteScope<'_>) -> Result<Vec<RouteRow>>;

    /// Every route row, streamed to `each` as it is read (in no order): the
    /// fleet is never held in memory whole.
    async fn for_each_route_row(
        &self,
        each: &mut (dyn for<'r> FnMut(RouteRowRef<'r>) + Send),
    ) -> Result<()>;

    /// Stores a management API token by the hash of its secret.
    async fn insert_api_token(&self, token: &ApiToken, hash: &str) -> Result<()>;
    /// Every token with its hash.
    async fn list_api_tokens(&self) -> Result<Vec<(ApiToken, String)>>;
    /// A counter that moves whenever a token is created or revoked (one row,
    /// bumped by triggers in the writing transaction).
    async fn api_token_version(&self) -> Result<i64>;
    /// Revokes a token; `NotFound` when there is none with this id.
    async fn delete_api_token(&self, id: &str) -> Result<()>;
}

/// A time as both schemas keep it: Unix milliseconds.
fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Whether `server` takes `instance`: `ServerUnavailable` when it is offline or
/// draining, `InsufficientCapacity` when the reservation does not fit.
fn check_reservation(server: &Server, instance: &Instance) -> Result<()> {
    server.ensure_usable()?;
    if server.capacity_mb - server.used_capacity_mb() < instance.memory_mb {
        return Err(insufficient_capacity(server, instance));
    }
    Ok(())
}

fn insufficient_capacity(server: &Server, instance: &Instance) -> Error {
    Error::InsufficientCapacity {
        requested_mb: instance.memory_mb,
        free_mb: server.free_capacity_mb(),
        capacity_mb: server.capacity_mb,
        server: server.id.clone(),
    }
}

/// Explains a unique violation on inserting `instance`: its key is taken, or its
/// server already holds the tenant's process (one instance per tenant and
/// process on a server).
async fn duplicate_instance(store: &(impl Store + ?Sized), instance: &Instance) -> Error {
    match store
        .get_instance(&instance.tenant, &instance.instance_id)
        .await
    {
        Ok(_) => Error::already_exists(Kind::Instance, instance.key()),
        Err(e) if !e.is_not_found() => e,
        Err(_) => {
            let other = store
                .list_instances_of_tenant(&instance.tenant)
                .await
                .ok()
                .and_then(|all| {
                    all.into_iter().find(|o| {
                        o.server_id == instance.server_id && o.process == instance.process
                    })
                })
                .map(|o| o.key())
                .unwrap_or_else(|| "another instance".to_owned());
            Error::AlreadyExists {
                kind: Kind::Instance,
                key: instance.key(),
                detail: Some(format!(
                    "server '{}' already runs process '{}' for tenant '{}' as instance '{}'; \
                     tenement holds one instance per tenant and process on a server",
                    instance.server_id, instance.process, instance.tenant, other
                )),
            }
        }
    }
}

/// Why `inst` cannot move to `target`, if it cannot: it is being stopped, or
/// it is there already.
pub(crate) fn check_movable(inst: &Instance, target: &str) -> Result<()> {
    if inst.desired != DesiredState::Running {
        return Err(Error::invalid(
            "instance",
            format!("'{}' is being stopped; it cannot move", inst.key()),
        ));
    }
    if inst.server_id == target {
        return Err(Error::invalid(
            "server_id",
            format!("instance '{}' is already on server '{target}'", inst.key()),
        ));
    }
    Ok(())
}

/// Explains why `begin_move` changed nothing.
async fn refused_move(
    store: &(impl Store + ?Sized),
    tenant: &str,
    instance_id: &str,
    target: &str,
) -> Error {
    let inst = match store.get_instance(tenant, instance_id).await {
        Ok(i) => i,
        Err(e) => return e,
    };
    if let Some(to) = &inst.moving_to {
        return Error::invalid(
            "instance",
            format!("'{}' is already moving to server '{to}'", inst.key()),
        );
    }
    if let Err(e) = check_movable(&inst, target) {
        return e;
    }
    let server = match store.get_server(target).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let sibling = store
        .list_instances_of_tenant(&inst.tenant)
        .await
        .ok()
        .and_then(|all| {
            all.into_iter().find(|o| {
                o.process == inst.process
                    && (o.server_id == target || o.moving_to.as_deref() == Some(target))
            })
        });
    if let Some(o) = sibling {
        return Error::AlreadyExists {
            kind: Kind::Instance,
            key: inst.key(),
            detail: Some(format!(
                "server '{target}' already holds process '{}' for tenant '{}' as instance '{}'",
                inst.process,
                inst.tenant,
                o.key()
            )),
        };
    }
    match check_reservation(&server, &inst) {
        Err(e) => e,
        Ok(()) => Error::invalid(
            "instance",
            format!("'{}' could not start moving; retry", inst.key()),
        ),
    }
}

#[cfg(all(test, feature = "sqlite", feature = "postgres"))]
mod tests {
    use super::{postgres, sqlite};

    /// Migration N does the same on both backends, so a database's version says
    /// the same thing whichever backend holds it: a schema change to one needs
    /// its twin in the other.
    #[test]
    fn both_backends_have_the_same_migrations() {
        let list = |m: &sqlx::migrate::Migrator| -> Vec<(i64, String)> {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect()
        };
        assert_eq!(
            list(&sqlite::MIGRATOR),
            list(&postgres::MIGRATOR),
            "migrations/sqlite and migrations/postgres differ"
        );
    }
}

#[cfg(test)]
mod route_row_tests {
    use super::*;

    #[test]
    fn a_joined_route_row_gives_its_fields_with_or_without_an_instance() {
        let placed = ["a.com", "a", "api", "prod", "east", "backup", "west"].join("\u{1f}");
        let row = RouteRowRef::parse(&placed).unwrap();
        assert_eq!(
            (
                row.domain,
                row.tenant,
                row.process,
                row.instance_id,
                row.home_server
            ),
            ("a.com", "a", "api", "prod", "east")
        );
        assert_eq!(row.placed, Some(("backup", "west")));
        assert_eq!(row.to_owned().as_ref(), row);
        let bare = ["a.com", "a", "api", "prod", "east"].join("\u{1f}");
        assert_eq!(RouteRowRef::parse(&bare).unwrap().placed, None);
    }

    #[test]
    fn a_route_row_of_other_fields_is_an_error_that_shows_it() {
        for fields in [
            &["a.com", "a", "api", "prod"][..],
            &["a.com", "a", "api", "prod", "east", "backup"],
            &[
                "a.com", "a", "api", "prod", "east", "backup", "west", "more",
            ],
        ] {
            let e = RouteRowRef::parse(&fields.join("\u{1f}")).unwrap_err();
            assert!(e.to_string().contains("a.com"), "{e}");
        }
    }
}
