//! The server side: clients' connections, each spoken in its own task.
//!
//! hyper's server drives each connection through a dispatcher built for every
//! kind of service: a write queue of buffers, a date cache read at each poll,
//! a timer set for every request head. A proxy needs less: read a head, hand
//! it on, write the answer. This module does that, and only that:
//!
//! - [`ClientConn::read_request`] parses a request head with httparse, at most
//!   [`Limits::max_header_bytes`] and [`MAX_HEADERS`](crate::MAX_HEADERS)
//!   headers, within [`Limits::header_timeout`] (which also ends an idle
//!   keep-alive connection), and refuses a head with more than
//!   [`Limits::max_connection_options`] `Connection` options. Its body, sized
//!   or chunked, is a [`RequestBody`] read off the connection as the handler
//!   takes it; `Expect: 100-continue` is answered when it first does (see
//!   below).
//! - A request whose length cannot be told for sure is refused, as a proxy
//!   must refuse it (RFC 9112 §6.3): `Transfer-Encoding` with
//!   `Content-Length`, codings other than `chunked`, a transfer coding from
//!   HTTP/1.0, lengths that disagree or are not plain digits. A length given
//!   twice over, the same, is taken, and one of its lines kept. `CONNECT` is
//!   refused (405): this is no forward proxy.
//! - [`ClientConn::write_response`] and [`ClientConn::write_answer`] write the
//!   answer (see `response.rs`). A response without `Date` gets one.
//! - [`ClientConn::switch`] joins the connection to a server's after a `101`.
//! - A client that stops sending its request body, or stops taking its answer,
//!   for [`Limits::body_timeout`] loses its connection (nginx's
//!   `client_body_timeout` and `send_timeout`): the body's reader gets a
//!   [`io::ErrorKind::TimedOut`] error, the writer ends the connection. A
//!   body's [`BodyProgress`] tells whoever sends it on when it last moved.
//! - A request body that keeps moving, but too slowly, is ended as well:
//!   after a grace period of waiting for it, its bytes must keep up with
//!   [`Limits::min_body_rate`] (Apache's `mod_reqtimeout` `MinRate`), so that
//!   a byte now and then cannot hold a request open for ever.
//!
//! Requests on a connection are answered in order; pipelined ones wait in the
//! read buffer.
//!
//! ## One writer
//!
//! The connection alone writes to its socket. A request body that a client
//! sent `Expect: 100-continue` for does not write the `100 Continue` itself
//! when it is first asked for: it asks the connection, which writes it while
//! it waits for the answer ([`ClientConn::unless_gone`], where a proxy reads
//! the body on). Once the answer has begun, no `100 Continue` is written: the
//! body may be asked for while the answer goes out (a server answers before
//! it has read the request, and the router goes on sending the body while it
//! passes the answer on), and a `100` written then would land inside the
//! answer. One begun when the answer comes is finished first.

use std::future::Future;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::head::RequestHead;
use crate::lock;
use crate::timer::{after, CoarseSleep, CoarseTimer};

mod body;
mod request;
mod response;

pub use body::{BodyProgress, MinRate, RequestBody};
use body::{Streaming, CONTINUE};
pub(crate) use request::{parse_request, In};
use response::push_date;
pub use response::HeaderLines;

/// How much the read buffer grows by.
const READ_SPACE: usize = 8 * 1024;
/// How long, and how much, a refused client's further bytes are read before
/// its connection is closed.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// What a client may send and how slowly.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For a request head to arrive whole, counted from the end of the last
    /// response (an idle keep-alive connection is closed after it).
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    /// The longest a body may stand still on the client's side: its request
    /// body not arriving while it is read, or its answer not taken while it
    /// is written. A connection that waits longer is ended.
    pub body_timeout: Duration,
    /// The most options a request's `Connection` header(s) may list, over
    /// all its lines; a head with more is refused (400). Each option may
    /// name a header to take out, and thousands fit in a head.
    pub max_connection_options: usize,
    /// The slowest a request body may come in all, besides its pauses (see
    /// [`MinRate`]); `None`: no lower bound.
    pub min_body_rate: Option<MinRate>,
}

