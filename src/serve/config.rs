//! `slum serve`'s settings: flags, then `SLUM_*` environment variables, then
//! an optional TOML file (`--config`), then defaults, resolved into one
//! [`ServeConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::descriptors::DefaultCaps;
use crate::fleet::db::FleetOptions;
use crate::fleet::events::EventRetention;
use crate::orchestrate::acme::{AcmeConfig, ChallengeKind, ExternalAccount};
use crate::orchestrate::health::HealthPolicy;
use crate::router::{MinRate, RouterConfig};
use crate::tls::ServerRoots;

/// Where the fleet database is: a SQLite file, or a `postgres://` URL whose
/// password never shows in `Debug` or `Display` (both print it redacted).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseLocation(PathBuf);

impl DatabaseLocation {
    /// The location as given (with its password, for connecting).
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for DatabaseLocation {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl From<PathBuf> for DatabaseLocation {
    fn from(p: PathBuf) -> Self {
        DatabaseLocation(p)
    }
}

impl std::str::FromStr for DatabaseLocation {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseLocation(PathBuf::from(s)))
    }
}

impl std::fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::fleet::store::redacted(&self.0.to_string_lossy()))
    }
}

impl std::fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// A setting that is a secret (an ACME External Account Binding key): `Debug`
/// prints `Secret(..)`, so that it never reaches a log with the settings.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `slum serve` flags. Every one can also be set by environment variable or in
/// the TOML file given with `--config` (same names, with `_` for `-`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML file with settings (flags and environment take precedence; see
    /// contrib/slum.toml) [default: none]
    #[arg(long, env = "SLUM_CONFIG")]
    pub config: Option<PathBuf>,
    /// The fleet database: a SQLite file, or a `postgres://` URL [default:
    /// slum.db]
    #[arg(long, env = "SLUM_DATABASE")]
    pub database: Option<DatabaseLocation>,
    /// Public listener of the router [default: 0.0.0.0:8080]
    #[arg(long, env = "SLUM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Listener of the management API (keep it private) [default:
    /// 127.0.0.1:9090]
    #[arg(long, env = "SLUM_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Where the first admin token is written when the database has none (a
    /// file that already holds a token, another fleet's, is never overwritten)
    /// [default: $XDG_CONFIG_HOME/slum/token, else ~/.config/slum/token]
    #[arg(long, env = "SLUM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Memory reserved per instance when a spawn does not say, in MB
    /// [default: 128]
    #[arg(long, env = "SLUM_DEFAULT_MEMORY_MB")]
    pub default_memory_mb: Option<i64>,
    /// Seconds allowed to read a request's headers [default: 10]
    #[arg(long, env = "SLUM_HEADER_TIMEOUT")]
    pub header_timeout: Option<f64>,
    /// Seconds allowed to connect to a tenement server [default: 1]
    #[arg(long, env = "SLUM_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<f64>,
    /// Seconds allowed for a tenement server's response head (and the body
    /// of a small answer read whole, see --whole-response-bytes), counted
    /// from the last bytes of the request it was sent [default: 60]
    #[arg(long, env = "SLUM_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: Option<f64>,
    /// Seconds a client may leave a body standing still: not sending the
    /// rest of its request body, or not taking its answer [default: 60]
    #[arg(long, env = "SLUM_BODY_TIMEOUT")]
    pub body_timeout: Option<f64>,
    /// Bytes per second a request body must average, over the time it was
    /// waited for, once that time passes --body-rate-grace (0: no lowest
    /// rate) [default: 500]
    #[arg(long, env = "SLUM_BODY_MIN_RATE")]
    pub body_min_rate: Option<u64>,
    /// Seconds a request body may be waited for before --body-min-rate
    /// applies [default: 20]
    #[arg(long, env = "SLUM_BODY_RATE_GRACE")]
    pub body_rate_grace: Option<f64>,
    /// Largest response body, in bytes (by its Content-Length), to a GET
    /// without a body that is read whole before the response head goes to the
    /// client: a server that fails between the two then fails the exchange,
    /// and the GET goes to a backup, instead of the client getting a head with
    /// no body. 0: every head goes on at once [default: 65536]
    #[arg(long, env = "SLUM_WHOLE_RESPONSE_BYTES")]
    pub whole_response_bytes: Option<u64>,
    /// Client connections open at once [default: from the descriptor limit]
    #[arg(long, env = "SLUM_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Client connections open at once from one address, an IPv6 /64
    /// counting as one [default: from the descriptor limit]
    #[arg(long, env = "SLUM_MAX_CONNECTIONS_PER_CLIENT")]
    pub max_connections_per_client: Option<usize>,
    /// Requests in flight to one server [default: from the descriptor
    /// limit]
    #[arg(long, env = "SLUM_MAX_IN_FLIGHT_PER_SERVER")]
    pub max_in_flight_per_server: Option<usize>,
    /// Requests in flight from one client address [default: from the
    /// descriptor limit]
    #[arg(long, env = "SLUM_MAX_IN_FLIGHT_PER_CLIENT")]
    pub max_in_flight_per_client: Option<usize>,
    /// PEM file of CA certificates trusted for https:// server urls, besides
    /// the public roots (a private CA) [default: none]
    #[arg(long, env = "SLUM_SERVER_CA")]
    pub server_ca: Option<PathBuf>,
    /// Largest request head accepted, in bytes [default: 65536]
    #[arg(long, env = "SLUM_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Most options a request's Connection header(s) may list; a head with
    /// more is refused (400) [default: 32]
    #[arg(long, env = "SLUM_MAX_CONNECTION_OPTIONS")]
    pub max_connection_options: Option<usize>,
    /// Seconds allowed for a spawn to become healthy [default: 30]
    #[arg(long, env = "SLUM_SPAWN_TIMEOUT")]
    pub spawn_timeout: Option<f64>,
    /// Seconds between checks for route changes made by other processes
    /// [default: 0.25]
    #[arg(long, env = "SLUM_ROUTE_POLL")]
    pub route_poll: Option<f64>,
    /// Seconds in-flight requests get to finish on SIGTERM [default: 30]
    #[arg(long, env = "SLUM_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<f64>,
    /// Seconds between health checks of every server [default: 1]
    #[arg(long, env = "SLUM_HEALTH_INTERVAL")]
    pub health_interval: Option<f64>,
    /// Seconds a health check may take [default: 1]
    #[arg(long, env = "SLUM_HEALTH_TIMEOUT")]
    pub health_timeout: Option<f64>,
    /// Consecutive failed checks that make a server offline [default: 2]
    #[arg(long, env = "SLUM_FAIL_AFTER")]
    pub fail_after: Option<u32>,
    /// Consecutive good checks that bring an offline server back [default:
    /// 2]
    #[arg(long, env = "SLUM_RECOVER_AFTER")]
    pub recover_after: Option<u32>,
    /// Seconds between reconcile runs [default: 30]
    #[arg(long, env = "SLUM_RECONCILE_INTERVAL")]
    pub reconcile_interval: Option<f64>,
    /// Seconds a move keeps the old copy after switching the route [default:
    /// 2]
    #[arg(long, env = "SLUM_MOVE_GRACE")]
    pub move_grace: Option<f64>,
    /// Threads that proxy requests, each with its own single-threaded runtime
    /// and connection pools. The management API and the background work run
    /// apart from them [default: one per CPU]
    #[arg(long, env = "SLUM_ROUTER_THREADS")]
    pub router_threads: Option<usize>,
    /// ACME directory URL of the CA that issues certificates for tenant
    /// domains (Let's Encrypt's is
    /// <https://acme-v02.api.letsencrypt.org/directory>). Off unless set; the
    /// leading router then orders a certificate for each tenant domain
    /// [default: none]
    #[arg(long, env = "SLUM_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// Contact address of the ACME account (the CA's expiry notices)
    /// [default: none]
    #[arg(long, env = "SLUM_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// External Account Binding key id, for a CA that requires one (with
    /// --acme-eab-hmac) [default: none]
    #[arg(long, env = "SLUM_ACME_EAB_KID")]
    pub acme_eab_kid: Option<String>,
    /// External Account Binding HMAC key, base64url as the CA gives it. A
    /// secret: never logged [default: none]
    #[arg(long, env = "SLUM_ACME_EAB_HMAC", hide_env_values = true)]
    pub acme_eab_hmac: Option<Secret>,
    /// PEM file of a private CA trusted for the ACME directory's https://,
    /// besides the public roots (a private ACME server) [default: none]
    #[arg(long, env = "SLUM_ACME_CA")]
    pub acme_ca: Option<PathBuf>,
    /// The challenge the CA checks: http-01 (answered on --listen, which the
    /// CA reaches on port 80) or tls-alpn-01 (on --tls-listen, port 443)
    /// [default: http-01]
    #[arg(long, env = "SLUM_ACME_CHALLENGE")]
    pub acme_challenge: Option<ChallengeKind>,
    /// Seconds before a failed order is tried again; doubled with each
    /// failure in a row, up to --acme-retry-max [default: 60]
    #[arg(long, env = "SLUM_ACME_RETRY_MIN")]
    pub acme_retry_min: Option<f64>,
    /// The longest wait, in seconds, between orders that keep failing
    /// [default: 86400]
    #[arg(long, env = "SLUM_ACME_RETRY_MAX")]
    pub acme_retry_max: Option<f64>,
    /// HTTPS listener of the router (e.g. 0.0.0.0:443); none unless set.
    /// Certificates are the fleet's (`slum cert`), chosen by SNI [default:
    /// none]
    #[arg(long, env = "SLUM_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// Redirect plain requests for hosts with a valid certificate to HTTPS
    /// (308), unless their certificate says otherwise; only with
    /// --tls-listen [default: false]
    #[arg(long, env = "SLUM_HTTPS_REDIRECT", num_args = 0..=1, default_missing_value = "true")]
    pub https_redirect: Option<bool>,
    /// Strict-Transport-Security max-age, in seconds, on HTTPS answers
    /// [default: none]
    #[arg(long, env = "SLUM_HSTS")]
    pub hsts: Option<u64>,
    /// HTTP/2 streams a client connection may have open at once [default:
    /// 128]
    #[arg(long, env = "SLUM_H2_MAX_STREAMS")]
    pub h2_max_streams: Option<u32>,
    /// Days the fleet's events are kept (`slum events`) [default: 7].
    #[arg(long, env = "SLUM_EVENT_DAYS")]
    pub event_days: Option<f64>,
    /// Most events kept; the oldest beyond go [default: 1000000].
    #[arg(long, env = "SLUM_MAX_EVENTS")]
    pub max_events: Option<i64>,
}

