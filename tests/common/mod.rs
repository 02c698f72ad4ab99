//! Shared set-up of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use slum::local_fleet::{find_ten, FleetSpec, LocalFleet};
use slum::{store, FleetOptions, SlumDb};

pub mod certs;
pub mod cli;
pub mod logs;
pub mod pebble;
pub mod serve;
mod test_db;
pub mod websocket;
#[allow(unused_imports)]
pub use test_db::{temp_db, temp_db_with, TestDb};

pub fn demo_app() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_slum-demo-app"))
}

/// `n` real tenement servers named s1.., each in its own network namespace, with
/// the broken services too; `None` (the test then ends, having checked
/// nothing) when this is not root, see [`can_make_namespaces`].
pub async fn fleet(n: usize) -> Option<LocalFleet> {
    let names: Vec<String> = (1..=n).map(|i| format!("s{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    fleet_named(&names).await
}

/// A server record on a loopback port nothing listens on (tests send traffic
/// only to loopback).
pub fn server(id: &str, region: Option<&str>, capacity_mb: i64) -> slum::Server {
    slum::Server {
        id: id.into(),
        url: "http://127.0.0.1:9".into(),
        region: region.map(Into::into),
        capacity_mb,
        ..Default::default()
    }
}

pub fn tenant(domain: &str, server: &str) -> slum::Tenant {
    slum::Tenant {
        domain: domain.into(),
        server_id: server.into(),
        process: "api".into(),
        instance_id: "prod".into(),
        ..Default::default()
    }
}

/// A fleet with the given server names (`None` when not root, as [`fleet`]).
pub async fn fleet_named(names: &[&str]) -> Option<LocalFleet> {
    if !can_make_namespaces() {
        return None;
    }
    let ten = find_ten().expect("tenement-cli: run scripts/ensure-tenement.sh");
    let mut spec = FleetSpec::new(0, ten, demo_app());
    spec.names = names.iter().map(|n| n.to_string()).collect();
    spec.extra_toml = BROKEN_SERVICES.to_owned();
    Some(LocalFleet::start(&spec).await.expect("start local fleet"))
}

/// Whether the tests that run real tenement servers can run here: they make
/// network namespaces, which takes root. A plain `cargo test` as a user runs
/// every other test; this suite's fleet tests end at once, and the suite says
/// so once on stderr. `scripts/test.sh` (root) sets `SLUM_TEST_NETNS=1`, which
/// turns a missing root into a failure instead, so that CI cannot skip them.
pub fn can_make_namespaces() -> bool {
    static SAID: std::sync::Once = std::sync::Once::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var_os("SLUM_TEST_NETNS").is_some() {
        panic!("SLUM_TEST_NETNS is set, but the fleet tests need root for network namespaces");
    }
    SAID.call_once(|| {
        use std::io::Write as _;
        // Straight to stderr: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "note: tests/{}.rs: its tests that run real tenement servers need root \
             (network namespaces) and were skipped; `sudo scripts/test.sh` runs them",
            env!("CARGO_CRATE_NAME")
        );
    });
    false
}

/// Services that cannot start: one whose command does not exist, one that exits
/// at once after saying why.
pub const BROKEN_SERVICES: &str = r#"
[service.missing]
command = "/nonexistent/slum-test-app"
isolation = "process"
health = "/health"

[service.crashing]
command = "/bin/sh"
args = ["-c", "echo 'fatal: DATABASE_URL is not set' >&2; exit 3"]
isolation = "process"
health = "/health"
"#;

/// An HTTP client for test traffic (loopback and test namespaces only).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("client")
}

/// GETs `/` on `server` with the mapped Host of a tenant, returns the body.
pub async fn ask(server: &slum::local_fleet::LocalServer, tenant: &str, process: &str) -> String {
    let resp = http()
        .get(format!("{}/", server.url()))
        .header("host", format!("{tenant}.{process}.{}", server.domain))
        .send()
        .await
        .expect("request to tenant");
    assert_eq!(resp.status(), 200, "tenant {tenant} on {}", server.name);
    resp.text().await.expect("body")
}
