//! Upstream connections that acknowledge responses at once.
//!
//! tenement 0.2.1 does not set `TCP_NODELAY` on the connections it accepts: it
//! writes a response head and its body as two segments, and Nagle's algorithm
//! holds the body back until the head is acknowledged. Linux delays that
//! acknowledgement (up to 40 ms) once a connection looks interactive, which a
//! keep-alive connection carrying request after response does. Every response
//! then waits up to 40 ms: a client alone on a connection sees p99 above 40 ms
//! and, depending on how many answers stall, 25 to 1,400 requests a second.
//!
//! The router's upstream connections therefore switch `TCP_QUICKACK` on after
//! sending a request (the kernel turns it off again by itself), so that the
//! head is acknowledged when it arrives and the body follows at once: one
//! `setsockopt` per request.

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
                armed: false,
            })
        })
    }
}

/// A TCP connection to a server that turns `TCP_QUICKACK` on once after each
/// request it sends.
pub struct QuickAck {
    io: TokioIo<TcpStream>,
    /// Quick acknowledgement is on for the response to what was last written.
    armed: bool,
}

impl QuickAck {
    fn wrote(&mut self) {
        if !self.armed {
            self.armed = true;
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
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The answer is being read: the next write is a new request.
        this.armed = false;
        Pin::new(&mut this.io).poll_read(cx, buf)
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

    fn quick(stream: &TcpStream) -> bool {
        socket2::SockRef::from(stream)
            .tcp_quickack()
            .expect("TCP_QUICKACK readable")
    }

    /// Receives a byte from `server` on `client`, then writes one back (the
    /// exchange after which Linux delays acknowledgements).
    async fn exchange(server: &mut TcpStream, client: &mut QuickAck) {
        server.write_all(b"r").await.unwrap();
        let mut byte = [0u8; 1];
        client.io.inner_mut().read_exact(&mut byte).await.unwrap();
        client.armed = false;
        std::future::poll_fn(|cx| Pin::new(&mut *client).poll_write(cx, b"q"))
            .await
            .unwrap();
        server.read_exact(&mut byte).await.unwrap();
    }

    #[tokio::test]
    async fn a_request_sent_turns_quick_acknowledgement_back_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let mut connector = QuickAckConnector(HttpConnector::new());
        let mut client = tower_service::Service::call(&mut connector, url)
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();

        // What the kernel does without it: after receiving and then sending,
        // the connection is interactive and its acknowledgements are delayed.
        server.write_all(b"r").await.unwrap();
        let mut byte = [0u8; 1];
        client.io.inner_mut().read_exact(&mut byte).await.unwrap();
        client.io.inner_mut().write_all(b"q").await.unwrap();
        server.read_exact(&mut byte).await.unwrap();
        assert!(
            !quick(client.io.inner()),
            "the kernel should have turned quick acknowledgement off"
        );

        // Written through QuickAck, it is on again.
        for _ in 0..3 {
            exchange(&mut server, &mut client).await;
            assert!(quick(client.io.inner()));
        }
    }
}
