//! The router benchmark. In one run it loads the same tenant behind the same
//! tenement server with the same tool (wrk) along these paths:
//!
//! - (a) straight to tenement, with the mapped Host `{tenant}.api.{server domain}`;
//! - (bN) through `slum serve --router-threads N` (the release binary, as a
//!   child process);
//! - (cN) through nginx with `worker_processes N`, configured as the equivalent
//!   reverse proxy (keep-alive upstream, HTTP/1.1, the same Host rewrite and
//!   forwarding headers), for each N of `BENCH_WORKERS` (default: one per CPU,
//!   and one);
//! - (h) through examples/bare_proxy.rs, the least a hyper proxy does (one
//!   thread), to tell slum's own cost from its HTTP stack's;
//! - (r) the same with its upstream side written by hand instead of hyper's
//!   client (`bare_proxy ... raw`), to tell what that client costs;
//!
//! and prints requests/s, p50/p99 latency, non-2xx counts, the proxies' CPU time
//! per request, one client on one connection, and slum's ratios against the
//! baselines. It also times [`RouteTable::route`] with 1,000 and with 1,000,000
//! tenants, in memory, against the table slum had before issue 17 (its layout
//! and lookup, rebuilt here) and a bare map, the three taking turns.
//!
//! Run it with `sudo scripts/bench-router.sh`: the tenement server lives in a
//! network namespace (root), and the script installs wrk and nginx, builds the
//! release binaries and passes their paths in `SLUM_BIN`, `SLUM_DEMO_APP`,
//! `BARE_PROXY`, `WRK` and `NGINX`. `BENCH_DURATION`, `BENCH_WARMUP` (seconds),
//! `BENCH_THREADS`, `BENCH_CONNECTIONS`, `BENCH_LOOKUPS`, `BENCH_WORKERS` and
//! `BENCH_SINGLE` change the load; `BENCH_ROUNDS=N` measures every path N times,
//! the paths taking turns, and prints each round and the spread of slum's ratios;
//! `BENCH_HOLD=1` sets the paths up and waits.
//!
//! Traffic goes to loopback and the test namespace only. Everything it starts
//! (nginx, slum, the fleet) is stopped on the way out, also on error or Ctrl-C.

// Shared with the other benchmarks, which use the rest of it.
#[allow(dead_code)]
mod common;
use common::{
    cpu_ticks, env_number, env_path, free_port, load_average, nginx_pids, start_slum, tool_version,
    us_per_request, Load, Nginx, Served, WrkResult,
};

use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::header::HeaderValue;
use rand::{rngs::StdRng, Rng, SeedableRng};
use slum::local_fleet::{find_ten, FleetSpec, LocalFleet, LocalServer};
use slum::route_table::{Decision, RouteTable};
use slum::{Instance, Server, ServerStatus, SlumDb, Tenant};

/// The benchmarked tenant's customer domain (tenant `bench`).
const DOMAIN: &str = "bench.example.com";
/// Servers the in-memory route tables spread their tenants over.
const LOOKUP_SERVERS: usize = 100;

/// Where the settings read from the environment come from.
const SCRIPT: &str = "scripts/bench-router.sh";

/// What to run, from the environment.
struct Settings {
    slum: PathBuf,
    app: PathBuf,
    nginx: PathBuf,
    /// The bare hyper proxy (examples/bare_proxy.rs), a second baseline.
    bare: PathBuf,
    duration: u64,
    warmup: u64,
    load: Load,
    lookups: usize,
    /// Set up the three paths, print them and wait for Ctrl-C instead of
    /// measuring (for profiling by hand).
    hold: bool,
    /// Worker counts compared: slum's router threads and nginx's worker
    /// processes, the same number for both (default: one per CPU, and one).
    workers: Vec<usize>,
    /// Seconds of the one-connection runs.
    single: u64,
    /// Times every path is measured, taking turns.
    rounds: usize,
    /// oha, for the fixed-rate runs (none: they are skipped).
    oha: Option<PathBuf>,
    /// The fixed rates, as fractions of the slowest proxy's throughput under
    /// wrk in the first round.
    rates: Vec<f64>,
    /// Seconds of each fixed-rate run.
    rate_duration: u64,
}

/// `BENCH_RATES`, a comma-separated list of fractions in (0, 1]; by default a
/// quarter and a half.
fn env_rates() -> anyhow::Result<Vec<f64>> {
    match std::env::var("BENCH_RATES") {
        Ok(v) => v
            .split(',')
            .map(|r| {
                r.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| *f > 0.0 && *f <= 1.0)
            })
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("BENCH_RATES={v:?} is not a list of fractions in (0, 1]")),
        Err(_) => Ok(vec![0.25, 0.5]),
    }
}

