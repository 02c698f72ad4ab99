//! A response body read off the connection as the client takes it, while
//! the rest of the request body goes on being sent.

use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, SizeHint};

use super::upload::{send_on, Sending, Upload};
use super::{protocol, BoxError, Conn, ExchangeError, Framing, Transport};
use crate::chunked::{decode_chunked, Decoded};

/// A response body as it comes off the connection, while the rest of the
/// request body (if any) goes on being sent. Its connection can be taken back
/// once both are done.
pub struct Reader<T> {
    conn: Option<Box<Conn<T>>>,
    framing: Option<Framing>,
    /// The server lets the connection carry another request.
    keep_alive: bool,
    /// The rest of the request body, still being sent.
    upload: Option<Box<dyn Sending<T>>>,
}

impl<T: Transport> Reader<T> {
    pub(super) fn new<B>(
        conn: Box<Conn<T>>,
        framing: Option<Framing>,
        keep_alive: bool,
        upload: Option<Upload<B>>,
    ) -> Reader<T>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Reader {
            conn: Some(conn),
            framing,
            keep_alive,
            // Boxed only when some of it is left, which is seldom.
            upload: upload.map(|u| Box::new(u) as Box<dyn Sending<T>>),
        }
    }

    /// The connection, while the reader has it.
    #[cfg(test)]
    pub(super) fn conn(&self) -> Option<&Conn<T>> {
        self.conn.as_deref()
    }

    /// Whether the whole body has been read.
    pub fn is_end(&self) -> bool {
        matches!(self.framing, None | Some(Framing::Length(0)))
    }

    /// The connection, once the body is read to its end, if it can be used
    /// again: kept alive, the request sent whole, nothing left unread.
    pub fn take_reusable(&mut self) -> Option<Box<Conn<T>>> {
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

    /// Reads until the rest of a body framed by its length is in the
    /// connection's buffer, taking none of it ([`Reader::poll_data`] gives it
    /// after, at once, in one piece): a body that breaks off is then told
    /// before any of it is passed on. Ready at once for a body framed
    /// otherwise (chunked, to the close, none), or one whose request is still
    /// being sent. A caller bounds the size it waits for by
    /// [`Reader::size_hint`] first: the buffer grows to hold it all.
    pub fn poll_buffered(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ExchangeError>> {
        let (Some(Framing::Length(left)), Some(conn), None) =
            (self.framing, self.conn.as_mut(), self.upload.as_ref())
        else {
            return Poll::Ready(Ok(()));
        };
        while (conn.buf.len() as u64) < left {
            let n = match ready!(conn.poll_fill(cx, true)) {
                Ok(n) => n,
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Err(e.into()));
                }
            };
            if n == 0 {
                self.conn = None;
                return Poll::Ready(Err(protocol("connection closed in the response body")));
            }
        }
        Poll::Ready(Ok(()))
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
