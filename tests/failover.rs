//! Surviving the loss of a server, against real tenement servers that crash,
//! hang and get cut off, each in its own network namespace. Detection times and
//! failed-request shares are printed (for the README), not asserted; what is
//! asserted is the behaviour: the server is declared offline, traffic moves, no
//! GET fails when a backup exists, and everything comes back.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::serve::Slum;
use common::{fleet, http};
use slum::local_fleet::LocalFleet;
use slum::{FailoverPolicy, ServerStatus, Tenant};

/// A client requesting `domains` in a loop until stopped, counting answers.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Load {
    fn start(router: std::net::SocketAddr, domains: Vec<String>) -> Load {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, f, s) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let client = http();
            let mut errors = Vec::new();
            while !s.load(Ordering::Relaxed) {
                for d in &domains {
                    let r = client
                        .get(format!("http://{router}/"))
                        .header("host", d)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            o.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            f.fetch_add(1, Ordering::Relaxed);
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            errors.push(format!("{d}: {status} {}", body.trim()));
                        }
                        Err(e) => {
                            f.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{d}: {e}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            errors
        });
        Load {
            ok,
            failed,
            stop,
            task,
        }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.task.await.expect("load task");
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// Waits (bounded, as a guard against hanging) until the router's table says
/// `server` is `status`; returns how long that took.
async fn until_status(slum: &Slum, server: &str, status: ServerStatus) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if slum
            .state
            .routes
            .current()
            .upstream(server)
            .is_some_and(|u| u.status == status)
        {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server {server} never became {status}");
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Crash,
    Hang,
    Partition,
}

