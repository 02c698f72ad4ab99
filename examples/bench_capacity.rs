//! The orchestrator's costs at fleet size: 1,000 servers and 1,000, 100,000
//! and 1,000,000 instances (each with its tenant, one in ten with failover
//! `respawn`), in a fresh SQLite file per size, filled in bulk (one
//! transaction per batch of rows, through the real schema and its triggers).
//!
//! Each figure is timed against a baseline measured in the same run on the
//! same file: what the same step cost as slum did it before the used capacity
//! counter and the per-server reads (the old SQL run through a bare sqlx pool,
//! the old whole-table reads through the store):
//!
//! - `list_servers` with used capacity: the `used_mb` counter against the
//!   correlated `SUM` per server (with the index it had, 0006);
//! - one reservation (`reserve_instance`, then deleted again): the counter
//!   against the `SUM` in the reservation's check;
//! - choosing a placement (`choose_target`): the tenant's instances against
//!   every instance;
//! - failover's reads for one dead server (`respawn_records`) against the
//!   whole tenants, instances and servers tables;
//! - reconcile's reads in one round (each server's instances, server by
//!   server) against the whole instances table at once, and its observed
//!   states for one server written in statements of up to 500 rows against
//!   one write each;
//! - a drain's reads (the server's instances) against every instance;
//! - the health monitor's `last_seen` writes for 1,000 servers in
//!   statements of up to 500 rows against one write each.
//!
//! `cargo run --release --features local-fleet --example bench_capacity`;
//! `BENCH_SIZES=1000,100000` picks the sizes, `BENCH_DIR` where the files go
//! (a temp dir by default; each file is removed after its size).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use slum::store::{sqlite::SqliteStore, Store};
use slum::{FleetOptions, Instance, InstanceState, ServerStatus, SlumDb};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Executor, SqlitePool};

const SERVERS: usize = 1_000;
const BATCH: usize = 10_000;

/// The median of `runs` timings of `f`.
async fn median<F, Fut, T>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f().await);
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.0} µs", ms * 1e3)
    }
}

