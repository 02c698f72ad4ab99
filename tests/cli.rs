//! The `slum` command line, run as a user runs it: the real binary against a real
//! `slum serve` (the same binary, as a child process) over a fresh fleet database
//! in a temp dir, with `XDG_CONFIG_HOME` and `HOME` inside that dir so that no
//! test reads or writes the real `~/.config/slum/token`.
//!
//! Servers registered without a tenement harness point at a loopback port nothing
//! listens on; the last test drives spawn, ps and stop on a real tenement server.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SLUM: &str = env!("CARGO_BIN_EXE_slum");

/// Variables of the caller's environment that would change what the binary does.
const SCRUBBED: &[&str] = &[
    "SLUM_API",
    "SLUM_TOKEN",
    "SLUM_TOKEN_FILE",
    "SLUM_CONFIG",
    "SLUM_DATABASE",
    "SLUM_LISTEN",
    "SLUM_API_LISTEN",
    "RUST_LOG",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// The error line of a refused API token.
const REFUSED: &str = "error: the API refused the token (set --token or SLUM_TOKEN; a lost admin \
     token is replaced by `slum token reset --database PATH` on the database's machine)";

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

/// A `slum` command with a clean environment whose config home is `home`.
fn slum_command(home: &Path) -> Command {
    let mut cmd = Command::new(SLUM);
    for var in SCRUBBED {
        cmd.env_remove(var);
    }
    cmd.env("XDG_CONFIG_HOME", home.join("config"))
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

/// What one run of the CLI did.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn of(cmd: &mut Command) -> Out {
        let out = cmd.output().expect("run slum");
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        &self.stdout
    }

    /// Asserts exit code 1, nothing on stdout and exactly one `error: ` line on
    /// stderr; returns that line.
    #[track_caller]
    fn error_line(&self) -> &str {
        assert_eq!(self.code, Some(1), "expected exit code 1: {self:#?}");
        assert_eq!(self.stdout, "", "no output on failure: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:#?}");
        assert!(lines[0].starts_with("error: "), "{self:#?}");
        lines[0]
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {self:#?}"))
    }
}

/// `slum serve` running as a child process over a temp dir.
struct Serve {
    dir: tempfile::TempDir,
    api: String,
    router: SocketAddr,
    child: Child,
    /// The admin token `slum serve` wrote on first start.
    token: String,
}

impl Serve {
    /// With `--token-file <tmp>/token`.
    fn start() -> Serve {
        Serve::start_with(true)
    }

    /// With the token written to the default path (`$XDG_CONFIG_HOME/slum/token`).
    fn start_with_default_token_file() -> Serve {
        Serve::start_with(false)
    }

    fn start_with(explicit_token_file: bool) -> Serve {
        let dir = tempfile::tempdir().expect("temp dir");
        let (router, api) = (free_addr(), free_addr());
        let token_file = if explicit_token_file {
            dir.path().join("token")
        } else {
            dir.path().join("config/slum/token")
        };
        let mut cmd = slum_command(dir.path());
        cmd.arg("serve")
            .arg("--database")
            .arg(dir.path().join("slum.db"))
            .arg("--listen")
            .arg(router.to_string())
            .arg("--api-listen")
            .arg(api.to_string());
        if explicit_token_file {
            cmd.arg("--token-file").arg(&token_file);
        }
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log file");
        let child = cmd
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start slum serve");
        let mut serve = Serve {
            api: format!("http://{api}"),
            router,
            child,
            token: String::new(),
            dir,
        };
        serve.wait_healthy(api);
        serve.token = std::fs::read_to_string(&token_file)
            .unwrap_or_else(|e| panic!("slum serve wrote no token to {token_file:?}: {e}"))
            .trim()
            .to_owned();
        assert!(!serve.token.is_empty(), "empty token file");
        serve
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn wait_healthy(&mut self, api: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("slum serve exited ({status}):\n{}", self.log());
            }
            if http_get(api, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slum serve did not answer /health within 30s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `slum` pointed at this API (through `SLUM_API`) with no token given.
    fn cli(&self) -> Command {
        let mut cmd = slum_command(self.dir.path());
        cmd.env("SLUM_API", &self.api);
        cmd
    }

    /// `slum --token <admin token> ARGS...`.
    fn run(&self, args: &[&str]) -> Out {
        Out::of(self.cli().arg("--token").arg(&self.token).args(args))
    }

    /// `slum ARGS...` with no token flag or variable.
    fn run_without_token(&self, args: &[&str]) -> Out {
        Out::of(self.cli().args(args))
    }

    /// `slum tenant add DOMAIN --server SERVER --process api --instance prod`.
    fn add_tenant(&self, domain: &str, server: &str) -> Out {
        self.run(&[
            "tenant",
            "add",
            domain,
            "--server",
            server,
            "--process",
            "api",
            "--instance",
            "prod",
        ])
    }

    /// Adds a server on a loopback port nothing listens on.
    fn add_dead_server(&self, id: &str) {
        self.run(&[
            "server",
            "add",
            id,
            "--url",
            "http://127.0.0.1:9",
            "--capacity-mb",
            "1024",
        ])
        .ok();
    }

    /// Adds a real tenement server with its token (from a file) and domain.
    fn add_real_server(&self, server: &slum::local_fleet::LocalServer, capacity_mb: &str) {
        let token_file = server.token_file();
        self.run(&[
            "server",
            "add",
            &server.name,
            "--url",
            &server.url(),
            "--capacity-mb",
            capacity_mb,
            "--ten-token-file",
            &token_file.to_string_lossy(),
            "--domain",
            &server.domain,
        ])
        .ok();
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.terminate().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A plain HTTP/1.1 GET; the whole answer, or None when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    http_get_host(addr, path, "localhost")
}

fn http_get_host(addr: SocketAddr, path: &str, host: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// The row of a table whose first cell is `key`, split into cells.
#[track_caller]
fn row<'a>(table: &'a str, key: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&key))
        .unwrap_or_else(|| panic!("no row {key} in:\n{table}"))
}

#[test]
fn server_add_list_show_update_remove() {
    let slum = Serve::start();
    let added = slum.run(&[
        "server",
        "add",
        "east",
        "--url",
        "http://127.0.0.1:9",
        "--region",
        "us-east",
        "--capacity-mb",
        "1024",
        "--ten-token",
        "tenement-secret",
        "--domain",
        "east.example.com",
    ]);
    let out = added.ok();
    assert!(out.starts_with("added server east\n"), "{out}");
    assert!(!out.contains("tenement-secret"), "token printed: {out}");
    slum.add_dead_server("west");

    let list = slum.run(&["server", "list"]);
    let list = list.ok();
    let header = list.lines().next().expect("header");
    assert!(header.starts_with("ID"), "{list}");
    let east = row(list, "east");
    assert_eq!(
        &east[..3],
        ["east", "http://127.0.0.1:9", "us-east"],
        "{list}"
    );
    assert!(matches!(east[3], "unknown" | "offline"), "status: {list}");
    assert_eq!(
        &east[4..],
        ["0", "MB", "1024", "MB", "1024", "MB", "never"],
        "used, capacity, free, last seen: {list}"
    );
    assert_eq!(row(list, "west")[2], "-", "no region: {list}");
    // Aligned: every row's URL starts where the header's does.
    let url_col = header.find("URL").expect("URL column");
    for line in list.lines().skip(1) {
        assert_eq!(&line[url_col..url_col + 7], "http://", "{list}");
    }

    let show = slum.run(&["server", "show", "east"]);
    let show = show.ok();
    for line in [
        "id:         east",
        "region:     us-east",
        "domain:     east.example.com",
        "capacity:   0 MB used of 1024 MB (1024 MB free)",
        "tenants:    0",
        "instances:  0",
    ] {
        assert!(show.contains(line), "{line:?} missing in:\n{show}");
    }
    assert!(show.contains("reachable:  no: "), "{show}");

    let updated = slum.run(&[
        "server",
        "update",
        "east",
        "--capacity-mb",
        "2048",
        "--status",
        "draining",
    ]);
    assert!(
        updated.ok().starts_with("updated server east\n"),
        "{updated:#?}"
    );
    let list = slum.run(&["server", "list"]);
    let east = row(list.ok(), "east");
    assert_eq!((east[3], east[6]), ("draining", "2048"), "{east:?}");

    let removed = slum.run(&["server", "remove", "west"]);
    assert_eq!(removed.ok().trim(), "removed server west");
    let list = slum.run(&["server", "list"]);
    assert!(!list.ok().contains("west"), "{list:#?}");
    let gone = slum.run(&["server", "show", "west"]);
    assert_eq!(gone.error_line(), "error: server 'west' not found");
}

#[test]
fn tenant_add_list_show_move_remove() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    slum.add_dead_server("west");
    let added = slum.add_tenant("Customer-1.Example.com", "east");
    assert!(
        added
            .ok()
            .starts_with("added tenant customer-1.example.com\n"),
        "{added:#?}"
    );
    slum.run(&[
        "tenant",
        "add",
        "shop.example.org",
        "--server",
        "west",
        "--process",
        "web",
        "--instance",
        "prod",
        "--name",
        "customer-1",
    ])
    .ok();

    let list = slum.run(&["tenant", "list"]);
    let list = list.ok();
    assert!(list.starts_with("DOMAIN"), "{list}");
    assert_eq!(
        row(list, "customer-1.example.com"),
        [
            "customer-1.example.com",
            "customer-1",
            "east",
            "api",
            "prod"
        ]
    );
    assert_eq!(
        row(list, "shop.example.org"),
        ["shop.example.org", "customer-1", "west", "web", "prod"]
    );
    let on_west = slum.run(&["tenant", "list", "--server", "west"]);
    let on_west = on_west.ok();
    assert!(on_west.contains("shop.example.org"), "{on_west}");
    assert!(!on_west.contains("customer-1.example.com"), "{on_west}");

    let show = slum.run(&["tenant", "show", "customer-1.example.com"]);
    let show = show.ok();
    assert!(show.contains("server:     east"), "{show}");
    assert!(show.contains("routes to:  customer-1:prod"), "{show}");
    assert!(show.contains("failover:   none"), "{show}");
    let updated = slum.run(&[
        "tenant",
        "update",
        "customer-1.example.com",
        "--failover",
        "respawn",
    ]);
    assert!(updated.ok().contains("failover:   respawn"), "{updated:#?}");
    let json = slum
        .run(&["--json", "tenant", "show", "customer-1.example.com"])
        .json();
    assert_eq!(json["failover"], "respawn");

    // No instance runs yet, so the move only changes the home server.
    let moved = slum.run(&["tenant", "move", "customer-1.example.com", "--to", "west"]);
    assert_eq!(
        moved.ok().trim(),
        "moved customer-1.example.com to server west"
    );
    let on_west = slum.run(&["tenant", "list", "--server", "west"]);
    assert!(
        on_west.ok().contains("customer-1.example.com"),
        "{on_west:#?}"
    );
    // Once more to the same server: said, not claimed as a move.
    let again = slum.run(&["tenant", "move", "customer-1.example.com", "--to", "west"]);
    assert_eq!(
        again.ok().trim(),
        "customer-1.example.com is on server west already: nothing moved"
    );
    let json = slum
        .run(&[
            "--json",
            "tenant",
            "move",
            "customer-1.example.com",
            "--to",
            "west",
        ])
        .json();
    assert_eq!(
        (&json["server_id"], &json["moved"]),
        (&"west".into(), &false.into())
    );

    let removed = slum.run(&["tenant", "remove", "customer-1.example.com"]);
    assert_eq!(removed.ok().trim(), "removed tenant customer-1.example.com");
    let gone = slum.run(&["tenant", "show", "customer-1.example.com"]);
    assert_eq!(
        gone.error_line(),
        "error: tenant 'customer-1.example.com' not found"
    );
}

#[test]
fn top_and_tenant_show_give_the_routers_figures() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    slum.add_tenant("busy.example.com", "east").ok();
    // Its server is unreachable: every answer is the router's own 5xx.
    for _ in 0..3 {
        let answer = http_get_host(slum.router, "/", "busy.example.com").expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 5"), "{answer}");
    }
    let top = slum.run(&["top", "--once"]);
    let top = top.ok();
    assert!(top.starts_with("last "), "{top}");
    assert!(top.contains("TENANT"), "{top}");
    assert_eq!(row(top, "busy")[2], "100%", "{top}");
    let json = slum.run(&["--json", "top", "--limit", "1"]).json();
    assert_eq!(json["tenants"][0]["tenant"], "busy", "{json}");
    assert_eq!(json["tenants"][0]["requests"], 3, "{json}");
    assert_eq!(json["total"]["errors"], 3, "{json}");

    let show = slum.run(&["tenant", "show", "busy.example.com"]);
    let show = show.ok();
    assert!(
        show.lines()
            .any(|l| l.starts_with("traffic:") && l.contains("100% errors")),
        "{show}"
    );
    let json = slum
        .run(&["--json", "tenant", "show", "busy.example.com"])
        .json();
    assert_eq!(json["domain"], "busy.example.com", "{json}");
    assert_eq!(json["traffic"]["requests"], 3, "{json}");
}

