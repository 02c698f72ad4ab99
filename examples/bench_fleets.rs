//! The fleet database benchmark: PostgreSQL (several routers, one fleet) against
//! SQLite (the embedded default), in one run:
//!
//! 1. **Change propagation** between two routers on one database: two
//!    `slum serve` ([`Serving`]) in this process; a tenant is added through
//!    router A's library handle and the time is taken from `add_tenant`
//!    returning (the write has committed) until router B's route table routes
//!    the new domain (B's table is polled every 0.1 ms from a blocking thread).
//!    On PostgreSQL B is woken by LISTEN/NOTIFY, on SQLite (both routers on the
//!    same file) by its poll of the routing version every `--route-poll`
//!    (250 ms). A random pause of up to one poll interval comes before each
//!    change, so that the writes do not fall into step with B's polls.
//! 2. **Writes per second**: `SlumDb::add_tenant` on a fresh database from 1 and
//!    from 8 concurrent tasks (a fixed count per row, split over the tasks), with
//!    the latency of each write; no router is attached.
//! 3. **Routing throughput** of one router: the release `slum serve` binary (a
//!    child process) in front of one real tenement server (in its own network
//!    namespace), once with `--database postgres://...` and once with a SQLite
//!    file, loaded with wrk after a warm-up; rounds alternate the order (ABBA).
//!    The ratio should be ~1: the request path makes no database query.
//!
//! Run it with `sudo scripts/bench-fleets.sh`: it builds the release binaries,
//! installs wrk when missing, and runs this under `scripts/with-postgres.sh`
//! (a throw-away PostgreSQL cluster whose admin URL is `SLUM_TEST_POSTGRES`;
//! each measurement gets a fresh database there, dropped at the end).
//! `BENCH_CHANGES`, `BENCH_WRITES`, `BENCH_DURATION`, `BENCH_WARMUP` (seconds),
//! `BENCH_THREADS`, `BENCH_CONNECTIONS` and `BENCH_ROUNDS` change the load.
//!
//! Traffic goes to loopback and the test namespace only. Everything it starts
//! (routers, `slum serve` children, the tenement server, databases, temp files)
//! is stopped or removed on the way out, also on error or Ctrl-C.

// Shared with the other benchmarks, which use the rest of it.
#[allow(dead_code)]
mod common;
use common::{
    clock_ticks_per_second, cpu_ticks, env_number, env_path, load_average, start_slum,
    tool_version, Load, Served, WrkResult,
};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{rngs::StdRng, Rng, SeedableRng};
use slum::local_fleet::{find_ten, FleetSpec, LocalFleet, LocalServer};
use slum::route_table::Decision;
use slum::serve::{AppState, ServeArgs, ServeConfig, Serving};
use slum::{Server, ServerStatus, SlumDb, Tenant};
use sqlx::{Connection, Executor};

/// The routers' poll of the routing version (`slum serve`'s default).
const ROUTE_POLL: Duration = Duration::from_millis(250);
/// How often the benchmark looks at router B's route table.
const LOOK_EVERY: Duration = Duration::from_micros(100);
/// Changes made before the measured ones (connections, caches, first reloads).
const WARMUP_CHANGES: usize = 5;
/// Writes made before the measured ones on each fresh database.
const WARMUP_WRITES: usize = 100;
const WRITE_TASKS: [usize; 2] = [1, 8];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    const BOTH: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];

    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Where the settings read from the environment come from.
const SCRIPT: &str = "scripts/bench-fleets.sh";

