//! The HTTPS benchmark. In one run it puts the same tenant, behind the same
//! tenement server, behind two TLS-terminating proxies with the same
//! certificate (an ECDSA P-256 leaf and its issuer, made by the script with
//! openssl):
//!
//! - `slum serve --tls-listen ... --router-threads N`, the certificate added
//!   with `slum cert add` as an operator would;
//! - nginx with `worker_processes N`, the same files in `ssl_certificate` and
//!   `ssl_certificate_key`, TLS 1.2 and 1.3 as slum, HTTP/2 on, and the same
//!   reverse proxy as in examples/bench_router.rs (keep-alive upstream,
//!   HTTP/1.1, the Host rewrite and forwarding headers);
//!
//! for each N of `BENCH_WORKERS` (default: one per CPU, and one), and loads
//! each with the same client in three ways:
//!
//! - **HTTP/1.1 keep-alive**: wrk over https, `-t2 -c32`;
//! - **full handshakes**: a client of this example's own (tokio-rustls, TLS
//!   1.3, resumption off), 32 connections at a time, each carrying one
//!   request (`Connection: close`) and then closed; the connections opened per
//!   request (the kernel's `ActiveOpens`) are printed to show it. Not wrk or
//!   h2load: both resume the session when they reconnect (measured with
//!   nginx's `$ssl_session_reused`: all but the first handshake of each of
//!   their connections were resumed), and neither can be told not to. `openssl
//!   s_time -new` sends no SNI, which slum refuses by design. Like wrk and
//!   h2load, the client checks the server's handshake signature but not its
//!   chain;
//! - **HTTP/2, many streams per connection**: h2load `-t2 -c8 -m16`.
//!
//! For each it prints requests per second, latency, failures and the proxy's
//! CPU time per request (utime + stime of slum, or of nginx's master and
//! workers), with slum's ratios to nginx measured in the same round. The
//! rounds (`BENCH_ROUNDS`, default 3) take turns: each test runs slum then
//! nginx in odd rounds, nginx then slum in even ones; the medians of the
//! figures and of the ratios close the report. The load average is printed
//! with every round: other work on the machine moves the figures.
//!
//! wrk takes the name it sends as SNI from its URL and resolves it itself, so
//! it runs in a mount namespace of its own (`unshare --mount`) whose
//! `/etc/hosts` says the tenant domain is 127.0.0.1; h2load is given the
//! address with `--connect-to`. Neither verifies the certificate; the set-up
//! checks each path once with a client that does (and trusts the issuer
//! alone), over HTTP/1.1 and HTTP/2, and prints what TLS each path negotiated.
//!
//! Run it with `sudo scripts/bench-tls.sh`, which installs the tools, builds
//! the binaries, makes the certificate and passes `SLUM_BIN`, `SLUM_DEMO_APP`,
//! `NGINX`, `WRK`, `H2LOAD`, `BENCH_CERT` (chain, leaf first), `BENCH_KEY`
//! and `BENCH_CA`. Settings: `BENCH_DURATION` (10), `BENCH_WARMUP` (2),
//! `BENCH_THREADS` (2), `BENCH_CONNECTIONS` (32), `BENCH_H2_CONNECTIONS` (8),
//! `BENCH_H2_STREAMS` (16), `BENCH_ROUNDS` (3), `BENCH_WORKERS`, `BENCH_TESTS`
//! (`keepalive,handshakes,h2`); `BENCH_HOLD=1` sets everything up, prints it
//! and waits for Ctrl-C (for profiling by hand).
//!
//! Traffic goes to loopback and the test namespace only. Everything it starts
//! is stopped on the way out, also on error or Ctrl-C.

// Shared with the other benchmarks, which use the rest of it.
#[allow(dead_code)]
mod common;
use common::{
    cpu_ticks, env_number, env_path, load_average, nginx_pids, parse_wrk, start_slum, tool_version,
    us_per_request, Nginx, Served, WrkResult,
};

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use slum::local_fleet::{find_ten, FleetSpec, LocalFleet};
use slum::{SlumDb, Tenant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The benchmarked tenant's customer domain, which the certificate names.
const DOMAIN: &str = "bench.example.com";

/// Where the settings read from the environment come from.
const SCRIPT: &str = "scripts/bench-tls.sh";

/// One way of loading a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    /// HTTP/1.1 over TLS on connections kept alive (wrk).
    KeepAlive,
    /// One request per connection, each a full handshake (the example's own
    /// client).
    Handshakes,
    /// HTTP/2 with many streams per connection (h2load).
    Http2,
}

