//! The certificates in memory and the choice by SNI, with certificates made
//! by rcgen; the handshakes themselves are in the router's tests
//! (`tests/https.rs` under the router).

use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::fleet::model::{Server, ServerStatus, Tenant};
use crate::router::route_table::{DomainRoute, RouteTable};

/// A certificate for `names` (self-signed, ECDSA P-256), valid until
/// `not_after` (year, month, day) or rcgen's default (4096); its chain and
/// key in PEM.
pub(crate) fn issued(names: &[&str], not_after: Option<(i32, u8, u8)>) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    if let Some((y, m, d)) = not_after {
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A control plane with a table of tenant domains, that keeps the domains
/// it was told are wanted.
#[derive(Default)]
struct Tenants {
    table: Arc<RouteTable>,
    wanted: Mutex<Vec<String>>,
}

impl Tenants {
    fn with(domains: &[&str]) -> Arc<Tenants> {
        let server = Server {
            id: "east".into(),
            url: "http://127.0.0.1:9".into(),
            domain: Some("east.fleet.test".into()),
            status: ServerStatus::Online,
            ..Default::default()
        };
        let tenants: Vec<Tenant> = domains
            .iter()
            .map(|d| Tenant {
                domain: d.to_string(),
                name: d.split('.').next().unwrap().into(),
                server_id: "east".into(),
                process: "api".into(),
                instance_id: "prod".into(),
                ..Default::default()
            })
            .collect();
        Arc::new(Tenants {
            table: Arc::new(RouteTable::build(1, &[server], &tenants, &[])),
            wanted: Mutex::default(),
        })
    }
}

#[async_trait]
impl ControlPlane for Tenants {
    fn table(&self) -> Arc<RouteTable> {
        Arc::clone(&self.table)
    }

    fn is_current(&self, table: &Arc<RouteTable>) -> bool {
        Arc::ptr_eq(&self.table, table)
    }

    async fn wake(&self, _: &DomainRoute) -> Result<(), String> {
        Err("not in these tests".into())
    }

    async fn server_unreachable(&self, _: &str) {}

    async fn until_offline(&self, _: &str) {}

    fn certificate_wanted(&self, domain: &str) {
        lock(&self.wanted).push(domain.to_owned());
    }
}

/// The leaf certificate `chosen` serves, in DER.
fn leaf(chosen: &Option<Arc<CertifiedKey>>) -> Vec<u8> {
    chosen
        .as_ref()
        .expect("a certificate")
        .end_entity_cert()
        .unwrap()
        .to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn a_name_is_covered_by_its_own_certificate_then_by_its_parents_wildcard() {
    let certificates = Certificates::new();
    let (exact, exact_key) = issued(&["shop.example.com"], None);
    let (wild, wild_key) = issued(&["*.example.com"], None);
    certificates
        .install(
            "shop.example.com",
            exact.as_bytes(),
            exact_key.as_bytes(),
            None,
        )
        .unwrap();
    certificates
        .install(
            "*.Example.com",
            wild.as_bytes(),
            wild_key.as_bytes(),
            Some(true),
        )
        .unwrap();
    let covering = |host| {
        certificates
            .covering(host)
            .map(|c| c.key.end_entity_cert().unwrap().to_vec())
    };
    assert_eq!(covering("shop.example.com"), Some(der_of(&exact)));
    assert_eq!(covering("blog.example.com"), Some(der_of(&wild)));
    assert_eq!(covering("a.blog.example.com"), None, "one label only");
    assert_eq!(covering("example.com"), None);
    assert!(certificates.any_redirects());
    certificates.remove("*.example.com");
    assert_eq!(covering("blog.example.com"), None);
    assert!(!certificates.any_redirects());
    assert_eq!(certificates.len(), 1);
}

#[test]
fn a_certificate_that_cannot_be_served_is_refused_and_the_one_in_place_stays() {
    let certificates = Certificates::new();
    let (cert, key) = issued(&["shop.example.com"], None);
    let (_, other_key) = issued(&["shop.example.com"], None);
    certificates
        .install("shop.example.com", cert.as_bytes(), key.as_bytes(), None)
        .unwrap();
    let e = certificates
        .install(
            "shop.example.com",
            cert.as_bytes(),
            other_key.as_bytes(),
            None,
        )
        .unwrap_err();
    assert!(
        e.starts_with("the private key cannot be used with this chain"),
        "{e}"
    );
    let e = certificates
        .install("shop.example.com", b"not pem", key.as_bytes(), None)
        .unwrap_err();
    assert_eq!(e, "the certificate chain holds no certificate");
    let e = certificates
        .install("shop.example.com", cert.as_bytes(), b"garbage", None)
        .unwrap_err();
    assert_eq!(e, "the private key is not a PEM private key");
    assert!(!e.contains("PRIVATE KEY"));
    let kept = certificates.get("shop.example.com").expect("the first one");
    assert_eq!(kept.key.end_entity_cert().unwrap().to_vec(), der_of(&cert));
    assert!(!format!("{certificates:?}").contains("PRIVATE"));
}

#[test]
fn the_end_of_validity_is_read_from_the_leaf() {
    let certificates = Certificates::new();
    let (old, old_key) = issued(&["old.example.com"], Some((2020, 1, 1)));
    let (new, new_key) = issued(&["new.example.com"], None);
    certificates
        .install("old.example.com", old.as_bytes(), old_key.as_bytes(), None)
        .unwrap();
    certificates
        .install("new.example.com", new.as_bytes(), new_key.as_bytes(), None)
        .unwrap();
    let old = certificates.get("old.example.com").unwrap();
    assert_eq!(old.not_after, 1_577_836_800, "2020-01-01, a UTCTime");
    assert!(!old.valid_at(1_700_000_000));
    let new = certificates.get("new.example.com").unwrap();
    assert_eq!(
        new.not_after, 67_090_118_400,
        "4096-01-01 (rcgen's default), a GeneralizedTime"
    );
    assert!(new.valid_at(1_700_000_000));
}

#[test]
fn only_tenant_domains_get_a_certificate_and_a_missing_one_is_wanted_once() {
    let tenants = Tenants::with(&["shop.example.com", "blog.example.com", "bare.test"]);
    let certificates = Arc::new(Certificates::new());
    let resolver = SniResolver {
        certificates: Arc::clone(&certificates),
        control: Arc::clone(&tenants) as Arc<dyn ControlPlane>,
    };
    let (wild, wild_key) = issued(&["*.example.com"], None);
    certificates
        .install("*.example.com", wild.as_bytes(), wild_key.as_bytes(), None)
        .unwrap();
    assert_eq!(
        leaf(&resolver.choose("shop.example.com", false)),
        der_of(&wild)
    );
    assert!(
        resolver.choose("stranger.example.com", false).is_none(),
        "a name that is no tenant domain gets nothing, wildcard or not"
    );
    assert!(resolver.choose("bare.test", false).is_none());
    assert!(resolver.choose("bare.test", false).is_none());
    assert_eq!(*lock(&tenants.wanted), ["bare.test"], "told once");
    let (bare, bare_key) = issued(&["bare.test"], None);
    certificates
        .install("bare.test", bare.as_bytes(), bare_key.as_bytes(), None)
        .unwrap();
    assert_eq!(leaf(&resolver.choose("bare.test", false)), der_of(&bare));
    assert!(resolver.choose("nowhere.test", false).is_none());
    assert_eq!(lock(&tenants.wanted).len(), 1, "no tenant, no wish");
}

#[test]
fn a_tls_alpn_validation_gets_the_challenge_certificate_alone() {
    let tenants = Tenants::with(&["shop.example.com"]);
    let certificates = Arc::new(Certificates::new());
    let resolver = SniResolver {
        certificates: Arc::clone(&certificates),
        control: tenants,
    };
    let (served, served_key) = issued(&["shop.example.com"], None);
    certificates
        .install(
            "shop.example.com",
            served.as_bytes(),
            served_key.as_bytes(),
            None,
        )
        .unwrap();
    assert!(resolver.choose("shop.example.com", true).is_none());
    let (challenge, challenge_key) = issued(&["shop.example.com"], None);
    certificates
        .set_challenges(
            "shop.example.com",
            vec![],
            Some((challenge.as_bytes(), challenge_key.as_bytes())),
        )
        .unwrap();
    assert_eq!(
        leaf(&resolver.choose("shop.example.com", true)),
        der_of(&challenge)
    );
    assert_eq!(
        leaf(&resolver.choose("shop.example.com", false)),
        der_of(&served)
    );
    certificates
        .set_challenges("shop.example.com", vec![], None)
        .unwrap();
    assert!(resolver.choose("shop.example.com", true).is_none());
}

#[test]
fn http01_tokens_are_answered_for_their_domain_and_replaced_whole() {
    let certificates = Certificates::new();
    certificates
        .set_challenges(
            "shop.example.com",
            vec![
                ("t1".into(), "t1.thumb".into()),
                ("t2".into(), "t2.thumb".into()),
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        certificates.http01("shop.example.com", "t2").as_deref(),
        Some("t2.thumb")
    );
    assert_eq!(certificates.http01("blog.example.com", "t2"), None);
    certificates
        .set_challenges(
            "shop.example.com",
            vec![("t3".into(), "t3.thumb".into())],
            None,
        )
        .unwrap();
    assert_eq!(certificates.http01("shop.example.com", "t1"), None);
    assert_eq!(
        certificates.http01("shop.example.com", "t3").as_deref(),
        Some("t3.thumb")
    );
    certificates
        .set_challenges("shop.example.com", vec![], None)
        .unwrap();
    assert_eq!(certificates.http01("shop.example.com", "t3"), None);
}

#[test]
fn wishes_are_told_again_after_a_while_and_their_memory_is_bounded() {
    let certificates = Certificates::new();
    let start = Instant::now();
    assert!(certificates.first_wish("a.test", start));
    assert!(!certificates.first_wish("a.test", start + Duration::from_secs(60)));
    assert!(certificates.first_wish("a.test", start + WANTED_AGAIN_AFTER));
    for n in 0..WANTED_KEPT * 2 {
        certificates.first_wish(&format!("d{n}.test"), start);
    }
    assert!(lock(&certificates.wanted).len() <= WANTED_KEPT);
}

#[test]
fn a_tls_alpn_01_certificate_with_its_critical_acme_identifier_is_served() {
    // As an ACME order makes it (RFC 8737): webpki alone would refuse the
    // critical extension it does not know.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["shop.example.com".into()]).unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&[7; 32])];
    let cert = params.self_signed(&key).unwrap();
    let certificates = Certificates::new();
    certificates
        .set_challenges(
            "shop.example.com",
            Vec::new(),
            Some((cert.pem().as_bytes(), key.serialize_pem().as_bytes())),
        )
        .unwrap();
    let served = certificates.alpn01("shop.example.com").expect("served");
    assert_eq!(served.cert[0].as_ref(), cert.der().as_ref());
}