/// What to run, from the environment.
struct Settings {
    command: String,
    slum: PathBuf,
    app: PathBuf,
    pg_admin: String,
    changes: usize,
    writes: usize,
    duration: u64,
    warmup: u64,
    load: Load,
    rounds: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let s = Settings {
            command: std::env::var("BENCH_COMMAND")
                .unwrap_or_else(|_| "target/release/examples/bench_fleets".into()),
            slum: env_path("SLUM_BIN", None, SCRIPT)?,
            app: env_path("SLUM_DEMO_APP", None, SCRIPT)?,
            pg_admin: std::env::var("SLUM_TEST_POSTGRES").context(
                "SLUM_TEST_POSTGRES (a PostgreSQL admin URL) is not set; use scripts/bench-fleets.sh",
            )?,
            changes: env_number("BENCH_CHANGES", 200)?,
            writes: env_number("BENCH_WRITES", 5_000)?,
            duration: env_number("BENCH_DURATION", 10)?,
            warmup: env_number("BENCH_WARMUP", 2)?,
            load: Load::from_env(SCRIPT)?,
            rounds: env_number("BENCH_ROUNDS", 2)?,
        };
        if s.changes == 0
            || s.writes < WRITE_TASKS[1]
            || s.duration == 0
            || s.load.threads == 0
            || s.rounds == 0
            || s.load.connections < s.load.threads
        {
            bail!("BENCH_CHANGES, BENCH_DURATION, BENCH_THREADS and BENCH_ROUNDS must be positive, BENCH_WRITES at least 8 and BENCH_CONNECTIONS at least BENCH_THREADS");
        }
        Ok(s)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let settings = Settings::from_env()?;
    let databases = Databases::new(&settings.pg_admin)?;
    let pg_version = databases.server_version().await?;
    println!("slum fleets benchmark: PostgreSQL vs SQLite fleet database");
    println!("  command:  {}", settings.command);
    println!(
        "  machine:  {} cpus, load average {} (at the start)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!(
        "  postgres: {pg_version}, throw-away cluster on {} (fsync off), a fresh database per measurement",
        databases.pg_host()
    );
    println!("  sqlite:   a fresh file per measurement (WAL, synchronous=NORMAL: no fsync per commit either)");
    println!("  wrk:      {}", tool_version(&settings.load.wrk, "-v"));

    // Dropping the future (on Ctrl-C or error) drops the routers, the `slum
    // serve` children and the fleet; the databases are dropped after it.
    let result = tokio::select! {
        r = run(&settings, &databases) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let dropped = databases.drop_all().await;
    result?;
    dropped?;
    println!("\nload average at the end: {}", load_average());
    Ok(())
}

async fn run(settings: &Settings, databases: &Databases) -> anyhow::Result<()> {
    let ten = find_ten()?;
    println!("\nstarting one tenement server (network namespace)...");
    let fleet = LocalFleet::start(&FleetSpec::new(1, ten, settings.app.clone())).await?;
    let server = &fleet.servers[0];
    println!("  {} at {}", server.name, server.url());

    // 1. Change propagation.
    println!(
        "\n1. change propagation between two routers ({} changes per backend, {} more before them unmeasured)",
        settings.changes, WARMUP_CHANGES
    );
    println!("   router A: SlumDb::add_tenant on its handle; clock starts when the call returns (committed)");
    println!(
        "   router B: clock stops when its route table routes the new domain (looked at every {} us);",
        LOOK_EVERY.as_micros()
    );
    println!(
        "   a random pause of 0-{} ms before each change",
        ROUTE_POLL.as_millis()
    );
    let mut propagation = Vec::new();
    for backend in Backend::BOTH {
        let url = databases.fresh(backend).await?;
        propagation.push((
            backend,
            propagation_bench(settings, &url, &server.record()).await?,
        ));
    }
    print_propagation(&propagation);
    println!("   load average now: {}", load_average());

    // 2. Writes per second.
    println!(
        "\n2. writes: SlumDb::add_tenant, {} per row split over the tasks, on a fresh database after {} unmeasured; no router attached",
        settings.writes, WARMUP_WRITES
    );
    let mut writes = Vec::new();
    for backend in Backend::BOTH {
        let url = databases.fresh(backend).await?;
        writes.push((
            backend,
            write_bench(settings, &url, &server.record()).await?,
        ));
    }
    print_writes(&writes);
    println!("   load average now: {}", load_average());

    // 3. Routing throughput.
    routing_bench(settings, databases, server).await?;
    drop(fleet);
    Ok(())
}

// ---------------------------------------------------------------------------
// Databases

/// Fresh fleet databases on either backend: PostgreSQL databases created through
/// the admin URL (dropped by [`Databases::drop_all`]), SQLite files in a temp dir.
struct Databases {
    admin: String,
    dir: tempfile::TempDir,
    created: Mutex<Vec<String>>,
}

impl Databases {
    fn new(admin: &str) -> anyhow::Result<Databases> {
        url::Url::parse(admin).context("SLUM_TEST_POSTGRES is not a URL")?;
        Ok(Databases {
            admin: admin.to_owned(),
            dir: tempfile::tempdir()?,
            created: Mutex::default(),
        })
    }

