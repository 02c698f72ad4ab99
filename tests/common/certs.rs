//! Test certificates made with rcgen: a leaf for some names (self-signed, or
//! signed by a CA of its own and given as a chain), an expired one, and keys
//! that belong to none of them.
#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A certificate chain and its leaf's key, in PEM.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed ECDSA P-256 certificate for `names`, valid from now on for
/// a year or so (rcgen's default).
pub fn self_signed(names: &[&str]) -> TestCert {
    let key = KeyPair::generate().expect("key pair");
    let cert = params(names)
        .self_signed(&key)
        .expect("self-signed certificate");
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A leaf for `names` signed by a CA made for it: the chain is the leaf then
/// the CA.
pub fn with_ca(names: &[&str]) -> TestCert {
    let ca_key = KeyPair::generate().expect("CA key pair");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key pair");
    let leaf = params(names)
        .signed_by(&key, &issuer)
        .expect("leaf certificate");
    TestCert {
        cert_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
    }
}

/// A self-signed certificate for `names` that expired in 2001.
pub fn expired(names: &[&str]) -> TestCert {
    let key = KeyPair::generate().expect("key pair");
    let mut p = params(names);
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let cert = p.self_signed(&key).expect("expired certificate");
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A self-signed certificate for `names` that expires `days` days from
/// today's midnight (UTC), valid since yesterday.
pub fn expiring_in(names: &[&str], days: u64) -> TestCert {
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let month = u8::try_from(today.month()).expect("month");
    let day = u8::try_from(today.day()).expect("day");
    let midnight = rcgen::date_time_ymd(today.year(), month, day);
    let key = KeyPair::generate().expect("key pair");
    let mut p = params(names);
    p.not_before = midnight - std::time::Duration::from_secs(86_400);
    p.not_after = midnight + std::time::Duration::from_secs(days * 86_400);
    let cert = p.self_signed(&key).expect("certificate");
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Asserts that `text` holds no part of the PEM key `key_pem`: none of its
/// base64 lines (as they would show in a PEM, or a JSON string of one), and
/// no PEM key at all.
#[track_caller]
pub fn assert_no_key(text: &str, key_pem: &str) {
    assert!(!text.contains("PRIVATE KEY"), "a private key in:\n{text}");
    // A short last line could turn up anywhere by chance.
    for line in key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
    {
        let part = &line[..line.len().min(40)];
        assert!(!text.contains(part), "the key's line {part:?} in:\n{text}");
    }
}

/// A fresh key, of no certificate.
pub fn other_key() -> String {
    KeyPair::generate().expect("key pair").serialize_pem()
}

fn params(names: &[&str]) -> CertificateParams {
    CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("certificate params")
}
