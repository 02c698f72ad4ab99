//! The scale benchmark of issue 17: fleets of 1,000, 100,000 and 1,000,000
//! domains, measured in one run, with the ratios between the sizes.
//!
//! For each size (`BENCH_SIZES`):
//!
//! 1. **The fleet**, built in bulk into a fresh SQLite file (slum's own
//!    migrations make the schema, then multi-row `INSERT`s, 50,000 rows a
//!    transaction): `BENCH_SERVERS` (1,000) servers, online and checked,
//!    and one tenant a domain, `t{j}.example.com`, process `web`, instance
//!    `prod` on server `j % servers`, each with its instance record; every
//!    `BENCH_BACKUP_EVERY`-th (10th) tenant has a second instance, `backup`,
//!    on the next server.
//! 2. **The servers**: one responder in this process (its own runtime)
//!    listening on a loopback address a server (`127.1.x.y`, one port), that
//!    answers as tenement would what slum asks: the routing check's two
//!    `/health` Hosts (404 for `probe.slum-routing-probe.{domain}`, its own
//!    `{"status":"ok"}` for `probe..{domain}`), `GET /api/instances` (the
//!    instances the fleet places there, healthy: reconcile finds nothing to
//!    do), and any other request 200 with the Host it was sent as the body
//!    (`{tenant}.{process}.{server domain}`: the benchmark reads where a
//!    request went).
//! 3. **`slum serve`**, the release binary, started on the file as a user
//!    would (a child process, default settings), and measured:
//!    - start until the domain inserted last routes (polled through the
//!      router every 10 ms from the spawn);
//!    - its RSS (VmRSS, and the peak VmHWM) after start, once settled
//!      (`BENCH_SETTLE` seconds from the spawn, 35, and its first reconcile
//!      round over, with no change made: its
//!      health checks and its first reconcile round (30 s after the start)
//!      have opened their connections to every server, and a request to a
//!      domain on each server, twice, went through the router), after every
//!      1,000 of the `BENCH_CHANGES` routing changes and after the last, and
//!      at the end;
//!    - route changes: `POST /v1/tenants` (what `slum tenant add` sends) of a
//!      new domain of an existing tenant, one after the other: until the API
//!      returns, and until the domain routes through this router (polled
//!      every ms from the request on);
//!    - a reconcile round asked through the API (`POST /v1/reconcile`, what
//!      `slum reconcile` sends; the leader makes one every 30 s): how long it
//!      takes, and route changes as above, one after the other while it runs
//!      (at most `BENCH_CHANGES`);
//!    - `BENCH_OFFLINES` servers with a backup taken offline by hand:
//!      `PATCH /v1/servers/{id}` `status: offline` (what `slum server update
//!      S --status offline` sends), until the API returns, and until a
//!      request for a domain on it reaches the backup's server; then put back
//!      online the same way (`status: online`), until traffic returns to it.
//!      The server stays healthy: traffic moves when the route table does,
//!      not because a request failed (the router would retry the backup);
//!    - wrk through the router (`-t BENCH_THREADS -c BENCH_CONNECTIONS`, 2
//!      and 16, `BENCH_DURATION` seconds) with no changes, then while a
//!      domain is added `BENCH_CHANGE_RATE` (10) times a second (one change
//!      in flight at most: the count that finished is shown); both runs
//!      right after a reconcile round ends (the responder sees a round: it
//!      asks every server for its instances), so that at a million, where a
//!      round takes seconds of this machine's CPU, neither has one in it by
//!      chance (the instance lists asked during each run are shown);
//! 4. **PostgreSQL** (`BENCH_POSTGRES_SIZES`, default every size, when
//!    `SLUM_TEST_POSTGRES` is set; `scripts/bench-scale.sh` runs this under
//!    `scripts/with-postgres.sh`): the same fleet in a fresh database (loaded
//!    with `session_replication_role = replica`, so without the per-row
//!    triggers, then the routing version bumped once), two `slum serve` on
//!    it; domains added through router A's API, timed until A's API returns
//!    and until router B routes them.
//!
//! `BENCH_CHANGES` is one count for every size or one per size
//! (`"1000 1000 20"`): the code before issue 17 reloads the whole table on
//! every change, which takes seconds and hundreds of MB at a million.
//!
//! Run it with `sudo scripts/bench-scale.sh`. Everything it starts (`slum
//! serve` children, the responder, databases, temp files under `BENCH_DIR`
//! or `TMPDIR`) is stopped or removed on the way out, also on error or Ctrl-C.

// Shared with the other benchmarks, which use the rest of it.
#[allow(dead_code)]
mod common;
use common::{env_number, env_path, load_average, run_wrk, tool_version, WrkResult};

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use rand::{rngs::StdRng, Rng, SeedableRng};
use slum::SlumDb;
use sqlx::{Connection, Executor};

const SCRIPT: &str = "scripts/bench-scale.sh";
/// Rows a multi-row `INSERT`, and rows a transaction, when building a fleet.
const ROWS_A_STATEMENT: usize = 1_000;
const ROWS_A_TRANSACTION: usize = 50_000;
/// How long anything the benchmark waits for may take before it gives up.
const START_WITHIN: Duration = Duration::from_secs(900);
const CHANGE_WITHIN: Duration = Duration::from_secs(300);
const ROUND_WITHIN: Duration = Duration::from_secs(900);
/// How long to wait for a reconcile round to end before the wrk runs (the
/// leader makes one 30 s after the last ended).
const ROUND_GAP_WITHIN: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Settings

struct Settings {
    command: String,
    slum: PathBuf,
    wrk: PathBuf,
    sizes: Vec<usize>,
    servers: usize,
    backup_every: usize,
    /// Sequential routing changes, per size.
    changes: Vec<usize>,
    /// Servers taken offline, per size.
    offlines: Vec<usize>,
    duration: u64,
    /// Seconds from start until the RSS is taken as settled.
    settle: u64,
    threads: u32,
    connections: u32,
    change_rate: f64,
    pg_admin: Option<String>,
    pg_sizes: Vec<usize>,
    dir: Option<PathBuf>,
    /// The most RSS a `slum serve` may reach through the changes made to it.
    rss_limit: u64,
}

