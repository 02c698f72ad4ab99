//! The server side against real clients on loopback: a test server that
//! serves each connection as the router does, and raw bytes sent to it. The
//! timeout tests run on tokio's paused clock, which the coarse timer reads.

use super::*;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::Version;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::chunked::Chunk;
use crate::head::ResponseHead;
use crate::MAX_HEADERS;
use body::CONTINUE;

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
            let then = futures::stream::pending().map(move |f: Result<Frame<Bytes>, io::Error>| {
                let _ = &guard;
                f
            });
            Response::new(BodyExt::boxed(StreamBody::new(first.chain(then))))
        }
        "/stream" => Response::new(streamed(&["one,", "two"])),
        // Answers at once, without the body; a moment after the first
        // piece is out, the answer's own body reads the request's (as the
        // router goes on sending a body while it passes an early answer on).
        "/answer-early" => {
            let first = futures::stream::iter([Ok(Frame::data(Bytes::from_static(b"early,")))]);
            let then = futures::stream::once(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let read = body.collect().await.map(|c| c.to_bytes().len());
                Ok(Frame::data(Bytes::from(format!("then read {read:?}"))))
            });
            Response::new(BodyExt::boxed(StreamBody::new(first.chain(then))))
        }
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
static WRITES_TIMED_OUT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
                        let head = ResponseHead::parse(PASSED);
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
    max_connection_options: 8,
    min_body_rate: None,
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

