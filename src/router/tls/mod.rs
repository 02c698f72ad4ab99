//! HTTPS at the router: the fleet's certificates in memory, the choice of
//! one by SNI, and the ACME challenges any router answers.
//!
//! [`Certificates`] holds, per router process, each certificate of the fleet
//! by its name (an exact domain, or `*.parent` for a wildcard covering one
//! label), the TLS-ALPN-01 challenge certificates and the HTTP-01 tokens of
//! the orders in progress. They come from the fleet database through the
//! route change feed, one name at a time (see
//! [`route_sync`](super::route_sync)): a renewal replaces its own entry and
//! touches no other, and a handshake never waits for the database.
//!
//! [`SniResolver`] is rustls's certificate choice: a client that offers the
//! ALPN protocol `acme-tls/1` gets the challenge certificate of the name it
//! asks for; any other gets the certificate of that name, or else its
//! wildcard, but only for a tenant domain of the route table. A name that is
//! no tenant domain, or one without a certificate, fails the handshake with
//! an alert: there is no default certificate, which would tell a stranger
//! another customer's name. A tenant domain without a certificate is told to
//! the control plane ([`ControlPlane::certificate_wanted`]), once per name
//! for a while, so that one can be ordered.

mod der;
mod listener;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::time::Instant;

use super::control::ControlPlane;
use crate::lock;
pub(super) use listener::{handshake, server_config, Negotiated, TlsSettings};

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A certificate as the router serves it.
#[derive(Debug)]
pub struct Installed {
    /// The chain and its key, for rustls.
    pub(crate) key: Arc<CertifiedKey>,
    /// Whether plain requests for the names it covers are redirected to
    /// HTTPS: `None` follows the fleet's default (`--https-redirect`).
    pub redirect: Option<bool>,
    /// The end of the leaf's validity, in unix seconds.
    pub not_after: i64,
}

impl Installed {
    /// Whether the certificate is still valid at `now` (unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        now < self.not_after
    }
}

/// An HTTP-01 token and its key authorization.
type Token = (Box<str>, Box<str>);

/// How long a name told to the control plane as wanted is not told again.
const WANTED_AGAIN_AFTER: Duration = Duration::from_secs(3600);
/// The most names remembered as told: past it the oldest are forgotten (and
/// may be told again, which the control plane takes as the same wish).
const WANTED_KEPT: usize = 10_000;

/// The fleet's certificates and ACME challenges, as this router holds them.
#[derive(Default)]
pub struct Certificates {
    /// By name: a domain, or `*.parent`.
    by_name: RwLock<HashMap<Box<str>, Arc<Installed>>>,
    /// TLS-ALPN-01 challenge certificates, by domain.
    alpn01: RwLock<HashMap<Box<str>, Arc<CertifiedKey>>>,
    /// HTTP-01 tokens and their key authorizations, by domain.
    http01: RwLock<HashMap<Box<str>, Vec<Token>>>,
    /// Names told to the control plane as wanted, and when.
    wanted: Mutex<HashMap<Box<str>, Instant>>,
    /// Certificates that say their hosts are redirected to HTTPS: while
    /// there are none (and the fleet's default is not to), a plain request
    /// looks nothing up.
    redirecting: AtomicUsize,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and counts only: never a key.
        f.debug_struct("Certificates")
            .field("certificates", &read(&self.by_name).len())
            .field("alpn01", &read(&self.alpn01).len())
            .field("http01", &read(&self.http01).len())
            .finish()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A chain and key in PEM, made into what rustls signs with. The error says
/// what is wrong, and never holds the key.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate chain is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate chain holds no certificate".into());
    }
    // The parser's error is not quoted: it could show part of the key.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| "the private key is not a PEM private key".to_owned())?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the private key cannot be used with this chain: {e}"))?;
    // What `CertifiedKey::from_der` checks, with the leaf read by
    // x509-parser: webpki refuses a critical extension it does not know, such
    // as the acmeIdentifier of a TLS-ALPN-01 certificate (RFC 8737), which
    // is served all the same.
    let public = signing.public_key().ok_or_else(|| {
        "the private key cannot be used with this chain: its public key is unknown".to_owned()
    })?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| format!("the leaf certificate is not X.509: {e}"))?;
    if leaf.tbs_certificate.subject_pki.raw != public.as_ref() {
        return Err(
            "the private key cannot be used with this chain: it is not the key of its first \
             certificate"
                .into(),
        );
    }
    Ok(CertifiedKey::new(chain, signing))
}

