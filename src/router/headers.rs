//! A request's head on its way to a server, and a server's on its way back:
//! which Host picks the tenant, the Host and forwarding headers the server
//! gets, the request target under the server's path, and the hop-by-hop
//! headers neither side passes on (RFC 9110 §7.6.1).

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::Uri;
use std::net::SocketAddr;

use super::route_table::{normalize_host, BadHost, Decision, RouteTable};
use slum_http1::{tokens, RawHeaders, RequestHead};

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), by
/// their lower-case names: looking a name up among them is a comparison of
/// lengths, mostly, where comparing header names is not.
static HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The client at the other end of a connection.
pub(super) struct Peer {
    /// Its address as the `X-Forwarded-For` entry, made once per connection.
    pub(super) ip: HeaderValue,
}

impl Peer {
    pub(super) fn new(addr: SocketAddr) -> Peer {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer { ip }
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

/// The request's Host header and its decision, when the header is a routed
/// domain as it stands (lower case, no port: domains are stored normalised):
/// the common case, which needs no normalising and no allocation.
pub(super) fn routed_host<'t>(
    req: &RequestHead,
    table: &'t RouteTable,
) -> Option<(HeaderValue, &'t Decision)> {
    let host = host_header(req).ok()??;
    let decision = table.get(host)?;
    Some((req.headers.shared(host.as_bytes())?, decision))
}

/// The request's host: the Host header (exactly one), or the authority of an
/// absolute-form request target. Forwarding headers sent by the client are never
/// consulted.
pub(super) fn request_host(req: &RequestHead) -> Result<String, BadHost> {
    let raw = match host_header(req)? {
        Some(h) => Some(h),
        None => req.uri.authority().map(|a| a.as_str()),
    };
    normalize_host(raw)
}

pub(super) fn is_upgrade(headers: &RawHeaders) -> bool {
    headers.contains("upgrade")
        && headers
            .get_all("connection")
            .flat_map(tokens)
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The options the Connection header(s) list, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
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

/// Whether `name` (any case) is in `list` (lower case). Inlined, loop and
/// all: it is called for each header line against constant lists, and once
/// the header code moved to crates/http1 the compiler left it (and its
/// `Iter::any`) out of line, for 600 more instructions a request.
#[inline(always)]
fn listed(name: &[u8], list: &[&str]) -> bool {
    for l in list {
        if name.eq_ignore_ascii_case(l.as_bytes()) {
            return true;
        }
    }
    false
}

/// The names the Connection header(s) list, but for the hop-by-hop ones:
/// these are hop-by-hop too.
fn connection_named(headers: &RawHeaders) -> Vec<String> {
    headers
        .get_all("connection")
        .flat_map(tokens)
        .filter(|t| !listed(t.as_bytes(), &HOP_BY_HOP))
        .map(str::to_owned)
        .collect()
}

/// Removes hop-by-hop headers from a server's header lines, including those
/// its `Connection` header names.
pub(super) fn strip_passed_hop_by_hop(headers: &mut RawHeaders) {
    if !headers.iter().any(|(name, _)| listed(name, &HOP_BY_HOP)) {
        return;
    }
    let named = connection_named(headers);
    headers.retain(|name| {
        !listed(name, &HOP_BY_HOP)
            && !named
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
    });
}

/// Headers of the client's the router sets itself, or does not pass on.
const SET_BY_ROUTER: [&str; 6] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// Rewrites the client's headers for the tenement server: Host becomes the
/// mapping, `X-Forwarded-For` gets the client appended, `-Proto` and `-Host` are
/// set by the router (whatever the client sent), `Forwarded` and `X-Real-IP`
/// are not passed on, nor are hop-by-hop headers (those the Connection header
/// names too). For an upgrade, `Upgrade` and `Connection: upgrade` are kept.
pub(super) fn prepare_request_headers(
    request: &mut RequestHead,
    upgrade: bool,
    client_ip: &HeaderValue,
    host: &HeaderValue,
    upstream_host: &HeaderValue,
) {
    let headers = &request.headers;
    let named = connection_named(headers);
    // The client's list (on one line or several) with the client appended;
    // not if the client named it in Connection, which makes it hop-by-hop.
    let prior: Vec<&str> = match named
        .iter()
        .any(|n| n.eq_ignore_ascii_case("x-forwarded-for"))
    {
        true => Vec::new(),
        false => headers
            .get_all("x-forwarded-for")
            .filter(|v| visible_ascii(v))
            .filter_map(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect(),
    };
    let forwarded_for = match prior.is_empty() {
        true => Some(client_ip.clone()),
        false => {
            let ip = client_ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{}, {ip}", prior.join(", "))).ok()
        }
    };
    request.headers.retain(|name| {
        let hop = listed(name, &HOP_BY_HOP) && !(upgrade && name.eq_ignore_ascii_case(b"upgrade"));
        !hop && !listed(name, &SET_BY_ROUTER)
            && !named
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
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
    request
        .set
        .push((X_FORWARDED_PROTO, HeaderValue::from_static("http")));
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
            &peer.ip,
            &HeaderValue::from_static("acme.com"),
            &HeaderValue::from_static("acme.api.east.fleet.test"),
        );
        sent(&r)
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
        // Anything else is normalised (or refused) the long way.
        assert_eq!(with_hosts(&["Acme.com"]), None);
        assert_eq!(with_hosts(&["acme.com:8080"]), None);
        assert_eq!(with_hosts(&["acme.com", "acme.com"]), None);
        assert_eq!(with_hosts(&["nobody.com"]), None);
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut r = get(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        assert!(is_upgrade(&r.headers));
        let peer = Peer::new("127.0.0.1:1".parse().unwrap());
        prepare_request_headers(
            &mut r,
            true,
            &peer.ip,
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
}
