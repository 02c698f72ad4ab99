//! HTTP/1.1 to servers, spoken in the request's own task.
//!
//! hyper's client drives each connection from a task of its own and reaches it
//! through channels: a request is handed to that task, its response head and
//! every piece of its body handed back, each hand-over a wake-up and a poll.
//! Here the request's task writes the head (and streams the body), parses the
//! response head with httparse and reads the body straight off the connection
//! as the client takes it. Once the body's end is read, [`Reader`] gives the
//! connection back for the next request (a pool of the caller's keeps it).
//!
//! What it speaks: request bodies sent as they came (`Content-Length`) or
//! chunked, and sent on while the response comes in (a server may answer
//! before it has read the whole request); client trailers not passed on;
//! interim (1xx) responses skipped; response bodies framed by `Content-Length`,
//! chunked or read to the close, none for HEAD, 204 and 304 (RFC 9112 §6.3);
//! keep-alive unless the server says otherwise. A connection is reused only
//! once both the request and the response are whole. Upgrades (WebSocket) are
//! not spoken here (slum sends them through hyper's client).
//!
//! The connection is any [`Transport`]: plain TCP, or TLS over it, as long as
//! the TCP socket can be reached for its options.
//!
//! ## Quick acknowledgement
//!
//! tenement 0.2.1 does not set `TCP_NODELAY` on the connections it accepts: when
//! a response's body is not ready with its head, it writes the two as two
//! segments, and Nagle's algorithm holds the body back until the head is
//! acknowledged. Linux delays that acknowledgement (up to 40 ms) once a
//! connection looks interactive, which a keep-alive connection carrying request
//! after response does. Such a response then waits up to 40 ms: a client alone
//! on a connection sees p99 above 40 ms and, depending on how many answers
//! stall, 25 to 1,400 requests a second.
//!
//! So when the router is about to wait for the rest of a response it has begun
//! to read (its head cut short, or its body), it switches `TCP_QUICKACK` on:
//! the delayed acknowledgement goes at once, and the kernel keeps acknowledging
//! until the next request. A response that arrived whole (the common case under
//! load, when tenement has the body ready with the head) costs nothing.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::Body;
use hyper::Method;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::chunked::Chunk;
use crate::head::{RequestHead, ResponseHead};

mod reader;
mod response;
mod upload;

pub use reader::Reader;
use response::Head;
pub(crate) use response::{parse_head, Parsed};
use upload::{encode_head, send_on, Upload};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to a server as the client side needs it: bytes both ways, and
/// the TCP socket under any TLS, for the one option it sets (quick
/// acknowledgement, see the module's documentation).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP connection under any TLS.
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// The most a response head may take.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// What a read asks for at least; a smaller remainder of the buffer is grown.
const READ_SPACE: usize = 8 * 1024;
/// The growth when the buffer runs short midway through an answer.
const READ_RESERVE: usize = 32 * 1024;

/// An HTTP/1.1 connection to a server, and the bytes read off it that belong
/// to the next message.
pub struct Conn<T> {
    io: T,
    buf: BytesMut,
    /// The request head is built here; kept for the next request.
    head: Vec<u8>,
    /// Quick acknowledgement is on for the response being read.
    acked: bool,
    /// Something of an answer to the current request has been read.
    read_any: bool,
}

impl<T> fmt::Debug for Conn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// How an exchange failed, in words for the client's 502.
#[derive(Debug)]
pub enum ExchangeError {
    Io(io::Error),
    /// The server's bytes are not HTTP/1.1 as the router reads it.
    Protocol(String),
    /// The client's request body broke off.
    RequestBody(BoxError),
    /// The server closed the connection before any of a response.
    Closed,
}

impl ExchangeError {
    /// Whether the server closed or reset the connection before answering
    /// anything: on a reused connection, it had closed it while idle.
    pub fn nothing_read(&self) -> bool {
        match self {
            ExchangeError::Closed => true,
            ExchangeError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Io(e) => write!(f, "{e}"),
            ExchangeError::Protocol(what) => write!(f, "{what}"),
            ExchangeError::RequestBody(e) => write!(f, "the client's request body failed: {e}"),
            ExchangeError::Closed => write!(f, "connection closed before a response"),
        }
    }
}

impl std::error::Error for ExchangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExchangeError::Io(e) => Some(e),
            ExchangeError::RequestBody(e) => Some(&**e),
            ExchangeError::Protocol(_) | ExchangeError::Closed => None,
        }
    }
}

impl From<io::Error> for ExchangeError {
    fn from(e: io::Error) -> Self {
        ExchangeError::Io(e)
    }
}

impl From<crate::chunked::Malformed> for ExchangeError {
    fn from(e: crate::chunked::Malformed) -> Self {
        ExchangeError::Protocol(e.to_string())
    }
}

fn protocol(what: impl Into<String>) -> ExchangeError {
    ExchangeError::Protocol(what.into())
}

/// How a message's body is delimited, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes.
    Length(u64),
    /// Chunked: where the decoder stands.
    Chunked(Chunk),
    /// Until the server closes the connection.
    Close,
}

