//! A server's response head, parsed with httparse: its status and lines, how
//! its body is framed (RFC 9112 §6.3) and whether the connection may carry
//! another request after it.

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use hyper::{StatusCode, Version};

use super::{protocol, ExchangeError, Framing, MAX_HEAD_BYTES};
use crate::chunked::Chunk;
use crate::codec::{header_spans, parse_length, tokens, RawHeaders, MAX_HEADERS};
use crate::head::ResponseHead;

/// What the start of the read buffer held.
pub(crate) enum Parsed {
    /// The head is not all in yet.
    Partial,
    /// An interim (1xx) response was taken off the buffer: the final follows.
    Interim,
    Final(Head),
}

/// A final response head as parsed.
pub(crate) struct Head {
    pub(crate) response: ResponseHead,
    /// How its body is framed; `None`: it has none.
    pub(super) framing: Option<Framing>,
    /// Whether the connection may carry another request after it.
    pub(super) keep_alive: bool,
}

impl Head {
    /// The body's framing, for the fuzz targets and the tests.
    pub(crate) fn framing(&self) -> crate::fuzzing::Framing {
        use crate::fuzzing::Framing as Out;
        match self.framing {
            None => Out::None,
            Some(Framing::Length(n)) => Out::Length(n),
            Some(Framing::Chunked(_)) => Out::Chunked,
            Some(Framing::Close) => Out::Close,
        }
    }

    /// Whether the connection may carry another request after it.
    pub(crate) fn keep_alive(&self) -> bool {
        self.keep_alive
    }
}

/// Parses the response head at the start of `buf`, taking it off when whole.
/// `expects_body`: the request was not a HEAD. A head over
/// [`MAX_HEAD_BYTES`] is an error, whole or not: one that came whole in one
/// read is no smaller than one that came in pieces.
pub(crate) fn parse_head(buf: &mut BytesMut, expects_body: bool) -> Result<Parsed, ExchangeError> {
    // Left uninitialised (httparse's safe API for it): the head's lines are
    // written in as they are parsed, and 100 of them are not cleared first.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut headers,
    );
    let too_large = || {
        protocol(format!(
            "response head larger than {} KiB",
            MAX_HEAD_BYTES / 1024
        ))
    };
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => return Err(too_large()),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(protocol(format!("malformed response head: {e}"))),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| protocol(format!("response status {code} is not valid")))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(protocol("switched protocols unasked"));
        }
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let spans = header_spans(buf, len, response.headers);
    let head = buf.split_to(len).freeze();
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut keep_alive = version == Version::HTTP_11;
    // The length given twice over, the same: one line is passed on.
    let mut length_twice = false;
    for span in &spans {
        let (name, value) = (&head[span.name()], &head[span.value()]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value)
                .ok_or_else(|| protocol("malformed Content-Length in the response"))?;
            match length {
                Some(l) if l != n => {
                    return Err(protocol("conflicting Content-Lengths in the response"))
                }
                Some(_) => length_twice = true,
                None => length = Some(n),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked only when it is the last coding.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == Version::HTTP_10 {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if !expects_body
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        None
    } else {
        match (chunked, length) {
            (Some(true), _) => Some(Framing::Chunked(Chunk::Size)),
            (Some(false), _) => Some(Framing::Close),
            (None, Some(n)) => Some(Framing::Length(n)),
            (None, None) => Some(Framing::Close),
        }
    };
    // A body that ends with the connection, a length given twice over, or a
    // transfer coding from HTTP/1.0 (which has none, RFC 9112 §6.1) leaves
    // nothing to reuse.
    if matches!(framing, Some(Framing::Close))
        || (chunked.is_some() && (length.is_some() || version == Version::HTTP_10))
    {
        keep_alive = false;
    }
    let mut headers = RawHeaders::new(head, spans, length);
    // A transfer coding overrides a length, which is not passed on (RFC 9112
    // §6.3; taking out its lines forgets it).
    if chunked.is_some() && length.is_some() {
        headers.retain(|name| !name.eq_ignore_ascii_case(b"content-length"));
    } else if length_twice {
        let mut seen = false;
        headers.retain(|name| {
            !(name.eq_ignore_ascii_case(b"content-length") && std::mem::replace(&mut seen, true))
        });
    }
    Ok(Parsed::Final(Head {
        response: ResponseHead {
            status,
            version,
            headers,
        },
        framing,
        keep_alive,
    }))
}
