//! Shutting a router thread down: the word each of its connections gets that
//! it is closing, so that the request in flight is answered (with
//! `Connection: close`) and no other is read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

use crate::lock;

/// A router thread's word to its connections that it is shutting down. A
/// connection registers its task's waker once, and then reads one flag each
/// time it is polled (a watch channel would register the waker at every poll).
#[derive(Default)]
pub(super) struct Closing {
    closed: AtomicBool,
    /// Wakers of the connections waiting for the word, by connection.
    waiting: Mutex<HashMap<u64, Waker>>,
    next: AtomicU64,
}

/// One connection's side of [`Closing`].
pub(super) struct ClosingWatch {
    closing: Arc<Closing>,
    id: u64,
    /// The waker registered, if any.
    waker: Option<Waker>,
}

impl Closing {
    pub(super) fn watch(closing: &Arc<Closing>) -> ClosingWatch {
        ClosingWatch {
            closing: Arc::clone(closing),
            id: closing.next.fetch_add(1, Ordering::Relaxed),
            waker: None,
        }
    }

    /// Tells every connection, and those that look later.
    pub(super) fn close(&self) {
        let waiting = {
            let mut waiting = lock(&self.waiting);
            self.closed.store(true, Ordering::Relaxed);
            std::mem::take(&mut *waiting)
        };
        for waker in waiting.into_values() {
            waker.wake();
        }
    }
}

impl ClosingWatch {
    /// Whether the thread is shutting down, without waiting for it.
    pub(super) fn is_closed(&self) -> bool {
        self.closing.closed.load(Ordering::Relaxed)
    }

    /// Whether the thread is shutting down; if not, the task polled with `cx`
    /// is woken when it does.
    pub(super) fn closed(&mut self, cx: &Context<'_>) -> bool {
        if self.closing.closed.load(Ordering::Relaxed) {
            return true;
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return false;
        }
        let mut waiting = lock(&self.closing.waiting);
        // Read again under the lock `close` holds when it sets the flag.
        if self.closing.closed.load(Ordering::Relaxed) {
            return true;
        }
        waiting.insert(self.id, cx.waker().clone());
        self.waker = Some(cx.waker().clone());
        false
    }
}

impl Drop for ClosingWatch {
    fn drop(&mut self) {
        if self.waker.is_some() {
            lock(&self.closing.waiting).remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_wakes_each_connection_once_it_has_looked() {
        struct Count(AtomicU64);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let closing = Arc::new(Closing::default());
        let count = Arc::new(Count(AtomicU64::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&waker);
        let mut watching = Closing::watch(&closing);
        let gone = Closing::watch(&closing);
        let mut dropped = Closing::watch(&closing);
        assert!(!watching.closed(&cx));
        assert!(!watching.closed(&cx), "looked twice");
        assert!(!dropped.closed(&cx));
        drop(dropped);
        assert_eq!(
            lock(&closing.waiting).len(),
            1,
            "registered once, dropped gone"
        );
        closing.close();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(watching.closed(&cx));
        let mut late = gone;
        assert!(late.closed(&cx), "a connection that looks later sees it");
    }
}
