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
//! `BENCH_CHANGES` (default 1000) change the work.

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

struct Figures {
    size: usize,
    build: Duration,
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
    let started = Instant::now();
    let mut builder = TableBuilder::new(&RouteTable::default(), &servers, &Default::default());
    for i in 0..size {
        builder.add(row(i, i % SERVERS));
    }
    let mut table = builder.finish(1);
    let build = started.elapsed();
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
        let (next, _) = table.with_server(version, Ok(&s), false);
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

fn main() -> anyhow::Result<()> {
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
        "{:>9} {:>9} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "domains", "build ms", "B/domain", "domain p50", "domain p99", "server p50", "server p99", "lookup ns", "RSS +chg"
    );
    let mut all = Vec::new();
    for size in sizes {
        let f = measure(size, changes)?;
        println!(
            "{:>9} {:>9.1} {:>10.0} {:>10.1}µs {:>10.1}µs {:>10.1}µs {:>10.1}µs {:>10.1} {:>9.1}%",
            f.size,
            f.build.as_secs_f64() * 1e3,
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
                r(f.build, first.build),
            );
        }
    }
    Ok(())
}
