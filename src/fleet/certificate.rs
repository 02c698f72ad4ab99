//! The fleet's TLS certificates: what the database holds of each, what a
//! router needs to serve one, and the checks an operator's certificate passes
//! before it is stored.
//!
//! A certificate is stored under a name, an exact domain (`shop.example.com`)
//! or a wildcard (`*.example.com`, which covers one label). Its private key
//! travels as a [`SecretPem`], which neither `Debug` nor serde can print: what
//! the API and the CLI show is a [`CertificateInfo`], which has no key (and no
//! PEM at all).
//!
//! [`verify`] is the one gate: the chain and the key parse, the key is the
//! leaf's, the leaf's names cover the name and it has not expired. Each
//! refusal names its field (`certificate.name`, `certificate.cert_pem`,
//! `certificate.key_pem`) and never quotes the key.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use psl::{List, Psl};
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fleet::validation::{self, quoted};

/// A private key (or another secret) in PEM or JSON text. `Debug` prints
/// `SecretPem(..)` and it has no `Serialize`, so that a key can never reach a
/// log line or an API answer by accident; [`SecretPem::expose`] is the one way
/// to its text.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretPem(String);

impl SecretPem {
    pub fn new(text: impl Into<String>) -> SecretPem {
        SecretPem(text.into())
    }

    /// The secret's text, for the code that uses it (a TLS server's key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretPem {
    fn from(text: String) -> SecretPem {
        SecretPem(text)
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem(..)")
    }
}

/// Who brought a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateSource {
    /// An operator's (`slum cert add`): never renewed by slum.
    #[default]
    Uploaded,
    /// Ordered from the ACME CA by the leading router, and renewed by it.
    Acme,
}

impl CertificateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateSource::Uploaded => "uploaded",
            CertificateSource::Acme => "acme",
        }
    }
}

impl fmt::Display for CertificateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertificateSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uploaded" => Ok(CertificateSource::Uploaded),
            "acme" => Ok(CertificateSource::Acme),
            other => Err(Error::invalid(
                "certificate.source",
                format!("{} is not uploaded or acme", quoted(other)),
            )),
        }
    }
}

/// Where a certificate stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateState {
    /// Issued (or uploaded) and stored: routers serve it.
    #[default]
    Issued,
    /// Wanted, with no certificate yet; an order is due or under way.
    Pending,
    /// The last order failed (`last_error` says why); it is retried at
    /// `next_try`. A certificate issued before is still served meanwhile.
    Failing,
}

impl CertificateState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateState::Issued => "issued",
            CertificateState::Pending => "pending",
            CertificateState::Failing => "failing",
        }
    }
}

impl fmt::Display for CertificateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertificateState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "issued" => Ok(CertificateState::Issued),
            "pending" => Ok(CertificateState::Pending),
            "failing" => Ok(CertificateState::Failing),
            other => Err(Error::invalid(
                "certificate.state",
                format!("{} is not issued, pending or failing", quoted(other)),
            )),
        }
    }
}

/// A certificate as the API and the CLI show it: no key, no PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CertificateInfo {
    /// An exact domain, or a wildcard (`*.example.com`).
    pub name: String,
    pub source: CertificateSource,
    pub state: CertificateState,
    /// The validity of the stored certificate (`None` until one is issued).
    pub not_before: Option<DateTime<Utc>>,
    pub not_after: Option<DateTime<Utc>>,
    /// The CA's reason the last order failed.
    pub last_error: Option<String>,
    /// Orders failed in a row.
    pub failures: i64,
    /// When the next order (or renewal) is due; `None`: nothing to do.
    pub next_try: Option<DateTime<Utc>>,
    /// Plain HTTP for this name is redirected to HTTPS: `None` follows the
    /// fleet's default (`--https-redirect`).
    pub redirect: Option<bool>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a router needs to serve a certificate (or a TLS-ALPN-01 challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateMaterial {
    /// The chain, leaf first, in PEM.
    pub chain_pem: String,
    pub key_pem: SecretPem,
    /// `None`: the fleet's default.
    pub redirect: Option<bool>,
}

/// A certificate an operator brings (`slum cert add`, `PUT
/// /v1/certificates/{name}`), checked by [`verify`] before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedCertificate {
    /// An exact domain or a wildcard (`*.example.com`).
    pub name: String,
    /// The chain, leaf first, in PEM.
    pub cert_pem: String,
    /// The leaf's private key in PEM (PKCS#8, RSA or EC).
    pub key_pem: SecretPem,
    /// `None`: the fleet's default.
    pub redirect: Option<bool>,
}

