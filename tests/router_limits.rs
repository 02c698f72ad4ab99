//! The router's caps under pressure, end to end: what a client can hold
//! (connections, requests in flight, a slow request body) and what stays
//! reachable for everyone else meanwhile. Clients come from several loopback
//! addresses (127.0.0.2, 127.0.0.3...), as different client addresses.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet;
use common::serve::Slum;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLUM: &str = env!("CARGO_BIN_EXE_slum");

/// A connection to `to` from the loopback address `source`.
async fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// Sends `request` on `s` and reads what comes back until `s` ends, or
/// `wait` passes; the answer as text.
async fn ask(s: &mut TcpStream, request: &str, wait: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        s.write_all(request.as_bytes()).await?;
        s.read_to_end(&mut out).await
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A GET of `path` with `host` on a new connection from `source`, answered
/// within `wait`; `None` when it cannot be sent or nothing comes.
async fn get_from(source: [u8; 4], to: SocketAddr, host: &str, path: &str) -> Option<String> {
    let mut s = connect_from(source, to).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    Some(ask(&mut s, &request, Duration::from_secs(5)).await).filter(|a| !a.is_empty())
}

/// A loopback address nothing listens on yet.
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

/// Raises this process's soft descriptor limit to its hard one: the tests
/// hold hundreds of connections.
fn raise_own_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `slum serve` as a child process whose descriptors are limited to
/// `limit`, soft and hard (as `prlimit --nofile=limit:limit` would).
struct Limited {
    child: Child,
    dir: tempfile::TempDir,
    router: SocketAddr,
    api: SocketAddr,
}

impl Limited {
    fn start(limit: u64) -> Limited {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let (router, api) = (free_addr(), free_addr());
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log file");
        let mut cmd = Command::new(SLUM);
        cmd.arg("serve")
            .arg("--database")
            .arg(dir.path().join("slum.db"))
            .arg("--listen")
            .arg(router.to_string())
            .arg("--api-listen")
            .arg(api.to_string())
            .arg("--token-file")
            .arg(dir.path().join("token"))
            .env_remove("SLUM_CONFIG")
            .env_remove("RUST_LOG")
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(
                move || match libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                },
            );
        }
        let child = cmd.spawn().expect("start slum serve");
        let mut serve = Limited {
            child,
            dir,
            router,
            api,
        };
        serve.wait_healthy();
        serve
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("slum serve exited ({status}):\n{}", self.log());
            }
            if api_get(self.api, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slum serve did not answer /health within 30s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of the metric line `name` (with its labels), if shown.
    fn metric(&self, name: &str) -> Option<f64> {
        let text = api_get(self.api, "/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits (up to 10 s) for the metric `name` to read `value`; the last
    /// reading.
    fn wait_metric(&self, name: &str, value: f64) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.metric(name);
            if now == Some(value) || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET of `path` on the management API at `api`, answered within 5 s.
fn api_get(api: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&api, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer).filter(|a| !a.is_empty())
}

/// Idle connections to `to` from `source`, `n` of them (those the router
/// refuses are among them, closed by the router).
async fn hold(source: [u8; 4], to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(connect_from(source, to).await.expect("connect"));
    }
    held
}

/// The finding: with 256 descriptors, 353 idle connections made the router
/// and the management API unreachable while they were held. Now the soft
/// limit is the hard one, and the router's caps (64 connections in all and
/// 32 per client address, from 256 descriptors) keep descriptors for the
/// API and for other clients.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_cannot_take_every_descriptor() {
    raise_own_descriptor_limit();
    let slum = tokio::task::block_in_place(|| Limited::start(256));
    let started = Instant::now();

    // One address holds 353 connections: 32 are kept, the rest refused.
    let mut one = hold([127, 0, 0, 2], slum.router, 353).await;
    let blocking = |f: &dyn Fn() -> Option<String>| tokio::task::block_in_place(f);
    let health = blocking(&|| api_get(slum.api, "/health"));
    assert!(
        health
            .as_deref()
            .is_some_and(|h| h.starts_with("HTTP/1.1 200")),
        "the management API is unreachable: {health:?}\n{}",
        slum.log()
    );
    let other = get_from([127, 0, 0, 3], slum.router, "nobody.test", "/").await;
    assert!(
        other
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 404 ")),
        "another client address is not served: {other:?}"
    );
    let per_client = "slum_router_connections_refused_total{reason=\"per_client\"}";
    let refused = blocking(&|| slum.wait_metric(per_client, 321.0).map(|v| v.to_string()));
    assert_eq!(refused.as_deref(), Some("321"), "{}", slum.log());
    // A refused connection is told why, and closed.
    let last = one.last_mut().expect("connections");
    let answer = ask(last, "", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\ntoo many connections from this address\n"),
        "{answer}"
    );

    // Ten more addresses, 32 connections each: the router stops at 64 in
    // all, and the API still answers.
    let mut many = Vec::new();
    for n in 4..14 {
        many.push(hold([127, 0, 0, n], slum.router, 32).await);
    }
    let total = "slum_router_connections_refused_total{reason=\"total\"}";
    let refused = blocking(&|| slum.wait_metric(total, 288.0).map(|v| v.to_string()));
    assert_eq!(refused.as_deref(), Some("288"), "{}", slum.log());
    let answer = ask(&mut many[9][31], "", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    let health = blocking(&|| api_get(slum.api, "/health"));
    assert!(
        health
            .as_deref()
            .is_some_and(|h| h.starts_with("HTTP/1.1 200")),
        "the management API is unreachable: {health:?}"
    );

    // Let go: connections are counted until they close, and no longer.
    drop(one);
    drop(many);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = get_from([127, 0, 0, 3], slum.router, "nobody.test", "/").await;
        if again.is_some_and(|a| a.starts_with("HTTP/1.1 404 ")) {
            break;
        }
        assert!(Instant::now() < deadline, "the caps were not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Refusals are not accept errors, and accept errors are not logged more
    // than once a second.
    let log = slum.log();
    let warnings = log.lines().filter(|l| l.contains("accept failed")).count();
    let seconds = started.elapsed().as_secs() as usize;
    assert!(warnings <= seconds + 1, "{warnings} warnings:\n{log}");
    assert!(
        log.contains("descriptors") && log.contains("256"),
        "the descriptor limit is not logged:\n{log}"
    );
}

/// One server with the tenant up.com running on it, behind a router with
/// `tweak`'s settings.
async fn up_com(
    tweak: impl FnOnce(&mut slum::serve::ServeArgs),
) -> Option<(slum::local_fleet::LocalFleet, Slum)> {
    let fleet = fleet(1).await?;
    let slum = Slum::start(tweak).await;
    slum.add_fleet(&fleet).await;
    slum.add_running_tenant("up.com", "s1").await;
    Some((fleet, slum))
}

/// The count of `slum_router_requests_refused_total` for `reason`.
fn refused(slum: &Slum, reason: &str) -> String {
    let line = format!("slum_router_requests_refused_total{{reason=\"{reason}\"}} ");
    let metrics = slum.state.metrics.render();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or("none")
        .to_owned()
}

/// An upload to up.com from `source` that sends `sent` of its `length`
/// bytes and then waits: a request in flight until its connection closes.
async fn upload(source: [u8; 4], slum: &Slum, length: usize, sent: &str) -> TcpStream {
    let mut s = connect_from(source, slum.router).await.expect("connect");
    let head =
        format!("POST /count HTTP/1.1\r\nHost: up.com\r\nContent-Length: {length}\r\n\r\n{sent}");
    s.write_all(head.as_bytes()).await.expect("send");
    s
}

/// Waits (up to 10 s) for s1's requests in flight through `slum` to be `n`.
async fn in_flight_on_s1(slum: &Slum, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = slum
            .state
            .routes
            .current()
            .upstream("s1")
            .map(|u| u.load.in_flight());
        if now == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{now:?} in flight, not {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The finding: the body timeout counts pauses, so 4 bytes over 165 s kept
/// a request open. A body trickling in at a byte a second now gets 408 once
/// it has been waited for longer than its grace (2 s here) and its bytes
/// allow at 500 bytes/s, well before the body timeout (60 s).
#[tokio::test]
async fn a_body_trickling_in_is_answered_408_well_before_the_body_timeout() {
    let Some((_fleet, slum)) = up_com(|a| a.body_rate_grace = Some(2.0)).await else {
        return;
    };
    let s = upload([127, 0, 0, 2], &slum, 100, "").await;
    let (mut reading, mut writing) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writing.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(30), reading.read_to_end(&mut answer)).await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer within 30 s: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nrequest body slower than 500 bytes/s\n"),
        "{answer}"
    );
    assert_eq!(refused(&slum, "body_too_slow"), "1");
    assert_eq!(refused(&slum, "body_timeout"), "0");
    in_flight_on_s1(&slum, 0).await;
}

/// The finding: 300 slow uploads held 300 connections to one server. Past
/// the server's cap on requests in flight (3 here), requests to it get 503
/// with Retry-After, whoever sends them, until those in flight end, however
/// they end.
#[tokio::test]
async fn requests_beyond_a_servers_cap_get_503_until_those_in_flight_end() {
    let Some((_fleet, slum)) = up_com(|a| a.max_in_flight_per_server = Some(3)).await else {
        return;
    };
    let mut uploads = Vec::new();
    for n in 2..5 {
        uploads.push(upload([127, 0, 0, n], &slum, 10, "ab").await);
    }
    in_flight_on_s1(&slum, 3).await;
    for n in 5..7 {
        let mut s = upload([127, 0, 0, n], &slum, 3, "abc").await;
        let answer = ask(&mut s, "", Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("\r\nretry-after: 1\r\n"), "{answer}");
        assert!(
            answer.ends_with("\r\n\r\nthe service is busy; retry later\n"),
            "{answer}"
        );
    }
    let get = get_from([127, 0, 0, 7], slum.router, "up.com", "/").await;
    assert!(
        get.as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 503 ")),
        "{get:?}"
    );
    assert_eq!(refused(&slum, "server_in_flight"), "3");

    // One upload finishes and is answered; one client leaves; the third
    // stays. Each that ended gave its place back.
    let mut done = uploads.remove(0);
    let answer = ask(&mut done, "cdefghij", Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\n10\n"), "{answer}");
    drop(uploads.remove(0));
    in_flight_on_s1(&slum, 1).await;
    let get = get_from([127, 0, 0, 7], slum.router, "up.com", "/").await;
    assert!(
        get.as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200 ")),
        "{get:?}"
    );
    drop(uploads);
    in_flight_on_s1(&slum, 0).await;
}

/// Past its cap on requests in flight (2 here), a client address gets 429
/// while another address is served.
#[tokio::test]
async fn a_client_address_over_its_cap_gets_429_while_another_is_served() {
    let Some((_fleet, slum)) = up_com(|a| a.max_in_flight_per_client = Some(2)).await else {
        return;
    };
    let held = [
        upload([127, 0, 0, 2], &slum, 10, "ab").await,
        upload([127, 0, 0, 2], &slum, 10, "ab").await,
    ];
    in_flight_on_s1(&slum, 2).await;
    let third = get_from([127, 0, 0, 2], slum.router, "up.com", "/").await;
    assert!(
        third
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 429 ")
                && a.contains("\r\nretry-after: 1\r\n")
                && a.ends_with(
                    "\r\n\r\ntoo many requests in flight from this address; retry later\n"
                )),
        "{third:?}"
    );
    let other = get_from([127, 0, 0, 3], slum.router, "up.com", "/").await;
    assert!(
        other
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200 ")),
        "{other:?}"
    );
    assert_eq!(refused(&slum, "client_in_flight"), "1");
    drop(held);
    in_flight_on_s1(&slum, 0).await;
    let again = get_from([127, 0, 0, 2], slum.router, "up.com", "/").await;
    assert!(
        again
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200 ")),
        "{again:?}"
    );
}