impl<T: Transport> Conn<T> {
    /// Boxed: a connection (TLS state and all) is large, and moves between
    /// the pool, the exchange and the response body.
    pub fn new(io: T) -> Box<Conn<T>> {
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            acked: false,
            read_any: false,
        })
    }

    /// Whether the connection can carry a request: the server has not closed
    /// it, nor sent anything unasked. Looks without waiting, and without a
    /// system call when nothing arrived since the last read.
    pub fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        // Outside tokio's budget: a task that has spent it would be told
        // "pending" whatever the socket holds.
        let probe = tokio::task::unconstrained(std::future::poll_fn(|cx| {
            let mut probe = tokio::io::ReadBuf::new(&mut byte);
            Pin::new(&mut self.io).poll_read(cx, &mut probe)
        }));
        futures::FutureExt::now_or_never(probe).is_none()
    }

    /// Frees what only a request in progress needs: the read buffer (8 KB
    /// or more once a response was read) when nothing is in it, and the last
    /// request's head. The next request allocates them again. For a pool's
    /// connections that have waited a while: a router keeps some to each of
    /// a thousand servers, and with their buffers they would hold tens of
    /// megabytes for nothing.
    pub fn release_buffers(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        self.head = Vec::new();
    }

    /// The bytes its buffers hold allocated now.
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity() + self.head.capacity()
    }

    /// Sends the request (`request` with Host and the rest already as the
    /// server is to see them; origin-form URI) and reads up to the response
    /// head. `body` is streamed while the head is awaited. The response's
    /// body is read through the returned [`Reader`].
    pub async fn exchange<B>(
        mut self: Box<Self>,
        request: &RequestHead,
        body: Option<B>,
    ) -> Result<(ResponseHead, Reader<T>), ExchangeError>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let body = body.filter(|b| !b.is_end_stream());
        let framing = match &body {
            None => None,
            Some(b) => match (
                request.headers.contains("content-length"),
                b.size_hint().exact(),
            ) {
                (true, Some(n)) => Some(Framing::Length(n)),
                _ => Some(Framing::Chunked(Chunk::Size)),
            },
        };
        self.acked = false;
        encode_head(
            &mut self.head,
            request,
            matches!(framing, Some(Framing::Chunked(_))),
        );
        let mut upload = Some(Upload::new(body.zip(framing)));
        let expects_body = request.method != Method::HEAD;
        self.read_any = false;
        // The upload goes on while the head is awaited, and after it (in the
        // body's reader): a server may answer before it has read the whole
        // request.
        let mut upload_failed = None;
        let head = std::future::poll_fn(|cx| {
            match send_on(&mut upload, &mut self, cx) {
                Err(e) => return Poll::Ready(Err(e)),
                Ok(Some(write)) => upload_failed = Some(write),
                Ok(None) => {}
            }
            self.poll_head(cx, expects_body).map_err(|e| {
                // With nothing read, what broke the upload says more than
                // the broken read.
                match (self.read_any, upload_failed.take()) {
                    (false, Some(write)) => write,
                    _ => e,
                }
            })
        })
        .await;
        let Head {
            response,
            framing,
            keep_alive,
        } = match head {
            Ok(head) => head,
            // Part of an answer came (an interim response, or some of the
            // head): the request may have been acted on.
            Err(e) if self.read_any && e.nothing_read() => {
                return Err(protocol(format!("{e}, after part of a response")))
            }
            Err(e) => return Err(e),
        };
        let reader = Reader::new(self, framing, keep_alive && upload_failed.is_none(), upload);
        Ok((response, reader))
    }

    /// Reads until a final response head is in, and parses it: the head, how
    /// its body is framed, and whether the connection may carry another request.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        expects_body: bool,
    ) -> Poll<Result<Head, ExchangeError>> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, expects_body)? {
                    Parsed::Partial => {}
                    Parsed::Interim => continue,
                    Parsed::Final(head) => return Poll::Ready(Ok(head)),
                }
            }
            let midway = !self.buf.is_empty();
            let n = ready!(self.poll_fill(cx, midway))?;
            self.read_any |= n > 0;
            if n == 0 {
                return Poll::Ready(Err(match self.buf.is_empty() {
                    true => ExchangeError::Closed,
                    false => protocol("connection closed in the response head"),
                }));
            }
        }
    }

    /// Reads what the connection has into the buffer: how many bytes (0 at its
    /// end). When nothing is there and the read is `midway` through a response,
    /// quick acknowledgement goes on (see the module's documentation).
    fn poll_fill(&mut self, cx: &mut Context<'_>, midway: bool) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SPACE {
            // An answer starts in the least a read asks for (most fit, and
            // an empty buffer of that size is reused in place); one that
            // does not grows by more at a time.
            let grow = match self.buf.is_empty() {
                true => READ_SPACE,
                false => READ_RESERVE,
            };
            self.buf.reserve(grow);
        }
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
        if read.is_pending() && midway && !self.acked {
            self.acked = true;
            // Only a latency matter: a socket that refuses keeps working.
            let _ = socket2::SockRef::from(self.io.tcp()).set_tcp_quickack(true);
        }
        read
    }
}

#[cfg(test)]
mod tests;
