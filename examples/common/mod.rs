//! What the benchmark examples share: running wrk and reading its report, the
//! processes they start, and the machine's facts (free ports, CPU time of
//! processes, load, versions).
//! Not an example itself (cargo builds `examples/*.rs` and `examples/*/main.rs`).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

#[derive(Debug, Clone, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// wrk's "Non-2xx or 3xx responses" (absent from its output when 0).
    pub non_2xx: u64,
    pub socket_errors: u64,
    pub socket_errors_text: String,
}

/// wrk and the load it puts on a path.
pub struct Load {
    pub wrk: PathBuf,
    pub threads: u32,
    pub connections: u32,
}

impl Load {
    /// `WRK` (default `wrk`), `BENCH_THREADS` (2), `BENCH_CONNECTIONS` (32).
    pub fn from_env(script: &str) -> anyhow::Result<Load> {
        Ok(Load {
            wrk: env_path("WRK", Some("wrk"), script)?,
            threads: env_number("BENCH_THREADS", 2)?,
            connections: env_number("BENCH_CONNECTIONS", 32)?,
        })
    }

    /// This load on `url`, with Host `host`, for `seconds`.
    pub async fn run(&self, url: &str, host: &str, seconds: u64) -> anyhow::Result<WrkResult> {
        run_wrk(
            &self.wrk,
            self.threads,
            self.connections,
            url,
            host,
            seconds,
        )
        .await
    }
}

/// A path from the environment variable `name`, or `default`; without either,
/// the error points to `script`, which sets it.
pub fn env_path(name: &str, default: Option<&str>, script: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .or_else(|| default.map(PathBuf::from))
        .with_context(|| format!("{name} is not set; use {script}"))
}

/// A number from the environment variable `name`, or `default` when unset.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a positive whole number")),
        Err(_) => Ok(default),
    }
}

/// Runs `wrk` (with `--latency`) against `url` with Host `host`.
pub async fn run_wrk(
    wrk: &Path,
    threads: u32,
    connections: u32,
    url: &str,
    host: &str,
    seconds: u64,
) -> anyhow::Result<WrkResult> {
    let out = tokio::process::Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .args(["-H", &format!("Host: {host}")])
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {}", wrk.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk {url} failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Reads wrk's `--latency` report.
pub fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
    let mut requests = None;
    let mut requests_per_sec = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut non_2xx = 0;
    let mut socket_errors = 0;
    let mut socket_errors_text = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = Some(v.trim().parse::<f64>()?);
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = Some(wrk_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(wrk_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            socket_errors_text = v.trim().to_owned();
            for part in v.split(',') {
                let n = part.split_whitespace().last().unwrap_or("0");
                socket_errors += n.parse::<u64>()?;
            }
        } else if line.contains(" requests in ") {
            let n = line.split_whitespace().next().unwrap_or("");
            requests = Some(n.parse::<u64>()?);
        }
    }
    Ok(WrkResult {
        requests: requests.context("no request count")?,
        requests_per_sec: requests_per_sec.context("no Requests/sec")?,
        p50_ms: p50.context("no 50% latency (was --latency given?)")?,
        p99_ms: p99.context("no 99% latency (was --latency given?)")?,
        non_2xx,
        socket_errors,
        socket_errors_text,
    })
}

/// A wrk time (`812.00us`, `1.23ms`, `2.00s`, `1.00m`) in milliseconds.
pub fn wrk_ms(v: &str) -> anyhow::Result<f64> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .with_context(|| format!("no unit in {v:?}"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse()?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => bail!("unknown time unit in {v:?}"),
    };
    Ok(n * scale)
}

/// `slum serve` on `database` (a path or URL) as a child process, once it
/// listens: its router and API on free loopback ports, its token written to
/// `token`, its log to `log_path`, with `extra` arguments.
pub async fn start_slum(
    bin: &Path,
    database: impl AsRef<std::ffi::OsStr>,
    token: &Path,
    log_path: &Path,
    extra: &[String],
) -> anyhow::Result<Served> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let log = fs::File::create(log_path)?;
    let child = Command::new(bin)
        .arg("serve")
        .arg("--database")
        .arg(database)
        .args(["--listen", &addr.to_string()])
        .args(["--api-listen", &api.to_string()])
        .arg("--token-file")
        .arg(token)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let mut served = Served::wait(child, addr, "slum serve", Duration::from_secs(15), || {
        fs::read_to_string(log_path).unwrap_or_default()
    })
    .await?;
    served.api = Some(api);
    Ok(served)
}

/// A child process serving HTTP on a loopback address; killed (and reaped) on
/// drop.
pub struct Served {
    child: Child,
    addr: SocketAddr,
    /// slum's management API.
    api: Option<SocketAddr>,
}

