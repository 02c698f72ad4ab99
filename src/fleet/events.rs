//! The fleet's events: what happened to its servers, tenants and instances,
//! when, why, and which router did it, in the manner of `kubectl get events`
//! and nomad's allocation events. An operator asks "what happened to s1 last
//! night?" and reads the answer here rather than in the logs of every router.
//!
//! Whoever makes a change records it with [`FleetDb::record_event`]: the
//! fleet database's own calls (servers, tenants, tokens, certificates), the
//! orchestrator (spawns, stops, moves, reconcile) and `slum serve`'s background
//! work (health transitions, drains, failovers). Recording never fails the
//! change it describes: a database that refuses the event is logged, and the
//! change stands.
//!
//! Each event names the router that made it ([`FleetDb::set_router_name`]:
//! `slum serve` gives its host, port and process id), so that with several
//! routers on one PostgreSQL database the operator sees which one acted.
//! Events are kept for a bounded time and count ([`EventRetention`]), trimmed
//! by the leader a bounded batch at a time; every read is a keyset page by id
//! on an index (`migrations/*/0014_events.sql`).

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fleet::db::FleetDb;
use crate::fleet::paging::{Page, MAX_PAGE_LIMIT};
use crate::fleet::store::EventFilter;
use crate::fleet::validation;

/// Events in a page when the caller does not say.
pub const DEFAULT_EVENT_LIMIT: usize = 100;

/// The longest cause kept, in bytes.
const MAX_CAUSE: usize = 2000;

/// What an event is about. The names are the API's `kind` (kebab-case);
/// new kinds may appear in later versions, so readers keep the text
/// ([`Event::kind`]) and treat a kind they do not know as a normal event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    // ----- servers -----
    /// A server was added to the fleet.
    ServerAdded,
    /// A server was removed from the fleet.
    ServerRemoved,
    /// A server's settings changed (url, region, capacity, domain).
    ServerUpdated,
    /// A server's tenement token was set, changed or cleared.
    ServerTokenChanged,
    /// An operator (or a drain) set a server's status.
    ServerStatusSet,
    /// Health checks found a server answering (again).
    ServerOnline,
    /// Health checks (or the router's failed connections) found a server
    /// dead, or routing by another domain.
    ServerOffline,
    /// A health check found a server's tenement routing by another domain.
    RoutingProblem,
    /// A server's routing check passes again.
    RoutingFixed,
    // ----- drains and failover -----
    DrainStarted,
    DrainFinished,
    /// An undrain stopped a drain before it finished.
    DrainStopped,
    /// A server went offline and its `respawn` tenants are being respawned.
    Failover,
    /// Failover started a tenant's instance on another server.
    Respawned,
    RespawnFailed,
    // ----- instances -----
    Spawned,
    SpawnFailed,
    Stopped,
    /// A stop whose server did not answer: reconcile completes it.
    StopPending,
    /// An instance moved to another server (a tenant move, a drain).
    Moved,
    MoveFailed,
    /// Reconcile started again an instance its server had lost.
    ReconcileRespawned,
    /// Reconcile completed a pending stop or stopped a moved instance's old
    /// copy.
    ReconcileStopped,
    /// An action of reconcile failed.
    ReconcileFailed,
    // ----- tenants -----
    TenantAdded,
    TenantUpdated,
    TenantRemoved,
    // ----- the management API's tokens -----
    TokenCreated,
    TokenRevoked,
    // ----- certificates -----
    /// An operator's certificate was stored (added or replaced).
    CertificateAdded,
    CertificateRemoved,
    /// An ACME certificate was asked for a tenant domain.
    CertificateWanted,
    /// An ACME order issued (or renewed) a certificate.
    CertificateIssued,
    /// An ACME order failed.
    CertificateFailed,
}

