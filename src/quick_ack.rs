//! Upstream connections that acknowledge a response at once when it is waited on.
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
//! The router's upstream connections therefore switch `TCP_QUICKACK` on, which
//! sends the delayed acknowledgement at once and keeps acknowledging until the
//! next request, when the router is about to wait for the rest of a response it
//! has begun to read. A response that arrived whole (the common case under
//! load, when tenement has the body ready with the head) costs nothing: its
//! length is known from its head's `Content-Length`. A response whose length the
//! first read does not tell (chunked, or its head cut short) is acknowledged
//! whenever the router waits for more of it. Over TLS (an `https` server URL)
//! the bytes read here are records, not HTTP: every response is then of unknown
//! length.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An [`HttpConnector`] whose connections acknowledge responses at once.
#[derive(Clone)]
pub struct QuickAckConnector(pub HttpConnector);

type Connecting = Pin<Box<dyn Future<Output = Result<QuickAck, ConnectError>> + Send>>;
type ConnectError = <HttpConnector as tower_service::Service<Uri>>::Error;

impl tower_service::Service<Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move {
            Ok(QuickAck {
                io: connecting.await?,
                response: Progress::NotStarted,
                acked: false,
            })
        })
    }
}

/// How much of the response to the last request has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Nothing since the request was written.
    NotStarted,
    /// The head gave the body's length: this many bytes are yet to come.
    Remaining(u64),
    /// Read to its end.
    Complete,
    /// Its length is not known from the first read.
    Unknown,
}

impl Progress {
    /// After reading `bytes` of the response.
    fn after(self, bytes: &[u8]) -> Progress {
        let n = bytes.len() as u64;
        match self {
            Progress::NotStarted => match response_length(bytes) {
                Some(total) if total > n => Progress::Remaining(total - n),
                Some(_) => Progress::Complete,
                None => Progress::Unknown,
            },
            Progress::Remaining(left) if left > n => Progress::Remaining(left - n),
            Progress::Remaining(_) => Progress::Complete,
            done => done,
        }
    }

    /// Whether waiting now means waiting for the rest of a response.
    fn midway(self) -> bool {
        matches!(self, Progress::Remaining(_) | Progress::Unknown)
    }
}

/// The whole length (head and body) of the final response that `first` begins
/// with, when `first` holds its head and the head gives a `Content-Length`.
fn response_length(first: &[u8]) -> Option<u64> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(first) {
        Ok(httparse::Status::Complete(head)) => head,
        _ => return None,
    };
    if response.code.is_none_or(|c| c < 200) {
        return None; // an interim response: the final one follows
    }
    let mut length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    (head as u64).checked_add(length?)
}

/// A TCP connection to a server that turns `TCP_QUICKACK` on when the router
/// waits for the rest of a response.
pub struct QuickAck {
    io: TokioIo<TcpStream>,
    response: Progress,
    /// Quick acknowledgement was turned on for this response.
    acked: bool,
}

impl QuickAck {
    fn wrote(&mut self) {
        self.response = Progress::NotStarted;
        self.acked = false;
    }

