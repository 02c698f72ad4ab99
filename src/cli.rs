//! `slum`, the command line: `slum serve` runs the router and the management API;
//! every other command is a client of that API (see `docs/management-api.md`).
//!
//! The pieces, in order: the argument types (clap derive), [`ApiClient`] (one
//! typed method per API route, all going through one request function that turns
//! every failure into one [`CliError`]), and the rendering functions, which are
//! pure (records and "now" in, text out) so that they are tested without a server.
//! People get aligned tables; `--json` prints the API's own JSON for scripts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::serve::{default_token_file, ServeArgs, DEFAULT_API};
use crate::{
    ApiToken, DrainProgress, FailoverPolicy, Instance, InstanceStatus, ReconcileReport, Server,
    ServerStats, ServerStatus, Tenant,
};

/// How long the CLI waits to connect to the API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one API call may take; spawns, moves and reconcile wait for tenement
/// servers, so this is generous.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How often `server drain` asks how far the drain is.
const DRAIN_POLL: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

/// slum: a fleet orchestrator for tenement servers.
#[derive(Debug, Parser)]
#[command(name = "slum", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether this runs the server (which logs at `info` by default) rather than
    /// a client command (which logs only warnings).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// Flags of every client command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Management API of `slum serve` [default: http://127.0.0.1:9090].
    #[arg(long, env = "SLUM_API", value_name = "URL", global = true)]
    pub api: Option<String>,
    /// API token; give it before the subcommand (after `server add|update`,
    /// --token is the tenement server's token). Without it, the file `slum serve`
    /// writes on first start is read ($SLUM_TOKEN_FILE or
    /// $XDG_CONFIG_HOME/slum/token).
    #[arg(long, env = "SLUM_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// Print the API's JSON (pretty) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the router and the management API.
    Serve(Box<ServeArgs>),
    /// Tenement servers of the fleet.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Customer domains and where they are routed.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Start an instance of a tenant's process on a server (or, with --auto, on
    /// the server slum picks).
    Spawn(SpawnArgs),
    /// Stop an instance.
    Stop {
        /// The instance, as TENANT:INSTANCE (e.g. customer-1:prod).
        #[arg(value_parser = parse_instance_key, value_name = "TENANT:INSTANCE")]
        key: String,
    },
    /// Instances fleet-wide, as their servers report them now.
    Ps {
        /// Only the instances on this server.
        #[arg(long, value_name = "ID")]
        server: Option<String>,
    },
    /// Servers with their health, capacity and counts, and the tenants whose
    /// servers are down.
    Status,
    /// Management API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make what runs equal to what should run: respawn missing instances and
    /// complete pending stops.
    Reconcile,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Add a tenement server to the fleet.
    Add(ServerAddArgs),
    /// List the fleet's servers.
    List,
    /// One server, with its live stats.
    Show {
        /// Server id.
        id: String,
    },
    /// Change a server's settings or status.
    Update(ServerUpdateArgs),
    /// Remove a server (it must have no tenants or instances left).
    Remove {
        /// Server id.
        id: String,
    },
    /// Stop new placements on a server and move its tenants elsewhere without
    /// losing a request; shows progress, then what moved and what failed (exit
    /// code 1 when anything could not be moved). Ctrl-C stops watching, not the
    /// drain.
    Drain {
        /// Server id.
        id: String,
    },
    /// Let a drained (or draining) server take placements again; a drain still
    /// running stops, and what it moved stays moved.
    Undrain {
        /// Server id.
        id: String,
    },
}

/// The tenement server's admin token, given inline or read from a file.
#[derive(Debug, Clone, Args)]
pub struct TenementTokenArgs {
    /// Admin API token of the tenement server.
    #[arg(long, value_name = "T", conflicts_with = "token_file")]
    pub token: Option<Secret>,
    /// File holding the tenement server's admin token (keeps it out of `ps`).
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
}

impl TenementTokenArgs {
    /// The token, read from the file when one was given.
    fn resolve(&self) -> Result<Option<String>, CliError> {
        if let Some(t) = &self.token {
            return Ok(Some(t.expose().to_owned()));
        }
        match &self.token_file {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim().to_owned()))
                .map_err(|e| {
                    CliError::Local(format!("cannot read --token-file {}: {e}", path.display()))
                }),
        }
    }

    fn given(&self) -> bool {
        self.token.is_some() || self.token_file.is_some()
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServerAddArgs {
    /// Server id, a DNS label (e.g. east-1).
    pub id: String,
    /// Base URL of the server's tenement API and proxy.
    #[arg(long)]
    pub url: String,
    /// Region (e.g. us-east).
    #[arg(long)]
    pub region: Option<String>,
    /// Memory the server offers to instances, in MB.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub capacity_mb: i64,
    #[command(flatten)]
    pub token: TenementTokenArgs,
    /// The --domain tenement routes by (default: the host of --url).
    #[arg(long)]
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["url", "region", "capacity_mb", "token", "token_file", "domain", "status"])
))]
pub struct ServerUpdateArgs {
    /// Server id.
    pub id: String,
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub capacity_mb: Option<i64>,
    #[command(flatten)]
    pub token: TenementTokenArgs,
    #[arg(long)]
    pub domain: Option<String>,
    /// Health state; `draining` stops new placements on the server.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
}

/// The server states an operator may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Online,
    Offline,
    Draining,
    Unknown,
}

impl From<StatusArg> for ServerStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Online => ServerStatus::Online,
            StatusArg::Offline => ServerStatus::Offline,
            StatusArg::Draining => ServerStatus::Draining,
            StatusArg::Unknown => ServerStatus::Unknown,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Route a customer domain to a tenant's instance on a home server, or (with
    /// --auto) on the usable server with the most free room, started there.
    Add(TenantAddArgs),
    /// List the customer domains.
    List {
        /// Only the domains whose home is this server.
        #[arg(long, value_name = "ID")]
        server: Option<String>,
    },
    /// One customer domain.
    Show {
        /// Customer domain.
        domain: String,
    },
    /// Change a domain's settings.
    Update(TenantUpdateArgs),
    /// Move a domain's home to another server (its instance follows).
    Move {
        /// Customer domain.
        domain: String,
        /// The new home server.
        #[arg(long, value_name = "SERVER")]
        to: String,
    },
    /// Stop routing a customer domain.
    Remove {
        /// Customer domain.
        domain: String,
    },
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("placement").required(true).args(["server", "auto"])))]
pub struct TenantAddArgs {
    /// Customer domain (e.g. customer-1.example.com).
    pub domain: String,
    /// Home server id.
    #[arg(long, value_name = "ID")]
    pub server: Option<String>,
    /// Let slum choose the home: the usable server with the most free room (in
    /// --region when given); the instance is started there.
    #[arg(long)]
    pub auto: bool,
    /// With --auto: only servers of this region.
    #[arg(long, value_name = "R", conflicts_with = "server")]
    pub region: Option<String>,
    /// When the instance's server goes offline and there is no backup: wait for
    /// it (none, the default) or start it elsewhere (respawn).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub failover: Option<FailoverArg>,
    /// Process name (e.g. api).
    #[arg(long, value_name = "P")]
    pub process: String,
    /// Instance id (e.g. prod).
    #[arg(long, value_name = "I")]
    pub instance: String,
    /// Tenant name (default: the first label of the domain).
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["failover"])
))]
pub struct TenantUpdateArgs {
    /// Customer domain.
    pub domain: String,
    /// When the instance's server goes offline and there is no backup: wait for
    /// it (none) or start it elsewhere (respawn).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub failover: Option<FailoverArg>,
}

