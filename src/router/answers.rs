//! What the router answers with: a server's answer passed on, or one of its
//! own, a status and a one-line body that says what went wrong; and the ways
//! an exchange with a server fails, each with its status.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use std::time::Duration;

use super::upstream_pool::{PooledBody, UpstreamError};
use super::BoxError;
use crate::error::{causes, innermost_cause};
use slum_http1::{ExchangeError, RawHeaders};

/// What the router answers with: a server's answer passed on (its header
/// lines as the server sent them, its body as it comes), or a response the
/// router made (its own answers, and what hyper's client brought back for an
/// upgrade).
pub(super) enum Answer {
    Passed {
        status: StatusCode,
        headers: RawHeaders,
        body: PooledBody,
    },
    Made(Response<BoxBody<Bytes, BoxError>>),
}

impl Answer {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Answer::Passed { status, .. } => *status,
            Answer::Made(resp) => resp.status(),
        }
    }
}

/// A response the router makes itself: a status and a one-line reason.
pub(super) fn answer(status: StatusCode, reason: String) -> Answer {
    Answer::Made(made(status, reason))
}

/// The response of [`answer`], before it is one.
pub(super) fn made(status: StatusCode, reason: String) -> Response<BoxBody<Bytes, BoxError>> {
    let mut r = Response::new(
        Full::new(Bytes::from(reason + "\n"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// How an exchange with a server failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The connection was refused (or could not be made at once).
    Refused(String),
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The connection broke before a response head arrived.
    Broken(String),
    /// No response head within the upstream timeout.
    HeadTimeout,
    /// The client's request body was malformed or broke off.
    BadBody(String),
    /// The client stopped sending its request body for the body timeout.
    BodyTimeout(String),
}

impl Failure {
    /// What the pool's error says of the exchange: the client's fault (its
    /// body), the connection's (refused, timed out) or the server's.
    pub(super) fn of(e: UpstreamError) -> Failure {
        match e {
            // The client stopped sending its body: its fault, not the
            // server's (whose connection's errors can say "timed out" too).
            UpstreamError::Exchange(ExchangeError::RequestBody(body)) if is_timeout(&*body) => {
                Failure::BodyTimeout(innermost_cause(&*body))
            }
            // The client's own body was at fault, not the server.
            UpstreamError::Exchange(ExchangeError::RequestBody(body)) => {
                Failure::BadBody(innermost_cause(&*body))
            }
            UpstreamError::Connect { cause } if is_timeout(&*cause) => Failure::ConnectTimeout,
            UpstreamError::Connect { cause } => Failure::Refused(innermost_cause(&*cause)),
            UpstreamError::Exchange(e) => Failure::Broken(innermost_cause(&e)),
            UpstreamError::Upgrade(e) => Failure::Broken(innermost_cause(&e)),
        }
    }

    /// Whether the server itself could not be reached: the passive health
    /// signal. A connection that broke after it was made is more often one
    /// tenant's app, or a pooled connection the server closed, than the server.
    pub(super) fn server_unreachable(&self) -> bool {
        matches!(self, Failure::Refused(_) | Failure::ConnectTimeout)
    }

    /// Whether the server failed at the connection level (the passive health
    /// signal, and the case a retry on the backup is safe for): not a slow
    /// answer, which may be the application's doing.
    pub(super) fn connection_failed(&self) -> bool {
        matches!(
            self,
            Failure::Refused(_) | Failure::ConnectTimeout | Failure::Broken(_)
        )
    }

    /// The router's answer for `server` failing so: 502 for a refused or
    /// broken connection, 504 for a connect or response head that took too
    /// long (the timeouts are quoted), 400 or 408 for the client's body.
    pub(super) fn answer(
        self,
        server: &str,
        upstream_timeout: Duration,
        connect_timeout: Duration,
    ) -> Answer {
        match self {
            Failure::HeadTimeout => answer(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "server '{server}' did not answer within {:.1}s",
                    upstream_timeout.as_secs_f64()
                ),
            ),
            Failure::ConnectTimeout => answer(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "connecting to server '{server}' timed out after {:.1}s",
                    connect_timeout.as_secs_f64()
                ),
            ),
            Failure::Refused(cause) => answer(
                StatusCode::BAD_GATEWAY,
                format!("cannot connect to server '{server}': {cause}"),
            ),
            Failure::Broken(cause) => answer(
                StatusCode::BAD_GATEWAY,
                format!("server '{server}' failed the request: {cause}"),
            ),
            Failure::BadBody(cause) => answer(
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {cause}"),
            ),
            Failure::BodyTimeout(cause) => answer(StatusCode::REQUEST_TIMEOUT, cause),
        }
    }
}

/// Whether an error, or one of its causes, is running out of time: a
/// connect's (the connector's timeout, or the kernel's), or a request body's.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    // The connector's errors are boxed by hyper-util, and a request body's
    // error is the client side's: their causes are read for what they are.
    causes(e).any(|err| {
        err.is::<tokio::time::error::Elapsed>()
            || err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn only_a_request_body_standing_still_is_the_clients_timeout() {
        let timed_out =
            || io::Error::new(io::ErrorKind::TimedOut, "no request body bytes for 1.0s");
        let failure = |e| Failure::of(UpstreamError::Exchange(e));
        assert!(matches!(
            failure(ExchangeError::RequestBody(Box::new(timed_out()))),
            Failure::BodyTimeout(_)
        ));
        assert!(
            matches!(failure(ExchangeError::Io(timed_out())), Failure::Broken(_)),
            "the server's connection timing out is not the client's doing"
        );
        let malformed = io::Error::new(io::ErrorKind::InvalidData, "malformed chunk size");
        assert!(matches!(
            failure(ExchangeError::RequestBody(Box::new(malformed))),
            Failure::BadBody(_)
        ));
    }
}
