//! Draining a server: no new placements, and every instance on it moved
//! elsewhere without losing a request (see [`crate::orchestrate::relocation`]), a few at a time,
//! with progress the API and the CLI can show.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::fleet::events::{EventKind, NewEvent};
use crate::fleet::model::{DesiredState, ServerStatus};
use crate::lock;
use crate::orchestrate::placement;
use crate::orchestrate::relocation::MoveWhy;
use crate::orchestrate::routing::Routing;
use crate::orchestrate::slum_db::SlumDb;

/// Moves running at once during a drain.
const PARALLEL_MOVES: usize = 4;

/// How far a drain is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainProgress {
    pub server: String,
    /// Instances to move.
    pub total: usize,
    /// Instances moved, as `"{instance} -> {server}"`.
    pub moved: Vec<String>,
    /// Instances that could not be moved, with the reason; they stay on the
    /// server (a later drain retries them).
    pub failed: Vec<String>,
    /// Domains whose home server changed (those without an instance on it).
    pub rehomed: Vec<String>,
    /// The drain ended: finished, or stopped by an undrain.
    pub done: bool,
    /// An undrain stopped it before it finished (what it moved stays
    /// moved). Its own word, whatever the server's health says meanwhile: a
    /// drained server that dies turns offline, and its drain goes on.
    #[serde(default)]
    pub stopped: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

struct Job {
    progress: Arc<Mutex<DrainProgress>>,
    task: tokio::task::JoinHandle<()>,
}

/// The drains of one `slum serve`.
pub struct Drains {
    db: SlumDb,
    /// Told of each step, so that traffic follows the instances at once.
    routing: Arc<dyn Routing>,
    jobs: Mutex<HashMap<String, Job>>,
}

impl Drains {
    /// No drain yet, of servers of `db`.
    pub(crate) fn new(db: SlumDb, routing: Arc<dyn Routing>) -> Drains {
        Drains {
            db,
            routing,
            jobs: Mutex::default(),
        }
    }

    /// Marks the server draining (no new placements) and starts moving its
    /// instances away; returns the progress so far. Starting a drain that runs
    /// already just reports it.
    pub async fn start(&self, server_id: &str) -> Result<DrainProgress> {
        let mut server = self.db.get_server(server_id).await?;
        if server.status != ServerStatus::Draining {
            let from = server.status;
            server.status = ServerStatus::Draining;
            self.db.update_server(&server).await?;
            tracing::info!(server = %server_id, %from, to = "draining", cause = "drain",
                "server draining: it takes no new placements");
            self.routing.fleet_changed().await;
        }
        let mut jobs = lock(&self.jobs);
        if let Some(job) = jobs.get(server_id) {
            if !job.task.is_finished() {
                return Ok(lock(&job.progress).clone());
            }
        }
        let progress = Arc::new(Mutex::new(DrainProgress {
            server: server_id.to_owned(),
            started_at: Some(Utc::now()),
            ..Default::default()
        }));
        let task = tokio::spawn(run(
            self.db.clone(),
            Arc::clone(&self.routing),
            server_id.to_owned(),
            Arc::clone(&progress),
        ));
        let snapshot = lock(&progress).clone();
        jobs.insert(server_id.to_owned(), Job { progress, task });
        Ok(snapshot)
    }

    /// The progress of the server's last drain, if it had one.
    pub fn progress(&self, server_id: &str) -> Option<DrainProgress> {
        lock(&self.jobs)
            .get(server_id)
            .map(|j| lock(&j.progress).clone())
    }

    /// The last drain of each server this process ran, running or done, by
    /// server id.
    pub fn all(&self) -> Vec<DrainProgress> {
        let mut all: Vec<DrainProgress> = lock(&self.jobs)
            .values()
            .map(|j| lock(&j.progress).clone())
            .collect();
        all.sort_by(|a, b| a.server.cmp(&b.server));
        all
    }

    /// Stops a running drain (moves already done stay done) and lets the server
    /// take placements again; health checks then decide whether it is online.
    pub async fn undrain(&self, server_id: &str) -> Result<()> {
        let mut server = self.db.get_server(server_id).await?;
        let mut stopped = None;
        if let Some(job) = lock(&self.jobs).get(server_id) {
            if !job.task.is_finished() {
                job.task.abort();
                let mut p = lock(&job.progress);
                p.failed.push("drain stopped by undrain".into());
                p.stopped = true;
                p.done = true;
                p.finished_at = Some(Utc::now());
                stopped = Some(p.moved.len());
            }
        }
        if let Some(moved) = stopped {
            self.db
                .record_event(
                    NewEvent::new(
                        EventKind::DrainStopped,
                        format!(
                            "undrain stopped the drain; {moved} instance(s) it moved stay moved"
                        ),
                    )
                    .server(server_id),
                )
                .await;
        }
        // A server that died while draining is offline: it stays so, but
        // forgets the drain (it comes back online, not draining).
        if matches!(
            server.status,
            ServerStatus::Draining | ServerStatus::Offline
        ) {
            let from = server.status;
            if server.status == ServerStatus::Draining {
                server.status = ServerStatus::Unknown;
            }
            self.db.update_server(&server).await?;
            tracing::info!(server = %server_id, %from, to = %server.status, cause = "undrain",
                "server undrained: it takes placements again, health checks decide its state");
            self.routing.fleet_changed().await;
        }
        Ok(())
    }
}