/// A tenant's failover policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailoverArg {
    None,
    Respawn,
}

impl From<FailoverArg> for FailoverPolicy {
    fn from(f: FailoverArg) -> Self {
        match f {
            FailoverArg::None => FailoverPolicy::None,
            FailoverArg::Respawn => FailoverPolicy::Respawn,
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("placement").required(true).args(["server", "auto"])))]
pub struct SpawnArgs {
    /// Tenant name.
    pub tenant: String,
    /// Process name.
    #[arg(long, value_name = "P")]
    pub process: String,
    /// Instance id.
    #[arg(long, value_name = "I")]
    pub instance: String,
    /// Server to start it on.
    #[arg(long, value_name = "S")]
    pub server: Option<String>,
    /// Let slum choose the server: the usable one with the most free room that
    /// holds no other instance of the tenant's process.
    #[arg(long)]
    pub auto: bool,
    /// With --auto: only servers of this region.
    #[arg(long, value_name = "R", conflicts_with = "server")]
    pub region: Option<String>,
    /// With --auto: never a region that already holds an instance of the
    /// tenant's process (a backup that survives the loss of a region).
    #[arg(long, conflicts_with = "server")]
    pub other_region: bool,
    /// Memory to reserve, in MB (default: the server's --default-memory-mb).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub memory_mb: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// What the token is for (e.g. ci).
        name: String,
    },
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke {
        /// Token id (from `slum token list`).
        id: String,
    },
}

fn parse_instance_key(s: &str) -> Result<String, String> {
    match s.split_once(':') {
        Some((tenant, instance)) if !tenant.is_empty() && !instance.is_empty() => Ok(s.into()),
        _ => Err(format!(
            "'{s}' is not TENANT:INSTANCE (e.g. customer-1:prod)"
        )),
    }
}

/// A secret (an API or tenement token): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s.trim().to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

// ---------------------------------------------------------------------------
// Running a command
// ---------------------------------------------------------------------------

/// Runs the parsed command line and returns the process's exit code: 0 on
/// success, 1 after printing `error: ...` on stderr. (clap already exits with 2
/// on usage errors.)
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve(&args).await,
        command => client_command(&cli.global, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: &ServeArgs) -> Result<(), CliError> {
    let config = crate::serve::ServeConfig::resolve(args).map_err(CliError::local)?;
    let shutdown = shutdown_signal().map_err(CliError::local)?;
    crate::serve::run(config, shutdown)
        .await
        .map_err(CliError::local)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). Both handlers are installed before
/// `serve` starts, so a signal that arrives during start-up is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

