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
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

use crate::error::{Error, Kind, Result};
use crate::fleet::certificate::{
    CertificateInfo, CertificateMaterial, CertificateSource, CertificateState, Challenges,
    SecretPem, VerifiedCertificate,
};
use crate::fleet::events::{Event, EventRow};
use crate::fleet::model::{
    ApiToken, DesiredState, Instance, InstanceState, PendingStop, Server, ServerStatus, Tenant,
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
    /// A certificate's name: its chain, key or redirect changed, or it was
    /// added or removed (orders' bookkeeping is not fed).
    Certificate(String),
    /// A domain's ACME challenges (HTTP-01 tokens, TLS-ALPN-01 certificate).
    Challenge(String),
}

impl RouteKey {
    fn from_row(kind: &str, key: String) -> Result<RouteKey> {
        match kind {
            "server" => Ok(RouteKey::Server(key)),
            "domain" => Ok(RouteKey::Domain(key)),
            "tenant" => Ok(RouteKey::Tenant(key)),
            "certificate" => Ok(RouteKey::Certificate(key)),
            "challenge" => Ok(RouteKey::Challenge(key)),
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

/// Whose events [`EventStore::events_after`] and [`EventStore::newest_events`] read:
/// a server's, a tenant's (by name), both, or every one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventFilter<'a> {
    pub server: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

/// Persistent fleet state. Inputs are already validated and normalised by the
/// caller; the store enforces what only the database can (existence, uniqueness,
/// references, capacity under concurrency).
#[async_trait]
pub trait Store: TokenStore + CertificateStore + EventStore + Send + Sync + 'static {
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
    /// Sets or lifts a server's cordon (no new placements); says whether it
    /// changed. `NotFound` for an unknown server.
    async fn set_server_cordoned(&self, id: &str, cordoned: bool) -> Result<bool>;
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
    /// one statement (SQLite: one a few hundred, so that the single writer is
    /// never held for long): records `last_seen = at` on each server still in
    /// the status given with it. Returns how many were written.
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
    /// The domains of the tenants named, as `(tenant, process, domain)`,
    /// ordered by domain: what routes to their instances (on the index of
    /// tenant names).
    async fn domains_of_tenants(&self, names: &[String]) -> Result<Vec<(String, String, String)>>;
    /// The instances placed on `server_id` or moving to it, ordered by key.
    async fn list_instances_touching(&self, server_id: &str) -> Result<Vec<Instance>>;
    /// What respawn failover of `server_id` reads: the tenants with failover
    /// `respawn` whose own instance is placed there and not moving, and every
    /// instance of those tenants (on any server).
    async fn respawn_records(&self, server_id: &str) -> Result<(Vec<Tenant>, Vec<Instance>)>;
    /// [`Store::set_instance_observed`] for many instances at once, in one
    /// statement (SQLite: one a few hundred, as above): `(tenant, instance_id,
    /// state)`. An instance gone meanwhile is skipped. Returns how many were
    /// written.
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
    /// pending stop on the old server, to be carried out once `grace` has
    /// passed (the old copy finishes the requests it holds meanwhile).
    async fn finish_move(
        &self,
        tenant: &str,
        instance_id: &str,
        grace: std::time::Duration,
    ) -> Result<()>;
    /// Old copies still to stop, by server id and tenement name.
    async fn list_pending_stops(&self) -> Result<Vec<PendingStop>>;
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
}

/// The management API's tokens, kept by the hash of their secret (part of
/// every [`Store`]).
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a management API token by the hash of its secret.
    async fn insert_api_token(&self, token: &ApiToken, hash: &str) -> Result<()>;
    /// Every token with its hash.
    async fn list_api_tokens(&self) -> Result<Vec<(ApiToken, String)>>;
    /// A counter that moves whenever a token is created or revoked (one row,
    /// bumped by triggers in the writing transaction).
    async fn api_token_version(&self) -> Result<i64>;
    /// Revokes a token; `NotFound` when there is none with this id.
    async fn delete_api_token(&self, id: &str) -> Result<()>;
    /// In one transaction: revokes the tokens `revoke` names (those already
    /// gone are no error) and records `token`; a name taken by a token that
    /// stays is `AlreadyExists`, and then nothing changed. A reset's
    /// replacement of the admin token: never both tokens at once, never none.
    async fn replace_api_tokens(
        &self,
        token: &ApiToken,
        hash: &str,
        revoke: &[String],
    ) -> Result<()>;
}

/// Certificates, ACME challenges and the ACME account (part of every
/// [`Store`]).
#[async_trait]
pub trait CertificateStore: Send + Sync + 'static {
    /// Stores a certificate as an operator's upload (state `issued`),
    /// replacing any row of its name, an ACME one included (slum orders it no
    /// more).
    async fn put_certificate(&self, cert: &VerifiedCertificate) -> Result<()>;
    /// A certificate without its key, `None` when there is none of that name.
    async fn get_certificate(&self, name: &str) -> Result<Option<CertificateInfo>>;
    /// At most `limit` certificates whose name is after `after`, by name
    /// (keyset paging on the primary key).
    async fn list_certificates_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CertificateInfo>>;
    /// Deletes a certificate; returns whether there was one.
    async fn delete_certificate(&self, name: &str) -> Result<bool>;
    /// How many stored certificates expire before `before` (Unix seconds),
    /// counted on the index of `not_after`.
    async fn count_certificates_expiring(&self, before: i64) -> Result<i64>;
    /// The first `limit` certificates to expire before `before`, soonest
    /// first: `(name, not_after)` in Unix seconds.
    async fn certificates_expiring(&self, before: i64, limit: i64) -> Result<Vec<(String, i64)>>;
    /// A certificate's chain, key and redirect; `None` when there is none of
    /// that name or it has no certificate yet.
    async fn certificate_material(&self, name: &str) -> Result<Option<CertificateMaterial>>;
    /// Every certificate that has one, streamed to `each` as it is read (in
    /// no order).
    async fn for_each_certificate_material(
        &self,
        each: &mut (dyn FnMut(String, CertificateMaterial) + Send),
    ) -> Result<()>;
    /// Adds a pending ACME certificate for a tenant domain, due at `now`,
    /// unless a row of that name exists; returns whether it added one.
    /// `NotFound` (tenant) when the domain is no tenant's.
    async fn want_certificate(&self, domain: &str, now: i64) -> Result<bool>;
    /// At most `limit` ACME certificates whose order is due at `now`, the
    /// longest due first.
    async fn due_certificates(&self, now: i64, limit: i64) -> Result<Vec<String>>;
    /// Claims an ACME certificate's order for `router` until `until`, in one
    /// conditional update: only while its order is due at `now` and no claim
    /// is live. The claim moves `next_try` to `until`, so that a router that
    /// dies mid-order leaves it due again then. Returns whether it got it.
    async fn claim_certificate_order(
        &self,
        name: &str,
        router: &str,
        now: i64,
        until: i64,
    ) -> Result<bool>;
    /// Stores what an ACME order issued (state `issued`, failures reset,
    /// claim released, next try at `next_try`): only into an ACME row of
    /// that name; returns whether there was one.
    async fn certificate_issued(&self, cert: &VerifiedCertificate, next_try: i64) -> Result<bool>;
    /// Records a failed ACME order (state `failing`, the CA's reason, claim
    /// released, next try at `next_try`); a certificate issued before stays.
    /// Returns whether there was such a row.
    async fn certificate_failed(
        &self,
        name: &str,
        reason: &str,
        failures: i64,
        next_try: i64,
    ) -> Result<bool>;
    /// Adds (or replaces) an HTTP-01 challenge's key authorization.
    async fn put_http01(&self, token: &str, domain: &str, key_authorization: &str) -> Result<()>;
    /// Removes an HTTP-01 challenge (none: nothing to do).
    async fn delete_http01(&self, token: &str) -> Result<()>;
    /// Adds (or replaces) a domain's TLS-ALPN-01 challenge certificate.
    async fn put_alpn01(&self, domain: &str, cert_pem: &str, key_pem: &SecretPem) -> Result<()>;
    /// Removes a domain's TLS-ALPN-01 challenge (none: nothing to do).
    async fn delete_alpn01(&self, domain: &str) -> Result<()>;
    /// A domain's challenges, HTTP-01 by token.
    async fn challenges(&self, domain: &str) -> Result<Challenges>;
    /// The domains with a challenge, by domain (a router's start).
    async fn challenge_domains(&self) -> Result<Vec<String>>;
    /// The ACME account: its directory URL and its credentials (JSON).
    async fn acme_account(&self) -> Result<Option<(String, SecretPem)>>;
    /// Stores (or replaces) the ACME account.
    async fn put_acme_account(&self, directory: &str, credentials: &SecretPem) -> Result<()>;
}

