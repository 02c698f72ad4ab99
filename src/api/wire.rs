//! The management API's wire types: every request and response body, declared
//! once and used by both ends, the handlers (which deserialize requests and
//! serialize answers) and the CLI (which does the opposite). A field renamed
//! here is renamed for both, so the two cannot drift apart.
//!
//! The library's own records (`Server`, `Tenant`, `Instance`, `ServerStats`,
//! `DrainProgress`, `ReconcileReport`, ...) travel as they are and are
//! re-exported from here, so the CLI needs no other module of the server side.
//!
//! Two conventions hold for every request body: a field that is `None` (or a
//! `false` flag) is left out when serialized, and a field the body does not
//! have is refused when deserialized (`deny_unknown_fields`), so that a typo
//! is an error naming the field rather than a silent no-op.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

// The library's records, in the answers as they are; the CLI reads them here.
pub use crate::DrainProgress;
#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub use crate::{
    ApiToken, DesiredState, FailoverPolicy, Instance, InstanceStatus, Server, ServerStats,
    ServerStatus, Tenant,
};
// A server's state as people read it (`online,cordoned`).
#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub use crate::fleet::model::state_text;
// The state of an `InstanceStatus`: no code names it apart from tests today,
// but it is part of the answer, so clients find it here with the rest.
#[allow(unused_imports)]
pub use crate::InstanceState;
#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub use crate::ReconcileReport;
// The certificates, as the API shows them: no key, no PEM.
#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub use crate::CertificateInfo;
// This router's traffic of the last minute (`/v1/traffic`).
#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub use crate::traffic::{ServersTraffic, TenantTraffic, TrafficTop};
// Parts of those answers, for clients that name them.
#[allow(unused_imports)]
pub use crate::traffic::{ServerTraffic, TrafficFigures};
// A certificate's source and state: part of the answer (the CLI shows them
// through `Display`), so clients find them here with the rest.
#[allow(unused_imports)]
pub use crate::{CertificateSource, CertificateState};
// The fleet's events and an instance's output, as the API sends them.
#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub use crate::events::{Event, EventLevel};
#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub use crate::logs::{LogEvent, LogLine, LogStream};

#[cfg(test)]
mod tests;

// ----- requests -----

/// `?limit=N&after=KEY` on the paged lists (`GET /v1/servers`,
/// `GET /v1/status`'s servers), and `server=ID` too on `GET /v1/tenants` and
/// `GET /v1/instances`. `limit` travels as text, so that one that is not a
/// number is refused as the library refuses one out of range: a 422 naming
/// the field `limit`, not a 400 from the query parser.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// `?limit=N&after=KEY` alone, on the lists with no server filter.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// `?limit=N` on `GET /v1/traffic/top` (1 to 1000, 20 by default).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// The header of a page that more records follow: the key to pass as
/// `after` for the next page. Absent on the last page.
pub const NEXT_AFTER: &str = "slum-next-after";

/// `POST /v1/servers`. No `Debug`: it may hold the server's token.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    pub id: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub capacity_mb: i64,
    /// The tenement server's admin token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// `PATCH /v1/servers/{id}`. Absent fields keep their values; `null` clears
/// the optional ones (`Some(None)`). No `Debug`: it may hold the token.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub region: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_mb: Option<i64>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub domain: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ServerStatus>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `POST /v1/tenants`: a tenant on a given `server_id`, or (`"auto": true`)
/// on the usable server with the most free room, in `region` when given.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub domain: String,
    /// Defaults to the first label of the domain (refused when that names a
    /// tenant of another registrable domain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    pub process: String,
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverPolicy>,
}

/// `PATCH /v1/tenants/{domain}`: absent fields keep their values.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverPolicy>,
}

/// `POST /v1/tenants/{domain}/move`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveTo {
    pub server_id: String,
}

/// `POST /v1/instances`: an instance on a given `server_id`, or (`"auto":
/// true`) placed by slum.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInstance {
    pub tenant: String,
    pub process: String,
    pub instance_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Never in a region that already holds an instance of the process.
    #[serde(default, skip_serializing_if = "is_false")]
    pub distinct_region: bool,
}

/// `POST /v1/tokens`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
}

/// `PUT /v1/certificates/{name}`: an operator's certificate. No `Debug`: it
/// holds the private key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutCertificate {
    /// The chain, leaf first, in PEM.
    pub cert_pem: String,
    /// The leaf's private key in PEM.
    pub key_pem: String,
    /// Plain HTTP for the name redirected to HTTPS (`true`) or not
    /// (`false`); left out, the fleet's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