#[test]
fn api_errors_are_one_line_naming_what_is_wrong() {
    let slum = Serve::start();
    slum.add_dead_server("east");

    let unknown = slum.add_tenant("c1.example.com", "nowhere");
    assert_eq!(unknown.error_line(), "error: server 'nowhere' not found");

    let negative = slum.run(&[
        "server",
        "add",
        "north",
        "--url",
        "http://127.0.0.1:9",
        "--capacity-mb",
        "-1",
    ]);
    let line = negative.error_line();
    assert!(line.contains("capacity_mb"), "field not named: {line}");

    let bad_url = slum.run(&["server", "update", "east", "--url", "ftp://east"]);
    let line = bad_url.error_line();
    assert!(line.contains("url") && line.contains("ftp"), "{line}");

    let twice = slum.run(&[
        "server",
        "add",
        "east",
        "--url",
        "http://127.0.0.1:9",
        "--capacity-mb",
        "1",
    ]);
    assert_eq!(twice.error_line(), "error: server 'east' already exists");

    slum.add_tenant("c1.example.com", "east").ok();
    let busy = slum.run(&["server", "remove", "east"]);
    let line = busy.error_line();
    assert!(line.contains("east") && line.contains("1 tenant"), "{line}");

    // A message quoting what it was given shows its control characters
    // escaped, on one line.
    let escaped = slum.run(&["server", "show", "e\u{1b}[31m\u{7}x"]);
    assert_eq!(
        escaped.error_line(),
        "error: server 'e\\u{1b}[31m\\u{7}x' not found"
    );

    let no_instance = slum.run(&["stop", "c1:prod"]);
    assert_eq!(
        no_instance.error_line(),
        "error: instance 'c1:prod' not found"
    );

    // Nothing was changed by the failures.
    let list = slum.run(&["--json", "server", "list"]).json();
    let east = &list.as_array().expect("array")[0];
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(east["url"], "http://127.0.0.1:9");
}

