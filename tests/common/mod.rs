//! Shared set-up of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use slum::local_fleet::{find_ten, FleetSpec, LocalFleet};
use slum::{FleetOptions, SlumDb};

/// A fresh fleet database in a temp dir (kept alive by the returned guard).
pub async fn temp_db() -> (tempfile::TempDir, SlumDb) {
    temp_db_with(FleetOptions::default()).await
}

pub async fn temp_db_with(options: FleetOptions) -> (tempfile::TempDir, SlumDb) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = SlumDb::init_with(dir.path().join("slum.db"), options)
        .await
        .expect("init");
    (dir, db)
}

pub fn demo_app() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_slum-demo-app"))
}

/// `n` real tenement servers named s1.., each in its own network namespace, with
/// the broken services too.
pub async fn fleet(n: usize) -> LocalFleet {
    let names: Vec<String> = (1..=n).map(|i| format!("s{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    fleet_named(&names).await
}

/// Every row of every fleet table, as text, read straight from the database file:
/// the "database unchanged" check of rejected calls.
pub async fn dump(path: &std::path::Path) -> Vec<String> {
    use sqlx::{Column, Row};
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("open for dump");
    let mut out = Vec::new();
    for table in ["servers", "tenants", "instances"] {
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .fetch_all(&pool)
            .await
            .expect("dump");
        for row in rows {
            let cols: Vec<String> = (0..row.columns().len())
                .map(|i| {
                    let v: Option<String> = row
                        .try_get::<Option<String>, _>(i)
                        .or_else(|_| {
                            row.try_get::<Option<i64>, _>(i)
                                .map(|v| v.map(|n| n.to_string()))
                        })
                        .expect("column");
                    format!(
                        "{}={}",
                        row.columns()[i].name(),
                        v.unwrap_or_else(|| "NULL".into())
                    )
                })
                .collect();
            out.push(format!("{table}: {}", cols.join(" ")));
        }
    }
    pool.close().await;
    out
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

/// A fleet with the given server names.
pub async fn fleet_named(names: &[&str]) -> LocalFleet {
    let ten = find_ten().expect("tenement-cli: run scripts/ensure-tenement.sh");
    let mut spec = FleetSpec::new(0, ten, demo_app());
    spec.names = names.iter().map(|n| n.to_string()).collect();
    spec.extra_toml = BROKEN_SERVICES.to_owned();
    LocalFleet::start(&spec).await.expect("start local fleet")
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
