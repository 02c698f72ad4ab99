//! Waking a tenant: the first request for a tenant without an instance spawns
//! it on its home server, once for every request that comes meanwhile; a
//! spawn that failed is not tried again for a while, and its reason is the
//! answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};

use super::control::ControlPlane;
use super::route_table::DomainRoute;
use crate::lock;

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
    /// Wakes a tenant's instance (see [`ControlPlane::wake`]), once for all
    /// concurrent requests. The wake runs in its own task, on `runtime` (the
    /// control plane's, whose connections to the fleet database outlive the
    /// router threads), so that a client giving up does not cancel it
    /// half-way. A wake that failed less than [`WAKE_HOLD_DOWN`] ago is not
    /// tried again: its reason is the answer.
    pub(super) async fn wake(
        &self,
        control: &Arc<dyn ControlPlane>,
        runtime: &tokio::runtime::Handle,
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
                    let control = Arc::clone(control);
                    let route = route.clone();
                    let spawning = Arc::clone(&self.spawning);
                    let failed_wakes = Arc::clone(&self.failed);
                    let key = key.clone();
                    let task = runtime.spawn(async move {
                        let result = control.wake(&route).await.map_err(Arc::new);
                        {
                            let mut failed = lock(&failed_wakes);
                            match &result {
                                Ok(()) => failed.remove(&key),
                                Err(reason) => {
                                    failed.insert(key.clone(), (Instant::now(), Arc::clone(reason)))
                                }
                            };
                        }
                        // Only the waker removes the entry, once its result
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