impl EventKind {
    /// Every kind, in the order above.
    pub const ALL: [EventKind; 34] = [
        EventKind::ServerAdded,
        EventKind::ServerRemoved,
        EventKind::ServerUpdated,
        EventKind::ServerTokenChanged,
        EventKind::ServerStatusSet,
        EventKind::ServerOnline,
        EventKind::ServerOffline,
        EventKind::RoutingProblem,
        EventKind::RoutingFixed,
        EventKind::DrainStarted,
        EventKind::DrainFinished,
        EventKind::DrainStopped,
        EventKind::Failover,
        EventKind::Respawned,
        EventKind::RespawnFailed,
        EventKind::Spawned,
        EventKind::SpawnFailed,
        EventKind::Stopped,
        EventKind::StopPending,
        EventKind::Moved,
        EventKind::MoveFailed,
        EventKind::ReconcileRespawned,
        EventKind::ReconcileStopped,
        EventKind::ReconcileFailed,
        EventKind::TenantAdded,
        EventKind::TenantUpdated,
        EventKind::TenantRemoved,
        EventKind::TokenCreated,
        EventKind::TokenRevoked,
        EventKind::CertificateAdded,
        EventKind::CertificateRemoved,
        EventKind::CertificateWanted,
        EventKind::CertificateIssued,
        EventKind::CertificateFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ServerAdded => "server-added",
            EventKind::ServerRemoved => "server-removed",
            EventKind::ServerUpdated => "server-updated",
            EventKind::ServerTokenChanged => "server-token-changed",
            EventKind::ServerStatusSet => "server-status-set",
            EventKind::ServerOnline => "server-online",
            EventKind::ServerOffline => "server-offline",
            EventKind::RoutingProblem => "routing-problem",
            EventKind::RoutingFixed => "routing-fixed",
            EventKind::DrainStarted => "drain-started",
            EventKind::DrainFinished => "drain-finished",
            EventKind::DrainStopped => "drain-stopped",
            EventKind::Failover => "failover",
            EventKind::Respawned => "respawned",
            EventKind::RespawnFailed => "respawn-failed",
            EventKind::Spawned => "spawned",
            EventKind::SpawnFailed => "spawn-failed",
            EventKind::Stopped => "stopped",
            EventKind::StopPending => "stop-pending",
            EventKind::Moved => "moved",
            EventKind::MoveFailed => "move-failed",
            EventKind::ReconcileRespawned => "reconcile-respawned",
            EventKind::ReconcileStopped => "reconcile-stopped",
            EventKind::ReconcileFailed => "reconcile-failed",
            EventKind::TenantAdded => "tenant-added",
            EventKind::TenantUpdated => "tenant-updated",
            EventKind::TenantRemoved => "tenant-removed",
            EventKind::TokenCreated => "token-created",
            EventKind::TokenRevoked => "token-revoked",
            EventKind::CertificateAdded => "certificate-added",
            EventKind::CertificateRemoved => "certificate-removed",
            EventKind::CertificateWanted => "certificate-wanted",
            EventKind::CertificateIssued => "certificate-issued",
            EventKind::CertificateFailed => "certificate-failed",
        }
    }

    /// Whether the event says something went wrong (kubectl's `Warning`).
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventKind::ServerOffline
                | EventKind::RoutingProblem
                | EventKind::DrainStopped
                | EventKind::Failover
                | EventKind::RespawnFailed
                | EventKind::SpawnFailed
                | EventKind::StopPending
                | EventKind::MoveFailed
                | EventKind::ReconcileFailed
                | EventKind::CertificateFailed
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

/// How much an event matters: `warning` when something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLevel {
    Normal,
    Warning,
}

/// One event as the fleet database keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing: a later event has a larger id (on PostgreSQL, ids of two
    /// routers' events may commit a moment out of order).
    pub id: i64,
    /// When the router recorded it.
    pub at: DateTime<Utc>,
    /// What happened: one of [`EventKind`]'s names.
    pub kind: String,
    /// From the kind: `warning` when something went wrong.
    pub level: EventLevel,
    /// The server it concerns, if one.
    pub server: Option<String>,
    /// The tenant (its name) it concerns, if one.
    pub tenant: Option<String>,
    /// The instance (`tenant:instance_id`) it concerns, if one.
    pub instance: Option<String>,
    /// What happened and why, as a sentence.
    pub cause: String,
    /// The router (or program) that recorded it: `host:port (pid N)`.
    pub router: String,
}

impl Event {
    /// The level of a kind as read back (an unknown kind is normal).
    pub(crate) fn level_of(kind: &str) -> EventLevel {
        match EventKind::from_str(kind) {
            Ok(k) if k.is_warning() => EventLevel::Warning,
            _ => EventLevel::Normal,
        }
    }
}

