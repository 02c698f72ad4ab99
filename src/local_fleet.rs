//! A local fleet of real tenement servers, for tests and demos.
//!
//! Two `ten serve` on one host collide (each hands its instances ports from 30000
//! up without asking the OS), so every server runs in its own network namespace,
//! joined to the host by a veth pair: a separate host with its own address, as in
//! production. Each server has its own directory, data dir, admin token and socket
//! paths, and runs the services of [`FleetSpec::processes`] with
//! `isolation = "process"` and the `slum-demo-app` as their command.
//!
//! Needs root (for `ip netns`) and `ten` (see [`find_ten`]). Everything is torn
//! down on drop, also when a test panics; slots a killed run left behind are
//! reclaimed by the next run.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fleet::model::{Server, ServerStatus};

/// The pinned tenement release slum is tested against.
pub const TENEMENT_VERSION: &str = "0.2.1";

/// Port every `ten serve` listens on inside its namespace.
pub const TEN_PORT: u16 = 8000;

const SLOT_DIR: &str = "/run/slum-local-fleet";
const MAX_SLOTS: u32 = 16_000;

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Finds the `ten` binary: `$SLUM_TEN`, or the per-machine cache that
/// `scripts/ensure-tenement.sh` installs into.
pub fn find_ten() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SLUM_TEN") {
        return Ok(PathBuf::from(p));
    }
    let cache = std::env::var_os("SLUM_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("slum")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/slum")))
        .ok_or_else(|| err("neither SLUM_TEN nor HOME is set"))?;
    let bin = cache.join(format!("tenement-cli-{TENEMENT_VERSION}/bin/ten"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(err(format!(
            "tenement-cli {TENEMENT_VERSION} not found at {}; run scripts/ensure-tenement.sh",
            bin.display()
        )))
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Server names (DNS labels), one server each.
    pub names: Vec<String>,
    /// The `ten` binary.
    pub ten: PathBuf,
    /// The tenant app every service runs (normally `slum-demo-app`).
    pub app: PathBuf,
    /// Services each server offers.
    pub processes: Vec<String>,
    /// Capacity recorded for each server, in MB.
    pub capacity_mb: i64,
    /// Extra TOML appended to every server's `tenement.toml` (more services).
    pub extra_toml: String,
}

impl FleetSpec {
    /// `servers` servers named `s1`, `s2`, ...
    pub fn new(servers: usize, ten: PathBuf, app: PathBuf) -> Self {
        FleetSpec {
            names: (1..=servers).map(|i| format!("s{i}")).collect(),
            ten,
            app,
            processes: vec!["api".into(), "web".into()],
            capacity_mb: 1024,
            extra_toml: String::new(),
        }
    }
}

/// One tenement server in its namespace.
pub struct LocalServer {
    pub name: String,
    /// Address of the server inside its namespace.
    pub ip: Ipv4Addr,
    /// The domain it routes by: its `--domain` (tenement's default,
    /// `localhost`, when it runs without one).
    pub domain: String,
    /// Whether `ten serve` is given `--domain` (see
    /// [`LocalServer::restart_routing_by`]).
    domain_flag: bool,
    /// Its admin API token.
    pub token: String,
    pub dir: PathBuf,
    slot: u32,
    ten: PathBuf,
    child: Option<Child>,
    capacity_mb: i64,
}

impl std::fmt::Debug for LocalServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServer")
            .field("name", &self.name)
            .field("ip", &self.ip)
            .field("domain", &self.domain)
            .field("token", &"<redacted>")
            .field("dir", &self.dir)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl LocalServer {
    /// Base URL of its API and proxy.
    pub fn url(&self) -> String {
        format!("http://{}:{TEN_PORT}", self.ip)
    }

    /// The network namespace it runs in.
    pub fn netns(&self) -> String {
        netns_name(self.slot)
    }

    /// The record to add to a fleet database.
    pub fn record(&self) -> Server {
        Server {
            id: self.name.clone(),
            url: self.url(),
            region: None,
            capacity_mb: self.capacity_mb,
            token: Some(self.token.clone()),
            domain: Some(self.domain.clone()),
            status: ServerStatus::Unknown,
            ..Default::default()
        }
    }

    /// The file holding its admin token (written by `ten token-gen`, mode
    /// 0600), to give `slum server add --token-file`.
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("data/api_token")
    }

    /// Pid of its `ten serve`, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ten.log"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns()])
            .arg(&self.ten)
            .args(["serve", "--port", &TEN_PORT.to_string()]);
        if self.domain_flag {
            command.args(["--domain", &self.domain]);
        }
        let child = command
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `GET /health` answers.
    pub async fn wait_healthy(&self, within: Duration) -> io::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .no_proxy()
            .build()
            .map_err(|e| err(e.to_string()))?;
        let deadline = Instant::now() + within;
        let url = format!("{}/health", self.url());
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let log = fs::read_to_string(self.dir.join("ten.log")).unwrap_or_default();
                return Err(err(format!(
                    "server {} did not answer at {url} within {within:?}; ten.log: {log}",
                    self.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| err(format!("server {} is not running", self.name)))?;
        run("kill", &[&format!("-{sig}"), &pid.to_string()])
    }

    /// `kill -9` of `ten serve` (its instances, in their own process groups,
    /// survive, as they do when tenement crashes).
    pub fn kill(&mut self) -> io::Result<()> {
        self.signal("KILL")?;
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        Ok(())
    }

    /// Hangs the server (`SIGSTOP`): connections are accepted by the kernel but
    /// never answered.
    pub fn hang(&self) -> io::Result<()> {
        self.signal("STOP")
    }

    /// Resumes a hung server (`SIGCONT`).
    pub fn resume(&self) -> io::Result<()> {
        self.signal("CONT")
    }

    /// Stops every process in its namespace (`SIGSTOP`): `ten serve` and its
    /// instances alike, as on a machine that hangs. The kernel still
    /// acknowledges what is sent to it; nothing answers.
    pub fn freeze(&self) -> io::Result<()> {
        signal_netns_pids(&self.netns(), "STOP")
    }

    /// Resumes every process in its namespace (`SIGCONT`).
    pub fn thaw(&self) -> io::Result<()> {
        signal_netns_pids(&self.netns(), "CONT")
    }

    /// Kills the server together with every process in its namespace (its
    /// instances too), then starts `ten serve` again: a server that restarted
    /// with its instances gone.
    pub async fn restart_empty(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            self.kill()?;
        }
        kill_netns_pids(&self.netns());
        self.spawn()?;
        self.wait_healthy(Duration::from_secs(15)).await
    }

    /// Restarts the server as [`LocalServer::restart_empty`] does, routing by
    /// `domain` this time, or by tenement's default (`localhost`) when `None`
    /// (`ten serve` without `--domain`): what an operator who mistyped it, or
    /// left it out, starts.
    pub async fn restart_routing_by(&mut self, domain: Option<&str>) -> io::Result<()> {
        self.domain_flag = domain.is_some();
        self.domain = domain.unwrap_or("localhost").to_owned();
        self.restart_empty().await
    }

    /// Takes the server's end of its link down (a network partition): packets to
    /// it are dropped, so connects time out.
    pub fn link_down(&self) -> io::Result<()> {
        self.set_link("down")
    }

    /// Brings the server's link back up.
    pub fn link_up(&self) -> io::Result<()> {
        self.set_link("up")
    }

    /// Sets the namespace side of its veth link `up` or `down`.
    fn set_link(&self, state: &str) -> io::Result<()> {
        let (ns, link) = (netns_name(self.slot), ns_link_name(self.slot));
        run(
            "ip",
            &["netns", "exec", &ns, "ip", "link", "set", &link, state],
        )
    }
}

