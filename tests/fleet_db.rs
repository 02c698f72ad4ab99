//! The fleet database: integrity, validation, concurrency and durability. Every
//! rejected call is checked to leave the database exactly as it was.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{certs, server, temp_db, tenant, TestDb};
use slum::{
    CertificateSource, CertificateState, Challenges, Error, Kind, PageRequest, SecretPem, Server,
    ServerStatus, SlumDb, Tenant, UploadedCertificate,
};

/// Runs `call`, expects it to fail, checks the database did not change, and
/// returns the error.
macro_rules! rejected {
    ($test_db:expr, $call:expr) => {{
        let before = $test_db.dump().await;
        let result = $call.await;
        let after = $test_db.dump().await;
        assert_eq!(before, after, "a rejected call changed the database");
        match result {
            Ok(v) => panic!("call succeeded but should have failed: {v:?}"),
            Err(e) => e,
        }
    }};
}

fn assert_invalid(e: &Error, field: &str) {
    match e {
        Error::Invalid { field: f, reason } => {
            assert_eq!(f, field, "wrong field (reason: {reason})");
            assert!(!reason.is_empty());
        }
        other => panic!("expected Invalid {{ field: {field} }}, got {other:?}"),
    }
    assert!(
        e.to_string().contains(field),
        "message names the field: {e}"
    );
}

#[tokio::test]
async fn server_crud_round_trips() {
    let (_test_db, db) = temp_db().await;
    db.add_server(&Server {
        id: "east".into(),
        url: "http://127.0.0.1:9/".into(),
        region: Some("us-east".into()),
        capacity_mb: 2048,
        token: Some("secret-token".into()),
        domain: Some("East.Example.COM.".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let s = db.get_server("east").await.unwrap();
    assert_eq!(s.url, "http://127.0.0.1:9");
    assert_eq!(s.domain.as_deref(), Some("east.example.com"));
    assert_eq!(s.routing_domain(), "east.example.com");
    assert_eq!(s.token.as_deref(), Some("secret-token"));
    assert_eq!(s.status, ServerStatus::Unknown);
    assert_eq!(s.used_capacity_mb(), 0);
    assert!(s.created_at.timestamp() > 1_600_000_000);

    let mut updated = s.clone();
    updated.capacity_mb = 4096;
    updated.region = Some("us-west".into());
    updated.domain = None;
    db.update_server(&updated).await.unwrap();
    let s = db.get_server("east").await.unwrap();
    assert_eq!(s.capacity_mb, 4096);
    assert_eq!(s.region.as_deref(), Some("us-west"));
    assert_eq!(
        s.routing_domain(),
        "127.0.0.1",
        "falls back to the url's host"
    );

    db.delete_server("east").await.unwrap();
    assert!(db.get_server("east").await.unwrap_err().is_not_found());
    assert!(db.list_servers().await.unwrap().is_empty());
}

#[tokio::test]
async fn token_never_shows_in_debug_or_json() {
    let s = Server {
        id: "east".into(),
        token: Some("hunter2-very-secret".into()),
        ..Default::default()
    };
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(!format!("{s:#?}").contains("hunter2"));
    assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));

    let (test_db, db) = temp_db().await;
    let e = rejected!(
        test_db,
        db.add_server(&Server {
            token: Some("hunter2 with space".into()),
            ..server("east", None, 1)
        })
    );
    assert_invalid(&e, "server.token");
    assert!(!e.to_string().contains("hunter2"));
}

#[tokio::test]
async fn server_validation_names_the_field_and_changes_nothing() {
    let (test_db, db) = temp_db().await;
    db.add_server(&server("east", Some("us-east"), 1024))
        .await
        .unwrap();
    let cases: Vec<(Server, &str)> = vec![
        (server("", None, 1), "server.id"),
        (server("East", None, 1), "server.id"),
        (server("-east", None, 1), "server.id"),
        (server("east-", None, 1), "server.id"),
        (server("e_st", None, 1), "server.id"),
        (server(&"a".repeat(64), None, 1), "server.id"),
        (server("west", None, -1), "server.capacity_mb"),
        (
            Server {
                url: "ftp://west".into(),
                ..server("west", None, 1)
            },
            "server.url",
        ),
        (
            Server {
                url: "west.example.com".into(),
                ..server("west", None, 1)
            },
            "server.url",
        ),
        (
            Server {
                url: "http://".into(),
                ..server("west", None, 1)
            },
            "server.url",
        ),
        (
            Server {
                domain: Some("bad_domain.com".into()),
                ..server("west", None, 1)
            },
            "server.domain",
        ),
        (server("west", Some("  "), 1), "server.region"),
    ];
    for (bad, field) in cases {
        let e = rejected!(test_db, db.add_server(&bad));
        assert_invalid(&e, field);
        let mut update = bad.clone();
        if field != "server.id" {
            update.id = "east".into();
            let e = rejected!(test_db, db.update_server(&update));
            assert_invalid(&e, field);
        }
    }
    assert_eq!(db.list_servers().await.unwrap().len(), 1);
}

/// The fleet database holds each server's tenement admin token in clear: the
/// SQLite file, and the -wal and -shm files SQLite makes beside it, are the
/// owner's alone.
#[tokio::test]
async fn the_sqlite_file_and_its_wal_and_shm_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fleet.db");
    let db = SlumDb::init(&path).await.expect("init");
    db.add_server(&Server {
        token: Some("tenement-secret".into()),
        ..server("east", None, 1024)
    })
    .await
    .expect("add");
    for name in ["fleet.db", "fleet.db-wal", "fleet.db-shm"] {
        let meta =
            std::fs::metadata(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{name} is {:o}",
            meta.permissions().mode() & 0o777
        );
    }
}

