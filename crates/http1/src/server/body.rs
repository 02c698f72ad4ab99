//! A request's body, read off the client's connection as the handler takes
//! it: sized or chunked, with `100 Continue` asked of the connection when it
//! is first asked for, and held to the body timeout while the client's bytes
//! are waited for, and to a lowest rate over all the time they were waited for.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::request::In;
use super::{Back, ClientStream, Proceed, Reading};
use crate::chunked::{decode_chunked, Decoded};
use crate::lock;
use crate::timer::{after, CoarseSleep, CoarseTimer};
use tokio::net::TcpStream;

pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request's body, read off the client's connection as it is taken.
pub struct RequestBody<S: ClientStream = TcpStream>(pub(super) Option<Box<Streaming<S>>>);

pub(super) struct Streaming<S: ClientStream> {
    /// The connection's reading side, until given back.
    read: Option<Reading<S>>,
    back: Back<S>,
    framing: In,
    /// The client waits for a `100 Continue`: the connection is asked to
    /// write it when the body is first asked for, so that a request answered
    /// without its body is not sent it. The connection writes it, not the
    /// body: it alone writes to the socket (see the module `server`).
    asks: bool,
    /// Read to its end.
    whole: bool,
    timer: CoarseTimer,
    /// How long the client may leave the body standing still.
    limit: Duration,
    /// Armed while the client's bytes are waited for.
    sleep: Option<CoarseSleep>,
    /// When the present wait for the client's bytes began.
    waiting_since: Option<Instant>,
    /// The lowest rate the body may come at, if any.
    min_rate: Option<MinRate>,
    /// The client's bytes read for the body so far (framing included).
    received: u64,
    /// The time spent waiting for them, the present wait left out.
    waited: Duration,
    progress: Arc<BodyProgress>,
}

/// The lowest rate a request body may come at: once it has been waited for
/// longer than `grace` in all, the client's bytes must keep up with
/// `bytes_per_second` over the whole time they were waited for. The same
/// as Apache's `RequestReadTimeout body=grace,MinRate=bytes_per_second`,
/// but only the time spent waiting for the client counts: a body held back
/// because its server is slow to take it is not the client's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes_per_second: u64,
    pub grace: Duration,
}

impl MinRate {
    /// The time a body that brought `received` bytes may have been waited
    /// for in all: the grace, and a second for every `bytes_per_second`.
    pub fn allowance(&self, received: u64) -> Duration {
        let rate = u128::from(self.bytes_per_second.max(1));
        let nanos = u128::from(received) * 1_000_000_000 / rate;
        let earned = u64::try_from(nanos).map_or(Duration::MAX, Duration::from_nanos);
        self.grace.saturating_add(earned)
    }

    /// When the present wait, begun at `since`, makes the body too slow,
    /// given `waited` before it and `received` bytes so far.
    fn deadline(&self, since: Instant, waited: Duration, received: u64) -> Instant {
        after(since, self.allowance(received).saturating_sub(waited))
    }
}

impl<S: ClientStream> Streaming<S> {
    /// The body framed by `framing` on `read`, which goes back to `back` when
    /// the body is dropped; `expect`: the client waits for a `100 Continue`.
    pub(super) fn new(
        read: Reading<S>,
        back: Back<S>,
        framing: In,
        expect: bool,
        timer: CoarseTimer,
        limit: Duration,
        min_rate: Option<MinRate>,
    ) -> Streaming<S> {
        Streaming {
            // What came with the head counts as come.
            received: read.buf.len() as u64,
            read: Some(read),
            back,
            framing,
            asks: expect,
            whole: false,
            progress: Arc::new(BodyProgress::new(timer.now())),
            timer,
            limit,
            sleep: None,
            waiting_since: None,
            min_rate,
            waited: Duration::ZERO,
        }
    }
}

/// The client's bytes came: the present wait, begun at `waiting_since` if
/// any, is over and added to `waited`. (Fields, not the body: it is called
/// while the connection's reading side is borrowed.)
fn came(waiting_since: &mut Option<Instant>, waited: &mut Duration, timer: &CoarseTimer) {
    if let Some(since) = waiting_since.take() {
        *waited = waited.saturating_add(timer.now().saturating_duration_since(since));
    }
}

/// When a request body last moved on: for whoever sends it on, to tell a
/// server that is slow to answer from a body that is still on its way.
#[derive(Debug)]
pub struct BodyProgress {
    since: Instant,
    /// Milliseconds after `since` that the body last gave bytes.
    moved: AtomicU64,
    /// Its reader is waiting for the client's bytes (and the body timeout
    /// runs).
    waiting: AtomicBool,
    /// Why its reader gave up on the client, if it did: [`STILL`] or
    /// [`TOO_SLOW`].
    gave_up: AtomicU8,
}

/// The body stood still for the body timeout.
const STILL: u8 = 1;
/// The body came slower than its lowest rate.
const TOO_SLOW: u8 = 2;

impl BodyProgress {
    /// A body's progress from `now`, its head's arrival. Made here for this
    /// crate's bodies; public for bodies read by other means (an HTTP/2
    /// stream's), whose reader tells it [`moved`](Self::moved) and
    /// [`waiting`](Self::waiting).
    pub fn new(now: Instant) -> BodyProgress {
        BodyProgress {
            since: now,
            moved: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            gave_up: AtomicU8::new(0),
        }
    }

