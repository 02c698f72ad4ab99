//! The background work of `slum serve`: health checks of every server on an
//! interval, reconcile on an interval and whenever a server comes back, and
//! failover when a server goes offline, and whenever the leader finds one
//! offline: when it starts to lead (after its first round of checks) and on
//! each reconcile round. The leader also trims the fleet's events to their
//! retention, a bounded batch at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::fleet::events::EventRetention;
use crate::fleet::model::ServerStatus;
use crate::orchestrate::failover::Respawner;
use crate::orchestrate::health::HealthMonitor;
use crate::orchestrate::routing::Routing;
use crate::orchestrate::slum_db::SlumDb;
use crate::AbortOnDrop;

/// Runs the health checks, reconcile and failover until the task is aborted:
/// over `db`, with `health`'s checks, telling `routing` of every change, and
/// deciding only while `leading` (which it keeps) says this process leads.
pub async fn run(
    db: SlumDb,
    health: Arc<HealthMonitor>,
    routing: Arc<dyn Routing>,
    leading: Arc<tokio::sync::watch::Sender<bool>>,
    reconcile_every: Duration,
    events: EventRetention,
) {
    // Only the leader decides (one per fleet database): health transitions,
    // reconcile, respawn failover. Every router keeps serving traffic, and keeps
    // its own passive checks (see `HealthMonitor::report_failure`).
    let leadership = {
        let db = db.clone();
        let leading = Arc::clone(&leading);
        tokio::spawn(async move {
            loop {
                if let Err(e) = db.lead((*leading).clone()).await {
                    tracing::warn!(error = %e, "lost the fleet leadership; trying again");
                }
                leading.send_replace(false);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let _stop_leadership = AbortOnDrop(leadership);
    let respawner = Arc::new(Respawner::new(db.clone(), Arc::clone(&routing)));
    let reconcile_now = Arc::new(Notify::new());
    let reconciler = tokio::spawn(reconcile_loop(
        db.clone(),
        Arc::clone(&routing),
        Arc::clone(&leading),
        reconcile_every,
        Arc::clone(&reconcile_now),
        Arc::clone(&respawner),
        Arc::clone(&health),
    ));
    let _stop_reconciler = AbortOnDrop(reconciler);
    let _stop_trimmer = AbortOnDrop(tokio::spawn(trim_loop(
        db.clone(),
        Arc::clone(&leading),
        events,
    )));
    let checker = {
        let health = Arc::clone(&health);
        let leading = Arc::clone(&leading);
        let respawner = Arc::clone(&respawner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(health.policy().interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut was_leader = false;
            loop {
                tick.tick().await;
                let leader = *leading.borrow();
                let gained = leader && !was_leader;
                if leader != was_leader {
                    tracing::info!(leader, "fleet leadership changed");
                    was_leader = leader;
                }
                if leader {
                    health.check_all().await;
                }
                if gained {
                    // What the new leader finds offline and still failing is
                    // acted on: its predecessor may have died before it did.
                    let (respawner, health) = (Arc::clone(&respawner), Arc::clone(&health));
                    tokio::spawn(async move {
                        respawner.sweep(|s| health.last_failed(s)).await;
                    });
                }
            }
        })
    };
    let _stop_checker = AbortOnDrop(checker);
    // Transitions come from the checks above and from the router's failed
    // connections alike.
    let Some(mut transitions) = health.take_transitions() else {
        tracing::error!("health transitions already taken; failover is off");
        return;
    };
    while let Some(t) = transitions.recv().await {
        match t.to {
            // A server that returns may have lost its instances.
            ServerStatus::Online => reconcile_now.notify_one(),
            ServerStatus::Offline => {
                let respawner = Arc::clone(&respawner);
                tokio::spawn(async move { respawner.server_offline(&t.server).await });
            }
            _ => {}
        }
    }
}

/// Reconciles every `every` and when `now` is notified, while `leading`
/// says this process leads; after each round, respawns what is still to be
/// respawned on servers that are offline and failing the leader's checks.
async fn reconcile_loop(
    db: SlumDb,
    routing: Arc<dyn Routing>,
    leading: Arc<tokio::sync::watch::Sender<bool>>,
    every: Duration,
    now: Arc<Notify>,
    respawner: Arc<Respawner>,
    health: Arc<HealthMonitor>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = now.notified() => {}
        }
        if !*leading.borrow() {
            continue;
        }
        match db.reconcile().await {
            Ok(report) => {
                if !report.respawned.is_empty() || !report.stopped.is_empty() {
                    routing.fleet_changed().await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconcile failed"),
        }
        respawner.sweep(|s| health.last_failed(s)).await;
    }
}

/// How often the leader trims the fleet's events.
const TRIM_EVERY: Duration = Duration::from_secs(300);

/// Trimming statements of each kind (age, count) per round, each of at most
/// [`TRIM_BATCH`](crate::fleet::events::TRIM_BATCH) rows: a round deletes a
/// bounded number, and one that falls behind catches up over the next rounds.
const TRIM_BATCHES: usize = 10;

/// Trims the events to `retention` every [`TRIM_EVERY`] while `leading`
/// says this process leads.
async fn trim_loop(
    db: SlumDb,
    leading: Arc<tokio::sync::watch::Sender<bool>>,
    retention: EventRetention,
) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !*leading.borrow() {
            continue;
        }
        match db.trim_events(&retention, TRIM_BATCHES).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "trimmed old events"),
            Err(e) => tracing::warn!(error = %e, "could not trim old events"),
        }
    }
}
