//! The router at the edge, attacked as a public edge is: raw bytes on raw
//! sockets to a real `slum serve`, in front of a real tenement server whose
//! traffic passes through a recording relay (a TCP relay that keeps every
//! byte the router sent it). Each case of the table says what the client
//! sends, the statuses it must get back, and what the server must (not) have
//! received: framing and smuggling, Host and request-target tricks, header
//! lookalikes, heads that cost too much. Cases that held before they were
//! written down are here too, so that they stay held.
//!
//! Two more tests use a stand-in server whose answers are scripted byte by
//! byte: a server that answers before the request's head is all in, and one
//! whose response head is too large.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fleet;
use common::serve::Slum;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one connection carried towards the server.
type Record = Arc<Mutex<Vec<u8>>>;

/// A TCP relay to a server that records what it is sent, connection by
/// connection.
struct Relay {
    addr: SocketAddr,
    /// Each connection's record, in the order they were accepted.
    conns: Arc<Mutex<Vec<Record>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Record>>> = Arc::default();
        let all = Arc::clone(&conns);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(to).await else {
                    continue;
                };
                let record = Record::default();
                lock(&all).push(Arc::clone(&record));
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                lock(&record).extend_from_slice(&buf[..n]);
                                if to_server.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = to_server.shutdown().await;
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    let _ = to_client.shutdown().await;
                });
            }
        });
        Relay { addr, conns }
    }

    /// How much each connection has carried so far.
    fn mark(&self) -> Vec<usize> {
        lock(&self.conns).iter().map(|c| lock(c).len()).collect()
    }

    /// What the router's connections carried since `mark`, lower-cased. The
    /// router's requests are those with its `X-Forwarded-Proto`: the
    /// orchestrator's calls to tenement's API (health checks) have none.
    fn routed_since(&self, mark: &[usize]) -> String {
        let mut out = Vec::new();
        for (i, conn) in lock(&self.conns).iter().enumerate() {
            let bytes = lock(conn);
            let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
            if !text.contains("x-forwarded-proto: http\r\n") {
                continue;
            }
            let from = mark.get(i).copied().unwrap_or(0);
            out.extend_from_slice(&bytes[from..]);
        }
        String::from_utf8_lossy(&out).to_ascii_lowercase()
    }
}

/// One attack: what the client sends on a fresh connection, the statuses
/// it reads back (in order, until the router closes the connection), and
/// what the server must and must not have received (lower case).
struct Case {
    name: &'static str,
    send: Vec<u8>,
    answers: Vec<u16>,
    /// Requests the server received; `None` when a body breaking off after
    /// its head went on makes the count moot.
    forwarded: Option<usize>,
    has: Vec<&'static str>,
    lacks: Vec<&'static str>,
    /// Lines the server received exactly once.
    once: Vec<&'static str>,
}

fn case(name: &'static str, send: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        send: send.into(),
        answers: Vec::new(),
        forwarded: Some(0),
        has: Vec::new(),
        lacks: Vec::new(),
        once: Vec::new(),
    }
}

impl Case {
    fn answers(mut self, statuses: &[u16]) -> Case {
        self.answers = statuses.to_vec();
        self
    }

    fn forwarded(mut self, n: Option<usize>) -> Case {
        self.forwarded = n;
        self
    }