/// An event to record: its kind, its cause and what it concerns.
///
/// ```
/// use slum::events::{EventKind, NewEvent};
/// let e = NewEvent::new(EventKind::CertificateIssued, "issued by Let's Encrypt, valid until 2025-09-01")
///     .server("s1")
///     .instance("acme:prod");
/// assert_eq!(e.tenant.as_deref(), Some("acme"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub server: Option<String>,
    pub tenant: Option<String>,
    pub instance: Option<String>,
    pub cause: String,
}

impl NewEvent {
    pub fn new(kind: EventKind, cause: impl Into<String>) -> NewEvent {
        NewEvent {
            kind,
            server: None,
            tenant: None,
            instance: None,
            cause: cause.into(),
        }
    }

    /// The server it concerns.
    pub fn server(mut self, id: impl Into<String>) -> NewEvent {
        self.server = Some(id.into());
        self
    }

    /// The tenant (by name) it concerns.
    pub fn tenant(mut self, name: impl Into<String>) -> NewEvent {
        self.tenant = Some(name.into());
        self
    }

    /// The instance (`tenant:instance_id`) it concerns, and its tenant.
    pub fn instance(mut self, key: impl Into<String>) -> NewEvent {
        let key = key.into();
        if let Some((tenant, _)) = key.split_once(':') {
            self.tenant = Some(tenant.to_owned());
        }
        self.instance = Some(key);
        self
    }
}

/// The row [`EventStore::insert_event`](crate::store::EventStore::insert_event) writes.
#[derive(Debug, Clone)]
pub struct EventRow<'a> {
    pub at: DateTime<Utc>,
    pub kind: &'a str,
    pub server: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub instance: Option<&'a str>,
    pub cause: &'a str,
    pub router: &'a str,
}

/// Which events: those of a server and/or a tenant, after an id or since a
/// time, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub server: Option<String>,
    /// The tenant's name.
    pub tenant: Option<String>,
    /// Only events after this id, oldest first (following, or the next page).
    pub after: Option<i64>,
    /// Only events recorded at or after this time, oldest first.
    pub since: Option<DateTime<Utc>>,
    /// At most this many (1 to [`MAX_PAGE_LIMIT`]).
    pub limit: usize,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            server: None,
            tenant: None,
            after: None,
            since: None,
            limit: DEFAULT_EVENT_LIMIT,
        }
    }
}

/// How long and how many events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    /// Events older than this are trimmed.
    pub max_age: Duration,
    /// Only the newest this many are kept.
    pub max_count: i64,
}

impl Default for EventRetention {
    /// A week, and at most a million events.
    fn default() -> Self {
        EventRetention {
            max_age: Duration::from_secs(7 * 86_400),
            max_count: 1_000_000,
        }
    }
}

/// Rows one trimming `DELETE` removes at most: a bounded transaction,
/// however far behind the trimming is.
pub const TRIM_BATCH: i64 = 10_000;

/// This process as events name it until [`FleetDb::set_router_name`]: its
/// host and process id.
fn default_router_name() -> String {
    format!("{} (pid {})", host_name(), std::process::id())
}