fn numbers(name: &str, default: &str) -> anyhow::Result<Vec<usize>> {
    let text = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace('_', "")
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("{name}={text:?}: {s:?} is not a whole number"))
        })
        .collect()
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let sizes = numbers("BENCH_SIZES", "1000 100000 1000000")?;
        let per_size = |name: &str, default: &str| -> anyhow::Result<Vec<usize>> {
            let v = numbers(name, default)?;
            Ok(match v.len() {
                1 => vec![v[0]; sizes.len()],
                n if n == sizes.len() => v,
                _ => bail!("{name}: give one count, or one per size of BENCH_SIZES"),
            })
        };
        let changes = per_size("BENCH_CHANGES", "1000")?;
        let offlines = per_size("BENCH_OFFLINES", "3")?;
        let pg_admin = std::env::var("SLUM_TEST_POSTGRES")
            .ok()
            .filter(|s| !s.is_empty());
        let pg_sizes = match (&pg_admin, std::env::var("BENCH_POSTGRES_SIZES")) {
            (None, _) => Vec::new(),
            (Some(_), Ok(_)) => numbers("BENCH_POSTGRES_SIZES", "")?,
            (Some(_), Err(_)) => sizes.clone(),
        };
        let s = Settings {
            command: std::env::var("BENCH_COMMAND")
                .unwrap_or_else(|_| "target/release/examples/bench_scale".into()),
            slum: env_path("SLUM_BIN", None, SCRIPT)?,
            wrk: env_path("WRK", Some("wrk"), SCRIPT)?,
            servers: env_number("BENCH_SERVERS", 1_000)?,
            backup_every: env_number("BENCH_BACKUP_EVERY", 10)?,
            offlines,
            duration: env_number("BENCH_DURATION", 10)?,
            settle: env_number("BENCH_SETTLE", 35)?,
            threads: env_number("BENCH_THREADS", 2)?,
            connections: env_number("BENCH_CONNECTIONS", 16)?,
            change_rate: env_number("BENCH_CHANGE_RATE", 10.0)?,
            dir: std::env::var_os("BENCH_DIR").map(PathBuf::from),
            rss_limit: env_number("BENCH_RSS_LIMIT_MB", mem_total_mb() * 2 / 5)? * 1_000_000,
            sizes,
            changes,
            pg_admin,
            pg_sizes,
        };
        if s.sizes.is_empty() || s.sizes.contains(&0) {
            bail!("BENCH_SIZES must list sizes above 0");
        }
        if s.servers == 0 || s.servers > 250 * 256 {
            bail!("BENCH_SERVERS must be 1..=64000");
        }
        if s.backup_every == 0 || s.changes.contains(&0) || s.duration == 0 {
            bail!("BENCH_BACKUP_EVERY, BENCH_CHANGES and BENCH_DURATION must be positive");
        }
        if s.threads == 0 || s.connections < s.threads || s.change_rate <= 0.0 {
            bail!("BENCH_THREADS and BENCH_CHANGE_RATE must be positive, BENCH_CONNECTIONS at least BENCH_THREADS");
        }
        for (&n, &offlines) in s.sizes.iter().zip(&s.offlines) {
            if offlines > 0 && offline_tenant(n, s.servers, s.backup_every, offlines - 1).is_none()
            {
                bail!("{n} domains on {} servers, one in {} with a backup, have too few servers with a backup for {offlines} offline", s.servers, s.backup_every);
            }
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------------------
// The fleet's shape: everything follows from a tenant's index

#[derive(Debug, Clone, Copy)]
struct Shape {
    tenants: usize,
    servers: usize,
    backup_every: usize,
    port: u16,
}

impl Shape {
    fn server_id(i: usize) -> String {
        format!("s{i:05}")
    }

    fn server_domain(i: usize) -> String {
        format!("s{i:05}.fleet.bench")
    }

    fn server_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8)
    }

    fn server_url(&self, i: usize) -> String {
        format!("http://{}:{}", Shape::server_ip(i), self.port)
    }

    fn domain(j: usize) -> String {
        format!("t{j}.example.com")
    }

    fn home(&self, j: usize) -> usize {
        j % self.servers
    }

    fn has_backup(&self, j: usize) -> bool {
        j % self.backup_every == 0
    }

    fn backup(&self, j: usize) -> usize {
        (j + 1) % self.servers
    }

    /// The Host a request for tenant `j` reaches server `server` with (the
    /// responder's answer).
    fn upstream_host(j: usize, server: usize) -> String {
        format!("t{j}.web.{}", Shape::server_domain(server))
    }

    /// tenement's `GET /api/instances` of server `i`.
    fn instances_json(&self, i: usize) -> String {
        let mut out = String::from("[");
        let mut first = true;
        let mut add = |j: usize| {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(
                out,
                r#"{{"id":"web:t{j}","health":"healthy","uptime_secs":60}}"#
            );
        };
        for j in (i..self.tenants).step_by(self.servers) {
            add(j);
        }
        // Backups of the tenants of the server before this one.
        let before = (i + self.servers - 1) % self.servers;
        for j in (before..self.tenants).step_by(self.servers) {
            if self.has_backup(j) && self.backup(j) == i {
                add(j);
            }
        }
        out.push(']');
        out
    }
}

/// The `k`-th tenant whose home server goes offline in the benchmark: one
/// with a backup, on a server none of the ones before uses.
fn offline_tenant(tenants: usize, servers: usize, backup_every: usize, k: usize) -> Option<usize> {
    let j = backup_every * (1 + 7 * k);
    (j < tenants && j < servers && servers > 1).then_some(j)
}

// ---------------------------------------------------------------------------
// The responder: every server's tenement, as far as slum asks

/// Every server's tenement, on a runtime of its own; stopped when dropped.
struct Responder {
    runtime: Option<tokio::runtime::Runtime>,
    rounds: Arc<Rounds>,
}

struct Answers {
    shape: Shape,
    rounds: Arc<Rounds>,
}

/// The reconcile rounds the responder sees: a round asks every server for
/// its instances (`GET /api/instances`), and nothing else does. The leader
/// makes one every 30 s, and at a million domains one takes seconds of CPU
/// on this machine, where the router, wrk and the responder run too: the
/// wrk runs are made between two rounds, and say what they overlapped.
struct Rounds {
    started: Instant,
    /// Instance lists asked so far.
    asked: AtomicUsize,
    /// When the last was asked, in ms from `started`.
    last_ms: AtomicU64,
}

impl Rounds {
    fn asked(&self) -> usize {
        self.asked.load(Relaxed)
    }