impl Certificates {
    pub fn new() -> Certificates {
        Certificates::default()
    }

    /// Installs the certificate called `name` (a domain or `*.parent`) from
    /// its PEM chain (leaf first) and key, in place of any it had. An error
    /// says why it cannot be served; the one in place, if any, stays.
    pub fn install(
        &self,
        name: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
        redirect: Option<bool>,
    ) -> Result<(), String> {
        let key = certified_key(chain_pem, key_pem)?;
        let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
        let not_after = der::not_after(leaf)
            .ok_or_else(|| "the leaf certificate's validity cannot be read".to_owned())?;
        let installed = Arc::new(Installed {
            key: Arc::new(key),
            redirect,
            not_after,
        });
        let name = name.to_ascii_lowercase();
        lock(&self.wanted).remove(name.as_str());
        let mut by_name = write(&self.by_name);
        self.count_redirect(Some(&installed), 1);
        if let Some(old) = by_name.insert(name.into(), installed) {
            self.count_redirect(Some(&old), -1);
        }
        Ok(())
    }

    /// Removes the certificate called `name`, if there is one.
    pub fn remove(&self, name: &str) {
        let old = write(&self.by_name).remove(name.to_ascii_lowercase().as_str());
        self.count_redirect(old.as_ref(), -1);
    }

    /// Counts `installed` in or out of the certificates that redirect.
    fn count_redirect(&self, installed: Option<&Arc<Installed>>, by: isize) {
        if installed.is_some_and(|i| i.redirect == Some(true)) {
            match by > 0 {
                true => self.redirecting.fetch_add(1, Relaxed),
                false => self.redirecting.fetch_sub(1, Relaxed),
            };
        }
    }