impl Test {
    fn parse(name: &str) -> Option<Test> {
        match name.trim() {
            "keepalive" => Some(Test::KeepAlive),
            "handshakes" => Some(Test::Handshakes),
            "h2" => Some(Test::Http2),
            _ => None,
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Test::KeepAlive => "HTTP/1.1 keep-alive",
            Test::Handshakes => "full handshakes",
            Test::Http2 => "HTTP/2 streams",
        })
    }
}

/// What to run, from the environment.
struct Settings {
    slum: PathBuf,
    app: PathBuf,
    nginx: PathBuf,
    wrk: PathBuf,
    h2load: PathBuf,
    /// The certificate chain (leaf first), its key, and its issuer.
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    duration: u64,
    warmup: u64,
    /// Client threads (wrk and h2load).
    threads: u32,
    /// wrk's connections, and the handshake client's.
    connections: u32,
    /// h2load's connections and streams on each.
    h2_connections: u32,
    h2_streams: u32,
    rounds: usize,
    workers: Vec<usize>,
    tests: Vec<Test>,
    hold: bool,
}

/// A comma-separated list from `name`, each item read by `parse`, or
/// `default` when unset.
fn env_list<T>(
    name: &str,
    default: Vec<T>,
    parse: impl Fn(&str) -> Option<T>,
) -> anyhow::Result<Vec<T>> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(&parse)
            .collect::<Option<Vec<T>>>()
            .with_context(|| format!("{name}={v:?} is not a list this benchmark knows")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut workers = env_list("BENCH_WORKERS", vec![cpus, 1], |w| {
            w.trim().parse::<usize>().ok().filter(|&n| n > 0)
        })?;
        workers.dedup();
        let s = Settings {
            slum: env_path("SLUM_BIN", None, SCRIPT)?,
            app: env_path("SLUM_DEMO_APP", None, SCRIPT)?,
            nginx: env_path("NGINX", Some("nginx"), SCRIPT)?,
            wrk: env_path("WRK", Some("wrk"), SCRIPT)?,
            h2load: env_path("H2LOAD", Some("h2load"), SCRIPT)?,
            cert: env_path("BENCH_CERT", None, SCRIPT)?,
            key: env_path("BENCH_KEY", None, SCRIPT)?,
            ca: env_path("BENCH_CA", None, SCRIPT)?,
            duration: env_number("BENCH_DURATION", 10)?,
            warmup: env_number("BENCH_WARMUP", 2)?,
            threads: env_number("BENCH_THREADS", 2)?,
            connections: env_number("BENCH_CONNECTIONS", 32)?,
            h2_connections: env_number("BENCH_H2_CONNECTIONS", 8)?,
            h2_streams: env_number("BENCH_H2_STREAMS", 16)?,
            rounds: env_number("BENCH_ROUNDS", 3)?,
            workers,
            tests: env_list(
                "BENCH_TESTS",
                vec![Test::KeepAlive, Test::Handshakes, Test::Http2],
                Test::parse,
            )?,
            hold: env_number("BENCH_HOLD", 0u8)? != 0,
        };
        if s.duration == 0
            || s.rounds == 0
            || s.threads == 0
            || s.h2_streams == 0
            || s.connections < s.threads
            || s.h2_connections < s.threads
        {
            bail!(
                "BENCH_DURATION, BENCH_ROUNDS, BENCH_THREADS and BENCH_H2_STREAMS must be positive, \
                 and BENCH_CONNECTIONS and BENCH_H2_CONNECTIONS at least BENCH_THREADS"
            );
        }
        Ok(s)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    println!("slum HTTPS benchmark");
    println!(
        "  machine: {} cpus, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!("  wrk:     {}", tool_version(&settings.wrk, "-v"));
    println!("  h2load:  {}", tool_version(&settings.h2load, "--version"));
    println!("  nginx:   {}", tool_version(&settings.nginx, "-v"));
    println!(
        "  load:    keep-alive: wrk -t{t} -c{c} -d{d}s; handshakes: {c} connections at a time \
         on {t} threads, one request each, no resumption; HTTP/2: h2load -t{t} -c{hc} -m{m} -D {d}; \
         each after a {w}s warm-up",
        t = settings.threads,
        c = settings.connections,
        d = settings.duration,
        hc = settings.h2_connections,
        m = settings.h2_streams,
        w = settings.warmup,
    );
    // Dropping the future (on Ctrl-C) drops the fleet, slum and nginx guards.
    tokio::select! {
        r = tls_bench(&settings) => r?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
    println!("\n  load average at the end: {}", load_average());
    Ok(())
}

/// One proxy in front of the tenant.
struct Proxy {
    name: String,
    /// Its HTTPS listener.
    tls: SocketAddr,
    /// Its processes, found afresh at each look (nginx may respawn a worker).
    pids: Box<dyn Fn() -> Vec<u32>>,
}

impl Proxy {
    fn url(&self) -> String {
        format!("https://{DOMAIN}:{}/", self.tls.port())
    }

    fn cpu_ticks(&self) -> anyhow::Result<u64> {
        (self.pids)().into_iter().map(cpu_ticks).sum()
    }
}

/// What one measured run gave.
#[derive(Debug, Clone)]
struct Figures {
    /// Requests answered 2xx.
    ok: u64,
    per_sec: f64,
    /// wrk's percentiles; h2load has only the mean.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    mean_ms: Option<f64>,
    /// Requests answered other than 2xx/3xx, or failed, or timed out.
    failed: u64,
    /// The proxy's CPU time per 2xx request.
    cpu_us: f64,
    /// TCP connections opened on this machine (outside the tenement
    /// server's namespace) per request: about 1 when every request had its
    /// own connection, about 0 when kept alive.
    opens_per_request: f64,
}

/// slum against nginx in one test with one worker count, in one round.
struct Pair {
    workers: usize,
    test: Test,
    slum: Figures,
    nginx: Figures,
}

async fn tls_bench(settings: &Settings) -> anyhow::Result<()> {
    let ten = find_ten()?;
    let dir = tempfile::tempdir()?;
    let hosts = dir.path().join("hosts");
    fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {DOMAIN}\n"))?;
    println!("\nstarting a tenement server, slum serve and nginx...");
    let fleet = LocalFleet::start(&FleetSpec::new(1, ten, settings.app.clone())).await?;
    let server = &fleet.servers[0];

    // One database, one slum serve per worker count (several routers share a
    // fleet database, and its certificates).
    let db_path = dir.path().join("slum.db");
    let token_path = dir.path().join("token");
    let mut slums: Vec<(Served, SocketAddr)> = Vec::new();
    for &n in &settings.workers {
        let tls = SocketAddr::from(([127, 0, 0, 1], common::free_port()?));
        let slum = start_slum(
            &settings.slum,
            &db_path,
            &token_path,
            &dir.path().join(format!("slum-{n}.log")),
            &[
                "--router-threads".into(),
                n.to_string(),
                "--tls-listen".into(),
                tls.to_string(),
            ],
        )
        .await?;
        slums.push((slum, tls));
    }
    let db = SlumDb::init(&db_path).await?;
    db.add_server(&server.record()).await?;
    db.add_tenant(&Tenant {
        domain: DOMAIN.into(),
        server_id: server.name.clone(),
        process: "api".into(),
        instance_id: "prod".into(),
        ..Default::default()
    })
    .await?;
    let tenant = db.get_tenant_by_domain(DOMAIN).await?;
    db.spawn_instance(
        &tenant.name,
        &tenant.process,
        &tenant.instance_id,
        &server.name,
    )
    .await?;
    let mapped_host = format!("{}.{}.{}", tenant.name, tenant.process, server.domain);

    // The certificate goes in as an operator's would.
    let api = slums[0].0.api_url().context("slum's API address")?;
    let cli = |args: &[&std::ffi::OsStr]| -> anyhow::Result<String> {
        let out = std::process::Command::new(&settings.slum)
            .arg("--api")
            .arg(&api)
            .args(args)
            .env("SLUM_TOKEN_FILE", &token_path)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", settings.slum.display()))?;
        if !out.status.success() {
            bail!(
                "slum {:?} failed: {}",
                args,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    cli(&[
        "cert".as_ref(),
        "add".as_ref(),
        DOMAIN.as_ref(),
        "--cert".as_ref(),
        settings.cert.as_os_str(),
        "--key".as_ref(),
        settings.key.as_os_str(),
    ])?;
    println!(
        "  slum cert add {DOMAIN} --cert {} --key {}:",
        settings.cert.display(),
        settings.key.display()
    );
    for line in cli(&["cert".as_ref(), "list".as_ref()])?.lines() {
        println!("    {line}");
    }

    let direct_url = format!("{}/", server.url());
    let expected = plain_get(&direct_url, &mapped_host).await?;
    let ca = fs::read(&settings.ca)?;
    let waited = Instant::now();
    let mut proxies: Vec<(usize, Proxy, Proxy)> = Vec::new();
    let mut nginxes = Vec::new();
    for ((slum, tls), &n) in slums.iter().zip(&settings.workers) {
        check(&ca, *tls, &expected, Duration::from_secs(15))
            .await
            .with_context(|| format!("through slum --router-threads {n}"))?;
        let upstream = server.url();
        let nginx = Nginx::start(&settings.nginx, |dir, addr| {
            nginx_conf(
                dir,
                addr,
                &upstream,
                &mapped_host,
                n,
                &settings.cert,
                &settings.key,
                &tool_version(&settings.nginx, "-v"),
            )
        })
        .await?;
        check(&ca, nginx.addr(), &expected, Duration::from_secs(10))
            .await
            .with_context(|| format!("through nginx worker_processes {n}"))?;
        let slum_pid = slum.pid();
        let nginx_pid = nginx.pid();
        proxies.push((
            n,
            Proxy {
                name: format!("slum --router-threads {n}"),
                tls: *tls,
                pids: Box::new(move || vec![slum_pid]),
            },
            Proxy {
                name: format!("nginx worker_processes {n}"),
                tls: nginx.addr(),
                pids: Box::new(move || nginx_pids(nginx_pid)),
            },
        ));
        nginxes.push(nginx);
    }
    println!(
        "  slum serves {DOMAIN} over HTTPS {:.0} ms after the certificate was added",
        waited.elapsed().as_secs_f64() * 1e3
    );
    println!("  tenant answers: {}", expected.trim());
    println!("  what each path negotiated (h2load, one request):");
    for (_, slum, nginx) in &proxies {
        for p in [slum, nginx] {
            for h1 in [true, false] {
                println!(
                    "    {:<28} {} ({})",
                    p.name,
                    negotiated(settings, p, h1).await?,
                    p.url()
                );
            }
        }
    }
    if settings.hold {
        for (_, slum, nginx) in &proxies {
            for p in [slum, nginx] {
                println!("  {}: {} (pids {:?})", p.name, p.tls, (p.pids)());
            }
        }
        println!("  database: {}", db_path.display());
        println!("  hosts file for wrk: {}", hosts.display());
        for n in &nginxes {
            println!("  nginx config: {}", n.conf_path().display());
        }
        println!("  holding (BENCH_HOLD): Ctrl-C ends");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    let mut rounds: Vec<Vec<Pair>> = Vec::new();
    let mut loads: Vec<String> = Vec::new();
    for round in 1..=settings.rounds {
        println!(
            "  round {round} of {} (load average {})",
            settings.rounds,
            load_average()
        );
        let slum_first = round % 2 == 1;
        let mut pairs = Vec::new();
        for &test in &settings.tests {
            for (n, slum, nginx) in &proxies {
                let (slum_f, nginx_f) = if slum_first {
                    let s = measure(settings, &hosts, test, slum).await?;
                    let c = measure(settings, &hosts, test, nginx).await?;
                    (s, c)
                } else {
                    let c = measure(settings, &hosts, test, nginx).await?;
                    let s = measure(settings, &hosts, test, slum).await?;
                    (s, c)
                };
                pairs.push(Pair {
                    workers: *n,
                    test,
                    slum: slum_f,
                    nginx: nginx_f,
                });
            }
        }
        rounds.push(pairs);
        loads.push(load_average());
    }
    for (i, (pairs, load)) in rounds.iter().zip(&loads).enumerate() {
        println!(
            "\n== round {} of {} (load average after it: {load})",
            i + 1,
            settings.rounds
        );
        print_round(pairs);
    }
    print_medians(settings, &rounds);

    // Stop in reverse order of start; each guard also does this on error.
    drop(nginxes);
    drop(slums);
    drop(fleet);
    Ok(())
}

/// GET `url` with Host `host`, over plain HTTP: the tenant's answer.
async fn plain_get(url: &str, host: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let r = http.get(url).header("host", host).send().await?;
    if r.status() != 200 {
        bail!("GET {url} (Host: {host}) answered {}", r.status());
    }
    Ok(r.text().await?)
}

/// GETs `https://{DOMAIN}/` at `tls` over HTTP/1.1 and over HTTP/2, trusting
/// `ca` alone, until both answer `expected` or `within` passes.
async fn check(ca: &[u8], tls: SocketAddr, expected: &str, within: Duration) -> anyhow::Result<()> {
    let url = format!("https://{DOMAIN}:{}/", tls.port());
    let deadline = Instant::now() + within;
    for http1 in [true, false] {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca)?)
            .resolve(DOMAIN, tls)
            .timeout(Duration::from_secs(5));
        if http1 {
            builder = builder.http1_only();
        }
        let client = builder.build()?;
        let want = if http1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        loop {
            let last = match client.get(&url).send().await {
                Ok(r) => {
                    let (status, version) = (r.status(), r.version());
                    let body = r.text().await.unwrap_or_default();
                    if status == 200 && version == want && body == expected {
                        break;
                    }
                    format!("{status} over {version:?}: {}", body.trim())
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("GET {url} over {want:?} did not answer as the tenant does within {within:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// What TLS and protocol h2load negotiates with `proxy` (over HTTP/1.1 when
/// `h1`), as h2load reports it.
async fn negotiated(settings: &Settings, proxy: &Proxy, h1: bool) -> anyhow::Result<String> {
    let mut cmd = h2load(settings, proxy);
    cmd.args(["-n1", "-c1"]);
    if h1 {
        cmd.arg("--h1");
    }
    let out = cmd.output().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?", str::trim)
            .to_owned()
    };
    let report = H2loadReport::parse(&text)?;
    if report.ok != 1 {
        bail!("h2load's request through {} failed:\n{text}", proxy.name);
    }
    Ok(format!(
        "{}, {}, {}, ALPN {}",
        field("TLS Protocol:"),
        field("Cipher:"),
        field("Server Temp Key:"),
        field("Application protocol:")
    ))
}

/// h2load on `proxy`'s HTTPS listener, the tenant domain in the URL (its
/// SNI and `:authority`).
fn h2load(settings: &Settings, proxy: &Proxy) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&settings.h2load);
    cmd.arg("--connect-to")
        .arg(proxy.tls.to_string())
        .arg(proxy.url())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A command whose name lookups find the tenant domain at 127.0.0.1: run in a
/// mount namespace of its own, with `hosts` over `/etc/hosts` (which stays
/// as it is for everyone else).
fn with_hosts(hosts: &Path, program: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "--",
        "sh",
        "-c",
        r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#,
        "sh",
    ])
    .arg(hosts)
    .arg(program)
    .stdin(Stdio::null())
    .kill_on_drop(true);
    cmd
}

/// wrk over https on `proxy` for `seconds`.
async fn wrk(
    settings: &Settings,
    hosts: &Path,
    proxy: &Proxy,
    seconds: u64,
) -> anyhow::Result<WrkResult> {
    let mut cmd = with_hosts(hosts, &settings.wrk);
    cmd.arg(format!("-t{}", settings.threads))
        .arg(format!("-c{}", settings.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    let out = cmd.arg(proxy.url()).output().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk on {} failed ({}): {text}{}",
            proxy.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// The handshake test's TLS client: TLS 1.3 with the ring provider, no
/// session kept (so none resumed), ALPN `http/1.1`.
fn handshake_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SignatureOnly(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Checks the server's handshake signature against its certificate, and not
/// the certificate's chain: what wrk and h2load (OpenSSL without
/// verification) do, so that the client costs what theirs would.
#[derive(Debug)]
struct SignatureOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for SignatureOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One connection, one full handshake, one request: the answer must be a
/// 200, read to the end (the server closes after it).
async fn one_handshake(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector
        .connect(ServerName::try_from(DOMAIN)?, tcp)
        .await?;
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut answer = Vec::with_capacity(1024);
    match tls.read_to_end(&mut answer).await {
        Ok(_) => {}
        // A close without close_notify after the whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    if !answer.starts_with(b"HTTP/1.1 200") {
        let head = String::from_utf8_lossy(&answer[..answer.len().min(80)]).into_owned();
        bail!("answered {head:?}");
    }
    Ok(())
}

/// Full handshakes on `proxy` for `seconds`: `connections` loops, on a
/// runtime of `threads` threads of their own, each connecting, handshaking,
/// asking once and closing, again and again.
async fn handshakes(settings: &Settings, proxy: &Proxy, seconds: u64) -> anyhow::Result<Figures> {
    let connector = handshake_connector()?;
    let addr = proxy.tls;
    let connections = settings.connections;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads as usize)
        .enable_all()
        .build()?;
    let (mut latencies, failed, elapsed) = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            let started = Instant::now();
            let deadline = started + Duration::from_secs(seconds);
            let loops: Vec<_> = (0..connections)
                .map(|_| {
                    let connector = connector.clone();
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        let mut failed = 0u64;
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            let one = tokio::time::timeout(
                                Duration::from_secs(5),
                                one_handshake(&connector, addr),
                            );
                            match one.await {
                                Ok(Ok(())) => latencies.push(t.elapsed()),
                                _ => failed += 1,
                            }
                        }
                        (latencies, failed)
                    })
                })
                .collect();
            let mut all = Vec::new();
            let mut failed = 0;
            for l in loops {
                let (latencies, f) = l.await?;
                all.extend(latencies);
                failed += f;
            }
            anyhow::Ok((all, failed, started.elapsed()))
        })
    })
    .await??;
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
    };
    Ok(Figures {
        ok: latencies.len() as u64,
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
        mean_ms: None,
        failed,
        cpu_us: 0.0,
        opens_per_request: 0.0,
    })
}

/// What h2load reports of a run.
#[derive(Debug, Clone, PartialEq)]
struct H2loadReport {
    per_sec: f64,
    /// 2xx answers.
    ok: u64,
    /// Requests done (answered, failed or errored) without a 2xx answer.
    failed: u64,
    mean_ms: f64,
}

impl H2loadReport {
    fn parse(text: &str) -> anyhow::Result<H2loadReport> {
        let mut per_sec = None;
        let mut ok = None;
        let mut done = None;
        let mut mean_ms = None;
        // "12 total, 12 started, 12 done, 12 succeeded, 0 failed, ..."
        let counts = |rest: &str| -> Vec<(String, u64)> {
            rest.split(',')
                .filter_map(|part| {
                    let mut words = part.split_whitespace();
                    let n = words.next()?.parse().ok()?;
                    Some((words.next()?.to_owned(), n))
                })
                .collect()
        };
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("finished in") {
                per_sec = rest
                    .split(',')
                    .find_map(|p| p.trim().strip_suffix(" req/s"))
                    .and_then(|v| v.trim().parse::<f64>().ok());
            } else if let Some(rest) = line.strip_prefix("requests:") {
                done = counts(rest)
                    .into_iter()
                    .find_map(|(what, n)| (what == "done").then_some(n));
            } else if let Some(rest) = line.strip_prefix("status codes:") {
                ok = counts(rest)
                    .into_iter()
                    .find_map(|(what, n)| (what == "2xx").then_some(n));
            } else if let Some(rest) = line.strip_prefix("time for request:") {
                // min, max, mean, sd, +/- sd
                mean_ms = rest.split_whitespace().nth(2).map(h2load_ms).transpose()?;
            }
        }
        let ok = ok.context("no status codes")?;
        Ok(H2loadReport {
            per_sec: per_sec.context("no req/s")?,
            ok,
            failed: done.context("no request counts")?.saturating_sub(ok),
            mean_ms: mean_ms.context("no time for request")?,
        })
    }
}