/// `BENCH_WORKERS`, a comma-separated list; by default one per CPU, then one.
fn env_workers() -> anyhow::Result<Vec<usize>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = match std::env::var("BENCH_WORKERS") {
        Ok(v) => v
            .split(',')
            .map(|w| w.trim().parse::<usize>().ok().filter(|&n| n > 0))
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("BENCH_WORKERS={v:?} is not a list of positive numbers"))?,
        Err(_) => vec![cpus, 1],
    };
    workers.dedup();
    Ok(workers)
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let s = Settings {
            slum: env_path("SLUM_BIN", None, SCRIPT)?,
            app: env_path("SLUM_DEMO_APP", None, SCRIPT)?,
            nginx: env_path("NGINX", Some("nginx"), SCRIPT)?,
            bare: env_path("BARE_PROXY", None, SCRIPT)?,
            duration: env_number("BENCH_DURATION", 10)?,
            warmup: env_number("BENCH_WARMUP", 2)?,
            load: Load::from_env(SCRIPT)?,
            lookups: env_number("BENCH_LOOKUPS", 2_000_000)?,
            hold: env_number("BENCH_HOLD", 0u8)? != 0,
            workers: env_workers()?,
            single: env_number("BENCH_SINGLE", 3)?,
            rounds: env_number("BENCH_ROUNDS", 1)?,
            oha: std::env::var_os("OHA").map(PathBuf::from),
            rates: env_rates()?,
            rate_duration: env_number("BENCH_RATE_DURATION", 8)?,
        };
        if s.duration == 0
            || s.load.threads == 0
            || s.lookups == 0
            || s.rounds == 0
            || s.load.connections < s.load.threads
        {
            bail!("BENCH_DURATION, BENCH_THREADS, BENCH_LOOKUPS and BENCH_ROUNDS must be positive and BENCH_CONNECTIONS at least BENCH_THREADS");
        }
        Ok(s)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    println!("slum router benchmark");
    println!(
        "  machine: {} cpus, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!("  wrk:     {}", tool_version(&settings.load.wrk, "-v"));
    println!("  nginx:   {}", tool_version(&settings.nginx, "-v"));
    println!(
        "  load:    wrk -t{} -c{} -d{}s --latency, after a {}s warm-up per path",
        settings.load.threads, settings.load.connections, settings.duration, settings.warmup
    );

    // The pure part first, while nothing else of ours runs.
    println!(
        "\nroute lookup: {} lookups of random existing domains a pass, the fastest of {} passes each \
         (route, the table before issue 17 and the bare map taking turns)",
        settings.lookups, LOOKUP_ROUNDS
    );
    println!(
        "  {:>9}  {:>28}  {:>28}  {:>9}",
        "", "any domain (ns/lookup)", "hot 1,000 domains (ns/lookup)", ""
    );
    println!(
        "  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}",
        "tenants", "route", "before", "bare", "route", "before", "bare", "build ms"
    );
    let small = lookup_bench(1_000, settings.lookups)?;
    small.print();
    let large = lookup_bench(1_000_000, settings.lookups)?;
    large.print();
    for r in [&small, &large] {
        println!(
            "  {} tenants: route / the table before issue 17: any domain {:.2}x, hot domains {:.2}x",
            r.tenants,
            r.any.route / r.any.before,
            r.hot.route / r.hot.before
        );
    }
    println!(
        "  1,000,000 / 1,000 tenants, any domain: route {:.2}x the time per lookup, before {:.2}x, bare map {:.2}x",
        large.any.route / small.any.route,
        large.any.before / small.any.before,
        large.any.bare / small.any.bare
    );
    println!(
        "  1,000,000 / 1,000 tenants, hot domains: route {:.2}x, before {:.2}x, bare map {:.2}x",
        large.hot.route / small.hot.route,
        large.hot.before / small.hot.before,
        large.hot.bare / small.hot.bare
    );

    // Dropping the future (on Ctrl-C) drops the fleet, slum and nginx guards.
    tokio::select! {
        r = http_bench(&settings) => r?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
    println!("\n  load average at the end: {}", load_average());
    Ok(())
}

// ---------------------------------------------------------------------------
// Route lookup micro-benchmark

struct LookupResult {
    tenants: usize,
    build: Duration,
    /// Of domains drawn from all of them.
    any: Lookups,
    /// Of domains drawn from a fixed set of `HOT` of them (the tenants that
    /// have traffic now).
    hot: Lookups,
}

/// Nanoseconds a lookup, the fastest pass of each.
#[derive(Clone, Copy)]
struct Lookups {
    /// `RouteTable::route`.
    route: f64,
    /// The route table before issue 17, rebuilt here ([`before17`]).
    before: f64,
    /// The baseline: `HashMap<String, usize>::get` of the same domains, with
    /// the route table's hasher (foldhash).
    bare: f64,
}

/// Domains in the hot set.
const HOT: usize = 1_000;

/// Passes of each lookup, taking turns: the fastest is kept (the machine's
/// noise only ever adds).
const LOOKUP_ROUNDS: usize = 5;

impl LookupResult {
    fn print(&self) {
        println!(
            "  {:>9}  {:>8.1}  {:>8.1}  {:>8.1}  {:>8.1}  {:>8.1}  {:>8.1}  {:>9.1}",
            self.tenants,
            self.any.route,
            self.any.before,
            self.any.bare,
            self.hot.route,
            self.hot.before,
            self.hot.bare,
            self.build.as_secs_f64() * 1e3
        );
    }
}

/// The route table as it was before issue 17 (938bfe5's `RouteTable`): a
/// decision made in advance for every domain, in one map keyed by domain and
/// hashed with foldhash; a lookup is `map.get(host)`, its `route` a reference
/// to the decision. Rebuilt with its types' layout (a target: upstream, Host
/// header, instance key; the decision's variants and their sizes) so that the
/// lookup it is measured against runs in the same process as the current one.
/// Only `Forward` is made and only its primary's upstream is read: the rest
/// is there for its size.
#[allow(dead_code)]
mod before17 {
    use std::sync::Arc;

    use hyper::header::HeaderValue;
    use slum::route_table::{DomainRoute, Upstream};

    pub struct Target {
        pub upstream: Arc<Upstream>,
        pub host: HeaderValue,
        pub instance: Arc<str>,
    }

    pub enum Decision {
        Forward {
            primary: Target,
            fallbacks: Arc<[Target]>,
            failover: bool,
        },
        Spawn(DomainRoute),
        ServerDown {
            tenant: String,
            servers: Vec<String>,
        },
        UnknownHost,
    }

    pub struct Table {
        pub domains: foldhash::HashMap<Box<str>, Decision>,
    }

    impl Table {
        #[inline]
        pub fn route(&self, host: &str) -> &Decision {
            static UNKNOWN: Decision = Decision::UnknownHost;
            self.domains.get(host).unwrap_or(&UNKNOWN)
        }
    }
}

fn lookup_domain(i: usize) -> String {
    format!("customer-{i}.example.com")
}

/// `lookups` domains, each drawn by `pick`, in one buffer read in order: a
/// request's Host is in cache when the router looks it up, so fetching the key
/// must not be what is measured.
struct Hosts {
    text: String,
    ends: Vec<usize>,
}

impl Hosts {
    fn new(lookups: usize, mut pick: impl FnMut() -> usize) -> Hosts {
        let mut text = String::with_capacity(lookups * 28);
        let mut ends = Vec::with_capacity(lookups);
        for _ in 0..lookups {
            let _ = write!(text, "{}", lookup_domain(pick()));
            ends.push(text.len());
        }
        Hosts { text, ends }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        self.ends.iter().scan(0, |start, &end| {
            let host = &self.text[*start..end];
            *start = end;
            Some(host)
        })
    }
}

/// Nanoseconds per call of `found` over `hosts`, which must find every one.
fn time_per_lookup(hosts: &Hosts, what: &str, found: impl Fn(&str) -> bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let n = hosts.iter().filter(|h| found(black_box(h))).count();
    let ns = started.elapsed().as_nanos() as f64 / hosts.ends.len().max(1) as f64;
    if n != hosts.ends.len() {
        bail!(
            "{what}: only {n} of {} lookups found their domain",
            hosts.ends.len()
        );
    }
    Ok(ns)
}

/// Builds a route table of `tenants` tenants, one running instance each on
/// their home server, the same as the table before issue 17 and as a bare
/// map, and times `lookups` lookups of random existing domains in each, drawn
/// from all of them and from a hot set of [`HOT`]: [`LOOKUP_ROUNDS`] passes of
/// each, taking turns.
fn lookup_bench(tenants: usize, lookups: usize) -> anyhow::Result<LookupResult> {
    let servers: Vec<Server> = (1..=LOOKUP_SERVERS)
        .map(|i| Server {
            id: format!("s{i}"),
            url: format!("http://10.0.{}.{}:8000", i / 256, i % 256),
            domain: Some(format!("s{i}.fleet.test")),
            status: ServerStatus::Online,
            ..Default::default()
        })
        .collect();
    let home = |i: usize| format!("s{}", i % LOOKUP_SERVERS + 1);
    let tenant_list: Vec<Tenant> = (0..tenants)
        .map(|i| Tenant {
            domain: lookup_domain(i),
            name: format!("customer-{i}"),
            server_id: home(i),
            process: "api".into(),
            instance_id: "prod".into(),
            ..Default::default()
        })
        .collect();
    let instances: Vec<Instance> = (0..tenants)
        .map(|i| Instance {
            tenant: format!("customer-{i}"),
            instance_id: "prod".into(),
            process: "api".into(),
            server_id: home(i),
            ..Default::default()
        })
        .collect();
    let started = Instant::now();
    let table = RouteTable::build(1, &servers, &tenant_list, &instances);
    let build = started.elapsed();
    drop((tenant_list, instances));

    let old = before17::Table {
        domains: (0..tenants)
            .map(|i| -> anyhow::Result<(Box<str>, before17::Decision)> {
                let server = home(i);
                let upstream = table
                    .upstream(&server)
                    .with_context(|| format!("no upstream {server}"))?;
                let primary = before17::Target {
                    upstream: Arc::clone(upstream),
                    host: HeaderValue::from_str(&format!("customer-{i}.api.{}", upstream.domain))?,
                    instance: format!("customer-{i}:prod").into(),
                };
                let decision = before17::Decision::Forward {
                    primary,
                    fallbacks: Arc::from(Vec::new()),
                    failover: false,
                };
                Ok((lookup_domain(i).into(), decision))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let map: foldhash::HashMap<String, usize> =
        (0..tenants).map(|i| (lookup_domain(i), i)).collect();

    let mut rng = StdRng::seed_from_u64(0x5101);
    let all = Hosts::new(lookups, || rng.gen_range(0..tenants));
    let hot_set: Vec<usize> = (0..HOT.min(tenants))
        .map(|_| rng.gen_range(0..tenants))
        .collect();
    let hot = Hosts::new(lookups, || hot_set[rng.gen_range(0..hot_set.len())]);

    // Each lookup gives where the request goes: the server a route sends it
    // to (the pointer to its upstream), the bare map's value.
    let routed = |h: &str| match table.route(h) {
        Decision::Forward { primary, .. } => {
            black_box(Arc::as_ptr(primary.upstream));
            true
        }
        _ => false,
    };
    let routed_before = |h: &str| match old.route(h) {
        before17::Decision::Forward { primary, .. } => {
            black_box(Arc::as_ptr(&primary.upstream));
            true
        }
        _ => false,
    };
    let got = |h: &str| black_box(map.get(h)).is_some();
    let mut any = Lookups {
        route: f64::MAX,
        before: f64::MAX,
        bare: f64::MAX,
    };
    let mut hot_ns = any;
    for _ in 0..LOOKUP_ROUNDS {
        for (hosts, ns) in [(&all, &mut any), (&hot, &mut hot_ns)] {
            ns.route = ns.route.min(time_per_lookup(hosts, "route", routed)?);
            ns.before = ns.before.min(time_per_lookup(
                hosts,
                "table before issue 17",
                routed_before,
            )?);
            ns.bare = ns.bare.min(time_per_lookup(hosts, "bare HashMap", got)?);
        }
    }
    Ok(LookupResult {
        tenants,
        build,
        any,
        hot: hot_ns,
    })
}

// ---------------------------------------------------------------------------
// Load through the three paths

/// The processes of a proxy, found afresh at each look (nginx may respawn a
/// worker).
type ProxyPids = dyn Fn() -> Vec<u32>;

/// One measured path.
struct Row {
    name: String,
    wrk: WrkResult,
    /// CPU time of the proxy (slum, or nginx master and workers), per request.
    proxy_cpu_us: Option<f64>,
    /// CPU time of `ten serve` per request (tenement's own proxying).
    ten_cpu_us: f64,
    /// One client on one connection.
    single: Option<WrkResult>,
}

async fn http_bench(settings: &Settings) -> anyhow::Result<()> {
    let ten = find_ten()?;
    let dir = tempfile::tempdir()?;
    println!("\nstarting a tenement server, slum serve and nginx...");
    let fleet = LocalFleet::start(&FleetSpec::new(1, ten, settings.app.clone())).await?;
    let server = &fleet.servers[0];
    let ten_pid = server.pid().context("ten serve is not running")?;
    let comm = fs::read_to_string(format!("/proc/{ten_pid}/comm")).unwrap_or_default();
    if comm.trim() != "ten" {
        bail!("pid {ten_pid} of the tenement server is {comm:?}, not ten");
    }

    // One database, one slum serve per worker count (several routers share a
    // fleet database).
    let db_path = dir.path().join("slum.db");
    let mut slums = Vec::new();
    for &n in &settings.workers {
        let slum = start_slum(
            &settings.slum,
            &db_path,
            &dir.path().join("token"),
            &dir.path().join(format!("slum-{n}.log")),
            &["--router-threads".into(), n.to_string()],
        )
        .await?;
        slums.push(slum);
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

    let direct_url = format!("{}/", server.url());
    let expected = check(&direct_url, &mapped_host, None, Duration::from_secs(5))
        .await
        .context("straight to tenement")?;
    let waited = Instant::now();
    for slum in &slums {
        check(
            &slum.url(),
            DOMAIN,
            Some(&expected),
            Duration::from_secs(10),
        )
        .await
        .context("through slum")?;
    }
    println!(
        "  slum routes {DOMAIN} {:.0} ms after the spawn (its route poll)",
        waited.elapsed().as_secs_f64() * 1e3
    );
    let mut nginxes = Vec::new();
    for &n in &settings.workers {
        let upstream = server.url();
        let nginx = Nginx::start(&settings.nginx, |dir, addr| {
            nginx_conf(dir, addr, &upstream, &mapped_host, n)
        })
        .await?;
        check(
            &nginx.url(),
            DOMAIN,
            Some(&expected),
            Duration::from_secs(10),
        )
        .await
        .context("through nginx")?;
        nginxes.push(nginx);
    }
    let bare = start_bare_proxy(&settings.bare, server, &mapped_host, false).await?;
    check(
        &bare.url(),
        DOMAIN,
        Some(&expected),
        Duration::from_secs(10),
    )
    .await
    .context("through the bare hyper proxy")?;
    let raw = start_bare_proxy(&settings.bare, server, &mapped_host, true).await?;
    check(&raw.url(), DOMAIN, Some(&expected), Duration::from_secs(10))
        .await
        .context("through the bare proxy with a hand-written upstream side")?;
    println!("  tenant answers: {}", expected.trim());
    println!("  (a) {direct_url} Host: {mapped_host}");
    for ((slum, nginx), n) in slums.iter().zip(&nginxes).zip(&settings.workers) {
        println!(
            "  (b{n}) {} Host: {DOMAIN} (slum --router-threads {n}, pid {})",
            slum.url(),
            slum.pid()
        );
        println!(
            "  (c{n}) {} Host: {DOMAIN} (nginx worker_processes {n}, master pid {})",
            nginx.url(),
            nginx.pid()
        );
    }
    println!(
        "  (h) {} Host: {DOMAIN} (bare hyper proxy, one thread, pid {})",
        bare.url(),
        bare.pid()
    );
    println!(
        "  (r) {} Host: {DOMAIN} (bare proxy, hand-written upstream side, pid {})",
        raw.url(),
        raw.pid()
    );
    if settings.hold {
        // What scripts/bench-instructions.sh starts its own proxies with.
        println!("  database: {}", db_path.display());
        if let Some(nginx) = nginxes.last() {
            println!("  nginx config: {}", nginx.conf_path().display());
        }
        println!("  holding (BENCH_HOLD): Ctrl-C ends");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    let mut paths: Vec<(String, String, &str, Option<Box<ProxyPids>>)> =
        vec![("(a) direct".into(), direct_url.clone(), &mapped_host, None)];
    for ((slum, nginx), n) in slums.iter().zip(&nginxes).zip(&settings.workers) {
        let slum_pid = slum.pid();
        let nginx_pid = nginx.pid();
        paths.push((
            format!("(b{n}) slum"),
            slum.url(),
            DOMAIN,
            Some(Box::new(move || vec![slum_pid])),
        ));
        paths.push((
            format!("(c{n}) nginx"),
            nginx.url(),
            DOMAIN,
            Some(Box::new(move || nginx_pids(nginx_pid))),
        ));
    }
    let bare_pid = bare.pid();
    paths.push((
        "(h) hyper".into(),
        bare.url(),
        DOMAIN,
        Some(Box::new(move || vec![bare_pid])),
    ));
    let raw_pid = raw.pid();
    paths.push((
        "(r) raw".into(),
        raw.url(),
        DOMAIN,
        Some(Box::new(move || vec![raw_pid])),
    ));
    let mut rounds: Vec<Vec<Row>> = Vec::with_capacity(settings.rounds);
    for round in 1..=settings.rounds {
        if settings.rounds > 1 {
            println!("  round {round} of {}", settings.rounds);
        }
        let mut rows = Vec::new();
        for (name, url, host, proxy_pids) in &paths {
            rows.push(measure(settings, name, url, host, ten_pid, proxy_pids.as_deref()).await?);
        }
        rounds.push(rows);
    }
    println!(
        "  one client on one connection: wrk -t1 -c1 -d{}s per path...",
        settings.single
    );
    if let Some(first) = rounds.first_mut() {
        for (row, (_, url, host, _)) in first.iter_mut().zip(&paths) {
            row.single =
                Some(common::run_wrk(&settings.load.wrk, 1, 1, url, host, settings.single).await?);
        }
    }
    for (i, rows) in rounds.iter().enumerate() {
        if settings.rounds > 1 {
            println!("\n== round {} of {}", i + 1, settings.rounds);
        }
        print_results(rows, &settings.workers);
    }
    if settings.rounds > 1 {
        print_spread(&rounds, &settings.workers);
    }
    match &settings.oha {
        Some(oha) => {
            let compared = &paths[..1 + 2 * settings.workers.len()];
            fixed_rates(settings, oha, compared, &rounds[0]).await?;
        }
        None => println!("\nfixed-rate runs skipped: OHA is not set ({SCRIPT} sets it)"),
    }

    // Stop in reverse order of start; each guard also does this on error.
    drop(raw);
    drop(bare);
    drop(nginxes);
    drop(slums);
    drop(fleet);
    Ok(())
}

/// GETs `url` with `host` until it answers 200 (with `expected`, when given)
/// or `within` passes; returns the body.
async fn check(
    url: &str,
    host: &str,
    expected: Option<&str>,
    within: Duration,
) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = Instant::now() + within;
    loop {
        let last = match http.get(url).header("host", host).send().await {
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                if status == 200 {
                    match expected {
                        Some(e) if e != body => {
                            bail!("answered {body:?}, but tenement answered {e:?}")
                        }
                        _ => return Ok(body),
                    }
                }
                format!("{status}: {}", body.trim())
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("GET {url} (Host: {host}) did not answer 200 within {within:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn measure(
    settings: &Settings,
    name: &str,
    url: &str,
    host: &str,
    ten_pid: u32,
    proxy_pids: Option<&ProxyPids>,
) -> anyhow::Result<Row> {
    println!(
        "  {name}: warm-up {}s, then {}s...",
        settings.warmup, settings.duration
    );
    if settings.warmup > 0 {
        settings.load.run(url, host, settings.warmup).await?;
    }
    let ten_before = cpu_ticks(ten_pid)?;
    let proxy_before = proxy_ticks(proxy_pids)?;
    let wrk = settings.load.run(url, host, settings.duration).await?;
    let ten_after = cpu_ticks(ten_pid)?;
    let proxy_after = proxy_ticks(proxy_pids)?;
    Ok(Row {
        name: name.to_owned(),
        proxy_cpu_us: proxy_before
            .zip(proxy_after)
            .map(|(b, a)| us_per_request(b, a, wrk.requests))
            .transpose()?,
        ten_cpu_us: us_per_request(ten_before, ten_after, wrk.requests)?,
        wrk,
        single: None,
    })
}

/// The CPU ticks of a proxy's processes so far (none for no proxy).
fn proxy_ticks(pids: Option<&ProxyPids>) -> anyhow::Result<Option<u64>> {
    pids.map(|pids| pids().into_iter().map(cpu_ticks).sum())
        .transpose()
}

fn print_results(rows: &[Row], workers: &[usize]) {
    println!(
        "\n{:<12} {:>10} {:>8} {:>8} {:>8} {:>9} {:>14} {:>12} {:>11} {:>11}",
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "sock err",
        "proxy CPU/req",
        "ten CPU/req",
        "1 conn r/s",
        "1 conn p99"
    );
    for r in rows {
        let proxy = r
            .proxy_cpu_us
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.1} us"));
        let (single_rps, single_p99) = r.single.as_ref().map_or_else(
            || ("-".to_owned(), "-".to_owned()),
            |w| {
                (
                    format!("{:.0}", w.requests_per_sec),
                    format!("{:.2} ms", w.p99_ms),
                )
            },
        );
        println!(
            "{:<12} {:>10.0} {:>8.2} {:>8.2} {:>8} {:>9} {:>14} {:>12} {:>11} {:>11}",
            r.name,
            r.wrk.requests_per_sec,
            r.wrk.p50_ms,
            r.wrk.p99_ms,
            r.wrk.non_2xx,
            r.wrk.socket_errors,
            proxy,
            format!("{:.1} us", r.ten_cpu_us),
            single_rps,
            single_p99,
        );
    }
    let direct = &rows[0];
    let pairs = &rows[1..1 + 2 * workers.len()];
    for (n, pair) in workers.iter().zip(pairs.chunks(2)) {
        let [slum, nginx] = pair else { continue };
        println!("\n{n} worker(s) each: slum --router-threads {n}, nginx worker_processes {n}");
        println!(
            "  throughput  slum/direct: {:.2}x   slum/nginx: {:.2}x   nginx/direct: {:.2}x",
            slum.wrk.requests_per_sec / direct.wrk.requests_per_sec,
            slum.wrk.requests_per_sec / nginx.wrk.requests_per_sec,
            nginx.wrk.requests_per_sec / direct.wrk.requests_per_sec,
        );
        println!(
            "  p99 added   slum: {:+.2} ms   nginx: {:+.2} ms",
            slum.wrk.p99_ms - direct.wrk.p99_ms,
            nginx.wrk.p99_ms - direct.wrk.p99_ms,
        );
        if let (Some(s), Some(c)) = (slum.proxy_cpu_us, nginx.proxy_cpu_us) {
            println!(
                "  CPU/request slum: {s:.1} us   nginx: {c:.1} us   slum/nginx: {:.2}x",
                s / c
            );
        }
    }
    // What slum costs beyond hyper: its one-thread row against the bare proxy.
    let one = workers.iter().position(|&n| n == 1);
    let bare = rows.iter().find(|r| r.name.starts_with("(h)"));
    let raw = rows.iter().find(|r| r.name.starts_with("(r)"));
    if let (Some(h), Some(r)) = (
        bare.and_then(|b| b.proxy_cpu_us),
        raw.and_then(|r| r.proxy_cpu_us),
    ) {
        println!(
            "\nhyper's client: bare proxy {h:.1} us per request, with the upstream side \
             written by hand {r:.1} us (raw/hyper {:.2}x)",
            r / h
        );
    }
    if let (Some(i), Some(bare)) = (one, bare) {
        if let (Some(s), Some(h)) = (pairs[2 * i].proxy_cpu_us, bare.proxy_cpu_us) {
            println!(
                "\none thread each: slum {s:.1} us, bare hyper proxy {h:.1} us per request \
                 (slum/hyper {:.2}x); throughput slum/hyper {:.2}x",
                s / h,
                pairs[2 * i].wrk.requests_per_sec / bare.wrk.requests_per_sec
            );
        }
    }
    for r in rows {
        if r.wrk.non_2xx > 0 || r.wrk.socket_errors > 0 {
            println!(
                "warning: {} had {} non-2xx/3xx responses and {} socket errors ({})",
                r.name, r.wrk.non_2xx, r.wrk.socket_errors, r.wrk.socket_errors_text
            );
        }
    }
}

/// slum's ratios to nginx over the rounds: median, lowest and highest.
fn print_spread(rounds: &[Vec<Row>], workers: &[usize]) {
    println!("\n== over {} rounds: median (lowest-highest)", rounds.len());
    let spread = |mut v: Vec<f64>| -> String {
        v.sort_by(f64::total_cmp);
        match (v.first(), v.get(v.len() / 2), v.last()) {
            (Some(lo), Some(mid), Some(hi)) => format!("{mid:.2}x ({lo:.2}-{hi:.2})"),
            _ => "-".to_owned(),
        }
    };
    for (i, n) in workers.iter().enumerate() {
        let pairs = || {
            rounds
                .iter()
                .filter_map(move |rows| rows.get(1 + 2 * i).zip(rows.get(2 + 2 * i)))
        };
        let throughput = pairs()
            .map(|(s, c)| s.wrk.requests_per_sec / c.wrk.requests_per_sec)
            .collect();
        let cpu = pairs()
            .filter_map(|(s, c)| Some(s.proxy_cpu_us? / c.proxy_cpu_us?))
            .collect();
        println!(
            "  {n} worker(s) each: throughput slum/nginx {}   CPU/request slum/nginx {}",
            spread(throughput),
            spread(cpu)
        );
    }
}

// ---------------------------------------------------------------------------
// Latency at fixed rates (open loop)

/// One run of oha at a fixed rate.
struct RateRun {
    achieved: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Answers other than 200, and requests that got none.
    failed: u64,
    proxy_cpu_us: Option<f64>,
}

/// Latency with the same request rate offered on every path: wrk keeps its
/// connections busy, so its latency grows with the queue a slower path
/// builds (at saturation, latency is connections over throughput). oha sends
/// at a fixed rate whatever the answers do, and with `--latency-correction`
/// counts each request from when it was due, so a stall is paid for by the
/// requests that waited behind it too.
async fn fixed_rates(
    settings: &Settings,
    oha: &Path,
    paths: &[(String, String, &str, Option<Box<ProxyPids>>)],
    first_round: &[Row],
) -> anyhow::Result<()> {
    // The slowest compared proxy under wrk: every path can carry the rates.
    let slowest = first_round[1..paths.len()]
        .iter()
        .map(|r| r.wrk.requests_per_sec)
        .fold(f64::INFINITY, f64::min);
    let rates: Vec<u64> = settings
        .rates
        .iter()
        .map(|f| ((slowest * f) / 100.0).round() as u64 * 100)
        .filter(|&r| r > 0)
        .collect();
    println!(
        "\nfixed rates: oha -c{} -q RATE -z{}s --latency-correction, {} (of the slowest proxy's {slowest:.0} req/s under wrk)",
        settings.load.connections,
        settings.rate_duration,
        rates
            .iter()
            .zip(&settings.rates)
            .map(|(r, f)| format!("{r} req/s ({:.0}%)", f * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
    );
    // runs[rate][round][path]
    let mut runs: Vec<Vec<Vec<RateRun>>> = Vec::new();
    for &rate in &rates {
        let mut rounds = Vec::new();
        for round in 1..=settings.rounds {
            let mut row = Vec::new();
            for (name, url, host, pids) in paths {
                println!("  {rate} req/s, round {round}: {name}...");
                row.push(rate_run(settings, oha, rate, url, host, pids.as_deref()).await?);
            }
            rounds.push(row);
        }
        runs.push(rounds);
    }
    for (rate, rounds) in rates.iter().zip(&runs) {
        println!("\n== {rate} req/s offered");
        println!(
            "{:<12} {:>6} {:>10} {:>8} {:>8} {:>9} {:>7} {:>14}",
            "path", "round", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "failed", "proxy CPU/req"
        );
        for (i, row) in rounds.iter().enumerate() {
            for ((name, ..), r) in paths.iter().zip(row) {
                println!(
                    "{:<12} {:>6} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>14}",
                    name,
                    i + 1,
                    r.achieved,
                    r.p50_ms,
                    r.p99_ms,
                    r.p999_ms,
                    r.failed,
                    r.proxy_cpu_us
                        .map_or_else(|| "-".to_owned(), |us| format!("{us:.1} us"))
                );
            }
        }
        for (i, n) in settings.workers.iter().enumerate() {
            let added = |path: usize| -> String {
                rounds
                    .iter()
                    .map(|row| format!("{:+.2}", row[path].p99_ms - row[0].p99_ms))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let cpu: Vec<String> = rounds
                .iter()
                .filter_map(|row| Some(row[1 + 2 * i].proxy_cpu_us? / row[2 + 2 * i].proxy_cpu_us?))
                .map(|x| format!("{x:.2}x"))
                .collect();
            println!(
                "  {n} worker(s): p99 added over direct, slum: {} ms; nginx: {} ms; CPU/request slum/nginx: {}",
                added(1 + 2 * i),
                added(2 + 2 * i),
                cpu.join(", ")
            );
        }
    }
    Ok(())
}

/// oha at `rate` requests/s on `url` for the configured time, after a
/// 2-second warm-up at the same rate.
async fn rate_run(
    settings: &Settings,
    oha: &Path,
    rate: u64,
    url: &str,
    host: &str,
    proxy_pids: Option<&ProxyPids>,
) -> anyhow::Result<RateRun> {
    let run = |seconds: u64| {
        tokio::process::Command::new(oha)
            .args(["-c", &settings.load.connections.to_string()])
            .args(["-q", &rate.to_string()])
            .args(["-z", &format!("{seconds}s")])
            .args([
                "--latency-correction",
                "--no-tui",
                "--output-format",
                "json",
            ])
            .args(["--host", host])
            .arg(url)
            .stdin(Stdio::null())
            .output()
    };
    run(2).await?;
    let before = proxy_ticks(proxy_pids)?;
    let out = run(settings.rate_duration).await?;
    let after = proxy_ticks(proxy_pids)?;
    if !out.status.success() {
        bail!(
            "oha on {url} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("oha's report on {url} is not JSON"))?;
    let number = |v: &serde_json::Value, what: &str| -> anyhow::Result<f64> {
        v.as_f64()
            .with_context(|| format!("oha's report on {url} has no {what}"))
    };
    let latency = &report["latencyPercentiles"];
    let ok = report["statusCodeDistribution"]["200"]
        .as_u64()
        .unwrap_or(0);
    let answered: u64 = report["statusCodeDistribution"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    // Requests still in flight when the time is up are cut off, which oha
    // counts as errors "aborted due to deadline": not failures.
    let errors: u64 = report["errorDistribution"].as_object().map_or(0, |m| {
        m.iter()
            .filter(|(e, _)| !e.contains("aborted due to deadline"))
            .filter_map(|(_, v)| v.as_u64())
            .sum()
    });
    Ok(RateRun {
        achieved: number(&report["summary"]["requestsPerSec"], "requestsPerSec")?,
        p50_ms: number(&latency["p50"], "p50")? * 1e3,
        p99_ms: number(&latency["p99"], "p99")? * 1e3,
        p999_ms: number(&latency["p99.9"], "p99.9")? * 1e3,
        failed: answered - ok + errors,
        proxy_cpu_us: before
            .zip(after)
            .map(|(b, a)| us_per_request(b, a, ok))
            .transpose()?,
    })
}

// ---------------------------------------------------------------------------
// Processes: slum serve, nginx, CPU accounting

/// examples/bare_proxy.rs in front of the tenement server (`raw`: with its
/// upstream side written by hand), once it listens.
async fn start_bare_proxy(
    bin: &Path,
    server: &LocalServer,
    mapped_host: &str,
    raw: bool,
) -> anyhow::Result<Served> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let upstream = server.url();
    let upstream = upstream.trim_start_matches("http://");
    let mode = if raw { "raw" } else { "hyper" };
    let child = Command::new(bin)
        .args([&addr.to_string(), upstream, mapped_host, mode])
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    Served::wait(
        child,
        addr,
        "the bare proxy",
        Duration::from_secs(10),
        String::new,
    )
    .await
}

/// The equivalent of slum's router for one tenant, as an nginx config.
fn nginx_conf(
    dir: &Path,
    listen: SocketAddr,
    upstream_url: &str,
    mapped_host: &str,
    workers: usize,
) -> String {
    let upstream = upstream_url.trim_start_matches("http://");
    let d = dir.display();
    format!(
        r#"worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream tenement {{
        server {upstream};
        keepalive 64;
    }}

    server {{
        listen {listen};
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
