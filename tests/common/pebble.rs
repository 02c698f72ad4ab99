//! The throw-away ACME CA of `scripts/with-pebble.sh` (Debian's pebble and
//! its pebble-challtestsrv as DNS), as the ACME tests use it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use slum::serve::ServeArgs;

/// pebble as `scripts/with-pebble.sh` started it.
pub struct Pebble {
    pub directory: String,
    /// The CA of pebble's own HTTPS certificate (`--acme-ca`).
    pub ca: PathBuf,
    /// pebble's issuing root, PEM: what verifies the certificates it issues.
    pub root_pem: Vec<u8>,
    pub eab_kid: String,
    pub eab_hmac: String,
    /// Where pebble checks HTTP-01 and TLS-ALPN-01 challenges, on the address
    /// a name resolves to.
    pub http_port: u16,
    pub tls_port: u16,
    log: PathBuf,
    challtestsrv: String,
}

impl Pebble {
    /// The pebble of `scripts/with-pebble.sh`; `None` (the test then ends,
    /// having checked nothing, and the suite says so once) when the tests
    /// were not started by it, unless `SLUM_TEST_NETNS` is set
    /// (`scripts/test.sh`), which makes its absence a failure.
    pub fn from_env() -> Option<Pebble> {
        let Ok(directory) = std::env::var("SLUM_TEST_PEBBLE_DIRECTORY") else {
            if std::env::var_os("SLUM_TEST_NETNS").is_some() {
                panic!(
                    "SLUM_TEST_NETNS is set, but no ACME server: run the ACME tests under \
                     scripts/with-pebble.sh (scripts/test.sh does)"
                );
            }
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: tests/{}.rs: its tests need an ACME server and were skipped; \
                     `scripts/with-pebble.sh cargo test --features local-fleet --test {}` runs them",
                    env!("CARGO_CRATE_NAME"),
                    env!("CARGO_CRATE_NAME")
                );
            });
            return None;
        };
        let var = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("{name} (scripts/with-pebble.sh sets it)"))
        };
        let port = |name: &str| var(name).parse::<u16>().expect("a port");
        Some(Pebble {
            directory,
            ca: var("SLUM_TEST_PEBBLE_CA").into(),
            root_pem: std::fs::read(var("SLUM_TEST_PEBBLE_ROOT")).expect("pebble's root"),
            eab_kid: var("SLUM_TEST_PEBBLE_EAB_KID"),
            eab_hmac: var("SLUM_TEST_PEBBLE_EAB_HMAC"),
            http_port: port("SLUM_TEST_PEBBLE_HTTP_PORT"),
            tls_port: port("SLUM_TEST_PEBBLE_TLS_PORT"),
            log: var("SLUM_TEST_PEBBLE_LOG").into(),
            challtestsrv: var("SLUM_TEST_CHALLTESTSRV"),
        })
    }

    /// Has pebble's DNS answer `ip` for `domain` (every other name is
    /// 127.0.0.1): where it sends its challenge checks.
    pub async fn resolve(&self, domain: &str, ip: IpAddr) {
        // add-a adds to what the name had: cleared first.
        for (path, body) in [
            ("clear-a", serde_json::json!({"host": domain})),
            (
                "add-a",
                serde_json::json!({"host": domain, "addresses": [ip.to_string()]}),
            ),
        ] {
            let resp = super::http()
                .post(format!("{}/{path}", self.challtestsrv))
                .json(&body)
                .send()
                .await
                .expect("challtestsrv");
            assert!(
                resp.status().is_success(),
                "challtestsrv {path}: {}",
                resp.status()
            );
        }
    }

    /// How many challenges of `domain` pebble has checked: one per order,
    /// since it never reuses an authorization here.
    pub fn validations(&self, domain: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).expect("pebble's log");
        let needle = format!("Value:\"{domain}\"");
        log.lines()
            .filter(|l| l.contains("Pulled a task") && l.contains(&needle))
            .count()
    }

    /// `slum serve` on `ip`, its plain and TLS listeners where pebble checks
    /// challenges, ordering from pebble with a one-second back-off.
    pub fn serve_on(&self, ip: IpAddr, args: &mut ServeArgs) {
        args.listen = Some(SocketAddr::new(ip, self.http_port));
        args.tls_listen = Some(SocketAddr::new(ip, self.tls_port));
        args.acme_directory = Some(self.directory.clone());
        args.acme_email = Some("ops@example.com".into());
        args.acme_ca = Some(self.ca.clone());
        args.acme_eab_kid = Some(self.eab_kid.clone());
        args.acme_eab_hmac = Some(self.eab_hmac.parse().expect("a secret"));
        args.acme_retry_min = Some(1.0);
    }

    /// An HTTPS client that trusts pebble's root alone and reaches `domain`
    /// at `ip`'s TLS listener.
    pub fn https(&self, domain: &str, ip: IpAddr) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.root_pem).expect("root"))
            .resolve(domain, SocketAddr::new(ip, self.tls_port))
    }

    /// The leaf certificate the TLS listener on `ip` presents for `domain`
    /// (verified against pebble's root), or why the handshake failed.
    pub async fn served_leaf(&self, domain: &str, ip: IpAddr) -> Result<Vec<u8>, String> {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&self.root_pem) {
            roots.add(cert.expect("root PEM")).expect("root");
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(SocketAddr::new(ip, self.tls_port))
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned()).expect("a name");
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = tls.get_ref();
        Ok(session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default())
    }
}

/// The DER of the first certificate of `chain_pem`.
pub fn leaf_der(chain_pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

/// Waits until `check` gives `Some`, for at most `within`; panics with `what`
/// (and the last state `state` shows) otherwise.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(state) if start.elapsed() > within => {
                panic!("{what}: not within {within:?}; last: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
