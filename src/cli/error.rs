//! [`CliError`]: every way a client command fails, each with the one line the
//! command prints after `error: ` before it exits with code 1.

use std::path::PathBuf;

/// Every way a client command fails; `Display` is the one line printed after
/// `error: `.
#[derive(Debug, thiserror::Error)]
pub(super) enum CliError {
    #[error("cannot reach the slum API at {url}: {reason} (is `slum serve` running?)")]
    Unreachable { url: String, reason: String },
    #[error(
        "{url} is slum serve's router (its public listener), not its management API: point \
         --api or SLUM_API at the API's listener (slum serve --api-listen, 127.0.0.1:9090 by \
         default)"
    )]
    RouterNotApi { url: String },
    #[error("the slum API at {url} did not answer within {secs}s")]
    Timeout { url: String, secs: u64 },
    #[error("the API refused the token (set --token or SLUM_TOKEN; a lost admin token is replaced by `slum token reset --database PATH` on the database's machine)")]
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
    pub(super) fn local(e: anyhow::Error) -> Self {
        CliError::Local(format!("{e:#}"))
    }
}
