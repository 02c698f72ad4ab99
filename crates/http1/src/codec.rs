//! Header lines as both sides keep them: the head's bytes and where each
//! line's name and value lie in them, never a header map.
//!
//! A head parsed by httparse is kept as it came ([`RawHeaders`]): the router
//! passes a message's lines on as they are, less the hop-by-hop ones, and
//! building a header map of them cost more than the rest of the head's way
//! through (names validated and hashed, a custom one copied). The small
//! readers of header values that both sides share live here too: lengths,
//! comma-separated tokens, and the line format itself.

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};

/// The most header lines a message head may have (a request's or a
/// response's).
pub const MAX_HEADERS: usize = 100;

/// Header lines as they came: names and values as sent, in their order.
/// httparse has checked them (names are tokens, values hold no control
/// bytes but tab).
#[derive(Debug, Clone, Default)]
pub struct RawHeaders {
    head: Bytes,
    spans: Vec<Span>,
    /// The `Content-Length` the body is framed by, if any.
    length: Option<u64>,
}

impl RawHeaders {
    /// Header lines parsed from `head`'s bytes at `spans`.
    #[inline]
    pub(crate) fn new(head: Bytes, spans: Vec<Span>, length: Option<u64>) -> RawHeaders {
        RawHeaders {
            head,
            spans,
            length,
        }
    }

    /// The headers, in order: name (as sent, any case) and value.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|s| (&self.head[s.name()], &self.head[s.value()]))
    }

    /// How many lines there are.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The values of the header called `name` (lower case), in order.
    #[inline]
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Whether there is a header called `name` (lower case).
    #[inline]
    pub fn contains(&self, name: &str) -> bool {
        self.get_all(name).next().is_some()
    }

    /// Keeps the headers `keep` says yes to; it is asked of each line once,
    /// in order (so that a caller may count lines). A `Content-Length` taken
    /// out is no longer the body's framing.
    #[inline]
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let head = &self.head;
        self.spans.retain(|s| keep(&head[s.name()]));
        if self.length.is_some() && !self.contains("content-length") {
            self.length = None;
        }
    }

    /// The `Content-Length` the body is framed by: `None` when there is none,
    /// or when the body is chunked (its `Content-Length`, if any, is gone).
    #[inline]
    pub fn content_length(&self) -> Option<u64> {
        self.length
    }

    /// The header lines as they go on the wire, each ending in CRLF.
    #[inline]
    pub fn encode(&self, out: &mut Vec<u8>) {
        for (name, value) in self.iter() {
            push_line(out, name, value);
        }
    }

    /// `value`, one of the values [`iter`](Self::iter) gave, as a header
    /// value that shares the head's bytes.
    #[inline]
    pub fn shared(&self, value: &[u8]) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.head.slice_ref(value)).ok()
    }

    /// Header lines made from a header map, as a request that came over
    /// HTTP/2 has them, for an HTTP/1.1 server: its `cookie` fields, which
    /// HTTP/2 sends one crumb apiece, joined into one line (RFC 9113
    /// §8.2.3). The body is framed by its `Content-Length`, if it has one
    /// valid one.
    pub fn from_map(map: &HeaderMap) -> RawHeaders {
        let mut head = Vec::with_capacity(map.len() * 32);
        let mut spans = Vec::with_capacity(map.len());
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut line = |head: &mut Vec<u8>, name: &[u8], value: &mut dyn FnMut(&mut Vec<u8>)| {
            let name_at = at(head.len());
            head.extend_from_slice(name);
            let name_end = at(head.len());
            head.extend_from_slice(b": ");
            let value_at = at(head.len());
            value(head);
            spans.push(Span {
                name: (name_at, name_end),
                value: (value_at, at(head.len())),
            });
            head.extend_from_slice(b"\r\n");
        };
        for name in map.keys() {
            if name == header::COOKIE {
                line(&mut head, name.as_str().as_bytes(), &mut |head| {
                    for (n, v) in map.get_all(name).iter().enumerate() {
                        if n > 0 {
                            head.extend_from_slice(b"; ");
                        }
                        head.extend_from_slice(v.as_bytes());
                    }
                });
                continue;
            }
            for value in map.get_all(name) {
                line(&mut head, name.as_str().as_bytes(), &mut |head| {
                    head.extend_from_slice(value.as_bytes())
                });
            }
        }
        let mut lengths = map.get_all(header::CONTENT_LENGTH).iter();
        let length = match (lengths.next(), lengths.next()) {
            (Some(v), None) => parse_length(v.as_bytes()),
            _ => None,
        };
        RawHeaders::new(Bytes::from(head), spans, length)
    }

    /// The lines, as text.
    #[cfg(any(test, feature = "testing"))]
    pub fn lines(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    /// Lines made from text, laid out as a head would hold them.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn from_lines(lines: &[(&str, &str)]) -> RawHeaders {
        let mut head = Vec::new();
        let mut spans = Vec::new();
        let at = |n: usize| u32::try_from(n).expect("a test head under 4 GiB");
        for (name, value) in lines {
            let name_at = at(head.len());
            head.extend_from_slice(name.as_bytes());
            let name_end = at(head.len());
            head.extend_from_slice(b": ");
            let value_at = at(head.len());
            head.extend_from_slice(value.as_bytes());
            spans.push(Span {
                name: (name_at, name_end),
                value: (value_at, at(head.len())),
            });
            head.extend_from_slice(b"\r\n");
        }
        RawHeaders::new(Bytes::from(head), spans, None)
    }
}