    fn waiting(&mut self) {
        if self.response.midway() && !self.acked {
            self.acked = true;
            // Only a latency matter: a socket that refuses keeps working.
            let _ = socket2::SockRef::from(self.io.inner()).set_tcp_quickack(true);
        }
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // SAFETY: as in hyper-util's `TokioIo`: tokio's `ReadBuf` only writes
        // to the unfilled memory it is given and reports how much it filled,
        // and exactly that much is then marked filled in `buf`.
        let n = unsafe {
            let mut tbuf = tokio::io::ReadBuf::uninit(buf.as_mut());
            let stream = Pin::new(this.io.inner_mut());
            match tokio::io::AsyncRead::poll_read(stream, cx, &mut tbuf) {
                Poll::Ready(Ok(())) => {
                    this.response = this.response.after(tbuf.filled());
                    tbuf.filled().len()
                }
                Poll::Pending => {
                    this.waiting();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        };
        // SAFETY: `n` bytes were just filled.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl Write for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";

    fn quick(stream: &TcpStream) -> bool {
        socket2::SockRef::from(stream)
            .tcp_quickack()
            .expect("TCP_QUICKACK readable")
    }

    /// A connection through [`QuickAck`] and the server's end of it, after an
    /// exchange that leaves the kernel delaying acknowledgements.
    async fn connected() -> (QuickAck, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let mut connector = QuickAckConnector(HttpConnector::new());
        let mut client = tower_service::Service::call(&mut connector, url)
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // After receiving and then sending, the connection is interactive and
        // the kernel delays its acknowledgements.
        server.write_all(b"r").await.unwrap();
        let mut byte = [0u8; 1];
        client.io.inner_mut().read_exact(&mut byte).await.unwrap();
        client.io.inner_mut().write_all(b"q").await.unwrap();
        server.read_exact(&mut byte).await.unwrap();
        assert!(
            !quick(client.io.inner()),
            "the kernel should have turned quick acknowledgement off"
        );
        (client, server)
    }

    /// Sends a request through `client`, answers `response` from `server`,
    /// reads what arrives through `client` and then polls it once more, as the
    /// router does when it waits for the rest.
    async fn answer(client: &mut QuickAck, server: &mut TcpStream, response: &[u8]) {
        std::future::poll_fn(|cx| Pin::new(&mut *client).poll_write(cx, b"GET / HTTP/1.1\r\n\r\n"))
            .await
            .unwrap();
        let mut request = [0u8; 18];
        server.read_exact(&mut request).await.unwrap();
        server.write_all(response).await.unwrap();
        let mut storage = [std::mem::MaybeUninit::uninit(); 256];
        let mut buf = hyper::rt::ReadBuf::uninit(&mut storage);
        while buf.filled().len() < response.len() {
            std::future::poll_fn(|cx| Pin::new(&mut *client).poll_read(cx, buf.unfilled()))
                .await
                .unwrap();
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut *client)
            .poll_read(&mut cx, buf.unfilled())
            .is_pending());
    }

    #[tokio::test]
    async fn a_response_waited_for_is_acknowledged_at_once() {
        let (mut client, mut server) = connected().await;
        // The head alone: the body is yet to come.
        answer(&mut client, &mut server, HEAD).await;
        assert!(quick(client.io.inner()));
        server.write_all(b"hello").await.unwrap();

        // A chunked response, whose end the first read does not tell.
        let (mut client, mut server) = connected().await;
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
        answer(&mut client, &mut server, chunked).await;
        assert!(quick(client.io.inner()));
    }

    #[tokio::test]
    async fn a_response_read_whole_costs_nothing() {
        let (mut client, mut server) = connected().await;
        for _ in 0..3 {
            answer(&mut client, &mut server, &[HEAD, b"hello"].concat()).await;
            assert!(!quick(client.io.inner()), "no quick ack was needed");
        }
    }

    #[test]
    fn response_lengths_come_from_the_head() {
        assert_eq!(response_length(HEAD), Some(HEAD.len() as u64 + 5));
        assert_eq!(response_length(&HEAD[..10]), None, "head cut short");
        assert_eq!(
            response_length(b"HTTP/1.1 100 Continue\r\n\r\n"),
            None,
            "interim"
        );
        assert_eq!(
            response_length(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"),
            None,
            "conflicting lengths"
        );
        assert_eq!(
            response_length(b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n"),
            None,
            "a length past u64"
        );
        let p = Progress::NotStarted.after(HEAD);
        assert_eq!(p, Progress::Remaining(5));
        assert_eq!(p.after(b"hel"), Progress::Remaining(2));
        assert_eq!(p.after(b"hello"), Progress::Complete);
        assert!(!Progress::Complete.midway() && !Progress::NotStarted.midway());
    }
}
