//! Certificates ordered from a real ACME CA: Debian's pebble, started by
//! `scripts/with-pebble.sh` with pebble-challtestsrv as its DNS. Each test's
//! routers listen on their own loopback address, on the ports where pebble
//! checks challenges, and pebble's DNS sends each test's names there.
//!
//! Run with `scripts/with-pebble.sh cargo test --features local-fleet --test
//! acme`; on PostgreSQL under `scripts/with-postgres.sh` too
//! (`SLUM_TEST_BACKEND=postgres`). Without pebble the tests end at once and
//! say so, unless `SLUM_TEST_NETNS` is set (`scripts/test.sh`).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::pebble::{leaf_der, wait_for, Pebble};
use common::serve::Slum;
use common::{fleet, TestDb};
use slum::CertificateState;

/// How long an order may take here: pebble answers at once, the leader looks
/// every two seconds.
const ISSUED_WITHIN: Duration = Duration::from_secs(60);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// A tenant record for `domain` homed on a server record that nothing
/// listens for (the tests that need no instance).
async fn tenant_without_instance(slum: &Slum, domain: &str) {
    if slum.db().get_server("idle").await.is_err() {
        slum.db()
            .add_server(&common::server("idle", None, 1024))
            .await
            .unwrap();
    }
    slum.add_tenant(domain, "idle").await;
}