#[test]
fn a_default_tenant_name_of_another_customer_asks_for_name() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    slum.add_tenant("a.example.com", "east").ok();
    let refused = slum.add_tenant("a.other-customer.net", "east");
    let line = refused.error_line();
    assert!(
        line.starts_with("error: invalid tenant.name: 'a'"),
        "{line}"
    );
    assert!(line.contains("--name"), "{line}");
    let list = slum.run(&["tenant", "list"]);
    assert!(!list.ok().contains("other-customer"), "{list:#?}");
    slum.run(&[
        "tenant",
        "add",
        "a.other-customer.net",
        "--server",
        "east",
        "--process",
        "api",
        "--instance",
        "prod",
        "--name",
        "other-a",
    ])
    .ok();
}

#[test]
fn a_wrong_or_missing_token_is_refused_in_one_line() {
    let slum = Serve::start();
    let wrong = Out::of(slum.cli().args(["--token", "slum_wrong", "server", "list"]));
    assert_eq!(wrong.error_line(), REFUSED);
    let wrong_env = Out::of(slum.cli().env("SLUM_TOKEN", "slum_wrong").args(["status"]));
    assert_eq!(wrong_env.error_line(), REFUSED);
    // This serve wrote its token elsewhere, so the default file does not exist.
    let missing = slum.run_without_token(&["server", "list"]);
    let line = missing.error_line();
    assert!(line.starts_with("error: no API token"), "{line}");
    assert!(line.contains("config/slum/token"), "{line}");
    // SLUM_TOKEN works like --token.
    let env = Out::of(
        slum.cli()
            .env("SLUM_TOKEN", &slum.token)
            .args(["server", "list"]),
    );
    env.ok();
}

#[test]
fn an_unreachable_api_asks_whether_slum_serve_runs() {
    let home = tempfile::tempdir().expect("temp dir");
    let nobody = free_addr();
    let out = Out::of(slum_command(home.path()).args([
        "--api",
        &format!("http://{nobody}"),
        "--token",
        "x",
        "server",
        "list",
    ]));
    let line = out.error_line();
    assert!(
        line.starts_with(&format!(
            "error: cannot reach the slum API at http://{nobody}: "
        )),
        "{line}"
    );
    assert!(line.ends_with("(is `slum serve` running?)"), "{line}");
    assert!(line.to_lowercase().contains("refused"), "no reason: {line}");
}

/// Token names are labels: a second token of a name is refused, naming it.
#[test]
fn a_token_name_is_taken_once() {
    let slum = Serve::start();
    slum.run(&["token", "create", "ci"]).ok();
    let again = slum.run(&["token", "create", "ci"]);
    assert_eq!(
        again.error_line(),
        "error: token 'ci' already exists: token names are unique labels: choose another, \
         or revoke that one first (slum token list)"
    );
}

/// The CLI pointed at the router's port (a mistake of one digit) says so,
/// and where the API is.
#[test]
fn the_cli_pointed_at_the_router_says_it_is_not_the_api() {
    let slum = Serve::start();
    let router = format!("http://{}", slum.router);
    let out = Out::of(
        slum.cli()
            .args(["--api", &router, "--token", &slum.token, "status"]),
    );
    assert_eq!(
        out.error_line(),
        format!(
            "error: {router} is slum serve's router (its public listener), not its management \
             API: point --api or SLUM_API at the API's listener (slum serve --api-listen, \
             127.0.0.1:9090 by default)"
        )
    );
}

/// Completions and the man page are made from the command line's own
/// definition, without an API.
#[test]
fn completions_and_the_man_page_are_generated_from_the_cli() {
    let home = tempfile::tempdir().expect("temp dir");
    for (shell, mark) in [
        ("bash", "_slum()"),
        ("zsh", "#compdef slum"),
        ("fish", "complete -c slum"),
    ] {
        let out = Out::of(slum_command(home.path()).args(["completions", shell]));
        let script = out.ok();
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(
            script.contains("cordon"),
            "{shell}: no subcommand: {script}"
        );
        assert!(
            script.contains("ten-token-file"),
            "{shell}: no flag: {script}"
        );
    }
    let out = Out::of(slum_command(home.path()).arg("man"));
    let page = out.ok();
    assert!(page.contains(".TH slum 1"), "{page}");
    assert!(page.contains("completions"), "{page}");
    let pages = home.path().join("man1");
    std::fs::create_dir(&pages).expect("man1");
    Out::of(slum_command(home.path()).args(["man", "--dir"]).arg(&pages)).ok();
    for name in [
        "slum.1",
        "slum-serve.1",
        "slum-server-cordon.1",
        "slum-tenant-remove.1",
    ] {
        let page =
            std::fs::read_to_string(pages.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(page.contains(".TH slum"), "{name}: {page}");
    }
    let serve = std::fs::read_to_string(pages.join("slum-serve.1")).expect("serve's page");
    assert!(serve.contains("default: 0.0.0.0:8080"), "{serve}");
    let refused = Out::of(slum_command(home.path()).args(["completions", "cmd.exe"]));
    assert_eq!(refused.code, Some(2), "{refused:#?}");
}

/// contrib/slum.service runs `slum serve` as a user of its own with no
/// writable home, its state (database and first token, as contrib/slum.toml
/// places them) in its StateDirectory; its command line is one `slum`
/// accepts, and systemd itself finds nothing wrong with it when it is here.
#[test]
fn the_systemd_unit_runs_slum_as_its_own_user_with_its_state_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("contrib/slum.service")).expect("the unit");
    let setting = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "slum"),
        ("WorkingDirectory", "/var/lib/slum"),
        ("ProtectHome", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
    ] {
        assert_eq!(setting(key), [want], "{key}");
    }
    let exec = setting("ExecStart");
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/slum");
    let mut argv = vec!["slum"];
    argv.extend(&words[1..]);
    slum::cli::command()
        .try_get_matches_from(argv)
        .expect("the unit's command line parses");
    let config = std::fs::read_to_string(root.join("contrib/slum.toml")).expect("the example");
    for line in [
        "database = \"/var/lib/slum/",
        "token_file = \"/var/lib/slum/",
    ] {
        assert!(
            config.lines().any(|l| l.starts_with(line)),
            "contrib/slum.toml keeps its state in the StateDirectory: {line}"
        );
    }
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if analyze.is_ok_and(|o| o.status.success()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let copy = dir.path().join("slum.service");
        std::fs::write(&copy, unit.replace("/usr/local/bin/slum", SLUM)).expect("copy");
        let out = Out::of(Command::new("systemd-analyze").arg("verify").arg(&copy));
        assert_eq!(out.code, Some(0), "{out:#?}");
        assert_eq!(out.stderr, "", "{out:#?}");
    }
}

