//! The management API's reads at a million domains: the token check, the first
//! page of the tenant list, the first page of the instance records and the
//! status's database reads, each on fleets of 1,000, 100,000 and 1,000,000
//! tenants (one instance record each, 1,000 servers, one of them offline), in
//! one run, against the whole-table reads they replace (the baseline, measured
//! on the same files), with the ratio of each figure to its value at 1,000.
//!
//! Each fleet is a SQLite file in a temp dir, opened by `SlumDb::init` (so the
//! schema is slum's own), then filled by bulk `INSERT ... SELECT` in one
//! transaction (a fixture: nothing of slum's is measured there). Each figure
//! is the median of a few runs of the library call, after one warm-up run.
//!
//! - token check: `verify_api_token` (one read of the token table's version,
//!   then a lookup in memory); baseline: reading every token as the check did
//!   before (`list_api_tokens`).
//! - tenant list: `list_tenants_page` (the API's default page of 1,000);
//!   baseline: `list_tenants` (every tenant, as `GET /v1/tenants` did).
//! - instance records: `list_instance_records_page`; baseline:
//!   `list_instance_records`.
//! - status: what `GET /v1/status` reads from the database: a page of servers,
//!   the `COUNT`s and the tenants near down servers (the 1,000 of the offline
//!   server); baseline: every server, tenant and instance record, as it did.
//!   (The status also asks the page's servers for their stats over HTTP: not
//!   measured here.)
//!
//! Run with `cargo run --release --features local-fleet --example bench_lists`.
//! `BENCH_SIZES` (comma-separated, default `1000,100000,1000000`) and
//! `BENCH_RUNS` (default 5) change the work; `BENCH_PLANS=1` prints SQLite's
//! plans of the two page queries.

use std::time::{Duration, Instant};

use slum::{PageRequest, SlumDb};
use sqlx::Connection;

const SERVERS: usize = 1_000;
const TOKENS: usize = 20;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().replace('_', "").parse().ok())
                .collect()
        })
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// Median wall time of `runs` calls, after one warm-up call.
async fn median<F, Fut, T>(runs: usize, mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = slum::Result<T>>,
{
    call().await.expect("warm-up");
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(call().await.expect("call"));
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// Fills the fleet in one transaction.
async fn fill(path: &std::path::Path, tenants: usize) -> anyhow::Result<()> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    let mut tx = conn.begin().await?;
    let series = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)";
    sqlx::query(&format!(
        "{series} INSERT INTO servers (id, url, capacity_mb, status, created_at, drain) \
         SELECT printf('s%04d', i), 'http://127.0.0.1:9', 1000000000, \
                CASE WHEN i = 0 THEN 'offline' ELSE 'online' END, 0, 0 FROM n"
    ))
    .bind(i64::try_from(SERVERS)?)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "{series} INSERT INTO tenants (domain, name, server_id, process, instance_id, failover, created_at) \
         SELECT printf('t%07d.example.com', i), printf('t%07d', i), printf('s%04d', i % {SERVERS}), \
                'api', 'prod', 'none', 0 FROM n"
    ))
    .bind(i64::try_from(tenants)?)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "{series} INSERT INTO instances (tenant, instance_id, process, server_id, memory_mb, desired, observed, created_at) \
         SELECT printf('t%07d', i), 'prod', 'api', printf('s%04d', i % {SERVERS}), 1, 'running', 'unknown', 0 FROM n"
    ))
    .bind(i64::try_from(tenants)?)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    // As SQLite's automatic checkpoints leave a database in use.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    if std::env::var_os("BENCH_PLANS").is_some() {
        for q in [
            "SELECT tenant, instance_id, process, server_id, moving_to, memory_mb, desired, observed, observed_at, created_at FROM instances ORDER BY tenant, instance_id LIMIT 1001",
            "SELECT domain, name, server_id FROM tenants ORDER BY domain LIMIT 1001",
        ] {
            use sqlx::Row;
            for row in sqlx::query(&format!("EXPLAIN QUERY PLAN {q}")).fetch_all(&mut conn).await? {
                eprintln!("  plan: {}", row.try_get::<String, _>(3)?);
            }
        }
    }
    conn.close().await?;
    Ok(())
}

struct Row {
    what: &'static str,
    new: Duration,
    old: Duration,
}

async fn measure(tenants: usize, runs: usize) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("fleet.db");
    // Made by slum, filled by the fixture, opened again as `slum serve` would.
    drop(SlumDb::init(&path).await?);
    let t = Instant::now();
    fill(&path, tenants).await?;
    let db = SlumDb::init(&path).await?;
    eprintln!(
        "  {tenants} tenants and instances inserted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut secret = String::new();
    for i in 0..TOKENS {
        secret = db.create_api_token(&format!("t{i}")).await?.1;
    }
    let page = PageRequest::default();
    let mut rows = Vec::new();

    let new = median(runs * 20, || db.verify_api_token(&secret)).await;
    let old = median(runs * 20, || db.list_api_tokens()).await;
    rows.push(Row {
        what: "token check",
        new,
        old,
    });

    let new = median(runs, || db.list_tenants_page(None, &page)).await;
    let old = median(runs, || db.list_tenants()).await;
    rows.push(Row {
        what: "tenant list, first page",
        new,
        old,
    });

    let new = median(runs, || db.list_instance_records_page(None, &page)).await;
    let old = median(runs, || db.list_instance_records()).await;
    rows.push(Row {
        what: "instance records, first page",
        new,
        old,
    });

    let new = median(runs, || async {
        let servers = db.list_servers_page(&page).await?;
        let counts = db.count_records().await?;
        let near_down = db.list_tenants_near_down_servers().await?;
        assert_eq!(near_down.len(), tenants.div_ceil(SERVERS));
        Ok((servers, counts, near_down))
    })
    .await;
    let old = median(runs, || async {
        let servers = db.list_servers().await?;
        let t = db.list_tenants().await?;
        let i = db.list_instance_records().await?;
        Ok((servers, t, i))
    })
    .await;
    rows.push(Row {
        what: "status (database reads)",
        new,
        old,
    });
    Ok(rows)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes = env_list("BENCH_SIZES", &[1_000, 100_000, 1_000_000]);
    let runs = env_list("BENCH_RUNS", &[5])[0].max(1);
    let mut results = Vec::new();
    for &n in &sizes {
        eprintln!("fleet of {n} tenants:");
        results.push((n, measure(n, runs).await?));
    }
    let Some((base_n, base)) = results.first() else {
        return Ok(());
    };
    println!(
        "| call | tenants | now | ratio to {base_n} | before (whole table) | ratio to {base_n} |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, b) in base.iter().enumerate() {
        for (n, rows) in &results {
            let r = &rows[i];
            println!(
                "| {} | {n} | {} | {:.2}x | {} | {:.1}x |",
                r.what,
                ms(r.new),
                r.new.as_secs_f64() / b.new.as_secs_f64(),
                ms(r.old),
                r.old.as_secs_f64() / b.old.as_secs_f64(),
            );
        }
    }
    Ok(())
}
