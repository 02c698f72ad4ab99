//! A router thread's timeouts: coarse, and cheap to set and to cancel.
//!
//! Every proxied request waits under two timeouts (for the client's request
//! head, and for the server's response head) and nearly always ends well
//! within both. A connection keeps one sleep for its request heads, reset for
//! each; the response head's is set and dropped with each request.
//! With tokio's timer each costs a clock read, a lock of the runtime's timer
//! wheel to insert the entry and another to remove it. Here a timeout is a slot
//! in the thread's own list, found by index, and whether it is due is told by
//! the thread's last tick: a timeout ends at the first tick after its deadline,
//! up to one tick (the resolution) late, never early. The router's timeouts are
//! seconds; its tick is a tenth of one.
//!
//! Its clock is tokio's ([`tokio::time::Instant`]): the real one, unless a
//! test pauses it (`tokio::time::pause`, `advance`), when ticks, and so the
//! timeouts, follow the paused clock and a timeout test need not sleep.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::lock;

/// A clock and the sleeps waiting on it. Cloned handles share both.
#[derive(Clone)]
pub struct CoarseTimer {
    shared: Arc<Shared>,
}

struct Shared {
    start: Instant,
    /// Milliseconds from `start` to the last tick.
    now_ms: AtomicU64,
    sleepers: Mutex<Sleepers>,
}

impl Shared {
    #[inline]
    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.now_ms.load(Relaxed))
    }
}

/// Sleeps that have been polled and not dropped, by slot.
#[derive(Default)]
struct Sleepers {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

struct Slot {
    deadline: Instant,
    /// `None` once woken for its deadline.
    waker: Option<Waker>,
}

/// A deadline passed before the future it bounded was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl Default for CoarseTimer {
    fn default() -> Self {
        CoarseTimer::new()
    }
}

impl CoarseTimer {
    /// A timer whose clock starts now; it moves only at [`tick`](Self::tick).
    pub fn new() -> CoarseTimer {
        CoarseTimer {
            shared: Arc::new(Shared {
                start: Instant::now(),
                now_ms: AtomicU64::new(0),
                sleepers: Mutex::default(),
            }),
        }
    }

    /// Moves the clock to the present (tokio's) and wakes the sleeps whose
    /// deadline has passed. Called every tick by the thread's ticker.
    pub fn tick(&self) {
        let ms = u64::try_from(self.shared.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared.now_ms.store(ms, Relaxed);
        let now = self.shared.now();
        let due: Vec<Waker> = lock(&self.shared.sleepers)
            .slots
            .iter_mut()
            .filter(|s| s.deadline <= now)
            .filter_map(|s| s.waker.take())
            .collect();
        for waker in due {
            waker.wake();
        }
    }

    /// A sleep until `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> CoarseSleep {
        CoarseSleep {
            shared: Arc::clone(&self.shared),
            deadline,
            slot: None,
        }
    }

    /// The time at the last tick: a clock for what needs no precision.
    #[inline]
    pub fn now(&self) -> Instant {
        self.shared.now()
    }

    /// Waits for `deadline` on a sleep that is kept (in `sleep`, made at its
    /// first wait) and reset for each deadline: one slot for its whole life.
    pub fn poll_until(
        &self,
        sleep: &mut Option<CoarseSleep>,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let sleep = sleep.get_or_insert_with(|| self.sleep_until(deadline));
        sleep.reset(deadline);
        Pin::new(sleep).poll(cx)
    }

    /// `fut`, or [`Elapsed`] if it is not done by `deadline`.
    pub fn timeout_at<F: Future>(&self, deadline: Instant, fut: F) -> Timeout<F> {
        Timeout {
            fut,
            sleep: self.sleep_until(deadline),
        }
    }
}

pin_project_lite::pin_project! {
    /// A future bounded by a deadline (see [`CoarseTimer::timeout_at`]): no
    /// larger than the future and its sleep.
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        sleep: CoarseSleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.fut.poll(cx) {
            return Poll::Ready(Ok(done));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed))
    }
}

/// `limit` after `start`; a limit past what an `Instant` can hold (a timeout
/// meant as "never") is thirty years.
#[inline]
pub fn after(start: Instant, limit: Duration) -> Instant {
    start
        .checked_add(limit)
        .or_else(|| start.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(start)
}

/// A future done at its deadline, to within the timer's tick.
pub struct CoarseSleep {
    shared: Arc<Shared>,
    deadline: Instant,
    slot: Option<usize>,
}

impl CoarseSleep {
    /// Moves the deadline; the next poll waits for it. A sleep kept and
    /// reset is one slot for its whole life.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.now() >= self.deadline {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let mut sleepers = lock(&self.shared.sleepers);
        match self.slot {
            Some(i) => {
                sleepers.slots[i].deadline = deadline;
                let waker = &mut sleepers.slots[i].waker;
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
            }
            None => {
                let slot = Slot {
                    deadline,
                    waker: Some(cx.waker().clone()),
                };
                let i = match sleepers.free.pop() {
                    Some(i) => {
                        sleepers.slots[i] = slot;
                        i
                    }
                    None => {
                        sleepers.slots.push(slot);
                        sleepers.slots.len() - 1
                    }
                };
                drop(sleepers);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut sleepers = lock(&self.shared.sleepers);
            sleepers.slots[i].waker = None;
            sleepers.slots[i].deadline = self.shared.start;
            sleepers.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests;
