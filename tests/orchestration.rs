//! Spawn, stop, live listings and reconcile against real tenement servers, each in
//! its own network namespace; faults made by killing, hanging and restarting them.

mod common;

use std::time::Duration;

use common::{ask, fleet, temp_db, temp_db_with};
use slum::local_fleet::LocalFleet;
use slum::tenement::TenementClients;
use slum::{
    DesiredState, Error, FleetOptions, InstanceState, Kind, ServerStatus, SlumDb, SpawnOptions,
    StopOutcome,
};

async fn register(db: &SlumDb, fleet: &LocalFleet) {
    for s in &fleet.servers {
        db.add_server(&s.record()).await.expect("add server");
    }
}

/// What a server itself says it runs (tenement names).
async fn running_on(db: &SlumDb, fleet: &LocalFleet, name: &str) -> Vec<String> {
    let record = fleet.server(name).expect("server").record();
    let clients = TenementClients::new(db.options());
    let mut names: Vec<String> = clients
        .for_server(&record)
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn spawn_and_stop_across_three_servers() {
    let Some(fleet) = fleet(3).await else {
        return;
    };
    let (_test_db, db) = temp_db().await;
    register(&db, &fleet).await;

    for (tenant, server) in [("alice", "s1"), ("bob", "s2"), ("carol", "s3")] {
        let inst = db
            .spawn_instance(tenant, "api", "prod", server)
            .await
            .unwrap();
        assert_eq!(inst.observed, InstanceState::Running);
        assert_eq!(inst.memory_mb, 128);
        // The mapped Host reaches the right tenant on the right server.
        let body = ask(fleet.server(server).unwrap(), tenant, "api").await;
        assert_eq!(
            body.trim(),
            format!("tenant={tenant} process=api server={server}")
        );
    }
    assert_eq!(running_on(&db, &fleet, "s2").await, ["api:bob"]);

    let all = db.list_all_instances().await.unwrap();
    assert_eq!(all.len(), 3);
    for s in &all {
        assert_eq!(s.state, InstanceState::Running, "{s:?}");
        assert!(s.health.is_some() && s.uptime_secs.is_some() && s.restarts.is_some());
    }
    let on_s1 = db.list_instances_on_server("s1").await.unwrap();
    assert_eq!(on_s1.len(), 1);
    assert_eq!(on_s1[0].instance.key(), "alice:prod");

    for s in db.list_servers().await.unwrap() {
        assert_eq!(s.used_capacity_mb(), 128, "{}", s.id);
    }
    let stats = db.get_server_stats("s3").await.unwrap();
    assert!(stats.reachable);
    assert_eq!(stats.running, Some(1));
    assert_eq!(
        (stats.used_mb, stats.free_mb, stats.instances),
        (128, 896, 1)
    );

    // A server with an instance cannot be deleted.
    let e = db.delete_server("s1").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::HasDependents {
                instances: 1,
                tenants: 0,
                ..
            }
        ),
        "{e:?}"
    );

    for key in ["alice:prod", "bob:prod", "carol:prod"] {
        db.stop_instance(key).await.unwrap();
    }
    assert!(db.list_all_instances().await.unwrap().is_empty());
    for name in ["s1", "s2", "s3"] {
        assert!(running_on(&db, &fleet, name).await.is_empty(), "{name}");
    }
    for s in db.list_servers().await.unwrap() {
        assert_eq!(s.used_capacity_mb(), 0);
    }
}

#[tokio::test]
async fn one_instance_per_tenant_and_process_on_a_server() {
    let Some(fleet) = fleet(2).await else {
        return;
    };
    let (test_db, db) = temp_db().await;
    register(&db, &fleet).await;
    db.spawn_instance("acme", "api", "prod", "s1")
        .await
        .unwrap();

    let before = test_db.dump().await;
    let e = db
        .spawn_instance("acme", "api", "backup", "s1")
        .await
        .unwrap_err();
    assert_eq!(before, test_db.dump().await);
    match &e {
        Error::AlreadyExists {
            kind: Kind::Instance,
            key,
            detail: Some(detail),
        } => {
            assert_eq!(key, "acme:backup");
            assert!(
                detail.contains("acme:prod") && detail.contains("s1"),
                "{detail}"
            );
        }
        other => panic!("expected AlreadyExists with detail, got {other:?}"),
    }
    // The same key again is refused too.
    let e = db
        .spawn_instance("acme", "api", "prod", "s2")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");

    // Another server, or another process on the same server, is fine.
    db.spawn_instance("acme", "api", "backup", "s2")
        .await
        .unwrap();
    db.spawn_instance("acme", "web", "site", "s1")
        .await
        .unwrap();
    assert_eq!(
        running_on(&db, &fleet, "s1").await,
        ["api:acme", "web:acme"]
    );
    assert!(ask(fleet.server("s1").unwrap(), "acme", "web")
        .await
        .contains("process=web server=s1"));
}

