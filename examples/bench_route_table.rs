//! The route table at 1,000, 100,000 and 1,000,000 domains, in one process:
//! what a full build costs (time, and memory a domain from the process's RSS),
//! what one routing change costs (a domain added or moved, a server going
//! offline and back: a new table made from the last one, as the route change
//! feed applies them), and a lookup, with the ratios between sizes.
//!
//! No database and no network: the rows are made here as the fleet database
//! streams them (one running instance a domain, a thousand servers). The
//! end-to-end figures (the API answering, a second router on PostgreSQL,
//! traffic through `slum serve`) are `scripts/bench-scale.sh`'s.
//!
//! Run it with `cargo run --release --features local-fleet --example
//! bench_route_table`; `BENCH_SIZES` (default `1000 100000 1000000`) and
//! `BENCH_CHANGES` (default 1000) change the work. Each size runs in a process
//! of its own, so that its memory figures are its own; build CPU time is the
//! process's (10 ms ticks), which load on the machine does not inflate as it
//! does the wall time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context;
use slum::route_table::{Decision, DomainRows, RouteTable, TableBuilder};
use slum::store::RouteRow;
use slum::{Server, ServerStatus};

const SERVERS: usize = 1_000;

fn domain(i: usize) -> String {
    format!("customer-{i}.example.com")
}

fn server(i: usize, status: ServerStatus) -> Server {
    Server {
        id: format!("s{i}"),
        url: format!("http://10.{}.{}.1:8000", i / 256, i % 256),
        domain: Some(format!("s{i}.fleet.example.net")),
        status,
        ..Default::default()
    }
}

fn row(i: usize, on: usize) -> RouteRow {
    RouteRow {
        domain: domain(i),
        tenant: format!("customer-{i}"),
        process: "api".into(),
        instance_id: "prod".into(),
        home_server: format!("s{on}"),
        placed: Some(("prod".into(), format!("s{on}"))),
    }
}

/// The process's resident memory, in bytes.
fn rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

/// CPU time this process has used (user and system), from /proc.
fn cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line, in clock ticks (100 a second here).
    let after = stat
        .rsplit_once(')')
        .context("unreadable /proc/self/stat")?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/self/stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(Duration::from_millis(ticks * 10))
}

struct Figures {
    size: usize,
    build: Duration,
    build_cpu: Duration,
    bytes_per_domain: f64,
    rss_after_changes: u64,
    rss_after_build: u64,
    domain_p50: Duration,
    domain_p99: Duration,
    server_p50: Duration,
    server_p99: Duration,
    lookup_ns: f64,
}

fn measure(size: usize, changes: usize) -> anyhow::Result<Figures> {
    let servers: Vec<Server> = (0..SERVERS)
        .map(|i| server(i, ServerStatus::Online))
        .collect();
    let before = rss()?;
    let cpu_before = cpu()?;
    let started = Instant::now();
    let mut builder = TableBuilder::new(&RouteTable::default(), &servers, &Default::default());
    for i in 0..size {
        builder.add(row(i, i % SERVERS).as_ref());
    }
    let mut table = builder.finish(1);
    let build = started.elapsed();
    let build_cpu = cpu()?.saturating_sub(cpu_before);
    let rss_after_build = rss()?;
    let bytes_per_domain = rss_after_build.saturating_sub(before) as f64 / size as f64;

    // Domain changes: a new domain, then a domain moved to another server.
    let mut domain_times = Vec::with_capacity(changes);
    let mut version = 1;
    for n in 0..changes {
        version += 1;
        let (i, on) = match n % 2 {
            0 => (size + n, n % SERVERS),
            _ => (n % size, (n + 7) % SERVERS),
        };
        let mut rows = DomainRows::default();
        rows.add(row(i, on));
        let started = Instant::now();
        let next = table.with_domains(version, [(domain(i), rows)]);
        domain_times.push(started.elapsed());
        table = next;
    }
    // Server changes: offline, then back.
    let mut server_times = Vec::with_capacity(changes);
    for n in 0..changes {
        version += 1;
        let status = match n % 2 {
            0 => ServerStatus::Offline,
            _ => ServerStatus::Online,
        };
        let s = server((n / 2) % SERVERS, status);
        let started = Instant::now();
        let next = table.with_server(version, Ok(&s), false);
        server_times.push(started.elapsed());
        table = next;
    }
    let rss_after_changes = rss()?;
    domain_times.sort();
    server_times.sort();

    let lookups = 1_000_000;
    let mut x: u64 = 0x5101;
    let hosts: Vec<String> = (0..lookups)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            domain(x as usize % size)
        })
        .collect();
    let started = Instant::now();
    let found = hosts
        .iter()
        .filter(|h| matches!(black_box(table.route(h)), Decision::Forward { .. }))
        .count();
    let lookup_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    anyhow::ensure!(found == lookups, "only {found} of {lookups} lookups routed");
    drop(table);
    Ok(Figures {
        size,
        build,
        build_cpu,
        bytes_per_domain,
        rss_after_changes,
        rss_after_build,
        domain_p50: percentile(&domain_times, 0.5),
        domain_p99: percentile(&domain_times, 0.99),
        server_p50: percentile(&server_times, 0.5),
        server_p99: percentile(&server_times, 0.99),
        lookup_ns,
    })
}