    fn pg_host(&self) -> String {
        url::Url::parse(&self.admin)
            .map(|u| {
                format!(
                    "{}:{}",
                    u.host_str().unwrap_or("?"),
                    u.port().unwrap_or(5432)
                )
            })
            .unwrap_or_default()
    }

    async fn admin(&self) -> anyhow::Result<sqlx::PgConnection> {
        sqlx::PgConnection::connect(&self.admin)
            .await
            .context("cannot connect to SLUM_TEST_POSTGRES")
    }

    async fn server_version(&self) -> anyhow::Result<String> {
        let mut admin = self.admin().await?;
        let v: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut admin)
            .await?;
        admin.close().await?;
        Ok(format!("PostgreSQL {v}"))
    }

    /// A fresh, empty database (the first `SlumDb::init` makes the schema).
    async fn fresh(&self, backend: Backend) -> anyhow::Result<String> {
        let n = {
            let mut created = self.created.lock().expect("lock");
            created.push(String::new());
            created.len()
        };
        match backend {
            Backend::Sqlite => {
                let path = self.dir.path().join(format!("fleet-{n}.db"));
                Ok(path.to_str().context("temp dir is not UTF-8")?.to_owned())
            }
            Backend::Postgres => {
                let name = format!("slum_bench_{}_{n}", std::process::id());
                let mut admin = self.admin().await?;
                admin
                    .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await
                    .with_context(|| format!("cannot create database {name}"))?;
                admin.close().await?;
                self.created.lock().expect("lock")[n - 1] = name.clone();
                let mut url = url::Url::parse(&self.admin)?;
                url.set_path(&name);
                Ok(url.into())
            }
        }
    }

    /// Drops every PostgreSQL database made here (closing what is still
    /// connected to it).
    async fn drop_all(&self) -> anyhow::Result<()> {
        let names: Vec<String> = std::mem::take(&mut *self.created.lock().expect("lock"))
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let mut admin = self.admin().await?;
        for name in names {
            admin
                .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                .await
                .with_context(|| format!("cannot drop database {name}"))?;
        }
        admin.close().await?;
        Ok(())
    }
}