async fn client_command(global: &GlobalArgs, command: Command) -> Result<(), CliError> {
    let base = api_base(global.api.as_deref())?;
    let token_file = token_file_path();
    let token = resolve_token(global.token.clone(), &token_file)?;
    let client = ApiClient::new(base, token, token_file)?;
    let output = execute(&client, command, global.json).await?;
    output.print(global.json)?;
    match output.failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a command prints: the API's JSON for `--json`, text for people, and a
/// note for stderr in both cases; `failure` makes the command fail after its
/// output is printed (a drain that could not move everything).
#[derive(Debug, Default)]
struct Output {
    json: Value,
    text: String,
    note: Option<String>,
    failure: Option<CliError>,
}

impl Output {
    fn new(json: Value, text: String) -> Self {
        Output {
            json,
            text,
            ..Default::default()
        }
    }

    fn print(&self, json: bool) -> Result<(), CliError> {
        if json {
            if !self.json.is_null() {
                let pretty = serde_json::to_string_pretty(&self.json)
                    .map_err(|e| CliError::Local(format!("cannot print JSON: {e}")))?;
                println!("{pretty}");
            }
        } else if !self.text.is_empty() {
            println!("{}", self.text.trim_end());
        }
        if let Some(note) = &self.note {
            eprintln!("{note}");
        }
        Ok(())
    }
}

/// Runs one client command; `json` says whether the output is for a script
/// (no progress bar then).
async fn execute(client: &ApiClient, command: Command, json: bool) -> Result<Output, CliError> {
    let now = Utc::now();
    Ok(match command {
        Command::Serve(_) => {
            return Err(CliError::Local(
                "`slum serve` is not a client command".into(),
            ))
        }
        Command::Server(cmd) => server_command(client, cmd, now, json).await?,
        Command::Tenant(cmd) => tenant_command(client, cmd, now).await?,
        Command::Spawn(args) => {
            let r = client.spawn(&args).await?;
            Output::new(r.json, render_spawned(&r.value))
        }
        Command::Stop { key } => match client.stop(&key).await? {
            Stop::Done => Output::new(Value::Null, format!("stopped {key}")),
            Stop::Pending { json, message } => Output {
                json,
                note: Some(format!("warning: {message}")),
                ..Default::default()
            },
        },
        Command::Ps { server } => {
            let r = client.list_instances(server.as_deref()).await?;
            Output::new(r.json, render_instances(&r.value))
        }
        Command::Status => {
            let status = client.status().await?;
            Output::new(status.json, render_status(&status.value, now))
        }
        Command::Token(cmd) => token_command(client, cmd, now).await?,
        Command::Reconcile => {
            let r = client.reconcile().await?;
            Output::new(r.json, render_reconcile(&r.value))
        }
    })
}

async fn server_command(
    client: &ApiClient,
    cmd: ServerCommand,
    now: DateTime<Utc>,
    json: bool,
) -> Result<Output, CliError> {
    Ok(match cmd {
        ServerCommand::Add(args) => {
            let r = client.add_server(&NewServer::from_args(&args)?).await?;
            let text = format!(
                "added server {}\n{}",
                r.value.id,
                render_server(&r.value, None, now)
            );
            Output::new(r.json, text)
        }
        ServerCommand::List => {
            let r = client.list_servers().await?;
            Output::new(r.json, render_servers(&r.value, now))
        }
        ServerCommand::Show { id } => {
            let (server, stats) = tokio::try_join!(client.server(&id), client.server_stats(&id))?;
            let text = render_server(&server.value, Some(&stats.value), now);
            let json = serde_json::json!({ "server": server.json, "stats": stats.json });
            Output::new(json, text)
        }
        ServerCommand::Update(args) => {
            let r = client
                .update_server(&args.id, &ServerPatch::from_args(&args)?)
                .await?;
            let text = format!(
                "updated server {}\n{}",
                r.value.id,
                render_server(&r.value, None, now)
            );
            Output::new(r.json, text)
        }
        ServerCommand::Remove { id } => {
            client.remove_server(&id).await?;
            Output::new(Value::Null, format!("removed server {id}"))
        }
        ServerCommand::Drain { id } => drain(client, &id, json).await?,
        ServerCommand::Undrain { id } => {
            let r = client.undrain(&id).await?;
            let text = format!(
                "server {} takes placements again (status {})",
                r.value.id, r.value.status
            );
            Output::new(r.json, text)
        }
    })
}

/// The progress bar of `slum server drain`, on stderr.
fn drain_bar_style() -> Result<indicatif::ProgressStyle, CliError> {
    Ok(indicatif::ProgressStyle::with_template(
        "draining {prefix} [{bar:30}] {pos}/{len} instances {msg}",
    )
    .map_err(|e| CliError::Local(format!("progress bar: {e}")))?
    .progress_chars("=> "))
}

/// `slum server drain`: starts the drain, follows it with a progress bar (on a
/// terminal, and not with --json) until it is done, then sums it up.
async fn drain(client: &ApiClient, id: &str, json: bool) -> Result<Output, CliError> {
    use std::io::IsTerminal;
    let mut reply = client.drain(id).await?;
    let bar = if json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
            .with_style(drain_bar_style()?)
            .with_prefix(id.to_owned())
    };
    let stopped = loop {
        let p = &reply.value;
        let handled = (p.moved.len() + p.failed.len()).min(p.total);
        bar.set_length(p.total as u64);
        bar.set_position(handled as u64);
        if !p.failed.is_empty() {
            bar.set_message(format!("({} failed)", p.failed.len()));
        }
        if p.done {
            break false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
        let (progress, server) = tokio::try_join!(client.drain_progress(id), client.server(id))?;
        reply = progress;
        // An undrain stops the drain where it is; it will never say done.
        if !reply.value.done && server.value.status != ServerStatus::Draining {
            break true;
        }
    };
    bar.finish_and_clear();
    let failed = reply.value.failed.len();
    let failure = if stopped {
        Some(CliError::Local(format!(
            "the drain of server {id} was stopped (undrained) before it finished"
        )))
    } else if failed > 0 {
        Some(CliError::Local(format!(
            "{failed} instance(s) or domain(s) could not be moved off server {id}; \
             they stay there (run the drain again to retry)"
        )))
    } else {
        None
    };
    Ok(Output {
        text: render_drain(&reply.value),
        json: reply.json,
        note: None,
        failure,
    })
}

async fn tenant_command(
    client: &ApiClient,
    cmd: TenantCommand,
    now: DateTime<Utc>,
) -> Result<Output, CliError> {
    Ok(match cmd {
        TenantCommand::Add(args) => {
            let r = client.add_tenant(&NewTenant::from(&args)).await?;
            let text = format!(
                "added tenant {}\n{}",
                r.value.domain,
                render_tenant(&r.value, now)
            );
            Output::new(r.json, text)
        }
        TenantCommand::List { server } => {
            let r = client.list_tenants(server.as_deref()).await?;
            Output::new(r.json, render_tenants(&r.value))
        }
        TenantCommand::Show { domain } => {
            let r = client.tenant(&domain).await?;
            Output::new(r.json, render_tenant(&r.value, now))
        }
        TenantCommand::Update(args) => {
            let r = client
                .update_tenant(&args.domain, &TenantPatch::from(&args))
                .await?;
            let text = format!(
                "updated tenant {}\n{}",
                r.value.domain,
                render_tenant(&r.value, now)
            );
            Output::new(r.json, text)
        }
        TenantCommand::Move { domain, to } => {
            let r = client.move_tenant(&domain, &to).await?;
            let text = format!("moved {} to server {}", r.value.domain, r.value.server_id);
            Output::new(r.json, text)
        }
        TenantCommand::Remove { domain } => {
            client.remove_tenant(&domain).await?;
            Output::new(Value::Null, format!("removed tenant {domain}"))
        }
    })
}

async fn token_command(
    client: &ApiClient,
    cmd: TokenCommand,
    now: DateTime<Utc>,
) -> Result<Output, CliError> {
    Ok(match cmd {
        TokenCommand::Create { name } => {
            let r = client.create_token(&name).await?;
            // The secret alone on stdout, so that `TOKEN=$(slum token create ci)`
            // works; the explanation goes to stderr.
            Output {
                json: r.json,
                text: r.value.secret.clone(),
                note: Some(format!(
                    "created token {} ({}); this secret is shown once and cannot be shown again: store it now",
                    r.value.token.id, r.value.token.name
                )),
                failure: None,
            }
        }
        TokenCommand::List => {
            let r = client.list_tokens().await?;
            Output::new(r.json, render_tokens(&r.value, now))
        }
        TokenCommand::Revoke { id } => {
            client.revoke_token(&id).await?;
            Output::new(Value::Null, format!("revoked token {id}"))
        }
    })
}

// ---------------------------------------------------------------------------
// Where the API is, and the token
// ---------------------------------------------------------------------------

/// The API's base URL from `--api`/`SLUM_API`; `host:port` without a scheme
/// means `http://host:port`.
pub fn api_base(arg: Option<&str>) -> Result<Url, CliError> {
    let raw = arg.map(str::trim).filter(|s| !s.is_empty());
    let raw = match raw {
        Some(s) if s.contains("://") => s.to_owned(),
        Some(s) => format!("http://{s}"),
        None => format!("http://{DEFAULT_API}"),
    };
    let url =
        Url::parse(&raw).map_err(|e| CliError::Local(format!("invalid --api URL '{raw}': {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(CliError::Local(format!(
            "invalid --api URL '{raw}': use http:// or https://"
        )));
    }
    Ok(url)
}

