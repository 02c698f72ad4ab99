//! The router end to end: `slum serve` (in this process) in front of real tenement
//! servers, each in its own network namespace.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::logs::{assert_public_error, capture};
use common::serve::Slum;
use common::{fleet, http};
use slum::tenement::TenementClients;
use slum::{ServerStatus, SlumDb, Tenant};

#[tokio::test]
async fn routes_each_tenant_to_its_server_with_forwarding_headers() {
    let Some(fleet) = fleet(3).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    for (domain, server) in [
        ("acme.com", "s1"),
        ("globex.com", "s2"),
        ("initech.com", "s3"),
    ] {
        slum.add_tenant(domain, server).await;
        let t = slum.db().get_tenant_by_domain(domain).await.unwrap();
        slum.db()
            .spawn_instance(&t.name, "api", "prod", server)
            .await
            .unwrap();
    }
    slum.state.fleet_changed().await;
    for (domain, server) in [
        ("acme.com", "s1"),
        ("globex.com", "s2"),
        ("initech.com", "s3"),
    ] {
        let tenant = domain.split('.').next().unwrap();
        let (status, body) = slum
            .get(&format!("{}:8080", domain.to_uppercase()), "/")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body.trim(),
            format!("tenant={tenant} process=api server={server}")
        );
    }

    let resp = http()
        .get(format!("http://{}/headers", slum.router))
        .header("host", "acme.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-host", "globex.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.text().await.unwrap();
    assert!(
        headers.contains("host: acme.api.s1.fleet.test\n"),
        "{headers}"
    );
    assert!(
        headers.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{headers}"
    );
    assert!(
        headers.contains("x-forwarded-host: acme.com\n"),
        "{headers}"
    );
    assert!(headers.contains("x-forwarded-proto: http\n"), "{headers}");

    // A client-sent X-Forwarded-Host never selects a tenant.
    let resp = http()
        .get(format!("http://{}/", slum.router))
        .header("host", "nobody.example")
        .header("x-forwarded-host", "acme.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.text().await.unwrap().trim(),
        "no tenant has the domain 'nobody.example'"
    );

    let metrics = slum.state.metrics.render();
    assert!(
        metrics.contains("slum_requests_total{status=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slum_upstream_latency_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("slum_route_table_domains 3"), "{metrics}");
}

#[tokio::test]
async fn the_first_requests_spawn_a_tenant_once() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.add_tenant("newco.com", "s1").await;
    assert!(slum.db().list_instance_records().await.unwrap().is_empty());

    let requests: Vec<_> = (0..20)
        .map(|_| {
            let url = format!("http://{}/", slum.router);
            tokio::spawn(async move {
                let r = http()
                    .get(url)
                    .header("host", "newco.com")
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    for r in requests {
        let (status, body) = r.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.trim(), "tenant=newco process=api server=s1");
    }
    let records = slum.db().list_instance_records().await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key(), "newco:prod");
    // The app prints one line per start: one spawn, not twenty.
    let s1 = fleet.server("s1").unwrap().record();
    let clients = TenementClients::new(slum.db().options());
    let logs = clients
        .for_server(&s1)
        .logs("api", "newco", 100)
        .await
        .unwrap();
    let starts = logs
        .iter()
        .filter(|l| l.message.starts_with("serving tenant"))
        .count();
    assert_eq!(starts, 1, "{logs:?}");
}

/// A tenant whose spawn fails gets a 503 (whose log line quotes tenement),
/// and its next requests are answered at once (with Retry-After) instead of
/// each trying a spawn that fails the same way.
#[tokio::test]
async fn a_tenant_that_cannot_start_is_answered_at_once_for_a_while() {
    capture();
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.db()
        .add_tenant(&Tenant {
            domain: "broken.com".into(),
            server_id: "s1".into(),
            process: "nosuch".into(),
            instance_id: "prod".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    slum.state.fleet_changed().await;
    let get = || async {
        let r = http()
            .get(format!("http://{}/", slum.router))
            .header("host", "broken.com")
            .send()
            .await
            .unwrap();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), retry_after, r.text().await.unwrap())
    };
    const NOT_STARTED: &str =
        "503 Service Unavailable: this site could not be started; retry in a few seconds";
    let (status, retry_after, first) = get().await;
    assert_eq!(status, 503, "{first}");
    // tenement's reason is in the log, not in the answer.
    let logged = assert_public_error(
        &first,
        NOT_STARTED,
        &[
            "tenant 'broken' could not be started on server 's1'",
            "nosuch",
        ],
    );
    assert!(!logged.contains("the next is in"), "{logged}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    let (status, retry_after, second) = get().await;
    assert_eq!(status, 503);
    assert_public_error(&second, NOT_STARTED, &["the next is in"]);
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(slum.db().list_instance_records().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_offline_primary_routes_to_the_backup_and_back() {
    capture();
    let Some(fleet) = fleet(2).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.add_tenant_with_backup("acme.com").await;
    assert!(slum.get("acme.com", "/").await.1.contains("server=s1"));

    let slum = &slum;
    let set_status = |status| async move {
        let mut s1 = slum.db().get_server("s1").await.unwrap();
        s1.status = status;
        slum.db().update_server(&s1).await.unwrap();
        slum.state.fleet_changed().await;
    };
    set_status(ServerStatus::Offline).await;
    let (status, body) = slum.get("acme.com", "/").await;
    assert_eq!(
        (status, body.trim()),
        (200, "tenant=acme process=api server=s2")
    );
    set_status(ServerStatus::Online).await;
    assert!(slum.get("acme.com", "/").await.1.contains("server=s1"));

    // With every instance's server offline: 503, its log line naming the
    // servers.
    for id in ["s1", "s2"] {
        let mut s = slum.db().get_server(id).await.unwrap();
        s.status = ServerStatus::Offline;
        slum.db().update_server(&s).await.unwrap();
    }
    slum.state.fleet_changed().await;
    let (status, body) = slum.get("acme.com", "/").await;
    assert_eq!(status, 503);
    assert_public_error(
        &body,
        "503 Service Unavailable: this site is unavailable: its servers are down",
        &["tenant 'acme' is unavailable: its server 's1', 's2' is down"],
    );
}

/// The client is told what happened in general terms, with a request id;
/// the server and the cause are in the log line of that id.
#[tokio::test]
async fn bad_hosts_and_broken_servers_get_clear_answers() {
    capture();
    let Some(mut fleet) = fleet(3).await else {
        return;
    };
    let slum = Slum::start(|a| {
        a.upstream_timeout = Some(1.0);
        a.connect_timeout = Some(1.0);
    })
    .await;
    slum.add_fleet(&fleet).await;
    for (domain, server) in [("dead.com", "s1"), ("hung.com", "s2"), ("cut.com", "s3")] {
        slum.add_tenant(domain, server).await;
        let name = domain.split('.').next().unwrap();
        slum.db()
            .spawn_instance(name, "api", "prod", server)
            .await
            .unwrap();
    }
    slum.state.fleet_changed().await;

    let missing = slum
        .raw("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
    assert!(missing.ends_with("missing Host header\n"), "{missing}");
    let malformed = slum
        .raw("GET / HTTP/1.1\r\nHost: bad_host!\r\nConnection: close\r\n\r\n")
        .await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    assert!(
        malformed.ends_with("malformed Host header\n"),
        "{malformed}"
    );
    assert_eq!(slum.get("nobody.com", "/").await.0, 404);

    // Server process gone: connection refused, 502.
    fleet.server_mut("s1").unwrap().kill().unwrap();
    let resp = http()
        .get(format!("http://{}/", slum.router))
        .header("host", "dead.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = resp.text().await.unwrap();
    assert_public_error(
        &body,
        "502 Bad Gateway: the server for this site could not be reached",
        &["cannot connect to server 's1':", "refused"],
    );
    assert_eq!(common::logs::request_id(&body), id);

    // Server hung: it accepts but never answers, 504.
    fleet.server("s2").unwrap().hang().unwrap();
    const NO_ANSWER: &str = "504 Gateway Timeout: the server for this site did not answer in time";
    let (status, body) = slum.get("hung.com", "/").await;
    assert_eq!(status, 504);
    assert_public_error(
        &body,
        NO_ANSWER,
        &["server 's2' did not answer within 1.0s"],
    );
    fleet.server("s2").unwrap().resume().unwrap();

    // Link down: the connect times out, 504.
    fleet.server("s3").unwrap().link_down().unwrap();
    let (status, body) = slum.get("cut.com", "/").await;
    assert_eq!(status, 504);
    assert_public_error(
        &body,
        "504 Gateway Timeout: the server for this site could not be reached in time",
        &["connecting to server 's3' timed out after 1.0s"],
    );
    fleet.server("s3").unwrap().link_up().unwrap();
    // The link takes a moment to carry traffic again (neighbour discovery).
    let mut back = false;
    for _ in 0..50 {
        if slum.get("cut.com", "/").await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "cut.com never came back after the link came up");

    // The app itself is slow: 504 as well.
    let (status, body) = slum.get("hung.com", "/sleep?ms=3000").await;
    assert_eq!(status, 504);
    assert_public_error(
        &body,
        NO_ANSWER,
        &["server 's2' did not answer within 1.0s"],
    );

    // A request head over the limit is refused.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: hung.com\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = slum.raw(&big).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );

    // A malformed request body is the client's fault: 400, not 502.
    let answer = slum
        .raw("POST / HTTP/1.1\r\nHost: cut.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with(
            "the request body could not be read: malformed chunk size in the request body\n"
        ),
        "{answer}"
    );

    // The errors are counted by server and cause (s3's as often as the
    // link was found down while it came back); the refusals of heads too.
    let metrics = slum.state.metrics.render();
    for counted in [
        "slum_router_errors_total{cause=\"refused\",server=\"s1\"} 1\n",
        "slum_router_errors_total{cause=\"timeout\",server=\"s2\"} 2\n",
        "slum_router_errors_total{cause=\"connect_timeout\",server=\"s3\"} ",
        "slum_requests_total{status=\"431\"} 1\n",
    ] {
        assert!(metrics.contains(counted), "{counted} not in {metrics}");
    }
}

#[tokio::test]
async fn changes_by_another_process_are_routed_within_the_poll() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    // Another process: its own SlumDb on the same file.
    let other = SlumDb::init(&slum.db_path).await.unwrap();
    other
        .add_tenant(&Tenant {
            domain: "late.com".into(),
            server_id: "s1".into(),
            process: "api".into(),
            instance_id: "prod".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let written = Instant::now();
    let mut seen = None;
    while written.elapsed() < Duration::from_secs(10) {
        if slum.state.routes.current().domains() == 1 {
            seen = Some(written.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = seen.expect("the router never saw the other process's tenant");
    println!("routed {seen:?} after another process wrote it");
    assert_eq!(slum.get("late.com", "/").await.0, 200);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let mut slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.add_running_tenant("slow.com", "s1").await;
    let url = format!("http://{}/sleep?ms=1500", slum.router);
    let in_flight = tokio::spawn(async move {
        let r = http()
            .get(url)
            .header("host", "slow.com")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = slum.stop.take().unwrap().send(());
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body.trim()), (200, "slept"));
    let task = slum.task;
    task.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(slum.router).await.is_err(),
        "still accepting after shutdown"
    );
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_megabytes_stream_both_ways_in_flat_memory() {
    use futures::StreamExt;
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    slum.add_fleet(&fleet).await;
    slum.add_running_tenant("big.com", "s1").await;
    let before = peak_rss_kb();

    // Upload: 200 MB generated on the fly, counted by the app.
    let chunk = bytes::Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = 200 * 16;
    let body =
        futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = http()
        .post(format!("http://{}/count", slum.router))
        .header("host", "big.com")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap().trim(),
        (200u64 << 20).to_string()
    );

    // Download: 200 MB, read chunk by chunk.
    let resp = http()
        .get(format!("http://{}/bytes?mb=200", slum.router))
        .header("host", "big.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut received = 0usize;
    let mut stream = resp.bytes_stream();
    while let Some(c) = stream.next().await {
        received += c.unwrap().len();
    }
    assert_eq!(received, 200 << 20);

    let grown_mb = (peak_rss_kb() - before) / 1024;
    println!("peak RSS grew by {grown_mb} MB while 400 MB went through");
    assert!(
        grown_mb < 64,
        "the router buffered bodies: peak RSS grew by {grown_mb} MB"
    );
}

#[tokio::test]
async fn websocket_echo_through_the_router() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let backend = common::websocket::echo_server().await;
    let slum = Slum::start(|_| {}).await;
    slum.db()
        .add_server(&slum::Server {
            id: "ws".into(),
            url: format!("http://{backend}"),
            capacity_mb: 1024,
            domain: Some("ws.fleet.test".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    slum.add_tenant("chat.com", "ws").await;

    let mut request = format!("ws://{}/socket", slum.router)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("host", "chat.com".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-seen-host"], "chat.api.ws.fleet.test");
    for text in ["hello", "through the router", "bye"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_client_slow_with_its_request_head_is_cut_off() {
    let slum = Slum::start(|a| a.header_timeout = Some(1.0)).await;
    // Half a request head, and then nothing: the router closes the connection
    // when the header timeout has passed (the test's own limit is far longer).
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        slum.raw("GET / HTTP/1.1\r\nHost: acme.c"),
    )
    .await
    .expect("the connection was not closed");
    assert!(!answer.contains("200 OK"), "{answer}");
}

/// Reads from `s` until the end of a response head and a body of the length it
/// gives (or until `s` ends); the response as text.
async fn read_answer(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if length.is_some_and(|n| body.len() >= n) {
                return text;
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One server with the tenant up.com running on it, behind a router whose
/// upstream and body timeouts are 1 s.
async fn up_com_with_one_second_timeouts() -> Option<(slum::local_fleet::LocalFleet, Slum)> {
    let fleet = fleet(1).await?;
    let slum = Slum::start(|a| {
        a.upstream_timeout = Some(1.0);
        a.body_timeout = Some(1.0);
    })
    .await;
    slum.add_fleet(&fleet).await;
    slum.add_running_tenant("up.com", "s1").await;
    Some((fleet, slum))
}

#[tokio::test]
async fn request_bodies_are_timed_by_their_pauses_not_their_length() {
    use tokio::io::AsyncWriteExt;
    capture();
    let Some((fleet, slum)) = up_com_with_one_second_timeouts().await else {
        return;
    };
    let within = |what| async move {
        tokio::time::timeout(Duration::from_secs(20), what)
            .await
            .expect("no answer")
    };

    // An upload three times as long as the upstream timeout, never still for
    // it, goes through.
    let mut s = tokio::net::TcpStream::connect(slum.router).await.unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: up.com\r\nContent-Length: 8\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(b"u").await.unwrap();
    }
    let answer = within(read_answer(&mut s)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\n8\n"), "{answer}");

    // A client that stops within its body: 408, its fault, and the
    // connection ends.
    let mut s = tokio::net::TcpStream::connect(slum.router).await.unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: up.com\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let answer = within(read_answer(&mut s)).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with("no request body bytes for 1.0s\n"),
        "{answer}"
    );

    // A server that stops taking the body (hung): 504 once the body has not
    // moved for the upstream timeout.
    fleet.server("s1").unwrap().hang().unwrap();
    let mut s = tokio::net::TcpStream::connect(slum.router).await.unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: up.com\r\nContent-Length: 1073741824\r\n\r\n")
        .await
        .unwrap();
    let (mut reading, mut writing) = s.into_split();
    let upload = tokio::spawn(async move {
        let zeros = vec![0u8; 64 * 1024];
        while writing.write_all(&zeros).await.is_ok() {}
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        while !String::from_utf8_lossy(&answer).ends_with('\n') {
            match reading.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    upload.abort();
    fleet.server("s1").unwrap().resume().unwrap();
    assert!(read.is_ok(), "no answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    assert_public_error(
        body,
        "504 Gateway Timeout: the server for this site did not answer in time",
        &["server 's1' did not answer within 1.0s"],
    );
}

/// A TLS front for the tenement server at `to` (as a TLS-terminating proxy in
/// front of a real server would be), with the certificate in tests/fixtures,
/// which names localhost and 127.0.0.1 and is signed by the fixture CA. Returns
/// its address and the count of TLS sessions it has accepted.
async fn tls_front(to: SocketAddr) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let certs = CertificateDer::pem_file_iter(fixtures.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixtures.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sessions = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&sessions);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                }
            });
        }
    });
    (addr, sessions)
}

#[tokio::test]
async fn https_servers_are_reached_through_a_private_ca() {
    use std::sync::atomic::Ordering;
    capture();
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let server = &fleet.servers[0];
    let ten: SocketAddr = server.url().trim_start_matches("http://").parse().unwrap();
    let (front, sessions) = tls_front(ten).await;
    let mut record = server.record();
    record.url = format!("https://localhost:{}", front.port());
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/server-ca.pem");

    // Trusting the CA: tenement's API (the spawn) and the routed requests go
    // over TLS.
    let slum = Slum::start(|a| a.server_ca = Some(ca.clone())).await;
    slum.db().add_server(&record).await.unwrap();
    slum.add_tenant("tls.com", "s1").await;
    slum.db()
        .spawn_instance("tls", "api", "prod", "s1")
        .await
        .unwrap();
    slum.state.fleet_changed().await;
    let before = sessions.load(Ordering::SeqCst);
    assert!(before > 0, "the spawn did not go through the TLS front");
    let (status, body) = slum.get("tls.com", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("tenant=tls"), "{body}");
    assert!(
        sessions.load(Ordering::SeqCst) > before,
        "the routed request did not go through the TLS front"
    );

    // A router on the same fleet database without it: the certificate is
    // not trusted, by its router nor by its calls to tenement's API, and the
    // errors say so.
    let db = slum.db_path.to_str().unwrap().to_owned();
    let untrusting = Slum::start_on(Some(&db), |_| {}).await;
    let (status, body) = untrusting.get("tls.com", "/").await;
    assert_eq!(status, 502);
    assert_public_error(
        &body,
        "502 Bad Gateway: the server for this site could not be reached",
        &["cannot connect to server 's1': invalid peer certificate: UnknownIssuer"],
    );
    let e = untrusting
        .db()
        .tenement_clients()
        .for_server(&record)
        .list()
        .await
        .unwrap_err()
        .to_string();
    println!("without the CA: {e}");
    assert!(e.contains("'s1'") && e.contains("certificate"), "{e}");
}

/// A body whose last piece (for a chunked one, the last chunk) comes a moment
/// after the rest: once it is in, a server that does not answer gets its 504
/// as without a body.
#[tokio::test]
async fn an_upload_whose_end_comes_late_still_times_the_server() {
    use tokio::io::AsyncWriteExt;
    let Some((_fleet, slum)) = up_com_with_one_second_timeouts().await else {
        return;
    };

    for chunked in [false, true] {
        let mut s = tokio::net::TcpStream::connect(slum.router).await.unwrap();
        let head: &[u8] = match chunked {
            true => b"POST /sleep?ms=5000 HTTP/1.1\r\nHost: up.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            false => b"POST /sleep?ms=5000 HTTP/1.1\r\nHost: up.com\r\nContent-Length: 3\r\n\r\nab",
        };
        s.write_all(head).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rest: &[u8] = match chunked {
            true => b"0\r\n\r\n",
            false => b"c",
        };
        s.write_all(rest).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), read_answer(&mut s))
            .await
            .expect("no answer");
        assert!(
            answer.starts_with("HTTP/1.1 504 "),
            "chunked={chunked}: {answer}"
        );
    }
}
