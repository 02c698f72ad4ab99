//! The fleet's records: servers (tenement buildings), tenants (customer domains) and
//! instances (one copy of a tenant's process on one server).
//!
//! Field names and types follow the seed page; everything is `Default` so that
//! `Server { id, url, ..Default::default() }` reads as it does there.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A tenement server of the fleet.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Server {
    /// Unique id, a DNS label (e.g. "east-1").
    pub id: String,
    /// Base URL of the server's tenement HTTP API and proxy (http or https).
    pub url: String,
    /// Region (e.g. "us-east").
    pub region: Option<String>,
    /// Memory the server offers to instances, in MB.
    pub capacity_mb: i64,
    /// Admin API token of the tenement server. Never printed by `Debug`, never
    /// serialized, never part of an error.
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// The `--domain` the tenement server routes by; when absent, the host of `url`.
    pub domain: Option<String>,
    /// Health as last decided by slum (or `Draining`, set by an operator).
    pub status: ServerStatus,
    /// When the server last answered a health check.
    pub last_seen: Option<DateTime<Utc>>,
    /// Why the router sends this server nothing whatever its status: a
    /// health check found its tenement routing by another domain than
    /// [`routing_domain`], so that tenants' Hosts would reach its own
    /// dashboard and API. `None` once a check passes, or when its url or
    /// domain changes. Set by slum's health checks; ignored on writes.
    ///
    /// [`routing_domain`]: Server::routing_domain
    pub routing_problem: Option<String>,
    /// When the server was added (set by the database).
    pub created_at: DateTime<Utc>,
    /// Memory reserved by the instances placed on this server, in MB. Filled in by
    /// `list_servers` and `get_server`; ignored on writes.
    pub used_capacity_mb: i64,
    /// Cordoned by an operator: no new placements (spawns, moves, automatic
    /// placement, failover), while its instances keep running and routed.
    /// Apart from `status`: health checks never set or lift it (see
    /// [`FleetDb::set_cordoned`](crate::FleetDb::set_cordoned)).
    pub cordoned: bool,
}

impl Server {
    /// Memory reserved by the instances placed on this server, in MB.
    pub fn used_capacity_mb(&self) -> i64 {
        self.used_capacity_mb
    }

    /// Memory still free for new instances, in MB (never negative).
    pub fn free_capacity_mb(&self) -> i64 {
        (self.capacity_mb - self.used_capacity_mb).max(0)
    }

    /// The domain tenement routes by on this server: `domain`, or the host of `url`.
    pub fn routing_domain(&self) -> String {
        match &self.domain {
            Some(d) if !d.is_empty() => d.clone(),
            _ => url::Url::parse(&self.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
        }
    }

    /// Whether new instances may be placed here (neither offline, draining
    /// nor cordoned).
    pub fn is_usable(&self) -> bool {
        self.status.is_usable() && !self.cordoned
    }

    /// The server's state as people read it: its status, and `cordoned`
    /// after it when it is (`online,cordoned`, as kubectl shows
    /// `Ready,SchedulingDisabled`).
    pub fn state_text(&self) -> String {
        state_text(self.status, self.cordoned)
    }

    /// [`is_usable`](Server::is_usable), as the error that names the server
    /// and its state when it is not.
    pub fn ensure_usable(&self) -> crate::Result<()> {
        if self.is_usable() {
            Ok(())
        } else {
            Err(Error::ServerUnavailable {
                server: self.id.clone(),
                status: if self.status.is_usable() {
                    "cordoned".to_owned()
                } else {
                    self.status.to_string()
                },
            })
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("region", &self.region)
            .field("capacity_mb", &self.capacity_mb)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("domain", &self.domain)
            .field("status", &self.status)
            .field("last_seen", &self.last_seen)
            .field("routing_problem", &self.routing_problem)
            .field("created_at", &self.created_at)
            .field("used_capacity_mb", &self.used_capacity_mb)
            .field("cordoned", &self.cordoned)
            .finish()
    }
}

/// A server's status with `,cordoned` after it when it is cordoned.
pub fn state_text(status: ServerStatus, cordoned: bool) -> String {
    if cordoned {
        format!("{status},cordoned")
    } else {
        status.to_string()
    }
}

/// Health state of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerStatus {
    /// Not yet checked.
    #[default]
    Unknown,
    Online,
    Offline,
    /// Takes no new placements; its tenants are being moved away.
    Draining,
}

impl ServerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Unknown => "unknown",
            ServerStatus::Online => "online",
            ServerStatus::Offline => "offline",
            ServerStatus::Draining => "draining",
        }
    }

    /// Whether new instances may be placed on a server in this state.
    pub fn is_usable(self) -> bool {
        !matches!(self, ServerStatus::Offline | ServerStatus::Draining)
    }
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServerStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "unknown" => Ok(ServerStatus::Unknown),
            "online" => Ok(ServerStatus::Online),
            "offline" => Ok(ServerStatus::Offline),
            "draining" => Ok(ServerStatus::Draining),
            other => Err(Error::invalid(
                "status",
                format!("'{other}' is not one of unknown, online, offline, draining"),
            )),
        }
    }
}

/// A customer domain routed to a tenant's instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tenant {
    /// Customer domain, the unique key (stored lower-case, no trailing dot).
    pub domain: String,
    /// The tenant. When empty, the first label of `domain`
    /// (`customer-1.example.com` is tenant `customer-1`). One tenant may have
    /// several domains.
    pub name: String,
    /// Home server id.
    pub server_id: String,
    /// Process name (e.g. "api").
    pub process: String,
    /// Instance id (e.g. "prod").
    pub instance_id: String,
    /// What happens when the instance's server goes offline and the tenant has
    /// no backup instance.
    pub failover: FailoverPolicy,
    /// When the tenant was added (set by the database).
    pub created_at: DateTime<Utc>,
}

