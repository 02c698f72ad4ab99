//! Waking a tenant: the first request for a tenant without an instance spawns
//! it on its home server, once for every request that comes meanwhile; a
//! spawn that failed is not tried again for a while, and its reason is the
//! answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};

use super::route_table::DomainRoute;
use crate::error::Error;
use crate::lock;
use crate::serve::AppState;

/// A spawn in progress, shared by every request waiting for it.
type PendingSpawn = Shared<BoxFuture<'static, Result<(), Arc<String>>>>;

/// How long a tenant whose spawn failed is answered 503 at once before its
/// next request tries again.
pub(super) const WAKE_HOLD_DOWN: Duration = Duration::from_secs(5);

/// When a wake failed, and why.
type FailedWake = (Instant, Arc<String>);

/// The tenants being woken, and those whose wake failed lately: shared by
/// every router thread.
#[derive(Default)]
pub(super) struct Wakes {
    /// Spawns in progress, by instance key.
    spawning: Arc<Mutex<HashMap<String, PendingSpawn>>>,
    /// Instances whose wake failed lately: when, and why. Requests for them
    /// are answered at once until [`WAKE_HOLD_DOWN`] has passed, rather than
    /// each starting a spawn that fails the same way.
    failed: Arc<Mutex<HashMap<String, FailedWake>>>,
}

impl Wakes {
    /// Spawns a tenant's instance on its home server, once for all concurrent
    /// requests. The spawn runs in its own task so that a client giving up does
    /// not cancel it half-way. A spawn that failed less than
    /// [`WAKE_HOLD_DOWN`] ago is not tried again: its reason is the answer.
    /// The spawn runs on `control`, the control plane's runtime: its
    /// connections to the fleet database then belong to a runtime that
    /// outlives the router threads.
    pub(super) async fn wake(
        &self,
        state: &AppState,
        control: &tokio::runtime::Handle,
        route: &DomainRoute,
    ) -> Result<(), Arc<String>> {
        let key = format!("{}:{}", route.tenant, route.instance_id);
        if let Some((at, reason)) = lock(&self.failed).get(&key) {
            let ago = at.elapsed();
            if ago < WAKE_HOLD_DOWN {
                return Err(Arc::new(format!(
                    "{reason} (that attempt was {:.1}s ago; the next is in {:.1}s)",
                    ago.as_secs_f64(),
                    (WAKE_HOLD_DOWN - ago).as_secs_f64()
                )));
            }
        }
        let pending = {
            lock(&self.spawning)
                .entry(key.clone())
                .or_insert_with(|| {
                    let state = state.clone();
                    let route = route.clone();
                    let spawning = Arc::clone(&self.spawning);
                    let failed_wakes = Arc::clone(&self.failed);
                    let key = key.clone();
                    let task = control.spawn(async move {
                        let spawned = state
                            .db
                            .spawn_instance(
                                &route.tenant,
                                &route.process,
                                &route.instance_id,
                                &route.home_server,
                            )
                            .await;
                        let result = match spawned {
                            Ok(_) => Ok(()),
                            // Someone else (another router) may have spawned it
                            // meanwhile; anything else holding the name is an error.
                            Err(e @ Error::AlreadyExists { .. }) => {
                                match state.db.get_instance(&key).await {
                                    Ok(i) if i.process == route.process => Ok(()),
                                    Ok(i) => Err(Arc::new(format!(
                                        "instance '{key}' runs process '{}', not '{}'",
                                        i.process, route.process
                                    ))),
                                    Err(_) => Err(Arc::new(e.to_string())),
                                }
                            }
                            Err(e) => Err(Arc::new(e.to_string())),
                        };
                        {
                            let mut failed = lock(&failed_wakes);
                            match &result {
                                Ok(()) => failed.remove(&key),
                                Err(reason) => {
                                    failed.insert(key.clone(), (Instant::now(), Arc::clone(reason)))
                                }
                            };
                        }
                        state.fleet_changed().await;
                        // Only the spawner removes the entry, once its result
                        // is routable: a late waiter never removes a newer one.
                        lock(&spawning).remove(&key);
                        result
                    });
                    async move {
                        task.await
                            .unwrap_or_else(|e| Err(Arc::new(format!("spawn task failed: {e}"))))
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        pending.await
    }
}
