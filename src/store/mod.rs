//! The seam between slum and its fleet database.
//!
//! All SQL lives behind [`Store`]; [`crate::SlumDb`] and everything above it only
//! see this trait, so a second backend (PostgreSQL, for fleets with several routers)
//! plugs in without changing callers. Each backend enforces integrity in the
//! database itself (foreign keys, unique keys, atomic capacity checks) and maps its
//! constraint failures to the same [`crate::Error`] kinds.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::model::{ApiToken, DesiredState, Instance, InstanceState, Server, ServerStatus, Tenant};

pub mod sqlite;

/// How many records point at a server.
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
    /// Replaces a server's settings (url, region, capacity, token, domain, status).
    async fn update_server(&self, server: &Server) -> Result<()>;
    /// Records a health observation.
    async fn set_server_health(
        &self,
        id: &str,
        status: ServerStatus,
        last_seen: Option<DateTime<Utc>>,
    ) -> Result<()>;
    /// Deletes a server; `HasDependents` while tenants or instances point at it.
    async fn delete_server(&self, id: &str) -> Result<()>;
    /// All servers, each with its used capacity, in one query, ordered by id.
    async fn list_servers(&self) -> Result<Vec<Server>>;
    /// Tenants and instances that point at a server.
    async fn dependents(&self, server_id: &str) -> Result<Dependents>;

    async fn insert_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn get_tenant(&self, domain: &str) -> Result<Tenant>;
    async fn update_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn delete_tenant(&self, domain: &str) -> Result<()>;
    /// Tenants ordered by domain; only those whose home is `server_id` when given.
    async fn list_tenants(&self, server_id: Option<&str>) -> Result<Vec<Tenant>>;

    /// Records a new instance if, atomically, its server exists and is usable, the
    /// reservation fits the server's free capacity, its key is free and the server
    /// holds no other instance of the same tenant and process.
    async fn reserve_instance(&self, instance: &Instance) -> Result<()>;
    async fn get_instance(&self, tenant: &str, instance_id: &str) -> Result<Instance>;
    /// Instances ordered by key; only those on `server_id` when given.
    async fn list_instances(&self, server_id: Option<&str>) -> Result<Vec<Instance>>;
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

    /// A counter that moves whenever something routing depends on changes
    /// (servers' url, domain or status; tenants; instance placements).
    async fn fleet_version(&self) -> Result<i64>;

    /// Stores a management API token by the hash of its secret.
    async fn insert_api_token(&self, token: &ApiToken, hash: &str) -> Result<()>;
    /// Every token with its hash.
    async fn list_api_tokens(&self) -> Result<Vec<(ApiToken, String)>>;
    /// Revokes a token; `NotFound` when there is none with this id.
    async fn delete_api_token(&self, id: &str) -> Result<()>;
}
