//! A tiny tenant app for demo and test fleets: run by tenement as a service, it
//! answers every request with the tenant, process and server it belongs to.
//!
//! tenement hands it `PORT` (listen on 127.0.0.1); the service config passes
//! `INSTANCE_ID = "{id}"` (the tenant, under slum's mapping), `SERVICE = "{name}"`
//! and `SLUM_SERVER` (the server's name).
//!
//! Routes: `GET /health` answers 200 for tenement's health check; `GET /headers`
//! echoes the request headers; `GET /sleep?ms=N` answers after N ms (its server
//! in `X-Server`); `GET /late-body?ms=N` sends its head at once and its body N ms
//! later; `GET /bytes?mb=N` streams N MB; `GET /drip?ms=N` streams a line at once
//! and then one every N ms (a quiet stream); `POST /count` reads the whole body
//! as a stream and answers its size; `GET /log?line=TEXT&stream=stderr` writes
//! TEXT as a line of its output (stdout unless `stream=stderr`), for the tests
//! of `slum logs`; anything else answers `tenant=... process=... server=...`.
//! It writes one line when it starts: `serving tenant T (P) on server S at
//! ADDRESS`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Clone)]
struct Identity {
    tenant: String,
    process: String,
    server: String,
}

type Body = BoxBody<Bytes, Infallible>;

fn text(status: u16, s: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(s)).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r
}

fn query_u64(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(id: Identity, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let resp = match path.as_str() {
        "/health" => text(200, "ok\n".into()),
        "/headers" => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            text(200, out)
        }
        "/sleep" => {
            tokio::time::sleep(Duration::from_millis(query_u64(&req, "ms"))).await;
            let mut r = text(200, "slept\n".into());
            if let Ok(v) = id.server.parse() {
                r.headers_mut().insert("x-server", v);
            }
            r
        }
        "/bytes" => {
            let chunks = query_u64(&req, "mb") * 16;
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures::stream::iter(
                (0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
            );
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        // A head at once and its body (with its length) `ms` milliseconds
        // later: a server that stops between the two leaves the head alone.
        "/late-body" => {
            let after = Duration::from_millis(query_u64(&req, "ms"));
            let body = format!("late body from {}\n", id.server);
            let length = body.len();
            let late = futures::stream::once(async move {
                tokio::time::sleep(after).await;
                Ok::<_, Infallible>(Frame::data(Bytes::from(body)))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(late)));
            r.headers_mut()
                .insert(hyper::header::CONTENT_LENGTH, length.into());
            if let Ok(v) = id.server.parse() {
                r.headers_mut().insert("x-server", v);
            }
            r
        }
        // A quiet stream (as server-sent events are): a line at once, then one
        // every `ms` milliseconds, until the client leaves.
        "/drip" => {
            let every = Duration::from_millis(query_u64(&req, "ms").max(1));
            let ticks = futures::stream::unfold(true, move |first| async move {
                if !first {
                    tokio::time::sleep(every).await;
                }
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"tick\n"))),
                    false,
                ))
            });
            Response::new(BodyExt::boxed(StreamBody::new(ticks)))
        }
        "/log" => {
            let mut line = String::new();
            let mut stderr = false;
            for (k, v) in url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
                match k.as_ref() {
                    "line" => line = v.into_owned(),
                    "stream" => stderr = v == "stderr",
                    _ => {}
                }
            }
            if stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            text(200, "written\n".into())
        }
        "/count" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                    Err(e) => return Ok(text(400, format!("body error: {e}\n"))),
                }
            }
            text(200, format!("{n}\n"))
        }
        _ => {
            let mut r = text(
                200,
                format!(
                    "tenant={} process={} server={}\n",
                    id.tenant, id.process, id.server
                ),
            );
            for (k, v) in [
                ("x-tenant", &id.tenant),
                ("x-server", &id.server),
                ("x-process", &id.process),
            ] {
                if let Ok(v) = v.parse() {
                    r.headers_mut().insert(k, v);
                }
            }
            r
        }
    };
    Ok(resp)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("PORT is not set to a port number"))?;
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| "unknown".into());
    let id = Identity {
        tenant: env("INSTANCE_ID"),
        process: env("SERVICE"),
        server: env("SLUM_SERVER"),
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!(
        "serving tenant {} ({}) on server {} at 127.0.0.1:{port}",
        id.tenant, id.process, id.server
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let id = id.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(id.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
