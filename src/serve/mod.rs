//! `slum serve`: the fleet's front door (the router) and control plane (the
//! management API), wired together over one [`SlumDb`].
//!
//! `config.rs` resolves the settings; this module opens the database, loads
//! the route table, binds both listeners and runs the router, the API and the
//! background work until shutdown.

mod config;
mod descriptors;
mod hooks;
pub(crate) mod token_file;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{
    default_database, default_token_file, Caps, DatabaseLocation, ServeArgs, ServeConfig,
    DEFAULT_API,
};
// The handles AppState wires together.
pub use crate::metrics::Metrics;
pub use crate::orchestrate::drain::Drains;
pub use crate::orchestrate::health::{HealthMonitor, HealthPolicy};
pub use crate::router::route_sync::Routes;

use crate::orchestrate::acme::Acme;
use crate::orchestrate::routing::Routing;
use crate::orchestrate::slum_db::SlumDb;
use crate::orchestrate::supervisor;
use crate::router;
use crate::router::tls::Certificates;
use hooks::TableRouting;

/// What `slum serve` shares between the router, the API and its background
/// work: the handles it wires together, each part taking those it uses.
#[derive(Clone)]
pub struct AppState {
    pub db: SlumDb,
    pub routes: Arc<Routes>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<HealthMonitor>,
    pub drains: Arc<Drains>,
    /// True while this process leads the fleet's background work.
    pub leading: Arc<tokio::sync::watch::Sender<bool>>,
    /// The fleet's certificates and ACME challenges, as the router serves
    /// them (kept current with the route table).
    pub certificates: Arc<Certificates>,
    /// Called when a client asks over HTTPS for a tenant domain that has no
    /// certificate (once per domain for a while; from a TLS handshake on a
    /// router thread, so it must not wait). Nothing by default; the ACME
    /// work sets it to order one.
    pub certificate_wanted: CertificateWanted,
    /// The dashboard's sessions (see [`crate::api::dashboard`]).
    pub sessions: Arc<crate::api::dashboard::Sessions>,
    /// The route table as the orchestrator sees it.
    routing: Arc<dyn Routing>,
}

/// The hook of [`AppState::certificate_wanted`]: given the domain.
pub type CertificateWanted = Arc<dyn Fn(&str) + Send + Sync>;

impl AppState {
    /// State over `db`, with its route table loaded.
    pub async fn new(db: SlumDb, health: HealthPolicy) -> crate::Result<AppState> {
        let metrics = Arc::new(Metrics::new());
        let routes = Arc::new(Routes::new(Arc::clone(&metrics)));
        routes.reload(&db).await?;
        let routing: Arc<dyn Routing> = Arc::new(TableRouting {
            routes: Arc::clone(&routes),
            db: db.fleet().clone(),
        });
        let leading = Arc::new(tokio::sync::watch::Sender::new(false));
        let health = HealthMonitor::new(
            health,
            db.clone(),
            Arc::clone(&routing),
            Arc::clone(&metrics),
            leading.subscribe(),
        );
        Ok(AppState {
            certificates: routes.certificates(),
            certificate_wanted: Arc::new(|domain| {
                tracing::debug!(domain, "a certificate is wanted (no ACME configured)");
            }),
            drains: Arc::new(Drains::new(db.clone(), Arc::clone(&routing))),
            sessions: Arc::default(),
            db,
            routes,
            metrics,
            health: Arc::new(health),
            leading,
            routing,
        })
    }

    /// Whether this process decides the fleet's background work now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Applies this process's own change to the route table at once.
    pub async fn fleet_changed(&self) {
        self.routing.fleet_changed().await
    }
}

/// A `slum serve` whose listeners are bound and whose route table is loaded,
/// ready to [`run`](Serving::run).
pub struct Serving {
    config: ServeConfig,
    /// The limit on open descriptors, once raised.
    descriptors: u64,
    state: AppState,
    public: TcpListener,
    /// The HTTPS listener, if one is set.
    tls: Option<TcpListener>,
    private: TcpListener,
}