/// An h2load time (`812us`, `1.23ms`, `2.00s`) in milliseconds.
fn h2load_ms(v: &str) -> anyhow::Result<f64> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .with_context(|| format!("no unit in {v:?}"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n * 1e-3,
        "ms" => n,
        "s" => n * 1e3,
        _ => bail!("unknown time unit in {v:?}"),
    })
}

/// h2load, HTTP/2 with many streams per connection, on `proxy`.
async fn h2(settings: &Settings, proxy: &Proxy, seconds: u64) -> anyhow::Result<H2loadReport> {
    let out = h2load(settings, proxy)
        .arg(format!("-t{}", settings.threads))
        .arg(format!("-c{}", settings.h2_connections))
        .arg(format!("-m{}", settings.h2_streams))
        .arg(format!("-D{seconds}"))
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "h2load on {} failed ({}): {text}{}",
            proxy.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    H2loadReport::parse(&text).with_context(|| format!("unexpected h2load output:\n{text}"))
}

/// TCP connections opened so far in this network namespace (`ActiveOpens`
/// of /proc/net/snmp).
fn active_opens() -> anyhow::Result<u64> {
    let snmp = fs::read_to_string("/proc/net/snmp")?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = tcp.next().zip(tcp.next()).context("no Tcp lines")?;
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ActiveOpens")
        .context("no ActiveOpens")?
        .1
        .parse()
        .context("ActiveOpens is not a number")
}

