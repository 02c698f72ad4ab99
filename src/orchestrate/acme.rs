//! Certificates for the fleet's tenant domains, ordered from an ACME CA (RFC
//! 8555, Let's Encrypt and the like) by the leading `slum serve`.
//!
//! The fleet database is the authorization: a certificate is only ever
//! wanted for a tenant domain (the store refuses any other name), and checked
//! again against the tenants just before each order, so nobody can make slum
//! order a certificate for a name it does not serve. A domain is wanted when
//! it is added (this module follows the route change feed's domain entries
//! with a cursor of its own) and when a router is first asked for it over
//! HTTPS without a certificate (the router's `wanted` hook).
//!
//! Only the leader orders, and it claims each name in the database before it
//! does (a conditional update), so that one order per name is placed
//! fleet-wide whatever the number of routers, even two that both think they
//! lead. Challenges are answered by every router: an HTTP-01 token or a
//! TLS-ALPN-01 certificate is written to the database, reaches the routers
//! through the feed, and is removed when the order ends. The issued chain and
//! its key go back to the database and from there to every router, one name at
//! a time. Renewal is due at two thirds of a certificate's lifetime; a failed
//! order records the CA's own reason and is tried again after a back-off that
//! doubles from `retry_min` up to `retry_max`. Orders run side by side, a few
//! at a time, each with its own deadline, so one domain's failure never holds
//! up another's.
//!
//! What decides is pure ([`retry_delay`], [`renew_at`]); the loop that applies
//! it and the ACME exchanges (through the `instant-acme` crate, over a client
//! that trusts the public roots and `--acme-ca`) are below them.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    ExternalAccountKey, HttpClient, Identifier, NewAccount, NewOrder, Order, OrderStatus, Problem,
    RetryPolicy,
};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::fleet::certificate::SecretPem;
use crate::fleet::db::FleetDb;
use crate::fleet::events::{EventKind, NewEvent};
use crate::fleet::store::RouteKey;
use crate::metrics::Metrics;
use crate::orchestrate::routing::Routing;
use crate::tls::ServerRoots;

/// How often the leader looks for wanted domains and due orders.
const POLL: Duration = Duration::from_secs(2);

/// Orders in flight at once.
const ORDERS_AT_ONCE: usize = 8;

/// Feed entries read at a time.
const FEED_BATCH: i64 = 10_000;

/// The longest an order may take, from the new order to the issued chain. A
/// CA that takes longer is given up on; the claim outlives it by a margin, so
/// nobody else orders the name meanwhile.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a claim outlives [`ORDER_TIMEOUT`].
const CLAIM_MARGIN: Duration = Duration::from_secs(60);

/// How long one HTTP exchange with the CA may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The challenge the CA checks: which listener answers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A token at `/.well-known/acme-challenge/` on the plain listener (port
    /// 80 for a public CA).
    #[default]
    Http01,
    /// A certificate for ALPN `acme-tls/1` on the TLS listener (port 443).
    TlsAlpn01,
}

impl ChallengeKind {
    fn acme_type(self) -> ChallengeType {
        match self {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        }
    }
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        })
    }
}

impl FromStr for ChallengeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http-01" => Ok(ChallengeKind::Http01),
            "tls-alpn-01" => Ok(ChallengeKind::TlsAlpn01),
            other => Err(format!(
                "'{other}' is not a challenge slum answers (http-01 or tls-alpn-01)"
            )),
        }
    }
}

/// An External Account Binding key, which some CAs require to tie the ACME
/// account to an account of theirs. Its HMAC key never shows in `Debug`.
#[derive(Clone)]
pub struct ExternalAccount {
    pub kid: String,
    hmac: Arc<[u8]>,
}

impl ExternalAccount {
    /// The key id and the HMAC key as CAs hand them out (base64url, padded
    /// or not); an error says what is wrong without quoting the key.
    pub fn new(kid: &str, hmac_base64url: &str) -> Result<ExternalAccount, String> {
        use base64::Engine as _;
        if kid.is_empty() {
            return Err("the key id is empty".into());
        }
        let hmac = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(hmac_base64url.trim().trim_end_matches('='))
            .map_err(|_| "the HMAC key is not base64url".to_owned())?;
        if hmac.is_empty() {
            return Err("the HMAC key is empty".into());
        }
        Ok(ExternalAccount {
            kid: kid.to_owned(),
            hmac: hmac.into(),
        })
    }
}

