//! The router against a fake control plane: no fleet database and no tenement
//! server. The fake's route table sends requests to plain HTTP servers on
//! loopback, and it records what the router asked of it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Mutex;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::route_table::{DomainRoute, RouteTable};
use super::*;
use crate::fleet::model::{Instance, Server, ServerStatus, Tenant};
use crate::lock;

/// A control plane that answers from a table the test gives it, and keeps
/// what the router asked.
#[derive(Default)]
struct FakeControl {
    table: ArcSwap<RouteTable>,
    /// The table a wake puts in force; without one, the wake fails.
    after_wake: Mutex<Option<RouteTable>>,
    woken: Mutex<Vec<DomainRoute>>,
    unreachable: Mutex<Vec<String>>,
    /// Servers declared offline.
    offline: tokio::sync::watch::Sender<Vec<String>>,
}

impl FakeControl {
    fn routing(table: RouteTable) -> Arc<FakeControl> {
        let fake = FakeControl::default();
        fake.table.store(Arc::new(table));
        Arc::new(fake)
    }
}

#[async_trait]
impl ControlPlane for FakeControl {
    fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    fn is_current(&self, table: &Arc<RouteTable>) -> bool {
        Arc::ptr_eq(&self.table.load(), table)
    }

    async fn wake(&self, route: &DomainRoute) -> Result<(), String> {
        lock(&self.woken).push(route.clone());
        match lock(&self.after_wake).take() {
            Some(table) => {
                self.table.store(Arc::new(table));
                Ok(())
            }
            None => Err("no room on any server".into()),
        }
    }

    async fn server_unreachable(&self, server: &str) {
        lock(&self.unreachable).push(server.to_owned());
    }

    async fn until_offline(&self, server: &str) {
        let mut offline = self.offline.subscribe();
        let _ = offline.wait_for(|o| o.iter().any(|s| s == server)).await;
    }
}

/// A stand-in for a tenement server: answers every request with
/// `{name} got Host {host}`.
async fn app(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let answer = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = format!("{name} got Host {host}");
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), answer)
                    .await;
            });
        }
    });
    addr
}

/// A server that takes connections and never answers.
async fn hung() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A server that answers every request with a head saying 10 bytes of body
/// and the first 5 of them, then nothing more: a server that stopped between
/// its head and its body.
async fn stops_midway() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
                .await;
            held.push(stream);
        }
    });
    addr
}

/// An address nothing listens on.
async fn closed() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn server(id: &str, addr: SocketAddr) -> Server {
    Server {
        id: id.into(),
        url: format!("http://{addr}"),
        domain: Some(format!("{id}.fleet.test")),
        status: ServerStatus::Online,
        ..Default::default()
    }
}

/// acme.test, routed to tenant acme's process api, instance prod, at home
/// on east.
fn acme() -> Tenant {
    Tenant {
        domain: "acme.test".into(),
        name: "acme".into(),
        server_id: "east".into(),
        process: "api".into(),
        instance_id: "prod".into(),
        ..Default::default()
    }
}

fn instance(id: &str, server: &str) -> Instance {
    Instance {
        tenant: "acme".into(),
        instance_id: id.into(),
        process: "api".into(),
        server_id: server.into(),
        ..Default::default()
    }
}

/// A router on loopback in front of `control`, with one thread.
async fn router(control: Arc<FakeControl>) -> SocketAddr {
    router_with(control, |_| {}).await.0
}