/// The token file the CLI falls back to: `$SLUM_TOKEN_FILE` (the variable
/// `slum serve --token-file` reads too), else [`default_token_file`].
pub fn token_file_path() -> PathBuf {
    std::env::var_os("SLUM_TOKEN_FILE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_token_file)
}

/// The API token: the flag (or `SLUM_TOKEN`), else the contents of `file`
/// (trimmed), else none. A file that does not exist is not an error: the API then
/// says 401 and the message points at the ways to give a token.
pub fn resolve_token(flag: Option<Secret>, file: &Path) -> Result<Option<Secret>, CliError> {
    if let Some(t) = flag.filter(|t| !t.expose().is_empty()) {
        return Ok(Some(t));
    }
    match std::fs::read_to_string(file) {
        Ok(s) => Ok(Some(Secret::from(s)).filter(|t| !t.expose().is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Local(format!(
            "cannot read the token file {}: {e}",
            file.display()
        ))),
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Every way a client command fails; `Display` is the one line printed after
/// `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the slum API at {url}: {reason} (is `slum serve` running?)")]
    Unreachable { url: String, reason: String },
    #[error("the slum API at {url} did not answer within {secs}s")]
    Timeout { url: String, secs: u64 },
    #[error("the API refused the token (set --token or SLUM_TOKEN)")]
    Refused,
    #[error("no API token: set --token or SLUM_TOKEN, or run `slum serve` on this machine to write {}", .token_file.display())]
    NoToken { token_file: PathBuf },
    /// The API's own error (`{"error":{"kind","message"}}`).
    #[error("{message}")]
    Api {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("{0}")]
    Unexpected(String),
    #[error("{0}")]
    Local(String),
}

impl CliError {
    fn local(e: anyhow::Error) -> Self {
        CliError::Local(format!("{e:#}"))
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    kind: String,
    message: String,
}

/// The error of a non-success answer (401 is handled before this).
pub fn api_error(status: StatusCode, body: &[u8]) -> CliError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => CliError::Api {
            status: status.as_u16(),
            kind: b.error.kind,
            message: b.error.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(200).collect();
            if text.is_empty() {
                CliError::Unexpected(format!("the API answered {status}"))
            } else {
                CliError::Unexpected(format!("the API answered {status}: {text}"))
            }
        }
    }
}

/// The innermost cause of a transport error ("Connection refused (os error
/// 111)"), which says more than reqwest's "error sending request for url".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

// ---------------------------------------------------------------------------
// The API client
// ---------------------------------------------------------------------------

/// A decoded answer together with the JSON it came from (printed by `--json`).
#[derive(Debug)]
pub struct Reply<T> {
    pub value: T,
    pub json: Value,
}

/// What `DELETE /v1/instances/{key}` did.
#[derive(Debug)]
pub enum Stop {
    Done,
    /// The server could not be reached; reconcile completes the stop.
    Pending {
        json: Value,
        message: String,
    },
}

/// `POST /v1/servers`.
#[derive(Serialize)]
pub struct NewServer {
    id: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    capacity_mb: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
}

impl NewServer {
    fn from_args(a: &ServerAddArgs) -> Result<Self, CliError> {
        Ok(NewServer {
            id: a.id.clone(),
            url: a.url.clone(),
            region: a.region.clone(),
            capacity_mb: a.capacity_mb,
            token: a.token.resolve()?,
            domain: a.domain.clone(),
        })
    }
}

/// `PATCH /v1/servers/{id}`: only the fields given.
#[derive(Serialize)]
pub struct ServerPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity_mb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<ServerStatus>,
}

impl ServerPatch {
    fn from_args(a: &ServerUpdateArgs) -> Result<Self, CliError> {
        Ok(ServerPatch {
            url: a.url.clone(),
            region: a.region.clone(),
            capacity_mb: a.capacity_mb,
            token: if a.token.given() {
                a.token.resolve()?
            } else {
                None
            },
            domain: a.domain.clone(),
            status: a.status.map(ServerStatus::from),
        })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `POST /v1/tenants`.
#[derive(Serialize)]
pub struct NewTenant {
    domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_id: Option<String>,
    process: String,
    instance_id: String,
    #[serde(skip_serializing_if = "is_false")]
    auto: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failover: Option<FailoverPolicy>,
}

impl From<&TenantAddArgs> for NewTenant {
    fn from(a: &TenantAddArgs) -> Self {
        NewTenant {
            domain: a.domain.clone(),
            name: a.name.clone(),
            server_id: a.server.clone(),
            process: a.process.clone(),
            instance_id: a.instance.clone(),
            auto: a.auto,
            region: a.region.clone(),
            failover: a.failover.map(FailoverPolicy::from),
        }
    }
}

/// `PATCH /v1/tenants/{domain}`: only the fields given.
#[derive(Serialize)]
pub struct TenantPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    failover: Option<FailoverPolicy>,
}

impl From<&TenantUpdateArgs> for TenantPatch {
    fn from(a: &TenantUpdateArgs) -> Self {
        TenantPatch {
            failover: a.failover.map(FailoverPolicy::from),
        }
    }
}

/// `POST /v1/instances`.
#[derive(Serialize)]
struct NewInstance<'a> {
    tenant: &'a str,
    process: &'a str,
    instance_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_mb: Option<i64>,
    #[serde(skip_serializing_if = "is_false")]
    auto: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    distinct_region: bool,
}

impl<'a> From<&'a SpawnArgs> for NewInstance<'a> {
    fn from(a: &'a SpawnArgs) -> Self {
        NewInstance {
            tenant: &a.tenant,
            process: &a.process,
            instance_id: &a.instance,
            server_id: a.server.as_deref(),
            memory_mb: a.memory_mb,
            auto: a.auto,
            region: a.region.as_deref(),
            distinct_region: a.other_region,
        }
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FleetStatus {
    pub servers: Vec<ServerStats>,
    pub tenants: i64,
    pub instances: i64,
    pub down_tenants: Vec<DownTenant>,
}

/// A domain of `GET /v1/status` whose servers are all offline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DownTenant {
    pub domain: String,
    pub tenant: String,
    pub servers: Vec<String>,
}

/// `POST /v1/tokens`. No `Debug`: it holds the secret.
#[derive(Deserialize)]
pub struct CreatedToken {
    pub token: ApiToken,
    pub secret: String,
}

/// The typed client of the management API.
pub struct ApiClient {
    base: Url,
    token: Option<Secret>,
    token_file: PathBuf,
    http: reqwest::Client,
}

impl ApiClient {
    /// `token_file` is only named in the message when no token was found.
    pub fn new(base: Url, token: Option<Secret>, token_file: PathBuf) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("slum-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Local(format!("cannot build the HTTP client: {e}")))?;
        Ok(ApiClient {
            base,
            token,
            token_file,
            http,
        })
    }

    /// The API's address as the user gave it, for messages.
    fn shown_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // Never fails: `api_base` accepts only URLs that can be a base.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        url
    }

    /// One request. Returns the status and JSON of a success (`Null` when the
    /// body is empty); every failure becomes one [`CliError`].
    async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), CliError> {
        let mut url = self.endpoint(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(match self.token {
                Some(_) => CliError::Refused,
                None => CliError::NoToken {
                    token_file: self.token_file.clone(),
                },
            });
        }
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, Value::Null));
        }
        let json = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Unexpected(format!("the API's answer is not JSON ({status}): {e}"))
        })?;
        Ok((status, json))
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        if e.is_timeout() && !e.is_connect() {
            CliError::Timeout {
                url: self.shown_url(),
                secs: REQUEST_TIMEOUT.as_secs(),
            }
        } else {
            CliError::Unreachable {
                url: self.shown_url(),
                reason: root_cause(e),
            }
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Reply<T>, CliError> {
        let what = format!("{method} /v1/{}", segments.join("/"));
        let (_, json) = self.request(method, segments, query, body).await?;
        let value = T::deserialize(&json).map_err(|e| {
            CliError::Unexpected(format!("cannot read the API's answer to {what}: {e}"))
        })?;
        Ok(Reply { value, json })
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<Reply<T>, CliError> {
        self.call(Method::GET, segments, &[], None).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<Reply<T>, CliError> {
        let body = serde_json::to_value(body)
            .map_err(|e| CliError::Local(format!("cannot encode the request: {e}")))?;
        self.call(method, segments, &[], Some(body)).await
    }

    async fn delete(&self, segments: &[&str]) -> Result<(StatusCode, Value), CliError> {
        self.request(Method::DELETE, segments, &[], None).await
    }

    pub async fn list_servers(&self) -> Result<Reply<Vec<Server>>, CliError> {
        self.get(&["servers"]).await
    }

    pub async fn server(&self, id: &str) -> Result<Reply<Server>, CliError> {
        self.get(&["servers", id]).await
    }

    pub async fn server_stats(&self, id: &str) -> Result<Reply<ServerStats>, CliError> {
        self.get(&["servers", id, "stats"]).await
    }

    pub async fn add_server(&self, s: &NewServer) -> Result<Reply<Server>, CliError> {
        self.send(Method::POST, &["servers"], s).await
    }

    pub async fn update_server(
        &self,
        id: &str,
        p: &ServerPatch,
    ) -> Result<Reply<Server>, CliError> {
        self.send(Method::PATCH, &["servers", id], p).await
    }

    pub async fn remove_server(&self, id: &str) -> Result<(), CliError> {
        self.delete(&["servers", id]).await.map(drop)
    }

    pub async fn drain(&self, id: &str) -> Result<Reply<DrainProgress>, CliError> {
        self.call(Method::POST, &["servers", id, "drain"], &[], None)
            .await
    }

    pub async fn drain_progress(&self, id: &str) -> Result<Reply<DrainProgress>, CliError> {
        self.get(&["servers", id, "drain"]).await
    }

    pub async fn undrain(&self, id: &str) -> Result<Reply<Server>, CliError> {
        self.call(Method::POST, &["servers", id, "undrain"], &[], None)
            .await
    }

    pub async fn list_tenants(&self, server: Option<&str>) -> Result<Reply<Vec<Tenant>>, CliError> {
        let query: Vec<(&str, &str)> = server.map(|s| ("server", s)).into_iter().collect();
        self.call(Method::GET, &["tenants"], &query, None).await
    }

    pub async fn tenant(&self, domain: &str) -> Result<Reply<Tenant>, CliError> {
        self.get(&["tenants", domain]).await
    }

    pub async fn add_tenant(&self, t: &NewTenant) -> Result<Reply<Tenant>, CliError> {
        self.send(Method::POST, &["tenants"], t).await
    }

    pub async fn update_tenant(
        &self,
        domain: &str,
        p: &TenantPatch,
    ) -> Result<Reply<Tenant>, CliError> {
        self.send(Method::PATCH, &["tenants", domain], p).await
    }

    pub async fn move_tenant(&self, domain: &str, to: &str) -> Result<Reply<Tenant>, CliError> {
        let body = serde_json::json!({ "server_id": to });
        self.send(Method::POST, &["tenants", domain, "move"], &body)
            .await
    }

    pub async fn remove_tenant(&self, domain: &str) -> Result<(), CliError> {
        self.delete(&["tenants", domain]).await.map(drop)
    }

    pub async fn list_instances(
        &self,
        server: Option<&str>,
    ) -> Result<Reply<Vec<InstanceStatus>>, CliError> {
        let query: Vec<(&str, &str)> = server.map(|s| ("server", s)).into_iter().collect();
        self.call(Method::GET, &["instances"], &query, None).await
    }

    pub async fn spawn(&self, a: &SpawnArgs) -> Result<Reply<Instance>, CliError> {
        self.send(Method::POST, &["instances"], &NewInstance::from(a))
            .await
    }

    pub async fn stop(&self, key: &str) -> Result<Stop, CliError> {
        let (status, json) = self.delete(&["instances", key]).await?;
        if status != StatusCode::ACCEPTED {
            return Ok(Stop::Done);
        }
        let message = serde_json::from_value::<ErrorBody>(json.clone())
            .map(|b| b.error.message)
            .unwrap_or_else(|_| format!("the stop of {key} is pending"));
        Ok(Stop::Pending { json, message })
    }

    pub async fn status(&self) -> Result<Reply<FleetStatus>, CliError> {
        self.get(&["status"]).await
    }

    pub async fn reconcile(&self) -> Result<Reply<ReconcileReport>, CliError> {
        self.call(Method::POST, &["reconcile"], &[], None).await
    }

    pub async fn list_tokens(&self) -> Result<Reply<Vec<ApiToken>>, CliError> {
        self.get(&["tokens"]).await
    }

    pub async fn create_token(&self, name: &str) -> Result<Reply<CreatedToken>, CliError> {
        let body = serde_json::json!({ "name": name });
        self.send(Method::POST, &["tokens"], &body).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), CliError> {
        self.delete(&["tokens", id]).await.map(drop)
    }
}

// ---------------------------------------------------------------------------
// Rendering (pure)
// ---------------------------------------------------------------------------

/// An aligned table without borders; columns in `right` are right-aligned
/// (numbers).
fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.trim_fmt()
}

/// `key: value` lines with the values aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{:<width$}  {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn or_dash(v: Option<&str>) -> String {
    match v {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => "-".to_owned(),
    }
}