    /// Keeps the certificates whose names `keep` says yes to (after the
    /// whole set was read again, see [`route_sync`](super::route_sync)).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut by_name = write(&self.by_name);
        by_name.retain(|name, installed| {
            let kept = keep(name);
            if !kept {
                self.count_redirect(Some(installed), -1);
            }
            kept
        });
    }

    /// Keeps the challenges of the domains `keep` says yes to.
    pub fn retain_challenges(&self, mut keep: impl FnMut(&str) -> bool) {
        write(&self.http01).retain(|domain, _| keep(domain));
        write(&self.alpn01).retain(|domain, _| keep(domain));
    }

    /// Whether any certificate says its hosts are redirected to HTTPS.
    pub fn any_redirects(&self) -> bool {
        self.redirecting.load(Relaxed) > 0
    }

    /// The certificate called `name` exactly.
    pub fn get(&self, name: &str) -> Option<Arc<Installed>> {
        read(&self.by_name).get(name).cloned()
    }

    /// How many certificates are held.
    pub fn len(&self) -> usize {
        read(&self.by_name).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The certificate that covers `host` (lower case): its own, or else
    /// the wildcard of its parent (one label: `*.example.com` covers
    /// `shop.example.com`, not `example.com` nor `a.shop.example.com`).
    pub fn covering(&self, host: &str) -> Option<Arc<Installed>> {
        let by_name = read(&self.by_name);
        if let Some(found) = by_name.get(host) {
            return Some(Arc::clone(found));
        }
        let (_, parent) = host.split_once('.')?;
        if parent.is_empty() {
            return None;
        }
        let mut wildcard = String::with_capacity(parent.len() + 2);
        wildcard.push_str("*.");
        wildcard.push_str(parent);
        by_name.get(wildcard.as_str()).cloned()
    }

    /// Sets the ACME challenges of `domain` as the fleet database has them
    /// now: its HTTP-01 tokens (token, key authorization) and its TLS-ALPN-01
    /// certificate (chain and key in PEM), each replacing what it had. An
    /// unusable ALPN certificate is left out, and the error says why.
    pub fn set_challenges(
        &self,
        domain: &str,
        http01: Vec<(String, String)>,
        alpn01: Option<(&[u8], &[u8])>,
    ) -> Result<(), String> {
        let domain: Box<str> = domain.to_ascii_lowercase().into();
        {
            let mut tokens = write(&self.http01);
            match http01.is_empty() {
                true => {
                    tokens.remove(&domain);
                }
                false => {
                    let listed = http01
                        .into_iter()
                        .map(|(t, k)| (t.into_boxed_str(), k.into_boxed_str()))
                        .collect();
                    tokens.insert(domain.clone(), listed);
                }
            }
        }
        let alpn = alpn01
            .map(|(chain, key)| certified_key(chain, key))
            .transpose();
        let mut certs = write(&self.alpn01);
        match alpn {
            Ok(Some(key)) => {
                certs.insert(domain, Arc::new(key));
                Ok(())
            }
            Ok(None) => {
                certs.remove(&domain);
                Ok(())
            }
            Err(e) => {
                certs.remove(&domain);
                Err(format!("the TLS-ALPN-01 certificate of {domain}: {e}"))
            }
        }
    }

    /// The key authorization that answers the HTTP-01 `token` for `host`.
    pub fn http01(&self, host: &str, token: &str) -> Option<String> {
        read(&self.http01)
            .get(host)?
            .iter()
            .find(|(t, _)| &**t == token)
            .map(|(_, k)| k.to_string())
    }

    /// The TLS-ALPN-01 challenge certificate of `domain`.
    fn alpn01(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        read(&self.alpn01).get(domain).cloned()
    }

    /// Whether `domain`, asked for without a certificate, is to be told to
    /// the control plane now: once per name within [`WANTED_AGAIN_AFTER`],
    /// and at most [`WANTED_KEPT`] names remembered.
    fn first_wish(&self, domain: &str, now: Instant) -> bool {
        let mut wanted = lock(&self.wanted);
        if let Some(told) = wanted.get(domain) {
            if now.saturating_duration_since(*told) < WANTED_AGAIN_AFTER {
                return false;
            }
        }
        if wanted.len() >= WANTED_KEPT {
            wanted.retain(|_, told| now.saturating_duration_since(*told) < WANTED_AGAIN_AFTER);
            if wanted.len() >= WANTED_KEPT {
                wanted.clear();
            }
        }
        wanted.insert(domain.into(), now);
        true
    }
}

/// rustls's certificate choice over the fleet's certificates and the route
/// table (see the module's documentation).
pub struct SniResolver {
    pub(super) certificates: Arc<Certificates>,
    pub(super) control: Arc<dyn ControlPlane>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("certificates", &self.certificates)
            .finish()
    }
}

impl SniResolver {
    /// The certificate for a client that asks for `name` (lower case),
    /// offering the ALPN `acme-tls/1` or not.
    pub(super) fn choose(&self, name: &str, acme: bool) -> Option<Arc<CertifiedKey>> {
        if acme {
            return self.certificates.alpn01(name);
        }
        // Not a tenant domain: nothing, whatever certificate covers it.
        self.control.table().get(name)?;
        match self.certificates.covering(name) {
            Some(installed) => Some(Arc::clone(&installed.key)),
            None => {
                if self.certificates.first_wish(name, Instant::now()) {
                    self.control.certificate_wanted(name);
                }
                None
            }
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        let acme = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        // rustls gives the name as the client sent it; domains are kept in
        // lower case.
        match name.bytes().any(|b| b.is_ascii_uppercase()) {
            true => self.choose(&name.to_ascii_lowercase(), acme),
            false => self.choose(name, acme),
        }
    }
}

#[cfg(test)]
mod tests;
