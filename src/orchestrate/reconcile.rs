//! Reconcile: make what runs equal to what should run.
//!
//! [`plan`] is the deciding part, a plain function over the instances slum wants
//! and what each server reported; [`crate::SlumDb::reconcile`] gathers the two
//! lists and carries the plan out. Instances slum did not start are left alone.
//!
//! tenement 0.2.1 drops an instance that it stopped for idleness from its list,
//! exactly as a restarted server forgets its instances, so the two cannot be told
//! apart: a missing instance whose desired state is running is spawned again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::fleet::model::{DesiredState, Instance, InstanceState, PendingStop};

/// What one server reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The server answered with the tenement names (`"{process}:{tenant}"`) it
    /// runs and the state of each.
    Reachable(HashMap<String, InstanceState>),
    /// The server could not be asked; the reason is kept for the report.
    Unreachable(String),
}

/// One step towards convergence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Spawn an instance its server lost (or never got).
    Respawn(Instance),
    /// Complete a stop that could not reach the server earlier.
    CompleteStop(Instance),
    /// Record the state the server reported.
    Observe(Instance, InstanceState),
    /// Stop the old copy a move left on a server that did not answer then.
    StopOldCopy { server: String, name: String },
}

/// The plan, with what was deliberately left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Tenement instances slum did not start, as `"{server}/{name}"`.
    pub unmanaged: Vec<String>,
    /// Servers that could not be asked, with the reason.
    pub unreachable: Vec<(String, String)>,
}

/// Decides the actions that bring `wanted` and `observed` together.
///
/// A running instance recorded less than `spawn_grace` before `now` with state
/// `Starting` is being spawned by someone else right now and is left to them;
/// so is an old copy whose move's grace is not over at `now` (its mover stops
/// it then).
pub fn plan(
    wanted: &[Instance],
    pending_stops: &[PendingStop],
    observed: &HashMap<String, Observation>,
    now: DateTime<Utc>,
    spawn_grace: Duration,
) -> Plan {
    let mut out = Plan::default();
    let mut known: HashSet<(&str, String)> = HashSet::new();
    for stop in pending_stops {
        known.insert((stop.server_id.as_str(), stop.name.clone()));
        let due = stop.stop_after <= now;
        if due
            && matches!(
                observed.get(&stop.server_id),
                Some(Observation::Reachable(_))
            )
        {
            out.actions.push(Action::StopOldCopy {
                server: stop.server_id.clone(),
                name: stop.name.clone(),
            });
        }
    }
    for inst in wanted {
        let name = inst.tenement_name();
        known.insert((inst.server_id.as_str(), name.clone()));
        if let Some(to) = &inst.moving_to {
            // Being prepared there by a move: its mover owns it.
            known.insert((to.as_str(), name.clone()));
        }
        let Some(Observation::Reachable(running)) = observed.get(&inst.server_id) else {
            continue;
        };
        let seen = running.get(&name).copied();
        match (inst.desired, seen) {
            (DesiredState::Stopped, _) => out.actions.push(Action::CompleteStop(inst.clone())),
            (DesiredState::Running, None) => {
                let in_flight =
                    inst.observed == InstanceState::Starting && now - inst.created_at < spawn_grace;
                if !in_flight {
                    out.actions.push(Action::Respawn(inst.clone()));
                }
            }
            (DesiredState::Running, Some(state)) => {
                if inst.observed != state {
                    out.actions.push(Action::Observe(inst.clone(), state));
                }
            }
        }
    }
    let mut servers: Vec<&String> = observed.keys().collect();
    servers.sort();
    for server in servers {
        match &observed[server] {
            Observation::Unreachable(reason) => {
                out.unreachable.push((server.clone(), reason.clone()));
            }
            Observation::Reachable(running) => {
                let mut names: Vec<&String> = running
                    .keys()
                    .filter(|n| !known.contains(&(server.as_str(), (*n).clone())))
                    .collect();
                names.sort();
                out.unmanaged
                    .extend(names.into_iter().map(|n| format!("{server}/{n}")));
            }
        }
    }
    out
}