/// One test on one proxy: a warm-up, then the measured run with the proxy's
/// CPU time and the connections opened around it.
async fn measure(
    settings: &Settings,
    hosts: &Path,
    test: Test,
    proxy: &Proxy,
) -> anyhow::Result<Figures> {
    println!(
        "    {test}, {}: warm-up {}s, then {}s...",
        proxy.name, settings.warmup, settings.duration
    );
    let run = |seconds| async move {
        match test {
            Test::Handshakes => handshakes(settings, proxy, seconds).await,
            Test::KeepAlive => {
                let w = wrk(settings, hosts, proxy, seconds).await?;
                anyhow::Ok(Figures {
                    ok: w.requests.saturating_sub(w.non_2xx),
                    per_sec: w.requests_per_sec,
                    p50_ms: Some(w.p50_ms),
                    p99_ms: Some(w.p99_ms),
                    mean_ms: None,
                    failed: w.non_2xx + w.socket_errors,
                    cpu_us: 0.0,
                    opens_per_request: 0.0,
                })
            }
            Test::Http2 => {
                let h = h2(settings, proxy, seconds).await?;
                Ok(Figures {
                    ok: h.ok,
                    per_sec: h.per_sec,
                    p50_ms: None,
                    p99_ms: None,
                    mean_ms: Some(h.mean_ms),
                    failed: h.failed,
                    cpu_us: 0.0,
                    opens_per_request: 0.0,
                })
            }
        }
    };
    if settings.warmup > 0 {
        run(settings.warmup).await?;
    }
    let ticks = proxy.cpu_ticks()?;
    let opens = active_opens()?;
    let mut f = run(settings.duration).await?;
    let opened = active_opens()?.saturating_sub(opens);
    f.cpu_us = us_per_request(ticks, proxy.cpu_ticks()?, f.ok)?;
    f.opens_per_request = opened as f64 / f.ok.max(1) as f64;
    Ok(f)
}

