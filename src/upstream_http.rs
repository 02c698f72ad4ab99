//! HTTP/1.1 to tenement servers, spoken in the request's own task.
//!
//! hyper's client drives each connection from a task of its own and reaches it
//! through channels: a request is handed to that task, its response head and
//! every piece of its body handed back, each hand-over a wake-up and a poll. The
//! router sends most requests here instead: the request's task writes the head
//! (and streams the body), parses the response head with httparse and reads the
//! body straight off the connection as the client takes it. The connection goes
//! back to its pool when the body's end is read (see
//! [`upstream_pool`](crate::upstream_pool)).
//!
//! What it speaks: request bodies sent as they came (`Content-Length`) or
//! chunked, and sent on while the response comes in (a server may answer
//! before it has read the whole request); client trailers not passed on;
//! interim (1xx) responses skipped; response bodies framed by `Content-Length`,
//! chunked or read to the close, none for HEAD, 204 and 304 (RFC 9112 §6.3);
//! keep-alive unless the server says otherwise. A connection is reused only
//! once both the request and the response are whole. Upgrades (WebSocket) stay
//! with hyper's client.
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
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::{Body, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to a server, in tokio's terms.
pub type Io = TokioIo<hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>>;

/// The most a response head may take.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header lines a message head may have (a request's too).
pub(crate) const MAX_HEADERS: usize = 100;
/// What a read asks for at least; a smaller remainder of the buffer is grown.
const READ_SPACE: usize = 8 * 1024;
/// The growth when the buffer runs short.
const READ_RESERVE: usize = 32 * 1024;

/// An HTTP/1.1 connection to a server, and the bytes read off it that belong
/// to the next message.
pub struct Conn {
    io: Io,
    buf: BytesMut,
    /// The request head is built here; kept for the next request.
    head: Vec<u8>,
    /// Quick acknowledgement is on for the response being read.
    acked: bool,
    /// Something of an answer to the current request has been read.
    read_any: bool,
}

impl fmt::Debug for Conn {
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

/// The chunked decoder's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk, at a trailer line or the final CRLF; this many
    /// bytes of trailers passed.
    Trailers(usize),
}

impl Conn {
    /// Boxed: a connection (TLS state and all) is large, and moves between
    /// the pool, the exchange and the response body.
    pub fn new(io: Io) -> Box<Conn> {
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

    /// Sends the request (`parts` with Host and the rest already as the server
    /// is to see them; origin-form URI) and reads up to the response head.
    /// `body` is streamed while the head is awaited. The response's body is
    /// read through the returned [`Reader`].
    pub async fn exchange<B>(
        mut self: Box<Self>,
        request: &RequestHead,
        body: Option<B>,
    ) -> Result<(ResponseHead, Reader), ExchangeError>
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
        let mut upload = Some(Upload {
            head: Some(0),
            body: body.zip(framing),
            piece: Bytes::new(),
        });
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
        let reader = Reader {
            conn: Some(self),
            framing,
            keep_alive: keep_alive && upload_failed.is_none(),
            // Boxed only when some of it is left, which is seldom.
            upload: upload.map(|u| Box::new(u) as Box<dyn Sending>),
        };
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
                if self.buf.len() >= MAX_HEAD_BYTES {
                    return Poll::Ready(Err(protocol(format!(
                        "response head larger than {} KiB",
                        MAX_HEAD_BYTES / 1024
                    ))));
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
            self.buf.reserve(READ_RESERVE);
        }
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
        if read.is_pending() && midway && !self.acked {
            self.acked = true;
            // Only a latency matter: a socket that refuses keeps working.
            let _ = socket2::SockRef::from(self.tcp()).set_tcp_quickack(true);
        }
        read
    }

    /// The TCP connection under any TLS.
    fn tcp(&self) -> &TcpStream {
        match self.io.inner() {
            hyper_rustls::MaybeHttpsStream::Http(tcp) => tcp.inner(),
            hyper_rustls::MaybeHttpsStream::Https(tls) => tls.inner().get_ref().0.inner().inner(),
        }
    }
}

/// Writes all of `data` to `io`, taking off what is written.
fn poll_write_all(io: &mut Io, cx: &mut Context<'_>, data: &mut impl Buf) -> Poll<io::Result<()>> {
    while data.has_remaining() {
        let n = ready!(Pin::new(&mut *io).poll_write(cx, data.chunk()))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        data.advance(n);
    }
    Poll::Ready(Ok(()))
}

/// The request's way out: its head, then its body.
struct Upload<B> {
    /// How much of the head is written; `None` once it all is.
    head: Option<usize>,
    body: Option<(B, Framing)>,
    /// The part of a body frame (or of its chunk framing, or of the last
    /// chunk) not yet written.
    piece: Bytes,
}

/// A request body on its way out, whatever its type.
trait Sending: Send {
    /// Writes on until everything is sent (and flushed).
    fn poll_send(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>>;
}

impl Sending for Box<dyn Sending> {
    fn poll_send(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        (**self).poll_send(conn, cx)
    }
}

/// Sends `upload` on, if any is left, and drops it once done. `Err`: the
/// client's body broke off. `Ok(Some(_))`: a write failed, which ends the
/// upload but not the exchange (the server may have answered, and stopped
/// reading because it did).
fn send_on<S: Sending>(
    upload: &mut Option<S>,
    conn: &mut Conn,
    cx: &mut Context<'_>,
) -> Result<Option<ExchangeError>, ExchangeError> {
    let Some(sending) = upload else {
        return Ok(None);
    };
    let Poll::Ready(sent) = sending.poll_send(conn, cx) else {
        return Ok(None);
    };
    *upload = None;
    match sent {
        Ok(()) => Ok(None),
        Err(e @ ExchangeError::RequestBody(_)) => Err(e),
        Err(write) => Ok(Some(write)),
    }
}

impl<B> Sending for Upload<B>
where
    B: Body<Data = Bytes> + Unpin + Send,
    B::Error: Into<BoxError>,
{
    fn poll_send(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        if let Some(at) = &mut self.head {
            let mut rest = &conn.head[*at..];
            let written = poll_write_all(&mut conn.io, cx, &mut rest);
            *at = conn.head.len() - rest.len();
            ready!(written)?;
            self.head = None;
        }
        loop {
            ready!(poll_write_all(&mut conn.io, cx, &mut self.piece))?;
            let Some((body, framing)) = &mut self.body else {
                break;
            };
            // Flushed before waiting for the client (a TLS stream holds what
            // it was given).
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => {
                    ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(frame) => frame,
            };
            match (frame, *framing) {
                (Some(Err(e)), _) => return Poll::Ready(Err(ExchangeError::RequestBody(e.into()))),
                (Some(Ok(frame)), Framing::Length(_)) => {
                    if let Ok(data) = frame.into_data() {
                        self.piece = data;
                    }
                }
                (Some(Ok(frame)), _) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        // Size line, data and CRLF: one piece.
                        let mut chunk = BytesMut::with_capacity(data.len() + 20);
                        chunk.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        chunk.put_slice(&data);
                        chunk.put_slice(b"\r\n");
                        self.piece = chunk.freeze();
                    }
                    // Trailers (the last frame) are not passed on, nor were
                    // they by hyper's client unless announced: the router has
                    // not vetted them as it does the head's forwarding headers.
                    Err(_) => {
                        self.piece = Bytes::from_static(LAST_CHUNK);
                        self.body = None;
                    }
                },
                (None, Framing::Length(_)) => self.body = None,
                (None, _) => {
                    self.piece = Bytes::from_static(LAST_CHUNK);
                    self.body = None;
                }
            }
        }
        ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }
}

