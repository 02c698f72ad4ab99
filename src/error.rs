//! `slum::Error`: the one error type of the library.
//!
//! Callers match on the kind (not found, already exists, invalid field, server
//! unreachable, ...); every message names the field, tenant, instance or server at
//! fault. Tokens never appear here: the tenement client strips them before an error
//! is built.

use std::fmt;

/// What kind of fleet record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Server,
    Tenant,
    Instance,
    Token,
    Certificate,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Server => "server",
            Kind::Tenant => "tenant",
            Kind::Instance => "instance",
            Kind::Token => "token",
            Kind::Certificate => "certificate",
        })
    }
}

/// Every way a slum call can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The record does not exist.
    #[error("{kind} '{key}' not found")]
    NotFound { kind: Kind, key: String },

    /// A record with this key exists already, or the fleet already holds what the
    /// call would create (such as a second instance of a tenant's process on one
    /// server).
    #[error("{kind} '{key}' already exists{}", detail_suffix(.detail))]
    AlreadyExists {
        kind: Kind,
        key: String,
        detail: Option<String>,
    },

    /// The record cannot be deleted while others point at it.
    #[error("{kind} '{key}' still has {tenants} tenant(s) and {instances} instance(s)")]
    HasDependents {
        kind: Kind,
        key: String,
        tenants: i64,
        instances: i64,
    },

    /// A field of the input is not acceptable; nothing was changed.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },

    /// The server exists but takes no new instances (offline or draining).
    #[error("server '{server}' is {status}: it takes no new instances")]
    ServerUnavailable { server: String, status: String },

    /// The reservation would exceed the server's `capacity_mb`.
    #[error(
        "server '{server}' has {free_mb} MB free of {capacity_mb} MB; {requested_mb} MB requested"
    )]
    InsufficientCapacity {
        server: String,
        requested_mb: i64,
        free_mb: i64,
        capacity_mb: i64,
    },

    /// No server can take the placement: `reasons` says, for each server,
    /// the rule that excluded it (`"s1 already runs acme:prod (api)"`, `"s2 is
    /// offline"`, `"s3 has 64 MB free of the 128 MB asked"`).
    #[error(
        "no server can take {placing}{}: {}",
        region.as_ref().map(|r| format!(" in region '{r}'")).unwrap_or_default(),
        reasons.join("; ")
    )]
    NoRoom {
        /// What was to be placed: `"acme:prod (api, 128 MB)"`.
        placing: String,
        needed_mb: i64,
        region: Option<String>,
        reasons: Vec<String>,
    },

    /// The tenement server could not be reached (refused, reset, timed out).
    #[error("server '{server}' is unreachable: {reason}")]
    ServerUnreachable { server: String, reason: String },

    /// The tenement server answered, and said no.
    #[error("server '{server}' answered {status}: {message}")]
    Tenement {
        server: String,
        status: u16,
        message: String,
    },

    /// tenement accepted the spawn but the instance did not become healthy; the
    /// reason quotes the instance's last output lines from tenement's logs.
    #[error("instance '{instance}' failed to start on server '{server}': {reason}")]
    SpawnFailed {
        instance: String,
        server: String,
        reason: String,
    },

    /// The server's tenement routes by another domain than `domain`, the one
    /// slum would send it (`{tenant}.{process}.{domain}`): tenants' requests
    /// would reach its own dashboard and API, or the wrong process. The
    /// reason says what it answered and which `--domain` to use; nothing was
    /// changed.
    #[error("server '{server}' routes by a different domain than '{domain}': {reason}")]
    DomainMismatch {
        server: String,
        domain: String,
        reason: String,
    },

    /// The fleet database failed.
    #[error("fleet database: {0}")]
    Database(#[source] sqlx::Error),

    /// The fleet database schema could not be brought up to date.
    #[error("fleet database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl Error {
    pub(crate) fn not_found(kind: Kind, key: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            key: key.into(),
        }
    }

    pub(crate) fn already_exists(kind: Kind, key: impl Into<String>) -> Self {
        Error::AlreadyExists {
            kind,
            key: key.into(),
            detail: None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// True for `NotFound`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The deepest error in a chain: "Connection refused (os error 111)" rather than
/// reqwest's "error sending request for url (...)". Shared by the tenement
/// client and the router, whose messages quote it.
pub(crate) fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e).last().unwrap_or(e).to_string()
}

/// An error and its causes, outermost first: the one walk of a cause chain
/// (for its innermost cause, or for a cause of a kind, such as a timeout).
pub(crate) fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}
