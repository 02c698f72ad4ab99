//! A WebSocket echo server that speaks enough of tenement's API for slum to
//! place an instance on it.

use std::net::SocketAddr;

/// tenement 0.2.1 does not bridge `Upgrade` requests (its proxy has no upgrade
/// handling), so a WebSocket through a real tenement cannot work. This stand-in
/// speaks just enough of tenement's API for slum to place an instance on it, and
/// echoes WebSocket messages on every other request: it shows that the router
/// itself passes upgrades through.
pub async fn echo_server() -> SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;
    fn json(s: &str) -> Response<Body> {
        Response::new(Full::new(bytes::Bytes::from(s.to_owned())).boxed())
    }
    async fn handle(
        mut req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let path = req.uri().path().to_owned();
        if path == "/api/instances/spawn" {
            return Ok(json(r#"{"instance":"api:chat","port":30000}"#));
        }
        // tenement's routing: its own /health for its own Host, 404 for an
        // instance of a process it lacks (what slum's routing check asks).
        if path == "/health" {
            let probe = req
                .headers()
                .get("host")
                .is_some_and(|h| h.as_bytes().starts_with(b"probe.slum-routing-probe."));
            return Ok(if probe {
                let mut resp = json("Not found");
                *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
                resp
            } else {
                json(r#"{"status":"ok"}"#)
            });
        }
        if path.ends_with("/health") {
            return Ok(json(r#"{"instance":"api:chat","health":"healthy"}"#));
        }
        if path == "/api/instances" {
            return Ok(json("[]"));
        }
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            return Ok(json("not a websocket request"));
        };
        let host = req.headers().get("host").cloned();
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            use futures::{SinkExt, StreamExt};
            let Ok(io) = upgrade.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                hyper_util::rt::TokioIo::new(io),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    let _ = ws.send(msg).await;
                }
            }
        });
        let mut resp = Response::new(http_body_util::Empty::new().boxed());
        *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("connection", "upgrade".parse().unwrap());
        h.insert(
            "sec-websocket-accept",
            derive_accept_key(key.as_bytes()).parse().unwrap(),
        );
        if let Some(host) = host {
            h.insert("x-seen-host", host);
        }
        Ok(resp)
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper::service::service_fn(handle),
                    )
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}
