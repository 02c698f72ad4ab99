//! A client's request head, parsed with httparse: its framing decided as a
//! proxy must decide it (RFC 9112 §6.3), or the request refused with the
//! status and the reason the client is told.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use hyper::{Method, StatusCode, Uri, Version};

use super::Asked;
use crate::chunked::Chunk;
use crate::codec::{header_spans, parse_length, span_of, tokens, RawHeaders, MAX_HEADERS};
use crate::head::RequestHead;

/// Why a request cannot be taken: the status it is answered with, and the
/// reason the answer gives.
pub(crate) type Refusal = (StatusCode, String);

fn bad(what: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, what.into())
}

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum In {
    Length(u64),
    Chunked(Chunk),
}

/// A parsed request head: the head, its body's framing (`None`: no body),
/// what the response depends on, and whether the client waits for a 100.
pub(crate) type Parsed = (RequestHead, Option<In>, Asked, bool);

/// Parses the request head at the start of `buf`, taking it off when whole,
/// at most `max_bytes` long and with at most `max_options` `Connection`
/// options. `Ok(None)`: not all in yet.
pub(crate) fn parse_request(
    buf: &mut BytesMut,
    max_bytes: usize,
    max_options: usize,
) -> Result<Option<Parsed>, Refusal> {
    // Left uninitialised (httparse's safe API for it): the head's lines are
    // written in as they are parsed, and 100 of them are not cleared first.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len > max_bytes => {
            return Err(too_large(max_bytes));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => {
            return Err(too_large(max_bytes));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("more than {MAX_HEADERS} request headers"),
            ))
        }
        Err(e) => return Err(bad(format!("malformed request head: {e}"))),
    };
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("malformed request method"))?;
    // A tunnel is not a request to pass on: this is no forward proxy.
    if method == Method::CONNECT {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served here".into(),
        ));
    }
    let http10 = request.version == Some(0);
    let target = span_of(buf, len, request.path.unwrap_or_default().as_bytes());
    let mut spans = header_spans(buf, len, request.headers);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize))
        .map_err(|_| bad("malformed request target"))?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut keep_alive = !http10;
    // `close` wins, wherever it stands.
    let mut close = false;
    let mut expect = false;
    // Connection options, counted over all the lines: each may name a line
    // a proxy takes out, and a head of thousands is work and nothing else.
    let mut options = 0;
    // The length given twice over, the same both times (RFC 9112 §6.3 lets
    // a recipient take it): one line goes on.
    let mut length_twice = false;
    for span in &spans {
        let (name, value) = (&head[span.name()], &head[span.value()]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value).ok_or_else(|| bad("malformed Content-Length"))?;
            match length {
                Some(l) if l != n => return Err(bad("conflicting Content-Lengths")),
                Some(_) => length_twice = true,
                None => length = Some(n),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if http10 {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err((
                    StatusCode::NOT_IMPLEMENTED,
                    "only the chunked transfer coding is taken".into(),
                ));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(value) {
                options += 1;
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    keep_alive = true;
                }
            }
            if options > max_options {
                return Err(bad(format!("more than {max_options} Connection options")));
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err((
                    StatusCode::EXPECTATION_FAILED,
                    "only Expect: 100-continue is taken".into(),
                ));
            }
            expect = !http10;
        }
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => return Err(bad("both Transfer-Encoding and Content-Length")),
        (true, None) => Some(In::Chunked(Chunk::Size)),
        (false, Some(0) | None) => None,
        (false, Some(n)) => Some(In::Length(n)),
    };
    if length_twice {
        let mut seen = false;
        spans.retain(|span| {
            let is_length = head[span.name()].eq_ignore_ascii_case(b"content-length");
            !(is_length && std::mem::replace(&mut seen, true))
        });
    }
    let asked = Asked {
        head: method == Method::HEAD,
        http10,
        keep_alive: keep_alive && !close,
    };
    let request = RequestHead {
        method,
        uri,
        version: match http10 {
            true => Version::HTTP_10,
            false => Version::HTTP_11,
        },
        headers: RawHeaders::new(head, spans, length),
        set: Vec::new(),
    };
    Ok(Some((request, framing, asked, expect && framing.is_some())))
}

fn too_large(max_bytes: usize) -> Refusal {
    (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!("request head larger than {max_bytes} bytes"),
    )
}