fn latency(f: &Figures) -> String {
    match (f.p50_ms, f.p99_ms, f.mean_ms) {
        (Some(p50), Some(p99), _) => format!("{p50:.2}/{p99:.2}"),
        (_, _, Some(mean)) => format!("mean {mean:.2}"),
        _ => "-".into(),
    }
}

fn print_round(pairs: &[Pair]) {
    println!(
        "{:<3} {:<20} {:>10} {:>10} {:>6} {:>9} {:>9} {:>6} {:>13} {:>13} {:>9} {:>7}",
        "N",
        "test",
        "slum r/s",
        "nginx r/s",
        "ratio",
        "slum CPU",
        "nginx CPU",
        "ratio",
        "slum ms",
        "nginx ms",
        "conn/req",
        "failed"
    );
    for p in pairs {
        println!(
            "{:<3} {:<20} {:>10.0} {:>10.0} {:>5.2}x {:>6.1} us {:>6.1} us {:>5.2}x {:>13} {:>13} {:>4.2}/{:<4.2} {:>3}/{:<3}",
            p.workers,
            p.test.to_string(),
            p.slum.per_sec,
            p.nginx.per_sec,
            p.slum.per_sec / p.nginx.per_sec,
            p.slum.cpu_us,
            p.nginx.cpu_us,
            p.slum.cpu_us / p.nginx.cpu_us,
            latency(&p.slum),
            latency(&p.nginx),
            p.slum.opens_per_request,
            p.nginx.opens_per_request,
            p.slum.failed,
            p.nginx.failed,
        );
    }
    println!(
        "  (N: slum router threads = nginx workers; CPU: the proxy's per request; ms: wrk's \
         p50/p99, h2load's mean; conn/req: TCP connections opened per request, slum/nginx)"
    );
}

