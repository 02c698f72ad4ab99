//! The orchestrator: making what runs on the fleet's tenement servers equal to
//! what the fleet database says should run. It uses the fleet database and
//! the shared leaves, never the router nor `slum serve`.
//!
//! - [`slum_db`]: [`SlumDb`](slum_db::SlumDb), the library's front door: the
//!   fleet database plus [`tenement`], the typed HTTP client of each server.
//! - [`orchestration`]: spawn, stop and live listings through it, and
//!   reconcile, whose deciding part is [`reconcile`]: the pure diff between the
//!   instances slum wants and the ones servers report.
//! - [`logs`]: an instance's output, read (and followed, across moves) from
//!   its server's tenement.
//! - [`placement`]: where new instances go, as pure functions over a snapshot;
//!   [`auto_placement`] applies them without ever overbooking a server.
//! - [`relocation`]: moving an instance between servers without losing a
//!   request; the building block of [`tenant_move`], [`drain`] and [`failover`].
//! - [`routing_check`]: adding and changing servers, after checking that
//!   their tenement routes the Hosts slum sends them to instances, not to its
//!   own dashboard and API.
//! - [`health`]: server health from active checks and the router's failed
//!   connections, as a pure state machine plus the monitor that applies it;
//!   its checks' requests go through [`health_client`], one light
//!   connection a server.
//! - [`supervisor`]: `slum serve`'s background work (leadership, health
//!   checks, reconcile, failover).
//! - [`acme`]: the leader's certificate orders for tenant domains (RFC 8555),
//!   challenges answered by every router through the fleet database.
//! - [`routing`]: what the background work asks of routing, a trait that
//!   `slum serve` implements over the router's table.

// `slum serve`'s background work (health checks, failover, drains, ACME
// orders and the supervisor that runs them), which only `slum serve` wires:
// built with it.
#[cfg(feature = "serve")]
pub mod acme;
pub mod auto_placement;
#[cfg(feature = "serve")]
pub mod drain;
#[cfg(feature = "serve")]
pub mod failover;
#[cfg(feature = "serve")]
pub mod health;
#[cfg(feature = "serve")]
pub mod health_client;
pub mod logs;
pub mod orchestration;
pub mod placement;
pub mod reconcile;
pub mod relocation;
#[cfg(feature = "serve")]
pub mod routing;
pub mod routing_check;
pub mod slum_db;
#[cfg(feature = "serve")]
pub mod supervisor;
pub mod tenant_move;
pub mod tenement;
