//! The command line's arguments, as clap derive types: the global flags, one
//! subcommand per resource, and the request bodies they turn into (the
//! management API's [`wire`](crate::api::wire) types). Parsing is all clap's;
//! the few values checked here (an instance key, a token file) fail before any
//! request is sent.

use std::fmt;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use super::error::CliError;
use crate::api::wire::{
    FailoverPolicy, LogsQuery, NewInstance, NewServer, NewTenant, PutCertificate, ServerPatch,
    ServerStatus, TenantPatch,
};
use crate::serve::{DatabaseLocation, ServeArgs};

#[cfg(test)]
mod tests;

/// slum: a fleet orchestrator for tenement servers.
#[derive(Debug, Parser)]
#[command(name = "slum", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub(super) global: GlobalArgs,
    #[command(subcommand)]
    pub(super) command: Command,
}

/// The command line's definition as `slum` runs it (and as its completions
/// and man page describe it): clap's, with the client flags hidden from `slum
/// serve`'s help, which they do not apply to.
pub fn command() -> clap::Command {
    use clap::{Arg, ArgAction, CommandFactory};
    // A subcommand's own arg of a global's id takes the global's place there
    // (clap propagates a global only where its id is free): hidden, of the
    // global's type, these keep the client flags out of serve's help.
    Cli::command().mut_subcommand("serve", |serve| {
        serve
            .arg(
                Arg::new("api")
                    .long("api")
                    .hide(true)
                    .value_parser(clap::value_parser!(String)),
            )
            .arg(
                Arg::new("token")
                    .long("token")
                    .hide(true)
                    .value_parser(clap::value_parser!(Secret)),
            )
            .arg(
                Arg::new("json")
                    .long("json")
                    .hide(true)
                    .action(ArgAction::SetTrue),
            )
    })
}