/// The settings file; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    database: Option<DatabaseLocation>,
    listen: Option<SocketAddr>,
    api_listen: Option<SocketAddr>,
    token_file: Option<PathBuf>,
    default_memory_mb: Option<i64>,
    header_timeout: Option<f64>,
    connect_timeout: Option<f64>,
    upstream_timeout: Option<f64>,
    body_timeout: Option<f64>,
    body_min_rate: Option<u64>,
    body_rate_grace: Option<f64>,
    whole_response_bytes: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    max_in_flight_per_server: Option<usize>,
    max_in_flight_per_client: Option<usize>,
    server_ca: Option<PathBuf>,
    max_header_bytes: Option<usize>,
    max_connection_options: Option<usize>,
    spawn_timeout: Option<f64>,
    route_poll: Option<f64>,
    shutdown_grace: Option<f64>,
    health_interval: Option<f64>,
    health_timeout: Option<f64>,
    fail_after: Option<u32>,
    recover_after: Option<u32>,
    reconcile_interval: Option<f64>,
    move_grace: Option<f64>,
    router_threads: Option<usize>,
    acme_directory: Option<String>,
    acme_email: Option<String>,
    acme_eab_kid: Option<String>,
    acme_eab_hmac: Option<Secret>,
    acme_ca: Option<PathBuf>,
    acme_challenge: Option<String>,
    acme_retry_min: Option<f64>,
    acme_retry_max: Option<f64>,
    tls_listen: Option<SocketAddr>,
    https_redirect: Option<bool>,
    hsts: Option<u64>,
    h2_max_streams: Option<u32>,
    event_days: Option<f64>,
    max_events: Option<i64>,
}