impl Serving {
    /// Raises the limit on open descriptors to the hard limit, opens the fleet
    /// database (writing the first admin token to the token file
    /// when there is none, never over another fleet's: see
    /// `token_file.rs`), loads the route table and binds both listeners.
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Serving> {
        let descriptors = match descriptors::raise_limit() {
            (limit, None) => limit,
            (limit, Some(e)) => {
                tracing::warn!(error = %e, limit, "cannot raise the limit on open descriptors");
                limit
            }
        };
        // The listeners first: the router's port names it in the events it
        // records, from the first (the token file's bootstrap) on.
        let public = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let private = TcpListener::bind(config.api_listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.api_listen))?;
        let tls = match config.tls_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?,
            ),
            None => None,
        };
        let db = SlumDb::init_with(&config.database, config.fleet.clone())
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot open the fleet database {}: {e}", config.database)
            })?;
        db.set_router_name(format!(
            "{}:{} (pid {})",
            crate::fleet::events::host_name(),
            public.local_addr()?.port(),
            std::process::id()
        ));
        token_file::bootstrap(db.fleet(), &config.token_file, &config.database.to_string()).await?;
        let state = AppState::new(db, config.health.clone()).await?;
        Ok(Serving {
            config,
            descriptors,
            state,
            public,
            tls,
            private,
        })
    }

    /// Address of the router.
    pub fn router_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    /// Address of the router's HTTPS listener, if it has one.
    pub fn tls_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.tls.as_ref().map(TcpListener::local_addr)
    }

    /// Address of the management API.
    pub fn api_addr(&self) -> std::io::Result<SocketAddr> {
        self.private.local_addr()
    }

    /// The shared state (the fleet database, routes, metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish within the grace period, and returns.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Serving {
            config,
            descriptors,
            state,
            public,
            tls,
            private,
        } = self;
        tracing::info!(router = %public.local_addr()?, api = %private.local_addr()?,
            https = ?tls.as_ref().map(TcpListener::local_addr).transpose()?,
            database = %config.database,
            "slum serve started");
        let router_config = config.router(descriptors);
        tracing::info!(
            descriptors,
            max_connections = router_config.max_connections,
            max_connections_per_client = router_config.max_connections_per_client,
            max_in_flight_per_server = router_config.max_in_flight_per_server,
            max_in_flight_per_client = router_config.max_in_flight_per_client,
            "open descriptors allowed, and the router's caps"
        );
        let follower = tokio::spawn(
            Arc::clone(&state.routes).follow(state.db.fleet().clone(), config.route_poll),
        );
        let supervisor = tokio::spawn(supervisor::run(
            state.db.clone(),
            Arc::clone(&state.health),
            Arc::clone(&state.routing),
            Arc::clone(&state.leading),
            config.reconcile_interval,
            config.events,
        ));
        // Certificates for tenant domains: ordered while this process leads,
        // and wanted by every router when asked for over HTTPS without one.
        let mut state = state;
        let acme = match config.acme.clone() {
            None => None,
            Some(acme) => {
                tracing::info!(directory = acme.directory, challenge = %acme.challenge,
                    "ACME on: the leading router orders a certificate for each tenant domain");
                let acme = Acme::new(
                    state.db.fleet().clone(),
                    Arc::clone(&state.routing),
                    Arc::clone(&state.metrics),
                    acme,
                );
                // Called from a TLS handshake on a router thread: the write
                // goes to this runtime.
                let (wanted, runtime) = (Arc::clone(&acme), tokio::runtime::Handle::current());
                state.certificate_wanted = Arc::new(move |domain: &str| {
                    let (acme, domain) = (Arc::clone(&wanted), domain.to_owned());
                    runtime.spawn(async move {
                        match acme.want(&domain).await {
                            Ok(()) => {}
                            // No tenant's any more.
                            Err(e) if e.is_not_found() => {}
                            Err(e) => tracing::warn!(error = %e, domain, "ACME: cannot want a certificate"),
                        }
                    });
                });
                Some(tokio::spawn(acme.run(state.leading.subscribe())))
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let api = tokio::spawn(crate::api::serve(private, state.clone(), stop_rx.clone()));
        let metrics = Arc::clone(&state.metrics);
        let listeners = router::Listeners {
            plain: public,
            tls,
            certificates: Arc::clone(&state.certificates),
        };
        let router =
            router::serve(listeners, Arc::new(state), metrics, &router_config, stop_rx).await;
        follower.abort();
        supervisor.abort();
        if let Some(acme) = acme {
            acme.abort();
        }
        let api = api.await;
        router?;
        api??;
        tracing::info!("slum serve stopped");
        Ok(())
    }
}

/// Runs `slum serve` with `config` until `shutdown` completes.
pub async fn run(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Serving::bind(config).await?.run(shutdown).await
}
