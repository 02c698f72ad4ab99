//! What the plain (HTTP) listener answers itself, for tenant domains, before
//! a request is routed: an ACME HTTP-01 challenge (the token's key
//! authorization, from the fleet database by way of the route change feed,
//! so that whichever router the CA reaches answers), and, for a host with a
//! valid certificate, a redirect to HTTPS (308, which keeps the method and
//! the body). The challenge path is never redirected, and a token this
//! router does not know goes on to the tenant (which may run its own ACME
//! client). The HSTS header of HTTPS answers is set here too.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use slum_http1::RequestHead;

use super::answers::Answer;
use super::tls::Certificates;

/// Where ACME's HTTP-01 challenge asks (RFC 8555 §8.3).
pub(super) const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The plain listener's own answers, and the HTTPS listener's HSTS.
pub(super) struct PlainHttp {
    pub(super) certificates: Arc<Certificates>,
    /// The HTTPS listener's port, when there is one: redirects name it
    /// unless it is 443. No listener, no redirect.
    pub(super) https_port: Option<u16>,
    /// Whether hosts with a valid certificate are redirected to HTTPS when
    /// their certificate does not say (`--https-redirect`).
    pub(super) redirect_by_default: bool,
    /// The `Strict-Transport-Security` value of HTTPS answers, if any.
    pub(super) hsts: Option<HeaderValue>,
}

/// Now, in unix seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl PlainHttp {
    /// The answer to a plain request for `host`, a tenant domain (lower
    /// case, no port), when the router gives it itself; `None`: routed.
    pub(super) fn answer(&self, parts: &RequestHead, host: &str) -> Option<Answer> {
        let path = parts.uri.path();
        if let Some(token) = path.strip_prefix(CHALLENGE_PATH) {
            return self.certificates.http01(host, token).map(challenge_answer);
        }
        let port = self.https_port?;
        // Nothing redirects: no lookup, no lock.
        if !self.redirect_by_default && !self.certificates.any_redirects() {
            return None;
        }
        let certificate = self.certificates.covering(host)?;
        if !certificate.redirect.unwrap_or(self.redirect_by_default)
            || !certificate.valid_at(unix_now())
        {
            return None;
        }
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let location = match port {
            443 => format!("https://{host}{target}"),
            port => format!("https://{host}:{port}{target}"),
        };
        let location = HeaderValue::try_from(location).ok()?;
        let mut resp = Response::new(
            Full::new(Bytes::from_static(b"this site is served over HTTPS\n"))
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        let headers = resp.headers_mut();
        headers.insert(header::LOCATION, location);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Some(Answer::Made(resp))
    }
}

/// The answer to an HTTP-01 challenge: the key authorization, alone.
fn challenge_answer(key_authorization: String) -> Answer {
    let mut resp = Response::new(
        Full::new(Bytes::from(key_authorization))
            .map_err(|never| match never {})
            .boxed(),
    );
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Answer::Made(resp)
}
