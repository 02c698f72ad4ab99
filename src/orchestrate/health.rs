//! Server health: active checks on an interval, passive reports from the router,
//! and the state machine that turns them into `online` and `offline`.
//!
//! [`Tracker`] is the pure part: it counts consecutive outcomes and says when a
//! server changes state. [`HealthMonitor`] feeds it (from active checks and
//! from the router's failed connections) and makes each change durable:
//! stored with its time, logged, counted in `/metrics`, and applied to routing
//! at once (see [`Routing`]).
//!
//! An active check is tenement's routing check
//! ([`TenementClients::check_routing`](crate::tenement::TenementClients::check_routing),
//! sent by the lighter [`HealthClient`]): the server must answer, and route
//! the Hosts slum sends it to its instances.
//! One that answers but routes by another domain would serve tenants its own
//! dashboard and API: it is offline at once (not after `fail_after` checks),
//! and its [routing problem](crate::Server::routing_problem) keeps the router
//! away until a check passes again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;

use crate::fleet::events::{EventKind, NewEvent};
use crate::fleet::model::ServerStatus;
use crate::metrics::Metrics;
use crate::orchestrate::health_client::HealthClient;
use crate::orchestrate::routing::{RoutedServer, Routing};
use crate::orchestrate::slum_db::SlumDb;
use crate::orchestrate::tenement::RoutingCheck;

/// Servers checked at once (two requests each): every server of a fleet of
/// 1,000 at the same time, and a bound on the sockets of a larger one.
pub const PARALLEL_CHECKS: usize = 1024;

/// When a server is declared offline or online again.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// Time between active checks of every server.
    pub interval: Duration,
    /// Time a check may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive failures that make a server offline.
    pub fail_after: u32,
    /// Consecutive successes that bring an offline server back online.
    pub recover_after: u32,
}

impl Default for HealthPolicy {
    /// Detects a dead or hung server within about 2 s (two checks a second
    /// apart, each allowed 1 s), well inside the 3 s target.
    fn default() -> Self {
        HealthPolicy {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fail_after: 2,
            recover_after: 2,
        }
    }
}

/// Consecutive outcomes of one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracker {
    failures: u32,
    successes: u32,
}

impl Tracker {
    /// Records one outcome for a server now in state `current`, and returns the
    /// state it should move to, if any. A draining server that fails goes
    /// offline like any other (its tenants must fail over); the fleet database
    /// remembers the drain, and a recovered server goes back to draining there.
    pub fn observe(
        &mut self,
        ok: bool,
        current: ServerStatus,
        policy: &HealthPolicy,
    ) -> Option<ServerStatus> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        match current {
            ServerStatus::Unknown if ok => Some(ServerStatus::Online),
            ServerStatus::Offline if ok && self.successes >= policy.recover_after => {
                Some(ServerStatus::Online)
            }
            ServerStatus::Online | ServerStatus::Unknown | ServerStatus::Draining
                if !ok && self.failures >= policy.fail_after =>
            {
                Some(ServerStatus::Offline)
            }
            _ => None,
        }
    }

    /// Records a check that found the server routing by another domain. That
    /// is an answer, not a flaky failure: the server goes offline at once
    /// (from any other state), and comes back after `recover_after` passed
    /// checks like any offline server.
    pub fn observe_misrouted(&mut self, current: ServerStatus) -> Option<ServerStatus> {
        self.failures = self.failures.saturating_add(1);
        self.successes = 0;
        (current != ServerStatus::Offline).then_some(ServerStatus::Offline)
    }
}

/// The routing problem recorded for a server whose tenement routes by
/// another domain than `domain` (see [`Server::routing_problem`]).
///
/// [`Server::routing_problem`]: crate::Server::routing_problem
fn mismatch_problem(domain: &str, reason: &str) -> String {
    format!("routes by a different domain than '{domain}': {reason}")
}