#[test]
fn usage_errors_exit_with_2() {
    let home = tempfile::tempdir().expect("temp dir");
    for args in [
        &["server", "add", "east", "--capacity-mb", "1"][..],
        &["server", "update", "east"],
        &["server", "update", "east", "--status", "asleep"],
        &["stop", "no-colon"],
        &["frobnicate"],
    ] {
        let out = Out::of(slum_command(home.path()).args(args));
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        assert!(out.stderr.contains("error:"), "{args:?}: {out:#?}");
    }
}

#[test]
fn json_output_is_the_apis_json() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    slum.add_tenant("c1.example.com", "east").ok();

    let servers = slum.run(&["server", "list", "--json"]).json();
    assert_eq!(servers[0]["id"], "east");
    assert_eq!(servers[0]["capacity_mb"], 1024);
    assert!(servers[0].get("token").is_none(), "{servers}");

    let show = slum.run(&["--json", "server", "show", "east"]).json();
    assert_eq!(show["server"]["id"], "east");
    assert_eq!(show["stats"]["tenants"], 1);
    assert_eq!(show["stats"]["reachable"], false);

    let tenants = slum.run(&["--json", "tenant", "list"]).json();
    assert_eq!(tenants[0]["domain"], "c1.example.com");
    assert_eq!(tenants[0]["name"], "c1");
    let tenant = slum
        .run(&["--json", "tenant", "show", "c1.example.com"])
        .json();
    assert_eq!(tenant["server_id"], "east");

    let status = slum.run(&["--json", "status"]).json();
    assert_eq!(status["tenants"], 1);
    assert_eq!(status["servers"][0]["server_id"], "east");

    let ps = slum.run(&["--json", "ps"]).json();
    assert_eq!(ps, Value::Array(vec![]));

    let created = slum
        .run(&[
            "--json",
            "server",
            "add",
            "west",
            "--url",
            "http://127.0.0.1:9",
            "--capacity-mb",
            "1",
        ])
        .json();
    assert_eq!(created["id"], "west");
    // Every command prints a document, those the API answers with 204 too.
    let removed = slum.run(&["--json", "server", "remove", "west"]).json();
    assert_eq!(removed, serde_json::json!({"removed": "west"}));
    let removed = slum
        .run(&["--json", "tenant", "remove", "c1.example.com"])
        .json();
    assert_eq!(
        removed,
        serde_json::json!({"removed": "c1.example.com", "instance": null})
    );
    let created = slum.run(&["--json", "token", "create", "ci"]).json();
    let id = created["token"]["id"]
        .as_str()
        .expect("token id")
        .to_owned();
    let revoked = slum.run(&["--json", "token", "revoke", &id]).json();
    assert_eq!(revoked, serde_json::json!({"revoked": id}));
}

#[test]
fn the_default_token_file_is_used_without_a_token() {
    let slum = Serve::start_with_default_token_file();
    assert!(
        slum.dir.path().join("config/slum/token").is_file(),
        "slum serve did not write $XDG_CONFIG_HOME/slum/token"
    );
    let out = slum.run_without_token(&["server", "list"]);
    assert!(out.ok().starts_with("ID"), "{out:#?}");
    // A token on the command line wins over the file.
    let wrong = Out::of(slum.cli().args(["--token", "slum_wrong", "server", "list"]));
    wrong.error_line();
    // And the file is read as written: an edited one is refused.
    std::fs::write(slum.dir.path().join("config/slum/token"), "slum_edited\n").expect("edit");
    let edited = slum.run_without_token(&["server", "list"]);
    assert_eq!(edited.error_line(), REFUSED);
}

/// `slum serve`'s log written to a file (as systemd or `2> slum.log` do)
/// carries no colour escapes.
#[test]
fn a_log_written_to_a_file_has_no_colour_escapes() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    let log = slum.log();
    assert!(log.contains("INFO"), "nothing logged: {log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in the log: {log:?}");
}

/// The database (tenement admin tokens in clear), its -wal and -shm files and
/// the admin token file are the owner's alone once `slum serve` runs.
#[test]
fn serve_keeps_the_database_and_token_files_private() {
    use std::os::unix::fs::PermissionsExt;
    let slum = Serve::start();
    slum.add_dead_server("east");
    for name in ["slum.db", "slum.db-wal", "slum.db-shm", "token"] {
        let meta =
            std::fs::metadata(slum.dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
    }
}

/// Runs a `slum serve` that is expected to refuse to start: its output once it
/// exited, or a failure naming what it did when it is still running after 30 s.
fn serve_refusing(cmd: &mut Command) -> Out {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start slum serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            return Out {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "slum serve started when it should have refused:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `slum serve ... --database PATH` on free ports, in the environment of `home`.
fn serve_command(home: &Path, database: &Path) -> Command {
    let mut cmd = slum_command(home);
    cmd.arg("serve")
        .arg("--database")
        .arg(database)
        .arg("--listen")
        .arg(free_addr().to_string())
        .arg("--api-listen")
        .arg(free_addr().to_string());
    cmd
}

/// The API tokens recorded in a fleet database, read straight from it.
fn recorded_tokens(database: &Path) -> Vec<slum::ApiToken> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = slum::SlumDb::init(database).await.expect("open");
        db.list_api_tokens().await.expect("tokens")
    })
}

/// A second fleet on this machine must not take the first one's token file
/// (the CLI's default): its operator would be locked out.
#[test]
fn a_second_serve_with_another_database_keeps_the_first_ones_token_file() {
    let first = Serve::start_with_default_token_file();
    let token_file = first.dir.path().join("config/slum/token");
    let other_db = first.dir.path().join("other.db");
    let refused = serve_refusing(&mut serve_command(first.dir.path(), &other_db));
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    let line = refused.stderr.lines().last().unwrap_or_default();
    assert!(line.starts_with("error: "), "{refused:#?}");
    assert!(line.contains(&token_file.display().to_string()), "{line}");
    assert!(line.contains("--token-file"), "{line}");
    assert_eq!(
        std::fs::read_to_string(&token_file)
            .expect("token file")
            .trim(),
        first.token,
        "the first fleet's token file was overwritten"
    );
    first.run_without_token(&["server", "list"]).ok();
    assert!(
        recorded_tokens(&other_db).is_empty(),
        "a token nobody holds"
    );
}

/// A token file that cannot be written fails `slum serve`, naming the path,
/// before any token is recorded: no valid token exists that nobody holds.
#[test]
fn an_unwritable_token_path_fails_naming_it_and_records_no_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A file where a directory should be: unwritable even for root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").expect("blocker");
    let database = dir.path().join("slum.db");
    let mut explicit = serve_command(dir.path(), &database);
    explicit.arg("--token-file").arg(blocker.join("token"));
    let refused = serve_refusing(&mut explicit);
    let line = refused.error_line();
    assert!(line.contains(&blocker.display().to_string()), "{line}");
    assert!(line.contains("--token-file"), "{line}");
    assert!(
        recorded_tokens(&database).is_empty(),
        "a token nobody holds"
    );

    // A home that cannot hold ~/.config/slum/token (as `nobody`'s).
    let mut homeless = serve_command(dir.path(), &database);
    homeless.env_remove("XDG_CONFIG_HOME").env("HOME", &blocker);
    let refused = serve_refusing(&mut homeless);
    let line = refused.error_line();
    assert!(
        line.contains(&blocker.join(".config/slum").display().to_string()),
        "{line}"
    );
    assert!(
        recorded_tokens(&database).is_empty(),
        "a token nobody holds"
    );
}

