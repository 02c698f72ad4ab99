//! The health checks' requests: tenement's routing check (two `GET /health`,
//! see [`RoutingCheck`]) to every server each round, spoken by the router's
//! HTTP/1.1 core ([`slum_http1`]) on one kept-alive connection a server.
//!
//! Not through the tenement API client (reqwest, over hyper's client): each
//! connection hyper's client keeps costs about 30 KB while idle (its task's
//! channel, an 8 KB write buffer, the read buffer), and a round over a
//! thousand servers with both requests at once kept two a server (60 MB), and
//! allocated some 30 MB more while it ran, a second apart: the largest part
//! of a router's memory at a thousand domains, and a heap that grew in holes
//! round after round. Here the two requests go one after the other on the
//! server's one connection, which holds no buffer between rounds (see
//! [`slum_http1::Conn::release_buffers`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{HeaderValue, HOST};
use hyper::{Method, Uri, Version};
use slum_http1::{RawHeaders, RequestHead};

use crate::error::innermost_cause;
use crate::fleet::db::FleetOptions;
use crate::orchestrate::tenement::{own_probe_host, probe_host, Answer, RoutingCheck};
use crate::server_conn::{self, Connector, ServerIo};

type Conn = slum_http1::Conn<ServerIo>;

/// Of a body, what is kept (for a message); past the most read, the
/// connection is given up rather than read on: tenement's answers to the
/// check are a few bytes.
const BODY_KEPT: usize = 256;
const BODY_READ_AT_MOST: usize = 64 * 1024;

/// The health checks' client: a connector, and each server's connection
/// between rounds.
pub struct HealthClient {
    connector: Connector,
    /// By origin (`scheme://authority/`).
    idle: Mutex<HashMap<String, Box<Conn>>>,
}

impl HealthClient {
    /// A client that opens connections within `options.connect_timeout`,
    /// trusting the public roots and `options.server_roots` for `https://`.
    pub fn new(options: &FleetOptions) -> HealthClient {
        HealthClient {
            connector: server_conn::connector(
                options.connect_timeout,
                options.server_roots.as_ref(),
            ),
            idle: Mutex::default(),
        }
    }

    /// Whether the tenement server at `url` routes the Hosts slum sends it
    /// for `domain` to its instances, and not to its own routes (the same
    /// check as [`TenementClients::check_routing`]), each request allowed
    /// `timeout`. The second request is sent only when the first leaves the
    /// verdict open, on the connection the first came back on.
    ///
    /// [`TenementClients::check_routing`]: crate::tenement::TenementClients::check_routing
    pub async fn check_routing(&self, url: &str, domain: &str, timeout: Duration) -> RoutingCheck {
        let Some((origin, path)) = split_url(url) else {
            return RoutingCheck::Unknown(format!("'{url}' is not an http(s) URL"));
        };
        let key = origin.to_string();
        let mut conn = crate::lock(&self.idle).remove(&key);
        let instance = self
            .ask(&mut conn, &origin, &path, probe_host(domain), timeout)
            .await;
        let own = match &instance {
            Ok(answer) if answer.is_instance_routing() => {
                self.ask(&mut conn, &origin, &path, own_probe_host(domain), timeout)
                    .await
            }
            // The verdict is in without it.
            _ => Err("not asked".into()),
        };
        if let Some(mut conn) = conn {
            conn.release_buffers();
            crate::lock(&self.idle).insert(key, conn);
        }
        RoutingCheck::judge(domain, instance, own)
    }