/// A router on loopback in front of `control`, with one thread and the
/// settings `tweak` makes; its address and its metrics.
async fn router_with(
    control: Arc<FakeControl>,
    tweak: impl FnOnce(&mut RouterConfig),
) -> (SocketAddr, Arc<Metrics>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = RouterConfig {
        threads: 1,
        header_timeout: Duration::from_secs(5),
        max_header_bytes: 64 * 1024,
        max_connection_options: 32,
        body_timeout: Duration::from_secs(5),
        min_body_rate: None,
        max_connections: 1000,
        max_connections_per_client: 1000,
        max_in_flight_per_server: 1000,
        max_in_flight_per_client: 1000,
        upstream_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        whole_response_bytes: 64 * 1024,
        shutdown_grace: Duration::from_secs(1),
        server_roots: None,
        h2_max_streams: 128,
        https_redirect: false,
        hsts: None,
    };
    tweak(&mut config);
    let metrics = Arc::new(Metrics::new());
    let served = Arc::clone(&metrics);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // Serves until the test's runtime ends.
        let _stop = stop;
        serve(
            Listeners::plain(listener),
            control,
            served,
            &config,
            stopped,
        )
        .await
    });
    (addr, metrics)
}

/// The log lines of this test binary, captured for all its tests: the
/// router's threads log through the global subscriber.
mod logs {
    use std::sync::{Mutex, Once};

    static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    struct Capture;

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            crate::lock(&CAPTURED).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Starts capturing (once for the binary).
    pub(super) fn capture() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| Capture)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
    }

    /// The captured lines that hold `needle`.
    pub(super) fn lines_with(needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&crate::lock(&CAPTURED))
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// The request id a public error answer gives in its body, checked against
/// its `X-Request-Id` header.
fn request_id(answer: &str) -> String {
    let id = answer
        .rsplit_once("(request id ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no request id in {answer}"));
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("\r\nx-request-id: {id}\r\n")),
        "{answer}"
    );
    id
}

/// The whole answer to a GET of `/` with Host `host`.
async fn get(router: SocketAddr, host: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(router).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the router answers")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_request_goes_where_the_control_planes_table_routes_it() {
    let east = app("east").await;
    let control = FakeControl::routing(RouteTable::build(
        1,
        &[server("east", east)],
        &[acme()],
        &[instance("prod", "east")],
    ));
    let router = router(Arc::clone(&control)).await;

    let answer = get(router, "acme.test").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\neast got Host acme.api.east.fleet.test"),
        "{answer}"
    );
    let answer = get(router, "nobody.test").await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    assert!(
        answer.ends_with("no tenant has the domain 'nobody.test'\n"),
        "{answer}"
    );
    assert!(lock(&control.woken).is_empty());
    assert!(lock(&control.unreachable).is_empty());
}

#[tokio::test]
async fn a_tenant_without_an_instance_is_woken_by_the_control_plane_then_forwarded() {
    let east = app("east").await;
    let control = FakeControl::routing(RouteTable::build(
        1,
        &[server("east", east)],
        &[acme()],
        &[],
    ));
    *lock(&control.after_wake) = Some(RouteTable::build(
        2,
        &[server("east", east)],
        &[acme()],
        &[instance("prod", "east")],
    ));
    let router = router(Arc::clone(&control)).await;

    let answer = get(router, "acme.test").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with("east got Host acme.api.east.fleet.test"),
        "{answer}"
    );
    let woken = DomainRoute {
        tenant: "acme".into(),
        process: "api".into(),
        instance_id: "prod".into(),
        home_server: "east".into(),
    };
    assert_eq!(*lock(&control.woken), std::slice::from_ref(&woken));
    // Awake now: the next request is forwarded without another wake.
    let answer = get(router, "acme.test").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(*lock(&control.woken), [woken]);
}

/// The client is told in general terms, with a request id; the reason is in
/// the log line of that id.
#[tokio::test]
async fn a_wake_the_control_plane_fails_is_answered_503_and_its_reason_logged() {
    logs::capture();
    let east = app("east").await;
    let control = FakeControl::routing(RouteTable::build(
        1,
        &[server("east", east)],
        &[acme()],
        &[],
    ));
    let router = router(Arc::clone(&control)).await;

    let answer = get(router, "acme.test").await;
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 5\r\n"),
        "{answer}"
    );
    let id = request_id(&answer);
    assert!(
        answer.ends_with(&format!(
            "\r\n\r\n503 Service Unavailable: this site could not be started; \
             retry in a few seconds (request id {id})\n"
        )),
        "{answer}"
    );
    let logged = logs::lines_with(&id).join("\n");
    for detail in ["acme", "east", "no room on any server"] {
        assert!(logged.contains(detail), "{detail} not logged: {logged}");
    }
    // Within the hold-down the answer comes at once, without another wake.
    let again = get(router, "acme.test").await;
    assert!(again.starts_with("HTTP/1.1 503 "), "{again}");
    assert!(
        !again.contains("east") && !again.contains("no room"),
        "{again}"
    );
    assert_eq!(lock(&control.woken).len(), 1);
}