/// Asserts that what `began` waiting took the `limit` of a timeout, to the
/// test server's tick (10 ms): not less, as a timeout is never early, and not
/// much more. The tests that call it run on tokio's paused clock, which the
/// timer reads: the times are exact, and no test sleeps them.
fn assert_took_the_limit(began: Instant, limit: Duration) {
    let took = began.elapsed();
    let tick = Duration::from_millis(10);
    assert!(
        took + tick >= limit && took <= limit + 2 * tick,
        "took {took:?} for a limit of {limit:?}"
    );
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

/// A client that expects a `100 Continue` (and sends its body at once, as
/// clients tired of waiting do) for a request answered before its body is
/// asked for: the body is asked for while the answer goes out, and no `100`
/// may land inside the answer.
#[tokio::test]
async fn a_100_continue_never_lands_inside_an_answer() {
    let addr = server(LIMITS).await;
    let got = exchange(
        addr,
        b"POST /answer-early HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\
          Connection: close\r\n\r\nbody",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");
    assert!(got.contains("early,"), "{got}");
    assert!(got.contains("then read Ok(4)"), "{got}");
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

#[tokio::test(start_paused = true)]
async fn a_slow_head_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let addr = server(Limits {
        header_timeout: Duration::from_millis(200),
        ..LIMITS
    })
    .await;
    // Half a head: closed, without an answer.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let began = Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?} {out:?}");
    assert_took_the_limit(began, Duration::from_millis(200));
    // Idle after an answer: closed as well.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let began = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(matches!(closed, Ok(Ok(_))), "{closed:?}");
    assert!(String::from_utf8_lossy(&out).ends_with("GET /one"));
    assert_took_the_limit(began, Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
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
    let began = Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(matches!(closed, Ok(Ok(_))), "not closed: {closed:?}");
    assert_took_the_limit(began, Duration::from_millis(300));
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with("error: no request body bytes for 0.3s"),
        "{answer}"
    );
}

#[test]
fn a_bodys_allowance_is_its_grace_and_a_second_for_every_rate_of_bytes() {
    let rate = MinRate {
        bytes_per_second: 500,
        grace: Duration::from_secs(20),
    };
    assert_eq!(rate.allowance(0), Duration::from_secs(20));
    assert_eq!(rate.allowance(250), Duration::from_millis(20_500));
    assert_eq!(rate.allowance(1000), Duration::from_secs(22));
    assert_eq!(rate.allowance(u64::MAX), Duration::MAX, "saturates");
    let zero = MinRate {
        bytes_per_second: 0,
        ..rate
    };
    assert_eq!(zero.allowance(1), Duration::from_secs(21), "taken as 1");
}

/// Sends `request`'s head and then its body a byte at a time, `every`
/// apart, on a new connection (until the server stops taking it); the
/// answer, read for up to `wait`.
async fn trickle(
    addr: std::net::SocketAddr,
    head: &'static [u8],
    body: &'static [u8],
    every: Duration,
    wait: Duration,
) -> String {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut reading, mut writing) = s.into_split();
    let writer = tokio::spawn(async move {
        writing.write_all(head).await?;
        for byte in body.chunks(1) {
            tokio::time::sleep(every).await;
            writing.write_all(byte).await?;
        }
        Ok::<_, io::Error>(writing)
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, reading.read_to_end(&mut out)).await;
    writer.abort();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(start_paused = true)]
async fn a_body_slower_than_its_lowest_rate_is_cut_off_though_it_never_stands_still() {
    let addr = server(Limits {
        body_timeout: Duration::from_millis(300),
        min_body_rate: Some(MinRate {
            bytes_per_second: 100,
            grace: Duration::from_millis(500),
        }),
        ..LIMITS
    })
    .await;
    // A byte every 100 ms (10 bytes/s): never still for the body timeout,
    // and done after ten seconds; about 0.6 s in, it has been waited for
    // longer than its grace and its bytes allow.
    let began = Instant::now();
    let answer = trickle(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        &[b'a'; 100],
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.ends_with("error: request body slower than 100 bytes/s"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(began.elapsed() < Duration::from_secs(5), "not cut off");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_keeps_its_rate_or_waits_for_its_reader_is_not_cut_off() {
    let addr = server(Limits {
        body_timeout: Duration::from_millis(300),
        min_body_rate: Some(MinRate {
            bytes_per_second: 10,
            grace: Duration::from_millis(200),
        }),
        ..LIMITS
    })
    .await;
    // Twenty bytes a byte per 50 ms: twice the lowest rate, for a second.
    let answer = trickle(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\nConnection: close\r\n\r\n",
        b"abcdefghijklmnopqrst",
        Duration::from_millis(50),
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.ends_with("\r\n\r\nabcdefghijklmnopqrst"), "{answer}");

    // Two bytes at once, then the last 250 ms later: the handler reads the
    // body only after 600 ms. It waits for the client 0 to 50 ms of that:
    // the time its reader was not reading is not the client's.
    let answer = trickle(
        addr,
        b"POST /late-echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nab",
        b"c",
        Duration::from_millis(650),
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.ends_with("\r\n\r\nabc"), "{answer}");
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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
        parse_request(&mut buf, 4096, 8).map(|p| {
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

/// A `Connection` value with a token that is not ASCII still says what its
/// other tokens say; a length given twice over, the same, is taken, and one
/// of its lines kept; a tunnel is not served.
#[test]
fn odd_heads_are_read_as_a_proxy_must_read_them() {
    use crate::fuzzing::{parse_request as parse, Framing};
    let mut buf =
        BytesMut::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: caf\u{e9}, close\r\n\r\n");
    let request = parse(&mut buf, 4096).unwrap().unwrap();
    assert!(!request.keep_alive, "the close went unheard");

    let mut buf = BytesMut::from(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\ncontent-length: 04\r\n\r\nbody",
    );
    let request = parse(&mut buf, 4096).unwrap().unwrap();
    assert_eq!(request.framing, Framing::Length(4));
    assert_eq!(
        request.head.headers.lines(),
        [
            ("Host".to_string(), "x".to_string()),
            ("Content-Length".to_string(), "4".to_string())
        ]
    );
    assert_eq!(request.head.headers.content_length(), Some(4));

    let mut buf = BytesMut::from("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n");
    let (status, reason) = parse(&mut buf, 4096).unwrap_err();
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not served here")
    );
}

/// A head with more `Connection` options than the limit (over all its
/// lines) is refused before anything else is made of it; one at the limit
/// is taken.
#[tokio::test]
async fn a_head_with_too_many_connection_options_is_refused() {
    let addr = server(LIMITS).await;
    let got = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: a, b, c, d\r\nConnection: e,f,,g, h, i\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(
        got.ends_with("\r\n\r\nmore than 8 Connection options\n"),
        "{got}"
    );
    let got = exchange(
        addr,
        b"GET /eight HTTP/1.1\r\nHost: x\r\nConnection: a, b, c, d\r\nConnection: e,f,,g, close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("GET /eight"), "{got}");
}
