//! The router's HTTP/1.1 server side: the clients' connections, spoken in
//! each connection's own task.
//!
//! hyper's server drove each connection through a dispatcher built for every
//! kind of service: a write queue of buffers, a date cache read at each poll,
//! a timer set for every request head. The router needs less: read a head,
//! hand it on, write the answer. This module does that, and only that:
//!
//! - [`ClientConn::read_request`] parses a request head with httparse, at most
//!   [`Limits::max_header_bytes`] and [`MAX_HEADERS`] headers, within
//!   [`Limits::header_timeout`] (which also ends an idle keep-alive
//!   connection). Its body, sized or chunked, is a [`RequestBody`] read off the
//!   connection as the handler takes it; `Expect: 100-continue` is answered when
//!   it first does.
//! - A request whose length cannot be told for sure is refused, as a proxy
//!   must refuse it (RFC 9112 §6.3): `Transfer-Encoding` with
//!   `Content-Length`, codings other than `chunked`, a transfer coding from
//!   HTTP/1.0, lengths that disagree or are not plain digits.
//! - [`ClientConn::write_response`] writes the head and the body in as few
//!   writes as the body allows (a body that is ready goes out with its head),
//!   framed by its `Content-Length`, its exact size, chunks or, for an HTTP/1.0
//!   client, the connection's end. A response without `Date` gets one.
//! - [`ClientConn::switch`] joins the connection to a server's after a `101`.
//! - A client that stops sending its request body, or stops taking its answer,
//!   for [`Limits::body_timeout`] loses its connection (nginx's
//!   `client_body_timeout` and `send_timeout`): the body's reader gets a
//!   [`io::ErrorKind::TimedOut`] error, the writer ends the connection. A
//!   body's [`BodyProgress`] tells whoever sends it on when it last moved.
//!
//! Requests on a connection are answered in order; pipelined ones wait in the
//! read buffer.

use std::future::Future;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::coarse_timer::{self, CoarseSleep, CoarseTimer};
use crate::lock;
use crate::upstream_http::{
    decode_chunked, header_spans, parse_length, push_line, span_of, tokens, Chunk, Decoded,
    RawHeaders, RequestHead, Span, MAX_HEADERS,
};

/// How much the read buffer grows by.
const READ_SPACE: usize = 8 * 1024;
/// Body pieces up to this size are copied after the head (or the chunk
/// framing) and written with it, while what is copied stays under it too;
/// larger ones are written on their own.
const COPY_LIMIT: usize = 16 * 1024;
/// How long, and how much, a refused client's further bytes are read before
/// its connection is closed.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

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

/// The connection's reading side: its socket's read half and what has been
/// read ahead of the request being taken.
struct Reading {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl Reading {
    /// Reads what has arrived into the buffer; `Ready(Ok(0))`: the client
    /// closed its side. A short read tells tokio the socket is drained, so the
    /// next read waits for the socket rather than trying it in vain.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SPACE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.half), cx, &mut self.buf)
    }
}

/// Where a request body puts the reading side back when dropped, with
/// whether it was read to its end.
type Back = Arc<Mutex<Option<(Reading, bool)>>>;

/// The request being answered: what its response depends on.
#[derive(Debug, Clone, Copy)]
struct Asked {
    head: bool,
    http10: bool,
    /// The client lets the connection carry another request.
    keep_alive: bool,
}

/// A client's connection.
pub struct ClientConn {
    /// `None` while a request body holds it.
    read: Option<Reading>,
    back: Back,
    write: OwnedWriteHalf,
    out: Vec<u8>,
    limits: Limits,
    timer: CoarseTimer,
    /// The header timeout's sleep, kept for the connection's life.
    sleep: Option<CoarseSleep>,
    asked: Asked,
}