#[tokio::test]
async fn server_integrity() {
    let (test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();

    let e = rejected!(test_db, db.add_server(&server("east", None, 5)));
    assert!(
        matches!(&e, Error::AlreadyExists { kind: Kind::Server, key, .. } if key == "east"),
        "{e:?}"
    );

    let e = rejected!(test_db, db.update_server(&server("nowhere", None, 5)));
    assert!(
        matches!(&e, Error::NotFound { kind: Kind::Server, key } if key == "nowhere"),
        "{e:?}"
    );
    let e = rejected!(test_db, db.delete_server("nowhere"));
    assert!(e.is_not_found());

    db.add_tenant(&tenant("a.example.com", "east"))
        .await
        .unwrap();
    db.add_tenant(&tenant("b.example.com", "east"))
        .await
        .unwrap();
    let e = rejected!(test_db, db.delete_server("east"));
    match &e {
        Error::HasDependents {
            kind: Kind::Server,
            key,
            tenants,
            instances,
        } => {
            assert_eq!(key, "east");
            assert_eq!((*tenants, *instances), (2, 0));
        }
        other => panic!("expected HasDependents, got {other:?}"),
    }
    assert!(e.to_string().contains("2 tenant(s)"), "{e}");
}

#[tokio::test]
async fn tenant_crud_and_names() {
    let (_test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();
    db.add_server(&server("west", None, 1024)).await.unwrap();
    db.add_tenant(&tenant("Customer-1.Example.com.", "east"))
        .await
        .unwrap();
    let t = db
        .get_tenant_by_domain("customer-1.example.com")
        .await
        .unwrap();
    assert_eq!(t.domain, "customer-1.example.com");
    assert_eq!(t.name, "customer-1");
    assert_eq!(t.server_id, "east");
    assert_eq!(t.instance_key(), "customer-1:prod");
    // Lookup is case-insensitive and ignores a trailing dot, as DNS does.
    assert_eq!(
        db.get_tenant_by_domain("CUSTOMER-1.example.com.")
            .await
            .unwrap(),
        t
    );

    // One tenant, several domains.
    db.add_tenant(&Tenant {
        name: "customer-1".into(),
        ..tenant("www.customer-one.com", "east")
    })
    .await
    .unwrap();
    let on_east = db.list_tenants_on_server("east").await.unwrap();
    assert_eq!(on_east.len(), 2);
    assert!(on_east.iter().all(|t| t.name == "customer-1"));
    assert!(db.list_tenants_on_server("west").await.unwrap().is_empty());

    // Reassign to another server.
    let mut moved = t.clone();
    moved.server_id = "west".into();
    db.update_tenant(&moved).await.unwrap();
    assert_eq!(
        db.get_tenant_by_domain("customer-1.example.com")
            .await
            .unwrap()
            .server_id,
        "west"
    );
    assert_eq!(db.list_tenants().await.unwrap().len(), 2);

    db.delete_tenant("customer-1.example.com").await.unwrap();
    assert!(db
        .get_tenant_by_domain("customer-1.example.com")
        .await
        .unwrap_err()
        .is_not_found());
}

/// `a.other-customer.net` without a name would be tenant `a`, the tenant of
/// `a.example.com`: its instance and its data. Refused, naming `--name`; another
/// domain under example.com still joins, and an explicit name always does.
#[tokio::test]
async fn a_default_name_never_joins_another_customers_tenant() {
    let (test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();
    db.add_tenant(&tenant("a.example.com", "east"))
        .await
        .unwrap();

    let e = rejected!(
        test_db,
        db.add_tenant(&tenant("a.other-customer.net", "east"))
    );
    assert_invalid(&e, "tenant.name");
    let message = e.to_string();
    for part in ["--name", "a.example.com", "other-customer.net"] {
        assert!(message.contains(part), "{part} missing in: {message}");
    }
    // Through automatic placement too (refused before any server is asked).
    let e = rejected!(
        test_db,
        db.add_tenant_auto(
            &tenant("a.other-customer.net", ""),
            &slum::PlacementRequest::default()
        )
    );
    assert_invalid(&e, "tenant.name");

    // The same customer's other domain joins tenant `a`.
    db.add_tenant(&tenant("a.shop.example.com", "east"))
        .await
        .unwrap();
    // So does another customer's domain given the name: then it is meant.
    db.add_tenant(&Tenant {
        name: "a".into(),
        ..tenant("a.other-customer.net", "east")
    })
    .await
    .unwrap();
    let names: Vec<(String, String)> = db
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.domain, t.name))
        .collect();
    assert_eq!(
        names,
        [
            ("a.example.com".to_owned(), "a".to_owned()),
            ("a.other-customer.net".to_owned(), "a".to_owned()),
            ("a.shop.example.com".to_owned(), "a".to_owned()),
        ]
    );
}

#[tokio::test]
async fn tenant_validation_and_integrity_change_nothing() {
    let (test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();
    db.add_tenant(&tenant("taken.example.com", "east"))
        .await
        .unwrap();

    let e = rejected!(test_db, db.add_tenant(&tenant("x.example.com", "nowhere")));
    assert!(
        matches!(&e, Error::NotFound { kind: Kind::Server, key } if key == "nowhere"),
        "{e:?}"
    );
    assert!(e.to_string().contains("nowhere"));

    let e = rejected!(
        test_db,
        db.add_tenant(&tenant("TAKEN.example.com.", "east"))
    );
    assert!(
        matches!(&e, Error::AlreadyExists { kind: Kind::Tenant, key, .. } if key == "taken.example.com"),
        "{e:?}"
    );

    let bad: Vec<(Tenant, &str)> = vec![
        (tenant("", "east"), "tenant.domain"),
        (tenant("no spaces.com", "east"), "tenant.domain"),
        (tenant("a..b.com", "east"), "tenant.domain"),
        (tenant("-a.com", "east"), "tenant.domain"),
        (
            tenant(&format!("{}.com", "a".repeat(64)), "east"),
            "tenant.domain",
        ),
        (tenant("ok.example.com", "East"), "tenant.server_id"),
        (
            Tenant {
                process: "API".into(),
                ..tenant("ok.example.com", "east")
            },
            "tenant.process",
        ),
        (
            Tenant {
                instance_id: "".into(),
                ..tenant("ok.example.com", "east")
            },
            "tenant.instance_id",
        ),
        (
            Tenant {
                name: "not_a_label".into(),
                ..tenant("ok.example.com", "east")
            },
            "tenant.name",
        ),
    ];
    for (t, field) in bad {
        let e = rejected!(test_db, db.add_tenant(&t));
        assert_invalid(&e, field);
    }

    let e = rejected!(
        test_db,
        db.update_tenant(&tenant("absent.example.com", "east"))
    );
    assert!(
        matches!(&e, Error::NotFound { kind: Kind::Tenant, key } if key == "absent.example.com"),
        "{e:?}"
    );
    let e = rejected!(
        test_db,
        db.update_tenant(&tenant("taken.example.com", "nowhere"))
    );
    assert!(
        matches!(
            &e,
            Error::NotFound {
                kind: Kind::Server,
                ..
            }
        ),
        "{e:?}"
    );
    let e = rejected!(test_db, db.delete_tenant("absent.example.com"));
    assert!(e.is_not_found());
    let e = rejected!(test_db, db.get_tenant_by_domain("absent.example.com"));
    assert!(
        matches!(&e, Error::NotFound { kind: Kind::Tenant, key } if key == "absent.example.com"),
        "{e:?}"
    );
    let e = rejected!(test_db, db.list_tenants_on_server("nowhere"));
    assert!(e.is_not_found());
}

#[tokio::test]
async fn instance_calls_refuse_bad_input_without_touching_anything() {
    let (test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();
    let e = rejected!(test_db, db.spawn_instance("c", "api", "prod", "nowhere"));
    assert!(
        matches!(&e, Error::NotFound { kind: Kind::Server, key } if key == "nowhere"),
        "{e:?}"
    );
    let e = rejected!(test_db, db.spawn_instance("C", "api", "prod", "east"));
    assert_invalid(&e, "tenant");
    let e = rejected!(test_db, db.spawn_instance("c", "a.pi", "prod", "east"));
    assert_invalid(&e, "process");
    let e = rejected!(test_db, db.spawn_instance("c", "api", "", "east"));
    assert_invalid(&e, "instance_id");
    let e = rejected!(test_db, db.stop_instance("no-colon"));
    assert_invalid(&e, "instance");
    let e = rejected!(test_db, db.stop_instance("c:prod"));
    assert!(
        matches!(&e, Error::NotFound { kind: Kind::Instance, key } if key == "c:prod"),
        "{e:?}"
    );
    let e = rejected!(test_db, db.get_instance_status("c:prod"));
    assert!(e.is_not_found());
    let e = rejected!(test_db, db.list_instances_on_server("nowhere"));
    assert!(e.is_not_found());
    let e = rejected!(test_db, db.get_server_stats("nowhere"));
    assert!(e.is_not_found());
}

#[tokio::test]
async fn find_server_in_region_picks_most_free_usable() {
    let (_test_db, db) = temp_db().await;
    db.add_server(&server("a", Some("eu"), 1000)).await.unwrap();
    db.add_server(&server("b", Some("eu"), 3000)).await.unwrap();
    db.add_server(&server("c", Some("eu"), 9000)).await.unwrap();
    db.add_server(&server("d", Some("us"), 9999)).await.unwrap();
    assert_eq!(db.find_server_in_region("eu").await.unwrap().id, "c");

    let mut c = db.get_server("c").await.unwrap();
    c.status = ServerStatus::Draining;
    db.update_server(&c).await.unwrap();
    assert_eq!(db.find_server_in_region("eu").await.unwrap().id, "b");

    let mut b = db.get_server("b").await.unwrap();
    b.status = ServerStatus::Offline;
    db.update_server(&b).await.unwrap();
    assert_eq!(db.find_server_in_region("eu").await.unwrap().id, "a");

    let e = db.find_server_in_region("ap-south").await.unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { kind: Kind::Server, key } if key.contains("ap-south")),
        "{e:?}"
    );
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrations_run_once() {
    let test_db = TestDb::new().await;
    {
        let db = SlumDb::init(test_db.url()).await.unwrap();
        db.add_server(&server("east", None, 10)).await.unwrap();
        db.add_tenant(&tenant("a.example.com", "east"))
            .await
            .unwrap();
    }
    let db = SlumDb::init(test_db.url()).await.unwrap();
    assert_eq!(db.list_servers().await.unwrap().len(), 1);
    assert_eq!(db.list_tenants().await.unwrap().len(), 1);
    let versions = test_db.migration_versions().await;
    assert!(!versions.is_empty());
    assert_eq!(versions, test_db.migration_files(), "each migration once");
    // SQLite only: its journal mode is slum's choice (PostgreSQL always logs
    // ahead of writing).
    if let Some(path) = test_db.sqlite_path() {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_writers_lose_nothing() {
    let (_test_db, db) = temp_db().await;
    let mut tasks = Vec::new();
    for w in 0..50 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("srv-{w}");
            db.add_server(&server(&id, Some("eu"), 1000)).await?;
            for t in 0..20 {
                db.add_tenant(&tenant(&format!("t{t}.w{w}.example.com"), &id))
                    .await?;
            }
            // Everybody also races for the same domain: exactly one must win.
            let raced = db.add_tenant(&tenant("contested.example.com", &id)).await;
            Ok::<_, Error>(raced.is_ok())
        }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(won) => winners += usize::from(won),
            Err(e) => panic!("a concurrent writer failed: {e}"),
        }
    }
    assert_eq!(winners, 1, "exactly one writer gets the contested domain");
    assert_eq!(db.list_servers().await.unwrap().len(), 50);
    let tenants = db.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 50 * 20 + 1);
    let mut domains: Vec<_> = tenants.iter().map(|t| &t.domain).collect();
    domains.dedup();
    assert_eq!(domains.len(), tenants.len(), "no duplicates");
}