#[tokio::test]
async fn capacity_and_server_state_are_enforced_before_calling_the_server() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let (test_db, db) = temp_db().await;
    register(&db, &fleet).await;
    let big = SpawnOptions {
        memory_mb: Some(600),
    };
    db.spawn_instance_with("t1", "api", "prod", "s1", &big)
        .await
        .unwrap();
    assert_eq!(db.get_server("s1").await.unwrap().used_capacity_mb(), 600);

    let before = test_db.dump().await;
    let e = db
        .spawn_instance_with("t2", "api", "prod", "s1", &big)
        .await
        .unwrap_err();
    match &e {
        Error::InsufficientCapacity {
            server,
            requested_mb,
            free_mb,
            capacity_mb,
        } => {
            assert_eq!(server, "s1");
            assert_eq!((*requested_mb, *free_mb, *capacity_mb), (600, 424, 1024));
        }
        other => panic!("expected InsufficientCapacity, got {other:?}"),
    }
    assert_eq!(before, test_db.dump().await);
    assert_eq!(
        running_on(&db, &fleet, "s1").await,
        ["api:t1"],
        "server not called"
    );

    let e = db
        .spawn_instance_with(
            "t2",
            "api",
            "prod",
            "s1",
            &SpawnOptions {
                memory_mb: Some(-1),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Invalid { field, .. } if field == "memory_mb"));

    // What fits exactly is accepted.
    db.spawn_instance_with(
        "t2",
        "api",
        "prod",
        "s1",
        &SpawnOptions {
            memory_mb: Some(424),
        },
    )
    .await
    .unwrap();

    // Draining and offline servers take no new instances.
    for status in [ServerStatus::Draining, ServerStatus::Offline] {
        let mut s = db.get_server("s1").await.unwrap();
        s.status = status;
        s.capacity_mb = 100_000;
        db.update_server(&s).await.unwrap();
        let before = test_db.dump().await;
        let e = db
            .spawn_instance("t3", "api", "prod", "s1")
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::ServerUnavailable { server, status: st } if server == "s1" && st == status.as_str()),
            "{e:?}"
        );
        assert_eq!(before, test_db.dump().await);
    }
    assert_eq!(running_on(&db, &fleet, "s1").await, ["api:t1", "api:t2"]);
}

#[tokio::test]
async fn concurrent_spawns_never_overbook() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let (_test_db, db) = temp_db().await;
    register(&db, &fleet).await;
    // 1024 MB of room, 12 spawns of 128 MB at once: exactly 8 fit.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.spawn_instance(&format!("t{i}"), "api", "prod", "s1")
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::InsufficientCapacity { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 8);
    assert_eq!(db.get_server("s1").await.unwrap().used_capacity_mb(), 1024);
    assert_eq!(running_on(&db, &fleet, "s1").await.len(), 8);
}