/// A chunked body's end: the last chunk, without trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The request line and headers as they go on the wire.
fn encode_head(dst: &mut Vec<u8>, request: &RequestHead, chunked: bool) {
    dst.clear();
    dst.extend_from_slice(request.method.as_str().as_bytes());
    dst.push(b' ');
    let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers.iter() {
        if chunked && name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        push_line(dst, name, value);
    }
    for (name, value) in &request.set {
        push_line(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    if chunked {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

/// `name: value` and CRLF.
pub(crate) fn push_line(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

enum Parsed {
    /// The head is not all in yet.
    Partial,
    /// An interim (1xx) response was taken off the buffer: the final follows.
    Interim,
    Final(Head),
}

/// A final response head as parsed.
struct Head {
    response: ResponseHead,
    /// How its body is framed; `None`: it has none.
    framing: Option<Framing>,
    /// Whether the connection may carry another request after it.
    keep_alive: bool,
}

/// A response head as the server sent it. Its headers stay the head's bytes:
/// the router passes them on as they are, less the hop-by-hop ones, and
/// building a header map of them cost more than the rest of the head's way
/// through (names validated and hashed, a custom one copied).
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: RawHeaders,
}

/// Header lines as they came: names and values as sent, in their order.
/// httparse has checked them (names are tokens, values hold no control
/// bytes but tab).
#[derive(Debug, Clone, Default)]
pub struct RawHeaders {
    head: Bytes,
    spans: Vec<Span>,
    /// The `Content-Length` the body is framed by, if any.
    length: Option<u64>,
}

impl RawHeaders {
    /// The headers, in order: name (as sent, any case) and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|s| (&self.head[s.name()], &self.head[s.value()]))
    }

    /// The values of the header called `name` (lower case), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Whether there is a header called `name` (lower case).
    pub fn contains(&self, name: &str) -> bool {
        self.get_all(name).next().is_some()
    }

    /// Keeps the headers `keep` says yes to. A `Content-Length` taken out is
    /// no longer the body's framing.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let head = &self.head;
        self.spans.retain(|s| keep(&head[s.name()]));
        if self.length.is_some() && !self.contains("content-length") {
            self.length = None;
        }
    }

    /// The `Content-Length` the body is framed by: `None` when there is none,
    /// or when the body is chunked (its `Content-Length`, if any, is gone).
    pub fn content_length(&self) -> Option<u64> {
        self.length
    }

    /// The header lines as they go on the wire, each ending in CRLF.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for (name, value) in self.iter() {
            push_line(out, name, value);
        }
    }

    /// `value`, one of the values [`iter`](Self::iter) gave, as a header
    /// value that shares the head's bytes.
    pub fn shared(&self, value: &[u8]) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.head.slice_ref(value)).ok()
    }

    /// Header lines parsed from `head`'s bytes at `spans`.
    pub(crate) fn new(head: Bytes, spans: Vec<Span>, length: Option<u64>) -> RawHeaders {
        RawHeaders {
            head,
            spans,
            length,
        }
    }
}