/// The writer half of the durability test: adds tenants in a loop and prints each
/// one after the call returned `Ok`. Only does anything when run by
/// `writes_survive_kill_9` (which sets `SLUM_DURABILITY_DB`).
#[tokio::test]
#[ignore = "run as a child process by writes_survive_kill_9"]
async fn durability_writer() {
    let Some(path) = std::env::var_os("SLUM_DURABILITY_DB") else {
        return;
    };
    let db = SlumDb::init(&path).await.unwrap();
    db.add_server(&server("east", None, 10)).await.unwrap();
    println!("ready");
    for i in 0.. {
        db.add_tenant(&tenant(&format!("t{i}.example.com"), "east"))
            .await
            .unwrap();
        println!("done t{i}.example.com");
    }
}

#[tokio::test]
async fn writes_survive_kill_9() {
    // On PostgreSQL the child writes to the test's database like any client.
    let test_db = TestDb::new().await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["durability_writer", "--exact", "--ignored", "--nocapture"])
        .env("SLUM_DURABILITY_DB", test_db.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reported = Vec::new();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(domain) = line.strip_prefix("done ") {
            reported.push(domain.to_owned());
            if reported.len() == 300 {
                // std's Child::kill is SIGKILL on Unix.
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(reported.len(), 300, "the writer reported too few writes");
    let db = SlumDb::init(test_db.url()).await.unwrap();
    for domain in &reported {
        db.get_tenant_by_domain(domain)
            .await
            .unwrap_or_else(|e| panic!("{domain} was reported written but is gone: {e}"));
    }
}

/// Memory each racing reservation asks for; the server fits exactly
/// `RACE_CAPACITY_MB / RACE_MB` of them.
const RACE_MB: i64 = 25;
const RACE_CAPACITY_MB: i64 = 1000;

/// Races `per_pool` reservations on server "east" through each of `pools`
/// stores of its own; the number that won. Every refusal must be a capacity one.
async fn race_reservations(test_db: &TestDb, racer: &str, pools: usize, per_pool: usize) -> usize {
    let mut tasks = Vec::new();
    for p in 0..pools {
        let store = test_db.open_store().await;
        for k in 0..per_pool {
            let store = std::sync::Arc::clone(&store);
            let instance = slum::Instance {
                tenant: format!("{racer}-{p}-{k}"),
                instance_id: "prod".into(),
                process: "api".into(),
                server_id: "east".into(),
                memory_mb: RACE_MB,
                ..Default::default()
            };
            tasks.push(tokio::spawn(async move {
                match store.reserve_instance(&instance).await {
                    Ok(()) => true,
                    Err(Error::InsufficientCapacity { server, .. }) if server == "east" => false,
                    Err(e) => panic!("reservation failed for another reason: {e}"),
                }
            }));
        }
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("racer task"));
    }
    won
}

/// The child half of `reservations_from_many_processes_never_overbook`: connects,
/// says "ready", waits for "go" on stdin, races, prints "won N". Only does
/// anything when run by that test (which sets `SLUM_RACE_DB`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by reservations_from_many_processes_never_overbook"]
async fn reservation_racer() {
    let (Some(url), Some(racer)) = (
        std::env::var_os("SLUM_RACE_DB"),
        std::env::var("SLUM_RACE_NAME").ok(),
    ) else {
        return;
    };
    let test_db = TestDb::existing(url.to_str().unwrap());
    let _warm = test_db.open_store().await;
    println!("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let won = race_reservations(&test_db, &racer, 4, 40).await;
    println!("won {won}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_from_many_processes_never_overbook() {
    let (test_db, db) = temp_db().await;
    db.add_server(&server("east", None, RACE_CAPACITY_MB))
        .await
        .unwrap();
    let mut children = Vec::new();
    for racer in ["p1", "p2"] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["reservation_racer", "--exact", "--ignored", "--nocapture"])
            .env("SLUM_RACE_DB", test_db.url())
            .env("SLUM_RACE_NAME", racer)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.by_ref().map_while(Result::ok).any(|l| l == "ready"),
            "racer {racer} did not get ready"
        );
        children.push((child, lines));
    }
    // Everybody starts at once: the children, and 4 pools of this process.
    for (child, _) in &mut children {
        use std::io::Write;
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut won = race_reservations(&test_db, "p0", 4, 40).await;
    for (mut child, lines) in children {
        // Read to the end: the racer's harness still writes after "won".
        let out: Vec<String> = lines.map_while(Result::ok).collect();
        let report = out
            .iter()
            .find_map(|l| l.strip_prefix("won "))
            .expect("racer reports its wins");
        won += report.parse::<usize>().unwrap();
        assert!(child.wait().unwrap().success(), "a racer failed");
    }

    let fits = usize::try_from(RACE_CAPACITY_MB / RACE_MB).unwrap();
    assert_eq!(
        won, fits,
        "3 racers x 160 x {RACE_MB} MB for {RACE_CAPACITY_MB} MB"
    );
    let east = db.get_server("east").await.unwrap();
    assert_eq!(east.used_capacity_mb(), RACE_CAPACITY_MB, "full, not over");
    assert_eq!(db.list_instance_records().await.unwrap().len(), fits);
}

#[tokio::test]
async fn the_routing_version_moves_with_routing_changes_only() {
    let (test_db, db) = temp_db().await;
    let store = test_db.open_store().await;
    let mut last = db.fleet_version().await.unwrap();
    // Whether the version moved since the last look.
    macro_rules! moved {
        () => {{
            let now = db.fleet_version().await.unwrap();
            assert!(now >= last, "the version never goes back");
            let moved = now != last;
            last = now;
            moved
        }};
    }
    let mut check = Vec::new();

    db.add_server(&server("east", None, 1000)).await.unwrap();
    check.push(("add a server", true, moved!()));
    let mut east = db.get_server("east").await.unwrap();
    east.capacity_mb = 2000;
    east.region = Some("eu".into());
    store.update_server(&east, true).await.unwrap();
    check.push(("change capacity and region only", false, moved!()));
    east.url = "http://127.0.0.1:10".into();
    store.update_server(&east, true).await.unwrap();
    check.push(("change the url", true, moved!()));
    store
        .set_server_health(
            "east",
            ServerStatus::Unknown,
            ServerStatus::Unknown,
            Some(chrono::Utc::now()),
        )
        .await
        .unwrap();
    check.push(("a health check that changes nothing", false, moved!()));
    // A check that saw a stale status writes nothing.
    assert!(!store
        .set_server_health(
            "east",
            ServerStatus::Offline,
            ServerStatus::Online,
            Some(chrono::Utc::now()),
        )
        .await
        .unwrap());
    check.push(("a stale health transition", false, moved!()));
    assert!(store
        .set_server_health(
            "east",
            ServerStatus::Unknown,
            ServerStatus::Online,
            Some(chrono::Utc::now()),
        )
        .await
        .unwrap());
    check.push(("the server comes online", true, moved!()));
    assert!(store
        .set_server_routing_problem("east", Some("routes by a different domain"))
        .await
        .unwrap());
    check.push(("a routing problem is found", true, moved!()));
    assert!(!store
        .set_server_routing_problem("east", Some("routes by a different domain"))
        .await
        .unwrap());
    check.push(("the same routing problem again", false, moved!()));
    assert!(store
        .set_server_routing_problem("east", None)
        .await
        .unwrap());
    check.push(("the routing problem is gone", true, moved!()));

    db.add_tenant(&tenant("a.example.com", "east"))
        .await
        .unwrap();
    check.push(("add a tenant", true, moved!()));
    let instance = slum::Instance {
        tenant: "a".into(),
        instance_id: "prod".into(),
        process: "api".into(),
        server_id: "east".into(),
        memory_mb: 10,
        ..Default::default()
    };
    store.reserve_instance(&instance).await.unwrap();
    check.push(("place an instance", true, moved!()));
    store
        .set_instance_observed(
            "a",
            "prod",
            slum::InstanceState::Running,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    check.push(("observe an instance", false, moved!()));
    store
        .set_instance_desired("a", "prod", slum::DesiredState::Stopped)
        .await
        .unwrap();
    check.push(("want an instance stopped", true, moved!()));
    store.delete_instance("a", "prod").await.unwrap();
    check.push(("remove an instance", true, moved!()));
    db.delete_tenant("a.example.com").await.unwrap();
    check.push(("remove a tenant", true, moved!()));
    db.create_api_token("ops").await.unwrap();
    check.push(("create an API token", false, moved!()));
    db.delete_server("east").await.unwrap();
    check.push(("remove a server", true, moved!()));

    let wrong: Vec<_> = check
        .iter()
        .filter(|(_, expected, moved)| expected != moved)
        .collect();
    assert!(wrong.is_empty(), "(change, should move, moved): {wrong:?}");
    assert_eq!(last, 11, "one step per routing change, from 0");
}

/// An instance record of `tenant` on `server`, 64 MB.
fn placed(tenant: &str, id: &str, server: &str) -> slum::Instance {
    slum::Instance {
        tenant: tenant.into(),
        instance_id: id.into(),
        process: "api".into(),
        server_id: server.into(),
        memory_mb: 64,
        ..Default::default()
    }
}

/// Observed states and sightings are written in batches (SQLite: a statement
/// of a few hundred rows each): every row named is written, across batches;
/// an instance gone or a server in another status is skipped, and the counts
/// say so.
#[tokio::test]
async fn batched_observations_and_sightings_write_every_row_they_name() {
    use slum::InstanceState::{Running, Unhealthy};
    let (test_db, db) = temp_db().await;
    let store = test_db.open_store().await;
    db.add_server(&server("east", None, 1_000_000))
        .await
        .unwrap();
    db.add_server(&server("west", None, 1_000_000))
        .await
        .unwrap();
    assert!(store
        .set_server_health("east", ServerStatus::Unknown, ServerStatus::Online, None)
        .await
        .unwrap());
    // More than two of SQLite's batches.
    const N: usize = 1_100;
    for i in 0..N {
        store
            .reserve_instance(&placed(&format!("t{i}"), "prod", "east"))
            .await
            .unwrap();
    }
    let state = |i: usize| if i % 3 == 0 { Unhealthy } else { Running };
    let mut observed: Vec<(String, String, slum::InstanceState)> = (0..N)
        .map(|i| (format!("t{i}"), "prod".to_owned(), state(i)))
        .collect();
    observed.insert(N / 2, ("gone".into(), "prod".into(), Running));
    let at = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
    assert_eq!(
        store.set_instances_observed(&observed, at).await.unwrap(),
        N as u64
    );
    let records = db.list_instance_records().await.unwrap();
    assert_eq!(records.len(), N, "no instance made for the one gone");
    for r in &records {
        let i: usize = r.tenant[1..].parse().unwrap();
        assert_eq!(
            (r.observed, r.observed_at),
            (state(i), Some(at)),
            "{}",
            r.tenant
        );
    }

    let seen = [
        ("east".to_owned(), ServerStatus::Online),
        // Unknown in the database: a check that saw it online is stale.
        ("west".to_owned(), ServerStatus::Online),
        ("nowhere".to_owned(), ServerStatus::Online),
    ];
    assert_eq!(db.record_servers_seen(&seen, at).await.unwrap(), 1);
    let east = db.get_server("east").await.unwrap();
    assert_eq!(
        (east.status, east.last_seen),
        (ServerStatus::Online, Some(at))
    );
    let west = db.get_server("west").await.unwrap();
    assert_eq!((west.status, west.last_seen), (ServerStatus::Unknown, None));
}

/// A server's reconcile reads the instances placed on it and those moving
/// to it, each whole (SQLite hands them over as one JSON document), sorted
/// by key.
#[tokio::test]
async fn a_servers_instances_are_those_on_it_and_those_moving_to_it() {
    let (test_db, db) = temp_db().await;
    let store = test_db.open_store().await;
    for s in ["east", "west"] {
        db.add_server(&server(s, None, 1000)).await.unwrap();
    }
    for i in [
        placed("b", "prod", "east"),
        placed("a", "prod", "east"),
        placed("a", "backup", "west"),
        placed("c", "prod", "west"),
    ] {
        store.reserve_instance(&i).await.unwrap();
    }
    store.begin_move("c", "prod", "east").await.unwrap();
    let at = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
    store
        .set_instance_observed("b", "prod", slum::InstanceState::Unhealthy, at)
        .await
        .unwrap();
    let all = db.list_instance_records().await.unwrap();
    let record = |key: &str| all.iter().find(|i| i.key() == key).unwrap().clone();
    let east = store.list_instances_touching("east").await.unwrap();
    assert_eq!(
        east,
        vec![record("a:prod"), record("b:prod"), record("c:prod")]
    );
    assert_eq!(east[2].moving_to.as_deref(), Some("east"));
    assert_eq!(
        (east[1].observed, east[1].observed_at),
        (slum::InstanceState::Unhealthy, Some(at))
    );
    let west = store.list_instances_touching("west").await.unwrap();
    assert_eq!(west, vec![record("a:backup"), record("c:prod")]);
    assert!(store
        .list_instances_touching("nowhere")
        .await
        .unwrap()
        .is_empty());
}

/// A server's routing problem stays through changes that do not move its
/// address (a drain's, an operator's capacity), and goes with a new url or
/// domain, which the old check says nothing of.
#[tokio::test]
async fn a_routing_problem_stays_until_the_servers_address_changes() {
    let (_test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1000)).await.unwrap();
    assert_eq!(db.get_server("east").await.unwrap().routing_problem, None);
    let problem = "routes by a different domain than '127.0.0.1'";
    assert!(db
        .record_routing_problem("east", Some(problem))
        .await
        .unwrap());
    let e = db
        .record_routing_problem("nowhere", Some(problem))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");

    let mut east = db.get_server("east").await.unwrap();
    assert_eq!(east.routing_problem.as_deref(), Some(problem));
    east.capacity_mb = 2000;
    east.status = ServerStatus::Draining;
    east.routing_problem = None;
    db.fleet().update_server(&east).await.unwrap();
    db.fleet().update_server_settings(&east).await.unwrap();
    let stored = db.get_server("east").await.unwrap();
    assert_eq!(stored.capacity_mb, 2000);
    assert_eq!(stored.routing_problem.as_deref(), Some(problem), "kept");

    east.domain = Some("east.fleet.test".into());
    db.fleet().update_server_settings(&east).await.unwrap();
    assert_eq!(db.get_server("east").await.unwrap().routing_problem, None);
    db.record_routing_problem("east", Some(problem))
        .await
        .unwrap();
    east.url = "http://127.0.0.1:10".into();
    db.fleet().update_server(&east).await.unwrap();
    assert_eq!(db.get_server("east").await.unwrap().routing_problem, None);
}

/// A draining server that dies goes offline (so that its tenants fail over)
/// and comes back draining; one that was undrained comes back online.
#[tokio::test]
async fn a_drain_outlives_the_servers_death() {
    let (_test_db, db) = temp_db().await;
    db.add_server(&Server {
        id: "east".into(),
        url: "http://127.0.0.1:9".into(),
        status: ServerStatus::Draining,
        ..Default::default()
    })
    .await
    .unwrap();
    let health = |expected, to| db.record_server_health("east", expected, to, None);
    let status = || async { db.get_server("east").await.unwrap().status };
    assert!(health(ServerStatus::Draining, ServerStatus::Offline)
        .await
        .unwrap());
    assert_eq!(status().await, ServerStatus::Offline);
    assert!(health(ServerStatus::Offline, ServerStatus::Online)
        .await
        .unwrap());
    assert_eq!(status().await, ServerStatus::Draining, "still draining");

    // Undrained by the operator: back online after the next death.
    let mut east = db.get_server("east").await.unwrap();
    east.status = ServerStatus::Online;
    db.update_server(&east).await.unwrap();
    assert!(health(ServerStatus::Online, ServerStatus::Offline)
        .await
        .unwrap());
    assert!(health(ServerStatus::Offline, ServerStatus::Online)
        .await
        .unwrap());
    assert_eq!(status().await, ServerStatus::Online);

    // Drained by an update this time.
    east.status = ServerStatus::Draining;
    db.update_server(&east).await.unwrap();
    assert!(health(ServerStatus::Draining, ServerStatus::Offline)
        .await
        .unwrap());
    assert!(health(ServerStatus::Offline, ServerStatus::Online)
        .await
        .unwrap());
    assert_eq!(status().await, ServerStatus::Draining);
}

/// A cordon keeps new instances and moves off a server and out of automatic
/// placement, leaves its routing alone (no entry in the route change feed),
/// and outlives the server's death and return: only an uncordon lifts it.
#[tokio::test]
async fn a_cordon_keeps_placements_off_until_lifted_whatever_the_health() {
    let (test_db, db) = temp_db().await;
    let store = test_db.open_store().await;
    db.add_server(&server("east", Some("eu"), 1000))
        .await
        .unwrap();
    db.add_server(&server("west", Some("eu"), 500))
        .await
        .unwrap();
    let before = db.fleet_version().await.unwrap();
    let east = db.set_cordoned("east", true).await.unwrap();
    assert!(east.cordoned && !east.is_usable(), "{east:?}");
    assert_eq!(east.state_text(), "unknown,cordoned");
    assert_eq!(
        db.fleet_version().await.unwrap(),
        before,
        "routing unchanged"
    );
    let e = db.set_cordoned("nowhere", true).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");

    let instance = |server: &str| slum::Instance {
        tenant: "a".into(),
        instance_id: "prod".into(),
        process: "api".into(),
        server_id: server.into(),
        memory_mb: 10,
        ..Default::default()
    };
    let e = rejected!(test_db, store.reserve_instance(&instance("east")));
    assert_eq!(
        e.to_string(),
        "server 'east' is cordoned: it takes no new instances"
    );
    assert_eq!(db.find_server_in_region("eu").await.unwrap().id, "west");
    store.reserve_instance(&instance("west")).await.unwrap();
    let e = rejected!(test_db, store.begin_move("a", "prod", "east"));
    assert!(matches!(e, Error::ServerUnavailable { .. }), "{e:?}");

    // Dead and back: still cordoned.
    let health = |expected, to| db.record_server_health("east", expected, to, None);
    assert!(health(ServerStatus::Unknown, ServerStatus::Offline)
        .await
        .unwrap());
    assert!(health(ServerStatus::Offline, ServerStatus::Online)
        .await
        .unwrap());
    let east = db.get_server("east").await.unwrap();
    assert_eq!(east.state_text(), "online,cordoned");
    // An operator's update of its settings leaves the cordon alone.
    db.fleet().update_server_settings(&east).await.unwrap();
    assert!(db.get_server("east").await.unwrap().cordoned);

    let east = db.set_cordoned("east", false).await.unwrap();
    assert!(!east.cordoned && east.is_usable(), "{east:?}");
    store.begin_move("a", "prod", "east").await.unwrap();

    // The old copy is to be stopped once the move's grace is over.
    let before = chrono::Utc::now();
    store
        .finish_move("a", "prod", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let pending = store.list_pending_stops().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        (pending[0].server_id.as_str(), pending[0].name.as_str()),
        ("west", "api:a")
    );
    let wait = pending[0].stop_after - before;
    assert!(
        wait >= chrono::Duration::seconds(59) && wait <= chrono::Duration::seconds(61),
        "{pending:?}"
    );
    // One whose stop failed is recorded again, due at once.
    assert!(store.delete_pending_stop("west", "api:a").await.unwrap());
    store.add_pending_stop("west", "api:a").await.unwrap();
    let again = store.list_pending_stops().await.unwrap();
    assert!(again[0].stop_after <= chrono::Utc::now(), "{again:?}");
}

/// A listed instance names the domains of its tenant's process: those routed
/// to it and those it backs up, not another process's.
#[tokio::test]
async fn listed_instances_name_the_domains_of_their_process() {
    let (test_db, db) = temp_db().await;
    let store = test_db.open_store().await;
    db.add_server(&server("east", None, 1000)).await.unwrap();
    db.add_tenant(&tenant("b.example.com", "east"))
        .await
        .unwrap();
    db.add_tenant(&Tenant {
        name: "b".into(),
        ..tenant("a.b-shop.example.com", "east")
    })
    .await
    .unwrap();
    db.add_tenant(&Tenant {
        name: "b".into(),
        process: "web".into(),
        ..tenant("web.b.example.com", "east")
    })
    .await
    .unwrap();
    for (id, tenant) in [("prod", "b"), ("backup", "b"), ("prod", "orphan")] {
        let instance = slum::Instance {
            tenant: tenant.into(),
            instance_id: id.into(),
            process: "api".into(),
            server_id: "east".into(),
            memory_mb: 1,
            ..Default::default()
        };
        if id == "backup" {
            // One instance of a process per server: the backup is elsewhere.
            db.add_server(&server("west", None, 1000)).await.unwrap();
            store
                .reserve_instance(&slum::Instance {
                    server_id: "west".into(),
                    ..instance
                })
                .await
                .unwrap();
        } else {
            store.reserve_instance(&instance).await.unwrap();
        }
    }
    let page = db
        .list_instances_page(None, &PageRequest::default())
        .await
        .unwrap();
    let domains: Vec<(String, Vec<String>)> = page
        .items
        .iter()
        .map(|s| (s.instance.key(), s.domains.clone()))
        .collect();
    let both = vec![
        "a.b-shop.example.com".to_owned(),
        "b.example.com".to_owned(),
    ];
    assert_eq!(
        domains,
        [
            ("b:backup".to_owned(), both.clone()),
            ("b:prod".to_owned(), both),
            ("orphan:prod".to_owned(), vec![]),
        ]
    );
}

/// One random step on the instances of a small fleet, through the store as
/// slum's calls make them: reserve, start and finish or abort a move, stop
/// (desired stopped), delete. Refusals are expected; an error of the database
/// itself (a deadlock, a lost connection) is not.
async fn random_instance_step(
    store: &dyn slum::store::Store,
    rng: &mut rand::rngs::StdRng,
    servers: &[&str],
) {
    use rand::Rng;
    use slum::{DesiredState, Instance};
    let tenant = format!("t{}", rng.gen_range(0..6));
    let instance_id = format!("i{}", rng.gen_range(0..3));
    let server = servers[rng.gen_range(0..servers.len())];
    let result = match rng.gen_range(0..6) {
        0 | 1 => {
            store
                .reserve_instance(&Instance {
                    tenant: tenant.clone(),
                    instance_id: instance_id.clone(),
                    process: format!("p{}", rng.gen_range(0..2)),
                    server_id: server.to_owned(),
                    memory_mb: rng.gen_range(0..300),
                    ..Default::default()
                })
                .await
        }
        2 => store.begin_move(&tenant, &instance_id, server).await,
        3 => {
            store
                .finish_move(&tenant, &instance_id, std::time::Duration::ZERO)
                .await
        }
        4 => match rng.gen_range(0..3) {
            0 => store.abort_move(&tenant, &instance_id).await,
            1 => {
                store
                    .set_instance_desired(&tenant, &instance_id, DesiredState::Stopped)
                    .await
            }
            _ => store.delete_instance(&tenant, &instance_id).await,
        },
        _ => store.delete_instance(&tenant, &instance_id).await,
    };
    if let Err(e) = result {
        assert!(
            !matches!(e, Error::Database(_)),
            "a database error, not a refusal: {e:?}"
        );
    }
}

/// The servers' used memory is a counter the instances' triggers keep: after
/// every step of random reservations, moves (begun, finished, aborted), stops
/// and deletions it equals the sum of the memory of the instances placed on
/// or moving to each server, never exceeds its capacity, and moving it
/// records no routing change of the server.
#[tokio::test]
async fn used_capacity_counter_equals_the_sum_after_random_steps() {
    use rand::SeedableRng;
    let (test_db, db) = temp_db().await;
    let store = test_db.open_store().await;
    let servers = ["a", "b", "c", "d"];
    for id in servers {
        db.add_server(&server(id, None, 700)).await.unwrap();
    }
    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for step in 0..400 {
        let before = db.fleet_version().await.unwrap();
        random_instance_step(&*store, &mut rng, &servers).await;
        let feed = db.route_changes_after(before, 1000).await.unwrap();
        assert!(
            feed.iter()
                .all(|c| !matches!(c.key, slum::store::RouteKey::Server(_))),
            "step {step} (seed {seed}): the counter fed a server change: {feed:?}"
        );
        for (id, used, sum) in test_db.used_mb_against_sum().await {
            assert_eq!(used, sum, "server {id} after step {step} (seed {seed})");
            assert!(used <= 700, "server {id} overbooked after step {step}");
        }
    }
    let listed: Vec<i64> = db
        .list_servers()
        .await
        .unwrap()
        .iter()
        .map(|s| s.used_capacity_mb())
        .collect();
    let summed: Vec<i64> = test_db
        .used_mb_against_sum()
        .await
        .into_iter()
        .map(|(_, _, sum)| sum)
        .collect();
    assert_eq!(listed, summed, "list_servers reads the counter");
}

/// The same steps from eight tasks at once: the counter still equals the sum,
/// and no server is ever booked past its capacity (on PostgreSQL, where
/// writers run side by side, the reservation's row lock and the triggers'
/// updates of the same row take turns).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn used_capacity_counter_holds_under_concurrent_steps() {
    use rand::SeedableRng;
    let (test_db, db) = temp_db().await;
    let store = test_db.open_store().await;
    let servers = ["a", "b", "c"];
    for id in servers {
        db.add_server(&server(id, None, 500)).await.unwrap();
    }
    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let tasks: Vec<_> = (0..8u64)
        .map(|n| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ n);
                for _ in 0..60 {
                    random_instance_step(&*store, &mut rng, &servers).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for (id, used, sum) in test_db.used_mb_against_sum().await {
        assert_eq!(used, sum, "server {id} (seed {seed})");
        assert!(used <= 500, "server {id} overbooked: {used} MB of 500");
    }
}

// ----- certificates -----

/// The route change feed's entries after `before`, as keys.
async fn feed_after(db: &SlumDb, before: i64) -> Vec<slum::store::RouteKey> {
    db.route_changes_after(before, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.key)
        .collect()
}

fn upload(name: &str, cert: &common::certs::TestCert) -> UploadedCertificate {
    UploadedCertificate {
        name: name.into(),
        cert_pem: cert.cert_pem.clone(),
        key_pem: SecretPem::new(cert.key_pem.clone()),
        redirect: None,
    }
}

#[tokio::test]
async fn certificates_are_put_listed_shown_and_removed() {
    let (_test_db, db) = temp_db().await;
    let shop = certs::with_ca(&["shop.example.com"]);
    let info = db
        .put_certificate(&upload("Shop.Example.com.", &shop))
        .await
        .unwrap();
    assert_eq!(info.name, "shop.example.com");
    assert_eq!(info.source, CertificateSource::Uploaded);
    assert_eq!(info.state, CertificateState::Issued);
    let now = chrono::Utc::now();
    let not_after = info.not_after.expect("validity read from the leaf");
    assert!(not_after > now, "{not_after}");
    assert!(info.not_before.expect("not_before") <= now);
    assert_eq!(info.redirect, None);
    assert_eq!(
        db.certificate("shop.example.com").await.unwrap(),
        Some(info)
    );

    let wild = certs::self_signed(&["*.example.com"]);
    db.put_certificate(&upload("*.example.com", &wild))
        .await
        .unwrap();
    // A wildcard certificate serves a name of its domain too.
    let mut under = upload("api.example.com", &wild);
    under.redirect = Some(true);
    assert_eq!(
        db.put_certificate(&under).await.unwrap().redirect,
        Some(true)
    );

    // Paged by name, as tenants are ('*' sorts before letters).
    let first = db.list_certificates(&PageRequest::first(2)).await.unwrap();
    let names: Vec<&str> = first.items.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["*.example.com", "api.example.com"]);
    assert_eq!(first.next.as_deref(), Some("api.example.com"));
    let rest = db
        .list_certificates(&PageRequest::after(2, "api.example.com"))
        .await
        .unwrap();
    let names: Vec<&str> = rest.items.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["shop.example.com"]);
    assert_eq!(rest.next, None);

    // What a router reads: the chain as given, the key, the redirect.
    let m = db
        .certificate_material("api.example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.chain_pem, wild.cert_pem);
    assert_eq!(m.key_pem.expose(), wild.key_pem);
    assert_eq!(m.redirect, Some(true));
    let mut streamed = Vec::new();
    db.for_each_certificate_material(&mut |name, _| streamed.push(name))
        .await
        .unwrap();
    streamed.sort();
    assert_eq!(
        streamed,
        ["*.example.com", "api.example.com", "shop.example.com"]
    );

    // Replacing keeps one row of the name.
    let again = certs::self_signed(&["shop.example.com"]);
    db.put_certificate(&upload("shop.example.com", &again))
        .await
        .unwrap();
    assert_eq!(
        db.certificate_material("shop.example.com")
            .await
            .unwrap()
            .unwrap()
            .chain_pem,
        again.cert_pem
    );

    db.remove_certificate("shop.example.com").await.unwrap();
    assert_eq!(db.certificate("shop.example.com").await.unwrap(), None);
    assert_eq!(
        db.certificate_material("shop.example.com").await.unwrap(),
        None
    );
    let e = db.remove_certificate("shop.example.com").await.unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { kind: Kind::Certificate, key } if key == "shop.example.com"),
        "{e:?}"
    );
}