/// The ACME challenges a router answers for one domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenges {
    /// HTTP-01: `(token, key_authorization)`, answered on the plain listener
    /// at `/.well-known/acme-challenge/{token}`.
    pub http01: Vec<(String, String)>,
    /// TLS-ALPN-01: the challenge certificate presented to a client offering
    /// ALPN `acme-tls/1` (its `redirect` is `None`).
    pub alpn01: Option<CertificateMaterial>,
}

/// A certificate that passed [`verify`], as the store writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCertificate {
    /// Normalised: lower-case, no trailing dot.
    pub name: String,
    pub chain_pem: String,
    pub key_pem: SecretPem,
    /// The leaf's validity, in Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub redirect: Option<bool>,
}

/// Normalises a certificate's name (lower-case, no trailing dot) and checks
/// it: a host name, or `*.` and a host name that is not a public suffix (a
/// wildcard covers the names of one registrable domain at most).
pub fn certificate_name(field: &str, value: &str) -> Result<String> {
    let lower = value.trim_end_matches('.').to_ascii_lowercase();
    if let Some(parent) = lower.strip_prefix("*.") {
        let parent = validation::domain(field, parent)?;
        if List.domain(parent.as_bytes()).is_none() {
            return Err(Error::invalid(
                field,
                format!(
                    "{} would cover names under the public suffix '{parent}'; a wildcard \
                     covers one label under a domain ('*.example.com')",
                    quoted(value)
                ),
            ));
        }
        return Ok(format!("*.{parent}"));
    }
    if lower.contains('*') {
        return Err(Error::invalid(
            field,
            format!(
                "{} has a '*' that is not the whole first label; a wildcard is written \
                 '*.example.com'",
                quoted(value)
            ),
        ));
    }
    validation::domain(field, value)
}

/// Whether a certificate's DNS name `san` covers the (normalised) name: the
/// same name, or a wildcard `*.parent` covering `label.parent` (one label,
/// as browsers match it).
pub fn covers(san: &str, name: &str) -> bool {
    let san = san.trim_end_matches('.').to_ascii_lowercase();
    if san == name {
        return true;
    }
    match (san.strip_prefix("*."), name.split_once('.')) {
        (Some(parent), Some((first, rest))) => first != "*" && !first.is_empty() && rest == parent,
        _ => false,
    }
}

const NAME: &str = "certificate.name";
const CERT: &str = "certificate.cert_pem";
const KEY: &str = "certificate.key_pem";

/// Checks a certificate for `name` at Unix time `now`: the chain holds PEM
/// certificates only (leaf first) and each is X.509; the key is a PEM
/// private key that matches the leaf's public key; the leaf's DNS names
/// cover the name; and it has not expired. The chain is stored as given.
pub fn verify(
    name: &str,
    cert_pem: &str,
    key_pem: &SecretPem,
    redirect: Option<bool>,
    now: i64,
) -> Result<VerifiedCertificate> {
    let name = certificate_name(NAME, name)?;
    let chain = chain_der(cert_pem)?;
    let key = key_der(key_pem)?;
    let (not_before, not_after, sans) = leaf_facts(&chain)?;
    if !sans.iter().any(|san| covers(san, &name)) {
        let listed = if sans.is_empty() {
            "no DNS name".to_owned()
        } else {
            sans.iter()
                .map(|s| quoted(s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::invalid(
            CERT,
            format!("the certificate names {listed}; none covers '{name}'"),
        ));
    }
    if not_after <= now {
        return Err(Error::invalid(
            CERT,
            format!("the certificate expired at {}", unix_text(not_after)),
        ));
    }
    key_matches(chain, key)?;
    Ok(VerifiedCertificate {
        name,
        chain_pem: cert_pem.to_owned(),
        key_pem: key_pem.clone(),
        not_before,
        not_after,
        redirect,
    })
}

/// Checks a certificate and its key without a name (a TLS-ALPN-01
/// challenge's): both parse and the key is the leaf's.
pub fn verify_pair(cert_pem: &str, key_pem: &SecretPem) -> Result<()> {
    let chain = chain_der(cert_pem)?;
    let key = key_der(key_pem)?;
    key_matches(chain, key)
}

/// The chain's certificates, in order. Any other PEM section is refused: a
/// private key in the certificate file would travel as part of the chain.
fn chain_der(cert_pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let mut chain = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(cert_pem.as_bytes()) {
        let (kind, der) = section
            .map_err(|e| Error::invalid(CERT, format!("is not a PEM certificate chain: {e}")))?;
        match kind {
            SectionKind::Certificate => chain.push(CertificateDer::from(der)),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Err(Error::invalid(
                    CERT,
                    "holds a private key; the key goes in key_pem (--key), the chain alone \
                     in cert_pem (--cert)",
                ))
            }
            other => {
                return Err(Error::invalid(
                    CERT,
                    format!("holds a {other:?} section; only CERTIFICATE sections belong in it"),
                ))
            }
        }
    }
    if chain.is_empty() {
        return Err(Error::invalid(
            CERT,
            "holds no PEM certificate ('-----BEGIN CERTIFICATE-----')",
        ));
    }
    for (n, der) in chain.iter().enumerate() {
        x509_parser::parse_x509_certificate(der).map_err(|e| {
            Error::invalid(
                CERT,
                format!("certificate {} of the chain is not X.509: {e}", n + 1),
            )
        })?;
    }
    Ok(chain)
}

/// The private key. Its parse error is not quoted: it might echo the key.
fn key_der(key_pem: &SecretPem) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(|_| {
        Error::invalid(
            KEY,
            "holds no PEM private key ('-----BEGIN PRIVATE KEY-----', RSA or EC)",
        )
    })
}

