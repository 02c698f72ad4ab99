//! Fleet database benchmark (plain `fn main()`, no harness).
//!
//! On a fresh SQLite fleet database in a temp dir, with 1,000 servers, 100,000
//! tenants spread over them and 20,000 instance records, it measures:
//!
//! 1. tenant inserts per second through `SlumDb::add_tenant` (the first 10,000
//!    from one task, the other 90,000 from 8 concurrent tasks);
//! 2. `get_tenant_by_domain` lookups per second over random existing domains,
//!    from 1, 2 and 8 concurrent tasks, a fixed count each;
//! 3. `list_servers` latency (median and p99);
//! 4. a baseline for 2.: the same lookup as a bare prepared `sqlx::query` on a
//!    plain `SqlitePool` opened on the same file with the same settings, and the
//!    ratio slum / baseline; and, for scale, the same query on one bare
//!    `SqliteConnection` without a pool (one task).
//!
//! Each lookup figure is the median of `ROUNDS` runs of a fixed count, slum and
//! baseline alternating, with the slowest and fastest run beside it. Beside the
//! wall-clock figures is the CPU time the process spent per operation (all
//! threads, the SQLite worker threads included; Linux only), which other work on
//! the machine skews less; how busy other processes kept the machine during the
//! run is printed too, since it skews every figure.
//!
//! `spawn_instance` talks to real tenement servers, so the instance records are
//! inserted straight into the `instances` table with sqlx (a fixture only).
//!
//! Run with `cargo bench --bench fleet_db`.

use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slum::{Server, ServerStatus, SlumDb, Tenant};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection};

const SERVERS: usize = 1_000;
const TENANTS: usize = 100_000;
const INSTANCES: usize = 20_000;
const SERVER_CAPACITY_MB: i64 = 8_192;
/// The first inserts, made from a single task.
const SINGLE_TASK_INSERTS: usize = 10_000;
/// Tasks making the remaining inserts.
const INSERT_TASKS: usize = 8;
/// Lookups per measurement (split evenly over the tasks).
const LOOKUPS: usize = 100_000;
const LOOKUP_TASKS: [usize; 3] = [1, 2, 8];
/// Lookups run (from 8 tasks) before measuring, so pools and caches are warm.
const WARMUP_LOOKUPS: usize = 10_000;
/// Runs of each lookup measurement (the median is reported).
const ROUNDS: usize = 3;
const LIST_RUNS: usize = 50;
const LIST_WARMUP_RUNS: usize = 3;

const TARGET_LOOKUPS_PER_SEC: f64 = 20_000.0;
const TARGET_LIST_MS: f64 = 50.0;

const BASELINE_SQL: &str =
    "SELECT domain, name, server_id, process, instance_id, created_at FROM tenants WHERE domain = ?";

fn server_id(i: usize) -> String {
    format!("srv-{i:04}")
}

fn tenant_domain(i: usize) -> String {
    format!("customer-{i}.example.com")
}

/// Home server of tenant `i`: 100 tenants per server.
fn home_server(i: usize) -> usize {
    i % SERVERS
}

/// Memory reserved by instance record `i` (64 to 256 MB).
fn instance_memory_mb(i: usize) -> i64 {
    64 * (1 + (i % 4) as i64)
}

/// splitmix64: a small deterministic generator, so runs pick the same domains.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// CPU time (user + system) used so far by the whole process, all threads: on
/// Linux from `/proc/self/stat` (in USER_HZ ticks, 100 a second, so 10 ms
/// resolution); `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name start at field 3 (state); utime and stime are
    // fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Wall-clock and process CPU time of one measured run.
#[derive(Debug, Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Option<Duration>,
}

impl Run {
    async fn time<T>(f: impl Future<Output = T>) -> (Run, T) {
        let (wall, cpu) = (Instant::now(), cpu_time());
        let out = f.await;
        let run = Run {
            wall: wall.elapsed(),
            cpu: cpu
                .zip(cpu_time())
                .map(|(before, after)| after.saturating_sub(before)),
        };
        (run, out)
    }
}

