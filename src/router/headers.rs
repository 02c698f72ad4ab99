//! A request's head on its way to a server, and a server's on its way back:
//! which host picks the tenant (Host, or an absolute-form target's
//! authority), the Host and forwarding headers the server gets, the request
//! target under the server's path, and the hop-by-hop headers neither side
//! passes on (RFC 9110 §7.6.1).
//!
//! The work a head costs is bounded by its size: each line's name is looked
//! at once (its length first), and the options a `Connection` header lists
//! are looked up among the lines' names sorted, not compared with each line
//! (a head of 10,445 options against a hundred lines cost 12 ms of CPU).

use std::cmp::Ordering;
use std::net::SocketAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::Uri;

use super::route_table::{normalize_host, BadHost, Decision, RouteTable};
use slum_http1::{tokens, RawHeaders, RequestHead};

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1, and
/// two that are read the same way: `Proxy-Connection`, the `Connection` of
/// old clients, and h2c's `HTTP2-Settings`), by their lower-case names. The
/// header map of an upgrade's answer is cleaned of them by name; header
/// lines are classified by [`kind`], which agrees.
static HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the router makes of a header line, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Passed on as it came.
    Other,
    /// Describes one hop: not passed on (see [`HOP_BY_HOP`]).
    HopByHop,
    /// Set by the router, whatever the client sent (Host, the forwarding
    /// headers), or not passed on (`Forwarded`, `X-Real-IP`). The
    /// forwarding headers spelt with `_` for `-` are theirs too: stacks that
    /// turn header names into CGI variables (`HTTP_X_FORWARDED_FOR`) read
    /// both spellings as one.
    SetByRouter,
}

/// The [`Kind`] of the header called `name` (any case). Inlined, and by the
/// name's length first: it is asked of every line of every message, and a
/// name of another length than any listed costs no comparison at all.
#[inline(always)]
fn kind(name: &[u8]) -> Kind {
    let is = |listed: &str| name.eq_ignore_ascii_case(listed.as_bytes());
    let forwarding = |listed: &str| same_but_underscores(name, listed.as_bytes());
    match name.len() {
        2 if is("te") => Kind::HopByHop,
        4 if is("host") => Kind::SetByRouter,
        7 if is("trailer") || is("upgrade") => Kind::HopByHop,
        9 if is("forwarded") || forwarding("x-real-ip") => Kind::SetByRouter,
        10 if is("connection") || is("keep-alive") => Kind::HopByHop,
        14 if is("http2-settings") => Kind::HopByHop,
        15 if forwarding("x-forwarded-for") => Kind::SetByRouter,
        16 if is("proxy-connection") => Kind::HopByHop,
        16 if forwarding("x-forwarded-host") => Kind::SetByRouter,
        17 if is("transfer-encoding") => Kind::HopByHop,
        17 if forwarding("x-forwarded-proto") => Kind::SetByRouter,
        18 if is("proxy-authenticate") => Kind::HopByHop,
        19 if is("proxy-authorization") => Kind::HopByHop,
        _ => Kind::Other,
    }
}

/// Whether `name` is `listed` (lower case, same length), in any case and
/// with any of its `-` written `_`.
#[inline(always)]
fn same_but_underscores(name: &[u8], listed: &[u8]) -> bool {
    name.len() == listed.len()
        && name
            .iter()
            .zip(listed)
            .all(|(&n, &l)| n.to_ascii_lowercase() == l || (n == b'_' && l == b'-'))
}

/// The client at the other end of a connection.
#[derive(Clone)]
pub(super) struct Peer {
    /// Its address as the `X-Forwarded-For` entry, made once per connection.
    pub(super) ip: HeaderValue,
    /// Whether it came over TLS (the HTTPS listener).
    pub(super) https: bool,
}

impl Peer {
    /// A client of the plain listener.
    pub(super) fn new(addr: SocketAddr) -> Peer {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer { ip, https: false }
    }

