//! The demo fleet, the README's run command (`sudo scripts/run-fleet.sh`):
//! three real tenement servers (each in its own network namespace), `slum serve`
//! on the embedded SQLite default, the servers registered and tenants added with
//! the `slum` CLI, and requests to the tenants' domains answered through the
//! router by the right server. Ctrl-C tears it all down.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use slum::local_fleet::{find_ten, FleetSpec, LocalFleet};

const ROUTER: &str = "127.0.0.1:8080";
const API: &str = "127.0.0.1:9090";

/// Runs `slum <args>` like a shell transcript: the command line, then its output.
fn slum(bin: &Path, env: &[(&str, &Path)], args: &[&str]) -> anyhow::Result<()> {
    println!("$ slum {}", args.join(" "));
    let mut cmd = Command::new(bin);
    cmd.args(args).env("SLUM_API", format!("http://{API}"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("slum {} failed", args.join(" "));
    }
    Ok(())
}

/// Kills `slum serve` when the demo ends, however it ends.
struct ServeGuard(Child);

impl Drop for ServeGuard {
    fn drop(&mut self) {
        // SIGTERM first: slum serve finishes in-flight requests and exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env_path = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .with_context(|| format!("{k} is not set; use scripts/run-fleet.sh"))
    };
    let app = env_path("SLUM_DEMO_APP")?;
    let bin = env_path("SLUM_BIN")?;
    let ten = find_ten()?;

    println!("starting 3 tenement servers, each in its own network namespace...");
    let fleet = LocalFleet::start(&FleetSpec::new(3, ten, app)).await?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    let db = dir.path().join("slum.db");

    println!("starting slum serve (router on {ROUTER}, API on {API})...");
    let log = std::fs::File::create(dir.path().join("slum.log"))?;
    let serve = Command::new(&bin)
        .args(["serve", "--listen", ROUTER, "--api-listen", API])
        .arg("--database")
        .arg(&db)
        .arg("--token-file")
        .arg(&token_file)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let _serve = ServeGuard(serve);
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut up = false;
    for _ in 0..100 {
        if http
            .get(format!("http://{API}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !up {
        bail!(
            "slum serve did not come up: {}",
            std::fs::read_to_string(dir.path().join("slum.log")).unwrap_or_default()
        );
    }
    let env = [("SLUM_TOKEN_FILE", token_file.as_path())];

    println!();
    for (s, region) in fleet.servers.iter().zip(["eu-west", "eu-west", "us-east"]) {
        // The server's own token file (0600): no copy of the secret is made.
        let token = s.token_file();
        slum(
            &bin,
            &env,
            &[
                "server",
                "add",
                &s.name,
                "--url",
                &s.url(),
                "--region",
                region,
                "--capacity-mb",
                "1024",
                "--domain",
                &s.domain,
                "--ten-token-file",
                &token.to_string_lossy(),
            ],
        )?;
    }
    let tenants = [
        ("acme.example.com", "s1"),
        ("globex.example.com", "s2"),
        ("initech.example.com", "s3"),
        ("umbrella.example.com", "s1"),
    ];
    for (domain, server) in tenants {
        slum(
            &bin,
            &env,
            &[
                "tenant",
                "add",
                domain,
                "--server",
                server,
                "--process",
                "api",
                "--instance",
                "prod",
            ],
        )?;
    }
    // acme is started ahead; the others are started by their first request.
    slum(
        &bin,
        &env,
        &[
            "spawn",
            "acme",
            "--process",
            "api",
            "--instance",
            "prod",
            "--server",
            "s1",
        ],
    )?;

    println!("\nrequests through the router (the first one to a tenant starts it):");
    for (domain, _) in tenants {
        let resp = http
            .get(format!("http://{ROUTER}/"))
            .header("host", domain)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        println!(
            "$ curl -H 'Host: {domain}' http://{ROUTER}/\n  {status} {}",
            body.trim()
        );
    }
    // Let the first health checks run, so that status shows the servers' state.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    println!();
    slum(&bin, &env, &["ps"])?;
    println!();
    slum(&bin, &env, &["status"])?;
    println!();
    slum(&bin, &env, &["top", "--once"])?;
    println!(
        "\nthe dashboard: http://{API}/ui/ (sign in with the token in {})",
        token_file.display()
    );

    // The token file is root's (0600, in a 0700 temporary directory): another
    // shell, root or not, reads it through sudo.
    println!(
        "\nthe fleet is up: try `curl -H 'Host: globex.example.com' http://{ROUTER}/`.\n\
         From another shell:\n\
         \n  export SLUM_API=http://{API}\
         \n  export SLUM_TOKEN=$(sudo cat {token})\
         \n  {bin} status\n\
         \nslum serve's log: {log}\nCtrl-C tears it all down.",
        token = token_file.display(),
        bin = bin.display(),
        log = dir.path().join("slum.log").display(),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    drop(_serve);
    drop(fleet);
    println!("torn down");
    Ok(())
}