/// A fault on s1 while a client requests a tenant whose backup is on s2: the
/// server goes offline, no GET fails, and it comes back.
async fn survive_with_backup(fault: Fault) {
    let Some(mut fleet) = fleet(2).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.add_tenant_with_backup("acme.com").await;
    until_status(&slum, "s1", ServerStatus::Online).await;

    let load = Load::start(slum.router, vec!["acme.com".into()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s1 = fleet.server_mut("s1").unwrap();
    match fault {
        Fault::Crash => s1.kill().unwrap(),
        Fault::Hang => s1.hang().unwrap(),
        Fault::Partition => s1.link_down().unwrap(),
    }
    let detected = until_status(&slum, "s1", ServerStatus::Offline).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, errors) = load.finish().await;
    println!(
        "{fault:?} with a backup: offline after {detected:?}; {failed} of {} requests failed",
        ok + failed
    );
    assert_eq!(failed, 0, "GETs failed despite a backup: {errors:?}");
    let body = slum.get("acme.com", "/").await;
    assert_eq!(
        (body.0, body.1.trim()),
        (200, "tenant=acme process=api server=s2")
    );

    // It comes back, and so does the traffic.
    let s1 = fleet.server_mut("s1").unwrap();
    match fault {
        Fault::Crash => s1.restart_empty().await.unwrap(),
        Fault::Hang => s1.resume().unwrap(),
        Fault::Partition => s1.link_up().unwrap(),
    }
    let back = until_status(&slum, "s1", ServerStatus::Online).await;
    println!("{fault:?}: online again {back:?} after the fault ended");
    let mut on_s1 = false;
    for _ in 0..100 {
        if slum.get("acme.com", "/").await.1.contains("server=s1") {
            on_s1 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(on_s1, "traffic did not return to s1");
}

#[tokio::test]
async fn crash_with_a_backup_loses_no_get() {
    survive_with_backup(Fault::Crash).await;
}

#[tokio::test]
async fn hang_with_a_backup_loses_no_get() {
    survive_with_backup(Fault::Hang).await;
}

#[tokio::test]
async fn partition_with_a_backup_loses_no_get() {
    survive_with_backup(Fault::Partition).await;
}

/// Where a GET is when its server fails: waiting for the response head (the
/// app is slow to answer), or holding the head with the body still to come
/// (the app sends its head at once and its body later).
const MIDWAY: [(&str, &str); 2] = [
    ("waiting for its head", "/sleep?ms=1500"),
    ("between its head and its body", "/late-body?ms=1500"),
];

/// Sends a GET for `path` to `acme.com` through the router, at once; the
/// answer's status, `X-Server` and body, or what failed.
fn get_in_flight(
    slum: &Slum,
    path: &str,
) -> tokio::task::JoinHandle<Result<(u16, String, String), String>> {
    let url = format!("http://{}{path}", slum.router);
    tokio::spawn(async move {
        let resp = http()
            .get(url)
            .header("host", "acme.com")
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = resp.status().as_u16();
        let server = resp
            .headers()
            .get("x-server")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp
            .text()
            .await
            .map_err(|e| format!("{status} from '{server}', then the body failed: {e}"))?;
        Ok((status, server, body))
    })
}

/// A GET already in flight on s1 when s1 fails (hung whole: every process in
/// its namespace stopped; or cut off; or `ten serve` killed) is answered by
/// the backup on s2, whether it was waiting for its head or had its head and
/// not its body: not left to wait on s1, not given a head with no body.
async fn the_get_in_flight_goes_to_the_backup(fault: Fault) {
    let Some(mut fleet) = fleet(2).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.add_tenant_with_backup("acme.com").await;
    until_status(&slum, "s2", ServerStatus::Online).await;
    for (midway, path) in MIDWAY {
        until_status(&slum, "s1", ServerStatus::Online).await;
        let in_flight = get_in_flight(&slum, path);
        // Well inside the app's 1.5 s: the request is on s1, and for the
        // late body, its head is with the router.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let fault_at = Instant::now();
        let s1 = fleet.server_mut("s1").unwrap();
        match fault {
            Fault::Crash => s1.kill().unwrap(),
            Fault::Hang => s1.freeze().unwrap(),
            Fault::Partition => s1.link_down().unwrap(),
        }
        let answer = tokio::time::timeout(Duration::from_secs(60), in_flight).await;
        let took = fault_at.elapsed();
        let offline_then = slum
            .state
            .routes
            .current()
            .upstream("s1")
            .is_some_and(|u| u.status == ServerStatus::Offline);
        let s1 = fleet.server_mut("s1").unwrap();
        match fault {
            Fault::Crash => s1.restart_empty().await.unwrap(),
            Fault::Hang => s1.thaw().unwrap(),
            Fault::Partition => s1.link_up().unwrap(),
        }
        let answer = answer
            .unwrap_or_else(|_| {
                panic!("{fault:?}: the GET in flight {midway} had no answer in 60 s")
            })
            .unwrap();
        let (status, server, body) =
            answer.unwrap_or_else(|e| panic!("{fault:?}: the GET in flight {midway}: {e}"));
        println!("{fault:?}: the GET in flight {midway} was answered {took:?} after the fault");
        assert_eq!(
            (status, server.as_str()),
            (200, "s2"),
            "{fault:?}: the GET in flight {midway} was not answered by the backup: {body}"
        );
        assert!(
            body == "slept\n" || body == "late body from s2\n",
            "{body:?}"
        );
        if !matches!(fault, Fault::Crash) {
            assert!(
                offline_then,
                "{fault:?}: the backup answered before s1 was declared offline"
            );
        }
        if matches!(fault, Fault::Crash) {
            // Its instances went with it: put the primary back.
            slum.db()
                .spawn_instance("acme", "api", "prod", "s1")
                .await
                .ok();
            slum.state.fleet_changed().await;
        }
    }
}

#[tokio::test]
async fn the_get_in_flight_when_its_server_hangs_goes_to_the_backup() {
    the_get_in_flight_goes_to_the_backup(Fault::Hang).await;
}

#[tokio::test]
async fn the_get_in_flight_when_its_server_is_cut_off_goes_to_the_backup() {
    the_get_in_flight_goes_to_the_backup(Fault::Partition).await;
}

#[tokio::test]
async fn the_get_in_flight_when_its_server_dies_goes_to_the_backup() {
    the_get_in_flight_goes_to_the_backup(Fault::Crash).await;
}

/// A GET to a hung server with no backup gets its 504 within the upstream
/// timeout (plus the timer's and the test's slack), whether it was waiting
/// for its head or had its head and not its body.
#[tokio::test]
async fn a_get_to_a_hung_server_without_a_backup_gets_504_within_the_upstream_timeout() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let slum = Slum::start(|a| a.upstream_timeout = Some(3.0)).await;
    slum.add_fleet(&fleet).await;
    slum.add_running_tenant("acme.com", "s1").await;
    for (midway, path) in MIDWAY {
        until_status(&slum, "s1", ServerStatus::Online).await;
        let sent = Instant::now();
        let in_flight = get_in_flight(&slum, path);
        tokio::time::sleep(Duration::from_millis(500)).await;
        fleet.server("s1").unwrap().freeze().unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(60), in_flight).await;
        let took = sent.elapsed();
        fleet.server("s1").unwrap().thaw().unwrap();
        let answer = answer
            .unwrap_or_else(|_| panic!("the GET {midway} had no answer in 60 s"))
            .unwrap();
        let (status, _, body) = answer.unwrap_or_else(|e| panic!("the GET {midway}: {e}"));
        assert_eq!(status, 504, "the GET {midway}: {body}");
        assert!(
            took < Duration::from_secs(3 + 3),
            "the GET {midway} got its 504 after {took:?}, with an upstream timeout of 3 s"
        );
    }
}

/// Two servers and a router, with `phoenix.com` homed on s1 under the
/// `respawn` failover policy (not started yet).
async fn respawning_phoenix() -> Option<(LocalFleet, Slum)> {
    let fleet = fleet(2).await?;
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.db()
        .add_tenant(&Tenant {
            failover: FailoverPolicy::Respawn,
            ..common::tenant("phoenix.com", "s1")
        })
        .await
        .unwrap();
    Some((fleet, slum))
}

/// A fleet database where s1 of `fleet` is recorded offline while no leader
/// watched it: it holds `phoenix.com` (policy `respawn`) and `patient.com`
/// (policy `none`), each with its instance on s1. When `dead`, s1's `ten
/// serve` is killed; otherwise it came back unseen.
async fn fleet_with_s1_offline(fleet: &mut LocalFleet, db: &common::TestDb, dead: bool) {
    let slum = db.open().await;
    for s in &fleet.servers {
        slum.add_server(&s.record()).await.unwrap();
    }
    slum.add_tenant(&Tenant {
        failover: FailoverPolicy::Respawn,
        ..common::tenant("phoenix.com", "s1")
    })
    .await
    .unwrap();
    slum.add_tenant(&common::tenant("patient.com", "s1"))
        .await
        .unwrap();
    for tenant in ["phoenix", "patient"] {
        slum.spawn_instance(tenant, "api", "prod", "s1")
            .await
            .unwrap();
    }
    let was = slum.get_server("s1").await.unwrap().status;
    assert!(slum
        .record_server_health("s1", was, ServerStatus::Offline, None)
        .await
        .unwrap());
    if dead {
        fleet.server_mut("s1").unwrap().kill().unwrap();
    }
}

/// Waits (bounded) until `slum` routes phoenix.com to s2.
async fn until_phoenix_is_on_s2(slum: &Slum) -> Duration {
    let started = Instant::now();
    while !slum.get("phoenix.com", "/").await.1.contains("server=s2") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "phoenix was never respawned on s2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Respawn failover is level-triggered: a router that starts to lead a fleet
/// whose server is already offline (it died while no leader watched, so no
/// router saw it go) respawns that server's `respawn` tenants, and leaves its
/// `none` tenants waiting.
#[tokio::test]
async fn a_new_leader_respawns_the_tenants_of_a_server_found_offline() {
    let Some(mut fleet) = fleet(2).await else {
        return;
    };
    let db = common::TestDb::new().await;
    fleet_with_s1_offline(&mut fleet, &db, true).await;

    let slum = Slum::start_on(Some(db.url()), |_| {}).await;
    let took = until_phoenix_is_on_s2(&slum).await;
    println!("a new leader respawned the tenant of a server found offline after {took:?}");
    assert_eq!(
        slum.db()
            .get_instance("phoenix:prod")
            .await
            .unwrap()
            .server_id,
        "s2"
    );
    let (status, body) = slum.get("patient.com", "/").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        slum.db()
            .get_instance("patient:prod")
            .await
            .unwrap()
            .server_id,
        "s1"
    );
}

/// A server recorded offline that answers the new leader's checks is brought
/// back online with its tenants, not emptied.
#[tokio::test]
async fn a_new_leader_brings_back_a_server_recorded_offline_that_answers() {
    let Some(mut fleet) = fleet(2).await else {
        return;
    };
    let db = common::TestDb::new().await;
    fleet_with_s1_offline(&mut fleet, &db, false).await;

    let slum = Slum::start_on(Some(db.url()), |_| {}).await;
    until_status(&slum, "s1", ServerStatus::Online).await;
    let (status, body) = slum.get("phoenix.com", "/").await;
    assert_eq!(
        (status, body.trim()),
        (200, "tenant=phoenix process=api server=s1")
    );
    assert_eq!(
        slum.db()
            .get_instance("phoenix:prod")
            .await
            .unwrap()
            .server_id,
        "s1"
    );
    let s2 = fleet.server("s2").unwrap().record();
    let on_s2 = slum
        .db()
        .tenement_clients()
        .for_server(&s2)
        .list()
        .await
        .unwrap();
    assert!(on_s2.is_empty(), "a copy was started on s2: {on_s2:?}");
}

/// A server that dies while draining is marked offline, so that its tenants
/// fail over; when it returns it is draining again, not open for placements.
#[tokio::test]
async fn a_server_that_dies_while_draining_fails_over_and_returns_draining() {
    let Some((mut fleet, slum)) = respawning_phoenix().await else {
        return;
    };
    slum.db()
        .spawn_instance("phoenix", "api", "prod", "s1")
        .await
        .unwrap();
    until_status(&slum, "s1", ServerStatus::Online).await;
    // Draining, as an operator's drain leaves it while it works.
    let mut s1 = slum.db().get_server("s1").await.unwrap();
    s1.status = ServerStatus::Draining;
    slum.db().update_server(&s1).await.unwrap();
    slum.state.fleet_changed().await;

    fleet.server_mut("s1").unwrap().kill().unwrap();
    until_status(&slum, "s1", ServerStatus::Offline).await;
    let started = Instant::now();
    while !slum.get("phoenix.com", "/").await.1.contains("server=s2") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "phoenix was never respawned on s2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fleet
        .server_mut("s1")
        .unwrap()
        .restart_empty()
        .await
        .unwrap();
    until_status(&slum, "s1", ServerStatus::Draining).await;
    assert_eq!(
        slum.db().get_server("s1").await.unwrap().status,
        ServerStatus::Draining
    );

    // Undrained while dead: it comes back online.
    fleet.server_mut("s1").unwrap().kill().unwrap();
    until_status(&slum, "s1", ServerStatus::Offline).await;
    slum.state.drains.undrain("s1").await.unwrap();
    fleet
        .server_mut("s1")
        .unwrap()
        .restart_empty()
        .await
        .unwrap();
    until_status(&slum, "s1", ServerStatus::Online).await;
}

#[tokio::test]
async fn crash_without_a_backup_respawns_elsewhere() {
    common::logs::capture();
    let Some((mut fleet, slum)) = respawning_phoenix().await else {
        return;
    };
    slum.add_tenant("patient.com", "s1").await;
    slum.db()
        .spawn_instance("phoenix", "api", "prod", "s1")
        .await
        .unwrap();
    slum.db()
        .spawn_instance("patient", "api", "prod", "s1")
        .await
        .unwrap();
    slum.state.fleet_changed().await;
    until_status(&slum, "s1", ServerStatus::Online).await;

    let load = Load::start(slum.router, vec!["phoenix.com".into()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    fleet.server_mut("s1").unwrap().kill().unwrap();
    let detected = until_status(&slum, "s1", ServerStatus::Offline).await;
    let mut served = None;
    while killed.elapsed() < Duration::from_secs(60) {
        if slum.get("phoenix.com", "/").await.1.contains("server=s2") {
            served = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served = served.expect("phoenix was never respawned on s2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, _) = load.finish().await;
    println!(
        "crash with respawn: offline after {detected:?}, served from s2 after {served:?}; \
         {failed} of {} requests failed",
        ok + failed
    );
    let phoenix = slum.db().get_instance("phoenix:prod").await.unwrap();
    assert_eq!(phoenix.server_id, "s2");
    assert_eq!(
        slum.db()
            .get_tenant_by_domain("phoenix.com")
            .await
            .unwrap()
            .server_id,
        "s2",
        "the home moved with the instance"
    );
    // The `none` tenant waits for its server: 503, whose log line names it.
    let (status, body) = slum.get("patient.com", "/").await;
    assert_eq!(status, 503, "{body}");
    common::logs::assert_public_error(
        &body,
        "503 Service Unavailable: this site is unavailable: its servers are down",
        &["'s1'"],
    );

    // When s1 returns, reconcile stops the old copy of phoenix there and brings
    // back the patient tenant's instance.
    fleet
        .server_mut("s1")
        .unwrap()
        .restart_empty()
        .await
        .unwrap();
    until_status(&slum, "s1", ServerStatus::Online).await;
    let mut back = false;
    for _ in 0..100 {
        if slum.get("patient.com", "/").await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "patient.com did not come back with s1");
}

#[tokio::test]
async fn a_restarted_server_gets_its_instances_back() {
    let Some(mut fleet) = fleet(1).await else {
        return;
    };
    let slum = Slum::start(|a| a.reconcile_interval = Some(1.0)).await;
    slum.add_fleet(&fleet).await;
    slum.add_tenant("acme.com", "s1").await;
    slum.db()
        .spawn_instance("acme", "api", "prod", "s1")
        .await
        .unwrap();
    fleet
        .server_mut("s1")
        .unwrap()
        .restart_empty()
        .await
        .unwrap();
    let mut running = false;
    for _ in 0..100 {
        let status = slum.db().get_instance_status("acme:prod").await.unwrap();
        if status.state == slum::InstanceState::Running {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running, "reconcile did not bring acme back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_fifty_tenants_loses_no_request() {
    let Some(fleet) = fleet(3).await else {
        return;
    };
    let slum = Slum::start(|a| {
        a.default_memory_mb = Some(16);
        a.move_grace = Some(1.0);
    })
    .await;
    slum.add_fleet(&fleet).await;
    let mut domains = Vec::new();
    for i in 0..50 {
        let domain = format!("t{i}.example.com");
        slum.add_tenant(&domain, "s1").await;
        slum.db()
            .spawn_instance(&format!("t{i}"), "api", "prod", "s1")
            .await
            .unwrap();
        domains.push(domain);
    }
    slum.state.fleet_changed().await;
    let load = Load::start(slum.router, domains.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    slum.state.drains.start("s1").await.unwrap();
    let progress = loop {
        let p = slum.state.drains.progress("s1").unwrap();
        if p.done {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "drain stalled: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, errors) = load.finish().await;
    println!(
        "drained 50 tenants in {took:?}; {failed} of {} requests failed",
        ok + failed
    );
    assert!(progress.failed.is_empty(), "{:?}", progress.failed);
    assert_eq!(progress.moved.len(), 50);
    assert_eq!(failed, 0, "requests failed during the drain: {errors:?}");
    assert!(slum
        .db()
        .list_instances_on_server("s1")
        .await
        .unwrap()
        .is_empty());
    assert!(slum
        .db()
        .list_tenants_on_server("s1")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        slum.db().get_server("s1").await.unwrap().status,
        ServerStatus::Draining
    );
    // Nothing left running on s1 itself either.
    let s1 = fleet.server("s1").unwrap().record();
    let left = slum
        .db()
        .tenement_clients()
        .for_server(&s1)
        .list()
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_placements_never_overbook() {
    let Some(fleet) = fleet(3).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let db = slum.db().clone();
            tokio::spawn(async move {
                db.add_tenant_auto(
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
    let (mut placed, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => placed += 1,
            Err(e @ slum::Error::NoRoom { .. }) => {
                let message = e.to_string();
                assert!(message.starts_with("no server can take c"), "{message}");
                assert!(
                    message.ends_with(
                        ":prod (api, 128 MB): s1 has 0 MB free of the 128 MB asked; \
                         s2 has 0 MB free of the 128 MB asked; \
                         s3 has 0 MB free of the 128 MB asked"
                    ),
                    "{message}"
                );
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    // 3 servers of 1024 MB, 128 MB each: exactly 24 fit.
    assert_eq!((placed, refused), (24, 176));
    for s in slum.db().list_servers().await.unwrap() {
        assert!(s.used_capacity_mb() <= s.capacity_mb, "{s:?}");
        assert_eq!(s.used_capacity_mb(), 1024);
    }
    assert_eq!(slum.db().list_tenants().await.unwrap().len(), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_tenant_under_load_loses_no_request() {
    let Some(fleet) = fleet(2).await else {
        return;
    };
    let slum = Slum::start(|a| a.move_grace = Some(1.0)).await;
    slum.add_fleet(&fleet).await;
    slum.add_running_tenant("mover.com", "s1").await;
    let load = Load::start(slum.router, vec!["mover.com".into()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let moved = slum.db().move_tenant("mover.com", "s2").await.unwrap();
    assert_eq!(moved.server_id, "s2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, errors) = load.finish().await;
    println!(
        "moved a tenant: {failed} of {} requests failed",
        ok + failed
    );
    assert_eq!(failed, 0, "{errors:?}");
    let body = slum.get("mover.com", "/").await;
    assert_eq!(
        (body.0, body.1.trim()),
        (200, "tenant=mover process=api server=s2")
    );
    let s1 = fleet.server("s1").unwrap().record();
    let left = slum
        .db()
        .tenement_clients()
        .for_server(&s1)
        .list()
        .await
        .unwrap();
    assert!(left.is_empty(), "the old copy still runs: {left:?}");
}

/// Sends `request` to the router and reads its answer until the stream's
/// first line; returns the connection's halves and what was read.
async fn first_tick(
    slum: &Slum,
    request: &[u8],
) -> (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
    Vec<u8>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpStream::connect(slum.router).await.unwrap();
    let (mut r, mut w) = s.into_split();
    w.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(20), async {
        while !String::from_utf8_lossy(&got).contains("tick\n") {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the stream's first line never came");
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    (r, w, got)
}

/// Reads `r` to its end, within `limit`: how long that took, or `None`.
async fn until_ended(mut r: tokio::net::tcp::OwnedReadHalf, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let ended = tokio::time::timeout(limit, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        !got.ends_with(b"0\r\n\r\n"),
        "the stream was ended as if whole"
    );
    ended.ok().map(|()| started.elapsed())
}

/// A quiet response (an event stream) from a server that vanishes (its link
/// cut: no reset, no answer) ends, so that the client reconnects, and is
/// routed elsewhere, rather than wait on it for ever: with nothing on its way
/// to the server (keepalive probes notice), and with a request body still
/// being sent (no probes go while bytes are unacknowledged; the user timeout
/// notices). The times it took are printed.
#[tokio::test]
async fn a_quiet_stream_from_a_server_that_vanishes_ends() {
    use tokio::io::AsyncWriteExt;
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.add_running_tenant("events.com", "s1").await;

    let (quiet, _quiet_w, _) = first_tick(
        &slum,
        b"GET /drip?ms=3600000 HTTP/1.1\r\nHost: events.com\r\n\r\n",
    )
    .await;
    let (sending, mut w, _) = first_tick(
        &slum,
        b"POST /drip?ms=3600000 HTTP/1.1\r\nHost: events.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await;
    let sender = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if w.write_all(b"5\r\nhello\r\n").await.is_err() {
                return;
            }
        }
    });

    fleet.server("s1").unwrap().link_down().unwrap();
    let limit = Duration::from_secs(90);
    let (quiet, sending) = tokio::join!(until_ended(quiet, limit), until_ended(sending, limit));
    sender.abort();
    fleet.server("s1").unwrap().link_up().unwrap();
    println!("a quiet stream from a vanished server ended after {quiet:?}, one with an upload on its way after {sending:?}");
    assert!(
        quiet.is_some(),
        "the quiet stream from a vanished server was still open after 90 s"
    );
    assert!(
        sending.is_some(),
        "the stream with an upload on its way to a vanished server was still open after 90 s"
    );
}

/// Waits (bounded) until the fleet database holds a routing problem for
/// `server` naming `domain`; returns it.
async fn until_misrouted(slum: &Slum, server: &str, domain: &str) -> String {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let record = slum.db().get_server(server).await.unwrap();
        if let Some(problem) = record.routing_problem.filter(|p| p.contains(domain)) {
            return problem;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server {server} was never found routing by another domain than {domain}");
}

/// What slum's public port answered for `host` on each of tenement's own
/// routes: never tenement's dashboard, metrics, telemetry or API.
async fn assert_tenements_own_routes_stay_private(
    slum: &Slum,
    host: &str,
) -> Vec<(&'static str, u16, String)> {
    let mut answers = Vec::new();
    for path in [
        "/",
        "/metrics",
        "/api/telemetry",
        "/api/instances",
        "/health",
    ] {
        let (status, body) = slum.get(host, path).await;
        for own in [
            "tenement dashboard",
            "tenement_",
            "\"instances\"",
            "{\"status\":\"ok\"}",
        ] {
            assert!(
                !body.contains(own),
                "{host}{path} answered tenement's own route: {status} {body}"
            );
        }
        answers.push((path, status, body));
    }
    answers
}

/// A server restarted with another `--domain` (here none: tenement's default,
/// localhost) would serve its own dashboard and API to the tenants' Hosts
/// slum sends it. The health checks find it, once: it is offline at once,
/// with the reason on its record, counted; the router sends it nothing (its
/// tenant with a backup is answered there, the one without gets 503), so
/// wrong tokens sent through the public port never lock slum out of it. Put
/// right, it comes back; its record changed to another domain behind slum's
/// back (unchecked), it goes again.
#[tokio::test]
async fn a_server_that_routes_by_another_domain_is_taken_out_of_routing() {
    let Some(mut fleet) = fleet(2).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.add_tenant_with_backup("acme.com").await;
    slum.add_running_tenant("solo.com", "s1").await;
    until_status(&slum, "s1", ServerStatus::Online).await;
    assert!(slum.get("acme.com", "/").await.1.contains("server=s1"));
    let right_domain = fleet.server("s1").unwrap().domain.clone();

    fleet
        .server_mut("s1")
        .unwrap()
        .restart_routing_by(None)
        .await
        .unwrap();
    let problem = until_misrouted(&slum, "s1", &right_domain).await;
    assert!(
        problem.contains(&format!("`ten serve --domain {right_domain}`")),
        "{problem}"
    );
    assert!(problem.contains("its own /health"), "{problem}");
    until_status(&slum, "s1", ServerStatus::Offline).await;
    let metrics = slum.state.metrics.render();
    assert!(
        metrics.contains("slum_server_routing_mismatches_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("slum_servers_unroutable 1\n"), "{metrics}");

    // The demo app answers its /health itself, every other path with who it is.
    for (path, status, body) in assert_tenements_own_routes_stay_private(&slum, "acme.com").await {
        let app = if path == "/health" {
            "ok"
        } else {
            "tenant=acme process=api server=s2"
        };
        assert_eq!((status, body.trim()), (200, app), "{path}");
    }
    for (path, status, _) in assert_tenements_own_routes_stay_private(&slum, "solo.com").await {
        assert_eq!(status, 503, "{path}");
    }
    // tenement locks its API for 5 s after 10 failed authentications: sent
    // through the public port, they never reach it.
    for _ in 0..12 {
        let resp = http()
            .get(format!("http://{}/api/instances", slum.router))
            .header("host", "solo.com")
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
    }
    let mut s1 = slum.db().get_server("s1").await.unwrap();
    slum.db()
        .tenement_clients()
        .for_server(&s1)
        .list()
        .await
        .expect("slum's own calls to s1 still work");
    // Put online by hand, it still gets nothing while the problem stands...
    s1.status = ServerStatus::Online;
    slum.db().update_server(&s1).await.unwrap();
    slum.state.fleet_changed().await;
    assert!(slum.get("acme.com", "/").await.1.contains("server=s2"));
    // ...and the next check takes it offline again.
    until_status(&slum, "s1", ServerStatus::Offline).await;

    // Put right: the check passes, the problem goes, s1 returns.
    fleet
        .server_mut("s1")
        .unwrap()
        .restart_routing_by(Some(&right_domain))
        .await
        .unwrap();
    until_status(&slum, "s1", ServerStatus::Online).await;
    assert_eq!(
        slum.db().get_server("s1").await.unwrap().routing_problem,
        None
    );
    assert!(slum.get("acme.com", "/").await.1.contains("server=s1"));

    // Its record changed without a check (a new domain the server does not
    // route by): found again, out again.
    let mut s1 = slum.db().get_server("s1").await.unwrap();
    s1.domain = Some("elsewhere.test".into());
    slum.db().fleet().update_server_settings(&s1).await.unwrap();
    slum.state.fleet_changed().await;
    until_misrouted(&slum, "s1", "elsewhere.test").await;
    until_status(&slum, "s1", ServerStatus::Offline).await;
    assert_tenements_own_routes_stay_private(&slum, "acme.com").await;
    let metrics = slum.state.metrics.render();
    assert!(
        metrics.contains("slum_server_routing_mismatches_total 2\n"),
        "{metrics}"
    );
}
