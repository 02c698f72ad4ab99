//! Several `slum serve` processes on one fleet database: a change made through
//! one router is routed by the others (at once on PostgreSQL, which notifies;
//! within the poll on SQLite), and placements through different routers never
//! overbook a server. Runs on the backend `SLUM_TEST_BACKEND` selects.

mod common;

use std::time::{Duration, Instant};

use common::serve::Slum;
use common::{fleet, TestDb};
use slum::Tenant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_router_is_routed_by_the_others() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let db = TestDb::new().await;
    let a = Slum::start_on(Some(db.url()), |_| {}).await;
    let b = Slum::start_on(Some(db.url()), |_| {}).await;
    a.add_fleet(&fleet).await;

    let mut latencies = Vec::new();
    for i in 0..20 {
        let domain = format!("t{i}.example.com");
        a.db()
            .add_tenant(&Tenant {
                domain: domain.clone(),
                server_id: "s1".into(),
                process: "api".into(),
                instance_id: "prod".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        a.state.fleet_changed().await;
        let written = Instant::now();
        loop {
            if b.state.routes.current().domains() == i + 1 {
                latencies.push(written.elapsed());
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(10),
                "router B never saw {domain}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    latencies.sort();
    println!(
        "{}: a change through router A reached router B after p50 {:?}, max {:?}",
        if db.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        },
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // And B serves it: the first request through B starts the tenant.
    let (status, body) = b.get("t0.example.com", "/").await;
    assert_eq!(
        (status, body.trim()),
        (200, "tenant=t0 process=api server=s1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placements_through_two_routers_never_overbook() {
    let Some(fleet) = fleet(2).await else {
        return;
    };
    let db = TestDb::new().await;
    let a = Slum::start_on(Some(db.url()), |_| {}).await;
    let b = Slum::start_on(Some(db.url()), |_| {}).await;
    a.add_fleet(&fleet).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let router = if i % 2 == 0 {
                a.db().clone()
            } else {
                b.db().clone()
            };
            tokio::spawn(async move {
                router
                    .add_tenant_auto(
                        &Tenant {
                            domain: format!("c{i}.example.com"),
                            process: "api".into(),
                            instance_id: "prod".into(),
                            ..Default::default()
                        },
                        &slum::PlacementRequest::default(),
                    )
                    .await
            })
        })
        .collect();
    let mut placed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => placed += 1,
            Err(slum::Error::NoRoom { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    // 2 servers of 1024 MB, 128 MB each: 16 fit.
    assert_eq!(placed, 16);
    for s in a.db().list_servers().await.unwrap() {
        assert_eq!(s.used_capacity_mb(), s.capacity_mb, "{}", s.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_and_a_server_die_together_another_router_fails_over() {
    let Some(mut fleet) = fleet(2).await else {
        return;
    };
    let db = TestDb::new().await;
    let a = Slum::start_on(Some(db.url()), |_| {}).await;
    a.add_fleet(&fleet).await;
    // A leads (it started first); B starts once A holds the leadership.
    let started = Instant::now();
    while !a.state.is_leader() {
        assert!(started.elapsed() < Duration::from_secs(10), "A never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = Slum::start_on(Some(db.url()), |_| {}).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if db.is_postgres() {
        assert!(!b.state.is_leader(), "two leaders on one PostgreSQL fleet");
    } else {
        // One router per SQLite file is the model: each leads its own.
        assert!(b.state.is_leader());
    }
    a.add_tenant_with_backup("acme.com").await;
    b.state.fleet_changed().await;
    assert!(b.get("acme.com", "/").await.1.contains("server=s1"));

    // The leader router and s1 die at once.
    let mut a = a;
    let _ = a.stop.take().expect("stop").send(());
    fleet.server_mut("s1").unwrap().kill().unwrap();
    let died = Instant::now();
    loop {
        let offline = b
            .state
            .routes
            .current()
            .upstream("s1")
            .is_some_and(|u| u.status == slum::ServerStatus::Offline);
        let stored = b.db().get_server("s1").await.unwrap().status;
        if offline && stored == slum::ServerStatus::Offline && b.state.is_leader() {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(30),
            "B did not take over and mark s1 offline (leader: {})",
            b.state.is_leader()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "B led and marked s1 offline {:?} after both died",
        died.elapsed()
    );
    let (status, body) = b.get("acme.com", "/").await;
    assert_eq!(
        (status, body.trim()),
        (200, "tenant=acme process=api server=s2")
    );
}

/// Two routers start on a fleet whose server is already offline (it died
/// while no router ran): the `respawn` tenant on it is respawned once, by
/// the leader (on PostgreSQL, one of the two; on SQLite each router leads its
/// own file, and the database lets one move through), and both route it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_that_find_a_server_offline_respawn_its_tenant_once() {
    let Some(mut fleet) = fleet(2).await else {
        return;
    };
    let db = TestDb::new().await;
    {
        let slum = db.open().await;
        for s in &fleet.servers {
            slum.add_server(&s.record()).await.unwrap();
        }
        slum.add_tenant(&Tenant {
            failover: slum::FailoverPolicy::Respawn,
            ..common::tenant("phoenix.com", "s1")
        })
        .await
        .unwrap();
        slum.spawn_instance("phoenix", "api", "prod", "s1")
            .await
            .unwrap();
        let was = slum.get_server("s1").await.unwrap().status;
        slum.record_server_health("s1", was, slum::ServerStatus::Offline, None)
            .await
            .unwrap();
        fleet.server_mut("s1").unwrap().kill().unwrap();
    }
    let a = Slum::start_on(Some(db.url()), |_| {}).await;
    let b = Slum::start_on(Some(db.url()), |_| {}).await;
    let started = Instant::now();
    for router in [&a, &b] {
        while !router.get("phoenix.com", "/").await.1.contains("server=s2") {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "phoenix was never respawned on s2"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if db.is_postgres() {
        assert!(
            a.state.is_leader() != b.state.is_leader(),
            "one leader on one PostgreSQL fleet"
        );
    }
    let phoenix = a.db().get_instance("phoenix:prod").await.unwrap();
    assert_eq!(
        (phoenix.server_id.as_str(), phoenix.moving_to),
        ("s2", None)
    );
    // Respawned once: one copy on s2, and s2 reserves room for one.
    let s2 = fleet.server("s2").unwrap().record();
    let running = a
        .db()
        .tenement_clients()
        .for_server(&s2)
        .list()
        .await
        .unwrap();
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(
        a.db().get_server("s2").await.unwrap().used_capacity_mb(),
        phoenix.memory_mb
    );
}
