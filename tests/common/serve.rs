//! `slum serve` in this process, on loopback ports, for end-to-end tests.

use std::net::SocketAddr;

use slum::local_fleet::LocalFleet;
use slum::serve::{AppState, ServeArgs, ServeConfig, Serving};
use slum::SlumDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::http;

/// A running `slum serve` on loopback ports.
pub struct Slum {
    pub router: SocketAddr,
    /// The management API (and the dashboard).
    pub api: SocketAddr,
    /// The HTTPS listener, when `tls_listen` was set.
    pub tls: Option<SocketAddr>,
    pub state: AppState,
    pub db_path: std::path::PathBuf,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Slum {
    pub async fn start(tweak: impl FnOnce(&mut ServeArgs)) -> Slum {
        Slum::start_on(None, tweak).await
    }

    /// A `slum serve` on `database` (a SQLite path or a PostgreSQL URL), or on a
    /// fresh SQLite file when `None`.
    pub async fn start_on(database: Option<&str>, tweak: impl FnOnce(&mut ServeArgs)) -> Slum {
        let dir = tempfile::tempdir().unwrap();
        let database = database
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| dir.path().join("slum.db"));
        let mut args = ServeArgs {
            database: Some(database.clone().into()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            api_listen: Some("127.0.0.1:0".parse().unwrap()),
            token_file: Some(dir.path().join("token")),
            ..Default::default()
        };
        tweak(&mut args);
        let serving = Serving::bind(ServeConfig::resolve(&args).unwrap())
            .await
            .unwrap();
        let router = serving.router_addr().unwrap();
        let api = serving.api_addr().unwrap();
        let tls = serving.tls_addr().map(Result::unwrap);
        let state = serving.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serving.run(async move {
            let _ = rx.await;
        }));
        Slum {
            router,
            api,
            tls,
            state,
            db_path: database,
            stop: Some(tx),
            task,
            _dir: dir,
        }
    }

    pub fn db(&self) -> &SlumDb {
        &self.state.db
    }

    pub async fn add_fleet(&self, fleet: &LocalFleet) {
        for s in &fleet.servers {
            self.db().add_server(&s.record()).await.unwrap();
        }
        self.state.fleet_changed().await;
    }

    pub async fn add_tenant(&self, domain: &str, server: &str) {
        self.db()
            .add_tenant(&super::tenant(domain, server))
            .await
            .unwrap();
        self.state.fleet_changed().await;
    }

    /// A tenant homed on `server` with its `prod` instance running there,
    /// routed; returns its name.
    pub async fn add_running_tenant(&self, domain: &str, server: &str) -> String {
        self.add_tenant(domain, server).await;
        let name = domain.split('.').next().unwrap_or_default().to_owned();
        self.db()
            .spawn_instance(&name, "api", "prod", server)
            .await
            .unwrap();
        self.state.fleet_changed().await;
        name
    }

    /// A tenant homed on s1 with its `prod` instance there and a `backup` on
    /// s2, routed; returns its name.
    pub async fn add_tenant_with_backup(&self, domain: &str) -> String {
        let name = self.add_running_tenant(domain, "s1").await;
        self.db()
            .spawn_instance(&name, "api", "backup", "s2")
            .await
            .unwrap();
        self.state.fleet_changed().await;
        name
    }

    pub async fn get(&self, host: &str, path: &str) -> (u16, String) {
        let resp = http()
            .get(format!("http://{}{path}", self.router))
            .header("host", host)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// Sends raw bytes and returns the raw answer (for requests reqwest will not
    /// make).
    pub async fn raw(&self, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(self.router).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}