/// `slum token reset` opens the database itself: a lost admin token is
/// replaced without the API, other tokens are kept unless --revoke-all.
#[test]
fn token_reset_gives_a_working_admin_token_without_the_api() {
    let slum = Serve::start();
    let database = slum.dir.path().join("slum.db");
    let ci = slum.run(&["token", "create", "ci"]).ok().trim().to_owned();
    let reset = Out::of(
        slum_command(slum.dir.path())
            .args(["token", "reset", "--database"])
            .arg(&database),
    );
    let secret = reset.ok().trim().to_owned();
    assert!(secret.starts_with("slum_"), "{reset:#?}");
    assert_eq!(
        reset.stdout.lines().count(),
        1,
        "only the secret: {reset:#?}"
    );
    assert!(
        reset.stderr.contains("(bootstrap); kept: ") && reset.stderr.contains("(ci)"),
        "says what it revoked and kept: {reset:#?}"
    );
    Out::of(slum.cli().args(["--token", &secret, "server", "list"])).ok();
    let old = slum.run(&["server", "list"]);
    assert_eq!(old.error_line(), REFUSED, "the lost token is revoked");
    Out::of(slum.cli().args(["--token", &ci, "status"])).ok();

    // Into the CLI's default token file, revoking every other token.
    let default_file = slum.dir.path().join("config/slum/token");
    let reset = Out::of(
        slum_command(slum.dir.path())
            .args(["token", "reset", "--revoke-all", "--token-file"])
            .arg(&default_file)
            .arg("--database")
            .arg(&database),
    );
    assert_eq!(reset.ok(), "", "the secret went to the file: {reset:#?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&default_file)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    slum.run_without_token(&["status"]).ok();
    for gone in [&ci, &secret] {
        let refused = Out::of(slum.cli().args(["--token", gone, "status"]));
        assert_eq!(refused.error_line(), REFUSED);
    }

    let missing = slum.dir.path().join("missing.db");
    let out = Out::of(
        slum_command(slum.dir.path())
            .args(["token", "reset", "--database"])
            .arg(&missing),
    );
    assert!(
        out.error_line().starts_with(&format!(
            "error: no fleet database at {}",
            missing.display()
        )),
        "{out:#?}"
    );
    assert!(!missing.exists(), "no empty fleet was made");
}

#[test]
fn tokens_are_created_shown_once_listed_and_revoked() {
    let slum = Serve::start();
    let created = slum.run(&["token", "create", "ci"]);
    let secret = created.ok().trim().to_owned();
    assert!(secret.starts_with("slum_"), "{created:#?}");
    assert_eq!(created.ok().lines().count(), 1, "only the secret on stdout");
    assert!(
        created.stderr.contains("cannot be shown again"),
        "{created:#?}"
    );

    let list = slum.run(&["token", "list"]);
    let list = list.ok();
    assert!(!list.contains(&secret), "secret listed: {list}");
    let ci = list
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(1) == Some(&"ci"))
        .unwrap_or_else(|| panic!("no ci token in {list}"));
    let id = ci[0].to_owned();

    let with_new = Out::of(slum.cli().args(["--token", &secret, "status"]));
    with_new.ok();
    let revoked = slum.run(&["token", "revoke", &id]);
    assert_eq!(revoked.ok().trim(), format!("revoked token {id}"));
    let after = Out::of(slum.cli().args(["--token", &secret, "status"]));
    assert_eq!(after.error_line(), REFUSED);
}

#[test]
fn status_ps_and_reconcile_report_an_unreachable_server() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    let status = slum.run(&["status"]);
    let status = status.ok();
    let east = row(status, "east");
    assert!(matches!(east[1], "unknown" | "offline"), "{status}");
    assert_eq!(east.last(), Some(&"no"), "reachable: {status}");
    assert!(
        status.contains("1 server(s), 0 tenant(s), 0 instance(s)"),
        "{status}"
    );

    let ps = slum.run(&["ps"]);
    assert_eq!(ps.ok().trim(), "no instances", "{ps:#?}");
    let ps = slum.run(&["ps", "--server", "east"]);
    assert_eq!(ps.ok().trim(), "no instances on server east", "{ps:#?}");

    let reconcile = slum.run(&["reconcile"]);
    let reconcile = reconcile.ok();
    assert!(reconcile.contains("unreachable:\n  east: "), "{reconcile}");
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let mut slum = Serve::start();
    let status = slum
        .terminate()
        .expect("slum serve did not stop within 15s");
    assert!(status.success(), "{status}: {}", slum.log());
    assert!(slum.log().contains("slum serve stopped"), "{}", slum.log());
}