/// "12s ago", "5m ago", "3h ago", "4d ago"; "never" for none.
pub fn format_ago(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else {
        return "never".to_owned();
    };
    let secs = (now - t).num_seconds();
    if secs < 1 {
        "just now".to_owned()
    } else {
        format!("{} ago", format_duration(secs.unsigned_abs()))
    }
}

/// A moment as a date and how long ago it was: "2024-05-01 12:00 UTC (3d ago)".
pub fn format_when(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    format!(
        "{} ({})",
        t.format("%Y-%m-%d %H:%M UTC"),
        format_ago(now, Some(t))
    )
}

/// A duration in its two largest units: "45s", "12m 5s", "3h 12m", "2d 3h".
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) if m == 0 => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

fn mb(n: i64) -> String {
    format!("{n} MB")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub fn render_servers(servers: &[Server], now: DateTime<Utc>) -> String {
    let rows = servers
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.url.clone(),
                or_dash(s.region.as_deref()),
                s.status.to_string(),
                mb(s.used_capacity_mb()),
                mb(s.capacity_mb),
                mb(s.free_capacity_mb()),
                format_ago(now, s.last_seen),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "URL",
            "REGION",
            "STATUS",
            "USED",
            "CAPACITY",
            "FREE",
            "LAST SEEN",
        ],
        rows,
        &[4, 5, 6],
    )
}

/// One server, with its live stats when given.
pub fn render_server(s: &Server, stats: Option<&ServerStats>, now: DateTime<Utc>) -> String {
    let mut rows = vec![
        ("id", s.id.clone()),
        ("url", s.url.clone()),
        ("region", or_dash(s.region.as_deref())),
        ("domain", s.routing_domain()),
        ("status", s.status.to_string()),
        ("last seen", format_ago(now, s.last_seen)),
    ];
    match stats {
        Some(st) => {
            rows.push((
                "capacity",
                format!(
                    "{} used of {} ({} free)",
                    mb(st.used_mb),
                    mb(st.capacity_mb),
                    mb(st.free_mb)
                ),
            ));
            rows.push(("tenants", st.tenants.to_string()));
            let running = st
                .running
                .map(|r| format!(" ({r} running)"))
                .unwrap_or_default();
            rows.push(("instances", format!("{}{running}", st.instances)));
            let reachable = match (&st.reachable, &st.error) {
                (true, _) => "yes".to_owned(),
                (false, Some(e)) => format!("no: {e}"),
                (false, None) => "no".to_owned(),
            };
            rows.push(("reachable", reachable));
        }
        None => rows.push((
            "capacity",
            format!(
                "{} used of {} ({} free)",
                mb(s.used_capacity_mb()),
                mb(s.capacity_mb),
                mb(s.free_capacity_mb())
            ),
        )),
    }
    rows.push(("created", format_when(now, s.created_at)));
    fields(&rows)
}