/// The median, lowest and highest of `v`.
fn spread(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.sort_by(f64::total_cmp);
    Some((*v.get(v.len() / 2)?, *v.first()?, *v.last()?))
}

fn print_medians(settings: &Settings, rounds: &[Vec<Pair>]) {
    println!(
        "\n== medians over {} rounds (ratios: median of the rounds' slum/nginx, lowest-highest)",
        rounds.len()
    );
    println!(
        "{:<3} {:<20} {:>10} {:>10} {:>18} {:>9} {:>9} {:>18}",
        "N",
        "test",
        "slum r/s",
        "nginx r/s",
        "throughput ratio",
        "slum CPU",
        "nginx CPU",
        "CPU ratio"
    );
    let Some(first) = rounds.first() else { return };
    for (i, p) in first.iter().enumerate() {
        let all: Vec<&Pair> = rounds.iter().filter_map(|r| r.get(i)).collect();
        let med = |f: &dyn Fn(&Pair) -> f64| spread(all.iter().map(|p| f(p)).collect());
        let show = |s: Option<(f64, f64, f64)>| {
            s.map_or("-".into(), |(m, lo, hi)| {
                format!("{m:.2}x ({lo:.2}-{hi:.2})")
            })
        };
        let value = |s: Option<(f64, f64, f64)>| s.map_or(f64::NAN, |(m, _, _)| m);
        println!(
            "{:<3} {:<20} {:>10.0} {:>10.0} {:>18} {:>6.1} us {:>6.1} us {:>18}",
            p.workers,
            p.test.to_string(),
            value(med(&|p| p.slum.per_sec)),
            value(med(&|p| p.nginx.per_sec)),
            show(med(&|p| p.slum.per_sec / p.nginx.per_sec)),
            value(med(&|p| p.slum.cpu_us)),
            value(med(&|p| p.nginx.cpu_us)),
            show(med(&|p| p.slum.cpu_us / p.nginx.cpu_us)),
        );
    }
    for rounds_pairs in rounds {
        for p in rounds_pairs {
            for (who, f) in [("slum", &p.slum), ("nginx", &p.nginx)] {
                if f.failed > 0 {
                    println!(
                        "warning: {} requests failed through {who} ({}, {} workers)",
                        f.failed, p.test, p.workers
                    );
                }
            }
        }
    }
    println!(
        "  targets: throughput and handshake ratios at or above 1.00x, CPU ratios at or below \
         1.00x ({} s runs; the medians are of {} rounds)",
        settings.duration, settings.rounds
    );
}