/// What a reconcile run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReconcileReport {
    /// Instance keys spawned again.
    pub respawned: Vec<String>,
    /// Instance keys whose pending stop completed.
    pub stopped: Vec<String>,
    /// Tenement instances slum did not start and left alone, as `"{server}/{name}"`.
    pub unmanaged: Vec<String>,
    /// Servers that could not be asked, as `"{server}: {reason}"`.
    pub unreachable: Vec<String>,
    /// Actions that failed, as `"{instance}: {error}"`; the next run retries them.
    pub failed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(
        tenant: &str,
        server: &str,
        desired: DesiredState,
        observed: InstanceState,
    ) -> Instance {
        Instance {
            tenant: tenant.into(),
            instance_id: "prod".into(),
            process: "api".into(),
            server_id: server.into(),
            memory_mb: 64,
            desired,
            observed,
            ..Default::default()
        }
    }

    fn reachable(names: &[(&str, InstanceState)]) -> Observation {
        Observation::Reachable(names.iter().map(|(n, s)| (n.to_string(), *s)).collect())
    }

    #[test]
    fn respawns_lost_completes_stops_and_leaves_strangers_alone() {
        use DesiredState::*;
        use InstanceState as S;
        let wanted = vec![
            inst("lost", "a", Running, S::Running),
            inst("fine", "a", Running, S::Running),
            inst("sick", "a", Running, S::Running),
            inst("gone", "a", Stopped, S::Running),
            inst("ghost", "a", Stopped, S::Unknown),
            inst("far", "b", Running, S::Running),
            inst("far-stop", "b", Stopped, S::Running),
        ];
        let observed = HashMap::from([
            (
                "a".to_owned(),
                reachable(&[
                    ("api:fine", S::Running),
                    ("api:sick", S::Unhealthy),
                    ("api:gone", S::Running),
                    ("api:stranger", S::Running),
                    ("api:moving", S::Running),
                ]),
            ),
            ("b".to_owned(), Observation::Unreachable("refused".into())),
        ]);
        // An old copy on a reachable server is stopped once its move's grace
        // is over; one still in its grace is left to its mover (and is not a
        // stranger). On b, unreachable, every old copy waits.
        let now = Utc::now();
        let stop = |server: &str, name: &str, stop_after| PendingStop {
            server_id: server.to_owned(),
            name: name.to_owned(),
            stop_after,
        };
        let pending = [
            stop("a", "api:old", now),
            stop("a", "api:moving", now + Duration::seconds(2)),
            stop("b", "api:old", now - Duration::seconds(60)),
        ];
        let p = plan(&wanted, &pending, &observed, now, Duration::seconds(30));
        assert_eq!(
            p.actions,
            vec![
                Action::StopOldCopy {
                    server: "a".into(),
                    name: "api:old".into()
                },
                Action::Respawn(wanted[0].clone()),
                Action::Observe(wanted[2].clone(), S::Unhealthy),
                Action::CompleteStop(wanted[3].clone()),
                Action::CompleteStop(wanted[4].clone()),
            ]
        );
        assert_eq!(p.unmanaged, vec!["a/api:stranger"]);
        assert_eq!(p.unreachable, vec![("b".to_owned(), "refused".to_owned())]);
    }

    #[test]
    fn a_spawn_in_flight_is_left_to_its_spawner() {
        let now = Utc::now();
        let mut young = inst("new", "a", DesiredState::Running, InstanceState::Starting);
        young.created_at = now - Duration::seconds(2);
        let mut stale = young.clone();
        stale.tenant = "stale".into();
        stale.created_at = now - Duration::seconds(60);
        let observed = HashMap::from([("a".to_owned(), reachable(&[]))]);
        let p = plan(
            &[young, stale.clone()],
            &[],
            &observed,
            now,
            Duration::seconds(30),
        );
        assert_eq!(p.actions, vec![Action::Respawn(stale)]);
    }

    #[test]
    fn same_tenant_on_another_server_is_not_ours() {
        let wanted = vec![inst(
            "t",
            "a",
            DesiredState::Running,
            InstanceState::Running,
        )];
        let observed = HashMap::from([
            (
                "a".to_owned(),
                reachable(&[("api:t", InstanceState::Running)]),
            ),
            (
                "b".to_owned(),
                reachable(&[("api:t", InstanceState::Running)]),
            ),
        ]);
        let p = plan(&wanted, &[], &observed, Utc::now(), Duration::seconds(30));
        assert!(p.actions.is_empty());
        assert_eq!(p.unmanaged, vec!["b/api:t"]);
    }
}
