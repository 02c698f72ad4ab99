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

/// `n` real tenement servers, each in its own network namespace.
pub async fn fleet(n: usize) -> LocalFleet {
    let ten = find_ten().expect("tenement-cli: run scripts/ensure-tenement.sh");
    LocalFleet::start(&FleetSpec::new(n, ten, demo_app()))
        .await
        .expect("start local fleet")
}