async fn fill(pool: &SqlitePool, instances: usize) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut tx = pool.begin().await?;
    for s in 0..SERVERS {
        sqlx::query(
            "INSERT INTO servers (id, url, region, capacity_mb, status, created_at) \
             VALUES (?, 'http://127.0.0.1:9', ?, 1000000000, 'online', ?)",
        )
        .bind(format!("s{s:04}"))
        .bind(format!("r{}", s % 10))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    for start in (0..instances).step_by(BATCH) {
        let mut tx = pool.begin().await?;
        for n in start..(start + BATCH).min(instances) {
            let server = format!("s{:04}", n % SERVERS);
            let tenant = format!("t{n:07}");
            sqlx::query(
                "INSERT INTO instances (tenant, instance_id, process, server_id, memory_mb, \
                 desired, observed, created_at) VALUES (?, 'prod', 'web', ?, 128, 'running', \
                 'running', ?)",
            )
            .bind(&tenant)
            .bind(&server)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO tenants (domain, name, server_id, process, instance_id, failover, \
                 created_at) VALUES (?, ?, ?, 'web', 'prod', ?, ?)",
            )
            .bind(format!("{tenant}.example.com"))
            .bind(&tenant)
            .bind(&server)
            .bind(if n % 10 == 0 { "respawn" } else { "none" })
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    // The feed entries of the fill are no part of the fleet.
    pool.execute("DELETE FROM route_changes").await?;
    Ok(())
}

/// The old `list_servers`: used capacity summed per server.
const OLD_LIST_SERVERS: &str = "SELECT s.id, s.url, s.region, s.capacity_mb, s.token, s.domain, \
     s.status, s.last_seen, s.routing_problem, s.created_at, \
     COALESCE((SELECT SUM(i.memory_mb) FROM instances i \
               WHERE i.server_id = s.id OR i.moving_to = s.id), 0) AS used_mb \
     FROM servers s ORDER BY s.id";

/// The old reservation: the check summed the server's instances.
const OLD_RESERVE: &str = "INSERT INTO instances (tenant, instance_id, process, server_id, \
     memory_mb, desired, observed, created_at) \
     SELECT ?1, ?2, ?3, s.id, ?4, 'running', 'starting', ?5 FROM servers s \
     WHERE s.id = ?6 AND s.status NOT IN ('offline', 'draining') \
       AND s.capacity_mb - COALESCE((SELECT SUM(memory_mb) FROM instances \
           WHERE server_id = s.id OR moving_to = s.id), 0) >= ?4 \
       AND NOT EXISTS (SELECT 1 FROM instances o WHERE o.moving_to = s.id \
                       AND o.tenant = ?1 AND o.process = ?3)";

struct Row {
    what: &'static str,
    after: Duration,
    before: Duration,
}

async fn measure(dir: &Path, instances: usize) -> anyhow::Result<Vec<Row>> {
    let path = dir.join(format!("fleet-{instances}.db"));
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(SqliteStore::open(&path).await?);
    let db = SlumDb::with_store(store.clone(), FleetOptions::default());
    let raw = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .busy_timeout(Duration::from_secs(30)),
        )
        .await?;
    let filled = Instant::now();
    fill(&raw, instances).await.context("filling the fleet")?;
    eprintln!(
        "{instances} instances: filled in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let heavy = if instances >= 1_000_000 { 3 } else { 5 };
    let mut rows = Vec::new();

    let after = median(21, || db.list_servers()).await;
    let probe = Instance {
        tenant: "bench".into(),
        instance_id: "probe".into(),
        process: "web".into(),
        server_id: "s0500".into(),
        memory_mb: 64,
        ..Default::default()
    };
    let reserve_after = median(21, || async {
        store.reserve_instance(&probe).await.expect("reserve");
        store
            .delete_instance("bench", "probe")
            .await
            .expect("delete");
    })
    .await;
    let some = db.get_instance("t0000500:prod").await?;
    let choose_after = median(21, || db.choose_target(&some, None)).await;
    let failover_after = median(21, || store.respawn_records("s0500")).await;
    let reconcile_reads_after = median(heavy, || async {
        for s in 0..SERVERS {
            store
                .list_instances_touching(&format!("s{s:04}"))
                .await
                .expect("read");
        }
    })
    .await;
    let on_server: Vec<(String, String, InstanceState)> = store
        .list_instances(Some("s0500"))
        .await?
        .into_iter()
        .map(|i| (i.tenant, i.instance_id, InstanceState::Running))
        .collect();
    let observed_after = median(5, || {
        store.set_instances_observed(&on_server, chrono::Utc::now())
    })
    .await;
    let drain_after = median(21, || store.list_instances(Some("s0500"))).await;
    let seen: Vec<(String, ServerStatus)> = (0..SERVERS)
        .map(|s| (format!("s{s:04}"), ServerStatus::Online))
        .collect();
    let health_after = median(5, || db.record_servers_seen(&seen, chrono::Utc::now())).await;

    // The baselines, with the index the old sum read (0006).
    raw.execute(
        "CREATE INDEX IF NOT EXISTS instances_server_memory ON instances (server_id, memory_mb)",
    )
    .await?;
    let before = median(heavy, || sqlx::query(OLD_LIST_SERVERS).fetch_all(&raw)).await;
    rows.push(Row {
        what: "list_servers with used capacity",
        after,
        before,
    });
    let reserve_before = median(21, || async {
        // The old statement inserts nothing the triggers would not count:
        // the row is deleted again through the store.
        sqlx::query(OLD_RESERVE)
            .bind("bench")
            .bind("probe")
            .bind("web")
            .bind(64_i64)
            .bind(0_i64)
            .bind("s0500")
            .execute(&raw)
            .await
            .expect("old reserve");
        store
            .delete_instance("bench", "probe")
            .await
            .expect("delete");
    })
    .await;
    rows.push(Row {
        what: "one reservation (reserve_instance + delete)",
        after: reserve_after,
        before: reserve_before,
    });
    let choose_before = median(heavy, || async {
        sqlx::query(OLD_LIST_SERVERS)
            .fetch_all(&raw)
            .await
            .expect("servers");
        store.list_instances(None).await.expect("instances")
    })
    .await;
    rows.push(Row {
        what: "choose a placement (choose_target)",
        after: choose_after,
        before: choose_before,
    });
    let failover_before = median(heavy, || async {
        store.list_tenants(None).await.expect("tenants");
        store.list_instances(None).await.expect("instances");
        sqlx::query(OLD_LIST_SERVERS)
            .fetch_all(&raw)
            .await
            .expect("servers")
    })
    .await;
    rows.push(Row {
        what: "failover's reads for one dead server",
        after: failover_after,
        before: failover_before,
    });
    let reconcile_reads_before = median(heavy, || store.list_instances(None)).await;
    rows.push(Row {
        what: "reconcile's reads, one round of 1,000 servers",
        after: reconcile_reads_after,
        before: reconcile_reads_before,
    });
    let observed_before = median(5, || async {
        for (tenant, id, state) in &on_server {
            store
                .set_instance_observed(tenant, id, *state, chrono::Utc::now())
                .await
                .expect("observed");
        }
    })
    .await;
    rows.push(Row {
        what: "reconcile's observed states, one server",
        after: observed_after,
        before: observed_before,
    });
    let drain_before = median(heavy, || store.list_instances(None)).await;
    rows.push(Row {
        what: "a drain's reads of its server's instances",
        after: drain_after,
        before: drain_before,
    });
    let health_before = median(5, || async {
        for (id, status) in &seen {
            db.record_server_health(id, *status, *status, Some(chrono::Utc::now()))
                .await
                .expect("seen");
        }
    })
    .await;
    rows.push(Row {
        what: "health: last_seen of 1,000 servers",
        after: health_after,
        before: health_before,
    });
    raw.close().await;
    drop(db);
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(rows)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000,100000,1000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .context("BENCH_SIZES: comma-separated counts")
        })
        .collect::<anyhow::Result<_>>()?;
    let temp = tempfile::tempdir()?;
    let dir = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_owned());
    let mut all = Vec::new();
    for &n in &sizes {
        let rows = measure(&dir, n).await?;
        for r in &rows {
            eprintln!(
                "{n} instances: {}: {} (before {})",
                r.what,
                ms(r.after),
                ms(r.before)
            );
        }
        all.push((n, rows));
    }
    println!("\n1,000 servers; after (before, after/before) per size; then after at the largest over after at the smallest");
    let header: Vec<String> = sizes.iter().map(|n| format!("{n} instances")).collect();
    println!("| | {} | largest/smallest |", header.join(" | "));
    println!("|---|{}---|", "---|".repeat(sizes.len()));
    let (Some((_, first)), Some((_, last))) = (all.first(), all.last()) else {
        return Ok(());
    };
    for (i, row) in first.iter().enumerate() {
        let cells: Vec<String> = all
            .iter()
            .map(|(_, rows)| {
                let r = &rows[i];
                format!(
                    "{} ({}, {:.3}x)",
                    ms(r.after),
                    ms(r.before),
                    r.after.as_secs_f64() / r.before.as_secs_f64()
                )
            })
            .collect();
        println!(
            "| {} | {} | {:.2}x |",
            row.what,
            cells.join(" | "),
            last[i].after.as_secs_f64() / row.after.as_secs_f64()
        );
    }
    Ok(())
}
