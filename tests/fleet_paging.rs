//! Paged lists and the token check at scale's cost, on either backend
//! (`SLUM_TEST_BACKEND=postgres` under `scripts/with-postgres.sh`): a walk of
//! the pages sees every record exactly once while records come and go between
//! pages; a bad `limit` or `after` is refused naming its field and touches
//! nothing; a token revoked through one router is refused by another at once.

mod common;

use std::collections::BTreeSet;

use common::{server, temp_db, tenant};
use slum::{Error, Instance, Page, PageRequest, SlumDb, MAX_PAGE_LIMIT};

fn assert_invalid(e: &Error, field: &str) {
    match e {
        Error::Invalid { field: f, reason } => {
            assert_eq!(f, field, "wrong field (reason: {reason})");
        }
        other => panic!("expected Invalid {{ field: {field} }}, got {other:?}"),
    }
}

fn domain(i: usize) -> String {
    format!("d{i:04}.example.com")
}

fn instance(tenant: &str, id: &str, server: &str) -> Instance {
    Instance {
        tenant: tenant.into(),
        instance_id: id.into(),
        process: "api".into(),
        server_id: server.into(),
        memory_mb: 1,
        ..Default::default()
    }
}

/// Walks every page of `limit` records, calling `between` after each page
/// with the page number; returns the keys seen, in order.
async fn walk<T, F, Fut>(
    limit: usize,
    key: impl Fn(&T) -> String,
    fetch: impl Fn(PageRequest) -> F,
    mut between: impl FnMut(usize) -> Fut,
) -> Vec<String>
where
    F: std::future::Future<Output = slum::Result<Page<T>>>,
    Fut: std::future::Future<Output = ()>,
{
    let mut seen = Vec::new();
    let mut request = PageRequest::first(limit);
    for n in 0.. {
        let page = fetch(request.clone()).await.expect("page");
        assert!(page.items.len() <= limit);
        seen.extend(page.items.iter().map(&key));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), seen.last(), "next is the last key of the page");
                request = PageRequest::after(limit, next);
            }
            None => break,
        }
        between(n).await;
    }
    seen
}

#[tokio::test]
async fn tenant_pages_see_every_domain_once_while_domains_come_and_go() {
    let (_test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();
    db.add_server(&server("west", None, 1024)).await.unwrap();
    // Even domains at first; odd ones are added between pages.
    for i in (0..100).step_by(2) {
        let home = if i % 4 == 0 { "east" } else { "west" };
        db.add_tenant(&tenant(&domain(i), home)).await.unwrap();
    }
    let removed = domain(90);
    let db2 = db.clone();
    let seen = walk(
        7,
        |t: &slum::Tenant| t.domain.clone(),
        |r| {
            let db = db.clone();
            async move { db.list_tenants_page(None, &r).await }
        },
        |n| {
            let db = db2.clone();
            let removed = removed.clone();
            async move {
                // One behind the cursor (never seen), one far ahead (seen).
                db.add_tenant(&tenant(&domain(n * 14 + 1), "east"))
                    .await
                    .unwrap();
                if n * 14 + 51 < 100 {
                    db.add_tenant(&tenant(&domain(n * 14 + 51), "east"))
                        .await
                        .unwrap();
                }
                if n == 3 {
                    db.delete_tenant(&removed).await.unwrap();
                }
            }
        },
    )
    .await;
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no domain twice: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in key order");
    // Every domain there from start to end was seen, and the one removed
    // before its page was not.
    let now: BTreeSet<String> = db
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.domain)
        .collect();
    for i in (0..100).step_by(2).filter(|&i| i != 90) {
        assert!(seen.contains(&domain(i)), "{} missed", domain(i));
    }
    assert!(!seen.contains(&removed));
    // Those added ahead of the cursor were seen too; every one seen exists.
    assert!(seen.contains(&domain(51)) && seen.contains(&domain(65)));
    assert!(seen.iter().all(|d| now.contains(d)));

    // One server's domains, the same way, and the last page has no next.
    let east: Vec<String> = db
        .list_tenants_on_server("east")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.domain)
        .collect();
    let paged = walk(
        4,
        |t: &slum::Tenant| t.domain.clone(),
        |r| {
            let db = db.clone();
            async move { db.list_tenants_page(Some("east"), &r).await }
        },
        |_| async {},
    )
    .await;
    assert_eq!(paged, east);
    let whole = db
        .list_tenants_page(None, &PageRequest::first(MAX_PAGE_LIMIT))
        .await
        .unwrap();
    assert_eq!(whole.next, None);
    assert_eq!(whole.items.len(), now.len());
}