/// A request as it goes to a server: its request line, the client's header
/// lines passed on as they came, and the lines the router sets in place of
/// some of them (Host, the forwarding headers). Kept as lines for the reason
/// a response's are (see [`ResponseHead`]).
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    /// The client's header lines.
    pub headers: RawHeaders,
    /// Lines written after the client's.
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl RequestHead {
    /// Sets `name` among the router's lines, in place of any value it had
    /// there.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        match self.set.iter_mut().find(|(n, _)| *n == name) {
            Some(line) => line.1 = value,
            None => self.set.push((name, value)),
        }
    }

    /// All the lines, as a header map (for hyper's client, which carries
    /// upgrades). The error names a line that is not a valid header.
    pub fn header_map(&self) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::with_capacity(self.headers.spans.len() + self.set.len());
        for (name, value) in self.headers.iter() {
            let name = HeaderName::from_bytes(name).map_err(|_| {
                format!("malformed header name '{}'", String::from_utf8_lossy(name))
            })?;
            let value = self
                .headers
                .shared(value)
                .ok_or_else(|| format!("malformed value of header '{name}'"))?;
            map.append(name, value);
        }
        for (name, value) in &self.set {
            map.append(name.clone(), value.clone());
        }
        Ok(map)
    }
}

/// Where a header's name and value lie in a message head (byte offsets): the
/// header map's values become slices of the head, not copies.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    pub(crate) fn name(&self) -> std::ops::Range<usize> {
        self.name.0 as usize..self.name.1 as usize
    }

    pub(crate) fn value(&self) -> std::ops::Range<usize> {
        self.value.0 as usize..self.value.1 as usize
    }
}