#[tokio::test]
async fn failed_spawns_leave_no_record_and_say_why() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let options = FleetOptions {
        spawn_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let (test_db, db) = temp_db_with(options).await;
    register(&db, &fleet).await;
    let before = test_db.dump().await;

    // A process the server does not offer.
    let e = db
        .spawn_instance("t1", "nosuch", "prod", "s1")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Tenement { server, status: 500, message } if server == "s1" && message.contains("nosuch")),
        "{e:?}"
    );
    // A command that does not exist.
    let e = db
        .spawn_instance("t1", "missing", "prod", "s1")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Tenement { server, message, .. } if server == "s1" && message.contains("Failed to spawn")),
        "{e:?}"
    );
    // A process that exits at once: tenement's logs hold the reason.
    let e = db
        .spawn_instance("t1", "crashing", "prod", "s1")
        .await
        .unwrap_err();
    match &e {
        Error::SpawnFailed {
            instance,
            server,
            reason,
        } => {
            assert_eq!((instance.as_str(), server.as_str()), ("t1:prod", "s1"));
            assert!(reason.contains("DATABASE_URL is not set"), "{reason}");
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
    assert_eq!(before, test_db.dump().await, "no record left behind");
    assert!(running_on(&db, &fleet, "s1").await.is_empty());

    // The failures left nothing stuck on the server: the name spawns fine now.
    db.spawn_instance("t1", "api", "prod", "s1").await.unwrap();
}

#[tokio::test]
async fn a_dead_server_fails_fast_and_loses_nothing() {
    let Some(mut fleet) = fleet(2).await else {
        return;
    };
    let (test_db, db) = temp_db().await;
    register(&db, &fleet).await;
    db.spawn_instance("alice", "api", "prod", "s1")
        .await
        .unwrap();
    db.spawn_instance("bob", "api", "prod", "s2").await.unwrap();
    fleet.server_mut("s2").unwrap().kill().unwrap();

    let before = test_db.dump().await;
    let e = db
        .spawn_instance("carol", "api", "prod", "s2")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::ServerUnreachable { server, .. } if server == "s2"),
        "{e:?}"
    );
    assert!(e.to_string().contains("'s2'"), "{e}");
    assert_eq!(before, test_db.dump().await);

    let stats = db.get_server_stats("s2").await.unwrap();
    assert!(!stats.reachable);
    assert!(stats.error.unwrap().contains("s2"));

    // Listings still answer: s2's instance is unknown, s1's is running.
    let all = db.list_all_instances().await.unwrap();
    let state = |k: &str| {
        all.iter()
            .find(|s| s.instance.key() == k)
            .map(|s| (s.state, s.error.clone()))
            .unwrap()
    };
    assert_eq!(state("alice:prod").0, InstanceState::Running);
    let (bob, why) = state("bob:prod");
    assert_eq!(bob, InstanceState::Unknown);
    assert!(why.unwrap().contains("s2"));

    // A stop that cannot reach its server is recorded and reported as pending.
    let outcome = db.stop_instance("bob:prod").await.unwrap();
    assert!(
        matches!(&outcome, StopOutcome::Pending { server, .. } if server == "s2"),
        "{outcome:?}"
    );
    let bob = db.get_instance("bob:prod").await.unwrap();
    assert_eq!(bob.desired, DesiredState::Stopped);

    // The server returns (its instances gone); reconcile completes the stop.
    fleet
        .server_mut("s2")
        .unwrap()
        .restart_empty()
        .await
        .unwrap();
    let report = db.reconcile().await.unwrap();
    assert_eq!(report.stopped, ["bob:prod"]);
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(db
        .get_instance("bob:prod")
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(db.list_all_instances().await.unwrap().len(), 1);
}

#[tokio::test]
async fn reconcile_brings_back_what_a_restarted_server_lost() {
    let Some(mut fleet) = fleet(2).await else {
        return;
    };
    let (_test_db, db) = temp_db().await;
    register(&db, &fleet).await;
    db.spawn_instance("alice", "api", "prod", "s1")
        .await
        .unwrap();
    db.spawn_instance("bob", "web", "prod", "s1").await.unwrap();
    db.spawn_instance("carol", "api", "prod", "s2")
        .await
        .unwrap();

    // An instance slum did not start: reconcile leaves it alone.
    let s2 = fleet.server("s2").unwrap().record();
    let clients = TenementClients::new(db.options());
    clients
        .for_server(&s2)
        .spawn("api", "stranger")
        .await
        .unwrap();

    // Nothing to do while everything runs.
    let report = db.reconcile().await.unwrap();
    assert!(
        report.respawned.is_empty() && report.stopped.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.unmanaged, ["s2/api:stranger"]);

    fleet
        .server_mut("s1")
        .unwrap()
        .restart_empty()
        .await
        .unwrap();
    assert!(running_on(&db, &fleet, "s1").await.is_empty());
    let status = db.get_instance_status("alice:prod").await.unwrap();
    assert_eq!(status.state, InstanceState::Missing);

    let report = db.reconcile().await.unwrap();
    assert_eq!(report.respawned, ["alice:prod", "bob:prod"]);
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        running_on(&db, &fleet, "s1").await,
        ["api:alice", "web:bob"]
    );
    assert_eq!(
        running_on(&db, &fleet, "s2").await,
        ["api:carol", "api:stranger"]
    );
    assert!(ask(fleet.server("s1").unwrap(), "alice", "api")
        .await
        .contains("tenant=alice"));
    assert_eq!(
        db.get_instance_status("bob:prod").await.unwrap().state,
        InstanceState::Running
    );
}