/// `GET /v1/events?server=ID&tenant=NAME&after=ID&since=WHEN&limit=N`:
/// the events of a server and/or a tenant (a name, or one of its domains),
/// after an event id or since a time (see [`parse_since`]); without either,
/// the newest `limit` (100 by default). Values travel as text, so that a bad
/// one is a 422 naming its field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// `GET /v1/tenants/{tenant}/logs?instance=ID&since=WHEN&grep=TEXT&stream=stdout|stderr&limit=N&follow=true`:
/// an instance's output. `{tenant}` is a tenant's name or one of its
/// domains; without `instance`, its own instance (or its only one).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grep: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<String>,
}

/// `since` as the API takes it (`?since=` of events and logs, `--since` of
/// the CLI): a duration back from `now` (`90s`, `15m`, `2h`, `7d`; a bare
/// number is seconds), or a time in RFC 3339 (`2025-06-01T12:00:00Z`).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let seconds_per = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => f64::NAN,
    };
    let back = number
        .parse::<f64>()
        .ok()
        .map(|n| n * seconds_per)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| chrono::Duration::from_std(std::time::Duration::from_secs_f64(s)).ok())
        .ok_or_else(|| {
            format!(
                "must be a duration (90s, 15m, 2h, 7d) or an RFC 3339 time, not {}",
                crate::fleet::validation::quoted(text)
            )
        })?;
    Ok(now - back)
}

// ----- answers -----
//
// Answers are read with `#[serde(default)]` where a field was added later, so
// that a newer CLI still reads an older `slum serve`.

/// `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetStatus {
    /// A page of the servers, by id (`?limit=N&after=ID`; the next page's
    /// `after` is in the [`NEXT_AFTER`] header). The counts and the down
    /// tenants are the whole fleet's.
    pub servers: Vec<ServerStats>,
    /// Tenants in the fleet database; `i64` like the per-server counts of
    /// [`ServerStats`], which come from the store's `COUNT`s.
    pub tenants: i64,
    /// Instance records in the fleet database.
    pub instances: i64,
    /// Domains the router cannot serve now: every server that could hold their
    /// instance is offline. Sorted by domain.
    pub down_tenants: Vec<DownTenant>,
    /// Certificates that expire within [`EXPIRY_WARNING_DAYS`] (or have
    /// expired), counted on an index.
    pub certificates_expiring: i64,
    /// The first of them to expire, soonest first (at most
    /// [`EXPIRING_SHOWN`]).
    pub expiring_certificates: Vec<ExpiringCertificate>,
}

/// How close to its expiry a certificate is warned about, in days.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// How many expiring certificates `GET /v1/status` names.
pub const EXPIRING_SHOWN: usize = 10;

/// A certificate that expires soon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExpiringCertificate {
    pub name: String,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

/// A domain whose instance (and every backup) is on an offline server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DownTenant {
    pub domain: String,
    pub tenant: String,
    /// The offline servers its instances are on (its home, when it has none).
    pub servers: Vec<String>,
}

/// `POST /v1/tokens`' answer. No `Debug`: it holds the secret.
#[derive(Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: ApiToken,
    /// Shown this once; only its hash is stored.
    pub secret: String,
}

/// `POST /v1/tenants/{domain}/move`'s answer: the tenant as stored, and
/// whether anything moved (`false`: it was on that server already). A reader
/// of a plain `Tenant` reads it as one.
#[derive(Debug, Serialize, Deserialize)]
pub struct MovedTenant {
    #[serde(flatten)]
    pub tenant: Tenant,
    /// Absent from an older `slum serve`'s answer: taken as moved.
    #[serde(default = "moved_by_default")]
    pub moved: bool,
}

fn moved_by_default() -> bool {
    true
}

/// `DELETE /v1/instances/{key}`'s answer (202) when the instance's server
/// could not be reached: the stop is recorded, and reconcile completes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct StopPending {
    pub key: String,
    pub server: String,
    /// Why the server could not be reached.
    pub reason: String,
    /// The whole of it, for people.
    pub message: String,
}

/// The JSON of every failure: `{"error": Problem}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: Problem,
}

/// What went wrong: a `kind` (one per error kind, see
/// `docs/management-api.md`), a message for people, and the field, server or
/// key it is about. `field`, `server` and `key` are always sent (`null` when
/// they do not apply); the others only for the kinds that have them.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_mb: Option<i64>,
    /// The domain slum would route the server by (`domain_mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}