impl Cli {
    /// Parses the process's arguments with [`command`]; exits (as clap does)
    /// on a usage error, `--help` or `--version`.
    pub fn parse_args() -> Cli {
        use clap::FromArgMatches;
        let matches = command().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// Whether this runs the server (which logs at `info` by default) rather than
    /// a client command (which logs only warnings).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// Flags of every client command.
#[derive(Debug, Clone, Args)]
pub(super) struct GlobalArgs {
    /// Management API of `slum serve` [default: http://127.0.0.1:9090].
    #[arg(long, env = "SLUM_API", value_name = "URL", global = true)]
    pub(super) api: Option<String>,
    /// API token of `slum serve`'s management API (the tenement server's is
    /// --ten-token). Without it, the file `slum serve` writes on first start
    /// is read ($SLUM_TOKEN_FILE or $XDG_CONFIG_HOME/slum/token).
    #[arg(
        long,
        env = "SLUM_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub(super) token: Option<Secret>,
    /// Print the API's JSON (pretty) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub(super) json: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
    /// Instances fleet-wide, as their servers report them now (a page of
    /// them: see --limit, --after, --all).
    Ps {
        /// Only the instances on this server.
        #[arg(long, value_name = "ID")]
        server: Option<String>,
        #[command(flatten)]
        paging: PagingArgs,
    },
    /// Servers with their health, capacity and counts (a page of them), the
    /// fleet's record counts, and the tenants whose servers are down.
    Status {
        #[command(flatten)]
        paging: PagingArgs,
    },
    /// Management API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// TLS certificates of the customer domains: brought by an operator, or
    /// ordered from the ACME CA.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Make what runs equal to what should run: respawn missing instances and
    /// complete pending stops.
    Reconcile,
    /// The busiest tenants now (the last minute, through the router of the
    /// `slum serve` asked): requests per second, errors, p50 and p99
    /// latency; refreshed every 2 s until Ctrl-C.
    Top(TopArgs),
    /// What the fleet did: health transitions, spawns, stops, moves, drains,
    /// failovers, reconcile actions, token and certificate changes, with
    /// their cause and the router that made them (the newest 100 unless
    /// told; oldest first). With -f, new ones as they come.
    Events(EventsArgs),
    /// An instance's output (the newest 100 lines unless told), wherever it
    /// runs, from its server's tenement; with -f, new lines as they come,
    /// following the instance when it moves or fails over.
    Logs(LogsArgs),
    /// Print the completion script of a shell, made from this command line
    /// (e.g. `slum completions bash > /etc/bash_completion.d/slum`, `slum
    /// completions zsh > "${fpath[1]}/_slum"`, `slum completions fish >
    /// ~/.config/fish/completions/slum.fish`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print slum's man page (roff), made from this command line (e.g. `slum
    /// man > /usr/local/share/man/man1/slum.1`); with --dir, write it and one
    /// page per subcommand (slum-serve.1, slum-server-add.1, ...) there.
    Man {
        /// Write every page into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Args)]
pub(super) struct EventsArgs {
    /// Only the events of this server.
    #[arg(long, value_name = "ID")]
    pub(super) server: Option<String>,
    /// Only the events of this tenant (its name, or one of its domains).
    #[arg(long, value_name = "T")]
    pub(super) tenant: Option<String>,
    /// Only those since then: a duration back (90s, 15m, 2h, 7d) or an RFC
    /// 3339 time.
    #[arg(long, value_name = "DUR", value_parser = parse_since_arg)]
    pub(super) since: Option<String>,
    /// At most this many (1 to 10000; the newest, or with --since the
    /// first).
    #[arg(long, value_name = "N")]
    pub(super) limit: Option<u32>,
    /// Keep watching: print new events as they are recorded (Ctrl-C ends).
    #[arg(short, long)]
    pub(super) follow: bool,
}

#[derive(Debug, Clone, Args)]
pub(super) struct LogsArgs {
    /// The instance: TENANT:INSTANCE, or TENANT (a name or one of its
    /// domains) for the tenant's own instance.
    #[arg(value_name = "TENANT[:INSTANCE]")]
    pub(super) target: String,
    /// Keep following: print new lines as they are written, on whichever
    /// server the instance runs (Ctrl-C ends).
    #[arg(short, long)]
    pub(super) follow: bool,
    /// Only lines since then: a duration back (90s, 15m, 2h, 7d) or an RFC
    /// 3339 time.
    #[arg(long, value_name = "DUR", value_parser = parse_since_arg)]
    pub(super) since: Option<String>,
    /// Only lines containing this text (case-sensitive).
    #[arg(long, value_name = "TEXT")]
    pub(super) grep: Option<String>,
    /// Only the standard error.
    #[arg(long, conflicts_with = "stdout")]
    pub(super) stderr: bool,
    /// Only the standard output.
    #[arg(long)]
    pub(super) stdout: bool,
    /// At most this many lines, the newest (1 to 10000; default 100).
    #[arg(long, value_name = "N")]
    pub(super) limit: Option<u32>,
}

impl LogsArgs {
    /// The tenant and, if given, the instance id.
    pub(super) fn tenant_and_instance(&self) -> (&str, Option<&str>) {
        match self.target.split_once(':') {
            Some((tenant, instance)) => (tenant, Some(instance)),
            None => (&self.target, None),
        }
    }

    /// The API's query of these flags.
    pub(super) fn query(&self, follow: bool) -> LogsQuery {
        let (_, instance) = self.tenant_and_instance();
        LogsQuery {
            instance: instance.map(str::to_owned),
            since: self.since.clone(),
            grep: self.grep.clone(),
            stream: if self.stderr {
                Some("stderr".to_owned())
            } else if self.stdout {
                Some("stdout".to_owned())
            } else {
                None
            },
            limit: self.limit.map(|n| n.to_string()),
            follow: follow.then(|| "true".to_owned()),
        }
    }
}

/// A `--since` the API will take, checked before any request.
fn parse_since_arg(s: &str) -> Result<String, String> {
    crate::api::wire::parse_since(s, chrono::Utc::now()).map(|_| s.to_owned())
}

/// `slum top`.
#[derive(Debug, Clone, Args)]
pub(super) struct TopArgs {
    /// Tenants shown (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(super) limit: u32,
    /// Print the table once and exit (as `--json` does).
    #[arg(long)]
    pub(super) once: bool,
    /// Seconds between refreshes.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub(super) interval: f64,
    /// Show the servers (requests per second and latency from this router to
    /// each) instead of the tenants.
    #[arg(long)]
    pub(super) servers: bool,
}

/// Which page of a list: the API's first page by default (1000 records),
/// which says how to get the next.
#[derive(Debug, Clone, Default, clap::Args)]
pub(super) struct PagingArgs {
    /// At most this many records (1 to 10000; the API's default is 1000).
    #[arg(long, value_name = "N")]
    pub(super) limit: Option<u32>,
    /// Start after this key (a domain, a server id, TENANT:INSTANCE): the
    /// key the previous page said to pass.
    #[arg(long, value_name = "KEY", conflicts_with = "all")]
    pub(super) after: Option<String>,
    /// Every record, page after page.
    #[arg(long)]
    pub(super) all: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum ServerCommand {
    /// Add a tenement server to the fleet.
    Add(ServerAddArgs),
    /// List the fleet's servers (a page of them: see --limit, --after, --all).
    List {
        #[command(flatten)]
        paging: PagingArgs,
    },
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
    /// Take a server out of placements, leaving what runs there running and
    /// routed (as `kubectl cordon`): no spawn, move, automatic placement or
    /// failover puts anything new on it until `uncordon`. Health checks never
    /// lift a cordon.
    Cordon {
        /// Server id.
        id: String,
    },
    /// Lift a server's cordon: it takes placements again.
    Uncordon {
        /// Server id.
        id: String,
    },
}

/// The tenement server's admin token, given inline or read from a file.
/// (`--token` is the management API's, for every command.)
#[derive(Debug, Clone, Args)]
pub(super) struct TenementTokenArgs {
    /// Admin API token of the tenement server (`ten token-gen`).
    #[arg(
        long = "ten-token",
        value_name = "T",
        conflicts_with = "ten_token_file"
    )]
    pub(super) ten_token: Option<Secret>,
    /// File holding the tenement server's admin token (keeps it out of `ps`).
    #[arg(long = "ten-token-file", value_name = "F")]
    pub(super) ten_token_file: Option<PathBuf>,
}

impl TenementTokenArgs {
    /// The token, read from the file when one was given.
    fn resolve(&self) -> Result<Option<String>, CliError> {
        if let Some(t) = &self.ten_token {
            return Ok(Some(t.expose().to_owned()));
        }
        match &self.ten_token_file {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim().to_owned()))
                .map_err(|e| {
                    CliError::Local(format!(
                        "cannot read --ten-token-file {}: {e}",
                        path.display()
                    ))
                }),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub(super) struct ServerAddArgs {
    /// Server id, a DNS label (e.g. east-1).
    pub(super) id: String,
    /// Base URL of the server's tenement API and proxy.
    #[arg(long)]
    pub(super) url: String,
    /// Region (e.g. us-east).
    #[arg(long)]
    pub(super) region: Option<String>,
    /// Memory the server offers to instances, in MB.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub(super) capacity_mb: i64,
    #[command(flatten)]
    pub(super) token: TenementTokenArgs,
    /// The --domain tenement routes by (default: the host of --url).
    #[arg(long)]
    pub(super) domain: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["url", "region", "capacity_mb", "ten_token", "ten_token_file", "domain", "status"])
))]
pub(super) struct ServerUpdateArgs {
    /// Server id.
    pub(super) id: String,
    #[arg(long)]
    pub(super) url: Option<String>,
    #[arg(long)]
    pub(super) region: Option<String>,
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub(super) capacity_mb: Option<i64>,
    #[command(flatten)]
    pub(super) token: TenementTokenArgs,
    #[arg(long)]
    pub(super) domain: Option<String>,
    /// Status now; health checks take it from there (an offline server that
    /// answers is back online after two good checks). `draining` stops new
    /// placements until an undrain; to keep placements off a server for
    /// good, use `server cordon`.
    #[arg(long, value_enum)]
    pub(super) status: Option<StatusArg>,
}

/// The server states an operator may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum StatusArg {
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
pub(super) enum TenantCommand {
    /// Route a customer domain to a tenant's instance on a home server, or (with
    /// --auto) on the usable server with the most free room, started there.
    Add(TenantAddArgs),
    /// List the customer domains (a page of them: see --limit, --after,
    /// --all).
    List {
        /// Only the domains whose home is this server.
        #[arg(long, value_name = "ID")]
        server: Option<String>,
        #[command(flatten)]
        paging: PagingArgs,
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
    /// Stop routing a customer domain. Its instance keeps running (with its
    /// memory reserved) unless --stop, and is named when no other domain
    /// routes to it.
    Remove {
        /// Customer domain.
        domain: String,
        /// Stop the domain's instance too, when no other domain of its
        /// tenant's process is left to route to it.
        #[arg(long)]
        stop: bool,
    },
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("placement").required(true).args(["server", "auto"])))]
pub(super) struct TenantAddArgs {
    /// Customer domain (e.g. customer-1.example.com).
    pub(super) domain: String,
    /// Home server id.
    #[arg(long, value_name = "ID")]
    pub(super) server: Option<String>,
    /// Let slum choose the home: the usable server with the most free room (in
    /// --region when given); the instance is started there.
    #[arg(long)]
    pub(super) auto: bool,
    /// With --auto: only servers of this region.
    #[arg(long, value_name = "R", conflicts_with = "server")]
    pub(super) region: Option<String>,
    /// When the instance's server goes offline and there is no backup: wait for
    /// it (none, the default) or start it elsewhere (respawn).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub(super) failover: Option<FailoverArg>,
    /// Process name (e.g. api).
    #[arg(long, value_name = "P")]
    pub(super) process: String,
    /// Instance id (e.g. prod).
    #[arg(long, value_name = "I")]
    pub(super) instance: String,
    /// Tenant name (default: the first label of the domain, unless that is
    /// already the name of a tenant in another registrable domain: then give
    /// it, to join that tenant or to pick another name).
    #[arg(long, value_name = "N")]
    pub(super) name: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["failover"])
))]
pub(super) struct TenantUpdateArgs {
    /// Customer domain.
    pub(super) domain: String,
    /// When the instance's server goes offline and there is no backup: wait for
    /// it (none) or start it elsewhere (respawn).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub(super) failover: Option<FailoverArg>,
}

