//! A request on its way out: its head, then its body, sized or chunked,
//! written as the body gives it and while the response is read.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::Body;
use tokio::io::AsyncWrite;

use super::{BoxError, Conn, ExchangeError, Framing, Transport};
use crate::chunked::LAST_CHUNK;
use crate::codec::push_line;
use crate::head::RequestHead;

/// Writes all of `data` to `io`, taking off what is written.
fn poll_write_all<T: AsyncWrite + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    data: &mut impl Buf,
) -> Poll<io::Result<()>> {
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
pub(super) struct Upload<B> {
    /// How much of the head is written; `None` once it all is.
    head: Option<usize>,
    body: Option<(B, Framing)>,
    /// The part of a body frame (or of its chunk framing, or of the last
    /// chunk) not yet written.
    piece: Bytes,
}

impl<B> Upload<B> {
    /// The head (in the connection's head buffer), then `body` as framed.
    pub(super) fn new(body: Option<(B, Framing)>) -> Upload<B> {
        Upload {
            head: Some(0),
            body,
            piece: Bytes::new(),
        }
    }
}

/// A request body on its way out, whatever its type.
pub(super) trait Sending<T>: Send {
    /// Writes on until everything is sent (and flushed).
    fn poll_send(
        &mut self,
        conn: &mut Conn<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>>;
}

impl<T> Sending<T> for Box<dyn Sending<T>> {
    fn poll_send(
        &mut self,
        conn: &mut Conn<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        (**self).poll_send(conn, cx)
    }
}

/// Sends `upload` on, if any is left, and drops it once done. `Err`: the
/// client's body broke off. `Ok(Some(_))`: a write failed, which ends the
/// upload but not the exchange (the server may have answered, and stopped
/// reading because it did).
pub(super) fn send_on<T, S: Sending<T>>(
    upload: &mut Option<S>,
    conn: &mut Conn<T>,
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

impl<T, B> Sending<T> for Upload<B>
where
    T: Transport,
    B: Body<Data = Bytes> + Unpin + Send,
    B::Error: Into<BoxError>,
{
    fn poll_send(
        &mut self,
        conn: &mut Conn<T>,
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

/// The request line and headers as they go on the wire.
pub(super) fn encode_head(dst: &mut Vec<u8>, request: &RequestHead, chunked: bool) {
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