/// Why `t` happened, as its event says: the outcome that made it, after
/// the checks `policy` counts (`reason`: what the last failed check found).
fn transition_cause(
    t: &Transition,
    outcome: Outcome,
    reason: Option<&str>,
    policy: &HealthPolicy,
) -> String {
    match (t.to, outcome) {
        (ServerStatus::Offline, Outcome::Misrouted) => format!(
            "its tenement {}; the router sends it nothing",
            reason.unwrap_or("routes by another domain")
        ),
        (ServerStatus::Offline, _) => {
            let last = reason.unwrap_or("a connection the router could not make");
            match policy.fail_after {
                1 => format!("a health check failed: {last}"),
                n => format!("{n} health checks failed in a row, the last: {last}"),
            }
        }
        (ServerStatus::Online, _) if t.from == ServerStatus::Unknown => {
            "its first health check passed".to_owned()
        }
        (ServerStatus::Online, _) => match policy.recover_after {
            1 => "a health check passed again".to_owned(),
            n => format!("{n} health checks passed in a row"),
        },
        (to, _) => format!("health checks set it {to} (was {})", t.from),
    }
}

/// What one check of a server found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It answered, routing by its domain.
    Passed,
    /// No answer (or not tenement's), or a failed connection of the router.
    Failed,
    /// It answered, routing by another domain.
    Misrouted,
}

/// What the monitor knows of one server.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tracker: Tracker,
    status: ServerStatus,
    /// The status the monitor's last transition left, while routing may
    /// still show it (until its table reloads): no news, when seen.
    settling: Option<ServerStatus>,
    last_persisted_seen: Option<Instant>,
    /// When a check last passed: `last_seen` is written only every
    /// `seen_every`, this is the latest (what `slum status` shows).
    last_passed: Option<chrono::DateTime<Utc>>,
}

/// A server's change of state, as the monitor made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub server: String,
    pub from: ServerStatus,
    pub to: ServerStatus,
    /// What made it, for the log: "health check", "routing check" (the
    /// server routes by another domain) or "router connection failure".
    pub cause: &'static str,
}

/// What the monitor knows of every server, and the transitions its outcomes
/// make: the monitor's bookkeeping, without its handles on the fleet.
struct Ledger {
    policy: HealthPolicy,
    servers: Mutex<HashMap<String, Entry>>,
    /// How often `last_seen` is written for a server that stays online.
    seen_every: Duration,
}

impl Ledger {
    fn new(policy: HealthPolicy) -> Ledger {
        Ledger {
            policy,
            servers: Mutex::new(HashMap::new()),
            seen_every: Duration::from_secs(10),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        crate::lock(&self.servers)
    }

    /// When a check of `server` last passed, as this monitor saw it.
    fn last_passed(&self, server: &str) -> Option<chrono::DateTime<Utc>> {
        self.entries().get(server).and_then(|e| e.last_passed)
    }

    /// Whether the last outcome fed for `server` was a failure.
    fn last_failed(&self, server: &str) -> bool {
        self.entries()
            .get(server)
            .is_some_and(|e| e.tracker.failures > 0)
    }

    /// Feeds one outcome; returns the transition it caused and whether
    /// `last_seen` is due to be written.
    fn feed(
        &self,
        server: &str,
        stored: ServerStatus,
        outcome: Outcome,
        cause: &'static str,
    ) -> (Option<Transition>, bool) {
        // A misrouted server answered, but that is no sign of health: no
        // success is counted, and `last_seen` is not written.
        let ok = outcome == Outcome::Passed;
        let mut entries = self.entries();
        let entry = entries.entry(server.to_owned()).or_insert(Entry {
            tracker: Tracker::default(),
            status: stored,
            settling: None,
            last_persisted_seen: None,
            last_passed: None,
        });
        // A status other than the monitor's own, and other than the one its
        // last transition left (routing lags its decisions until the table
        // reloads), is someone else's: an operator's (`server update
        // --status`), a drain's, an undrain's, or a router that led before.
        // It is adopted and the counts start over, so that the checks take
        // it from there: a server set offline by hand that answers comes back
        // after `recover_after` good checks, as any offline server does.
        if stored == entry.status {
            entry.settling = None;
        } else if entry.settling != Some(stored) {
            entry.status = stored;
            entry.settling = None;
            entry.tracker = Tracker::default();
        }
        // Nobody's word keeps a misrouted server routable, a status put back
        // by hand included: it goes offline from whatever routing says (the
        // store's compare-and-set keeps a stale view from reporting it twice).
        if outcome == Outcome::Misrouted {
            entry.status = stored;
        }
        let from = entry.status;
        let next = match outcome {
            Outcome::Misrouted => entry.tracker.observe_misrouted(from),
            _ => entry.tracker.observe(ok, from, &self.policy),
        };
        if let Some(to) = next {
            entry.settling = Some(from);
            entry.status = to;
        }
        if ok {
            entry.last_passed = Some(Utc::now());
        }
        let seen_due = ok
            && entry
                .last_persisted_seen
                .is_none_or(|t| t.elapsed() >= self.seen_every);
        if seen_due || next.is_some() {
            entry.last_persisted_seen = ok.then(Instant::now).or(entry.last_persisted_seen);
        }
        let cause = match outcome {
            Outcome::Misrouted => "routing check",
            _ => cause,
        };
        (
            next.map(|to| Transition {
                server: server.to_owned(),
                from,
                to,
                cause,
            }),
            seen_due,
        )
    }
}

/// Active and passive health checking of every server of the fleet.
pub struct HealthMonitor {
    ledger: Ledger,
    db: SlumDb,
    routing: Arc<dyn Routing>,
    metrics: Arc<Metrics>,
    /// True while this process leads the fleet (only the leader decides).
    leading: tokio::sync::watch::Receiver<bool>,
    /// Every applied transition, whether an active check or the router's
    /// passive report caused it, for the supervisor to react to.
    events: tokio::sync::mpsc::UnboundedSender<Transition>,
    receiver: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Transition>>>,
    /// The active checks' requests.
    client: HealthClient,
}

impl HealthMonitor {
    /// A monitor that checks the servers `routing` routes to, records what
    /// it decides in `db`, applies it to `routing` and counts it in
    /// `metrics`; it decides for the fleet only while `leading` says so.
    pub(crate) fn new(
        policy: HealthPolicy,
        db: SlumDb,
        routing: Arc<dyn Routing>,
        metrics: Arc<Metrics>,
        leading: tokio::sync::watch::Receiver<bool>,
    ) -> HealthMonitor {
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
        let client = HealthClient::new(db.options());
        HealthMonitor {
            ledger: Ledger::new(policy),
            db,
            routing,
            metrics,
            leading,
            events,
            receiver: Mutex::new(Some(receiver)),
            client,
        }
    }

