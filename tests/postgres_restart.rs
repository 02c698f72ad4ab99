//! PostgreSQL restarted under traffic, in a test binary of its own: a restart
//! breaks every connection to the cluster, so no other test may run meanwhile
//! (cargo runs test binaries one after another).

mod common;

use std::time::{Duration, Instant};

use common::serve::Slum;
use common::{fleet, TestDb};
use slum::Tenant;

/// PostgreSQL restarted under traffic: the routers keep routing from their
/// tables (no query on the request path), reconnect, and catch up with changes
/// made after the restart. PostgreSQL only (`SLUM_TEST_POSTGRES_RESTART` is set by
/// scripts/with-postgres.sh); on SQLite there is no database server to restart,
/// and the test says so and checks nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_ride_out_a_postgres_restart() {
    let db = TestDb::new().await;
    let Some(restart) = std::env::var_os("SLUM_TEST_POSTGRES_RESTART").filter(|_| db.is_postgres())
    else {
        println!("not on PostgreSQL: nothing to restart");
        return;
    };
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let a = Slum::start_on(Some(db.url()), |_| {}).await;
    let b = Slum::start_on(Some(db.url()), |_| {}).await;
    a.add_fleet(&fleet).await;
    a.add_tenant("before.com", "s1").await;
    a.db()
        .spawn_instance("before", "api", "prod", "s1")
        .await
        .unwrap();
    a.state.fleet_changed().await;
    let started = Instant::now();
    while b.state.routes.current().domains() < 1 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Traffic through B while the database restarts.
    let router = b.router;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match common::http()
                    .get(format!("http://{router}/"))
                    .header("host", "before.com")
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        })
    };
    let out = std::process::Command::new(restart).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A change after the restart reaches B (its listener reconnected, or its
    // poll caught up).
    let mut added = false;
    for _ in 0..50 {
        if a.db()
            .add_tenant(&Tenant {
                domain: "after.com".into(),
                server_id: "s1".into(),
                process: "api".into(),
                instance_id: "prod".into(),
                ..Default::default()
            })
            .await
            .is_ok()
        {
            added = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(added, "A could not write after the restart");
    let written = Instant::now();
    while b.state.routes.current().domains() < 2 {
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "B never caught up after the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "B caught up {:?} after a write following the restart",
        written.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.await.unwrap();
    println!(
        "{ok} requests answered during the restart, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
}