/// Where `part`, a slice of `buf`'s first `len` bytes, lies in it (empty if
/// it is not there).
pub(crate) fn span_of(buf: &[u8], len: usize, part: &[u8]) -> (u32, u32) {
    (part.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .filter(|at| at + part.len() <= len)
        .and_then(|at| {
            Some((
                u32::try_from(at).ok()?,
                u32::try_from(at + part.len()).ok()?,
            ))
        })
        .unwrap_or((0, 0))
}

/// The spans of `headers`, parsed from `buf`'s first `len` bytes, into
/// `spans`; returns how many.
pub(crate) fn header_spans(
    buf: &[u8],
    len: usize,
    headers: &[httparse::Header<'_>],
    spans: &mut [Span],
) -> usize {
    for (slot, h) in spans.iter_mut().zip(headers) {
        *slot = Span {
            name: span_of(buf, len, h.name.as_bytes()),
            value: span_of(buf, len, h.value),
        };
    }
    headers.len().min(spans.len())
}

/// A `Content-Length` value: digits only (a sign, as in `+2`, is not).
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The comma-separated tokens of a header value (as of `Connection`); none
/// if it is not ASCII.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(value)
        .ok()
        .filter(|v| v.is_ascii())
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
}

/// Parses the response head at the start of `buf`, taking it off when whole.
fn parse_head(buf: &mut BytesMut, expects_body: bool) -> Result<Parsed, ExchangeError> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(protocol(format!("malformed response head: {e}"))),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| protocol(format!("response status {code} is not valid")))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(protocol("switched protocols unasked"));
        }
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut spans = vec![Span::default(); response.headers.len()];
    header_spans(buf, len, response.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut keep_alive = version == Version::HTTP_11;
    for span in &spans {
        let (name, value) = (&head[span.name()], &head[span.value()]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value)
                .ok_or_else(|| protocol("malformed Content-Length in the response"))?;
            if length.is_some_and(|l| l != n) {
                return Err(protocol("conflicting Content-Lengths in the response"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked only when it is the last coding.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == Version::HTTP_10 {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if !expects_body
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        None
    } else {
        match (chunked, length) {
            (Some(true), _) => Some(Framing::Chunked(Chunk::Size)),
            (Some(false), _) => Some(Framing::Close),
            (None, Some(n)) => Some(Framing::Length(n)),
            (None, None) => Some(Framing::Close),
        }
    };
    // A body that ends with the connection, a length given twice over, or a
    // transfer coding from HTTP/1.0 (which has none, RFC 9112 §6.1) leaves
    // nothing to reuse.
    if matches!(framing, Some(Framing::Close))
        || (chunked.is_some() && (length.is_some() || version == Version::HTTP_10))
    {
        keep_alive = false;
    }
    let mut headers = RawHeaders {
        head,
        spans,
        length,
    };
    // A transfer coding overrides a length, which is not passed on (RFC 9112
    // §6.3; taking out its lines forgets it).
    if chunked.is_some() && length.is_some() {
        headers.retain(|name| !name.eq_ignore_ascii_case(b"content-length"));
    }
    Ok(Parsed::Final(Head {
        response: ResponseHead {
            status,
            version,
            headers,
        },
        framing,
        keep_alive,
    }))
}

/// A response body as it comes off the connection, while the rest of the
/// request body (if any) goes on being sent. Its connection can be taken back
/// once both are done.
pub struct Reader {
    conn: Option<Box<Conn>>,
    framing: Option<Framing>,
    /// The server lets the connection carry another request.
    keep_alive: bool,
    /// The rest of the request body, still being sent.
    upload: Option<Box<dyn Sending>>,
}

impl Reader {
    /// Whether the whole body has been read.
    pub fn is_end(&self) -> bool {
        matches!(self.framing, None | Some(Framing::Length(0)))
    }

    /// The connection, once the body is read to its end, if it can be used
    /// again: kept alive, the request sent whole, nothing left unread.
    pub fn take_reusable(&mut self) -> Option<Box<Conn>> {
        let clean = self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        match self.is_end() && self.keep_alive && self.upload.is_none() && clean {
            true => self.conn.take(),
            false => None,
        }
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.framing {
            None => SizeHint::with_exact(0),
            Some(Framing::Length(n)) => SizeHint::with_exact(n),
            Some(_) => SizeHint::default(),
        }
    }

    /// The next piece of the body; `None` at its end.
    pub fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, ExchangeError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match send_on(&mut self.upload, conn, cx) {
            Err(e) => {
                self.conn = None;
                return Poll::Ready(Some(Err(e)));
            }
            // The server stopped reading; its answer may still be whole.
            Ok(Some(_)) => self.keep_alive = false,
            Ok(None) => {}
        }
        loop {
            let Some(framing) = self.framing else {
                return Poll::Ready(None);
            };
            if !conn.buf.is_empty() {
                match framing {
                    Framing::Length(0) => {
                        // Bytes after the body no request asked for.
                        self.keep_alive = false;
                        self.framing = None;
                        return Poll::Ready(None);
                    }
                    Framing::Length(left) => {
                        let n = left.min(conn.buf.len() as u64);
                        self.framing = Some(Framing::Length(left - n));
                        return Poll::Ready(Some(Ok(conn.buf.split_to(n as usize).freeze())));
                    }
                    Framing::Close => {
                        return Poll::Ready(Some(Ok(conn.buf.split().freeze())));
                    }
                    Framing::Chunked(chunk) => {
                        match decode_chunked(&mut conn.buf, chunk, "response")? {
                            Decoded::Data(data, next) => {
                                self.framing = Some(Framing::Chunked(next));
                                return Poll::Ready(Some(Ok(data)));
                            }
                            Decoded::Moved(next) => {
                                self.framing = Some(Framing::Chunked(next));
                                continue;
                            }
                            Decoded::End => {
                                self.framing = None;
                                return Poll::Ready(None);
                            }
                            Decoded::NeedMore => {}
                        }
                    }
                }
            } else if framing == Framing::Length(0) {
                self.framing = None;
                return Poll::Ready(None);
            }
            let n = match ready!(conn.poll_fill(cx, true)) {
                Ok(n) => n,
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            };
            if n == 0 {
                self.conn = None;
                return Poll::Ready(match framing {
                    Framing::Close => {
                        self.framing = None;
                        None
                    }
                    _ => Some(Err(protocol("connection closed in the response body"))),
                });
            }
        }
    }
}

pub(crate) enum Decoded {
    Data(Bytes, Chunk),
    /// Framing consumed; the decoder moved on.
    Moved(Chunk),
    End,
    NeedMore,
}

/// One step of decoding a chunked body at the start of `buf`.
/// The longest chunk-size line taken (extensions included).
const MAX_SIZE_LINE: usize = 1024;
/// The most trailer bytes a chunked body may end with.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// A control byte other than tab: not allowed in a line's content.
fn is_control(b: u8) -> bool {
    b.is_ascii_control() && b != b'\t'
}

/// `whose`: the message's side, for the errors ("request" or "response").
pub(crate) fn decode_chunked(
    buf: &mut BytesMut,
    at: Chunk,
    whose: &str,
) -> Result<Decoded, ExchangeError> {
    match at {
        // httparse takes an empty size line for 0: a size must have a digit.
        Chunk::Size if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => Err(protocol(
            format!("malformed chunk size in the {whose} body"),
        )),
        Chunk::Size => {
            // The line must end in CRLF and hold no control bytes: a bare LF
            // in an extension, taken for the line's end by one parser and not
            // by another, would split the body two ways (request smuggling).
            let Some(end) = buf.iter().take(MAX_SIZE_LINE).position(|b| *b == b'\n') else {
                return match buf.len() < MAX_SIZE_LINE {
                    true => Ok(Decoded::NeedMore),
                    false => Err(protocol(format!(
                        "malformed chunk size in the {whose} body"
                    ))),
                };
            };
            let clean = buf[..end]
                .strip_suffix(b"\r")
                .is_some_and(|line| !line.iter().any(|b| is_control(*b)));
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((len, 0))) if clean => {
                    buf.advance(len);
                    Ok(Decoded::Moved(Chunk::Trailers(0)))
                }
                Ok(httparse::Status::Complete((len, size))) if clean => {
                    buf.advance(len);
                    Ok(Decoded::Moved(Chunk::Data(size)))
                }
                _ => Err(protocol(format!(
                    "malformed chunk size in the {whose} body"
                ))),
            }
        }
        Chunk::Data(left) => {
            let n = left.min(buf.len() as u64);
            let data = buf.split_to(n as usize).freeze();
            let next = match left - n {
                0 => Chunk::DataEnd,
                more => Chunk::Data(more),
            };
            Ok(Decoded::Data(data, next))
        }
        Chunk::DataEnd => match buf.get(..2) {
            Some(b"\r\n") => {
                buf.advance(2);
                Ok(Decoded::Moved(Chunk::Size))
            }
            Some(_) => Err(protocol("chunk data longer than its size")),
            None if buf.first().is_none_or(|b| *b == b'\r') => Ok(Decoded::NeedMore),
            None => Err(protocol("chunk data longer than its size")),
        },
        // Trailer lines are checked and passed over; the empty line ends the
        // body. Lines end in CRLF, as the size lines do.
        Chunk::Trailers(seen) => {
            let malformed = || protocol(format!("malformed {whose} trailers"));
            let Some(end) = buf.iter().position(|b| *b == b'\n') else {
                return match seen + buf.len() < MAX_TRAILER_BYTES {
                    true => Ok(Decoded::NeedMore),
                    false => Err(protocol(format!("{whose} trailers too large"))),
                };
            };
            let line = buf[..end].strip_suffix(b"\r").ok_or_else(malformed)?;
            if line.is_empty() {
                buf.advance(end + 1);
                return Ok(Decoded::End);
            }
            let field = line.iter().position(|b| *b == b':').is_some_and(|colon| {
                HeaderName::from_bytes(&line[..colon]).is_ok()
                    && !line[colon + 1..].iter().any(|b| is_control(*b))
            });
            if !field {
                return Err(malformed());
            }
            let seen = seen + end + 1;
            if seen >= MAX_TRAILER_BYTES {
                return Err(protocol(format!("{whose} trailers too large")));
            }
            buf.advance(end + 1);
            Ok(Decoded::Moved(Chunk::Trailers(seen)))
        }
    }
}

#[cfg(test)]
impl ResponseHead {
    /// The final head of `raw`, read as the answer to a GET.
    pub(crate) fn parse(raw: &[u8]) -> ResponseHead {
        match parse_head(&mut BytesMut::from(raw), true) {
            Ok(Parsed::Final(head)) => head.response,
            Ok(_) => panic!("not a whole final head"),
            Err(e) => panic!("{e}"),
        }
    }
}

#[cfg(test)]
impl RequestHead {
    /// A request with these header lines.
    pub(crate) fn for_test(method: Method, uri: &str, lines: &[(&str, &str)]) -> RequestHead {
        let mut head = Vec::new();
        let mut spans = Vec::new();
        for (name, value) in lines {
            let at = |n: usize| u32::try_from(n).unwrap();
            let name_at = at(head.len());
            head.extend_from_slice(name.as_bytes());
            let name_end = at(head.len());
            head.extend_from_slice(b": ");
            let value_at = at(head.len());
            head.extend_from_slice(value.as_bytes());
            spans.push(Span {
                name: (name_at, name_end),
                value: (value_at, at(head.len())),
            });
            head.extend_from_slice(b"\r\n");
        }
        RequestHead {
            method,
            uri: uri.parse().unwrap(),
            version: Version::HTTP_11,
            headers: RawHeaders::new(Bytes::from(head), spans, None),
            set: Vec::new(),
        }
    }
}

#[cfg(test)]
impl RawHeaders {
    /// The lines, as text.
    pub(crate) fn lines(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(lines: &[(&str, &str)]) -> Vec<(String, String)> {
        lines
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn response_headers_are_kept_as_sent() {
        // Names in their case, in their order, repeated ones each in place.
        let head = ResponseHead::parse(
            b"HTTP/1.1 201 Created\r\nX-Tenant: a\r\nContent-Length: 5\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        );
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(
            head.headers.lines(),
            pairs(&[
                ("X-Tenant", "a"),
                ("Content-Length", "5"),
                ("set-cookie", "a=1"),
                ("Set-Cookie", "b=2"),
            ])
        );
        assert_eq!(head.headers.content_length(), Some(5));
        assert_eq!(
            head.headers.get_all("set-cookie").collect::<Vec<_>>(),
            [b"a=1", b"b=2"]
        );
        assert!(head.headers.contains("x-tenant"));
        assert!(!head.headers.contains("date"));

        // A transfer coding overrides a length, which goes (RFC 9112 §6.3).
        let head = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
        );
        assert_eq!(
            head.headers.lines(),
            pairs(&[("Transfer-Encoding", "chunked"), ("X-A", "1")])
        );
        assert_eq!(head.headers.content_length(), None);
    }
    use std::sync::{Arc, Mutex};

    use futures::StreamExt;
    use http_body_util::{Empty, Full, StreamBody};
    use hyper::body::Frame;
    use hyper::Uri;
    use hyper_util::client::legacy::connect::HttpConnector;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const NO_BODY: Option<Empty<Bytes>> = None;

    /// A listener on a loopback port, and its origin.
    async fn listen() -> (TcpListener, Uri) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        (listener, origin)
    }

    /// What a scripted server received, over all its connections.
    type Received = Arc<Mutex<Vec<u8>>>;

    /// A server on loopback that, on each connection, answers the next of
    /// `answers` once `until` has arrived since its last answer; with `close`,
    /// it closes the connection after each answer. Returns its origin and what
    /// it received.
    async fn scripted(
        answers: Vec<&'static [u8]>,
        until: &'static [u8],
        close: bool,
    ) -> (Uri, Received) {
        let (listener, origin) = listen().await;
        let received = Received::default();
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            'connections: loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut pending = Vec::new();
                for answer in answers.by_ref() {
                    while !pending.windows(until.len()).any(|w| w == until) {
                        let mut buf = [0u8; 4096];
                        let n = stream.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            continue 'connections;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    pending.clear();
                    stream.write_all(answer).await.unwrap();
                    if close {
                        continue 'connections;
                    }
                }
                // Out of answers: hold the connection until the client goes.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                return;
            }
        });
        (origin, received)
    }

    async fn connect(origin: &Uri) -> Box<Conn> {
        let mut connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(HttpConnector::new());
        let io = tower_service::Service::call(&mut connector, origin.clone())
            .await
            .unwrap();
        Conn::new(TokioIo::new(io))
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead::for_test(method, "/p?q=1", headers)
    }

    /// Sends `parts` and `body` on `conn`; the status, the body read whole and
    /// the connection if it can carry another request.
    async fn exchange<B>(
        conn: Box<Conn>,
        parts: &RequestHead,
        body: Option<B>,
    ) -> Result<(StatusCode, Bytes, Option<Box<Conn>>), ExchangeError>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (head, mut reader) = conn.exchange(parts, body).await?;
        let mut data = BytesMut::new();
        while let Some(piece) = std::future::poll_fn(|cx| reader.poll_data(cx)).await {
            data.extend_from_slice(&piece?);
        }
        Ok((head.status, data.freeze(), reader.take_reusable()))
    }

    fn get() -> RequestHead {
        request(Method::GET, &[("host", "t.p.s")])
    }

    #[tokio::test]
    async fn bodies_framed_by_chunks_length_or_close_are_read_whole() {
        let (origin, received) = scripted(
            vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
                b"HTTP/1.1 200 OK\r\n\r\nto the end",
            ],
            b"\r\n\r\n",
            false,
        )
        .await;
        let conn = connect(&origin).await;
        let (status, body, conn) = exchange(conn, &get(), NO_BODY).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello world"[..]));
        let conn = conn.expect("a chunked body read to its end leaves the connection usable");
        let (_, body, conn) = exchange(conn, &get(), NO_BODY).await.unwrap();
        assert_eq!(&body[..], b"abc");
        let conn = conn.expect("a sized body leaves the connection usable");
        // Without a length, the body ends with the connection: the server
        // holds it open, so only the close tells the end. The scripted server
        // closes once it is out of answers and the client went: read the head
        // and what came with it.
        let (head, mut reader) = conn.exchange(&get(), NO_BODY).await.unwrap();
        assert_eq!(head.status, StatusCode::OK);
        let first = std::future::poll_fn(|cx| reader.poll_data(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&first[..], b"to the end");
        assert!(
            reader.take_reusable().is_none(),
            "a close-delimited body ends the connection"
        );
        let sent = received.lock().unwrap().clone();
        assert!(
            sent.starts_with(b"GET /p?q=1 HTTP/1.1\r\nhost: t.p.s\r\n\r\n"),
            "{sent:?}"
        );
    }

    #[tokio::test]
    async fn interim_responses_are_passed_over_and_bodiless_ones_have_none() {
        let (origin, _) = scripted(
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
                // A HEAD response states the length a GET would have had.
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\n\r\n",
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast",
            ],
            b"\r\n\r\n",
            false,
        )
        .await;
        let conn = connect(&origin).await;
        let (status, body, conn) = exchange(conn, &get(), NO_BODY).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::CREATED, &b"ok"[..]));
        let head = request(Method::HEAD, &[("host", "t.p.s")]);
        let (status, body, conn) = exchange(conn.unwrap(), &head, NO_BODY).await.unwrap();
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        let (status, body, conn) = exchange(conn.unwrap(), &get(), NO_BODY).await.unwrap();
        assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
        let (status, body, conn) = exchange(conn.unwrap(), &get(), NO_BODY).await.unwrap();
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
        // Had any of those been read as having a body, this would be off.
        let (status, body, _) = exchange(conn.unwrap(), &get(), NO_BODY).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"last"[..]));
    }

    #[tokio::test]
    async fn request_bodies_go_as_sized_or_chunked() {
        let (origin, received) = scripted(
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            ],
            b"END",
            false,
        )
        .await;
        let conn = connect(&origin).await;
        let sized = request(Method::POST, &[("host", "t.p.s"), ("content-length", "9")]);
        let body = Full::new(Bytes::from_static(b"sized END"));
        let (_, _, conn) = exchange(conn, &sized, Some(body)).await.unwrap();
        // No length: chunked; the client's trailers are not passed on.
        let chunked = request(Method::PUT, &[("host", "t.p.s")]);
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"chunk"))),
            Ok(Frame::data(Bytes::from_static(b"ed END"))),
            Ok(Frame::trailers(HeaderMap::from_iter([(
                HeaderName::from_static("x-sum"),
                HeaderValue::from_static("7"),
            )]))),
        ];
        let body = StreamBody::new(futures::stream::iter(frames));
        let (status, _, _) = exchange(conn.unwrap(), &chunked, Some(body)).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        // The server answers on seeing END, before the final chunk: wait for
        // the rest to arrive.
        for _ in 0..100 {
            if received.lock().unwrap().ends_with(b"0\r\n\r\n") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let sent = String::from_utf8(received.lock().unwrap().clone()).unwrap();
        assert_eq!(
            sent,
            "POST /p?q=1 HTTP/1.1\r\nhost: t.p.s\r\ncontent-length: 9\r\n\r\nsized END\
             PUT /p?q=1 HTTP/1.1\r\nhost: t.p.s\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nchunk\r\n6\r\ned END\r\n0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_upload_ends_it_and_the_connection() {
        let (origin, _) = scripted(
            vec![b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig"],
            b"\r\n\r\n",
            false,
        )
        .await;
        let conn = connect(&origin).await;
        // A body that never ends.
        let frames = futures::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
            Bytes::from_static(b"first"),
        ))])
        .chain(futures::stream::pending());
        let parts = request(Method::POST, &[("host", "t.p.s")]);
        let (status, body, conn) = exchange(conn, &parts, Some(StreamBody::new(frames)))
            .await
            .unwrap();
        assert_eq!(
            (status, &body[..]),
            (StatusCode::PAYLOAD_TOO_LARGE, &b"big"[..])
        );
        assert!(
            conn.is_none(),
            "a connection whose request was cut short is not reused"
        );
    }

    #[tokio::test]
    async fn the_upload_goes_on_after_the_response_head() {
        // A server that answers at once and ends its answer only once it has
        // the whole request: an echo, a transcoder.
        let (listener, origin) = listen().await;
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let mut answered = false;
            while !seen.ends_with(b"0\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                seen.extend_from_slice(&buf[..n]);
                if !answered && seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    answered = true;
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                        .await
                        .unwrap();
                }
            }
            stream.write_all(b"3\r\nend\r\n0\r\n\r\n").await.unwrap();
            let _ = stream.read(&mut buf).await;
        });
        let (frames, stream) = futures::channel::mpsc::unbounded();
        let body = StreamBody::new(stream.map(Ok::<_, std::convert::Infallible>));
        let parts = request(Method::POST, &[("host", "t.p.s")]);
        let (head, mut reader) = connect(&origin)
            .await
            .exchange(&parts, Some(body))
            .await
            .unwrap();
        assert_eq!(head.status, StatusCode::OK);
        // The body's first piece comes after the answer's head.
        frames
            .unbounded_send(Frame::data(Bytes::from_static(b"late")))
            .unwrap();
        drop(frames);
        let read = async {
            let mut data = BytesMut::new();
            while let Some(piece) = std::future::poll_fn(|cx| reader.poll_data(cx)).await {
                data.extend_from_slice(&piece.unwrap());
            }
            data
        };
        let data = tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .expect("the server never got the end of the request");
        assert_eq!(&data[..], b"end");
        assert!(reader.take_reusable().is_some(), "both ways done: reusable");
    }

    #[tokio::test]
    async fn a_connection_is_looked_at_even_when_the_task_has_spent_its_budget() {
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        // A server that answers, then a little later answers again, unasked.
        let (listener, origin) = listen().await;
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await.unwrap();
            stream.write_all(OK).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            stream.write_all(OK).await.unwrap();
            let _ = stream.read(&mut buf).await;
        });
        let (_, mut reader) = connect(&origin)
            .await
            .exchange(&get(), NO_BODY)
            .await
            .unwrap();
        assert!(matches!(poll_once(&mut reader), Poll::Ready(Some(Ok(d))) if d == "ok"));
        let mut conn = reader.take_reusable().expect("read whole, kept alive");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let open = std::future::poll_fn(|cx| {
            // Spend the task's budget, then look.
            loop {
                let spend = std::pin::pin!(tokio::task::consume_budget());
                if std::future::Future::poll(spend, cx).is_pending() {
                    break;
                }
            }
            Poll::Ready(conn.is_open())
        })
        .await;
        assert!(!open, "bytes nobody asked for make a connection unusable");
    }

    #[tokio::test]
    async fn what_is_not_http_is_an_error_that_says_so() {
        for (answer, expected) in [
            (&b"SMTP ready\r\n\r\n"[..], "malformed response head"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "conflicting Content-Lengths",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "malformed Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
                "malformed Content-Length",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "switched protocols unasked",
            ),
        ] {
            let (origin, _) = scripted(vec![answer], b"\r\n\r\n", false).await;
            let err = exchange(connect(&origin).await, &get(), NO_BODY)
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{err} (wanted {expected})"
            );
            assert!(!err.nothing_read());
        }
        // A chunked body that breaks its own framing.
        let (origin, _) = scripted(
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\ntoo long\r\n"],
            b"\r\n\r\n",
            false,
        )
        .await;
        let err = exchange(connect(&origin).await, &get(), NO_BODY)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("chunk data longer than its size"),
            "{err}"
        );
        // An empty chunk-size line (which httparse would read as the last).
        let (origin, _) = scripted(
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n\r\nJUNK\r\n\r\n"],
            b"\r\n\r\n",
            false,
        )
        .await;
        let err = exchange(connect(&origin).await, &get(), NO_BODY)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("malformed chunk size"), "{err}");
        // A close after an interim response: part of an answer came, so the
        // request may have been acted on.
        let (origin, _) = scripted(vec![b"HTTP/1.1 100 Continue\r\n\r\n"], b"\r\n\r\n", true).await;
        let err = exchange(connect(&origin).await, &get(), NO_BODY)
            .await
            .unwrap_err();
        assert!(!err.nothing_read(), "{err}");
        assert!(
            err.to_string().contains("after part of a response"),
            "{err}"
        );
        // A connection closed before any answer.
        let (origin, _) = scripted(vec![b""], b"\r\n\r\n", true).await;
        let err = exchange(connect(&origin).await, &get(), NO_BODY)
            .await
            .unwrap_err();
        assert!(err.nothing_read(), "{err}");
    }

    /// Whether quick acknowledgement is on for `conn`'s connection now.
    fn quick(conn: &Conn) -> bool {
        socket2::SockRef::from(conn.tcp())
            .tcp_quickack()
            .expect("TCP_QUICKACK readable")
    }

    /// A connection and the server's end of it, after an exchange that leaves
    /// the kernel delaying acknowledgements.
    async fn connected() -> (Box<Conn>, tokio::net::TcpStream) {
        let (listener, origin) = listen().await;
        let conn = connect(&origin).await;
        let (mut server, _) = listener.accept().await.unwrap();
        // After receiving and then sending, the connection is interactive and
        // the kernel delays its acknowledgements.
        server.write_all(b"r").await.unwrap();
        let mut byte = [0u8; 1];
        conn.tcp().readable().await.unwrap();
        assert_eq!(conn.tcp().try_read(&mut byte).unwrap(), 1);
        conn.tcp().writable().await.unwrap();
        assert_eq!(conn.tcp().try_write(b"q").unwrap(), 1);
        server.read_exact(&mut byte).await.unwrap();
        assert!(
            !quick(&conn),
            "the kernel should have turned quick acknowledgement off"
        );
        (conn, server)
    }

    /// Sends a GET on `conn` and answers `response` from `server`: the body's
    /// reader, before any of the body is read.
    async fn answer(
        conn: Box<Conn>,
        server: &mut tokio::net::TcpStream,
        response: &[u8],
    ) -> Reader {
        let serve = async {
            let mut request = [0u8; 1024];
            assert!(server.read(&mut request).await.unwrap() > 0);
            server.write_all(response).await.unwrap();
        };
        let parts = get();
        let (exchanged, ()) = tokio::join!(conn.exchange(&parts, NO_BODY), serve);
        exchanged.unwrap().1
    }

    /// Polls `reader` once, as the router does when its client wants more.
    fn poll_once(reader: &mut Reader) -> Poll<Option<Result<Bytes, ExchangeError>>> {
        reader.poll_data(&mut Context::from_waker(std::task::Waker::noop()))
    }

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";

    #[tokio::test]
    async fn a_response_waited_for_is_acknowledged_at_once() {
        // The head alone: the body is yet to come.
        let (conn, mut server) = connected().await;
        let mut reader = answer(conn, &mut server, HEAD).await;
        assert!(poll_once(&mut reader).is_pending());
        assert!(quick(reader.conn.as_ref().unwrap()));

        // A chunked response, whose end its first chunk does not tell.
        let (conn, mut server) = connected().await;
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
        let mut reader = answer(conn, &mut server, chunked).await;
        assert!(matches!(poll_once(&mut reader), Poll::Ready(Some(Ok(d))) if d == "hello"));
        assert!(poll_once(&mut reader).is_pending());
        assert!(quick(reader.conn.as_ref().unwrap()));
    }

    #[tokio::test]
    async fn a_response_read_whole_costs_nothing() {
        let (mut conn, mut server) = connected().await;
        for _ in 0..3 {
            let mut reader = answer(conn, &mut server, &[HEAD, b"hello"].concat()).await;
            assert!(matches!(poll_once(&mut reader), Poll::Ready(Some(Ok(d))) if d == "hello"));
            assert!(matches!(poll_once(&mut reader), Poll::Ready(None)));
            conn = reader.take_reusable().expect("kept");
            assert!(!quick(&conn), "no quick ack was needed");
        }
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_open() {
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        for close in [false, true] {
            let (origin, _) = scripted(vec![OK, OK], b"\r\n\r\n", close).await;
            let (_, _, conn) = exchange(connect(&origin).await, &get(), NO_BODY)
                .await
                .unwrap();
            let mut conn = conn.expect("the response said nothing of closing");
            // Time for the server's close to arrive, if it closes.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert_eq!(conn.is_open(), !close);
        }
    }
}
