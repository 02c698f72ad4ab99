//! The fleet database: what slum knows of its servers, tenants and instances.
//! Nothing here reaches a tenement server, nor imports the other parts of slum.
//!
//! - [`model`]: the records (`Server`, `Tenant`, `Instance`) and their states.
//! - [`validation`]: input rules; every check runs before the database is touched.
//! - [`tenant_name`]: when a name derived from a domain may join an existing
//!   tenant (same registrable domain) and when it must be given.
//! - [`store`]: the one seam to the database. All SQL lives there
//!   ([`store::sqlite`] is the embedded default, [`store::postgres`] the database
//!   several routers share); callers never see it.
//! - [`db`]: [`FleetDb`](db::FleetDb), the records' calls (servers, tenants,
//!   instances) and the fleet's settings; [`SlumDb`](crate::SlumDb) adds the
//!   calls that reach tenement servers.
//! - [`api_tokens`]: the management API's tokens, stored as hashes.
//! - [`certificate`]: the fleet's TLS certificates (what is stored of each,
//!   what a router serves, the checks an uploaded one passes) and the ACME
//!   challenges; [`certificates`] their calls on [`FleetDb`](db::FleetDb).
//! - [`events`]: the fleet's events (what happened, when, why, by which
//!   router), recorded by whoever makes a change, kept for a bounded time.
//! - [`paging`]: paged lists in key order (keyset paging), for fleets too
//!   large to list whole.

pub mod api_tokens;
pub mod certificate;
pub mod certificates;
pub mod db;
pub mod events;
pub mod model;
pub mod paging;
pub mod store;
pub mod tenant_name;
pub mod validation;