impl ClientConn {
    pub fn new(stream: TcpStream, limits: Limits, timer: CoarseTimer) -> ClientConn {
        let (half, write) = stream.into_split();
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
        }
    }

    /// The next request: its head and its body. `Ok(None)`: the client closed
    /// the connection between requests, or `closing` became true while it was
    /// idle. A malformed request is answered here, and ends the connection.
    pub async fn read_request(
        &mut self,
        mut closing: impl FnMut(&Context<'_>) -> bool,
    ) -> Result<Option<(RequestHead, RequestBody)>, Ended> {
        let mut read = match self.read.take() {
            Some(read) => read,
            // The last request's body was read whole and given back.
            None => match lock(&self.back).take() {
                Some((read, true)) => read,
                _ => return Ok(None),
            },
        };
        // Set once per head, and only when it has to be waited for.
        let mut deadline = None;
        loop {
            if !read.buf.is_empty() {
                match parse_request(&mut read.buf, self.limits.max_header_bytes) {
                    Ok(Some((parts, framing, asked, expect))) => {
                        self.asked = asked;
                        let body = match framing {
                            None => {
                                self.read = Some(read);
                                RequestBody(None)
                            }
                            Some(framing) => RequestBody(Some(Box::new(Streaming {
                                read: Some(read),
                                back: Arc::clone(&self.back),
                                framing,
                                continue_at: expect.then_some(0),
                                whole: false,
                                timer: self.timer.clone(),
                                limit: self.limits.body_timeout,
                                sleep: None,
                                waiting_since: None,
                                progress: Arc::new(BodyProgress::new(self.timer.now())),
                            }))),
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
                let deadline = *deadline
                    .get_or_insert_with(|| coarse_timer::after(timer.now(), limits.header_timeout));
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
    fn take_reading(&mut self) -> Option<Reading> {
        self.read
            .take()
            .or_else(|| lock(&self.back).take().map(|(read, _)| read))
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

    /// Writes `resp` to the client. `Ok(true)`: the connection can carry the
    /// next request. `closing`: it is not to (the router is shutting down).
    pub async fn write_response<B>(&mut self, resp: Response<B>, closing: bool) -> io::Result<bool>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = resp.into_parts();
        self.write_answer(parts.status, &parts.headers, body, closing)
            .await
    }

    /// Writes an answer of `status` with `headers` (a header map, or a
    /// server's lines as it sent them, hop-by-hop ones already taken out)
    /// and `body`. As [`write_response`](Self::write_response).
    pub(crate) async fn write_answer<B>(
        &mut self,
        status: StatusCode,
        headers: &impl HeaderLines,
        body: B,
        closing: bool,
    ) -> io::Result<bool>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        // A request body already given back unread ends the connection:
        // the head says so.
        let unread = self.read.is_none() && matches!(*lock(&self.back), Some((_, false)));
        let mut keep_alive = self.asked.keep_alive && !closing && !unread;
        let no_content = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let bodiless = no_content || self.asked.head;
        let length = headers.content_length().map_err(|()| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed response Content-Length",
            )
        })?;
        let exact = body.size_hint().exact();
        let framing = match (bodiless, length, exact) {
            (true, _, _) => Out::None,
            (false, Some(n), _) => Out::Length(n),
            (false, None, Some(n)) => Out::Length(n),
            (false, None, None) if !self.asked.http10 => Out::Chunked,
            (false, None, None) => {
                keep_alive = false;
                Out::Close
            }
        };
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        self.out.extend_from_slice(status.as_str().as_bytes());
        self.out.push(b' ');
        self.out
            .extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        self.out.extend_from_slice(b"\r\n");
        headers.encode(&mut self.out);
        if !headers.has_date() {
            push_date(&mut self.out, &self.timer);
        }
        // An answer to HEAD says the length its GET would have, when known
        // (a body that is empty only because it answers HEAD says nothing).
        let said_length = match framing {
            Out::None if !no_content && length.is_none() => exact.filter(|n| *n > 0),
            Out::Length(n) if length.is_none() => Some(n),
            _ => None,
        };
        if let Some(n) = said_length {
            let _ = write!(self.out, "content-length: {n}\r\n");
        }
        if framing == Out::Chunked {
            self.out
                .extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !keep_alive {
            self.out.extend_from_slice(b"connection: close\r\n");
        } else if self.asked.http10 {
            self.out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        let whole = match framing {
            Out::None => {
                drop(body);
                true
            }
            _ => self.write_body(body, framing).await?,
        };
        self.flush().await?;
        // The request's body, if it had one, is given back when dropped (it
        // was, with the response's): whether it was read to its end. Ending
        // with it unread, or with the client's next request read but not
        // answered (it came before this answer's `Connection: close`), the
        // connection lingers.
        let body_unread = self.read.is_none() && !matches!(*lock(&self.back), Some((_, true)));
        let pipelined = self.read.as_ref().is_some_and(|r| !r.buf.is_empty());
        let keep = keep_alive && whole && !body_unread;
        if !keep && (body_unread || pipelined) {
            self.linger().await;
        }
        Ok(keep)
    }

    /// Writes a body after the head in `out`. `Ok(false)`: it ended short of
    /// its length (the client is told by the connection's end).
    async fn write_body<B>(&mut self, body: B, framing: Out) -> io::Result<bool>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let mut body = std::pin::pin!(body);
        let mut left = match framing {
            Out::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            if body.is_end_stream() {
                break;
            }
            // What is ready goes out with what is written already; the rest
            // is waited for once that is flushed.
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    self.flush().await?;
                    // A client that leaves ends the wait (a stream that is
                    // quiet for minutes is not kept for no one).
                    self.unless_gone(body.frame()).await.ok_or_else(|| {
                        io::Error::new(io::ErrorKind::ConnectionAborted, "the client left")
                    })?
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body broke off");
                    return Ok(false);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers are not passed on.
                    Err(_) => continue,
                },
            };
            if data.is_empty() {
                continue;
            }
            if let Out::Length(_) = framing {
                if data.len() as u64 > left {
                    tracing::debug!("response body longer than its Content-Length");
                    return Ok(false);
                }
                left -= data.len() as u64;
            }
            if framing == Out::Chunked {
                let _ = write!(self.out, "{:x}\r\n", data.len());
            }
            if data.len() <= COPY_LIMIT && self.out.len() < COPY_LIMIT {
                self.out.extend_from_slice(&data);
            } else {
                self.flush().await?;
                let limit = self.limits.body_timeout;
                write_within(&mut self.write, &data, &self.timer, &mut self.sleep, limit).await?;
            }
            if framing == Out::Chunked {
                self.out.extend_from_slice(b"\r\n");
            }
        }
        match framing {
            Out::Chunked => {
                self.out.extend_from_slice(LAST_CHUNK);
                Ok(true)
            }
            Out::Length(_) => Ok(left == 0),
            _ => Ok(true),
        }
    }

    /// Writes the head of a `101 Switching Protocols` and then carries bytes
    /// both ways between the client and `upstream` until either ends.
    pub async fn switch<B>(
        mut self,
        resp: Response<B>,
        upstream: hyper::upgrade::OnUpgrade,
    ) -> io::Result<()> {
        self.out.clear();
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
        let mut client = read
            .half
            .reunite(self.write)
            .map_err(|_| io::Error::other("the connection's halves do not match"))?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        Ok(())
    }

    /// `fut`'s output, or `None` if the client closes the connection (or it
    /// breaks) first: for waiting on an answer, or on its body. Bytes the
    /// client sends meanwhile (its next request) are kept for their turn, up
    /// to the head limit. While a request body holds the connection's reading
    /// side, its reader is the one to tell.
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

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let limit = self.limits.body_timeout;
            write_within(
                &mut self.write,
                &self.out,
                &self.timer,
                &mut self.sleep,
                limit,
            )
            .await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Writes all of `data` to the client, unless it takes none of it for
/// `limit`: a client that stops reading does not hold its connection, and the
/// server's behind it, for ever. The sleep is armed only when a write has to
/// wait.
async fn write_within(
    write: &mut OwnedWriteHalf,
    mut data: &[u8],
    timer: &CoarseTimer,
    sleep: &mut Option<CoarseSleep>,
    limit: Duration,
) -> io::Result<()> {
    // From the last write that took bytes.
    let mut deadline = None;
    std::future::poll_fn(|cx| {
        while !data.is_empty() {
            match Pin::new(&mut *write).poll_write(cx, data) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    data = &data[n..];
                    deadline = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let deadline =
                        *deadline.get_or_insert_with(|| coarse_timer::after(timer.now(), limit));
                    ready!(timer.poll_until(sleep, deadline, cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took none of its answer for {:.1}s",
                            limit.as_secs_f64()
                        ),
                    )));
                }
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

enum Waited {
    Closing,
    Read(io::Result<usize>),
    TimedOut,
}

/// How a response body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// A response's headers, as the writer needs them: a header map (the
/// router's own answers), or a server's lines passed on as they came.
pub(crate) trait HeaderLines {
    /// The `Content-Length` given, if any; `Err` if it is not a number.
    fn content_length(&self) -> Result<Option<u64>, ()>;
    fn has_date(&self) -> bool;
    /// Appends the header lines, each ending in CRLF.
    fn encode(&self, out: &mut Vec<u8>);
}

impl HeaderLines for HeaderMap {
    fn content_length(&self) -> Result<Option<u64>, ()> {
        self.get(header::CONTENT_LENGTH)
            .map(|v| parse_length(v.as_bytes()).ok_or(()))
            .transpose()
    }

    fn has_date(&self) -> bool {
        self.contains_key(header::DATE)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for (name, value) in self {
            push_line(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

impl HeaderLines for RawHeaders {
    fn content_length(&self) -> Result<Option<u64>, ()> {
        // Parsed, and checked, when the head was read.
        Ok(RawHeaders::content_length(self))
    }

    fn has_date(&self) -> bool {
        self.contains("date")
    }

    fn encode(&self, out: &mut Vec<u8>) {
        RawHeaders::encode(self, out);
    }
}

/// The `Date` header for now, formatted once a second per thread.
fn push_date(out: &mut Vec<u8>, timer: &CoarseTimer) {
    thread_local! {
        static DATE: std::cell::RefCell<(Option<Instant>, String)> =
            const { std::cell::RefCell::new((None, String::new())) };
    }
    let now = timer.now();
    DATE.with_borrow_mut(|(at, text)| {
        if at.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1)) {
            *at = Some(now);
            *text = httpdate::fmt_http_date(SystemTime::now());
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

type Refusal = (StatusCode, String);

fn bad(what: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, what.into())
}

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Length(u64),
    Chunked(Chunk),
}

/// A parsed request head: the head, its body's framing (`None`: no body),
/// what the response depends on, and whether the client waits for a 100.
type Parsed = (RequestHead, Option<In>, Asked, bool);

/// Parses the request head at the start of `buf`, taking it off when whole.
/// `Ok(None)`: not all in yet.
fn parse_request(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Parsed>, Refusal> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len > max_bytes => {
            return Err(too_large(max_bytes));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => {
            return Err(too_large(max_bytes));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("more than {MAX_HEADERS} request headers"),
            ))
        }
        Err(e) => return Err(bad(format!("malformed request head: {e}"))),
    };
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("malformed request method"))?;
    let http10 = request.version == Some(0);
    let target = span_of(buf, len, request.path.unwrap_or_default().as_bytes());
    let mut spans = vec![Span::default(); request.headers.len()];
    header_spans(buf, len, request.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize))
        .map_err(|_| bad("malformed request target"))?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut keep_alive = !http10;
    // `close` wins, wherever it stands.
    let mut close = false;
    let mut expect = false;
    for span in &spans {
        let (name, value) = (&head[span.name()], &head[span.value()]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value).ok_or_else(|| bad("malformed Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Lengths"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if http10 {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err((
                    StatusCode::NOT_IMPLEMENTED,
                    "only the chunked transfer coding is taken".into(),
                ));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err((
                    StatusCode::EXPECTATION_FAILED,
                    "only Expect: 100-continue is taken".into(),
                ));
            }
            expect = !http10;
        }
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => return Err(bad("both Transfer-Encoding and Content-Length")),
        (true, None) => Some(In::Chunked(Chunk::Size)),
        (false, Some(0) | None) => None,
        (false, Some(n)) => Some(In::Length(n)),
    };
    let asked = Asked {
        head: method == Method::HEAD,
        http10,
        keep_alive: keep_alive && !close,
    };
    let request = RequestHead {
        method,
        uri,
        version: match http10 {
            true => Version::HTTP_10,
            false => Version::HTTP_11,
        },
        headers: RawHeaders::new(head, spans, length),
        set: Vec::new(),
    };
    Ok(Some((request, framing, asked, expect && framing.is_some())))
}

fn too_large(max_bytes: usize) -> Refusal {
    (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!("request head larger than {max_bytes} bytes"),
    )
}

/// A request's body, read off the client's connection as it is taken.
pub struct RequestBody(Option<Box<Streaming>>);

struct Streaming {
    /// The connection's reading side, until given back.
    read: Option<Reading>,
    back: Back,
    framing: In,
    /// How much of `100 Continue` is written, while the client waits for it:
    /// it is sent when the body is first asked for, so that a request
    /// answered without its body is not sent it.
    continue_at: Option<usize>,
    /// Read to its end.
    whole: bool,
    timer: CoarseTimer,
    /// How long the client may leave the body standing still.
    limit: Duration,
    /// Armed while the client's bytes are waited for.
    sleep: Option<CoarseSleep>,
    /// When the present wait for the client's bytes began.
    waiting_since: Option<Instant>,
    progress: Arc<BodyProgress>,
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
}

impl BodyProgress {
    fn new(now: Instant) -> BodyProgress {
        BodyProgress {
            since: now,
            moved: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
        }
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

    fn moved(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.since).as_millis();
        self.moved
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.waiting.store(false, Ordering::Relaxed);
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if let Some(read) = self.read.take() {
            *lock(&self.back) = Some((read, self.whole));
        }
    }
}

impl Streaming {
    /// The next piece of the body; a client that sends none of it for the
    /// body timeout gets a [`io::ErrorKind::TimedOut`] error.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let polled = self.poll_read(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                self.progress.moved(self.timer.now());
                self.waiting_since = None;
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
                let deadline = coarse_timer::after(since, self.limit);
                ready!(self.timer.poll_until(&mut self.sleep, deadline, cx));
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no request body bytes for {:.1}s", self.limit.as_secs_f64()),
                ))));
            }
        }
        polled
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let Some(read) = self.read.as_mut() else {
            return Poll::Ready(None);
        };
        // Written through the read half's handle on the socket: the write
        // half is the connection's, and nothing else is written meanwhile.
        while let Some(at) = self.continue_at {
            let socket = read.half.as_ref();
            match socket.try_write(&CONTINUE[at..]) {
                Ok(0) => return Poll::Ready(Some(Err(io::ErrorKind::WriteZero.into()))),
                Ok(n) if at + n == CONTINUE.len() => self.continue_at = None,
                Ok(n) => self.continue_at = Some(at + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(socket.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
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
            if ready!(read.poll_fill(cx))? == 0 {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection within the request body",
                ))));
            }
            // Bytes came (chunk framing too): the client is not still.
            self.waiting_since = None;
        }
    }
}

