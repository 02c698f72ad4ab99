//! slum: the neighbourhood over many tenement buildings.
//!
//! [tenement](https://crates.io/crates/tenement-cli) runs one process per tenant on
//! one server. slum keeps a fleet database of many such servers, the customer
//! domains routed to them and the instances placed on them, and talks to each
//! server's tenement HTTP API to make what runs equal to what should run.
//!
//! # A map of the crate
//!
//! Three parts, each a folder, whose imports point one way: the orchestrator
//! uses the fleet database, the router uses the fleet database, and neither
//! the database nor the router knows the orchestrator; `slum serve` wires them
//! together. (`tests/layout.rs` checks the arrows.)
//!
//! - `fleet/`, the fleet database: the records (`model.rs`: [`Server`],
//!   [`Tenant`], [`Instance`] and their states), the input rules
//!   (`validation.rs`; `tenant_name.rs`: when a default tenant name may join
//!   an existing tenant), the one seam to the database ([`store`]: all SQL lives
//!   there, in `sqlite/`, the embedded default, and `postgres/`, the
//!   database several routers share, each with its tokens, certificates and
//!   events in files of their own), [`FleetDb`] (the records' calls and
//!   [`FleetOptions`]), the management API's tokens (`api_tokens.rs`) and
//!   the fleet's [`events`] (`events.rs`: what happened, when, why, by which
//!   router).
//! - `orchestrate/`, the orchestrator: [`SlumDb`] (`slum_db.rs`), the API of
//!   the seed page, which is a [`FleetDb`] plus the [`tenement`] client of
//!   each server; spawn, stop, live listings and reconcile
//!   (`orchestration.rs`, with the pure diff in `reconcile.rs`); where
//!   instances go (`placement.rs`, pure, and `auto_placement.rs`); moving
//!   instances without losing a request (`relocation.rs`, `tenant_move.rs`,
//!   `drain.rs`, `failover.rs`); an instance's output, read from its server
//!   and followed across moves (`logs.rs`); adding and changing servers only once their
//!   tenement is found routing by their domain (`routing_check.rs`); server
//!   health (`health.rs`, a pure state machine and the monitor that applies
//!   it); `slum serve`'s background work (`supervisor.rs`); and the
//!   leader's certificate orders from an ACME CA (`acme.rs`). What it asks
//!   of routing is one small trait (`routing.rs`).
//! - `router/`, the reverse proxy in front of the fleet: [`route_table`], the
//!   pure decision of where a request goes, kept in step with the fleet
//!   database by `route_sync.rs`. `mod.rs` accepts connections and hands them
//!   to the router's threads (`threads.rs`; `shutdown.rs` tells them to
//!   finish); `proxy.rs` takes a request from its Host to the server's answer,
//!   with `headers.rs` (what is rewritten, what is not passed on),
//!   `answers.rs` (the router's own answers when a server fails), `wake.rs`
//!   (a tenant's first request starts it) and each thread's keep-alive pool
//!   (`upstream_pool.rs`); `limits.rs` caps what clients may hold
//!   (connections, requests in flight); `tls/` is HTTPS (the fleet's
//!   certificates in memory, chosen by SNI, and the handshake), `http2.rs`
//!   HTTP/2 to clients, `plain.rs` what the plain listener answers itself
//!   (ACME HTTP-01 challenges, redirects to HTTPS). What it asks of the
//!   control plane is one small trait (`control.rs`), so that its tests use a
//!   fake.
//! - The ways in: [`serve`] (`slum serve`: `config.rs` resolves its settings,
//!   `descriptors.rs` raises the descriptor limit and derives the router's
//!   caps from it, `mod.rs` wires the parts together, and `hooks.rs` answers
//!   each part's trait over the others), [`api`] (the management API over
//!   HTTP) and [`cli`] (the `slum` command line).
//! - Shared leaves: [`Error`] (`error.rs`), the one error type callers match
//!   on; `metrics.rs` (Prometheus); `traffic/` (the last minute's requests,
//!   errors and latency per tenant and per server, in fixed memory: the
//!   busiest tenants by Space-Saving, per router thread); [`ServerRoots`]
//!   (`tls.rs`, the certificates trusted for `https://` servers);
//!   `server_conn.rs` (the connections to servers the router's pools and the
//!   health checks open); and two helpers below (`lock`, `AbortOnDrop`).
//! - The router's HTTP/1.1 core is a crate of its own, [`slum_http1`]
//!   (`crates/http1`: the server side, the client side, the shared codec and
//!   chunked framing, the coarse timer), which imports nothing of slum, is
//!   fuzzed and is checked against hyper's framing (`docs/http1-core.md`).
//! - `local_fleet`: real tenement servers in network namespaces, for tests and
//!   the demo fleet.
//!
//! Cargo features: `sqlite` and `postgres` (the backends), `serve` (the
//! router, the management API, health checks, failover and drains), `cli`
//! (the `slum` binary) and `local-fleet` (the test fleet and
//! `slum-demo-app`). The default is the whole program but `local-fleet`; the
//! library alone is `default-features = false, features = ["sqlite"]`.
//!
//! The parts' modules are private: what the library offers is re-exported
//! here, and the ways in (`serve`, `api`, `cli`) and `local_fleet` are public
//! modules.
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

