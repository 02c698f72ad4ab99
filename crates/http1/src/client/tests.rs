//! The client side against scripted servers on loopback: framing both ways,
//! interim and bodiless answers, malformed answers named, connection reuse
//! and quick acknowledgement.

use super::*;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use http_body_util::{Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

/// A response head over 64 KiB is refused, also when it came whole in one
/// read (the limit was looked at only while a head was not all in).
#[test]
fn a_response_head_over_the_limit_is_refused_whole_or_not() {
    use crate::fuzzing::{parse_response, Response};
    let big = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    // (Not unwrapped: a head taken would fill the failure with its bytes.)
    let whole = parse_response(&mut BytesMut::from(big.as_str()), true);
    assert!(
        matches!(&whole, Err(e) if e == "response head larger than 64 KiB"),
        "a head of 70 KiB that came whole was taken"
    );
    let part = parse_response(&mut BytesMut::from(&big[..65 * 1024]), true);
    assert!(
        matches!(&part, Err(e) if e == "response head larger than 64 KiB"),
        "65 KiB of a head was waited on"
    );
    let small = "HTTP/1.1 204 No Content\r\n\r\n";
    assert!(matches!(
        parse_response(&mut BytesMut::from(small), true),
        Ok(Response::Final { .. })
    ));
}

/// A length given twice over, the same, is passed on once.
#[test]
fn a_length_given_twice_over_is_passed_on_once() {
    let head = ResponseHead::parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\ncontent-length: 2\r\n\r\n",
    );
    assert_eq!(
        head.headers.lines(),
        pairs(&[("Content-Length", "2"), ("X-A", "1")])
    );
    assert_eq!(head.headers.content_length(), Some(2));
}

const NO_BODY: Option<Empty<Bytes>> = None;

/// A listener on a loopback port, and its address.
async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// What a scripted server received, over all its connections.
type Received = Arc<Mutex<Vec<u8>>>;

/// A server on loopback that, on each connection, answers the next of
/// `answers` once `until` has arrived since its last answer; with `close`,
/// it closes the connection after each answer. Returns its address and what
/// it received.
async fn scripted(
    answers: Vec<&'static [u8]>,
    until: &'static [u8],
    close: bool,
) -> (SocketAddr, Received) {
    let (listener, addr) = listen().await;
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
    (addr, received)
}

async fn connect(addr: &SocketAddr) -> Box<Conn<TcpStream>> {
    Conn::new(TcpStream::connect(addr).await.unwrap())
}

fn request(method: Method, headers: &[(&str, &str)]) -> RequestHead {
    RequestHead::for_test(method, "/p?q=1", headers)
}

/// Sends `parts` and `body` on `conn`; the status, the body read whole and
/// the connection if it can carry another request.
async fn exchange<B>(
    conn: Box<Conn<TcpStream>>,
    parts: &RequestHead,
    body: Option<B>,
) -> Result<(StatusCode, Bytes, Option<Box<Conn<TcpStream>>>), ExchangeError>
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
    let (addr, received) = scripted(
        vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\n\r\nto the end",
        ],
        b"\r\n\r\n",
        false,
    )
    .await;
    let conn = connect(&addr).await;
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
    let (addr, _) = scripted(
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
    let conn = connect(&addr).await;
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
    let (addr, received) = scripted(
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ],
        b"END",
        false,
    )
    .await;
    let conn = connect(&addr).await;
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
    let (addr, _) = scripted(
        vec![b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig"],
        b"\r\n\r\n",
        false,
    )
    .await;
    let conn = connect(&addr).await;
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
    let (listener, addr) = listen().await;
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
    let (head, mut reader) = connect(&addr)
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
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await.unwrap();
        stream.write_all(OK).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        stream.write_all(OK).await.unwrap();
        let _ = stream.read(&mut buf).await;
    });
    let (_, mut reader) = connect(&addr)
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
        let (addr, _) = scripted(vec![answer], b"\r\n\r\n", false).await;
        let err = exchange(connect(&addr).await, &get(), NO_BODY)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{err} (wanted {expected})"
        );
        assert!(!err.nothing_read());
    }
    // A chunked body that breaks its own framing.
    let (addr, _) = scripted(
        vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\ntoo long\r\n"],
        b"\r\n\r\n",
        false,
    )
    .await;
    let err = exchange(connect(&addr).await, &get(), NO_BODY)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("chunk data longer than its size"),
        "{err}"
    );
    // An empty chunk-size line (which httparse would read as the last).
    let (addr, _) = scripted(
        vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n\r\nJUNK\r\n\r\n"],
        b"\r\n\r\n",
        false,
    )
    .await;
    let err = exchange(connect(&addr).await, &get(), NO_BODY)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("malformed chunk size"), "{err}");
    // A close after an interim response: part of an answer came, so the
    // request may have been acted on.
    let (addr, _) = scripted(vec![b"HTTP/1.1 100 Continue\r\n\r\n"], b"\r\n\r\n", true).await;
    let err = exchange(connect(&addr).await, &get(), NO_BODY)
        .await
        .unwrap_err();
    assert!(!err.nothing_read(), "{err}");
    assert!(
        err.to_string().contains("after part of a response"),
        "{err}"
    );
    // A connection closed before any answer.
    let (addr, _) = scripted(vec![b""], b"\r\n\r\n", true).await;
    let err = exchange(connect(&addr).await, &get(), NO_BODY)
        .await
        .unwrap_err();
    assert!(err.nothing_read(), "{err}");
}