    /// A client of the HTTPS listener.
    pub(super) fn over_tls(addr: SocketAddr) -> Peer {
        Peer {
            https: true,
            ..Peer::new(addr)
        }
    }

    /// Its scheme, as `X-Forwarded-Proto` tells the server.
    fn proto(&self) -> HeaderValue {
        HeaderValue::from_static(match self.https {
            true => "https",
            false => "http",
        })
    }
}

/// The request's Host header, if it has one, as text (visible ASCII); two,
/// or one that is not text, are malformed.
fn host_header(req: &RequestHead) -> Result<Option<&str>, BadHost> {
    let mut hosts = req.headers.get_all("host");
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(BadHost::Malformed),
        (None, _) => Ok(None),
        (Some(host), None) => match visible_ascii(host) {
            true => Ok(std::str::from_utf8(host).ok()),
            false => Err(BadHost::Malformed),
        },
    }
}

/// Whether a header value is text: visible ASCII, spaces and tabs (what
/// `HeaderValue::to_str` takes).
fn visible_ascii(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The request's host and its decision, when the host is a routed domain as
/// it stands (lower case: domains are stored normalised), but for a port: the
/// common case, which needs no normalising and no allocation (but for an
/// HTTP/2 request's, whose host is its `:authority`, not a header line). The
/// host is the target's authority when it has one (HTTP/2's `:authority`, an
/// absolute-form target), which a Host header must then repeat exactly, or
/// else the Host header. Anything else goes the long way
/// ([`request_host`]), which normalises, or refuses.
pub(super) fn routed_host<'t>(
    req: &RequestHead,
    table: &'t RouteTable,
) -> Option<(HeaderValue, Decision<'t>)> {
    let header = host_header(req).ok()?;
    match req.uri.authority().map(|a| a.as_str()) {
        Some(authority) => {
            if header.is_some_and(|h| h != authority) {
                return None;
            }
            let domain = without_port(authority);
            let decision = table.get(domain)?;
            Some((HeaderValue::from_str(domain).ok()?, decision))
        }
        None => {
            let domain = without_port(header?);
            let decision = table.get(domain)?;
            Some((req.headers.shared(domain.as_bytes())?, decision))
        }
    }
}

/// `host` without its `:port`, when it ends in one (digits only); as it is
/// otherwise (no domain has a colon: the lookup of one finds nothing).
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((domain, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            domain
        }
        _ => host,
    }
}

/// The request's host: the authority of an absolute-form request target
/// (RFC 9112 §3.2.2), or else the Host header (exactly one). A Host header
/// that names another host than the target makes the request mean two
/// things to two readers: [`BadHost::Conflicting`]. Forwarding headers sent
/// by the client are never consulted.
pub(super) fn request_host(req: &RequestHead) -> Result<String, BadHost> {
    let header = host_header(req)?;
    let Some(authority) = req.uri.authority() else {
        return normalize_host(header);
    };
    let target = normalize_host(Some(authority.as_str()))?;
    match header {
        Some(host) if normalize_host(Some(host))? != target => Err(BadHost::Conflicting),
        _ => Ok(target),
    }
}

/// Whether the request asks to switch to WebSocket: the one upgrade the
/// router tunnels. Any other (`h2c`) goes on as a plain request, its
/// `Upgrade` taken out as hop-by-hop (a server may always ignore one, RFC
/// 9110 §7.8).
pub(super) fn is_upgrade(headers: &RawHeaders) -> bool {
    headers.contains("upgrade")
        && headers
            .get_all("connection")
            .flat_map(tokens)
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
        && upgrades_to_websocket(headers)
}

/// Whether every protocol the `Upgrade` header(s) offer is WebSocket.
fn upgrades_to_websocket(headers: &RawHeaders) -> bool {
    let mut offered = headers.get_all("upgrade").flat_map(tokens).peekable();
    offered.peek().is_some() && offered.all(|p| p.eq_ignore_ascii_case("websocket"))
}