/// Runs `op` over `range` split evenly into `tasks` spawned tasks (each with its
/// own clone of `ctx` and its own sub-range) and times them until all have
/// finished.
async fn timed_tasks<C, F, Fut>(tasks: usize, range: Range<usize>, ctx: C, op: F) -> Run
where
    C: Clone + Send + 'static,
    F: Fn(C, Range<usize>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let len = range.len();
    let futures: Vec<Fut> = (0..tasks)
        .map(|t| {
            let sub = range.start + t * len / tasks..range.start + (t + 1) * len / tasks;
            op(ctx.clone(), sub)
        })
        .collect();
    let (run, ()) = Run::time(async {
        let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
        for h in handles {
            h.await.expect("bench task panicked");
        }
    })
    .await;
    run
}

/// A lookup key and the server its tenant must route to.
type Keys = Arc<Vec<(String, String)>>;

async fn slum_lookups(tasks: usize, count: usize, db: &SlumDb, keys: &Keys) -> Run {
    timed_tasks(
        tasks,
        0..count,
        (db.clone(), keys.clone()),
        |(db, keys), range| async move {
            for i in range {
                let (domain, server) = &keys[i % keys.len()];
                let tenant = db.get_tenant_by_domain(domain).await.expect("slum lookup");
                assert_eq!(&tenant.server_id, server);
            }
        },
    )
    .await
}

async fn baseline_lookups(tasks: usize, count: usize, pool: &SqlitePool, keys: &Keys) -> Run {
    timed_tasks(
        tasks,
        0..count,
        (pool.clone(), keys.clone()),
        |(pool, keys), range| async move {
            for i in range {
                let (domain, server) = &keys[i % keys.len()];
                let row = sqlx::query(BASELINE_SQL)
                    .bind(domain.as_str())
                    .fetch_optional(&pool)
                    .await
                    .expect("baseline lookup")
                    .expect("baseline: domain exists");
                let found: &str = row.get(2);
                assert_eq!(found, server);
            }
        },
    )
    .await
}

/// The baseline query on one connection of its own: no pool acquire, no
/// release (sqlx pings a connection's worker thread on every release).
async fn bare_connection_lookups(count: usize, conn: &mut SqliteConnection, keys: &Keys) -> Run {
    let (run, ()) = Run::time(async {
        for i in 0..count {
            let (domain, server) = &keys[i % keys.len()];
            let row = sqlx::query(BASELINE_SQL)
                .bind(domain.as_str())
                .fetch_optional(&mut *conn)
                .await
                .expect("bare connection lookup")
                .expect("bare connection: domain exists");
            let found: &str = row.get(2);
            assert_eq!(found, server);
        }
    })
    .await;
    run
}

/// The settings of slum's SQLite store (WAL, synchronous NORMAL, foreign keys,
/// 30 s busy timeout).
fn store_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30))
}

/// A pool with the same settings as slum's SQLite store, 8 connections.
async fn plain_pool(path: &Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .connect_with(store_options(path))
        .await
        .expect("open baseline pool")
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Rates of `runs` of `n` operations each: median, slowest and fastest.
fn rates(n: usize, runs: &[Run]) -> (f64, f64, f64) {
    let mut rates: Vec<f64> = runs.iter().map(|r| per_sec(n, r.wall)).collect();
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rates[0], rates[rates.len() - 1])
}

fn rate_cell((median, min, max): (f64, f64, f64)) -> String {
    format!("{}/s ({}-{})", grouped(median), grouped(min), grouped(max))
}