/// One size in a process of its own (`BENCH_ONE`), so that its memory is
/// its own: prints the figures as one line of numbers.
fn one(size: usize, changes: usize) -> anyhow::Result<()> {
    let f = measure(size, changes)?;
    println!(
        "{} {} {} {} {} {} {} {} {} {} {}",
        f.size,
        f.build.as_nanos(),
        f.build_cpu.as_nanos(),
        f.bytes_per_domain,
        f.rss_after_build,
        f.rss_after_changes,
        f.domain_p50.as_nanos(),
        f.domain_p99.as_nanos(),
        f.server_p50.as_nanos(),
        f.server_p99.as_nanos(),
        f.lookup_ns,
    );
    Ok(())
}

/// Runs [`one`] in a child process.
fn in_child(size: usize, changes: usize) -> anyhow::Result<Figures> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .env("BENCH_ONE", size.to_string())
        .env("BENCH_CHANGES", changes.to_string())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the run at {size} domains failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let n: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("unreadable figures from the child")?;
    anyhow::ensure!(n.len() == 11, "unreadable figures from the child: {text}");
    let d = |x: f64| Duration::from_nanos(x as u64);
    Ok(Figures {
        size: n[0] as usize,
        build: d(n[1]),
        build_cpu: d(n[2]),
        bytes_per_domain: n[3],
        rss_after_build: n[4] as u64,
        rss_after_changes: n[5] as u64,
        domain_p50: d(n[6]),
        domain_p99: d(n[7]),
        server_p50: d(n[8]),
        server_p99: d(n[9]),
        lookup_ns: n[10],
    })
}

fn main() -> anyhow::Result<()> {
    if let Ok(size) = std::env::var("BENCH_ONE") {
        let changes = std::env::var("BENCH_CHANGES")?.parse()?;
        return one(size.parse()?, changes);
    }
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000 100000 1000000".into())
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("BENCH_SIZES is a list of numbers")?;
    let changes: usize = std::env::var("BENCH_CHANGES")
        .unwrap_or_else(|_| "1000".into())
        .parse()
        .context("BENCH_CHANGES is a number")?;
    println!("route table, {SERVERS} servers, one running instance a domain, {changes} changes of each kind");
    println!(
        "{:>9} {:>9} {:>9} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "domains",
        "build ms",
        "CPU ms",
        "B/domain",
        "domain p50",
        "domain p99",
        "server p50",
        "server p99",
        "lookup ns",
        "RSS +chg"
    );
    let mut all = Vec::new();
    for size in sizes {
        let f = in_child(size, changes)?;
        println!(
            "{:>9} {:>9.1} {:>9.1} {:>10.0} {:>10.1}µs {:>10.1}µs {:>10.1}µs {:>10.1}µs {:>10.1} {:>9.1}%",
            f.size,
            f.build.as_secs_f64() * 1e3,
            f.build_cpu.as_secs_f64() * 1e3,
            f.bytes_per_domain,
            f.domain_p50.as_secs_f64() * 1e6,
            f.domain_p99.as_secs_f64() * 1e6,
            f.server_p50.as_secs_f64() * 1e6,
            f.server_p99.as_secs_f64() * 1e6,
            f.lookup_ns,
            (f.rss_after_changes as f64 / f.rss_after_build as f64 - 1.0) * 100.0,
        );
        all.push(f);
    }
    if let Some(first) = all.first() {
        for f in &all[1..] {
            let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-12);
            println!(
                "{} / {} domains: domain change p99 {:.2}x, server change p99 {:.2}x, lookup {:.2}x, build {:.0}x",
                f.size,
                first.size,
                r(f.domain_p99, first.domain_p99),
                r(f.server_p99, first.server_p99),
                f.lookup_ns / first.lookup_ns,
                r(f.build_cpu.max(Duration::from_millis(10)), first.build_cpu.max(Duration::from_millis(10))),
            );
        }
    }
    Ok(())
}