#[cfg(feature = "serve")]
/// Locks a mutex, also one a panicking thread left poisoned: every value
/// guarded in this crate stays consistent between statements.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(feature = "serve")]
/// Aborts a background task when its owner goes away.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

#[cfg(feature = "serve")]
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("slum needs a fleet database backend: enable the `sqlite` or `postgres` feature");

mod error;
mod fleet;
#[cfg(feature = "serve")]
mod metrics;
mod orchestrate;
#[cfg(feature = "serve")]
mod router;
#[cfg(feature = "serve")]
mod server_conn;
mod tls;
#[cfg(feature = "serve")]
mod traffic;

#[cfg(feature = "serve")]
pub mod api;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "local-fleet")]
pub mod local_fleet;
#[cfg(feature = "serve")]
pub mod serve;

// Throw-away fleet databases on either backend, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/common/test_db.rs"]
mod test_db;

pub use error::{Error, Kind, Result};
pub use fleet::certificate::{
    CertificateInfo, CertificateMaterial, CertificateSource, CertificateState, Challenges,
    SecretPem, UploadedCertificate, VerifiedCertificate,
};
/// The certificates' checks (`verify`, `covers`, `certificate_name`), for
/// whoever serves or orders them.
pub mod certificate {
    pub use crate::fleet::certificate::{certificate_name, covers, verify, verify_pair};
}
pub use fleet::api_tokens::{MintedToken, Revoked};
pub use fleet::db::{FleetDb, FleetOptions};
/// The fleet's events: what happened, when, why and by which router
/// ([`FleetDb::record_event`], [`FleetDb::events`]).
pub mod events {
    pub use crate::fleet::events::{
        host_name, Event, EventKind, EventLevel, EventQuery, EventRetention, EventRow, NewEvent,
        DEFAULT_EVENT_LIMIT, TRIM_BATCH,
    };
}
pub use fleet::model::{
    ApiToken, DesiredState, FailoverPolicy, Instance, InstanceState, InstanceStatus, Server,
    ServerStats, ServerStatus, Tenant,
};
/// An instance's output, read from its server's tenement and followed across
/// moves ([`SlumDb::instance_logs`], [`SlumDb::follow_logs`]).
pub mod logs {
    pub use crate::orchestrate::logs::{
        LogEvent, LogFilter, LogLine, LogStream, DEFAULT_LOG_LINES, MAX_LOG_LINES,
    };
}
pub use fleet::paging::{Page, PageRequest, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
pub use fleet::store;
#[cfg(feature = "serve")]
pub use orchestrate::drain::DrainProgress;
pub use orchestrate::orchestration::{SpawnOptions, StopOutcome};
pub use orchestrate::placement::PlacementRequest;
pub use orchestrate::reconcile::ReconcileReport;
pub use orchestrate::relocation::{MoveOutcome, PreparedMove};
pub use orchestrate::slum_db::SlumDb;
pub use orchestrate::tenement;
#[cfg(feature = "serve")]
pub use router::route_table;
pub use tls::ServerRoots;