/// Why a connection ended other than by the client's close.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The client's request could not be taken: it was answered with this
    /// status and reason, and the connection closed.
    #[error("request refused ({0}): {1}")]
    Refused(StatusCode, String),
    #[error("no whole request head within {0:?}")]
    HeadTimeout(Duration),
}

/// A client connection's byte stream, as [`ClientConn`] holds it: split into
/// a reading side, which a request body takes while it is read (perhaps in
/// another task), and a writing side, which the connection keeps. Plain TCP
/// splits into its own halves at no cost; any other stream (TLS over TCP)
/// is wrapped in [`Locked`], whose halves share it behind a lock.
pub trait ClientStream: Send + 'static {
    type Read: AsyncRead + Send + Sync + Unpin + 'static;
    type Write: AsyncWrite + Send + Sync + Unpin + 'static;

    fn split(self) -> (Self::Read, Self::Write);
}

impl ClientStream for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

/// A stream that cannot be split in two by itself (TLS: one session state
/// for both ways), split by [`tokio::io::split`]: each half takes a lock
/// for each read or write.
pub struct Locked<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> ClientStream for Locked<S> {
    type Read = tokio::io::ReadHalf<S>;
    type Write = tokio::io::WriteHalf<S>;

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self.0)
    }
}

/// The connection's reading side: its stream's read half and what has been
/// read ahead of the request being taken.
struct Reading<S: ClientStream> {
    half: S::Read,
    buf: BytesMut,
}

impl<S: ClientStream> Reading<S> {
    /// Reads what has arrived into the buffer; `Ready(Ok(0))`: the client
    /// closed its side. A short read tells tokio the socket is drained, so the
    /// next read waits for the socket rather than trying it in vain.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SPACE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.half), cx, &mut self.buf)
    }
}

/// What a request body and its connection share.
type Back<S> = Arc<Mutex<Shared<S>>>;

/// What a request body and its connection share: where the body puts the
/// reading side back when dropped, and the `100 Continue` it may ask for.
struct Shared<S: ClientStream> {
    /// The reading side given back, with whether the body was read to its
    /// end.
    back: Option<(Reading<S>, bool)>,
    proceed: Proceed,
    /// The connection's task while it waits for the body to ask (which it
    /// may do from another task).
    waker: Option<Waker>,
}

impl<S: ClientStream> Default for Shared<S> {
    fn default() -> Self {
        Shared {
            back: None,
            proceed: Proceed::default(),
            waker: None,
        }
    }
}

/// A `100 Continue` the client waits for before it sends its body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Proceed {
    /// None is due: not asked for, written, or overtaken by the answer.
    #[default]
    Settled,
    /// The client waits; its body has not been asked for yet.
    Waiting,
    /// The body was asked for: the connection writes the `100 Continue`,
    /// of which this much is written.
    Asked(usize),
}

/// The request being answered: what its response depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked {
    pub(crate) head: bool,
    pub(crate) http10: bool,
    /// The client lets the connection carry another request.
    pub(crate) keep_alive: bool,
}

/// A client's connection, over plain TCP or another [`ClientStream`].
pub struct ClientConn<S: ClientStream = TcpStream> {
    /// `None` while a request body holds it.
    read: Option<Reading<S>>,
    back: Back<S>,
    write: S::Write,
    out: Vec<u8>,
    limits: Limits,
    timer: CoarseTimer,
    /// The header timeout's sleep, kept for the connection's life.
    sleep: Option<CoarseSleep>,
    asked: Asked,
    /// A `100 Continue` may be due (see [`Proceed`]): looked at only then.
    proceed: bool,
}

enum Waited {
    Closing,
    Read(io::Result<usize>),
    TimedOut,
}