/// The fleet's events (part of every [`Store`]).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Records an event; returns its id.
    async fn insert_event(&self, event: &EventRow<'_>) -> Result<i64>;
    /// At most `limit` events of `filter` whose id is after `after`, by id
    /// (a walk of the index of the server's or tenant's events, or of the
    /// key).
    async fn events_after(
        &self,
        filter: EventFilter<'_>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>>;
    /// The newest `limit` events of `filter`, newest first.
    async fn newest_events(&self, filter: EventFilter<'_>, limit: i64) -> Result<Vec<Event>>;
    /// The id of the first event recorded at or after `at` (Unix
    /// milliseconds), on the index of the times; `None` when there is none.
    async fn first_event_since(&self, at: i64) -> Result<Option<i64>>;
    /// Deletes at most `limit` of the events recorded before `before` (Unix
    /// milliseconds), the oldest first; says how many went.
    async fn delete_events_before(&self, before: i64, limit: i64) -> Result<u64>;
    /// Deletes at most `limit` of the events more than `keep` ids behind the
    /// newest, the oldest first; says how many went.
    async fn delete_events_beyond(&self, keep: i64, limit: i64) -> Result<u64>;
}

/// The events' statements, the same on both backends, with PostgreSQL's `$n`
/// placeholders (see [`certificate_sql`]). A `LIMIT` is written into the
/// statement, as for the paged lists, so that SQLite plans an index walk.
mod event_sql {
    pub const COLUMNS: &str = "id, at, kind, server, tenant, instance, cause, router";
    pub const INSERT: &str = "INSERT INTO events (at, kind, server, tenant, instance, cause, \
         router) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
    /// On the index of the times: the first at or after `$1`.
    pub const FIRST_SINCE: &str = "SELECT id FROM events WHERE at >= $1 ORDER BY at, id LIMIT 1";

    /// Events of `filter` (its values bound first, server then tenant),
    /// after an id (bound last) when `after`, by id, newest first when
    /// `newest`.
    pub fn select(filter: super::EventFilter<'_>, after: bool, newest: bool, limit: i64) -> String {
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if filter.server.is_some() {
            conditions.push(format!("server = ${}", next()));
        }
        if filter.tenant.is_some() {
            conditions.push(format!("tenant = ${}", next()));
        }
        if after {
            conditions.push(format!("id > ${}", next()));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let order = if newest { "DESC" } else { "ASC" };
        format!("SELECT {COLUMNS} FROM events {filter} ORDER BY id {order} LIMIT {limit}")
    }

    /// The oldest before a time, on the index of the times.
    pub fn delete_before(limit: i64, postgres: bool) -> String {
        delete_ids(
            format!("SELECT id FROM events WHERE at < $1 ORDER BY at LIMIT {limit}"),
            postgres,
        )
    }

    /// The oldest beyond the newest `$1` ids, on the key.
    pub fn delete_beyond(limit: i64, postgres: bool) -> String {
        delete_ids(
            format!(
                "SELECT id FROM events WHERE id <= (SELECT MAX(id) FROM events) - $1 \
                 ORDER BY id LIMIT {limit}"
            ),
            postgres,
        )
    }

    /// Deletes the events whose ids `ids` selects, each found by its key:
    /// PostgreSQL, given `IN (subquery)`, joins the whole table against the
    /// ids (a scan of every event); given an array, it looks each up.
    fn delete_ids(ids: String, postgres: bool) -> String {
        if postgres {
            format!("DELETE FROM events WHERE id = ANY(ARRAY({ids}))")
        } else {
            format!("DELETE FROM events WHERE id IN ({ids})")
        }
    }
}

/// A row of [`event_sql::COLUMNS`], on either backend.
fn event_from_row<'r, R>(row: &'r R) -> Result<Event>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let kind: String = row.try_get(2)?;
    Ok(Event {
        id: row.try_get(0)?,
        at: from_millis(row.try_get(1)?),
        level: Event::level_of(&kind),
        kind,
        server: row.try_get(3)?,
        tenant: row.try_get(4)?,
        instance: row.try_get(5)?,
        cause: row.try_get(6)?,
        router: row.try_get(7)?,
    })
}

/// The certificates' statements, the same on both backends: written with
/// PostgreSQL's `$n` placeholders, which [`sqlite_placeholders`] turns into
/// SQLite's `?n` (both number them, so a parameter may appear twice).
mod certificate_sql {
    /// An upload replaces the row of its name whatever it was: orders'
    /// bookkeeping starts over.
    pub const PUT: &str = "INSERT INTO certificates (name, source, cert_pem, key_pem, not_before, \
         not_after, state, last_error, failures, next_try, ordering_router, claimed_until, \
         redirect, updated_at) \
         VALUES ($1, 'uploaded', $2, $3, $4, $5, 'issued', NULL, 0, NULL, NULL, NULL, $6, $7) \
         ON CONFLICT (name) DO UPDATE SET source = 'uploaded', cert_pem = excluded.cert_pem, \
         key_pem = excluded.key_pem, not_before = excluded.not_before, \
         not_after = excluded.not_after, state = 'issued', last_error = NULL, failures = 0, \
         next_try = NULL, ordering_router = NULL, claimed_until = NULL, \
         redirect = excluded.redirect, updated_at = excluded.updated_at";
    pub const MATERIAL: &str =
        "SELECT cert_pem, key_pem, redirect FROM certificates WHERE name = $1";
    pub const ALL_MATERIAL: &str = "SELECT name, cert_pem, key_pem, redirect FROM certificates \
         WHERE cert_pem IS NOT NULL AND key_pem IS NOT NULL";
    pub const DELETE: &str = "DELETE FROM certificates WHERE name = $1";
    /// On the partial index of `not_after` (a comparison implies NOT NULL).
    pub const COUNT_EXPIRING: &str = "SELECT COUNT(*) FROM certificates WHERE not_after < $1";
    /// Only a tenant's domain, and only when no row of that name exists.
    pub const WANT: &str = "INSERT INTO certificates (name, source, state, failures, next_try, \
         updated_at) \
         SELECT $1, 'acme', 'pending', 0, $2, $3 \
         WHERE EXISTS (SELECT 1 FROM tenants WHERE domain = $1) \
         ON CONFLICT (name) DO NOTHING";
    pub const IS_TENANT: &str = "SELECT COUNT(*) FROM tenants WHERE domain = $1";
    /// One statement: of two routers claiming at once, the second finds
    /// `next_try` moved past `now` by the first.
    pub const CLAIM: &str = "UPDATE certificates \
         SET ordering_router = $2, claimed_until = $3, next_try = $3 \
         WHERE name = $1 AND source = 'acme' AND next_try <= $4 \
           AND (claimed_until IS NULL OR claimed_until <= $4)";
    pub const ISSUED: &str = "UPDATE certificates SET cert_pem = $2, key_pem = $3, \
         not_before = $4, not_after = $5, state = 'issued', last_error = NULL, failures = 0, \
         next_try = $6, ordering_router = NULL, claimed_until = NULL, updated_at = $7 \
         WHERE name = $1 AND source = 'acme'";
    pub const FAILED: &str = "UPDATE certificates SET state = 'failing', last_error = $2, \
         failures = $3, next_try = $4, ordering_router = NULL, claimed_until = NULL, \
         updated_at = $5 WHERE name = $1 AND source = 'acme'";
    pub const PUT_HTTP01: &str = "INSERT INTO acme_http01 (token, domain, key_authorization, \
         created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (token) DO UPDATE SET domain = excluded.domain, \
         key_authorization = excluded.key_authorization, created_at = excluded.created_at";
    pub const DELETE_HTTP01: &str = "DELETE FROM acme_http01 WHERE token = $1";
    pub const PUT_ALPN01: &str = "INSERT INTO acme_alpn01 (domain, cert_pem, key_pem, created_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (domain) DO UPDATE SET cert_pem = excluded.cert_pem, \
         key_pem = excluded.key_pem, created_at = excluded.created_at";
    pub const DELETE_ALPN01: &str = "DELETE FROM acme_alpn01 WHERE domain = $1";
    pub const HTTP01_OF: &str =
        "SELECT token, key_authorization FROM acme_http01 WHERE domain = $1 ORDER BY token";
    pub const ALPN01_OF: &str = "SELECT cert_pem, key_pem FROM acme_alpn01 WHERE domain = $1";
    pub const CHALLENGE_DOMAINS: &str =
        "SELECT domain FROM acme_http01 UNION SELECT domain FROM acme_alpn01 ORDER BY 1";
    pub const ACCOUNT: &str = "SELECT directory, credentials FROM acme_account WHERE id = 1";
    pub const PUT_ACCOUNT: &str = "INSERT INTO acme_account (id, directory, credentials) \
         VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET directory = excluded.directory, \
         credentials = excluded.credentials";

    /// The statements with a `LIMIT`: written into them, not bound, so that
    /// SQLite plans the walk of the index (see `list_servers_page`).
    pub fn get() -> String {
        format!(
            "SELECT {} FROM certificates WHERE name = $1",
            super::CERTIFICATE_COLUMNS
        )
    }
    pub fn page(after: bool, limit: i64) -> String {
        format!(
            "SELECT {} FROM certificates {} ORDER BY name LIMIT {limit}",
            super::CERTIFICATE_COLUMNS,
            if after { "WHERE name > $1" } else { "" }
        )
    }
    pub fn expiring(limit: i64) -> String {
        format!(
            "SELECT name, not_after FROM certificates WHERE not_after < $1 \
             ORDER BY not_after LIMIT {limit}"
        )
    }
    pub fn due(limit: i64) -> String {
        format!(
            "SELECT name FROM certificates WHERE next_try <= $1 AND source = 'acme' \
             ORDER BY next_try LIMIT {limit}"
        )
    }
}

/// A statement of [`certificate_sql`] for SQLite: `$n` is `?n` there.
#[cfg(feature = "sqlite")]
fn sqlite_placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The columns [`certificate_from_row`] reads, in its order.
const CERTIFICATE_COLUMNS: &str = "name, source, state, not_before, not_after, last_error, \
     failures, next_try, redirect, updated_at";

/// A Unix time in seconds as a time (the epoch when out of range).
fn from_secs(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// A row of [`CERTIFICATE_COLUMNS`], on either backend.
fn certificate_from_row<'r, R>(row: &'r R) -> Result<CertificateInfo>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(CertificateInfo {
        name: row.try_get(0)?,
        source: CertificateSource::from_str(row.try_get(1)?)?,
        state: CertificateState::from_str(row.try_get(2)?)?,
        not_before: row.try_get::<Option<i64>, _>(3)?.map(from_secs),
        not_after: row.try_get::<Option<i64>, _>(4)?.map(from_secs),
        last_error: row.try_get(5)?,
        failures: row.try_get(6)?,
        next_try: row.try_get::<Option<i64>, _>(7)?.map(from_secs),
        redirect: row.try_get(8)?,
        updated_at: from_millis(row.try_get(9)?),
    })
}

/// A chain, key and redirect read together (`None` while the key is).
fn material(
    chain_pem: Option<String>,
    key_pem: Option<String>,
    redirect: Option<bool>,
) -> Option<CertificateMaterial> {
    Some(CertificateMaterial {
        chain_pem: chain_pem?,
        key_pem: SecretPem::new(key_pem?),
        redirect,
    })
}

/// A time as both schemas keep it: Unix milliseconds.
fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// `grace` from now, in Unix milliseconds.
fn millis_after(grace: std::time::Duration) -> i64 {
    millis(Utc::now()).saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX))
}

/// A `pending_stops` row: server_id, name, stop_after.
fn pending_stop(row: (String, String, i64)) -> PendingStop {
    PendingStop {
        server_id: row.0,
        name: row.1,
        stop_after: from_millis(row.2),
    }
}

/// The refusal of a token whose name another token has: names are labels.
fn token_name_taken(token: &ApiToken) -> Error {
    Error::AlreadyExists {
        kind: Kind::Token,
        key: token.name.clone(),
        detail: Some(
            "token names are unique labels: choose another, or revoke that one first \
             (slum token list)"
                .to_owned(),
        ),
    }
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