    fn since_last(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Waits until a round that asked more than `before` instance lists has
    /// ended (none asked for a second), at most `within`; says whether one
    /// did. `before` 0: any round, the first too; `asked()`: one after now.
    async fn ended_after(&self, before: usize, within: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.asked() > before && self.since_last() >= Duration::from_secs(1) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Responder {
    fn start(shape: Shape) -> anyhow::Result<Responder> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("responder")
            .enable_all()
            .build()?;
        let rounds = Arc::new(Rounds {
            started: Instant::now(),
            asked: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        });
        let state = Arc::new(Answers {
            shape,
            rounds: Arc::clone(&rounds),
        });
        let entered = runtime.enter();
        for i in 0..shape.servers {
            let addr = SocketAddr::from((Shape::server_ip(i), shape.port));
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("responder: cannot listen on {addr}"))?;
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let state = Arc::clone(&state);
            runtime.spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = Arc::clone(&state);
                            async move { state.answer(i, req) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        }
        drop(entered);
        Ok(Responder {
            runtime: Some(runtime),
            rounds,
        })
    }
}

impl Answers {
    fn answer(
        &self,
        server: usize,
        req: Request<Incoming>,
    ) -> std::io::Result<Response<Full<Bytes>>> {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let (status, body) = match req.uri().path() {
            "/health" if host.starts_with("probe.slum-routing-probe.") => {
                (404, "Not found".to_owned())
            }
            "/health" => (200, r#"{"status":"ok"}"#.to_owned()),
            "/api/instances" => {
                let at = self.rounds.started.elapsed().as_millis();
                self.rounds
                    .last_ms
                    .store(u64::try_from(at).unwrap_or(u64::MAX), Relaxed);
                self.rounds.asked.fetch_add(1, Relaxed);
                (200, self.shape.instances_json(server))
            }
            _ => (200, host.to_owned()),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        Ok(resp)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------
// Building a fleet in bulk

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The fleet's rows as multi-row `INSERT` statements, a batch of them a
/// transaction (the same SQL on both backends: the values are the
/// benchmark's own names, which need no escaping).
fn fleet_batches(shape: Shape) -> impl Iterator<Item = String> {
    let now = now_ms();
    let mut servers = String::from(
        "INSERT INTO servers (id, url, capacity_mb, domain, status, last_seen, created_at, drain) VALUES ",
    );
    for i in 0..shape.servers {
        if i > 0 {
            servers.push(',');
        }
        let _ = write!(
            servers,
            "('{}','{}',1000000000,'{}','online',{now},{now},FALSE)",
            Shape::server_id(i),
            shape.server_url(i),
            Shape::server_domain(i)
        );
    }
    let tenants = (0..shape.tenants)
        .step_by(ROWS_A_TRANSACTION)
        .map(move |start| {
            let end = (start + ROWS_A_TRANSACTION).min(shape.tenants);
            let mut batch = String::from("BEGIN;");
            for chunk in (start..end).step_by(ROWS_A_STATEMENT) {
                let chunk_end = (chunk + ROWS_A_STATEMENT).min(end);
                batch.push_str(
                    "INSERT INTO tenants (domain, name, server_id, process, instance_id, failover, created_at) VALUES ",
                );
                for j in chunk..chunk_end {
                    if j > chunk {
                        batch.push(',');
                    }
                    let _ = write!(
                        batch,
                        "('{}','t{j}','{}','web','prod','none',{now})",
                        Shape::domain(j),
                        Shape::server_id(shape.home(j))
                    );
                }
                batch.push_str(";INSERT INTO instances (tenant, instance_id, process, server_id, memory_mb, desired, observed, observed_at, created_at) VALUES ");
                let mut first = true;
                for j in chunk..chunk_end {
                    let mut row = |id: &str, server: usize| {
                        if !first {
                            batch.push(',');
                        }
                        first = false;
                        let _ = write!(
                            batch,
                            "('t{j}','{id}','web','{}',1,'running','running',{now},{now})",
                            Shape::server_id(server)
                        );
                    };
                    row("prod", shape.home(j));
                    if shape.has_backup(j) && shape.backup(j) != shape.home(j) {
                        row("backup", shape.backup(j));
                    }
                }
                batch.push(';');
            }
            batch.push_str("COMMIT;");
            batch
        });
    std::iter::once(servers).chain(tenants)
}

/// A fresh SQLite fleet database at `path`.
async fn build_sqlite(path: &Path, shape: Shape) -> anyhow::Result<()> {
    let url = path.to_str().context("BENCH_DIR is not UTF-8")?;
    // slum's migrations make the schema.
    SlumDb::init(url).await?;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Off)
        .foreign_keys(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    for sql in fleet_batches(shape) {
        sqlx::raw_sql(&sql).execute(&mut conn).await?;
    }
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    conn.close().await?;
    Ok(())
}

/// Fresh PostgreSQL databases through the admin URL, dropped by `drop_all`.
struct Postgres {
    admin: String,
    created: Vec<String>,
}

impl Postgres {
    async fn admin(&self) -> anyhow::Result<sqlx::PgConnection> {
        sqlx::PgConnection::connect(&self.admin)
            .await
            .context("cannot connect to SLUM_TEST_POSTGRES")
    }

    async fn build(&mut self, shape: Shape) -> anyhow::Result<String> {
        let name = format!(
            "slum_scale_{}_{}",
            std::process::id(),
            self.created.len() + 1
        );
        let mut admin = self.admin().await?;
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await?;
        admin.close().await?;
        self.created.push(name.clone());
        let mut url = url::Url::parse(&self.admin)?;
        url.set_path(&name);
        let url: String = url.into();
        SlumDb::init(&url).await?;
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        // Bulk load: no per-row triggers (each bumps the one version row,
        // which is quadratic in one transaction) or foreign-key checks; the
        // version is bumped once after.
        conn.execute("SET session_replication_role = replica")
            .await?;
        for sql in fleet_batches(shape) {
            sqlx::raw_sql(&sql).execute(&mut conn).await?;
        }
        conn.execute("SET session_replication_role = origin")
            .await?;
        conn.execute("UPDATE fleet_version SET version = version + 1")
            .await?;
        conn.execute("ANALYZE").await?;
        conn.close().await?;
        Ok(url)
    }

    async fn drop_all(&mut self) -> anyhow::Result<()> {
        if self.created.is_empty() {
            return Ok(());
        }
        let mut admin = self.admin().await?;
        for name in std::mem::take(&mut self.created) {
            admin
                .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                .await?;
        }
        admin.close().await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// `slum serve` children

struct Slum {
    child: Child,
    router: String,
    api: String,
    token_file: PathBuf,
    log: PathBuf,
}

impl Slum {
    /// Spawns `slum serve` on `database`; does not wait for it.
    fn spawn(bin: &Path, database: &str, dir: &Path, name: &str) -> anyhow::Result<Slum> {
        let router = SocketAddr::from((Ipv4Addr::LOCALHOST, common::free_port()?));
        let api = SocketAddr::from((Ipv4Addr::LOCALHOST, common::free_port()?));
        let token_file = dir.join(format!("token-{name}"));
        let log = dir.join(format!("slum-{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("serve")
            .args(["--database", database])
            .args(["--listen", &router.to_string()])
            .args(["--api-listen", &api.to_string()])
            .arg("--token-file")
            .arg(&token_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        Ok(Slum {
            child,
            router: format!("http://{router}/"),
            api: format!("http://{api}"),
            token_file,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("slum serve exited ({status}):\n{}", tail.join("\n"));
        }
        Ok(())
    }

    /// Its management API, with the token `slum serve` wrote on its first
    /// start (in `token_file`, or in `or_token_of`'s: two routers on one
    /// database make one token, and whichever makes it writes it).
    fn api(&self, http: &reqwest::Client, or_token_of: Option<&Slum>) -> anyhow::Result<Api> {
        let token = std::fs::read_to_string(&self.token_file)
            .or_else(|e| match or_token_of {
                Some(other) => std::fs::read_to_string(&other.token_file),
                None => Err(e),
            })
            .with_context(|| format!("no token in {}", self.token_file.display()))?;
        Ok(Api {
            http: http.clone(),
            base: self.api.clone(),
            token: token.trim().to_owned(),
        })
    }
}

impl Drop for Slum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS and VmHWM of a process, in bytes.
fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .context("empty field")?
            .parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Keeps a `slum serve` under the RSS limit: a change is made only while its
/// RSS now, plus the most one change has added so far (to its RSS or its
/// peak), stays under it. Before issue 17 every change builds the whole table
/// again and the memory is not given back: at a million domains a change
/// adds gigabytes.
#[derive(Debug, Clone, Copy)]
struct Budget {
    pid: u32,
    limit: u64,
    last: (u64, u64),
    most_a_change: u64,
}

impl Budget {
    fn new(pid: u32, limit: u64) -> anyhow::Result<Budget> {
        Ok(Budget {
            pid,
            limit,
            last: rss(pid)?,
            most_a_change: 0,
        })
    }

    /// Whether `changes` more changes fit.
    fn allows(&self, changes: u64) -> anyhow::Result<bool> {
        let (now, _) = rss(self.pid)?;
        Ok(now + self.most_a_change * changes <= self.limit)
    }

    /// Takes the growth since the last call as one change's.
    fn changed(&mut self) -> anyhow::Result<()> {
        let now = rss(self.pid)?;
        let grew = now
            .0
            .saturating_sub(self.last.0)
            .max(now.1.saturating_sub(self.last.1));
        self.most_a_change = self.most_a_change.max(grew);
        self.last = now;
        Ok(())
    }

    fn note(&self) -> String {
        format!(
            "stopped at the RSS limit (BENCH_RSS_LIMIT_MB={:.0}; a change added up to {:.0} MB)",
            mb(self.limit),
            mb(self.most_a_change)
        )
    }
}

/// The management API of one router.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// Sends `request` with the token, waiting at most `within`; fails,
    /// naming `what` and quoting the answer, unless its status is `want`.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        within: Duration,
        want: fn(reqwest::StatusCode) -> bool,
    ) -> anyhow::Result<()> {
        let resp = request
            .bearer_auth(&self.token)
            .timeout(within)
            .send()
            .await?;
        let code = resp.status();
        if !want(code) {
            bail!("{what}: {code} {}", resp.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// `POST /v1/tenants`: a new domain of tenant `j`, on its home server.
    async fn add_domain(&self, shape: Shape, domain: &str, j: usize) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "domain": domain,
            "name": format!("t{j}"),
            "server_id": Shape::server_id(shape.home(j)),
            "process": "web",
            "instance_id": "prod",
        });
        self.call(
            self.http
                .post(format!("{}/v1/tenants", self.base))
                .json(&body),
            &format!("POST /v1/tenants {domain}"),
            CHANGE_WITHIN,
            |code| code == reqwest::StatusCode::CREATED,
        )
        .await
    }

    /// `POST /v1/reconcile`: a whole reconcile round, every server's records
    /// read and compared with its list.
    async fn reconcile(&self) -> anyhow::Result<()> {
        self.call(
            self.http.post(format!("{}/v1/reconcile", self.base)),
            "POST /v1/reconcile",
            ROUND_WITHIN,
            |code| code.is_success(),
        )
        .await
    }

    /// `PATCH /v1/servers/{id}` with a status.
    async fn server_status(&self, server: usize, status: &str) -> anyhow::Result<()> {
        let id = Shape::server_id(server);
        self.call(
            self.http
                .patch(format!("{}/v1/servers/{id}", self.base))
                .json(&serde_json::json!({ "status": status })),
            &format!("PATCH /v1/servers/{id}"),
            CHANGE_WITHIN,
            |code| code.is_success(),
        )
        .await
    }
}

/// Whether `router` answers a request for `host` with `want` (the Host the
/// responder was sent: where the request went).
async fn answers(http: &reqwest::Client, router: &str, host: &str, want: &str) -> bool {
    match http
        .get(router)
        .header("host", host)
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|b| b == want),
        _ => false,
    }
}

/// Polls `router` every `every` until it answers `host` with `want`; the time
/// from `since`.
async fn until_answers(
    http: &reqwest::Client,
    router: &str,
    host: &str,
    want: &str,
    since: Instant,
    every: Duration,
    within: Duration,
) -> anyhow::Result<Duration> {
    loop {
        if answers(http, router, host, want).await {
            return Ok(since.elapsed());
        }
        if since.elapsed() > within {
            bail!("{router} did not send {host} to {want} within {within:?}");
        }
        tokio::time::sleep(every).await;
    }
}

// ---------------------------------------------------------------------------
// Figures

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

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Sorted latencies, with their p50 and p99.
#[derive(Debug, Default, Clone)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
        self.0.sort();
    }
    fn p(&self, p: f64) -> f64 {
        ms(percentile(&self.0, p))
    }
}

/// Everything measured at one size.
#[derive(Debug, Default)]
struct SizeRun {
    domains: usize,
    build: Duration,
    file_mb: f64,
    start: Duration,
    rss_start: u64,
    hwm_start: u64,
    rss_settled: u64,
    changes: usize,
    offlines: usize,
    add_returns: Latencies,
    add_routes: Latencies,
    rss_changes: u64,
    hwm_changes: u64,
    /// RSS after each 1,000 changes.
    rss_thousands: Vec<u64>,
    /// A reconcile round asked through the API, how long it took.
    reconcile_round: Option<Duration>,
    /// Route changes made one after the other while that round ran.
    round_returns: Latencies,
    round_routes: Latencies,
    offline_returns: Latencies,
    offline_follows: Latencies,
    online_returns: Latencies,
    online_follows: Latencies,
    wrk_still: Option<WrkResult>,
    wrk_changing: Option<WrkResult>,
    changes_during_wrk: usize,
    change_rate_during_wrk: f64,
    /// Instance lists a reconcile round asked during each wrk run (0: the
    /// run had no round in it).
    round_during_wrk: [usize; 2],
    rss_end: u64,
    hwm_end: u64,
    pg: Option<PgRun>,
}

#[derive(Debug, Default)]
struct PgRun {
    build: Duration,
    start_b: Duration,
    a_returns: Latencies,
    b_routes: Latencies,
}

// ---------------------------------------------------------------------------
// Running

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    println!(
        "slum scale benchmark: fleets of {} domains",
        grouped_list(&settings.sizes)
    );
    println!("  command:  {}", settings.command);
    println!(
        "  machine:  {} cpus, {} GB memory, load average {} (at the start)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total_gb(),
        load_average()
    );
    println!(
        "  fleet:    {} servers on loopback (one responder), a domain a tenant with its instance, one in {} with a backup instance on the next server",
        settings.servers, settings.backup_every
    );
    println!(
        "  slum:     {} serve, default settings",
        settings.slum.display()
    );
    println!("  wrk:      {}", tool_version(&settings.wrk, "-v"));
    let mut pg = settings.pg_admin.as_ref().map(|admin| Postgres {
        admin: admin.clone(),
        created: Vec::new(),
    });
    if pg.is_none() {
        println!("  postgres: not measured (SLUM_TEST_POSTGRES is not set)");
    }
    let dir = match &settings.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("slum-scale-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new().prefix("slum-scale-").tempdir()?,
    };
    println!("  files:    {}", dir.path().display());
    let mut runs = Vec::new();
    let result = tokio::select! {
        r = run(&settings, dir.path(), pg.as_mut(), &mut runs) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let dropped = match pg.as_mut() {
        Some(pg) => pg.drop_all().await,
        None => Ok(()),
    };
    // The sizes measured in full are summed up even when a later one failed.
    if result.is_err() && !runs.is_empty() {
        println!("\nstopped by an error (below); the sizes measured in full:");
    }
    print_summary(&settings, &runs);
    result?;
    dropped?;
    println!("\nload average at the end: {}", load_average());
    Ok(())
}

async fn run(
    settings: &Settings,
    dir: &Path,
    mut pg: Option<&mut Postgres>,
    runs: &mut Vec<SizeRun>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(4)
        .build()?;
    for (n, &domains) in settings.sizes.iter().enumerate() {
        let shape = Shape {
            tenants: domains,
            servers: settings.servers,
            backup_every: settings.backup_every,
            // A fresh port a size: the last responder may still be closing.
            port: common::free_port()?,
        };
        let responder = Responder::start(shape)?;
        let mut run = size_run(
            settings,
            dir,
            shape,
            &http,
            (settings.changes[n], settings.offlines[n]),
            &responder.rounds,
        )
        .await?;
        if let Some(pg) = pg
            .as_deref_mut()
            .filter(|_| settings.pg_sizes.contains(&domains))
        {
            run.pg = Some(pg_run(settings, dir, shape, &http, pg).await?);
        }
        drop(responder);
        runs.push(run);
    }
    Ok(())
}

async fn size_run(
    settings: &Settings,
    dir: &Path,
    shape: Shape,
    http: &reqwest::Client,
    (changes, offlines): (usize, usize),
    rounds: &Rounds,
) -> anyhow::Result<SizeRun> {
    let n = shape.tenants;
    println!("\n== {} domains ==", grouped(n as f64));
    let mut run = SizeRun {
        domains: n,
        changes,
        offlines,
        ..Default::default()
    };
    let path = dir.join(format!("fleet-{n}.db"));
    let built = Instant::now();
    build_sqlite(&path, shape).await?;
    run.build = built.elapsed();
    run.file_mb = std::fs::metadata(&path).map_or(0.0, |m| mb(m.len()));
    println!(
        "  built the SQLite fleet in {:.1} s ({:.0} MB)",
        run.build.as_secs_f64(),
        run.file_mb
    );
    let result = serve_sqlite(settings, dir, &path, shape, http, &mut run, rounds).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    result?;
    Ok(run)
}

async fn serve_sqlite(
    settings: &Settings,
    dir: &Path,
    path: &Path,
    shape: Shape,
    http: &reqwest::Client,
    run: &mut SizeRun,
    rounds: &Rounds,
) -> anyhow::Result<()> {
    let n = shape.tenants;
    let last = n - 1;
    let database = path.to_str().context("BENCH_DIR is not UTF-8")?;
    let spawned = Instant::now();
    let mut slum = Slum::spawn(&settings.slum, database, dir, &format!("sqlite-{n}"))?;
    let host = Shape::domain(last);
    let want = Shape::upstream_host(last, shape.home(last));
    loop {
        if answers(http, &slum.router, &host, &want).await {
            break;
        }
        slum.exited()?;
        if spawned.elapsed() > START_WITHIN {
            bail!("{host} did not route within {START_WITHIN:?} of the start");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run.start = spawned.elapsed();
    (run.rss_start, run.hwm_start) = rss(slum.pid())?;
    println!(
        "  start until the last domain routes: {:.2} s; RSS {:.0} MB (peak {:.0} MB), {:.0} bytes a domain",
        run.start.as_secs_f64(),
        mb(run.rss_start),
        mb(run.hwm_start),
        run.rss_start as f64 / n as f64
    );
    // Settled: the health checks and the first reconcile round have opened
    // their connections to every server, and the router has carried a
    // request to each server (see `reach_every_server`); no change made.
    reach_every_server(http, &slum.router, shape).await?;
    tokio::time::sleep(Duration::from_secs(settings.settle).saturating_sub(spawned.elapsed()))
        .await;
    // At a million the first round (30 s after the start) may still run.
    let first_round = rounds.ended_after(0, ROUND_GAP_WITHIN).await;
    slum.exited()?;
    run.rss_settled = rss(slum.pid())?.0;
    println!(
        "  settled ({} s after the spawn, {}, no changes): RSS {:.0} MB, {:.0} bytes a domain",
        settings.settle,
        match first_round {
            true => format!(
                "the first reconcile round over at {:.0} s",
                spawned.elapsed().as_secs_f64()
            ),
            false => "no reconcile round seen".to_owned(),
        },
        mb(run.rss_settled),
        run.rss_settled as f64 / n as f64
    );
    let api = slum.api(http, None)?;
    let mut rng = StdRng::seed_from_u64(0x5ca1e + n as u64);
    let mut counter = 0usize;

    // Route changes, one after the other.
    let ticker = Progress::new("route changes", run.changes);
    let mut budget = Budget::new(slum.pid(), settings.rss_limit)?;
    for done in 0..run.changes {
        if !budget.allows(1)? {
            println!("  {} after {done} route changes", budget.note());
            run.changes = done;
            break;
        }
        let (returned, routed) =
            route_change(&api, http, &slum.router, shape, &mut rng, &mut counter).await?;
        run.add_returns.push(returned);
        run.add_routes.push(routed);
        budget.changed()?;
        ticker.tick();
        if (done + 1) % 1000 == 0 {
            run.rss_thousands.push(rss(slum.pid())?.0);
        }
    }
    slum.exited()?;
    (run.rss_changes, run.hwm_changes) = rss(slum.pid())?;
    println!(
        "  {} route changes: API returns p50 {:.2} ms p99 {:.2} ms; routes here p50 {:.2} ms p99 {:.2} ms; RSS after {:.0} MB (peak {:.0} MB)",
        run.changes,
        run.add_returns.p(50.0),
        run.add_returns.p(99.0),
        run.add_routes.p(50.0),
        run.add_routes.p(99.0),
        mb(run.rss_changes),
        mb(run.hwm_changes)
    );
    if run.rss_thousands.len() > 1 {
        let each: Vec<String> = run
            .rss_thousands
            .iter()
            .map(|r| format!("{:.0}", mb(*r)))
            .collect();
        println!("  RSS after each 1,000 changes: {} MB", each.join(" / "));
    }

    // Route changes while a reconcile round runs (every 30 s in service):
    // one after the other until the round ends, at most as many as above.
    if budget.allows(1)? {
        let t0 = Instant::now();
        let round = api.reconcile();
        tokio::pin!(round);
        let mut ended = None;
        while ended.is_none() && run.round_returns.0.len() < run.changes {
            tokio::select! {
                r = &mut round => ended = Some(r.map(|_| t0.elapsed())),
                change = route_change(&api, http, &slum.router, shape, &mut rng, &mut counter) => {
                    let (returned, routed) = change?;
                    run.round_returns.push(returned);
                    run.round_routes.push(routed);
                }
            }
        }
        let took = match ended {
            Some(took) => took?,
            None => {
                round.await?;
                t0.elapsed()
            }
        };
        run.reconcile_round = Some(took);
        budget.changed()?;
        println!(
            "  a reconcile round (POST /v1/reconcile) took {:.2} s; {} route changes meanwhile: API returns p50 {:.2} ms p99 {:.2} ms; routes here p50 {:.2} ms p99 {:.2} ms",
            took.as_secs_f64(),
            run.round_returns.0.len(),
            run.round_returns.p(50.0),
            run.round_returns.p(99.0),
            run.round_routes.p(50.0),
            run.round_routes.p(99.0),
        );
    }

    // Servers going offline, with a backup for the domain looked at.
    for k in 0..run.offlines {
        // Offline and back online: two changes.
        if !budget.allows(2)? {
            println!("  {} after {k} servers offline and back", budget.note());
            run.offlines = k;
            break;
        }
        let j = offline_tenant(n, shape.servers, shape.backup_every, k)
            .context("no server with a backup left")?;
        let (home, backup) = (shape.home(j), shape.backup(j));
        let host = Shape::domain(j);
        let t0 = Instant::now();
        let want = Shape::upstream_host(j, backup);
        let (returned, followed) = tokio::join!(
            async {
                api.server_status(home, "offline")
                    .await
                    .map(|_| t0.elapsed())
            },
            until_answers(
                http,
                &slum.router,
                &host,
                &want,
                t0,
                Duration::from_millis(1),
                CHANGE_WITHIN
            ),
        );
        run.offline_returns.push(returned?);
        run.offline_follows.push(followed?);
        // Back online by hand (health checks do not undo an operator's
        // offline).
        let t0 = Instant::now();
        let want = Shape::upstream_host(j, home);
        let (returned, followed) = tokio::join!(
            async {
                api.server_status(home, "online")
                    .await
                    .map(|_| t0.elapsed())
            },
            until_answers(
                http,
                &slum.router,
                &host,
                &want,
                t0,
                Duration::from_millis(1),
                CHANGE_WITHIN
            ),
        );
        run.online_returns.push(returned?);
        run.online_follows.push(followed?);
        budget.changed()?;
    }
    if run.offlines > 0 {
        println!(
            "  {} servers offline: API returns p50 {:.2} ms max {:.2} ms; traffic on the backup p50 {:.2} ms max {:.2} ms",
            run.offlines,
            run.offline_returns.p(50.0),
            run.offline_returns.p(100.0),
            run.offline_follows.p(50.0),
            run.offline_follows.p(100.0),
        );
        println!(
            "  and back online: API returns p50 {:.2} ms max {:.2} ms; traffic back on the server p50 {:.2} ms max {:.2} ms",
            run.online_returns.p(50.0),
            run.online_returns.p(100.0),
            run.online_follows.p(50.0),
            run.online_follows.p(100.0),
        );
    }
    slum.exited()?;

    // Traffic through the router, still and while domains are added.
    let j = n / 2;
    let host = Shape::domain(j);
    until_answers(
        http,
        &slum.router,
        &host,
        &Shape::upstream_host(j, shape.home(j)),
        Instant::now(),
        Duration::from_millis(10),
        CHANGE_WITHIN,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let wrk = |s: u64| {
        run_wrk(
            &settings.wrk,
            settings.threads,
            settings.connections,
            &slum.router,
            &host,
            s,
        )
    };
    // Between two rounds: one ends, and the next comes 30 s later.
    if !rounds.ended_after(rounds.asked(), ROUND_GAP_WITHIN).await {
        println!("  (no reconcile round ended within {ROUND_GAP_WITHIN:?}: wrk runs now)");
    }
    let asked = rounds.asked();
    let still = wrk(settings.duration).await?;
    run.wrk_still = Some(still.clone());
    let asked_still = rounds.asked() - asked;
    if budget.allows(1)? {
        let stop = Arc::new(AtomicBool::new(false));
        let changer = {
            let (api, http, router, stop) = (
                api.clone(),
                http.clone(),
                slum.router.clone(),
                Arc::clone(&stop),
            );
            let every = Duration::from_secs_f64(1.0 / settings.change_rate);
            let mut rng = StdRng::seed_from_u64(0xc4a49e + n as u64);
            let mut counter = counter;
            let mut budget = budget;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut done = 0usize;
                let started = Instant::now();
                while !stop.load(Relaxed) {
                    tick.tick().await;
                    if stop.load(Relaxed) || !budget.allows(1)? {
                        break;
                    }
                    route_change(&api, &http, &router, shape, &mut rng, &mut counter).await?;
                    budget.changed()?;
                    done += 1;
                }
                anyhow::Ok((done, done as f64 / started.elapsed().as_secs_f64()))
            })
        };
        let asked = rounds.asked();
        let changing = wrk(settings.duration).await;
        run.round_during_wrk = [asked_still, rounds.asked() - asked];
        stop.store(true, Relaxed);
        let (done, rate) = changer.await??;
        let changing = changing?;
        run.changes_during_wrk = done;
        run.change_rate_during_wrk = rate;
        println!(
            "  wrk -t{} -c{} -d{}s: p99 {:.2} ms ({:.0} req/s) with no changes; {:.2} ms ({:.0} req/s) with {} changes ({:.1}/s); {:.2}x; instance lists a reconcile round asked meanwhile: {} and {}",
            settings.threads,
            settings.connections,
            settings.duration,
            still.p99_ms,
            still.requests_per_sec,
            changing.p99_ms,
            changing.requests_per_sec,
            done,
            rate,
            changing.p99_ms / still.p99_ms,
            run.round_during_wrk[0],
            run.round_during_wrk[1],
        );
        run.wrk_changing = Some(changing);
    } else {
        println!(
            "  wrk -t{} -c{} -d{}s: p99 {:.2} ms ({:.0} req/s) with no changes; none with changes: {}",
            settings.threads,
            settings.connections,
            settings.duration,
            still.p99_ms,
            still.requests_per_sec,
            budget.note()
        );
    }
    for (what, w) in [
        ("no changes", Some(&still)),
        ("with changes", run.wrk_changing.as_ref()),
    ] {
        let Some(w) = w else { continue };
        if w.non_2xx > 0 || w.socket_errors > 0 {
            println!(
                "  warning: wrk {what}: {} non-2xx answers, {} socket errors ({})",
                w.non_2xx, w.socket_errors, w.socket_errors_text
            );
        }
    }
    slum.exited()?;
    (run.rss_end, run.hwm_end) = rss(slum.pid())?;
    println!(
        "  RSS at the end: {:.0} MB (peak {:.0} MB); load average {}",
        mb(run.rss_end),
        mb(run.hwm_end),
        load_average()
    );
    drop(slum);
    Ok(())
}

/// Sends a request through `router` to a domain on each server, twice over
/// 16 connections at a time (the router's threads keep a pool of server
/// connections each): a router in service keeps connections to the servers
/// it sends traffic to, and the route changes below would otherwise count
/// the router's first connection to a server as their own cost.
async fn reach_every_server(
    http: &reqwest::Client,
    router: &str,
    shape: Shape,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let each = (0..2).flat_map(|_| 0..shape.servers.min(shape.tenants));
    let missed = futures::stream::iter(each)
        .map(|j| async move {
            let want = Shape::upstream_host(j, shape.home(j));
            answers(http, router, &Shape::domain(j), &want).await
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(!ok))
        .count()
        .await;
    if missed > 0 {
        bail!("{missed} requests to the servers through the router were not answered");
    }
    Ok(())
}

/// One routing change: a new domain of a random existing tenant, added
/// through `api`; the time until the API returns and until `router` routes
/// it, both from the request.
async fn route_change(
    api: &Api,
    http: &reqwest::Client,
    router: &str,
    shape: Shape,
    rng: &mut StdRng,
    counter: &mut usize,
) -> anyhow::Result<(Duration, Duration)> {
    let j = rng.gen_range(0..shape.tenants);
    *counter += 1;
    let domain = format!("c{}-t{j}.example.com", *counter);
    let want = Shape::upstream_host(j, shape.home(j));
    let t0 = Instant::now();
    let (returned, routed) = tokio::join!(
        async {
            api.add_domain(shape, &domain, j)
                .await
                .map(|_| t0.elapsed())
        },
        until_answers(
            http,
            router,
            &domain,
            &want,
            t0,
            Duration::from_millis(1),
            CHANGE_WITHIN
        ),
    );
    Ok((returned?, routed?))
}

async fn pg_run(
    settings: &Settings,
    dir: &Path,
    shape: Shape,
    http: &reqwest::Client,
    pg: &mut Postgres,
) -> anyhow::Result<PgRun> {
    let n = shape.tenants;
    let mut out = PgRun::default();
    let built = Instant::now();
    let url = pg.build(shape).await?;
    out.build = built.elapsed();
    println!(
        "  PostgreSQL: built the fleet in {:.1} s; two routers on it",
        out.build.as_secs_f64()
    );
    let spawned = Instant::now();
    let mut a = Slum::spawn(&settings.slum, &url, dir, &format!("pg-a-{n}"))?;
    let mut b = Slum::spawn(&settings.slum, &url, dir, &format!("pg-b-{n}"))?;
    let last = n - 1;
    let (host, want) = (
        Shape::domain(last),
        Shape::upstream_host(last, shape.home(last)),
    );
    for slum in [&mut a, &mut b] {
        loop {
            if answers(http, &slum.router, &host, &want).await {
                break;
            }
            slum.exited()?;
            if spawned.elapsed() > START_WITHIN {
                bail!("{host} did not route within {START_WITHIN:?} of the start");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    out.start_b = spawned.elapsed();
    let api = a.api(http, Some(&b))?;
    let mut rng = StdRng::seed_from_u64(0x9057 + n as u64);
    let mut counter = 0;
    let mut count = settings.changes[settings.sizes.iter().position(|&s| s == n).unwrap_or(0)];
    let ticker = Progress::new("route changes on PostgreSQL", count);
    let mut budgets = [
        Budget::new(a.pid(), settings.rss_limit)?,
        Budget::new(b.pid(), settings.rss_limit)?,
    ];
    for done in 0..count {
        if !budgets[0].allows(1)? || !budgets[1].allows(1)? {
            println!(
                "  PostgreSQL: {} after {done} route changes",
                budgets[0].note()
            );
            count = done;
            break;
        }
        let j = rng.gen_range(0..n);
        counter += 1;
        let domain = format!("p{counter}-t{j}.example.com");
        let want = Shape::upstream_host(j, shape.home(j));
        let t0 = Instant::now();
        let (returned, routed) = tokio::join!(
            async {
                api.add_domain(shape, &domain, j)
                    .await
                    .map(|_| t0.elapsed())
            },
            until_answers(
                http,
                &b.router,
                &domain,
                &want,
                t0,
                Duration::from_millis(1),
                CHANGE_WITHIN
            ),
        );
        out.a_returns.push(returned?);
        out.b_routes.push(routed?);
        for b in &mut budgets {
            b.changed()?;
        }
        ticker.tick();
    }
    a.exited()?;
    b.exited()?;
    println!(
        "  PostgreSQL: both routers route all {} domains {:.2} s after the start; {} changes through A's API: A returns p50 {:.2} ms p99 {:.2} ms; B routes p50 {:.2} ms p99 {:.2} ms",
        grouped(n as f64),
        out.start_b.as_secs_f64(),
        count,
        out.a_returns.p(50.0),
        out.a_returns.p(99.0),
        out.b_routes.p(50.0),
        out.b_routes.p(99.0)
    );
    drop((a, b));
    pg.drop_all().await?;
    Ok(out)
}

/// A line on stderr every tenth of a long series, for runs that take minutes.
struct Progress {
    what: &'static str,
    total: usize,
    done: AtomicUsize,
    started: Instant,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Progress {
        Progress {
            what,
            total,
            done: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    fn tick(&self) {
        let done = self.done.fetch_add(1, Relaxed) + 1;
        let step = (self.total / 10).max(1);
        if done % step == 0 && done < self.total && self.started.elapsed() > Duration::from_secs(10)
        {
            eprintln!(
                "  ... {done}/{} {} ({:.0} s)",
                self.total,
                self.what,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The summary

fn mem_total_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1000)
        })
        .unwrap_or(8_000)
}

fn mem_total_gb() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: f64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0}", kb / 1e6))
        })
        .unwrap_or_else(|| "?".into())
}

fn grouped(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn grouped_list(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(|&n| grouped(n as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_summary(settings: &Settings, runs: &[SizeRun]) {
    if runs.is_empty() {
        return;
    }
    let base = &runs[0];
    println!(
        "\nsummary (ratios: each size against {} domains, measured in this run)\n",
        grouped(base.domains as f64)
    );
    let mut header = format!("| {:<62} |", "");
    for r in runs {
        let _ = write!(
            header,
            " {:>14} |",
            format!("{} domains", grouped(r.domains as f64))
        );
    }
    for r in &runs[1..] {
        let _ = write!(
            header,
            " {:>9} |",
            format!("{}→{}", short(base.domains), short(r.domains))
        );
    }
    println!("{header}");
    println!(
        "|{}|{}{}",
        "-".repeat(64),
        "----------------|".repeat(runs.len()),
        "-----------|".repeat(runs.len() - 1)
    );
    let row = |name: &str, unit: &str, f: &dyn Fn(&SizeRun) -> Option<f64>| {
        let mut line = format!("| {:<62} |", name);
        for r in runs {
            let cell = match f(r) {
                Some(v) if v >= 100.0 => format!("{:.0} {unit}", v),
                Some(v) => format!("{:.2} {unit}", v),
                None => "-".into(),
            };
            let _ = write!(line, " {:>14} |", cell);
        }
        for r in &runs[1..] {
            let cell = match (f(base), f(r)) {
                (Some(a), Some(b)) if a > 0.0 => format!("{:.1}x", b / a),
                _ => "-".into(),
            };
            let _ = write!(line, " {:>9} |", cell);
        }
        println!("{line}");
    };
    row("start until the last domain routes", "s", &|r| {
        Some(r.start.as_secs_f64())
    });
    row("RSS of slum serve after start", "MB", &|r| {
        Some(mb(r.rss_start))
    });
    row("  bytes a domain", "B", &|r| {
        Some(r.rss_start as f64 / r.domains as f64)
    });
    row(
        &format!(
            "RSS settled ({} s after the spawn and a round, no changes)",
            settings.settle
        ),
        "MB",
        &|r| Some(mb(r.rss_settled)),
    );
    row("  bytes a domain", "B", &|r| {
        Some(r.rss_settled as f64 / r.domains as f64)
    });
    let changes: Vec<String> = runs.iter().map(|r| r.changes.to_string()).collect();
    row(
        &format!("RSS after the route changes ({})", changes.join("/")),
        "MB",
        &|r| Some(mb(r.rss_changes)),
    );
    row("  against settled", "x", &|r| {
        (r.rss_settled > 0).then(|| r.rss_changes as f64 / r.rss_settled as f64)
    });
    row("  peak RSS (VmHWM) by then", "MB", &|r| {
        Some(mb(r.hwm_changes))
    });
    row(
        "tenant add (new domain, existing tenant): API returns, p50",
        "ms",
        &|r| Some(r.add_returns.p(50.0)),
    );
    row("  API returns, p99", "ms", &|r| Some(r.add_returns.p(99.0)));
    row("  routes on this router, p50", "ms", &|r| {
        Some(r.add_routes.p(50.0))
    });
    row("  routes on this router, p99", "ms", &|r| {
        Some(r.add_routes.p(99.0))
    });
    row("a reconcile round (POST /v1/reconcile)", "s", &|r| {
        r.reconcile_round.map(|d| d.as_secs_f64())
    });
    row("  tenant adds meanwhile: API returns, p99", "ms", &|r| {
        (!r.round_returns.0.is_empty()).then(|| r.round_returns.p(99.0))
    });
    row("  routes on this router, p99", "ms", &|r| {
        (!r.round_routes.0.is_empty()).then(|| r.round_routes.p(99.0))
    });
    let offlines: Vec<String> = runs.iter().map(|r| r.offlines.to_string()).collect();
    row(
        &format!(
            "server update S --status offline returns, max of {}",
            offlines.join("/")
        ),
        "ms",
        &|r| (r.offlines > 0).then(|| r.offline_returns.p(100.0)),
    );
    row(
        "  traffic of a domain on S reaches its backup, max",
        "ms",
        &|r| (r.offlines > 0).then(|| r.offline_follows.p(100.0)),
    );
    row("server update S --status online returns, max", "ms", &|r| {
        (r.offlines > 0).then(|| r.online_returns.p(100.0))
    });
    row("  traffic of that domain back on S, max", "ms", &|r| {
        (r.offlines > 0).then(|| r.online_follows.p(100.0))
    });
    row(
        "two routers on PostgreSQL: start until both route all",
        "s",
        &|r| r.pg.as_ref().map(|p| p.start_b.as_secs_f64()),
    );
    row(
        "  a route change: API of router A returns, p99",
        "ms",
        &|r| r.pg.as_ref().map(|p| p.a_returns.p(99.0)),
    );
    row("  routes on router B, p99", "ms", &|r| {
        r.pg.as_ref().map(|p| p.b_routes.p(99.0))
    });
    row(
        &format!(
            "wrk -c{} through the router, p99, no changes",
            settings.connections
        ),
        "ms",
        &|r| r.wrk_still.as_ref().map(|w| w.p99_ms),
    );
    row(
        &format!(
            "  the same, {}/s changes asked (one in flight), p99",
            settings.change_rate
        ),
        "ms",
        &|r| r.wrk_changing.as_ref().map(|w| w.p99_ms),
    );
    row("  changes that finished a second", "/s", &|r| {
        r.wrk_changing.as_ref().map(|_| r.change_rate_during_wrk)
    });
    row(
        "  p99 with changes / without",
        "x",
        &|r| match (&r.wrk_still, &r.wrk_changing) {
            (Some(a), Some(b)) if a.p99_ms > 0.0 => Some(b.p99_ms / a.p99_ms),
            _ => None,
        },
    );
    row(
        "  instance lists a reconcile round asked during them",
        "",
        &|r| {
            r.wrk_changing
                .as_ref()
                .map(|_| (r.round_during_wrk[0] + r.round_during_wrk[1]) as f64)
        },
    );
    row("RSS at the end", "MB", &|r| Some(mb(r.rss_end)));
}

fn short(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_instance_list_holds_its_tenants_and_the_backups_it_keeps() {
        let shape = Shape {
            tenants: 25,
            servers: 10,
            backup_every: 10,
            port: 1,
        };
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&shape.instances_json(1)).expect("json");
        let ids: Vec<&str> = list.iter().filter_map(|v| v["id"].as_str()).collect();
        // Its own t1, t11, t21; the backups of t0, t10 and t20 (on server 0).
        assert_eq!(
            ids,
            ["web:t1", "web:t11", "web:t21", "web:t0", "web:t10", "web:t20"]
        );
    }

    #[test]
    fn offline_servers_are_distinct_and_have_a_backup() {
        let servers: Vec<usize> = (0..5)
            .filter_map(|k| offline_tenant(1000, 1000, 10, k))
            .map(|j| j % 1000)
            .collect();
        assert_eq!(servers.len(), 5);
        let mut unique = servers.clone();
        unique.dedup();
        assert_eq!(unique, servers);
        assert!(servers.iter().all(|j| j % 10 == 0));
    }

    #[test]
    fn lists_of_numbers() {
        std::env::set_var("BENCH_TEST_LIST", "1_000, 100000 1000000");
        assert_eq!(
            numbers("BENCH_TEST_LIST", "").expect("numbers"),
            [1_000, 100_000, 1_000_000]
        );
        assert_eq!(short(100_000), "100k");
        assert_eq!(short(1_000_000), "1M");
        assert_eq!(grouped(1234567.0), "1,234,567");
    }
}