/// A tenant's failover policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum FailoverArg {
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
pub(super) struct SpawnArgs {
    /// Tenant name.
    pub(super) tenant: String,
    /// Process name.
    #[arg(long, value_name = "P")]
    pub(super) process: String,
    /// Instance id.
    #[arg(long, value_name = "I")]
    pub(super) instance: String,
    /// Server to start it on.
    #[arg(long, value_name = "S")]
    pub(super) server: Option<String>,
    /// Let slum choose the server: the usable one with the most free room that
    /// holds no other instance of the tenant's process.
    #[arg(long)]
    pub(super) auto: bool,
    /// With --auto: only servers of this region.
    #[arg(long, value_name = "R", conflicts_with = "server")]
    pub(super) region: Option<String>,
    /// With --auto: never a region that already holds an instance of the
    /// tenant's process (a backup that survives the loss of a region).
    #[arg(long, conflicts_with = "server")]
    pub(super) other_region: bool,
    /// Memory to reserve, in MB (default: the server's --default-memory-mb).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub(super) memory_mb: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub(super) enum CertCommand {
    /// Store a certificate (a chain, leaf first, and its key) under a domain
    /// or a wildcard (*.example.com covers one label), replacing any of that
    /// name. Refused unless the key is the leaf's, the leaf covers the name
    /// and has not expired.
    Add(CertAddArgs),
    /// List the certificates: source, state, expiry, next try and the last
    /// error (a page of them: see --limit, --after, --all).
    List {
        #[command(flatten)]
        paging: PagingArgs,
    },
    /// One certificate.
    Show {
        /// Domain or wildcard.
        name: String,
    },
    /// Remove a certificate; the routers stop serving it.
    Remove {
        /// Domain or wildcard.
        name: String,
    },
    /// Have the fleet order a certificate for a tenant domain from its ACME
    /// CA (slum serve --acme-directory); renewed by slum.
    Order {
        /// A tenant's domain.
        domain: String,
    },
}