/// Where a header's name and value lie in a message head (byte offsets): the
/// values become slices of the head, not copies.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    #[inline]
    pub(crate) fn name(&self) -> std::ops::Range<usize> {
        self.name.0 as usize..self.name.1 as usize
    }

    #[inline]
    pub(crate) fn value(&self) -> std::ops::Range<usize> {
        self.value.0 as usize..self.value.1 as usize
    }
}

/// Where `part`, a slice of `buf`'s first `len` bytes, lies in it (empty if
/// it is not there).
#[inline]
pub(crate) fn span_of(buf: &[u8], len: usize, part: &[u8]) -> (u32, u32) {
    (part.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .filter(|at| at + part.len() <= len)
        .and_then(|at| {
            Some((
                u32::try_from(at).ok()?,
                u32::try_from(at + part.len()).ok()?,
            ))
        })
        .unwrap_or((0, 0))
}

/// The spans of `headers`, parsed from `buf`'s first `len` bytes. (Filled
/// in place: collected from an iterator, it took 440 more instructions a
/// request under callgrind.)
pub(crate) fn header_spans(buf: &[u8], len: usize, headers: &[httparse::Header<'_>]) -> Vec<Span> {
    let mut spans = vec![Span::default(); headers.len()];
    for (slot, h) in spans.iter_mut().zip(headers) {
        *slot = Span {
            name: span_of(buf, len, h.name.as_bytes()),
            value: span_of(buf, len, h.value),
        };
    }
    spans
}

/// A `Content-Length` value: digits only (a sign, as in `+2`, is not).
#[inline]
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The comma-separated tokens of a header value (as of `Connection`),
/// trimmed, empty ones left out. A token that is not ASCII is passed over:
/// it names no header and no option, and the others in the value still do
/// (a value read as naming nothing because one of its tokens was not ASCII
/// let a `close` go unheard, and the headers it named go on).
#[inline]
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty() && t.is_ascii())
        .filter_map(|t| std::str::from_utf8(t).ok())
}

/// `name: value` and CRLF.
#[inline]
pub(crate) fn push_line(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// A control byte other than tab: not allowed in a line's content.
#[inline]
pub(crate) fn is_control(b: u8) -> bool {
    b.is_ascii_control() && b != b'\t'
}
