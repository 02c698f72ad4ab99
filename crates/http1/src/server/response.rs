//! Answers written to the client: the head and the body in as few writes as
//! the body allows (a body that is ready goes out with its head), framed by
//! its `Content-Length`, its exact size, chunks or, for an HTTP/1.0 client,
//! the connection's end; a `Date` added where there is none; and a client
//! that stops taking its answer for the body timeout loses its connection.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::{self, HeaderMap};
use hyper::{Response, StatusCode};
use tokio::io::AsyncWrite;
use tokio::time::Instant;

use super::{ClientConn, ClientStream};
use crate::chunked::LAST_CHUNK;
use crate::codec::{parse_length, push_line, RawHeaders};
use crate::lock;
use crate::timer::{after, CoarseSleep, CoarseTimer};

/// Body pieces up to this size are copied after the head (or the chunk
/// framing) and written with it, while what is copied stays under it too;
/// larger ones are written on their own.
const COPY_LIMIT: usize = 16 * 1024;

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
pub trait HeaderLines {
    /// The `Content-Length` given, if any; an [`io::ErrorKind::InvalidData`]
    /// error if it is not a number.
    fn content_length(&self) -> io::Result<Option<u64>>;
    fn has_date(&self) -> bool;
    /// Appends the header lines, each ending in CRLF.
    fn encode(&self, out: &mut Vec<u8>);
}

impl HeaderLines for HeaderMap {
    fn content_length(&self) -> io::Result<Option<u64>> {
        let malformed = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed response Content-Length",
            )
        };
        self.get(header::CONTENT_LENGTH)
            .map(|v| parse_length(v.as_bytes()).ok_or_else(malformed))
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
    fn content_length(&self) -> io::Result<Option<u64>> {
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

impl<S: ClientStream> ClientConn<S> {
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
    pub async fn write_answer<B>(
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
        let unread = self.read.is_none() && matches!(lock(&self.back).back, Some((_, false)));
        let mut keep_alive = self.asked.keep_alive && !closing && !unread;
        let no_content = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let bodiless = no_content || self.asked.head;
        let length = headers.content_length()?;
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
        // A `100 Continue` half written goes out whole first; none after.
        let begun = self.settle_continue();
        self.out.extend_from_slice(begun);
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
        let body_unread = self.read.is_none() && !matches!(lock(&self.back).back, Some((_, true)));
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

    pub(super) async fn flush(&mut self) -> io::Result<()> {
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
    write: &mut (impl AsyncWrite + Unpin),
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
                    let deadline = *deadline.get_or_insert_with(|| after(timer.now(), limit));
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

/// The `Date` header for now, formatted once a second per thread.
pub(super) fn push_date(out: &mut Vec<u8>, timer: &CoarseTimer) {
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