impl Served {
    /// `child`, once it listens on `addr` (see [`wait_listening`]).
    pub async fn wait(
        child: Child,
        addr: SocketAddr,
        what: &str,
        within: Duration,
        log: impl Fn() -> String,
    ) -> anyhow::Result<Served> {
        let mut served = Served {
            child,
            addr,
            api: None,
        };
        wait_listening(&mut served.child, addr, what, within, log).await?;
        Ok(served)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The management API's URL, for `slum --api` (slum serve only).
    pub fn api_url(&self) -> Option<String> {
        self.api.map(|a| format!("http://{a}"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `child` listens on `addr`. If it exits first, or does not listen
/// within `within`, the error names `what` and ends with what `log` reads (its
/// log file, say).
pub async fn wait_listening(
    child: &mut Child,
    addr: SocketAddr,
    what: &str,
    within: Duration,
    log: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start-up ({status}):\n{}", log());
        }
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not listen on {addr} within {}s:\n{}",
                within.as_secs(),
                log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Field `n` (1-based, as in proc(5)) of a `/proc/<pid>/stat` line. The command
/// name (field 2) may hold spaces, so fields are counted after its `)`.
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    let field = |n| -> anyhow::Result<u64> {
        Ok(stat_field(&stat, n)
            .with_context(|| format!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    Ok(field(14)? + field(15)?)
}

pub fn clock_ticks_per_second() -> anyhow::Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    let hz: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    if hz <= 0.0 {
        bail!("getconf CLK_TCK said {hz}");
    }
    Ok(hz)
}

pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The first line a tool prints about its version (wrk and nginx print it on
/// stdout or stderr, and exit non-zero or zero).
pub fn tool_version(bin: &Path, flag: &str) -> String {
    match Command::new(bin).arg(flag).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_owned()
        }
        Err(e) => format!("{} not runnable: {e}", bin.display()),
    }
}

/// nginx (master and workers, `daemon off`) with a configuration of the
/// benchmark's own, in a directory of its own; stopped on drop.
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx from `bin` with the configuration `conf` writes for the
    /// directory it may use (logs, pid file, temp paths) and the loopback
    /// address it is to listen on, once it listens.
    pub async fn start(
        bin: &Path,
        conf: impl FnOnce(&Path, SocketAddr) -> String,
    ) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        // Workers run as nobody and need to reach their temp paths.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let conf = conf(dir.path(), addr);
        let conf_path = dir.path().join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let log_path = dir.path().join("error.log");
        let out = fs::File::create(dir.path().join("stderr.log"))?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let mut nginx = Nginx { child, addr, dir };
        let stderr_path = nginx.dir.path().join("stderr.log");
        wait_listening(
            &mut nginx.child,
            addr,
            "nginx",
            Duration::from_secs(10),
            || {
                let err = fs::read_to_string(&stderr_path).unwrap_or_default();
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                err + &log
            },
        )
        .await?;
        Ok(nginx)
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // already reaped: its pid may belong to someone else now
        }
        let master = self.pid();
        // SIGTERM: fast shutdown, the master stops its workers.
        let _ = Command::new("kill")
            .args(["-TERM", &master.to_string()])
            .output();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        // Still there: kill the workers (children of the unreaped master, so
        // their pids are still theirs), then the master.
        for pid in nginx_pids(master).into_iter().filter(|&p| p != master) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx master and its workers.
pub fn nginx_pids(master: u32) -> Vec<u32> {
    let mut pids = vec![master];
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let parent = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_field(&s, 4).and_then(|p| p.parse::<u32>().ok()));
            if parent == Some(master) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Microseconds of CPU per request, from the ticks read before and after.
pub fn us_per_request(before: u64, after: u64, requests: u64) -> anyhow::Result<f64> {
    let seconds = after.saturating_sub(before) as f64 / clock_ticks_per_second()?;
    Ok(seconds * 1e6 / requests.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   90.00%
    Req/Sec    12.34k     1.23k   15.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.50ms
     90%    2.00ms
     99%    1.02s
  246800 requests in 10.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 12
Requests/sec:  24680.00
Transfer/sec:      3.00MB
";

    #[test]
    fn reads_wrk_reports() {
        let r = parse_wrk(WRK).expect("parse");
        assert_eq!(r.requests, 246_800);
        assert_eq!(r.requests_per_sec, 24_680.0);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 1020.0).abs() < 1e-9);
        assert_eq!(r.non_2xx, 12);
        assert_eq!(r.socket_errors, 7);
    }

    #[test]
    fn a_report_without_latency_distribution_is_refused() {
        let without: String = WRK
            .lines()
            .filter(|l| !l.contains('%') || l.contains("Stdev"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse_wrk(&without).is_err());
        assert!(wrk_ms("3.00").is_err());
        assert!(wrk_ms("3.00xs").is_err());
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (nginx: a (b) c) S 7 42 42 0 -1 4194560 1 0 0 0 250 17 0 0";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 4), Some("7"));
        assert_eq!(stat_field(stat, 14), Some("250"));
        assert_eq!(stat_field(stat, 15), Some("17"));
    }
}
