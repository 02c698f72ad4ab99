//! What the router answers with: a server's answer passed on, or one of its
//! own, a status and a one-line body that says what went wrong; and the ways
//! an exchange with a server fails, each with its status.
//!
//! The router's own error answers (502, 503, 504) go to the public: they say
//! what happened in general terms and give a request id, never a server's
//! id, an OS error or what a server sent. The id is in the `X-Request-Id`
//! header too, and in the log line that holds the details, and the error is
//! counted by server and cause (`slum_router_errors_total`). Ids are made
//! only for these answers: a random prefix drawn once per thread and the
//! thread's count, no lock and no system call.

use std::cell::Cell;
use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::upstream_pool::{PooledBody, UpstreamError};
use super::BoxError;
use crate::error::{causes, innermost_cause};
use crate::metrics::Metrics;
use slum_http1::{ExchangeError, RawHeaders};

/// The header a public error answer gives its request id in.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The mark of an answer the router made itself (not a server's): the `slum`
/// CLI pointed at the router's port instead of the management API's finds it
/// on the 404 for its Host, and says where the API is.
pub const ROUTER_MARK: &str = "x-slum-router";

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
    r.headers_mut()
        .insert(ROUTER_MARK, HeaderValue::from_static("1"));
    r
}

/// A new request id: 16 hex digits, a random prefix drawn once per thread
/// and the thread's count. Unique enough to find one log line: two threads
/// share a prefix once in four billion.
pub(super) fn request_id() -> String {
    thread_local! {
        static NEXT: Cell<Option<(u32, u32)>> = const { Cell::new(None) };
    }
    NEXT.with(|next| {
        let (prefix, n) = next.get().unwrap_or_else(|| (rand::random(), 0));
        next.set(Some((prefix, n.wrapping_add(1))));
        format!("{prefix:08x}{n:08x}")
    })
}

/// An error answer of the router's own (502, 503, 504), for the public: the
/// body says `what` happened in general terms, with a request id, also given
/// in `X-Request-Id`. The details (`server`, and `detail`, which may name
/// servers, tenants, OS errors and what a server sent) go to a log line with
/// that id; the error is counted by `server` and `cause`.
pub(super) fn public_error(
    metrics: &Metrics,
    status: StatusCode,
    what: &str,
    server: &str,
    cause: &'static str,
    detail: &dyn Display,
) -> Response<BoxBody<Bytes, BoxError>> {
    let id = request_id();
    tracing::warn!(request_id = %id, status = status.as_u16(), server = %server, cause,
        detail = %detail, "{what}");
    metrics
        .router_errors
        .with_label_values(&[server, cause])
        .inc();
    let mut resp = made(
        status,
        format!(
            "{} {}: {what} (request id {id})",
            status.as_str(),
            status.canonical_reason().unwrap_or_default()
        ),
    );
    if let Ok(id) = HeaderValue::try_from(id) {
        resp.headers_mut().insert(X_REQUEST_ID, id);
    }
    resp
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
    /// long, each a public error whose log line names the server and the
    /// cause (the timeouts quoted); 400 or 408 for the client's body, which
    /// say what was wrong with it.
    pub(super) fn answer(
        self,
        server: &str,
        upstream_timeout: Duration,
        connect_timeout: Duration,
        metrics: &Metrics,
    ) -> Answer {
        let (status, what, cause, detail) = match self {
            Failure::HeadTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "the server for this site did not answer in time",
                "timeout",
                format!(
                    "server '{server}' did not answer within {:.1}s",
                    upstream_timeout.as_secs_f64()
                ),
            ),
            Failure::ConnectTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "the server for this site could not be reached in time",
                "connect_timeout",
                format!(
                    "connecting to server '{server}' timed out after {:.1}s",
                    connect_timeout.as_secs_f64()
                ),
            ),
            Failure::Refused(cause) => (
                StatusCode::BAD_GATEWAY,
                "the server for this site could not be reached",
                "refused",
                format!("cannot connect to server '{server}': {cause}"),
            ),
            Failure::Broken(cause) => (
                StatusCode::BAD_GATEWAY,
                "the server for this site failed to answer",
                "broken",
                format!("server '{server}' failed the request: {cause}"),
            ),
            Failure::BadBody(cause) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {cause}"),
                )
            }
            Failure::BodyTimeout(cause) => return answer(StatusCode::REQUEST_TIMEOUT, cause),
        };
        Answer::Made(public_error(metrics, status, what, server, cause, &detail))
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
    fn request_ids_differ_and_are_sixteen_hex_digits() {
        let ids: Vec<String> = (0..1000).map(|_| request_id()).collect();
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            assert!(
                id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
        }
    }

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
