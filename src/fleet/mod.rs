//! The fleet database: what slum knows of its servers, tenants and instances.
//!
//! - [`model`]: the records (`Server`, `Tenant`, `Instance`) and their states.
//! - [`validation`]: input rules; every check runs before the database is touched.
//! - [`store`]: the one seam to the database. All SQL lives there
//!   ([`store::sqlite`] is the embedded default, [`store::postgres`] the database
//!   several routers share); callers never see it.
//! - [`db`]: [`SlumDb`](db::SlumDb)'s records: servers, tenants, instances.
//! - [`api_tokens`]: the management API's tokens, stored as hashes.

pub mod api_tokens;
pub mod db;
pub mod model;
pub mod store;
pub mod validation;