/// Resolved settings of `slum serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub database: DatabaseLocation,
    pub listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub token_file: PathBuf,
    pub fleet: FleetOptions,
    pub header_timeout: Duration,
    pub upstream_timeout: Duration,
    pub body_timeout: Duration,
    /// The lowest request body rate; `None` when set to 0.
    pub min_body_rate: Option<MinRate>,
    /// See [`ServeArgs::whole_response_bytes`].
    pub whole_response_bytes: u64,
    /// The router's caps as set; those left out are derived from the
    /// descriptor limit when `slum serve` starts (see `ServeConfig::router`).
    pub caps: Caps,
    pub max_header_bytes: usize,
    pub max_connection_options: usize,
    pub route_poll: Duration,
    pub shutdown_grace: Duration,
    pub health: HealthPolicy,
    pub reconcile_interval: Duration,
    /// Router threads (at least one).
    pub router_threads: usize,
    /// Certificates ordered from an ACME CA, when `acme_directory` is set.
    pub acme: Option<AcmeConfig>,
    /// The HTTPS listener, if any.
    pub tls_listen: Option<SocketAddr>,
    /// Plain requests for hosts with a valid certificate go to HTTPS by
    /// default.
    pub https_redirect: bool,
    /// HSTS max-age on HTTPS answers, if any.
    pub hsts: Option<Duration>,
    /// HTTP/2 streams a client connection may have open at once.
    pub h2_max_streams: u32,
    /// How long and how many of the fleet's events are kept.
    pub events: EventRetention,
}

/// HTTP/2 streams a client connection may have open at once by default
/// (nginx's `http2_max_concurrent_streams`).
pub const DEFAULT_H2_MAX_STREAMS: u32 = 128;

/// The router's caps as the settings give them; `None`: derived from the
/// descriptor limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub max_in_flight_per_server: Option<usize>,
    pub max_in_flight_per_client: Option<usize>,
}

/// The lowest body rate's defaults: Apache's `mod_reqtimeout`
/// (`body=20,MinRate=500`).
const BODY_MIN_RATE: u64 = 500;
const BODY_RATE_GRACE: f64 = 20.0;

/// The default fleet database path: `slum.db` in the working directory.
pub fn default_database() -> PathBuf {
    PathBuf::from("slum.db")
}

/// Where `slum serve` writes, and the CLI reads, the local admin token:
/// `$XDG_CONFIG_HOME/slum/token`, or `~/.config/slum/token`.
pub fn default_token_file() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("slum/token")
}

/// The most options a request's `Connection` header(s) may list by default.
/// Browsers and clients send one or two (`keep-alive`, `Upgrade`); each
/// option is a header the router may have to take out.
pub const DEFAULT_MAX_CONNECTION_OPTIONS: usize = 32;

/// Responses to a bodiless GET up to this size are read whole before their
/// head goes on (see [`ServeArgs::whole_response_bytes`]).
pub const DEFAULT_WHOLE_RESPONSE_BYTES: u64 = 64 * 1024;

/// The default management API address.
pub const DEFAULT_API: &str = "127.0.0.1:9090";