/// The client's 502 names no server and no OS error; the log line of its
/// request id does.
#[tokio::test]
async fn a_refused_connection_is_reported_to_the_control_plane() {
    logs::capture();
    let nowhere = closed().await;
    let control = FakeControl::routing(RouteTable::build(
        1,
        &[server("east", nowhere)],
        &[acme()],
        &[instance("prod", "east")],
    ));
    let router = router(Arc::clone(&control)).await;

    let answer = get(router, "acme.test").await;
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    let id = request_id(&answer);
    assert!(
        answer.ends_with(&format!(
            "\r\n\r\n502 Bad Gateway: the server for this site could not be reached \
             (request id {id})\n"
        )),
        "{answer}"
    );
    assert!(!answer.contains("east"), "{answer}");
    let logged = logs::lines_with(&id).join("\n");
    for detail in ["east", "refused"] {
        assert!(logged.contains(detail), "{detail} not logged: {logged}");
    }
    assert_eq!(*lock(&control.unreachable), ["east"]);
}

#[tokio::test]
async fn a_get_waiting_on_a_server_declared_offline_goes_to_the_backup() {
    let (east, west) = (hung().await, app("west").await);
    let control = FakeControl::routing(RouteTable::build(
        1,
        &[server("east", east), server("west", west)],
        &[acme()],
        &[instance("prod", "east"), instance("backup", "west")],
    ));
    let router = router(Arc::clone(&control)).await;

    let asked = tokio::spawn(get(router, "acme.test"));
    // The request waits on east, which never answers, until it is declared
    // offline (well before the upstream timeout).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!asked.is_finished(), "answered before east went offline");
    control.offline.send_modify(|o| o.push("east".into()));
    let answer = asked.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with("west got Host acme.api.west.fleet.test"),
        "{answer}"
    );
    // A server that went offline is not one the router could not reach.
    assert!(lock(&control.unreachable).is_empty());
}