/// The network namespace of slot `slot`.
fn netns_name(slot: u32) -> String {
    format!("slumt{slot}")
}

/// The host side of slot `slot`'s veth link.
fn host_link_name(slot: u32) -> String {
    format!("slumh{slot}")
}

/// The namespace side of slot `slot`'s veth link.
fn ns_link_name(slot: u32) -> String {
    format!("slumn{slot}")
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.resume();
        kill_netns_pids(&self.netns());
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        release_slot(self.slot);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A running local fleet.
#[derive(Debug)]
pub struct LocalFleet {
    pub servers: Vec<LocalServer>,
}

impl LocalFleet {
    /// Starts one tenement server per name of `spec`, each in its own namespace, and waits
    /// until all answer.
    pub async fn start(spec: &FleetSpec) -> io::Result<LocalFleet> {
        if !spec.app.is_file() {
            return Err(err(format!("tenant app {} not found", spec.app.display())));
        }
        if !spec.ten.is_file() {
            return Err(err(format!("ten binary {} not found", spec.ten.display())));
        }
        let mut fleet = LocalFleet {
            servers: Vec::new(),
        };
        for name in &spec.names {
            let server = start_server(spec, name)?;
            fleet.servers.push(server);
        }
        for s in &fleet.servers {
            s.wait_healthy(Duration::from_secs(15)).await?;
        }
        Ok(fleet)
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Option<&LocalServer> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The server named `name`, mutably (to kill or restart it).
    pub fn server_mut(&mut self, name: &str) -> Option<&mut LocalServer> {
        self.servers.iter_mut().find(|s| s.name == name)
    }
}

fn start_server(spec: &FleetSpec, name: &str) -> io::Result<LocalServer> {
    let slot = claim_slot()?;
    let dir = std::env::temp_dir().join(format!("slum-fleet-{}-{slot}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    // From here on, Drop cleans up the slot, namespace and directory.
    let mut server = LocalServer {
        name: name.to_owned(),
        ip: slot_ip(slot, 2),
        domain: format!("{name}.fleet.test"),
        domain_flag: true,
        token: String::new(),
        dir: dir.clone(),
        slot,
        ten: spec.ten.clone(),
        child: None,
        capacity_mb: spec.capacity_mb,
    };
    // The server's token and database are in there: the owner's alone.
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
    }
    fs::create_dir_all(dir.join("sock"))?;
    fs::write(dir.join("tenement.toml"), tenement_toml(spec, name, &dir))?;
    create_netns(slot)?;
    let out = Command::new(&spec.ten)
        .arg("token-gen")
        .current_dir(&dir)
        .output()?;
    if !out.status.success() {
        return Err(err(format!(
            "ten token-gen failed for {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // ten writes it 0600 today; it stays so whatever a later ten does.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(server.token_file(), fs::Permissions::from_mode(0o600))?;
    }
    server.token = fs::read_to_string(server.token_file())?.trim().to_owned();
    server.spawn()?;
    Ok(server)
}

fn tenement_toml(spec: &FleetSpec, server: &str, dir: &Path) -> String {
    let mut toml = format!(
        "[settings]\ndata_dir = \"{data}\"\nhealth_check_interval = 1\nbackoff_base_ms = 100\n",
        data = dir.join("data").display()
    );
    for p in &spec.processes {
        toml.push_str(&format!(
            "\n[service.{p}]\ncommand = \"{app}\"\nisolation = \"process\"\nhealth = \"/health\"\n\
             socket = \"{sock}/{{name}}-{{id}}.sock\"\nstartup_timeout = 10\nrequest_timeout = 30\n\
             \n[service.{p}.env]\nINSTANCE_ID = \"{{id}}\"\nSERVICE = \"{{name}}\"\nSLUM_SERVER = \"{server}\"\n",
            app = spec.app.display(),
            sock = dir.join("sock").display(),
        ));
    }
    toml.push_str(&spec.extra_toml);
    toml
}

/// The address `host` (1: host side, 2: namespace side) of a slot's /30.
fn slot_ip(slot: u32, host: u32) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + slot * 4;
    Ipv4Addr::from(base + host)
}

fn run(cmd: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(cmd).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn create_netns(slot: u32) -> io::Result<()> {
    let ns = netns_name(slot);
    let host = host_link_name(slot);
    let peer = ns_link_name(slot);
    let host_ip = format!("{}/30", slot_ip(slot, 1));
    let ns_ip = format!("{}/30", slot_ip(slot, 2));
    // Test traffic must never leave the machine: with a server's link down, its
    // /30 route goes away and packets would follow the default route. The
    // blackhole catches them (a partition: connects time out).
    run("ip", &["route", "replace", "blackhole", BLACKHOLE])?;
    run("ip", &["netns", "add", &ns])?;
    run(
        "ip",
        &["link", "add", &host, "type", "veth", "peer", "name", &peer],
    )?;
    run("ip", &["link", "set", &peer, "netns", &ns])?;
    run("ip", &["addr", "add", &host_ip, "dev", &host])?;
    run("ip", &["link", "set", &host, "up"])?;
    run(
        "ip",
        &[
            "netns", "exec", &ns, "ip", "addr", "add", &ns_ip, "dev", &peer,
        ],
    )?;
    run(
        "ip",
        &["netns", "exec", &ns, "ip", "link", "set", &peer, "up"],
    )?;
    run(
        "ip",
        &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
    )?;
    // Check the namespace is up before anyone uses its address.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "-br", "addr", "show", &peer])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains(&slot_ip(slot, 2).to_string()) {
        return Err(err(format!("namespace {ns} is not up: {text}")));
    }
    Ok(())
}

/// Sends `sig` to every process in namespace `ns`.
fn signal_netns_pids(ns: &str, sig: &str) -> io::Result<()> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output()?;
    if !out.status.success() {
        return Err(err(format!(
            "ip netns pids {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let pids = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<&str> = pids.split_whitespace().collect();
    if pids.is_empty() {
        return Err(err(format!("no process runs in namespace {ns}")));
    }
    let mut args = vec![format!("-{sig}")];
    args.extend(pids.iter().map(|p| p.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("kill", &args)
}

fn kill_netns_pids(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-CONT", pid]).output();
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
}

fn destroy_netns(slot: u32) {
    let ns = netns_name(slot);
    kill_netns_pids(&ns);
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    let _ = Command::new("ip")
        .args(["link", "del", &host_link_name(slot)])
        .output();
}

/// Claims a free slot (a namespace name and a /30) with an atomic `mkdir`,
/// reclaiming slots whose owner process is gone.
fn claim_slot() -> io::Result<u32> {
    fs::create_dir_all(SLOT_DIR)?;
    for slot in 0..MAX_SLOTS {
        let dir = Path::new(SLOT_DIR).join(slot.to_string());
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::write(dir.join("owner"), std::process::id().to_string())?;
                destroy_netns(slot); // leftovers of a run that died mid-setup
                return Ok(slot);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(dir.join("owner")).unwrap_or_default();
                let alive = owner
                    .trim()
                    .parse::<u32>()
                    .map(|pid| Path::new(&format!("/proc/{pid}")).exists())
                    .unwrap_or(true);
                if !alive {
                    destroy_netns(slot);
                    let _ = fs::remove_dir_all(&dir);
                    if fs::create_dir(&dir).is_ok() {
                        fs::write(dir.join("owner"), std::process::id().to_string())?;
                        return Ok(slot);
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(err("no free local-fleet slot"))
}

fn release_slot(slot: u32) {
    destroy_netns(slot);
    let _ = fs::remove_dir_all(Path::new(SLOT_DIR).join(slot.to_string()));
    remove_blackhole_when_unused();
}

/// The route every slot's traffic falls into when its link is down.
const BLACKHOLE: &str = "10.213.0.0/16";

/// Whether any slot is claimed by a live process (this one or another); a
/// slot whose owner died is no use (the next claim reclaims it).
fn slots_in_use() -> bool {
    let Ok(entries) = fs::read_dir(SLOT_DIR) else {
        return false;
    };
    entries.flatten().any(|slot| {
        // A slot being claimed has no owner file yet: in use.
        fs::read_to_string(slot.path().join("owner"))
            .ok()
            .and_then(|owner| owner.trim().parse::<u32>().ok())
            .is_none_or(|pid| Path::new(&format!("/proc/{pid}")).exists())
    })
}

/// Takes the blackhole route away once the last slot is released, so that a
/// machine that ran a test fleet or the demo is left as it was. A slot is
/// claimed (its directory made) before its namespace adds the route, so
/// looking again after the removal catches one claimed meanwhile: its route
/// is put back, or is still to be added by its own set-up.
fn remove_blackhole_when_unused() {
    if slots_in_use() {
        return;
    }
    let _ = Command::new("ip")
        .args(["route", "del", "blackhole", BLACKHOLE])
        .output();
    if slots_in_use() {
        let _ = run("ip", &["route", "replace", "blackhole", BLACKHOLE]);
    }
}