/// spawn, ps, status and stop against a real tenement server, with a request
/// through `slum serve`'s router in between.
#[tokio::test(flavor = "multi_thread")]
async fn spawn_ps_stop_on_a_real_tenement_server() {
    let Some(mut fleet) = common::fleet(1).await else {
        return;
    };
    let s1 = fleet.server("s1").expect("s1");
    let slum = Serve::start();
    // The server's own token file, which the demo hands to `server add` too:
    // the owner's alone, in a directory that is the owner's alone.
    let token_file: PathBuf = s1.token_file();
    for (path, want) in [(&token_file, 0o600), (&s1.dir, 0o700)] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{path:?}: {e}"))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, want, "{path:?} is {mode:o}");
    }
    let url = s1.url();
    let token_file = token_file.to_string_lossy().into_owned();
    // Without --domain slum would route by the url's host, which s1's
    // tenement would answer with its own dashboard: refused, saying so.
    let refused = slum.run(&[
        "server",
        "add",
        "s1",
        "--url",
        &url,
        "--capacity-mb",
        "1024",
        "--ten-token-file",
        &token_file,
    ]);
    let line = refused.error_line();
    assert!(
        line.contains(&format!("`ten serve --domain {}`", s1.ip)),
        "{line}"
    );
    assert!(line.contains("its own /health"), "{line}");
    assert_eq!(
        slum.run(&["--json", "server", "list"]).json(),
        Value::Array(vec![]),
        "nothing recorded"
    );
    slum.run(&[
        "server",
        "add",
        "s1",
        "--url",
        &url,
        "--capacity-mb",
        "1024",
        "--ten-token-file",
        &token_file,
        "--domain",
        &s1.domain,
    ])
    .ok();
    slum.add_tenant("alice.example.com", "s1").ok();

    let spawned = slum.run(&[
        "spawn",
        "alice",
        "--process",
        "api",
        "--instance",
        "prod",
        "--server",
        "s1",
        "--memory-mb",
        "256",
    ]);
    assert_eq!(
        spawned.ok().trim(),
        "spawned alice:prod (api) on server s1: 256 MB reserved, running"
    );

    let ps = slum.run(&["ps"]);
    let alice = row(ps.ok(), "alice:prod");
    assert_eq!(
        &alice[..5],
        ["alice:prod", "alice.example.com", "api", "s1", "running"],
        "{ps:#?}"
    );
    assert_eq!(&alice[alice.len() - 2..], ["256", "MB"], "{ps:#?}");
    let ps_json = slum.run(&["--json", "ps"]).json();
    assert_eq!(ps_json[0]["state"], "running");
    assert_eq!(
        ps_json[0]["domains"],
        serde_json::json!(["alice.example.com"])
    );

    let status = slum.run(&["status"]);
    let s1_row = row(status.ok(), "s1");
    assert_eq!(s1_row.last(), Some(&"yes"), "reachable: {status:#?}");
    assert!(status.ok().contains("256 MB"), "{status:#?}");
    // LAST SEEN is the last check (every second), not the last time it was
    // written to the database (every ten seconds).
    let deadline = Instant::now() + Duration::from_secs(10);
    while row(slum.run(&["status"]).ok(), "s1")[1] != "online" {
        assert!(Instant::now() < deadline, "s1 never online: {}", slum.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..8 {
        let status = slum.run(&["status"]);
        let s1_row = row(status.ok(), "s1");
        assert!(
            matches!(s1_row[2], "just" | "1s" | "2s"),
            "last seen {:?}: {status:#?}\n{}",
            &s1_row[2..4],
            slum.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The domain now routes through slum serve's router to the instance.
    let router = slum.router;
    let answer =
        tokio::task::spawn_blocking(move || http_get_host(router, "/", "alice.example.com"))
            .await
            .expect("join")
            .expect("router answers");
    assert!(
        answer.contains("tenant=alice process=api server=s1"),
        "{answer}"
    );

    let stopped = slum.run(&["stop", "alice:prod"]);
    assert_eq!(stopped.ok().trim(), "stopped alice:prod");
    let ps = slum.run(&["ps"]);
    assert!(!ps.ok().contains("alice:prod"), "{ps:#?}");

    // A stop that cannot reach its server is pending: a warning, not a failure.
    slum.run(&[
        "spawn",
        "bob",
        "--process",
        "api",
        "--instance",
        "prod",
        "--server",
        "s1",
    ])
    .ok();
    fleet.server_mut("s1").expect("s1").kill().expect("kill s1");
    let pending = slum.run(&["stop", "bob:prod"]);
    assert_eq!(pending.ok(), "", "{pending:#?}");
    assert!(
        pending
            .stderr
            .starts_with("warning: instance 'bob:prod' could not be stopped now"),
        "{pending:#?}"
    );
    assert_eq!(pending.stderr.lines().count(), 1, "{pending:#?}");
    let ps = slum.run(&["ps"]);
    let bob = row(ps.ok(), "bob:prod");
    assert_eq!(bob[4], "stopping", "a pending stop: {ps:#?}");
}

/// `tenant remove` says when the instance keeps running with its memory
/// reserved, and `--stop` stops it; a spawn no domain reaches is warned of.
#[tokio::test(flavor = "multi_thread")]
async fn tenant_remove_names_the_instance_left_running_and_stop_stops_it() {
    let Some(fleet) = common::fleet(1).await else {
        return;
    };
    let slum = Serve::start();
    slum.add_real_server(fleet.server("s1").expect("s1"), "1024");
    let spawn = |tenant: &str| {
        slum.run(&[
            "spawn",
            tenant,
            "--process",
            "api",
            "--instance",
            "prod",
            "--server",
            "s1",
        ])
    };
    slum.add_tenant("alice.example.com", "s1").ok();
    let routed = spawn("alice");
    routed.ok();
    assert_eq!(
        routed.stderr, "",
        "a routed tenant is no warning: {routed:#?}"
    );

    let removed = slum.run(&["tenant", "remove", "alice.example.com"]);
    assert_eq!(removed.ok().trim(), "removed tenant alice.example.com");
    assert!(
        removed.stderr.starts_with(
            "warning: instance alice:prod keeps running on server s1 with 128 MB reserved"
        ) && removed.stderr.contains("slum stop alice:prod"),
        "{removed:#?}"
    );
    let ps = slum.run(&["ps"]);
    assert_eq!(
        row(ps.ok(), "alice:prod")[1],
        "-",
        "no domain left: {ps:#?}"
    );

    slum.add_tenant("alice.example.com", "s1").ok();
    let stopped = slum
        .run(&["--json", "tenant", "remove", "alice.example.com", "--stop"])
        .json();
    assert_eq!(stopped["removed"], "alice.example.com", "{stopped}");
    assert_eq!(stopped["instance"], "alice:prod", "{stopped}");
    assert_eq!(stopped["stopped"], true, "{stopped}");
    let ps = slum.run(&["ps"]);
    assert_eq!(ps.ok().trim(), "no instances", "{ps:#?}");

    // A typo of the tenant's name starts an instance nothing reaches.
    slum.add_tenant("bob.example.com", "s1").ok();
    let typo = spawn("bobb");
    typo.ok();
    assert!(
        typo.stderr
            .starts_with("warning: no domain routes to tenant 'bobb' (process api)")
            && typo.stderr.contains("slum stop bobb:prod"),
        "{typo:#?}"
    );
    let stopped = slum.run(&["--json", "stop", "bobb:prod"]).json();
    assert_eq!(
        stopped,
        serde_json::json!({"key": "bobb:prod", "stopped": true})
    );
}

#[test]
fn status_lists_tenants_whose_servers_are_down() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    slum.add_tenant("acme.example.com", "east").ok();
    slum.run(&["server", "update", "east", "--status", "offline"])
        .ok();
    let status = slum.run(&["status"]);
    let status = status.ok();
    let east = row(status, "east");
    assert_eq!(&east[..3], ["east", "offline", "never"], "{status}");
    assert!(
        status.contains("down: 1 domain(s) whose servers are offline"),
        "{status}"
    );
    assert_eq!(
        row(status, "acme.example.com"),
        ["acme.example.com", "acme", "east"],
        "{status}"
    );
    let json = slum.run(&["--json", "status"]).json();
    assert_eq!(json["down_tenants"][0]["domain"], "acme.example.com");
    assert_eq!(
        json["down_tenants"][0]["servers"],
        serde_json::json!(["east"])
    );
}

/// `server cordon` keeps new instances off a server and shows it; `uncordon`
/// lifts it.
#[test]
fn a_cordoned_server_takes_no_placements_and_shows_it() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    let cordoned = slum.run(&["server", "cordon", "east"]);
    assert!(
        cordoned.ok().starts_with("server east is cordoned"),
        "{cordoned:#?}"
    );
    let list = slum.run(&["server", "list"]);
    assert!(
        row(list.ok(), "east")[3].ends_with(",cordoned"),
        "{list:#?}"
    );
    let status = slum.run(&["status"]);
    assert!(
        row(status.ok(), "east")[1].ends_with(",cordoned"),
        "{status:#?}"
    );
    let json = slum.run(&["--json", "server", "show", "east"]).json();
    assert_eq!(json["server"]["cordoned"], true, "{json}");
    assert_eq!(json["stats"]["cordoned"], true, "{json}");
    let refused = slum.run(&[
        "spawn",
        "acme",
        "--process",
        "api",
        "--instance",
        "prod",
        "--server",
        "east",
    ]);
    assert_eq!(
        refused.error_line(),
        "error: server 'east' is cordoned: it takes no new instances"
    );
    let lifted = slum.run(&["server", "uncordon", "east"]);
    assert!(
        lifted
            .ok()
            .starts_with("server east takes placements again"),
        "{lifted:#?}"
    );
    let json = slum.run(&["--json", "server", "show", "east"]).json();
    assert_eq!(json["server"]["cordoned"], false, "{json}");
    let log = slum.log();
    assert!(log.contains("server cordoned"), "{log}");
    assert!(log.contains("server uncordoned"), "{log}");
}

/// A healthy server set offline by hand comes back after its good checks
/// (it used to stay offline for good, silently); the change and the return
/// are logged with their causes. A cordon, by contrast, stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_set_offline_by_hand_comes_back_and_a_cordon_stays() {
    let Some(fleet) = common::fleet(1).await else {
        return;
    };
    let slum = Serve::start();
    slum.add_real_server(fleet.server("s1").expect("s1"), "1024");
    let state = |slum: &Serve| {
        let status = slum.run(&["status"]);
        row(status.ok(), "s1")[1].to_owned()
    };
    let until = |slum: &Serve, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while state(slum) != want {
            assert!(Instant::now() < deadline, "s1 never {want}: {}", slum.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    until(&slum, "online");
    let offline = slum.run(&["server", "update", "s1", "--status", "offline"]);
    assert!(offline.ok().contains("status:"), "{offline:#?}");
    assert!(
        offline.stderr.contains("health checks decide")
            && offline.stderr.contains("slum server cordon s1"),
        "{offline:#?}"
    );
    until(&slum, "online");
    let log = slum.log();
    assert!(log.contains("server status set by an operator"), "{log}");
    assert!(log.contains("cause=\"health check\""), "{log}");

    slum.run(&["server", "cordon", "s1"]).ok();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state(&slum), "online,cordoned", "{}", slum.log());
}

/// `tenant add --auto`, `spawn --auto`, `server drain` (a failing one, then a
/// complete one) and `server undrain` against two real tenement servers.
#[tokio::test(flavor = "multi_thread")]
async fn auto_placement_drain_and_undrain_on_real_servers() {
    let Some(fleet) = common::fleet(2).await else {
        return;
    };
    let s1 = fleet.server("s1").expect("s1");
    let s2 = fleet.server("s2").expect("s2");
    let slum = Serve::start();
    slum.add_real_server(s1, "1024");
    slum.add_real_server(s2, "512");

    // The most free server takes each new tenant: s1 (1024, 896, 768 free)
    // over s2 (512).
    for name in ["alice", "bob", "carol"] {
        let added = slum.run(&[
            "tenant",
            "add",
            &format!("{name}.example.com"),
            "--auto",
            "--process",
            "api",
            "--instance",
            "prod",
        ]);
        assert!(added.ok().contains("server:     s1"), "{added:#?}");
    }
    // Carol's backup cannot share her primary's server.
    let backup = slum.run(&[
        "spawn",
        "carol",
        "--process",
        "api",
        "--instance",
        "backup",
        "--auto",
    ]);
    assert_eq!(
        backup.ok().trim(),
        "spawned carol:backup (api) on server s2: 128 MB reserved, running"
    );
    slum.add_tenant("dave.example.com", "s1").ok();
    // No room anywhere in a region that has no server: one clear line.
    let refused = slum.run(&[
        "tenant",
        "add",
        "erin.example.com",
        "--auto",
        "--region",
        "mars",
        "--process",
        "api",
        "--instance",
        "prod",
    ]);
    assert_eq!(
        refused.error_line(),
        "error: no server can take erin:prod (api, 128 MB) in region 'mars': \
         s1 has no region, not 'mars'; s2 has no region, not 'mars'"
    );

    // carol:prod has nowhere to go (s2 holds her backup): the drain moves the
    // others, says why carol stayed, and fails.
    let first = slum.run(&["server", "drain", "s1"]);
    assert_eq!(first.code, Some(1), "{first:#?}");
    let summary = &first.stdout;
    assert!(
        summary.starts_with("drained server s1: moved 2, re-homed "),
        "{first:#?}"
    );
    assert!(summary.contains(", failed 1\n"), "{first:#?}");
    assert!(summary.contains("\n  alice:prod -> s2"), "{first:#?}");
    assert!(summary.contains("\n  bob:prod -> s2"), "{first:#?}");
    assert!(summary.contains("\n  dave.example.com -> s2"), "{first:#?}");
    assert!(
        summary.contains(
            "failed:\n  carol:prod: no server can take carol:prod (api, 128 MB): \
             s1 is draining; s2 already runs carol:backup (api)"
        ),
        "{first:#?}"
    );
    assert_eq!(
        first.stderr.lines().collect::<Vec<_>>(),
        [
            "error: 1 instance(s) or domain(s) could not be moved off server s1; \
          they stay there (run the drain again to retry)"
        ],
        "no progress bar without a terminal: {first:#?}"
    );
    let status = slum.run(&["status"]);
    assert_eq!(row(status.ok(), "s1")[1], "draining", "{status:#?}");
    let ps = slum.run(&["ps", "--server", "s1"]);
    assert_eq!(row(ps.ok(), "carol:prod")[3], "s1", "{ps:#?}");

    // Without the backup in the way, a second drain empties the server.
    slum.run(&["stop", "carol:backup"]).ok();
    let second = slum.run(&["--json", "server", "drain", "s1"]).json();
    assert_eq!(second["done"], true, "{second}");
    assert_eq!(second["failed"], serde_json::json!([]), "{second}");
    assert_eq!(
        second["moved"],
        serde_json::json!(["carol:prod -> s2"]),
        "{second}"
    );
    let ps = slum.run(&["--json", "ps", "--server", "s1"]).json();
    assert_eq!(ps, Value::Array(vec![]), "no instance left on s1");
    let ps = slum.run(&["ps", "--server", "s2"]);
    for key in ["alice:prod", "bob:prod", "carol:prod"] {
        assert_eq!(row(ps.ok(), key)[4], "running", "{ps:#?}");
    }
    // The moved tenants answer through the router from s2.
    let router = slum.router;
    let answer =
        tokio::task::spawn_blocking(move || http_get_host(router, "/", "carol.example.com"))
            .await
            .expect("join")
            .expect("router answers");
    assert!(
        answer.contains("tenant=carol process=api server=s2"),
        "{answer}"
    );

    let undrained = slum.run(&["server", "undrain", "s1"]);
    assert!(
        undrained
            .ok()
            .starts_with("server s1 takes placements again"),
        "{undrained:#?}"
    );
    let status = slum.run(&["status"]);
    assert_ne!(row(status.ok(), "s1")[1], "draining", "{status:#?}");
    let gone = slum.run(&["server", "drain", "nosuch"]);
    assert_eq!(gone.error_line(), "error: server 'nosuch' not found");
}

/// A drain of a dead server goes on while its failed checks turn it offline:
/// the command follows the drain's own progress, not the server's status,
/// and reports what the drain did.
#[tokio::test(flavor = "multi_thread")]
async fn a_drain_of_a_dead_server_is_reported_as_the_drain_ended() {
    let Some(mut fleet) = common::fleet(2).await else {
        return;
    };
    let slum = Serve::start();
    slum.add_real_server(fleet.server("s1").expect("s1"), "1024");
    slum.add_real_server(fleet.server("s2").expect("s2"), "1024");
    slum.add_tenant("alice.example.com", "s1").ok();
    slum.run(&[
        "spawn",
        "alice",
        "--process",
        "api",
        "--instance",
        "prod",
        "--server",
        "s1",
    ])
    .ok();
    fleet.server_mut("s1").expect("s1").kill().expect("kill s1");
    // The drain marks s1 draining; its failed checks turn it offline while
    // alice is still being moved (the old copy's stop waits for the grace).
    let drained = slum.run(&["server", "drain", "s1"]);
    let summary = drained.ok();
    assert!(
        summary.starts_with("drained server s1: moved 1, re-homed 0, failed 0"),
        "{drained:#?}"
    );
    assert!(summary.contains("alice:prod -> s2"), "{drained:#?}");
    assert_eq!(drained.stderr, "", "{drained:#?}");
    let status = slum.run(&["status"]);
    assert_eq!(row(status.ok(), "s1")[1], "offline", "{status:#?}");
}

/// `--limit` shows a page and says how to get the next; `--after` gives it;
/// `--all` walks every page; a bad limit is one line naming it.
#[test]
fn lists_show_a_page_and_say_how_to_get_the_next() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    for d in ["c", "a", "b"] {
        slum.add_tenant(&format!("{d}.example.com"), "east");
    }
    let first = slum.run(&["tenant", "list", "--limit", "2"]);
    let text = first.ok();
    assert!(text.contains("a.example.com") && text.contains("b.example.com"));
    assert!(!text.contains("c.example.com"), "{text}");
    assert!(
        first.stderr.contains("--after b.example.com") && first.stderr.contains("--all"),
        "{first:#?}"
    );
    let next = slum.run(&["tenant", "list", "--limit", "2", "--after", "b.example.com"]);
    assert!(next.ok().contains("c.example.com"), "{next:#?}");
    assert!(!next.ok().contains("a.example.com"));
    assert_eq!(next.stderr, "", "the last page says nothing more");
    let all = slum.run(&["--json", "tenant", "list", "--limit", "1", "--all"]);
    let domains: Vec<String> = all
        .json()
        .as_array()
        .expect("one array")
        .iter()
        .map(|t| t["domain"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(domains, ["a.example.com", "b.example.com", "c.example.com"]);
    assert_eq!(all.stderr, "");
    let servers = slum.run(&["server", "list", "--limit", "1"]);
    assert!(servers.ok().contains("east"));
    let bad = slum.run(&["tenant", "list", "--limit", "0"]);
    assert!(bad.error_line().contains("limit"), "{bad:#?}");
}

/// Writes a test certificate's chain and key into the serve's dir, returning
/// the two paths as arguments.
fn cert_files(slum: &Serve, stem: &str, cert: &common::certs::TestCert) -> (String, String) {
    let dir = slum.dir.path();
    let (c, k) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&c, &cert.cert_pem).expect("write the chain");
    std::fs::write(&k, &cert.key_pem).expect("write the key");
    (c.display().to_string(), k.display().to_string())
}

#[test]
fn certificates_are_added_listed_shown_and_removed_and_no_output_holds_a_key() {
    use common::certs::{self, assert_no_key};
    let slum = Serve::start();
    let shop = certs::with_ca(&["shop.example.com"]);
    let soon = certs::expiring_in(&["*.example.com"], 3);
    let (shop_crt, shop_key) = cert_files(&slum, "shop", &shop);
    let (soon_crt, soon_key) = cert_files(&slum, "soon", &soon);
    let mut outputs = Vec::new();

    let added = slum.run(&[
        "cert",
        "add",
        "shop.example.com",
        "--cert",
        &shop_crt,
        "--key",
        &shop_key,
    ]);
    let text = added.ok();
    assert!(
        text.starts_with("stored certificate shop.example.com\n"),
        "{text}"
    );
    assert!(
        text.contains("source:") && text.contains("uploaded"),
        "{text}"
    );
    outputs.push(format!("{added:?}"));
    let added = slum.run(&[
        "--json",
        "cert",
        "add",
        "*.example.com",
        "--cert",
        &soon_crt,
        "--key",
        &soon_key,
        "--redirect",
        "on",
    ]);
    assert_eq!(added.json()["redirect"], true, "{added:#?}");
    outputs.push(format!("{added:?}"));

    let list = slum.run(&["cert", "list"]);
    let table = list.ok();
    let header = table.lines().next().expect("header");
    assert!(
        header.starts_with("NAME") && header.contains("EXPIRES"),
        "{table}"
    );
    let shop_row = row(table, "shop.example.com");
    assert_eq!(&shop_row[1..3], ["uploaded", "issued"], "{table}");
    let soon_row = table
        .lines()
        .find(|l| l.starts_with("*.example.com"))
        .unwrap_or_else(|| panic!("no wildcard row in {table}"));
    assert!(
        soon_row.contains("(in 2d") || soon_row.contains("(in 3d"),
        "{table}"
    );
    outputs.push(format!("{list:?}"));
    let json = slum.run(&["--json", "cert", "list", "--all"]);
    let names: Vec<&str> = json
        .ok()
        .lines()
        .filter(|l| l.contains("\"name\""))
        .collect();
    assert_eq!(names.len(), 2, "{json:#?}");
    outputs.push(format!("{json:?}"));
    let show = slum.run(&["cert", "show", "*.example.com"]);
    assert!(show.ok().contains("redirect:"), "{show:#?}");
    assert!(show.ok().contains("on"), "{show:#?}");
    outputs.push(format!("{show:?}"));

    // slum status warns of the one that expires within 14 days.
    let status = slum.run(&["status"]);
    let text = status.ok();
    assert!(
        text.contains("warning: 1 certificate(s) expire within 14 days"),
        "{text}"
    );
    assert!(text.contains("*.example.com"), "{text}");
    assert!(!text.contains("shop.example.com"), "{text}");
    outputs.push(format!("{status:?}"));

    // A refused certificate: one line naming the field, never the key.
    let other = certs::self_signed(&["shop.example.com"]);
    let (_, other_key) = cert_files(&slum, "other", &other);
    let refused = slum.run(&[
        "cert",
        "add",
        "shop.example.com",
        "--cert",
        &shop_crt,
        "--key",
        &other_key,
    ]);
    assert!(
        refused.error_line().contains("certificate.key_pem"),
        "{refused:#?}"
    );
    outputs.push(format!("{refused:?}"));
    let missing = slum.run(&[
        "cert",
        "add",
        "shop.example.com",
        "--cert",
        &shop_crt,
        "--key",
        "/nonexistent.key",
    ]);
    assert!(
        missing
            .error_line()
            .contains("cannot read --key /nonexistent.key"),
        "{missing:#?}"
    );

    let removed = slum.run(&["cert", "remove", "shop.example.com"]);
    assert_eq!(removed.ok().trim(), "removed certificate shop.example.com");
    let gone = slum.run(&["cert", "show", "shop.example.com"]);
    assert_eq!(
        gone.error_line(),
        "error: certificate 'shop.example.com' not found"
    );
    for text in outputs {
        assert_no_key(&text, &shop.key_pem);
        assert_no_key(&text, &soon.key_pem);
        assert_no_key(&text, &other.key_pem);
    }
    assert_no_key(&slum.log(), &shop.key_pem);
    assert_no_key(&slum.log(), &other.key_pem);
}

#[test]
fn a_certificate_is_ordered_for_a_tenant_domain_only() {
    let slum = Serve::start();
    slum.add_dead_server("east");
    slum.add_tenant("shop.example.com", "east").ok();
    let refused = slum.run(&["cert", "order", "evil.example.org"]);
    assert_eq!(
        refused.error_line(),
        "error: tenant 'evil.example.org' not found"
    );
    let ordered = slum.run(&["cert", "order", "shop.example.com"]);
    let text = ordered.ok();
    assert!(text.contains("wanted"), "{text}");
    let list = slum.run(&["cert", "list"]);
    let r = row(list.ok(), "shop.example.com");
    assert_eq!(&r[1..3], ["acme", "pending"], "{list:#?}");
}