impl fmt::Debug for ExternalAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAccount")
            .field("kid", &self.kid)
            .field("hmac", &"..")
            .finish()
    }
}

/// How the leader orders certificates.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The CA's ACME directory URL.
    pub directory: String,
    /// The contact the CA writes to about the account (expiry notices).
    pub email: Option<String>,
    pub external_account: Option<ExternalAccount>,
    /// A private CA trusted for the directory's `https://` besides the public
    /// roots (`--acme-ca`).
    pub roots: Option<ServerRoots>,
    pub challenge: ChallengeKind,
    /// The first back-off after a failed order; it doubles with each failure
    /// in a row...
    pub retry_min: Duration,
    /// ...up to this.
    pub retry_max: Duration,
    /// How long the other routers may take to see a challenge written to the
    /// database (their route poll): the CA is told to check after it.
    pub propagation: Duration,
}

impl AcmeConfig {
    /// The defaults for `directory`: HTTP-01, back-off from 1 minute to 24
    /// hours.
    pub fn new(directory: impl Into<String>) -> AcmeConfig {
        AcmeConfig {
            directory: directory.into(),
            email: None,
            external_account: None,
            roots: None,
            challenge: ChallengeKind::Http01,
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(24 * 60 * 60),
            propagation: Duration::from_millis(250),
        }
    }
}

/// How long to wait before ordering again after `failures` failed orders in a
/// row (at least one): `min`, doubled with each further failure, at most
/// `max`.
pub fn retry_delay(failures: u32, min: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    min.saturating_mul(1u32 << doublings.min(31)).min(max)
}

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is
/// renewed: two thirds into its lifetime, which leaves a third (30 days of
/// Let's Encrypt's 90) for failures to be retried before it expires.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

/// The CA's own words for a problem: its type and its detail, and those of
/// each subproblem.
fn problem_text(p: &Problem) -> String {
    let mut text = match (&p.r#type, &p.detail) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) => t.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => "the CA gave no reason".to_owned(),
    };
    for sub in &p.subproblems {
        text.push_str(&format!("; {sub}"));
    }
    text
}