/// A moved instance's old copy finishes its requests for the move's grace:
/// reconcile, run by the leader meanwhile, leaves it running, and the mover
/// stops it once the grace is over.
#[tokio::test]
async fn reconcile_leaves_a_moved_copy_alone_for_the_moves_grace() {
    let Some(fleet) = fleet(2).await else {
        return;
    };
    let (_test_db, db) = temp_db().await;
    register(&db, &fleet).await;
    db.spawn_instance("alice", "api", "prod", "s1")
        .await
        .unwrap();

    let (switched_tx, switched) = tokio::sync::oneshot::channel();
    let mover = {
        let db = db.clone();
        tokio::spawn(async move {
            db.relocate(
                "alice:prod",
                "s2",
                Duration::from_secs(8),
                move || async move {
                    let _ = switched_tx.send(());
                },
            )
            .await
        })
    };
    switched.await.expect("the move switched");
    assert_eq!(db.get_instance("alice:prod").await.unwrap().server_id, "s2");
    let report = db.reconcile().await.unwrap();
    assert!(report.stopped.is_empty(), "{report:?}");
    assert!(
        report.unmanaged.is_empty(),
        "the old copy is known: {report:?}"
    );
    assert_eq!(running_on(&db, &fleet, "s1").await, ["api:alice"]);
    assert_eq!(running_on(&db, &fleet, "s2").await, ["api:alice"]);

    let outcome = mover.await.unwrap().unwrap();
    assert!(outcome.old_stopped, "{outcome:?}");
    assert!(running_on(&db, &fleet, "s1").await.is_empty());
    let report = db.reconcile().await.unwrap();
    assert!(
        report.stopped.is_empty() && report.respawned.is_empty(),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_hung_server_does_not_stall_listings() {
    let Some(fleet) = fleet(2).await else {
        return;
    };
    let options = FleetOptions {
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let (_test_db, db) = temp_db_with(options).await;
    register(&db, &fleet).await;
    db.spawn_instance("alice", "api", "prod", "s1")
        .await
        .unwrap();
    db.spawn_instance("bob", "api", "prod", "s2").await.unwrap();

    fleet.server("s1").unwrap().hang().unwrap();
    // A guard against hanging forever, far above the 1 s request timeout: the
    // assertion is that the calls return, with the right content.
    let guard = Duration::from_secs(30);
    let all = tokio::time::timeout(guard, db.list_all_instances())
        .await
        .expect("list_all_instances stalled on a hung server")
        .unwrap();
    let alice = all.iter().find(|s| s.instance.tenant == "alice").unwrap();
    let bob = all.iter().find(|s| s.instance.tenant == "bob").unwrap();
    assert_eq!(alice.state, InstanceState::Unknown);
    let why = alice.error.as_deref().unwrap();
    assert!(why.contains("s1") && why.contains("no answer"), "{why}");
    assert_eq!(bob.state, InstanceState::Running);

    let status = tokio::time::timeout(guard, db.get_instance_status("alice:prod"))
        .await
        .expect("status stalled")
        .unwrap();
    assert_eq!(status.state, InstanceState::Unknown);
    let report = tokio::time::timeout(guard, db.reconcile())
        .await
        .expect("reconcile stalled")
        .unwrap();
    assert_eq!(report.unreachable.len(), 1);
    assert!(report.unreachable[0].starts_with("s1:"));

    fleet.server("s1").unwrap().resume().unwrap();
    let all = db.list_all_instances().await.unwrap();
    assert!(
        all.iter().all(|s| s.state == InstanceState::Running),
        "{all:?}"
    );
}

/// A test fleet's teardown leaves the machine as it found it: the blackhole
/// route its namespaces need goes with the last fleet (another fleet still
/// running, of this suite or another, keeps it).
#[tokio::test]
async fn the_last_fleet_torn_down_takes_its_blackhole_route_away() {
    let Some(fleet) = common::fleet(1).await else {
        return;
    };
    let route = || {
        let out = std::process::Command::new("ip")
            .args(["route", "show", "type", "blackhole"])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).contains("10.213.0.0/16")
    };
    let fleets_up =
        || std::fs::read_dir("/run/slum-local-fleet").is_ok_and(|mut slots| slots.next().is_some());
    assert!(route(), "a running fleet has its blackhole route");
    drop(fleet);
    let (before, left, after) = (fleets_up(), route(), fleets_up());
    if !before && !after {
        assert!(!left, "the blackhole route outlived the last fleet");
    }
}