/// The options the Connection header(s) list, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    kind(name.as_str().as_bytes()) == Kind::HopByHop
}

/// Removes hop-by-hop headers, including those the Connection header names. For
/// an upgrade, `Upgrade` and `Connection: upgrade` are kept.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One look over the names first: most messages carry none, and removing
    // each by name would cost a lookup apiece.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| !is_hop_by_hop(n))
        .collect();
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in &named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Two header names in the order of their lower-case bytes. Tests count the
/// calls: the work a head's `Connection` options cost is the names compared.
fn compare_names(a: &[u8], b: &[u8]) -> Ordering {
    #[cfg(test)]
    tests::COMPARED.with(|c| c.set(c.get() + 1));
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

/// Which lines the Connection header(s) name, by their place among the
/// lines (the hop-by-hop ones aside: those go anyway); `None` when they name
/// none, as they mostly do, which costs one look at each option.
///
/// The lines' names are sorted once (at most [`slum_http1::MAX_HEADERS`]),
/// and each option is looked up among them by binary search, marking the
/// first line of its name; the marks then spread over the other lines of
/// that name. The names compared grow with the options times the log of the
/// lines, never with options times lines.
fn connection_named(headers: &RawHeaders) -> Option<Vec<bool>> {
    let mut options = headers
        .get_all("connection")
        .flat_map(tokens)
        .filter(|t| kind(t.as_bytes()) != Kind::HopByHop)
        .peekable();
    options.peek()?;
    let mut sorted: Vec<(&[u8], usize)> = headers
        .iter()
        .enumerate()
        .map(|(at, (name, _))| (name, at))
        .collect();
    sorted.sort_unstable_by(|a, b| compare_names(a.0, b.0));
    let mut marked = vec![false; sorted.len()];
    for option in options {
        let option = option.as_bytes();
        let first = sorted.partition_point(|(name, _)| compare_names(name, option).is_lt());
        if let Some((name, _)) = sorted.get(first) {
            if compare_names(name, option).is_eq() {
                marked[first] = true;
            }
        }
    }
    let mut named = vec![false; sorted.len()];
    for i in 0..sorted.len() {
        if i > 0 && !marked[i] && compare_names(sorted[i - 1].0, sorted[i].0).is_eq() {
            marked[i] = marked[i - 1];
        }
        named[sorted[i].1] = marked[i];
    }
    Some(named)
}

/// Whether line `at` is one `named` names.
#[inline(always)]
fn is_named(named: &Option<Vec<bool>>, at: usize) -> bool {
    named
        .as_ref()
        .is_some_and(|n| n.get(at).copied().unwrap_or(false))
}

/// Removes hop-by-hop headers from a server's header lines, including those
/// its `Connection` header names.
pub(super) fn strip_passed_hop_by_hop(headers: &mut RawHeaders) {
    if !headers.iter().any(|(name, _)| kind(name) == Kind::HopByHop) {
        return;
    }
    let named = connection_named(headers);
    let mut at = 0;
    headers.retain(|name| {
        let keep = kind(name) != Kind::HopByHop && !is_named(&named, at);
        at += 1;
        keep
    });
}

/// Rewrites the client's headers for the tenement server: Host becomes the
/// mapping, `X-Forwarded-For` gets the client appended, `-Proto` (the scheme
/// the client used: `https` on the HTTPS listener) and `-Host` are set by the
/// router (whatever the client sent), `Forwarded` and `X-Real-IP`
/// are not passed on, nor are their lookalikes with `_` for `-`, nor
/// hop-by-hop headers (those the Connection header names too). For an
/// upgrade, `Upgrade` and `Connection: upgrade` are kept.
pub(super) fn prepare_request_headers(
    request: &mut RequestHead,
    upgrade: bool,
    peer: &Peer,
    host: &HeaderValue,
    upstream_host: &HeaderValue,
) {
    let client_ip = &peer.ip;
    let headers = &request.headers;
    let named = connection_named(headers);
    // The client's list (on one line or several) with the client appended:
    // only the header of that very name (a lookalike is dropped, not
    // appended to), and not if the client named it in Connection, which
    // makes it hop-by-hop.
    let prior: Vec<&str> = headers
        .iter()
        .enumerate()
        .filter(|(at, (name, _))| {
            name.eq_ignore_ascii_case(b"x-forwarded-for") && !is_named(&named, *at)
        })
        .map(|(_, (_, value))| value)
        .filter(|v| visible_ascii(v))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let forwarded_for = match prior.is_empty() {
        true => Some(client_ip.clone()),
        false => {
            let ip = client_ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{}, {ip}", prior.join(", "))).ok()
        }
    };
    let mut at = 0;
    request.headers.retain(|name| {
        let keep = match kind(name) {
            Kind::Other => true,
            Kind::HopByHop => upgrade && name.eq_ignore_ascii_case(b"upgrade"),
            Kind::SetByRouter => false,
        } && !is_named(&named, at);
        at += 1;
        keep
    });
    request.set.clear();
    request.set.reserve(5);
    if upgrade {
        request
            .set
            .push((header::CONNECTION, HeaderValue::from_static("upgrade")));
    }
    request.set.push((header::HOST, upstream_host.clone()));
    if let Some(v) = forwarded_for {
        request.set.push((X_FORWARDED_FOR, v));
    }
    request.set.push((X_FORWARDED_PROTO, peer.proto()));
    request.set.push((X_FORWARDED_HOST, host.clone()));
}

/// The origin-form URI of a request sent upstream: the server URL's path
/// (usually none) followed by the request's path and query.
pub(super) fn upstream_uri(prefix: &str, request: &Uri) -> Result<Uri, hyper::http::Error> {
    let path = request
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if prefix.is_empty() {
        return Ok(Uri::from(path));
    }
    Ok(format!("{prefix}{path}").parse::<Uri>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    thread_local! {
        /// Header names compared on this thread (see `compare_names`).
        pub(super) static COMPARED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// The header names `work` compares.
    fn names_compared(work: impl FnOnce()) -> u64 {
        COMPARED.with(|c| c.set(0));
        work();
        COMPARED.with(|c| c.get())
    }

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::Method;
    use tokio::net::TcpListener;

    use slum_http1::CoarseTimer;
    use slum_http1::ResponseHead;
    use slum_http1::{ClientConn, Limits};

    /// A GET with these header lines.
    fn get(pairs: &[(&str, &str)]) -> RequestHead {
        get_of("/", pairs)
    }

    fn get_of(uri: &str, pairs: &[(&str, &str)]) -> RequestHead {
        RequestHead::for_test(Method::GET, uri, pairs)
    }

    /// The lines `request` goes to the server with, as a header map.
    fn sent(request: &RequestHead) -> HeaderMap {
        request.header_map().unwrap()
    }

    /// The lines a GET to acme.com from 10.1.2.3 with `lines` goes to its
    /// server with (acme.api.east.fleet.test), as a header map.
    fn forwarded(lines: &[(&str, &str)]) -> HeaderMap {
        let mut r = get(lines);
        let peer = Peer::new("10.1.2.3:5555".parse().unwrap());
        prepare_request_headers(
            &mut r,
            false,
            &peer,
            &HeaderValue::from_static("acme.com"),
            &HeaderValue::from_static("acme.api.east.fleet.test"),
        );
        sent(&r)
    }

    #[test]
    fn the_scheme_told_is_the_listeners_whatever_the_client_says() {
        let mut r = get(&[("host", "acme.com"), ("x-forwarded-proto", "http")]);
        let peer = Peer::over_tls("10.1.2.3:5555".parse().unwrap());
        prepare_request_headers(
            &mut r,
            false,
            &peer,
            &HeaderValue::from_static("acme.com"),
            &HeaderValue::from_static("acme.api.east.fleet.test"),
        );
        let h = sent(&r);
        assert_eq!(h.get_all("x-forwarded-proto").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    }

    #[test]
    fn request_headers_are_rewritten_for_the_server() {
        let h = forwarded(&[
            ("host", "acme.com"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.8"),
            ("x-real-ip", "203.0.113.8"),
            ("accept", "text/html"),
        ]);
        assert_eq!(h["host"], "acme.api.east.fleet.test");
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["203.0.113.7, 198.51.100.2, 10.1.2.3"]
        );
        assert_eq!(h["x-forwarded-host"], "acme.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["accept"], "text/html");
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }

        // A request with none of them gets the router's own.
        let h = forwarded(&[("host", "acme.com"), ("accept", "text/html")]);
        assert_eq!(h["host"], "acme.api.east.fleet.test");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-host"], "acme.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h.len(), 5);
    }

    #[test]
    fn a_servers_hop_by_hop_headers_are_not_passed_on() {
        let mut head = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret-Hop\r\nX-Tenant: a\r\n\
              x-secret-hop: 1\r\nKeep-Alive: timeout=5\r\nTrailer: x-sum\r\nUpgrade: h2c\r\n\
              Proxy-Authenticate: Basic\r\nTE: trailers\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
              Content-Length: 2\r\n\r\n",
        );
        strip_passed_hop_by_hop(&mut head.headers);
        let kept = [
            ("X-Tenant", "a"),
            ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("Content-Length", "2"),
        ];
        let kept: Vec<_> = kept
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(head.headers.lines(), kept);
        // Chunked framing is the hop's: it goes, the length with it.
        let mut head = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n",
        );
        strip_passed_hop_by_hop(&mut head.headers);
        assert_eq!(head.headers.lines(), [("X-A".to_string(), "1".to_string())]);
        assert_eq!(head.headers.content_length(), None);
    }

    /// Passes `server_head` (with a `body` of its length) to a client as the
    /// router does: hop-by-hop lines taken out, then written by the client's
    /// connection, which stays open. Returns what the client read.
    async fn passed_to_client(server_head: &'static [u8], body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let limits = Limits {
                header_timeout: Duration::from_secs(5),
                max_header_bytes: 4096,
                max_connection_options: 32,
                body_timeout: Duration::from_secs(5),
                min_body_rate: None,
            };
            let mut conn = ClientConn::new(stream, limits, CoarseTimer::new());
            let _request = conn.read_request(|_| false).await.unwrap().unwrap();
            let mut head = ResponseHead::parse(server_head);
            strip_passed_hop_by_hop(&mut head.headers);
            let body = Full::new(Bytes::from_static(body.as_bytes()));
            conn.write_answer(head.status, &head.headers, body, false)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.com\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A server that names Content-Length in its Connection header: the line
    /// goes as hop-by-hop, and the client is still told the body's length,
    /// or its kept-alive connection would have no framing at all.
    #[tokio::test]
    async fn a_length_named_in_connection_still_frames_the_answer() {
        let got = passed_to_client(
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n",
            "hello",
        )
        .await;
        assert!(
            got.to_ascii_lowercase()
                .contains("\r\ncontent-length: 5\r\n\r\nhello"),
            "the answer has no framing:\n{got}"
        );
        let mut head = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
        );
        strip_passed_hop_by_hop(&mut head.headers);
        assert_eq!(head.headers.content_length(), None);
    }

    /// A client's X-Forwarded-For named in Connection is hop-by-hop (RFC 9110
    /// §7.6.1): the server gets the client's address alone.
    #[test]
    fn a_forwarded_for_named_in_connection_is_not_passed_on() {
        let h = forwarded(&[
            ("Host", "acme.com"),
            ("Connection", "X-Forwarded-For"),
            ("X-Forwarded-For", "203.0.113.9"),
        ]);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["10.1.2.3"]
        );
    }

    #[test]
    fn hosts_routed_as_they_stand_take_the_short_way() {
        use crate::fleet::model::ServerStatus;
        use crate::router::route_table::tests::{server, tenant};
        let table = RouteTable::build(
            1,
            &[server("east", ServerStatus::Online)],
            &[tenant("acme.com", "acme", "east")],
            &[],
        );
        let with_hosts = |hosts: &[&str]| {
            let lines: Vec<_> = hosts.iter().map(|h| ("host", *h)).collect();
            routed_host(&get(&lines), &table).map(|(host, _)| host)
        };
        assert_eq!(with_hosts(&["acme.com"]).unwrap(), "acme.com");
        // A port is left out of X-Forwarded-Host, as the long way does.
        assert_eq!(with_hosts(&["acme.com:8443"]).unwrap(), "acme.com");
        // Anything else is normalised (or refused) the long way.
        assert_eq!(with_hosts(&["Acme.com"]), None);
        assert_eq!(with_hosts(&["acme.com:"]), None);
        assert_eq!(with_hosts(&["acme.com:x"]), None);
        assert_eq!(with_hosts(&["acme.com", "acme.com"]), None);
        assert_eq!(with_hosts(&["nobody.com"]), None);
        assert_eq!(with_hosts(&["acme.com."]), None);
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut r = get(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        assert!(is_upgrade(&r.headers));
        let peer = Peer::new("127.0.0.1:1".parse().unwrap());
        prepare_request_headers(
            &mut r,
            true,
            &peer,
            &HeaderValue::from_static("a.com"),
            &HeaderValue::from_static("a.api.s.test"),
        );
        let h = sent(&r);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(
            h.get_all("connection").iter().collect::<Vec<_>>(),
            ["upgrade"]
        );
        assert!(!is_upgrade(&get(&[("upgrade", "websocket")]).headers));
    }

    #[test]
    fn upstream_uris_keep_the_request_path_and_query() {
        use crate::router::route_table::split_url;
        let request: Uri = "/a/b?c=d".parse().unwrap();
        let (origin, prefix) = split_url("http://10.0.0.1:8000");
        assert_eq!(origin.unwrap(), "http://10.0.0.1:8000/");
        assert_eq!(upstream_uri(&prefix, &request).unwrap(), "/a/b?c=d");
        // An absolute-form request target goes on in origin form.
        let absolute: Uri = "http://acme.com".parse().unwrap();
        assert_eq!(upstream_uri(&prefix, &absolute).unwrap(), "/");
        // A server behind a path prefix keeps it.
        let (origin, prefix) = split_url("https://edge.example.net/ten/");
        assert_eq!(origin.unwrap(), "https://edge.example.net/");
        assert_eq!(prefix, "/ten");
        assert_eq!(upstream_uri(&prefix, &request).unwrap(), "/ten/a/b?c=d");
        assert_eq!(split_url("not a url").0, None);
    }

    #[test]
    fn only_the_host_header_picks_the_tenant() {
        let req = get_of(
            "/x",
            &[("Host", "Acme.com:8080"), ("x-forwarded-host", "other.com")],
        );
        assert_eq!(request_host(&req), Ok("acme.com".into()));
        let req = get_of("/x", &[("x-forwarded-host", "other.com")]);
        assert_eq!(request_host(&req), Err(BadHost::Missing));
        let req = get_of("/x", &[("host", "a.com"), ("HOST", "b.com")]);
        assert_eq!(request_host(&req), Err(BadHost::Malformed));
        let req = get_of("/x", &[("host", "a.com\u{7f}")]);
        assert_eq!(request_host(&req), Err(BadHost::Malformed));
        let req = get_of("http://acme.com/x", &[]);
        assert_eq!(request_host(&req), Ok("acme.com".into()));
    }

    /// 8,000 `Connection` options against ninety-odd lines, as a head under
    /// 64 KiB can hold: the lines they name go, and the names compared grow
    /// with the options, not with options times lines (which, at 10,445
    /// options, cost 12 ms of CPU a head).
    #[test]
    fn connection_options_cost_work_in_proportion_not_in_product() {
        let mut options: Vec<String> = (0..8_000).map(|i| format!("x-o{i}")).collect();
        options[4_000] = "X-Line-7".into();
        let options = options.join(",");
        let names: Vec<String> = (0..90).map(|i| format!("x-line-{i}")).collect();
        let mut lines: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        lines.push(("host", "acme.com"));
        lines.push(("connection", &options));
        let mut kept = HeaderMap::new();
        let compared = names_compared(|| kept = forwarded(&lines));
        assert!(!kept.contains_key("x-line-7"));
        assert!(kept.contains_key("x-line-8") && kept.contains_key("x-line-70"));
        println!("{compared} names compared for a request head with 8,000 options");
        assert!(
            compared < 10 * 8_000,
            "{compared} names compared for a request head with 8,000 options"
        );

        let mut raw = String::from("HTTP/1.1 200 OK\r\n");
        for (name, value) in &lines {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("content-length: 0\r\n\r\n");
        let mut head = ResponseHead::parse(raw.as_bytes());
        let compared = names_compared(|| strip_passed_hop_by_hop(&mut head.headers));
        assert!(!head.headers.contains("x-line-7"));
        assert!(head.headers.contains("x-line-8"));
        assert!(
            compared < 10 * 8_000,
            "{compared} names compared for a response head with 8,000 options"
        );
    }

    /// Forwarding headers spelt with `_` for `-` are read as the real ones by
    /// stacks that turn names into CGI variables: they go, as the real ones
    /// do (and are never appended to). `Proxy-Connection` and `HTTP2-Settings`
    /// are hop-by-hop.
    #[test]
    fn lookalikes_of_the_routers_own_headers_are_not_passed_on() {
        let h = forwarded(&[
            ("host", "acme.com"),
            ("X_Forwarded_For", "203.0.113.66"),
            ("x-forwarded_for", "203.0.113.67"),
            ("X_Real_IP", "203.0.113.68"),
            ("X-Real_Ip", "203.0.113.69"),
            ("X_Forwarded_Host", "evil.example"),
            ("x_forwarded_proto", "https"),
            ("Proxy-Connection", "keep-alive"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("x_custom", "kept"),
        ]);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["10.1.2.3"]
        );
        assert_eq!(h["x-forwarded-host"], "acme.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x_custom"], "kept");
        for gone in [
            "x_forwarded_for",
            "x-forwarded_for",
            "x_real_ip",
            "x-real_ip",
            "x_forwarded_host",
            "x_forwarded_proto",
            "proxy-connection",
            "http2-settings",
        ] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
        let mut head = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
        );
        strip_passed_hop_by_hop(&mut head.headers);
        assert!(!head.headers.contains("proxy-connection"));
    }

    /// A `Connection` value with a token that is not ASCII still names the
    /// headers its other tokens name.
    #[test]
    fn a_non_ascii_connection_option_does_not_hide_the_others() {
        // The value's bytes are UTF-8: obs-text, as a client may send it.
        let mut r = get(&[
            ("host", "acme.com"),
            ("connection", "x-secret, caf\u{e9}"),
            ("x-secret", "1"),
        ]);
        let peer = Peer::new("10.1.2.3:5555".parse().unwrap());
        prepare_request_headers(
            &mut r,
            false,
            &peer,
            &HeaderValue::from_static("acme.com"),
            &HeaderValue::from_static("acme.api.east.fleet.test"),
        );
        assert!(!r.headers.contains("x-secret"), "{:?}", r.headers.lines());
        let mut head = ResponseHead::parse(
            "HTTP/1.1 200 OK\r\nConnection: x-secret, caf\u{e9}\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n"
                .as_bytes(),
        );
        strip_passed_hop_by_hop(&mut head.headers);
        assert!(!head.headers.contains("x-secret"));
    }

    /// Only WebSocket upgrades are tunnelled: an `h2c` one goes on as a
    /// plain request, its `Upgrade` and `HTTP2-Settings` taken out.
    #[test]
    fn only_websocket_upgrades_are_tunnelled() {
        let ws = get(&[("Connection", "Upgrade"), ("Upgrade", "WebSocket")]);
        assert!(is_upgrade(&ws.headers));
        let h2c = [
            ("host", "acme.com"),
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ];
        assert!(!is_upgrade(&get(&h2c).headers));
        let both = get(&[("Connection", "upgrade"), ("Upgrade", "h2c, websocket")]);
        assert!(!is_upgrade(&both.headers));
        let h = forwarded(&h2c);
        for gone in ["upgrade", "http2-settings", "connection"] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
    }

    /// An absolute-form target's authority picks the tenant; a Host header
    /// that names another host makes the request mean two things: refused.
    #[test]
    fn an_absolute_form_target_picks_the_host_and_must_agree_with_host() {
        let req = get_of("http://Acme.com:80/x", &[("host", "acme.com")]);
        assert_eq!(request_host(&req), Ok("acme.com".into()));
        let req = get_of("http://other.example/x", &[("host", "acme.com")]);
        assert!(request_host(&req).is_err());
        let req = get_of("http://acme.com/x", &[("host", "other.example")]);
        assert!(request_host(&req).is_err());
        let req = get_of("http://evil@acme.com/x", &[]);
        assert!(request_host(&req).is_err());
        // Not the short way, which reads Host alone.
        use crate::fleet::model::ServerStatus;
        use crate::router::route_table::tests::{server, tenant};
        let table = RouteTable::build(
            1,
            &[server("east", ServerStatus::Online)],
            &[tenant("acme.com", "acme", "east")],
            &[],
        );
        let req = get_of("http://other.example/x", &[("host", "acme.com")]);
        assert!(routed_host(&req, &table).is_none());
        let req = get_of("http://acme.com/x", &[("host", "other.example")]);
        assert!(routed_host(&req, &table).is_none());
        let req = get_of("http://evil@acme.com/x", &[]);
        assert!(routed_host(&req, &table).is_none());
        // A Host header that repeats the authority in another form: the long
        // way, which compares them normalised.
        let req = get_of("http://Acme.com:80/x", &[("host", "acme.com")]);
        assert!(routed_host(&req, &table).is_none());
    }

    /// HTTP/2's `:authority` (a target with an authority, and most often no
    /// Host header) takes the short way when it is a routed domain.
    #[test]
    fn an_authority_routed_as_it_stands_takes_the_short_way() {
        use crate::fleet::model::ServerStatus;
        use crate::router::route_table::tests::{server, tenant};
        let table = RouteTable::build(
            1,
            &[server("east", ServerStatus::Online)],
            &[tenant("acme.com", "acme", "east")],
            &[],
        );
        let host = |target: &str, headers: &[(&str, &str)]| {
            routed_host(&get_of(target, headers), &table).map(|(host, _)| host)
        };
        assert_eq!(host("https://acme.com/x", &[]).unwrap(), "acme.com");
        assert_eq!(host("https://acme.com:8443/x", &[]).unwrap(), "acme.com");
        assert_eq!(
            host("https://acme.com:8443/x", &[("host", "acme.com:8443")]).unwrap(),
            "acme.com"
        );
        assert_eq!(host("https://Acme.com/x", &[]), None);
        assert_eq!(host("https://nobody.com/x", &[]), None);
    }
}