impl<S: ClientStream> ClientConn<S> {
    /// A client's connection, held to `limits` by `timer`'s clock.
    pub fn new(stream: S, limits: Limits, timer: CoarseTimer) -> ClientConn<S> {
        let (half, write) = stream.split();
        ClientConn {
            read: Some(Reading {
                half,
                buf: BytesMut::new(),
            }),
            back: Back::default(),
            write,
            out: Vec::with_capacity(1024),
            limits,
            timer,
            sleep: None,
            asked: Asked {
                head: false,
                http10: false,
                keep_alive: true,
            },
            proceed: false,
        }
    }

    /// The next request: its head and its body. `Ok(None)`: the client closed
    /// the connection between requests, or `closing` became true while it was
    /// idle. A malformed request is answered here, and ends the connection.
    pub async fn read_request(
        &mut self,
        mut closing: impl FnMut(&Context<'_>) -> bool,
    ) -> Result<Option<(RequestHead, RequestBody<S>)>, Ended> {
        let mut read = match self.read.take() {
            Some(read) => read,
            // The last request's body was read whole and given back.
            None => match lock(&self.back).back.take() {
                Some((read, true)) => read,
                _ => return Ok(None),
            },
        };
        // Set once per head, and only when it has to be waited for.
        let mut deadline = None;
        loop {
            if !read.buf.is_empty() {
                let limits = &self.limits;
                match parse_request(
                    &mut read.buf,
                    limits.max_header_bytes,
                    limits.max_connection_options,
                ) {
                    Ok(Some((parts, framing, asked, expect))) => {
                        self.asked = asked;
                        if expect {
                            lock(&self.back).proceed = Proceed::Waiting;
                            self.proceed = true;
                        }
                        let body = match framing {
                            None => {
                                self.read = Some(read);
                                RequestBody(None)
                            }
                            Some(framing) => RequestBody(Some(Box::new(Streaming::new(
                                read,
                                Arc::clone(&self.back),
                                framing,
                                expect,
                                self.timer.clone(),
                                self.limits.body_timeout,
                                self.limits.min_body_rate,
                            )))),
                        };
                        return Ok(Some((parts, body)));
                    }
                    Ok(None) => {}
                    Err((status, reason)) => {
                        self.read = Some(read);
                        self.refuse(status, &reason).await;
                        return Err(Ended::Refused(status, reason));
                    }
                }
            }
            let idle = read.buf.is_empty();
            let (timer, limits) = (&self.timer, self.limits);
            let sleep = &mut self.sleep;
            let filled = std::future::poll_fn(|cx| {
                if idle && closing(cx) {
                    return Poll::Ready(Waited::Closing);
                }
                if let Poll::Ready(r) = read.poll_fill(cx) {
                    return Poll::Ready(Waited::Read(r));
                }
                let deadline =
                    *deadline.get_or_insert_with(|| after(timer.now(), limits.header_timeout));
                timer
                    .poll_until(sleep, deadline, cx)
                    .map(|()| Waited::TimedOut)
            })
            .await;
            match filled {
                Waited::Closing => return Ok(None),
                Waited::TimedOut if idle => return Ok(None),
                Waited::TimedOut => return Err(Ended::HeadTimeout(limits.header_timeout)),
                Waited::Read(Ok(0)) if idle => return Ok(None),
                Waited::Read(Ok(0)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed within a request head",
                    )
                    .into())
                }
                Waited::Read(r) => r?,
            };
        }
    }

    /// Answers a request that cannot be taken, and says the connection ends.
    async fn refuse(&mut self, status: StatusCode, reason: &str) {
        let body = format!("{reason}\n");
        self.out.clear();
        let _ = write!(
            self.out,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        push_date(&mut self.out, &self.timer);
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body.as_bytes());
        if self.flush().await.is_ok() {
            self.linger().await;
        }
    }

    /// The reading side, wherever it is (a request body gives it back when
    /// dropped), read whole or not.
    fn take_reading(&mut self) -> Option<Reading<S>> {
        self.read
            .take()
            .or_else(|| lock(&self.back).back.take().map(|(read, _)| read))
    }

    /// Settles a `100 Continue` as the answer begins: the part of one that
    /// is begun, to be written first; none is written after.
    fn settle_continue(&mut self) -> &'static [u8] {
        if !std::mem::take(&mut self.proceed) {
            return b"";
        }
        let mut shared = lock(&self.back);
        let rest = match shared.proceed {
            Proceed::Asked(at) if at > 0 => &CONTINUE[at..],
            _ => b"",
        };
        shared.proceed = Proceed::Settled;
        shared.waker = None;
        rest
    }

    /// Writes the `100 Continue` the request body asked for, if it did.
    /// `Ready`: the write failed (the client is gone).
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut shared = lock(&self.back);
        loop {
            match shared.proceed {
                Proceed::Settled => {
                    self.proceed = false;
                    return Poll::Pending;
                }
                Proceed::Waiting => {
                    if !shared
                        .waker
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        shared.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Proceed::Asked(at) => {
                    match ready!(Pin::new(&mut self.write).poll_write(cx, &CONTINUE[at..])) {
                        Ok(0) | Err(_) => return Poll::Ready(()),
                        Ok(n) if at + n == CONTINUE.len() => shared.proceed = Proceed::Settled,
                        Ok(n) => shared.proceed = Proceed::Asked(at + n),
                    }
                }
            }
        }
    }

    /// Ends the connection with the client's bytes read, not left: a close
    /// with bytes unread resets the connection, and the client could lose the
    /// answer. Says the end, then reads what the client is still sending for
    /// a while (nginx's lingering close).
    async fn linger(&mut self) {
        if self.write.shutdown().await.is_err() {
            return;
        }
        let Some(mut read) = self.take_reading() else {
            return;
        };
        let mut drained = 0;
        let _ = tokio::time::timeout(LINGER, async {
            while drained < LINGER_BYTES {
                read.buf.clear();
                match std::future::poll_fn(|cx| read.poll_fill(cx)).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }

    /// Writes the head of a `101 Switching Protocols` and then carries bytes
    /// both ways between the client and `upstream` until either ends.
    pub async fn switch<B>(
        mut self,
        resp: Response<B>,
        upstream: hyper::upgrade::OnUpgrade,
    ) -> io::Result<()> {
        self.out.clear();
        let begun = self.settle_continue();
        self.out.extend_from_slice(begun);
        self.out
            .extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
        resp.headers().encode(&mut self.out);
        self.out.extend_from_slice(b"\r\n");
        drop(resp);
        self.flush().await?;
        let upstream = upstream.await.map_err(io::Error::other)?;
        let mut upstream = TokioIo::new(upstream);
        let Some(read) = self.take_reading() else {
            return Err(io::Error::other("the request body outlived its exchange"));
        };
        if !read.buf.is_empty() {
            upstream.write_all(&read.buf).await?;
        }
        let mut client = tokio::io::join(read.half, self.write);
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        Ok(())
    }

    /// `fut`'s output, or `None` if the client closes the connection (or it
    /// breaks) first: for waiting on an answer, or on its body. Bytes the
    /// client sends meanwhile (its next request) are kept for their turn, up
    /// to the head limit. While a request body holds the connection's reading
    /// side, its reader is the one to tell; and the `100 Continue` it asks for
    /// is written here.
    pub async fn unless_gone<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.poll_gone(cx).map(|()| None)
        })
        .await
    }

    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.proceed && self.poll_continue(cx).is_ready() {
            return Poll::Ready(());
        }
        let Some(read) = self.read.as_mut() else {
            return Poll::Pending;
        };
        while read.buf.len() < self.limits.max_header_bytes {
            match ready!(read.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