    fn has(mut self, what: &[&'static str]) -> Case {
        self.has.extend_from_slice(what);
        self
    }

    fn lacks(mut self, what: &[&'static str]) -> Case {
        self.lacks.extend_from_slice(what);
        self
    }

    fn once(mut self, what: &[&'static str]) -> Case {
        self.once.extend_from_slice(what);
        self
    }
}

/// A request for acme.com with these header lines (each ending in CRLF)
/// and body, on a connection the client closes after it.
fn acme(method_and_target: &str, lines: &str, body: &str) -> String {
    format!(
        "{method_and_target} HTTP/1.1\r\nHost: acme.com\r\n{lines}Connection: close\r\n\r\n{body}"
    )
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: acme.com\r\n\r\n";

/// The cases. Statuses are the router's: 400 for a malformed request, 405
/// for CONNECT, 417 for an expectation it cannot meet, 431 for a head too
/// large, 501 for a transfer coding it does not take.
fn cases() -> Vec<Case> {
    let smuggled_after_zero = format!("0\r\n\r\n{SMUGGLED}");
    // 10,445 Connection options in a head under 64 KiB: each named header
    // would be looked for among every line.
    let options: Vec<String> = (0..10_445).map(|i| format!("x{i:x}")).collect();
    let amplified = options
        .chunks(110)
        .map(|c| format!("Connection: {}\r\n", c.join(",")))
        .collect::<String>();
    let too_many_lines = (0..101)
        .map(|i| format!("X-{i}: {i}\r\n"))
        .collect::<String>();
    vec![
        // ---- Framing and smuggling ----
        case(
            "Content-Length with Transfer-Encoding",
            acme(
                "POST /",
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                &smuggled_after_zero,
            ),
        )
        .answers(&[400])
        .lacks(&["/smuggled"]),
        case(
            "Transfer-Encoding before Content-Length",
            acme(
                "POST /",
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                &smuggled_after_zero,
            ),
        )
        .answers(&[400]),
        case(
            "chunked, identity",
            acme(
                "POST /",
                "Transfer-Encoding: chunked, identity\r\n",
                &smuggled_after_zero,
            ),
        )
        .answers(&[501]),
        case(
            "identity",
            acme("POST /", "Transfer-Encoding: identity\r\n", "hello"),
        )
        .answers(&[501]),
        case(
            "xchunked",
            acme(
                "POST /",
                "Transfer-Encoding: xchunked\r\n",
                &smuggled_after_zero,
            ),
        )
        .answers(&[501]),
        case(
            "chunked twice",
            acme(
                "POST /",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                &smuggled_after_zero,
            ),
        )
        .answers(&[501]),
        case(
            "a transfer coding in HTTP/1.0",
            format!(
                "POST / HTTP/1.0\r\nHost: acme.com\r\nTransfer-Encoding: chunked\r\n\r\n{smuggled_after_zero}"
            ),
        )
        .answers(&[400]),
        case(
            "chunked in capitals goes on chunked",
            acme(
                "POST /count",
                "Transfer-Encoding: Chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .has(&["transfer-encoding: chunked\r\n", "hello"]),
        case(
            "a signed Content-Length",
            acme("POST /", "Content-Length: +5\r\n", "hello"),
        )
        .answers(&[400]),
        case(
            "a Content-Length list",
            acme("POST /", "Content-Length: 5, 5\r\n", "hello"),
        )
        .answers(&[400]),
        case(
            "conflicting Content-Lengths",
            acme(
                "POST /",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                "hello!",
            ),
        )
        .answers(&[400]),
        case(
            "identical Content-Lengths go on as one",
            acme(
                "POST /count",
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                "hello",
            ),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .once(&["content-length: 5\r\n"]),
        case(
            "an obs-folded line",
            acme("GET /", "X-Folded: a\r\n  folded\r\n", ""),
        )
        .answers(&[400]),
        case(
            "bare LF line ends go on as CRLF",
            "GET /lf HTTP/1.1\nHost: acme.com\nConnection: close\n\n",
        )
        .answers(&[200])
        .forwarded(Some(1))
        .has(&["get /lf http/1.1\r\n"]),
        case(
            "a bare CR in the head",
            "GET / HTTP/1.1\rHost: acme.com\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "a NUL in a header value",
            acme("GET /", "X-Nul: a\0b\r\n", ""),
        )
        .answers(&[400]),
        case(
            "a NUL in the target",
            "GET /a\0b HTTP/1.1\r\nHost: acme.com\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "a bare LF after a chunk size",
            acme(
                "POST /count",
                "Transfer-Encoding: chunked\r\n",
                &format!("5\nhello\r\n{smuggled_after_zero}"),
            ),
        )
        .answers(&[400])
        .forwarded(None)
        .lacks(&["/smuggled"]),
        case(
            "an invalid chunk size",
            acme(
                "POST /count",
                "Transfer-Encoding: chunked\r\n",
                &format!("zz\r\nhello\r\n{smuggled_after_zero}"),
            ),
        )
        .answers(&[400])
        .forwarded(None)
        .lacks(&["/smuggled"]),
        case(
            "a chunk size that overflows",
            acme(
                "POST /count",
                "Transfer-Encoding: chunked\r\n",
                &format!("fffffffffffffffff1\r\nhello\r\n{smuggled_after_zero}"),
            ),
        )
        .answers(&[400])
        .forwarded(None)
        .lacks(&["/smuggled"]),
        case(
            "a negative chunk size",
            acme(
                "POST /count",
                "Transfer-Encoding: chunked\r\n",
                &format!("-1\r\nhello\r\n{smuggled_after_zero}"),
            ),
        )
        .answers(&[400])
        .forwarded(None)
        .lacks(&["/smuggled"]),
        case(
            "a chunk extension without end",
            acme(
                "POST /count",
                "Transfer-Encoding: chunked\r\n",
                &format!("5;ext={}\r\nhello\r\n0\r\n\r\n", "e".repeat(4096)),
            ),
        )
        .answers(&[400])
        .forwarded(None)
        .lacks(&["eeee"]),
        case(
            "chunk extensions are not passed on",
            acme(
                "POST /count",
                "Transfer-Encoding: chunked\r\n",
                "5;name=value\r\nhello\r\n0\r\n\r\n",
            ),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .has(&["hello"])
        .lacks(&["name=value"]),
        case(
            "trailers are not passed on",
            acme(
                "POST /count",
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\nX-Trailer: evil\r\n\r\n",
            ),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .lacks(&["x-trailer", "evil"]),
        case(
            "a trailer ending in a bare LF",
            acme(
                "POST /count",
                "Transfer-Encoding: chunked\r\n",
                &format!("5\r\nhello\r\n0\r\nX-Trailer: a\n\r\n{SMUGGLED}"),
            ),
        )
        .answers(&[400])
        .forwarded(None)
        .lacks(&["/smuggled"]),
        // ---- Host and the request target ----
        case(
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: acme.com\r\nHost: other.com\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case("no Host", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").answers(&[400]),
        case(
            "a Host with userinfo",
            "GET / HTTP/1.1\r\nHost: user@acme.com\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "a Host with another host after @",
            "GET / HTTP/1.1\r\nHost: acme.com@evil.example\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "a Host with two ports",
            "GET / HTTP/1.1\r\nHost: acme.com:80:80\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "a Host with an empty port",
            "GET / HTTP/1.1\r\nHost: acme.com:\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "a Host with a space inside",
            "GET / HTTP/1.1\r\nHost: acme.com evil.example\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "a Host in capitals with a port and a trailing dot",
            "GET / HTTP/1.1\r\nHost: ACME.com.:8080\r\nConnection: close\r\n\r\n",
        )
        .answers(&[200])
        .forwarded(Some(1))
        .has(&["x-forwarded-host: acme.com\r\n"]),
        case(
            "an absolute-form target for another host than Host",
            "GET http://other.example/ HTTP/1.1\r\nHost: acme.com\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "a Host for another host than the absolute-form target",
            "GET http://acme.com/ HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "an absolute-form target that agrees with Host",
            "GET http://acme.com:80/path?q=1 HTTP/1.1\r\nHost: ACME.com\r\nConnection: close\r\n\r\n",
        )
        .answers(&[200])
        .forwarded(Some(1))
        .has(&["get /path?q=1 http/1.1\r\n"])
        .lacks(&["http://"]),
        case(
            "an absolute-form target without Host",
            "GET http://acme.com/path HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .answers(&[200])
        .forwarded(Some(1))
        .has(&["get /path http/1.1\r\n"]),
        case(
            "an absolute-form target with userinfo",
            "GET http://evil@acme.com/ HTTP/1.1\r\nHost: acme.com\r\nConnection: close\r\n\r\n",
        )
        .answers(&[400]),
        case(
            "CONNECT",
            "CONNECT acme.com:443 HTTP/1.1\r\nHost: acme.com:443\r\n\r\n",
        )
        .answers(&[405]),
        // ---- Heads that cost too much ----
        case(
            "a head over 64 KiB",
            acme("GET /", &format!("X-Big: {}\r\n", "a".repeat(70 * 1024)), ""),
        )
        .answers(&[431]),
        case("101 header lines", acme("GET /", &too_many_lines, "")).answers(&[431]),
        case(
            "10,445 Connection options",
            acme("GET /", &amplified, ""),
        )
        .answers(&[400]),
        case(
            "an expectation other than 100-continue",
            acme("POST /count", "Expect: something\r\nContent-Length: 5\r\n", "hello"),
        )
        .answers(&[417]),
        case(
            "Expect: 100-continue gets its 100 before the answer",
            acme(
                "POST /count",
                "Expect: 100-continue\r\nContent-Length: 5\r\n",
                "hello",
            ),
        )
        .answers(&[100, 200])
        .forwarded(Some(1))
        .has(&["hello"]),
        // ---- Connections ----
        case(
            "HTTP/1.0 keep-alive carries a second request",
            "GET /one HTTP/1.0\r\nHost: acme.com\r\nConnection: keep-alive\r\n\r\n\
             GET /two HTTP/1.0\r\nHost: acme.com\r\n\r\n",
        )
        .answers(&[200, 200])
        .forwarded(Some(2))
        .has(&["get /one ", "get /two "]),
        case(
            "HTTP/1.0 without keep-alive ends the connection",
            format!("GET /one HTTP/1.0\r\nHost: acme.com\r\n\r\n{SMUGGLED}"),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .lacks(&["/smuggled"]),
        case(
            "pipelined requests are answered in order",
            format!(
                "GET /one HTTP/1.1\r\nHost: acme.com\r\n\r\n{}",
                acme("GET /two", "", "")
            ),
        )
        .answers(&[200, 200])
        .forwarded(Some(2)),
        case(
            "nothing after a malformed pipelined request",
            format!("GET /one HTTP/1.1\r\nHost: acme.com\r\n\r\nGARBAGE\r\n\r\n{SMUGGLED}"),
        )
        .answers(&[200, 400])
        .forwarded(Some(1))
        .lacks(&["/smuggled"]),
        case(
            "nothing after a broken chunked body",
            format!(
                "POST /count HTTP/1.1\r\nHost: acme.com\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\nzz\r\n{SMUGGLED}"
            ),
        )
        .answers(&[400])
        .forwarded(None)
        .lacks(&["/smuggled"]),
        case(
            "Connection: close with a non-ASCII option still closes",
            format!(
                "GET /one HTTP/1.1\r\nHost: acme.com\r\nConnection: close, caf\u{e9}\r\n\r\n{SMUGGLED}"
            ),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .lacks(&["/smuggled"]),
        // ---- Headers passed on ----
        case(
            "forwarding headers spelt with underscores",
            acme(
                "GET /",
                "X_Forwarded_For: 203.0.113.66\r\nX-Forwarded_For: 203.0.113.67\r\n\
                 X_Real_IP: 203.0.113.68\r\nX-Real_Ip: 203.0.113.69\r\n\
                 X_Forwarded_Host: evil.example\r\nX_Forwarded_Proto: https\r\n",
                "",
            ),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .has(&[
            "x-forwarded-for: 127.0.0.1\r\n",
            "x-forwarded-host: acme.com\r\n",
            "x-forwarded-proto: http\r\n",
        ])
        .lacks(&["203.0.113", "evil.example", "https", "x_"]),
        case(
            "the client's forwarding headers",
            acme(
                "GET /",
                "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil.example\r\n\
                 X-Forwarded-Proto: https\r\nX-Real-IP: 203.0.113.8\r\nForwarded: for=203.0.113.7\r\n",
                "",
            ),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .has(&["x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n"])
        .lacks(&["evil.example", "https", "203.0.113.8", "203.0.113.7"]),
        case(
            "Proxy-Connection is hop-by-hop",
            acme("GET /", "Proxy-Connection: keep-alive\r\n", ""),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .lacks(&["proxy-connection"]),
        case(
            "hop-by-hop headers and those Connection names",
            acme(
                "GET /",
                "Connection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
                 Trailer: X-Sum\r\nProxy-Authorization: Basic YTpi\r\n",
                "",
            ),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .lacks(&[
            "x-secret",
            "keep-alive",
            "te: trailers",
            "trailer:",
            "proxy-authorization",
        ]),
        case(
            "a Connection option next to a non-ASCII one",
            acme("GET /", "Connection: X-Secret, caf\u{e9}\r\nX-Secret: 1\r\n", ""),
        )
        .answers(&[200])
        .forwarded(Some(1))
        .lacks(&["x-secret"]),
        case(
            "an h2c upgrade goes on as a plain request",
            "GET /h2c HTTP/1.1\r\nHost: acme.com\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        .answers(&[200])
        .forwarded(Some(1))
        .has(&["get /h2c http/1.1\r\n"])
        .lacks(&["h2c\r\n", "http2-settings", "upgrade"]),
    ]
}

/// The statuses of the responses in `raw`, in order (interim ones too),
/// each read past its body.
fn statuses(mut raw: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = resp.parse(raw) else {
            panic!(
                "not a response: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(300)])
            );
        };
        let code = resp.code.unwrap_or(0);
        out.push(code);
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        let length = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        raw = &raw[len..];
        if code < 200 {
            continue;
        }
        if chunked {
            loop {
                let Ok(httparse::Status::Complete((at, size))) = httparse::parse_chunk_size(raw)
                else {
                    panic!("a broken chunked body");
                };
                raw = &raw[at + size as usize + 2..];
                if size == 0 {
                    break;
                }
            }
        } else {
            raw = &raw[length.unwrap_or(raw.len()).min(raw.len())..];
        }
    }
    out
}

/// Sends `bytes` on a new connection to `router` and reads until the
/// router ends it (`false` with what came if it does not within 10 s).
async fn exchange(router: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(router).await.unwrap();
    // The router may refuse, and close, before it has read everything.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (out, read.is_ok())
}

#[tokio::test]
async fn attacks_at_the_edge_are_refused_or_defused() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let server = &fleet.servers[0];
    let ten: SocketAddr = server.url().trim_start_matches("http://").parse().unwrap();
    let relay = Relay::start(ten).await;
    // A case that leaves its connection open (keep-alive) is closed by the
    // router once it has been idle this long: well inside the 10 s that
    // `exchange` waits for the close.
    let slum = Slum::start(|a| a.header_timeout = Some(3.0)).await;
    let mut record = server.record();
    record.url = format!("http://{}", relay.addr);
    slum.db().add_server(&record).await.unwrap();
    slum.state.fleet_changed().await;
    slum.add_running_tenant("acme.com", "s1").await;
    assert_eq!(slum.get("acme.com", "/").await.0, 200);

    let mut failed = Vec::new();
    for case in cases() {
        let mark = relay.mark();
        let (raw, ended) = exchange(slum.router, &case.send).await;
        // What the router sent has reached the relay by the time its answer
        // came back through it; a little more time for what it may have
        // sent after the answer.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = statuses(&raw);
        let received = relay.routed_since(&mark);
        let forwarded = received.matches("x-forwarded-proto: http\r\n").count();
        let mut wrong = Vec::new();
        if !ended {
            wrong.push("the router kept the connection open".to_owned());
        }
        if got != case.answers {
            wrong.push(format!("answered {got:?}, not {:?}", case.answers));
        }
        if case.forwarded.is_some_and(|n| n != forwarded) {
            wrong.push(format!(
                "{forwarded} requests reached the server, not {:?}",
                case.forwarded
            ));
        }
        for s in &case.has {
            if !received.contains(s) {
                wrong.push(format!("the server did not receive {s:?}"));
            }
        }
        for s in &case.lacks {
            if received.contains(s) {
                wrong.push(format!("the server received {s:?}"));
            }
        }
        for s in &case.once {
            let n = received.matches(s).count();
            if n != 1 {
                wrong.push(format!("the server received {s:?} {n} times"));
            }
        }
        if !wrong.is_empty() {
            failed.push(format!(
                "{}: {}\n  answer: {:?}\n  server got: {:?}",
                case.name,
                wrong.join("; "),
                String::from_utf8_lossy(&raw[..raw.len().min(400)]),
                &received[..received.len().min(600)],
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// A stand-in for a tenement server: it answers tenement's API as far as a
/// spawn of `tenant` needs (each call on a connection of its own, closed
/// after), and hands each other connection to `routed`, with the bytes read
/// of it so far (at least the first of its request). Its connections take
/// little before they push back: a request head is read as slowly as
/// `routed` reads it.
async fn stand_in<F, Fut>(tenant: &'static str, routed: F) -> SocketAddr
where
    F: Fn(TcpStream, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let addr = listener.local_addr().unwrap();
    let routed = Arc::new(routed);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let routed = Arc::clone(&routed);
            tokio::spawn(async move {
                let mut first = vec![0u8; 4096];
                let n = stream.read(&mut first).await.unwrap_or(0);
                first.truncate(n);
                let line = String::from_utf8_lossy(&first)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                if path.starts_with("/api/") || path.ends_with("/health") {
                    tenement_api(stream, first, &path, tenant).await;
                } else {
                    routed(stream, first).await;
                }
            });
        }
    });
    addr
}

/// Answers a call to tenement's API (its head and body read whole first)
/// as a server with `tenant`'s instance running would, and closes.
async fn tenement_api(mut stream: TcpStream, mut read: Vec<u8>, path: &str, tenant: &str) {
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&read).to_ascii_lowercase();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => read.extend_from_slice(&buf[..n]),
        }
    }
    let body = if path == "/api/instances/spawn" {
        format!(r#"{{"instance":"api:{tenant}","port":30000}}"#)
    } else if path.ends_with("/health") {
        format!(r#"{{"instance":"api:{tenant}","health":"healthy"}}"#)
    } else if path == "/api/instances" {
        "[]".to_owned()
    } else {
        "{}".to_owned()
    };
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// `slum serve` (with `tweak`) in front of a stand-in server `st` whose
/// routed connections `routed` serves, with the tenant `{tenant}.com` on it.
async fn slum_before_a_stand_in<F, Fut>(
    tenant: &'static str,
    tweak: impl FnOnce(&mut slum::serve::ServeArgs),
    routed: F,
) -> Slum
where
    F: Fn(TcpStream, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = stand_in(tenant, routed).await;
    let slum = Slum::start(tweak).await;
    slum.db()
        .add_server(&slum::Server {
            id: "st".into(),
            url: format!("http://{addr}"),
            capacity_mb: 1024,
            domain: Some("st.fleet.test".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    slum.add_tenant(&format!("{tenant}.com"), "st").await;
    slum
}

/// Reads from `stream` until its request head has come whole.
async fn read_head(stream: &mut TcpStream, mut read: Vec<u8>) {
    let mut buf = vec![0u8; 64 * 1024];
    while !read.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // Only the end is looked for: keep its last bytes.
                let keep = read.len().saturating_sub(3);
                read.drain(..keep);
                read.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// A request whose client waits for `100 Continue`, with a head too large
/// for the router to send on at once, to a server that answers before it
/// has read the head: the router passes the answer on while it is still
/// sending the head, and asks for the body only once the head is out, in
/// the middle of the answer. No `100 Continue` may be written there.
#[tokio::test]
async fn a_100_continue_never_lands_inside_an_early_answer() {
    let slum = slum_before_a_stand_in(
        "early",
        |a| a.max_header_bytes = Some(8 << 20),
        |mut stream, first| async move {
            if first.starts_with(b"GET /warm") {
                read_head(&mut stream, first).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                return;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nearly,")
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            read_head(&mut stream, first).await;
            // Time for the router to ask for the body, now that the head
            // is out.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = stream.write_all(b"later").await;
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        },
    )
    .await;
    // The first request wakes the tenant.
    assert_eq!(slum.get("early.com", "/warm").await.0, 200);

    // 3 MiB of head: more than loopback's send buffer holds.
    let big = (0..90)
        .map(|i| format!("X-Big-{i}: {}\r\n", "b".repeat(35 * 1024)))
        .collect::<String>();
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: early.com\r\nContent-Length: 4\r\n\
         Expect: 100-continue\r\n{big}\r\n"
    );
    // The client waits for its 100 (and sends its body only then).
    let (raw, ended) = exchange(slum.router, request.as_bytes()).await;
    let answer = String::from_utf8_lossy(&raw);
    assert!(ended, "the router kept the connection open: {answer}");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(answer.ends_with("\r\n\r\nearly,later"), "{answer}");
}