/// Why an ACME exchange failed, for the certificate's `last_error`.
fn reason(e: instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => problem_text(&p),
        other => format!("talking to the ACME server: {other}"),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The self-signed certificate a router presents to a TLS-ALPN-01 check of
/// `domain` (RFC 8737): the domain as its only name, and the SHA-256 digest of
/// the key authorization in a critical acmeIdentifier extension. Returns its
/// PEM and its key's.
fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<(String, SecretPem), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("making a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])
        .map_err(|e| format!("a challenge certificate for {domain}: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("a challenge certificate for {domain}: {e}"))?;
    Ok((cert.pem(), SecretPem::new(key.serialize_pem())))
}

/// A certificate the CA issued, with the key it was issued for.
struct Issued {
    chain_pem: String,
    key_pem: SecretPem,
    not_before: i64,
    not_after: i64,
}

/// The validity of the leaf (the first certificate) of `chain_pem`.
fn validity(chain_pem: &str) -> Result<(i64, i64), String> {
    use rustls::pki_types::pem::PemObject as _;
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("the CA's answer holds no certificate")?
        .map_err(|e| format!("the CA's answer is not a PEM chain: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("the CA's certificate does not parse: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// A challenge written to the database for an order, removed when it ends.
enum Placed {
    Http01(String),
    Alpn01(String),
}

/// The HTTP client of the ACME exchanges: hyper over rustls, trusting the
/// public roots and `--acme-ca`.
#[derive(Clone)]
struct AcmeHttp(Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl AcmeHttp {
    fn new(roots: Option<&ServerRoots>) -> AcmeHttp {
        let tls = match roots {
            Some(roots) => roots.client_config(),
            None => rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.with_root_certificates(rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                })
                .with_no_client_auth()
            })
            // ring supports the default versions: this cannot fail.
            .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3")),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        AcmeHttp(Client::builder(TokioExecutor::new()).build(connector))
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = self.0.request(req);
        Box::pin(async move {
            match tokio::time::timeout(HTTP_TIMEOUT, sent).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("no answer within {} s", HTTP_TIMEOUT.as_secs()).into(),
                )),
            }
        })
    }
}

/// The leader's certificate orders.
pub struct Acme {
    db: FleetDb,
    routing: Arc<dyn Routing>,
    metrics: Arc<Metrics>,
    config: AcmeConfig,
    http: AcmeHttp,
    /// This process's name on its claims.
    router: String,
    /// The ACME account, once read from the database or created.
    account: tokio::sync::Mutex<Option<Account>>,
    /// Wakes the loop before its next poll (a domain was wanted here).
    wake: Notify,
}

impl Acme {
    pub fn new(
        db: FleetDb,
        routing: Arc<dyn Routing>,
        metrics: Arc<Metrics>,
        config: AcmeConfig,
    ) -> Arc<Acme> {
        let http = AcmeHttp::new(config.roots.as_ref());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let router = format!(
            "{host}:{}:{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        Arc::new(Acme {
            db,
            routing,
            metrics,
            config,
            http,
            router,
            account: tokio::sync::Mutex::new(None),
            wake: Notify::new(),
        })
    }

    /// Wants a certificate for `domain` (refused unless it is a tenant
    /// domain), and has the leader look at once if it is this process.
    pub async fn want(&self, domain: &str) -> crate::Result<()> {
        self.db.want_certificate(domain).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Orders certificates while `leading` says this process leads, until the
    /// task is aborted. Orders in flight when leadership goes are finished
    /// (their claims hold the names meanwhile).
    pub async fn run(self: Arc<Self>, mut leading: tokio::sync::watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(ORDERS_AT_ONCE));
        let mut orders: JoinSet<String> = JoinSet::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        // The feed entry the domains were followed to; `None` while not leading.
        let mut cursor: Option<i64> = None;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                changed = leading.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                Some(done) = orders.join_next(), if !orders.is_empty() => {
                    if let Ok(name) = done {
                        in_flight.remove(&name);
                    }
                    continue;
                }
            }
            if !*leading.borrow() {
                cursor = None;
                continue;
            }
            let at = match cursor {
                Some(at) => at,
                // Domains added before this process led were wanted by the
                // leader then, or are wanted when first asked for over HTTPS.
                None => match self.db.fleet_version().await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "ACME: cannot read the routing version");
                        continue;
                    }
                },
            };
            cursor = Some(self.want_added_domains(at).await);
            self.start_due(&slots, &mut orders, &mut in_flight).await;
        }
    }

    /// Wants a certificate for each domain the route change feed names after
    /// `cursor`; returns the entry it got to.
    async fn want_added_domains(&self, mut cursor: i64) -> i64 {
        loop {
            let changes = match self.db.route_changes_after(cursor, FEED_BATCH).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "ACME: cannot read the route change feed");
                    return cursor;
                }
            };
            let Some(last) = changes.last().map(|c| c.seq) else {
                return cursor;
            };
            if changes[0].seq != cursor + 1 {
                tracing::warn!(
                    seen = cursor,
                    next = changes[0].seq,
                    "ACME: the route change feed was trimmed past this router; domains added \
                     meanwhile get their certificates when first asked for over HTTPS"
                );
            }
            // A domain named by the feed was added, changed or removed: the
            // store wants a certificate for it only if it is a tenant domain
            // without one.
            let domains: HashSet<&str> = changes
                .iter()
                .filter_map(|c| match &c.key {
                    RouteKey::Domain(d) => Some(d.as_str()),
                    _ => None,
                })
                .collect();
            for domain in domains {
                match self.db.want_certificate(domain).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        tracing::warn!(error = %e, domain, "ACME: cannot want a certificate")
                    }
                }
            }
            cursor = last;
            if (changes.len() as i64) < FEED_BATCH {
                return cursor;
            }
        }
    }

    /// Claims and starts the due orders there is room for.
    async fn start_due(
        self: &Arc<Self>,
        slots: &Arc<Semaphore>,
        orders: &mut JoinSet<String>,
        in_flight: &mut HashSet<String>,
    ) {
        let room = slots.available_permits();
        if room == 0 {
            return;
        }
        let now = unix_now();
        // Those in flight here are due again only once their claim runs out.
        let due = match self.db.due_certificates(now, room + in_flight.len()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "ACME: cannot read the certificates due");
                return;
            }
        };
        let until = now + secs(ORDER_TIMEOUT + CLAIM_MARGIN);
        for name in due {
            if in_flight.contains(&name) {
                continue;
            }
            let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
                return;
            };
            match self
                .db
                .claim_certificate_order(&name, &self.router, until)
                .await
            {
                Ok(true) => {}
                // Another router claimed it first.
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, name, "ACME: cannot claim an order");
                    continue;
                }
            }
            in_flight.insert(name.clone());
            let me = Arc::clone(self);
            orders.spawn(async move {
                me.order_and_record(&name).await;
                drop(permit);
                name
            });
        }
    }

    /// Orders `name` (claimed) and records what came of it.
    async fn order_and_record(&self, name: &str) {
        // The fleet database is the authorization: a domain that is no
        // tenant's any more is not ordered again, and its certificate goes.
        match self.db.get_tenant_by_domain(name).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                tracing::info!(
                    name,
                    "ACME: no tenant has this domain any more; its certificate is removed"
                );
                if let Err(e) = self.db.remove_certificate(name).await {
                    tracing::warn!(error = %e, name, "ACME: cannot remove a certificate");
                }
                self.routing.fleet_changed().await;
                return;
            }
            Err(e) => {
                // Tried again when the claim runs out.
                tracing::warn!(error = %e, name, "ACME: cannot read the domain's tenant");
                return;
            }
        }
        let failures = match self.db.certificate(name).await {
            Ok(Some(c)) => c.failures,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, name, "ACME: cannot read the certificate");
                return;
            }
        };
        tracing::info!(name, challenge = %self.config.challenge, "ACME: ordering a certificate");
        let outcome = match tokio::time::timeout(ORDER_TIMEOUT, self.order(name)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "the order did not complete within {} s",
                ORDER_TIMEOUT.as_secs()
            )),
        };
        let recorded = match outcome {
            Ok(issued) => {
                let next = renew_at(issued.not_before, issued.not_after);
                self.metrics
                    .acme_orders
                    .with_label_values(&["issued"])
                    .inc();
                tracing::info!(
                    name,
                    not_after = issued.not_after,
                    renew_at = next,
                    "ACME: certificate issued"
                );
                let stored = self
                    .db
                    .certificate_issued(
                        name,
                        &issued.chain_pem,
                        &issued.key_pem,
                        issued.not_before,
                        issued.not_after,
                        next,
                    )
                    .await;
                if stored.is_ok() {
                    let until = chrono::DateTime::from_timestamp(issued.not_after, 0)
                        .map_or_else(|| issued.not_after.to_string(), |t| t.to_rfc3339());
                    self.db
                        .record_event(NewEvent::new(
                            EventKind::CertificateIssued,
                            format!(
                                "certificate {name} issued by the ACME server, valid until {until}"
                            ),
                        ))
                        .await;
                }
                stored
            }
            Err(why) => {
                let failures = failures.saturating_add(1);
                let delay = retry_delay(
                    u32::try_from(failures).unwrap_or(u32::MAX),
                    self.config.retry_min,
                    self.config.retry_max,
                );
                let next = unix_now() + secs(delay);
                self.metrics
                    .acme_orders
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(
                    name,
                    reason = %why,
                    failures,
                    retry_in_seconds = delay.as_secs(),
                    "ACME: order failed"
                );
                let stored = self.db.certificate_failed(name, &why, failures, next).await;
                if stored.is_ok() {
                    self.db
                        .record_event(NewEvent::new(
                            EventKind::CertificateFailed,
                            format!(
                                "the order of certificate {name} failed ({failures} in a row; next try in {} s): {why}",
                                delay.as_secs()
                            ),
                        ))
                        .await;
                }
                stored
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(error = %e, name, "ACME: cannot record the order's outcome");
        }
        self.routing.fleet_changed().await;
    }

    /// The ACME account: the one in the database for this directory, or a new
    /// one (stored for the next orders and the next leader).
    async fn account(&self) -> Result<Account, String> {
        let mut cached = self.account.lock().await;
        if let Some(account) = &*cached {
            return Ok(account.clone());
        }
        let stored = self
            .db
            .acme_account()
            .await
            .map_err(|e| format!("reading the ACME account: {e}"))?;
        if let Some((directory, credentials)) = stored {
            if directory == self.config.directory {
                // serde's message could quote the key: not passed on.
                let credentials: AccountCredentials = serde_json::from_str(credentials.expose())
                    .map_err(|_| "the stored ACME account's credentials do not parse".to_owned())?;
                let account = Account::builder_with_http(Box::new(self.http.clone()))
                    .from_credentials(credentials)
                    .await
                    .map_err(reason)?;
                *cached = Some(account.clone());
                return Ok(account);
            }
            tracing::info!(
                old = directory,
                new = self.config.directory,
                "ACME: the directory changed; creating an account there"
            );
        }
        let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = self
            .config
            .external_account
            .as_ref()
            .map(|e| ExternalAccountKey::new(e.kid.clone(), &e.hmac));
        let (account, credentials) = Account::builder_with_http(Box::new(self.http.clone()))
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| format!("creating the ACME account: {}", reason(e)))?;
        let credentials = serde_json::to_string(&credentials)
            .map(SecretPem::new)
            .map_err(|_| "the ACME account's credentials do not serialize".to_owned())?;
        self.db
            .put_acme_account(&self.config.directory, &credentials)
            .await
            .map_err(|e| format!("storing the ACME account: {e}"))?;
        tracing::info!(
            directory = self.config.directory,
            account = account.id(),
            "ACME: account created"
        );
        *cached = Some(account.clone());
        Ok(account)
    }

    /// Places an order for `name` and answers its challenges through the
    /// routers; returns the issued certificate, or the reason it was not.
    async fn order(&self, name: &str) -> Result<Issued, String> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(reason)?;
        let mut placed = Vec::new();
        let outcome = self.complete(&mut order, name, &mut placed).await;
        for p in placed {
            let removed = match &p {
                Placed::Http01(token) => self.db.remove_http01(token).await,
                Placed::Alpn01(domain) => self.db.remove_alpn01(domain).await,
            };
            if let Err(e) = removed {
                tracing::warn!(error = %e, name, "ACME: cannot remove a challenge");
            }
        }
        outcome
    }

    async fn complete(
        &self,
        order: &mut Order,
        name: &str,
        placed: &mut Vec<Placed>,
    ) -> Result<Issued, String> {
        let kind = self.config.challenge;
        let mut ready = Vec::new();
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(reason)?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(format!("the CA's authorization of {name} is {other:?}")),
                }
                let challenge = authz
                    .challenge(kind.acme_type())
                    .ok_or_else(|| format!("the CA offers no {kind} challenge for {name}"))?;
                let key_authorization = challenge.key_authorization();
                let written = match kind {
                    ChallengeKind::Http01 => {
                        let token = challenge.token.clone();
                        let put = self
                            .db
                            .put_http01(&token, name, key_authorization.as_str())
                            .await;
                        placed.push(Placed::Http01(token));
                        put
                    }
                    ChallengeKind::TlsAlpn01 => {
                        let (cert, key) =
                            alpn_certificate(name, key_authorization.digest().as_ref())?;
                        let put = self.db.put_alpn01(name, &cert, &key).await;
                        placed.push(Placed::Alpn01(name.to_owned()));
                        put
                    }
                };
                written.map_err(|e| format!("storing the {kind} challenge: {e}"))?;
                ready.push(challenge.url.clone());
            }
        }
        if !ready.is_empty() {
            // This router at once, the others at their next look at the feed.
            self.routing.fleet_changed().await;
            tokio::time::sleep(self.config.propagation).await;
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(reason)?;
                if authz.status != AuthorizationStatus::Pending {
                    continue;
                }
                if let Some(mut challenge) = authz.challenge(kind.acme_type()) {
                    challenge.set_ready().await.map_err(reason)?;
                }
            }
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(90)))
            .await;
        match status {
            Ok(OrderStatus::Ready) => {}
            Ok(_) | Err(instant_acme::Error::Api(_)) => {
                let fallback = match status {
                    Err(e) => reason(e),
                    Ok(s) => format!("the CA left the order {s:?}"),
                };
                return Err(why_invalid(order).await.unwrap_or(fallback));
            }
            Err(e) => return Err(reason(e)),
        }
        let key = rcgen::KeyPair::generate().map_err(|e| format!("making a key: {e}"))?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| format!("a certificate request for {name}: {e}"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("a certificate request for {name}: {e}"))?;
        order.finalize_csr(csr.der()).await.map_err(reason)?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(90)))
            .await
            .map_err(reason)?;
        let (not_before, not_after) = validity(&chain_pem)?;
        Ok(Issued {
            chain_pem,
            key_pem: SecretPem::new(key.serialize_pem()),
            not_before,
            not_after,
        })
    }
}