/// Routers read a certificate again only when what they serve changes: the
/// row, its chain, key or redirect. Orders' bookkeeping feeds nothing.
#[tokio::test]
async fn the_feed_names_a_certificate_only_when_what_routers_serve_changes() {
    use slum::store::RouteKey::{Certificate, Challenge};
    let (_test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();
    db.add_tenant(&tenant("shop.example.com", "east"))
        .await
        .unwrap();
    let name = || "shop.example.com".to_owned();

    let v = db.fleet_version().await.unwrap();
    let cert = certs::self_signed(&["shop.example.com"]);
    db.put_certificate(&upload("shop.example.com", &cert))
        .await
        .unwrap();
    assert_eq!(feed_after(&db, v).await, [Certificate(name())]);

    let v = db.fleet_version().await.unwrap();
    db.put_certificate(&upload("shop.example.com", &cert))
        .await
        .unwrap();
    assert_eq!(feed_after(&db, v).await, [], "the same certificate again");
    let mut redirected = upload("shop.example.com", &cert);
    redirected.redirect = Some(false);
    db.put_certificate(&redirected).await.unwrap();
    assert_eq!(feed_after(&db, v).await, [Certificate(name())]);

    let v = db.fleet_version().await.unwrap();
    db.remove_certificate("shop.example.com").await.unwrap();
    assert_eq!(feed_after(&db, v).await, [Certificate(name())]);

    // An order: wanted (a new row), claimed and failed (bookkeeping), issued.
    let v = db.fleet_version().await.unwrap();
    assert!(db.want_certificate("shop.example.com").await.unwrap());
    assert_eq!(feed_after(&db, v).await, [Certificate(name())]);
    let v = db.fleet_version().await.unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(db
        .claim_certificate_order("shop.example.com", "router-1", now + 300)
        .await
        .unwrap());
    db.certificate_failed(
        "shop.example.com",
        "urn:acme:error:connection\nrefused",
        1,
        now - 1,
    )
    .await
    .unwrap();
    let failing = db.certificate("shop.example.com").await.unwrap().unwrap();
    assert_eq!(failing.state, CertificateState::Failing);
    assert_eq!(
        failing.last_error.as_deref(),
        Some("urn:acme:error:connection refused")
    );
    assert_eq!(failing.failures, 1);
    assert!(db
        .claim_certificate_order("shop.example.com", "router-1", now + 300)
        .await
        .unwrap());
    assert_eq!(feed_after(&db, v).await, [], "claims and failures");
    let issued = certs::self_signed(&["shop.example.com"]);
    db.certificate_issued(
        "shop.example.com",
        &issued.cert_pem,
        &SecretPem::new(issued.key_pem.clone()),
        now - 60,
        now + 90 * 86_400,
        now + 60 * 86_400,
    )
    .await
    .unwrap();
    assert_eq!(feed_after(&db, v).await, [Certificate(name())]);
    let info = db.certificate("shop.example.com").await.unwrap().unwrap();
    assert_eq!(info.source, CertificateSource::Acme);
    assert_eq!(info.state, CertificateState::Issued);
    assert_eq!((info.failures, info.last_error), (0, None));
    assert_eq!(
        info.next_try.map(|t| t.timestamp()),
        Some(now + 60 * 86_400)
    );
    assert_eq!(
        db.due_certificates(now, 10).await.unwrap(),
        Vec::<String>::new(),
        "renewal is not due yet"
    );

    // Challenges: each put and removal names the domain.
    let v = db.fleet_version().await.unwrap();
    db.put_http01("tok-1", "shop.example.com", "tok-1.thumb")
        .await
        .unwrap();
    let alpn = certs::self_signed(&["shop.example.com"]);
    db.put_alpn01(
        "shop.example.com",
        &alpn.cert_pem,
        &SecretPem::new(alpn.key_pem.clone()),
    )
    .await
    .unwrap();
    let challenges = db.challenges_for("shop.example.com").await.unwrap();
    assert_eq!(
        challenges.http01,
        [("tok-1".to_owned(), "tok-1.thumb".to_owned())]
    );
    assert_eq!(challenges.alpn01.unwrap().chain_pem, alpn.cert_pem);
    assert_eq!(db.challenge_domains().await.unwrap(), ["shop.example.com"]);
    db.remove_http01("tok-1").await.unwrap();
    db.remove_alpn01("shop.example.com").await.unwrap();
    assert_eq!(
        db.challenges_for("shop.example.com").await.unwrap(),
        Challenges::default()
    );
    let d = || Challenge("shop.example.com".to_owned());
    assert_eq!(feed_after(&db, v).await, [d(), d(), d(), d()]);
}

#[tokio::test]
async fn a_bad_certificate_is_refused_naming_its_field_and_changing_nothing() {
    let (test_db, db) = temp_db().await;
    let good = certs::self_signed(&["shop.example.com"]);
    let cases: Vec<(&str, UploadedCertificate)> = vec![
        ("certificate.name", upload("shop.*.com", &good)),
        ("certificate.name", upload("*.com", &good)),
        ("certificate.name", upload("bad_name.example.com", &good)),
        (
            "certificate.cert_pem",
            UploadedCertificate {
                cert_pem: "not a certificate".into(),
                ..upload("shop.example.com", &good)
            },
        ),
        (
            "certificate.cert_pem",
            UploadedCertificate {
                cert_pem: good.key_pem.clone(),
                ..upload("shop.example.com", &good)
            },
        ),
        (
            "certificate.cert_pem",
            UploadedCertificate {
                cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                ..upload("shop.example.com", &good)
            },
        ),
        (
            "certificate.key_pem",
            UploadedCertificate {
                key_pem: SecretPem::new("not a key"),
                ..upload("shop.example.com", &good)
            },
        ),
        (
            "certificate.key_pem",
            UploadedCertificate {
                key_pem: SecretPem::new(certs::other_key()),
                ..upload("shop.example.com", &good)
            },
        ),
        // Names the certificate does not cover.
        ("certificate.cert_pem", upload("www.example.com", &good)),
        (
            "certificate.cert_pem",
            upload("a.b.example.com", &certs::self_signed(&["*.example.com"])),
        ),
        (
            "certificate.cert_pem",
            upload("*.example.com", &certs::self_signed(&["shop.example.com"])),
        ),
        (
            "certificate.cert_pem",
            upload("shop.example.com", &certs::expired(&["shop.example.com"])),
        ),
    ];
    for (field, cert) in cases {
        let key = cert.key_pem.expose().to_owned();
        let e = rejected!(test_db, db.put_certificate(&cert));
        assert_invalid(&e, field);
        let said = format!("{e} {e:?}");
        assert!(
            !said.contains(key.trim()) && !said.contains("PRIVATE KEY-----\n"),
            "the refusal quotes the key: {said}"
        );
    }
}

#[tokio::test]
async fn wanting_a_certificate_for_a_domain_no_tenant_has_is_refused() {
    let (test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();
    db.add_tenant(&tenant("shop.example.com", "east"))
        .await
        .unwrap();
    let e = rejected!(test_db, db.want_certificate("evil.example.org"));
    assert!(
        matches!(&e, Error::NotFound { kind: Kind::Tenant, key } if key == "evil.example.org"),
        "{e:?}"
    );
    let e = rejected!(test_db, db.want_certificate("*.example.com"));
    assert_invalid(&e, "domain");

    assert!(db.want_certificate("Shop.Example.com").await.unwrap());
    let info = db.certificate("shop.example.com").await.unwrap().unwrap();
    assert_eq!(
        (info.source, info.state),
        (CertificateSource::Acme, CertificateState::Pending)
    );
    assert_eq!(info.not_after, None);
    assert_eq!(
        db.certificate_material("shop.example.com").await.unwrap(),
        None
    );
    // Wanted again, or wanted while an upload is there: nothing changes.
    assert!(!db.want_certificate("shop.example.com").await.unwrap());
    db.add_tenant(&tenant("up.example.com", "east"))
        .await
        .unwrap();
    let up = certs::self_signed(&["up.example.com"]);
    db.put_certificate(&upload("up.example.com", &up))
        .await
        .unwrap();
    let before = test_db.dump().await;
    assert!(!db.want_certificate("up.example.com").await.unwrap());
    assert_eq!(before, test_db.dump().await);
    // An upload is never ordered: it is not due, and cannot be claimed.
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        db.due_certificates(now, 10).await.unwrap(),
        ["shop.example.com"]
    );
    assert!(!db
        .claim_certificate_order("up.example.com", "r", now + 60)
        .await
        .unwrap());
}

/// One order per name, fleet-wide: of routers claiming at once, one gets it;
/// the claim makes the order due again at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_is_claimed_by_one_router_only() {
    let (test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();
    db.add_tenant(&tenant("shop.example.com", "east"))
        .await
        .unwrap();
    db.want_certificate("shop.example.com").await.unwrap();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        db.due_certificates(now, 10).await.unwrap(),
        ["shop.example.com"]
    );

    // Eight routers, each with its own connections to the database.
    let mut routers = Vec::new();
    for n in 0..8 {
        let router = test_db.open().await;
        routers.push(tokio::spawn(async move {
            router
                .claim_certificate_order("shop.example.com", &format!("router-{n}"), now + 300)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for r in routers {
        won += usize::from(r.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one router claims the order");
    assert!(!db
        .claim_certificate_order("shop.example.com", "late", now + 300)
        .await
        .unwrap());
    assert!(db.due_certificates(now, 10).await.unwrap().is_empty());
    assert_eq!(
        db.due_certificates(now + 300, 10).await.unwrap(),
        ["shop.example.com"],
        "due again once the claim ends"
    );
}

#[tokio::test]
async fn keys_are_absent_from_debug_and_serde() {
    let (_test_db, db) = temp_db().await;
    let cert = certs::self_signed(&["shop.example.com"]);
    let key_body: String = cert
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let uploaded = upload("shop.example.com", &cert);
    let info = db.put_certificate(&uploaded).await.unwrap();
    let material = db
        .certificate_material("shop.example.com")
        .await
        .unwrap()
        .unwrap();
    db.put_acme_account(
        "https://ca.test/dir",
        &SecretPem::new("{\"secret\":\"hunter2\"}"),
    )
    .await
    .unwrap();
    let (directory, credentials) = db.acme_account().await.unwrap().unwrap();
    assert_eq!(directory, "https://ca.test/dir");
    assert_eq!(credentials.expose(), "{\"secret\":\"hunter2\"}");
    let shown = [
        format!("{uploaded:?}"),
        format!("{info:?}"),
        format!("{material:?}"),
        format!("{credentials:?}"),
        serde_json::to_string(&info).unwrap(),
    ];
    for text in shown {
        assert!(!text.contains(&key_body[..40]), "a key in {text}");
        assert!(!text.contains("PRIVATE KEY"), "a key in {text}");
        assert!(!text.contains("hunter2"), "credentials in {text}");
    }
}

/// The kinds of a page of events, oldest first.
fn kinds(events: &[slum::events::Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

#[tokio::test]
async fn events_are_recorded_with_their_router_and_paged_by_server_tenant_and_id() {
    use slum::events::{EventKind, EventLevel, EventQuery, NewEvent};
    let (_test_db, db) = temp_db().await;
    db.set_router_name("edge-1:8080 (pid 42)");
    db.add_server(&server("s1", None, 1024)).await.unwrap();
    db.add_server(&server("s2", None, 1024)).await.unwrap();
    db.add_tenant(&tenant("acme.com", "s1")).await.unwrap();
    let mut s1 = db.get_server("s1").await.unwrap();
    s1.capacity_mb = 2048;
    s1.token = Some("hunter2-token".into());
    db.update_server(&s1).await.unwrap();
    db.record_event(
        NewEvent::new(EventKind::Spawned, "spawned on s2")
            .server("s2")
            .instance("acme:prod"),
    )
    .await;
    let all = db.events(&EventQuery::default()).await.unwrap();
    assert_eq!(
        kinds(&all.items),
        [
            "server-added",
            "server-added",
            "tenant-added",
            "server-updated",
            "server-token-changed",
            "spawned"
        ]
    );
    assert!(all.items.windows(2).all(|w| w[0].id < w[1].id), "by id");
    for e in &all.items {
        assert_eq!(e.router, "edge-1:8080 (pid 42)");
        assert!(!e.cause.contains("hunter2"), "a token in {e:?}");
        assert_eq!(e.level, EventLevel::Normal);
    }
    assert_eq!(all.items[3].cause, "capacity 1024 MB -> 2048 MB");
    assert_eq!(all.items[5].instance.as_deref(), Some("acme:prod"));

    let of = |server: Option<&str>, tenant: Option<&str>| EventQuery {
        server: server.map(Into::into),
        tenant: tenant.map(Into::into),
        ..Default::default()
    };
    let s1_events = db.events(&of(Some("s1"), None)).await.unwrap().items;
    assert_eq!(
        kinds(&s1_events),
        [
            "server-added",
            "tenant-added",
            "server-updated",
            "server-token-changed"
        ]
    );
    let acme = db.events(&of(None, Some("acme"))).await.unwrap().items;
    assert_eq!(kinds(&acme), ["tenant-added", "spawned"]);
    let both = db
        .events(&of(Some("s2"), Some("acme")))
        .await
        .unwrap()
        .items;
    assert_eq!(kinds(&both), ["spawned"]);

    // Without `after`: the newest `limit`, oldest first.
    let newest = db
        .events(&EventQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kinds(&newest.items), ["server-token-changed", "spawned"]);
    // With it: a walk by id, page after page.
    let mut walked = Vec::new();
    let mut after = 0;
    loop {
        let page = db
            .events(&EventQuery {
                after: Some(after),
                limit: 4,
                ..Default::default()
            })
            .await
            .unwrap();
        walked.extend(page.items);
        match page.next {
            Some(next) => after = next.parse().unwrap(),
            None => break,
        }
    }
    assert_eq!(walked, all.items);
    // Since a time: from the first event at or after it.
    let since = |at| EventQuery {
        since: Some(at),
        ..Default::default()
    };
    let hour = chrono::Duration::hours(1);
    let everything = db.events(&since(chrono::Utc::now() - hour)).await.unwrap();
    assert_eq!(everything.items, all.items);
    let none = db.events(&since(chrono::Utc::now() + hour)).await.unwrap();
    assert!(none.items.is_empty());

    // A warning, and the kinds removals record.
    db.delete_tenant("acme.com").await.unwrap();
    db.delete_server("s2").await.unwrap();
    db.record_event(NewEvent::new(EventKind::ServerOffline, "2 checks failed").server("s1"))
        .await;
    let last = db
        .events(&EventQuery {
            after: Some(all.items[5].id),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(
        kinds(&last),
        ["tenant-removed", "server-removed", "server-offline"]
    );
    assert_eq!(last[0].tenant.as_deref(), Some("acme"));
    assert_eq!(last[2].level, EventLevel::Warning);

    for bad in [
        EventQuery {
            limit: 0,
            ..Default::default()
        },
        EventQuery {
            server: Some("not a label".into()),
            ..Default::default()
        },
        EventQuery {
            after: Some(-1),
            ..Default::default()
        },
    ] {
        assert!(
            matches!(db.events(&bad).await, Err(Error::Invalid { .. })),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn events_are_trimmed_by_age_and_by_count_a_bounded_batch_at_a_time() {
    use slum::events::{EventQuery, EventRetention, EventRow};
    let (test_db, db) = temp_db().await;
    let store = test_db.open_store().await;
    let now = chrono::Utc::now();
    let row = |at, cause: &'static str| EventRow {
        at,
        kind: "spawned",
        server: Some("s1"),
        tenant: None,
        instance: None,
        cause,
        router: "test",
    };
    // Five of ten days ago, then five of now.
    for _ in 0..5 {
        store
            .insert_event(&row(now - chrono::Duration::days(10), "old"))
            .await
            .unwrap();
    }
    for _ in 0..5 {
        store.insert_event(&row(now, "new")).await.unwrap();
    }
    // One statement deletes at most its limit, the oldest first.
    assert_eq!(
        store
            .delete_events_before(now.timestamp_millis() - 1000, 2)
            .await
            .unwrap(),
        2
    );
    let week = EventRetention::default();
    assert_eq!(week.max_age, std::time::Duration::from_secs(7 * 86_400));
    assert_eq!(
        db.trim_events(&week, 10).await.unwrap(),
        3,
        "the rest of the old"
    );
    let page = |limit| EventQuery {
        limit,
        ..Default::default()
    };
    let left = db.events(&page(100)).await.unwrap().items;
    assert_eq!(left.len(), 5);
    assert!(left.iter().all(|e| e.cause == "new"));
    // Beyond the count kept: the oldest go.
    let two = EventRetention {
        max_count: 2,
        ..week
    };
    assert_eq!(db.trim_events(&two, 10).await.unwrap(), 3);
    let kept = db.events(&page(100)).await.unwrap().items;
    assert_eq!(
        kept.iter().map(|e| e.id).collect::<Vec<_>>(),
        left[3..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(db.trim_events(&two, 10).await.unwrap(), 0, "nothing more");
    // An id is never given twice, even after the newest went.
    let last = kept[1].id;
    store.delete_events_beyond(0, 10).await.expect("delete all");
    let next = store.insert_event(&row(now, "later")).await.unwrap();
    assert!(next > last, "{next} after {last}");
}
