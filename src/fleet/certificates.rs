//! The certificates' calls on [`FleetDb`]: an operator's uploads and their
//! listing (the API and the CLI), what routers read to serve them (one name
//! at a time, as the route change feed names it), and the bookkeeping of ACME
//! orders and their challenges (the leading router's).
//!
//! Every input is checked before the store is touched, so a refused call
//! changes nothing; names are normalised as domains are (lower-case, no
//! trailing dot). Times are Unix seconds, as the CA and the certificates
//! count them.

use chrono::Utc;

use crate::error::{Error, Kind, Result};
use crate::fleet::certificate::{
    self, certificate_name, CertificateInfo, CertificateMaterial, Challenges, SecretPem,
    UploadedCertificate,
};
use crate::fleet::db::FleetDb;
use crate::fleet::events::{EventKind, NewEvent};
use crate::fleet::paging::{page, Page, PageRequest};
use crate::fleet::validation;

/// The longest CA reason kept: enough for any problem document's detail.
const MAX_REASON: usize = 2000;

/// Now, in Unix seconds.
fn now() -> i64 {
    Utc::now().timestamp()
}

/// A Unix time in seconds as a date and time (UTC), for events.
fn from_secs(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// An ACME token or key authorization: base64url (and the '.' between a
/// key authorization's token and thumbprint), as RFC 8555 makes them; a
/// router matches it against a request path.
fn acme_text(field: &str, value: &str, dot: bool) -> Result<()> {
    if value.is_empty() || value.len() > 512 {
        return Err(Error::invalid(field, "must be 1 to 512 characters"));
    }
    match value
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || (dot && c == '.')))
    {
        Some(c) => Err(Error::invalid(
            field,
            format!(
                "contains {}; only base64url characters are allowed",
                validation::quoted(&c.to_string())
            ),
        )),
        None => Ok(()),
    }
}