fn tenant(domain: String, server: &str) -> Tenant {
    Tenant {
        domain,
        server_id: server.into(),
        process: "api".into(),
        instance_id: "prod".into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// 1. Change propagation

/// A `slum serve` in this process on loopback ports; shut down when dropped
/// (its stop channel closes), or by [`InProcessRouter::stop`].
struct InProcessRouter {
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl InProcessRouter {
    async fn start(database: &str) -> anyhow::Result<InProcessRouter> {
        let dir = tempfile::tempdir()?;
        let args = ServeArgs {
            database: Some(PathBuf::from(database).into()),
            listen: Some("127.0.0.1:0".parse()?),
            api_listen: Some("127.0.0.1:0".parse()?),
            token_file: Some(dir.path().join("token")),
            route_poll: Some(ROUTE_POLL.as_secs_f64()),
            ..Default::default()
        };
        let serving = Serving::bind(ServeConfig::resolve(&args)?).await?;
        let state = serving.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serving.run(async move {
            let _ = rx.await;
        }));
        Ok(InProcessRouter {
            state,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .context("router did not stop within 10s")???;
        }
        Ok(())
    }

    /// Waits until this router's table says `server` is online (its health
    /// checks have run and every router has reloaded after them).
    async fn until_online(&self, server: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let online = self
                .state
                .routes
                .current()
                .upstream(server)
                .is_some_and(|u| u.status == ServerStatus::Online);
            if online {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("router never saw server {server} online");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Latencies of `changes` changes written through router A until router B
/// routes them, sorted.
async fn propagation_bench(
    settings: &Settings,
    database: &str,
    server: &Server,
) -> anyhow::Result<Vec<Duration>> {
    let a = InProcessRouter::start(database).await?;
    let b = InProcessRouter::start(database).await?;
    a.state.db.add_server(server).await?;
    a.state.fleet_changed().await;
    a.until_online(&server.id).await?;
    b.until_online(&server.id).await?;
    // Both routers check health and record the transition: let that settle.
    tokio::time::sleep(ROUTE_POLL * 2).await;

    let mut rng = StdRng::seed_from_u64(0xf1ee7);
    let mut latencies = Vec::with_capacity(settings.changes);
    for i in 0..WARMUP_CHANGES + settings.changes {
        tokio::time::sleep(ROUTE_POLL.mul_f64(rng.gen::<f64>())).await;
        let domain = format!("c{i}.example.com");
        a.state
            .db
            .add_tenant(&tenant(domain.clone(), &server.id))
            .await?;
        let committed = Instant::now();
        let routes = Arc::clone(&b.state.routes);
        let seen = tokio::task::spawn_blocking(move || {
            let deadline = committed + Duration::from_secs(10);
            loop {
                if !matches!(routes.current().route(&domain), Decision::UnknownHost) {
                    return Ok(committed.elapsed());
                }
                if Instant::now() > deadline {
                    bail!("router B did not route {domain} within 10s");
                }
                std::thread::sleep(LOOK_EVERY);
            }
        })
        .await??;
        if i >= WARMUP_CHANGES {
            latencies.push(seen);
        }
    }
    a.stop().await?;
    b.stop().await?;
    latencies.sort();
    Ok(latencies)
}

/// The nearest-rank percentile `p` (0..=100) of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_propagation(rows: &[(Backend, Vec<Duration>)]) {
    println!(
        "\n   {:<9} {:<26} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "backend", "router B follows by", "min ms", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (backend, l) in rows {
        let how = match backend {
            Backend::Postgres => "LISTEN/NOTIFY".to_owned(),
            Backend::Sqlite => format!("polling every {} ms", ROUTE_POLL.as_millis()),
        };
        println!(
            "   {:<9} {:<26} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            backend.name(),
            how,
            ms(l[0]),
            ms(percentile(l, 50.0)),
            ms(percentile(l, 90.0)),
            ms(percentile(l, 99.0)),
            ms(l[l.len() - 1]),
        );
    }
    println!(
        "   (issue 6 asks for every router within 100 ms; polling alone averages half an interval plus the reload)"
    );
}

// ---------------------------------------------------------------------------
// 2. Writes per second

struct WriteRow {
    tasks: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn write_bench(
    settings: &Settings,
    database: &str,
    server: &Server,
) -> anyhow::Result<Vec<WriteRow>> {
    let db = SlumDb::init(database).await?;
    db.add_server(server).await?;
    for i in 0..WARMUP_WRITES {
        db.add_tenant(&tenant(format!("warm-{i}.example.com"), &server.id))
            .await?;
    }
    let mut rows = Vec::new();
    for tasks in WRITE_TASKS {
        let each = settings.writes / tasks;
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let db = db.clone();
                let server = server.id.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(each);
                    for i in 0..each {
                        let domain = format!("w{tasks}-{t}-{i}.example.com");
                        let one = Instant::now();
                        db.add_tenant(&tenant(domain, &server)).await?;
                        latencies.push(one.elapsed());
                    }
                    anyhow::Ok(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(each * tasks);
        for h in handles {
            latencies.extend(h.await??);
        }
        let elapsed = started.elapsed();
        latencies.sort();
        rows.push(WriteRow {
            tasks,
            per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: percentile(&latencies, 50.0),
            p99: percentile(&latencies, 99.0),
        });
    }
    let expected = WARMUP_WRITES
        + WRITE_TASKS
            .iter()
            .map(|t| settings.writes / t * t)
            .sum::<usize>();
    let stored = db.list_tenants().await?.len();
    if stored != expected {
        bail!("{stored} tenants stored, {expected} written");
    }
    Ok(rows)
}

fn print_writes(rows: &[(Backend, Vec<WriteRow>)]) {
    let [(a_name, a), (b_name, b)] = rows else {
        return;
    };
    println!(
        "\n   {:<7} | {:>19} {:>8} {:>8} | {:>19} {:>8} {:>8} | {:>8}",
        "",
        format!("{} writes/s", a_name.name()),
        "p50 ms",
        "p99 ms",
        format!("{} writes/s", b_name.name()),
        "p50 ms",
        "p99 ms",
        "pg/lite",
    );
    for (x, y) in a.iter().zip(b) {
        println!(
            "   {:<7} | {:>19.0} {:>8.2} {:>8.2} | {:>19.0} {:>8.2} {:>8.2} | {:>7.2}x",
            format!("{} task{}", x.tasks, if x.tasks == 1 { "" } else { "s" }),
            x.per_sec,
            ms(x.p50),
            ms(x.p99),
            y.per_sec,
            ms(y.p50),
            ms(y.p99),
            x.per_sec / y.per_sec,
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Routing throughput

/// One router under test: its `slum serve` child and the domain it routes.
struct Target {
    backend: Backend,
    slum: Served,
    domain: String,
}

async fn routing_bench(
    settings: &Settings,
    databases: &Databases,
    server: &LocalServer,
) -> anyhow::Result<()> {
    println!(
        "\n3. routing throughput of one router: release `slum serve` in front of tenement server {}",
        server.name
    );
    println!(
        "   wrk -t{} -c{} -d{}s --latency after a {}s warm-up; {} round{}, order alternating (ABBA)",
        settings.load.threads,
        settings.load.connections,
        settings.duration,
        settings.warmup,
        settings.rounds,
        if settings.rounds == 1 { "" } else { "s" }
    );
    let ten_pid = server.pid().context("ten serve is not running")?;
    let mut targets = Vec::new();
    for backend in Backend::BOTH {
        let url = databases.fresh(backend).await?;
        let dir = databases.dir.path();
        let name = backend.name();
        let slum = start_slum(
            &settings.slum,
            &url,
            &dir.join(format!("token-{name}")),
            &dir.join(format!("slum-{name}.log")),
            &[],
        )
        .await?;
        // A tenant per backend (both instances run on the same server), added
        // and spawned through the library while the router runs: it learns of
        // them as it would of any other process's change.
        let domain = format!("bench-{}.example.com", backend.name());
        let db = SlumDb::init(&url).await?;
        db.add_server(&server.record()).await?;
        db.add_tenant(&tenant(domain.clone(), &server.name)).await?;
        let t = db.get_tenant_by_domain(&domain).await?;
        db.spawn_instance(&t.name, &t.process, &t.instance_id, &server.name)
            .await?;
        let mapped = format!("{}.{}.{}", t.name, t.process, server.domain);
        let expected = check(&format!("{}/", server.url()), &mapped, None).await?;
        check(&slum.url(), &domain, Some(&expected))
            .await
            .with_context(|| format!("through slum on {}", backend.name()))?;
        println!(
            "   {:<9} slum pid {}, {} -> {}: {}",
            backend.name(),
            slum.pid(),
            domain,
            slum.url(),
            expected.trim()
        );
        targets.push(Target {
            backend,
            slum,
            domain,
        });
    }

    let mut runs: Vec<(Backend, usize, Measured)> = Vec::new();
    for round in 0..settings.rounds {
        let order: Vec<&Target> = if round % 2 == 0 {
            targets.iter().collect()
        } else {
            targets.iter().rev().collect()
        };
        for t in order {
            println!(
                "   round {} {}: warm-up {}s, then {}s...",
                round + 1,
                t.backend.name(),
                settings.warmup,
                settings.duration
            );
            let m = measure(settings, t, ten_pid).await?;
            runs.push((t.backend, round + 1, m));
        }
    }
    print_routing(&runs);
    println!("   load average now: {}", load_average());
    drop(targets);
    Ok(())
}

struct Measured {
    wrk: WrkResult,
    slum_cpu_us: f64,
    ten_cpu_us: f64,
}

async fn measure(settings: &Settings, t: &Target, ten_pid: u32) -> anyhow::Result<Measured> {
    let url = t.slum.url();
    if settings.warmup > 0 {
        settings.load.run(&url, &t.domain, settings.warmup).await?;
    }
    let slum_before = cpu_ticks(t.slum.pid())?;
    let ten_before = cpu_ticks(ten_pid)?;
    let wrk = settings
        .load
        .run(&url, &t.domain, settings.duration)
        .await?;
    let slum_after = cpu_ticks(t.slum.pid())?;
    let ten_after = cpu_ticks(ten_pid)?;
    let tick = 1.0 / clock_ticks_per_second()?;
    let per_request_us = |ticks: u64| ticks as f64 * tick * 1e6 / wrk.requests.max(1) as f64;
    Ok(Measured {
        slum_cpu_us: per_request_us(slum_after.saturating_sub(slum_before)),
        ten_cpu_us: per_request_us(ten_after.saturating_sub(ten_before)),
        wrk,
    })
}

fn print_routing(runs: &[(Backend, usize, Measured)]) {
    println!(
        "\n   {:<9} {:>5} {:>10} {:>8} {:>8} {:>8} {:>9} {:>13} {:>12}",
        "backend",
        "round",
        "req/s",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "sock err",
        "slum CPU/req",
        "ten CPU/req"
    );
    let mut sorted: Vec<&(Backend, usize, Measured)> = runs.iter().collect();
    sorted.sort_by_key(|(b, round, _)| (*b != Backend::Postgres, *round));
    for (backend, round, m) in sorted {
        println!(
            "   {:<9} {:>5} {:>10.0} {:>8.2} {:>8.2} {:>8} {:>9} {:>13} {:>12}",
            backend.name(),
            round,
            m.wrk.requests_per_sec,
            m.wrk.p50_ms,
            m.wrk.p99_ms,
            m.wrk.non_2xx,
            m.wrk.socket_errors,
            format!("{:.1} us", m.slum_cpu_us),
            format!("{:.1} us", m.ten_cpu_us),
        );
    }
    let mean = |backend: Backend, f: &dyn Fn(&Measured) -> f64| {
        let v: Vec<f64> = runs
            .iter()
            .filter(|(b, _, _)| *b == backend)
            .map(|(_, _, m)| f(m))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let mut means = Vec::new();
    for backend in Backend::BOTH {
        let m = [
            mean(backend, &|m| m.wrk.requests_per_sec),
            mean(backend, &|m| m.wrk.p50_ms),
            mean(backend, &|m| m.wrk.p99_ms),
            mean(backend, &|m| m.slum_cpu_us),
        ];
        println!(
            "   {:<9} {:>5} {:>10.0} {:>8.2} {:>8.2} {:>8} {:>9} {:>13}",
            backend.name(),
            "mean",
            m[0],
            m[1],
            m[2],
            "",
            "",
            format!("{:.1} us", m[3]),
        );
        means.push(m);
    }
    let (pg, lite) = (means[0], means[1]);
    println!(
        "\n   postgres/sqlite: req/s {:.2}x   p50 {:.2}x   p99 {:.2}x   slum CPU/req {:.2}x   (~1 expected: no query on the request path)",
        pg[0] / lite[0],
        pg[1] / lite[1],
        pg[2] / lite[2],
        pg[3] / lite[3],
    );
    for (backend, round, m) in runs {
        if m.wrk.non_2xx > 0 || m.wrk.socket_errors > 0 {
            println!(
                "   warning: {} round {round} had {} non-2xx/3xx responses and {} socket errors ({})",
                backend.name(),
                m.wrk.non_2xx,
                m.wrk.socket_errors,
                m.wrk.socket_errors_text
            );
        }
    }
}

/// GETs `url` with `host` until it answers 200 (with `expected`, when given)
/// or 15 s pass; returns the body.
async fn check(url: &str, host: &str, expected: Option<&str>) -> anyhow::Result<String> {
    let within = Duration::from_secs(15);
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

// ---------------------------------------------------------------------------
// Processes and the machine

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(100));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(198));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(200));
        assert_eq!(percentile(&v, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
