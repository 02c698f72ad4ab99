//! slum: the neighbourhood over many tenement buildings.
//!
//! [tenement](https://crates.io/crates/tenement-cli) runs one process per tenant on
//! one server. slum keeps a fleet database of many such servers, the customer
//! domains routed to them and the instances placed on them, and talks to each
//! server's tenement HTTP API to make what runs equal to what should run.
//!
//! # A map of the crate
//!
//! - [`model`]: the records (`Server`, `Tenant`, `Instance`) and their states.
//! - [`validation`]: input rules; every check runs before the database is touched.
//! - [`store`]: the one seam to the fleet database. All SQL lives there
//!   ([`store::sqlite`] is the embedded default, [`store::postgres`] the database
//!   several routers share); callers never see it.
//! - [`placement`]: where new instances go, as pure functions over a snapshot;
//!   [`auto_placement`] applies them without ever overbooking a server.
//! - [`tenement`]: the typed HTTP client of one tenement server.
//! - [`reconcile`]: the pure diff between the instances slum wants and the ones
//!   servers report, and the actions that converge them.
//! - [`route_table`]: the router's in-memory view of the fleet and the pure
//!   decision of where a request goes; [`router`] moves the bytes, on threads
//!   of its own, over [`upstream_pool`]'s connections, speaking HTTP/1.1
//!   through [`slum_http1`], the hand-written core in `crates/http1`.
//! - [`health`]: server health from active checks and the router's failed
//!   connections, as a pure state machine plus the monitor that applies it.
//! - [`relocation`]: moving an instance between servers without losing a
//!   request (prepare on the target, switch the route, stop the old copy); the
//!   building block of [`failover`] (respawn), drain and tenant moves.
//! - [`supervisor`]: `slum serve`'s background work (health checks, reconcile,
//!   failover).
//! - [`db`]: [`SlumDb`], the API of the seed page, which ties the pieces together;
//!   [`orchestration`] adds its calls that reach tenement servers (spawn, stop,
//!   live listings, reconcile).
//! - [`error`]: [`Error`], the one error type callers match on.
//! - [`cli`]: the `slum` command line: `slum serve`, and the client commands that
//!   talk to the management API (tables for people, `--json` for scripts).
//! - [`local_fleet`]: real tenement servers in network namespaces, for tests and
//!   the demo fleet.
//!
//! ```no_run
//! use slum::{Server, SlumDb, Tenant};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let db = SlumDb::init("slum.db").await?;
//! db.add_server(&Server {
//!     id: "east".into(),
//!     url: "http://east.example.com".into(),
//!     region: Some("us-east".into()),
//!     capacity_mb: 1024,
//!     ..Default::default()
//! })
//! .await?;
//! db.add_tenant(&Tenant {
//!     domain: "customer-1.example.com".into(),
//!     server_id: "east".into(),
//!     process: "api".into(),
//!     instance_id: "prod".into(),
//!     ..Default::default()
//! })
//! .await?;
//! let tenant = db.get_tenant_by_domain("customer-1.example.com").await?;
//! assert_eq!(tenant.server_id, "east");
//! # Ok(())
//! # }
//! ```

/// Locks a mutex, also one a panicking thread left poisoned: every value
/// guarded in this crate stays consistent between statements.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub mod api;
pub mod api_tokens;
pub mod auto_placement;
pub mod cli;
pub mod db;
pub mod drain;
pub mod error;
pub mod failover;
pub mod health;
pub mod local_fleet;
pub mod metrics;
pub mod model;
pub mod orchestration;
pub mod placement;
pub mod reconcile;
pub mod relocation;
pub mod route_sync;
pub mod route_table;
pub mod router;
pub mod serve;
pub mod store;
pub mod supervisor;
pub mod tenant_move;
pub mod tenement;
pub mod tls;
pub mod upstream_pool;
pub mod validation;

// Throw-away fleet databases on either backend, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/common/test_db.rs"]
mod test_db;

pub use db::{FleetOptions, SlumDb};
pub use error::{Error, Kind, Result};
pub use model::{
    ApiToken, DesiredState, FailoverPolicy, Instance, InstanceState, InstanceStatus, Server,
    ServerStats, ServerStatus, Tenant,
};
pub use orchestration::SpawnOptions;
pub use placement::PlacementRequest;
pub use reconcile::ReconcileReport;