/// Whether quick acknowledgement is on for `conn`'s connection now.
fn quick(conn: &Conn<TcpStream>) -> bool {
    socket2::SockRef::from(&conn.io)
        .tcp_quickack()
        .expect("TCP_QUICKACK readable")
}

/// A connection and the server's end of it, after an exchange that leaves
/// the kernel delaying acknowledgements.
async fn connected() -> (Box<Conn<TcpStream>>, tokio::net::TcpStream) {
    let (listener, addr) = listen().await;
    let conn = connect(&addr).await;
    let (mut server, _) = listener.accept().await.unwrap();
    // After receiving and then sending, the connection is interactive and
    // the kernel delays its acknowledgements.
    server.write_all(b"r").await.unwrap();
    let mut byte = [0u8; 1];
    conn.io.readable().await.unwrap();
    assert_eq!(conn.io.try_read(&mut byte).unwrap(), 1);
    conn.io.writable().await.unwrap();
    assert_eq!(conn.io.try_write(b"q").unwrap(), 1);
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
    conn: Box<Conn<TcpStream>>,
    server: &mut tokio::net::TcpStream,
    response: &[u8],
) -> Reader<TcpStream> {
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
fn poll_once(reader: &mut Reader<TcpStream>) -> Poll<Option<Result<Bytes, ExchangeError>>> {
    reader.poll_data(&mut Context::from_waker(std::task::Waker::noop()))
}

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";

#[tokio::test]
async fn a_response_waited_for_is_acknowledged_at_once() {
    // The head alone: the body is yet to come.
    let (conn, mut server) = connected().await;
    let mut reader = answer(conn, &mut server, HEAD).await;
    assert!(poll_once(&mut reader).is_pending());
    assert!(quick(reader.conn().unwrap()));

    // A chunked response, whose end its first chunk does not tell.
    let (conn, mut server) = connected().await;
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let mut reader = answer(conn, &mut server, chunked).await;
    assert!(matches!(poll_once(&mut reader), Poll::Ready(Some(Ok(d))) if d == "hello"));
    assert!(poll_once(&mut reader).is_pending());
    assert!(quick(reader.conn().unwrap()));
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
async fn an_idle_connection_gives_its_buffers_back_and_still_carries_requests() {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (addr, _) = scripted(vec![OK, OK], b"\r\n\r\n", false).await;
    let (_, body, conn) = exchange(connect(&addr).await, &get(), NO_BODY)
        .await
        .unwrap();
    assert_eq!(body, "ok");
    let mut conn = conn.expect("kept alive");
    assert!(
        conn.buffered_capacity() >= 8 * 1024,
        "a read needs a buffer"
    );
    conn.release_buffers();
    assert_eq!(conn.buffered_capacity(), 0);
    let (status, body, conn) = exchange(conn, &get(), NO_BODY).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert!(conn.is_some());
}

#[tokio::test]
async fn a_connection_the_server_closed_is_not_open() {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    for close in [false, true] {
        let (addr, _) = scripted(vec![OK, OK], b"\r\n\r\n", close).await;
        let (_, _, conn) = exchange(connect(&addr).await, &get(), NO_BODY)
            .await
            .unwrap();
        let mut conn = conn.expect("the response said nothing of closing");
        // Time for the server's close to arrive, if it closes.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(conn.is_open(), !close);
    }
}

/// Polls `reader` once for its whole body to be buffered.
fn buffered_once(reader: &mut Reader<TcpStream>) -> Poll<Result<(), ExchangeError>> {
    reader.poll_buffered(&mut Context::from_waker(std::task::Waker::noop()))
}

#[tokio::test]
async fn a_body_buffered_whole_is_waited_for_then_given_in_one_piece() {
    // With its head: in already.
    let (conn, mut server) = connected().await;
    let mut reader = answer(conn, &mut server, &[HEAD, b"hello"].concat()).await;
    assert!(matches!(buffered_once(&mut reader), Poll::Ready(Ok(()))));
    assert!(matches!(poll_once(&mut reader), Poll::Ready(Some(Ok(d))) if d == "hello"));

    // After its head, in pieces: waited for, none of it taken meanwhile.
    let (conn, mut server) = connected().await;
    let mut reader = answer(conn, &mut server, &[HEAD, b"he"].concat()).await;
    assert!(buffered_once(&mut reader).is_pending());
    assert_eq!(reader.size_hint().exact(), Some(5), "nothing taken");
    server.write_all(b"l").await.unwrap();
    let later = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        server.write_all(b"lo").await.unwrap();
    };
    let (buffered, ()) = tokio::join!(std::future::poll_fn(|cx| reader.poll_buffered(cx)), later);
    buffered.unwrap();
    assert!(matches!(poll_once(&mut reader), Poll::Ready(Some(Ok(d))) if d == "hello"));
    assert!(matches!(poll_once(&mut reader), Poll::Ready(None)));
    assert!(reader.take_reusable().is_some(), "the connection is kept");

    // Chunked: its length is unknown, it is not waited for.
    let (conn, mut server) = connected().await;
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel";
    let mut reader = answer(conn, &mut server, chunked).await;
    assert!(matches!(buffered_once(&mut reader), Poll::Ready(Ok(()))));
}

#[tokio::test]
async fn a_body_that_breaks_off_fails_its_buffering() {
    let (conn, mut server) = connected().await;
    let mut reader = answer(conn, &mut server, &[HEAD, b"hel"].concat()).await;
    drop(server);
    let err = std::future::poll_fn(|cx| reader.poll_buffered(cx))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
    assert!(reader.take_reusable().is_none());
}
