//! The dashboard: a page on the management listener (`/ui/`) that shows the
//! fleet live, from the management API's own JSON, polled by the page.
//!
//! The page is three files embedded in the binary (`assets/`: HTML, plain
//! JavaScript, CSS): no build step, nothing fetched from elsewhere, and a
//! Content-Security-Policy that allows nothing else (no inline script or
//! style, no other origin). The script builds the page's rows with DOM calls
//! (`textContent`), never by parsing the API's values as HTML.
//!
//! Signing in takes an API token, posted by a plain form to `/ui/sign-in`.
//! It opens a session ([`Sessions`]) whose random id goes back in an
//! `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the page came over
//! HTTPS, as a proxy in front says with `X-Forwarded-Proto`); the token
//! never reaches the page or a URL. The API accepts the cookie for GET and
//! HEAD alone, so a session can read the fleet and change nothing: every
//! change still takes a bearer token. Signing in and out are POSTs, refused
//! when the browser says they come from another origin; with the cookie
//! `SameSite=Strict`, another site can neither use a session nor sign one in.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{request_problem, unauthorized};
use crate::serve::AppState;

mod sessions;

pub use sessions::{Sessions, COOKIE, MAX_SESSIONS, SESSION_TTL};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const ICON: &str = include_str!("assets/icon.svg");

/// Where the page and its files may come from, and what they may do: only
/// this origin's files, only its API, and never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes, outside the API's bearer-token layer.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(to_page))
        .route("/ui", get(to_page))
        .route("/ui/", get(page))
        .route("/ui/app.js", get(app_js))
        .route("/ui/style.css", get(style))
        .route("/ui/icon.svg", get(icon))
        .route("/ui/session", get(session))
        .route("/ui/sign-in", post(sign_in))
        .route("/ui/sign-out", post(sign_out))
}

/// A file of the page, with the headers every one of them carries.
fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with the
    // page's own form posts, which then cannot be told from another site's.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Embedded in the binary: a new version is a new process, and the
    // browser asks again each time (they are small).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn see_other(location: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static(location))],
    )
        .into_response()
}

async fn to_page() -> Response {
    see_other("/ui/")
}

async fn page() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

async fn app_js() -> Response {
    file("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

async fn icon() -> Response {
    file("image/svg+xml", ICON)
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The token id of the dashboard session a request carries, when it may use
/// one: a GET or HEAD (a session reads, and never changes anything).
pub(super) fn session_token(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Option<String> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    state.sessions.token_of(cookie(headers, COOKIE)?)
}

/// Whether a POST may come from where the browser says it does: no `Origin`
/// (not a browser's cross-site request), or one whose host is the `Host` the
/// request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(HeaderValue::to_str),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Whether the page was reached over HTTPS: a proxy in front says so with
/// `X-Forwarded-Proto`, a browser with the `Origin` of its POST.
fn over_https(headers: &HeaderMap) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"));
    forwarded || origin
}

/// The `Set-Cookie` of a session: `id`, or, with `None`, one that ends it.
fn session_cookie(id: Option<&str>, https: bool) -> HeaderValue {
    let (value, max_age) = match id {
        Some(id) => (id, SESSION_TTL.as_secs()),
        None => ("", 0),
    };
    let secure = if https { "; Secure" } else { "" };
    // A session id is hex: always a valid header value.
    HeaderValue::try_from(format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("slum_session=; Max-Age=0"))
}

fn cross_origin() -> Response {
    request_problem(
        StatusCode::FORBIDDEN,
        "forbidden",
        "signing in or out is only taken from the dashboard's own page".to_owned(),
    )
}

/// `POST /ui/sign-in`: a form with `token`. A valid token opens a session
/// and goes to the page; another goes back to the sign-in form, saying so.
async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&headers) {
        return cross_origin();
    }
    let secret = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let token = match secret.is_empty() {
        true => None,
        false => match state.db.verify_api_token(&secret).await {
            Ok(token) => token,
            Err(e) => return e.into_response(),
        },
    };
    let Some(token) = token else {
        tracing::warn!("dashboard sign-in refused: not a valid API token");
        return see_other("/ui/?signin=failed");
    };
    let session = state.sessions.open(&token.id);
    tracing::info!(token = %token.id, name = %token.name, "dashboard sign-in");
    let mut resp = see_other("/ui/");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(Some(&session), over_https(&headers)),
    );
    resp
}

/// `POST /ui/sign-out`: ends the session, and its cookie.
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_origin();
    }
    if let Some(id) = cookie(&headers, COOKIE) {
        state.sessions.close(id);
    }
    let mut resp = see_other("/ui/");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(None, over_https(&headers)),
    );
    resp
}

/// `GET /ui/session`: the token the session was opened with (its id and
/// name), or 401 when there is none, for the page to show its sign-in form.
async fn session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token_id) = session_token(&state, &Method::GET, &headers) else {
        return unauthorized("not signed in");
    };
    match state.db.valid_api_token(&token_id).await {
        Ok(Some(token)) => Json(serde_json::json!({ "token": token })).into_response(),
        Ok(None) => unauthorized("the session's token was revoked"),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[
            ("cookie", "theme=dark; slum_session=abc"),
            ("cookie", "other=1"),
        ]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(
            cookie(&headers(&[("cookie", "slum_session=")]), COOKIE),
            None
        );
        assert_eq!(
            cookie(&headers(&[("cookie", "xslum_session=abc")]), COOKIE),
            None
        );
    }

    #[test]
    fn a_post_from_another_origin_is_told_apart() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9090")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "https://evil.example"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "null"),
        ])));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_https() {
        let plain = session_cookie(Some("abc"), false);
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("slum_session=abc; Path=/; HttpOnly; SameSite=Strict"));
        assert!(!plain.contains("Secure"), "{plain}");
        let secure = session_cookie(Some("abc"), true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
        let ended = session_cookie(None, false);
        assert!(ended.to_str().unwrap().contains("Max-Age=0"));
        assert!(over_https(&headers(&[("x-forwarded-proto", "https")])));
        assert!(!over_https(&headers(&[("x-forwarded-proto", "http")])));
    }
}