fn seconds(field: &str, v: Option<f64>, default: f64) -> anyhow::Result<Duration> {
    let v = v.unwrap_or(default);
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("invalid {field}: {v} is not a positive number of seconds"))
}

impl ServeConfig {
    /// The router's part of the settings, its caps not given derived from
    /// `descriptors`, the process's limit on open descriptors.
    pub(crate) fn router(&self, descriptors: u64) -> RouterConfig {
        let derived = DefaultCaps::for_limit(descriptors);
        RouterConfig {
            threads: self.router_threads,
            header_timeout: self.header_timeout,
            max_header_bytes: self.max_header_bytes,
            max_connection_options: self.max_connection_options,
            body_timeout: self.body_timeout,
            min_body_rate: self.min_body_rate,
            max_connections: self.caps.max_connections.unwrap_or(derived.connections),
            max_connections_per_client: self
                .caps
                .max_connections_per_client
                .unwrap_or(derived.connections_per_client),
            max_in_flight_per_server: self
                .caps
                .max_in_flight_per_server
                .unwrap_or(derived.in_flight_per_server),
            max_in_flight_per_client: self
                .caps
                .max_in_flight_per_client
                .unwrap_or(derived.in_flight_per_client),
            upstream_timeout: self.upstream_timeout,
            connect_timeout: self.fleet.connect_timeout,
            whole_response_bytes: self.whole_response_bytes,
            shutdown_grace: self.shutdown_grace,
            server_roots: self.fleet.server_roots.clone(),
            h2_max_streams: self.h2_max_streams,
            https_redirect: self.https_redirect,
            hsts: self.hsts,
        }
    }