/// A CA's reason as stored: control characters (newlines of a problem
/// document) made spaces, at most [`MAX_REASON`] bytes.
fn reason_text(reason: &str) -> String {
    let mut out: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

impl FleetDb {
    // ----- an operator's certificates -----

    /// Stores an operator's certificate under its name, replacing any of that
    /// name (an ACME one too, which slum then orders no more), once
    /// [`certificate::verify`] passes: the chain and key parse, the key is
    /// the leaf's, the leaf covers the name and has not expired. A refusal
    /// names the field (`certificate.name`, `certificate.cert_pem`,
    /// `certificate.key_pem`) and changes nothing.
    pub async fn put_certificate(&self, cert: &UploadedCertificate) -> Result<CertificateInfo> {
        let verified = certificate::verify(
            &cert.name,
            &cert.cert_pem,
            &cert.key_pem,
            cert.redirect,
            now(),
        )?;
        self.store.put_certificate(&verified).await?;
        self.record_event(NewEvent::new(
            EventKind::CertificateAdded,
            format!(
                "certificate {} stored, uploaded by an operator, valid until {}",
                verified.name,
                from_secs(verified.not_after)
            ),
        ))
        .await;
        self.store
            .get_certificate(&verified.name)
            .await?
            .ok_or_else(|| Error::not_found(Kind::Certificate, &verified.name))
    }

    /// A certificate without its key; `None` when there is none of that name.
    pub async fn certificate(&self, name: &str) -> Result<Option<CertificateInfo>> {
        let name = certificate_name("certificate.name", name)?;
        self.store.get_certificate(&name).await
    }

    /// A page of the certificates (no keys), by name.
    pub async fn list_certificates(&self, page_req: &PageRequest) -> Result<Page<CertificateInfo>> {
        let limit = page_req.fetch_limit()?;
        let after = page_req.after_key(|a| certificate_name("after", a))?;
        let rows = self
            .store
            .list_certificates_page(after.as_deref(), limit)
            .await?;
        Ok(page(rows, page_req.limit, |c| c.name.clone()))
    }

    /// Removes a certificate; routers stop serving it. `NotFound` when there
    /// is none of that name.
    pub async fn remove_certificate(&self, name: &str) -> Result<()> {
        let name = certificate_name("certificate.name", name)?;
        if !self.store.delete_certificate(&name).await? {
            return Err(Error::not_found(Kind::Certificate, name));
        }
        self.record_event(NewEvent::new(
            EventKind::CertificateRemoved,
            format!("certificate {name} removed; routers serve it no more"),
        ))
        .await;
        Ok(())
    }

    /// How many stored certificates expire before `before` (Unix seconds):
    /// one count on an index, whatever the number of certificates.
    pub async fn certificates_expiring(&self, before: i64) -> Result<i64> {
        self.store.count_certificates_expiring(before).await
    }

    /// The first `limit` certificates to expire before `before`, soonest
    /// first: `(name, not_after)`, in Unix seconds.
    pub async fn expiring_certificates(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.store.certificates_expiring(before, limit).await
    }

    // ----- what routers serve -----

    /// A certificate's chain, key and redirect, for a router; `None` when
    /// there is none of that name or it has no certificate yet.
    pub async fn certificate_material(&self, name: &str) -> Result<Option<CertificateMaterial>> {
        let name = certificate_name("certificate.name", name)?;
        self.store.certificate_material(&name).await
    }

    /// Every certificate that has one, by name, streamed to `each` (a
    /// router's start): never all in memory at once.
    pub async fn for_each_certificate_material(
        &self,
        each: &mut (dyn FnMut(String, CertificateMaterial) + Send),
    ) -> Result<()> {
        self.store.for_each_certificate_material(each).await
    }

    /// A domain's ACME challenges, for a router.
    pub async fn challenges_for(&self, domain: &str) -> Result<Challenges> {
        let domain = validation::domain("domain", domain)?;
        self.store.challenges(&domain).await
    }

    /// The domains with an ACME challenge, by domain (a router's start).
    pub async fn challenge_domains(&self) -> Result<Vec<String>> {
        self.store.challenge_domains().await
    }

    // ----- ACME orders -----

    /// Wants a certificate for a tenant domain: adds a pending ACME row, due
    /// now, unless a row of that name exists (uploaded, pending or issued).
    /// Returns whether it added one. `NotFound` (tenant) unless the domain is
    /// a tenant's: the fleet database is the authorization, so slum never
    /// orders a name it does not serve.
    pub async fn want_certificate(&self, domain: &str) -> Result<bool> {
        let domain = validation::domain("domain", domain)?;
        let added = self.store.want_certificate(&domain, now()).await?;
        if added {
            self.record_event(NewEvent::new(
                EventKind::CertificateWanted,
                format!("an ACME certificate for {domain} is wanted; the leading router orders it"),
            ))
            .await;
        }
        Ok(added)
    }

    /// At most `limit` ACME certificates whose order is due at `now` (Unix
    /// seconds), the longest due first.
    pub async fn due_certificates(&self, now: i64, limit: usize) -> Result<Vec<String>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.store.due_certificates(now, limit).await
    }

    /// Claims the order of an ACME certificate for `router` until `until`
    /// (Unix seconds): true for one caller only, while the order is due and
    /// no other claim is live. The claim moves the next try to `until`, so an
    /// order whose router died is due again then.
    pub async fn claim_certificate_order(
        &self,
        name: &str,
        router: &str,
        until: i64,
    ) -> Result<bool> {
        let name = certificate_name("certificate.name", name)?;
        validation::text("router", router)?;
        self.store
            .claim_certificate_order(&name, router, now(), until)
            .await
    }

    /// Stores what an ACME order issued: the chain (leaf first) and key,
    /// checked as an upload is, the validity read from the leaf
    /// (`not_before`, `not_after`) and when to renew (`next_try`), all Unix
    /// seconds. Failures are reset and the claim released. `NotFound` when
    /// no ACME certificate of that name exists (removed, or replaced by an
    /// upload, meanwhile).
    pub async fn certificate_issued(
        &self,
        name: &str,
        chain_pem: &str,
        key_pem: &SecretPem,
        not_before: i64,
        not_after: i64,
        next_try: i64,
    ) -> Result<()> {
        let mut verified = certificate::verify(name, chain_pem, key_pem, None, now())?;
        verified.not_before = not_before;
        verified.not_after = not_after;
        if !self.store.certificate_issued(&verified, next_try).await? {
            return Err(Error::not_found(Kind::Certificate, verified.name));
        }
        Ok(())
    }

    /// Records a failed ACME order: the CA's `reason` (control characters
    /// made spaces, at most 2,000 bytes), `failures` in a row and the next
    /// try (Unix seconds); the claim is released, and a certificate issued
    /// before is still served. `NotFound` as for
    /// [`FleetDb::certificate_issued`].
    pub async fn certificate_failed(
        &self,
        name: &str,
        reason: &str,
        failures: i64,
        next_try: i64,
    ) -> Result<()> {
        let name = certificate_name("certificate.name", name)?;
        if !self
            .store
            .certificate_failed(&name, &reason_text(reason), failures, next_try)
            .await?
        {
            return Err(Error::not_found(Kind::Certificate, name));
        }
        Ok(())
    }

    /// Adds an HTTP-01 challenge (replacing one of the same token): any
    /// router answers `key_authorization` at
    /// `/.well-known/acme-challenge/{token}` for `domain`.
    pub async fn put_http01(
        &self,
        token: &str,
        domain: &str,
        key_authorization: &str,
    ) -> Result<()> {
        acme_text("token", token, false)?;
        acme_text("key_authorization", key_authorization, true)?;
        let domain = validation::domain("domain", domain)?;
        self.store
            .put_http01(token, &domain, key_authorization)
            .await
    }

    /// Removes an HTTP-01 challenge (none: nothing to do).
    pub async fn remove_http01(&self, token: &str) -> Result<()> {
        acme_text("token", token, false)?;
        self.store.delete_http01(token).await
    }

    /// Adds (or replaces) a domain's TLS-ALPN-01 challenge certificate, once
    /// its key is found to be its own.
    pub async fn put_alpn01(
        &self,
        domain: &str,
        cert_pem: &str,
        key_pem: &SecretPem,
    ) -> Result<()> {
        let domain = validation::domain("domain", domain)?;
        certificate::verify_pair(cert_pem, key_pem)?;
        self.store.put_alpn01(&domain, cert_pem, key_pem).await
    }

    /// Removes a domain's TLS-ALPN-01 challenge (none: nothing to do).
    pub async fn remove_alpn01(&self, domain: &str) -> Result<()> {
        let domain = validation::domain("domain", domain)?;
        self.store.delete_alpn01(&domain).await
    }

    /// The fleet's ACME account: its directory URL and credentials (JSON, a
    /// secret).
    pub async fn acme_account(&self) -> Result<Option<(String, SecretPem)>> {
        self.store.acme_account().await
    }

    /// Stores (or replaces) the fleet's ACME account.
    pub async fn put_acme_account(&self, directory: &str, credentials: &SecretPem) -> Result<()> {
        validation::text("directory", directory)?;
        self.store.put_acme_account(directory, credentials).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_one_line_and_bounded() {
        assert_eq!(reason_text("a\nb\tc"), "a b c");
        let long = "é".repeat(MAX_REASON);
        let cut = reason_text(&long);
        assert!(cut.len() <= MAX_REASON && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn tokens_are_base64url() {
        assert!(acme_text("token", "aB-_09", false).is_ok());
        assert!(acme_text("token", "a.b", false).is_err());
        assert!(acme_text("key_authorization", "a.b", true).is_ok());
        assert!(acme_text("token", "../x", false).is_err());
        assert!(acme_text("token", "", false).is_err());
    }
}