/// The machine's host name, as the kernel has it.
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A cause as stored: one line (control characters made spaces), at most
/// [`MAX_CAUSE`] bytes.
fn one_line(cause: &str) -> String {
    let mut out: String = cause
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_CAUSE {
        let mut end = MAX_CAUSE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The name events give the recording process, shared by a [`FleetDb`]'s
/// clones.
#[derive(Debug, Default)]
pub(crate) struct RouterName(OnceLock<String>);

impl RouterName {
    pub(crate) fn new() -> Arc<RouterName> {
        Arc::new(RouterName::default())
    }

    fn get(&self) -> &str {
        self.0.get_or_init(default_router_name)
    }
}

impl FleetDb {
    /// Names the process in the events it records from now on (`slum serve`:
    /// `host:port (pid N)`); only the first name given counts. Until then it
    /// is `host (pid N)`.
    pub fn set_router_name(&self, name: impl Into<String>) {
        let _ = self.router_name.0.set(one_line(&name.into()));
    }

    /// The name this process's events carry.
    pub fn router_name(&self) -> &str {
        self.router_name.get()
    }

    /// Records an event, now, by this process. Never fails: an event the
    /// database refuses is logged (as a warning) and dropped, and the change
    /// it describes stands.
    pub async fn record_event(&self, event: NewEvent) {
        if let Err(e) = self.try_record_event(&event).await {
            tracing::warn!(kind = %event.kind, cause = %event.cause, error = %e,
                "could not record an event");
        }
    }

    /// [`FleetDb::record_event`], saying whether it was stored: its id.
    pub async fn try_record_event(&self, event: &NewEvent) -> Result<i64> {
        let cause = one_line(&event.cause);
        self.store
            .insert_event(&EventRow {
                at: Utc::now(),
                kind: event.kind.as_str(),
                server: event.server.as_deref(),
                tenant: event.tenant.as_deref(),
                instance: event.instance.as_deref(),
                cause: &cause,
                router: self.router_name(),
            })
            .await
    }

    /// A page of events, oldest first: those after `query.after` (the next
    /// page's `after` is the last id when the page is full), else those since
    /// `query.since`, else the newest `query.limit`. Each is one walk of an
    /// index: by server or tenant and id, or by time.
    pub async fn events(&self, query: &EventQuery) -> Result<Page<Event>> {
        if !(1..=MAX_PAGE_LIMIT).contains(&query.limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be 1 to {MAX_PAGE_LIMIT}, not {}", query.limit),
            ));
        }
        if let Some(server) = &query.server {
            validation::dns_label("server", server)?;
        }
        if let Some(tenant) = &query.tenant {
            validation::dns_label("tenant", tenant)?;
        }
        if query.after.is_some_and(|a| a < 0) {
            return Err(Error::invalid("after", "must be an event id, 0 or more"));
        }
        let filter = EventFilter {
            server: query.server.as_deref(),
            tenant: query.tenant.as_deref(),
        };
        // One more than asked: whether more follow, without another query.
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let after = match (query.after, query.since) {
            (Some(after), _) => after,
            (None, Some(since)) => match self
                .store
                .first_event_since(since.timestamp_millis())
                .await?
            {
                Some(id) => id - 1,
                None => {
                    return Ok(Page {
                        items: Vec::new(),
                        next: None,
                    })
                }
            },
            (None, None) => {
                let mut newest = self.store.newest_events(filter, limit).await?;
                newest.reverse();
                return Ok(Page {
                    items: newest,
                    next: None,
                });
            }
        };
        let mut items = self.store.events_after(filter, after, limit + 1).await?;
        let next = if items.len() > query.limit {
            items.truncate(query.limit);
            items.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Trims the events older than `retention.max_age` and beyond the newest
    /// `retention.max_count`, at most [`TRIM_BATCH`] rows per statement and
    /// `batches` statements of each; returns how many went. The leader calls
    /// it now and then.
    pub async fn trim_events(&self, retention: &EventRetention, batches: usize) -> Result<u64> {
        let max_age = chrono::Duration::from_std(retention.max_age)
            .unwrap_or_else(|_| chrono::Duration::days(36_500));
        let before = (Utc::now() - max_age).timestamp_millis();
        let mut gone = 0;
        for _ in 0..batches {
            let n = self.store.delete_events_before(before, TRIM_BATCH).await?;
            gone += n;
            if n < TRIM_BATCH as u64 {
                break;
            }
        }
        for _ in 0..batches {
            let n = self
                .store
                .delete_events_beyond(retention.max_count.max(0), TRIM_BATCH)
                .await?;
            gone += n;
            if n < TRIM_BATCH as u64 {
                break;
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_str(kind.as_str()), Ok(kind));
        }
        assert!(EventKind::from_str("something-new").is_err());
        assert_eq!(Event::level_of("something-new"), EventLevel::Normal);
        assert_eq!(Event::level_of("server-offline"), EventLevel::Warning);
        assert_eq!(Event::level_of("spawned"), EventLevel::Normal);
    }

    #[test]
    fn a_cause_is_one_line_and_bounded() {
        assert_eq!(one_line("a\nb\x1b[31mc"), "a b [31mc");
        let long = "é".repeat(MAX_CAUSE);
        let cut = one_line(&long);
        assert!(cut.len() <= MAX_CAUSE && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn an_instance_names_its_tenant() {
        let e = NewEvent::new(EventKind::Stopped, "x").instance("acme:prod");
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.instance.as_deref(), Some("acme:prod"));
    }
}