/// A stand-in for a server that takes upgrades: it answers `101` to a
/// request to upgrade and then echoes what comes on the connection, and
/// `200` to any other.
async fn upgrading() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let answer = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    if !req.headers().contains_key("upgrade") {
                        return Ok(Response::new(Full::new(Bytes::from("plain"))));
                    }
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(io) = upgrade.await {
                            let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                    });
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut()
                        .insert("upgrade", "websocket".parse().unwrap());
                    resp.headers_mut()
                        .insert("connection", "upgrade".parse().unwrap());
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), answer)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_websocket_is_in_flight_on_its_server_for_its_life() {
    let east = upgrading().await;
    let control = FakeControl::routing(RouteTable::build(
        1,
        &[server("east", east)],
        &[acme()],
        &[instance("prod", "east")],
    ));
    let (router, metrics) = router_with(Arc::clone(&control), |c| {
        c.max_in_flight_per_server = 1;
    })
    .await;

    let mut socket = tokio::net::TcpStream::connect(router).await.unwrap();
    socket
        .write_all(b"GET /chat HTTP/1.1\r\nHost: acme.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(socket.read(&mut byte).await.unwrap(), 1, "closed");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    socket.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    socket.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");

    // The socket holds the server's one place: another request is told
    // the service is busy, and when to come back.
    let answer = get(router, "acme.test").await;
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nretry-after: 1\r\n"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nthe service is busy; retry later\n"),
        "{answer}"
    );
    assert!(metrics
        .render()
        .contains("slum_router_requests_refused_total{reason=\"server_in_flight\"} 1\n"));

    // Closed, it gives its place back.
    drop(socket);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(router, "acme.test").await;
        if answer.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(std::time::Instant::now() < deadline, "never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_get_whose_server_stops_between_head_and_body_goes_to_the_backup() {
    let (east, west) = (stops_midway().await, app("west").await);
    let control = FakeControl::routing(RouteTable::build(
        1,
        &[server("east", east), server("west", west)],
        &[acme()],
        &[instance("prod", "east"), instance("backup", "west")],
    ));
    let (router, metrics) = router_with(Arc::clone(&control), |_| {}).await;

    let asked = tokio::spawn(get(router, "acme.test"));
    // East's head is in, its body is not: nothing has gone to the client.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!asked.is_finished(), "answered before east went offline");
    control.offline.send_modify(|o| o.push("east".into()));
    let answer = asked.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with("west got Host acme.api.west.fleet.test"),
        "{answer}"
    );
    assert!(
        metrics
            .render()
            .contains("slum_backup_retries_total{server=\"east\"} 1"),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn with_no_whole_response_bytes_a_head_goes_on_before_its_body() {
    let east = stops_midway().await;
    let control = FakeControl::routing(RouteTable::build(
        1,
        &[server("east", east)],
        &[acme()],
        &[instance("prod", "east")],
    ));
    let (router, _) = router_with(Arc::clone(&control), |c| c.whole_response_bytes = 0).await;

    let mut s = tokio::net::TcpStream::connect(router).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: acme.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !got.ends_with(b"hello") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the head and the first of the body came at once");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[tokio::test]
async fn each_tenants_and_servers_traffic_is_counted_with_its_errors() {
    let east = app("east").await;
    let west = closed().await;
    let beta = Tenant {
        domain: "beta.test".into(),
        name: "beta".into(),
        server_id: "west".into(),
        ..acme()
    };
    let beta_prod = Instance {
        tenant: "beta".into(),
        ..instance("prod", "west")
    };
    let control = FakeControl::routing(RouteTable::build(
        1,
        &[server("east", east), server("west", west)],
        &[acme(), beta],
        &[instance("prod", "east"), beta_prod],
    ));
    let (router, metrics) = router_with(Arc::clone(&control), |_| {}).await;
    for _ in 0..5 {
        assert!(get(router, "acme.test").await.starts_with("HTTP/1.1 200 "));
    }
    assert!(get(router, "beta.test").await.starts_with("HTTP/1.1 502 "));
    assert!(get(router, "nobody.test")
        .await
        .starts_with("HTTP/1.1 404 "));

    let top = metrics.traffic_top(10);
    assert_eq!(
        top.total.requests, 6,
        "an unknown host is no tenant's: {top:?}"
    );
    assert_eq!(top.total.errors, 1);
    let names: Vec<&str> = top.tenants.iter().map(|t| t.tenant.as_str()).collect();
    assert_eq!(names, ["acme", "beta"]);
    let acme = &top.tenants[0];
    assert_eq!((acme.figures.requests, acme.requests_min), (5, 5));
    assert_eq!(acme.figures.errors, 0);
    assert!(acme.figures.p50_ms.is_some_and(|ms| ms > 0.0), "{acme:?}");
    let beta = metrics.traffic_tenant("beta");
    assert!(beta.tracked);
    assert_eq!((beta.figures.requests, beta.figures.error_rate), (1, 1.0));
    assert!(!metrics.traffic_tenant("gamma").tracked);

    let servers = metrics.traffic_servers();
    let by_id: Vec<(&str, u64, u64)> = servers
        .servers
        .iter()
        .map(|s| (s.server.as_str(), s.figures.requests, s.figures.errors))
        .collect();
    assert_eq!(by_id, [("east", 5, 0), ("west", 1, 1)]);
    assert!(servers.servers[0].figures.p99_ms.is_some());
    assert_eq!(
        servers.servers[1].figures.p99_ms, None,
        "no answer: no latency"
    );
}