    /// Merges flags (and environment, which clap folds into them) over the file
    /// over the defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read config file {}: {e}", path.display())
                })?;
                toml::from_str::<ServeFile>(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => ServeFile::default(),
        };
        let defaults = FleetOptions::default();
        let default_memory_mb = args
            .default_memory_mb
            .or(file.default_memory_mb)
            .unwrap_or(defaults.default_memory_mb);
        if default_memory_mb < 0 {
            anyhow::bail!("invalid default_memory_mb: {default_memory_mb} is negative");
        }
        let max_header_bytes = args
            .max_header_bytes
            .or(file.max_header_bytes)
            .unwrap_or(64 * 1024);
        if max_header_bytes < 1024 {
            anyhow::bail!("invalid max_header_bytes: {max_header_bytes} is below 1024");
        }
        let max_connection_options = args
            .max_connection_options
            .or(file.max_connection_options)
            .unwrap_or(DEFAULT_MAX_CONNECTION_OPTIONS);
        if max_connection_options < 4 {
            anyhow::bail!(
                "invalid max_connection_options: {max_connection_options} is below 4 \
                 (`close`, `keep-alive`, `upgrade` and `TE` are each one)"
            );
        }
        let health_defaults = HealthPolicy::default();
        let fail_after = args
            .fail_after
            .or(file.fail_after)
            .unwrap_or(health_defaults.fail_after);
        let recover_after = args
            .recover_after
            .or(file.recover_after)
            .unwrap_or(health_defaults.recover_after);
        if fail_after == 0 || recover_after == 0 {
            anyhow::bail!("invalid fail_after/recover_after: both must be at least 1");
        }
        let health = HealthPolicy {
            interval: seconds(
                "health_interval",
                args.health_interval.or(file.health_interval),
                health_defaults.interval.as_secs_f64(),
            )?,
            timeout: seconds(
                "health_timeout",
                args.health_timeout.or(file.health_timeout),
                health_defaults.timeout.as_secs_f64(),
            )?,
            fail_after,
            recover_after,
        };
        let router_threads = args
            .router_threads
            .or(file.router_threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if router_threads == 0 {
            anyhow::bail!("invalid router_threads: must be at least 1");
        }
        let caps = Caps {
            max_connections: args.max_connections.or(file.max_connections),
            max_connections_per_client: args
                .max_connections_per_client
                .or(file.max_connections_per_client),
            max_in_flight_per_server: args
                .max_in_flight_per_server
                .or(file.max_in_flight_per_server),
            max_in_flight_per_client: args
                .max_in_flight_per_client
                .or(file.max_in_flight_per_client),
        };
        for (field, cap) in [
            ("max_connections", caps.max_connections),
            (
                "max_connections_per_client",
                caps.max_connections_per_client,
            ),
            ("max_in_flight_per_server", caps.max_in_flight_per_server),
            ("max_in_flight_per_client", caps.max_in_flight_per_client),
        ] {
            if cap == Some(0) {
                anyhow::bail!("invalid {field}: must be at least 1");
            }
        }
        let body_min_rate = args
            .body_min_rate
            .or(file.body_min_rate)
            .unwrap_or(BODY_MIN_RATE);
        let min_body_rate = match body_min_rate {
            0 => None,
            bytes_per_second => Some(MinRate {
                bytes_per_second,
                grace: seconds(
                    "body_rate_grace",
                    args.body_rate_grace.or(file.body_rate_grace),
                    BODY_RATE_GRACE,
                )?,
            }),
        };
        let route_poll = seconds("route_poll", args.route_poll.or(file.route_poll), 0.25)?;
        let tls_listen = args.tls_listen.or(file.tls_listen);
        let acme = acme(args, &file, route_poll, tls_listen.is_some())?;
        let h2_max_streams = args
            .h2_max_streams
            .or(file.h2_max_streams)
            .unwrap_or(DEFAULT_H2_MAX_STREAMS);
        if h2_max_streams == 0 {
            anyhow::bail!("invalid h2_max_streams: must be at least 1");
        }
        let event_defaults = EventRetention::default();
        let event_days = args
            .event_days
            .or(file.event_days)
            .unwrap_or(event_defaults.max_age.as_secs_f64() / 86_400.0);
        let events = EventRetention {
            max_age: Duration::try_from_secs_f64(event_days * 86_400.0)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "invalid event_days: {event_days} is not a positive number of days"
                    )
                })?,
            max_count: args
                .max_events
                .or(file.max_events)
                .unwrap_or(event_defaults.max_count),
        };
        if events.max_count < 1 {
            anyhow::bail!("invalid max_events: must be at least 1");
        }
        Ok(ServeConfig {
            acme,
            events,
            router_threads,
            tls_listen,
            https_redirect: args.https_redirect.or(file.https_redirect).unwrap_or(false),
            hsts: args
                .hsts
                .or(file.hsts)
                .filter(|age| *age > 0)
                .map(Duration::from_secs),
            h2_max_streams,
            health,
            reconcile_interval: seconds(
                "reconcile_interval",
                args.reconcile_interval.or(file.reconcile_interval),
                30.0,
            )?,
            database: args
                .database
                .clone()
                .or(file.database)
                .unwrap_or_else(|| default_database().into()),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            api_listen: args
                .api_listen
                .or(file.api_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090))),
            token_file: args
                .token_file
                .clone()
                .or(file.token_file)
                .unwrap_or_else(default_token_file),
            fleet: FleetOptions {
                default_memory_mb,
                connect_timeout: seconds(
                    "connect_timeout",
                    args.connect_timeout.or(file.connect_timeout),
                    defaults.connect_timeout.as_secs_f64(),
                )?,
                request_timeout: defaults.request_timeout,
                server_roots: args
                    .server_ca
                    .clone()
                    .or(file.server_ca)
                    .map(|path| ServerRoots::load(&path))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("invalid server_ca: {e}"))?,
                spawn_timeout: seconds(
                    "spawn_timeout",
                    args.spawn_timeout.or(file.spawn_timeout),
                    defaults.spawn_timeout.as_secs_f64(),
                )?,
                move_grace: Duration::from_secs_f64(
                    args.move_grace
                        .or(file.move_grace)
                        .filter(|g| g.is_finite() && *g >= 0.0)
                        .unwrap_or(defaults.move_grace.as_secs_f64()),
                ),
            },
            header_timeout: seconds(
                "header_timeout",
                args.header_timeout.or(file.header_timeout),
                10.0,
            )?,
            upstream_timeout: seconds(
                "upstream_timeout",
                args.upstream_timeout.or(file.upstream_timeout),
                60.0,
            )?,
            body_timeout: seconds(
                "body_timeout",
                args.body_timeout.or(file.body_timeout),
                60.0,
            )?,
            min_body_rate,
            whole_response_bytes: args
                .whole_response_bytes
                .or(file.whole_response_bytes)
                .unwrap_or(DEFAULT_WHOLE_RESPONSE_BYTES),
            caps,
            max_header_bytes,
            max_connection_options,
            route_poll,
            shutdown_grace: seconds(
                "shutdown_grace",
                args.shutdown_grace.or(file.shutdown_grace),
                30.0,
            )?,
        })
    }
}

