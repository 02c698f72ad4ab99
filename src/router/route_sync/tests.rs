//! The route change feed against a full rebuild: random changes to a small
//! fleet, applied through the feed by one router, give exactly the decisions
//! a table built whole from the database gives, for every domain and server;
//! a router that misses part of the feed (trimmed past it) or starts late
//! converges to the same. On the backend `SLUM_TEST_BACKEND` names.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Routes;
use crate::fleet::db::FleetDb;
use crate::fleet::model::{DesiredState, Instance, Server, ServerStatus, Tenant};
use crate::metrics::Metrics;
use crate::router::route_table::{Decision, RouteTable};

const SERVERS: usize = 4;
const TENANTS: usize = 5;
const DOMAINS: usize = 8;
const INSTANCE_IDS: [&str; 3] = ["prod", "backup", "b2"];
const PROCESSES: [&str; 2] = ["api", "web"];

/// Everything a table says about a small fleet, as text: each domain's
/// decision and each server's upstream.
fn view(table: &RouteTable) -> Vec<String> {
    let mut out: Vec<String> = (0..DOMAINS)
        .map(|d| {
            let domain = format!("d{d}.test");
            assert_eq!(
                table.route(&domain),
                table.route_without_shortcut(&domain),
                "{domain}: the lookup's inlined case and the whole decision disagree"
            );
            let said = match table.route(&domain) {
                Decision::Forward {
                    primary,
                    fallback,
                    failover,
                } => format!(
                    "forward {} {:?} {} fallback {:?} failover {failover}",
                    primary.upstream.server_id,
                    primary.host(),
                    primary.instance_id(),
                    fallback.map(|f| (f.upstream.server_id.clone(), f.instance_id().to_owned())),
                ),
                Decision::Spawn(r) => format!("spawn {r:?}"),
                Decision::ServerDown(down) => {
                    format!("down {} {:?}", down.tenant(), down.servers())
                }
                Decision::UnknownHost => "unknown".to_owned(),
            };
            format!("{domain}: {said}")
        })
        .collect();
    let mut servers: Vec<String> = table
        .upstreams()
        .map(|u| {
            format!(
                "server {} {} {} {:?} {:?}",
                u.server_id, u.url, u.domain, u.status, u.routing_problem
            )
        })
        .collect();
    servers.sort();
    out.extend(servers);
    out.push(format!("domains {}", table.domains()));
    out
}

/// A table built whole from the database now.
async fn rebuilt(db: &FleetDb) -> Vec<String> {
    let fresh = Routes::new(Arc::new(Metrics::new()));
    fresh.reload(db).await.expect("rebuild");
    view(&fresh.current())
}