pub fn render_tenants(tenants: &[Tenant]) -> String {
    let rows = tenants
        .iter()
        .map(|t| {
            vec![
                t.domain.clone(),
                t.name.clone(),
                t.server_id.clone(),
                t.process.clone(),
                t.instance_id.clone(),
            ]
        })
        .collect();
    table(
        &["DOMAIN", "TENANT", "SERVER", "PROCESS", "INSTANCE"],
        rows,
        &[],
    )
}

pub fn render_tenant(t: &Tenant, now: DateTime<Utc>) -> String {
    fields(&[
        ("domain", t.domain.clone()),
        ("tenant", t.name.clone()),
        ("server", t.server_id.clone()),
        ("process", t.process.clone()),
        ("instance", t.instance_id.clone()),
        ("routes to", t.instance_key()),
        ("failover", t.failover.as_str().to_owned()),
        ("created", format_when(now, t.created_at)),
    ])
}

pub fn render_spawned(i: &Instance) -> String {
    format!(
        "spawned {} ({}) on server {}: {} reserved, {}",
        i.key(),
        i.process,
        i.server_id,
        mb(i.memory_mb),
        i.observed
    )
}

pub fn render_instances(instances: &[InstanceStatus]) -> String {
    let rows = instances
        .iter()
        .map(|s| {
            vec![
                s.instance.key(),
                s.instance.process.clone(),
                s.instance.server_id.clone(),
                s.state.to_string(),
                or_dash(s.health.as_deref()),
                s.uptime_secs
                    .map(format_duration)
                    .unwrap_or_else(|| "-".into()),
                mb(s.instance.memory_mb),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "KEY", "PROCESS", "SERVER", "STATE", "HEALTH", "UPTIME", "MEMORY",
        ],
        rows,
        &[5, 6],
    );
    for s in instances {
        if let Some(e) = &s.error {
            out.push_str(&format!("\n{}: {e}", s.instance.key()));
        }
    }
    out
}

/// The fleet at a glance; `servers` supplies what the stats lack (last seen).
/// The fleet at a glance: each server's state, when it last answered a health
/// check and its capacity, then the domains no server can serve now.
pub fn render_status(status: &FleetStatus, now: DateTime<Utc>) -> String {
    let rows = status
        .servers
        .iter()
        .map(|st| {
            vec![
                st.server_id.clone(),
                st.status.to_string(),
                format_ago(now, st.last_seen),
                mb(st.used_mb),
                mb(st.capacity_mb),
                mb(st.free_mb),
                st.tenants.to_string(),
                st.instances.to_string(),
                yes_no(st.reachable).to_owned(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SERVER",
            "STATUS",
            "LAST SEEN",
            "USED",
            "TOTAL",
            "FREE",
            "TENANTS",
            "INSTANCES",
            "REACHABLE",
        ],
        rows,
        &[3, 4, 5, 6, 7],
    );
    for st in &status.servers {
        if let Some(e) = &st.error {
            out.push_str(&format!("\n{}: {e}", st.server_id));
        }
    }
    if !status.down_tenants.is_empty() {
        let rows = status
            .down_tenants
            .iter()
            .map(|d| vec![d.domain.clone(), d.tenant.clone(), d.servers.join(", ")])
            .collect();
        out.push_str(&format!(
            "\n\ndown: {} domain(s) whose servers are offline\n{}",
            status.down_tenants.len(),
            table(&["DOMAIN", "TENANT", "OFFLINE SERVERS"], rows, &[])
        ));
    }
    out.push_str(&format!(
        "\n\n{} server(s), {} tenant(s), {} instance(s)",
        status.servers.len(),
        status.tenants,
        status.instances
    ));
    out
}

/// What a drain did: one summary line, then what moved where and why anything
/// failed.
pub fn render_drain(p: &DrainProgress) -> String {
    let verb = if p.done {
        "drained"
    } else {
        "stopped draining"
    };
    let mut out = vec![format!(
        "{verb} server {}: moved {}, re-homed {}, failed {}",
        p.server,
        p.moved.len(),
        p.rehomed.len(),
        p.failed.len()
    )];
    for (title, items) in [
        ("moved", &p.moved),
        ("re-homed", &p.rehomed),
        ("failed", &p.failed),
    ] {
        if !items.is_empty() {
            out.push(format!("{title}:"));
            out.extend(items.iter().map(|i| format!("  {i}")));
        }
    }
    out.join("\n")
}

pub fn render_tokens(tokens: &[ApiToken], now: DateTime<Utc>) -> String {
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                format_ago(now, Some(t.created_at)),
            ]
        })
        .collect();
    table(&["ID", "NAME", "CREATED"], rows, &[])
}