/// The ACME settings: none unless `acme_directory` is set, and then checked
/// whole (an error names the setting).
fn acme(
    args: &ServeArgs,
    file: &ServeFile,
    route_poll: Duration,
    tls_listener: bool,
) -> anyhow::Result<Option<AcmeConfig>> {
    let email = args.acme_email.clone().or(file.acme_email.clone());
    let kid = args.acme_eab_kid.clone().or(file.acme_eab_kid.clone());
    let hmac = args.acme_eab_hmac.clone().or(file.acme_eab_hmac.clone());
    let ca = args.acme_ca.clone().or(file.acme_ca.clone());
    let challenge = match (&args.acme_challenge, &file.acme_challenge) {
        (Some(c), _) => Some(*c),
        (None, Some(c)) => Some(
            c.parse::<ChallengeKind>()
                .map_err(|e| anyhow::anyhow!("invalid acme_challenge: {e}"))?,
        ),
        (None, None) => None,
    };
    let retry_min = args.acme_retry_min.or(file.acme_retry_min);
    let retry_max = args.acme_retry_max.or(file.acme_retry_max);
    let Some(directory) = args.acme_directory.clone().or(file.acme_directory.clone()) else {
        let given = [
            ("acme_email", email.is_some()),
            ("acme_eab_kid", kid.is_some()),
            ("acme_eab_hmac", hmac.is_some()),
            ("acme_ca", ca.is_some()),
            ("acme_challenge", challenge.is_some()),
            ("acme_retry_min", retry_min.is_some()),
            ("acme_retry_max", retry_max.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(_, set)| *set) {
            anyhow::bail!("invalid {field}: it needs acme_directory, the CA to order from");
        }
        return Ok(None);
    };
    match url::Url::parse(&directory) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
        _ => anyhow::bail!("invalid acme_directory: '{directory}' is not an https:// URL"),
    }
    let mut config = AcmeConfig::new(directory);
    if let Some(email) = email {
        let plausible = email.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !email.contains(char::is_whitespace)
        });
        if !plausible {
            anyhow::bail!("invalid acme_email: '{email}' is not an email address");
        }
        config.email = Some(email);
    }
    config.external_account = match (kid, hmac) {
        (Some(kid), Some(hmac)) => Some(
            ExternalAccount::new(&kid, hmac.expose())
                .map_err(|e| anyhow::anyhow!("invalid acme_eab_hmac: {e}"))?,
        ),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("invalid acme_eab_kid: it needs acme_eab_hmac"),
        (None, Some(_)) => anyhow::bail!("invalid acme_eab_hmac: it needs acme_eab_kid"),
    };
    config.roots = ca
        .map(|path| ServerRoots::load(&path))
        .transpose()
        .map_err(|e| anyhow::anyhow!("invalid acme_ca: {e}"))?;
    config.challenge = challenge.unwrap_or_default();
    if config.challenge == ChallengeKind::TlsAlpn01 && !tls_listener {
        anyhow::bail!(
            "invalid acme_challenge: tls-alpn-01 is answered on tls_listen, which is not set"
        );
    }
    config.retry_min = seconds("acme_retry_min", retry_min, config.retry_min.as_secs_f64())?;
    config.retry_max = seconds("acme_retry_max", retry_max, config.retry_max.as_secs_f64())?;
    if config.retry_max < config.retry_min {
        anyhow::bail!("invalid acme_retry_max: it is below acme_retry_min");
    }
    // The other routers see a challenge at their next poll of the feed
    // (PostgreSQL tells them sooner).
    config.propagation = route_poll;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_never_shows() {
        let args = ServeArgs {
            database: Some("postgres://slum:hunter2@db/slum".parse().unwrap()),
            ..Default::default()
        };
        let config = ServeConfig::resolve(&args).unwrap();
        for shown in [
            format!("{args:?}"),
            format!("{config:?}"),
            config.database.to_string(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("db/slum"), "{shown}");
        }
        assert_eq!(
            config.database.as_path(),
            Path::new("postgres://slum:hunter2@db/slum")
        );
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slum.toml");
        std::fs::write(
            &file,
            "database = \"/var/lib/slum/fleet.db\"\nlisten = \"0.0.0.0:80\"\nupstream_timeout = 5\nroute_poll = 0.5\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:8081".parse().unwrap()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8081".parse().unwrap(), "flag wins");
        assert_eq!(
            c.database.as_path(),
            Path::new("/var/lib/slum/fleet.db"),
            "file"
        );
        assert_eq!(c.upstream_timeout, Duration::from_secs(5));
        assert_eq!(c.route_poll, Duration::from_millis(500));
        assert_eq!(c.api_listen, "127.0.0.1:9090".parse().unwrap(), "default");
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.body_timeout, Duration::from_secs(60));

        std::fs::write(&file, "listen_port = 80\n").unwrap();
        let e = ServeConfig::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("listen_port"), "{e}");

        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(c.router_threads, cpus, "default: one per CPU");
        std::fs::write(&file, "router_threads = 3\n").unwrap();
        assert_eq!(ServeConfig::resolve(&args).unwrap().router_threads, 3);
        let zero = ServeArgs {
            router_threads: Some(0),
            ..Default::default()
        };
        let e = ServeConfig::resolve(&zero).unwrap_err().to_string();
        assert!(e.contains("router_threads"), "{e}");

        assert_eq!(c.max_connection_options, 32, "default");
        std::fs::write(&file, "max_connection_options = 8\n").unwrap();
        assert_eq!(
            ServeConfig::resolve(&args).unwrap().max_connection_options,
            8
        );
        let few = ServeArgs {
            max_connection_options: Some(2),
            ..Default::default()
        };
        let e = ServeConfig::resolve(&few).unwrap_err().to_string();
        assert!(e.contains("max_connection_options"), "{e}");

        let bad = ServeArgs {
            upstream_timeout: Some(-1.0),
            ..Default::default()
        };
        let e = ServeConfig::resolve(&bad).unwrap_err().to_string();
        assert!(e.contains("upstream_timeout"), "{e}");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let bad_ca = ServeArgs {
            server_ca: Some(not_pem),
            ..Default::default()
        };
        let e = ServeConfig::resolve(&bad_ca).unwrap_err().to_string();
        assert!(e.starts_with("invalid server_ca: "), "{e}");
        assert!(e.ends_with("ca.pem: no certificate in it"), "{e}");
        let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/server-ca.pem");
        std::fs::write(
            &file,
            format!("server_ca = {:?}\n", ca.display().to_string()),
        )
        .unwrap();
        let c = ServeConfig::resolve(&args).unwrap();
        let roots = c.fleet.server_roots.expect("the file's server_ca");
        assert_eq!(roots.certificates().len(), 1);
        let missing = ServeArgs {
            config: Some(dir.path().join("nope.toml")),
            ..Default::default()
        };
        assert!(ServeConfig::resolve(&missing)
            .unwrap_err()
            .to_string()
            .contains("nope.toml"));
    }

    #[test]
    fn the_routers_caps_are_set_or_derived_from_the_descriptor_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slum.toml");
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        std::fs::write(&file, "").unwrap();
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(
            c.min_body_rate,
            Some(MinRate {
                bytes_per_second: 500,
                grace: Duration::from_secs(20)
            }),
            "default"
        );
        let router = c.router(256);
        assert_eq!(
            (
                router.max_connections,
                router.max_connections_per_client,
                router.max_in_flight_per_server,
                router.max_in_flight_per_client
            ),
            (64, 32, 32, 8),
            "derived from 256 descriptors"
        );

        std::fs::write(
            &file,
            "max_connections = 1000\nmax_in_flight_per_client = 3\nbody_min_rate = 100\nbody_rate_grace = 2.5\n",
        )
        .unwrap();
        let flags = ServeArgs {
            max_in_flight_per_server: Some(7),
            ..args.clone()
        };
        let c = ServeConfig::resolve(&flags).unwrap();
        let router = c.router(256);
        assert_eq!(
            (
                router.max_connections,
                router.max_connections_per_client,
                router.max_in_flight_per_server,
                router.max_in_flight_per_client
            ),
            (1000, 32, 7, 3),
            "the file's and the flag's, the others derived"
        );
        assert_eq!(
            c.min_body_rate,
            Some(MinRate {
                bytes_per_second: 100,
                grace: Duration::from_millis(2500)
            })
        );

        std::fs::write(&file, "body_min_rate = 0\n").unwrap();
        assert_eq!(ServeConfig::resolve(&args).unwrap().min_body_rate, None);
        for bad in [
            "max_connections = 0\n",
            "max_connections_per_client = 0\n",
            "max_in_flight_per_server = 0\n",
            "max_in_flight_per_client = 0\n",
            "body_rate_grace = -1\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = ServeConfig::resolve(&args).unwrap_err().to_string();
            let field = bad.split(' ').next().unwrap();
            assert!(e.starts_with(&format!("invalid {field}: ")), "{e}");
        }
    }

    /// contrib/slum.toml, the commented example, is read by the real loader
    /// as it is, and with every commented setting taken in (all but the CA
    /// files it names): each is a key slum knows, with a value it takes. It
    /// names every setting `slum serve` has.
    #[test]
    fn the_example_config_file_loads_and_names_every_setting() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/slum.toml");
        let args = ServeArgs {
            config: Some(example.clone()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.database.as_path(), Path::new("/var/lib/slum/slum.db"));
        assert_eq!(c.token_file, Path::new("/var/lib/slum/token"));
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap(), "default");

        let text = std::fs::read_to_string(&example).unwrap();
        let setting = |line: &str| -> Option<String> {
            let line = line.trim_start_matches('#').trim_start();
            let (key, _) = line.split_once(" = ")?;
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .then(|| key.to_owned())
        };
        // Every commented setting taken in, the last of a key winning.
        let mut all: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            let Some(key) = setting(line) else { continue };
            if key == "server_ca" || key == "acme_ca" {
                continue;
            }
            all.retain(|(k, _)| *k != key);
            all.push((key, line.trim_start_matches('#').trim_start().to_owned()));
        }
        let dir = tempfile::tempdir().unwrap();
        let every = dir.path().join("every.toml");
        let body: Vec<&str> = all.iter().map(|(_, l)| l.as_str()).collect();
        std::fs::write(&every, body.join("\n")).unwrap();
        let c = ServeConfig::resolve(&ServeArgs {
            config: Some(every),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("the example's settings, all taken in: {e}"));
        assert_eq!(c.router_threads, 2);

        let named: Vec<String> = text.lines().filter_map(setting).collect();
        let flags = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        for arg in flags.get_arguments() {
            let key = arg.get_id().as_str();
            if key != "config" {
                assert!(
                    named.iter().any(|n| n == key),
                    "contrib/slum.toml lacks {key}"
                );
            }
        }
    }

    #[test]
    fn acme_is_off_unless_a_directory_is_set_and_its_settings_are_checked() {
        let c = ServeConfig::resolve(&ServeArgs::default()).unwrap();
        assert!(c.acme.is_none(), "off by default");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slum.toml");
        let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/server-ca.pem");
        std::fs::write(
            &file,
            format!(
                "acme_directory = \"https://acme.example.com/dir\"\nacme_email = \"ops@example.com\"\n\
                 acme_eab_kid = \"kid-1\"\nacme_eab_hmac = \"c2VjcmV0LWhtYWMta2V5\"\n\
                 acme_ca = {:?}\nacme_challenge = \"tls-alpn-01\"\nacme_retry_min = 2\n\
                 tls_listen = \"127.0.0.1:8443\"\n",
                ca.display().to_string()
            ),
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let acme = ServeConfig::resolve(&args).unwrap().acme.expect("on");
        assert_eq!(acme.directory, "https://acme.example.com/dir");
        assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
        assert_eq!(acme.external_account.as_ref().unwrap().kid, "kid-1");
        assert_eq!(acme.roots.as_ref().unwrap().certificates().len(), 1);
        assert_eq!(acme.challenge, ChallengeKind::TlsAlpn01);
        assert_eq!(acme.retry_min, Duration::from_secs(2));
        assert_eq!(acme.retry_max, Duration::from_secs(86_400), "default");
        assert_eq!(
            acme.propagation,
            Duration::from_millis(250),
            "the route poll"
        );

        // A flag over the file.
        let flags = ServeArgs {
            acme_challenge: Some(ChallengeKind::Http01),
            ..args.clone()
        };
        let acme = ServeConfig::resolve(&flags).unwrap().acme.unwrap();
        assert_eq!(acme.challenge, ChallengeKind::Http01);

        for (toml, field) in [
            ("acme_email = \"ops@example.com\"\n", "acme_email"),
            (
                "acme_directory = \"http://acme.example.com/dir\"\n",
                "acme_directory",
            ),
            (
                "acme_directory = \"https://a.example.com/d\"\nacme_email = \"ops\"\n",
                "acme_email",
            ),
            (
                "acme_directory = \"https://a.example.com/d\"\nacme_eab_kid = \"k\"\n",
                "acme_eab_kid",
            ),
            (
                "acme_directory = \"https://a.example.com/d\"\nacme_eab_kid = \"k\"\nacme_eab_hmac = \"no!\"\n",
                "acme_eab_hmac",
            ),
            (
                "acme_directory = \"https://a.example.com/d\"\nacme_challenge = \"dns-01\"\n",
                "acme_challenge",
            ),
            (
                "acme_directory = \"https://a.example.com/d\"\nacme_retry_min = 60\nacme_retry_max = 10\n",
                "acme_retry_max",
            ),
            (
                "acme_directory = \"https://a.example.com/d\"\nacme_challenge = \"tls-alpn-01\"\n",
                "acme_challenge",
            ),
        ] {
            std::fs::write(&file, toml).unwrap();
            let e = ServeConfig::resolve(&args).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid {field}: ")), "{toml}: {e}");
        }
    }

    #[test]
    fn an_external_account_key_never_shows() {
        let args = ServeArgs {
            acme_directory: Some("https://acme.example.com/dir".into()),
            acme_eab_kid: Some("kid-1".into()),
            acme_eab_hmac: Some("c2VjcmV0LWhtYWMta2V5".parse().unwrap()),
            ..Default::default()
        };
        let config = ServeConfig::resolve(&args).unwrap();
        for shown in [format!("{args:?}"), format!("{config:?}")] {
            assert!(!shown.contains("c2VjcmV0"), "{shown}");
            assert!(!shown.contains("secret-hmac"), "{shown}");
            assert!(shown.contains("kid-1"), "{shown}");
        }
        let bad = ServeArgs {
            acme_eab_hmac: Some("not base64, c2VjcmV0".parse().unwrap()),
            ..args
        };
        let e = ServeConfig::resolve(&bad).unwrap_err().to_string();
        assert_eq!(e, "invalid acme_eab_hmac: the HMAC key is not base64url");
    }

    #[test]
    fn https_is_off_unless_a_listener_is_set_and_its_settings_come_from_flags_or_the_file() {
        let c = ServeConfig::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(c.tls_listen, None);
        let router = c.router(1024);
        assert!(!router.https_redirect);
        assert_eq!(router.hsts, None);
        assert_eq!(router.h2_max_streams, DEFAULT_H2_MAX_STREAMS);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slum.toml");
        std::fs::write(
            &file,
            "tls_listen = \"0.0.0.0:8443\"\nhttps_redirect = true\nhsts = 31536000\nh2_max_streams = 64\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.tls_listen, Some("0.0.0.0:8443".parse().unwrap()));
        let router = c.router(1024);
        assert!(router.https_redirect);
        assert_eq!(router.hsts, Some(Duration::from_secs(31_536_000)));
        assert_eq!(router.h2_max_streams, 64);
        args.https_redirect = Some(false);
        args.tls_listen = Some("127.0.0.1:443".parse().unwrap());
        let c = ServeConfig::resolve(&args).unwrap();
        assert!(!c.https_redirect, "the flag wins");
        assert_eq!(c.tls_listen, Some("127.0.0.1:443".parse().unwrap()));
        std::fs::write(&file, "h2_max_streams = 0\n").unwrap();
        let e = ServeConfig::resolve(&args).unwrap_err().to_string();
        assert!(e.starts_with("invalid h2_max_streams: "), "{e}");
    }

    #[test]
    fn small_answers_are_read_whole_unless_told_otherwise() {
        let c = ServeConfig::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(c.router(1024).whole_response_bytes, 64 * 1024);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slum.toml");
        std::fs::write(&file, "whole_response_bytes = 0\n").unwrap();
        let mut args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.router(1024).whole_response_bytes, 0, "file");
        args.whole_response_bytes = Some(1024);
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.router(1024).whole_response_bytes, 1024, "flag");
    }
}