async fn run(
    db: SlumDb,
    routing: Arc<dyn Routing>,
    server_id: String,
    progress: Arc<Mutex<DrainProgress>>,
) {
    db.record_event(
        NewEvent::new(
            EventKind::DrainStarted,
            "drain requested: no new placements; its instances move to other servers",
        )
        .server(&server_id),
    )
    .await;
    let result = drain(&db, &routing, &server_id, &progress).await;
    let summary = {
        let mut p = lock(&progress);
        if let Err(e) = result {
            p.failed.push(format!("drain stopped: {e}"));
        }
        p.done = true;
        p.finished_at = Some(Utc::now());
        tracing::info!(server = %server_id, moved = p.moved.len(), failed = p.failed.len(), "drain finished");
        drain_summary(&p)
    };
    db.record_event(NewEvent::new(EventKind::DrainFinished, summary).server(&server_id))
        .await;
}

/// What a finished drain did, as a sentence.
fn drain_summary(p: &DrainProgress) -> String {
    let mut text = format!(
        "drain finished: {} of {} instance(s) moved, {} domain(s) re-homed",
        p.moved.len(),
        p.total,
        p.rehomed.len()
    );
    if !p.failed.is_empty() {
        text.push_str(&format!(
            "; {} failed ({})",
            p.failed.len(),
            p.failed.join("; ")
        ));
    }
    text
}

async fn drain(
    db: &SlumDb,
    routing: &Arc<dyn Routing>,
    server_id: &str,
    progress: &Mutex<DrainProgress>,
) -> Result<()> {
    let server = db.get_server(server_id).await?;
    let instances: Vec<_> = db
        .store
        .list_instances(Some(server_id))
        .await?
        .into_iter()
        .filter(|i| i.desired == DesiredState::Running && i.moving_to.is_none())
        .collect();
    lock(progress).total = instances.len();
    // First the domains that need no move: unstarted tenants homed here would
    // get 503 for the whole drain otherwise.
    if rehome(db, &server, progress).await? {
        routing.fleet_changed().await;
    }
    let grace = db.options().move_grace;
    futures::stream::iter(instances)
        .for_each_concurrent(PARALLEL_MOVES, |inst| {
            let region = server.region.clone();
            async move {
                let key = inst.key();
                let why = MoveWhy::Drain(server_id.to_owned());
                let moved = db
                    .move_elsewhere(&inst, region.as_deref(), grace, routing, why)
                    .await;
                let mut p = lock(progress);
                match moved {
                    Ok(o) => p.moved.push(format!("{} -> {}", o.instance, o.to)),
                    Err(e) => p.failed.push(format!("{key}: {e}")),
                }
            }
        })
        .await;

    // And once more for domains whose instance moved meanwhile by other means;
    // the table is reloaded once, after it.
    rehome(db, &server, progress).await?;
    routing.fleet_changed().await;
    Ok(())
}

/// Gives a new home to the domains still homed on the drained server whose
/// instance lives elsewhere, or that were never started, so that a first request
/// starts them there (a draining server takes no spawns). Those whose instance
/// is still on the server stay with it: their move switches their home.
/// Returns whether it re-homed any; the caller reloads the route table.
async fn rehome(
    db: &SlumDb,
    server: &crate::fleet::model::Server,
    progress: &Mutex<DrainProgress>,
) -> Result<bool> {
    let server_id = server.id.as_str();
    let mut changed = false;
    let servers = db.list_servers().await?;
    let still_here: HashSet<String> = db
        .store
        .list_instances(Some(server_id))
        .await?
        .iter()
        .map(|i| i.key())
        .collect();
    for mut tenant in db.list_tenants_on_server(server_id).await? {
        if still_here.contains(&tenant.instance_key()) {
            continue;
        }
        let Some(home) = placement::most_free_preferring(&servers, server.region.as_deref(), 0)
        else {
            let ask = placement::Ask {
                tenant: &tenant.name,
                process: &tenant.process,
                instance_id: &tenant.instance_id,
                needed_mb: 0,
                region: None,
                distinct_region: false,
            };
            let why = format!(
                "{}: no server can be its home: {}",
                tenant.domain,
                placement::why_none(&servers, &[], &ask).join("; ")
            );
            let mut p = lock(progress);
            if !p.failed.contains(&why) {
                p.failed.push(why);
            }
            continue;
        };
        tenant.server_id = home.id.clone();
        match db.update_tenant(&tenant).await {
            Ok(()) => {
                changed = true;
                lock(progress)
                    .rehomed
                    .push(format!("{} -> {}", tenant.domain, home.id));
            }
            Err(e) => lock(progress)
                .failed
                .push(format!("{}: {e}", tenant.domain)),
        }
    }
    Ok(changed)
}