pub fn render_reconcile(r: &ReconcileReport) -> String {
    let sections = [
        ("respawned", &r.respawned),
        ("stopped", &r.stopped),
        ("failed", &r.failed),
        ("unreachable", &r.unreachable),
        ("unmanaged (left alone)", &r.unmanaged),
    ];
    let mut out: Vec<String> = Vec::new();
    for (title, items) in sections {
        if items.is_empty() {
            continue;
        }
        out.push(format!("{title}:"));
        out.extend(items.iter().map(|i| format!("  {i}")));
    }
    if out.is_empty() {
        "nothing to do: the fleet runs what it should".to_owned()
    } else {
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("slum").chain(args.iter().copied()))
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_token_goes_before_the_subcommand_and_server_token_after() {
        let cli = parse(&[
            "--token",
            "api-secret",
            "server",
            "add",
            "east",
            "--url",
            "http://east:8000",
            "--capacity-mb",
            "1024",
            "--token",
            "ten-secret",
        ])
        .expect("parses");
        assert_eq!(cli.global.token, Some(Secret("api-secret".into())));
        let Command::Server(ServerCommand::Add(a)) = cli.command else {
            panic!("not server add");
        };
        assert_eq!(a.token.token, Some(Secret("ten-secret".into())));
        assert_eq!(a.capacity_mb, 1024);
        assert!(!cli.global.json);
    }

    #[test]
    fn json_and_api_are_accepted_after_the_subcommand() {
        let cli = parse(&["server", "list", "--json", "--api", "10.0.0.1:9090"]).expect("parses");
        assert!(cli.global.json);
        assert_eq!(cli.global.api.as_deref(), Some("10.0.0.1:9090"));
    }

    #[test]
    fn server_add_needs_url_and_capacity() {
        let e = parse(&["server", "add", "east", "--capacity-mb", "1"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = parse(&["server", "add", "east", "--url", "http://x"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = parse(&[
            "server",
            "add",
            "east",
            "--url",
            "http://x",
            "--capacity-mb",
            "lots",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn a_negative_capacity_reaches_the_api_which_names_the_field() {
        let cli = parse(&[
            "server",
            "add",
            "e",
            "--url",
            "http://x",
            "--capacity-mb",
            "-5",
        ])
        .expect("parses");
        let Command::Server(ServerCommand::Add(a)) = cli.command else {
            panic!("not server add");
        };
        assert_eq!(a.capacity_mb, -5);
    }

    #[test]
    fn server_token_and_token_file_conflict() {
        let e = parse(&[
            "server",
            "add",
            "e",
            "--url",
            "http://x",
            "--capacity-mb",
            "1",
            "--token",
            "a",
            "--token-file",
            "/f",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn server_update_needs_a_change_and_a_known_status() {
        let e = parse(&["server", "update", "east"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = parse(&["server", "update", "east", "--status", "sleepy"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let cli = parse(&["server", "update", "east", "--status", "draining"]).expect("parses");
        let Command::Server(ServerCommand::Update(a)) = cli.command else {
            panic!("not server update");
        };
        let patch = ServerPatch::from_args(&a).expect("patch");
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            serde_json::json!({"status": "draining"})
        );
    }

    #[test]
    fn stop_takes_tenant_colon_instance() {
        assert!(parse(&["stop", "customer-1:prod"]).is_ok());
        for bad in ["customer-1", ":prod", "customer-1:"] {
            let e = parse(&["stop", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
    }

    /// The API request body `slum tenant add ARGS…` sends.
    fn tenant_add_body(args: &[&str]) -> serde_json::Value {
        let cli = parse(args).expect("parses");
        let Command::Tenant(TenantCommand::Add(a)) = cli.command else {
            panic!("not tenant add");
        };
        serde_json::to_value(NewTenant::from(&a)).expect("json")
    }

    #[test]
    fn tenant_add_body_uses_the_api_field_names() {
        assert_eq!(
            tenant_add_body(&[
                "tenant",
                "add",
                "c1.example.com",
                "--server",
                "east",
                "--process",
                "api",
                "--instance",
                "prod",
            ]),
            serde_json::json!({"domain": "c1.example.com", "server_id": "east",
                               "process": "api", "instance_id": "prod"})
        );
    }

    #[test]
    fn tenant_add_takes_a_server_or_auto_and_a_failover_policy() {
        let e = parse(&[
            "tenant",
            "add",
            "c1.test",
            "--process",
            "api",
            "--instance",
            "prod",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let both = [
            "tenant",
            "add",
            "c1.test",
            "--server",
            "east",
            "--auto",
            "--process",
            "api",
            "--instance",
            "prod",
        ];
        assert_eq!(
            parse(&both).unwrap_err().kind(),
            clap::error::ErrorKind::ArgumentConflict
        );
        let region_alone = [
            "tenant",
            "add",
            "c1.test",
            "--server",
            "east",
            "--region",
            "eu",
            "--process",
            "api",
            "--instance",
            "prod",
        ];
        assert_eq!(
            parse(&region_alone).unwrap_err().kind(),
            clap::error::ErrorKind::ArgumentConflict
        );
        assert_eq!(
            tenant_add_body(&[
                "tenant",
                "add",
                "c1.test",
                "--auto",
                "--region",
                "eu",
                "--failover",
                "respawn",
                "--process",
                "api",
                "--instance",
                "prod",
            ]),
            serde_json::json!({"domain": "c1.test", "auto": true, "region": "eu",
                               "failover": "respawn", "process": "api", "instance_id": "prod"})
        );
        let cli = parse(&["tenant", "update", "c1.test", "--failover", "none"]).expect("parses");
        let Command::Tenant(TenantCommand::Update(u)) = cli.command else {
            panic!("not tenant update");
        };
        assert_eq!(
            serde_json::to_value(TenantPatch::from(&u)).expect("json"),
            serde_json::json!({"failover": "none"})
        );
        let e = parse(&["tenant", "update", "c1.test"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = parse(&["tenant", "update", "c1.test", "--failover", "pray"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn spawn_auto_asks_for_another_region() {
        let cli = parse(&[
            "spawn",
            "c1",
            "--process",
            "api",
            "--instance",
            "backup",
            "--auto",
            "--other-region",
        ])
        .expect("parses");
        let Command::Spawn(a) = cli.command else {
            panic!("not spawn");
        };
        assert_eq!(
            serde_json::to_value(NewInstance::from(&a)).expect("json"),
            serde_json::json!({"tenant": "c1", "process": "api", "instance_id": "backup",
                               "auto": true, "distinct_region": true})
        );
        let e = parse(&["spawn", "c1", "--process", "api", "--instance", "b"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = parse(&[
            "spawn",
            "c1",
            "--process",
            "api",
            "--instance",
            "b",
            "--server",
            "s1",
            "--other-region",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn the_drain_progress_bar_template_is_valid() {
        assert!(drain_bar_style().is_ok());
    }

    #[test]
    fn a_drain_summary_counts_and_lists_what_happened() {
        let p = DrainProgress {
            server: "s1".into(),
            total: 2,
            moved: vec!["a:prod -> s2".into()],
            failed: vec!["b:prod: no usable server has 128 MB free".into()],
            rehomed: vec!["c.test -> s2".into()],
            done: true,
            ..Default::default()
        };
        assert_eq!(
            render_drain(&p),
            "drained server s1: moved 1, re-homed 1, failed 1\n\
             moved:\n  a:prod -> s2\n\
             re-homed:\n  c.test -> s2\n\
             failed:\n  b:prod: no usable server has 128 MB free"
        );
        let empty = DrainProgress {
            server: "s1".into(),
            done: true,
            ..Default::default()
        };
        assert_eq!(
            render_drain(&empty),
            "drained server s1: moved 0, re-homed 0, failed 0"
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let cli = parse(&["--token", "hunter2", "status"]).expect("parses");
        assert!(!format!("{cli:?}").contains("hunter2"));
    }

    #[test]
    fn api_base_defaults_and_adds_a_scheme() {
        assert_eq!(
            api_base(None).expect("ok").as_str(),
            "http://127.0.0.1:9090/"
        );
        assert_eq!(
            api_base(Some("10.1.2.3:9")).expect("ok").as_str(),
            "http://10.1.2.3:9/"
        );
        assert_eq!(
            api_base(Some("https://slum.example.com/x"))
                .expect("ok")
                .as_str(),
            "https://slum.example.com/x"
        );
        assert!(api_base(Some("ftp://x")).is_err());
    }

    #[test]
    fn endpoints_keep_a_base_path_and_escape_segments() {
        let c = ApiClient::new(
            api_base(Some("http://h:1/slum/")).expect("ok"),
            None,
            PathBuf::new(),
        )
        .expect("client");
        assert_eq!(
            c.endpoint(&["instances", "a:b"]).as_str(),
            "http://h:1/slum/v1/instances/a:b"
        );
        assert_eq!(
            c.endpoint(&["tenants", "a/b"]).as_str(),
            "http://h:1/slum/v1/tenants/a%2Fb"
        );
    }

    #[test]
    fn token_comes_from_the_flag_then_the_file_trimmed() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("token");
        assert_eq!(resolve_token(None, &file).expect("ok"), None);
        std::fs::write(&file, "  slum_abc\n").expect("write");
        assert_eq!(
            resolve_token(None, &file).expect("ok"),
            Some(Secret("slum_abc".into()))
        );
        assert_eq!(
            resolve_token(Some(Secret::from("flag".to_owned())), &file).expect("ok"),
            Some(Secret("flag".into()))
        );
        // An empty SLUM_TOKEN counts as unset.
        assert_eq!(
            resolve_token(Some(Secret::from(String::new())), &file).expect("ok"),
            Some(Secret("slum_abc".into()))
        );
        std::fs::write(&file, "\n").expect("write");
        assert_eq!(resolve_token(None, &file).expect("ok"), None);
    }

    #[test]
    fn api_errors_become_their_message() {
        let body = br#"{"error":{"kind":"not_found","message":"server 'east' not found","server":"east"}}"#;
        let e = api_error(StatusCode::NOT_FOUND, body);
        assert_eq!(e.to_string(), "server 'east' not found");
        assert!(matches!(e, CliError::Api { status: 404, ref kind, .. } if kind == "not_found"));
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(
            e.to_string(),
            "the API answered 502 Bad Gateway: <html>bad gateway</html>"
        );
        let e = api_error(StatusCode::INTERNAL_SERVER_ERROR, b"");
        assert_eq!(e.to_string(), "the API answered 500 Internal Server Error");
    }

    #[test]
    fn durations_and_ages_read_like_people_write_them() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(60), "1m");
        assert_eq!(format_duration(725), "12m 5s");
        assert_eq!(format_duration(3 * 3600 + 12 * 60 + 9), "3h 12m");
        assert_eq!(format_duration(7200), "2h");
        assert_eq!(format_duration(2 * 86_400 + 3 * 3600), "2d 3h");
        assert_eq!(format_ago(at(12), Some(at(0))), "12s ago");
        assert_eq!(format_ago(at(0), Some(at(5))), "just now");
        assert_eq!(format_ago(at(0), None), "never");
        assert_eq!(
            format_when(at(3 * 86_400), at(0)),
            "2023-11-14 22:13 UTC (3d ago)"
        );
    }

    fn server(id: &str, url: &str, used: i64) -> Server {
        Server {
            id: id.into(),
            url: url.into(),
            region: Some("us-east".into()),
            capacity_mb: 1024,
            status: ServerStatus::Online,
            last_seen: Some(at(-30)),
            used_capacity_mb: used,
            ..Default::default()
        }
    }

    #[test]
    fn server_table_aligns_columns() {
        let out = render_servers(
            &[
                server("east", "http://east.example.com:8000", 256),
                server("w", "http://w:1", 0),
            ],
            at(0),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("ID    URL"), "{out}");
        // Every column starts at the same offset on every line.
        let col = lines[0].find("REGION").expect("REGION");
        assert_eq!(&lines[1][col..col + 7], "us-east", "{out}");
        assert_eq!(&lines[2][col..col + 7], "us-east", "{out}");
        assert!(
            lines[1].contains("256 MB") && lines[1].contains("768 MB"),
            "{out}"
        );
        assert!(lines[1].ends_with("30s ago"), "{out}");
    }

    #[test]
    fn server_details_include_stats() {
        let stats = ServerStats {
            server_id: "east".into(),
            status: ServerStatus::Offline,
            capacity_mb: 1024,
            used_mb: 128,
            free_mb: 896,
            tenants: 3,
            instances: 2,
            reachable: false,
            running: None,
            error: Some("connection refused".into()),
            last_seen: None,
        };
        let out = render_server(
            &server("east", "http://east:8000", 128),
            Some(&stats),
            at(0),
        );
        assert!(out.contains("tenants:    3"), "{out}");
        assert!(out.contains("instances:  2\n"), "{out}");
        assert!(out.contains("reachable:  no: connection refused"), "{out}");
        assert!(
            out.contains("capacity:   128 MB used of 1024 MB (896 MB free)"),
            "{out}"
        );
        assert!(out.contains("domain:     east"), "{out}");
    }

    #[test]
    fn status_joins_last_seen_and_lists_errors() {
        let status = FleetStatus {
            servers: vec![ServerStats {
                server_id: "east".into(),
                status: ServerStatus::Online,
                capacity_mb: 1024,
                used_mb: 256,
                free_mb: 768,
                tenants: 4,
                instances: 2,
                reachable: false,
                running: None,
                error: Some("timed out".into()),
                last_seen: Some(at(-30)),
            }],
            tenants: 4,
            instances: 2,
            down_tenants: vec![DownTenant {
                domain: "acme.example.com".into(),
                tenant: "acme".into(),
                servers: vec!["east".into(), "west".into()],
            }],
        };
        let out = render_status(&status, at(0));
        let row = out.lines().nth(1).expect("row");
        for cell in [
            "east", "online", "30s ago", "256 MB", "1024 MB", "768 MB", "no",
        ] {
            assert!(row.contains(cell), "{cell} missing in {row}");
        }
        assert!(out.contains("\neast: timed out"), "{out}");
        assert!(
            out.contains("down: 1 domain(s) whose servers are offline\nDOMAIN"),
            "{out}"
        );
        let down = out
            .lines()
            .find(|l| l.starts_with("acme.example.com"))
            .expect("down row");
        assert_eq!(
            down.split_whitespace().collect::<Vec<_>>(),
            ["acme.example.com", "acme", "east,", "west"]
        );
        let quiet = render_status(
            &FleetStatus {
                down_tenants: vec![],
                ..status.clone()
            },
            at(0),
        );
        assert!(!quiet.contains("down:"), "{quiet}");
        assert!(
            out.ends_with("1 server(s), 4 tenant(s), 2 instance(s)"),
            "{out}"
        );
    }

    #[test]
    fn instances_show_key_state_health_uptime_memory() {
        let inst = InstanceStatus {
            instance: Instance {
                tenant: "c1".into(),
                instance_id: "prod".into(),
                process: "api".into(),
                server_id: "s1".into(),
                memory_mb: 128,
                ..Default::default()
            },
            state: crate::InstanceState::Running,
            health: Some("healthy".into()),
            uptime_secs: Some(125),
            restarts: Some(0),
            error: None,
        };
        let out = render_instances(&[inst]);
        let row = out.lines().nth(1).expect("row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["c1:prod", "api", "s1", "running", "healthy", "2m", "5s", "128", "MB"]
        );
    }

    #[test]
    fn reconcile_report_lists_what_it_did() {
        assert_eq!(
            render_reconcile(&ReconcileReport::default()),
            "nothing to do: the fleet runs what it should"
        );
        let r = ReconcileReport {
            respawned: vec!["c1:prod".into()],
            unreachable: vec!["s2: connection refused".into()],
            ..Default::default()
        };
        assert_eq!(
            render_reconcile(&r),
            "respawned:\n  c1:prod\nunreachable:\n  s2: connection refused"
        );
    }
}
