//! The background work of `slum serve`: health checks of every server on an
//! interval, reconcile on an interval and whenever a server comes back, and
//! failover when a server goes offline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::fleet::model::ServerStatus;
use crate::serve::AppState;
use crate::AbortOnDrop;

/// Runs the health checks, reconcile and failover until the task is aborted.
pub async fn run(state: AppState, reconcile_every: Duration) {
    // Only the leader decides (one per fleet database): health transitions,
    // reconcile, respawn failover. Every router keeps serving traffic, and keeps
    // its own passive checks (see `HealthMonitor::report_failure`).
    let leadership = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = state.db.lead((*state.leading).clone()).await {
                    tracing::warn!(error = %e, "lost the fleet leadership; trying again");
                }
                state.leading.send_replace(false);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let _stop_leadership = AbortOnDrop(leadership);
    let reconcile_now = Arc::new(Notify::new());
    let reconciler = tokio::spawn(reconcile_loop(
        state.clone(),
        reconcile_every,
        Arc::clone(&reconcile_now),
    ));
    let _stop_reconciler = AbortOnDrop(reconciler);
    let checker = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.health.policy().interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut was_leader = false;
            loop {
                tick.tick().await;
                let leader = state.is_leader();
                if leader != was_leader {
                    tracing::info!(leader, "fleet leadership changed");
                    was_leader = leader;
                }
                if leader {
                    state.health.check_all(&state).await;
                }
            }
        })
    };
    let _stop_checker = AbortOnDrop(checker);
    // Transitions come from the checks above and from the router's failed
    // connections alike.
    let Some(mut transitions) = state.health.take_transitions() else {
        tracing::error!("health transitions already taken; failover is off");
        return;
    };
    while let Some(t) = transitions.recv().await {
        match t.to {
            // A server that returns may have lost its instances.
            ServerStatus::Online => reconcile_now.notify_one(),
            ServerStatus::Offline => {
                let state = state.clone();
                tokio::spawn(async move {
                    crate::orchestrate::failover::server_went_offline(&state, &t.server).await;
                });
            }
            _ => {}
        }
    }
}

async fn reconcile_loop(state: AppState, every: Duration, now: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = now.notified() => {}
        }
        if !state.is_leader() {
            continue;
        }
        match state.db.reconcile().await {
            Ok(report) => {
                if !report.respawned.is_empty() || !report.stopped.is_empty() {
                    state.fleet_changed().await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconcile failed"),
        }
    }
}