    /// Forgets the connections to servers other than those at `urls` (the
    /// fleet's now): a server removed is not kept connected to.
    pub fn keep_only<'u>(&self, urls: impl IntoIterator<Item = &'u str>) {
        let keep: std::collections::HashSet<String> = urls
            .into_iter()
            .filter_map(|u| split_url(u).map(|(origin, _)| origin.to_string()))
            .collect();
        crate::lock(&self.idle).retain(|origin, _| keep.contains(origin));
    }

    /// Connections kept now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        crate::lock(&self.idle).len()
    }

    /// `GET {path}/health` with Host `host`, on `conn` (the server's kept
    /// connection, or a new one), within `timeout`; `conn` is left with the
    /// connection when it can carry the next request.
    async fn ask(
        &self,
        conn: &mut Option<Box<Conn>>,
        origin: &Uri,
        path: &str,
        host: String,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let request = RequestHead {
            method: Method::GET,
            uri: format!("{path}/health")
                .parse()
                .map_err(|_| format!("'{path}/health' is not a request path"))?,
            version: Version::HTTP_11,
            headers: RawHeaders::default(),
            set: vec![(
                HOST,
                HeaderValue::try_from(host.as_str())
                    .map_err(|_| format!("'{host}' is not a Host header"))?,
            )],
        };
        match tokio::time::timeout(timeout, self.exchange(conn, origin, &request)).await {
            Ok(answer) => answer,
            Err(_) => {
                *conn = None;
                Err(format!("no answer within {:.1}s", timeout.as_secs_f64()))
            }
        }
    }

    /// One request on the kept connection, or a new one; `slot` is left
    /// with the connection when it can carry the next.
    async fn exchange(
        &self,
        slot: &mut Option<Box<Conn>>,
        origin: &Uri,
        request: &RequestHead,
    ) -> Result<Answer, String> {
        // A connection the server closed since it was last used is passed
        // over.
        let kept = slot
            .take()
            .and_then(|mut conn| conn.is_open().then_some(conn));
        let reused = kept.is_some();
        let conn = match kept {
            Some(conn) => conn,
            None => self.open(origin).await?,
        };
        let exchanged = match conn.exchange(request, NO_BODY).await {
            // The server closed the kept connection as the request went
            // out: once more, on a new one.
            Err(e) if reused && e.nothing_read() => {
                self.open(origin).await?.exchange(request, NO_BODY).await
            }
            exchanged => exchanged,
        };
        let (head, reader) = exchanged.map_err(|e| e.to_string())?;
        let (answer, conn) = read_answer(head, reader).await?;
        *slot = conn;
        Ok(answer)
    }

    async fn open(&self, origin: &Uri) -> Result<Box<Conn>, String> {
        let io = server_conn::open(&self.connector, origin)
            .await
            .map_err(|e| innermost_cause(&*e))?;
        Ok(Conn::new(ServerIo(io)))
    }
}

/// `url`'s origin (scheme and authority) and the path it ends in, without
/// trailing slash; `None` when it is not an http(s) URL.
fn split_url(url: &str) -> Option<(Uri, String)> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme()?.clone();
    if scheme != hyper::http::uri::Scheme::HTTP && scheme != hyper::http::uri::Scheme::HTTPS {
        return None;
    }
    let origin = Uri::builder()
        .scheme(scheme)
        .authority(uri.authority()?.clone())
        .path_and_query("/")
        .build()
        .ok()?;
    Some((origin, uri.path().trim_end_matches('/').to_owned()))
}

/// The status and the start of the body of an exchange's answer, the body
/// read to its end; the connection, when it can carry another request.
async fn read_answer(
    head: slum_http1::ResponseHead,
    mut reader: slum_http1::Reader<ServerIo>,
) -> Result<(Answer, Option<Box<Conn>>), String> {
    let mut kept = Vec::new();
    let mut read = 0;
    while let Some(piece) = std::future::poll_fn(|cx| reader.poll_data(cx)).await {
        let piece = piece.map_err(|e| e.to_string())?;
        read += piece.len();
        let room = BODY_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&piece[..piece.len().min(room)]);
        if read > BODY_READ_AT_MOST {
            break;
        }
    }
    let answer = Answer {
        status: head.status.as_u16(),
        body: String::from_utf8_lossy(&kept).into_owned(),
    };
    Ok((answer, reader.take_reusable()))
}