/// Process CPU time per operation over all `runs` of `n` operations each.
fn cpu_cell(n: usize, runs: &[Run]) -> String {
    let Some(cpu) = runs.iter().map(|r| r.cpu).sum::<Option<Duration>>() else {
        return "n/a".to_owned();
    };
    let per_op = cpu.as_secs_f64() / (n * runs.len()) as f64;
    if per_op >= 1e-3 {
        format!("{:.2} ms", per_op * 1e3)
    } else {
        format!("{:.1} µs", per_op * 1e6)
    }
}

/// Busy CPU time of the whole machine so far, all processes (Linux:
/// `/proc/stat`, user + nice + system + irq + softirq + steal, in USER_HZ ticks).
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let busy: u64 = ticks.get(0..3)?.iter().sum::<u64>() + ticks.get(5..8)?.iter().sum::<u64>();
    Some(Duration::from_millis(busy * 10))
}

/// How busy other processes kept the machine while the bench ran, to judge the
/// figures by: the machine's busy time minus this process's CPU time.
struct OtherLoad {
    start: Instant,
    busy: Option<Duration>,
    own: Option<Duration>,
}

impl OtherLoad {
    fn start() -> Self {
        OtherLoad {
            start: Instant::now(),
            busy: machine_busy(),
            own: cpu_time(),
        }
    }

    fn report(&self, cpus: usize) -> String {
        let (Some(busy0), Some(own0), Some(busy1), Some(own1)) =
            (self.busy, self.own, machine_busy(), cpu_time())
        else {
            return "unknown".to_owned();
        };
        let others = (busy1.saturating_sub(busy0))
            .saturating_sub(own1.saturating_sub(own0))
            .as_secs_f64();
        let wall = self.start.elapsed().as_secs_f64();
        format!(
            "{:.2} of the {cpus} CPUs on average ({:.0}% of the machine)",
            others / wall,
            100.0 * others / (wall * cpus as f64)
        )
    }
}

fn megabytes(path: &Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

/// Thousands separators for a rate.
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const COLUMNS: usize = 7;

struct Table {
    rows: Vec<[String; COLUMNS]>,
}

impl Table {
    fn new() -> Self {
        let header = [
            "measurement",
            "count",
            "tasks",
            "result",
            "cpu/op",
            "target",
            "met",
        ];
        Table {
            rows: vec![header.map(str::to_owned)],
        }
    }

    fn row(&mut self, cells: [&str; COLUMNS]) {
        self.rows.push(cells.map(str::to_owned));
    }

    fn print(&self) {
        let mut widths = [0usize; COLUMNS];
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for (n, row) in self.rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(col, (cell, w))| match col {
                    0 | 6 => format!("{cell:<w$}"),
                    _ => format!("{cell:>w$}"),
                })
                .collect();
            println!("{}", line.join("  ").trim_end());
            if n == 0 {
                let total = widths.iter().sum::<usize>() + 2 * (COLUMNS - 1);
                println!("{}", "-".repeat(total));
            }
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary
    // without it, and a debug build of the whole benchmark would only cost minutes.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("fleet_db is a benchmark: run it with `cargo bench --bench fleet_db`");
        return;
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(cpus));
}