#[tokio::test]
async fn instance_and_server_pages_walk_in_key_order() {
    let (test_db, db) = temp_db().await;
    let store = test_db.open_store().await;
    for s in ["s1", "s2", "s3", "s4", "s5"] {
        db.add_server(&server(s, None, 1024)).await.unwrap();
    }
    for t in 0..12 {
        for (k, id) in ["a", "b"].iter().enumerate() {
            let on = format!("s{}", (t + k) % 5 + 1);
            // Distinct processes so that two instances may share a server.
            let mut inst = instance(&format!("t{t:02}"), id, &on);
            inst.process = format!("p{k}");
            store.reserve_instance(&inst).await.unwrap();
        }
    }
    let every: Vec<String> = db
        .list_instance_records()
        .await
        .unwrap()
        .iter()
        .map(Instance::key)
        .collect();
    let store2 = store.clone();
    let seen = walk(
        5,
        Instance::key,
        |r| {
            let db = db.clone();
            async move { db.list_instance_records_page(None, &r).await }
        },
        |n| {
            let store = store2.clone();
            async move {
                // Behind the cursor: never seen.
                let mut late = instance("t00", &format!("late{n}"), "s5");
                late.process = format!("late{n}");
                store.reserve_instance(&late).await.unwrap();
            }
        },
    )
    .await;
    assert_eq!(seen, every);

    let on_s2: Vec<String> = db
        .list_instance_records()
        .await
        .unwrap()
        .iter()
        .filter(|i| i.server_id == "s2")
        .map(Instance::key)
        .collect();
    let paged = walk(
        2,
        Instance::key,
        |r| {
            let db = db.clone();
            async move { db.list_instance_records_page(Some("s2"), &r).await }
        },
        |_| async {},
    )
    .await;
    assert_eq!(paged, on_s2);

    let servers = walk(
        2,
        |s: &slum::Server| s.id.clone(),
        |r| {
            let db = db.clone();
            async move { db.list_servers_page(&r).await }
        },
        |_| async {},
    )
    .await;
    assert_eq!(servers, ["s1", "s2", "s3", "s4", "s5"]);
    // The paged servers carry their used capacity as the whole list does.
    let first = db.list_servers_page(&PageRequest::first(5)).await.unwrap();
    assert_eq!(first.items, db.list_servers().await.unwrap());

    let counts = db.count_records().await.unwrap();
    let late = db.list_instance_records().await.unwrap().len() - every.len();
    assert!(late > 0);
    assert_eq!(counts.instances, i64::try_from(every.len() + late).unwrap());
    assert_eq!(counts.tenants, 0);
}

#[tokio::test]
async fn a_bad_limit_or_after_is_refused_naming_the_field() {
    let (test_db, db) = temp_db().await;
    db.add_server(&server("east", None, 1024)).await.unwrap();
    db.add_tenant(&tenant("a.example.com", "east"))
        .await
        .unwrap();
    let before = test_db.dump().await;
    for limit in [0, MAX_PAGE_LIMIT + 1] {
        let r = PageRequest::first(limit);
        assert_invalid(&db.list_tenants_page(None, &r).await.unwrap_err(), "limit");
        assert_invalid(
            &db.list_instance_records_page(None, &r).await.unwrap_err(),
            "limit",
        );
        assert_invalid(&db.list_servers_page(&r).await.unwrap_err(), "limit");
    }
    for after in ["", "not a domain", "-x.example.com"] {
        let r = PageRequest::after(10, after);
        let e = db.list_tenants_page(None, &r).await.unwrap_err();
        assert_invalid(&e, "after");
        assert!(e.to_string().contains("after"), "{e}");
    }
    for after in ["", "no-colon", "a:B_C", ":x"] {
        let r = PageRequest::after(10, after);
        let e = db.list_instance_records_page(None, &r).await.unwrap_err();
        assert_invalid(&e, "after");
    }
    for after in ["", "East", "a.b"] {
        let e = db
            .list_servers_page(&PageRequest::after(10, after))
            .await
            .unwrap_err();
        assert_invalid(&e, "after");
    }
    let e = db
        .list_tenants_page(Some("nowhere"), &PageRequest::default())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    // A domain given as people write it is a cursor all the same.
    let page = db
        .list_tenants_page(None, &PageRequest::after(10, "A.Example.com."))
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(before, test_db.dump().await, "nothing changed");
}

/// Two `slum serve` on one database are two handles, each with its hashes in
/// memory: what one creates or revokes, the other sees on its next check.
#[tokio::test]
async fn a_token_revoked_through_one_router_is_refused_by_another_at_once() {
    let (test_db, a) = temp_db().await;
    let b: SlumDb = test_db.open().await;
    let (kept, kept_secret) = a.create_api_token("kept").await.unwrap();
    // B has read the hashes (and keeps them) before the next changes.
    assert_eq!(
        b.verify_api_token(&kept_secret).await.unwrap(),
        Some(kept.clone())
    );
    let (ci, secret) = a.create_api_token("ci").await.unwrap();
    assert_eq!(a.verify_api_token(&secret).await.unwrap(), Some(ci.clone()));
    assert_eq!(b.verify_api_token(&secret).await.unwrap(), Some(ci.clone()));
    a.revoke_api_token(&ci.id).await.unwrap();
    assert_eq!(b.verify_api_token(&secret).await.unwrap(), None);
    assert_eq!(a.verify_api_token(&secret).await.unwrap(), None);
    // And the other way round, through a reset of B's admin tokens.
    let (_admin, admin_secret) = b.create_api_token("admin").await.unwrap();
    assert!(a.verify_api_token(&admin_secret).await.unwrap().is_some());
    let newer = slum::MintedToken::new("admin").unwrap();
    b.reset_admin_token(&newer, false).await.unwrap();
    assert_eq!(a.verify_api_token(&admin_secret).await.unwrap(), None);
    assert_eq!(
        a.verify_api_token(newer.secret()).await.unwrap(),
        Some(newer.token().clone())
    );
    assert_eq!(a.verify_api_token(&kept_secret).await.unwrap(), Some(kept));
    // A third process, the bare store, deletes behind both handles' backs.
    let store = test_db.open_store().await;
    let (gone, gone_secret) = a.create_api_token("gone").await.unwrap();
    assert!(b.verify_api_token(&gone_secret).await.unwrap().is_some());
    store.delete_api_token(&gone.id).await.unwrap();
    assert_eq!(a.verify_api_token(&gone_secret).await.unwrap(), None);
    assert_eq!(b.verify_api_token(&gone_secret).await.unwrap(), None);
}