/// A tenant's answer to the loss of its server when it has no backup instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverPolicy {
    /// Wait for the server to return (requests get 503 meanwhile).
    #[default]
    None,
    /// Spawn the instance on another server and move the route there once it is
    /// healthy.
    Respawn,
}

impl FailoverPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverPolicy::None => "none",
            FailoverPolicy::Respawn => "respawn",
        }
    }
}

impl FromStr for FailoverPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "none" => Ok(FailoverPolicy::None),
            "respawn" => Ok(FailoverPolicy::Respawn),
            other => Err(Error::invalid(
                "tenant.failover",
                format!("'{other}' is not none or respawn"),
            )),
        }
    }
}

impl Tenant {
    /// Key of the instance this domain routes to: `"{name}:{instance_id}"`.
    pub fn instance_key(&self) -> String {
        format!("{}:{}", self.name, self.instance_id)
    }
}

/// An old copy a move left on a server, still to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStop {
    pub server_id: String,
    /// Its tenement name (`{process}:{tenant}`).
    pub name: String,
    /// Not stopped before this: for the move's grace the old copy finishes
    /// the requests it holds, and whoever moved it stops it afterwards.
    pub stop_after: DateTime<Utc>,
}

/// One copy of a tenant's process on one server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    /// Tenant name.
    pub tenant: String,
    /// Instance id (e.g. "prod", "backup").
    pub instance_id: String,
    /// Process name.
    pub process: String,
    /// Server the instance is placed on (and routed to).
    pub server_id: String,
    /// Server the instance is moving to, while a move is prepared there; its
    /// memory is reserved on both servers until the move completes.
    pub moving_to: Option<String>,
    /// Memory reserved for the instance on its server, in MB.
    pub memory_mb: i64,
    /// What slum wants.
    pub desired: DesiredState,
    /// What slum last saw.
    pub observed: InstanceState,
    /// When `observed` was seen.
    pub observed_at: Option<DateTime<Utc>>,
    /// When the instance was first recorded.
    pub created_at: DateTime<Utc>,
}

impl Instance {
    /// The slum key, `"{tenant}:{instance_id}"`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.tenant, self.instance_id)
    }

    /// The tenement instance name on its server: `"{process}:{tenant}"`.
    pub fn tenement_name(&self) -> String {
        format!("{}:{}", self.process, self.tenant)
    }
}

/// What slum wants an instance to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Running,
    /// A stop was asked for but its server could not be reached; reconcile
    /// completes it.
    Stopped,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }
}

impl FromStr for DesiredState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "running" => Ok(DesiredState::Running),
            "stopped" => Ok(DesiredState::Stopped),
            other => Err(Error::invalid(
                "desired",
                format!("'{other}' is not running or stopped"),
            )),
        }
    }
}

/// What slum observed of an instance on its server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// The server could not be asked.
    #[default]
    Unknown,
    /// Recorded, spawn in progress.
    Starting,
    Running,
    /// Running but failing its health check.
    Unhealthy,
    /// The server answered and does not have it. tenement 0.2.1 also drops an
    /// instance it stopped for idleness from its list, so an idle instance (which
    /// the next request wakes) shows as missing too.
    Missing,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Unknown => "unknown",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Unhealthy => "unhealthy",
            InstanceState::Missing => "missing",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "unknown" => InstanceState::Unknown,
            "starting" => InstanceState::Starting,
            "running" => InstanceState::Running,
            "unhealthy" => InstanceState::Unhealthy,
            "missing" => InstanceState::Missing,
            other => {
                return Err(Error::invalid(
                    "observed",
                    format!("'{other}' is not an instance state"),
                ))
            }
        })
    }
}

/// Counts and capacity of one server, with what it reported live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    pub server_id: String,
    pub status: ServerStatus,
    pub capacity_mb: i64,
    pub used_mb: i64,
    pub free_mb: i64,
    /// Domains routed to this server as their home.
    pub tenants: i64,
    /// Instances slum placed on this server.
    pub instances: i64,
    /// Whether the server answered just now.
    pub reachable: bool,
    /// Instances the server reports running (None when unreachable).
    pub running: Option<i64>,
    /// Why the server could not be asked, when it could not.
    pub error: Option<String>,
    /// When the server last answered a health check.
    #[serde(default)]
    pub last_seen: Option<DateTime<Utc>>,
    /// Why the router sends the server nothing (see
    /// [`Server::routing_problem`]).
    #[serde(default)]
    pub routing_problem: Option<String>,
    /// See [`Server::cordoned`].
    #[serde(default)]
    pub cordoned: bool,
}

/// The live status of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub instance: Instance,
    pub state: InstanceState,
    /// Health as tenement reports it ("healthy", "unhealthy", ...), when known.
    pub health: Option<String>,
    pub uptime_secs: Option<u64>,
    pub restarts: Option<u64>,
    /// Why the state is unknown, when it is.
    pub error: Option<String>,
    /// The customer domains of its tenant's process, by domain: those routed
    /// to it, and those it backs up. Empty: no domain reaches it.
    #[serde(default)]
    pub domains: Vec<String>,
}

/// A management API token. The secret itself is shown once, at creation, and
/// only its hash is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public id of the token (to list and revoke it).
    pub id: String,
    /// What the token is for.
    pub name: String,
    pub created_at: DateTime<Utc>,
}