fn pick<'a>(rng: &mut StdRng, from: &'a [&'a str]) -> &'a str {
    from[rng.gen_range(0..from.len())]
}

/// One random change to the fleet; refused ones (a server still in use, a
/// full server...) change nothing, as the store promises.
async fn change(db: &FleetDb, rng: &mut StdRng) {
    let store = &db.store;
    let server = format!("s{}", rng.gen_range(0..SERVERS));
    let tenant = format!("t{}", rng.gen_range(0..TENANTS));
    let domain = format!("d{}.test", rng.gen_range(0..DOMAINS));
    let instance = pick(rng, &INSTANCE_IDS).to_owned();
    let process = pick(rng, &PROCESSES).to_owned();
    let statuses = [
        ServerStatus::Unknown,
        ServerStatus::Online,
        ServerStatus::Offline,
        ServerStatus::Draining,
    ];
    let _ = match rng.gen_range(0..13) {
        0 => {
            store
                .insert_server(&Server {
                    id: server.clone(),
                    url: format!("http://10.0.0.{}:8000", rng.gen_range(1..4)),
                    domain: Some(format!("{server}.fleet.test")),
                    capacity_mb: 1_000,
                    status: statuses[rng.gen_range(0..4)],
                    ..Default::default()
                })
                .await
        }
        1 | 2 => match store.get_server(&server).await {
            Ok(mut s) => {
                s.status = statuses[rng.gen_range(0..4)];
                if rng.gen_bool(0.15) {
                    s.domain = Some(format!("{server}-{}.fleet.test", rng.gen_range(0..2)));
                }
                if rng.gen_bool(0.1) {
                    s.url = format!("http://10.0.1.{}:8000", rng.gen_range(1..4));
                }
                store.update_server(&s, true).await
            }
            Err(e) => Err(e),
        },
        3 => store
            .set_server_routing_problem(
                &server,
                rng.gen_bool(0.5).then_some("routes by another domain"),
            )
            .await
            .map(|_| ()),
        4 => store.delete_server(&server).await,
        5 | 6 => {
            store
                .insert_tenant(&Tenant {
                    domain,
                    name: tenant,
                    server_id: server,
                    process,
                    instance_id: instance,
                    ..Default::default()
                })
                .await
        }
        7 => match store.get_tenant(&domain).await {
            Ok(mut t) => {
                match rng.gen_range(0..3) {
                    0 => t.server_id = server,
                    1 => t.process = process,
                    _ => t.instance_id = instance,
                }
                store.update_tenant(&t).await
            }
            Err(e) => Err(e),
        },
        8 => store.delete_tenant(&domain).await,
        9 | 10 => {
            store
                .reserve_instance(&Instance {
                    tenant,
                    instance_id: instance,
                    process,
                    server_id: server,
                    memory_mb: 1,
                    ..Default::default()
                })
                .await
        }
        11 => {
            let desired = match rng.gen_bool(0.5) {
                true => DesiredState::Stopped,
                false => DesiredState::Running,
            };
            store
                .set_instance_desired(&tenant, &instance, desired)
                .await
        }
        _ => match rng.gen_range(0..3) {
            0 => store.delete_instance(&tenant, &instance).await,
            _ => match store.begin_move(&tenant, &instance, &server).await {
                Ok(()) => {
                    store
                        .finish_move(&tenant, &instance, std::time::Duration::ZERO)
                        .await
                }
                Err(e) => Err(e),
            },
        },
    };
}

/// Runs one random sequence; returns the kinds of decision it compared.
async fn feed_matches_a_rebuild(seed: u64) -> std::collections::BTreeSet<&'static str> {
    let mut seen = std::collections::BTreeSet::new();
    let (_test_db, slum) = crate::test_db::temp_db().await;
    let db = slum.fleet().clone();
    let mut rng = StdRng::seed_from_u64(seed);
    let metrics = Arc::new(Metrics::new());
    let follower = Routes::new(Arc::clone(&metrics));
    follower.reload(&db).await.expect("start");
    // Catches up now and then only, the feed trimmed behind it meanwhile.
    let lagger = Routes::new(Arc::clone(&metrics));
    lagger.reload(&db).await.expect("start");
    let mut late: Option<Routes> = None;
    for step in 0..240 {
        change(&db, &mut rng).await;
        if rng.gen_bool(0.3) {
            // Several changes in one catch-up, too.
            continue;
        }
        follower.catch_up(&db).await.expect("catch up");
        let whole = rebuilt(&db).await;
        for line in &whole {
            for kind in [
                "failover true",
                "failover false",
                "spawn",
                "down",
                "unknown",
            ] {
                if line.contains(kind) {
                    seen.insert(kind);
                }
            }
        }
        assert_eq!(
            view(&follower.current()),
            whole,
            "seed {seed}, step {step}: the feed and a rebuild disagree"
        );
        if step % 37 == 36 {
            db.trim_route_changes(rng.gen_range(0..3))
                .await
                .expect("trim");
        }
        if step % 29 == 28 {
            lagger.catch_up(&db).await.expect("catch up after a gap");
            assert_eq!(
                view(&lagger.current()),
                whole,
                "seed {seed}, step {step}: lagger"
            );
        }
        if step == 100 {
            let started = Routes::new(Arc::clone(&metrics));
            started.reload(&db).await.expect("late start");
            late = Some(started);
        }
        if let Some(late) = &late {
            late.catch_up(&db).await.expect("catch up");
            assert_eq!(
                view(&late.current()),
                whole,
                "seed {seed}, step {step}: late"
            );
        }
    }
    lagger.catch_up(&db).await.expect("catch up");
    assert_eq!(
        view(&lagger.current()),
        rebuilt(&db).await,
        "seed {seed}: lagger at the end"
    );
    seen
}

#[tokio::test]
async fn random_changes_through_the_feed_give_what_a_rebuild_gives() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in [1, 2, 3, 4] {
        seen.extend(feed_matches_a_rebuild(seed).await);
    }
    // The comparisons covered every kind of decision.
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "down",
            "failover false",
            "failover true",
            "spawn",
            "unknown"
        ]
    );
}