const NO_BODY: Option<Empty<Bytes>> = None;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    use http_body_util::Full;
    use hyper::{Request, Response};

    /// A tenement server on loopback as the routing check sees it: routing by
    /// `domain` when `routes`, else answering its own health to every Host.
    /// Counts the connections and the requests it took; with `close`, it
    /// closes each connection after one answer.
    async fn tenement(routes: bool, close: bool) -> (String, Arc<(AtomicUsize, AtomicUsize)>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let seen = Arc::clone(&counts);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                seen.0.fetch_add(1, SeqCst);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<_>| {
                        seen.1.fetch_add(1, SeqCst);
                        let host = req.headers()[HOST].to_str().unwrap().to_owned();
                        let own = !routes || host.starts_with("probe..");
                        let resp = match own {
                            true => Response::new(Full::new(Bytes::from(r#"{"status":"ok"}"#))),
                            false => {
                                let mut r = Response::new(Full::new(Bytes::from("Not found")));
                                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (url, counts)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn rounds_of_checks_go_on_one_connection_a_server_with_no_buffer_kept() {
        let (url, counts) = tenement(true, false).await;
        let client = HealthClient::new(&FleetOptions::default());
        for _ in 0..3 {
            let check = client.check_routing(&url, "fleet.test", SECOND).await;
            assert_eq!(check, RoutingCheck::Routes);
        }
        assert_eq!(counts.0.load(SeqCst), 1, "one connection");
        assert_eq!(counts.1.load(SeqCst), 6, "two requests a check");
        assert_eq!(client.kept(), 1);
        let buffers: usize = crate::lock(&client.idle)
            .values()
            .map(|c| c.buffered_capacity())
            .sum();
        assert_eq!(buffers, 0, "nothing held between rounds");
    }

    #[tokio::test]
    async fn a_server_answering_its_own_routes_is_told_after_one_request() {
        let (url, counts) = tenement(false, false).await;
        let client = HealthClient::new(&FleetOptions::default());
        let check = client.check_routing(&url, "fleet.test", SECOND).await;
        assert!(matches!(check, RoutingCheck::Mismatch(_)), "{check:?}");
        assert_eq!(counts.1.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_server_that_closes_its_connections_is_checked_on_new_ones() {
        let (url, counts) = tenement(true, true).await;
        let client = HealthClient::new(&FleetOptions::default());
        for _ in 0..2 {
            let check = client.check_routing(&url, "fleet.test", SECOND).await;
            assert_eq!(check, RoutingCheck::Routes);
        }
        assert_eq!(counts.0.load(SeqCst), 4, "a connection a request");
        assert_eq!(client.kept(), 0);
    }

    #[tokio::test]
    async fn no_server_is_unknown_with_the_cause_and_a_removed_one_is_forgotten() {
        // A port nothing listens on.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nobody = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let client = HealthClient::new(&FleetOptions::default());
        let RoutingCheck::Unknown(why) = client.check_routing(&nobody, "fleet.test", SECOND).await
        else {
            panic!("expected Unknown")
        };
        assert!(
            why.contains("no answer for 'probe.slum-routing-probe.fleet.test'"),
            "{why}"
        );
        assert!(why.to_lowercase().contains("refused"), "{why}");

        let (url, _) = tenement(true, false).await;
        client.check_routing(&url, "fleet.test", SECOND).await;
        assert_eq!(client.kept(), 1);
        client.keep_only([nobody.as_str()]);
        assert_eq!(client.kept(), 0);
    }

    #[test]
    fn a_server_url_gives_its_origin_and_path() {
        let (origin, path) = split_url("https://east.example.com:8443/base/").unwrap();
        assert_eq!(
            (origin.to_string(), path),
            (
                "https://east.example.com:8443/".to_owned(),
                "/base".to_owned()
            )
        );
        assert!(split_url("ftp://east.example.com").is_none());
        assert!(split_url("not a url").is_none());
    }
}