#[derive(Debug, Clone, Args)]
pub(super) struct CertAddArgs {
    /// Domain (shop.example.com) or wildcard (*.example.com).
    pub(super) name: String,
    /// PEM file of the certificate chain, leaf first.
    #[arg(long, value_name = "FILE")]
    pub(super) cert: PathBuf,
    /// PEM file of the leaf's private key (sent to the API, never printed).
    #[arg(long, value_name = "FILE")]
    pub(super) key: PathBuf,
    /// Redirect plain HTTP for this name to HTTPS (on) or not (off); left
    /// out, the fleet's default (slum serve --https-redirect).
    #[arg(long, value_enum, value_name = "on|off")]
    pub(super) redirect: Option<OnOff>,
}

/// A switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
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
    /// Make a new admin token when the old one is lost, offline: run on the
    /// machine of the fleet database (no API needed). Prints the new token (or
    /// writes it to --token-file), revokes the previous admin tokens (named
    /// `bootstrap`, from `slum serve`, or `admin`, from an earlier reset) and
    /// keeps every other (`slum token create ...`) unless --revoke-all.
    Reset(TokenResetArgs),
}

#[derive(Debug, Clone, Args)]
pub(super) struct TokenResetArgs {
    /// The fleet database: a SQLite file (which must exist), or a
    /// `postgres://` URL.
    #[arg(long, env = "SLUM_DATABASE", value_name = "PATH")]
    pub(super) database: DatabaseLocation,
    /// Revoke every other token too (a token may have leaked).
    #[arg(long)]
    pub(super) revoke_all: bool,
    /// Write the new token to this file (mode 0600, replacing what it holds)
    /// instead of printing it; e.g. the CLI's default token file.
    #[arg(long, value_name = "FILE")]
    pub(super) token_file: Option<PathBuf>,
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
pub(super) struct Secret(String);

impl Secret {
    pub(super) fn expose(&self) -> &str {
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

// ----- the request bodies the arguments make -----

impl ServerAddArgs {
    /// The body of `POST /v1/servers`.
    pub(super) fn body(&self) -> Result<NewServer, CliError> {
        Ok(NewServer {
            id: self.id.clone(),
            url: self.url.clone(),
            region: self.region.clone(),
            capacity_mb: self.capacity_mb,
            token: self.token.resolve()?,
            domain: self.domain.clone(),
        })
    }
}

impl ServerUpdateArgs {
    /// The body of `PATCH /v1/servers/{id}`: only the fields given. The CLI
    /// sets values and never clears one (`null`).
    pub(super) fn patch(&self) -> Result<ServerPatch, CliError> {
        Ok(ServerPatch {
            url: self.url.clone(),
            region: self.region.clone().map(Some),
            capacity_mb: self.capacity_mb,
            token: self.token.resolve()?.map(Some),
            domain: self.domain.clone().map(Some),
            status: self.status.map(ServerStatus::from),
        })
    }
}

impl TenantAddArgs {
    /// The body of `POST /v1/tenants`.
    pub(super) fn body(&self) -> NewTenant {
        NewTenant {
            domain: self.domain.clone(),
            name: self.name.clone(),
            server_id: self.server.clone(),
            process: self.process.clone(),
            instance_id: self.instance.clone(),
            auto: self.auto,
            region: self.region.clone(),
            failover: self.failover.map(FailoverPolicy::from),
        }
    }
}

impl TenantUpdateArgs {
    /// The body of `PATCH /v1/tenants/{domain}`: only the fields given.
    pub(super) fn patch(&self) -> TenantPatch {
        TenantPatch {
            failover: self.failover.map(FailoverPolicy::from),
            ..Default::default()
        }
    }
}

impl SpawnArgs {
    /// The body of `POST /v1/instances`.
    pub(super) fn body(&self) -> NewInstance {
        NewInstance {
            tenant: self.tenant.clone(),
            process: self.process.clone(),
            instance_id: self.instance.clone(),
            server_id: self.server.clone(),
            memory_mb: self.memory_mb,
            auto: self.auto,
            region: self.region.clone(),
            distinct_region: self.other_region,
        }
    }
}

impl CertAddArgs {
    /// The body of `PUT /v1/certificates/{name}`, with the files' contents. A
    /// file that cannot be read is named; its contents never are.
    pub(super) fn body(&self) -> Result<PutCertificate, CliError> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|e| CliError::Local(format!("cannot read {flag} {}: {e}", path.display())))
        };
        Ok(PutCertificate {
            cert_pem: read("--cert", &self.cert)?,
            key_pem: read("--key", &self.key)?,
            redirect: self.redirect.map(|r| r == OnOff::On),
        })
    }
}