/// The CA's reason an order's authorization failed: the first challenge
/// error it reports.
async fn why_invalid(order: &mut Order) -> Option<String> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let Ok(mut authz) = authz else { continue };
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        if let Some(p) = state.challenges.iter().find_map(|c| c.error.as_ref()) {
            return Some(problem_text(p));
        }
    }
    order.state().error.as_ref().map(problem_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_from_its_minimum_up_to_its_maximum() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(24 * 3600));
        let delays: Vec<u64> = (1..=13)
            .map(|n| retry_delay(n, min, max).as_secs())
            .collect();
        assert_eq!(
            delays,
            [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 30720, 61440, 86400, 86400]
        );
        assert_eq!(retry_delay(u32::MAX, min, max), max, "no overflow");
        assert_eq!(retry_delay(0, min, max), min);
        let short = Duration::from_millis(500);
        assert_eq!(retry_delay(3, short, max), Duration::from_secs(2));
    }

    #[test]
    fn renewal_is_due_two_thirds_into_the_lifetime() {
        // Let's Encrypt's 90 days: renewed 30 days before expiry.
        let day = 86_400;
        assert_eq!(renew_at(1_000, 1_000 + 90 * day), 1_000 + 60 * day);
        assert_eq!(renew_at(0, 30), 20);
        assert_eq!(renew_at(50, 40), 50, "a backwards validity renews at once");
    }

    #[test]
    fn the_cas_reason_is_kept_in_its_own_words() {
        let p: Problem = serde_json::from_str(
            r#"{"type": "urn:ietf:params:acme:error:connection",
                "detail": "dial tcp 127.0.0.1:80: connect: connection refused",
                "status": 400}"#,
        )
        .unwrap();
        assert_eq!(
            problem_text(&p),
            "urn:ietf:params:acme:error:connection: dial tcp 127.0.0.1:80: connect: connection refused"
        );
        let p: Problem = serde_json::from_str(
            r#"{"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "2 names",
                "subproblems": [{"type": "urn:ietf:params:acme:error:caa",
                                 "detail": "CAA forbids", "identifier": {"type": "dns", "value": "a.example.com"}}]}"#,
        )
        .unwrap();
        let text = problem_text(&p);
        assert!(
            text.starts_with("urn:ietf:params:acme:error:rejectedIdentifier: 2 names; "),
            "{text}"
        );
        assert!(
            text.contains("a.example.com") && text.contains("CAA forbids"),
            "{text}"
        );
    }

    #[test]
    fn challenge_kinds_read_as_the_rfc_names_them() {
        assert_eq!("http-01".parse(), Ok(ChallengeKind::Http01));
        assert_eq!("tls-alpn-01".parse(), Ok(ChallengeKind::TlsAlpn01));
        let e = "dns-01".parse::<ChallengeKind>().unwrap_err();
        assert!(e.contains("http-01 or tls-alpn-01"), "{e}");
        assert_eq!(ChallengeKind::TlsAlpn01.to_string(), "tls-alpn-01");
    }

    #[test]
    fn an_external_account_key_never_shows_and_must_be_base64url() {
        let eab = ExternalAccount::new("kid-1", "c2VjcmV0LWhtYWMta2V5").unwrap();
        assert_eq!(&*eab.hmac, b"secret-hmac-key");
        let shown = format!("{eab:?}");
        assert!(
            shown.contains("kid-1") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
        // Padded, as some CAs print it.
        assert!(ExternalAccount::new("kid-1", "c2VjcmV0LWhtYWMta2V5==").is_ok());
        let e = ExternalAccount::new("kid-1", "not base64!").unwrap_err();
        assert_eq!(e, "the HMAC key is not base64url");
        assert!(ExternalAccount::new("", "c2Vj").is_err());
    }

    #[test]
    fn a_tls_alpn_challenge_certificate_names_the_domain_and_carries_the_digest() {
        let digest = [7u8; 32];
        let (cert_pem, key_pem) = alpn_certificate("shop.example.com", &digest).unwrap();
        assert!(key_pem.expose().contains("PRIVATE KEY"));
        // The store takes it (its key is the certificate's), whatever webpki
        // thinks of the critical extension.
        crate::fleet::certificate::verify_pair(&cert_pem, &key_pem).unwrap();
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            "[DNSName(\"shop.example.com\")]"
        );
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical, an OCTET
        // STRING of the digest.
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(ext.critical);
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
    }
}