    /// Whether its reader gave up on the client because the body came
    /// slower than its lowest rate (rather than standing still).
    pub fn too_slow(&self) -> bool {
        self.gave_up.load(Ordering::Relaxed) == TOO_SLOW
    }

    /// When the body last gave bytes (or, before any, when its head came).
    pub fn last_moved(&self) -> Instant {
        self.since + Duration::from_millis(self.moved.load(Ordering::Relaxed))
    }

    /// Whether the body's reader is waiting for the client: its own timeout,
    /// not the server's, bounds that wait.
    pub fn waiting_for_client(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Whether the body's reader waits for the client now.
    pub fn waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Relaxed);
    }

    /// The body gave bytes at `now`.
    pub fn moved(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.since).as_millis();
        self.moved
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.waiting.store(false, Ordering::Relaxed);
    }
}

impl<S: ClientStream> Drop for Streaming<S> {
    fn drop(&mut self) {
        if let Some(read) = self.read.take() {
            lock(&self.back).back = Some((read, self.whole));
        }
    }
}

impl<S: ClientStream> Streaming<S> {
    /// The next piece of the body; a client that sends none of it for the
    /// body timeout, or sends it slower than the lowest rate, gets a
    /// [`io::ErrorKind::TimedOut`] error.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let polled = self.poll_read(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                self.progress.moved(self.timer.now());
                came(&mut self.waiting_since, &mut self.waited, &self.timer);
            }
            // Its end, or an error: no longer waiting for anything.
            Poll::Ready(_) => self.progress.waiting.store(false, Ordering::Relaxed),
            Poll::Pending => {
                self.progress.waiting.store(true, Ordering::Relaxed);
                // Counted from when this wait began (or bytes last came in
                // it): a body first asked for late, as after a spawn or when
                // its `100 Continue` goes out, is not already late.
                let now = self.timer.now();
                let since = *self.waiting_since.get_or_insert(now);
                let still = after(since, self.limit);
                let slow = self
                    .min_rate
                    .map(|rate| rate.deadline(since, self.waited, self.received))
                    .filter(|slow| *slow < still);
                let deadline = slow.unwrap_or(still);
                ready!(self.timer.poll_until(&mut self.sleep, deadline, cx));
                let (why, reason) = match (slow, self.min_rate) {
                    (Some(_), Some(rate)) => (
                        TOO_SLOW,
                        format!("request body slower than {} bytes/s", rate.bytes_per_second),
                    ),
                    _ => (
                        STILL,
                        format!("no request body bytes for {:.1}s", self.limit.as_secs_f64()),
                    ),
                };
                self.progress.gave_up.store(why, Ordering::Relaxed);
                return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::TimedOut, reason))));
            }
        }
        polled
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let Some(read) = self.read.as_mut() else {
            return Poll::Ready(None);
        };
        if std::mem::take(&mut self.asks) {
            let mut shared = lock(&self.back);
            // Not once the answer has begun: the connection settled it.
            if shared.proceed == Proceed::Waiting {
                shared.proceed = Proceed::Asked(0);
                if let Some(waker) = shared.waker.take() {
                    waker.wake();
                }
            }
        }
        loop {
            if self.whole {
                return Poll::Ready(None);
            }
            match self.framing {
                In::Length(0) => {
                    self.whole = true;
                    continue;
                }
                In::Length(left) if !read.buf.is_empty() => {
                    let n = left.min(read.buf.len() as u64);
                    self.framing = In::Length(left - n);
                    self.whole = left == n;
                    return Poll::Ready(Some(Ok(read.buf.split_to(n as usize).freeze())));
                }
                In::Length(_) => {}
                In::Chunked(at) if !read.buf.is_empty() => {
                    match decode_chunked(&mut read.buf, at, "request") {
                        Err(e) => {
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                e,
                            ))))
                        }
                        Ok(Decoded::Data(data, next)) => {
                            self.framing = In::Chunked(next);
                            return Poll::Ready(Some(Ok(data)));
                        }
                        Ok(Decoded::Moved(next)) => {
                            self.framing = In::Chunked(next);
                            continue;
                        }
                        Ok(Decoded::End) => {
                            self.whole = true;
                            continue;
                        }
                        Ok(Decoded::NeedMore) => {}
                    }
                }
                In::Chunked(_) => {}
            }
            let n = ready!(read.poll_fill(cx))?;
            if n == 0 {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection within the request body",
                ))));
            }
            // Bytes came (chunk framing too): the client is not still.
            self.received = self.received.saturating_add(n as u64);
            came(&mut self.waiting_since, &mut self.waited, &self.timer);
        }
    }
}

impl<S: ClientStream> RequestBody<S> {
    /// How the body moves, while it is read; `None` for no body.
    pub fn progress(&self) -> Option<Arc<BodyProgress>> {
        self.0.as_ref().map(|s| Arc::clone(&s.progress))
    }
}

impl<S: ClientStream> Body for RequestBody<S> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.0.as_mut() {
            None => Poll::Ready(None),
            Some(s) => s.poll_next(cx).map(|d| d.map(|d| d.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.whole)
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.as_deref() {
            None => SizeHint::with_exact(0),
            Some(s) if s.whole => SizeHint::with_exact(0),
            Some(Streaming {
                framing: In::Length(n),
                ..
            }) => SizeHint::with_exact(*n),
            Some(_) => SizeHint::default(),
        }
    }
}