/// The leaf's validity (Unix seconds) and DNS names.
fn leaf_facts(chain: &[CertificateDer<'static>]) -> Result<(i64, i64, Vec<String>)> {
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| Error::invalid(CERT, format!("the leaf is not X.509: {e}")))?;
    let validity = leaf.validity();
    let sans = match leaf.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            return Err(Error::invalid(
                CERT,
                format!("the leaf's subject alternative names do not parse: {e}"),
            ))
        }
    };
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
        sans,
    ))
}

/// Whether rustls takes the key, and it is the leaf's.
fn key_matches(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<()> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|_| {
        Error::invalid(
            KEY,
            "is not a key a TLS server can use (RSA, ECDSA P-256/P-384 or Ed25519)",
        )
    })?;
    // The key's public half against the leaf's, compared as rustls does
    // (`CertifiedKey::keys_match`), but with the leaf read by x509-parser:
    // webpki refuses a critical extension it does not know, such as a
    // TLS-ALPN-01 certificate's acmeIdentifier (RFC 8737), which a router
    // presents all the same.
    let Some(public) = signing.public_key() else {
        return Err(Error::invalid(
            KEY,
            "cannot be checked against the certificate: its public key is unknown",
        ));
    };
    let leaf = chain
        .first()
        .ok_or_else(|| Error::invalid(CERT, "holds no certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
        Error::invalid(
            CERT,
            format!("certificate 1 of the chain is not X.509: {e}"),
        )
    })?;
    if cert.tbs_certificate.subject_pki.raw == public.as_ref() {
        Ok(())
    } else {
        Err(Error::invalid(
            KEY,
            "does not match the certificate: it is not the key of the chain's first \
             certificate",
        ))
    }
}

fn unix_text(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exact_domains_or_one_label_wildcards() {
        assert_eq!(
            certificate_name("f", "Shop.Example.COM.").unwrap(),
            "shop.example.com"
        );
        assert_eq!(
            certificate_name("f", "*.Example.com").unwrap(),
            "*.example.com"
        );
        for bad in [
            "*.com",
            "*.co.uk",
            "a.*.example.com",
            "*example.com",
            "**.a.b",
            "",
        ] {
            let e = certificate_name("f", bad).unwrap_err();
            assert!(e.to_string().contains("invalid f"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_wildcard_covers_one_label_and_itself() {
        assert!(covers("shop.example.com", "shop.example.com"));
        assert!(covers("SHOP.example.com.", "shop.example.com"));
        assert!(covers("*.example.com", "shop.example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.shop.example.com"));
        assert!(!covers("shop.example.com", "*.example.com"));
        assert!(!covers("example.com", "shop.example.com"));
    }

    #[test]
    fn a_secret_never_prints() {
        let s = SecretPem::new("-----BEGIN PRIVATE KEY-----\nsecret\n");
        assert_eq!(format!("{s:?}"), "SecretPem(..)");
        let m = CertificateMaterial {
            chain_pem: "chain".into(),
            key_pem: s,
            redirect: None,
        };
        assert!(!format!("{m:?}").contains("secret"));
    }
}