    /// The stream of applied transitions; there is one, for the supervisor.
    pub(crate) fn take_transitions(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Transition>> {
        crate::lock(&self.receiver).take()
    }

    pub fn policy(&self) -> &HealthPolicy {
        &self.ledger.policy
    }

    /// Checks every server once, all at once (up to [`PARALLEL_CHECKS`]
    /// servers at a time), and applies what changed (the transitions go out on
    /// the monitor's channel). The `last_seen` times due are written together,
    /// in one transaction, after the round: at 1,000 servers a write each
    /// would take longer than the interval.
    pub(crate) async fn check_all(&self) {
        let servers = self.routing.servers();
        let http = &self.client;
        http.keep_only(servers.iter().map(|s| s.url.as_str()));
        let timeout = self.policy().timeout;
        let turns = tokio::sync::Semaphore::new(PARALLEL_CHECKS);
        let checks = join_all(servers.iter().map(|s| {
            let turns = &turns;
            async move {
                let _turn = turns.acquire().await;
                let check = http.check_routing(&s.url, &s.domain, timeout).await;
                (s, check)
            }
        }))
        .await;
        let mut seen = Vec::new();
        for (s, check) in checks {
            // The status now, not at the start of the round: it may have changed
            // while the probes ran.
            let Some(stored) = self.routing.status(&s.id) else {
                continue;
            };
            let outcome = self.record_routing(s, &check).await;
            let (t, seen_due) = self.ledger.feed(&s.id, stored, outcome, "health check");
            if let Some(t) = t {
                let reason = match &check {
                    RoutingCheck::Routes => None,
                    RoutingCheck::Mismatch(reason) => Some(mismatch_problem(&s.domain, reason)),
                    RoutingCheck::Unknown(why) => Some(why.clone()),
                };
                let cause = transition_cause(&t, outcome, reason.as_deref(), self.policy());
                self.apply(&t, cause).await;
            } else if seen_due {
                seen.push((s.id.clone(), stored));
            }
        }
        // Only the "last seen" times: a failure to record them is said, and
        // the next good checks record them again.
        if let Err(e) = self.db.record_servers_seen(&seen, Utc::now()).await {
            tracing::warn!(servers = seen.len(), error = %e, "health: cannot record the last checks");
        }
    }

    /// Records the routing problem a check found, or that it found none, when
    /// that differs from what routing has: each change is stored, logged and
    /// routed once (a new mismatch is counted too).
    async fn record_routing(&self, s: &RoutedServer, check: &RoutingCheck) -> Outcome {
        let (outcome, problem) = match check {
            RoutingCheck::Routes => (Outcome::Passed, None),
            RoutingCheck::Mismatch(reason) => (
                Outcome::Misrouted,
                Some(mismatch_problem(&s.domain, reason)),
            ),
            RoutingCheck::Unknown(_) => return Outcome::Failed,
        };
        if s.routing_problem == problem {
            return outcome;
        }
        match self
            .db
            .record_routing_problem(&s.id, problem.as_deref())
            .await
        {
            Ok(true) => {
                let event = match &problem {
                    Some(problem) => {
                        tracing::warn!(server = %s.id, %problem,
                            "server routes by another domain: the router sends it nothing");
                        self.metrics.routing_mismatches.inc();
                        NewEvent::new(EventKind::RoutingProblem, format!("its tenement {problem}"))
                    }
                    None => {
                        tracing::info!(server = %s.id, domain = %s.domain,
                            "server routes by its domain: its routing check passes");
                        NewEvent::new(
                            EventKind::RoutingFixed,
                            format!("its tenement routes by its domain {} again", s.domain),
                        )
                    }
                };
                self.db.record_event(event.server(&s.id)).await;
                self.routing.fleet_changed().await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(server = %s.id, error = %e, "could not record a routing check")
            }
        }
        outcome
    }

    /// Whether this monitor's last word on `server` was a failure: a check
    /// that failed, or a connection the router could not make, with no
    /// success since.
    pub fn last_failed(&self, server: &str) -> bool {
        self.ledger.last_failed(server)
    }

    /// When `server` last answered a check: `stored` (its `last_seen`, which
    /// is written every ten seconds or so to spare the database) or this
    /// monitor's latest passed check, whichever is later. A router that does
    /// not lead has no checks of its own, and says what is stored.
    pub fn last_seen(
        &self,
        server: &str,
        stored: Option<chrono::DateTime<Utc>>,
    ) -> Option<chrono::DateTime<Utc>> {
        stored.max(self.ledger.last_passed(server))
    }

    /// A failed connection the router saw: counts as a failed check at once.
    pub(crate) async fn report_failure(&self, server: &str) {
        let Some(stored) = self.routing.status(server) else {
            return;
        };
        if !*self.leading.borrow() {
            // Not ours to decide for the fleet: route around the server here
            // until the leader's checks have had time to decide.
            if stored != ServerStatus::Offline {
                let policy = self.policy();
                let hold = policy.interval * (policy.fail_after + 1);
                self.routing.hold_offline(server, hold).await;
            }
            return;
        }
        if let (Some(t), _) =
            self.ledger
                .feed(server, stored, Outcome::Failed, "router connection failure")
        {
            let cause = transition_cause(&t, Outcome::Failed, None, self.policy());
            self.apply(&t, cause).await;
        }
    }

    /// Makes a transition durable and visible: stored with its time, logged,
    /// counted, routed, sent to the supervisor. When the stored status was no
    /// longer the one the transition started from (someone else changed it
    /// first), the table is reloaded and the monitor adopts it on the next
    /// outcome.
    async fn apply(&self, t: &Transition, cause: String) {
        let seen = (t.to == ServerStatus::Online).then(Utc::now);
        match self
            .db
            .record_server_health(&t.server, t.from, t.to, seen)
            .await
        {
            Ok(false) => self.routing.fleet_changed().await,
            Ok(true) => {
                if t.to == ServerStatus::Offline {
                    tracing::warn!(server = %t.server, from = %t.from, cause = t.cause,
                        "server is offline");
                } else {
                    tracing::info!(server = %t.server, from = %t.from, to = %t.to,
                        cause = t.cause, "server state changed");
                }
                self.metrics
                    .transitions
                    .with_label_values(&[t.to.as_str()])
                    .inc();
                let kind = match t.to {
                    ServerStatus::Online => EventKind::ServerOnline,
                    ServerStatus::Offline => EventKind::ServerOffline,
                    _ => EventKind::ServerStatusSet,
                };
                self.db
                    .record_event(NewEvent::new(kind, cause).server(&t.server))
                    .await;
                self.routing.fleet_changed().await;
                let _ = self.events.send(t.clone());
            }
            Err(e) => {
                tracing::warn!(server = %t.server, error = %e, "could not record a health transition");
                // Forget the decision so that the next outcome tries again.
                if let Some(entry) = self.ledger.entries().get_mut(&t.server) {
                    entry.status = t.from;
                    entry.settling = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerStatus::*;

    #[test]
    fn goes_offline_after_n_failures_and_back_after_m_successes() {
        let p = HealthPolicy {
            fail_after: 3,
            recover_after: 2,
            ..Default::default()
        };
        let mut t = Tracker::default();
        assert_eq!(t.observe(true, Unknown, &p), Some(Online));
        assert_eq!(t.observe(false, Online, &p), None);
        assert_eq!(t.observe(false, Online, &p), None);
        assert_eq!(
            t.observe(true, Online, &p),
            None,
            "a success resets the count"
        );
        assert_eq!(t.observe(false, Online, &p), None);
        assert_eq!(t.observe(false, Online, &p), None);
        assert_eq!(t.observe(false, Online, &p), Some(Offline));
        assert_eq!(t.observe(false, Offline, &p), None);
        assert_eq!(t.observe(true, Offline, &p), None);
        assert_eq!(
            t.observe(false, Offline, &p),
            None,
            "a failure resets the count"
        );
        assert_eq!(t.observe(true, Offline, &p), None);
        assert_eq!(t.observe(true, Offline, &p), Some(Online));
    }

    #[test]
    fn an_unchecked_server_can_be_found_dead() {
        let p = HealthPolicy::default();
        let mut t = Tracker::default();
        assert_eq!(t.observe(false, Unknown, &p), None);
        assert_eq!(t.observe(false, Unknown, &p), Some(Offline));
    }

    #[test]
    fn a_draining_server_stays_draining_until_it_fails() {
        let p = HealthPolicy::default();
        let mut t = Tracker::default();
        for ok in [true, true, true, false] {
            assert_eq!(t.observe(ok, Draining, &p), None);
        }
        // Dead while draining: offline, so that its tenants fail over.
        assert_eq!(t.observe(false, Draining, &p), Some(Offline));
    }

    #[test]
    fn the_monitor_reports_each_transition_once() {
        let m = Ledger::new(HealthPolicy::default());
        assert_eq!(m.feed("a", Online, Outcome::Failed, "health check").0, None);
        let (t, _) = m.feed("a", Online, Outcome::Failed, "health check");
        assert_eq!(
            t,
            Some(Transition {
                server: "a".into(),
                from: Online,
                to: Offline,
                cause: "health check",
            })
        );
        // The route table may still say online until the reload lands.
        assert_eq!(m.feed("a", Online, Outcome::Failed, "health check").0, None);
        assert_eq!(
            m.feed("a", Offline, Outcome::Passed, "health check").0,
            None
        );
        assert!(m
            .feed("a", Offline, Outcome::Passed, "health check")
            .0
            .is_some());
    }

    #[test]
    fn a_misrouted_server_is_offline_at_once_and_must_pass_again_to_return() {
        let p = HealthPolicy {
            fail_after: 3,
            recover_after: 2,
            ..Default::default()
        };
        for from in [Unknown, Online, Draining] {
            let mut t = Tracker::default();
            assert_eq!(t.observe_misrouted(from), Some(Offline), "from {from}");
        }
        let mut t = Tracker::default();
        assert_eq!(t.observe_misrouted(Offline), None);
        assert_eq!(t.observe(true, Offline, &p), None);
        assert_eq!(t.observe_misrouted(Offline), None);
        assert_eq!(t.observe(true, Offline, &p), None, "the mismatch reset it");
        assert_eq!(t.observe(true, Offline, &p), Some(Online));

        let m = Ledger::new(p);
        let (t, seen) = m.feed("a", Online, Outcome::Misrouted, "health check");
        assert_eq!(t.map(|t| t.to), Some(Offline));
        assert!(
            !seen,
            "an answer that routes elsewhere is no sign of health"
        );
        assert_eq!(
            m.feed("a", Offline, Outcome::Misrouted, "health check").0,
            None
        );
        // Put back online by hand, still misrouted: offline again.
        let (t, _) = m.feed("a", Online, Outcome::Misrouted, "health check");
        assert_eq!(
            t,
            Some(Transition {
                server: "a".into(),
                from: Online,
                to: Offline,
                cause: "routing check",
            })
        );
    }

    #[test]
    fn a_transitions_cause_says_which_checks_made_it() {
        let p = HealthPolicy::default();
        let t = |from, to| Transition {
            server: "s1".into(),
            from,
            to,
            cause: "health check",
        };
        assert_eq!(
            transition_cause(
                &t(Online, Offline),
                Outcome::Failed,
                Some("connection refused"),
                &p
            ),
            "2 health checks failed in a row, the last: connection refused"
        );
        assert_eq!(
            transition_cause(&t(Online, Offline), Outcome::Failed, None, &p),
            "2 health checks failed in a row, the last: a connection the router could not make"
        );
        assert_eq!(
            transition_cause(&t(Offline, Online), Outcome::Passed, None, &p),
            "2 health checks passed in a row"
        );
        assert_eq!(
            transition_cause(&t(Unknown, Online), Outcome::Passed, None, &p),
            "its first health check passed"
        );
        let misrouted = mismatch_problem("a.test", "its dashboard answered");
        assert_eq!(
            transition_cause(
                &t(Online, Offline),
                Outcome::Misrouted,
                Some(&misrouted),
                &p
            ),
            "its tenement routes by a different domain than 'a.test': its dashboard answered; \
             the router sends it nothing"
        );
    }

    #[test]
    fn a_status_set_by_hand_is_adopted_and_the_checks_take_it_from_there() {
        let m = Ledger::new(HealthPolicy::default());
        assert!(m
            .feed("a", Unknown, Outcome::Passed, "health check")
            .0
            .is_some());
        assert_eq!(m.feed("a", Online, Outcome::Passed, "health check").0, None);
        // An operator sets the healthy server offline: adopted, and two good
        // checks bring it back (it used to stay offline for good).
        assert_eq!(
            m.feed("a", Offline, Outcome::Passed, "health check").0,
            None
        );
        let (t, _) = m.feed("a", Offline, Outcome::Passed, "health check");
        assert_eq!(t.map(|t| (t.from, t.to)), Some((Offline, Online)));
        // Until routing shows its own decision, the status it left is no news.
        assert_eq!(
            m.feed("a", Offline, Outcome::Passed, "health check").0,
            None
        );
        assert_eq!(m.feed("a", Online, Outcome::Passed, "health check").0, None);
        // Set online by hand while failing: the failures count from there.
        m.feed("a", Online, Outcome::Failed, "health check");
        let (t, _) = m.feed("a", Online, Outcome::Failed, "health check");
        assert_eq!(t.map(|t| t.to), Some(Offline));
        assert_eq!(
            m.feed("a", Online, Outcome::Failed, "health check").0,
            None,
            "lag"
        );
        assert_eq!(
            m.feed("a", Offline, Outcome::Failed, "health check").0,
            None
        );
        // Online by hand: adopted, then two failures again.
        assert_eq!(m.feed("a", Online, Outcome::Failed, "health check").0, None);
        let (t, _) = m.feed("a", Online, Outcome::Failed, "health check");
        assert_eq!(t.map(|t| t.to), Some(Offline));
    }

    #[test]
    fn the_last_passed_check_is_kept_whatever_is_written() {
        let m = Ledger::new(HealthPolicy::default());
        assert_eq!(m.last_passed("a"), None);
        let before = Utc::now();
        m.feed("a", Online, Outcome::Passed, "health check");
        let first = m.last_passed("a").expect("a passed check");
        assert!(first >= before);
        // The second is not due to be written, but it is the last check.
        let (_, due) = m.feed("a", Online, Outcome::Passed, "health check");
        assert!(!due);
        assert!(m.last_passed("a").expect("kept") >= first);
        m.feed("a", Online, Outcome::Failed, "health check");
        assert!(
            m.last_passed("a").is_some(),
            "a failure keeps the last good one"
        );
    }

    #[test]
    fn a_server_is_failing_from_its_last_failure_to_its_next_success() {
        let m = Ledger::new(HealthPolicy::default());
        assert!(!m.last_failed("a"), "never checked");
        m.feed("a", Offline, Outcome::Failed, "health check");
        assert!(m.last_failed("a"));
        m.feed("a", Offline, Outcome::Failed, "health check");
        assert!(m.last_failed("a"));
        m.feed("a", Offline, Outcome::Passed, "health check");
        assert!(!m.last_failed("a"), "answered since");
    }
}