/// nginx as the equivalent HTTPS reverse proxy for one tenant: the same
/// certificate files, TLS 1.2 and 1.3 (slum's), HTTP/2 offered by ALPN.
#[allow(clippy::too_many_arguments)]
fn nginx_conf(
    dir: &Path,
    listen: SocketAddr,
    upstream_url: &str,
    mapped_host: &str,
    workers: usize,
    cert: &Path,
    key: &Path,
    version: &str,
) -> String {
    let upstream = upstream_url.trim_start_matches("http://");
    let d = dir.display();
    let (cert, key) = (cert.display(), key.display());
    // `http2 on` came with nginx 1.25.1; before, it is a flag of `listen`.
    let (listen_h2, http2_on) = if nginx_at_least(version, (1, 25, 1)) {
        ("", "http2 on;")
    } else {
        (" http2", "")
    };
    format!(
        r#"worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # nginx closes a client's connection after 1,000 requests by default
    # (HTTP/2 too), which would be a handshake per 1,000 requests that slum
    # does not make.
    keepalive_requests 1000000;

    upstream tenement {{
        server {upstream};
        # Idle upstream connections kept: more than the streams in flight.
        keepalive 256;
    }}

    server {{
        listen {listen} ssl{listen_h2};
        {http2_on}
        server_name {DOMAIN};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://tenement;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {mapped_host};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"#
    )
}

/// Whether `nginx -v`'s line (`nginx version: nginx/1.22.1`) names `at_least`
/// or later.
fn nginx_at_least(version: &str, at_least: (u32, u32, u32)) -> bool {
    let Some(v) = version.split("nginx/").nth(1) else {
        return false;
    };
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next()) >= at_least
}

#[cfg(test)]
mod tests {
    use super::*;

    const H2LOAD: &str = "starting benchmark...
spawning thread #0: 1 total client(s). 1 total requests
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2

finished in 10.00s, 23456.70 req/s, 3.45MB/s
requests: 234600 total, 234650 started, 234590 done, 234567 succeeded, 23 failed, 0 errored, 0 timeout
status codes: 234567 2xx, 0 3xx, 0 4xx, 23 5xx
traffic: 34.50MB (36175566) total, 1.00MB (1048576) headers (space savings 90.00%), 10.00MB (10485760) data
                     min         max         mean         sd        +/- sd
time for request:      123us     45.67ms      2.67ms      1.23ms    90.12%
time for connect:     1.23ms      2.34ms      1.78ms       0.1ms    50.00%
";

    #[test]
    fn reads_h2load_reports() {
        let r = H2loadReport::parse(H2LOAD).expect("parse");
        assert_eq!(r.per_sec, 23456.70);
        assert_eq!(r.ok, 234_567);
        assert_eq!(r.failed, 23);
        assert!((r.mean_ms - 2.67).abs() < 1e-9);
        assert!(H2loadReport::parse("finished in 1.00s, 1 req/s").is_err());
    }

    #[test]
    fn nginx_versions_are_compared_by_number() {
        assert!(!nginx_at_least("nginx version: nginx/1.22.1", (1, 25, 1)));
        assert!(nginx_at_least("nginx version: nginx/1.25.1", (1, 25, 1)));
        assert!(nginx_at_least(
            "nginx version: nginx/1.27.0 (Ubuntu)",
            (1, 25, 1)
        ));
        assert!(!nginx_at_least("not nginx", (1, 25, 1)));
    }
}