impl RequestBody {
    /// How the body moves, while it is read; `None` for no body.
    pub fn progress(&self) -> Option<Arc<BodyProgress>> {
        self.0.as_ref().map(|s| Arc::clone(&s.progress))
    }
}

impl Body for RequestBody {
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{Full, StreamBody};
    use hyper::header::HeaderValue;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    type TestBody = BoxBody<Bytes, io::Error>;

    fn full(text: &str) -> TestBody {
        Full::new(Bytes::from(text.to_owned()))
            .map_err(|never| match never {})
            .boxed()
    }

    /// A body of `pieces` whose length is not known ahead.
    fn streamed(pieces: &[&'static str]) -> TestBody {
        let frames = pieces
            .iter()
            .map(|p| Ok::<_, io::Error>(Frame::data(Bytes::from_static(p.as_bytes()))));
        BodyExt::boxed(StreamBody::new(futures::stream::iter(
            frames.collect::<Vec<_>>(),
        )))
    }

    /// The handler the tests serve: the path says what to answer.
    /// - `/echo`: the request body read whole, as the answer;
    /// - `/ignore`: "ignored", leaving the body unread;
    /// - `/stream`: two pieces, length unknown;
    /// - `/big`: 64 MiB in pieces of 1 MiB, length unknown;
    /// - `/nocontent`: 204;
    /// - `/dated`: with the server's own Date;
    /// - anything else: the method and path.
    async fn handle(parts: RequestHead, body: RequestBody) -> Response<TestBody> {
        match parts.uri.path() {
            "/echo" => echo(body).await,
            // Reads the body only after 600 ms (as after a spawn), then
            // echoes it.
            "/late-echo" => {
                tokio::time::sleep(Duration::from_millis(600)).await;
                echo(body).await
            }
            // Reads the body, then says whether its progress still says it
            // waits for the client.
            "/progress" => {
                let Some(progress) = body.progress() else {
                    return Response::new(full("no body"));
                };
                let got = body.collect().await.map(|c| c.to_bytes());
                Response::new(full(&format!(
                    "{:?} waiting={}",
                    got.map(|b| b.len()).map_err(|e| e.to_string()),
                    progress.waiting_for_client()
                )))
            }
            "/ignore" => Response::new(full("ignored")),
            "/slow" => {
                let _left = Dropped(&SLOW_DROPPED);
                tokio::time::sleep(Duration::from_secs(30)).await;
                Response::new(full("slow"))
            }
            "/forever" => {
                let guard = Dropped(&STREAM_DROPPED);
                let first = futures::stream::iter([Ok(Frame::data(Bytes::from_static(b"first")))]);
                let then =
                    futures::stream::pending().map(move |f: Result<Frame<Bytes>, io::Error>| {
                        let _ = &guard;
                        f
                    });
                Response::new(BodyExt::boxed(StreamBody::new(first.chain(then))))
            }
            "/stream" => Response::new(streamed(&["one,", "two"])),
            "/big" => {
                let piece = Bytes::from(vec![b'b'; 1 << 20]);
                let pieces = futures::stream::iter(
                    (0..64).map(move |_| Ok::<_, io::Error>(Frame::data(piece.clone()))),
                );
                Response::new(BodyExt::boxed(StreamBody::new(pieces)))
            }
            "/nocontent" => {
                let mut r = Response::new(full(""));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            "/dated" => {
                let mut r = Response::new(full("dated"));
                r.headers_mut().insert(
                    header::DATE,
                    HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
                );
                r
            }
            path => Response::new(full(&format!("{} {path}", parts.method))),
        }
    }

    /// The request body read whole as the answer, or the error that ended it.
    async fn echo(body: RequestBody) -> Response<TestBody> {
        let text = match body.collect().await.map(|c| c.to_bytes()) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => format!("error: {e}"),
        };
        Response::new(full(&text))
    }

    static SLOW_DROPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static STREAM_DROPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    /// Answers the test servers gave up writing for the body timeout.
    static WRITES_TIMED_OUT: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    /// Counts its drop.
    struct Dropped(&'static std::sync::atomic::AtomicUsize);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Serves each connection as the router does, with `limits` and a timer
    /// ticked every 10 ms; returns its address.
    async fn server(limits: Limits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timer = CoarseTimer::new();
        let ticking = timer.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticking.tick();
            }
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut conn = ClientConn::new(stream, limits, timer.clone());
                tokio::spawn(async move {
                    while let Ok(Some((parts, body))) = conn.read_request(|_| false).await {
                        if parts.uri.path() == "/passed" {
                            let head = crate::upstream_http::ResponseHead::parse(PASSED);
                            let written = conn
                                .write_answer(head.status, &head.headers, full("passed"), false)
                                .await;
                            if !matches!(written, Ok(true)) {
                                break;
                            }
                            continue;
                        }
                        let Some(resp) = conn.unless_gone(handle(parts, body)).await else {
                            break;
                        };
                        match conn.write_response(resp, false).await {
                            Ok(true) => {}
                            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                                WRITES_TIMED_OUT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                break;
                            }
                            _ => break,
                        }
                    }
                });
            }
        });
        addr
    }

    /// The server's head the test server passes on for `/passed`.
    const PASSED: &[u8] =
        b"HTTP/1.1 202 Accepted\r\nX-Tenant: a\r\nContent-Length: 6\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";

    const LIMITS: Limits = Limits {
        header_timeout: Duration::from_secs(5),
        max_header_bytes: 4096,
        body_timeout: Duration::from_secs(5),
    };

    /// Sends `request` on a new connection and reads until the server closes
    /// it (or 2 s pass).
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        read_to_end(&mut s).await
    }

    async fn read_to_end(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Asserts that the server, having answered and ended the connection,
    /// still reads what the client sends: two writes 100 ms apart succeed (a
    /// closed connection answers the first with a reset, and the second
    /// fails).
    async fn assert_still_read(s: &mut TcpStream) {
        for _ in 0..2 {
            let more = s.write_all(&[b'a'; 16 * 1024]).await;
            assert!(more.is_ok(), "{more:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `raw` without its Date lines, with `\n` for line ends.
    fn without_date(raw: &str) -> String {
        raw.lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_on_one_connection() {
        let addr = server(LIMITS).await;
        let got = exchange(
            addr,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(
            without_date(&got),
            "HTTP/1.1 200 OK\ncontent-length: 6\n\nGET /a\
             HTTP/1.1 200 OK\ncontent-length: 7\n\n\
             HTTP/1.1 200 OK\ncontent-length: 6\nconnection: close\n\nGET /c"
        );
    }

    #[tokio::test]
    async fn a_request_after_one_that_closes_is_read_not_reset() {
        let addr = server(LIMITS).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_end(&mut s).await;
        assert!(got.ends_with("\r\n\r\nGET /a"), "{got}");
        assert_still_read(&mut s).await;
    }

    #[tokio::test]
    async fn request_bodies_sized_or_chunked_are_read_and_the_connection_kept() {
        let addr = server(LIMITS).await;
        let got = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n\
              GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let bodies: Vec<&str> = got
            .split("\r\n\r\n")
            .skip(1)
            .map(|rest| rest.split("HTTP/1.1").next().unwrap_or(""))
            .collect();
        assert_eq!(bodies, ["hello", "abcde", "GET /last"], "{got}");
    }

    #[tokio::test]
    async fn a_client_that_expects_100_continue_is_told_to_go_on() {
        let addr = server(LIMITS).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; CONTINUE.len()];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut first))
            .await
            .expect("no 100 Continue")
            .unwrap();
        assert_eq!(&first, CONTINUE);
        s.write_all(b"body").await.unwrap();
        let rest = read_to_end(&mut s).await;
        assert!(
            rest.starts_with("HTTP/1.1 200 OK\r\n") && rest.ends_with("\r\n\r\nbody"),
            "{rest}"
        );
    }

    #[tokio::test]
    async fn a_client_that_leaves_ends_the_wait_for_its_answer_and_its_body() {
        let addr = server(LIMITS).await;
        let dropped = |counter: &std::sync::atomic::AtomicUsize| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(dropped(&SLOW_DROPPED), 0, "the answer is still awaited");
        drop(s);
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 512];
        let n = s.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).contains("first"));
        assert_eq!(dropped(&STREAM_DROPPED), 0, "the body is still streamed");
        drop(s);
        for _ in 0..100 {
            if dropped(&SLOW_DROPPED) == 1 && dropped(&STREAM_DROPPED) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!((dropped(&SLOW_DROPPED), dropped(&STREAM_DROPPED)), (1, 1));
    }

    #[tokio::test]
    async fn no_100_continue_for_a_body_that_is_not_asked_for() {
        let addr = server(LIMITS).await;
        let got = exchange(
            addr,
            b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\nignored"), "{got}");
    }

    #[tokio::test]
    async fn chunked_request_bodies_are_held_to_crlf_lines_and_clean_trailers() {
        let addr = server(LIMITS).await;
        let cases: [(&[u8], &str); 4] = [
            // A bare LF in an extension, which another parser may take for
            // the line's end.
            (
                b"3;\nGET /smuggled HTTP/1.1\r\nabc\r\n0\r\n\r\n",
                "malformed chunk size in the request body",
            ),
            (
                b"3;x=\x01\r\nabc\r\n0\r\n\r\n",
                "malformed chunk size in the request body",
            ),
            (
                b"3\r\nabc\r\n0\r\nGET /admin HTTP/1.1\r\n\x01 junk\n\n",
                "malformed request trailers",
            ),
            (
                b"3\r\nabc\r\n0\r\nX-Ok: 1\n\n",
                "malformed request trailers",
            ),
        ];
        for (body, error) in cases {
            let mut request =
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
            request.extend_from_slice(body);
            let got = exchange(addr, &request).await;
            assert!(got.ends_with(&format!("error: {error}")), "{got}");
        }
        let mut big =
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        for i in 0..2000 {
            big.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        let got = exchange(addr, &big).await;
        assert!(got.ends_with("error: request trailers too large"), "{got}");
    }

    #[tokio::test]
    async fn response_bodies_are_framed_for_the_client() {
        let addr = server(LIMITS).await;
        // Unknown length: chunks for HTTP/1.1, the connection's end for 1.0.
        let got = exchange(
            addr,
            b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(
            without_date(&got),
            "HTTP/1.1 200 OK\ntransfer-encoding: chunked\nconnection: close\n\n4\none,\n3\ntwo\n0\n"
        );
        let got = exchange(
            addr,
            b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
        .await;
        assert_eq!(
            without_date(&got),
            "HTTP/1.1 200 OK\nconnection: close\n\none,two"
        );
        // A 1.0 client asking to keep the connection is told it is kept.
        let got = exchange(
            addr,
            b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /l HTTP/1.0\r\n\r\n",
        )
        .await;
        assert_eq!(
            without_date(&got),
            "HTTP/1.1 200 OK\ncontent-length: 6\nconnection: keep-alive\n\nGET /k\
             HTTP/1.1 200 OK\ncontent-length: 6\nconnection: close\n\nGET /l"
        );
        // No body for a 204; a Date of the response's own is kept, one is
        // added where there is none.
        let got = exchange(
            addr,
            b"GET /nocontent HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(
            without_date(&got),
            "HTTP/1.1 204 No Content\nconnection: close\n"
        );
        assert!(
            got.contains("\r\ndate: ") && got.contains(" GMT\r\n"),
            "{got}"
        );
        let got = exchange(
            addr,
            b"GET /dated HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(got.matches("date: ").count(), 1, "{got}");
        assert!(
            got.contains("date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"),
            "{got}"
        );
        // A server's lines go on as they came, framed by their length, with
        // a Date added; a HEAD gets the same head.
        let got = exchange(
            addr,
            b"GET /passed HTTP/1.1\r\nHost: x\r\n\r\nHEAD /passed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(
            without_date(&got),
            "HTTP/1.1 202 Accepted\nX-Tenant: a\nContent-Length: 6\nset-cookie: a=1\nSet-Cookie: b=2\n\npassed\
             HTTP/1.1 202 Accepted\nX-Tenant: a\nContent-Length: 6\nset-cookie: a=1\nSet-Cookie: b=2\nconnection: close\n"
        );
        assert_eq!(got.matches("\r\ndate: ").count(), 2, "{got}");
    }

    #[tokio::test]
    async fn an_unread_body_ends_the_connection_after_a_whole_answer() {
        let addr = server(LIMITS).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Part of a body the answer does not wait for; the rest never comes.
        let mut request =
            b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'a', 100 * 1024));
        s.write_all(&request).await.unwrap();
        // The answer is written and the connection ended meanwhile; a close
        // with those bytes unread would reset it, and the answer be lost.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        let got = String::from_utf8_lossy(&out);
        assert!(matches!(read, Ok(Ok(_))), "{read:?}: {got}");
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\nignored"), "{got}");
        // The head says the connection ends: the body was given back unread.
        assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
        // Ended by its write half first, the connection still takes what the
        // client sends for a while (RFC 9112 §9.6): a closed one answers it
        // with a reset, and the next write fails.
        assert_still_read(&mut s).await;
    }

    #[tokio::test]
    async fn requests_whose_length_is_in_doubt_are_refused_with_the_reason() {
        let addr = server(LIMITS).await;
        let cases: [(&[u8], &str); 8] = [
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
             "400 Bad Request|both Transfer-Encoding and Content-Length"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
             "400 Bad Request|conflicting Content-Lengths"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
             "400 Bad Request|malformed Content-Length"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
             "501 Not Implemented|only the chunked transfer coding is taken"),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
             "400 Bad Request|Transfer-Encoding in an HTTP/1.0 request"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n",
             "417 Expectation Failed|only Expect: 100-continue is taken"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
             "400 Bad Request|malformed request head: invalid header name"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
             "431 Request Header Fields Too Large|request head larger than 100 bytes"),
        ];
        let small = server(Limits {
            max_header_bytes: 100,
            ..LIMITS
        })
        .await;
        for (request, expected) in cases {
            let (status, reason) = expected.split_once('|').unwrap();
            let to = if status.starts_with("431") {
                small
            } else {
                addr
            };
            let got = exchange(to, request).await;
            assert!(got.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{got}");
            assert!(got.contains("connection: close\r\n"), "{got}");
            assert!(got.ends_with(&format!("\r\n\r\n{reason}\n")), "{got}");
        }
        // A refused client's further bytes are read, not reset.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\nbody")
            .await
            .unwrap();
        assert!(read_to_end(&mut s).await.starts_with("HTTP/1.1 400 "));
        assert_still_read(&mut s).await;
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let got = exchange(
            addr,
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
        assert!(got.ends_with("more than 100 request headers\n"), "{got}");
    }

    #[tokio::test]
    async fn a_slow_head_and_an_idle_connection_are_closed_after_the_header_timeout() {
        let addr = server(Limits {
            header_timeout: Duration::from_millis(200),
            ..LIMITS
        })
        .await;
        // Half a head: closed, without an answer.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        assert!(matches!(closed, Ok(Ok(0))), "{closed:?} {out:?}");
        // Idle after an answer: closed as well.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        assert!(matches!(closed, Ok(Ok(_))), "{closed:?}");
        assert!(String::from_utf8_lossy(&out).ends_with("GET /one"));
    }

    #[tokio::test]
    async fn a_request_body_is_held_to_the_body_timeout_between_pieces_not_in_all() {
        let addr = server(Limits {
            body_timeout: Duration::from_millis(300),
            ..LIMITS
        })
        .await;
        // Six pieces 100 ms apart: twice the limit in all, never still for it.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        for piece in [b"a", b"b", b"c", b"d", b"e", b"f"] {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.write_all(piece).await.unwrap();
        }
        let answer = read_to_end(&mut s).await;
        assert!(answer.ends_with("\r\n\r\nabcdef"), "{answer}");

        // Three bytes of ten, then nothing: the reader is told, and the
        // connection ends after the answer.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(matches!(closed, Ok(Ok(_))), "not closed: {closed:?}");
        let answer = String::from_utf8_lossy(&out);
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(
            answer.ends_with("error: no request body bytes for 0.3s"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn a_chunked_body_read_to_its_end_is_not_waiting_for_its_client() {
        let addr = server(LIMITS).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /progress HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n")
            .await
            .unwrap();
        // The last chunk comes a moment later, as many clients send it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"0\r\n\r\n").await.unwrap();
        let answer = read_to_end(&mut s).await;
        assert!(answer.ends_with("Ok(3) waiting=false"), "{answer}");
    }

    #[tokio::test]
    async fn a_body_asked_for_late_is_timed_from_when_it_is_waited_for() {
        let addr = server(Limits {
            body_timeout: Duration::from_millis(300),
            ..LIMITS
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /late-echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        // A client that waits for its 100 as told, and sends at once after it.
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, CONTINUE);
        s.write_all(b"abc").await.unwrap();
        let answer = read_to_end(&mut s).await;
        assert!(answer.ends_with("\r\n\r\nabc"), "{answer}");
    }

    #[tokio::test]
    async fn a_client_that_stops_taking_its_answer_loses_the_connection() {
        let addr = server(Limits {
            body_timeout: Duration::from_millis(300),
            ..LIMITS
        })
        .await;
        let before = WRITES_TIMED_OUT.load(std::sync::atomic::Ordering::Relaxed);
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Not read for a while: the socket buffers fill and the server's
        // writes wait.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the connection was not ended");
        assert!(
            out.len() < 64 << 20,
            "the whole answer came ({} bytes)",
            out.len()
        );
        assert!(
            !out.ends_with(b"0\r\n\r\n"),
            "the answer was ended as whole"
        );
        assert_eq!(
            WRITES_TIMED_OUT.load(std::sync::atomic::Ordering::Relaxed),
            before + 1,
            "the writer did not give up for the body timeout"
        );

        // A client that reads on gets it all.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert!(matches!(read, Ok(Ok(_))), "{read:?}");
        assert!(
            out.ends_with(b"0\r\n\r\n"),
            "not whole: {} bytes",
            out.len()
        );
        assert!(out.len() > 64 << 20);
    }

    #[tokio::test]
    async fn a_connection_waiting_for_its_next_request_ends_when_the_server_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&closing);
        let served = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = ClientConn::new(stream, LIMITS, CoarseTimer::new());
            let mut answered = 0;
            while let Some((parts, body)) = conn
                .read_request(|cx| {
                    // Woken by the test's poll below.
                    cx.waker().wake_by_ref();
                    flag.load(std::sync::atomic::Ordering::Relaxed)
                })
                .await
                .unwrap()
            {
                let resp = handle(parts, body).await;
                conn.write_response(resp, false).await.unwrap();
                answered += 1;
            }
            answered
        });
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].ends_with(b"GET /"));
        closing.store(true, std::sync::atomic::Ordering::Relaxed);
        let answered = tokio::time::timeout(Duration::from_secs(2), served).await;
        assert!(matches!(answered, Ok(Ok(1))), "{answered:?}");
        let rest = read_to_end(&mut s).await;
        assert_eq!(rest, "");
    }

    #[test]
    fn request_heads_are_parsed_with_their_framing_and_keep_alive() {
        let parse = |raw: &str| {
            let mut buf = BytesMut::from(raw);
            parse_request(&mut buf, 4096).map(|p| {
                p.map(|(parts, framing, asked, expect)| {
                    (
                        parts,
                        framing,
                        asked.keep_alive,
                        asked.head,
                        expect,
                        buf.len(),
                    )
                })
            })
        };
        let (parts, framing, keep, head, expect, left) =
            parse("GET /p?q=1 HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r\nX-A: 2\r\n\r\nNEXT")
                .unwrap()
                .unwrap();
        assert_eq!(
            (parts.method.as_str(), parts.uri.to_string().as_str()),
            ("GET", "/p?q=1")
        );
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers.get_all("x-a").count(), 2);
        assert_eq!(
            parts.headers.get_all("host").collect::<Vec<_>>(),
            [b"a.example"]
        );
        assert_eq!(
            (framing, keep, head, expect, left),
            (None, true, false, false, 4)
        );

        let (_, framing, keep, ..) =
            parse("POST / HTTP/1.1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!((framing, keep), (Some(In::Length(10)), false));
        let (_, framing, ..) = parse("POST / HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(framing, Some(In::Chunked(Chunk::Size)));
        let (_, framing, keep, head, ..) = parse("HEAD / HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((framing, keep, head), (None, false, true));
        let (_, _, keep, _, expect, _) =
            parse("PUT / HTTP/1.0\r\nConnection: Keep-Alive\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .unwrap();
        // HTTP/1.0 has no 100 Continue.
        assert_eq!((keep, expect), (true, false));
        // `close` wins wherever it stands.
        let (_, _, keep, ..) = parse("GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!keep);
        assert!(parse("GET / HTTP/1.1\r\nHost: a").unwrap().is_none());
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n")
                .unwrap_err()
                .1,
            "malformed Content-Length"
        );
    }
}
