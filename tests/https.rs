//! HTTPS end to end: `slum serve` (in this process) with its HTTPS listener,
//! in front of real tenement servers in network namespaces (and a WebSocket
//! stand-in), reached by real TLS clients (reqwest, tokio-rustls) with
//! certificates made here by rcgen, issued by a CA of the test's own.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::serve::Slum;
use common::{fleet, server};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// A CA of the test's own, and the certificates it issues.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "slum test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::new(params, key);
        Ca { cert, issuer }
    }

    /// A certificate for `names`: its chain (leaf, then this CA) and key, in
    /// PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem() + &self.cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A TLS client trusting this CA alone, offering `alpn`.
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

/// Installs a certificate for `names` under `name` in the router.
fn install(slum: &Slum, ca: &Ca, name: &str, names: &[&str]) -> String {
    let (chain, key) = ca.issue(names);
    slum.state
        .certificates
        .install(name, chain.as_bytes(), key.as_bytes(), None)
        .unwrap();
    chain
}

/// An HTTPS client trusting `ca`, that reaches `domains` at `tls`.
fn client(ca: &Ca, tls: SocketAddr, domains: &[&str], http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .timeout(std::time::Duration::from_secs(20));
    for d in domains {
        builder = builder.resolve(d, tls);
    }
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

/// A TLS handshake with the router for `name`, offering `alpn`: the leaf
/// certificate it served and the protocol it chose, or why it failed.
async fn handshake(
    ca: &Ca,
    tls: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
) -> Result<(CertificateDer<'static>, Option<Vec<u8>>), std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(tls).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let stream = ca.connector(alpn).connect(name, tcp).await?;
    let (_, conn) = stream.get_ref();
    let leaf = conn.peer_certificates().unwrap()[0].clone().into_owned();
    Ok((leaf, conn.alpn_protocol().map(<[u8]>::to_vec)))
}

fn leaf_of(chain_pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(chain_pem.as_bytes()).unwrap()
}

async fn slum_with_tls(tweak: impl FnOnce(&mut slum::serve::ServeArgs)) -> (Slum, SocketAddr) {
    let slum = Slum::start(|a| {
        a.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        tweak(a);
    })
    .await;
    let tls = slum.tls.expect("the HTTPS listener");
    (slum, tls)
}

#[tokio::test]
async fn a_real_tenant_is_reached_over_https_with_http1_and_http2() {
    let Some(fleet) = fleet(1).await else {
        return;
    };
    let (slum, tls) = slum_with_tls(|a| a.hsts = Some(600)).await;
    slum.add_fleet(&fleet).await;
    slum.add_running_tenant("shop.example.com", "s1").await;
    slum.add_running_tenant("blog.example.com", "s1").await;
    let ca = Ca::new();
    let shop = install(&slum, &ca, "shop.example.com", &["shop.example.com"]);
    let wildcard = install(&slum, &ca, "*.example.com", &["*.example.com"]);
    let domains = ["shop.example.com", "blog.example.com"];
    let port = tls.port();

    // HTTP/1.1: the tenant's answer, and what it was told of the client.
    let http1 = client(&ca, tls, &domains, true);
    let resp = http1
        .get(format!("https://shop.example.com:{port}/headers"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=600");
    let headers = resp.text().await.unwrap();
    assert!(headers.contains("x-forwarded-proto: https\n"), "{headers}");
    assert!(
        headers.contains("x-forwarded-for: 127.0.0.1\n"),
        "{headers}"
    );
    assert!(
        headers.contains("host: shop.api.s1.fleet.test\n"),
        "{headers}"
    );

    // HTTP/2, chosen by ALPN: the same tenant, and a body streamed up.
    let http2 = client(&ca, tls, &domains, false);
    let resp = http2
        .get(format!("https://shop.example.com:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=600");
    assert_eq!(
        resp.text().await.unwrap().trim(),
        "tenant=shop process=api server=s1"
    );
    let chunks = futures::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 16 * 1024]))),
    );
    let resp = http2
        .post(format!("https://shop.example.com:{port}/count"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        resp.text().await.unwrap().trim(),
        (64 * 16 * 1024).to_string()
    );
    let resp = http2
        .get(format!("https://shop.example.com:{port}/headers"))
        .header("cookie", "a=1")
        .send()
        .await
        .unwrap();
    let headers = resp.text().await.unwrap();
    assert!(headers.contains("x-forwarded-proto: https\n"), "{headers}");
    // Many streams at once on one connection.
    let many: Vec<_> = (0..50)
        .map(|_| {
            let http2 = http2.clone();
            tokio::spawn(async move {
                let resp = http2
                    .get(format!("https://blog.example.com:{port}/"))
                    .send()
                    .await
                    .unwrap();
                (resp.version(), resp.text().await.unwrap())
            })
        })
        .collect();
    for stream in many {
        let (version, body) = stream.await.unwrap();
        assert_eq!(version, reqwest::Version::HTTP_2);
        assert_eq!(body.trim(), "tenant=blog process=api server=s1");
    }

    // The wildcard covers blog; shop has its own.
    let (leaf, alpn) = handshake(&ca, tls, "blog.example.com", &[b"h2"])
        .await
        .unwrap();
    assert_eq!(leaf, leaf_of(&wildcard));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (leaf, _) = handshake(&ca, tls, "shop.example.com", &[]).await.unwrap();
    assert_eq!(leaf, leaf_of(&shop));

    // A new certificate reaches the next handshake, without a restart; the
    // wildcard's is not touched.
    let renewed = install(&slum, &ca, "shop.example.com", &["shop.example.com"]);
    let (leaf, _) = handshake(&ca, tls, "shop.example.com", &[]).await.unwrap();
    assert_eq!(leaf, leaf_of(&renewed));
    let (leaf, _) = handshake(&ca, tls, "blog.example.com", &[]).await.unwrap();
    assert_eq!(leaf, leaf_of(&wildcard));
    let resp = client(&ca, tls, &domains, false)
        .get(format!("https://shop.example.com:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // The plain listener still says http.
    let (status, headers) = slum.get("shop.example.com", "/headers").await;
    assert_eq!(status, 200);
    assert!(headers.contains("x-forwarded-proto: http\n"), "{headers}");
}

#[tokio::test]
async fn a_name_without_a_tenant_or_a_certificate_fails_the_handshake() {
    let (slum, tls) = slum_with_tls(|_| {}).await;
    slum.db()
        .add_server(&server("s1", None, 1024))
        .await
        .unwrap();
    slum.add_tenant("shop.example.com", "s1").await;
    slum.add_tenant("bare.example.net", "s1").await;
    let ca = Ca::new();
    install(&slum, &ca, "*.example.com", &["*.example.com"]);
    assert!(handshake(&ca, tls, "shop.example.com", &[]).await.is_ok());
    for stranger in ["stranger.example.com", "nowhere.test", "bare.example.net"] {
        let e = handshake(&ca, tls, stranger, &[b"h2"]).await.unwrap_err();
        assert!(e.to_string().contains("alert"), "{stranger}: {e}");
    }
    // No SNI at all (a client that asks by address): no certificate either.
    let tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
    let by_address = ServerName::IpAddress(tls.ip().into());
    assert!(ca.connector(&[]).connect(by_address, tcp).await.is_err());
    // reqwest says the same.
    let resp = client(&ca, tls, &["stranger.example.com"], false)
        .get(format!("https://stranger.example.com:{}/", tls.port()))
        .send()
        .await;
    assert!(resp.is_err());

    // A TLS-ALPN-01 validation gets the challenge certificate, and nothing
    // else on that connection.
    assert!(handshake(&ca, tls, "shop.example.com", &[b"acme-tls/1"])
        .await
        .is_err());
    let (challenge, key) = ca.issue(&["shop.example.com"]);
    slum.state
        .certificates
        .set_challenges(
            "shop.example.com",
            vec![],
            Some((challenge.as_bytes(), key.as_bytes())),
        )
        .unwrap();
    let (leaf, alpn) = handshake(&ca, tls, "shop.example.com", &[b"acme-tls/1"])
        .await
        .unwrap();
    assert_eq!(leaf, leaf_of(&challenge));
    assert_eq!(alpn.as_deref(), Some(&b"acme-tls/1"[..]));
}

#[tokio::test]
async fn plain_requests_are_redirected_to_https_except_the_acme_challenge() {
    let (slum, tls) = slum_with_tls(|a| a.https_redirect = Some(true)).await;
    slum.db()
        .add_server(&server("s1", None, 1024))
        .await
        .unwrap();
    slum.add_tenant("shop.example.com", "s1").await;
    slum.add_tenant("bare.example.net", "s1").await;
    slum.add_tenant("own.example.org", "s1").await;
    let ca = Ca::new();
    install(&slum, &ca, "shop.example.com", &["shop.example.com"]);
    let (chain, key) = ca.issue(&["own.example.org"]);
    slum.state
        .certificates
        .install(
            "own.example.org",
            chain.as_bytes(),
            key.as_bytes(),
            Some(false),
        )
        .unwrap();
    slum.state
        .certificates
        .set_challenges(
            "shop.example.com",
            vec![("tok123".into(), "tok123.thumbprint".into())],
            None,
        )
        .unwrap();

    let answer = slum
        .raw("POST /cart?id=7 HTTP/1.1\r\nHost: Shop.Example.com:8080\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 308 "), "{answer}");
    let location = format!(
        "location: https://shop.example.com:{}/cart?id=7\r\n",
        tls.port()
    );
    assert!(answer.contains(&location), "{answer}");

    let challenge = slum
        .raw("GET /.well-known/acme-challenge/tok123 HTTP/1.1\r\nHost: shop.example.com\r\nconnection: close\r\n\r\n")
        .await;
    assert!(challenge.starts_with("HTTP/1.1 200 "), "{challenge}");
    assert!(
        challenge.ends_with("\r\n\r\ntok123.thumbprint"),
        "{challenge}"
    );
    // A token this router does not know goes on to the tenant (whose server
    // is down here), never redirected.
    let (status, _) = slum
        .get("shop.example.com", "/.well-known/acme-challenge/other")
        .await;
    assert_ne!(status, 308);
    // No certificate, or one that says no: routed as ever.
    for host in ["bare.example.net", "own.example.org"] {
        let (status, _) = slum.get(host, "/").await;
        assert_ne!(status, 308, "{host}");
    }
    // Not a tenant: 404, whatever the token.
    let (status, _) = slum
        .get("nobody.example.com", "/.well-known/acme-challenge/tok123")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_websocket_goes_through_over_tls() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let backend = common::websocket::echo_server().await;
    let (slum, tls) = slum_with_tls(|_| {}).await;
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
    slum.add_tenant("chat.example.com", "ws").await;
    let ca = Ca::new();
    install(&slum, &ca, "chat.example.com", &["chat.example.com"]);

    let tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
    let name = ServerName::try_from("chat.example.com").unwrap();
    // A WebSocket is an HTTP/1.1 upgrade: the client offers http/1.1.
    let stream = ca
        .connector(&[b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    let request = "wss://chat.example.com/socket"
        .into_client_request()
        .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-seen-host"], "chat.api.ws.fleet.test");
    for text in ["hello", "over TLS", "bye"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn certificates_and_challenges_in_the_fleet_database_reach_every_router_without_a_restart() {
    let (slum, tls) = slum_with_tls(|_| {}).await;
    slum.db()
        .add_server(&server("s1", None, 1024))
        .await
        .unwrap();
    slum.add_tenant("shop.example.com", "s1").await;
    let fleet = slum.db().fleet();
    let ca = Ca::new();
    assert!(handshake(&ca, tls, "shop.example.com", &[]).await.is_err());

    let upload = |(chain, key): (String, String)| slum::UploadedCertificate {
        name: "shop.example.com".into(),
        cert_pem: chain,
        key_pem: slum::SecretPem::new(key),
        redirect: Some(true),
    };
    let first = ca.issue(&["shop.example.com"]);
    fleet.put_certificate(&upload(first.clone())).await.unwrap();
    slum.state.fleet_changed().await;
    let (leaf, _) = handshake(&ca, tls, "shop.example.com", &[]).await.unwrap();
    assert_eq!(leaf, leaf_of(&first.0));
    // Its own redirect setting holds without the fleet default.
    let answer = slum
        .raw("GET /a HTTP/1.1\r\nHost: shop.example.com\r\nconnection: close\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 308 "), "{answer}");

    // A renewal replaces it.
    let renewed = ca.issue(&["shop.example.com"]);
    fleet
        .put_certificate(&upload(renewed.clone()))
        .await
        .unwrap();
    slum.state.fleet_changed().await;
    let (leaf, _) = handshake(&ca, tls, "shop.example.com", &[]).await.unwrap();
    assert_eq!(leaf, leaf_of(&renewed.0));

    // An HTTP-01 token, answered while the order lasts.
    fleet
        .put_http01("tok-123_A", "shop.example.com", "tok-123_A.thumb_print")
        .await
        .unwrap();
    slum.state.fleet_changed().await;
    let challenge = "GET /.well-known/acme-challenge/tok-123_A HTTP/1.1\r\nHost: shop.example.com\r\nconnection: close\r\n\r\n";
    let answer = slum.raw(challenge).await;
    assert!(
        answer.ends_with("\r\n\r\ntok-123_A.thumb_print"),
        "{answer}"
    );

    // Another router on the same database finds both at its start.
    let other = Slum::start_on(Some(slum.db_path.to_str().unwrap()), |a| {
        a.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let other_tls = other.tls.unwrap();
    let (leaf, _) = handshake(&ca, other_tls, "shop.example.com", &[])
        .await
        .unwrap();
    assert_eq!(leaf, leaf_of(&renewed.0));
    let answer = other.raw(challenge).await;
    assert!(
        answer.ends_with("\r\n\r\ntok-123_A.thumb_print"),
        "{answer}"
    );

    // Removed: refused in the handshake, and the token no longer answered.
    fleet.remove_http01("tok-123_A").await.unwrap();
    fleet.remove_certificate("shop.example.com").await.unwrap();
    slum.state.fleet_changed().await;
    assert!(handshake(&ca, tls, "shop.example.com", &[]).await.is_err());
    let answer = slum.raw(challenge).await;
    assert!(!answer.contains("thumb_print"), "{answer}");
}