/// Waits until `domain`'s certificate is issued; returns its chain.
async fn issued(slum: &Slum, domain: &str) -> String {
    wait_for(
        ISSUED_WITHIN,
        &format!("a certificate for {domain}"),
        || async {
            let info = slum
                .db()
                .certificate(domain)
                .await
                .map_err(|e| e.to_string())?;
            match info {
                Some(c) if c.state == CertificateState::Issued => {}
                other => return Err(format!("{other:?}")),
            }
            let material = slum
                .db()
                .certificate_material(domain)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no material")?;
            Ok(material.chain_pem)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_domain_gets_a_certificate_and_its_instance_answers_over_https_1_1_and_2() {
    let Some(pebble) = Pebble::from_env() else {
        return;
    };
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let at = ip("127.0.20.1");
    let slum = Slum::start(|a| pebble.serve_on(at, a)).await;
    slum.add_fleet(&fleet).await;
    pebble.resolve("shop.example.com", at).await;
    slum.add_running_tenant("shop.example.com", "s1").await;

    let chain = issued(&slum, "shop.example.com").await;
    assert_eq!(pebble.validations("shop.example.com"), 1, "one order");
    assert!(
        chain.matches("BEGIN CERTIFICATE").count() >= 2,
        "leaf and intermediate"
    );

    for (client, version) in [
        (
            pebble.https("shop.example.com", at).http1_only(),
            reqwest::Version::HTTP_11,
        ),
        (
            pebble.https("shop.example.com", at),
            reqwest::Version::HTTP_2,
        ),
    ] {
        let resp = client
            .build()
            .unwrap()
            .get(format!("https://shop.example.com:{}/", pebble.tls_port))
            .send()
            .await
            .expect("HTTPS through the router, verified against pebble's root");
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.text().await.unwrap().trim(),
            "tenant=shop process=api server=s1"
        );
    }

    let metrics = slum.state.metrics.render();
    assert!(
        metrics.contains("slum_acme_orders_total{result=\"issued\"} 1"),
        "{metrics}"
    );
    // The certificate's listing shows no key.
    let info = slum.db().certificate("shop.example.com").await.unwrap();
    assert!(!format!("{info:?}").contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_is_answered_on_the_tls_listener() {
    let Some(pebble) = Pebble::from_env() else {
        return;
    };
    let at = ip("127.0.20.2");
    let slum = Slum::start(|a| {
        pebble.serve_on(at, a);
        a.acme_challenge = Some("tls-alpn-01".parse().unwrap());
    })
    .await;
    pebble.resolve("alpn.example.com", at).await;
    tenant_without_instance(&slum, "alpn.example.com").await;
    let chain = issued(&slum, "alpn.example.com").await;
    assert_eq!(pebble.validations("alpn.example.com"), 1);
    let served = pebble.served_leaf("alpn.example.com", at).await.unwrap();
    assert_eq!(served, leaf_der(&chain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_renewed_two_thirds_into_its_life_and_served_without_a_restart() {
    let Some(pebble) = Pebble::from_env() else {
        return;
    };
    let at = ip("127.0.20.3");
    let slum = Slum::start(|a| pebble.serve_on(at, a)).await;
    for domain in ["renew.example.com", "gone.example.com"] {
        pebble.resolve(domain, at).await;
        tenant_without_instance(&slum, domain).await;
    }
    let first = issued(&slum, "renew.example.com").await;
    issued(&slum, "gone.example.com").await;
    let info = slum
        .db()
        .certificate("renew.example.com")
        .await
        .unwrap()
        .unwrap();
    let (not_before, not_after) = (
        info.not_before.unwrap().timestamp(),
        info.not_after.unwrap().timestamp(),
    );
    // pebble's certificates here live 30 seconds.
    assert!(not_after - not_before <= 30, "{not_before}..{not_after}");
    assert_eq!(
        info.next_try.map(|t| t.timestamp()),
        Some(not_before + (not_after - not_before) * 2 / 3),
        "renewal is due two thirds into the lifetime"
    );
    assert_eq!(
        pebble.served_leaf("renew.example.com", at).await.unwrap(),
        leaf_der(&first)
    );
    // A domain that is no tenant's any more is not renewed.
    slum.db().delete_tenant("gone.example.com").await.unwrap();
    slum.state.fleet_changed().await;

    let renewed = wait_for(Duration::from_secs(60), "a renewal", || async {
        let material = slum
            .db()
            .certificate_material("renew.example.com")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("gone")?;
        if material.chain_pem == first {
            return Err("the first certificate".into());
        }
        Ok(material.chain_pem)
    })
    .await;
    assert_eq!(pebble.validations("renew.example.com"), 2, "one order more");
    // The router serves the new one, read from the feed.
    wait_for(
        Duration::from_secs(10),
        "the renewed certificate served",
        || async {
            let served = pebble.served_leaf("renew.example.com", at).await?;
            if served == leaf_der(&renewed) {
                Ok(())
            } else {
                Err("the old certificate".into())
            }
        },
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "the removed tenant's certificate gone",
        || async {
            match slum.db().certificate("gone.example.com").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        pebble.validations("gone.example.com"),
        1,
        "never ordered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_challenge_is_recorded_with_the_cas_reason_and_retried_while_others_are_issued() {
    let Some(pebble) = Pebble::from_env() else {
        return;
    };
    let at = ip("127.0.20.4");
    let slum = Slum::start(|a| pebble.serve_on(at, a)).await;
    // Nothing listens there: the customer's DNS points elsewhere.
    pebble
        .resolve("broken.example.com", ip("127.0.20.254"))
        .await;
    pebble.resolve("fine.example.com", at).await;
    tenant_without_instance(&slum, "broken.example.com").await;
    tenant_without_instance(&slum, "fine.example.com").await;

    issued(&slum, "fine.example.com").await;
    let failing = wait_for(ISSUED_WITHIN, "two failed orders", || async {
        match slum.db().certificate("broken.example.com").await {
            Ok(Some(c)) if c.failures >= 2 => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(failing.state, CertificateState::Failing);
    let reason = failing.last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("urn:ietf:params:acme:error:connection")
            && reason.contains("127.0.20.254")
            && reason.contains("connection refused"),
        "the CA's own reason: {reason}"
    );
    assert!(failing.next_try.is_some(), "tried again");
    assert!(pebble.validations("broken.example.com") >= 2, "retried");

    // Once the domain points at the fleet, the next try gets it.
    pebble.resolve("broken.example.com", at).await;
    issued(&slum, "broken.example.com").await;
    let info = slum
        .db()
        .certificate("broken.example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((info.failures, info.last_error), (0, None));

    // Both outcomes are fleet events, the failure with the CA's reason.
    let events = slum
        .db()
        .events(&slum::events::EventQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    let said = |kind: &str, name: &str| {
        events
            .iter()
            .filter(|e| e.kind == kind && e.cause.contains(name))
            .map(|e| e.cause.clone())
            .collect::<Vec<_>>()
    };
    let failed = said("certificate-failed", "broken.example.com");
    assert!(
        failed.len() >= 2 && failed.iter().all(|c| c.contains("connection refused")),
        "{events:#?}"
    );
    assert_eq!(
        said("certificate-issued", "fine.example.com").len(),
        1,
        "{events:#?}"
    );
    assert_eq!(
        said("certificate-issued", "broken.example.com").len(),
        1,
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_that_is_no_tenants_is_never_ordered() {
    let Some(pebble) = Pebble::from_env() else {
        return;
    };
    let at = ip("127.0.20.5");
    let slum = Slum::start(|a| pebble.serve_on(at, a)).await;
    pebble.resolve("stranger.example.com", at).await;
    pebble.resolve("member.example.com", at).await;
    let refused = slum.db().want_certificate("stranger.example.com").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_not_found()),
        "{refused:?}"
    );
    // Asked for over HTTPS: refused in the handshake, and nothing wanted.
    let e = pebble
        .served_leaf("stranger.example.com", at)
        .await
        .unwrap_err();
    assert!(!e.is_empty());
    tenant_without_instance(&slum, "member.example.com").await;
    issued(&slum, "member.example.com").await;
    assert_eq!(pebble.validations("stranger.example.com"), 0);
    assert!(slum
        .db()
        .certificate("stranger.example.com")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_external_account_key_the_cas_refusal_is_recorded() {
    let Some(pebble) = Pebble::from_env() else {
        return;
    };
    let at = ip("127.0.20.6");
    let slum = Slum::start(|a| {
        pebble.serve_on(at, a);
        a.acme_eab_kid = None;
        a.acme_eab_hmac = None;
    })
    .await;
    pebble.resolve("noeab.example.com", at).await;
    tenant_without_instance(&slum, "noeab.example.com").await;
    let failing = wait_for(ISSUED_WITHIN, "a failed order", || async {
        match slum.db().certificate("noeab.example.com").await {
            Ok(Some(c)) if c.failures >= 1 => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let reason = failing.last_error.unwrap_or_default();
    assert!(
        reason.starts_with("creating the ACME account: urn:ietf:params:acme:error:"),
        "{reason}"
    );
    assert!(reason.contains("externalAccountRequired"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_on_one_database_place_one_order_and_both_serve_it() {
    let Some(pebble) = Pebble::from_env() else {
        return;
    };
    let db = TestDb::new().await;
    let (at_a, at_b) = (ip("127.0.20.7"), ip("127.0.20.8"));
    let a = Slum::start_on(Some(db.url()), |args| pebble.serve_on(at_a, args)).await;
    let b = Slum::start_on(Some(db.url()), |args| pebble.serve_on(at_b, args)).await;
    // The CA checks the router that does not lead (on SQLite both lead, and
    // their claims keep to one order): whichever router it reaches answers.
    wait_for(Duration::from_secs(20), "a leader", || async {
        if a.state.is_leader() || b.state.is_leader() {
            Ok(())
        } else {
            Err("none".into())
        }
    })
    .await;
    let other = if a.state.is_leader() { at_b } else { at_a };
    pebble.resolve("shared.example.com", other).await;
    tenant_without_instance(&a, "shared.example.com").await;

    let chain = issued(&a, "shared.example.com").await;
    assert_eq!(pebble.validations("shared.example.com"), 1, "one order");
    for (router, at) in [(&a, at_a), (&b, at_b)] {
        wait_for(
            Duration::from_secs(10),
            "the certificate served",
            || async {
                let served = pebble.served_leaf("shared.example.com", at).await?;
                if served == leaf_der(&chain) {
                    Ok(())
                } else {
                    Err("another certificate".into())
                }
            },
        )
        .await;
        assert!(router
            .state
            .metrics
            .render()
            .contains("slum_acme_orders_total"));
    }
    let orders: u64 = [&a, &b]
        .iter()
        .map(|s| {
            let m = s.state.metrics.render();
            m.lines()
                .find_map(|l| l.strip_prefix("slum_acme_orders_total{result=\"issued\"} "))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(orders, 1, "one router ordered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_first_asked_for_over_https_without_a_certificate_gets_one() {
    let Some(pebble) = Pebble::from_env() else {
        return;
    };
    // A tenant added before any router ran: no router followed its addition.
    let db = TestDb::new().await;
    {
        let early = slum::SlumDb::init(db.url()).await.unwrap();
        early
            .add_server(&common::server("idle", None, 1024))
            .await
            .unwrap();
        early
            .add_tenant(&common::tenant("early.example.com", "idle"))
            .await
            .unwrap();
    }
    let at = ip("127.0.20.9");
    let slum = Slum::start_on(Some(db.url()), |a| pebble.serve_on(at, a)).await;
    pebble.resolve("early.example.com", at).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        slum.db()
            .certificate("early.example.com")
            .await
            .unwrap()
            .is_none(),
        "not wanted before it is asked for"
    );
    // The first client finds no certificate (the handshake fails), and one
    // is ordered.
    assert!(pebble.served_leaf("early.example.com", at).await.is_err());
    let chain = issued(&slum, "early.example.com").await;
    wait_for(
        Duration::from_secs(10),
        "the certificate served",
        || async {
            let served = pebble.served_leaf("early.example.com", at).await?;
            if served == leaf_der(&chain) {
                Ok(())
            } else {
                Err("another certificate".into())
            }
        },
    )
    .await;
    assert_eq!(pebble.validations("early.example.com"), 1);
}