async fn run(cpus: usize) {
    let other_load = OtherLoad::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fleet.db");
    let wal = path.with_extension("db-wal");
    let db = SlumDb::init(&path).await.expect("init fleet db");
    let mut table = Table::new();

    // ----- servers -----
    let regions = ["us-east", "us-west", "eu-central", "ap-south"];
    for i in 0..SERVERS {
        db.add_server(&Server {
            id: server_id(i),
            url: format!("http://{}.fleet.example.com:8080", server_id(i)),
            region: Some(regions[i % regions.len()].to_owned()),
            capacity_mb: SERVER_CAPACITY_MB,
            status: ServerStatus::Online,
            ..Default::default()
        })
        .await
        .expect("add server");
    }

    // ----- 1. tenant inserts -----
    let insert = |(db, _): (SlumDb, ()), range: Range<usize>| async move {
        for i in range {
            db.add_tenant(&Tenant {
                domain: tenant_domain(i),
                server_id: server_id(home_server(i)),
                process: "api".to_owned(),
                instance_id: "prod".to_owned(),
                ..Default::default()
            })
            .await
            .expect("add tenant");
        }
    };
    let single = timed_tasks(1, 0..SINGLE_TASK_INSERTS, (db.clone(), ()), insert).await;
    let wal_after_single = megabytes(&wal);
    let rest = TENANTS - SINGLE_TASK_INSERTS;
    let concurrent = timed_tasks(
        INSERT_TASKS,
        SINGLE_TASK_INSERTS..TENANTS,
        (db.clone(), ()),
        insert,
    )
    .await;
    let wal_after_inserts = megabytes(&wal);
    table.row([
        "add_tenant inserts (tenants 0..10k)",
        &grouped(SINGLE_TASK_INSERTS as f64),
        "1",
        &format!("{}/s", grouped(per_sec(SINGLE_TASK_INSERTS, single.wall))),
        &cpu_cell(SINGLE_TASK_INSERTS, &[single]),
        "",
        "",
    ]);
    table.row([
        "add_tenant inserts (tenants 10k..100k)",
        &grouped(rest as f64),
        &INSERT_TASKS.to_string(),
        &format!("{}/s", grouped(per_sec(rest, concurrent.wall))),
        &cpu_cell(rest, &[concurrent]),
        "",
        "",
    ]);
    let all = single.wall + concurrent.wall;
    table.row([
        "add_tenant inserts, all (wall time)",
        &grouped(TENANTS as f64),
        "1, 8",
        &format!(
            "{}/s ({:.2} s)",
            grouped(per_sec(TENANTS, all)),
            all.as_secs_f64()
        ),
        "",
        "",
        "",
    ]);

    // ----- instance records (fixture, bare sqlx on the same file) -----
    let pool = plain_pool(&path).await;
    let mut expected_used_mb = 0i64;
    let mut tx = pool.begin().await.expect("begin");
    for i in 0..INSTANCES {
        let memory_mb = instance_memory_mb(i);
        expected_used_mb += memory_mb;
        sqlx::query(
            "INSERT INTO instances (tenant, instance_id, process, server_id, memory_mb, \
             desired, observed, created_at) VALUES (?, 'prod', 'api', ?, ?, 'running', 'running', ?)",
        )
        .bind(format!("customer-{i}"))
        .bind(server_id(home_server(i)))
        .bind(memory_mb)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&mut *tx)
        .await
        .expect("insert instance");
    }
    tx.commit().await.expect("commit instances");
    let probe = db.get_instance("customer-0:prod").await.expect("probe");
    assert_eq!(probe.server_id, server_id(0));

    // ----- 2. and 4. lookups, slum and baseline -----
    let mut rng = SplitMix64(0x5eed_f1ee_7db0);
    let keys: Keys = Arc::new(
        (0..LOOKUPS)
            .map(|_| {
                let i = rng.below(TENANTS);
                (tenant_domain(i), server_id(home_server(i)))
            })
            .collect(),
    );
    slum_lookups(8, WARMUP_LOOKUPS, &db, &keys).await;
    baseline_lookups(8, WARMUP_LOOKUPS, &pool, &keys).await;
    let mut ratios = Vec::new();
    for tasks in LOOKUP_TASKS {
        let (mut slum, mut base) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Alternate which goes first, so neither always follows the other.
            if round % 2 == 0 {
                slum.push(slum_lookups(tasks, LOOKUPS, &db, &keys).await);
            }
            base.push(baseline_lookups(tasks, LOOKUPS, &pool, &keys).await);
            if round % 2 == 1 {
                slum.push(slum_lookups(tasks, LOOKUPS, &db, &keys).await);
            }
        }
        let (slum_rates, base_rates) = (rates(LOOKUPS, &slum), rates(LOOKUPS, &base));
        table.row([
            "get_tenant_by_domain (slum)",
            &grouped(LOOKUPS as f64),
            &tasks.to_string(),
            &rate_cell(slum_rates),
            &cpu_cell(LOOKUPS, &slum),
            ">= 20,000/s",
            yes_no(slum_rates.0 >= TARGET_LOOKUPS_PER_SEC),
        ]);
        table.row([
            "  same lookup, bare sqlx on a pool",
            &grouped(LOOKUPS as f64),
            &tasks.to_string(),
            &rate_cell(base_rates),
            &cpu_cell(LOOKUPS, &base),
            "",
            "",
        ]);
        ratios.push((tasks, slum_rates.0 / base_rates.0));
    }
    let mut conn = SqliteConnection::connect_with(&store_options(&path))
        .await
        .expect("bare connection");
    bare_connection_lookups(WARMUP_LOOKUPS, &mut conn, &keys).await;
    let mut bare = Vec::new();
    for _ in 0..ROUNDS {
        bare.push(bare_connection_lookups(LOOKUPS, &mut conn, &keys).await);
    }
    table.row([
        "  same lookup, one connection, no pool",
        &grouped(LOOKUPS as f64),
        "1",
        &rate_cell(rates(LOOKUPS, &bare)),
        &cpu_cell(LOOKUPS, &bare),
        "",
        "",
    ]);
    conn.close().await.expect("close bare connection");
    for (tasks, ratio) in ratios {
        table.row([
            "  lookup ratio slum / bare sqlx pool",
            &grouped(LOOKUPS as f64),
            &tasks.to_string(),
            &format!("{ratio:.2}"),
            "",
            "",
            "",
        ]);
    }

    // ----- 3. list_servers -----
    for _ in 0..LIST_WARMUP_RUNS {
        db.list_servers().await.expect("list servers");
    }
    let mut runs = Vec::with_capacity(LIST_RUNS);
    for _ in 0..LIST_RUNS {
        let (run, servers) = Run::time(db.list_servers()).await;
        let servers = servers.expect("list servers");
        runs.push(run);
        assert_eq!(servers.len(), SERVERS);
        let used: i64 = servers.iter().map(|s| s.used_capacity_mb).sum();
        assert_eq!(used, expected_used_mb);
    }
    let mut times: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    times.sort();
    // Nearest-rank percentiles (with 50 runs, p99 is the slowest run).
    let rank = |p: f64| times[((p * LIST_RUNS as f64).ceil() as usize).clamp(1, LIST_RUNS) - 1];
    let (median, p99) = (ms(rank(0.50)), ms(rank(0.99)));
    table.row([
        "list_servers, median",
        &LIST_RUNS.to_string(),
        "1",
        &format!("{median:.2} ms"),
        &cpu_cell(1, &runs),
        "< 50 ms",
        yes_no(median < TARGET_LIST_MS),
    ]);
    table.row([
        "list_servers, p99 (nearest rank)",
        &LIST_RUNS.to_string(),
        "1",
        &format!("{p99:.2} ms"),
        "",
        "< 50 ms",
        yes_no(p99 < TARGET_LIST_MS),
    ]);

    println!();
    println!(
        "slum fleet_db bench: {SERVERS} servers, {TENANTS} tenants, {INSTANCES} instance records; \
         {cpus} CPUs, tokio multi-thread runtime with {cpus} workers; \
         slum pool and baseline pool: 8 connections each"
    );
    println!(
        "database file {:.1} MB; WAL {:.1} MB after the single-task inserts, {:.1} MB after all \
         inserts, {:.1} MB at the end",
        megabytes(&path),
        wal_after_single,
        wal_after_inserts,
        megabytes(&wal),
    );
    println!(
        "other processes kept busy {} during the bench",
        other_load.report(cpus)
    );
    println!(
        "lookup rates: median of {ROUNDS} runs (slowest-fastest); \
         cpu/op: this process's CPU time (all threads) per operation"
    );
    println!();
    table.print();
    println!();

    pool.close().await;
}
